//! The store's tables and its schema version: created on first open, checked on every open.
//!
//! A build refuses a file with a newer version (it cannot know what the newer build's rows
//! mean); an older version is migrated here, one step per version, inside one transaction.

use enforcer_common::maps::{MAX_SEGMENTS, MAX_SIMS_LIMIT};
use rusqlite::{Connection, OptionalExtension as _};

use super::{StoreError, sql};
use crate::ids::Kind;

/// The schema version this build writes (`meta.schema_version`).
pub const SCHEMA_VERSION: u32 = 1;

/// One id table: name, key column, id space and its bound.
pub(super) struct IdTable {
    pub name: &'static str,
    pub key: &'static str,
    pub kind: Kind,
    pub limit: u32,
}

/// SIM indices by IMSI.
pub(super) const SIMS: &IdTable = &IdTable {
    name: "sims",
    key: "imsi",
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

/// Version 1. `WITHOUT ROWID`: each table is one B-tree keyed by its key, with no second
/// index to maintain per insert. `retired` is 0 or 1 (see `crate::ids`).
const V1: &str = "
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
            "BEGIN; {V1} INSERT INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
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
    // Version 1 is the first; migrations from older versions go here.
    Ok(())
}
