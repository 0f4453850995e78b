//! [`Store`] on a SQLite file (rusqlite, bundled SQLite), the default BSF
//! store.
//!
//! * The file holds secrets (K, OPc and every session's Ks as BLOBs): it is
//!   created with mode 0600 on Unix, and SQLite gives its `-wal` / `-shm`
//!   files the same mode.
//! * WAL journal with `synchronous = FULL`, so that a committed SQN advance
//!   survives a crash or power loss (the SQN must never repeat, TS 33.102
//!   Annex C).
//! * Every method runs in one `BEGIN IMMEDIATE` transaction; the connection
//!   sits behind a mutex and is meant to be called from blocking threads
//!   (`tokio::task::spawn_blocking`).
//! * Group commit for the writes of bootstrapping ([`Store::next_sqn`],
//!   [`Store::insert_session`] and their non-blocking forms
//!   [`Store::next_sqn_then`], [`Store::insert_session_then`]): the writes
//!   are queued to one writer thread, which runs every write queued while
//!   its last commit ran in one transaction (each in its own savepoint, so
//!   one that fails changes nothing and the others go on) with one fsync;
//!   each write's result is delivered after the commit that holds it, so
//!   what was answered is on disk as before. The non-blocking forms let the
//!   async server wait for the commit without holding a blocking thread
//!   (no thread hand-off per write). Reads of a database file use their
//!   own read-only connections (`READERS`), so they never wait for an
//!   fsync (WAL readers see the last commit).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use gba::aka::Amf;
use gba::{BTid, Ks, Opc, Sqn48, SubscriberKey};
use mbms_service::db::{self, Create, Migration, Schema};
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};

use crate::store::{Done, Session, Store, StoreError, Subscriber};

/// The schema: the tables of version 0 and the migration steps after it
/// (the version is kept in `PRAGMA user_version`; a database with a newer
/// version is refused, an older one upgraded at open, see
/// [`mbms_service::db`]).
const SCHEMA: Schema = Schema {
    base: BASE,
    migrations: MIGRATIONS,
};

/// The version this program writes (the number of `MIGRATIONS`).
pub const SCHEMA_VERSION: i64 = SCHEMA.version();

/// Version 0: the tables of release 0.1.0 (commit ce6c076), the schema of
/// every BSF database so far. A database without a version is upgraded
/// only if it has exactly these tables, columns and indexes. Never change
/// this text: add a step to [`MIGRATIONS`].
const BASE: &str = "
CREATE TABLE subscribers (
    impi     TEXT PRIMARY KEY NOT NULL,
    k        BLOB NOT NULL,
    opc      BLOB NOT NULL,
    sqn      INTEGER NOT NULL,
    amf      BLOB NOT NULL,
    gba_type TEXT NOT NULL DEFAULT 'gba_me'
);
CREATE TABLE sessions (
    btid       TEXT PRIMARY KEY NOT NULL,
    impi       TEXT NOT NULL,
    rand       BLOB NOT NULL,
    ks         BLOB NOT NULL,
    gba_type   TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX sessions_expires_at ON sessions (expires_at);
";

/// The migration steps, one per schema version, applied in order at open
/// to an older database (in the transaction that checks it).
const MIGRATIONS: &[Migration] = &[Migration {
    to: 1,
    what: "schema version 1: the tables of version 0, with their version in PRAGMA user_version",
    // Release 0.1.0 wrote version 1 itself, with the tables of version 0;
    // a database without a version but with exactly these tables (its
    // creation interrupted, or restored from an `sqlite3 .dump`, which
    // drops the version) only gets the version.
    sql: "",
}];

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Backend(Box::new(e))
    }
}

fn is_constraint(e: &rusqlite::Error) -> bool {
    matches!(e, rusqlite::Error::SqliteFailure(f, _) if f.code == rusqlite::ErrorCode::ConstraintViolation)
}

/// A write waiting for the group commit. It runs inside the batch's
/// transaction (`Ok(connection)`), or learns that the transaction did not
/// begin (`Err(reason)`), and returns what delivers its result once the
/// commit's outcome is known.
type Job = Box<dyn FnOnce(Result<&Connection, &str>) -> Deliver + Send>;
/// Delivers a job's result: `Ok` when the batch was committed, the commit
/// error otherwise.
type Deliver = Box<dyn FnOnce(Result<(), String>) + Send>;

/// The group-commit queue.
#[derive(Default)]
struct Queue {
    jobs: Vec<Job>,
    /// The store is being dropped: the writer finishes the queue and stops.
    closed: bool,
}

/// Most writes in one transaction.
const GROUP_COMMIT_MAX: usize = 1024;

/// Read-only connections of a file database: one per core, so that the
/// request handlers of every runtime worker read at the same time (WAL
/// readers do not block each other nor the writer).
const READERS: usize = 2;

/// What the store and its writer thread share.
struct Shared {
    conn: Mutex<Connection>,
    queue: Mutex<Queue>,
    /// Signalled when a job is queued or the store closes.
    work: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave a half-done SQLite
        // transaction behind (it rolls back on drop), so poisoning is benign.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn queue(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The writer thread: takes every queued job (at most
    /// [`GROUP_COMMIT_MAX`]) and runs them in one transaction with one
    /// commit; the jobs queued meanwhile form the next batch. Stops when the
    /// store is closed and the queue is empty.
    fn writer(&self) {
        let mut q = self.queue();
        loop {
            if q.jobs.is_empty() {
                if q.closed {
                    return;
                }
                q = self.work.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let n = q.jobs.len().min(GROUP_COMMIT_MAX);
            let jobs: Vec<Job> = q.jobs.drain(..n).collect();
            drop(q);
            self.run_batch(jobs);
            q = self.queue();
        }
    }

    /// One transaction, one commit for `jobs`; every job's result is
    /// delivered (the commit error to all when it failed).
    fn run_batch(&self, jobs: Vec<Job>) {
        let conn = self.lock();
        if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
            drop(conn);
            let e = e.to_string();
            for job in jobs {
                job(Err(&e))(Err(e.clone()));
            }
            return;
        }
        let delivers: Vec<Deliver> = jobs.into_iter().map(|job| job(Ok(&conn))).collect();
        let committed = conn.execute_batch("COMMIT").map_err(|e| e.to_string());
        if committed.is_err() {
            let _ = conn.execute_batch("ROLLBACK");
        }
        drop(conn);
        for d in delivers {
            d(committed.clone());
        }
    }
}

/// A [`Store`] on one SQLite database file.
pub struct SqliteStore {
    shared: Arc<Shared>,
    /// Read-only connections for the reads (file databases only).
    readers: Vec<Mutex<Connection>>,
    next_reader: AtomicUsize,
    /// The group-commit writer thread (see the module documentation).
    writer: Option<std::thread::JoinHandle<()>>,
}

impl core::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SqliteStore").finish_non_exhaustive()
    }
}

impl Drop for SqliteStore {
    /// Lets the writer finish the queued writes, then stops it.
    fn drop(&mut self) {
        self.shared.queue().closed = true;
        self.shared.work.notify_all();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl SqliteStore {
    /// Opens the database at `path`, creating it (mode 0600, with the
    /// schema) only where no file exists; an existing file is checked
    /// first (see [`open_with`](Self::open_with)).
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, Create::IfMissing)
    }

    /// Opens the database at `path` under the rules of
    /// [`mbms_service::db`]: a 0-byte or damaged file, a missing table or
    /// column, an unknown or newer schema version, or rows this program
    /// never writes (a negative or out-of-range SQN, an unknown GBA type,
    /// keys of the wrong length) are refused with
    /// [`StoreError::Refused`], naming the file and the problem.
    /// [`Create::Init`] (`--init`) also initialises a 0-byte file and
    /// refuses any file with content.
    pub fn open_with(path: &Path, create: Create) -> Result<Self, StoreError> {
        let conn = db::open_sqlite(path, &SCHEMA, create, &validate_rows)?;
        let readers = (0..READERS)
            .map(|_| {
                Connection::open_with_flags(
                    path,
                    rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY
                        | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )
                .and_then(|r| {
                    r.busy_timeout(std::time::Duration::from_secs(10))?;
                    Ok(Mutex::new(r))
                })
                .map_err(|e| StoreError::Open {
                    path: path.display().to_string(),
                    source: Box::new(e),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Self::with(conn, readers)
    }

    /// An in-memory database (for tests).
    pub fn open_in_memory() -> Result<Self, StoreError> {
        Self::with(db::open_sqlite_in_memory(&SCHEMA)?, Vec::new())
    }

    fn with(conn: Connection, readers: Vec<Mutex<Connection>>) -> Result<Self, StoreError> {
        let shared = Arc::new(Shared {
            conn: Mutex::new(conn),
            queue: Mutex::new(Queue::default()),
            work: Condvar::new(),
        });
        let writer = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("bsf-group-commit".into())
                .spawn(move || shared.writer())
                .map_err(|e| StoreError::Backend(Box::new(e)))?
        };
        Ok(Self {
            shared,
            readers,
            next_reader: AtomicUsize::new(0),
            writer: Some(writer),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Connection> {
        self.shared.lock()
    }

    /// A connection for reads: a free read-only one of a file database
    /// (else the next one in turn), the only connection of an in-memory
    /// one.
    fn read(&self) -> MutexGuard<'_, Connection> {
        if self.readers.is_empty() {
            return self.lock();
        }
        for r in &self.readers {
            if let Ok(c) = r.try_lock() {
                return c;
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len();
        self.readers[i].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `write` for the group commit (see the module documentation);
    /// `done` gets its result on the writer thread once the transaction
    /// that holds it is committed.
    fn submit<R: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
        done: impl FnOnce(Result<R, StoreError>) + Send + 'static,
    ) {
        let job: Job = Box::new(move |conn: Result<&Connection, &str>| -> Deliver {
            let conn = match conn {
                Ok(c) => c,
                Err(_) => {
                    return Box::new(move |begun: Result<(), String>| {
                        let e = begun.err().unwrap_or_default();
                        done(Err(StoreError::Backend(e.into())))
                    })
                }
            };
            // One savepoint per write: a failed write leaves nothing in
            // the batch (bad input changes no stored state).
            let r = match conn
                .prepare_cached("SAVEPOINT w")
                .and_then(|mut s| s.execute([]))
            {
                Err(e) => Err(StoreError::from(e)),
                Ok(_) => {
                    let r = write(conn);
                    let end = if r.is_ok() {
                        conn.prepare_cached("RELEASE w")
                            .and_then(|mut s| s.execute([]).map(drop))
                    } else {
                        conn.execute_batch("ROLLBACK TO w; RELEASE w")
                    };
                    match (r, end) {
                        (Ok(v), Ok(())) => Ok(v),
                        (Err(e), _) => Err(e),
                        (Ok(_), Err(e)) => Err(e.into()),
                    }
                }
            };
            Box::new(move |committed: Result<(), String>| {
                done(match committed {
                    Ok(()) => r,
                    Err(e) => r.and(Err(StoreError::Backend(e.into()))),
                })
            })
        });
        self.shared.queue().jobs.push(job);
        self.shared.work.notify_one();
    }

    /// Runs `write` in a group commit and returns its result once the
    /// transaction that holds it is committed.
    fn group_write<R: Send + 'static>(
        &self,
        write: impl FnOnce(&Connection) -> Result<R, StoreError> + Send + 'static,
    ) -> Result<R, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.submit(write, move |r| {
            let _ = tx.send(r);
        });
        rx.recv().unwrap_or_else(|_| {
            Err(StoreError::Backend(
                "the group-commit writer stopped".into(),
            ))
        })
    }
}

/// The BSF's own checks of an existing database: every value a row holds
/// is one this program writes. SQN_HE is the counter mark of TS 33.102
/// Annex C: negative or above 2^48 - 1 means the file was altered, and
/// starting from it could send an SQN again. (The BSF keeps no second
/// record of used SQNs to compare the mark with.)
fn validate_rows(conn: &Connection) -> Result<(), String> {
    let first = |sql: &str| -> Result<Option<String>, String> {
        conn.query_row(sql, [], |r| r.get::<_, String>(0))
            .optional()
            .map_err(|e| e.to_string())
    };
    let checks: [(&str, String); 6] = [
        (
            "a negative or out-of-range SQN (the counter mark must never go back)",
            format!(
                "SELECT impi || ': SQN ' || quote(sqn) FROM subscribers
                 WHERE typeof(sqn) != 'integer' OR sqn < 0 OR sqn > {} LIMIT 1",
                Sqn48::MAX.value()
            ),
        ),
        (
            "an unknown GBA type",
            "SELECT impi || ': ' || quote(gba_type) FROM subscribers
             WHERE gba_type NOT IN ('gba_me', 'gba_u') LIMIT 1"
                .into(),
        ),
        (
            "K, OPc or AMF of the wrong length",
            "SELECT impi FROM subscribers WHERE typeof(k) != 'blob' OR length(k) != 16
             OR typeof(opc) != 'blob' OR length(opc) != 16
             OR typeof(amf) != 'blob' OR length(amf) != 2 LIMIT 1"
                .into(),
        ),
        (
            "a session with an unknown GBA type",
            "SELECT btid || ': ' || quote(gba_type) FROM sessions
             WHERE gba_type NOT IN ('gba_me', 'gba_u') LIMIT 1"
                .into(),
        ),
        (
            "a session with RAND or Ks of the wrong length",
            "SELECT btid FROM sessions WHERE typeof(rand) != 'blob' OR length(rand) != 16
             OR typeof(ks) != 'blob' OR length(ks) != 32 LIMIT 1"
                .into(),
        ),
        (
            "a session with a negative time",
            "SELECT btid FROM sessions WHERE created_at < 0 OR expires_at < 0 LIMIT 1".into(),
        ),
    ];
    for (what, sql) in checks {
        if let Some(row) = first(&sql)? {
            let table = if what.starts_with("a session") {
                "sessions"
            } else {
                "subscribers"
            };
            return Err(format!("table {table} holds {what}: {row}"));
        }
    }
    Ok(())
}

fn sqn_to_sql(sqn: Sqn48) -> i64 {
    // 48 bits always fit in an i64.
    sqn.value() as i64
}

fn sqn_from_sql(v: i64) -> Result<Sqn48, StoreError> {
    u64::try_from(v)
        .ok()
        .and_then(|v| Sqn48::new(v).ok())
        .ok_or_else(|| StoreError::Corrupt(format!("SQN {v} out of range")))
}

fn time_to_sql(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn blob<'a>(row: &'a Row<'_>, idx: usize) -> Result<&'a [u8], StoreError> {
    Ok(row.get_ref(idx)?.as_blob().map_err(rusqlite::Error::from)?)
}

fn corrupt(what: &str) -> impl FnOnce(gba::KeyError) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

const SUBSCRIBER_COLUMNS: &str = "impi, k, opc, sqn, amf, gba_type";

fn subscriber_from_row(row: &Row<'_>) -> Result<Subscriber, StoreError> {
    let impi: String = row.get(0)?;
    let k = SubscriberKey::from_slice(blob(row, 1)?).map_err(corrupt("K"))?;
    let opc = Opc::from_slice(blob(row, 2)?).map_err(corrupt("OPc"))?;
    let sqn = sqn_from_sql(row.get(3)?)?;
    let amf: Amf = blob(row, 4)?
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("AMF of {impi}")))?;
    let gba_type: String = row.get(5)?;
    Ok(Subscriber {
        impi,
        k,
        opc,
        sqn,
        amf,
        gba_type: gba_type.parse()?,
    })
}

fn session_from_row(row: &Row<'_>) -> Result<Session, StoreError> {
    let btid_text: String = row.get(0)?;
    let btid = BTid::parse(&btid_text)
        .map_err(|e| StoreError::Corrupt(format!("B-TID {btid_text:?}: {e}")))?;
    let rand = blob(row, 2)?
        .try_into()
        .map_err(|_| StoreError::Corrupt("RAND".into()))?;
    let ks = Ks::from_slice(blob(row, 3)?).map_err(corrupt("Ks"))?;
    let gba_type: String = row.get(4)?;
    let created_at: i64 = row.get(5)?;
    let expires_at: i64 = row.get(6)?;
    Ok(Session {
        btid,
        impi: row.get(1)?,
        rand,
        ks,
        gba_type: gba_type.parse()?,
        created_at: u64::try_from(created_at).unwrap_or(0),
        expires_at: u64::try_from(expires_at).unwrap_or(0),
    })
}

fn validate(s: &Subscriber) -> Result<(), StoreError> {
    if s.impi.trim().is_empty() || s.impi.trim() != s.impi {
        return Err(StoreError::Invalid(format!(
            "invalid IMPI {:?}: empty or surrounded by spaces",
            s.impi
        )));
    }
    Ok(())
}

fn insert_subscriber(tx: &rusqlite::Transaction<'_>, s: &Subscriber) -> rusqlite::Result<usize> {
    tx.prepare_cached(
        "INSERT OR IGNORE INTO subscribers (impi, k, opc, sqn, amf, gba_type) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?
    .execute(params![
            s.impi,
            &s.k.as_bytes()[..],
            &s.opc.as_bytes()[..],
            sqn_to_sql(s.sqn),
            &s.amf[..],
            s.gba_type.as_str()
        ])
}

/// Advances SQN_HE of `impi` (inside the group commit's transaction).
/// Durable before the vector leaves the BSF (TS 33.102 Annex C): the
/// result is delivered after the commit that holds the update.
fn next_sqn_tx(conn: &Connection, impi: String) -> Result<Option<Subscriber>, StoreError> {
    let current = {
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE impi = ?1"
        ))?;
        let mut rows = stmt.query([&impi])?;
        match rows.next()? {
            Some(row) => subscriber_from_row(row)?,
            None => return Ok(None),
        }
    };
    let next = current
        .sqn
        .next()
        .map_err(|_| StoreError::SqnExhausted(impi.clone()))?;
    conn.prepare_cached("UPDATE subscribers SET sqn = ?1 WHERE impi = ?2")?
        .execute(params![sqn_to_sql(next), impi])?;
    Ok(Some(Subscriber {
        sqn: next,
        ..current
    }))
}

/// Inserts a session (inside the group commit's transaction).
fn insert_session_tx(conn: &Connection, session: &Session) -> Result<(), StoreError> {
    let r = conn
        .prepare_cached(
            "INSERT INTO sessions (btid, impi, rand, ks, gba_type, created_at, expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?
        .execute(params![
            session.btid.as_str(),
            session.impi,
            &session.rand[..],
            &session.ks.as_bytes()[..],
            session.gba_type.as_str(),
            time_to_sql(session.created_at),
            time_to_sql(session.expires_at)
        ]);
    match r {
        Ok(_) => Ok(()),
        Err(e) if is_constraint(&e) => {
            Err(StoreError::SessionExists(session.btid.as_str().to_owned()))
        }
        Err(e) => Err(e.into()),
    }
}

impl Store for SqliteStore {
    fn add_subscribers(&self, subscribers: &[Subscriber]) -> Result<(), StoreError> {
        subscribers.iter().try_for_each(validate)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for s in subscribers {
            if insert_subscriber(&tx, s)? == 0 {
                // Dropping `tx` rolls back the rows inserted so far.
                return Err(StoreError::SubscriberExists(s.impi.clone()));
            }
        }
        tx.commit()?;
        Ok(())
    }

    fn provision_subscribers(&self, subscribers: &[Subscriber]) -> Result<usize, StoreError> {
        subscribers.iter().try_for_each(validate)?;
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let mut added = 0;
        for s in subscribers {
            added += insert_subscriber(&tx, s)?;
        }
        tx.commit()?;
        Ok(added)
    }

    fn subscriber(&self, impi: &str) -> Result<Option<Subscriber>, StoreError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers WHERE impi = ?1"
        ))?;
        let mut rows = stmt.query([impi])?;
        match rows.next()? {
            Some(row) => Ok(Some(subscriber_from_row(row)?)),
            None => Ok(None),
        }
    }

    fn subscribers(&self) -> Result<Vec<Subscriber>, StoreError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(&format!(
            "SELECT {SUBSCRIBER_COLUMNS} FROM subscribers ORDER BY impi"
        ))?;
        let mut rows = stmt.query([])?;
        let mut out = Vec::new();
        while let Some(row) = rows.next()? {
            out.push(subscriber_from_row(row)?);
        }
        Ok(out)
    }

    fn remove_subscriber(&self, impi: &str) -> Result<bool, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        tx.execute("DELETE FROM sessions WHERE impi = ?1", [impi])?;
        let n = tx.execute("DELETE FROM subscribers WHERE impi = ?1", [impi])?;
        tx.commit()?;
        Ok(n > 0)
    }

    fn next_sqn(&self, impi: &str) -> Result<Option<Subscriber>, StoreError> {
        let impi = impi.to_owned();
        self.group_write(move |conn| next_sqn_tx(conn, impi))
    }

    fn next_sqn_then(&self, impi: &str, done: Done<Option<Subscriber>>) {
        let impi = impi.to_owned();
        self.submit(move |conn| next_sqn_tx(conn, impi), done);
    }

    fn resync_sqn(&self, impi: &str, sqn_ms: Sqn48) -> Result<Sqn48, StoreError> {
        let mut conn = self.lock();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current: Option<i64> = tx
            .query_row("SELECT sqn FROM subscribers WHERE impi = ?1", [impi], |r| {
                r.get(0)
            })
            .optional()?;
        let current =
            sqn_from_sql(current.ok_or_else(|| StoreError::UnknownSubscriber(impi.to_owned()))?)?;
        let new = current.max(sqn_ms);
        if new != current {
            tx.execute(
                "UPDATE subscribers SET sqn = ?1 WHERE impi = ?2",
                params![sqn_to_sql(new), impi],
            )?;
        }
        tx.commit()?;
        Ok(new)
    }

    fn insert_session(&self, session: &Session) -> Result<(), StoreError> {
        let session = session.clone();
        self.group_write(move |conn| insert_session_tx(conn, &session))
    }

    fn insert_session_then(&self, session: &Session, done: Done<()>) {
        let session = session.clone();
        self.submit(move |conn| insert_session_tx(conn, &session), done);
    }

    fn session(&self, btid: &str, now: u64) -> Result<Option<Session>, StoreError> {
        let conn = self.read();
        let mut stmt = conn.prepare_cached(
            "SELECT btid, impi, rand, ks, gba_type, created_at, expires_at FROM sessions WHERE btid = ?1 AND expires_at > ?2",
        )?;
        let mut rows = stmt.query(params![btid, time_to_sql(now)])?;
        match rows.next()? {
            Some(row) => Ok(Some(session_from_row(row)?)),
            None => Ok(None),
        }
    }

    fn purge_expired_sessions(&self, now: u64) -> Result<usize, StoreError> {
        let conn = self.lock();
        Ok(conn.execute(
            "DELETE FROM sessions WHERE expires_at <= ?1",
            [time_to_sql(now)],
        )?)
    }

    fn session_count(&self) -> Result<usize, StoreError> {
        let conn = self.read();
        let n: i64 = conn.query_row("SELECT COUNT(*) FROM sessions", [], |r| r.get(0))?;
        Ok(usize::try_from(n).unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::GbaType;

    fn sub(impi: &str, sqn: u64) -> Subscriber {
        Subscriber {
            impi: impi.into(),
            k: SubscriberKey::from_bytes([1; 16]),
            opc: Opc::from_bytes([2; 16]),
            sqn: Sqn48::new(sqn).unwrap(),
            amf: [0x80, 0x00],
            gba_type: GbaType::GbaMe,
        }
    }

    #[test]
    fn subscribers_crud_and_all_or_nothing() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.add_subscribers(&[sub("a@x", 0), sub("b@x", 5)]).unwrap();
        assert!(matches!(
            s.add_subscribers(&[sub("c@x", 0), sub("a@x", 0)]),
            Err(StoreError::SubscriberExists(i)) if i == "a@x"
        ));
        assert!(s.subscriber("c@x").unwrap().is_none(), "rolled back");
        assert_eq!(
            s.provision_subscribers(&[sub("a@x", 9), sub("c@x", 0)])
                .unwrap(),
            1
        );
        assert_eq!(s.subscriber("a@x").unwrap().unwrap().sqn.value(), 0);
        let all: Vec<_> = s
            .subscribers()
            .unwrap()
            .into_iter()
            .map(|s| s.impi)
            .collect();
        assert_eq!(all, ["a@x", "b@x", "c@x"]);
        assert!(s.remove_subscriber("b@x").unwrap());
        assert!(!s.remove_subscriber("b@x").unwrap());
        assert!(s.add_subscribers(&[sub(" a", 0)]).is_err());
    }

    #[test]
    fn sqn_advances_and_resync_never_goes_back() {
        let s = SqliteStore::open_in_memory().unwrap();
        s.add_subscribers(&[sub("a@x", 10)]).unwrap();
        assert_eq!(s.next_sqn("a@x").unwrap().unwrap().sqn.value(), 11);
        assert_eq!(s.next_sqn("a@x").unwrap().unwrap().sqn.value(), 12);
        assert!(s.next_sqn("nobody").unwrap().is_none());
        assert_eq!(
            s.resync_sqn("a@x", Sqn48::new(5).unwrap()).unwrap().value(),
            12
        );
        assert_eq!(
            s.resync_sqn("a@x", Sqn48::new(500).unwrap())
                .unwrap()
                .value(),
            500
        );
        assert_eq!(s.next_sqn("a@x").unwrap().unwrap().sqn.value(), 501);
        s.add_subscribers(&[sub("max@x", Sqn48::MAX.value())])
            .unwrap();
        assert!(matches!(
            s.next_sqn("max@x"),
            Err(StoreError::SqnExhausted(_))
        ));
    }

    #[test]
    fn group_commit_keeps_every_write_and_isolates_failures() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bsf.db");
        let s = std::sync::Arc::new(SqliteStore::open(&path).unwrap());
        s.add_subscribers(&[sub("a@x", 0), sub("b@x", 0)]).unwrap();
        let threads: Vec<_> = (0..16u8)
            .map(|t| {
                let s = s.clone();
                std::thread::spawn(move || {
                    let mut sqns = Vec::new();
                    for i in 0..25u8 {
                        let impi = if t % 2 == 0 { "a@x" } else { "b@x" };
                        sqns.push((impi, s.next_sqn(impi).unwrap().unwrap().sqn.value()));
                        let session = Session {
                            btid: BTid::new(
                                &[t, i, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                                "bsf.x",
                            ),
                            impi: impi.into(),
                            rand: [t; 16],
                            ks: Ks::from_bytes([i; 32]),
                            gba_type: GbaType::GbaMe,
                            created_at: 1,
                            expires_at: 1_000,
                        };
                        s.insert_session(&session).unwrap();
                        // The same B-TID again: refused, and only this write.
                        assert!(matches!(
                            s.insert_session(&session),
                            Err(StoreError::SessionExists(_))
                        ));
                        assert!(s.next_sqn("nobody").unwrap().is_none());
                    }
                    sqns
                })
            })
            .collect();
        let mut all: Vec<(&str, u64)> = threads
            .into_iter()
            .flat_map(|t| t.join().unwrap())
            .collect();
        all.sort();
        let before = all.len();
        all.dedup();
        assert_eq!(all.len(), before, "an SQN was handed out twice");
        assert_eq!(s.subscriber("a@x").unwrap().unwrap().sqn.value(), 200);
        assert_eq!(s.subscriber("b@x").unwrap().unwrap().sqn.value(), 200);
        assert_eq!(s.session_count().unwrap(), 400);
        drop(s);
        // Everything answered is in the file.
        let again = SqliteStore::open(&path).unwrap();
        assert_eq!(again.subscriber("a@x").unwrap().unwrap().sqn.value(), 200);
        assert_eq!(again.session_count().unwrap(), 400);
    }

    #[test]
    fn sessions_expire_and_purge() {
        let s = SqliteStore::open_in_memory().unwrap();
        let session = Session {
            btid: BTid::new(&[7; 16], "bsf.x"),
            impi: "a@x".into(),
            rand: [7; 16],
            ks: Ks::from_bytes([9; 32]),
            gba_type: GbaType::GbaU,
            created_at: 100,
            expires_at: 200,
        };
        s.insert_session(&session).unwrap();
        assert!(matches!(
            s.insert_session(&session),
            Err(StoreError::SessionExists(_))
        ));
        let got = s.session(session.btid.as_str(), 199).unwrap().unwrap();
        assert_eq!(got.ks, session.ks);
        assert_eq!(got.gba_type, GbaType::GbaU);
        assert!(s.session(session.btid.as_str(), 200).unwrap().is_none());
        assert_eq!(s.purge_expired_sessions(199).unwrap(), 0);
        assert_eq!(s.purge_expired_sessions(200).unwrap(), 1);
    }
}
