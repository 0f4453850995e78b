//! MGV-F behaviour (seed 004 6.5.3/6.5.4, seed 000 6.3.2.1, seeds 002/003
//! 6.3.2.2.4; `PROFILE.md` section 7): every acceptance and every failure
//! class, with a check that a failure leaves the stored state unchanged.

use std::time::Duration;

use mbms::messages::{MskAck, MskEnvelope, MskKeyData, MskMessage, MtkMessage, Streaming};
use mbms::mgvf::store::{FileStore, MemoryStore, MgvState, MgvStore, StoreError};
use mbms::mgvf::{MgvError, MgvF, MskOutcome};
use mbms::{
    KeyDomainId, KeyGroupName, Msk, MskId, MskName, Mtk, MtkId, MtkKey, MtkSalt, Muk, MukId,
};

/// The monotonic time passed to the MGV-F where it does not matter.
const T0: Duration = Duration::ZERO;

const BMSC: &str = "bmsc.home1.net";
const BTID: &str = "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net";

fn kd() -> KeyDomainId {
    "001-01".parse().unwrap()
}

fn name(group: u16, number: u16) -> MskName {
    MskName {
        key_domain: kd(),
        msk_id: MskId::new(group, number),
    }
}

fn muk_id() -> MukId {
    MukId::new(BMSC, BTID)
}

fn muk() -> Muk {
    Muk::from_bytes([0x6d; 32])
}

fn msk_key(n: u16) -> Msk {
    Msk::from_bytes([n as u8; 16])
}

/// A BM-SC in miniature: builds messages with increasing counters.
struct Bmsc {
    muk_counter: u32,
    msk_counter: u32,
    rand: u8,
}

impl Bmsc {
    fn new() -> Self {
        Bmsc {
            muk_counter: 0,
            msk_counter: 0,
            rand: 0,
        }
    }

    fn rand(&mut self) -> [u8; 16] {
        self.rand = self.rand.wrapping_add(1);
        [self.rand; 16]
    }

    fn msk(&mut self, n: u16, window: (u16, u16), v: bool) -> Vec<u8> {
        self.muk_counter += 1;
        let rand = self.rand();
        MskMessage {
            muk_id: muk_id(),
            counter: self.muk_counter,
            rand,
            msk: name(1, n),
            v,
            key: Some(MskKeyData {
                msk: msk_key(n),
                seq_s: MtkId::new(window.0),
                seq_u: MtkId::new(window.1),
            }),
        }
        .build(&muk())
        .unwrap()
        .bytes
    }

    /// An MSK message whose IDr names `btid`, protected with `key`.
    fn msk_under(&mut self, btid: &str, key: &Muk, n: u16, window: (u16, u16), v: bool) -> Vec<u8> {
        self.muk_counter += 1;
        let rand = self.rand();
        MskMessage {
            muk_id: MukId::new(BMSC, btid),
            counter: self.muk_counter,
            rand,
            msk: name(1, n),
            v,
            key: Some(MskKeyData {
                msk: msk_key(n),
                seq_s: MtkId::new(window.0),
                seq_u: MtkId::new(window.1),
            }),
        }
        .build(key)
        .unwrap()
        .bytes
    }

    fn mtk(&mut self, n: u16, mtk_id: u16) -> Vec<u8> {
        self.msk_counter += 1;
        let rand = self.rand();
        MtkMessage {
            counter: self.msk_counter,
            rand,
            msk: name(1, n),
            mtk_id: MtkId::new(mtk_id),
            mtk: mtk(mtk_id),
            streaming: None,
        }
        .build(&msk_key(n))
        .unwrap()
    }
}

fn mtk(id: u16) -> Mtk {
    Mtk {
        key: MtkKey::from_bytes([id as u8; 16]),
        salt: MtkSalt::from_bytes([0xee; 14]),
    }
}

fn ue() -> MgvF<MemoryStore> {
    let mut f = MgvF::new(MemoryStore::new());
    f.add_muk(muk_id(), muk()).unwrap();
    f
}

/// Run `op` and check that it failed and left the state unchanged.
fn refused<S: MgvStore, T: std::fmt::Debug>(
    f: &mut MgvF<S>,
    op: impl FnOnce(&mut MgvF<S>) -> Result<T, MgvError>,
) -> MgvError {
    let before: MgvState = f.state().clone();
    let e = op(f).expect_err("must be refused");
    assert_eq!(
        f.state(),
        &before,
        "state changed by a refused message ({e})"
    );
    e
}

#[test]
fn msk_delivery_is_stored_and_acknowledged() {
    let mut b = Bmsc::new();
    let mut f = ue();
    let m = b.msk(1, (0, 100), true);
    let out = f.process_msk_message(&m, T0).unwrap();
    let MskOutcome::Stored {
        msk,
        inactive,
        replaced,
        ack,
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!((msk, inactive, replaced), (name(1, 1), false, None));
    let ack = ack.expect("V bit set: an acknowledgement");
    let built = MskMessage {
        muk_id: muk_id(),
        counter: 1,
        rand: [1; 16],
        msk: name(1, 1),
        v: true,
        key: Some(MskKeyData {
            msk: msk_key(1),
            seq_s: MtkId::new(0),
            seq_u: MtkId::new(100),
        }),
    }
    .build(&muk())
    .unwrap();
    assert_eq!(built.bytes, m, "the test BM-SC is deterministic");
    let a = MskAck::verify(&ack, &built.keys.auth_key, &built.initiator).unwrap();
    assert_eq!((a.counter, a.msk, a.btid.as_str()), (1, name(1, 1), BTID));
    assert_eq!(f.state().muks[&muk_id()].counter, Some(1));

    // Without the V bit there is no acknowledgement.
    let m = b.msk(2, (0, 100), false);
    assert!(matches!(
        f.process_msk_message(&m, T0).unwrap(),
        MskOutcome::Stored { ack: None, .. }
    ));
}

#[test]
fn failures_change_nothing() {
    let mut b = Bmsc::new();
    let mut f = ue();
    let first = b.msk(1, (0, 100), true);
    f.process_msk_message(&first, T0).unwrap();

    // Replay of an older counter.
    let older = {
        let mut b2 = Bmsc::new();
        b2.msk(1, (0, 50), true)
    };
    let e = refused(&mut f, |f| f.process_msk_message(&older, T0));
    // The same counter (1) with other content is a replay, not a duplicate.
    assert!(
        matches!(
            e,
            MgvError::Replay {
                counter: 1,
                last: 1
            }
        ),
        "{e}"
    );

    // Tampered: flip a bit in the KEMAC.
    let mut t = b.msk(2, (0, 100), true);
    let n = t.len();
    t[n - 25] ^= 1;
    assert!(matches!(
        refused(&mut f, |f| f.process_msk_message(&t, T0)),
        MgvError::BadMac
    ));

    // Unknown MUK (another BM-SC).
    let other = MskMessage {
        muk_id: MukId::new("other.bmsc.net", BTID),
        counter: 99,
        rand: [9; 16],
        msk: name(1, 3),
        v: true,
        key: Some(MskKeyData {
            msk: msk_key(3),
            seq_s: MtkId::new(0),
            seq_u: MtkId::new(9),
        }),
    }
    .build(&muk())
    .unwrap()
    .bytes;
    assert!(matches!(
        refused(&mut f, |f| f.process_msk_message(&other, T0)),
        MgvError::UnknownMuk(_)
    ));

    // Malformed: truncated, and an MTK message given as an MSK message.
    assert!(matches!(
        refused(&mut f, |f| f
            .process_msk_message(&first[..first.len() - 1], T0)),
        MgvError::Malformed(_)
    ));
    let mtk_msg = b.mtk(1, 1);
    assert!(matches!(
        refused(&mut f, |f| f.process_msk_message(&mtk_msg, T0)),
        MgvError::Malformed(_)
    ));

    // MTK failures: unknown MSK, out of window, bad MAC, replay.
    let unknown = b.mtk(7, 1);
    assert!(matches!(
        refused(&mut f, |f| f.process_mtk_message(&unknown)),
        MgvError::UnknownMsk(_)
    ));
    let outside = b.mtk(1, 101);
    assert!(matches!(
        refused(&mut f, |f| f.process_mtk_message(&outside)),
        MgvError::MtkIdOutOfWindow { .. }
    ));
    let mut bad = b.mtk(1, 5);
    bad[30] ^= 0x80;
    let e = refused(&mut f, |f| f.process_mtk_message(&bad));
    assert!(
        matches!(e, MgvError::BadMac | MgvError::Malformed(_)),
        "{e}"
    );
    let ok = b.mtk(1, 5);
    f.process_mtk_message(&ok).unwrap();
    assert!(matches!(
        refused(&mut f, |f| f.process_mtk_message(&ok)),
        MgvError::MtkIdOutOfWindow { .. } | MgvError::Replay { .. }
    ));
}

#[test]
fn identical_resend_is_acknowledged_again_without_changes() {
    // Seed 004 6.4.2: without an ACK the BM-SC may resend the message.
    let mut b = Bmsc::new();
    let mut f = ue();
    let m = b.msk(1, (0, 100), true);
    let first = f.process_msk_message(&m, T0).unwrap();
    let before = f.state().clone();
    let MskOutcome::Stored { ack: Some(a1), .. } = first else {
        panic!()
    };
    let again = f.process_msk_message(&m, T0).unwrap();
    assert_eq!(again, MskOutcome::Duplicate { ack: Some(a1) });
    assert_eq!(f.state(), &before);
}

#[test]
fn at_most_two_msks_per_key_group_the_older_goes() {
    let mut b = Bmsc::new();
    let mut f = ue();
    for n in 1..=2 {
        let m = b.msk(n, (0, 100), false);
        assert!(matches!(
            f.process_msk_message(&m, T0).unwrap(),
            MskOutcome::Stored { replaced: None, .. }
        ));
    }
    let m = b.msk(3, (0, 100), false);
    let out = f.process_msk_message(&m, T0).unwrap();
    assert!(
        matches!(out, MskOutcome::Stored { replaced: Some(r), .. } if r == name(1, 1)),
        "{out:?}"
    );
    let group = KeyGroupName {
        key_domain: kd(),
        key_group: 1,
    };
    let left: Vec<_> = f.msks_of(group).iter().map(|r| r.name).collect();
    assert_eq!(left, vec![name(1, 2), name(1, 3)]);
    // Another key group is not affected.
    let other = MskMessage {
        muk_id: muk_id(),
        counter: 100,
        rand: [3; 16],
        msk: name(2, 1),
        v: false,
        key: Some(MskKeyData {
            msk: msk_key(9),
            seq_s: MtkId::new(0),
            seq_u: MtkId::new(1),
        }),
    }
    .build(&muk())
    .unwrap();
    f.process_msk_message(&other.bytes, T0).unwrap();
    assert_eq!(f.state().msks.len(), 3);
    assert_eq!(f.delete_msks(group).unwrap(), 2);
    assert_eq!(f.state().msks.len(), 1);
}

#[test]
fn inactive_msk_then_activation() {
    // Seed 004 6.3.2.3.3, the 4-way procedure, UE side.
    let mut b = Bmsc::new();
    let mut f = ue();
    let inactive = b.msk(1, (1, 0), true);
    let out = f.process_msk_message(&inactive, T0).unwrap();
    assert!(
        matches!(
            out,
            MskOutcome::Stored {
                inactive: true,
                ack: Some(_),
                ..
            }
        ),
        "{out:?}"
    );
    let m = b.mtk(1, 1);
    assert!(matches!(
        refused(&mut f, |f| f.process_mtk_message(&m)),
        MgvError::InactiveMsk(_)
    ));
    let activation = b.msk(1, (0, 100), true);
    let out = f.process_msk_message(&activation, T0).unwrap();
    assert!(matches!(
        out,
        MskOutcome::Stored {
            inactive: false,
            replaced: None,
            ack: Some(_),
            ..
        }
    ));
    assert_eq!(
        f.state().msks.len(),
        1,
        "activation updates, it does not add"
    );
    let m = b.mtk(1, 2);
    let got = f.process_mtk_message(&m).unwrap();
    assert_eq!(got.mtk, mtk(2));
}

#[test]
fn mtk_window_edges_and_seqs_moves() {
    let mut b = Bmsc::new();
    let mut f = ue();
    f.process_msk_message(&b.msk(1, (10, 20), false), T0)
        .unwrap();
    // SEQp = SEQs is refused, SEQs + 1 accepted.
    let m = b.mtk(1, 10);
    assert!(matches!(
        refused(&mut f, |f| f.process_mtk_message(&m)),
        MgvError::MtkIdOutOfWindow { .. }
    ));
    let got = f.process_mtk_message(&b.mtk(1, 11)).unwrap();
    assert_eq!(got.mtk_id, MtkId::new(11));
    assert_eq!(f.state().msks[&name(1, 1)].seq_s, MtkId::new(11));
    // Going back is refused even with a fresh counter.
    let m = b.mtk(1, 11);
    assert!(matches!(
        refused(&mut f, |f| f.process_mtk_message(&m)),
        MgvError::MtkIdOutOfWindow { .. }
    ));
    // SEQp = SEQu accepted, SEQu + 1 refused.
    f.process_mtk_message(&b.mtk(1, 20)).unwrap();
    let m = b.mtk(1, 21);
    assert!(matches!(
        refused(&mut f, |f| f.process_mtk_message(&m)),
        MgvError::MtkIdOutOfWindow { .. }
    ));
}

#[test]
fn mtk_window_wraps_around_rfc1982() {
    let mut b = Bmsc::new();
    let mut f = ue();
    f.process_msk_message(&b.msk(1, (65530, 5), false), T0)
        .unwrap();
    for id in [65531u16, 65535, 0, 3, 5] {
        let got = f.process_mtk_message(&b.mtk(1, id)).unwrap();
        assert_eq!(got.mtk_id, MtkId::new(id));
    }
    let m = b.mtk(1, 6);
    assert!(matches!(
        refused(&mut f, |f| f.process_mtk_message(&m)),
        MgvError::MtkIdOutOfWindow { .. }
    ));
    // Exactly half the space away: undefined, refused.
    let mut f = ue();
    let mut b = Bmsc::new();
    f.process_msk_message(&b.msk(1, (0, 32767), false), T0)
        .unwrap();
    let m = b.mtk(1, 32768);
    assert!(matches!(
        refused(&mut f, |f| f.process_mtk_message(&m)),
        MgvError::MtkIdOutOfWindow { .. }
    ));
}

#[test]
fn mtk_replay_counter_per_msk() {
    let mut b = Bmsc::new();
    let mut f = ue();
    f.process_msk_message(&b.msk(1, (0, 100), false), T0)
        .unwrap();
    let m1 = b.mtk(1, 1);
    let m2 = b.mtk(1, 2);
    f.process_mtk_message(&m2).unwrap();
    // m1 has an older counter and an older MTK ID: refused.
    assert!(refused(&mut f, |f| f.process_mtk_message(&m1))
        .to_string()
        .contains("MTK ID"));
    // A new MTK ID with an old counter: a replay.
    let stale = MtkMessage {
        counter: 1,
        rand: [0x55; 16],
        msk: name(1, 1),
        mtk_id: MtkId::new(50),
        mtk: mtk(50),
        streaming: None,
    }
    .build(&msk_key(1))
    .unwrap();
    assert!(matches!(
        refused(&mut f, |f| f.process_mtk_message(&stale)),
        MgvError::Replay {
            counter: 1,
            last: 2
        }
    ));
}

#[test]
fn streaming_parameters_reach_the_me() {
    let mut b = Bmsc::new();
    let mut f = ue();
    f.process_msk_message(&b.msk(1, (0, 100), false), T0)
        .unwrap();
    let streaming = Streaming {
        streams: vec![mikey::SrtpIdEntry {
            policy_no: 0,
            ssrc: 0x1234,
            roc: 2,
        }],
        policy: mikey::SrtpPolicy::default(),
    };
    let m = MtkMessage {
        counter: 1,
        rand: [1; 16],
        msk: name(1, 1),
        mtk_id: MtkId::new(1),
        mtk: mtk(1),
        streaming: Some(streaming.clone()),
    }
    .build(&msk_key(1))
    .unwrap();
    let got = f.process_mtk_message(&m).unwrap();
    assert_eq!(got.streams(), &streaming.streams[..]);
    let (k, s) = got.mtk.srtp_master();
    assert_eq!((k, s), (&[1u8; 16], &[0xee; 14]));
}

#[test]
fn solicited_pull_asks_for_the_current_msk_and_stores_nothing() {
    let mut f = ue();
    let pull = MskMessage::solicited_pull(muk_id(), 5, [2; 16], kd(), 1)
        .build(&muk())
        .unwrap();
    let out = f.process_msk_message(&pull.bytes, T0).unwrap();
    assert_eq!(
        out,
        MskOutcome::SolicitedPull {
            key_group: KeyGroupName {
                key_domain: kd(),
                key_group: 1
            }
        }
    );
    assert!(f.state().msks.is_empty());
    assert_eq!(f.state().muks[&muk_id()].counter, Some(5));
    // The same pull again changes nothing and asks for nothing new.
    let before = f.state().clone();
    assert_eq!(
        f.process_msk_message(&pull.bytes, T0).unwrap(),
        MskOutcome::Duplicate { ack: None }
    );
    assert_eq!(f.state(), &before);
    // A window whose SEQs is above SEQu by RFC 1982 makes an inactive MSK.
    let mut b = Bmsc::new();
    b.muk_counter = 5;
    let m = b.msk(1, (0, 40000), false);
    assert!(matches!(
        f.process_msk_message(&m, T0).unwrap(),
        MskOutcome::Stored { inactive: true, .. }
    ));
}

#[test]
fn solicited_pull_under_the_last_muk_used_by_the_bmsc() {
    // Seeds 002/003 6.3.2.2.4: the BM-SC protects the pull with the last MUK
    // it knows; the UE has since bootstrapped again (new B-TID) and checks
    // the message with the last MUK the BM-SC used successfully.
    let mut b = Bmsc::new();
    let mut f = ue();
    f.process_msk_message(&b.msk(1, (0, 100), false), T0)
        .unwrap();
    let new_id = MukId::new(BMSC, "newbtid==@bsf.home1.net");
    f.add_muk(new_id.clone(), Muk::from_bytes([0x77; 32]))
        .unwrap();
    assert!(f.state().muks.contains_key(&muk_id()), "last used MUK kept");
    // A pull under an old B-TID the UE no longer lists by that name still
    // verifies with the last-used MUK.
    let pull =
        MskMessage::solicited_pull(MukId::new(BMSC, "gone@bsf.home1.net"), 10, [3; 16], kd(), 1)
            .build(&muk())
            .unwrap();
    assert!(matches!(
        f.process_msk_message(&pull.bytes, T0).unwrap(),
        MskOutcome::SolicitedPull { .. }
    ));
    // Another BM-SC's name finds nothing.
    let other = MskMessage::solicited_pull(
        MukId::new("x.net", "gone@bsf.home1.net"),
        11,
        [3; 16],
        kd(),
        1,
    )
    .build(&muk())
    .unwrap();
    assert!(matches!(
        refused(&mut f, |f| f.process_msk_message(&other.bytes, T0)),
        MgvError::UnknownMuk(_)
    ));
    // Messages under the new MUK work, and then the new one is "last used".
    let m = MskMessage {
        muk_id: new_id.clone(),
        counter: 1,
        rand: [4; 16],
        msk: name(1, 2),
        v: false,
        key: Some(MskKeyData {
            msk: msk_key(2),
            seq_s: MtkId::new(0),
            seq_u: MtkId::new(9),
        }),
    }
    .build(&Muk::from_bytes([0x77; 32]))
    .unwrap();
    f.process_msk_message(&m.bytes, T0).unwrap();
    assert_eq!(f.state().last_used_muk[BMSC], new_id);
    f.delete_muk(&new_id).unwrap();
    assert!(!f.state().muks.contains_key(&new_id));
}

#[test]
fn file_store_survives_restart_and_interrupted_commits() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mgvs.json");
    let mut b = Bmsc::new();
    {
        let mut f = MgvF::new(FileStore::create(&path).unwrap());
        f.add_muk(muk_id(), muk()).unwrap();
        f.process_msk_message(&b.msk(1, (0, 100), true), T0)
            .unwrap();
        f.process_mtk_message(&b.mtk(1, 7)).unwrap();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
    // A crash during the next commit leaves a partial temporary file.
    std::fs::write(path.with_extension("json.tmp"), b"{ partial").unwrap();
    let mut f = MgvF::new(FileStore::open(&path).unwrap());
    assert_eq!(f.state().muks[&muk_id()].counter, Some(1));
    assert_eq!(f.state().msks[&name(1, 1)].seq_s, MtkId::new(7));
    // Replays of messages accepted before the restart are refused.
    let mut b_old = Bmsc::new();
    let old = b_old.msk(1, (0, 100), false);
    assert!(matches!(
        f.process_msk_message(&old, T0),
        Err(MgvError::Replay { .. })
    ));
    f.process_mtk_message(&b.mtk(1, 8)).unwrap();
    // A corrupt file is an error, not an empty state.
    std::fs::write(&path, b"not json").unwrap();
    assert!(matches!(
        FileStore::open(&path),
        Err(StoreError::Corrupt { .. })
    ));
}

#[test]
fn stores_refuse_to_roll_a_counter_back() {
    let mut b = Bmsc::new();
    let mut f = ue();
    f.process_msk_message(&b.msk(1, (0, 100), false), T0)
        .unwrap();
    let mut rolled = f.state().clone();
    rolled.muks.get_mut(&muk_id()).unwrap().counter = Some(0);
    let mut store = MemoryStore::new();
    store.commit(f.state().clone()).unwrap();
    assert!(matches!(
        store.commit(rolled),
        Err(StoreError::CounterRollback(_))
    ));
}

fn group1() -> KeyGroupName {
    KeyGroupName {
        key_domain: kd(),
        key_group: 1,
    }
}

fn held(f: &MgvF<impl MgvStore>) -> Vec<u16> {
    f.msks_of(group1())
        .iter()
        .map(|r| r.name.msk_id.key_number)
        .collect()
}

/// Issue 11 point 1 (seed 000 6.3.2.1, `PROFILE.md` section 7 revised): the
/// initial push of MSK #1 is lost, #2 arrives, the retransmitted #1 arrives
/// after it; at the next rotation #3 must delete #1 (the lower Key Number),
/// not #2 (the current MSK, received first).
#[test]
fn third_msk_deletes_the_lowest_key_number_whatever_the_arrival_order() {
    let mut b = Bmsc::new();
    let mut f = ue();
    f.process_msk_message(&b.msk(2, (0, 100), true), T0)
        .unwrap();
    f.process_msk_message(&b.msk(1, (0, 100), true), T0)
        .unwrap();
    assert_eq!(held(&f), vec![1, 2]);
    f.process_mtk_message(&b.mtk(2, 1)).unwrap();
    let out = f
        .process_msk_message(&b.msk(3, (0, 100), true), T0)
        .unwrap();
    assert!(
        matches!(out, MskOutcome::Stored { replaced: Some(r), .. } if r == name(1, 1)),
        "{out:?}"
    );
    assert_eq!(held(&f), vec![2, 3]);
    // MTKs under #2, the current MSK, still work.
    f.process_mtk_message(&b.mtk(2, 2)).unwrap();
}

/// Issue 11 point 1: an arriving MSK that is itself the lowest is validated,
/// its counter recorded and acknowledged, but not stored; an identical resend
/// of it is a duplicate.
#[test]
fn an_arriving_msk_lower_than_the_two_held_is_acknowledged_not_stored() {
    let mut b = Bmsc::new();
    let mut f = ue();
    f.process_msk_message(&b.msk(3, (0, 100), false), T0)
        .unwrap();
    f.process_msk_message(&b.msk(2, (0, 100), false), T0)
        .unwrap();
    let before = f.state().clone();
    let late = b.msk(1, (0, 100), true);
    let out = f.process_msk_message(&late, T0).unwrap();
    let MskOutcome::Superseded {
        msk,
        ack: Some(ack),
    } = out
    else {
        panic!("{out:?}")
    };
    assert_eq!(msk, name(1, 1));
    let built = MskEnvelope::parse(&late).unwrap();
    let opened = built.open(&muk()).unwrap();
    let a = MskAck::verify(&ack, &opened.keys.auth_key, &opened.initiator).unwrap();
    assert_eq!((a.counter, a.msk), (3, name(1, 1)));
    assert_eq!(held(&f), vec![2, 3], "the held MSKs are kept");
    assert_eq!(f.state().msks, before.msks);
    assert_eq!(
        f.state().muks[&muk_id()].counter,
        Some(3),
        "counter recorded"
    );
    // The identical resend (lost acknowledgement) is acknowledged again.
    assert!(matches!(
        f.process_msk_message(&late, T0).unwrap(),
        MskOutcome::Duplicate { ack: Some(_) }
    ));
    // Without the V bit: no acknowledgement.
    let late0 = b.msk(1, (0, 100), false);
    assert_eq!(
        f.process_msk_message(&late0, T0).unwrap(),
        MskOutcome::Superseded {
            msk: name(1, 1),
            ack: None
        }
    );
}

/// RFC 1982 over the 16-bit Key Number: 65535 is below 1 after a wrap; and
/// when no Key Number is below both others (undefined comparisons), the MSKs
/// held are kept.
#[test]
fn the_lowest_key_number_follows_rfc1982() {
    let mut b = Bmsc::new();
    let mut f = ue();
    f.process_msk_message(&b.msk(65534, (0, 9), false), T0)
        .unwrap();
    f.process_msk_message(&b.msk(65535, (0, 9), false), T0)
        .unwrap();
    let out = f.process_msk_message(&b.msk(1, (0, 9), false), T0).unwrap();
    assert!(
        matches!(out, MskOutcome::Stored { replaced: Some(r), .. } if r == name(1, 65534)),
        "{out:?}"
    );
    assert_eq!(held(&f), vec![65535, 1], "older first");
    let out = f
        .process_msk_message(&b.msk(65533, (0, 9), false), T0)
        .unwrap();
    assert!(matches!(out, MskOutcome::Superseded { .. }), "{out:?}");

    // 0x0001 < 0x5556 < 0xAAAB < 0x0001: no lowest.
    let mut f = ue();
    f.process_msk_message(&b.msk(0x0001, (0, 9), false), T0)
        .unwrap();
    f.process_msk_message(&b.msk(0x5556, (0, 9), false), T0)
        .unwrap();
    let out = f
        .process_msk_message(&b.msk(0xAAAB, (0, 9), false), T0)
        .unwrap();
    assert!(matches!(out, MskOutcome::Superseded { .. }), "{out:?}");
    assert_eq!(held(&f), vec![0x0001, 0x5556]);
}

/// Issue 11 point 3 (`PROFILE.md` section 7 revised): a re-delivered MSK
/// used to move SEQs from 50 back to 0, and MTK ID 20 was accepted after 50.
#[test]
fn redelivery_never_reopens_mtk_ids() {
    let mut b = Bmsc::new();
    let mut f = ue();
    f.process_msk_message(&b.msk(1, (0, 100), true), T0)
        .unwrap();
    f.process_mtk_message(&b.mtk(1, 50)).unwrap();
    // The BM-SC delivers the same MSK again (a new message, new counter).
    f.process_msk_message(&b.msk(1, (0, 100), true), T0)
        .unwrap();
    assert_eq!(f.state().msks[&name(1, 1)].seq_s, MtkId::new(50));
    for id in [20, 50] {
        let m = b.mtk(1, id);
        assert!(
            matches!(
                refused(&mut f, |f| f.process_mtk_message(&m)),
                MgvError::MtkIdOutOfWindow { .. }
            ),
            "MTK ID {id} re-opened"
        );
    }
    f.process_mtk_message(&b.mtk(1, 51)).unwrap();

    // A validity update whose window lies below the accepted IDs.
    f.process_msk_message(&b.msk(1, (0, 40), true), T0).unwrap();
    let m = b.mtk(1, 30);
    assert!(matches!(
        refused(&mut f, |f| f.process_mtk_message(&m)),
        MgvError::MtkIdOutOfWindow { .. }
    ));
    // Made inactive, then activated with a window from 0: still refused.
    f.process_msk_message(&b.msk(1, (1, 0), true), T0).unwrap();
    f.process_msk_message(&b.msk(1, (0, 200), true), T0)
        .unwrap();
    let m = b.mtk(1, 51);
    assert!(matches!(
        refused(&mut f, |f| f.process_mtk_message(&m)),
        MgvError::MtkIdOutOfWindow { .. }
    ));
    assert_eq!(
        f.process_mtk_message(&b.mtk(1, 52)).unwrap().mtk_id.value(),
        52
    );
}

/// Activation of an inactive MSK takes the message's window as it is.
#[test]
fn activation_takes_the_window_as_it_is() {
    let mut b = Bmsc::new();
    let mut f = ue();
    f.process_msk_message(&b.msk(1, (1, 0), true), T0).unwrap();
    f.process_msk_message(&b.msk(1, (5, 10), true), T0).unwrap();
    let r = &f.state().msks[&name(1, 1)];
    assert_eq!(
        (r.seq_s, r.seq_u, r.accepted),
        (MtkId::new(5), MtkId::new(10), None)
    );
    f.process_mtk_message(&b.mtk(1, 6)).unwrap();
}

/// Issue 11 point 4 (seed 004 6.5.3 via clause 6.1, `PROFILE.md` section 7
/// revised): an MSK message whose IDr names a B-TID the UE holds no MUK for
/// is refused, even though the last MUK used by that BM-SC verifies it; only
/// a solicited pull may use that fallback.
#[test]
fn idr_identifies_the_muk_only_the_pull_falls_back() {
    let mut b = Bmsc::new();
    let mut f = ue();
    f.process_msk_message(&b.msk(1, (0, 100), false), T0)
        .unwrap();
    let stranger = b.msk_under("never@bsf.home1.net", &muk(), 2, (0, 100), true);
    let e = refused(&mut f, |f| f.process_msk_message(&stranger, T0));
    assert!(
        matches!(&e, MgvError::UnknownMuk(id) if id.idr == "never@bsf.home1.net"),
        "{e}"
    );
    // The solicited pull under the same unknown IDr is checked with the last
    // MUK used by that BM-SC (seeds 002/003 6.3.2.2.4).
    b.muk_counter += 1;
    let pull = MskMessage::solicited_pull(
        MukId::new(BMSC, "never@bsf.home1.net"),
        b.muk_counter,
        [7; 16],
        kd(),
        1,
    )
    .build(&muk())
    .unwrap();
    assert!(matches!(
        f.process_msk_message(&pull.bytes, T0).unwrap(),
        MskOutcome::SolicitedPull { .. }
    ));
    // The previous MUK (before a re-bootstrap) is still identified by IDr.
    let new_id = MukId::new(BMSC, "new@bsf.home1.net");
    let new_muk = Muk::from_bytes([0x77; 32]);
    f.add_muk(new_id, new_muk.clone()).unwrap();
    f.process_msk_message(&b.msk(3, (0, 100), false), T0)
        .unwrap();
    f.process_msk_message(
        &b.msk_under("new@bsf.home1.net", &new_muk, 4, (0, 9), false),
        T0,
    )
    .unwrap();
}

/// `PROFILE.md` section 7: IDr names "its current [MUK] or the one
/// before", whether or not the one before was ever used. A UE registers
/// under B-TID A, bootstraps again (B) before the push protected with A
/// arrives: the delayed push still verifies.
#[test]
fn a_push_under_the_previous_muk_verifies_though_that_muk_was_never_used() {
    let mut b = Bmsc::new();
    let mut f = ue();
    let new_id = MukId::new(BMSC, "new@bsf.home1.net");
    let new_muk = Muk::from_bytes([0x77; 32]);
    f.add_muk(new_id.clone(), new_muk.clone()).unwrap();
    assert!(
        f.state().muks.contains_key(&muk_id()),
        "the one before is kept"
    );
    let inst = &f.state().installed_muks[BMSC];
    assert_eq!(
        (&inst.current, inst.previous.as_ref()),
        (&new_id, Some(&muk_id()))
    );
    assert!(matches!(
        f.process_msk_message(&b.msk(1, (0, 100), true), T0)
            .unwrap(),
        MskOutcome::Stored { .. }
    ));
    assert_eq!(f.state().last_used_muk[BMSC], muk_id());
    // Installing the current MUK again keeps the one before.
    f.add_muk(new_id.clone(), new_muk).unwrap();
    assert_eq!(f.state().installed_muks[BMSC].previous, Some(muk_id()));
}

/// Three bootstraps: A (used by the BM-SC), B (never used), C. B is the one
/// before C and verifies any MSK message; A is kept only because the BM-SC
/// last used it, for the solicited pull (seeds 002/003 6.3.2.2.4); any other
/// message under A is refused as an unknown MUK.
#[test]
fn the_muk_before_the_previous_one_serves_only_the_solicited_pull() {
    let mut b = Bmsc::new();
    let mut f = ue();
    f.process_msk_message(&b.msk(1, (0, 100), false), T0)
        .unwrap();
    let (b_btid, b_muk) = ("b@bsf.home1.net", Muk::from_bytes([0x77; 32]));
    let (c_btid, c_muk) = ("c@bsf.home1.net", Muk::from_bytes([0x78; 32]));
    f.add_muk(MukId::new(BMSC, b_btid), b_muk.clone()).unwrap();
    f.add_muk(MukId::new(BMSC, c_btid), c_muk.clone()).unwrap();
    assert_eq!(
        f.state().muks.len(),
        3,
        "C, B (the one before), A (last used)"
    );
    let under_a = b.msk(2, (0, 100), false);
    let e = refused(&mut f, |f| f.process_msk_message(&under_a, T0));
    assert!(
        matches!(&e, MgvError::UnknownMuk(id) if id.idr == BTID),
        "{e}"
    );
    b.muk_counter += 1;
    let pull = MskMessage::solicited_pull(muk_id(), b.muk_counter, [7; 16], kd(), 1)
        .build(&muk())
        .unwrap();
    assert!(matches!(
        f.process_msk_message(&pull.bytes, T0).unwrap(),
        MskOutcome::SolicitedPull { .. }
    ));
    assert!(matches!(
        f.process_msk_message(&b.msk_under(b_btid, &b_muk, 3, (0, 100), false), T0)
            .unwrap(),
        MskOutcome::Stored { .. }
    ));
    // B is now the last used one: A goes at the next bootstrap (D), B and C
    // stay (the one before D, and the last used).
    f.add_muk(
        MukId::new(BMSC, "d@bsf.home1.net"),
        Muk::from_bytes([0x79; 32]),
    )
    .unwrap();
    let held: Vec<&str> = f.state().muks.keys().map(|id| id.idr.as_str()).collect();
    assert_eq!(
        held,
        ["b@bsf.home1.net", "c@bsf.home1.net", "d@bsf.home1.net"]
    );
    assert!(matches!(
        f.process_msk_message(&b.msk_under(c_btid, &c_muk, 4, (0, 100), false), T0)
            .unwrap(),
        MskOutcome::Stored { .. }
    ));
    // Deleting the current MUK makes the one before current.
    f.delete_muk(&MukId::new(BMSC, "d@bsf.home1.net")).unwrap();
    let inst = &f.state().installed_muks[BMSC];
    assert_eq!(
        (inst.current.idr.as_str(), inst.previous.as_ref()),
        (c_btid, None)
    );
}

/// Issue 11 point 5 (`PROFILE.md` section 7 revised, seed 004 6.4.2): an
/// identical resend is acknowledged again at most once per second per MSK;
/// excess copies get no acknowledgement and change nothing; anything else
/// with a counter not greater is a replay.
#[test]
fn identical_resends_are_reacknowledged_at_most_once_per_second() {
    let ms = Duration::from_millis;
    let mut b = Bmsc::new();
    let mut f = ue();
    let m = b.msk(1, (0, 100), true);
    f.process_msk_message(&m, ms(10_000)).unwrap();
    let before = f.state().clone();
    let mut acks = 0;
    // A flood of 1,000 copies within 0.5 s: one re-acknowledgement.
    for i in 0..1000u64 {
        match f.process_msk_message(&m, ms(10_000 + i / 2)).unwrap() {
            MskOutcome::Duplicate { ack: Some(_) } => acks += 1,
            MskOutcome::DuplicateSuppressed { msk } => assert_eq!(msk, name(1, 1)),
            o => panic!("{o:?}"),
        }
    }
    assert_eq!(acks, 1);
    assert_eq!(f.state(), &before, "copies change nothing");
    // One second after the last re-acknowledgement: again.
    assert!(matches!(
        f.process_msk_message(&m, ms(10_999)).unwrap(),
        MskOutcome::DuplicateSuppressed { .. }
    ));
    assert!(matches!(
        f.process_msk_message(&m, ms(11_000)).unwrap(),
        MskOutcome::Duplicate { ack: Some(_) }
    ));
    // The limit is per MSK: the last message under another MUK, for another
    // MSK, is re-acknowledged at once.
    let m2 = b.msk(2, (0, 100), true);
    f.process_msk_message(&m2, ms(11_000)).unwrap();
    assert!(matches!(
        f.process_msk_message(&m2, ms(11_001)).unwrap(),
        MskOutcome::Duplicate { ack: Some(_) }
    ));
    // The earlier message is no longer the last one: a replay.
    let e = refused(&mut f, |f| f.process_msk_message(&m, ms(20_000)));
    assert!(matches!(e, MgvError::Replay { .. }), "{e}");
    // A different message with the same counter: a replay.
    let mut b2 = Bmsc::new();
    b2.muk_counter = 1;
    let other = b2.msk(3, (0, 100), true);
    let e = refused(&mut f, |f| f.process_msk_message(&other, ms(20_000)));
    assert!(matches!(e, MgvError::Replay { .. }), "{e}");
    // A copy with a flipped bit in the MAC: refused.
    let mut bad = m2.clone();
    let n = bad.len();
    bad[n - 1] ^= 1;
    refused(&mut f, |f| f.process_msk_message(&bad, ms(20_000)));
}

/// Issue 11 point 6 (`PROFILE.md` section 7 revised): the MGV-S is created
/// only explicitly; opening a missing, empty, truncated or invalid file is a
/// typed error naming the file, never an empty state.
#[test]
fn file_store_create_is_explicit_and_damage_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub").join("mgvs.json");
    let e = FileStore::open(&path).unwrap_err();
    assert!(
        matches!(&e, StoreError::Missing { path: p } if *p == path),
        "{e}"
    );
    assert!(e.to_string().contains("mgvs.json"));
    {
        let mut f = MgvF::new(FileStore::create(&path).unwrap());
        assert!(path.exists(), "created at once");
        f.add_muk(muk_id(), muk()).unwrap();
        let mut b = Bmsc::new();
        f.process_msk_message(&b.msk(1, (0, 100), false), T0)
            .unwrap();
        f.process_mtk_message(&b.mtk(1, 9)).unwrap();
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(path.parent().unwrap()), 0o700);
    }
    assert!(matches!(
        FileStore::create(&path),
        Err(StoreError::Exists { .. })
    ));
    let good = std::fs::read_to_string(&path).unwrap();
    assert!(good.contains("\"format\": \"mbms-mgvs/3\""));
    assert_eq!(
        FileStore::open(&path).unwrap().state().msks[&name(1, 1)].accepted,
        Some(MtkId::new(9))
    );
    let damaged: Vec<(&str, String)> = vec![
        ("empty", String::new()),
        ("truncated", good[..good.len() / 2].to_owned()),
        ("not json", "not json".into()),
        (
            "unknown field",
            good.replacen("\"muks\"", "\"extra\": 1, \"muks\"", 1),
        ),
        (
            "negative counter",
            good.replacen("\"counter\": 1", "\"counter\": -1", 1),
        ),
        (
            "unknown format",
            good.replacen("mbms-mgvs/3", "mbms-mgvs/9", 1),
        ),
        (
            "dangling installed MUK",
            good.replacen(
                "\"installed_muks\": [",
                "\"installed_muks\": [{\"idi\": \"x.net\", \"current\": \"y\", \"previous\": null},",
                1,
            ),
        ),
        (
            "a MUK neither current, previous nor last used",
            good.replacen(
                "\"muks\": [",
                &format!(
                    "\"muks\": [{{\"idi\": \"{BMSC}\", \"idr\": \"z\", \"muk\": \"{}\", \
                     \"counter\": null, \"last_mac\": null}},",
                    hex::encode([0x6d; 32])
                ),
                1,
            ),
        ),
        (
            "dangling last-used MUK",
            good.replacen(
                "\"last_used_muk\": [",
                "\"last_used_muk\": [{\"idi\": \"x.net\", \"idr\": \"y\"},",
                1,
            ),
        ),
    ];
    for (what, text) in damaged {
        assert_ne!(text, good, "{what}: the damage applies");
        std::fs::write(&path, &text).unwrap();
        let e = FileStore::open(&path).unwrap_err();
        assert!(
            matches!(&e, StoreError::Corrupt { path: p, .. } if *p == path),
            "{what}: {e}"
        );
        assert!(e.to_string().contains("mgvs.json"), "{what}: {e}");
    }
}

/// Format version 1 (with arrival numbers) still loads; its accepted MTK ID
/// is SEQs when an MTK was accepted.
#[test]
fn file_store_reads_format_1() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mgvs.json");
    let v1 = format!(
        r#"{{"format": "mbms-mgvs/1",
  "muks": [{{"idi": "{BMSC}", "idr": "{BTID}", "muk": "{muk}", "counter": 4, "last_mac": null}}],
  "last_used_muk": [{{"idi": "{BMSC}", "idr": "{BTID}"}}],
  "msks": [{{"key_domain": "001-01", "msk_id": "{msk1}", "msk": "{k}", "seq_s": 7, "seq_u": 100, "counter": 3, "arrival": 0}},
           {{"key_domain": "001-01", "msk_id": "{msk2}", "msk": "{k}", "seq_s": 0, "seq_u": 100, "counter": null, "arrival": 1}}],
  "next_arrival": 2}}"#,
        muk = hex::encode([0x6d; 32]),
        k = hex::encode([1u8; 16]),
        msk1 = name(1, 1).msk_id,
        msk2 = name(1, 2).msk_id,
    );
    std::fs::write(&path, v1).unwrap();
    let mut f = MgvF::new(FileStore::open(&path).unwrap());
    assert_eq!(f.state().msks[&name(1, 1)].accepted, Some(MtkId::new(7)));
    assert_eq!(f.state().msks[&name(1, 2)].accepted, None);
    assert_eq!(f.state().muks[&muk_id()].counter, Some(4));
    // The next commit writes format 3.
    f.add_muk(muk_id(), muk()).unwrap();
    assert!(std::fs::read_to_string(&path)
        .unwrap()
        .contains("mbms-mgvs/3"));
}

/// Format version 2 named no current MUK: of a BM-SC's two MUKs the one not
/// last used is the current one, the last used one the previous one; one
/// MUK is the current one; two MUKs neither of them last used are damage.
#[test]
fn file_store_reads_format_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mgvs.json");
    let v2 = |muks: &[&str], last_used: Option<&str>| {
        let muks: Vec<String> = muks
            .iter()
            .map(|idr| {
                format!(
                    r#"{{"idi": "{BMSC}", "idr": "{idr}", "muk": "{}", "counter": null, "last_mac": null}}"#,
                    hex::encode([0x6d; 32])
                )
            })
            .collect();
        let used: Vec<String> = last_used
            .iter()
            .map(|idr| format!(r#"{{"idi": "{BMSC}", "idr": "{idr}"}}"#))
            .collect();
        format!(
            r#"{{"format": "mbms-mgvs/2", "muks": [{}], "last_used_muk": [{}], "msks": []}}"#,
            muks.join(","),
            used.join(",")
        )
    };
    std::fs::write(&path, v2(&["new", "old"], Some("old"))).unwrap();
    let f = MgvF::new(FileStore::open(&path).unwrap());
    let inst = &f.state().installed_muks[BMSC];
    assert_eq!(inst.current, MukId::new(BMSC, "new"));
    assert_eq!(inst.previous, Some(MukId::new(BMSC, "old")));
    std::fs::write(&path, v2(&["only"], None)).unwrap();
    let f = MgvF::new(FileStore::open(&path).unwrap());
    assert_eq!(
        (
            &f.state().installed_muks[BMSC].current,
            &f.state().installed_muks[BMSC].previous
        ),
        (&MukId::new(BMSC, "only"), &None)
    );
    std::fs::write(&path, v2(&["a", "b"], None)).unwrap();
    let e = FileStore::open(&path).unwrap_err();
    assert!(
        matches!(&e, StoreError::Corrupt { .. }) && e.to_string().contains("current"),
        "{e}"
    );
}

/// Writes are crash-safe and keep 0600 even over a leftover temporary file
/// with another mode.
#[cfg(unix)]
#[test]
fn file_store_commit_keeps_mode_0600_over_a_leftover_tmp() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mgvs.json");
    let mut f = MgvF::new(FileStore::create(&path).unwrap());
    let tmp = dir.path().join("mgvs.json.tmp");
    std::fs::write(&tmp, b"x").unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
    f.add_muk(muk_id(), muk()).unwrap();
    assert!(!tmp.exists());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
}
