//! The daemon's persistent state, in SQLite: the stable id allocations (SIMs, segments, rules;
//! see [`crate::ids`]) and the runtime overrides (a SIM quarantined by an operator or an alert,
//! whatever the policy file says).
//!
//! **Why SQLite:** every change is one transaction, so a crash (or power loss) leaves the store
//! as it was before or after a change, never half-written; a JSON file rewritten whole does not
//! scale to a million SIMs nor survive a crash mid-write. bpfman keeps its programs, links and
//! maps the same way. `rusqlite` with the `bundled` feature builds SQLite in, so neither CI nor
//! a gateway needs a system package.
//!
//! **Order:** the daemon writes the store before the maps ([`Store::assign_ids`], then compile
//! and `Enforcer::apply`), so after a crash the store is never behind the maps: an id in the
//! maps is always in the store.
//!
//! **Speed:** the allocations are read once, at [`Store::open`], one `SELECT` per table, and
//! kept in memory; [`Store::assign_ids`] computes the ids in memory and writes only the rows
//! that changed (new keys, keys retired or back), in one transaction with prepared statements,
//! in key order. SIMs are stored as [`SimKey`] integers (the IMSI with its digit count) in an
//! append-only table without a key index, their retired keys in a small table of their own (see
//! `schema::V2_SIMS`): a fresh store appends its rows and a reopen reads them in key order (or a
//! few sorted runs), straight into the allocator's sorted vectors. The other tables are
//! `WITHOUT ROWID` tables keyed by their text key. An unchanged reload writes nothing.
//!
//! Files: the database (mode 0600) and SQLite's `-wal` and `-shm` beside it (WAL journal, with
//! `synchronous = NORMAL`: durable across a daemon crash; a power loss may lose the last
//! transaction, and the maps with it), in a directory created with mode 0700.

mod schema;

use std::{
    fs::{DirBuilder, OpenOptions},
    os::unix::fs::PermissionsExt as _,
    os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use rusqlite::{Connection, OptionalExtension as _, params};
pub use schema::SCHEMA_VERSION;

use crate::{
    ids::{Allocator, Changes, IdError, Ids, SimKey, Space, SpaceChanges},
    policy::ValidatedPolicy,
};

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The directory or file could not be created or opened.
    #[error(
        "creating or opening the store {path} failed; check that its directory is writable by \
         the daemon"
    )]
    Io {
        /// Database path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// SQLite failed.
    #[error("{what} in the store {path} failed")]
    Sql {
        /// What was being done.
        what: &'static str,
        /// Database path, or `:memory:`.
        path: String,
        /// Cause.
        #[source]
        source: rusqlite::Error,
    },
    /// The file was written by a newer enforcer.
    #[error(
        "the store {path} has schema version {found}, newer than this build's {supported}; run \
         the enforcer that wrote it, or move the file away (its ids and overrides are lost, and \
         counters are then named anew)"
    )]
    NewerSchema {
        /// Database path.
        path: String,
        /// Version in the file.
        found: u32,
        /// Version this build writes.
        supported: u32,
    },
    /// A row holds a value no enforcer writes.
    #[error("the store {path} holds an invalid {what}; move the file away to start afresh")]
    Corrupt {
        /// Database path.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// An id space is full.
    #[error(transparent)]
    Ids(#[from] IdError),
}

/// Kinds of runtime override.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OverrideKind {
    /// The SIM's traffic is dropped, whatever the policy file says.
    Quarantine,
}

impl OverrideKind {
    /// The word stored in the `kind` column.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            OverrideKind::Quarantine => "quarantine",
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "quarantine" => Some(OverrideKind::Quarantine),
            _ => None,
        }
    }
}

/// One runtime override.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Override {
    /// The SIM's IMSI.
    pub imsi: String,
    /// What is overridden.
    pub kind: OverrideKind,
    /// Who set it (`operator:alice`, `alert:scan`), free text.
    pub source: String,
    /// When it was set, Unix seconds.
    pub at: i64,
}

/// An address bound to a SIM at run time (`enforcer sim bind`; later RADIUS accounting), in
/// place of the policy file's address of that family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Binding {
    /// The SIM's IMSI.
    pub imsi: String,
    /// IPv4 /32 or IPv6 /64.
    pub address: ipnetwork::IpNetwork,
    /// Who set it.
    pub source: String,
    /// When it was set, Unix seconds (for RADIUS: the request's Event-Timestamp, else when it
    /// arrived).
    pub at: i64,
    /// The RADIUS client whose accounting made it (`--radius-clients` name); empty for a
    /// binding by command.
    pub client: String,
    /// Its Acct-Session-Id (RFC 2866 §5.5); empty for a binding by command.
    pub session: String,
}

/// A SIM's IMEI state, from its RADIUS accounting (3GPP-IMEISV).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImeiState {
    /// The SIM's IMSI.
    pub imsi: String,
    /// The IMEI (14 digits: TAC and serial number) a `learn` lock learned; empty if none.
    pub learned: String,
    /// The last IMEISV seen.
    pub seen: String,
    /// Whether that device broke the SIM's lock.
    pub mismatch: bool,
    /// When it was seen, Unix seconds.
    pub at: i64,
    /// A lock set by command (`sim imei-lock`, the REST API) in place of the policy's, as
    /// [`crate::policy::ImeiLock::text`] writes it; empty: the policy's.
    pub lock: String,
}

/// A SIM the policy does not list, admitted by RADIUS accounting into its APN's segment
/// (`unknown_imsi = "admit"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admitted {
    /// Its IMSI.
    pub imsi: String,
    /// The segment its APN maps to, by name.
    pub segment: String,
    /// The APN (network identifier) of the session that admitted it.
    pub apn: String,
    /// The RADIUS client that reported it.
    pub client: String,
    /// When, Unix seconds.
    pub at: i64,
}

/// The open store, with the id allocations cached in memory.
pub struct Store {
    conn: Connection,
    /// Database path for messages, or `:memory:`.
    path: String,
    /// Copies the WAL into the database in the background (files only).
    checkpointer: Option<Checkpointer>,
    ids: Allocator,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Open (or create) the store at `path`: its directory is created with mode 0700 and the
    /// file with mode 0600 if they do not exist; the schema is created or checked.
    ///
    /// # Errors
    /// [`StoreError::Io`] if the directory or file cannot be made or opened;
    /// [`StoreError::NewerSchema`] for a file of a newer build; [`StoreError::Sql`] or
    /// [`StoreError::Corrupt`] for a file SQLite cannot read or with invalid rows.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let io = |source| StoreError::Io {
            path: path.to_owned(),
            source,
        };
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(io)?;
        }
        // Create the file ourselves so that it gets mode 0600 (SQLite would use the umask);
        // SQLite gives its `-wal` and `-shm` files the database file's mode.
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(path)
            .map_err(io)?;
        // An existing file keeps its mode on open: tighten it, as it lists every IMSI.
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let name = path.display().to_string();
        let conn = Connection::open(path).map_err(sql(&name, "opening"))?;
        let mut store = Self::init(conn, name)?;
        // Checkpoints off the writer's path (see `Checkpointer`).
        store
            .conn
            .pragma_update(None, "wal_autocheckpoint", 0)
            .map_err(sql(&store.path, "turning automatic checkpoints off"))?;
        store.checkpointer = Some(Checkpointer::start(path.to_owned()));
        Ok(store)
    }

    /// A store in memory, for tests and offline tools: the same schema and behaviour, gone
    /// when dropped.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if SQLite cannot start.
    pub fn open_in_memory() -> Result<Self, StoreError> {
        let name = ":memory:".to_owned();
        let conn = Connection::open_in_memory().map_err(sql(&name, "opening"))?;
        Self::init(conn, name)
    }

    fn init(conn: Connection, path: String) -> Result<Self, StoreError> {
        schema::prepare(&conn, &path)?;
        let ids = Allocator {
            sims: load_space(&conn, &path, schema::SIMS)?,
            segments: load_space(&conn, &path, schema::SEGMENTS)?,
            rules: load_space(&conn, &path, schema::RULES)?,
        };
        Ok(Self {
            conn,
            path,
            ids,
            checkpointer: None,
        })
    }

    /// The stable ids for `policy` (see [`crate::ids`]): known IMSIs, segment names and rules
    /// keep theirs, new ones get free ids, and those no longer in the policy are retired. The
    /// changed rows are written in one transaction before the ids are returned.
    ///
    /// # Errors
    /// [`StoreError::Ids`] when an id space is full; [`StoreError::Sql`] if the write fails.
    /// Either way the store is unchanged.
    pub fn assign_ids(&mut self, policy: &ValidatedPolicy) -> Result<Ids, StoreError> {
        let (ids, changes) = self.ids.plan(policy)?;
        self.write(&changes, false)?;
        self.ids.apply(&changes);
        Ok(ids)
    }

    /// Release every retired id (see [`crate::ids::Allocator::release_retired`]): call it only
    /// once the counters of the retired ids have been read out or reset. Returns what was
    /// released.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the write fails; the store is then unchanged.
    pub fn release_retired(&mut self) -> Result<Changes, StoreError> {
        let mut released = self.ids.clone();
        let changes = released.release_retired();
        self.write(&changes, true)?;
        self.ids = released;
        Ok(changes)
    }

    /// The in-memory copy of the allocations, as stored.
    #[must_use]
    pub fn allocations(&self) -> &Allocator {
        &self.ids
    }

    /// Write one allocation change set in one transaction; with `delete`, retired rows are
    /// deleted (released) rather than marked.
    fn write(&mut self, changes: &Changes, delete: bool) -> Result<(), StoreError> {
        if changes.sims.is_empty() && changes.segments.is_empty() && changes.rules.is_empty() {
            return Ok(());
        }
        let path = self.path.clone();
        let tx = self
            .conn
            .transaction()
            .map_err(sql(&path, "starting a transaction"))?;
        write_space(&tx, &path, schema::SIMS, &changes.sims, delete)?;
        write_space(&tx, &path, schema::SEGMENTS, &changes.segments, delete)?;
        write_space(&tx, &path, schema::RULES, &changes.rules, delete)?;
        tx.commit().map_err(sql(&path, "committing ids"))
    }

    /// Set the override of `imsi` (replacing any it had), stamped with the current time.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the write fails.
    pub fn set_override(
        &mut self,
        imsi: &str,
        kind: OverrideKind,
        source: &str,
    ) -> Result<(), StoreError> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.conn
            .prepare_cached(
                "INSERT INTO overrides (imsi, kind, source, at) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (imsi) DO UPDATE SET kind = ?2, source = ?3, at = ?4",
            )
            .and_then(|mut s| s.execute(params![imsi, kind.name(), source, at]))
            .map_err(sql(&self.path, "setting an override"))?;
        Ok(())
    }

    /// Remove the override of `imsi`; whether it had one.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the write fails.
    pub fn clear_override(&mut self, imsi: &str) -> Result<bool, StoreError> {
        let removed = self
            .conn
            .prepare_cached("DELETE FROM overrides WHERE imsi = ?1")
            .and_then(|mut s| s.execute([imsi]))
            .map_err(sql(&self.path, "clearing an override"))?;
        Ok(removed > 0)
    }

    /// The rows of `query`, which selects (imsi, a text, source, at): the shape of the
    /// overrides and bindings tables.
    fn text_rows(
        &self,
        query: &str,
        what: &'static str,
    ) -> Result<Vec<(String, String, String, i64)>, StoreError> {
        let mut statement = self
            .conn
            .prepare_cached(query)
            .map_err(sql(&self.path, what))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
            })
            .map_err(sql(&self.path, what))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql(&self.path, what))
    }

    /// Every override, by IMSI.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails, [`StoreError::Corrupt`] for an unknown kind.
    pub fn overrides(&self) -> Result<Vec<Override>, StoreError> {
        let rows = self.text_rows(
            "SELECT imsi, kind, source, at FROM overrides ORDER BY imsi",
            "reading overrides",
        )?;
        let mut out = Vec::new();
        for (imsi, kind, source, at) in rows {
            let kind = OverrideKind::from_name(&kind).ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("override kind `{kind}` for IMSI {imsi}"),
            })?;
            out.push(Override {
                imsi,
                kind,
                source,
                at,
            });
        }
        Ok(out)
    }

    /// Bind `address` (an IPv4 /32 or an IPv6 /64, as text) to `imsi` at run time, replacing
    /// its binding of the same family, stamped with the current time.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the write fails.
    pub fn set_binding(
        &mut self,
        imsi: &str,
        address: ipnetwork::IpNetwork,
        source: &str,
    ) -> Result<(), StoreError> {
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX));
        self.put_binding(&Binding {
            imsi: imsi.to_owned(),
            address,
            source: source.to_owned(),
            at,
            client: String::new(),
            session: String::new(),
        })
    }

    /// Write `binding` whole, replacing the SIM's binding of the same family.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the write fails.
    pub fn put_binding(&mut self, binding: &Binding) -> Result<(), StoreError> {
        let family = if binding.address.is_ipv4() { 4 } else { 6 };
        self.conn
            .prepare_cached(
                "INSERT INTO bindings (imsi, family, address, source, at, client, session) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (imsi, family) \
                 DO UPDATE SET address = ?3, source = ?4, at = ?5, client = ?6, session = ?7",
            )
            .and_then(|mut s| {
                s.execute(params![
                    binding.imsi,
                    family,
                    binding.address.to_string(),
                    binding.source,
                    binding.at,
                    binding.client,
                    binding.session
                ])
            })
            .map_err(sql(&self.path, "setting a binding"))?;
        Ok(())
    }

    /// Write a SIM's IMEI state whole.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the write fails.
    pub fn put_imei(&mut self, state: &ImeiState) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO imei (imsi, learned, seen, mismatch, at, lock) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (imsi) DO UPDATE SET learned = ?2, \
                 seen = ?3, mismatch = ?4, at = ?5, lock = ?6",
            )
            .and_then(|mut s| {
                s.execute(params![
                    state.imsi,
                    state.learned,
                    state.seen,
                    i64::from(state.mismatch),
                    state.at,
                    state.lock
                ])
            })
            .map_err(sql(&self.path, "setting an IMEI state"))?;
        Ok(())
    }

    /// Record an admitted SIM (replacing an earlier admission of the IMSI).
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the write fails.
    pub fn put_admitted(&mut self, admitted: &Admitted) -> Result<(), StoreError> {
        self.conn
            .prepare_cached(
                "INSERT INTO admitted (imsi, segment, apn, client, at) VALUES (?1, ?2, ?3, ?4, ?5) \
                 ON CONFLICT (imsi) DO UPDATE SET segment = ?2, apn = ?3, client = ?4, at = ?5",
            )
            .and_then(|mut s| {
                s.execute(params![
                    admitted.imsi,
                    admitted.segment,
                    admitted.apn,
                    admitted.client,
                    admitted.at
                ])
            })
            .map_err(sql(&self.path, "recording an admitted SIM"))?;
        Ok(())
    }

    /// Every admitted SIM, by IMSI.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails.
    pub fn admitted(&self) -> Result<Vec<Admitted>, StoreError> {
        let what = "reading admitted SIMs";
        let mut statement = self
            .conn
            .prepare_cached("SELECT imsi, segment, apn, client, at FROM admitted ORDER BY imsi")
            .map_err(sql(&self.path, what))?;
        let rows = statement
            .query_map([], |row| {
                Ok(Admitted {
                    imsi: row.get(0)?,
                    segment: row.get(1)?,
                    apn: row.get(2)?,
                    client: row.get(3)?,
                    at: row.get(4)?,
                })
            })
            .map_err(sql(&self.path, what))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql(&self.path, what))
    }

    /// Every SIM's IMEI state, by IMSI.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails.
    pub fn imei_states(&self) -> Result<Vec<ImeiState>, StoreError> {
        let what = "reading IMEI states";
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT imsi, learned, seen, mismatch, at, lock FROM imei ORDER BY imsi",
            )
            .map_err(sql(&self.path, what))?;
        let rows = statement
            .query_map([], |row| {
                Ok(ImeiState {
                    imsi: row.get(0)?,
                    learned: row.get(1)?,
                    seen: row.get(2)?,
                    mismatch: row.get::<_, i64>(3)? != 0,
                    at: row.get(4)?,
                    lock: row.get(5)?,
                })
            })
            .map_err(sql(&self.path, what))?;
        rows.collect::<Result<Vec<_>, _>>()
            .map_err(sql(&self.path, what))
    }

    /// Start a transaction that the writes up to [`Store::commit`] belong to: a batch of
    /// RADIUS requests is one commit (one WAL write), not one per request.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if SQLite cannot start it (one is open already).
    pub fn begin(&mut self) -> Result<(), StoreError> {
        self.conn
            .execute_batch("BEGIN IMMEDIATE")
            .map_err(sql(&self.path, "starting a transaction"))
    }

    /// Commit the transaction [`Store::begin`] started; on error it is rolled back.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the commit fails (nothing of the transaction is kept).
    pub fn commit(&mut self) -> Result<(), StoreError> {
        let result = self
            .conn
            .execute_batch("COMMIT")
            .map_err(sql(&self.path, "committing"));
        if result.is_err() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        result
    }

    /// Remove the run-time binding of `imsi` for IPv4 (`v6` false) or IPv6; whether it had one.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the write fails.
    pub fn clear_binding(&mut self, imsi: &str, v6: bool) -> Result<bool, StoreError> {
        let removed = self
            .conn
            .prepare_cached("DELETE FROM bindings WHERE imsi = ?1 AND family = ?2")
            .and_then(|mut s| s.execute(params![imsi, if v6 { 6 } else { 4 }]))
            .map_err(sql(&self.path, "clearing a binding"))?;
        Ok(removed > 0)
    }

    /// Every run-time binding, by IMSI then family.
    ///
    /// # Errors
    /// [`StoreError::Sql`] if the read fails, [`StoreError::Corrupt`] for an unreadable address.
    pub fn bindings(&self) -> Result<Vec<Binding>, StoreError> {
        let what = "reading bindings";
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT imsi, address, source, at, client, session FROM bindings \
                 ORDER BY imsi, family",
            )
            .map_err(sql(&self.path, what))?;
        let rows = statement
            .query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            })
            .map_err(sql(&self.path, what))?;
        let mut out = Vec::new();
        for row in rows {
            let (imsi, address, source, at, client, session) =
                row.map_err(sql(&self.path, what))?;
            let address = address.parse().map_err(|_| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("binding address `{address}` for IMSI {imsi}"),
            })?;
            out.push(Binding {
                imsi,
                address,
                source,
                at,
                client,
                session,
            });
        }
        Ok(out)
    }

    /// The override of one SIM, if any.
    ///
    /// # Errors
    /// As [`Store::overrides`].
    pub fn override_of(&self, imsi: &str) -> Result<Option<Override>, StoreError> {
        let row = self
            .conn
            .prepare_cached("SELECT kind, source, at FROM overrides WHERE imsi = ?1")
            .and_then(|mut s| {
                s.query_row([imsi], |row| {
                    Ok((
                        row.get::<_, String>(0)?,
                        row.get::<_, String>(1)?,
                        row.get::<_, i64>(2)?,
                    ))
                })
                .optional()
            })
            .map_err(sql(&self.path, "reading an override"))?;
        row.map(|(kind, source, at)| {
            let kind = OverrideKind::from_name(&kind).ok_or_else(|| StoreError::Corrupt {
                path: self.path.clone(),
                what: format!("override kind `{kind}` for IMSI {imsi}"),
            })?;
            Ok(Override {
                imsi: imsi.to_owned(),
                kind,
                source,
                at,
            })
        })
        .transpose()
    }
}

/// Apply `overrides` to `policy` before it is compiled: a quarantine override quarantines its
/// SIM whatever the file says. Returns how many of the policy's SIMs were overridden; an
/// override of an IMSI the policy lacks is left in the store for when the SIM comes back.
pub fn apply_overrides(policy: &mut ValidatedPolicy, overrides: &[Override]) -> usize {
    let quarantined: std::collections::HashSet<&str> = overrides
        .iter()
        .filter(|o| o.kind == OverrideKind::Quarantine)
        .map(|o| o.imsi.as_str())
        .collect();
    let mut applied = 0;
    for sim in &mut policy.sims {
        if quarantined.contains(sim.imsi.text().as_str()) {
            sim.state = crate::policy::SimState::Quarantined;
            applied += 1;
        }
    }
    applied
}

fn sql(path: &str, what: &'static str) -> impl FnOnce(rusqlite::Error) -> StoreError {
    let path = path.to_owned();
    move |source| StoreError::Sql { what, path, source }
}

/// Rows per `INSERT` statement: at most 6144 parameters, below the limit of 32766 of the
/// bundled SQLite (3.32 and later); fewer, longer statements than 256 rows gave a few percent.
const INSERT_ROWS: usize = 2048;

/// The SIM tables' key column: [`SimKey::to_bits`] as an `INTEGER`.
impl rusqlite::ToSql for SimKey {
    fn to_sql(&self) -> rusqlite::Result<rusqlite::types::ToSqlOutput<'_>> {
        // Below 2^54 (see `SimKey`), so the cast keeps every bit.
        #[expect(clippy::cast_possible_wrap, reason = "below 2^54")]
        let bits = self.to_bits() as i64;
        Ok(bits.into())
    }
}

impl rusqlite::types::FromSql for SimKey {
    fn column_result(value: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        let bits = value.as_i64()?;
        u64::try_from(bits)
            .ok()
            .and_then(SimKey::from_bits)
            .ok_or(rusqlite::types::FromSqlError::OutOfRange(bits))
    }
}

/// Every row of an id table: one `SELECT` of the table, and one of its retired keys if they
/// are in a table of their own. Rows come in the table's order, which is key order but for
/// the keys added since the first assignment: sorting is then one merge of a few sorted runs.
fn load_space<K>(
    conn: &Connection,
    path: &str,
    table: &schema::IdTable,
) -> Result<Space<K>, StoreError>
where
    K: rusqlite::types::FromSql + Ord + Clone + std::fmt::Display,
{
    let what = "reading ids";
    let (name, key) = (table.name, table.key);
    let retired_column = matches!(table.retired, schema::Retired::Column);
    let query = if retired_column {
        format!("SELECT {key}, id, retired FROM {name}")
    } else {
        format!("SELECT {key}, id FROM {name}")
    };
    let mut statement = conn.prepare(&query).map_err(sql(path, what))?;
    let mut rows = statement.query([]).map_err(sql(path, what))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next().map_err(sql(path, what))? {
        let (key, id, retired) = (|| {
            Ok((
                row.get::<_, K>(0)?,
                row.get::<_, i64>(1)?,
                retired_column && row.get::<_, bool>(2)?,
            ))
        })()
        .map_err(sql(path, what))?;
        let id = u32::try_from(id)
            .ok()
            .filter(|&id| id < table.limit)
            .ok_or_else(|| StoreError::Corrupt {
                path: path.to_owned(),
                what: format!("{} id {id} for `{key}`", table.kind.name()),
            })?;
        out.push((key, id, retired));
    }
    if !out.is_sorted_by(|a, b| a.0 < b.0) {
        // Stable and adaptive: a sorted run per assignment that added keys costs one merge.
        out.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(twice) = out.windows(2).find(|w| w[0].0 == w[1].0) {
            return Err(StoreError::Corrupt {
                path: path.to_owned(),
                what: format!("{} `{}` listed twice", table.kind.name(), twice[0].0),
            });
        }
    }
    if let schema::Retired::Table(retired) = table.retired {
        let mut statement = conn
            .prepare(&format!("SELECT {key} FROM {retired} ORDER BY {key}"))
            .map_err(sql(path, what))?;
        let marks = statement
            .query_map([], |row| row.get::<_, K>(0))
            .map_err(sql(path, what))?;
        // Both in key order: walk the rows once.
        let mut at = 0;
        for mark in marks {
            let mark = mark.map_err(sql(path, what))?;
            while out.get(at).is_some_and(|row| row.0 < mark) {
                at += 1;
            }
            match out.get_mut(at) {
                Some(row) if row.0 == mark => row.2 = true,
                _ => {
                    return Err(StoreError::Corrupt {
                        path: path.to_owned(),
                        what: format!("retired {} `{mark}` without an id", table.kind.name()),
                    });
                }
            }
        }
    }
    Ok(Space::from_rows(out))
}

/// Execute `head` followed by `VALUES` rows of the parameters `params` gives for each of `rows`
/// (as many for every row), many rows per statement: SQLite's cost per executed statement
/// (bind, step, reset) is most of an insert's, so a million rows in statements of
/// [`INSERT_ROWS`] take a fraction of the time.
fn execute_rows<'r, T: 'r, P>(
    tx: &rusqlite::Transaction<'_>,
    path: &str,
    what: &'static str,
    head: &str,
    rows: &mut dyn Iterator<Item = &'r T>,
    params: impl Fn(&'r T) -> P,
) -> Result<(), StoreError>
where
    P: Iterator<Item = &'r dyn rusqlite::ToSql>,
{
    let statement = |rows: usize, width: usize| {
        let row = format!("({})", vec!["?"; width].join(", "));
        format!("{head} VALUES {}", vec![row.as_str(); rows].join(", "))
    };
    let mut full = None;
    let mut values: Vec<&dyn rusqlite::ToSql> = Vec::new();
    loop {
        values.clear();
        let mut count = 0;
        for row in (&mut *rows).take(INSERT_ROWS) {
            values.extend(params(row));
            count += 1;
        }
        if count == 0 {
            return Ok(());
        }
        let width = values.len() / count;
        let last;
        let text = if count == INSERT_ROWS {
            full.get_or_insert_with(|| statement(INSERT_ROWS, width))
        } else {
            last = statement(count, width);
            &last
        };
        let mut insert = tx.prepare_cached(text).map_err(sql(path, what))?;
        insert.execute(values.as_slice()).map_err(sql(path, what))?;
    }
}

/// Execute `statement`, of one parameter, once per key.
fn execute_each<K: rusqlite::ToSql>(
    tx: &rusqlite::Transaction<'_>,
    path: &str,
    what: &'static str,
    statement: &str,
    keys: &[K],
) -> Result<(), StoreError> {
    if keys.is_empty() {
        return Ok(());
    }
    let mut statement = tx.prepare_cached(statement).map_err(sql(path, what))?;
    for k in keys {
        statement.execute([k]).map_err(sql(path, what))?;
    }
    Ok(())
}

/// Write one space's changes with prepared statements, in key order so that the B-trees are
/// filled in order; with `delete`, retired rows are deleted (released) rather than marked.
fn write_space<K: rusqlite::ToSql + Ord>(
    tx: &rusqlite::Transaction<'_>,
    path: &str,
    table: &schema::IdTable,
    changes: &SpaceChanges<K>,
    delete: bool,
) -> Result<(), StoreError> {
    let (name, key) = (table.name, table.key);
    if !changes.added.is_empty() {
        let (columns, retired): (&str, &[&dyn rusqlite::ToSql]) = match table.retired {
            schema::Retired::Column => ("id, retired", &[&false]),
            schema::Retired::Table(_) => ("id", &[]),
        };
        let head = format!("INSERT INTO {name} ({key}, {columns})");
        let insert = |rows: &mut dyn Iterator<Item = &(K, u32)>| -> Result<(), StoreError> {
            execute_rows(tx, path, "adding ids", &head, rows, |(k, id)| {
                [k as &dyn rusqlite::ToSql, id]
                    .into_iter()
                    .chain(retired.iter().copied())
            })
        };
        // In key order, so that the rows are appended as a sorted run (see `load_space`);
        // a fresh space's come sorted.
        if changes.added.is_sorted_by(|a, b| a.0 <= b.0) {
            insert(&mut changes.added.iter())?;
        } else {
            let mut added: Vec<&(K, u32)> = changes.added.iter().collect();
            added.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            insert(&mut added.into_iter())?;
        }
    }
    let mut revived: Vec<&K> = changes.revived.iter().collect();
    revived.sort_unstable();
    let mut retired: Vec<&K> = changes.retired.iter().collect();
    retired.sort_unstable();
    match table.retired {
        schema::Retired::Column => {
            let retire = if delete {
                format!("DELETE FROM {name} WHERE {key} = ?1")
            } else {
                format!("UPDATE {name} SET retired = 1 WHERE {key} = ?1")
            };
            execute_each(
                tx,
                path,
                "reviving ids",
                &format!("UPDATE {name} SET retired = 0 WHERE {key} = ?1"),
                &revived,
            )?;
            execute_each(tx, path, "retiring ids", &retire, &retired)
        }
        // Retired keys in a table of their own: retiring or reviving a few scattered keys
        // writes a few pages of that small table, not one page of the big one per key.
        schema::Retired::Table(marks) => {
            let unmark = format!("DELETE FROM {marks} WHERE {key} = ?1");
            execute_each(tx, path, "reviving ids", &unmark, &revived)?;
            if delete {
                // `name` has no index on the key (see the schema): one pass over it for every
                // released key rather than a scan per key. A release releases every retired
                // key, so the marks are exactly the keys to delete.
                if !retired.is_empty() {
                    tx.execute(
                        &format!("DELETE FROM {name} WHERE {key} IN (SELECT {key} FROM {marks})"),
                        [],
                    )
                    .map_err(sql(path, "releasing ids"))?;
                }
                execute_each(tx, path, "releasing ids", &unmark, &retired)
            } else {
                execute_rows(
                    tx,
                    path,
                    "retiring ids",
                    &format!("INSERT INTO {marks} ({key})"),
                    &mut retired.into_iter(),
                    |k| std::iter::once(k as &dyn rusqlite::ToSql),
                )
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// How often the background checkpoint runs.
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

/// A thread with a connection of its own that copies the WAL into the database every
/// [`CHECKPOINT_EVERY`] (`PRAGMA wal_checkpoint(PASSIVE)`, which waits for no reader or
/// writer). SQLite's automatic checkpoint ran inside the commit that crossed 1,000 pages: at
/// 10,000 run-time changes a second that was a 10 ms stall every tenth of a second for the
/// commands queued behind it. Here the writer only appends to the WAL, and the WAL is reset
/// once a checkpoint has copied it all. Durability is unchanged: a commit is durable once it is
/// in the WAL (`synchronous = NORMAL`), whenever it is checkpointed. Stops, after a last
/// checkpoint, when the store is dropped.
struct Checkpointer {
    stop: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    fn start(path: PathBuf) -> Self {
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("enforcer-ckpt".into())
            .spawn(move || {
                let conn = match Connection::open(&path) {
                    Ok(conn) => conn,
                    Err(err) => {
                        tracing::error!(
                            error = %err,
                            store = %path.display(),
                            "Cannot open the store for checkpoints; its WAL grows until the next \
                             start."
                        );
                        return;
                    }
                };
                let _ = conn.busy_timeout(std::time::Duration::from_secs(1));
                let _ = conn.pragma_update(None, "cache_size", -256);
                let checkpoint = || {
                    if let Err(err) =
                        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    {
                        tracing::warn!(error = %err, store = %path.display(), "Checkpoint failed.");
                    }
                };
                while let Err(std::sync::mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    checkpoint();
                }
                checkpoint();
            })
            .ok();
        Self {
            stop: Some(stop),
            thread,
        }
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
