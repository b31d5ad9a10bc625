//! The collecting side: `collect` (MQTT → SQLite or PostgreSQL), `query`,
//! `report`, `dashboard` and `fleet-sim`. docs/collect.md describes the
//! schema and how collectors share a fleet.

mod chart;
pub mod dashboard;
mod history;
pub mod ingest;
pub mod query;
pub mod report;
mod rows;
pub mod sim;
pub mod store;

use super::HostError;
use store::{Store, StoreError};

/// The error for `db`, with any password in it hidden.
pub fn store_error(db: &str, error: StoreError) -> HostError {
    HostError::Store {
        db: ingest::display_db(db),
        error,
    }
}

/// Opens a database that a collector has written: an SQLite file that
/// does not exist is a mistake in `--db`, not a new empty fleet.
pub fn open_existing(db: &str) -> Result<Store, HostError> {
    if !store::is_postgres(db) && !std::path::Path::new(db).is_file() {
        return Err(HostError::Input {
            file: db.into(),
            message: "no such database: expected an SQLite file written by `edgeinfer-host collect`, or a postgres:// URL".into(),
        });
    }
    Store::open(db).map_err(|e| store_error(db, e))
}

/// What the dashboard shows, read from `db` at each call. A database that
/// went away (restarted, say) is reopened on the next call rather than
/// failing every call after.
pub fn fleet_snapshots(
    db: &str,
) -> Result<Box<dyn FnMut() -> Result<serde_json::Value, String> + Send>, HostError> {
    let mut store = Some(open_existing(db)?);
    let db = db.to_string();
    Ok(Box::new(move || {
        let s = match store.as_mut() {
            Some(s) => s,
            None => store.insert(Store::open(&db).map_err(|e| e.to_string())?),
        };
        let now = crate::clock::now_ms() as i64;
        query::fleet_snapshot(s, now).map_err(|e| {
            store = None;
            e.to_string()
        })
    }))
}
