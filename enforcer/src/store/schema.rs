//! The store's tables and its schema version: created on first open, checked on every open.
//!
//! A build refuses a file with a newer version (it cannot know what the newer build's rows
//! mean); an older version is migrated here, one step per version, inside one transaction.

use enforcer_common::maps::{MAX_SEGMENTS, MAX_SIMS_LIMIT};
use rusqlite::{Connection, OptionalExtension as _};

use super::{StoreError, execute_rows, sql};
use crate::ids::{Kind, SimKey};

/// The schema version this build writes (`meta.schema_version`).
pub const SCHEMA_VERSION: u32 = 3;

/// One id table: name, key column, id space and its bound, where retired keys are marked.
pub(super) struct IdTable {
    pub name: &'static str,
    pub key: &'static str,
    pub kind: Kind,
    pub limit: u32,
    pub retired: Retired,
}

/// Where an id table marks its retired keys.
pub(super) enum Retired {
    /// A `retired` column of 0 or 1.
    Column,
    /// This table of the retired keys (column named as the id table's key).
    Table(&'static str),
}

/// SIM indices by IMSI, as [`crate::ids::SimKey`] bits.
pub(super) const SIMS: &IdTable = &IdTable {
    name: "sims",
    key: "imsi_key",
    kind: Kind::Sim,
    limit: MAX_SIMS_LIMIT,
    retired: Retired::Table("retired_sims"),
};
/// Segment ids by name.
pub(super) const SEGMENTS: &IdTable = &IdTable {
    name: "segments",
    key: "name",
    kind: Kind::Segment,
    limit: MAX_SEGMENTS,
    retired: Retired::Column,
};
/// Rule ids by identity (`crate::ids::rule_identity`).
pub(super) const RULES: &IdTable = &IdTable {
    name: "rules",
    key: "identity",
    kind: Kind::Rule,
    limit: u32::MAX,
    retired: Retired::Column,
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

/// Version 2: the SIM table holds [`crate::ids::SimKey`] bits (the IMSI as an integer with its
/// digit count) and ids, about 10 bytes a row rather than 24. It has no index on the key: its
/// rows are appended (a fresh store's in key order, later ones as sorted runs), the daemon reads
/// the whole table once at start and looks keys up in memory, and each key is inserted once, by
/// an allocator that holds every key (a load refuses a key listed twice). Without the index's
/// uniqueness probe per row, a fresh million SIMs are written in half the time. Retired SIMs are
/// listed in a table of their own, so that retiring 1% of a million SIMs, scattered, writes a
/// few pages rather than every page of `sims`. The other tables are as in V1.
const V2_SIMS: &str = "
CREATE TABLE sims (imsi_key INTEGER NOT NULL, id INTEGER NOT NULL);
CREATE TABLE retired_sims (imsi_key INTEGER PRIMARY KEY);
";
/// The other tables: as in V1, but for version 3's two columns of `bindings`, the RADIUS
/// client and Acct-Session-Id of a binding made by accounting (empty for `sim bind`).
const V3: &str = "
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
CREATE TABLE segments (name TEXT PRIMARY KEY, id INTEGER NOT NULL, retired INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE rules (identity TEXT PRIMARY KEY, id INTEGER NOT NULL, retired INTEGER NOT NULL)
    WITHOUT ROWID;
CREATE TABLE overrides (imsi TEXT PRIMARY KEY, kind TEXT NOT NULL, source TEXT NOT NULL,
    at INTEGER NOT NULL) WITHOUT ROWID;
CREATE TABLE bindings (imsi TEXT NOT NULL, family INTEGER NOT NULL, address TEXT NOT NULL,
    source TEXT NOT NULL, at INTEGER NOT NULL, client TEXT NOT NULL DEFAULT '',
    session TEXT NOT NULL DEFAULT '', PRIMARY KEY (imsi, family)) WITHOUT ROWID;
CREATE TABLE imei (imsi TEXT PRIMARY KEY, learned TEXT NOT NULL, seen TEXT NOT NULL,
    mismatch INTEGER NOT NULL, at INTEGER NOT NULL, lock TEXT NOT NULL DEFAULT '')
    WITHOUT ROWID;
CREATE TABLE admitted (imsi TEXT PRIMARY KEY, segment TEXT NOT NULL, apn TEXT NOT NULL,
    client TEXT NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID;
";

/// Version 2 to 3: the RADIUS columns of `bindings`; `imei`: per SIM the IMEI a `learn` lock
/// learned, the last IMEISV seen, whether it broke the lock, and a lock set by command; `admitted`: SIMs the policy
/// does not list that RADIUS accounting admitted into their APN's segment.
const V2_TO_V3: &str = "
ALTER TABLE bindings ADD COLUMN client TEXT NOT NULL DEFAULT '';
ALTER TABLE bindings ADD COLUMN session TEXT NOT NULL DEFAULT '';
CREATE TABLE imei (imsi TEXT PRIMARY KEY, learned TEXT NOT NULL, seen TEXT NOT NULL,
    mismatch INTEGER NOT NULL, at INTEGER NOT NULL, lock TEXT NOT NULL DEFAULT '')
    WITHOUT ROWID;
CREATE TABLE admitted (imsi TEXT PRIMARY KEY, segment TEXT NOT NULL, apn TEXT NOT NULL,
    client TEXT NOT NULL, at INTEGER NOT NULL) WITHOUT ROWID;
UPDATE meta SET value = '3' WHERE key = 'schema_version';
";

/// Set the connection up (WAL, `synchronous = NORMAL`), create the schema in a new file and
/// check the version of an existing one.
pub(super) fn prepare(conn: &Connection, path: &str) -> Result<(), StoreError> {
    // Only a new, empty file takes it (before WAL); an existing file keeps its page size.
    // 1 KiB: every commit writes its changed pages whole to the WAL, and a run-time change (one
    // binding row) touches one page, so the page size is the bytes written per change. At
    // 10,000 changes a second, 4 KiB pages wrote 40 MB/s to the WAL; the checkpoint's fsync of
    // each 100 ms of it took 5-7 ms, during which commands on this 2-vCPU machine waited (70%
    // of the replies slower than 0.8 ms overlapped a checkpoint), and p99 was 1.1-2.6 ms;
    // 1 KiB pages: 0.35-0.53 ms. The price is on a fresh store's first fill: a million SIM
    // ids take about 250 ms rather than 130-190 ms (16 KiB pages were faster still, and four
    // times worse for changes).
    conn.pragma_update(None, "page_size", 1024)
        .map_err(sql(path, "setting the page size"))?;
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
            "BEGIN; {V3} {V2_SIMS} INSERT INTO meta (key, value) VALUES ('schema_version', '{SCHEMA_VERSION}'); COMMIT;"
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
    if found < 3 {
        conn.execute_batch(&format!("BEGIN; {V2_TO_V3} COMMIT;"))
            .map_err(sql(path, "migrating to schema version 3"))?;
    }
    Ok(())
}

/// Version 1 to 2, in one transaction (a failure leaves the file at version 1): the SIM rows
/// move from the IMSI text key to [`SimKey`] bits, in key order; everything else stays.
fn migrate_v1(conn: &Connection, path: &str) -> Result<(), StoreError> {
    let tx = conn
        .unchecked_transaction()
        .map_err(sql(path, "starting the migration to schema version 2"))?;
    tx.execute_batch(&format!("ALTER TABLE sims RENAME TO sims_v1; {V2_SIMS}"))
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
    let retired: Vec<SimKey> = rows.iter().filter(|r| r.2 != 0).map(|r| r.0).collect();
    let what = "writing version 2 SIM ids";
    execute_rows(
        &tx,
        path,
        what,
        "INSERT INTO sims (imsi_key, id)",
        &mut rows.iter(),
        |(key, id, _)| [key as &dyn rusqlite::ToSql, id].into_iter(),
    )?;
    execute_rows(
        &tx,
        path,
        what,
        "INSERT INTO retired_sims (imsi_key)",
        &mut retired.iter(),
        |key| std::iter::once(key as &dyn rusqlite::ToSql),
    )?;
    tx.execute_batch(
        "DROP TABLE sims_v1;
         UPDATE meta SET value = '2' WHERE key = 'schema_version';",
    )
    .map_err(sql(path, "finishing the migration to schema version 2"))?;
    tx.commit()
        .map_err(sql(path, "committing the migration to schema version 2"))
}
