//! The daemon's commands and their transports. Every client (the CLI today, a REST API later)
//! sends one [`Command`] and gets one [`Reply`]; the daemon's actor (`crate::runtime`) is the
//! only thing that acts on them, in the order they arrive.
//!
//! The first transport is a Unix stream socket ([`unix`]): one JSON object per line each way,
//! one command per connection. The socket is created mode 0600 in a directory the daemon
//! creates mode 0700, so only root (or the daemon's own user) can talk to it: its replies name
//! every IMSI.

pub mod rest;
pub mod unix;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::{
    explain::{Explanation, Query},
    links::Attachment,
    report::Report,
};

/// Where `enforcer run` listens unless told otherwise, and where clients look.
pub const DEFAULT_SOCKET: &str = "/run/enforcer/enforcer.sock";

/// How streamed SIM rows of [`Command::Stats`] are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RowFormat {
    /// Lines of the `enforcer stats` table ([`crate::report::table_row`]).
    Table,
    /// One [`crate::report::SimRow`] as compact JSON per line ([`crate::report::json_row`]).
    Json,
}

/// The line that ends streamed SIM rows: a client that reaches the connection's end without it
/// knows the rows are incomplete (the daemon stopped half-way).
pub const END_OF_ROWS: &[u8] = b"#end\n";

/// What the actor answers a command with: the reply line, and for a streamed `stats` the SIM
/// rows that follow it on the connection, in chunks, from a thread of their own (so a slow
/// reader holds up neither the actor nor other clients).
#[derive(Debug)]
pub struct Answer {
    /// The reply line.
    pub reply: Reply,
    /// Bytes to write after the reply line, until the sender is dropped.
    pub rows: Option<tokio::sync::mpsc::Receiver<Vec<u8>>>,
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Self { reply, rows: None }
    }
}

/// A request to the running daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum Command {
    /// What is loaded and attached ([`Status`]).
    Status,
    /// Counters, with the names behind them ([`Report`]); `imsis` filters the SIM rows and is
    /// read for those SIMs only.
    Stats {
        /// IMSIs to show; empty for all.
        imsis: Vec<String>,
        /// For the whole fleet (`imsis` empty): send the SIM rows after the reply, already
        /// formatted, one per line until the connection closes, instead of inside it; the
        /// reply's `sims` is then empty. A million SIMs as one JSON reply took seconds to
        /// encode and decode. Absent (older clients): the rows are in the reply.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stream: Option<RowFormat>,
    },
    /// Live sessions ([`Flow`]); `imsis` filters them by device, empty for all.
    Flows {
        /// IMSIs whose sessions to show; empty for all.
        imsis: Vec<String>,
    },
    /// Validate, compile and apply a policy file; it becomes the file SIGHUP reloads.
    ApplyPolicy {
        /// Policy file, as the daemon (not the client) resolves it: pass an absolute path.
        path: PathBuf,
    },
    /// Read the policy file in force again and apply it (what SIGHUP does).
    Reload,
    /// One SIM: its segment, state, addresses and counters.
    SimShow {
        /// IMSI (3GPP TS 23.003: 15 digits).
        imsi: String,
    },
    /// Drop all traffic of a SIM from the next packet on, until released; survives reloads and
    /// restarts.
    SimQuarantine {
        /// IMSI.
        imsi: String,
        /// Who asked (free text, kept with the override, e.g. `cli:root`).
        source: String,
    },
    /// Lift a quarantine set by [`Command::SimQuarantine`] (a quarantine the policy file sets
    /// stays).
    SimRelease {
        /// IMSI.
        imsi: String,
    },
    /// Bind an address to a SIM at run time, in place of its policy file's address of that
    /// family; survives reloads and restarts until unbound.
    SimBind {
        /// IMSI.
        imsi: String,
        /// IPv4 address, or IPv6 address or /64 prefix.
        address: String,
        /// Who asked.
        source: String,
    },
    /// Remove a SIM's run-time bindings (only this address's, if given).
    SimUnbind {
        /// IMSI.
        imsi: String,
        /// The binding to remove; all of the SIM's when absent.
        address: Option<String>,
    },
    /// The verdict on a packet, or what a SIM may reach, under the policy in force and the
    /// quarantines set by command.
    Explain {
        /// The question.
        query: Query,
    },
    /// The fleet's activity since the previous `top` (of any client): the busiest SIMs,
    /// segment totals, drop reasons ([`TopReport`]).
    Top {
        /// SIMs to return at most, the busiest by packets (passed and dropped) first.
        limit: usize,
    },
    /// The segment and rule counters alone ([`Report`] without SIM rows).
    SegmentStats,
    /// A page of the SIMs of the policy in force, in policy order, filtered ([`SimPage`]).
    SimList {
        /// SIMs to skip (of those the filters keep).
        offset: usize,
        /// SIMs to return at most (1 to [`MAX_PAGE`]).
        limit: usize,
        /// Only SIMs of this segment.
        #[serde(default)]
        segment: Option<String>,
        /// Only SIMs in this state (`active`, `quarantined`, `imei_mismatch`).
        #[serde(default)]
        state: Option<String>,
        /// Only IMSIs that start with these digits.
        #[serde(default)]
        imsi_prefix: Option<String>,
    },
    /// Forget the device an IMEI lock `learn` learned for the SIM and lift its
    /// `imei_mismatch` state: the next data session's device is learned (a device replaced on
    /// purpose).
    SimImeiReset {
        /// IMSI.
        imsi: String,
    },
    /// Set the SIM's IMEI lock in place of the policy's, and judge the device of its last
    /// session against it at once; survives reloads and restarts.
    SimImeiLock {
        /// IMSI.
        imsi: String,
        /// An IMEI (14-16 digits), `tac:` and 8 digits, `learn` or `off`; absent: the
        /// policy's lock again.
        #[serde(default)]
        lock: Option<String>,
    },
    /// Validate a policy text as if it were the file in force (an inventory it names is read
    /// beside that file); changes nothing ([`PolicyCheck`]).
    PolicyCheck {
        /// The policy, TOML.
        text: String,
    },
    /// What applying a policy text would change against the file in force ([`Reply::Diff`]);
    /// changes nothing.
    PolicyDiff {
        /// The policy, TOML.
        text: String,
    },
}

/// Most SIMs a [`Command::SimList`] page holds.
pub const MAX_PAGE: usize = 1000;

/// The reply to [`Command::SimList`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SimPage {
    /// SIMs the filters keep, over every page.
    pub total: usize,
    /// The page's first SIM's place among them.
    pub offset: usize,
    /// The page.
    pub sims: Vec<SimSummary>,
}

/// One SIM of a [`SimPage`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SimSummary {
    /// IMSI (3GPP TS 23.003).
    pub imsi: String,
    /// ICCID (ITU-T E.118), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iccid: Option<String>,
    /// MSISDN (E.164), if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msisdn: Option<String>,
    /// Segment name.
    pub segment: String,
    /// `active`, `quarantined` or `imei_mismatch`.
    pub state: String,
    /// Its addresses in force (IPv4, IPv6 /64).
    pub addresses: Vec<String>,
}

/// The reply to [`Command::PolicyCheck`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PolicyCheck {
    /// Whether the policy is valid.
    pub valid: bool,
    /// Its errors, `file:line:column: message` each (empty when valid).
    pub errors: Vec<String>,
    /// SIMs, segments and rules of a valid policy.
    pub sims: usize,
    /// Segments.
    pub segments: usize,
    /// Rules (segments' and SIMs' own).
    pub rules: usize,
}

/// The reply to [`Command::Top`]: rates over the interval since the previous `top`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopReport {
    /// Seconds the rates are over (0 for the first `top`: totals since start, no rates).
    pub interval_s: f64,
    /// SIMs with traffic in the interval, busiest first (at most `limit`).
    pub sims: Vec<TopSim>,
    /// Every segment's totals, and `""` for traffic of no segment.
    pub segments: Vec<TopSegment>,
}

/// One SIM in [`TopReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopSim {
    /// IMSI.
    pub imsi: String,
    /// Segment name.
    pub segment: String,
    /// Packets passed per second.
    pub pass_pps: f64,
    /// Bytes passed per second.
    pub pass_bps: f64,
    /// Packets dropped per second.
    pub drop_pps: f64,
    /// Its drop reasons in the interval, most frequent first (from the deny events: empty
    /// when none were reported).
    pub drop_reasons: Vec<(String, u64)>,
}

/// One segment in [`TopReport`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TopSegment {
    /// Segment name (`""`: no segment).
    pub segment: String,
    /// Packets passed per second.
    pub pass_pps: f64,
    /// Packets dropped per second.
    pub drop_pps: f64,
    /// Bytes passed per second.
    pub pass_bps: f64,
}

impl Command {
    /// Its name on the wire (`status`, `sim_quarantine`, ...), for logs and metrics.
    #[must_use]
    pub fn name(&self) -> &'static str {
        match self {
            Command::Status => "status",
            Command::Stats { .. } => "stats",
            Command::Flows { .. } => "flows",
            Command::ApplyPolicy { .. } => "apply_policy",
            Command::Reload => "reload",
            Command::SimShow { .. } => "sim_show",
            Command::SimQuarantine { .. } => "sim_quarantine",
            Command::SimRelease { .. } => "sim_release",
            Command::SimBind { .. } => "sim_bind",
            Command::SimUnbind { .. } => "sim_unbind",
            Command::Explain { .. } => "explain",
            Command::Top { .. } => "top",
            Command::SegmentStats => "segment_stats",
            Command::SimList { .. } => "sim_list",
            Command::SimImeiReset { .. } => "sim_imei_reset",
            Command::SimImeiLock { .. } => "sim_imei_lock",
            Command::PolicyCheck { .. } => "policy_check",
            Command::PolicyDiff { .. } => "policy_diff",
        }
    }
}

/// The daemon's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    /// For [`Command::Status`].
    Status(Box<Status>),
    /// For [`Command::Stats`].
    Stats(Box<Report>),
    /// For [`Command::ApplyPolicy`] and [`Command::Reload`].
    Applied(Applied),
    /// For the `Sim*` commands.
    Sim(SimInfo),
    /// For [`Command::Explain`].
    Explained(Box<Explanation>),
    /// For [`Command::Top`].
    Top(Box<TopReport>),
    /// For [`Command::Flows`].
    Flows(Flows),
    /// For [`Command::SimList`].
    Sims(SimPage),
    /// For [`Command::PolicyCheck`].
    Checked(PolicyCheck),
    /// For [`Command::PolicyDiff`]: [`crate::diff::PolicyDiff`] as JSON.
    Diff {
        /// The changes.
        diff: serde_json::Value,
    },
    /// The command failed and changed nothing; the text says why and what to do.
    Error {
        /// Message for the operator.
        message: String,
        /// What kind of failure, for transports that name it (HTTP status): absent for a
        /// command the daemon refused.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        kind: Option<ErrorKind>,
    },
}

/// Kinds of [`Reply::Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// What the command names does not exist (an IMSI not in the policy).
    NotFound,
    /// The command's arguments are invalid.
    Invalid,
}

/// An error of a command that names what is missing (an IMSI not in the policy): carried in an
/// `anyhow` chain so that the transports can tell "not found" from "refused".
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NotFound(pub String);

/// An error of a command whose arguments are invalid (not an IMSI, not an address).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Invalid(pub String);

impl Reply {
    /// A refusal with `message` (no kind).
    #[must_use]
    pub fn refused(message: impl Into<String>) -> Self {
        Reply::Error {
            message: message.into(),
            kind: None,
        }
    }

    /// The error reply for `err`, its kind read from the chain ([`NotFound`], [`Invalid`]).
    #[must_use]
    pub fn error(err: &anyhow::Error) -> Self {
        let kind = if err.chain().any(|e| e.is::<NotFound>()) {
            Some(ErrorKind::NotFound)
        } else if err.chain().any(|e| e.is::<Invalid>()) {
            Some(ErrorKind::Invalid)
        } else {
            None
        };
        Reply::Error {
            message: format!("{err:#}"),
            kind,
        }
    }
}

/// The reply to [`Command::Flows`] (a struct: the reply is an internally tagged enum, which
/// cannot carry a bare list).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Flows {
    /// Live sessions, busiest (most bytes both ways) first.
    pub flows: Vec<Flow>,
}

/// One live session (`SESSIONS`), as `enforcer flows` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Flow {
    /// The device's IMSI (3GPP TS 23.003).
    pub imsi: String,
    /// IP protocol name (`tcp`, `udp`, `icmp`, `icmpv6`).
    pub proto: String,
    /// Who opened it: `outbound` (the device) or `inbound` (the peer, by an inbound rule).
    #[serde(default)]
    pub direction: String,
    /// The device's address and port (an echo's identifier for ICMP).
    pub device: String,
    /// The peer's address and port.
    pub peer: String,
    /// TCP state (`syn_sent`, `established`, `closing`, `closed`), `open` for others.
    pub state: String,
    /// Seconds since the session opened.
    pub age_s: u64,
    /// Seconds since its last packet.
    pub idle_s: u64,
    /// Packets and bytes from the device.
    pub packets_out: u64,
    /// Bytes from the device.
    pub bytes_out: u64,
    /// Packets to the device.
    pub packets_in: u64,
    /// Bytes to the device.
    pub bytes_in: u64,
    /// The rule that allowed it, as `stats` names rules (`owner @ file:line: description`).
    pub rule: String,
}

/// A running daemon's state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Status {
    /// Daemon process id.
    pub pid: u32,
    /// `enforcer` version.
    pub version: String,
    /// Pin directory (bpffs).
    #[schema(value_type = String)]
    pub pin_dir: PathBuf,
    /// The policy file in force.
    #[schema(value_type = String)]
    pub policy: PathBuf,
    /// Unix time (seconds) the policy in force was applied.
    pub applied_at: u64,
    /// Active generation (0 or 1) and how many policies this daemon applied.
    pub generation: u8,
    /// Policies applied since the daemon started (the first load included).
    pub applies: u64,
    /// Kernel id of this daemon's XDP program.
    pub program_id: u32,
    /// Instructions the verifier processed for it.
    pub verified_instructions: u32,
    /// Every interface of `--iface`.
    pub interfaces: Vec<Interface>,
    /// SIM counts by state.
    pub sims: SimCounts,
    /// Fill of every map sized by the policy.
    pub maps: Vec<MapFill>,
    /// The IPFIX flow export, when collectors are given.
    #[serde(default)]
    pub export: Option<ExportStatus>,
    /// With `--forward xdp`: packets that passed on the interfaces, by XDP forwarding outcome
    /// (`redirected`, or why the packet went to the kernel's stack: `no_neighbour`,
    /// `not_forwarded`, `ttl_expiring`, ...), every outcome listed; empty otherwise.
    #[serde(default)]
    pub xdp_forward: Vec<ForwardCount>,
    /// How session sweeps read `SESSIONS`: `kernel` (a BPF iterator copies out only the
    /// sessions that changed), or `batch: WHY` (every entry read in batches and filtered in
    /// the daemon, because the kernel refused the iterator: slower at millions of sessions).
    #[serde(default)]
    pub session_scan: String,
}

/// The IPFIX flow export's state and counters since the daemon started.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ExportStatus {
    /// Collectors (`address:port`), each sent every record.
    pub collectors: Vec<String>,
    /// Sessions the meter follows.
    pub sessions_tracked: usize,
    /// Records sent, summed over the collectors.
    pub records_sent: u64,
    /// IPFIX messages sent.
    pub messages_sent: u64,
    /// Messages whose send failed (collector down or unreachable): their records are lost
    /// for that collector.
    pub messages_failed: u64,
    /// Records the exporter's queue had no room for, exported in a later round instead.
    pub records_deferred: u64,
    /// Sessions found at start that a daemon which did not stop cleanly had counted: their
    /// counts up to the start are not exported.
    pub sessions_adopted: u64,
}

/// Packets of one XDP forwarding outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ForwardCount {
    /// The outcome: `redirected`, or a reason the packet went to the kernel's stack (the
    /// names of `bpf_fib_lookup`'s `BPF_FIB_LKUP_RET_*` results, and `foreign_egress`,
    /// `ttl_expiring`, `not_plain_ip`, `other`).
    pub outcome: String,
    /// Packets, since the pinned counters were created.
    pub packets: u64,
}

/// One attached interface.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Interface {
    /// Interface name.
    pub iface: String,
    /// `driver` or `skb` (generic) XDP, as requested when the link was made.
    pub mode: String,
    /// The `core` role (`--iface core:IF`): drops traffic from outside every pool and the
    /// policy's `core_sources`; otherwise the `service` role.
    pub core_facing: bool,
    /// The `service` role (`--iface service:IF`); neither this nor `core_facing`: no role.
    #[serde(default)]
    pub service_facing: bool,
    /// How packets that pass here reach their next hop: `stack` (the kernel's forwarding),
    /// `xdp` (routed by the kernel's FIB and redirected in XDP, `--forward xdp`), or `xdp-in`
    /// (as `xdp`, but the interface's driver cannot send redirected frames, so what is routed
    /// out of it takes the stack).
    #[serde(default)]
    pub forward: String,
    /// The pinned link, as the kernel reports it now (`ifindex` 0: the interface is gone).
    pub link: Option<Attachment>,
    /// Times the daemon attached it again after the interface was re-created.
    pub reattached: u32,
}

/// SIMs of the policy in force, by state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SimCounts {
    /// Every SIM.
    pub total: usize,
    /// Not quarantined.
    pub active: usize,
    /// Quarantined by the policy file or by command.
    pub quarantined: usize,
    /// Of those, quarantined by command (runtime overrides).
    pub quarantined_by_command: usize,
}

/// A map's fill: entries the policy needs against entries the map holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct MapFill {
    /// Map name.
    pub map: String,
    /// What is counted.
    pub what: String,
    /// Entries in use.
    pub used: usize,
    /// Entries the map holds.
    pub capacity: u32,
}

/// What an apply did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Applied {
    /// The policy file now in force.
    #[schema(value_type = String)]
    pub policy: PathBuf,
    /// Generation now active.
    pub generation: u8,
    /// SIMs and rules of the new policy.
    pub sims: usize,
    /// Rules of the new policy.
    pub rules: usize,
    /// SIMs added, removed and changed (segment, addresses or state) against the previous
    /// policy.
    pub sims_added: usize,
    /// SIMs no longer in the policy.
    pub sims_removed: usize,
    /// SIMs whose segment, addresses, state or own rules changed.
    pub sims_changed: usize,
    /// Rule entries (`RULES_V2` and `PORT_RULES`) that differ between the two policies.
    pub rule_entries_changed: usize,
    /// Map entries written: what differed in the generation that became active.
    pub entries_written: usize,
    /// Milliseconds from reading the file to the new policy in force.
    pub took_ms: f64,
}

/// One SIM as the daemon sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SimInfo {
    /// IMSI.
    pub imsi: String,
    /// Segment name.
    pub segment: String,
    /// `active`, `quarantined` or `imei_mismatch` (its device breaks its IMEI lock).
    pub state: String,
    /// Why quarantined, when by command: who and when (unix seconds).
    pub quarantine: Option<Override>,
    /// Addresses (IPv4 /32 and IPv6 /64 prefixes) bound to it.
    pub addresses: Vec<String>,
    /// Run-time bindings (`sim bind`, RADIUS accounting), applied or shadowed.
    pub bindings: Vec<Bound>,
    /// Its IMEI lock and the device last seen, when it has a lock or a device was seen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub imei: Option<ImeiInfo>,
    /// Packets and bytes passed and dropped.
    pub pass_packets: u64,
    /// Bytes passed.
    pub pass_bytes: u64,
    /// Packets dropped.
    pub drop_packets: u64,
    /// Bytes dropped.
    pub drop_bytes: u64,
}

/// A SIM's IMEI lock and device (3GPP TS 23.003 §6.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ImeiInfo {
    /// The lock in force (an IMEI's 14 digits, `tac:…`, `learn`), empty for none.
    pub lock: String,
    /// The IMEI a `learn` lock learned (14 digits), empty if none yet.
    pub learned: String,
    /// The last 3GPP-IMEISV its RADIUS accounting reported, empty if none.
    pub seen: String,
    /// Whether that device breaks the lock.
    pub mismatch: bool,
}

/// An address bound to a SIM at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Bound {
    /// IPv4 /32 or IPv6 /64.
    pub address: String,
    /// Who bound it: `cli:USER` for `sim bind`, `radius:CLIENT` for RADIUS accounting.
    pub source: String,
    /// The RADIUS Acct-Session-Id that bound it (empty: bound by command).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub session: String,
    /// Unix time (seconds) it was bound (RADIUS: the request's Event-Timestamp).
    pub at: u64,
    /// False when the policy file gives the address to another SIM (the file wins until it
    /// frees the address) or puts it outside every pool.
    pub applied: bool,
}

/// A runtime override of the policy file, set by command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Override {
    /// Who set it.
    pub source: String,
    /// Unix time (seconds) it was set.
    pub at: u64,
}
