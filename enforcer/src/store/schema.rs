//! The store's tables and its schema version: created on first open, checked on every open.
//!
//! A build refuses a file with a newer version (it cannot know what the newer build's rows
//! mean); an older version is migrated here, one step per version, inside one transaction.

use enforcer_common::maps::{MAX_SEGMENTS, MAX_SIMS_LIMIT};
use rusqlite::{Connection, OptionalExtension as _};

use super::{StoreError, sql};
use crate::ids::{Kind, SimKey};

/// The schema version this build writes (`meta.schema_version`).
pub const SCHEMA_VERSION: u32 = 2;

/// One id table: name, key column, id space and its bound.
pub(super) struct IdTable {
    pub name: &'static str,
    pub key: &'static str,
    pub kind: Kind,
    pub limit: u32,
}

/// SIM indices by IMSI, as [`crate::ids::SimKey`] bits.
pub(super) const SIMS: &IdTable = &IdTable {
    name: "sims",
    key: "imsi_key",
    kind: Kind::Sim,
    limit: MAX_SIMS_LIMIT,
};
/// Segment ids by name.
pub(super) const SEGMENTS: &IdTable = &IdTable {
    name: "segments",
    key: "name",
    kind: Kind::Segment,
    limit: MAX_SEGMENTS,
};
/// Rule ids by identity (`crate::ids::rule_identity`).
pub(super) const RULES: &IdTable = &IdTable {
    name: "rules",
    key: "identity",
    kind: Kind::Rule,
    limit: u32::MAX,
};

/// Version 1, as deployed (kept for the migration test). `WITHOUT ROWID`: each table is one B-tree keyed by its key, with no second
/// index to maintain per insert. `retired` is 0 or 1 (see `crate::ids`).
#[cfg(test)]
pub(super) const V1: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE sims (imsi TEXT PRIMARY KEY, id INTEGER NOT NULL, retired INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE segments (name TEXT PRIMARY KEY, id INTEGER NOT NULL, retired INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE rules (identity TEXT PRIMARY KEY, id INTEGER NOT NULL, retired INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE overrides (imsi TEXT PRIMARY KEY, kind TEXT NOT NULL, source TEXT NOT NULL,
    at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE bindings (imsi TEXT NOT NULL, family INTEGER NOT NULL, address TEXT NOT NULL,
    source TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (imsi, family)) WITHOUT ROWID;
";

/// Version 2: the SIM table is keyed by [`crate::ids::SimKey`] bits, an `INTEGER PRIMARY KEY`,
/// so the key is the rowid: 12 bytes a row rather than 24, rows appended in key order on a
/// fresh store, and read back in key order without sorting. The other tables are as in V1.
const V2: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE sims (imsi_key INTEGER PRIMARY KEY, id INTEGER NOT NULL, retired INTEGER NOT NULL);
CREATE TABLE segments (name TEXT PRIMARY KEY, id INTEGER NOT NULL, retired INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE rules (identity TEXT PRIMARY KEY, id INTEGER NOT NULL, retired INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE overrides (imsi TEXT PRIMARY KEY, kind TEXT NOT NULL, source TEXT NOT NULL,
    at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE bindings (imsi TEXT NOT NULL, family INTEGER NOT NULL, address TEXT NOT NULL,
    source TEXT NOT NULL, at INTEGER NOT NULL, PRIMARY KEY (imsi, family)) WITHOUT ROWID;
";

/// Set the connection up (WAL, `synchronous = NORMAL`), create the schema in a new file and
/// check the version of an existing one.
pub(super) fn prepare(conn: &Connection, path: &str) -> Result<(), StoreError> {
    // `journal_mode` answers with a row, so it is read rather than executed; an in-memory
    // database answers `memory`.
    conn.query_row("PRAGMA journal_mode = WAL", [], |_| Ok(()))
        .map_err(sql(path, "switching to WAL"))?;
    conn.pragma_update(None, "synchronous", "NORMAL")
        .map_err(sql(path, "setting synchronous"))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(sql(path, "setting the busy timeout"))?;
    let has_meta: bool = conn
        .query_row(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'",
            [],
            |_| Ok(()),
        )
        .optional()
        .map_err(sql(path, "reading the schema"))?
        .is_some();
    if !has_meta {
        conn.execute_batch(&format!(
            "BEGIN; {V2} INSERT INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
        ))
        .map_err(sql(path, "creating the schema"))?;
        return Ok(());
    }
    let found: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema_version'",
            [],
            |row| row.get(0),
        )
        .map_err(sql(path, "reading the schema version"))?;
    let found: u32 = found.parse().map_err(|_| StoreError::Corrupt {
        path: path.to_owned(),
        what: format!("schema version `{found}`"),
    })?;
    if found > SCHEMA_VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_owned(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    if found < 2 {
        migrate_v1(conn, path)?;
    }
    Ok(())
}

/// Version 1 to 2, in one transaction (a failure leaves the file at version 1): the SIM rows
/// move from the IMSI text key to [`SimKey`] bits, in key order; everything else stays.
fn migrate_v1(conn: &Connection, path: &str) -> Result<(), StoreError> {
    let tx = conn
        .unchecked_transaction()
        .map_err(sql(path, "starting the migration to schema version 2"))?;
    tx.execute_batch(
        "ALTER TABLE sims RENAME TO sims_v1;
         CREATE TABLE sims (imsi_key INTEGER PRIMARY KEY, id INTEGER NOT NULL,
             retired INTEGER NOT NULL);",
    )
    .map_err(sql(path, "migrating the SIM table to schema version 2"))?;
    let mut rows: Vec<(SimKey, i64, i64)> = Vec::new();
    {
        let mut select = tx
            .prepare("SELECT imsi, id, retired FROM sims_v1")
            .map_err(sql(path, "reading version 1 SIM ids"))?;
        let mut found = select
            .query([])
            .map_err(sql(path, "reading version 1 SIM ids"))?;
        while let Some(row) = found
            .next()
            .map_err(sql(path, "reading version 1 SIM ids"))?
        {
            let (imsi, id, retired): (String, i64, i64) =
                (|| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))()
                    .map_err(sql(path, "reading version 1 SIM ids"))?;
            let key = SimKey::parse(&imsi).ok_or_else(|| StoreError::Corrupt {
                path: path.to_owned(),
                what: format!("IMSI `{imsi}` in the SIM table"),
            })?;
            rows.push((key, id, retired));
        }
    }
    rows.sort_unstable_by_key(|r| r.0);
    {
        let mut insert = tx
            .prepare("INSERT INTO sims (imsi_key, id, retired) VALUES (?1, ?2, ?3)")
            .map_err(sql(path, "writing version 2 SIM ids"))?;
        for (key, id, retired) in &rows {
            insert
                .execute(rusqlite::params![key, id, retired])
                .map_err(sql(path, "writing version 2 SIM ids"))?;
        }
    }
    tx.execute_batch(
        "DROP TABLE sims_v1;
         UPDATE meta SET value = '2' WHERE key = 'schema_version';",
    )
    .map_err(sql(path, "finishing the migration to schema version 2"))?;
    tx.commit()
        .map_err(sql(path, "committing the migration to schema version 2"))
}
