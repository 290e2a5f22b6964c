//! The only module that talks to the kernel: loads the XDP object, sizes and pins its maps,
//! writes a [`MapImage`] make-before-break, attaches to interfaces and runs test packets.

use std::{
    os::fd::{AsFd as _, AsRawFd as _},
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use aya::{
    Ebpf, EbpfLoader, Pod,
    maps::{Array, DevMapHash, HashMap, LpmTrie, Map, MapData, lpm_trie::Key},
    programs::{ProgramError, TestRun, TestRunOptions, Xdp, XdpMode},
};
use enforcer_common::maps::{
    Config, FORWARD_OUTCOMES, GENERATIONS, IFACE_XDP_FORWARD, IfaceEntry, MAX_SEGMENTS, NetEntry,
    PORT_BITS_ANY, PORT_WORDS, PROTO_ANY, PortRuleKey, RULE_BITS_PORTS, RULE_BITS_PROTO,
    RULE_KEY_LEN, RuleEntry, RuleKey, SIM_NONE, SIM_QUARANTINED, SegmentEntry, SimBinding,
    SimKeyV4, SimKeyV6, names, ports_used_index, segment_index,
};
use enforcer_common::scan::ScanArgs;

pub use crate::capacity::Capacity;
use crate::{
    batch,
    capacity::{CapacityError, Peak},
    compile::MapImage,
    held::{Held, Plan},
    sim_table::SimTable,
};

/// The XDP object built by `build.rs`.
static PROGRAM: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/enforcer"));

/// The XDP object, for tools that load its benchmark programs with their own globals.
#[must_use]
pub fn object() -> &'static [u8] {
    PROGRAM
}
/// Name of the XDP function in the object.
const PROGRAM_NAME: &str = "enforcer";
/// Name of the empty XDP program in the object, the benchmarks' floor.
const BASELINE_NAME: &str = "xdp_pass";
/// The session scan's iterator program.
const SCAN_NAME: &str = "session_scan";

/// A benchmark's variant of the enforcing program, in the same object, over the same maps
/// (never attached by the daemon): [`Enforcer::variant_test_run`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Variant {
    /// `enforcer_unaccounted`: the same pipeline without its account stage (no per-segment,
    /// per-rule or per-SIM counters), so that the stage's cost is the difference.
    Unaccounted,
    /// `enforcer_recheck`: the policy epoch raised before every run, so that every run is a
    /// packet of a session checked under an older epoch (revalidated).
    Recheck,
    /// `enforcer_first`: the frame's session removed before every run (untagged IPv4 without
    /// options), so that every run is the first packet of its session.
    FirstPacket,
}

impl Variant {
    /// The program's name in the object.
    #[must_use]
    pub const fn program(self) -> &'static str {
        match self {
            Variant::Unaccounted => "enforcer_unaccounted",
            Variant::Recheck => "enforcer_recheck",
            Variant::FirstPacket => "enforcer_first",
        }
    }
}

/// Errors of loading, filling and attaching.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The object or a map could not be created.
    #[error(
        "loading the eBPF object failed; run as root (CAP_BPF, CAP_NET_ADMIN) on a kernel with \
         BPF and BTF, and check that {pin_dir} is on a bpffs mount"
    )]
    Object {
        /// Pin directory in use, or `(no pins)`.
        pin_dir: String,
        /// Cause.
        #[source]
        source: Box<aya::EbpfError>,
    },
    /// The verifier rejected the program.
    #[error("the kernel verifier rejected the XDP program; end of its log:\n{log_tail}")]
    Verifier {
        /// Last lines of the verifier log.
        log_tail: String,
        /// Cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// Some other program operation failed.
    #[error("{what} failed")]
    Program {
        /// What was being done.
        what: String,
        /// Cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map operation failed.
    #[error("{what} on map {map} failed; is the map large enough (see --max-sims)?")]
    Map {
        /// Map name.
        map: &'static str,
        /// What was being done.
        what: &'static str,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Attaching failed.
    #[error("attaching XDP to `{iface}` in {mode:?} mode failed{hint}")]
    Attach {
        /// Interface name.
        iface: String,
        /// Mode requested.
        mode: XdpMode,
        /// What to try, from [`crate::xdp_holder::attach_hint`] (empty or `; …`).
        hint: String,
        /// Cause.
        #[source]
        source: Box<ProgramError>,
    },
    /// A map pinned by an earlier run does not fit what this build and capacity need.
    #[error(
        "the map {map} pinned in {dir} does not fit this start: {what}. It was made by another \
         build or with smaller capacities; start with the capacities it was made with, or stop \
         every enforcer using {dir} and remove that directory (its counters are lost)"
    )]
    PinMismatch {
        /// Map name.
        map: &'static str,
        /// Pin directory.
        dir: String,
        /// What differs.
        what: String,
    },
    /// A map of an earlier layout is pinned: an older enforcer made the directory, and its
    /// program may still be attached and reading that map.
    #[error(
        "{dir} holds the map {map}, which this build no longer uses: an older enforcer made it. \
         Its program cannot be replaced in place; run `enforcer detach --pin-dir {dir}` (traffic \
         passes unenforced until the new daemon has started) and start again"
    )]
    OldLayout {
        /// The retired map's name.
        map: &'static str,
        /// Pin directory.
        dir: String,
    },
    /// The interface does not exist.
    #[error("no network interface named `{0}`; check `ip link`")]
    NoSuchInterface(String),
    /// The image does not fit the maps as sized.
    #[error(transparent)]
    Capacity(#[from] CapacityError),
}

fn map_err(map: &'static str, what: &'static str) -> impl FnOnce(aya::maps::MapError) -> LoadError {
    move |source| LoadError::Map {
        map,
        what,
        source: std::io::Error::other(source),
    }
}

/// The maps whose size is chosen at load time, with the size `capacity` gives them; every other
/// map keeps the size written in the object.
fn sized_maps(capacity: &Capacity) -> [(&'static str, u32); 9] {
    [
        (names::SIM_V4, capacity.sim_v4),
        (names::SIM_V6, capacity.sim_v6),
        (names::SIMS, capacity.sims),
        (names::NET_V4, capacity.nets_v4),
        (names::NET_V6, capacity.nets_v6),
        (names::RULES, capacity.rule_entries),
        (names::PORT_RULES, capacity.port_rules),
        (names::RULE_STATS, capacity.rules),
        (names::SESSIONS, capacity.sessions),
    ]
}

/// Check every map already pinned in `dir` against the one this build would create with
/// `capacity` (from the object's own map definitions): the same map type, key size, value size
/// and flags, and at least as many entries. A pin from an older layout or a smaller run is
/// refused before anything is loaded, rather than reused to fail half-way through a policy.
/// A layout change that keeps the sizes (fields reordered) is caught by the map's name: the
/// convention is that any key or value change renames the map (`RULES_V2`, `VERDICTS_V2`), so
/// an old pin is never opened under the new layout.
///
/// # Errors
/// [`LoadError::OldLayout`] if a map of an earlier layout is pinned there;
/// [`LoadError::PinMismatch`] naming the map and what differs.
pub fn check_pins(dir: &Path, capacity: &Capacity) -> Result<(), LoadError> {
    let object = aya_obj::Object::parse(PROGRAM).map_err(|source| LoadError::Object {
        pin_dir: dir.display().to_string(),
        source: Box::new(aya::EbpfError::ParseError(source)),
    })?;
    if let Some(map) = names::RETIRED
        .into_iter()
        .find(|name| dir.join(name).exists())
    {
        return Err(LoadError::OldLayout {
            map,
            dir: dir.display().to_string(),
        });
    }
    let sized = sized_maps(capacity);
    for name in names::ALL {
        let path = dir.join(name);
        if !path.exists() {
            continue;
        }
        let Some(def) = object.maps.get(name) else {
            continue;
        };
        let needed = sized
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(def.max_entries(), |&(_, entries)| entries);
        let mismatch = |what: String| LoadError::PinMismatch {
            map: name,
            dir: dir.display().to_string(),
            what,
        };
        let info = aya::maps::MapData::from_pin(&path)
            .and_then(|map| map.info())
            .map_err(|e| mismatch(format!("it cannot be read ({e})")))?;
        let pinned_type = info.map_type().map_or(u32::MAX, |t| t as u32);
        if pinned_type != def.map_type() {
            return Err(mismatch(format!(
                "it is a map of type {pinned_type}, this build needs type {}",
                def.map_type()
            )));
        }
        if (info.key_size(), info.value_size()) != (def.key_size(), def.value_size()) {
            return Err(mismatch(format!(
                "its keys and values are {} and {} bytes, this build needs {} and {}",
                info.key_size(),
                info.value_size(),
                def.key_size(),
                def.value_size()
            )));
        }
        if info.map_flags() != def.map_flags() {
            return Err(mismatch(format!(
                "its flags are {:#x}, this build needs {:#x}",
                info.map_flags(),
                def.map_flags()
            )));
        }
        if info.max_entries() < needed {
            return Err(mismatch(format!(
                "it holds {} entries, this start needs {needed}",
                info.max_entries()
            )));
        }
    }
    Ok(())
}

/// A loaded (not necessarily attached) enforcer program and its maps.
pub struct Enforcer {
    ebpf: Ebpf,
    capacity: Capacity,
    pin_dir: Option<PathBuf>,
    /// What the policy maps hold; `None` until read from maps adopted from an earlier process,
    /// or after a failed write.
    held: Option<Held>,
    /// `SIMS`, memory-mapped: SIM policies are written and counters read through it.
    sims: std::sync::Arc<SimTable>,
    /// `CONFIG.generation` as this process last read or wrote it.
    active: std::cell::Cell<Option<u8>>,
    /// `CONFIG.epoch` as this process last read or wrote it.
    epoch: std::cell::Cell<Option<u32>>,
    /// The session scan's iterator over `SESSIONS` (`None` where it could not be loaded:
    /// scans then read the whole table in batches and filter it here).
    scan: Result<crate::map_iter::MapIter, String>,
    /// The program's clock calibration.
    clock: crate::clock::Calibration,
}

/// How long [`Enforcer::apply`] waits after flipping the generation before it deletes the old
/// generation's bindings and returns (after which the next apply may rewrite the old
/// generation). A program run reads `CONFIG.generation` once and is one RCU read-side critical
/// section (the driver's NAPI poll, or `BPF_PROG_TEST_RUN`, holds `rcu_read_lock`) that takes
/// well under a microsecond per packet (BENCHMARKS.md), so every run that saw the old
/// generation has ended long before this. Userspace has no `synchronize_rcu`; 50 ms leaves room
/// for a reader preempted on a loaded machine (a preemptible RCU read side can be), at a cost
/// only reloads pay. `apply` takes `&mut self`, so the next apply cannot start sooner.
pub const GRACE: Duration = Duration::from_millis(50);

/// One entry of `SESSIONS`.
pub type SessionEntry = (
    enforcer_common::session::SessionKey,
    enforcer_common::session::Session,
);

/// What one [`Enforcer::sweep_sessions`] pass found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SessionSweep {
    /// How many sessions stay.
    pub live_count: usize,
    /// Sessions that stay among those the scan picked (`enforcer_common::scan::wanted`), as
    /// read; only when asked for.
    pub live: Vec<(
        enforcer_common::session::SessionKey,
        enforcer_common::session::Session,
    )>,
    /// Sessions removed, idle past their timeout, with their counters at the removal and
    /// whether they had closed (TCP FIN both ways or RST) rather than gone idle.
    pub expired: Vec<(
        enforcer_common::session::SessionKey,
        enforcer_common::session::Session,
        bool,
    )>,
}

/// What [`Enforcer::apply`] changed, for the daemon to log and report.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyReport {
    /// The generation now active.
    pub generation: u8,
    /// SIM indices in the new policy and not in the previous one.
    pub sims_added: usize,
    /// SIM indices in the previous policy and not in the new one.
    pub sims_removed: usize,
    /// SIM indices in both whose segment, flags, tiers or addresses changed.
    pub sims_changed: usize,
    /// Rule entries (`RULES_V2` and `PORT_RULES`) that differ between the two policies.
    pub rule_entries_changed: usize,
    /// Map entries written or deleted before the flip: what differed in the target generation.
    pub entries_written: usize,
    /// Bindings deleted after the flip (addresses only the previous policy had).
    pub bindings_deleted: usize,
    /// Time from the start of the apply to the flip (diff and writes), without the grace wait.
    pub write_time: Duration,
}

impl Enforcer {
    /// Load the object with maps sized by `capacity`; with `pin_dir`, every map is pinned there
    /// (and reused if already pinned, so counters survive a daemon restart).
    pub fn load(capacity: Capacity, pin_dir: Option<&Path>) -> Result<Self, LoadError> {
        if let Some(dir) = pin_dir {
            check_pins(dir, &capacity)?;
        }
        // Maps pinned by an earlier process hold a policy this one has not seen.
        let adopted = pin_dir.is_some_and(|dir| names::ALL.iter().any(|n| dir.join(n).exists()));
        let mut loader = EbpfLoader::new();
        for (name, entries) in sized_maps(&capacity) {
            loader.map_max_entries(name, entries);
        }
        if let Some(dir) = pin_dir {
            for name in names::ALL {
                loader.map_pin_path(name, dir.join(name));
            }
        }
        let mut ebpf = loader.load(PROGRAM).map_err(|source| LoadError::Object {
            pin_dir: pin_dir.map_or_else(|| "(no pins)".to_owned(), |d| d.display().to_string()),
            source: Box::new(source),
        })?;
        let program = xdp(&mut ebpf)?;
        program.load().map_err(|source| match source {
            ProgramError::LoadError {
                ref verifier_log, ..
            } => {
                let log = verifier_log.to_string();
                let tail: Vec<&str> = log.lines().rev().take(25).collect();
                LoadError::Verifier {
                    log_tail: tail.into_iter().rev().collect::<Vec<_>>().join("\n"),
                    source: Box::new(source),
                }
            }
            source => LoadError::Program {
                what: "loading the XDP program".into(),
                source: Box::new(source),
            },
        })?;
        let scan = load_scan(&mut ebpf);
        if let Err(err) = &scan {
            tracing::warn!(
                error = %err,
                "The session scan's BPF iterator could not be loaded; session sweeps read the \
                 whole table instead (slower at millions of sessions)."
            );
        }
        let clock = calibrate_clock(&mut ebpf)?;
        let sims = match ebpf.map(names::SIMS) {
            Some(Map::Array(data)) => {
                std::sync::Arc::new(SimTable::map(data).map_err(|source| LoadError::Map {
                    map: names::SIMS,
                    what: "memory-mapping",
                    source,
                })?)
            }
            _ => {
                return Err(LoadError::Map {
                    map: names::SIMS,
                    what: "opening",
                    source: std::io::Error::other("missing from the object, or not an array"),
                });
            }
        };
        Ok(Self {
            ebpf,
            capacity,
            pin_dir: pin_dir.map(Path::to_owned),
            held: (!adopted).then(Held::empty),
            sims,
            active: std::cell::Cell::new(None),
            epoch: std::cell::Cell::new(None),
            scan,
            clock,
        })
    }

    /// The program's clock calibration: the kernel's `HZ` and how jiffies map to
    /// `CLOCK_MONOTONIC` ns (`crate::clock`).
    #[must_use]
    pub fn clock(&self) -> crate::clock::Calibration {
        self.clock
    }

    /// The XDP program (loaded), for attaching through pinned links (`crate::links`).
    pub fn program(&mut self) -> Result<&mut Xdp, LoadError> {
        xdp(&mut self.ebpf)
    }

    /// Map sizes in use.
    #[must_use]
    pub fn capacity(&self) -> Capacity {
        self.capacity
    }

    /// Instructions the verifier processed when loading the program.
    pub fn verified_instructions(&mut self) -> Option<u32> {
        let program = xdp(&mut self.ebpf).ok()?;
        program.info().ok()?.verified_instruction_count()
    }

    /// The map named `name` (one of `enforcer_common::maps::names`).
    pub fn map(&self, name: &str) -> Option<&Map> {
        self.ebpf.map(name)
    }

    /// Turn the program's deny events on or off (`EVENTS_OFF`): for benchmarks that measure
    /// the program without them.
    ///
    /// # Errors
    /// [`LoadError::Map`] if the switch cannot be written.
    pub fn set_deny_events(&mut self, on: bool) -> Result<(), LoadError> {
        let map = self.map_mut(names::EVENTS_OFF)?;
        let mut array: aya::maps::Array<_, u32> =
            aya::maps::Array::try_from(map).map_err(|e| LoadError::Map {
                map: names::EVENTS_OFF,
                what: "opening",
                source: std::io::Error::other(e.to_string()),
            })?;
        array.set(0, u32::from(!on), 0).map_err(|e| LoadError::Map {
            map: names::EVENTS_OFF,
            what: "writing",
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// The deny events waiting in `DENY_EVENTS`, oldest first (tests; the daemon reads the
    /// pinned ring buffer from a thread of its own).
    ///
    /// # Errors
    /// [`LoadError::Map`] if the ring buffer cannot be opened.
    pub fn drain_deny_events(
        &mut self,
    ) -> Result<Vec<enforcer_common::maps::DenyEvent>, LoadError> {
        let map = self.map_mut(names::DENY_EVENTS)?;
        let mut ring = aya::maps::RingBuf::try_from(map).map_err(|e| LoadError::Map {
            map: names::DENY_EVENTS,
            what: "opening",
            source: std::io::Error::other(e.to_string()),
        })?;
        Ok(crate::telemetry::events::drain(&mut ring))
    }

    /// Kernel memory of every map, as the kernel accounts it (`memlock` in the map's fdinfo),
    /// in bytes, by map name.
    pub fn map_memory(&self) -> Vec<(&'static str, u64)> {
        names::ALL
            .iter()
            .filter_map(|&name| {
                let fd = self.map_data(name).ok()?.fd().as_fd().as_raw_fd();
                let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}")).ok()?;
                let bytes = info
                    .lines()
                    .find_map(|line| line.strip_prefix("memlock:"))
                    .and_then(|value| value.trim().parse().ok())?;
                Some((name, bytes))
            })
            .collect()
    }

    /// The active policy generation.
    pub fn generation(&self) -> Result<u8, LoadError> {
        // Only this process flips it (one daemon per pin directory), so after the first read
        // the value it last wrote is the value in the map: a run-time bind needs no syscall.
        if let Some(active) = self.active.get() {
            return Ok(active);
        }
        Ok(self.read_config()?.0)
    }

    /// The policy epoch (`CONFIG.epoch`): sessions checked under another are checked again.
    pub fn epoch(&self) -> Result<u32, LoadError> {
        if let Some(epoch) = self.epoch.get() {
            return Ok(epoch);
        }
        Ok(self.read_config()?.1)
    }

    fn read_config(&self) -> Result<(u8, u32), LoadError> {
        let config: Array<&MapData, Config> = Array::try_from(self.map_ref(names::CONFIG)?)
            .map_err(map_err(names::CONFIG, "opening"))?;
        let config = config
            .get(&0, 0)
            .map_err(map_err(names::CONFIG, "reading"))?;
        let active = (config.generation & 1) as u8;
        self.active.set(Some(active));
        self.epoch.set(Some(config.epoch));
        Ok((active, config.epoch))
    }

    /// Write `CONFIG`: `generation` active, and the next epoch, so that every session is
    /// checked against what the maps say now on its next packet. One 8-byte array update: a
    /// program run sees the old value or the new one.
    ///
    /// # Errors
    /// [`LoadError::Map`] if the write fails (then whether it landed is unknown, and both
    /// values are read from the map next time).
    fn write_config(&mut self, generation: u8, what: &'static str) -> Result<u32, LoadError> {
        let epoch = self.epoch()?.wrapping_add(1);
        let mut config: Array<&mut MapData, Config> = Array::try_from(self.map_mut(names::CONFIG)?)
            .map_err(map_err(names::CONFIG, "opening"))?;
        let written = config.set(
            0,
            Config {
                generation: u32::from(generation),
                epoch,
            },
            0,
        );
        if let Err(error) = written {
            self.active.set(None);
            self.epoch.set(None);
            return Err(map_err(names::CONFIG, what)(error));
        }
        self.active.set(Some(generation));
        self.epoch.set(Some(epoch));
        Ok(epoch)
    }

    /// Write `sessions` into `SESSIONS` as the program would have (benchmarks and tests: a
    /// table of two million sessions is not opened packet by packet).
    ///
    /// # Errors
    /// [`LoadError::Map`] if the write fails (the table full, for one).
    pub fn insert_sessions(
        &self,
        sessions: &[(
            enforcer_common::session::SessionKey,
            enforcer_common::session::Session,
        )],
    ) -> Result<(), LoadError> {
        batch::update(self.map_data(names::SESSIONS)?.fd(), sessions).map_err(|source| {
            LoadError::Map {
                map: names::SESSIONS,
                what: "writing",
                source,
            }
        })
    }

    /// Every live session (`SESSIONS`), read in batches of 16,384 entries a syscall.
    ///
    /// # Errors
    /// [`LoadError::Map`] if `SESSIONS` cannot be read.
    pub fn sessions(
        &self,
    ) -> Result<
        Vec<(
            enforcer_common::session::SessionKey,
            enforcer_common::session::Session,
        )>,
        LoadError,
    > {
        batch::lookup_hash(self.map_data(names::SESSIONS)?.fd()).map_err(|source| LoadError::Map {
            map: names::SESSIONS,
            what: "reading",
            source,
        })
    }

    /// Remove the sessions idle longer than `timeouts` allow for their state, as of `now_ns`
    /// (`CLOCK_MONOTONIC_COARSE`, the clock the program stamps them with); with `keep_live`,
    /// return every session that stays. See [`Enforcer::sweep_sessions`].
    ///
    /// # Errors
    /// As [`Enforcer::sweep_sessions`].
    pub fn expire_sessions(
        &self,
        now_ns: u64,
        timeouts: &enforcer_common::session::Timeouts,
        keep_live: bool,
    ) -> Result<SessionSweep, LoadError> {
        self.sweep_sessions(
            &ScanArgs {
                now_ns,
                since_ns: now_ns,
                all: u64::from(keep_live),
                timeouts: *timeouts,
                ..ScanArgs::default()
            },
            keep_live,
        )
    }

    /// One session sweep under `args` (`enforcer_common::scan`): the scan copies out the
    /// sessions [`wanted`](enforcer_common::scan::wanted) picks, through the BPF iterator where
    /// it loaded (else a batch read of the whole table, filtered here); each one idle past its
    /// timeout as of `args.now_ns` is removed with lookup-and-delete, which returns its counters
    /// as of the removal (for the flow export: nothing counted before it is lost). A session
    /// the program removed meanwhile (revoked) is left out. A session that sends again between
    /// the scan and the removal loses its entry: its device's next packet that may open one (a
    /// SYN, any UDP) opens it again; mid-connection TCP does not (as after any expiry), which
    /// the timeouts, far above what a live flow stays idle, make rare. Returns how many
    /// sessions stay, the picked ones that stay (with `keep_live`) and those removed.
    ///
    /// # Errors
    /// [`LoadError::Map`] if `SESSIONS` cannot be scanned; a removal that fails is logged and
    /// the rest left for the next sweep.
    pub fn sweep_sessions(
        &self,
        args: &ScanArgs,
        keep_live: bool,
    ) -> Result<SessionSweep, LoadError> {
        let mut sweep = SessionSweep::default();
        let fd = self.map_data(names::SESSIONS)?.fd();
        let mut removing = true;
        let (picked, visited) = self.scan_sessions(args)?;
        let mut removed = 0usize;
        for (key, session) in picked {
            if removing
                && enforcer_common::scan::expired(args.now_ns, &args.timeouts, key.proto, &session)
            {
                // SAFETY: `SESSIONS` is a hash map of `SessionKey` keys and `Session` values.
                match unsafe {
                    batch::lookup_and_delete::<_, enforcer_common::session::Session>(fd, &key)
                } {
                    Ok(Some(last)) => {
                        let closed = enforcer_common::session::SessionState::from_u8(last.state)
                            == enforcer_common::session::SessionState::Closed;
                        sweep.expired.push((key, last, closed));
                        removed += 1;
                        continue;
                    }
                    // The program removed it meanwhile (revoked), or the iterator showed it
                    // twice and it went at the first: either way not live, and counted in
                    // `visited` as often as it was shown.
                    Ok(None) => {
                        removed += 1;
                        continue;
                    }
                    Err(err) => {
                        // Keep what this pass removed (with its counters) and leave the rest
                        // for the next sweep.
                        tracing::warn!(error = %err, "Removing expired sessions failed; retrying at the next sweep.");
                        removing = false;
                    }
                }
            }
            if keep_live {
                sweep.live.push((key, session));
            }
        }
        sweep.live_count = visited.saturating_sub(removed);
        Ok(sweep)
    }

    /// Whether session scans run in the kernel (`Ok`: the iterator loaded) or as batch reads
    /// of the whole table (`Err`: why the iterator did not load).
    ///
    /// # Errors
    /// Why the iterator could not be loaded or attached.
    pub fn scans_in_kernel(&self) -> Result<(), &str> {
        self.scan.as_ref().map(|_| ()).map_err(String::as_str)
    }

    /// The sessions `args` picks (`enforcer_common::scan::wanted`), in the table's order, and
    /// how many the table held: through the iterator where it loaded, else as
    /// [`Enforcer::scan_sessions_batched`]. A scan of every entry (`args.all`) is always a
    /// batch read: the kernel resumes an iterator between two reads of its output at a position
    /// inside a bucket, so a session the program removes or adds meanwhile may make it skip a
    /// neighbour or show one twice, and a full scan must see every session that stays (the
    /// meter takes a session it does not see as gone). A partial scan that skips a session
    /// that changed reads it when it changes again or at the next full scan: its counts are
    /// exported late (in a record that ends early and another that starts late), never lost
    /// or twice; one shown twice is read twice, with the same counters.
    ///
    /// # Errors
    /// [`LoadError::Map`] if `SESSIONS` or `SCAN_ARGS` cannot be read or written.
    pub fn scan_sessions(&self, args: &ScanArgs) -> Result<(Vec<SessionEntry>, usize), LoadError> {
        use enforcer_common::session::{Session, SessionKey};
        let Ok(scan) = &self.scan else {
            return self.scan_sessions_batched(args);
        };
        if args.all != 0 {
            return self.scan_sessions_batched(args);
        }
        let args_fd = self.map_data(names::SCAN_ARGS)?.fd();
        let failed = |what: &'static str| {
            move |source| LoadError::Map {
                map: names::SCAN_ARGS,
                what,
                source,
            }
        };
        let asked = ScanArgs {
            visited: 0,
            ..*args
        };
        batch::update(args_fd, &[(0u32, asked)]).map_err(failed("writing"))?;
        let mut picked = Vec::new();
        let record = size_of::<SessionKey>() + size_of::<Session>();
        scan.for_each(record, |bytes| {
            let (k, v) = bytes.split_at(size_of::<SessionKey>());
            // SAFETY: `k` and `v` hold exactly a `SessionKey` and a `Session`, the program's
            // output for one entry; both are Pod (any bytes valid); the reads are unaligned-safe.
            let entry = unsafe {
                (
                    k.as_ptr().cast::<SessionKey>().read_unaligned(),
                    v.as_ptr().cast::<Session>().read_unaligned(),
                )
            };
            picked.push(entry);
        })
        .map_err(|source| LoadError::Map {
            map: names::SESSIONS,
            what: "scanning",
            source,
        })?;
        let array = aya::maps::Array::<_, ScanArgs>::try_from(self.map_ref(names::SCAN_ARGS)?)
            .map_err(|e| failed("opening")(std::io::Error::other(e.to_string())))?;
        let after = array
            .get(&0, 0)
            .map_err(|e| failed("reading")(std::io::Error::other(e.to_string())))?;
        Ok((picked, usize::try_from(after.visited).unwrap_or(usize::MAX)))
    }

    /// [`Enforcer::scan_sessions`] without the iterator: every entry read in batches
    /// (`BPF_MAP_LOOKUP_BATCH`, as [`Enforcer::sessions`]) and filtered here with the same
    /// function, chunk by chunk.
    ///
    /// # Errors
    /// [`LoadError::Map`] if `SESSIONS` cannot be read.
    pub fn scan_sessions_batched(
        &self,
        args: &ScanArgs,
    ) -> Result<(Vec<SessionEntry>, usize), LoadError> {
        let mut picked = Vec::new();
        let mut visited = 0usize;
        batch::lookup_hash_each(
            self.map_data(names::SESSIONS)?.fd(),
            |k: &enforcer_common::session::SessionKey, s: &enforcer_common::session::Session| {
                visited += 1;
                if enforcer_common::scan::wanted(args, k.proto, s) {
                    picked.push((*k, *s));
                }
            },
        )
        .map_err(|source| LoadError::Map {
            map: names::SESSIONS,
            what: "reading",
            source,
        })?;
        Ok((picked, visited))
    }

    /// Raise the policy epoch after a change made in place (a quarantine, a bind), so that
    /// sessions are checked again on their next packet; returns the new epoch.
    ///
    /// # Errors
    /// [`LoadError::Map`] if `CONFIG` cannot be read or written.
    pub fn bump_epoch(&mut self) -> Result<u32, LoadError> {
        let generation = self.generation()?;
        self.write_config(generation, "raising the epoch")
    }

    fn map_ref(&self, name: &'static str) -> Result<&Map, LoadError> {
        self.ebpf.map(name).ok_or(LoadError::Map {
            map: name,
            what: "finding",
            source: std::io::Error::other("the object has no such map"),
        })
    }

    fn map_mut(&mut self, name: &'static str) -> Result<&mut Map, LoadError> {
        self.ebpf.map_mut(name).ok_or(LoadError::Map {
            map: name,
            what: "finding",
            source: std::io::Error::other("the object has no such map"),
        })
    }

    /// Write `image` make-before-break and return what changed.
    ///
    /// 1. Check that the old and the new policy fit the maps side by side ([`Peak`]); if not,
    ///    return [`LoadError::Capacity`] having written nothing.
    /// 2. Write the inactive generation: only the entries that differ from what it holds
    ///    (bindings' slots for that generation, SIM policy words, nets, segments, rules, ports).
    ///    The active generation reads none of it; a failure here leaves it in force, untouched.
    /// 3. Flip `CONFIG.generation`: one array write, which packets see whole.
    /// 4. Wait [`GRACE`] for program runs that read the old generation, then delete the
    ///    bindings only the old generation had.
    ///
    /// # Errors
    /// [`LoadError::Capacity`] before any write; [`LoadError::Map`] for a failed map write (the
    /// previous policy stays enforced in every map, and the next apply re-reads the maps).
    pub fn apply(&mut self, image: &MapImage) -> Result<ApplyReport, LoadError> {
        let active = self.generation()?;
        let target = active ^ 1;
        let mut held = match self.held.take() {
            Some(held) => held,
            None => self.read_held()?,
        };
        let started = Instant::now();
        held.settle();
        let mut plan = held.plan(image, target);
        let peak = peak(&held, &plan, image, active, target);
        if let Err(error) = self.capacity.check_peak(&peak) {
            self.held = Some(held);
            return Err(error.into());
        }
        // On an error `self.held` stays `None`: the next apply reads the maps again.
        self.write_plan(&plan, target)?;
        held.written(&mut plan, target);
        self.held = Some(held);

        self.write_config(target, "flipping the generation")?;
        let written = started.elapsed();

        std::thread::sleep(GRACE);
        let unbound = plan.unbind_v4.len() + plan.unbind_v6.len();
        let cleared = self
            .batch_delete(names::SIM_V4, &plan.unbind_v4)
            .and_then(|()| self.batch_delete(names::SIM_V6, &plan.unbind_v6));
        match cleared {
            Ok(()) => {
                if let Some(held) = &mut self.held {
                    held.unbound(&plan);
                }
            }
            Err(error) => {
                // The new policy is in force; the stale bindings are unbound in it, so they only
                // take room. The next apply reads the maps again and retries.
                tracing::warn!(error = %error, "Could not delete bindings of the old generation.");
                self.held = None;
            }
        }
        Ok(ApplyReport {
            generation: target,
            sims_added: plan.summary.sims_added,
            sims_removed: plan.summary.sims_removed,
            sims_changed: plan.summary.sims_changed,
            rule_entries_changed: plan.summary.rule_entries_changed,
            entries_written: plan.writes_before_flip(),
            bindings_deleted: unbound,
            write_time: written,
        })
    }

    /// Write every entry of `plan` into generation `target`: deletes first, so a generation
    /// never holds more than the larger of its old and new contents.
    fn write_plan(&mut self, plan: &Plan, target: u8) -> Result<(), LoadError> {
        self.remove_lpm::<5, NetEntry>(
            names::NET_V4,
            plan.nets_v4
                .deletes
                .iter()
                .map(|(addr, len)| net_key(target, addr, *len)),
        )?;
        self.remove_lpm::<17, NetEntry>(
            names::NET_V6,
            plan.nets_v6
                .deletes
                .iter()
                .map(|(addr, len)| net_key(target, addr, *len)),
        )?;
        let (single, trie): (Vec<&RuleKey>, Vec<&RuleKey>) =
            plan.rules.deletes.iter().partition(|k| k.port_bits == 16);
        let single: Vec<PortRuleKey> = single
            .into_iter()
            .map(|k| PortRuleKey::of(k, target))
            .collect();
        self.batch_delete(names::PORT_RULES, &single)?;
        self.remove_lpm::<RULE_KEY_LEN, RuleEntry>(
            names::RULES,
            trie.into_iter()
                .map(|k| Key::new(k.prefix_len(), k.lpm_data(target))),
        )?;

        let nets_v4 = plan
            .nets_v4
            .upserts
            .iter()
            .map(|((addr, len), e)| (&addr[..], *len, *e));
        self.insert_nets::<5>(names::NET_V4, target, nets_v4)?;
        let nets_v6 = plan
            .nets_v6
            .upserts
            .iter()
            .map(|((addr, len), e)| (&addr[..], *len, *e));
        self.insert_nets::<17>(names::NET_V6, target, nets_v6)?;
        let single: Vec<(PortRuleKey, RuleEntry)> = plan
            .rules
            .upserts
            .iter()
            .filter(|(k, _)| k.port_bits == 16)
            .map(|(k, e)| (PortRuleKey::of(k, target), *e))
            .collect();
        self.batch_write(names::PORT_RULES, &single)?;
        let trie: Vec<(Key<[u8; RULE_KEY_LEN]>, RuleEntry)> = plan
            .rules
            .upserts
            .iter()
            .filter(|(k, _)| k.port_bits != 16)
            .map(|(k, e)| (Key::new(k.prefix_len(), k.lpm_data(target)), *e))
            .collect();
        self.write_rule_trie(&trie)?;

        let segments: Vec<(u32, SegmentEntry)> = plan
            .segments
            .iter()
            .map(|(id, e)| (segment_index(target, *id), *e))
            .collect();
        self.batch_write(names::SEGMENTS, &segments)?;
        let words: Vec<(u32, u64)> = plan
            .ports_used
            .iter()
            .map(|&(i, word)| {
                let udp = i >= PORT_WORDS as usize;
                let port = u16::try_from((i % PORT_WORDS as usize) << 6).unwrap_or(0);
                (ports_used_index(target, udp, port), word)
            })
            .collect();
        self.batch_write(names::PORTS_USED, &words)?;
        for &(sim, policy) in &plan.sim_policy {
            if !self.sims.set_policy(target, sim, policy) {
                return Err(LoadError::Map {
                    map: names::SIMS,
                    what: "writing",
                    source: std::io::Error::other(format!(
                        "SIM index {sim} is past its {} entries",
                        self.sims.entries()
                    )),
                });
            }
        }
        // The words are plain stores into shared memory; the flip that follows is a syscall,
        // but make the order explicit: every policy word is visible before `CONFIG` changes.
        std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
        // Last, though the order does not matter to packets: nothing reads `target` yet.
        self.batch_write(names::SIM_V4, &plan.bindings_v4)?;
        self.batch_write(names::SIM_V6, &plan.bindings_v6)
    }

    fn write_rule_trie(
        &mut self,
        entries: &[(Key<[u8; RULE_KEY_LEN]>, RuleEntry)],
    ) -> Result<(), LoadError> {
        if self.batch_write(names::RULES, entries).is_ok() {
            return Ok(());
        }
        // Kernels without batch updates for LPM tries: one syscall per entry.
        let mut trie: LpmTrie<&mut MapData, [u8; RULE_KEY_LEN], RuleEntry> =
            LpmTrie::try_from(self.map_mut(names::RULES)?)
                .map_err(map_err(names::RULES, "opening"))?;
        for (key, entry) in entries {
            trie.insert(key, *entry, 0)
                .map_err(map_err(names::RULES, "inserting"))?;
        }
        Ok(())
    }

    /// Insert `(address, prefix length, entry)` into the LPM map `name` as generation
    /// `generation`; `K` is the key's data length: one generation byte plus the address.
    fn insert_nets<'a, const K: usize>(
        &mut self,
        name: &'static str,
        generation: u8,
        nets: impl Iterator<Item = (&'a [u8], u8, NetEntry)>,
    ) -> Result<(), LoadError> {
        let mut trie: LpmTrie<&mut MapData, [u8; K], NetEntry> =
            LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name, "opening"))?;
        for (addr, prefix_len, entry) in nets {
            trie.insert(&net_key(generation, addr, prefix_len), entry, 0)
                .map_err(map_err(name, "inserting"))?;
        }
        Ok(())
    }

    /// Remove `keys` from the LPM map `name`.
    fn remove_lpm<const K: usize, V: Pod>(
        &mut self,
        name: &'static str,
        keys: impl Iterator<Item = Key<[u8; K]>>,
    ) -> Result<(), LoadError> {
        let mut trie: LpmTrie<&mut MapData, [u8; K], V> =
            LpmTrie::try_from(self.map_mut(name)?).map_err(map_err(name, "opening"))?;
        for key in keys {
            trie.remove(&key).map_err(map_err(name, "clearing"))?;
        }
        Ok(())
    }

    /// What the policy maps hold, read from the kernel: for maps adopted from an earlier
    /// process, or after a failed write. One syscall per entry (the bindings of a million SIMs
    /// take about a second), paid once.
    fn read_held(&self) -> Result<Held, LoadError> {
        let mut held = Held::empty();
        let v4: LpmTrie<&MapData, [u8; 5], NetEntry> =
            LpmTrie::try_from(self.map_ref(names::NET_V4)?)
                .map_err(map_err(names::NET_V4, "opening"))?;
        for item in v4.iter() {
            let (key, entry) = item.map_err(map_err(names::NET_V4, "reading"))?;
            let d = key.data();
            let len = u8::try_from(key.prefix_len().saturating_sub(8)).unwrap_or(u8::MAX);
            held.generations[usize::from(d[0] & 1)]
                .nets_v4
                .insert(([d[1], d[2], d[3], d[4]], len), entry);
        }
        let v6: LpmTrie<&MapData, [u8; 17], NetEntry> =
            LpmTrie::try_from(self.map_ref(names::NET_V6)?)
                .map_err(map_err(names::NET_V6, "opening"))?;
        for item in v6.iter() {
            let (key, entry) = item.map_err(map_err(names::NET_V6, "reading"))?;
            let d = key.data();
            let len = u8::try_from(key.prefix_len().saturating_sub(8)).unwrap_or(u8::MAX);
            let mut addr = [0u8; 16];
            addr.copy_from_slice(&d[1..]);
            held.generations[usize::from(d[0] & 1)]
                .nets_v6
                .insert((addr, len), entry);
        }
        let trie: LpmTrie<&MapData, [u8; RULE_KEY_LEN], RuleEntry> =
            LpmTrie::try_from(self.map_ref(names::RULES)?)
                .map_err(map_err(names::RULES, "opening"))?;
        for item in trie.iter() {
            let (key, entry) = item.map_err(map_err(names::RULES, "reading"))?;
            let (generation, key) = rule_key_of_lpm(key.data(), key.prefix_len());
            held.generations[usize::from(generation & 1)]
                .rules
                .insert(key, entry);
        }
        let single: HashMap<&MapData, PortRuleKey, RuleEntry> =
            HashMap::try_from(self.map_ref(names::PORT_RULES)?)
                .map_err(map_err(names::PORT_RULES, "opening"))?;
        for item in single.iter() {
            let (key, entry) = item.map_err(map_err(names::PORT_RULES, "reading"))?;
            let rule = RuleKey {
                subject: key.subject,
                class: key.class,
                proto: key.proto,
                port: key.port,
                port_bits: 16,
            };
            held.generations[usize::from(key.generation & 1)]
                .rules
                .insert(rule, entry);
        }
        let segments: Array<&MapData, SegmentEntry> =
            Array::try_from(self.map_ref(names::SEGMENTS)?)
                .map_err(map_err(names::SEGMENTS, "opening"))?;
        let words: Array<&MapData, u64> = Array::try_from(self.map_ref(names::PORTS_USED)?)
            .map_err(map_err(names::PORTS_USED, "opening"))?;
        for (generation, held_gen) in (0u8..).zip(held.generations.iter_mut()) {
            for id in 0..MAX_SEGMENTS {
                held_gen.segments[id as usize] = segments
                    .get(&segment_index(generation, id as u16), 0)
                    .map_err(map_err(names::SEGMENTS, "reading"))?;
            }
            for (i, word) in held_gen.ports_used.iter_mut().enumerate() {
                let udp = i >= PORT_WORDS as usize;
                let port = u16::try_from((i % PORT_WORDS as usize) << 6).unwrap_or(0);
                *word = words
                    .get(&ports_used_index(generation, udp, port), 0)
                    .map_err(map_err(names::PORTS_USED, "reading"))?;
            }
        }
        let v4: HashMap<&MapData, SimKeyV4, SimBinding> =
            HashMap::try_from(self.map_ref(names::SIM_V4)?)
                .map_err(map_err(names::SIM_V4, "opening"))?;
        for item in v4.iter() {
            let (key, binding) = item.map_err(map_err(names::SIM_V4, "reading"))?;
            held.bindings_v4.push((key, binding));
        }
        held.bindings_v4.sort_unstable();
        let v6: HashMap<&MapData, SimKeyV6, SimBinding> =
            HashMap::try_from(self.map_ref(names::SIM_V6)?)
                .map_err(map_err(names::SIM_V6, "opening"))?;
        for item in v6.iter() {
            let (key, binding) = item.map_err(map_err(names::SIM_V6, "reading"))?;
            held.bindings_v6.push((key, binding));
        }
        held.bindings_v6.sort_unstable();
        // The policy words of the SIMs each generation binds (the others are unused).
        let v4 = held.bindings_v4.iter().map(|(_, b)| b);
        let bindings = v4.chain(held.bindings_v6.iter().map(|(_, b)| b));
        let mut sims: [std::collections::BTreeSet<u32>; 2] = Default::default();
        for binding in bindings {
            for (generation, set) in (0u8..).zip(sims.iter_mut()) {
                let sim = binding.of(generation);
                if sim != SIM_NONE {
                    set.insert(sim);
                }
            }
        }
        for ((generation, set), held_gen) in (0u8..).zip(sims).zip(held.generations.iter_mut()) {
            let slots = set.last().map_or(0, |&sim| sim as usize + 1);
            let mut known = vec![None; slots];
            for sim in set {
                let policy = self.sims.policy(generation, sim).ok_or(LoadError::Map {
                    map: names::SIMS,
                    what: "reading",
                    source: std::io::Error::other(format!(
                        "a binding names SIM index {sim}, past the array"
                    )),
                })?;
                known[sim as usize] = Some(policy);
            }
            held_gen.sim_policy = Some(known);
        }
        Ok(held)
    }

    /// Delete `keys` (which must exist) from the hash map `name`.
    fn batch_delete<K: Pod>(&self, name: &'static str, keys: &[K]) -> Result<(), LoadError> {
        if keys.is_empty() {
            return Ok(());
        }
        batch::delete(self.map_data(name)?.fd(), keys).map_err(|source| LoadError::Map {
            map: name,
            what: "deleting",
            source,
        })
    }

    /// Write `entries` into map `name` with `BPF_MAP_UPDATE_BATCH`.
    fn batch_write<K: Pod + Sync, V: Pod + Sync>(
        &self,
        name: &'static str,
        entries: &[(K, V)],
    ) -> Result<(), LoadError> {
        if entries.is_empty() {
            return Ok(());
        }
        batch::update(self.map_data(name)?.fd(), entries).map_err(|source| LoadError::Map {
            map: name,
            what: "writing",
            source,
        })
    }

    fn map_data(&self, name: &'static str) -> Result<&MapData, LoadError> {
        match self.map_ref(name)? {
            Map::Array(data) | Map::HashMap(data) | Map::LpmTrie(data) | Map::PerCpuArray(data) => {
                Ok(data)
            }
            _ => Err(LoadError::Map {
                map: name,
                what: "opening",
                source: std::io::Error::other("unexpected map type"),
            }),
        }
    }

    /// Set the `IFACE_*` flags of interface `ifindex`, then raise the policy epoch: the
    /// program caches an interface's flags per CPU under the epoch it read them in
    /// (`IFACE_CACHE`), so the new epoch retires every cached copy (and sessions are checked
    /// again once, under the new flags).
    ///
    /// # Errors
    /// [`LoadError::Map`] if `IFACES` or `CONFIG` cannot be written.
    pub fn set_iface(&mut self, ifindex: u32, flags: u32) -> Result<(), LoadError> {
        self.set_iface_redirect(ifindex, flags, flags & IFACE_XDP_FORWARD != 0)
    }

    /// Like [`Enforcer::set_iface`], with whether XDP forwarding may redirect frames to the
    /// interface (`FORWARD_DEVS`) given apart: an interface may forward what arrives on it in
    /// XDP while its driver cannot send redirected frames (no `ndo_xdp_xmit`), so what is
    /// routed out of it takes the stack.
    ///
    /// # Errors
    /// [`LoadError::Map`] if `FORWARD_DEVS`, `IFACES` or `CONFIG` cannot be written.
    pub fn set_iface_redirect(
        &mut self,
        ifindex: u32,
        flags: u32,
        redirect_target: bool,
    ) -> Result<(), LoadError> {
        self.set_forward_dev(ifindex, redirect_target)?;
        let mut ifaces: HashMap<&mut MapData, u32, IfaceEntry> =
            HashMap::try_from(self.map_mut(names::IFACES)?)
                .map_err(map_err(names::IFACES, "opening"))?;
        ifaces
            .insert(ifindex, IfaceEntry { flags }, 0)
            .map_err(map_err(names::IFACES, "writing"))?;
        self.bump_epoch().map(drop)
    }

    /// Let XDP forwarding send to interface `ifindex` (`FORWARD_DEVS`), or not. Written before
    /// the interface's flags, so that an interface that forwards is a destination first: the
    /// kernel removes an entry by itself when its interface goes away.
    ///
    /// The kernel checks only that the interface exists; whether its driver can send
    /// redirected frames (`ndo_xdp_xmit`) shows only when a frame is sent: one that cannot is
    /// dropped by the kernel (`xdp:xdp_redirect_err`).
    ///
    /// # Errors
    /// [`LoadError::Map`] if `FORWARD_DEVS` cannot be written.
    fn set_forward_dev(&mut self, ifindex: u32, on: bool) -> Result<(), LoadError> {
        let mut devs: DevMapHash<&mut MapData> =
            DevMapHash::try_from(self.map_mut(names::FORWARD_DEVS)?)
                .map_err(map_err(names::FORWARD_DEVS, "opening"))?;
        if on {
            devs.insert(ifindex, ifindex, None, 0)
                .map_err(|source| LoadError::Map {
                    map: names::FORWARD_DEVS,
                    what: "writing",
                    source: std::io::Error::other(source),
                })
        } else {
            match devs.remove(ifindex) {
                Ok(()) | Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                // Not there: the usual case, an interface that never forwarded.
                Err(aya::maps::MapError::SyscallError(e))
                    if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
                {
                    Ok(())
                }
                Err(e) => Err(map_err(names::FORWARD_DEVS, "deleting from")(e)),
            }
        }
    }

    /// Packets by XDP forwarding outcome since the pinned counters were made, summed over CPUs:
    /// (outcome name from `FORWARD_OUTCOMES`, packets), every outcome listed.
    ///
    /// # Errors
    /// [`LoadError::Map`] if `FORWARD_STATS` cannot be read.
    pub fn forward_stats(&self) -> Result<Vec<(&'static str, u64)>, LoadError> {
        let counts = crate::counters::forward_outcomes(self.map_ref(names::FORWARD_STATS)?)
            .map_err(map_err(names::FORWARD_STATS, "reading"))?;
        Ok(FORWARD_OUTCOMES
            .iter()
            .map(|&(slot, name)| (name, counts.get(slot as usize).copied().unwrap_or(0)))
            .collect())
    }

    /// Attach the program to `iface`.
    pub fn attach(&mut self, iface: &str, mode: XdpMode) -> Result<(), LoadError> {
        let program = xdp(&mut self.ebpf)?;
        program.attach(iface, mode).map_err(|source| match source {
            ProgramError::UnknownInterface { .. } => LoadError::NoSuchInterface(iface.to_owned()),
            source => LoadError::Attach {
                iface: iface.to_owned(),
                mode,
                hint: crate::xdp_holder::attach_hint(iface, mode),
                source: Box::new(source),
            },
        })?;
        Ok(())
    }

    /// Load and attach another program of the object (a benchmark program such as `xdp_bare`,
    /// which shares this instance's maps) to `iface`.
    pub fn attach_program(
        &mut self,
        name: &str,
        iface: &str,
        mode: XdpMode,
    ) -> Result<(), LoadError> {
        self.extra_program(name)?
            .attach(iface, mode)
            .map_err(|source| LoadError::Attach {
                iface: iface.to_owned(),
                mode,
                hint: crate::xdp_holder::attach_hint(iface, mode),
                source: Box::new(source),
            })?;
        Ok(())
    }

    /// Another XDP program of the object by name, loaded on first use.
    fn extra_program(&mut self, name: &str) -> Result<&mut Xdp, LoadError> {
        object_program(&mut self.ebpf, name)
    }

    /// Remove the pins (the maps live on while the program holds them).
    pub fn unpin(&self) -> std::io::Result<()> {
        if let Some(dir) = &self.pin_dir {
            for name in names::ALL {
                match std::fs::remove_file(dir.join(name)) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
            }
            match std::fs::remove_dir(dir) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    /// Set or clear `SIM_QUARANTINED` in both generations' policy words of SIM index `sim`
    /// (see [`Enforcer::set_sim_flag`]).
    ///
    /// # Errors
    /// As [`Enforcer::set_sim_flag`].
    pub fn set_sim_quarantine(&mut self, sim: u32, quarantined: bool) -> Result<(), LoadError> {
        self.set_sim_flag(sim, SIM_QUARANTINED, quarantined)
    }

    /// Set or clear `flag` (`SIM_QUARANTINED`, `SIM_IMEI_MISMATCH`) in both generations' policy
    /// words of SIM index `sim`, the active generation first: each is one 32-bit store into the
    /// mapped `SIMS`, so the next packet sees it whole. What the loader holds of the
    /// generations follows, so the next apply's diff stays right.
    ///
    /// # Errors
    /// [`LoadError::Map`] if `sim` is past the array, before anything is written.
    pub fn set_sim_flag(&mut self, sim: u32, flag: u8, on: bool) -> Result<(), LoadError> {
        let active = self.generation()?;
        if sim >= self.sims.entries() {
            return Err(LoadError::Map {
                map: names::SIMS,
                what: "writing",
                source: std::io::Error::other(format!("SIM index {sim} is past the array")),
            });
        }
        for generation in [active, active ^ 1] {
            let mut entry = self.sims.policy(generation, sim).unwrap_or_default();
            if on {
                entry.flags |= flag;
            } else {
                entry.flags &= !flag;
            }
            self.sims.set_policy(generation, sim, entry);
            if let Some(held) = self.held.as_mut()
                && let Some(policies) = held.generations[usize::from(generation)]
                    .sim_policy
                    .as_mut()
                && let Some(Some(held_entry)) = policies.get_mut(sim as usize)
            {
                held_entry.flags = entry.flags;
            }
        }
        Ok(())
    }

    /// Bind the IPv4 address `key` to SIM index `sim` in the active generation at once, or
    /// unbind it (`None`): a run-time binding (`sim bind`, later RADIUS), without a generation
    /// switch. One hash update (or delete, when no generation binds the address any more),
    /// which packets see whole: a packet finds the old binding or the new one. The other
    /// generation's slot is kept, so the next apply's diff stays right.
    ///
    /// # Errors
    /// [`LoadError::Map`] if the map is full or the write fails; nothing changed then.
    pub fn set_binding_v4(&mut self, key: SimKeyV4, sim: Option<u32>) -> Result<(), LoadError> {
        self.set_binding(
            names::SIM_V4,
            key,
            sim,
            Held::binding_v4,
            Held::set_binding_v4,
        )
    }

    /// [`Enforcer::set_binding_v4`] for an IPv6 /64 prefix.
    ///
    /// # Errors
    /// As [`Enforcer::set_binding_v4`].
    pub fn set_binding_v6(&mut self, key: SimKeyV6, sim: Option<u32>) -> Result<(), LoadError> {
        self.set_binding(
            names::SIM_V6,
            key,
            sim,
            Held::binding_v6,
            Held::set_binding_v6,
        )
    }

    /// The SIM index the active generation binds to `key`, if any.
    ///
    /// # Errors
    /// Reading the generation, or the maps adopted from an earlier process, fails.
    pub fn bound_v4(&mut self, key: SimKeyV4) -> Result<Option<u32>, LoadError> {
        self.bound(key, Held::binding_v4)
    }

    /// [`Enforcer::bound_v4`] for an IPv6 /64 prefix.
    ///
    /// # Errors
    /// As [`Enforcer::bound_v4`].
    pub fn bound_v6(&mut self, key: SimKeyV6) -> Result<Option<u32>, LoadError> {
        self.bound(key, Held::binding_v6)
    }

    /// One family's [`Enforcer::set_binding_v4`]: `get` and `set` are that family's accessors
    /// of what the loader holds.
    fn set_binding<K: Pod + Sync>(
        &mut self,
        name: &'static str,
        key: K,
        sim: Option<u32>,
        get: fn(&Held, K) -> Option<SimBinding>,
        set: fn(&mut Held, K, Option<SimBinding>),
    ) -> Result<(), LoadError> {
        let (held, active) = self.held_and_active()?;
        let current = get(held, key);
        let next = binding_with(current, active, sim);
        self.write_binding(name, key, current, next)?;
        if let Some(held) = self.held.as_mut() {
            set(held, key, next);
        }
        Ok(())
    }

    /// One family's [`Enforcer::bound_v4`].
    fn bound<K: Copy>(
        &mut self,
        key: K,
        get: fn(&Held, K) -> Option<SimBinding>,
    ) -> Result<Option<u32>, LoadError> {
        let (held, active) = self.held_and_active()?;
        Ok(get(held, key)
            .map(|b| b.of(active))
            .filter(|&s| s != SIM_NONE))
    }

    /// What the maps hold (read from them first if this process does not know) and the
    /// active generation.
    fn held_and_active(&mut self) -> Result<(&Held, u8), LoadError> {
        let active = self.generation()?;
        if self.held.is_none() {
            self.held = Some(self.read_held()?);
        }
        let held = self.held.as_ref().ok_or(LoadError::Map {
            map: names::SIM_V4,
            what: "reading",
            source: std::io::Error::other("no record of the maps"),
        })?;
        Ok((held, active))
    }

    /// Write `next` at `key` of the bindings map `name` (delete it for `None`), one syscall.
    fn write_binding<K: Pod + Sync>(
        &self,
        name: &'static str,
        key: K,
        current: Option<SimBinding>,
        next: Option<SimBinding>,
    ) -> Result<(), LoadError> {
        match (current, next) {
            (None, None) => Ok(()),
            (Some(_), None) => self.batch_delete(name, &[key]),
            (_, Some(binding)) => self.batch_write(name, &[(key, binding)]),
        }
    }

    /// The mapped `SIMS` array: SIM policies and counters without a syscall per SIM.
    #[must_use]
    pub fn sim_table(&self) -> &SimTable {
        &self.sims
    }

    /// The mapped `SIMS` array, shared: for a thread that reads counters while this
    /// `Enforcer` goes on (the mapping lives as long as any holder).
    #[must_use]
    pub fn shared_sim_table(&self) -> std::sync::Arc<SimTable> {
        std::sync::Arc::clone(&self.sims)
    }

    /// Pin the XDP program at `path` (on a bpffs mount), so that another thread or process can
    /// open it with `aya::programs::Xdp::from_pin` and run test packets while this one applies
    /// policies.
    ///
    /// # Errors
    /// [`LoadError::Program`] if pinning fails.
    pub fn pin_program(&mut self, path: &Path) -> Result<(), LoadError> {
        xdp(&mut self.ebpf)?
            .pin(path)
            .map_err(|source| LoadError::Program {
                what: format!("pinning the XDP program at {}", path.display()),
                source: Box::new(ProgramError::IOError(std::io::Error::other(source))),
            })
    }

    /// Run `frame` through the program `repeat` times with `BPF_PROG_TEST_RUN`; returns the
    /// XDP action and the kernel-measured time per run. `ifindex` sets `xdp_md.ingress_ifindex`
    /// (it must exist in the current namespace; 1 is loopback).
    pub fn test_run(
        &mut self,
        frame: &[u8],
        repeat: u32,
        ifindex: u32,
    ) -> Result<(u32, Duration), LoadError> {
        test_run_xdp(xdp(&mut self.ebpf)?, frame, repeat, Some(ifindex))
    }

    /// Like [`Enforcer::test_run`], for a benchmark's [`Variant`] of the enforcing program in
    /// the same object (loaded on first use), over the same maps.
    ///
    /// # Errors
    /// [`LoadError::Program`] if the program cannot be loaded or run.
    pub fn variant_test_run(
        &mut self,
        variant: Variant,
        frame: &[u8],
        repeat: u32,
        ifindex: u32,
    ) -> Result<(u32, Duration), LoadError> {
        test_run_xdp(
            self.extra_program(variant.program())?,
            frame,
            repeat,
            Some(ifindex),
        )
    }

    /// Like [`Enforcer::test_run`], for the empty program in the same object (loaded on first
    /// use): the cost of BPF_PROG_TEST_RUN itself, measured beside the enforcer.
    pub fn baseline_test_run(
        &mut self,
        frame: &[u8],
        repeat: u32,
    ) -> Result<(u32, Duration), LoadError> {
        test_run_xdp(self.extra_program(BASELINE_NAME)?, frame, repeat, None)
    }
}

/// The LPM key of a `NET_*` entry: generation byte, address, prefix length + 8.
fn net_key<const K: usize>(generation: u8, addr: &[u8], prefix_len: u8) -> Key<[u8; K]> {
    let mut data = [0u8; K];
    data[0] = generation;
    data[1..].copy_from_slice(addr);
    Key::new(8 + u32::from(prefix_len), data)
}

/// The generation and [`RuleKey`] of a `RULES_V2` key: the inverse of
/// [`RuleKey::lpm_data`] and [`RuleKey::prefix_len`].
fn rule_key_of_lpm(data: [u8; RULE_KEY_LEN], prefix_len: u32) -> (u8, RuleKey) {
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut key = RuleKey {
        subject: be32(&data[1..5]),
        class: be32(&data[5..9]),
        proto: data[9],
        port: u16::from_be_bytes([data[11], data[12]]),
        port_bits: PORT_BITS_ANY,
    };
    if prefix_len >= RULE_BITS_PORTS {
        key.port_bits = u8::try_from(prefix_len - RULE_BITS_PORTS).unwrap_or(16);
    } else if prefix_len < RULE_BITS_PROTO {
        key.proto = PROTO_ANY;
    }
    (data[0], key)
}

/// The entries each map holds at the peak of applying `plan` (see [`Peak`]).
fn peak(held: &Held, plan: &Plan, image: &MapImage, active: u8, target: u8) -> Peak {
    let now = &held.generations[usize::from(active & 1)];
    let before = &held.generations[usize::from(target & 1)];
    let after = &plan.target;
    let grown = |n: usize, upserts: usize| n + upserts;
    let (new_v4, new_v6) = plan.new_bindings;
    Peak {
        sim_v4: grown(held.bindings_v4.len(), new_v4),
        sim_v6: grown(held.bindings_v6.len(), new_v6),
        sim_slots: image.sim_slots(),
        nets_v4: now.nets_v4.len() + before.nets_v4.len().max(after.nets_v4.len()),
        nets_v6: now.nets_v6.len() + before.nets_v6.len().max(after.nets_v6.len()),
        rule_entries: now.rule_count(false) + before.rule_count(false).max(after.rule_count(false)),
        port_rules: now.rule_count(true) + before.rule_count(true).max(after.rule_count(true)),
        rule_slots: image
            .rules
            .iter()
            .map(|(_, e)| e.rule as usize + 1)
            .max()
            .unwrap_or(0),
    }
}

const _: () = assert!(
    GENERATIONS == 2,
    "apply() flips between exactly two generations"
);

/// The session scan's iterator program (`session_scan`), loaded and attached to `SESSIONS`.
fn load_scan(ebpf: &mut Ebpf) -> Result<crate::map_iter::MapIter, String> {
    let btf = aya::Btf::from_sys_fs().map_err(|e| format!("reading the kernel's BTF: {e}"))?;
    let program: &mut aya::programs::Iter = ebpf
        .program_mut(SCAN_NAME)
        .ok_or_else(|| format!("the object has no program `{SCAN_NAME}`"))?
        .try_into()
        .map_err(|e| format!("opening `{SCAN_NAME}`: {e}"))?;
    program
        .load("bpf_map_elem", &btf)
        .map_err(|e| format!("loading `{SCAN_NAME}`: {e}"))?;
    let program: &aya::programs::Iter = ebpf
        .program(SCAN_NAME)
        .ok_or_else(|| format!("the object has no program `{SCAN_NAME}`"))?
        .try_into()
        .map_err(|e| format!("opening `{SCAN_NAME}`: {e}"))?;
    let program_fd = program
        .fd()
        .map_err(|e| format!("`{SCAN_NAME}` has no fd: {e}"))?;
    let Some(Map::HashMap(sessions)) = ebpf.map(names::SESSIONS) else {
        return Err(format!("the object has no hash map `{}`", names::SESSIONS));
    };
    crate::map_iter::MapIter::attach(program_fd.as_fd(), sessions.fd().as_fd())
        .map_err(|e| format!("attaching `{SCAN_NAME}` to `{}`: {e}", names::SESSIONS))
}

/// Measure the kernel's tick and give the program its clock (`crate::clock`,
/// `CLOCK[CLOCK_CALIBRATION]`): `clock_sample` is run until the coarse clock, having stepped
/// once, steps again two or more jiffies later (`crate::clock::clock_stepped`: 8-12 ms at `HZ`
/// 250, 20-30 ms at 100), for [`CALIBRATION_LIMIT`] at most.
///
/// # Errors
/// [`LoadError::Program`] or [`LoadError::Map`] if the sampling program or `CLOCK` fails, or
/// `jiffies` did not move twice within the limit (the program would stamp sessions with a
/// wrong time).
fn calibrate_clock(ebpf: &mut Ebpf) -> Result<crate::clock::Calibration, LoadError> {
    const SAMPLER: &str = "clock_sample";
    let frame = [0u8; 64];
    let started = Instant::now();
    let deadline = started + CALIBRATION_LIMIT;
    let mut samples: Vec<(u64, u64)> = Vec::with_capacity(4096);
    // The jiffies of the clock's first step.
    let mut first_step: Option<u64> = None;
    loop {
        test_run_xdp(object_program(ebpf, SAMPLER)?, &frame, 1, None)?;
        let clock = clock_map(ebpf)?;
        let [jiffies, ns] = clock
            .get(&enforcer_common::maps::CLOCK_SAMPLE, 0)
            .map_err(map_err(names::CLOCK, "reading"))?;
        samples.push((jiffies, ns));
        // Two whole ticks after the clock's first step, counted from that step's jiffies (an
        // idle or emulated CPU may skip ticks: `jiffies` can jump by more than one).
        if crate::clock::clock_stepped(&samples, samples.len() - 1) {
            match first_step {
                None => first_step = Some(jiffies),
                Some(j0) if jiffies.wrapping_sub(j0) >= 2 => break,
                Some(_) => {}
            }
        }
        if Instant::now() > deadline {
            break;
        }
    }
    let Some(calibration) = crate::clock::calibrate(&samples) else {
        return Err(LoadError::Program {
            what: format!(
                "measuring the kernel's tick: jiffies advanced by {} in {} samples over {:.1} s \
                 (the kernel's tick barely moved); try again",
                samples.last().map_or(0, |s| s.0.wrapping_sub(samples[0].0)),
                samples.len(),
                started.elapsed().as_secs_f64()
            ),
            source: Box::new(ProgramError::NotLoaded),
        });
    };
    let map = ebpf.map_mut(names::CLOCK).ok_or_else(|| LoadError::Map {
        map: names::CLOCK,
        what: "finding",
        source: std::io::Error::other("the object has no such map"),
    })?;
    let mut clock: Array<&mut MapData, [u64; 2]> =
        Array::try_from(map).map_err(map_err(names::CLOCK, "opening"))?;
    // Before anything can attach the program: no packet reads it half written.
    clock
        .set(
            enforcer_common::maps::CLOCK_CALIBRATION,
            [calibration.ns_per_jiffy, calibration.offset_ns],
            0,
        )
        .map_err(map_err(names::CLOCK, "writing"))?;
    Ok(calibration)
}

/// How long [`calibrate_clock`] samples at most. Two ticks take 8-30 ms, but `jiffies` can
/// stand still far longer: once here, right after a benchmark run had ended (its
/// million-entry maps being freed), they moved 9 times in a whole second, and a 1 s limit
/// refused to load.
const CALIBRATION_LIMIT: Duration = Duration::from_secs(5);

/// The XDP program `name` of the object, loaded on first use.
///
/// # Errors
/// [`LoadError::Program`] if the object has no such XDP program or it cannot be loaded.
fn object_program<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp, LoadError> {
    let program: &mut Xdp = ebpf
        .program_mut(name)
        .ok_or_else(|| LoadError::Program {
            what: format!("finding program `{name}` in the object"),
            source: Box::new(ProgramError::NotLoaded),
        })?
        .try_into()
        .map_err(|source| LoadError::Program {
            what: format!("opening program `{name}`"),
            source: Box::new(source),
        })?;
    if program.fd().is_err() {
        program.load().map_err(|source| LoadError::Program {
            what: format!("loading program `{name}`"),
            source: Box::new(source),
        })?;
    }
    Ok(program)
}

/// `CLOCK`, for reading.
fn clock_map(ebpf: &Ebpf) -> Result<Array<&MapData, [u64; 2]>, LoadError> {
    let map = ebpf.map(names::CLOCK).ok_or_else(|| LoadError::Map {
        map: names::CLOCK,
        what: "finding",
        source: std::io::Error::other("the object has no such map"),
    })?;
    Array::try_from(map).map_err(map_err(names::CLOCK, "opening"))
}

/// Run `frame` through `program` `repeat` times with `BPF_PROG_TEST_RUN`, arriving on
/// `ifindex` (no context at all with `None`); returns the XDP action and the kernel-measured
/// time per run.
fn test_run_xdp(
    program: &mut Xdp,
    frame: &[u8],
    repeat: u32,
    ifindex: Option<u32>,
) -> Result<(u32, Duration), LoadError> {
    // struct xdp_md { data, data_end, data_meta, ingress_ifindex, rx_queue_index,
    // egress_ifindex }: data and data_end are offsets; data_end must be the frame length.
    let mut ctx = [0u8; 24];
    let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
    ctx[4..8].copy_from_slice(&len.to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.unwrap_or(0).to_ne_bytes());
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.ctx_in = ifindex.map(|_| &ctx[..]);
    opts.repeat = repeat;
    let result = program
        .test_run(opts)
        .map_err(|source| LoadError::Program {
            what: "BPF_PROG_TEST_RUN".into(),
            source: Box::new(source),
        })?;
    Ok((result.return_value, result.duration))
}

fn xdp(ebpf: &mut Ebpf) -> Result<&mut Xdp, LoadError> {
    let program = ebpf
        .program_mut(PROGRAM_NAME)
        .ok_or_else(|| LoadError::Program {
            what: format!("finding program `{PROGRAM_NAME}` in the object"),
            source: Box::new(ProgramError::NotLoaded),
        })?;
    program.try_into().map_err(|source| LoadError::Program {
        what: "opening the XDP program".into(),
        source: Box::new(source),
    })
}

/// `current` with the `active` generation's slot set to `sim` (`SIM_NONE` for `None`); `None`
/// when neither generation binds the address then (the key is deleted).
fn binding_with(current: Option<SimBinding>, active: u8, sim: Option<u32>) -> Option<SimBinding> {
    let next = current
        .unwrap_or_default()
        .with(active, sim.unwrap_or(SIM_NONE));
    (next.sim != [SIM_NONE; 2]).then_some(next)
}
