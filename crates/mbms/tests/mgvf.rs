//! MGV-F behaviour (seed 004 6.5.3/6.5.4, seed 000 6.3.2.1, seeds 002/003
//! 6.3.2.2.4; `PROFILE.md` section 7): every acceptance and every failure
//! class, with a check that a failure leaves the stored state unchanged.

use mbms::messages::{MskAck, MskKeyData, MskMessage, MtkMessage, Streaming};
use mbms::mgvf::store::{FileStore, MemoryStore, MgvState, MgvStore, StoreError};
use mbms::mgvf::{MgvError, MgvF, MskOutcome};
use mbms::{
    KeyDomainId, KeyGroupName, Msk, MskId, MskName, Mtk, MtkId, MtkKey, MtkSalt, Muk, MukId,
};

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
    let out = f.process_msk_message(&m).unwrap();
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
        f.process_msk_message(&m).unwrap(),
        MskOutcome::Stored { ack: None, .. }
    ));
}

#[test]
fn failures_change_nothing() {
    let mut b = Bmsc::new();
    let mut f = ue();
    let first = b.msk(1, (0, 100), true);
    f.process_msk_message(&first).unwrap();

    // Replay of an older counter.
    let older = {
        let mut b2 = Bmsc::new();
        b2.msk(1, (0, 50), true)
    };
    let e = refused(&mut f, |f| f.process_msk_message(&older));
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
        refused(&mut f, |f| f.process_msk_message(&t)),
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
        refused(&mut f, |f| f.process_msk_message(&other)),
        MgvError::UnknownMuk(_)
    ));

    // Malformed: truncated, and an MTK message given as an MSK message.
    assert!(matches!(
        refused(&mut f, |f| f.process_msk_message(&first[..first.len() - 1])),
        MgvError::Malformed(_)
    ));
    let mtk_msg = b.mtk(1, 1);
    assert!(matches!(
        refused(&mut f, |f| f.process_msk_message(&mtk_msg)),
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
    let first = f.process_msk_message(&m).unwrap();
    let before = f.state().clone();
    let MskOutcome::Stored { ack: Some(a1), .. } = first else {
        panic!()
    };
    let again = f.process_msk_message(&m).unwrap();
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
            f.process_msk_message(&m).unwrap(),
            MskOutcome::Stored { replaced: None, .. }
        ));
    }
    let m = b.msk(3, (0, 100), false);
    let out = f.process_msk_message(&m).unwrap();
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
    f.process_msk_message(&other.bytes).unwrap();
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
    let out = f.process_msk_message(&inactive).unwrap();
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
    let out = f.process_msk_message(&activation).unwrap();
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
    f.process_msk_message(&b.msk(1, (10, 20), false)).unwrap();
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
    f.process_msk_message(&b.msk(1, (65530, 5), false)).unwrap();
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
    f.process_msk_message(&b.msk(1, (0, 32767), false)).unwrap();
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
    f.process_msk_message(&b.msk(1, (0, 100), false)).unwrap();
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
    f.process_msk_message(&b.msk(1, (0, 100), false)).unwrap();
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
    let out = f.process_msk_message(&pull.bytes).unwrap();
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
        f.process_msk_message(&pull.bytes).unwrap(),
        MskOutcome::Duplicate { ack: None }
    );
    assert_eq!(f.state(), &before);
    // A window whose SEQs is above SEQu by RFC 1982 makes an inactive MSK.
    let mut b = Bmsc::new();
    b.muk_counter = 5;
    let m = b.msk(1, (0, 40000), false);
    assert!(matches!(
        f.process_msk_message(&m).unwrap(),
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
    f.process_msk_message(&b.msk(1, (0, 100), false)).unwrap();
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
        f.process_msk_message(&pull.bytes).unwrap(),
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
        refused(&mut f, |f| f.process_msk_message(&other.bytes)),
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
    f.process_msk_message(&m.bytes).unwrap();
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
        let mut f = MgvF::new(FileStore::open(&path).unwrap());
        f.add_muk(muk_id(), muk()).unwrap();
        f.process_msk_message(&b.msk(1, (0, 100), true)).unwrap();
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
        f.process_msk_message(&old),
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
    f.process_msk_message(&b.msk(1, (0, 100), false)).unwrap();
    let mut rolled = f.state().clone();
    rolled.muks.get_mut(&muk_id()).unwrap().counter = Some(0);
    let mut store = MemoryStore::new();
    store.commit(f.state().clone()).unwrap();
    assert!(matches!(
        store.commit(rolled),
        Err(StoreError::CounterRollback(_))
    ));
}
