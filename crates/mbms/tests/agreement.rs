//! The two sides of the crate agree on every message type: the BM-SC key
//! engine produces, the UE's MGV-F accepts, and the engine accepts the
//! MGV-F's acknowledgements: push with acknowledgement, rotation, MTKs for
//! download and streaming, solicited pull, and the 4-way procedure with its
//! charging record.

mod engine_support;

use engine_support::{group, t, TestRng, BMSC};
use mbms::engine::{Action, Engine, EngineConfig, KeyGroupConfig, MemoryStore, Step, UeId};
use mbms::messages::Streaming;
use mbms::mgvf::store::MemoryStore as MgvMemory;
use mbms::mgvf::{MgvError, MgvF, MskOutcome};
use mbms::{Muk, MukId};

fn ue() -> (UeId, MukId, Muk, MgvF<MgvMemory>) {
    let muk_id = MukId::new(BMSC, "I1U8vpY3qJ0hiuZNrke/NQ==@bsf.home1.net");
    let muk = Muk::from_bytes([0x21; 32]);
    let mut f = MgvF::new(MgvMemory::new());
    f.add_muk(muk_id.clone(), muk.clone()).unwrap();
    (UeId("user1_private@home1.net".into()), muk_id, muk, f)
}

/// Deliver every SendMikey action to the MGV-F and every acknowledgement back
/// to the engine; returns the engine's answers and the UE's outcomes.
fn exchange(
    e: &mut Engine<&mut MemoryStore>,
    f: &mut MgvF<MgvMemory>,
    actions: Vec<Action>,
    now: u64,
) -> (Vec<Action>, Vec<MskOutcome>) {
    let mut answers = Vec::new();
    let mut outcomes = Vec::new();
    for a in actions {
        if let Action::SendMikey { bytes, .. } = a {
            let out = f
                .process_msk_message(&bytes, std::time::Duration::from_millis(now))
                .expect("the MGV-F accepts what the engine sends");
            let ack = match &out {
                MskOutcome::Stored { ack, .. }
                | MskOutcome::Superseded { ack, .. }
                | MskOutcome::Duplicate { ack } => ack.clone(),
                MskOutcome::SolicitedPull { .. } | MskOutcome::DuplicateSuppressed { .. } => None,
            };
            if let Some(ack) = ack {
                answers.extend(
                    e.on_ack(&ack, t(now))
                        .expect("the engine accepts the MGV-F's ack"),
                );
            }
            outcomes.push(out);
        }
    }
    (answers, outcomes)
}

#[test]
fn push_rotation_mtks_and_pull() {
    let mut store = MemoryStore::new();
    let mut e = Engine::new(EngineConfig::default(), &mut store).unwrap();
    let mut rng = TestRng(7);
    let cfg = KeyGroupConfig {
        window_len: 50,
        ack_requested: true,
        ..Default::default()
    };
    e.open_key_group(group(1), cfg, &mut rng).unwrap();
    let (id, muk_id, muk, mut f) = ue();
    e.register_ue(id.clone(), muk_id, muk, t(0));
    e.subscribe(&id, &group(1), t(0)).unwrap();

    // Push: current and next MSK, both acknowledged.
    let sent = e.poll(t(0), &mut rng).unwrap();
    let (answers, outcomes) = exchange(&mut e, &mut f, sent, 10);
    assert_eq!(outcomes.len(), 2);
    assert_eq!(
        answers
            .iter()
            .filter(|a| matches!(
                a,
                Action::Acknowledged {
                    step: Step::Deliver,
                    ..
                }
            ))
            .count(),
        2
    );
    assert_eq!(f.state().msks.len(), 2);

    // MTKs: download, then streaming; the UE gets exactly what the engine made.
    let d = e.next_mtk(&group(1), None, &mut rng).unwrap();
    let got = f.process_mtk_message(&d.bytes).unwrap();
    assert_eq!((got.msk, got.mtk_id, &got.mtk), (d.msk, d.mtk_id, &d.mtk));
    assert_eq!(
        got.mtk.download_keys(got.csb_id, &got.rand),
        d.download_keys()
    );
    let streaming = Streaming {
        streams: vec![mikey::SrtpIdEntry {
            policy_no: 0,
            ssrc: 42,
            roc: 1,
        }],
        policy: mikey::SrtpPolicy::default(),
    };
    let s = e
        .next_mtk(&group(1), Some(streaming.clone()), &mut rng)
        .unwrap();
    let got = f.process_mtk_message(&s.bytes).unwrap();
    assert_eq!(got.streaming, Some(streaming));
    assert_eq!(got.mtk.srtp_master(), s.srtp_master());
    // The periodic repetition of the same MTK message is a replay for this UE.
    assert!(matches!(
        f.process_mtk_message(&s.bytes),
        Err(MgvError::Replay { .. } | MgvError::MtkIdOutOfWindow { .. })
    ));

    // Rotation: the new next MSK is pushed; the UE keeps two MSKs.
    let before = e.key_group(&group(1)).unwrap();
    let after = e.rotate(&group(1), t(20), &mut rng).unwrap();
    assert_eq!(after.current.name, before.next.name);
    let sent = e.poll(t(20), &mut rng).unwrap();
    let (_, outcomes) = exchange(&mut e, &mut f, sent, 30);
    assert!(outcomes.iter().any(|o| matches!(
        o,
        MskOutcome::Stored { replaced: Some(r), .. } if *r == before.current.name
    )));
    assert_eq!(f.state().msks.len(), 2);
    let m = e.next_mtk(&group(1), None, &mut rng).unwrap();
    assert_eq!(m.msk, after.current.name);
    f.process_mtk_message(&m.bytes).unwrap();

    // Solicited pull: the UE is told to request the current MSK.
    e.solicited_pull(&id, &group(1)).unwrap();
    let pull = e.poll(t(40), &mut rng).unwrap();
    let (_, outcomes) = exchange(&mut e, &mut f, pull, 40);
    assert!(
        matches!(outcomes[..], [MskOutcome::SolicitedPull { key_group }] if key_group == group(1))
    );
}

#[test]
fn four_way_procedure_with_the_mgvf() {
    let mut store = MemoryStore::new();
    let mut e = Engine::new(EngineConfig::default(), &mut store).unwrap();
    let mut rng = TestRng(9);
    let cfg = KeyGroupConfig {
        charging: true,
        window_len: 50,
        ..Default::default()
    };
    e.open_key_group(group(2), cfg, &mut rng).unwrap();
    let (id, muk_id, muk, mut f) = ue();
    e.register_ue(id.clone(), muk_id, muk, t(0));
    e.subscribe(&id, &group(2), t(0)).unwrap();

    // Step 1 and 2: inactive MSKs, acknowledged, charged.
    let sent = e.poll(t(0), &mut rng).unwrap();
    let (answers, outcomes) = exchange(&mut e, &mut f, sent, 5);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, MskOutcome::Stored { inactive: true, .. })));
    let charged: Vec<_> = answers
        .iter()
        .filter_map(|a| match a {
            Action::ChargingRecord(r) => Some(r.msk),
            _ => None,
        })
        .collect();
    assert_eq!(charged.len(), 2);
    let current = e.key_group(&group(2)).unwrap().current.name;
    let m = e.next_mtk(&group(2), None, &mut rng).unwrap();
    assert!(
        matches!(f.process_mtk_message(&m.bytes), Err(MgvError::InactiveMsk(n)) if n == current)
    );

    // Step 3 and 4: activation, acknowledged; now MTKs work.
    let sent = e.poll(t(6), &mut rng).unwrap();
    assert!(sent.iter().all(|a| matches!(
        a,
        Action::SendMikey {
            step: Some(Step::Activate),
            ..
        }
    )));
    let (answers, outcomes) = exchange(&mut e, &mut f, sent, 8);
    assert!(outcomes.iter().all(|o| matches!(
        o,
        MskOutcome::Stored {
            inactive: false,
            ..
        }
    )));
    assert!(answers.iter().all(|a| matches!(
        a,
        Action::Acknowledged {
            step: Step::Activate,
            ..
        }
    )));
    let m = e.next_mtk(&group(2), None, &mut rng).unwrap();
    let got = f.process_mtk_message(&m.bytes).unwrap();
    assert_eq!(got.mtk, m.mtk);
}
