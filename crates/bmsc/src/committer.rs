//! The group committer: one dedicated OS thread that writes every queued
//! write (Ua requests, acknowledgement outcomes, charging records,
//! give-ups) in one transaction, then wakes exactly the requests whose
//! writes that commit covered.
//!
//! Whatever is queued while a commit runs is written by the next one,
//! which starts as soon as this one ends. The core is free while the disk
//! syncs ([`Core::begin_commit`](crate::core::Core::begin_commit), the
//! store's commit, [`Core::end_commit`](crate::core::Core::end_commit)):
//! requests, polls and acknowledgements go on meanwhile. One committer, so
//! writes reach the store in the order they were queued.
//!
//! Why a thread of its own rather than a task that hands each commit to
//! tokio's blocking pool: the commit blocks (fsync) and runs back to back
//! under load; a `spawn_blocking` per commit woke a different pool thread
//! each time (about 50 took turns) and came back through a runtime worker
//! for the bookkeeping, two hand-offs per commit. Here the thread that
//! syncs also does the bookkeeping and wakes the waiters itself.
//!
//! Under load the committer gathers: once a commit wrote at least
//! [`GATHER_MIN_WRITES`] writes, it waits `commit_gather_us` (default
//! [`DEFAULT_COMMIT_GATHER_US`]) before it begins the next one, so that
//! more requests share its disk sync, the engine driver's wake-up and the
//! hand-offs between the committer and the runtime workers (group commit
//! with a gathering window, like PostgreSQL's `commit_delay`). On this
//! project's 2-core VM each such hand-off across CPUs costs tens of
//! microseconds of CPU; `mbms bench http` measured 8 to 15 us less BM-SC
//! CPU per `msk-request` with 0.6 to 2 ms of gathering (docs/bench.md). A
//! lone request (the commit before it wrote fewer) is committed at once.
//!
//! Durability is unchanged: a request waits ([`CommitWaiters::wait`])
//! until the commit that holds its writes has returned from the store
//! (fsync), then it is answered.

use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::{oneshot, watch};

use crate::core::{CommitState, CoreHandle};
use crate::store::Store;

/// The default of `commit_gather_us`: how long the committer waits before
/// a commit under load (module documentation).
pub const DEFAULT_COMMIT_GATHER_US: u64 = 1000;

/// Writes of a commit from which the committer gathers before the next
/// one: below it (a lone request, a quiet server) the next commit begins
/// at once.
pub const GATHER_MIN_WRITES: usize = 4;

/// How long to wait before the next commit when the last one wrote
/// `last_writes` writes, with `commit_gather_us` = `gather`: `None` to
/// begin at once.
pub(crate) fn gather_before(last_writes: usize, gather: Duration) -> Option<Duration> {
    (last_writes >= GATHER_MIN_WRITES && !gather.is_zero()).then_some(gather)
}

/// What the committer thread is asked to do.
#[derive(Debug, Default)]
struct Signal {
    /// Writes were queued since the thread last looked.
    queued: bool,
    /// The thread waits on the condition variable (a notification is
    /// needed; otherwise setting `queued` is enough).
    sleeping: bool,
    /// Stop: write what is queued, then end.
    stop: bool,
    /// End at once, writing nothing more (the service is gone: a crash in
    /// tests, [`RunningBmsc::kill`](crate::server::RunningBmsc::kill)).
    abandon: bool,
}

#[derive(Debug, Default)]
struct Shared {
    signal: Mutex<Signal>,
    wake: Condvar,
}

impl Shared {
    fn set(&self, f: impl FnOnce(&mut Signal)) {
        let mut s = self.signal.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s);
        if s.sleeping {
            s.sleeping = false;
            drop(s);
            self.wake.notify_one();
        }
    }
}

/// The requests waiting for their writes to be committed, by write
/// ticket: a commit wakes only those it covers (a `watch` channel woke
/// every waiter at every commit, also those whose writes were queued for
/// the next one).
#[derive(Debug)]
pub(crate) struct CommitWaiters {
    state: watch::Receiver<CommitState>,
    waiting: Mutex<Vec<(u64, oneshot::Sender<bool>)>>,
}

impl CommitWaiters {
    pub(crate) fn new(state: watch::Receiver<CommitState>) -> Self {
        CommitWaiters {
            state,
            waiting: Mutex::new(Vec::new()),
        }
    }

    /// `Some(true)` when the writes up to `ticket` are committed,
    /// `Some(false)` when their commit failed, `None` while pending.
    fn outcome(state: CommitState, ticket: u64) -> Option<bool> {
        if state.committed >= ticket {
            Some(true)
        } else if state.failed >= ticket {
            Some(false)
        } else {
            None
        }
    }

    /// Whether the writes up to `ticket` are committed already.
    pub(crate) fn is_committed(&self, ticket: u64) -> bool {
        self.state.borrow().committed >= ticket
    }

    /// Waits until the writes up to `ticket` are committed (`true`) or
    /// their commit failed (`false`).
    pub(crate) async fn wait(&self, ticket: u64) -> bool {
        let rx = {
            let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
            // Read under the lock that `release` takes after the state
            // moved: either the state is seen here, or the waiter is in the
            // list when `release` looks.
            if let Some(done) = Self::outcome(*self.state.borrow(), ticket) {
                return done;
            }
            let (tx, rx) = oneshot::channel();
            w.push((ticket, tx));
            rx
        };
        // A dropped sender: the committer is gone (the service stops).
        rx.await.unwrap_or(false)
    }

    /// Wakes the waiters whose commit ended (called after the state moved).
    fn release(&self) {
        let state = *self.state.borrow();
        let mut w = self.waiting.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = 0;
        while i < w.len() {
            match Self::outcome(state, w[i].0) {
                Some(done) => {
                    let (_, tx) = w.swap_remove(i);
                    let _ = tx.send(done);
                }
                None => i += 1,
            }
        }
    }
}

/// The service's link to its committer thread. Dropped (the service is
/// gone without a stop), it tells the thread to end without writing more.
#[derive(Debug)]
pub(crate) struct Committer {
    shared: Arc<Shared>,
    waiters: Arc<CommitWaiters>,
    /// Taken by [`Committer::stopped`].
    done: Mutex<Option<oneshot::Receiver<()>>>,
}

impl Committer {
    /// Starts the committer thread for `core` (which queues the writes)
    /// and `store` (which writes them), gathering `gather` before a commit
    /// under load ([`gather_before`]).
    pub(crate) fn start(
        core: CoreHandle,
        store: Arc<dyn Store>,
        gather: Duration,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared::default());
        let waiters = Arc::new(CommitWaiters::new(core.with(|c| c.commits())));
        let (done_tx, done_rx) = oneshot::channel();
        let (s2, w2) = (shared.clone(), waiters.clone());
        std::thread::Builder::new()
            .name("bmsc-committer".into())
            .spawn(move || {
                run(&core, &*store, &s2, &w2, gather);
                // Nobody commits any more: the waiters left hear `false`.
                w2.waiting.lock().unwrap_or_else(|p| p.into_inner()).clear();
                drop(done_tx);
            })?;
        Ok(Committer {
            shared,
            waiters,
            done: Mutex::new(Some(done_rx)),
        })
    }

    /// Writes were queued: the committer commits them (soon, together with
    /// whatever else is queued by then).
    pub(crate) fn wake(&self) {
        self.shared.set(|s| s.queued = true);
    }

    /// Whether the writes up to `ticket` are committed already.
    pub(crate) fn is_committed(&self, ticket: u64) -> bool {
        self.waiters.is_committed(ticket)
    }

    /// Waits until the writes up to `ticket` are durable; `false` when
    /// their commit failed.
    pub(crate) async fn committed(&self, ticket: u64) -> bool {
        if self.waiters.is_committed(ticket) {
            return true;
        }
        self.wake();
        self.waiters.wait(ticket).await
    }

    /// Stops the committer after it wrote everything queued (nothing
    /// answered is lost: the queued writes of requests not yet answered
    /// are written too) and waits for it to end.
    pub(crate) async fn stopped(&self) {
        self.shared.set(|s| s.stop = true);
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(done) = done {
            let _ = done.await;
        }
    }
}

impl Committer {
    /// Ends the committer at once, writing nothing more (a crash).
    pub(crate) fn abandon(&self) {
        self.shared.set(|s| s.abandon = true);
    }
}

impl Drop for Committer {
    fn drop(&mut self) {
        self.abandon();
    }
}

/// The committer thread.
fn run(
    core: &CoreHandle,
    store: &dyn Store,
    shared: &Shared,
    waiters: &CommitWaiters,
    gather: Duration,
) {
    // Writes of the last commit (0: none since the thread last slept).
    let mut last_writes = 0usize;
    loop {
        let stopping = {
            let mut s = shared.signal.lock().unwrap_or_else(|p| p.into_inner());
            while !s.queued && !s.stop && !s.abandon {
                s.sleeping = true;
                s = shared.wake.wait(s).unwrap_or_else(|p| p.into_inner());
            }
            s.sleeping = false;
            if s.abandon {
                return;
            }
            s.queued = false;
            s.stop
        };
        loop {
            // Not while stopping: what is queued is written at once.
            if let Some(wait) = gather_before(last_writes, gather).filter(|_| !stopping) {
                // A plain sleep: requests queued meanwhile do not wake the
                // thread (it is not `sleeping`).
                std::thread::sleep(wait);
            }
            let commit = core.with(|c| c.begin_commit());
            if commit.is_empty() {
                last_writes = 0;
                break;
            }
            last_writes = commit.batch.writes();
            // The engine driver sends what the requests of this commit
            // made due (their MIKEY pushes) while the disk syncs: one wake
            // and one batch of datagrams per commit instead of one per
            // request. A push needs no durable record (a UE whose request
            // is not answered asks again), the answer does.
            core.wake();
            let r = store.commit(&commit.batch);
            let ended = core.with(move |c| c.end_commit(commit, r));
            waiters.release();
            if let Err(e) = ended {
                tracing::error!(error = %crate::ErrorChain(&e), "group commit failed; the requests get 500, the writes are retried");
                if stopping {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
                break;
            }
            if shared
                .signal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .abandon
            {
                return;
            }
        }
        if stopping {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_committer_gathers_only_after_a_commit_of_several_writes() {
        let g = Duration::from_micros(DEFAULT_COMMIT_GATHER_US);
        assert_eq!(gather_before(0, g), None, "a lone request: at once");
        assert_eq!(gather_before(GATHER_MIN_WRITES - 1, g), None);
        assert_eq!(gather_before(GATHER_MIN_WRITES, g), Some(g));
        assert_eq!(gather_before(1000, Duration::ZERO), None, "0 turns it off");
    }

    #[tokio::test]
    async fn a_commit_wakes_only_the_tickets_it_covers() {
        let (tx, rx) = watch::channel(CommitState::default());
        let w = Arc::new(CommitWaiters::new(rx));
        let (w1, w2) = (w.clone(), w.clone());
        let first = tokio::spawn(async move { w1.wait(1).await });
        let second = tokio::spawn(async move { w2.wait(2).await });
        // Both registered.
        while w.waiting.lock().unwrap().len() < 2 {
            tokio::task::yield_now().await;
        }
        tx.send_modify(|c| c.committed = 1);
        w.release();
        assert!(first.await.unwrap());
        assert_eq!(w.waiting.lock().unwrap().len(), 1, "ticket 2 still waits");
        tx.send_modify(|c| c.failed = 2);
        w.release();
        assert!(!second.await.unwrap(), "its commit failed");
        assert!(w.waiting.lock().unwrap().is_empty());
        // Past tickets answer at once.
        assert!(w.wait(1).await);
        assert!(!w.wait(2).await);
    }
}
