//! Opening a service's database without ever starting from a damaged one:
//! the generic part shared by the BSF and the BM-SC (the checks that know
//! what the rows mean stay in each crate).
//!
//! Rule (issue 11, point 10): a database is **created only where no file
//! exists** (or with an explicit `--init`, see [`Create::Init`]). An
//! existing file is opened only if it is a SQLite database that passes
//! `PRAGMA quick_check`, carries a known schema version in
//! `PRAGMA user_version`, has every table and column of the schema, and
//! passes the crate's own checks. Anything else is an [`DbError`] naming the
//! file and the problem, and the service does not start: a 0-byte file
//! would otherwise restart MUK counters at 1 or SQNs at 0.
//!
//! Schema migrations (issue 14, point 7): a schema is the tables of
//! version 0 ([`Schema::base`], the layout of the release before schema
//! versions) plus numbered steps ([`Migration`]), one per version. A new
//! database gets the base and every step; an older one gets the steps it
//! lacks, at open, in the same transaction as its checks, so that a
//! database refused after the upgrade is left as it was. A database of
//! version 0 (no version) is upgraded only when its tables and columns are
//! exactly those of the base; a newer version than the program knows is
//! refused ([`DbError::NewerVersion`]). The PostgreSQL store of the BM-SC
//! uses the same [`Migration`] steps and [`plan`].

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags, TransactionBehavior};

/// How a database may be created.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Create {
    /// The normal start: create a new database only where no file exists
    /// (SQLite) or where the schema holds no table at all (PostgreSQL);
    /// open anything else only if it is valid.
    #[default]
    IfMissing,
    /// `--init`: create a new database and refuse to touch an existing
    /// one. A missing file or a 0-byte file (e.g. pre-created with the
    /// right owner and mode) is initialised; any file with content, valid
    /// or not, is refused ([`DbError::AlreadyExists`]): `--init` never
    /// overwrites data, remove the file first.
    Init,
}

/// One numbered step of a schema migration: what turns a database of
/// version `to - 1` into one of version `to`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Migration {
    /// The version the step leads to; the steps of a schema are numbered
    /// 1, 2, 3, ... in order (checked by [`plan`]).
    pub to: i64,
    /// What the step changes (for the log and the errors).
    pub what: &'static str,
    /// The statements of the step, in the backend's SQL; empty when the
    /// version only marks a layout (the step from version 0 to 1 of a
    /// SQLite schema whose tables did not change).
    pub sql: &'static str,
}

/// A schema version this program cannot upgrade from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum VersionError {
    /// Written by a newer program.
    #[error(
        "schema version {found} is newer than this program's {supported}: use a newer release"
    )]
    Newer {
        /// The version found.
        found: i64,
        /// The newest version this program knows.
        supported: i64,
    },
    /// Negative: no program writes it.
    #[error("unknown schema version {found} (this program knows 0 to {supported})")]
    Unknown {
        /// The version found.
        found: i64,
        /// The newest version this program knows.
        supported: i64,
    },
}

/// The steps that bring a database of version `found` to the newest
/// version of `steps` (`steps.len()`): empty when it is current.
///
/// # Panics
///
/// If `steps` are not numbered 1, 2, 3, ... (a programming error, caught
/// by every test that opens a database).
pub fn plan(found: i64, steps: &[Migration]) -> Result<&[Migration], VersionError> {
    for (i, m) in steps.iter().enumerate() {
        assert_eq!(
            usize::try_from(m.to).ok(),
            Some(i + 1),
            "migration steps must be numbered 1, 2, 3, ...: {:?}",
            m.what
        );
    }
    let supported = steps.len() as i64;
    match usize::try_from(found) {
        Err(_) => Err(VersionError::Unknown { found, supported }),
        Ok(_) if found > supported => Err(VersionError::Newer { found, supported }),
        Ok(n) => Ok(&steps[n..]),
    }
}

/// The schema of a SQLite database: version 0 and the steps after it.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    /// The `CREATE TABLE` / `CREATE INDEX` statements of version 0: the
    /// tables of the release before schema versions. A database without
    /// a version is upgraded only if its tables, columns and indexes are
    /// exactly these. Never change it: add a [`Migration`].
    pub base: &'static str,
    /// The steps to version 1, 2, ...; the last one is the version this
    /// program writes (in `PRAGMA user_version`). A new database is
    /// created with [`base`](Self::base) and every step.
    pub migrations: &'static [Migration],
}

impl Schema {
    /// The version this program writes and reads (a newer one is
    /// refused).
    pub const fn version(&self) -> i64 {
        self.migrations.len() as i64
    }

    /// The statements that create a new database of the current version
    /// (without setting the version).
    pub fn create_sql(&self) -> String {
        let mut sql = self.base.to_owned();
        for m in self.migrations {
            sql.push('\n');
            sql.push_str(m.sql);
        }
        sql
    }

    /// The tables and columns of the current version, in order (read back
    /// from an in-memory database, so the list never drifts from the
    /// steps); the ones required at open.
    pub fn tables(&self) -> rusqlite::Result<Vec<(String, Vec<String>)>> {
        tables_of(&self.create_sql())
    }
}

/// Why a database was refused. The messages name the problem; the caller
/// adds the file (see [`DbError::path`]).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The file exists but is empty.
    #[error(
        "database {path}: the file is empty (0 bytes), not a database: restore it from a backup, \
         or initialise a new database with --init if it is meant to be new"
    )]
    Empty {
        /// The file.
        path: String,
    },
    /// `--init` on a file that has content.
    #[error(
        "database {path}: --init refuses to overwrite an existing file ({len} bytes): \
         remove or move it first"
    )]
    AlreadyExists {
        /// The file.
        path: String,
        /// Its size.
        len: u64,
    },
    /// The main file is missing but its write-ahead log exists.
    #[error(
        "database {path}: the database file is missing but its write-ahead log {wal} exists: \
         the database was moved or deleted, refusing to start a new one"
    )]
    OrphanWal {
        /// The file.
        path: String,
        /// The `-wal` file.
        wal: String,
    },
    /// Not a SQLite database, or damaged (truncated, overwritten).
    #[error("database {path}: not a valid database (damaged or truncated?): {detail}")]
    Damaged {
        /// The file.
        path: String,
        /// What SQLite reported.
        detail: String,
    },
    /// No schema version and no table: not written by this program (an
    /// unversioned file with tables is upgraded or
    /// [`NotBaseSchema`](Self::NotBaseSchema)).
    #[error(
        "database {path}: no schema version (PRAGMA user_version is 0) and no table: not a \
         database of this program"
    )]
    NoVersion {
        /// The file.
        path: String,
    },
    /// No schema version, and tables that are not exactly those of
    /// version 0 (a partial or altered database): not upgraded.
    #[error(
        "database {path}: no schema version (PRAGMA user_version is 0) and not the schema of \
         the previous release, not upgraded: {detail}"
    )]
    NotBaseSchema {
        /// The file.
        path: String,
        /// The first difference found.
        detail: String,
    },
    /// A schema version written by a newer program.
    #[error(
        "database {path}: schema version {found} is newer than this program's {supported}: \
         use a newer release"
    )]
    NewerVersion {
        /// The file.
        path: String,
        /// The version found.
        found: i64,
        /// The version this program writes.
        supported: i64,
    },
    /// A version without a migration (a negative one).
    #[error(
        "database {path}: unknown schema version {found} (this program knows 0 to {supported})"
    )]
    UnknownVersion {
        /// The file.
        path: String,
        /// The version found.
        found: i64,
        /// The version this program writes.
        supported: i64,
    },
    /// A table of the schema is missing.
    #[error("database {path}: table {table} is missing")]
    MissingTable {
        /// The file.
        path: String,
        /// The table.
        table: String,
    },
    /// A column of the schema is missing.
    #[error("database {path}: column {column} of table {table} is missing")]
    MissingColumn {
        /// The file.
        path: String,
        /// The table.
        table: String,
        /// The column.
        column: String,
    },
    /// The data breaks a rule of the crate (e.g. an unknown delivery
    /// state, a negative counter mark).
    #[error("database {path}: {detail}")]
    Invalid {
        /// The file.
        path: String,
        /// The problem.
        detail: String,
    },
    /// A migration step failed (the database is left at its version).
    #[error("database {path}: the upgrade to schema version {to} ({what}) failed: {source}")]
    Migration {
        /// The file.
        path: String,
        /// The version of the step.
        to: i64,
        /// What the step changes.
        what: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The file could not be created or inspected.
    #[error("database {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Another process serves this file ([`ServingLock`]).
    #[error(
        "database {path}: in use by another process (it holds {lock}); one server per \
         database file: stop the other one first"
    )]
    InUse {
        /// The file.
        path: String,
        /// The lock file.
        lock: String,
    },
    /// SQLite failed while creating or opening a valid file.
    #[error("database {path}: {source}")]
    Sqlite {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: rusqlite::Error,
    },
}

impl DbError {
    /// The file this error is about.
    pub fn path(&self) -> &str {
        match self {
            Self::Empty { path }
            | Self::AlreadyExists { path, .. }
            | Self::OrphanWal { path, .. }
            | Self::Damaged { path, .. }
            | Self::NoVersion { path }
            | Self::NotBaseSchema { path, .. }
            | Self::NewerVersion { path, .. }
            | Self::UnknownVersion { path, .. }
            | Self::MissingTable { path, .. }
            | Self::MissingColumn { path, .. }
            | Self::Invalid { path, .. }
            | Self::Migration { path, .. }
            | Self::Io { path, .. }
            | Self::InUse { path, .. }
            | Self::Sqlite { path, .. } => path,
        }
    }
}

/// One server per SQLite database file: an exclusive advisory lock
/// (`flock`) on `<database>.lock` beside it, held while the value lives.
/// The kernel releases it when the process ends however it ends, so a
/// kill -9 leaves nothing to clean up and a restart takes it at once.
///
/// SQLite's own locks serialise the writes of two processes but do not
/// stop them both from serving: two BM-SCs on one file would each hand
/// out MUK counters from the same persisted mark (a (MUK, counter) pair
/// on two different messages), two BSFs the same SQNs. The lock is taken
/// by the server commands only (`mbms bmsc`, `mbms bsf`), before the
/// database is opened; the administration commands (subscribers, imports,
/// listings) and tests that read a database a server uses are not held
/// back. The lock file holds nothing (mode 0600), and is never removed
/// (removing it while held would let a second process lock a new one).
#[derive(Debug)]
pub struct ServingLock {
    _file: nix::fcntl::Flock<std::fs::File>,
}

impl ServingLock {
    /// The lock file of database `db`.
    pub fn path_for(db: &Path) -> PathBuf {
        let mut name = db.as_os_str().to_owned();
        name.push(".lock");
        PathBuf::from(name)
    }

    /// Takes the lock of `db`; [`DbError::InUse`] at once (never waits)
    /// when another process holds it.
    pub fn acquire(db: &Path) -> Result<ServingLock, DbError> {
        use std::os::unix::fs::OpenOptionsExt as _;
        let lock = Self::path_for(db);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock)
            .map_err(|source| DbError::Io {
                path: lock.display().to_string(),
                source,
            })?;
        match nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock) {
            Ok(f) => Ok(ServingLock { _file: f }),
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => Err(DbError::InUse {
                path: db.display().to_string(),
                lock: lock.display().to_string(),
            }),
            Err((_, e)) => Err(DbError::Io {
                path: lock.display().to_string(),
                source: std::io::Error::from(e),
            }),
        }
    }
}

/// What a crate checks in the rows of an existing database (after the
/// generic checks passed): `Err(problem)` refuses it.
pub type Validate<'a> = &'a dyn Fn(&Connection) -> Result<(), String>;

/// The tables and columns `ddl` creates, in order, read back from an
/// in-memory database (so the list can never drift from the schema).
pub fn tables_of(ddl: &str) -> rusqlite::Result<Vec<(String, Vec<String>)>> {
    let mem = Connection::open_in_memory()?;
    mem.execute_batch(ddl)?;
    tables_in(&mem)
}

fn tables_in(conn: &Connection) -> rusqlite::Result<Vec<(String, Vec<String>)>> {
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
             ORDER BY rowid",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    names
        .into_iter()
        .map(|t| {
            let cols = conn
                .prepare("SELECT name FROM pragma_table_info(?1) ORDER BY cid")?
                .query_map([&t], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok((t, cols))
        })
        .collect()
}

/// Opens the SQLite database at `path` (see the [module](self) rules):
/// creates it with mode 0600 and `schema` where no file exists (or on a
/// 0-byte file with [`Create::Init`]), else checks it, applies the
/// migration steps it lacks and runs `validate`, all in one transaction
/// (refused: nothing changed). The connection is in WAL mode with
/// `synchronous = FULL` and a 5 s busy timeout.
pub fn open_sqlite(
    path: &Path,
    schema: &Schema,
    create: Create,
    validate: Validate<'_>,
) -> Result<Connection, DbError> {
    let io = |source| DbError::Io {
        path: path.display().to_string(),
        source,
    };
    let wal = sidecar(path, "-wal");
    if !path.exists() && wal.exists() {
        return Err(DbError::OrphanWal {
            path: path.display().to_string(),
            wal: wal.display().to_string(),
        });
    }
    let fresh = match create_private_file_new(path) {
        Ok(()) => true,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let len = std::fs::metadata(path).map_err(io)?.len();
            match (len, create) {
                (0, Create::Init) => true,
                (0, Create::IfMissing) => {
                    return Err(DbError::Empty {
                        path: path.display().to_string(),
                    })
                }
                (len, Create::Init) => {
                    return Err(DbError::AlreadyExists {
                        path: path.display().to_string(),
                        len,
                    })
                }
                (_, Create::IfMissing) => false,
            }
        }
        Err(e) => return Err(io(e)),
    };
    let sqlite = |source| DbError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    // The file exists now: never let SQLite create one.
    let mut conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
    if fresh {
        init(&conn, schema).map_err(sqlite)?;
    } else if let Some(from) = check(&mut conn, path, schema, validate)? {
        tracing::info!(
            db = %path.display(),
            from,
            to = schema.version(),
            "database schema upgraded"
        );
    }
    // journal_mode answers with a row.
    let _mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(sqlite)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(sqlite)?;
    Ok(conn)
}

/// A new in-memory database with `schema` (tests).
pub fn open_sqlite_in_memory(schema: &Schema) -> rusqlite::Result<Connection> {
    let conn = Connection::open_in_memory()?;
    init(&conn, schema)?;
    Ok(conn)
}

/// Creates the schema (version 0 and every step) and sets its version in
/// one transaction, so that a crash leaves either a 0-byte file (refused
/// at the next start) or a complete database.
fn init(conn: &Connection, schema: &Schema) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {} PRAGMA user_version = {}; COMMIT;",
        schema.create_sql(),
        schema.version()
    ))
}

fn damaged(path: &Path, e: impl std::fmt::Display) -> DbError {
    DbError::Damaged {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

/// Checks an existing file and upgrades it: returns the version it was
/// upgraded from, if it was.
fn check(
    conn: &mut Connection,
    path: &Path,
    schema: &Schema,
    validate: Validate<'_>,
) -> Result<Option<i64>, DbError> {
    let path_s = || path.display().to_string();
    let sqlite = |source| DbError::Sqlite {
        path: path_s(),
        source,
    };
    // The first read of the header: "file is not a database" here.
    conn.query_row("PRAGMA user_version", [], |r| r.get::<_, i64>(0))
        .map_err(|e| damaged(path, e))?;
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut st| {
            st.query_map([], |r| r.get::<_, String>(0))?
                .collect::<Result<_, _>>()
        })
        .map_err(|e| damaged(path, e))?;
    if problems != ["ok"] {
        return Err(damaged(
            path,
            format!("integrity check failed: {}", problems.join("; ")),
        ));
    }
    // One transaction for the upgrade and the checks: another process
    // opening the file meanwhile waits, and a refusal (or a failed step)
    // rolls every step back (dropping `tx`).
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sqlite)?;
    let version: i64 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite)?;
    let steps = plan(version, schema.migrations).map_err(|e| match e {
        VersionError::Newer { found, supported } => DbError::NewerVersion {
            path: path_s(),
            found,
            supported,
        },
        VersionError::Unknown { found, supported } => DbError::UnknownVersion {
            path: path_s(),
            found,
            supported,
        },
    })?;
    if version == 0 {
        check_base(&tx, path, schema)?;
    }
    for m in steps {
        tx.execute_batch(m.sql)
            .map_err(|source| DbError::Migration {
                path: path_s(),
                to: m.to,
                what: m.what.to_owned(),
                source,
            })?;
    }
    if !steps.is_empty() {
        tx.pragma_update(None, "user_version", schema.version())
            .map_err(sqlite)?;
    }
    let expected = schema.tables().map_err(sqlite)?;
    let present = tables_in(&tx).map_err(|e| damaged(path, e))?;
    for (table, columns) in expected {
        let Some((_, have)) = present.iter().find(|(t, _)| *t == table) else {
            return Err(DbError::MissingTable {
                path: path_s(),
                table,
            });
        };
        if let Some(column) = columns.into_iter().find(|c| !have.contains(c)) {
            return Err(DbError::MissingColumn {
                path: path_s(),
                table,
                column,
            });
        }
    }
    validate(&tx).map_err(|detail| DbError::Invalid {
        path: path_s(),
        detail,
    })?;
    tx.commit().map_err(sqlite)?;
    Ok((!steps.is_empty()).then_some(version))
}

/// Every table (by name) with each column's name, declared type, NOT NULL,
/// default and primary key position, and the names of the indexes made by
/// `CREATE INDEX`.
type Layout = (Vec<(String, Vec<String>)>, Vec<String>);

fn layout_in(conn: &Connection) -> rusqlite::Result<Layout> {
    let names: Vec<String> = conn
        .prepare(
            "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%'
             ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    let tables = names
        .into_iter()
        .map(|t| {
            let cols = conn
                .prepare(
                    "SELECT name || ' ' || type || CASE WHEN \"notnull\" THEN ' NOT NULL' ELSE '' END
                            || COALESCE(' DEFAULT ' || dflt_value, '')
                            || CASE WHEN pk > 0 THEN ' PRIMARY KEY ' || pk ELSE '' END
                     FROM pragma_table_info(?1) ORDER BY cid",
                )?
                .query_map([&t], |r| r.get(0))?
                .collect::<Result<Vec<String>, _>>()?;
            Ok((t, cols))
        })
        .collect::<rusqlite::Result<_>>()?;
    let indexes = conn
        .prepare(
            "SELECT tbl_name || '.' || name FROM sqlite_schema
             WHERE type = 'index' AND sql IS NOT NULL ORDER BY name",
        )?
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    Ok((tables, indexes))
}

/// A database of version 0 is upgraded only if its layout is exactly the
/// one of [`Schema::base`]: no table at all is [`DbError::NoVersion`]
/// (not a database of this program), any other difference (a partial
/// database, a foreign one) [`DbError::NotBaseSchema`].
fn check_base(conn: &Connection, path: &Path, schema: &Schema) -> Result<(), DbError> {
    let sqlite = |source| DbError::Sqlite {
        path: path.display().to_string(),
        source,
    };
    let found = layout_in(conn).map_err(|e| damaged(path, e))?;
    if found.0.is_empty() {
        return Err(DbError::NoVersion {
            path: path.display().to_string(),
        });
    }
    let mem = Connection::open_in_memory().map_err(sqlite)?;
    mem.execute_batch(schema.base).map_err(sqlite)?;
    let expected = layout_in(&mem).map_err(sqlite)?;
    match layout_difference(&expected, &found) {
        None => Ok(()),
        Some(detail) => Err(DbError::NotBaseSchema {
            path: path.display().to_string(),
            detail,
        }),
    }
}

/// The first difference between two layouts, in words.
fn layout_difference(expected: &Layout, found: &Layout) -> Option<String> {
    for (table, cols) in &expected.0 {
        let Some((_, have)) = found.0.iter().find(|(t, _)| t == table) else {
            return Some(format!("table {table} is missing"));
        };
        if have != cols {
            return Some(format!(
                "table {table} has the columns ({}), expected ({})",
                have.join(", "),
                cols.join(", ")
            ));
        }
    }
    if let Some((t, _)) = found
        .0
        .iter()
        .find(|(t, _)| !expected.0.iter().any(|(e, _)| e == t))
    {
        return Some(format!("table {t} is not part of the schema"));
    }
    if let Some(i) = expected.1.iter().find(|i| !found.1.contains(i)) {
        return Some(format!("index {i} is missing"));
    }
    if let Some(i) = found.1.iter().find(|i| !expected.1.contains(i)) {
        return Some(format!("index {i} is not part of the schema"));
    }
    None
}

/// `path` with `suffix` appended to its file name (`bmsc.db-wal`).
fn sidecar(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

/// Creates `path` with mode 0600; `AlreadyExists` if it exists.
fn create_private_file_new(path: &Path) -> std::io::Result<()> {
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(0o600);
    }
    opts.open(path).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_per_database_file() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        let first = ServingLock::acquire(&db).unwrap();
        let lock = ServingLock::path_for(&db);
        assert_eq!(lock, dir.path().join("x.db.lock"));
        use std::os::unix::fs::PermissionsExt as _;
        assert_eq!(
            std::fs::metadata(&lock).unwrap().permissions().mode() & 0o777,
            0o600
        );
        match ServingLock::acquire(&db) {
            Err(e @ DbError::InUse { .. }) => {
                let text = e.to_string();
                assert!(text.contains("x.db") && text.contains("in use"), "{text}");
                assert_eq!(e.path(), db.display().to_string());
            }
            other => panic!("a second server on the file: {other:?}"),
        }
        // Another database is not held back.
        let _other = ServingLock::acquire(&dir.path().join("y.db")).unwrap();
        drop(first);
        let _again = ServingLock::acquire(&db).unwrap();
    }

    const BASE: &str = "CREATE TABLE t (a INTEGER NOT NULL, b TEXT NOT NULL);
                        CREATE INDEX t_a ON t (a);";

    /// Version 3: version 0, a table u (step 1), a version-only step 2,
    /// and a column t.c (step 3).
    const SCHEMA: Schema = Schema {
        base: BASE,
        migrations: &[
            Migration {
                to: 1,
                what: "table u",
                sql: "CREATE TABLE u (c BLOB NOT NULL);",
            },
            Migration {
                to: 2,
                what: "same tables",
                sql: "",
            },
            Migration {
                to: 3,
                what: "column t.c",
                sql: "ALTER TABLE t ADD COLUMN c INTEGER NOT NULL DEFAULT 7;",
            },
        ],
    };

    fn version(c: &Connection) -> i64 {
        c.query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap()
    }

    /// A file written by an older program: `sql` on an empty file.
    fn older(path: &Path, sql: &str) {
        let c = Connection::open(path).unwrap();
        c.execute_batch(sql).unwrap();
    }

    fn no_check(_: &Connection) -> Result<(), String> {
        Ok(())
    }

    fn open(path: &Path, create: Create) -> Result<Connection, DbError> {
        open_sqlite(path, &SCHEMA, create, &no_check)
    }

    #[test]
    fn created_only_where_no_file_exists() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.db");
        let c = open(&p, Create::IfMissing).unwrap();
        c.execute("INSERT INTO t (a, b) VALUES (1, 'one')", [])
            .unwrap();
        drop(c);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&p).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let c = open(&p, Create::IfMissing).unwrap();
        let n: i64 = c.query_row("SELECT a FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(n, 1);
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, 3);
        drop(c);
        assert!(matches!(
            open(&p, Create::Init),
            Err(DbError::AlreadyExists { .. })
        ));
    }

    #[test]
    fn damage_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.db");
        std::fs::write(&p, b"").unwrap();
        let e = open(&p, Create::IfMissing).unwrap_err();
        assert!(matches!(e, DbError::Empty { .. }), "{e}");
        assert!(e.to_string().contains("x.db"), "{e}");
        assert_eq!(std::fs::metadata(&p).unwrap().len(), 0, "left alone");
        // --init initialises a 0-byte file.
        drop(open(&p, Create::Init).unwrap());
        drop(open(&p, Create::IfMissing).unwrap());

        std::fs::write(&p, b"this is not a database, just some text.........").unwrap();
        let e = open(&p, Create::IfMissing).unwrap_err();
        assert!(matches!(e, DbError::Damaged { .. }), "{e}");

        let q = dir.path().join("y.db");
        let c = open(&q, Create::IfMissing).unwrap();
        c.execute_batch("DROP TABLE u").unwrap();
        drop(c);
        let e = open(&q, Create::IfMissing).unwrap_err();
        assert!(
            matches!(&e, DbError::MissingTable { table, .. } if table == "u"),
            "{e}"
        );

        let r = dir.path().join("z.db");
        let c = open(&r, Create::IfMissing).unwrap();
        c.execute_batch("PRAGMA user_version = 4").unwrap();
        drop(c);
        let e = open(&r, Create::IfMissing).unwrap_err();
        assert!(matches!(e, DbError::NewerVersion { found: 4, .. }), "{e}");

        let w = dir.path().join("w.db");
        std::fs::write(sidecar(&w, "-wal"), b"x").unwrap();
        assert!(matches!(
            open(&w, Create::IfMissing),
            Err(DbError::OrphanWal { .. })
        ));
    }

    #[test]
    fn crate_checks_run_on_existing_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.db");
        drop(open(&p, Create::IfMissing).unwrap());
        let refuse = |_: &Connection| Err("bad row".to_owned());
        let e = open_sqlite(&p, &SCHEMA, Create::IfMissing, &refuse).unwrap_err();
        assert!(e.to_string().contains("bad row"), "{e}");
    }

    #[test]
    fn plan_numbers_and_versions() {
        assert_eq!(plan(0, SCHEMA.migrations).unwrap().len(), 3);
        assert_eq!(plan(2, SCHEMA.migrations).unwrap()[0].to, 3);
        assert!(plan(3, SCHEMA.migrations).unwrap().is_empty());
        assert_eq!(
            plan(4, SCHEMA.migrations),
            Err(VersionError::Newer {
                found: 4,
                supported: 3
            })
        );
        assert!(matches!(
            plan(-1, SCHEMA.migrations),
            Err(VersionError::Unknown { .. })
        ));
        let r = std::panic::catch_unwind(|| {
            plan(
                0,
                &[Migration {
                    to: 2,
                    what: "gap",
                    sql: "",
                }],
            )
            .map(<[_]>::len)
        });
        assert!(r.is_err(), "steps must be numbered from 1");
    }

    #[test]
    fn older_versions_are_upgraded_once_and_keep_their_rows() {
        let dir = tempfile::tempdir().unwrap();
        // Version 1 (table u), with rows.
        let p = dir.path().join("v1.db");
        older(
            &p,
            &format!(
                "{BASE} CREATE TABLE u (c BLOB NOT NULL); PRAGMA user_version = 1;
                 INSERT INTO t (a, b) VALUES (5, 'five'); INSERT INTO u VALUES (x'01');"
            ),
        );
        let c = open(&p, Create::IfMissing).unwrap();
        assert_eq!(version(&c), 3);
        let row: (i64, String, i64) = c
            .query_row("SELECT a, b, c FROM t", [], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .unwrap();
        assert_eq!(row, (5, "five".to_owned(), 7));
        drop(c);
        // A second open is a no-op (step 3 run twice would fail: duplicate
        // column).
        let c = open(&p, Create::IfMissing).unwrap();
        assert_eq!(version(&c), 3);
        drop(c);

        // Version 0: the base tables, no version (e.g. restored from a
        // `.dump`).
        let q = dir.path().join("v0.db");
        older(
            &q,
            &format!("{BASE} INSERT INTO t (a, b) VALUES (1, 'one');"),
        );
        let c = open(&q, Create::IfMissing).unwrap();
        assert_eq!(version(&c), 3);
        let n: i64 = c
            .query_row("SELECT count(*) FROM u", [], |r| r.get(0))
            .unwrap();
        assert_eq!(n, 0);
        let b: String = c.query_row("SELECT b FROM t", [], |r| r.get(0)).unwrap();
        assert_eq!(b, "one");
    }

    #[test]
    fn version_0_is_upgraded_only_when_it_is_exactly_the_base() {
        let dir = tempfile::tempdir().unwrap();
        for (name, sql, expect) in [
            (
                "missing_index",
                "CREATE TABLE t (a INTEGER NOT NULL, b TEXT NOT NULL);",
                "index t.t_a is missing",
            ),
            (
                "other_column",
                "CREATE TABLE t (a INTEGER NOT NULL, b TEXT); CREATE INDEX t_a ON t (a);",
                "table t has the columns",
            ),
            (
                "extra_table",
                &format!("{BASE} CREATE TABLE v (x INTEGER);"),
                "table v is not part of the schema",
            ),
            (
                "partial",
                "CREATE TABLE w (x INTEGER);",
                "table t is missing",
            ),
        ] {
            let p = dir.path().join(format!("{name}.db"));
            older(&p, sql);
            let before = std::fs::read(&p).unwrap();
            let e = open(&p, Create::IfMissing).unwrap_err();
            assert!(matches!(e, DbError::NotBaseSchema { .. }), "{name}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains(expect) && msg.contains("no schema version"),
                "{name}: {msg}"
            );
            assert_eq!(std::fs::read(&p).unwrap(), before, "{name}: left alone");
        }
        // A database without any table.
        let p = dir.path().join("none.db");
        older(&p, "PRAGMA application_id = 7");
        let e = open(&p, Create::IfMissing).unwrap_err();
        assert!(matches!(e, DbError::NoVersion { .. }), "{e}");
    }

    #[test]
    fn a_refused_upgrade_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        // Validation fails after the steps: rolled back.
        let p = dir.path().join("refused.db");
        older(
            &p,
            &format!("{BASE} INSERT INTO t (a, b) VALUES (1, 'bad');"),
        );
        let refuse = |c: &Connection| {
            let b: String = c
                .query_row("SELECT b FROM t", [], |r| r.get(0))
                .map_err(|e| e.to_string())?;
            if b == "bad" {
                Err(format!("bad row {b}"))
            } else {
                Ok(())
            }
        };
        let e = open_sqlite(&p, &SCHEMA, Create::IfMissing, &refuse).unwrap_err();
        assert!(matches!(e, DbError::Invalid { .. }), "{e}");
        let c = Connection::open(&p).unwrap();
        assert_eq!(version(&c), 0, "the version is rolled back");
        let u: i64 = c
            .query_row(
                "SELECT count(*) FROM sqlite_schema WHERE name = 'u'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(u, 0, "step 1 is rolled back");
        drop(c);

        // A step that fails: the error names the step, nothing changed.
        let q = dir.path().join("step.db");
        older(
            &q,
            &format!(
                "{BASE} CREATE TABLE u (c BLOB NOT NULL); ALTER TABLE t ADD COLUMN c TEXT;
                 PRAGMA user_version = 2;"
            ),
        );
        let e = open(&q, Create::IfMissing).unwrap_err();
        assert!(matches!(&e, DbError::Migration { to: 3, .. }), "{e}");
        assert!(e.to_string().contains("column t.c"), "{e}");
        assert_eq!(version(&Connection::open(&q).unwrap()), 2);
    }
}
