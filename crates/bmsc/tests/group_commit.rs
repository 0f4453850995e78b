//! Group commit of the Ua writes (the committer's steps, `support::group_commit`): many requests' writes in
//! one transaction, each request answered only once its ticket is
//! committed; a failed commit keeps the writes queued and tells the
//! waiting requests.

mod support;

use std::sync::Arc;

use bmsc::core::{Core, CoreSettings, UeContext};
use bmsc::metrics::Metrics;
use bmsc::store::{KeyGroupDef, ServiceDef};
use mbms::engine::{EngineConfig, Timestamp};
use mbms::mgvf::store::MemoryStore as MgvMemory;
use mbms::mgvf::{MgvF, MskOutcome};
use mbms::{Muk, MukId};
use support::*;

fn settings() -> CoreSettings {
    CoreSettings {
        fqdn: "bmsc.home1.net".into(),
        key_domain: kd(),
        engine: EngineConfig::default(),
        key_groups: vec![KeyGroupDef {
            key_group: 1,
            window_len: 100,
            charging: false,
            ack: true,
            rotate_interval: 0,
        }],
        services: vec![ServiceDef {
            id: "svc".into(),
            key_groups: vec![1],
            open: true,
            allowed: vec![],
        }],
    }
}

fn ctx(n: usize) -> UeContext {
    UeContext {
        impi: impi(n),
        btid: format!("btid{n}@bsf.home1.net"),
        muk: Muk::from_bytes([n as u8; 32]),
        mikey_addr: "127.0.0.1:9".parse().unwrap(),
    }
}

#[test]
fn fifty_registrations_share_one_commit_and_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bmsc.db");
    let db = db.to_str().unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = bmsc::store::open(db).unwrap();
    let mut core = Core::open(&settings(), store, metrics.clone(), Timestamp(0)).unwrap();
    let commits = core.commits();
    for n in 0..50 {
        let st = core
            .register(&ctx(n), &["svc".into()], Timestamp(1))
            .unwrap();
        assert_eq!(st, [200]);
    }
    let ticket = core.write_ticket();
    assert!(ticket >= 50);
    assert!(commits.borrow().committed < ticket, "nothing committed yet");
    // Not yet durable: a second connection sees none of them.
    assert!(bmsc::store::open(db).unwrap().ues().unwrap().is_empty());
    group_commit(&mut core).unwrap();
    assert_eq!(commits.borrow().committed, ticket);
    assert_eq!(
        metrics.group_commits.get(),
        1,
        "one transaction for 50 requests"
    );
    assert_eq!(metrics.group_commit_writes.get(), 50);
    drop(core);
    let store = bmsc::store::open(db).unwrap();
    assert_eq!(store.ues().unwrap().len(), 50);
    let core = Core::open(&settings(), store, metrics, Timestamp(2)).unwrap();
    assert_eq!(core.ues().len(), 50);
}

#[test]
fn a_failed_commit_keeps_the_writes_queued_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bmsc.db");
    let db = db.to_str().unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = bmsc::store::open(db).unwrap();
    let mut core = Core::open(&settings(), store, metrics, Timestamp(0)).unwrap();
    let commits = core.commits();
    core.register(&ctx(1), &["svc".into()], Timestamp(1))
        .unwrap();
    let ticket = core.write_ticket();
    // Make the database unwritable: a commit fails.
    let blocker = rusqlite::Connection::open(db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    assert!(group_commit(&mut core).is_err());
    let c = *commits.borrow();
    assert!(c.failed >= ticket && c.committed < ticket, "{c:?}");
    assert!(core.has_pending(), "the writes stay queued");
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    group_commit(&mut core).unwrap();
    assert!(commits.borrow().committed >= ticket);
    assert!(!core.has_pending());
    assert_eq!(bmsc::store::open(db).unwrap().ues().unwrap().len(), 1);
}

/// The committer's three steps: the core is free while the store commits,
/// writes queued meanwhile wait for the next commit, and only the tickets
/// the commit covers are reported committed.
#[test]
fn writes_queued_during_a_commit_wait_for_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bmsc.db");
    let db = db.to_str().unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = bmsc::store::open(db).unwrap();
    let mut core = Core::open(&settings(), store, metrics.clone(), Timestamp(0)).unwrap();
    let commits = core.commits();
    core.register(&ctx(1), &["svc".into()], Timestamp(1))
        .unwrap();
    let first = core.write_ticket();
    let commit = core.begin_commit();
    assert!(!commit.is_empty());
    assert!(!core.has_pending(), "the commit took the queued writes");
    // While the store commits (the core is free), another request queues.
    core.register(&ctx(2), &["svc".into()], Timestamp(2))
        .unwrap();
    let second = core.write_ticket();
    assert!(second > first);
    let r = core.store().commit(&commit.batch);
    core.end_commit(commit, r).unwrap();
    let c = *commits.borrow();
    assert_eq!(c.committed, first, "only the writes the commit took");
    assert!(c.committed < second);
    assert!(
        core.has_pending(),
        "the later request waits for the next commit"
    );
    assert_eq!(bmsc::store::open(db).unwrap().ues().unwrap().len(), 1);
    let commit = core.begin_commit();
    let r = core.store().commit(&commit.batch);
    core.end_commit(commit, r).unwrap();
    assert_eq!(commits.borrow().committed, second);
    assert_eq!(bmsc::store::open(db).unwrap().ues().unwrap().len(), 2);
    assert_eq!(metrics.group_commits.get(), 2);
    // Nothing queued: an empty commit writes nothing.
    assert!(core.begin_commit().is_empty());
}

/// A failed commit puts its writes back in front of what was queued
/// meanwhile, so that they reach the store in order: a registration whose
/// commit failed and the deregistration queued after it leave no UE.
#[test]
fn a_failed_commit_is_retried_before_later_writes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("bmsc.db");
    let db = db.to_str().unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = bmsc::store::open(db).unwrap();
    let mut core = Core::open(&settings(), store, metrics, Timestamp(0)).unwrap();
    let commits = core.commits();
    core.register(&ctx(1), &["svc".into()], Timestamp(1))
        .unwrap();
    let first = core.write_ticket();
    let commit = core.begin_commit();
    let blocker = rusqlite::Connection::open(db).unwrap();
    blocker.execute_batch("BEGIN EXCLUSIVE").unwrap();
    let r = core.store().commit(&commit.batch);
    assert!(r.is_err());
    // Queued while the failing commit ran.
    core.deregister(&ctx(1), &["svc".into()], Timestamp(2))
        .unwrap();
    let second = core.write_ticket();
    assert!(core.end_commit(commit, r).is_err());
    let c = *commits.borrow();
    assert!(c.failed >= first && c.committed < first, "{c:?}");
    blocker.execute_batch("ROLLBACK").unwrap();
    drop(blocker);
    group_commit(&mut core).unwrap();
    assert!(commits.borrow().committed >= second);
    assert!(
        bmsc::store::open(db).unwrap().ues().unwrap().is_empty(),
        "the deregistration was written after the registration"
    );
}

/// A core on a fresh database (`bmsc.db` in the returned folder) and UE 1
/// with its MGV-F holding its MUK.
fn one_ue(
    settings: CoreSettings,
) -> (
    tempfile::TempDir,
    Arc<Metrics>,
    Core,
    UeContext,
    MgvF<MgvMemory>,
) {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::new());
    let store = bmsc::store::open(dir.path().join("bmsc.db").to_str().unwrap()).unwrap();
    let core = Core::open(&settings, store, metrics.clone(), Timestamp(0)).unwrap();
    let ue = ctx(1);
    let mut mgvf = MgvF::new(MgvMemory::new());
    mgvf.add_muk(
        MukId::new("bmsc.home1.net", ue.btid.as_str()),
        ue.muk.clone(),
    )
    .unwrap();
    (dir, metrics, core, ue, mgvf)
}

/// Feeds the datagrams to the MGV-F and its acknowledgements to the core
/// (received at `now`); returns how many.
fn acknowledge(
    core: &mut Core,
    mgvf: &mut MgvF<MgvMemory>,
    datagrams: &[(std::net::SocketAddr, Vec<u8>)],
    now: Timestamp,
) -> usize {
    let mut acks = Vec::new();
    for (_, bytes) in datagrams {
        let ack = match mgvf.process_msk_message(bytes, mono_now()).unwrap() {
            MskOutcome::Stored { ack, .. }
            | MskOutcome::Superseded { ack, .. }
            | MskOutcome::Duplicate { ack } => ack,
            _ => None,
        };
        acks.extend(ack);
    }
    let from: std::net::SocketAddr = "127.0.0.1:9".parse().unwrap();
    core.on_acks(acks.iter().map(|a| (a.as_slice(), from)), now);
    acks.len()
}

/// An MSK request's `pending` record and its acknowledgement, queued in the
/// same commit window, make one delivery write (the acknowledgement takes
/// the request's place), with the state the two would have left; an
/// acknowledgement after the commit began is a write of its own.
#[test]
fn an_acknowledgement_queued_with_its_request_replaces_the_pending_write() {
    let (dir, metrics, mut core, ue, mut mgvf) = one_ue(settings());
    let db = dir.path().join("bmsc.db");
    let db = db.to_str().unwrap();
    core.register(&ue, &["svc".into()], Timestamp(1)).unwrap();
    let pushes = core.poll(Timestamp(1)).unwrap();
    assert!(!pushes.is_empty(), "the registration pushes the MSKs");
    assert!(acknowledge(&mut core, &mut mgvf, &pushes, Timestamp(1)) > 0);
    group_commit(&mut core).unwrap();
    let writes = metrics.group_commit_writes.get();

    // The request and its acknowledgement in one window: one write.
    let st = core
        .request_msks(&ue, &[Some(msk(1, 0))], Timestamp(2))
        .unwrap();
    assert_eq!(st, [200]);
    let push = core.poll(Timestamp(2)).unwrap();
    assert_eq!(push.len(), 1, "the requested MSK is pushed again");
    assert_eq!(acknowledge(&mut core, &mut mgvf, &push, Timestamp(3)), 1);
    group_commit(&mut core).unwrap();
    assert_eq!(metrics.group_commit_writes.get() - writes, 1);
    let stored = bmsc::store::open(db)
        .unwrap()
        .deliveries(Some(&ue.impi))
        .unwrap();
    let acked: Vec<_> = stored.iter().filter(|d| d.updated_at == 3).collect();
    assert_eq!(acked.len(), 1, "{stored:?}");
    assert_eq!(acked[0].state, "acknowledged");
    let requested = acked[0].msk;
    let writes = metrics.group_commit_writes.get();

    // The commit begins between the request and its acknowledgement: two
    // writes, acknowledged last.
    core.request_msks(&ue, &[Some(msk(1, 0))], Timestamp(4))
        .unwrap();
    let push = core.poll(Timestamp(4)).unwrap();
    let pending = core.begin_commit();
    assert_eq!(acknowledge(&mut core, &mut mgvf, &push, Timestamp(5)), 1);
    let r = core.store().commit(&pending.batch);
    core.end_commit(pending, r).unwrap();
    group_commit(&mut core).unwrap();
    assert_eq!(metrics.group_commit_writes.get() - writes, 2);
    let stored = bmsc::store::open(db)
        .unwrap()
        .deliveries(Some(&ue.impi))
        .unwrap();
    let acked: Vec<_> = stored.iter().filter(|d| d.updated_at == 5).collect();
    assert_eq!(acked.len(), 1, "{stored:?}");
    assert_eq!(acked[0].state, "acknowledged");
    assert_eq!(acked[0].msk, requested);
}

/// 4-way procedure (seed 004 6.3.2.3.3): the activation that a step-1
/// acknowledgement makes due is built only once that acknowledgement's
/// charging record is committed; a UE never holds the MSK active with no
/// charging record on disk.
#[test]
fn an_activation_waits_for_its_charging_record_to_be_committed() {
    let mut s = settings();
    s.key_groups[0].charging = true;
    let (dir, _metrics, mut core, ue, mut mgvf) = one_ue(s);
    let db = dir.path().join("bmsc.db");
    let db = db.to_str().unwrap();
    core.register(&ue, &["svc".into()], Timestamp(1)).unwrap();
    group_commit(&mut core).unwrap();
    let step1 = core.poll(Timestamp(1)).unwrap();
    assert!(!step1.is_empty(), "the registration pushes step 1");
    assert_eq!(core.poll_hold(), None);
    assert!(acknowledge(&mut core, &mut mgvf, &step1, Timestamp(1)) > 0);
    let held = core.poll_hold().expect("charging records queued");
    assert_eq!(held, core.write_ticket());
    assert!(
        core.poll(Timestamp(2)).unwrap().is_empty(),
        "no activation before the charging record is on disk"
    );
    assert!(core
        .poll_short(Timestamp(2), 64)
        .unwrap()
        .unwrap()
        .is_empty());
    let on_disk = |db: &str| {
        bmsc::store::open(db)
            .unwrap()
            .charging_records(0, 100)
            .unwrap()
    };
    assert!(on_disk(db).is_empty());
    group_commit(&mut core).unwrap();
    assert_eq!(core.poll_hold(), None);
    assert!(!on_disk(db).is_empty());
    let activation = core.poll(Timestamp(2)).unwrap();
    assert!(!activation.is_empty(), "the activation follows the commit");
}
