//! State-machine property test of the MGV-F (issue 11; `PROFILE.md` section
//! 7, revised; seed 004 6.5.3/6.5.4; seed 000 6.3.2.1).
//!
//! A BM-SC in miniature builds genuine MSK and MTK messages with the crate's
//! own BM-SC-side builders ([`MskMessage::build`], [`MtkMessage::build`]),
//! under the UE's previous and current MUK, with increasing counters. The
//! UE receives them in order, reordered, duplicated, dropped, replayed,
//! garbled, or forged (unknown IDr, wrong MUK), with time advancing. After
//! every message:
//!
//! * the MSK with the highest Key Number received of the key group is held;
//! * no MTK ID is accepted twice under one MSK, nor one at or below an MTK
//!   ID accepted before under that MSK;
//! * a refused message, a duplicate and a suppressed duplicate change
//!   nothing (the whole state is compared);
//! * counters never go back, only genuine keys are stored or handed out, a
//!   key group never holds more than two MSKs;
//! * an MSK message whose IDr names no MUK the UE holds is refused unless it
//!   is a solicited pull;
//! * identical resends are acknowledged again at most once per second per
//!   MSK.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mbms::messages::{classify, MessageKind, MskEnvelope, MskKeyData, MskMessage, MtkMessage};
use mbms::mgvf::store::{FileStore, MemoryStore, MgvState, MgvStore};
use mbms::mgvf::{MgvError, MgvF, MskOutcome};
use mbms::profile::{MAX_MSKS_PER_KEY_GROUP, MSK_REACK_INTERVAL};
use mbms::{
    KeyDomainId, KeyGroupName, Msk, MskId, MskName, Mtk, MtkId, MtkKey, MtkSalt, Muk, MukId,
};
use proptest::prelude::*;

const BMSC: &str = "bmsc.home1.net";
/// The B-TIDs: 0 = previous MUK, 1 = current MUK, 2 = one the UE never had.
const BTIDS: [&str; 3] = [
    "previous@bsf.home1.net",
    "current@bsf.home1.net",
    "never@bsf.home1.net",
];

fn muk(i: usize) -> Muk {
    Muk::from_bytes([0x30 + i as u8; 32])
}

fn muk_id(i: usize) -> MukId {
    MukId::new(BMSC, BTIDS[i])
}

fn kd() -> KeyDomainId {
    KeyDomainId([0, 0xf1, 0x10])
}

fn group() -> KeyGroupName {
    KeyGroupName {
        key_domain: kd(),
        key_group: 1,
    }
}

fn name(n: u16) -> MskName {
    MskName {
        key_domain: kd(),
        msk_id: MskId::new(1, n),
    }
}

fn msk_key(n: u16) -> Msk {
    Msk::from_bytes([0x40 + n as u8; 16])
}

fn mtk_for(n: u16, id: u16) -> Mtk {
    let mut k = [0u8; 16];
    k[..2].copy_from_slice(&id.to_be_bytes());
    k[2] = n as u8;
    Mtk {
        key: MtkKey::from_bytes(k),
        salt: MtkSalt::from_bytes([n as u8; 14]),
    }
}

/// What the BM-SC (or an attacker) produces next.
#[derive(Clone, Debug)]
enum Gen {
    /// A genuine MSK message under MUK `muk` (0 previous, 1 current):
    /// Key Number, window (SEQs, SEQu), V bit.
    Msk {
        muk: usize,
        n: u16,
        seq_s: u16,
        seq_u: u16,
        v: bool,
    },
    /// A genuine solicited pull under MUK `muk` (0, 1, or 2 = an IDr the
    /// UE does not hold, then protected with MUK `key`, as a BM-SC that
    /// lost track of the UE's B-TID would).
    Pull { muk: usize, key: usize },
    /// A genuine MTK message under MSK `n`.
    Mtk { n: u16, id: u16 },
    /// An MSK message naming the unknown B-TID, protected with a MUK the
    /// UE holds (the fallback must not apply).
    ForgedIdr { n: u16, which: usize },
    /// An MSK message under a known IDr protected with a wrong MUK.
    ForgedMuk { n: u16 },
    /// An MTK message under a wrong MSK key.
    ForgedMtk { n: u16, id: u16 },
}

/// How the UE receives messages: each step delivers something and lets
/// time pass.
#[derive(Clone, Debug)]
enum Step {
    /// Generate a message and deliver it at once.
    Fresh(Gen),
    /// Generate a message and hold it back (delivered later, or dropped).
    Hold(Gen),
    /// Deliver a held-back message (reordering).
    Release(usize),
    /// Deliver again a message delivered before (duplicate / replay).
    Again(usize),
    /// Deliver a delivered message with one bit flipped.
    Flip(usize, usize),
    /// Deliver a delivered message cut short.
    Cut(usize, usize),
}

/// (SEQs, SEQu): mostly wide, sometimes ending low (a validity update below
/// MTK IDs accepted before), sometimes inactive (SEQs > SEQu, the 4-way
/// procedure).
fn window() -> impl Strategy<Value = (u16, u16)> {
    prop_oneof![
        4 => (0u16..40, 0u16..60),
        2 => (0u16..5, 5u16..15),
        1 => Just((1, 0)),
    ]
}

fn gen() -> impl Strategy<Value = Gen> {
    prop_oneof![
        6 => (0usize..2, 1u16..=5, window(), any::<bool>())
            .prop_map(|(muk, n, (seq_s, seq_u), v)| Gen::Msk { muk, n, seq_s, seq_u, v }),
        1 => (0usize..3, 0usize..2).prop_map(|(muk, key)| Gen::Pull { muk, key }),
        8 => (1u16..=5, prop_oneof![0u16..60, 0u16..15]).prop_map(|(n, id)| Gen::Mtk { n, id }),
        1 => (1u16..=5, 0usize..2).prop_map(|(n, which)| Gen::ForgedIdr { n, which }),
        1 => (1u16..=5).prop_map(|n| Gen::ForgedMuk { n }),
        1 => (1u16..=5, 0u16..60).prop_map(|(n, id)| Gen::ForgedMtk { n, id }),
    ]
}

fn step() -> impl Strategy<Value = (Step, u16)> {
    let s = prop_oneof![
        8 => gen().prop_map(Step::Fresh),
        3 => gen().prop_map(Step::Hold),
        3 => any::<usize>().prop_map(Step::Release),
        4 => any::<usize>().prop_map(Step::Again),
        2 => (any::<usize>(), any::<usize>()).prop_map(|(i, b)| Step::Flip(i, b)),
        1 => (any::<usize>(), any::<usize>()).prop_map(|(i, b)| Step::Cut(i, b)),
    ];
    // Milliseconds that pass before the step.
    (s, prop_oneof![3 => 0u16..50, 1 => 0u16..3000])
}

/// The miniature BM-SC: counters per MUK and per MSK.
#[derive(Default)]
struct Bmsc {
    muk_counter: [u32; 3],
    msk_counter: BTreeMap<u16, u32>,
    rand: u8,
}

impl Bmsc {
    fn rand(&mut self) -> [u8; 16] {
        self.rand = self.rand.wrapping_add(1);
        [self.rand; 16]
    }

    fn build(&mut self, g: &Gen) -> Vec<u8> {
        let rand = self.rand();
        let msk_msg = |muk: usize, counter: u32, n: u16, seq: (u16, u16), v: bool| MskMessage {
            muk_id: muk_id(muk),
            counter,
            rand,
            msk: name(n),
            v,
            key: Some(MskKeyData {
                msk: msk_key(n),
                seq_s: MtkId::new(seq.0),
                seq_u: MtkId::new(seq.1),
            }),
        };
        match *g {
            Gen::Msk {
                muk: m,
                n,
                seq_s,
                seq_u,
                v,
            } => {
                self.muk_counter[m] += 1;
                msk_msg(m, self.muk_counter[m], n, (seq_s, seq_u), v)
                    .build(&muk(m))
                    .unwrap()
                    .bytes
            }
            Gen::Pull { muk: m, key } => {
                self.muk_counter[m] += 1;
                let key = if m == 2 { key } else { m };
                MskMessage::solicited_pull(muk_id(m), self.muk_counter[m], rand, kd(), 1)
                    .build(&muk(key))
                    .unwrap()
                    .bytes
            }
            Gen::Mtk { n, id } => {
                let c = self.msk_counter.entry(n).or_default();
                *c += 1;
                MtkMessage {
                    counter: *c,
                    rand,
                    msk: name(n),
                    mtk_id: MtkId::new(id),
                    mtk: mtk_for(n, id),
                    streaming: None,
                }
                .build(&msk_key(n))
                .unwrap()
            }
            Gen::ForgedIdr { n, which } => {
                msk_msg(2, u32::MAX - 1, n, (0, 59), true)
                    .build(&muk(which))
                    .unwrap()
                    .bytes
            }
            Gen::ForgedMuk { n } => {
                msk_msg(1, u32::MAX - 1, n, (0, 59), true)
                    .build(&Muk::from_bytes([0xee; 32]))
                    .unwrap()
                    .bytes
            }
            Gen::ForgedMtk { n, id } => MtkMessage {
                counter: u32::MAX - 1,
                rand,
                msk: name(n),
                mtk_id: MtkId::new(id),
                mtk: Mtk {
                    key: MtkKey::from_bytes([0xee; 16]),
                    salt: MtkSalt::from_bytes([0xee; 14]),
                },
                streaming: None,
            }
            .build(&Msk::from_bytes([0xee; 16]))
            .unwrap(),
        }
    }
}

/// What the test remembers across steps.
#[derive(Default)]
struct Model {
    /// The highest Key Number of an MSK message the UE accepted.
    highest: Option<u16>,
    /// MTK IDs accepted per MSK.
    accepted: BTreeMap<u16, BTreeSet<u16>>,
    /// When each MSK was last acknowledged again for an identical resend.
    reacked: BTreeMap<MskName, Duration>,
}

fn common_invariants(before: &MgvState, after: &MgvState) -> Result<(), TestCaseError> {
    for (id, m) in &before.muks {
        if let Some(n) = after.muks.get(id) {
            prop_assert!(n.counter >= m.counter, "MUK counter went back");
        }
    }
    for (nm, m) in &before.msks {
        if let Some(n) = after.msks.get(nm) {
            prop_assert!(n.counter >= m.counter, "MSK counter went back");
        }
    }
    let mut per_group: BTreeMap<_, usize> = BTreeMap::new();
    for (nm, m) in &after.msks {
        *per_group.entry(nm.key_group()).or_default() += 1;
        prop_assert_eq!(
            &m.msk,
            &msk_key(nm.msk_id.key_number),
            "a non-genuine MSK was stored"
        );
    }
    prop_assert!(
        per_group.values().all(|c| *c <= MAX_MSKS_PER_KEY_GROUP),
        "more than two MSKs in a key group"
    );
    Ok(())
}

/// The UE: the previous MUK was used by the BM-SC (a pull), then the UE
/// bootstrapped again and holds the current MUK too.
fn ue(b: &mut Bmsc) -> MgvF<MemoryStore> {
    let mut f = MgvF::new(MemoryStore::new());
    f.add_muk(muk_id(0), muk(0)).unwrap();
    let pull = b.build(&Gen::Pull { muk: 0, key: 0 });
    f.process_msk_message(&pull, Duration::ZERO).unwrap();
    f.add_muk(muk_id(1), muk(1)).unwrap();
    assert_eq!(f.state().muks.len(), 2);
    f
}

fn deliver(
    f: &mut MgvF<MemoryStore>,
    model: &mut Model,
    bytes: &[u8],
    now: Duration,
) -> Result<(), TestCaseError> {
    let before = f.state().clone();
    if matches!(classify(bytes), Ok(MessageKind::Mtk)) {
        match f.process_mtk_message(bytes) {
            Ok(out) => {
                let n = out.msk.msk_id.key_number;
                prop_assert_eq!(&out.mtk, &mtk_for(n, out.mtk_id.value()), "forged MTK");
                let seen = model.accepted.entry(n).or_default();
                let id = out.mtk_id.value();
                prop_assert!(
                    seen.iter().all(|&a| MtkId::new(id).0.gt(MtkId::new(a).0)),
                    "MTK ID {} accepted under MSK {} after {:?}",
                    id,
                    n,
                    seen
                );
                seen.insert(id);
            }
            Err(_) => prop_assert_eq!(f.state(), &before, "a refused MTK message changed state"),
        }
    } else {
        let env = MskEnvelope::parse(bytes).ok();
        let unknown_idr = env
            .as_ref()
            .is_some_and(|e| e.muk_id.idr == BTIDS[2] && !e.is_solicited_pull());
        match f.process_msk_message(bytes, now) {
            Ok(out) => {
                prop_assert!(
                    !unknown_idr,
                    "an MSK message under an unknown IDr: {:?}",
                    out
                );
                match out {
                    MskOutcome::Stored { msk, .. } | MskOutcome::Superseded { msk, .. } => {
                        let n = msk.msk_id.key_number;
                        model.highest = Some(model.highest.map_or(n, |h| h.max(n)));
                        if matches!(out, MskOutcome::Superseded { .. }) {
                            prop_assert_eq!(&f.state().msks, &before.msks);
                        }
                    }
                    MskOutcome::SolicitedPull { .. } => {
                        prop_assert_eq!(&f.state().msks, &before.msks);
                    }
                    MskOutcome::Duplicate { ack } => {
                        prop_assert_eq!(f.state(), &before, "a duplicate changed state");
                        if ack.is_some() {
                            let msk = env.as_ref().map(|e| e.msk).unwrap();
                            if let Some(t) = model.reacked.get(&msk) {
                                prop_assert!(
                                    now.saturating_sub(*t) >= MSK_REACK_INTERVAL,
                                    "two re-acknowledgements within a second"
                                );
                            }
                            model.reacked.insert(msk, now);
                        }
                    }
                    MskOutcome::DuplicateSuppressed { .. } => {
                        prop_assert_eq!(f.state(), &before, "a suppressed duplicate changed state");
                    }
                }
            }
            Err(e) => {
                if unknown_idr {
                    prop_assert!(matches!(e, MgvError::UnknownMuk(_)), "{}", e);
                }
                prop_assert_eq!(f.state(), &before, "a refused MSK message changed state");
            }
        }
    }
    if let Some(h) = model.highest {
        prop_assert!(
            f.state().msks.contains_key(&name(h)),
            "the MSK with the highest Key Number received ({}) was deleted; held: {:?}",
            h,
            f.msks_of(group())
                .iter()
                .map(|r| r.name.msk_id.key_number)
                .collect::<Vec<_>>()
        );
    }
    common_invariants(&before, f.state())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    #[test]
    fn mgvf_state_machine(steps in proptest::collection::vec(step(), 1..80)) {
        let mut b = Bmsc::default();
        let mut f = ue(&mut b);
        let mut model = Model::default();
        let mut held: Vec<Vec<u8>> = Vec::new();
        let mut delivered: Vec<Vec<u8>> = Vec::new();
        let mut now = Duration::from_secs(1);
        for (s, dt) in steps {
            now += Duration::from_millis(u64::from(dt));
            let bytes = match s {
                Step::Fresh(g) => b.build(&g),
                Step::Hold(g) => {
                    held.push(b.build(&g));
                    continue;
                }
                Step::Release(i) if !held.is_empty() => held.remove(i % held.len()),
                Step::Again(i) if !delivered.is_empty() => delivered[i % delivered.len()].clone(),
                Step::Flip(i, bit) if !delivered.is_empty() => {
                    let mut m = delivered[i % delivered.len()].clone();
                    let bit = bit % (m.len() * 8);
                    m[bit / 8] ^= 1 << (bit % 8);
                    m
                }
                Step::Cut(i, at) if !delivered.is_empty() => {
                    let m = &delivered[i % delivered.len()];
                    m[..at % m.len()].to_vec()
                }
                _ => continue,
            };
            deliver(&mut f, &mut model, &bytes, now)?;
            if !bytes.is_empty() {
                delivered.push(bytes);
            }
        }
    }
}

/// One step of [`muks_across_bootstraps`]: a GBA bootstrapping that installs
/// MUK `k`, or an MSK message (a push, or a solicited pull when `pull`)
/// protected with MUK `k` and naming it.
#[derive(Clone, Debug)]
enum MukStep {
    Bootstrap(usize),
    Message { k: usize, pull: bool },
}

/// B-TIDs of [`muks_across_bootstraps`] (MUK `k` is [`muk`]`(k)`).
const BOOT_BTIDS: [&str; 5] = [
    "b0@bsf.home1.net",
    "b1@bsf.home1.net",
    "b2@bsf.home1.net",
    "b3@bsf.home1.net",
    "b4@bsf.home1.net",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]
    /// `PROFILE.md` section 7 across re-bootstraps, against a model: an MSK
    /// message naming the current MUK or the one installed before it
    /// verifies, used or not; a solicited pull may also name any other MUK
    /// held (the one the BM-SC last used) and otherwise is checked with the
    /// last used MUK (here: a wrong key, so a bad MAC); anything else is an
    /// unknown MUK. The MGV-F holds exactly the current, the previous and
    /// the last used MUK.
    #[test]
    fn muks_across_bootstraps(steps in proptest::collection::vec(
        prop_oneof![
            1 => (0usize..5).prop_map(MukStep::Bootstrap),
            3 => (0usize..5, any::<bool>()).prop_map(|(k, pull)| MukStep::Message { k, pull }),
        ],
        1..60,
    )) {
        let id = |k: usize| MukId::new(BMSC, BOOT_BTIDS[k]);
        let mut f = MgvF::new(MemoryStore::new());
        let (mut current, mut previous, mut last_used) =
            (None::<usize>, None::<usize>, None::<usize>);
        let mut counter = 0u32;
        for s in steps {
            match s {
                MukStep::Bootstrap(k) => {
                    f.add_muk(id(k), muk(k)).unwrap();
                    if current != Some(k) {
                        previous = current;
                    }
                    current = Some(k);
                }
                MukStep::Message { k, pull } => {
                    counter += 1;
                    let m = if pull {
                        MskMessage::solicited_pull(id(k), counter, [k as u8; 16], kd(), 1)
                    } else {
                        MskMessage {
                            muk_id: id(k),
                            counter,
                            rand: [k as u8; 16],
                            msk: name(1 + (counter % 2) as u16),
                            v: true,
                            key: Some(MskKeyData {
                                msk: msk_key(1),
                                seq_s: MtkId::new(0),
                                seq_u: MtkId::new(100),
                            }),
                        }
                    }
                    .build(&muk(k))
                    .unwrap();
                    let installed = current == Some(k) || previous == Some(k);
                    let held = installed || last_used == Some(k);
                    let before = f.state().clone();
                    let r = f.process_msk_message(&m.bytes, Duration::from_secs(1));
                    match r {
                        Ok(_) => {
                            prop_assert!(installed || (pull && held), "{k} accepted");
                            last_used = Some(k);
                        }
                        Err(MgvError::UnknownMuk(_)) => {
                            prop_assert!(!installed && !(pull && (held || last_used.is_some())),
                                "{k} unknown");
                            prop_assert_eq!(f.state(), &before);
                        }
                        Err(MgvError::BadMac) => {
                            // The fallback to the last used MUK: another key.
                            prop_assert!(pull && !held && last_used.is_some(), "{k} bad MAC");
                            prop_assert_eq!(f.state(), &before);
                        }
                        Err(e) => prop_assert!(false, "{k}: {e}"),
                    }
                }
            }
            // Exactly the current, the previous and the last used MUK.
            let want: std::collections::BTreeSet<MukId> =
                [current, previous, last_used].into_iter().flatten().map(id).collect();
            let have: std::collections::BTreeSet<MukId> = f.state().muks.keys().cloned().collect();
            prop_assert_eq!(have, want);
        }
        // What the MGV-F stored reads back (a file store checks it).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mgvs.json");
        let mut file = FileStore::create(&path).unwrap();
        file.commit(f.state().clone()).unwrap();
        let reread = FileStore::open(&path).unwrap();
        prop_assert_eq!(reread.state(), f.state());
    }
}
