//! Where collected messages live: SQLite (embedded, the default) or
//! PostgreSQL, behind one schema and one set of SQL statements.
//!
//! The statements are written once in the dialect both engines share
//! (`$N` parameters, `ON CONFLICT`, `BIGINT`/`DOUBLE PRECISION`/`TEXT`), and
//! values cross the boundary as [`Val`], so the collector, `query`,
//! `report` and `dashboard` never know which engine they talk to.

use std::collections::HashMap;
use std::time::Duration;

/// Errors from the database.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite refused or failed.
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL refused, failed or went away.
    #[error("postgres: {0}")]
    Postgres(#[from] postgres::Error),
    /// The database was migrated by a newer edgeinfer-host.
    #[error("database schema version {found} is newer than this edgeinfer-host reads ({supported}): upgrade edgeinfer-host")]
    Newer {
        /// Version in the database.
        found: i64,
        /// Newest version this build knows.
        supported: i64,
    },
    /// A value of an unexpected type came back.
    #[error("unexpected column type: {0}")]
    Type(String),
}

impl StoreError {
    /// Whether waiting and reconnecting can help (a database down, locked
    /// or full), as opposed to a database this build must not touch.
    pub fn is_transient(&self) -> bool {
        !matches!(self, StoreError::Newer { .. } | StoreError::Type(_))
    }
}

/// One SQL value: the four types the schema uses.
#[derive(Debug, Clone, PartialEq)]
pub enum Val {
    /// NULL.
    Null,
    /// BIGINT.
    Int(i64),
    /// DOUBLE PRECISION.
    Real(f64),
    /// TEXT.
    Text(String),
}

impl Val {
    /// The integer, if it is one.
    pub fn int(&self) -> Option<i64> {
        match self {
            Val::Int(i) => Some(*i),
            Val::Real(f) => Some(*f as i64),
            _ => None,
        }
    }

    /// The number, if it is one.
    pub fn real(&self) -> Option<f64> {
        match self {
            Val::Int(i) => Some(*i as f64),
            Val::Real(f) => Some(*f),
            _ => None,
        }
    }

    /// The text, if it is some.
    pub fn text(&self) -> Option<&str> {
        match self {
            Val::Text(s) => Some(s),
            _ => None,
        }
    }

    /// As JSON (NULL → null).
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Val::Null => serde_json::Value::Null,
            Val::Int(i) => (*i).into(),
            Val::Real(f) => serde_json::Number::from_f64(*f)
                .map_or(serde_json::Value::Null, serde_json::Value::Number),
            Val::Text(s) => s.clone().into(),
        }
    }
}

impl From<i64> for Val {
    fn from(v: i64) -> Self {
        Val::Int(v)
    }
}
impl From<u64> for Val {
    fn from(v: u64) -> Self {
        Val::Int(i64::try_from(v).unwrap_or(i64::MAX))
    }
}
impl From<f64> for Val {
    fn from(v: f64) -> Self {
        if v.is_finite() {
            Val::Real(v)
        } else {
            Val::Null
        }
    }
}
// PostgreSQL refuses NUL in text, and a device id or label with one in it
// would fail its batch on every redelivery; both engines get U+FFFD.
impl From<&str> for Val {
    fn from(v: &str) -> Self {
        Val::Text(v.replace('\0', "\u{fffd}"))
    }
}
impl From<String> for Val {
    fn from(v: String) -> Self {
        if v.contains('\0') {
            Val::Text(v.replace('\0', "\u{fffd}"))
        } else {
            Val::Text(v)
        }
    }
}
impl<T: Into<Val>> From<Option<T>> for Val {
    fn from(v: Option<T>) -> Self {
        v.map_or(Val::Null, Into::into)
    }
}

/// Rows as they come back.
pub type Rows = Vec<Vec<Val>>;

/// The two engines behind one face.
pub enum Store {
    /// An SQLite file.
    Sqlite(rusqlite::Connection),
    /// A PostgreSQL server, with its prepared statements.
    Postgres {
        /// The connection.
        client: Box<postgres::Client>,
        /// Statements prepared on it, by text.
        prepared: HashMap<String, postgres::Statement>,
    },
}

/// The newest schema version; [`MIGRATIONS`] has one entry per version.
pub const SCHEMA_VERSION: i64 = 1;

/// Schema changes, in order: `MIGRATIONS[i]` takes a database from version
/// `i` to `i + 1`. Append; never edit one that shipped.
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE devices (
    id TEXT PRIMARY KEY,
    first_seen_ms BIGINT NOT NULL,
    last_seen_ms BIGINT NOT NULL,
    online BIGINT,
    status_ms BIGINT,
    model TEXT,
    model_sha256 TEXT,
    model_version TEXT,
    labels TEXT,
    info TEXT,
    results BIGINT NOT NULL DEFAULT 0,
    duplicates BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE results (
    device TEXT NOT NULL,
    seq BIGINT NOT NULL,
    ts_ms BIGINT NOT NULL,
    model_sha256 TEXT,
    kind TEXT NOT NULL,
    class BIGINT,
    label TEXT,
    score DOUBLE PRECISION,
    detail TEXT,
    bytes BIGINT NOT NULL,
    received_ms BIGINT NOT NULL,
    PRIMARY KEY (device, seq)
);
CREATE INDEX results_received ON results (received_ms);
CREATE INDEX results_ts ON results (ts_ms);
CREATE TABLE status_events (
    device TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    online BIGINT NOT NULL
);
CREATE INDEX status_events_device ON status_events (device, received_ms);
CREATE TABLE errors (
    device TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    ts_ms BIGINT,
    source TEXT NOT NULL,
    reason TEXT NOT NULL
);
CREATE INDEX errors_device ON errors (device);
CREATE UNIQUE INDEX errors_sent ON errors (device, ts_ms, reason) WHERE source = 'device';
CREATE TABLE metrics (
    device TEXT NOT NULL,
    received_ms BIGINT NOT NULL,
    ts_ms BIGINT,
    body TEXT NOT NULL
);
CREATE INDEX metrics_device ON metrics (device, received_ms);
CREATE UNIQUE INDEX metrics_sent ON metrics (device, ts_ms);
"#];

/// Whether `db` names a PostgreSQL server rather than an SQLite file.
pub fn is_postgres(db: &str) -> bool {
    db.starts_with("postgres://") || db.starts_with("postgresql://")
}

impl Store {
    /// Opens (creating an SQLite file if needed) and migrates to
    /// [`SCHEMA_VERSION`]; refuses a database from a newer version.
    pub fn open(db: &str) -> Result<Store, StoreError> {
        let mut store = if is_postgres(db) {
            let mut config: postgres::Config = db.parse()?;
            // A dead server must not hang a collector that should be
            // backing off and telling the operator.
            config.connect_timeout(Duration::from_secs(5));
            config.application_name("edgeinfer-host");
            Store::Postgres {
                client: Box::new(config.connect(postgres::NoTls)?),
                prepared: HashMap::new(),
            }
        } else {
            let conn = rusqlite::Connection::open(db)?;
            // WAL: readers (query, dashboard) never block the collector.
            // synchronous=FULL: a commit is on disk before its messages are
            // acknowledged, so power loss loses nothing acknowledged.
            // busy: collectors sharing one file take turns.
            conn.busy_handler(Some(busy))?;
            conn.pragma_update(None, "journal_mode", "WAL")?;
            conn.pragma_update(None, "synchronous", "FULL")?;
            Store::Sqlite(conn)
        };
        store.migrate()?;
        Ok(store)
    }

    /// "sqlite" or "postgres".
    pub fn engine(&self) -> &'static str {
        match self {
            Store::Sqlite(_) => "sqlite",
            Store::Postgres { .. } => "postgres",
        }
    }

    fn migrate(&mut self) -> Result<(), StoreError> {
        // Readers (query, report, dashboard) of a current database must not
        // take the write lock the collectors need.
        if let Ok(rows) = self.query("SELECT version FROM edgeinfer_schema", &[]) {
            match rows.first().and_then(|r| r[0].int()) {
                Some(v) if v == SCHEMA_VERSION => return Ok(()),
                Some(v) if v > SCHEMA_VERSION => {
                    return Err(StoreError::Newer {
                        found: v,
                        supported: SCHEMA_VERSION,
                    })
                }
                _ => {}
            }
        }
        self.begin()?;
        let result = (|| {
            if let Store::Postgres { .. } = self {
                // Collectors starting together must not migrate twice, nor
                // race on creating the version table (PostgreSQL fails one
                // of two concurrent CREATE TABLE IF NOT EXISTS).
                self.batch("SELECT pg_advisory_xact_lock(7307734512)")?;
            }
            self.batch("CREATE TABLE IF NOT EXISTS edgeinfer_schema (version BIGINT NOT NULL)")?;
            let rows = self.query("SELECT version FROM edgeinfer_schema", &[])?;
            let found = rows.first().and_then(|r| r[0].int());
            let mut version = found.unwrap_or(0);
            if version > SCHEMA_VERSION {
                return Err(StoreError::Newer {
                    found: version,
                    supported: SCHEMA_VERSION,
                });
            }
            while version < SCHEMA_VERSION {
                self.batch(MIGRATIONS[version as usize])?;
                version += 1;
                log::info!("database migrated to schema version {version}");
            }
            if found.is_none() {
                self.execute(
                    "INSERT INTO edgeinfer_schema (version) VALUES ($1)",
                    &[version.into()],
                )?;
            } else if found != Some(version) {
                self.execute(
                    "UPDATE edgeinfer_schema SET version = $1",
                    &[version.into()],
                )?;
            }
            Ok(())
        })();
        match result {
            Ok(()) => self.commit(),
            Err(e) => {
                let _ = self.rollback();
                Err(e)
            }
        }
    }

    /// Runs statements without parameters (DDL, transaction control).
    pub fn batch(&mut self, sql: &str) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(c) => Ok(c.execute_batch(sql)?),
            Store::Postgres { client, .. } => Ok(client.batch_execute(sql)?),
        }
    }

    /// Starts a transaction. On SQLite it takes the write lock at once, so
    /// a busy database fails here rather than half-way through.
    pub fn begin(&mut self) -> Result<(), StoreError> {
        match self {
            Store::Sqlite(_) => self.batch("BEGIN IMMEDIATE"),
            Store::Postgres { .. } => self.batch("BEGIN"),
        }
    }

    /// Commits the transaction.
    pub fn commit(&mut self) -> Result<(), StoreError> {
        self.batch("COMMIT")
    }

    /// Abandons the transaction.
    pub fn rollback(&mut self) -> Result<(), StoreError> {
        self.batch("ROLLBACK")
    }

    /// Runs one statement; returns the rows it changed.
    pub fn execute(&mut self, sql: &str, params: &[Val]) -> Result<u64, StoreError> {
        match self {
            Store::Sqlite(c) => {
                let mut st = c.prepare_cached(&sqlite_params(sql))?;
                Ok(st.execute(rusqlite::params_from_iter(params.iter()))? as u64)
            }
            Store::Postgres { client, prepared } => {
                let st = pg_prepare(client, prepared, sql)?;
                Ok(client.execute(&st, &pg_params(params))?)
            }
        }
    }

    /// Runs one query; returns every row.
    pub fn query(&mut self, sql: &str, params: &[Val]) -> Result<Rows, StoreError> {
        match self {
            Store::Sqlite(c) => {
                let mut st = c.prepare_cached(&sqlite_params(sql))?;
                let n = st.column_count();
                let mut rows = st.query(rusqlite::params_from_iter(params.iter()))?;
                let mut out = Vec::new();
                while let Some(row) = rows.next()? {
                    let mut r = Vec::with_capacity(n);
                    for i in 0..n {
                        use rusqlite::types::ValueRef;
                        r.push(match row.get_ref(i)? {
                            ValueRef::Null => Val::Null,
                            ValueRef::Integer(v) => Val::Int(v),
                            ValueRef::Real(v) => Val::Real(v),
                            ValueRef::Text(t) => Val::Text(String::from_utf8_lossy(t).into()),
                            ValueRef::Blob(_) => return Err(StoreError::Type("blob".into())),
                        });
                    }
                    out.push(r);
                }
                Ok(out)
            }
            Store::Postgres { client, prepared } => {
                let st = pg_prepare(client, prepared, sql)?;
                client
                    .query(&st, &pg_params(params))?
                    .iter()
                    .map(pg_row)
                    .collect::<Result<Rows, _>>()
            }
        }
    }
}

/// `$N` → `?N`. SQLite reads `$N` as a *named* parameter and numbers
/// those in order of first appearance, so `SET a = $2 WHERE id = $1`
/// would bind backwards; `?N` is SQLite's numbered form.
fn sqlite_params(sql: &str) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut chars = sql.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '$' && chars.peek().is_some_and(char::is_ascii_digit) {
            out.push('?');
        } else {
            out.push(c);
        }
    }
    out
}

/// Waits for another writer's lock for up to about 5 s, retrying every
/// millisecond. SQLite's own busy timeout sleeps up to 100 ms between
/// tries, so with several collectors on one file the lock sat idle most
/// of the time and ingestion collapsed to a few transactions a second.
fn busy(attempt: i32) -> bool {
    if attempt >= 5000 {
        return false;
    }
    std::thread::sleep(Duration::from_millis(1));
    true
}

fn pg_params(params: &[Val]) -> Vec<&(dyn postgres::types::ToSql + Sync)> {
    params
        .iter()
        .map(|p| p as &(dyn postgres::types::ToSql + Sync))
        .collect()
}

fn pg_prepare(
    client: &mut postgres::Client,
    prepared: &mut HashMap<String, postgres::Statement>,
    sql: &str,
) -> Result<postgres::Statement, StoreError> {
    if let Some(st) = prepared.get(sql) {
        return Ok(st.clone());
    }
    let st = client.prepare(sql)?;
    prepared.insert(sql.to_string(), st.clone());
    Ok(st)
}

fn pg_row(row: &postgres::Row) -> Result<Vec<Val>, StoreError> {
    use postgres::types::Type;
    let mut out = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let t = col.type_();
        let v = if *t == Type::INT8 {
            row.try_get::<_, Option<i64>>(i)?.into()
        } else if *t == Type::INT4 {
            row.try_get::<_, Option<i32>>(i)?.map(i64::from).into()
        } else if *t == Type::INT2 {
            row.try_get::<_, Option<i16>>(i)?.map(i64::from).into()
        } else if *t == Type::FLOAT8 {
            row.try_get::<_, Option<f64>>(i)?.into()
        } else if *t == Type::FLOAT4 {
            row.try_get::<_, Option<f32>>(i)?.map(f64::from).into()
        } else if *t == Type::TEXT || *t == Type::VARCHAR || *t == Type::NAME {
            row.try_get::<_, Option<String>>(i)?.into()
        } else {
            return Err(StoreError::Type(format!("{} ({})", t.name(), col.name())));
        };
        out.push(v);
    }
    Ok(out)
}

impl rusqlite::ToSql for Val {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        use rusqlite::types::{ToSqlOutput, ValueRef};
        Ok(ToSqlOutput::Borrowed(match self {
            Val::Null => ValueRef::Null,
            Val::Int(i) => ValueRef::Integer(*i),
            Val::Real(f) => ValueRef::Real(*f),
            Val::Text(s) => ValueRef::Text(s.as_bytes()),
        }))
    }
}

impl postgres::types::ToSql for Val {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        use postgres::types::{IsNull, Type};
        // PostgreSQL infers each parameter's type from the statement; give
        // it that type (the schema only uses these).
        match self {
            Val::Null => Ok(IsNull::Yes),
            Val::Int(i) if *ty == Type::INT8 => i.to_sql(ty, out),
            Val::Int(i) if *ty == Type::INT4 => i32::try_from(*i)?.to_sql(ty, out),
            Val::Int(i) if *ty == Type::FLOAT8 => (*i as f64).to_sql(ty, out),
            Val::Real(f) if *ty == Type::FLOAT8 => f.to_sql(ty, out),
            Val::Real(f) if *ty == Type::INT8 => (*f as i64).to_sql(ty, out),
            Val::Text(s) => s.to_sql(ty, out),
            Val::Int(i) => i.to_string().to_sql(ty, out),
            Val::Real(f) => f.to_string().to_sql(ty, out),
        }
    }

    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }

    postgres::types::to_sql_checked!();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_bind_by_number_in_any_order() {
        assert_eq!(
            sqlite_params("a = $2 WHERE id = $1"),
            "a = ?2 WHERE id = ?1"
        );
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("p.sqlite");
        let mut s = Store::open(db.to_str().unwrap()).unwrap();
        s.execute(
            "INSERT INTO devices (id, first_seen_ms, last_seen_ms) VALUES ($1, $2, $2)",
            &["d".into(), 1i64.into()],
        )
        .unwrap();
        s.execute(
            "UPDATE devices SET model = $2, labels = $3 WHERE id = $1",
            &["d".into(), "m.onnx".into(), "[]".into()],
        )
        .unwrap();
        let rows = s
            .query(
                "SELECT model, labels FROM devices WHERE id = $1",
                &["d".into()],
            )
            .unwrap();
        assert_eq!(
            rows,
            vec![vec![Val::Text("m.onnx".into()), Val::Text("[]".into())]]
        );
    }

    #[test]
    fn sqlite_migrates_once_and_refuses_a_newer_schema() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("c.sqlite");
        let db = db.to_str().unwrap();
        let mut s = Store::open(db).unwrap();
        s.execute(
            "INSERT INTO devices (id, first_seen_ms, last_seen_ms) VALUES ($1, $2, $2)",
            &["d".into(), 5i64.into()],
        )
        .unwrap();
        drop(s);
        // Opening again keeps the data: no second migration.
        let mut s = Store::open(db).unwrap();
        let rows = s
            .query("SELECT id, last_seen_ms, online FROM devices", &[])
            .unwrap();
        assert_eq!(
            rows,
            vec![vec![Val::Text("d".into()), Val::Int(5), Val::Null]]
        );
        s.execute("UPDATE edgeinfer_schema SET version = 7", &[])
            .unwrap();
        drop(s);
        let e = Store::open(db).err().unwrap();
        assert!(
            matches!(
                e,
                StoreError::Newer {
                    found: 7,
                    supported: 1
                }
            ),
            "{e}"
        );
        assert!(!e.is_transient());
    }
}
