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

use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

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

/// The schema of a SQLite database.
#[derive(Clone, Copy, Debug)]
pub struct Schema {
    /// The version this program writes and reads, kept in
    /// `PRAGMA user_version` (a newer one is refused).
    pub version: i64,
    /// `CREATE TABLE` / `CREATE INDEX` statements of a new database. The
    /// tables and columns it creates are the ones required at open.
    pub ddl: &'static str,
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
    /// No schema version: not written by this program, or its
    /// initialisation never finished.
    #[error(
        "database {path}: no schema version (PRAGMA user_version is 0): not a database of this \
         program, or its creation did not finish"
    )]
    NoVersion {
        /// The file.
        path: String,
    },
    /// A schema version this program does not know.
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
    /// An older version without a migration (or a negative one).
    #[error("database {path}: unknown schema version {found} (this program knows {supported})")]
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
    /// The file could not be created or inspected.
    #[error("database {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
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
            | Self::NewerVersion { path, .. }
            | Self::UnknownVersion { path, .. }
            | Self::MissingTable { path, .. }
            | Self::MissingColumn { path, .. }
            | Self::Invalid { path, .. }
            | Self::Io { path, .. }
            | Self::Sqlite { path, .. } => path,
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
/// 0-byte file with [`Create::Init`]), else checks it and runs `validate`.
/// The connection is in WAL mode with `synchronous = FULL` and a 5 s busy
/// timeout.
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
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(sqlite)?;
    conn.busy_timeout(Duration::from_secs(5)).map_err(sqlite)?;
    if fresh {
        init(&conn, schema).map_err(sqlite)?;
    } else {
        check(&conn, path, schema, validate)?;
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

/// Creates the schema and sets its version in one transaction, so that a
/// crash leaves either a 0-byte file (refused at the next start) or a
/// complete database.
fn init(conn: &Connection, schema: &Schema) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {} PRAGMA user_version = {}; COMMIT;",
        schema.ddl, schema.version
    ))
}

fn damaged(path: &Path, e: impl std::fmt::Display) -> DbError {
    DbError::Damaged {
        path: path.display().to_string(),
        detail: e.to_string(),
    }
}

fn check(
    conn: &Connection,
    path: &Path,
    schema: &Schema,
    validate: Validate<'_>,
) -> Result<(), DbError> {
    // The first read of the header: "file is not a database" here.
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
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
    match version {
        0 => {
            return Err(DbError::NoVersion {
                path: path.display().to_string(),
            })
        }
        v if v > schema.version => {
            return Err(DbError::NewerVersion {
                path: path.display().to_string(),
                found: v,
                supported: schema.version,
            })
        }
        v if v != schema.version => {
            return Err(DbError::UnknownVersion {
                path: path.display().to_string(),
                found: v,
                supported: schema.version,
            })
        }
        _ => {}
    }
    let expected = tables_of(schema.ddl).map_err(|source| DbError::Sqlite {
        path: path.display().to_string(),
        source,
    })?;
    let present = tables_in(conn).map_err(|e| damaged(path, e))?;
    for (table, columns) in expected {
        let Some((_, have)) = present.iter().find(|(t, _)| *t == table) else {
            return Err(DbError::MissingTable {
                path: path.display().to_string(),
                table,
            });
        };
        if let Some(column) = columns.into_iter().find(|c| !have.contains(c)) {
            return Err(DbError::MissingColumn {
                path: path.display().to_string(),
                table,
                column,
            });
        }
    }
    validate(conn).map_err(|detail| DbError::Invalid {
        path: path.display().to_string(),
        detail,
    })
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

    const SCHEMA: Schema = Schema {
        version: 3,
        ddl: "CREATE TABLE t (a INTEGER NOT NULL, b TEXT NOT NULL);
              CREATE TABLE u (c BLOB NOT NULL);",
    };

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
        c.execute("INSERT INTO t VALUES (1, 'one')", []).unwrap();
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
}
