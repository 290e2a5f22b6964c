//! Policy files: text in, [`ValidatedPolicy`] out, or every problem found.
//!
//! [`source`] reads files (regular files only, within a size limit, inventories only inside the
//! allowed directories), [`raw`] reads the TOML with serde, [`validate`] checks it (and the
//! optional CSV inventory) and resolves names to ids. Nothing here touches the kernel; `compile`
//! turns the result into map contents.

pub mod error;
mod inventory;
pub mod raw;
pub mod show;
mod sim;
pub mod source;
mod validate;

use std::path::{Path, PathBuf};

pub use error::{PolicyError, PolicyErrors};
use ipnetwork::IpNetwork;
pub use sim::{Digits, Iccid, Imsi, InvalidIdentifier, Msisdn, Sim};
pub use source::LoadOptions;

/// Who a rule belongs to, in compile order ([`ValidatedPolicy::rules`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RuleOwner {
    /// A rule of `segments[i]`.
    Segment(usize),
    /// A rule of `sims[i]`.
    Sim(usize),
    /// An inbound rule of `segments[i]`.
    Inbound(usize),
}

/// A policy that passed every check; ids are indices into its vectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidatedPolicy {
    /// The file it came from.
    pub path: PathBuf,
    /// Declared pools.
    pub pools: Vec<IpNetwork>,
    /// `core_sources`: non-pool prefixes a core interface accepts packets from (none overlaps
    /// a pool).
    pub core_sources: Vec<IpNetwork>,
    /// Segments; a segment id is its index here.
    pub segments: Vec<Segment>,
    /// SIMs; a SIM index is its position here (policy SIMs first, then the inventory's).
    pub sims: Vec<Sim>,
    /// IMEI locks set on single SIMs (`imei_lock` of a `[[sims]]` entry), by IMSI; a SIM
    /// without one takes its segment's ([`Segment::imei_lock`]).
    pub imei_locks: std::collections::HashMap<String, ImeiLock>,
    /// What an IMEI mismatch does (`imei_mismatch`).
    pub imei_mismatch: ImeiMismatch,
    /// Whether RADIUS accounting for an IMSI this policy does not list admits it into its
    /// APN's segment (`unknown_imsi = "admit"`) or is refused (the default).
    pub admit_unknown: bool,
}

/// What the daemon does when a SIM's data session runs on a device its IMEI lock does not
/// allow (`imei_mismatch = "drop"` or `"quarantine"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ImeiMismatch {
    /// Drop the SIM's traffic (reason `imei_mismatch`) until a session of an allowed device
    /// starts.
    #[default]
    Drop,
    /// Quarantine the SIM by command (source `imei-lock`): it stays quarantined, across
    /// sessions, until `enforcer sim release`.
    Quarantine,
}

/// An IMEI lock: which devices a SIM's data sessions may run on, judged on the 3GPP-IMEISV
/// of its RADIUS accounting (3GPP TS 23.003 §6.2: an IMEI is an 8-digit type allocation code
/// (TAC), a 6-digit serial number and a check digit; an IMEISV the TAC, the serial number and
/// a 2-digit software version).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ImeiLock {
    /// This device: TAC and serial number (the first 14 digits of its IMEI).
    Imei(String),
    /// Any device of this type allocation code (8 digits).
    Tac(String),
    /// The first device seen; the daemon keeps it in its store.
    Learn,
    /// No lock, whatever the segment says.
    Off,
}

impl ImeiLock {
    /// Read `text`: an IMEI (14 or 15 digits; a 15th, the check digit, is ignored), an IMEISV
    /// (16 digits; the software version is ignored), `tac:` and 8 digits, `learn` or `off`.
    ///
    /// # Errors
    /// What the text should be.
    pub fn parse(text: &str) -> Result<Self, String> {
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit());
        match text {
            "learn" => Ok(ImeiLock::Learn),
            "off" => Ok(ImeiLock::Off),
            t if t.starts_with("tac:") && t.len() == 12 && digits(&t[4..]) => {
                Ok(ImeiLock::Tac(t[4..].to_owned()))
            }
            t if (14..=16).contains(&t.len()) && digits(t) => {
                Ok(ImeiLock::Imei(t[..14].to_owned()))
            }
            _ => Err(format!(
                "`{text}` is no IMEI lock; give an IMEI (14 or 15 digits), `tac:` and 8 digits, \
                 `learn` or `off`"
            )),
        }
    }

    /// Whether the device of `imeisv` (its digits as RADIUS carries them) is allowed: its TAC
    /// and serial number against the lock's. `Learn` and `Off` allow every device (the daemon
    /// compares a learned lock itself).
    #[must_use]
    pub fn allows(&self, imeisv: &str) -> bool {
        let Some(device) = imeisv.get(..14) else {
            return false;
        };
        match self {
            ImeiLock::Imei(imei) => device == imei,
            ImeiLock::Tac(tac) => device.starts_with(tac.as_str()),
            ImeiLock::Learn | ImeiLock::Off => true,
        }
    }

    /// As written in a policy (`tac:35209900`, `learn`; an IMEI as its 14 digits).
    #[must_use]
    pub fn text(&self) -> String {
        match self {
            ImeiLock::Imei(imei) => imei.clone(),
            ImeiLock::Tac(tac) => format!("tac:{tac}"),
            ImeiLock::Learn => "learn".to_owned(),
            ImeiLock::Off => "off".to_owned(),
        }
    }
}

/// The APN network identifier of a Called-Station-Id (RADIUS attribute 30 of a PGW/SMF, 3GPP
/// TS 29.061 §16.4.7): lower case (APNs compare case-insensitively, TS 23.003 §9.1), without
/// an operator identifier (`.mncNNN.mccNNN.gprs`) a packet core may append.
#[must_use]
pub fn apn_network_id(called_station_id: &str) -> String {
    let lower = called_station_id.trim().to_ascii_lowercase();
    match lower.find(".mnc") {
        Some(at) if lower.ends_with(".gprs") && lower[at..].contains(".mcc") => {
            lower[..at].to_owned()
        }
        _ => lower,
    }
}

impl ValidatedPolicy {
    /// The name of segment `id` (empty for an id the policy does not have).
    #[must_use]
    pub fn segment_name(&self, id: u16) -> &str {
        self.segments
            .get(usize::from(id))
            .map_or("", |s| s.name.as_str())
    }

    /// The segment whose `apns` list the APN of `called_station_id`, if any.
    #[must_use]
    pub fn segment_of_apn(&self, called_station_id: &str) -> Option<u16> {
        let apn = apn_network_id(called_station_id);
        let position = self.segments.iter().position(|s| s.apns.contains(&apn))?;
        u16::try_from(position).ok()
    }

    /// The IMEI lock of `sim` (its own, else its segment's), if any.
    #[must_use]
    pub fn imei_lock(&self, sim: &Sim) -> Option<&ImeiLock> {
        let own = if self.imei_locks.is_empty() {
            None
        } else {
            self.imei_locks.get(&sim.imsi.to_string())
        };
        own.or_else(|| {
            self.segments
                .get(usize::from(sim.segment))?
                .imei_lock
                .as_ref()
        })
        .filter(|l| **l != ImeiLock::Off)
    }
}

/// A segment and its rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    /// Unique name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Allow rules for every SIM of the segment.
    pub rules: Vec<Rule>,
    /// Inbound rules: who outside every pool may open a session toward the segment's SIMs.
    /// In these, [`Rule::to`] holds the senders (`from`, only [`Dest::Net`]) and
    /// [`Rule::ports`] the device's ports.
    pub inbound: Vec<Rule>,
    /// Alert thresholds for its SIMs (`alerts = { ... }`); all off by default.
    pub alerts: Alerts,
    /// `mode = "audit"`: what the policy would deny its SIMs (or, from outside, them) passes,
    /// counted as `audit`, for rolling a policy out as a dry run first.
    pub audit: bool,
    /// IMEI lock of its SIMs (`imei_lock = "learn"` or `"tac:…"`), unless a SIM sets its own.
    pub imei_lock: Option<ImeiLock>,
    /// APNs/DNNs (3GPP TS 23.003 §9.1 network identifiers, lower case) whose data sessions of
    /// SIMs the policy does not list land in this segment (`apns`, with `unknown_imsi =
    /// "admit"`).
    pub apns: Vec<String>,
}

/// A segment's alert thresholds (`alerts = { deny_rate, learn_destinations, burst }`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Alerts {
    /// Alert when a SIM's denied packets per second exceed this.
    pub deny_rate: Option<u32>,
    /// Learn each SIM's destinations (address, protocol, port) for this many seconds from
    /// when it is first seen; then alert on a destination it never used.
    pub learn_destinations: Option<u32>,
    /// Alert when a SIM's bytes in a round exceed this many times its moving average.
    pub burst: Option<u32>,
}

impl ValidatedPolicy {
    /// Every rule in compile order, the order rule ids are numbered in offline (`Ids::fresh`):
    /// every segment's rules (segments in file order), then every SIM's own rules (SIMs in
    /// policy order), then every segment's inbound rules.
    pub fn rules(&self) -> impl Iterator<Item = (RuleOwner, &Rule)> {
        let segments = self.segments.iter().enumerate().flat_map(|(i, segment)| {
            segment
                .rules
                .iter()
                .map(move |rule| (RuleOwner::Segment(i), rule))
        });
        let sims = self.sims.iter().enumerate().flat_map(|(i, sim)| {
            sim.rules()
                .iter()
                .map(move |rule| (RuleOwner::Sim(i), rule))
        });
        let inbound = self.segments.iter().enumerate().flat_map(|(i, segment)| {
            segment
                .inbound
                .iter()
                .map(move |rule| (RuleOwner::Inbound(i), rule))
        });
        segments.chain(sims).chain(inbound)
    }

    /// How many rules [`ValidatedPolicy::rules`] lists.
    #[must_use]
    pub fn rule_count(&self) -> usize {
        self.segments
            .iter()
            .map(|s| s.rules.len() + s.inbound.len())
            .sum::<usize>()
            + self.sims.iter().map(|s| s.rules().len()).sum::<usize>()
    }

    /// How the rules' owners are named in `stats`, `flows` and messages: `segment NAME`,
    /// `imsi N`, `segment NAME inbound`.
    #[must_use]
    pub fn owner_name(&self, owner: RuleOwner) -> String {
        match owner {
            RuleOwner::Segment(i) => format!("segment {}", self.segments[i].name),
            RuleOwner::Sim(i) => format!("imsi {}", self.sims[i].imsi),
            RuleOwner::Inbound(i) => format!("segment {} inbound", self.segments[i].name),
        }
    }
}

/// Lifecycle state of a SIM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimState {
    /// Traffic is judged by the rules.
    Active,
    /// All traffic is dropped.
    Quarantined,
}

impl SimState {
    /// The word used in policy files and output.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            SimState::Active => "active",
            SimState::Quarantined => "quarantined",
        }
    }
}

/// One allow rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Where it may go.
    pub to: Vec<Dest>,
    /// Which protocols; empty means any.
    pub protos: Vec<u8>,
    /// Destination port ranges (inclusive); empty means any port.
    pub ports: Vec<(u16, u16)>,
    /// Free text.
    pub description: String,
    /// Where the rule was written, for messages (`file:line`).
    pub origin: String,
}

/// A rule destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Dest {
    /// A network outside every pool.
    Net(IpNetwork),
    /// Every SIM of a segment (by id).
    Segment(u16),
    /// One SIM (by index).
    Sim(u32),
}

/// Read, parse and validate a policy file (and its inventory, if it names one) with the
/// default [`LoadOptions`].
pub fn load(path: &Path) -> Result<ValidatedPolicy, PolicyErrors> {
    load_with(path, &LoadOptions::default())
}

/// Read, parse and validate a policy file (and its inventory, if it names one).
pub fn load_with(path: &Path, options: &LoadOptions) -> Result<ValidatedPolicy, PolicyErrors> {
    let text = source::read_text(path, options.max_file_bytes).map_err(|error| {
        PolicyErrors(vec![PolicyError {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            message: format!("the policy file: {error}"),
            more: 0,
        }])
    })?;
    tracing::debug!(file = %path.display(), bytes = text.len(), "Read policy file.");
    from_str_with(path, &text, options)
}

/// Parse and validate policy text that was read from `path` (used for messages and to find the
/// inventory), with the default [`LoadOptions`].
pub fn from_str(path: &Path, text: &str) -> Result<ValidatedPolicy, PolicyErrors> {
    from_str_with(path, text, &LoadOptions::default())
}

/// Parse and validate policy text that was read from `path`.
pub fn from_str_with(
    path: &Path,
    text: &str,
    options: &LoadOptions,
) -> Result<ValidatedPolicy, PolicyErrors> {
    validate::validate(path, text, options)
}

#[cfg(test)]
mod tests;
