//! Property: random sequences of valid, replayed, reordered, tampered and
//! forged messages never break the MGV-F invariants: counters never go
//! back, no key is accepted without a valid MAC (only genuine keys are ever
//! stored or handed out), and a key group never holds more than two MSKs.

use std::collections::BTreeMap;

use mbms::messages::{MskKeyData, MskMessage, MtkMessage};
use mbms::mgvf::store::{MemoryStore, MgvState};
use mbms::mgvf::{MgvF, MskOutcome};
use mbms::{KeyDomainId, Msk, MskId, MskName, Mtk, MtkId, MtkKey, MtkSalt, Muk, MukId};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    /// A genuine MSK message: MSK number (1..=4), window, V.
    Msk(u16, u16, u16, bool),
    /// A genuine MTK message under MSK n with this MTK ID.
    Mtk(u16, u16),
    /// Replay an earlier message (index into the sent list).
    Replay(usize),
    /// Flip a bit of an earlier message.
    Tamper(usize, usize),
    /// An MSK message protected with the wrong MUK.
    Forged(u16),
    /// Solicited pull.
    Pull,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u16..=4, 0u16..40, 0u16..60, any::<bool>()).prop_map(|(n, a, b, v)| Op::Msk(n, a, b, v)),
        6 => (1u16..=4, 0u16..60).prop_map(|(n, id)| Op::Mtk(n, id)),
        3 => any::<usize>().prop_map(Op::Replay),
        3 => (any::<usize>(), any::<usize>()).prop_map(|(i, b)| Op::Tamper(i, b)),
        1 => (1u16..=4).prop_map(Op::Forged),
        1 => Just(Op::Pull),
    ]
}

fn kd() -> KeyDomainId {
    KeyDomainId([0, 0xf1, 0x10])
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

fn invariants(before: &MgvState, after: &MgvState) -> Result<(), TestCaseError> {
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
        per_group.values().all(|c| *c <= 2),
        "more than two MSKs in a key group"
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]
    #[test]
    fn random_sequences_keep_the_invariants(ops in proptest::collection::vec(op(), 1..60)) {
        let muk_id = MukId::new("bmsc.home1.net", "b@bsf.home1.net");
        let muk = Muk::from_bytes([7; 32]);
        let mut f = MgvF::new(MemoryStore::new());
        f.add_muk(muk_id.clone(), muk.clone()).unwrap();
        let mut sent: Vec<Vec<u8>> = Vec::new();
        let (mut muk_counter, mut msk_counter, mut r) = (0u32, 0u32, 0u8);
        for op in ops {
            r = r.wrapping_add(1);
            let bytes = match op {
                Op::Msk(n, a, b, v) => {
                    muk_counter += 1;
                    MskMessage {
                        muk_id: muk_id.clone(), counter: muk_counter, rand: [r; 16], msk: name(n), v,
                        key: Some(MskKeyData { msk: msk_key(n), seq_s: MtkId::new(a), seq_u: MtkId::new(b) }),
                    }.build(&muk).unwrap().bytes
                }
                Op::Mtk(n, id) => {
                    msk_counter += 1;
                    MtkMessage {
                        counter: msk_counter, rand: [r; 16], msk: name(n), mtk_id: MtkId::new(id),
                        mtk: mtk_for(n, id), streaming: None,
                    }.build(&msk_key(n)).unwrap()
                }
                Op::Replay(i) if !sent.is_empty() => sent[i % sent.len()].clone(),
                Op::Tamper(i, bit) if !sent.is_empty() => {
                    let mut b = sent[i % sent.len()].clone();
                    let bit = bit % (b.len() * 8);
                    b[bit / 8] ^= 1 << (bit % 8);
                    b
                }
                Op::Forged(n) => MskMessage {
                    muk_id: muk_id.clone(), counter: u32::MAX, rand: [r; 16], msk: name(n), v: true,
                    key: Some(MskKeyData { msk: Msk::from_bytes([0xff; 16]), seq_s: MtkId::new(0), seq_u: MtkId::new(9) }),
                }.build(&Muk::from_bytes([8; 32])).unwrap().bytes,
                Op::Pull => {
                    muk_counter += 1;
                    MskMessage::solicited_pull(muk_id.clone(), muk_counter, [r; 16], kd(), 1).build(&muk).unwrap().bytes
                }
                _ => continue,
            };
            let before = f.state().clone();
            let is_mtk = matches!(mbms::messages::classify(&bytes), Ok(mbms::messages::MessageKind::Mtk));
            if is_mtk {
                match f.process_mtk_message(&bytes) {
                    Ok(out) => {
                        // Only genuine MTKs come out, inside the window.
                        prop_assert_eq!(&out.mtk, &mtk_for(out.msk.msk_id.key_number, out.mtk_id.value()));
                        let rec = &before.msks[&out.msk];
                        prop_assert!(out.mtk_id.0.gt(rec.seq_s.0));
                    }
                    Err(_) => prop_assert_eq!(f.state(), &before),
                }
            } else {
                match f.process_msk_message(&bytes) {
                    Ok(MskOutcome::Duplicate { .. }) => prop_assert_eq!(f.state(), &before),
                    Ok(_) => {}
                    Err(_) => prop_assert_eq!(f.state(), &before),
                }
            }
            invariants(&before, f.state())?;
            sent.push(bytes);
        }
    }
}
