//! `enforcer policy replay`: what a policy would do to real traffic, packet by packet.
//!
//! Every frame of a capture ([`capture`]) runs through the real XDP program, loaded with the
//! policy but neither attached nor pinned (`BPF_PROG_TEST_RUN`). The kernel returns only the
//! XDP action, so the verdict and rule are read from the program's own counters: the userspace
//! reference model predicts which verdict slot and rule counter will move, the replayer checks
//! that exactly those moved, and when they did not it reads every counter and takes what the
//! kernel counted (reporting the disagreement, which is a bug). What is printed is always the
//! kernel's judgement. Addresses and ports for display come from a third, independent parser
//! (`etherparse`), so a frame the enforcer calls malformed still shows what it claims to be.

pub mod capture;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use enforcer_common::{
    DropReason, PassReason, Verdict,
    maps::{
        Counter, DROP_SLOT_BASE, IFACE_DROP_NON_POOL, SEGMENT_NONE, VERDICT_SLOTS, names,
        verdict_stats_index,
    },
};
use serde::Serialize;

use crate::{
    compile::{Compiled, RuleInfo},
    counters::{self, Totals},
    loader::{Capacity, Enforcer, LoadError},
    reference::Reference,
};

/// `ingress_ifindex` of replayed frames: loopback, which exists in every network namespace.
const REPLAY_IFINDEX: u32 = 1;
/// `BPF_PROG_TEST_RUN` refuses XDP frames shorter than an Ethernet header (`bpf_test_init`).
const MIN_FRAME: usize = 14;
/// Longest frame `BPF_PROG_TEST_RUN` gives an XDP program in one buffer: a 4 KiB page less
/// `XDP_PACKET_HEADROOM` (256) and `struct skb_shared_info` (320 on x86-64). Longer frames go
/// partly into fragments the program cannot see, and an XDP program without multi-buffer
/// support (like this one) never meets them on a real link, whose MTU bounds them.
pub const MAX_FRAME: usize = 4096 - 256 - 320;

/// Errors of loading the program or reading its counters.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// Loading or running the program failed.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// A counter map could not be read.
    #[error("reading the {map} counters after BPF_PROG_TEST_RUN failed")]
    Counters {
        /// Map name.
        map: &'static str,
        /// Cause.
        #[source]
        source: aya::maps::MapError,
    },
}

/// What a frame claims to be, from `etherparse` (absent fields: not present or not parsed).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Headers {
    /// Source IP address.
    pub src: Option<IpAddr>,
    /// Destination IP address.
    pub dst: Option<IpAddr>,
    /// IP protocol number after IPv6 extension headers (IANA "Protocol Numbers").
    pub protocol: Option<u8>,
    /// TCP/UDP source port.
    pub src_port: Option<u16>,
    /// TCP/UDP destination port.
    pub dst_port: Option<u16>,
    /// Ethertype of a frame that is not IP (after VLAN tags).
    pub ethertype: Option<u16>,
}

/// Read the addresses, protocol and ports a frame claims, leniently (truncated frames too).
#[must_use]
pub fn headers(frame: &[u8]) -> Headers {
    use etherparse::{LaxNetSlice, LaxSlicedPacket, TransportSlice};
    let mut out = Headers::default();
    let Ok(packet) = LaxSlicedPacket::from_ethernet(frame) else {
        return out;
    };
    match &packet.net {
        Some(LaxNetSlice::Ipv4(ip)) => {
            out.src = Some(IpAddr::V4(ip.header().source_addr()));
            out.dst = Some(IpAddr::V4(ip.header().destination_addr()));
            out.protocol = Some(ip.payload().ip_number.0);
        }
        Some(LaxNetSlice::Ipv6(ip)) => {
            out.src = Some(IpAddr::V6(ip.header().source_addr()));
            out.dst = Some(IpAddr::V6(ip.header().destination_addr()));
            out.protocol = Some(ip.payload().ip_number.0);
        }
        Some(LaxNetSlice::Arp(_)) => out.ethertype = Some(0x0806),
        None => {
            out.ethertype = frame.get(12..14).map(|b| u16::from_be_bytes([b[0], b[1]]));
        }
    }
    match &packet.transport {
        Some(TransportSlice::Tcp(tcp)) => {
            out.src_port = Some(tcp.source_port());
            out.dst_port = Some(tcp.destination_port());
        }
        Some(TransportSlice::Udp(udp)) => {
            out.src_port = Some(udp.source_port());
            out.dst_port = Some(udp.destination_port());
        }
        _ => {}
    }
    out
}

/// The kernel's judgement of one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Judgement {
    /// What the XDP program decided and why.
    pub verdict: Verdict,
    /// The reference model's verdict when it differs (a bug in one of them).
    pub reference_differs: Option<Verdict>,
}

/// The policy loaded into the real program, ready to judge frames.
pub struct Replayer {
    enforcer: Enforcer,
    reference: Reference,
    rules: Vec<Option<RuleInfo>>,
    sims: usize,
    /// The counters as they are in the kernel after the last judged frame.
    shadow: Totals,
}

impl Replayer {
    /// Load `compiled` into a fresh, unattached, unpinned program. `core_facing` judges frames
    /// as if they arrived on a core-facing interface (`--drop-non-pool`).
    ///
    /// # Errors
    /// When the program cannot be loaded (root, or CAP_BPF with CAP_NET_ADMIN, is needed) or
    /// the maps cannot be written.
    pub fn new(compiled: &Compiled, sims: usize, core_facing: bool) -> Result<Self, ReplayError> {
        let capacity = Capacity::for_test_run(&compiled.image, compiled.rules.len());
        let mut enforcer = Enforcer::load(capacity, None)?;
        let generation = enforcer.apply(&compiled.image)?.generation;
        let flags = if core_facing { IFACE_DROP_NON_POOL } else { 0 };
        enforcer.set_iface(REPLAY_IFINDEX, flags)?;
        let reference = Reference::new(
            &compiled.image,
            generation,
            HashMap::from([(REPLAY_IFINDEX, flags)]),
        );
        let mut replayer = Self {
            enforcer,
            reference,
            rules: compiled.rules.clone(),
            sims,
            shadow: Totals::default(),
        };
        replayer.shadow = replayer.read_all()?;
        Ok(replayer)
    }

    /// Where rule `id` was written and whose it is.
    #[must_use]
    pub fn rule(&self, id: u32) -> Option<&RuleInfo> {
        self.rules.get(usize::try_from(id).ok()?)?.as_ref()
    }

    /// Judge one Ethernet frame with the kernel program. `Ok(Err(why))`: the kernel cannot
    /// run this frame (shorter than an Ethernet header, longer than [`MAX_FRAME`]).
    ///
    /// # Errors
    /// When `BPF_PROG_TEST_RUN` fails or counters cannot be read.
    pub fn judge(&mut self, frame: &[u8]) -> Result<Result<Judgement, String>, ReplayError> {
        if frame.len() < MIN_FRAME {
            return Ok(Err("shorter than an Ethernet header".to_owned()));
        }
        if frame.len() > MAX_FRAME {
            return Ok(Err(format!(
                "{} bytes, longer than the {MAX_FRAME} bytes BPF_PROG_TEST_RUN hands an XDP \
                 program in one buffer",
                frame.len()
            )));
        }
        let predicted = self.reference.evaluate(frame, REPLAY_IFINDEX);
        let block = predicted
            .sim
            .map_or(SEGMENT_NONE, |sim| u32::from(sim.segment));
        let slot = verdict_stats_index(block, predicted.verdict.stats_slot()) as usize;
        let rule = rule_of(predicted.verdict);
        let (action, _) = self.enforcer.test_run(frame, 1, REPLAY_IFINDEX)?;
        let slot_now = counters::verdict(self.map(names::VERDICT_STATS)?, block, predicted.verdict)
            .map_err(|source| ReplayError::Counters {
                map: names::VERDICT_STATS,
                source,
            })?;
        let rule_now = match rule {
            Some(id) => Some(counters::rule(self.map(names::RULE_STATS)?, id).map_err(
                |source| ReplayError::Counters {
                    map: names::RULE_STATS,
                    source,
                },
            )?),
            None => None,
        };
        let moved = |before: Option<&Counter>, now: &Counter| {
            now.packets == before.map_or(0, |c| c.packets) + 1
        };
        let confirmed = action == predicted.verdict.xdp_action()
            && moved(self.shadow.verdicts.get(slot), &slot_now)
            && match (rule, rule_now) {
                (Some(id), Some(now)) => moved(self.shadow.rules.get(id as usize), &now),
                _ => true,
            };
        if confirmed {
            if let Some(counter) = self.shadow.verdicts.get_mut(slot) {
                *counter = slot_now;
            }
            if let (Some(id), Some(now)) = (rule, rule_now)
                && let Some(counter) = self.shadow.rules.get_mut(id as usize)
            {
                *counter = now;
            }
            return Ok(Ok(Judgement {
                verdict: predicted.verdict,
                reference_differs: None,
            }));
        }
        // The kernel did something else: find what it counted.
        let now = self.read_all()?;
        let verdict = counted(&self.shadow, &now);
        self.shadow = now;
        Ok(Ok(Judgement {
            verdict,
            reference_differs: Some(predicted.verdict),
        }))
    }

    fn map(&self, name: &'static str) -> Result<&aya::maps::Map, ReplayError> {
        self.enforcer.map(name).ok_or(ReplayError::Counters {
            map: name,
            source: aya::maps::MapError::InvalidName {
                name: name.to_owned(),
            },
        })
    }

    fn read_all(&self) -> Result<Totals, ReplayError> {
        Totals::read(
            self.enforcer.sim_table(),
            self.map(names::VERDICT_STATS)?,
            self.map(names::RULE_STATS)?,
            self.sims,
            self.rules.len(),
        )
        .map_err(|source| ReplayError::Counters {
            map: names::VERDICT_STATS,
            source,
        })
    }
}

fn rule_of(verdict: Verdict) -> Option<u32> {
    match verdict {
        Verdict::Pass(PassReason::Rule, id) => Some(id),
        _ => None,
    }
}

/// The verdict whose slot moved between `before` and `after` (and the rule, for a rule pass).
fn counted(before: &Totals, after: &Totals) -> Verdict {
    let grew = |list: &[Counter], other: &[Counter]| {
        list.iter()
            .zip(other)
            .position(|(a, b)| a.packets > b.packets)
    };
    let slot = grew(&after.verdicts, &before.verdicts).map_or(0, |i| i as u32 % VERDICT_SLOTS);
    let rule = grew(&after.rules, &before.rules).map_or(u32::MAX, |i| i as u32);
    PassReason::ALL
        .iter()
        .map(|&reason| Verdict::Pass(reason, if reason == PassReason::Rule { rule } else { 0 }))
        .chain(DropReason::ALL.iter().map(|&reason| Verdict::Drop(reason)))
        .find(|v| v.stats_slot() == slot)
        // No slot moved: the program counted nothing, which `account` never allows.
        .unwrap_or(Verdict::Drop(DropReason::Malformed))
}

const _: () = assert!(DROP_SLOT_BASE < VERDICT_SLOTS);

/// Per-verdict packet counts of a replay, in a stable order (`pass_rule`, `drop_no_rule`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Packets read from the capture.
    pub packets: u64,
    /// Packets passed.
    pub passed: u64,
    /// Packets dropped.
    pub dropped: u64,
    /// Packets that could not be judged (link type, runt frames).
    pub not_judged: u64,
    /// Packets where the kernel and the reference model disagreed (should be 0).
    pub disagreements: u64,
    /// `pass_REASON` / `drop_REASON` → packets.
    pub by_verdict: BTreeMap<String, u64>,
}

impl Summary {
    /// Count one packet; `None` when it was not judged.
    pub fn add(&mut self, judgement: Option<&Judgement>) {
        self.packets += 1;
        let Some(judgement) = judgement else {
            self.not_judged += 1;
            return;
        };
        match judgement.verdict {
            Verdict::Pass(..) => self.passed += 1,
            Verdict::Drop(_) => self.dropped += 1,
        }
        if judgement.reference_differs.is_some() {
            self.disagreements += 1;
        }
        *self
            .by_verdict
            .entry(verdict_name(judgement.verdict))
            .or_default() += 1;
    }
}

/// `pass_rule`, `drop_spoofed`, …: the verdict's stable metric name.
#[must_use]
pub fn verdict_name(verdict: Verdict) -> String {
    match verdict {
        Verdict::Pass(reason, _) => format!("pass_{}", reason.name()),
        Verdict::Drop(reason) => format!("drop_{}", reason.name()),
    }
}
