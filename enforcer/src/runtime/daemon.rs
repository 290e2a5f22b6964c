//! The actor: the one owner of the loaded program, its maps and links, the policy in force and
//! the runtime overrides. It handles one [`Event`] at a time.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    time::{Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context as _, anyhow, bail};
use enforcer_common::maps::{IFACE_DROP_NON_POOL, names};
use tokio::sync::oneshot;
use tracing::{debug, error, info, warn};

mod accounting;
mod queries;

use super::start::{Settings, if_index};
use crate::{
    compile::{self, Compiled},
    control::{
        Answer, Applied, Bound, Command, END_OF_ROWS, Interface, MapFill, Override, Reply,
        RowFormat, SimCounts, SimInfo, Status,
    },
    counters::Totals,
    explain::{self, Explanation, Query},
    ids::SimKey,
    links::{self, How},
    loader::Enforcer,
    policy::{Imsi, Sim, SimState, ValidatedPolicy},
    report::{self, Report, State},
    store::{self, OverrideKind, Store},
    telemetry::monotonic_coarse_ns,
};

/// What the actor is asked to do.
#[derive(Debug)]
pub(crate) enum Event {
    /// A command from a client, and where its reply goes.
    Command(Command, oneshot::Sender<Answer>),
    /// SIGHUP: reload the policy file in force.
    Hangup,
    /// Time to check that every interface still runs its link.
    CheckLinks,
    /// Time to remove idle and closed sessions.
    SweepSessions,
    /// Deny events read from the ring buffer, to name and write out.
    Deny(Vec<enforcer_common::maps::DenyEvent>),
    /// RADIUS accounting requests, and where to say which were recorded.
    Radius(crate::bindings::radius::Batch),
    /// Reload the policy in force to add the SIMs RADIUS accounting admitted.
    Admit,
    /// A stop signal (its name).
    Stop(&'static str),
}

impl Event {
    /// Whether the actor handles this in place on the event loop: one or a few SIMs' show,
    /// quarantine, release, bind, unbind or counters, each a few map and store writes (tens of
    /// microseconds at any fleet size). Everything else may take long at 1M SIMs and runs on
    /// a blocking thread.
    pub(crate) fn is_quick(&self) -> bool {
        /// More SIMs than this in one `stats` go to the blocking thread.
        const QUICK_STATS: usize = 64;
        match self {
            Event::Command(command, _) => match command {
                Command::SimShow { .. }
                | Command::SimQuarantine { .. }
                | Command::SimRelease { .. }
                | Command::SimBind { .. }
                | Command::SimUnbind { .. }
                | Command::SimImeiReset { .. }
                | Command::SimImeiLock { .. } => true,
                Command::Stats { imsis, stream } => {
                    stream.is_none() && !imsis.is_empty() && imsis.len() <= QUICK_STATS
                }
                Command::Status
                | Command::Flows { .. }
                | Command::ApplyPolicy { .. }
                | Command::Reload
                | Command::Explain { .. }
                | Command::Top { .. }
                | Command::SimList { .. }
                | Command::SegmentStats
                | Command::PolicyCheck { .. }
                | Command::PolicyDiff { .. } => false,
            },
            // A batch of at most a ring buffer's events: microseconds each.
            Event::Deny(_) => true,
            // At most a socket read's requests, each a binding's few map and store writes.
            Event::Radius(_) => true,
            Event::Hangup
            | Event::CheckLinks
            | Event::SweepSessions
            | Event::Admit
            | Event::Stop(_) => false,
        }
    }
}

/// What [`Daemon::bind_core`] did.
pub(crate) enum BindResult {
    /// Bound (`changed`), or already bound so.
    Done {
        /// The IMSI as the policy spells it.
        imsi: String,
        /// Whether anything was written.
        changed: bool,
    },
    /// Older than the binding in force: nothing changed (why).
    Stale(String),
}

/// One interface of `--iface`.
#[derive(Debug, Clone)]
pub(crate) struct Iface {
    pub name: String,
    /// Its index when last attached; 0 while it is gone.
    pub ifindex: u32,
    pub core_facing: bool,
    /// The `service` role.
    pub service_facing: bool,
    /// Passed packets arriving here are forwarded in XDP (`--forward xdp`).
    pub xdp_forward: bool,
    /// With `xdp_forward`: whether frames may be redirected to it (its driver sends
    /// redirected frames), as found when it was last attached.
    pub redirect_target: bool,
    pub reattached: u32,
}

impl Iface {
    /// Write its flags (and, with `--forward xdp`, whether XDP forwarding may redirect to it,
    /// asked of the kernel now) for interface index `self.ifindex`.
    fn configure(&mut self, enforcer: &mut crate::loader::Enforcer) -> anyhow::Result<()> {
        self.redirect_target = self.xdp_forward && takes_redirects(&self.name, self.ifindex);
        enforcer.set_iface_redirect(self.ifindex, self.flags(), self.redirect_target)?;
        Ok(())
    }

    /// Its `IFACE_*` flags, from its role and the forwarding path.
    fn flags(&self) -> u32 {
        let mut flags = 0;
        if self.xdp_forward {
            flags |= enforcer_common::maps::IFACE_XDP_FORWARD;
        }
        if self.core_facing {
            flags |= IFACE_DROP_NON_POOL;
        }
        if self.service_facing {
            flags |= enforcer_common::maps::IFACE_SERVICE;
        }
        flags
    }
}

/// Whether interface `name` (index `ifindex`) sends frames that XDP redirects to it, as the
/// kernel reports it; logged when it does not. A kernel that does not report it (before 6.3)
/// is taken at its word that it does: the README asks the operator to check the egress.
fn takes_redirects(name: &str, ifindex: u32) -> bool {
    match crate::xdp_features::can_take_redirects(ifindex) {
        Ok(true) => true,
        Ok(false) => {
            warn!(
                iface = %name,
                "The interface's driver cannot send frames redirected by XDP (no ndo_xdp_xmit; \
                 for a veth, turn GRO on at its peer or give the peer an XDP program): packets \
                 routed out of it take the kernel's stack."
            );
            false
        }
        Err(err) => {
            warn!(
                iface = %name,
                error = %err,
                "Cannot tell whether the interface sends frames redirected by XDP; assuming it \
                 does (a driver without ndo_xdp_xmit drops them)."
            );
            true
        }
    }
}

/// A policy compiled for the daemon: the file's policy with the store's run-time state
/// (quarantines and bindings by command) applied, and what it takes to undo them.
pub(crate) struct Loaded {
    pub policy: ValidatedPolicy,
    pub prepared: Prepared,
}

/// What [`compile_with`] made of a policy.
pub(crate) struct Prepared {
    pub compiled: Compiled,
    /// IMSIs quarantined by command that the policy file quarantines too (a release keeps
    /// them quarantined).
    pub file_quarantined: HashSet<String>,
    /// The file's addresses of SIMs with a run-time binding, to restore on unbind.
    pub file_addresses: HashMap<String, FileAddresses>,
    /// Overrides as the store holds them.
    pub overrides: Vec<store::Override>,
    /// Run-time bindings as the store holds them.
    pub bindings: Vec<store::Binding>,
    /// IMEI states as the store holds them.
    pub imei: Vec<store::ImeiState>,
}

/// A SIM's addresses as its policy file gives them.
pub(crate) type FileAddresses = (Option<std::net::Ipv4Addr>, Option<ipnetwork::Ipv6Network>);

/// Assign stable ids to `policy` in `store` (the store is written before any map), apply the
/// run-time state the store holds (quarantines, then bindings) to it, and compile it.
///
/// A binding is applied only where it is still valid: its SIM is in the policy, its address in
/// a pool and not the file's address of another SIM (the file wins; the binding stays in the
/// store, logged as shadowed, and applies again once the address is free).
///
/// # Errors
/// The store's errors (ids exhausted, database errors) and compilation errors.
pub(crate) fn compile_with(
    store: &mut Store,
    policy: &mut ValidatedPolicy,
) -> anyhow::Result<Prepared> {
    let overrides = store.overrides().context("reading the overrides")?;
    let bindings = store.bindings().context("reading the bindings")?;
    let imei = store.imei_states().context("reading the IMEI states")?;
    let admitted = store.admitted().context("reading the admitted SIMs")?;
    admit(policy, &admitted);
    let ids = store.assign_ids(policy).context("assigning stable ids")?;
    let quarantined: HashSet<&str> = overrides
        .iter()
        .filter(|o| o.kind == OverrideKind::Quarantine)
        .map(|o| o.imsi.as_str())
        .collect();
    let file_quarantined = policy
        .sims
        .iter()
        .filter(|s| {
            s.state == SimState::Quarantined && quarantined.contains(s.imsi.text().as_str())
        })
        .map(|s| s.imsi.to_string())
        .collect();
    store::apply_overrides(policy, &overrides);
    let mismatched: HashSet<&str> = imei
        .iter()
        .filter(|s| s.mismatch)
        .map(|s| s.imsi.as_str())
        .collect();
    if !mismatched.is_empty() {
        for sim in &mut policy.sims {
            if mismatched.contains(sim.imsi.to_string().as_str()) {
                sim.set_imei_mismatch(true);
            }
        }
    }
    let file_addresses = apply_bindings(policy, &bindings);
    let compiled = compile::compile(policy, &ids)?;
    Ok(Prepared {
        compiled,
        file_quarantined,
        file_addresses,
        overrides,
        bindings,
        imei,
    })
}

/// Add the SIMs RADIUS accounting admitted (`unknown_imsi = "admit"`) to `policy`, in the
/// segment their APN mapped to, after the SIMs of the file and in the store's order (by IMSI):
/// those the file lists itself keep the file's entry, those whose segment is gone are left
/// out (and logged), and none is added while the policy refuses unknown IMSIs.
fn admit(policy: &mut ValidatedPolicy, admitted: &[store::Admitted]) {
    if !policy.admit_unknown || admitted.is_empty() {
        return;
    }
    let listed: HashSet<Imsi> = policy.sims.iter().map(|sim| sim.imsi).collect();
    let mut added = Vec::new();
    for a in admitted {
        let Some(imsi) = Imsi::parse(&a.imsi).filter(|imsi| !listed.contains(imsi)) else {
            continue;
        };
        match policy.segments.iter().position(|s| s.name == a.segment) {
            Some(segment) => added.push(Sim::new(
                imsi,
                u16::try_from(segment).unwrap_or(u16::MAX),
                SimState::Active,
            )),
            None => warn!(
                imsi = %a.imsi,
                segment = %a.segment,
                "Admitted SIM left out: its segment is no longer in the policy."
            ),
        }
    }
    policy.sims.extend(added);
}

/// Put the valid `bindings` into `policy` (see [`compile_with`]); returns the file's addresses
/// of the SIMs they changed.
fn apply_bindings(
    policy: &mut ValidatedPolicy,
    bindings: &[store::Binding],
) -> HashMap<String, FileAddresses> {
    let mut changed = HashMap::new();
    if bindings.is_empty() {
        return changed;
    }
    let wanted: HashSet<&str> = bindings.iter().map(|b| b.imsi.as_str()).collect();
    let mut position = HashMap::new();
    for (i, sim) in policy.sims.iter().enumerate() {
        if wanted.contains(sim.imsi.text().as_str()) {
            position.insert(sim.imsi.to_string(), i);
        }
    }
    // Candidates: the SIM is in the policy and the address in a pool; newest first, as the
    // newest binding of an address is the packet core's latest word on it.
    let mut candidates: Vec<(&store::Binding, usize)> = Vec::new();
    for binding in bindings {
        let Some(&i) = position.get(&binding.imsi) else {
            continue;
        };
        if !policy.pools.iter().any(|p| in_pool(*p, binding.address)) {
            warn!(
                imsi = %binding.imsi,
                address = %binding.address,
                "Run-time binding not applied: the address is in no pool of the policy."
            );
            continue;
        }
        candidates.push((binding, i));
    }
    candidates.sort_by(|(a, _), (b, _)| b.at.cmp(&a.at).then_with(|| a.imsi.cmp(&b.imsi)));
    // The file's holder of every candidate address.
    let addresses: HashSet<ipnetwork::IpNetwork> =
        candidates.iter().map(|(b, _)| b.address).collect();
    let mut file_holder = HashMap::new();
    for (i, sim) in policy.sims.iter().enumerate() {
        for net in sim_addresses(sim) {
            if addresses.contains(&net) {
                file_holder.insert(net, i);
            }
        }
    }
    // What the running daemon enforces, as a fixed point: a binding applies unless a newer
    // applied binding holds its address, or another SIM holds it in the file and has not been
    // bound elsewhere (a SIM bound elsewhere frees its file address of that family). Taking a
    // binding out can only keep more file addresses held, so this ends.
    let mut applied = vec![true; candidates.len()];
    let mut why: Vec<Option<String>> = vec![None; candidates.len()];
    loop {
        let moved: HashSet<(usize, bool)> = candidates
            .iter()
            .zip(&applied)
            .filter(|(_, on)| **on)
            .map(|((b, i), _)| (*i, b.address.is_ipv6()))
            .collect();
        let mut taken: HashMap<ipnetwork::IpNetwork, usize> = HashMap::new();
        let mut change = false;
        for (k, (binding, i)) in candidates.iter().enumerate() {
            if !applied[k] {
                continue;
            }
            let newer = taken.get(&binding.address).copied();
            let file = file_holder
                .get(&binding.address)
                .copied()
                .filter(|&h| h != *i && !moved.contains(&(h, binding.address.is_ipv6())));
            if let Some(other) = newer {
                applied[k] = false;
                why[k] = Some(format!(
                    "a newer run-time binding gives the address to IMSI {}",
                    candidates[other].0.imsi
                ));
                change = true;
            } else if let Some(holder) = file {
                applied[k] = false;
                why[k] = Some(format!(
                    "the policy file gives the address to IMSI {}",
                    policy.sims[holder].imsi
                ));
                change = true;
            } else {
                taken.insert(binding.address, k);
            }
        }
        if !change {
            break;
        }
    }
    for ((binding, i), (on, why)) in candidates.iter().zip(applied.iter().zip(&why)) {
        if !on {
            warn!(
                imsi = %binding.imsi,
                address = %binding.address,
                why = why.as_deref().unwrap_or_default(),
                "Run-time binding shadowed; it applies again once the address is free and the \
                 policy is reloaded."
            );
            continue;
        }
        let sim = &mut policy.sims[*i];
        changed
            .entry(sim.imsi.to_string())
            .or_insert((sim.ipv4(), sim.ipv6()));
        match binding.address {
            ipnetwork::IpNetwork::V4(net) => sim.set_ipv4(Some(net.ip())),
            ipnetwork::IpNetwork::V6(net) => sim.set_ipv6(Some(net)),
        }
    }
    changed
}

/// A SIM's addresses as networks: its IPv4 /32 and IPv6 /64.
fn sim_addresses(sim: &Sim) -> impl Iterator<Item = ipnetwork::IpNetwork> + '_ {
    let v4 = sim
        .ipv4()
        .map(|a| ipnetwork::IpNetwork::V4(ipnetwork::Ipv4Network::from(a)));
    v4.into_iter()
        .chain(sim.ipv6().map(ipnetwork::IpNetwork::V6))
}

/// Whether `address` lies inside `pool` (same family).
fn in_pool(pool: ipnetwork::IpNetwork, address: ipnetwork::IpNetwork) -> bool {
    match (pool, address) {
        (ipnetwork::IpNetwork::V4(p), ipnetwork::IpNetwork::V4(a)) => p.contains(a.ip()),
        (ipnetwork::IpNetwork::V6(p), ipnetwork::IpNetwork::V6(a)) => {
            p.contains(a.network()) && a.prefix() >= p.prefix()
        }
        _ => false,
    }
}

/// `ADDR` of `sim bind`: an IPv4 address (a /32), or an IPv6 address or /64 prefix (the /64 it
/// lies in, which is what the datapath keys an IPv6 SIM by).
fn parse_binding(text: &str) -> anyhow::Result<ipnetwork::IpNetwork> {
    if let Ok(std::net::IpAddr::V6(a)) = text.parse::<std::net::IpAddr>()
        && let Some(v4) = a.to_ipv4_mapped()
    {
        bail!("`{text}` is an IPv4-mapped IPv6 address; give the IPv4 address ({v4}) itself");
    }
    if let Ok(ip) = text.parse::<std::net::IpAddr>() {
        return Ok(match ip {
            std::net::IpAddr::V4(a) => ipnetwork::IpNetwork::V4(a.into()),
            std::net::IpAddr::V6(a) => ipnetwork::IpNetwork::V6(
                ipnetwork::Ipv6Network::new(a, 64)
                    .and_then(|n| ipnetwork::Ipv6Network::new(n.network(), 64))
                    .map_err(|e| anyhow!("{text}: {e}"))?,
            ),
        });
    }
    match text.parse::<ipnetwork::IpNetwork>() {
        Ok(ipnetwork::IpNetwork::V6(n)) if n.prefix() == 64 => Ok(ipnetwork::IpNetwork::V6(
            ipnetwork::Ipv6Network::new(n.network(), 64).map_err(|e| anyhow!("{text}: {e}"))?,
        )),
        Ok(ipnetwork::IpNetwork::V4(n)) if n.prefix() == 32 => Ok(ipnetwork::IpNetwork::V4(n)),
        _ => bail!(
            "`{text}` is not an address to bind: give an IPv4 address, or an IPv6 address or /64 \
             prefix"
        ),
    }
}

/// The daemon's state; see the module docs.
pub struct Daemon {
    settings: Settings,
    pub(super) enforcer: Enforcer,
    store: Store,
    /// The policy in force: the file's, with the quarantines by command applied.
    policy: ValidatedPolicy,
    /// Its compilation (with the store's stable ids).
    compiled: Compiled,
    /// Names behind the map indices, for `stats`.
    names: State,
    /// SIM index → position in `policy.sims` (`u32::MAX`: none).
    positions: Vec<u32>,
    /// Run-time bindings changed the policy since `compiled` was made: recompile (same ids)
    /// before reading its image.
    compiled_stale: bool,
    /// Streamed `stats` listings in progress (see [`MAX_STREAMS`]).
    streams: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    /// Quarantines set by command, by IMSI, as the store holds them: they outlive reloads and
    /// restarts until released.
    overrides: BTreeMap<String, Override>,
    /// Of those, the IMSIs the policy file quarantines as well.
    file_quarantined: HashSet<String>,
    /// Run-time bindings as the store holds them (applied or shadowed), by (IMSI, IPv6).
    bindings: HashMap<(String, bool), store::Binding>,
    /// The file's addresses of the SIMs a run-time binding changed.
    file_addresses: HashMap<String, FileAddresses>,
    /// IMEI states from RADIUS accounting, by IMSI, as the store holds them.
    imei: HashMap<String, store::ImeiState>,
    applied_at: u64,
    applies: u64,
    generation: u8,
    ifaces: Vec<Iface>,
    /// Sessions the last sweep left, for `status`.
    sessions_live: usize,
    /// Which sweeps read the whole session table.
    scan_plan: crate::scan_plan::ScanPlan,
    /// A change was made in place but raising the epoch failed: retried by every sweep.
    recheck_pending: bool,
    /// Flow export, when collectors are given.
    flow_export: Option<FlowExport>,
    /// Prometheus metrics, when served.
    metrics: Option<std::sync::Arc<crate::telemetry::metrics::Metrics>>,
    /// Where deny events go, when anywhere.
    deny_writer: Option<crate::telemetry::events::Writer>,
    /// The deny-event path's counters.
    event_stats: std::sync::Arc<crate::telemetry::events::EventStats>,
    /// What the previous `top` read: when, every SIM's counters, the segment totals.
    top_previous: Option<TopSample>,
    /// Denied packets per SIM index and drop reason since the previous `top`, from the deny
    /// events (at most [`TOP_DENY_SIMS`] SIMs).
    deny_by_sim: HashMap<u32, [u64; 16]>,
    /// Alert detectors, their outputs (none: alerts are off) and counters.
    alerts: crate::telemetry::alerts::Engine,
    alert_sink: Option<crate::telemetry::alerts::Sink>,
    alert_stats: std::sync::Arc<crate::telemetry::alerts::AlertStats>,
    /// When the previous alert round ran.
    alerts_at: Instant,
    /// The RADIUS accounting path's counters.
    radius_stats: std::sync::Arc<crate::bindings::radius::Stats>,
    /// IMSIs admitted by RADIUS accounting since the last apply (recorded in the store, not yet
    /// in the policy in force).
    admissions_pending: HashSet<String>,
    /// RADIUS sessions stopped, by (client, Acct-Session-Id), and when: a later Start of one is
    /// stale.
    stopped: HashMap<(String, String), i64>,
    /// When each RADIUS client last sent Accounting-On/Off: its requests made before are stale.
    client_resets: HashMap<String, i64>,
    /// When the last reload to add admitted SIMs failed.
    admissions_failed: Option<Instant>,
    /// A reload is due to add them.
    admissions_due: bool,
    /// The REST API's `/events` subscribers, when the API is on.
    event_stream:
        Option<tokio::sync::broadcast::Sender<std::sync::Arc<crate::control::rest::StreamEvent>>>,
}

/// SIMs whose drop reasons `top` keeps between two calls at most.
const TOP_DENY_SIMS: usize = 100_000;

/// One reading of the counters for `top`.
struct TopSample {
    at: Instant,
    sims: Vec<enforcer_common::maps::SimCounters>,
    verdicts: Vec<enforcer_common::maps::Counter>,
}

/// With only the alerts reading sweeps (no flow export), the whole session table is read this
/// often (ns); between, sweeps pick the sessions that changed.
const ALERT_FULL_SCAN_NS: u64 = 60_000_000_000;

/// The flow export's meter and exporter, and where the meter's state goes at a stop.
pub(crate) struct FlowExport {
    meter: crate::telemetry::meter::Meter,
    exporter: crate::telemetry::exporter::Exporter,
    state: std::path::PathBuf,
    /// Dropped traffic of the current interval, from the deny events.
    drops: crate::telemetry::drops::Drops,
    /// The interval drops are summed over (the active timeout), ns.
    drops_interval_ns: u64,
}

impl Daemon {
    pub(super) fn new(
        settings: Settings,
        enforcer: Enforcer,
        store: Store,
        loaded: Loaded,
        ifaces: Vec<Iface>,
    ) -> Self {
        let Loaded { policy, prepared } = loaded;
        let names = State::new(&policy, &prepared.compiled, &settings.pin_dir);
        let positions = sim_positions(&prepared.compiled);
        Self {
            settings,
            enforcer,
            store,
            names,
            positions,
            compiled_stale: false,
            streams: std::sync::Arc::default(),
            overrides: overrides_by_imsi(&prepared.overrides),
            file_quarantined: prepared.file_quarantined,
            bindings: bindings_by_key(prepared.bindings),
            file_addresses: prepared.file_addresses,
            imei: imei_by_imsi(prepared.imei),
            policy,
            compiled: prepared.compiled,
            applied_at: now(),
            applies: 0,
            generation: 0,
            ifaces,
            sessions_live: 0,
            scan_plan: crate::scan_plan::ScanPlan::default(),
            recheck_pending: false,
            flow_export: None,
            metrics: None,
            deny_writer: None,
            event_stats: std::sync::Arc::default(),
            top_previous: None,
            deny_by_sim: HashMap::new(),
            alerts: crate::telemetry::alerts::Engine::default(),
            alert_sink: None,
            alert_stats: std::sync::Arc::default(),
            alerts_at: Instant::now(),
            radius_stats: std::sync::Arc::default(),
            admissions_pending: HashSet::new(),
            stopped: HashMap::new(),
            client_resets: HashMap::new(),
            admissions_failed: None,
            admissions_due: false,
            event_stream: None,
        }
    }

    /// Send deny events to the REST API's `/events` subscribers too.
    pub(super) fn set_event_stream(
        &mut self,
        stream: tokio::sync::broadcast::Sender<std::sync::Arc<crate::control::rest::StreamEvent>>,
    ) {
        self.event_stream = Some(stream);
    }

    /// Raise alerts through `sink` (none: alerts are off), counting in `stats`.
    pub(super) fn set_alerts(
        &mut self,
        sink: Option<crate::telemetry::alerts::Sink>,
        stats: std::sync::Arc<crate::telemetry::alerts::AlertStats>,
    ) {
        self.alert_sink = sink;
        self.alert_stats = stats;
    }

    /// The thresholds and names of SIM index `sim` under the policy in force.
    fn alert_view(&self, sim: u32) -> Option<crate::telemetry::alerts::SimView> {
        let position = *self.positions.get(sim as usize)?;
        let found = self.policy.sims.get(position as usize)?;
        let segment = self.policy.segments.get(usize::from(found.segment))?;
        Some(crate::telemetry::alerts::SimView {
            alerts: segment.alerts,
            imsi: found.imsi.to_string(),
            segment: segment.name.clone(),
        })
    }

    /// Whether any segment asks for `what` of its alerts.
    fn alerts_use(&self, what: impl Fn(&crate::policy::Alerts) -> bool) -> bool {
        self.alert_sink.is_some() && self.policy.segments.iter().any(|s| what(&s.alerts))
    }

    /// One alert round after a sweep: deny rates, new destinations among `live`, bursts.
    fn alert_round(
        &mut self,
        now_ns: u64,
        live: &[(
            enforcer_common::session::SessionKey,
            enforcer_common::session::Session,
        )],
    ) {
        if self.alert_sink.is_none() {
            return;
        }
        let interval_s = self.alerts_at.elapsed().as_secs_f64();
        self.alerts_at = Instant::now();
        let sessions: Vec<_> = live
            .iter()
            .filter(|(_, s)| s.flags & enforcer_common::session::SESSION_INBOUND == 0)
            .map(|(key, s)| {
                let (_, peer) = crate::telemetry::endpoints(key, s.flags);
                (s.sim, peer.0, key.proto, peer.1)
            })
            .collect();
        let bytes: Vec<(u32, u64)> = if self.alerts_use(|a| a.burst.is_some()) {
            let table = self.enforcer.sim_table();
            self.positions
                .iter()
                .enumerate()
                .filter_map(|(i, &p)| {
                    let found = self.policy.sims.get(p as usize)?;
                    self.policy
                        .segments
                        .get(usize::from(found.segment))?
                        .alerts
                        .burst?;
                    let index = u32::try_from(i).ok()?;
                    let c = table.counters(index);
                    Some((index, c.pass_bytes + c.drop_bytes))
                })
                .collect()
        } else {
            Vec::new()
        };
        let mut out = Vec::new();
        let mut engine = std::mem::take(&mut self.alerts);
        engine.round(
            now_ns,
            interval_s,
            &sessions,
            &bytes,
            |sim| self.alert_view(sim),
            &mut out,
        );
        self.alerts = engine;
        if let Some(sink) = &self.alert_sink {
            sink.send(&out);
        }
    }

    /// The fleet's activity since the previous `top`: every SIM's counters read through the
    /// mapped `SIMS` (no syscall per SIM), the segments' from `VERDICT_STATS`.
    fn top(&mut self, limit: usize) -> anyhow::Result<crate::control::TopReport> {
        use crate::control::{TopReport, TopSegment, TopSim};
        use enforcer_common::{DropReason, PassReason, Verdict, maps::SEGMENT_NONE};
        let table = self.enforcer.sim_table();
        let slots = u32::try_from(self.positions.len())
            .unwrap_or(u32::MAX)
            .min(table.entries());
        let sims: Vec<_> = (0..slots).map(|i| table.counters(i)).collect();
        let verdicts = crate::counters::verdicts(
            self.enforcer
                .map(names::VERDICT_STATS)
                .context("VERDICT_STATS missing")?,
            self.names.segments.len(),
        )
        .context("reading the segment counters")?;
        let now = Instant::now();
        let previous = self.top_previous.take();
        let interval_s = previous
            .as_ref()
            .map_or(0.0, |p| now.duration_since(p.at).as_secs_f64());
        let rate = |now: u64, before: u64| {
            if interval_s > 0.0 {
                now.saturating_sub(before) as f64 / interval_s
            } else {
                now as f64
            }
        };
        let zero = enforcer_common::maps::SimCounters::default();
        let deny_by_sim = std::mem::take(&mut self.deny_by_sim);
        let mut busy: Vec<(u64, TopSim)> = sims
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let before = previous
                    .as_ref()
                    .and_then(|p| p.sims.get(i))
                    .unwrap_or(&zero);
                let moved = c.pass_packets.saturating_sub(before.pass_packets)
                    + c.drop_packets.saturating_sub(before.drop_packets);
                if moved == 0 || self.positions.get(i).is_none_or(|&p| p == u32::MAX) {
                    return None;
                }
                let index = u32::try_from(i).ok()?;
                let names = self.flow_names(index, self.segment_of(index), u32::MAX);
                let mut reasons: Vec<(String, u64)> = deny_by_sim
                    .get(&index)
                    .map(|counts| {
                        DropReason::ALL
                            .iter()
                            .filter(|r| counts[**r as usize] > 0)
                            .map(|r| (r.name().to_owned(), counts[*r as usize]))
                            .collect()
                    })
                    .unwrap_or_default();
                reasons.sort_by_key(|r| std::cmp::Reverse(r.1));
                Some((
                    moved,
                    TopSim {
                        imsi: names.imsi,
                        segment: names.segment,
                        pass_pps: rate(c.pass_packets, before.pass_packets),
                        pass_bps: rate(c.pass_bytes, before.pass_bytes),
                        drop_pps: rate(c.drop_packets, before.drop_packets),
                        drop_reasons: reasons,
                    },
                ))
            })
            .collect();
        busy.sort_by_key(|b| std::cmp::Reverse(b.0));
        busy.truncate(limit);
        let blocks = self
            .names
            .segments
            .iter()
            .enumerate()
            .filter_map(|(id, name)| Some((u32::try_from(id).ok()?, name.clone()?)))
            .chain(std::iter::once((SEGMENT_NONE, String::new())));
        let sum = |verdicts: &[enforcer_common::maps::Counter], block: u32, pass: bool| {
            let slots: Vec<u32> = if pass {
                PassReason::ALL
                    .iter()
                    .map(|&r| Verdict::Pass(r, 0).stats_slot())
                    .collect()
            } else {
                DropReason::ALL
                    .iter()
                    .map(|&r| Verdict::Drop(r).stats_slot())
                    .collect()
            };
            slots.iter().fold((0u64, 0u64), |(p, b), &slot| {
                let c = verdicts
                    .get(enforcer_common::maps::verdict_stats_index(block, slot) as usize)
                    .copied()
                    .unwrap_or_default();
                (p + c.packets, b + c.bytes)
            })
        };
        let segments = blocks
            .map(|(block, segment)| {
                let (pass, pass_bytes) = sum(&verdicts, block, true);
                let (drop, _) = sum(&verdicts, block, false);
                let (pass0, pass_bytes0, drop0) = previous.as_ref().map_or((0, 0, 0), |p| {
                    let (a, b) = sum(&p.verdicts, block, true);
                    (a, b, sum(&p.verdicts, block, false).0)
                });
                TopSegment {
                    segment,
                    pass_pps: rate(pass, pass0),
                    drop_pps: rate(drop, drop0),
                    pass_bps: rate(pass_bytes, pass_bytes0),
                }
            })
            .collect();
        self.top_previous = Some(TopSample {
            at: now,
            sims,
            verdicts,
        });
        Ok(TopReport {
            interval_s,
            sims: busy.into_iter().map(|(_, s)| s).collect(),
            segments,
        })
    }

    /// A SIM index's segment id in the policy in force (`u16::MAX` for none).
    fn segment_of(&self, index: u32) -> u16 {
        self.positions
            .get(index as usize)
            .and_then(|&p| self.policy.sims.get(p as usize))
            .map_or(u16::MAX, |s| {
                self.compiled
                    .ids
                    .segments
                    .get(usize::from(s.segment))
                    .copied()
                    .unwrap_or(u16::MAX)
            })
    }

    /// Write deny events with `writer` (none: they are not read), counting in `stats`.
    pub(super) fn set_deny_events(
        &mut self,
        writer: Option<crate::telemetry::events::Writer>,
        stats: std::sync::Arc<crate::telemetry::events::EventStats>,
    ) {
        self.deny_writer = writer;
        self.event_stats = stats;
    }

    /// The RADIUS accounting path's counters.
    pub(super) fn radius_stats(&self) -> std::sync::Arc<crate::bindings::radius::Stats> {
        std::sync::Arc::clone(&self.radius_stats)
    }

    /// The deny-event path's counters.
    pub(super) fn event_stats(&self) -> std::sync::Arc<crate::telemetry::events::EventStats> {
        std::sync::Arc::clone(&self.event_stats)
    }

    /// Name `events` (IMSI, MSISDN, segment, interface) and hand them to the writer; with
    /// flow export, sum them into the interval's dropped traffic too.
    fn write_deny_events(&mut self, events: &[enforcer_common::maps::DenyEvent]) {
        if let Some(sink) = &self.alert_sink {
            let mut out = Vec::new();
            self.alerts.deny(events, monotonic_coarse_ns(), &mut out);
            sink.send(&out);
        }
        if let Some(export) = &mut self.flow_export {
            for event in events {
                export.drops.add(event);
            }
        }
        for event in events {
            if event.sim == enforcer_common::maps::DENY_NO_SIM
                || (self.deny_by_sim.len() >= TOP_DENY_SIMS
                    && !self.deny_by_sim.contains_key(&event.sim))
            {
                continue;
            }
            let counts = self.deny_by_sim.entry(event.sim).or_insert([0; 16]);
            if let Some(slot) = counts.get_mut(usize::from(event.reason)) {
                *slot += 1 + u64::from(event.suppressed);
            }
        }
        let stream = self
            .event_stream
            .as_ref()
            .filter(|s| s.receiver_count() > 0);
        if self.deny_writer.is_none() && stream.is_none() {
            return;
        }
        for event in events {
            let record =
                crate::telemetry::events::record(
                    event,
                    |sim, segment| {
                        let found = self
                            .positions
                            .get(sim as usize)
                            .and_then(|&p| self.policy.sims.get(p as usize));
                        (
                            Some(found.map_or_else(
                                || format!("(SIM index {sim})"),
                                |s| s.imsi.to_string(),
                            )),
                            found.and_then(|s| s.msisdn()).map(|m| m.to_string()),
                            self.names
                                .segments
                                .get(usize::from(segment))
                                .and_then(Clone::clone),
                        )
                    },
                    |ifindex| {
                        self.ifaces
                            .iter()
                            .find(|i| i.ifindex == ifindex)
                            .map_or_else(|| format!("ifindex {ifindex}"), |i| i.name.clone())
                    },
                    |sim, dst, proto, port| {
                        let position = *self.positions.get(sim as usize)?;
                        explain::nearby_rule(&self.policy, position as usize, dst, proto, port)
                    },
                );
            if let Some(writer) = &self.deny_writer {
                writer.write(&record);
            }
            if let Some(stream) = stream
                && let Ok(json) = serde_json::to_string(&record)
            {
                let _ = stream.send(std::sync::Arc::new(crate::control::rest::StreamEvent {
                    kind: "deny",
                    json,
                }));
            }
        }
    }

    /// The metrics the HTTP server encodes: kernel counters from the pinned `VERDICT_STATS`,
    /// the exporter's counters, and the daemon's state, published now and as it changes.
    pub(super) fn start_metrics(&mut self) -> std::sync::Arc<crate::telemetry::metrics::Metrics> {
        let verdicts = aya::maps::MapData::from_pin(self.settings.pin_dir.join(names::VERDICT_STATS))
            .map(aya::maps::Map::PerCpuArray)
            .map_err(|err| warn!(error = %err, "Cannot open the pinned verdict counters; /metrics has no packet counts."))
            .ok();
        let forwarded = self
            .settings
            .xdp_forward
            .then(|| {
                aya::maps::MapData::from_pin(self.settings.pin_dir.join(names::FORWARD_STATS))
                    .map(aya::maps::Map::PerCpuArray)
                    .map_err(|err| warn!(error = %err, "Cannot open the pinned forwarding counters; /metrics has no XDP forwarding counts."))
                    .ok()
            })
            .flatten();
        let metrics = std::sync::Arc::new(crate::telemetry::metrics::Metrics::new(
            verdicts,
            forwarded,
            self.flow_export
                .as_ref()
                .map(|e| std::sync::Arc::clone(e.exporter.stats())),
            self.deny_writer
                .is_some()
                .then(|| std::sync::Arc::clone(&self.event_stats)),
            self.alert_sink
                .is_some()
                .then(|| std::sync::Arc::clone(&self.alert_stats)),
            self.settings
                .radius
                .is_some()
                .then(|| std::sync::Arc::clone(&self.radius_stats)),
        ));
        metrics
            .sessions_capacity
            .set(i64::from(self.enforcer.capacity().sessions));
        self.metrics = Some(std::sync::Arc::clone(&metrics));
        self.publish_metrics();
        metrics
    }

    /// Publish the daemon's state to the metrics: segments, SIMs by state, sessions, map
    /// fill, generation. At start, after each apply and each session sweep.
    fn publish_metrics(&self) {
        let Some(metrics) = &self.metrics else {
            return;
        };
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        metrics.set_segments(self.names.segments.clone());
        let counts = self.sim_counts();
        metrics
            .sims
            .with_label_values(&["active"])
            .set(gauge(counts.active));
        metrics
            .sims
            .with_label_values(&["quarantined"])
            .set(gauge(counts.quarantined));
        metrics.sessions.set(gauge(self.sessions_live));
        for fill in self.map_fills() {
            let label = [fill.map.as_str()];
            metrics
                .map_entries
                .with_label_values(&label)
                .set(gauge(fill.used));
            metrics
                .map_capacity
                .with_label_values(&label)
                .set(i64::from(fill.capacity));
        }
        metrics.policy_generation.set(i64::from(self.generation));
    }

    /// Start the flow export if collectors are given: the meter takes over what a stopped
    /// daemon saved (`<store>.flows`), the exporter thread sends the templates.
    pub(super) fn start_export(&mut self) -> anyhow::Result<()> {
        use crate::telemetry::{exporter, meter::Meter};
        let Some(export) = &self.settings.export else {
            return Ok(());
        };
        // The sockets first: the saved state is taken (and its file removed) only once
        // nothing can fail any more.
        let exporter = exporter::Exporter::start(&exporter::ExportConfig {
            collectors: export.collectors.clone(),
            domain: export.domain,
            mtu: export.mtu,
            template_refresh: std::time::Duration::from_secs(export.template_refresh),
            max_rate: export.max_rate,
        })
        .context("opening the IPFIX collectors' sockets")?;
        let now = monotonic_coarse_ns();
        let state = self.settings.store.with_extension("flows");
        let mut meter = Meter::new(export.active_timeout, export.idle_timeout, None);
        let loaded = match meter.load(&state, now) {
            Ok(0) => {
                // No saved state: sessions already in the table were counted by a daemon
                // that did not stop cleanly (or there are none): export from here on.
                meter = Meter::new(export.active_timeout, export.idle_timeout, Some(now));
                0
            }
            Ok(n) => n,
            Err(err) => {
                warn!(file = %state.display(), error = %err, "Ignoring the saved flow export state; sessions already open are exported from now on.");
                meter = Meter::new(export.active_timeout, export.idle_timeout, Some(now));
                0
            }
        };
        info!(
            collectors = ?export.collectors,
            active_timeout_s = export.active_timeout,
            idle_timeout_s = export.idle_timeout,
            sessions_taken_over = loaded,
            "Exporting flows over IPFIX."
        );
        self.flow_export = Some(FlowExport {
            meter,
            exporter,
            state,
            drops: crate::telemetry::drops::Drops::default(),
            drops_interval_ns: export.active_timeout.saturating_mul(1_000_000_000),
        });
        Ok(())
    }

    /// The names a flow record of `due` carries.
    fn flow_names(&self, sim_index: u32, segment: u16, rule: u32) -> crate::telemetry::FlowNames {
        let sim = self
            .positions
            .get(sim_index as usize)
            .and_then(|&p| self.policy.sims.get(p as usize));
        crate::telemetry::FlowNames {
            imsi: sim.map_or_else(
                || format!("(SIM index {sim_index})"),
                |s| s.imsi.to_string(),
            ),
            msisdn: sim
                .and_then(|s| s.msisdn())
                .map_or_else(String::new, |m| m.to_string()),
            segment: self
                .names
                .segments
                .get(usize::from(segment))
                .and_then(Clone::clone)
                .unwrap_or_default(),
            rule: self
                .names
                .rules
                .get(rule as usize)
                .and_then(Clone::clone)
                .unwrap_or_default(),
        }
    }

    /// Hand `due` to the exporter in batches; each batch queued counts as exported. Returns
    /// the records queued.
    fn export_due(
        &self,
        export: &mut FlowExport,
        due: &[crate::telemetry::meter::Due],
        now_ns: u64,
    ) -> usize {
        use crate::telemetry::{exporter::BATCH, records};
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let mut queued = 0;
        for chunk in due.chunks(BATCH / 2) {
            let mut batch = Vec::with_capacity(chunk.len() * 2);
            for d in chunk {
                records(
                    d,
                    &std::sync::Arc::new(self.flow_names(d.sim, d.segment, d.rule)),
                    now_ns,
                    wall_ms,
                    &mut batch,
                );
            }
            let n = batch.len();
            if export.exporter.offer(batch).is_err() {
                break;
            }
            export.meter.commit(chunk, now_ns);
            queued += n;
        }
        queued
    }

    /// Export the interval's dropped traffic once it is `drops_interval_ns` old (at once with
    /// `now`); sums the exporter's queue has no room for wait for the next round.
    fn export_drops(&self, export: &mut FlowExport, now: bool) {
        use crate::telemetry::{FlowNames, drops, exporter::BATCH};
        let mono = monotonic_coarse_ns();
        if export.drops.is_empty()
            || (!now && mono.saturating_sub(export.drops.since_ns) < export.drops_interval_ns)
        {
            return;
        }
        let wall_ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        let to_wall = |t: u64| wall_ms.saturating_sub(mono.saturating_sub(t) / 1_000_000);
        let mut sums = export.drops.take();
        while !sums.is_empty() {
            let rest = sums.split_off(sums.len().saturating_sub(BATCH));
            let batch: Vec<_> = rest
                .iter()
                .map(|(key, sum)| {
                    let names = if key.sim == enforcer_common::maps::DENY_NO_SIM {
                        FlowNames::default()
                    } else {
                        self.flow_names(key.sim, key.segment, u32::MAX)
                    };
                    drops::record(key, sum, std::sync::Arc::new(names), to_wall)
                })
                .collect();
            if export.exporter.offer(batch).is_err() {
                sums.extend(rest);
                export.drops.restore(sums);
                return;
            }
        }
    }

    /// Stop the flow export: what was not exported yet goes out as forced ends, and what was
    /// exported per session is saved for the next daemon.
    pub(super) fn stop_export(&mut self) {
        let Some(mut export) = self.flow_export.take() else {
            return;
        };
        let now = monotonic_coarse_ns();
        if let Ok(sweep) = self.enforcer.expire_sessions(
            0,
            &enforcer_common::session::Timeouts {
                tcp_syn: u64::MAX,
                tcp_established: u64::MAX,
                tcp_closed: u64::MAX,
                udp: u64::MAX,
                icmp: u64::MAX,
            },
            true,
        ) {
            // A last reading (nothing expires with these timeouts), so the flush is current.
            let _ = export.meter.round(now, &sweep.live, &[]);
        }
        self.export_drops(&mut export, true);
        let due = export.meter.flush();
        let deadline = Instant::now() + std::time::Duration::from_secs(2);
        let mut left: &[crate::telemetry::meter::Due] = &due;
        while !left.is_empty() && Instant::now() < deadline {
            let step = left.len().min(crate::telemetry::exporter::BATCH / 2);
            let queued = self.export_due(&mut export, &left[..step], now);
            if queued == 0 && left[..step].iter().any(|d| !d.delta.is_zero()) {
                std::thread::sleep(std::time::Duration::from_millis(10));
                continue;
            }
            left = &left[step..];
        }
        // Sent first, then saved: the state file says exported only of what went out (but
        // for records still queued when the deadline passed, which the exporter logs).
        let _ = export.exporter.finish(std::time::Duration::from_secs(5));
        if let Err(err) = export.meter.save(&export.state) {
            warn!(file = %export.state.display(), error = %err, "Could not save the flow export state; the next daemon exports open sessions from its start on.");
        }
    }

    /// The live sessions, of the SIMs `imsis` only when given, busiest first.
    fn flows(&self, imsis: &[String]) -> anyhow::Result<Vec<crate::control::Flow>> {
        use enforcer_common::session::{self, SessionState};
        let mut only = HashSet::new();
        for imsi in imsis {
            only.insert(self.sim(imsi)?.1);
        }
        let now = monotonic_coarse_ns();
        // `SocketAddr` writes `[v6]:port` and `v4:port`.
        let endpoint = |(ip, port)| std::net::SocketAddr::new(ip, port).to_string();
        let mut flows: Vec<(u64, crate::control::Flow)> = self
            .enforcer
            .sessions()
            .context("reading the session table")?
            .into_iter()
            .filter(|(_, s)| only.is_empty() || only.contains(&s.sim))
            .map(|(key, s)| {
                let (device, peer) = crate::telemetry::endpoints(&key, s.flags);
                let (device, peer) = (endpoint(device), endpoint(peer));
                let direction = if s.flags & session::SESSION_INBOUND != 0 {
                    "inbound"
                } else {
                    "outbound"
                };
                let proto = crate::policy::show::proto_name(key.proto);
                let rule = if s.rule == enforcer_common::rules::AUDIT_RULE {
                    "(audit mode: no rule allows it)".to_owned()
                } else {
                    self.names
                        .rules
                        .get(s.rule as usize)
                        .and_then(Clone::clone)
                        .unwrap_or_else(|| format!("rule #{}", s.rule))
                };
                let flow = crate::control::Flow {
                    imsi: self.imsi_of(s.sim),
                    proto,
                    direction: direction.to_owned(),
                    device,
                    peer,
                    state: SessionState::from_u8(s.state).name().to_owned(),
                    age_s: now.saturating_sub(s.created_ns) / 1_000_000_000,
                    idle_s: now.saturating_sub(s.seen_ns) / 1_000_000_000,
                    packets_out: s.packets[0],
                    bytes_out: s.bytes[0],
                    packets_in: s.packets[1],
                    bytes_in: s.bytes[1],
                    rule,
                };
                (s.bytes[0] + s.bytes[1], flow)
            })
            .collect();
        flows.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.device.cmp(&b.1.device)));
        Ok(flows.into_iter().map(|(_, f)| f).collect())
    }

    /// Remove sessions idle past their timeout (`--*-timeout`).
    fn sweep_sessions(&mut self) {
        if self.recheck_pending {
            self.sessions_recheck();
        }
        let now = monotonic_coarse_ns();
        let learn = self.alerts_use(|a| a.learn_destinations.is_some());
        let full_every = match &self.flow_export {
            Some(export) => Some(export.meter.active_ns()),
            None => learn.then_some(ALERT_FULL_SCAN_NS),
        };
        let (args, full) = self
            .scan_plan
            .next(now, &self.settings.timeouts, full_every);
        match self.enforcer.sweep_sessions(&args, full_every.is_some()) {
            Ok(sweep) => {
                self.scan_plan.done(&args);
                self.sessions_live = sweep.live_count;
                debug!(
                    live = sweep.live_count,
                    expired = sweep.expired.len(),
                    "Sessions swept."
                );
                if let Some(mut export) = self.flow_export.take() {
                    use crate::telemetry::ipfix::EndReason;
                    let ended: Vec<_> = sweep
                        .expired
                        .iter()
                        .map(|&(key, session, closed)| {
                            let reason = if closed {
                                EndReason::EndOfFlow
                            } else {
                                EndReason::Idle
                            };
                            (key, session, reason)
                        })
                        .collect();
                    let due = if full {
                        export.meter.round(now, &sweep.live, &ended)
                    } else {
                        export.meter.round_partial(now, &sweep.live, &ended)
                    };
                    let queued = self.export_due(&mut export, &due, now);
                    self.export_drops(&mut export, false);
                    debug!(
                        due = due.len(),
                        records_queued = queued,
                        tracked = export.meter.len(),
                        "Flow export round."
                    );
                    self.flow_export = Some(export);
                }
                self.alert_round(now, &sweep.live);
                self.publish_metrics();
            }
            Err(err) => warn!(error = %err, "Sweeping idle sessions failed; retrying later."),
        }
    }

    /// After a change made in place (a quarantine, a bind): every session is checked again
    /// on its next packet. A failure is logged and retried by every sweep (10 s) until it
    /// succeeds: the change itself is in the maps, new sessions are judged by it already.
    fn sessions_recheck(&mut self) {
        match self.enforcer.bump_epoch() {
            Ok(_) => self.recheck_pending = false,
            Err(err) => {
                self.recheck_pending = true;
                error!(
                    error = %err,
                    "Raising the policy epoch failed; live sessions are checked against the \
                     change once it succeeds (retried every sweep)."
                );
            }
        }
    }

    /// Write the policy this daemon was created with (overrides applied) into the maps.
    pub(super) fn apply_loaded(&mut self) -> anyhow::Result<()> {
        let report = self.enforcer.apply(&self.compiled.image)?;
        self.generation = report.generation;
        self.applies += 1;
        info!(
            policy = %self.policy.path.display(),
            sims = self.policy.sims.len(),
            rules = self.compiled.rules.iter().flatten().count(),
            quarantined_by_command = self.overrides.len(),
            generation = self.generation,
            entries_written = report.entries_written,
            verified_insns = self.enforcer.verified_instructions().unwrap_or(0),
            "Loaded policy."
        );
        Ok(())
    }

    /// Set every interface's flags and attach through its pinned link; `created` collects the
    /// interfaces that got a new link (for the caller to remove on failure).
    pub(super) fn attach_all(&mut self, created: &mut Vec<String>) -> anyhow::Result<()> {
        for iface in &mut self.ifaces {
            iface.configure(&mut self.enforcer)?;
            if iface.attach(
                &mut self.enforcer,
                &self.settings.pin_dir,
                self.settings.mode,
            )? == How::Created
            {
                created.push(iface.name.clone());
            }
        }
        Ok(())
    }

    /// Handle one event (not `Stop`, which the caller handles).
    pub(crate) fn handle(&mut self, event: Event) {
        match event {
            Event::Command(command, reply) => {
                if let Some(metrics) = &self.metrics {
                    metrics
                        .control_requests
                        .with_label_values(&[command.name()])
                        .inc();
                }
                let answer = match command {
                    Command::Stats {
                        imsis,
                        stream: Some(format),
                    } if imsis.is_empty() => self
                        .stats_stream(format)
                        .unwrap_or_else(|err| Reply::error(&err).into()),
                    command => self.command(command).into(),
                };
                let _ = reply.send(answer);
            }
            Event::Hangup => {
                let path = self.policy.path.clone();
                match self.apply_file(&path) {
                    Ok(applied) => info!(
                        policy = %applied.policy.display(),
                        generation = applied.generation,
                        took_ms = applied.took_ms,
                        "Reloaded policy on SIGHUP."
                    ),
                    Err(err) => error!(
                        policy = %path.display(),
                        error = format!("{err:#}"),
                        "Reload failed; still enforcing the previous policy."
                    ),
                }
            }
            Event::CheckLinks => self.check_links(),
            Event::SweepSessions => self.sweep_sessions(),
            Event::Deny(events) => self.write_deny_events(&events),
            Event::Radius((requests, answer)) => {
                let acks = self.accounting(&requests);
                let _ = answer.send(acks);
            }
            Event::Admit => self.admit_pending(),
            Event::Stop(_) => {}
        }
    }

    fn command(&mut self, command: Command) -> Reply {
        // Status and explain read the compiled image; run-time bindings leave it stale.
        if matches!(command, Command::Status | Command::Explain { .. })
            && let Err(err) = self.refresh_compiled()
        {
            return Reply::error(&err);
        }
        // Changes made in place (not through an apply, whose flip raises the epoch itself):
        // sessions are checked against them on their next packet.
        let in_place = matches!(
            command,
            Command::SimQuarantine { .. }
                | Command::SimRelease { .. }
                | Command::SimBind { .. }
                | Command::SimUnbind { .. }
                | Command::SimImeiReset { .. }
                | Command::SimImeiLock { .. }
        );
        let result = match command {
            Command::Status => Ok(Reply::Status(Box::new(self.status()))),
            Command::Flows { imsis } => self
                .flows(&imsis)
                .map(|flows| Reply::Flows(crate::control::Flows { flows })),
            Command::Stats { imsis, .. } => self.stats(&imsis).map(|r| Reply::Stats(Box::new(r))),
            Command::ApplyPolicy { path } => self.apply_file(&path).map(Reply::Applied),
            Command::Reload => {
                let path = self.policy.path.clone();
                self.apply_file(&path).map(Reply::Applied)
            }
            Command::SimShow { imsi } => self.sim_info(&imsi).map(Reply::Sim),
            Command::SimQuarantine { imsi, source } => {
                self.quarantine(&imsi, &source).map(Reply::Sim)
            }
            Command::SimRelease { imsi } => self.release(&imsi).map(Reply::Sim),
            Command::SimBind {
                imsi,
                address,
                source,
            } => self.bind(&imsi, &address, &source).map(Reply::Sim),
            Command::SimUnbind { imsi, address } => {
                self.unbind(&imsi, address.as_deref()).map(Reply::Sim)
            }
            Command::Explain { query } => {
                self.explain(&query).map(|e| Reply::Explained(Box::new(e)))
            }
            Command::Top { limit } => self.top(limit).map(|t| Reply::Top(Box::new(t))),
            Command::SimList {
                offset,
                limit,
                segment,
                state,
                imsi_prefix,
            } => self
                .sim_list(
                    offset,
                    limit,
                    segment.as_deref(),
                    state.as_deref(),
                    imsi_prefix.as_deref(),
                )
                .map(Reply::Sims),
            Command::SimImeiReset { imsi } => self.imei_reset(&imsi).map(Reply::Sim),
            Command::SimImeiLock { imsi, lock } => {
                self.imei_lock_set(&imsi, lock.as_deref()).map(Reply::Sim)
            }
            Command::SegmentStats => self.read_totals(&[]).map(|totals| {
                Reply::Stats(Box::new(Report::new(&self.names, &totals, Vec::new())))
            }),
            Command::PolicyCheck { text } => Ok(Reply::Checked(self.policy_check(&text))),
            Command::PolicyDiff { text } => {
                self.policy_diff(&text).map(|diff| Reply::Diff { diff })
            }
        };
        if in_place && result.is_ok() {
            self.sessions_recheck();
        }
        result.unwrap_or_else(|err| Reply::error(&err))
    }

    /// Validate, compile and apply `path`; on any error the policy in force stays in force,
    /// in every map (the store may have ids for the refused policy's new SIMs: they are kept
    /// for those IMSIs, as for any other).
    fn apply_file(&mut self, path: &Path) -> anyhow::Result<Applied> {
        let started = Instant::now();
        let result = self.apply_file_inner(path, started);
        if let Some(metrics) = &self.metrics {
            let label = if result.is_ok() { "ok" } else { "error" };
            metrics.policy_applies.with_label_values(&[label]).inc();
            metrics
                .policy_apply_seconds
                .observe(started.elapsed().as_secs_f64());
        }
        if result.is_ok() {
            self.publish_metrics();
        }
        result
    }

    fn apply_file_inner(&mut self, path: &Path, started: Instant) -> anyhow::Result<Applied> {
        let mut policy = crate::policy::load_with(path, &self.settings.load)?;
        let prepared = compile_with(&mut self.store, &mut policy)
            .with_context(|| format!("compiling {} failed", path.display()))?;
        let compiled = &prepared.compiled;
        self.enforcer
            .capacity()
            .check(&compiled.image, compiled.rules.len())
            .with_context(|| {
                format!(
                    "{} does not fit the maps loaded at start; nothing changed. Restart with \
                     larger capacities (--max-sims, --max-nets, --max-rule-entries)",
                    path.display()
                )
            })?;
        let report = self.enforcer.apply(&compiled.image).map_err(|err| {
            anyhow!(err).context(format!(
                "applying {} failed; the previous policy stays in force",
                path.display()
            ))
        })?;
        self.generation = report.generation;
        self.names = State::new(&policy, compiled, &self.settings.pin_dir);
        self.positions = sim_positions(compiled);
        self.policy = policy;
        // The next sweep reads the whole table: a segment that starts learning destinations
        // must see the sessions that stay quiet, and sessions the new policy revokes are
        // found gone sooner.
        self.scan_plan.restart();
        self.overrides = overrides_by_imsi(&prepared.overrides);
        self.file_quarantined = prepared.file_quarantined;
        self.bindings = bindings_by_key(prepared.bindings);
        self.file_addresses = prepared.file_addresses;
        self.imei = imei_by_imsi(prepared.imei);
        self.compiled = prepared.compiled;
        self.compiled_stale = false;
        self.applied_at = now();
        self.applies += 1;
        // Every admitted SIM is in the policy now (or left out, logged).
        self.admissions_pending.clear();
        self.admissions_failed = None;
        release_free_memory();
        Ok(Applied {
            policy: self.policy.path.clone(),
            generation: self.generation,
            sims: self.policy.sims.len(),
            rules: self.compiled.rules.iter().flatten().count(),
            sims_added: report.sims_added,
            sims_removed: report.sims_removed,
            sims_changed: report.sims_changed,
            rule_entries_changed: report.rule_entries_changed,
            entries_written: report.entries_written,
            took_ms: started.elapsed().as_secs_f64() * 1e3,
        })
    }

    /// The SIM with `imsi`: its position in the policy, its stable SIM index and itself.
    fn sim(&self, imsi: &str) -> anyhow::Result<(usize, u32, &Sim)> {
        let key = SimKey::from(Imsi::parse(imsi).ok_or_else(|| {
            anyhow!(crate::control::Invalid(format!(
                "`{imsi}` is not an IMSI (14 or 15 digits)"
            )))
        })?);
        // The store's id space is sorted by IMSI: its SIM index, then the position of that
        // index in the policy (none for an IMSI the store keeps only as retired).
        let found = self.store.allocations().sims.id(&key).and_then(|index| {
            let position = *self.positions.get(index as usize)?;
            (position != u32::MAX).then_some((position as usize, index))
        });
        let (position, index) = found.ok_or_else(|| {
            anyhow!(crate::control::NotFound(format!(
                "IMSI {imsi} is not in the policy in force ({}); add it there first",
                self.policy.path.display()
            )))
        })?;
        Ok((position, index, &self.policy.sims[position]))
    }

    /// Quarantine by command: the store first (so a crash after it still quarantines at the
    /// next start), then the SIM's policy words in `SIMS`, one store each.
    fn quarantine(&mut self, imsi: &str, source: &str) -> anyhow::Result<SimInfo> {
        let (position, index, sim) = self.sim(imsi)?;
        let by_file = sim.state == SimState::Quarantined && !self.overrides.contains_key(imsi);
        let started = Instant::now();
        self.store
            .set_override(imsi, OverrideKind::Quarantine, source)
            .context("recording the quarantine in the store; nothing changed")?;
        self.enforcer.set_sim_quarantine(index, true)?;
        self.policy.sims[position].state = SimState::Quarantined;
        if by_file {
            self.file_quarantined.insert(imsi.to_owned());
        }
        self.overrides.insert(
            imsi.to_owned(),
            Override {
                source: source.to_owned(),
                at: now(),
            },
        );
        warn!(
            imsi,
            source,
            took_us = started.elapsed().as_micros(),
            "SIM quarantined by command."
        );
        self.sim_info(imsi)
    }

    fn release(&mut self, imsi: &str) -> anyhow::Result<SimInfo> {
        let (position, index, _) = self.sim(imsi)?;
        if !self.overrides.contains_key(imsi) {
            let why = if self.policy.sims[position].state == SimState::Quarantined {
                format!(
                    "; the policy file quarantines it ({}): change the file to release it",
                    self.policy.path.display()
                )
            } else {
                String::new()
            };
            bail!("IMSI {imsi} is not quarantined by command{why}; nothing changed");
        }
        self.store
            .clear_override(imsi)
            .context("removing the quarantine from the store; nothing changed")?;
        self.overrides.remove(imsi);
        let by_file = self.file_quarantined.remove(imsi);
        if !by_file {
            self.enforcer.set_sim_quarantine(index, false)?;
            self.policy.sims[position].state = SimState::Active;
        }
        info!(
            imsi,
            still_quarantined_by_policy = by_file,
            "Quarantine lifted."
        );
        self.sim_info(imsi)
    }

    /// Bind `address` to the SIM at run time, in place of its policy file's address of that
    /// family (see [`Daemon::bind_core`]).
    fn bind(&mut self, imsi: &str, address: &str, source: &str) -> anyhow::Result<SimInfo> {
        let net = parse_binding(address)?;
        let wanted = store::Binding {
            imsi: imsi.to_owned(),
            address: net,
            source: source.to_owned(),
            at: i64::try_from(now()).unwrap_or(i64::MAX),
            client: String::new(),
            session: String::new(),
        };
        let imsi = match self.bind_core(wanted, false)? {
            BindResult::Done { imsi, .. } => imsi,
            BindResult::Stale(why) => bail!("{why}; nothing changed"),
        };
        self.sim_info(&imsi)
    }

    /// Bind `wanted.address` to the SIM at run time: the store first, then the bindings map of
    /// the active generation directly (the new address, then the SIM's old one removed: two
    /// hash writes, each seen whole by packets, no generation switch), then the policy in
    /// force. A change costs the same at 1M SIMs as at one: nothing is recompiled (the
    /// compiled image is brought up to date when something reads it).
    ///
    /// An address another SIM holds by run-time binding is refused, unless `take_over`
    /// (RADIUS: the packet core's newest word on an address wins): then the one write of the
    /// address's key moves it from that SIM to this one, so no packet is judged under a SIM
    /// in between, and that SIM falls back to its file address. A request older (`at`) than
    /// the binding it would replace is [`BindResult::Stale`]; one that repeats the binding in
    /// force (same address, client and session) changes nothing.
    fn bind_core(&mut self, wanted: store::Binding, take_over: bool) -> anyhow::Result<BindResult> {
        let net = wanted.address;
        let v6 = net.is_ipv6();
        let (position, index, sim) = self.sim(&wanted.imsi)?;
        let imsi = sim.imsi.to_string();
        let before = (sim.ipv4(), sim.ipv6());
        let old = sim_addresses(sim).find(|a| a.is_ipv6() == v6);
        if !self.policy.pools.iter().any(|p| in_pool(*p, net)) {
            bail!(
                "{net} is in no pool of the policy in force ({}); a SIM's address must lie in a \
                 declared pool. Nothing changed",
                self.policy.path.display()
            );
        }
        let previous = self.bindings.get(&(imsi.clone(), v6)).cloned();
        if let Some(p) = &previous
            && p.address == net
            && p.client == wanted.client
            && p.session == wanted.session
            && old == Some(net)
            && take_over
        {
            return Ok(BindResult::Done {
                imsi,
                changed: false,
            });
        }
        if let Some(p) = previous.as_ref().filter(|p| {
            take_over
                && p.at > wanted.at
                && accounting::other_session(p, &wanted.client, &wanted.session)
        }) {
            return Ok(BindResult::Stale(format!(
                "IMSI {imsi} has a newer session ({}, at {})",
                p.session, p.at
            )));
        }
        let mut taken_from = None;
        if let Some(other) = self.holder(net)?.filter(|&other| other != index) {
            let other_imsi = self.imsi_of(other);
            let by_command = self
                .bindings
                .get(&(other_imsi.clone(), v6))
                .filter(|b| b.address == net)
                .cloned();
            match by_command {
                Some(b) if take_over => {
                    if b.at > wanted.at {
                        return Ok(BindResult::Stale(format!(
                            "{net} was bound to IMSI {other_imsi} later (at {})",
                            b.at
                        )));
                    }
                    taken_from = Some(other_imsi);
                }
                Some(_) => bail!(
                    "{net} is bound to IMSI {other_imsi} by command; unbind it there first \
                     (`enforcer sim unbind {other_imsi} {net}`). Nothing changed"
                ),
                None => bail!(
                    "{net} belongs to IMSI {other_imsi} in the policy file ({}); change the file \
                     to move it. Nothing changed",
                    self.policy.path.display()
                ),
            }
        }
        let wanted = store::Binding {
            imsi: imsi.clone(),
            ..wanted
        };
        self.store
            .put_binding(&wanted)
            .context("recording the binding in the store; nothing changed")?;
        if let Some(other) = &taken_from
            && let Err(err) = self.store.clear_binding(other, v6)
        {
            let _ = self.restore_store_binding(&imsi, v6, previous.as_ref());
            return Err(anyhow!(err).context("recording the binding in the store; nothing changed"));
        }
        if let Err(err) = self.move_binding(index, old, Some(net)) {
            let _ = self.restore_store_binding(&imsi, v6, previous.as_ref());
            if let Some(other) = &taken_from
                && let Some(b) = self.bindings.get(&(other.clone(), v6)).cloned()
            {
                let _ = self.store.put_binding(&b);
            }
            return Err(err.context("binding failed; nothing changed"));
        }
        if let Some(other) = taken_from {
            self.release_taken(&other, v6);
        }
        set_address(&mut self.policy.sims[position], v6, Some(net));
        self.compiled_stale = true;
        self.file_addresses.entry(imsi.clone()).or_insert(before);
        debug!(imsi, address = %net, source = %wanted.source, "Address bound at run time.");
        self.bindings.insert((imsi.clone(), v6), wanted);
        Ok(BindResult::Done {
            imsi,
            changed: true,
        })
    }

    /// Put the store's binding of `imsi` and family `v6` back as it was (`previous`).
    fn restore_store_binding(
        &mut self,
        imsi: &str,
        v6: bool,
        previous: Option<&store::Binding>,
    ) -> Result<(), store::StoreError> {
        match previous {
            Some(p) => self.store.put_binding(p),
            None => self.store.clear_binding(imsi, v6).map(|_| ()),
        }
    }

    /// The SIM `imsi` lost its run-time binding of family `v6` to another SIM (whose write of
    /// the address's key took it over): it falls back to its file address of that family if
    /// that is free, else to none.
    fn release_taken(&mut self, imsi: &str, v6: bool) {
        self.bindings.remove(&(imsi.to_owned(), v6));
        let Ok((position, index, _)) = self.sim(imsi) else {
            return;
        };
        let (file_v4, file_v6) = self.file_addresses.get(imsi).copied().unwrap_or_default();
        let restore = if v6 {
            file_v6.map(ipnetwork::IpNetwork::V6)
        } else {
            file_v4.map(|a| ipnetwork::IpNetwork::V4(a.into()))
        };
        let restore = restore.filter(|r| matches!(self.holder(*r), Ok(None)));
        if let Some(r) = restore
            && let Err(err) = self.set_bound(r, Some(index))
        {
            warn!(imsi, address = %r, error = format!("{err:#}"), "Could not restore the file address.");
        }
        let restored = restore.filter(|r| matches!(self.holder(*r), Ok(Some(i)) if i == index));
        set_address(&mut self.policy.sims[position], v6, restored);
        self.compiled_stale = true;
        info!(imsi, restored = ?restored, "Run-time binding taken over by another SIM.");
    }

    /// Remove the SIM's run-time bindings (only `address`'s, if given): its policy file's
    /// addresses apply again, directly in the active generation as for [`Daemon::bind`].
    fn unbind(&mut self, imsi: &str, address: Option<&str>) -> anyhow::Result<SimInfo> {
        let only = address.map(parse_binding).transpose()?;
        let (imsi, removed) =
            self.unbind_core(imsi, |b| only.is_none_or(|a| a == b.address), true)?;
        if removed == 0 {
            bail!(
                "IMSI {imsi} has no run-time binding{}; nothing changed",
                only.map_or_else(String::new, |a| format!(" of {a}"))
            );
        }
        self.sim_info(&imsi)
    }

    /// Remove the SIM's run-time bindings that `which` picks (see [`Daemon::unbind`]); returns
    /// the IMSI as the policy spells it and how many were removed. The SIM's file address of
    /// each family applies again; if another SIM holds it by command now, `strict` (a command)
    /// refuses, otherwise (RADIUS: the session is over, whatever else holds) the SIM is left
    /// with no address of that family.
    fn unbind_core(
        &mut self,
        imsi: &str,
        which: impl Fn(&store::Binding) -> bool,
        strict: bool,
    ) -> anyhow::Result<(String, usize)> {
        let (position, index, sim) = self.sim(imsi)?;
        let imsi = sim.imsi.to_string();
        let mine: Vec<store::Binding> = [false, true]
            .iter()
            .filter_map(|&v6| self.bindings.get(&(imsi.clone(), v6)))
            .filter(|b| which(b))
            .cloned()
            .collect();
        if mine.is_empty() {
            return Ok((imsi, 0));
        }
        let (file_v4, file_v6) = self.file_addresses.get(&imsi).copied().unwrap_or_default();
        let mut file_v4 = file_v4.map(|a| ipnetwork::IpNetwork::V4(a.into()));
        let mut file_v6 = file_v6.map(ipnetwork::IpNetwork::V6);
        // Every check before the first write: the file's address must still be free.
        for b in &mine {
            let restore = if b.address.is_ipv6() {
                &mut file_v6
            } else {
                &mut file_v4
            };
            if let Some(address) = *restore
                && let Some(other) = self.holder(address)?.filter(|&o| o != index)
            {
                if strict {
                    bail!(
                        "IMSI {imsi}'s file address {address} is bound to IMSI {} by command \
                         now; unbind it there first. Nothing changed",
                        self.imsi_of(other)
                    );
                }
                *restore = None;
            }
        }
        for b in &mine {
            self.store
                .clear_binding(&imsi, b.address.is_ipv6())
                .context("removing the binding from the store")?;
        }
        for b in &mine {
            let v6 = b.address.is_ipv6();
            let restore = if v6 { file_v6 } else { file_v4 };
            // A binding the file shadowed was never in the maps: the SIM keeps its address.
            let current = sim_addresses(&self.policy.sims[position]).find(|a| a.is_ipv6() == v6);
            if current != Some(b.address) {
                self.bindings.remove(&(imsi.clone(), v6));
                continue;
            }
            if let Err(err) = self.move_binding(index, current, restore) {
                for b in &mine {
                    let _ = self.store.put_binding(b);
                }
                return Err(err.context("unbinding failed"));
            }
            set_address(&mut self.policy.sims[position], v6, restore);
            self.compiled_stale = true;
            self.bindings.remove(&(imsi.clone(), v6));
        }
        if !self.bindings.contains_key(&(imsi.clone(), false))
            && !self.bindings.contains_key(&(imsi.clone(), true))
        {
            self.file_addresses.remove(&imsi);
        }
        debug!(imsi, removed = mine.len(), "Run-time binding removed.");
        Ok((imsi, mine.len()))
    }

    fn holder(&mut self, net: ipnetwork::IpNetwork) -> anyhow::Result<Option<u32>> {
        Ok(match net {
            ipnetwork::IpNetwork::V4(n) => self.enforcer.bound_v4(n.ip().octets())?,
            ipnetwork::IpNetwork::V6(n) => self.enforcer.bound_v6(v6_key(n))?,
        })
    }

    /// Point `to` at SIM index `index` and then unbind `from`, in the active generation; on
    /// an error the first write is undone.
    fn move_binding(
        &mut self,
        index: u32,
        from: Option<ipnetwork::IpNetwork>,
        to: Option<ipnetwork::IpNetwork>,
    ) -> anyhow::Result<()> {
        if from == to {
            return Ok(());
        }
        if let Some(to) = to {
            self.set_bound(to, Some(index))?;
        }
        if let Some(from) = from
            && let Err(err) = self.set_bound(from, None)
        {
            if let Some(to) = to {
                let _ = self.set_bound(to, None);
            }
            return Err(err);
        }
        Ok(())
    }

    fn set_bound(&mut self, net: ipnetwork::IpNetwork, sim: Option<u32>) -> anyhow::Result<()> {
        match net {
            ipnetwork::IpNetwork::V4(n) => self.enforcer.set_binding_v4(n.ip().octets(), sim)?,
            ipnetwork::IpNetwork::V6(n) => self.enforcer.set_binding_v6(v6_key(n), sim)?,
        }
        Ok(())
    }

    /// The IMSI of SIM index `index` in the policy in force (its number if none).
    fn imsi_of(&self, index: u32) -> String {
        self.positions
            .get(index as usize)
            .and_then(|&p| self.policy.sims.get(p as usize))
            .map_or_else(|| format!("(SIM index {index})"), |s| s.imsi.to_string())
    }

    /// Bring the compiled image up to date with the policy in force after run-time bindings
    /// (same ids; nothing is written to the maps, which the bindings changed already).
    fn refresh_compiled(&mut self) -> anyhow::Result<()> {
        if self.compiled_stale {
            self.compiled = compile::compile(&self.policy, &self.compiled.ids)?;
            self.compiled_stale = false;
        }
        Ok(())
    }

    /// [`explain::explain`] on the policy in force (which holds the quarantines and bindings set
    /// by command); for a quarantine by command it names who set it and `sim release`.
    fn explain(&self, query: &Query) -> anyhow::Result<Explanation> {
        let mut explanation = explain::explain(&self.policy, &self.compiled, query)?;
        match &mut explanation {
            Explanation::Sim(s) => {
                if let Some(o) = self.overrides.get(&s.sim.imsi) {
                    s.summary = format!(
                        "SIM {} is quarantined by command ({}): everything it sends is dropped, \
                         whatever its rules; `enforcer sim release {}` lifts it",
                        s.sim.imsi, o.source, s.sim.imsi
                    );
                }
            }
            Explanation::Packet(p) => {
                // The policy in force holds the quarantine already, so the verdict is right;
                // only the way out differs from a quarantine the file sets.
                let by_command = p
                    .sender
                    .as_ref()
                    .filter(|_| p.reason == "quarantined")
                    .and_then(|sim| self.overrides.get(&sim.imsi).map(|o| (sim.imsi.clone(), o)));
                if let Some((imsi, o)) = by_command {
                    p.why = format!(
                        "SIM {imsi} is quarantined by command ({}): everything it sends is \
                         dropped",
                        o.source
                    );
                    p.fix = Some(format!("enforcer sim release {imsi}"));
                }
            }
        }
        Ok(explanation)
    }

    fn sim_info(&self, imsi: &str) -> anyhow::Result<SimInfo> {
        let (position, index, sim) = self.sim(imsi)?;
        let quarantine = self.overrides.get(imsi).cloned();
        let state = sim.state;
        let counters = self.enforcer.sim_table().counters(index);
        let mut addresses = Vec::new();
        if let Some(v4) = sim.ipv4() {
            addresses.push(v4.to_string());
        }
        if let Some(v6) = sim.ipv6() {
            addresses.push(v6.to_string());
        }
        Ok(SimInfo {
            imsi: sim.imsi.to_string(),
            segment: self.policy.segment_name(sim.segment).to_owned(),
            state: if sim.imei_mismatch() && state == SimState::Active {
                "imei_mismatch".to_owned()
            } else {
                state.name().to_owned()
            },
            imei: {
                let lock = self
                    .imei_lock_of(position)
                    .map(|l| crate::policy::ImeiLock::text(&l));
                let seen = self.imei.get(sim.imsi.to_string().as_str());
                (lock.is_some() || seen.is_some()).then(|| crate::control::ImeiInfo {
                    lock: lock.unwrap_or_default(),
                    learned: seen.map(|s| s.learned.clone()).unwrap_or_default(),
                    seen: seen.map(|s| s.seen.clone()).unwrap_or_default(),
                    mismatch: seen.is_some_and(|s| s.mismatch),
                })
            },
            quarantine,
            addresses,
            bindings: [false, true]
                .iter()
                .filter_map(|&v6| self.bindings.get(&(sim.imsi.to_string(), v6)))
                .map(|b| Bound {
                    address: b.address.to_string(),
                    source: b.source.clone(),
                    session: b.session.clone(),
                    at: u64::try_from(b.at).unwrap_or(0),
                    applied: sim_addresses(sim).any(|a| a == b.address),
                })
                .collect(),
            pass_packets: counters.pass_packets,
            pass_bytes: counters.pass_bytes,
            drop_packets: counters.drop_packets,
            drop_bytes: counters.drop_bytes,
        })
    }

    fn stats(&self, imsis: &[String]) -> anyhow::Result<Report> {
        let mut only = Vec::new();
        for imsi in imsis {
            only.push(self.sim(imsi)?.1);
        }
        let totals = self.read_totals(&only)?;
        if only.is_empty() {
            // An older client: every row inside the reply.
            let rows = self
                .names
                .sim_rows(&self.policy, &self.compiled.ids, &totals, &[]);
            return Ok(Report::new(&self.names, &totals, rows));
        }
        // With IMSIs, only their slots were read and only their rows are made, not a pass over
        // the whole fleet.
        let mut rows = Vec::with_capacity(imsis.len());
        for imsi in imsis {
            let (_, index, sim) = self.sim(imsi)?;
            let segment = self.compiled.ids.segments[usize::from(sim.segment)];
            rows.push(
                self.names
                    .sim_row(sim, segment, &totals.sims[index as usize]),
            );
        }
        Ok(Report::new(&self.names, &totals, rows))
    }

    /// The segment and rule counters, and the SIM counters of the SIM indices in `only` (the
    /// other SIM slots zero, up to the highest of them).
    fn read_totals(&self, only: &[u32]) -> anyhow::Result<Totals> {
        let map = |name| {
            self.enforcer
                .map(name)
                .with_context(|| format!("{name} missing"))
        };
        let slots = only.iter().map(|&i| i as usize + 1).max().unwrap_or(0);
        Totals::read_only(
            self.enforcer.sim_table(),
            map(names::VERDICT_STATS)?,
            map(names::RULE_STATS)?,
            slots,
            only,
            self.names.segments.len(),
            self.compiled.rules.len(),
        )
        .context("reading counters")
    }

    /// `stats` of the whole fleet, streamed: the reply holds the segments and rules; the SIM
    /// rows follow it, formatted on a thread of their own from a snapshot of the names (16
    /// bytes a SIM) and the live counters of the mapped `SIMS`, in chunks through a bounded
    /// channel, so neither a million rows nor a slow reader weighs on the actor.
    fn stats_stream(&self, format: RowFormat) -> anyhow::Result<Answer> {
        // Each listing holds a snapshot of 16 bytes a SIM until its reader has taken the rows.
        let slot = StreamSlot::take(&self.streams).ok_or_else(|| {
            anyhow!(
                "{MAX_STREAMS} stats listings of the whole fleet are in progress; try again when \
                 one has finished, or ask for some SIMs with --imsi"
            )
        })?;
        let totals = self.read_totals(&[])?;
        let report = Report::new(&self.names, &totals, Vec::new());
        let rows: Vec<RowName> = self
            .policy
            .sims
            .iter()
            .zip(&self.compiled.ids.sims)
            .map(|(sim, &index)| RowName {
                imsi: sim.imsi,
                index,
                segment: self.compiled.ids.segments[usize::from(sim.segment)],
                quarantined: sim.state == SimState::Quarantined,
            })
            .collect();
        let segments: Vec<String> = self
            .names
            .segments
            .iter()
            .map(|name| {
                let name = name.as_deref().unwrap_or_default();
                match format {
                    RowFormat::Table => name.to_owned(),
                    RowFormat::Json => serde_json::to_string(name).unwrap_or_default(),
                }
            })
            .collect();
        let table = self.enforcer.shared_sim_table();
        let (tx, rx) = tokio::sync::mpsc::channel::<Vec<u8>>(4);
        std::thread::Builder::new()
            .name("enforcer-stats".into())
            .spawn(move || {
                stream_rows(&rows, &segments, &table, format, &tx);
                drop(slot);
            })
            .context("starting the thread that writes the SIM rows")?;
        Ok(Answer {
            reply: Reply::Stats(Box::new(report)),
            rows: Some(rx),
        })
    }

    /// SIMs by state; the policy's states include the quarantines by command.
    fn sim_counts(&self) -> SimCounts {
        let quarantined = self
            .policy
            .sims
            .iter()
            .filter(|s| s.state == SimState::Quarantined)
            .count();
        let quarantined_by_command = self
            .overrides
            .keys()
            .filter(|imsi| self.sim(imsi).is_ok() && !self.file_quarantined.contains(*imsi))
            .count();
        SimCounts {
            total: self.policy.sims.len(),
            active: self.policy.sims.len() - quarantined,
            quarantined,
            quarantined_by_command,
        }
    }

    /// Every map sized by the policy, with what the policy in force uses of it, and the
    /// session table as of the last sweep.
    fn map_fills(&self) -> Vec<MapFill> {
        self.enforcer
            .capacity()
            .fill(&self.compiled.image, self.compiled.rules.len())
            .into_iter()
            .map(|fill| MapFill {
                map: fill.map.to_owned(),
                what: fill.what.to_owned(),
                used: fill.needed,
                capacity: fill.capacity,
            })
            .chain(std::iter::once(MapFill {
                map: names::SESSIONS.to_owned(),
                what: "sessions (as of the last sweep)".to_owned(),
                used: self.sessions_live,
                capacity: self.enforcer.capacity().sessions,
            }))
            .collect()
    }

    fn status(&mut self) -> Status {
        let pinned = links::pinned(&self.settings.pin_dir);
        let mode = match self.settings.mode {
            aya::programs::XdpMode::Skb => "skb",
            _ => "driver",
        };
        let interfaces = self
            .ifaces
            .iter()
            .map(|iface| Interface {
                iface: iface.name.clone(),
                mode: mode.to_owned(),
                core_facing: iface.core_facing,
                service_facing: iface.service_facing,
                forward: match (iface.xdp_forward, iface.redirect_target) {
                    (false, _) => "stack",
                    (true, true) => "xdp",
                    (true, false) => "xdp-in",
                }
                .to_owned(),
                link: pinned.iter().find(|a| a.iface == iface.name).cloned(),
                reattached: iface.reattached,
            })
            .collect();
        let maps = self.map_fills();
        let program = self.enforcer.program().ok().and_then(|p| p.info().ok());
        Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pin_dir: self.settings.pin_dir.clone(),
            policy: self.policy.path.clone(),
            applied_at: self.applied_at,
            generation: self.generation,
            applies: self.applies,
            program_id: program.as_ref().map_or(0, aya::programs::ProgramInfo::id),
            verified_instructions: program
                .and_then(|p| p.verified_instruction_count())
                .unwrap_or(0),
            interfaces,
            xdp_forward: if self.settings.xdp_forward {
                self.enforcer
                    .forward_stats()
                    .unwrap_or_else(|err| {
                        warn!(error = %err, "Cannot read the XDP forwarding counters.");
                        Vec::new()
                    })
                    .into_iter()
                    .map(|(outcome, packets)| crate::control::ForwardCount {
                        outcome: outcome.to_owned(),
                        packets,
                    })
                    .collect()
            } else {
                Vec::new()
            },
            sims: self.sim_counts(),
            maps,
            export: self.flow_export.as_ref().map(|e| {
                use std::sync::atomic::Ordering::Relaxed;
                let stats = e.exporter.stats();
                crate::control::ExportStatus {
                    collectors: self
                        .settings
                        .export
                        .as_ref()
                        .map(|x| x.collectors.iter().map(ToString::to_string).collect())
                        .unwrap_or_default(),
                    sessions_tracked: e.meter.len(),
                    records_sent: stats.records_sent.load(Relaxed),
                    messages_sent: stats.messages_sent.load(Relaxed),
                    messages_failed: stats.messages_failed.load(Relaxed),
                    records_deferred: stats.records_deferred.load(Relaxed),
                    sessions_adopted: e.meter.adopted(),
                }
            }),
            session_scan: match self.enforcer.scans_in_kernel() {
                Ok(()) => "kernel".to_owned(),
                Err(why) => format!("batch: {}", why.lines().next().unwrap_or(why)),
            },
        }
    }

    /// Re-attach every interface whose link no longer runs on it: deleted and re-created
    /// interfaces get a new ifindex, and the kernel detaches a link whose device goes away.
    /// With `--forward xdp`: ask the kernel again whether interface `i` sends frames
    /// redirected to it (a veth's peer may have turned GRO or an XDP program on or off, a
    /// driver been reconfigured), and update `FORWARD_DEVS` when the answer changed. A kernel
    /// that cannot say keeps the current setting.
    fn recheck_redirect(&mut self, i: usize) {
        let iface = &self.ifaces[i];
        if !iface.xdp_forward || iface.ifindex == 0 {
            return;
        }
        let Ok(now) = crate::xdp_features::can_take_redirects(iface.ifindex) else {
            return;
        };
        if now == iface.redirect_target {
            return;
        }
        let (ifindex, flags) = (iface.ifindex, iface.flags());
        match self.enforcer.set_iface_redirect(ifindex, flags, now) {
            Ok(()) => {
                self.ifaces[i].redirect_target = now;
                warn!(
                    iface = %self.ifaces[i].name,
                    redirect_target = now,
                    "The interface's driver {} frames redirected by XDP now: packets routed out \
                     of it {}.",
                    if now { "sends" } else { "no longer sends" },
                    if now { "are redirected to it" } else { "take the kernel's stack" }
                );
            }
            Err(err) => warn!(
                iface = %self.ifaces[i].name,
                error = %err,
                "Cannot update the XDP forwarding targets; checking again later."
            ),
        }
    }

    fn check_links(&mut self) {
        for i in 0..self.ifaces.len() {
            let name = self.ifaces[i].name.clone();
            let now_index = match if_index(&name) {
                Ok(index) => index,
                // Only "no such device" means gone; anything else (out of descriptors) says
                // nothing about the interface: look again next time.
                Err(err)
                    if err
                        .downcast_ref::<std::io::Error>()
                        .is_some_and(|e| e.raw_os_error() == Some(libc::ENODEV)) =>
                {
                    if self.ifaces[i].ifindex != 0 {
                        warn!(iface = %name, "Interface is gone; it is attached again when it returns.");
                        self.ifaces[i].ifindex = 0;
                    }
                    continue;
                }
                Err(err) => {
                    debug!(iface = %name, error = %err, "Cannot look the interface up; checking later.");
                    continue;
                }
            };
            match links::link_info(&links::link_pin(&self.settings.pin_dir, &name)) {
                Ok(info) if info.ifindex == now_index => {
                    self.recheck_redirect(i);
                    continue;
                }
                // The pin exists but cannot be read (out of descriptors): not a reason to attach.
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    debug!(iface = %name, error = %err, "Cannot read the link; checking later.");
                    continue;
                }
                _ => {}
            }
            self.ifaces[i].ifindex = now_index;
            let result = self.ifaces[i].configure(&mut self.enforcer).and_then(|()| {
                self.ifaces[i].attach(
                    &mut self.enforcer,
                    &self.settings.pin_dir,
                    self.settings.mode,
                )
            });
            match result {
                Ok(_) => {
                    self.ifaces[i].reattached += 1;
                    warn!(iface = %name, ifindex = now_index, "Interface re-created: attached again.");
                }
                Err(err) => error!(
                    iface = %name,
                    error = format!("{err:#}"),
                    "Interface re-created, but attaching to it failed; retrying."
                ),
            }
        }
    }
}

/// The store's overrides by IMSI, as the control protocol shows them.
fn overrides_by_imsi(overrides: &[store::Override]) -> BTreeMap<String, Override> {
    overrides
        .iter()
        .filter(|o| o.kind == OverrideKind::Quarantine)
        .map(|o| {
            (
                o.imsi.clone(),
                Override {
                    source: o.source.clone(),
                    at: u64::try_from(o.at).unwrap_or(0),
                },
            )
        })
        .collect()
}

/// SIM index → position in the policy (`u32::MAX` for an index no SIM of it has).
fn sim_positions(compiled: &Compiled) -> Vec<u32> {
    let mut positions = vec![u32::MAX; compiled.ids.sim_slots()];
    for (position, &index) in compiled.ids.sims.iter().enumerate() {
        positions[index as usize] = u32::try_from(position).unwrap_or(u32::MAX);
    }
    positions
}

/// Run-time bindings by (IMSI, IPv6).
fn imei_by_imsi(states: Vec<store::ImeiState>) -> HashMap<String, store::ImeiState> {
    states.into_iter().map(|s| (s.imsi.clone(), s)).collect()
}

fn bindings_by_key(bindings: Vec<store::Binding>) -> HashMap<(String, bool), store::Binding> {
    bindings
        .into_iter()
        .map(|b| ((b.imsi.clone(), b.address.is_ipv6()), b))
        .collect()
}

/// The `SIM_V6_V2` key of an IPv6 /64: its first eight bytes.
fn v6_key(net: ipnetwork::Ipv6Network) -> [u8; 8] {
    let octets = net.network().octets();
    [
        octets[0], octets[1], octets[2], octets[3], octets[4], octets[5], octets[6], octets[7],
    ]
}

/// Set `sim`'s address of the family (`v6`) to `net` (`None`: none).
fn set_address(sim: &mut Sim, v6: bool, net: Option<ipnetwork::IpNetwork>) {
    match (v6, net) {
        (false, Some(ipnetwork::IpNetwork::V4(n))) => sim.set_ipv4(Some(n.ip())),
        (true, Some(ipnetwork::IpNetwork::V6(n))) => sim.set_ipv6(Some(n)),
        (false, _) => sim.set_ipv4(None),
        (true, _) => sim.set_ipv6(None),
    }
}

/// Hand the heap's free memory back to the kernel after a load or reload, whose temporaries
/// (the file's text, validation's duplicate checks, the previous policy) glibc would otherwise
/// keep for reuse: a daemon that holds a million SIMs for months should not also hold the
/// peak of its last reload.
pub(super) fn release_free_memory() {
    // SAFETY: `malloc_trim` only returns free heap pages to the kernel; it has no
    // preconditions and touches no memory in use.
    unsafe {
        libc::malloc_trim(0);
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Streamed `stats` listings at once: each holds a snapshot (16 bytes a SIM, 16 MB at 1M)
/// and up to a megabyte of formatted rows until its reader takes them (or the 60 s rows
/// timeout drops it), so their number is bounded, not the readers'.
const MAX_STREAMS: usize = 2;

/// One of the [`MAX_STREAMS`] listing slots, given back when dropped.
struct StreamSlot(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl StreamSlot {
    fn take(streams: &std::sync::Arc<std::sync::atomic::AtomicUsize>) -> Option<Self> {
        use std::sync::atomic::Ordering;
        streams
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < MAX_STREAMS).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(std::sync::Arc::clone(streams)))
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    }
}

/// What a streamed `stats` row needs of a SIM, copied when the command arrives.
struct RowName {
    imsi: Imsi,
    index: u32,
    segment: u16,
    quarantined: bool,
}

/// Format `rows` in chunks of about 256 KiB into `tx`, then [`END_OF_ROWS`]; stops early when
/// the connection is gone (the receiver dropped).
fn stream_rows(
    rows: &[RowName],
    segments: &[String],
    table: &crate::sim_table::SimTable,
    format: RowFormat,
    tx: &tokio::sync::mpsc::Sender<Vec<u8>>,
) {
    const CHUNK: usize = 256 * 1024;
    let mut chunk = Vec::with_capacity(CHUNK + 512);
    for row in rows {
        let imsi = row.imsi.text();
        let segment = segments
            .get(usize::from(row.segment))
            .map_or("", String::as_str);
        let state = if row.quarantined {
            SimState::Quarantined.name()
        } else {
            SimState::Active.name()
        };
        let counters = table.counters(row.index);
        match format {
            RowFormat::Table => report::table_row(&mut chunk, &imsi, segment, state, &counters),
            RowFormat::Json => report::json_row(&mut chunk, &imsi, segment, state, &counters),
        }
        if chunk.len() >= CHUNK {
            let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK + 512));
            if tx.blocking_send(full).is_err() {
                return;
            }
        }
    }
    chunk.extend_from_slice(END_OF_ROWS);
    let _ = tx.blocking_send(chunk);
}

#[cfg(test)]
mod tests {
    use super::{apply_bindings, store};
    use crate::policy::{self, ValidatedPolicy};

    const POLICY: &str = r#"
pools = ["10.64.0.0/16"]
[[segments]]
name = "s"
rules = []
[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
segment = "s"
[[sims]]
imsi = "001010000000002"
ipv4 = "10.64.0.2"
segment = "s"
[[sims]]
imsi = "001010000000003"
ipv4 = "10.64.0.3"
segment = "s"
"#;

    fn bind(sim: u8, address: &str, at: i64) -> store::Binding {
        store::Binding {
            imsi: format!("00101000000000{sim}"),
            address: address.parse().expect("address"),
            source: "test".into(),
            at,
            client: String::new(),
            session: String::new(),
        }
    }

    /// The IPv4 address of each SIM once `bindings` are applied.
    fn addresses(bindings: &[store::Binding]) -> Vec<String> {
        let mut policy: ValidatedPolicy =
            policy::from_str(std::path::Path::new("t.toml"), POLICY).expect("valid");
        apply_bindings(&mut policy, bindings);
        policy
            .sims
            .iter()
            .map(|s| s.ipv4().map(|a| a.to_string()).unwrap_or_default())
            .collect()
    }

    #[test]
    fn a_sim_bound_elsewhere_frees_its_file_address() {
        // SIM 2 moved to .50, then SIM 1 took .2: both hold after a restart.
        let got = addresses(&[bind(2, "10.64.0.50", 1), bind(1, "10.64.0.2", 2)]);
        assert_eq!(got, ["10.64.0.2", "10.64.0.50", "10.64.0.3"]);
        // A chain of moves, in any order in the store.
        let got = addresses(&[
            bind(3, "10.64.0.50", 1),
            bind(1, "10.64.0.2", 3),
            bind(2, "10.64.0.3", 2),
        ]);
        assert_eq!(got, ["10.64.0.2", "10.64.0.3", "10.64.0.50"]);
    }

    #[test]
    fn the_file_holder_keeps_an_address_it_was_not_moved_from() {
        let got = addresses(&[bind(1, "10.64.0.2", 2)]);
        assert_eq!(got, ["10.64.0.1", "10.64.0.2", "10.64.0.3"], "shadowed");
        // SIM 2's bind onto SIM 3's address is shadowed, so SIM 2 keeps .2, which shadows
        // SIM 1's bind in turn.
        let got = addresses(&[bind(2, "10.64.0.3", 1), bind(1, "10.64.0.2", 2)]);
        assert_eq!(got, ["10.64.0.1", "10.64.0.2", "10.64.0.3"]);
    }

    #[test]
    fn one_address_goes_to_the_newest_binding_only() {
        let got = addresses(&[bind(3, "10.64.0.77", 1), bind(1, "10.64.0.77", 2)]);
        assert_eq!(got, ["10.64.0.77", "10.64.0.2", "10.64.0.3"]);
        let got = addresses(&[bind(3, "10.64.0.77", 5), bind(1, "10.64.0.77", 2)]);
        assert_eq!(got, ["10.64.0.1", "10.64.0.2", "10.64.0.77"]);
    }
}
