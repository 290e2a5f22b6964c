//! An independent oracle: README's policy semantics, interpreted directly over a
//! [`ValidatedPolicy`].
//!
//! The differential test shares `enforcer_common::decide` and the compiled tables with the
//! kernel, so it cannot see a mistake in compilation, in the probe order or in precedence. This
//! module knows nothing of classes, tiers, port classes, rule keys or generations: it scans the
//! SIMs for the sender, scans the rules for one that allows the packet and applies the
//! precedence list as README writes it. Tests hold `reference(compile(policy))` and, through
//! it, the kernel to this. Slow on purpose (linear scans): tests only.
//!
//! Precedence (README "Verdicts"): source outside every pool → drop `non_pool` on a
//! core-facing interface (unless in `core_sources`), else pass `inbound` when an inbound rule
//! of the destination SIM's segment names the source, else pass `non_pool`; source in a pool without a SIM → `spoofed`; quarantined SIM →
//! `quarantined`; a rule of the SIM's segment or of the SIM allows it → pass `rule`;
//! destination inside a pool → `lateral`; a non-first fragment → `fragment`; else `no_rule`;
//! but a SIM in audit mode (its own `mode`, or its segment's) passes instead as `audit` (not
//! toward a quarantined SIM), and so does a packet from outside toward such an active SIM.
//!
//! Which rule is counted when several allow (README "Policy files"): a rule naming the
//! destination's segment before one naming its IMSI; then the segment's rules before the SIM's
//! own; then rules with ports before rules for a protocol on any port before rules for any
//! protocol, and among rules with ports the one whose aligned block around the port is the
//! smallest; then the rule written first.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use enforcer_common::{
    DropReason, PassReason, Verdict,
    decide::PacketMeta,
    maps::{IFACE_DROP_NON_POOL, IFACE_SERVICE, IPPROTO_TCP, IPPROTO_UDP},
    rules::AUDIT_RULE,
};
use ipnetwork::IpNetwork;

use crate::policy::{Dest, Rule, Sim, SimState, ValidatedPolicy};

/// Judge a parsed IP packet by the policy's text semantics. `iface_flags` are the arrival
/// interface's `IFACE_*` flags. Returns the verdict with the counted rule id (rule ids number
/// the segments' rules in file order, then the SIMs' own rules in SIM order).
#[must_use]
pub fn judge(policy: &ValidatedPolicy, meta: &PacketMeta, iface_flags: u32) -> Verdict {
    let src = address(meta.v6, meta.src);
    let dst = address(meta.v6, meta.dst);
    let Some(sender) = policy.sims.iter().position(|sim| holds(sim, src)) else {
        if in_pool(policy, src) {
            return Verdict::Drop(DropReason::Spoofed);
        }
        let core_source = policy.core_sources.iter().any(|net| net.contains(src));
        if iface_flags & IFACE_DROP_NON_POOL != 0 && !core_source {
            return Verdict::Drop(DropReason::NonPool);
        }
        if let Some(id) = inbound_rule(policy, meta, src, dst) {
            return Verdict::Pass(PassReason::Inbound, id);
        }
        // Toward an active SIM of an audit segment, what would be inbound passes as audit.
        if policy
            .sims
            .iter()
            .any(|sim| holds(sim, dst) && !blocked(sim) && audited(policy, sim))
        {
            return Verdict::Pass(PassReason::Audit, AUDIT_RULE);
        }
        return Verdict::Pass(PassReason::NonPool, 0);
    };
    // A SIM's address arriving from the services' side is forged.
    if iface_flags & IFACE_SERVICE != 0 {
        return Verdict::Drop(DropReason::Spoofed);
    }
    let sim = &policy.sims[sender];
    if sim.state == SimState::Quarantined {
        return Verdict::Drop(DropReason::Quarantined);
    }
    if sim.imei_mismatch() {
        return Verdict::Drop(DropReason::ImeiMismatch);
    }
    let dst_sim = policy.sims.iter().position(|s| holds(s, dst));
    let dst_in_pool = in_pool(policy, dst);
    // (destination rank, subject rank, tier, port block size, rule id) of every allowing rule;
    // the least wins.
    let mut best: Option<(u8, u8, u8, u32, u32)> = None;
    for (subject, id, rule) in rules_of(policy, sender) {
        let Some((tier, block)) = tier(rule, meta) else {
            continue;
        };
        for dest in &rule.to {
            let rank = match *dest {
                Dest::Net(net) if !dst_in_pool && contains(net, dst) => 0,
                Dest::Segment(segment)
                    if dst_sim.is_some_and(|d| policy.sims[d].segment == segment) =>
                {
                    0
                }
                Dest::Sim(index) if dst_sim == usize::try_from(index).ok() => 1,
                _ => continue,
            };
            let candidate = (rank, subject, tier, block, id);
            if best.is_none_or(|b| candidate < b) {
                best = Some(candidate);
            }
        }
    }
    if let Some((.., id)) = best {
        return Verdict::Pass(PassReason::Rule, id);
    }
    // An audit segment's SIM: what would be dropped passes as audit, but nothing goes to a
    // quarantined SIM.
    let to_quarantined = dst_sim.is_some_and(|d| blocked(&policy.sims[d]));
    if audited(policy, sim) && !to_quarantined {
        return Verdict::Pass(PassReason::Audit, AUDIT_RULE);
    }
    if dst_in_pool {
        Verdict::Drop(DropReason::Lateral)
    } else if meta.later_fragment {
        Verdict::Drop(DropReason::Fragment)
    } else {
        Verdict::Drop(DropReason::NoRule)
    }
}

/// Whether a SIM sends and receives nothing: quarantined, or its device breaks its IMEI lock
/// (a run-time state of the daemon's policy in force).
fn blocked(sim: &crate::policy::Sim) -> bool {
    sim.state == SimState::Quarantined || sim.imei_mismatch()
}

/// Whether `sim` is in audit mode (`mode = "audit"`): its own, or its segment's.
fn audited(policy: &ValidatedPolicy, sim: &Sim) -> bool {
    sim.audit()
        || policy
            .segments
            .get(usize::from(sim.segment))
            .is_some_and(|s| s.audit)
}

/// The inbound rule that lets `src` (outside every pool) reach the SIM at `dst`: one of the
/// SIM's segment's inbound rules whose `from` holds `src` and whose protocol and ports allow
/// the packet, the most specific as for rules, then the first written. None toward a
/// quarantined SIM. Inbound rule ids follow every segment's and every SIM's rules.
fn inbound_rule(
    policy: &ValidatedPolicy,
    meta: &PacketMeta,
    src: IpAddr,
    dst: IpAddr,
) -> Option<u32> {
    let device = policy.sims.iter().find(|sim| holds(sim, dst))?;
    if blocked(device) {
        return None;
    }
    let mut id = policy.segments.iter().map(|s| s.rules.len()).sum::<usize>()
        + policy.sims.iter().map(|s| s.rules().len()).sum::<usize>();
    let mut best: Option<(u8, u32, u32)> = None;
    for (segment_id, segment) in policy.segments.iter().enumerate() {
        for rule in &segment.inbound {
            let this = u32::try_from(id).unwrap_or(u32::MAX);
            id += 1;
            if usize::from(device.segment) != segment_id {
                continue;
            }
            let from = rule
                .to
                .iter()
                .any(|dest| matches!(*dest, Dest::Net(net) if contains(net, src)));
            if let (true, Some((tier, block))) = (from, tier(rule, meta)) {
                let candidate = (tier, block, this);
                if best.is_none_or(|b| candidate < b) {
                    best = Some(candidate);
                }
            }
        }
    }
    best.map(|(.., id)| id)
}

/// The rules that apply to SIM `sender`: (0 = its segment's, 1 = its own; rule id; rule).
fn rules_of(policy: &ValidatedPolicy, sender: usize) -> Vec<(u8, u32, &Rule)> {
    let mut id = 0u32;
    let mut out = Vec::new();
    for (segment_id, segment) in policy.segments.iter().enumerate() {
        for rule in &segment.rules {
            if usize::from(policy.sims[sender].segment) == segment_id {
                out.push((0, id, rule));
            }
            id += 1;
        }
    }
    for (index, sim) in policy.sims.iter().enumerate() {
        for rule in sim.rules() {
            if index == sender {
                out.push((1, id, rule));
            }
            id += 1;
        }
    }
    out
}

/// Whether `rule` allows the packet's protocol and port, and how specifically: (0, the size of
/// its port block around the port) with ports, (1, 0) for its protocol on any port, (2, 0) for
/// any protocol; `None` if it does not.
fn tier(rule: &Rule, meta: &PacketMeta) -> Option<(u8, u32)> {
    if rule.protos.is_empty() {
        return Some((2, 0));
    }
    if !rule.protos.contains(&meta.proto) {
        return None;
    }
    let has_port_numbers = meta.proto == IPPROTO_TCP || meta.proto == IPPROTO_UDP;
    if rule.ports.is_empty() || !has_port_numbers {
        return Some((1, 0));
    }
    // A rule with ports needs a packet that carries them (not a later fragment).
    if !meta.has_ports {
        return None;
    }
    block_around(&rule.ports, meta.dport).map(|size| (0, size))
}

/// The size of the aligned block around `port` when the rule's port ranges, joined where they
/// touch or overlap, are each cut from their low end into the largest aligned power-of-two
/// blocks that fit (README "How it works"); `None` if no range holds the port.
fn block_around(ranges: &[(u16, u16)], port: u16) -> Option<u32> {
    let port = u32::from(port);
    // The joined range holding the port: grow [lo, hi] while another range touches it.
    let (mut lo, mut hi) = ranges
        .iter()
        .map(|&(a, b)| (u32::from(a), u32::from(b)))
        .find(|&(a, b)| a <= port && port <= b)?;
    loop {
        let before = (lo, hi);
        for &(a, b) in ranges {
            let (a, b) = (u32::from(a), u32::from(b));
            if a <= hi + 1 && b + 1 >= lo {
                lo = lo.min(a);
                hi = hi.max(b);
            }
        }
        if (lo, hi) == before {
            break;
        }
    }
    let mut start = lo;
    loop {
        let mut size = 1u32 << 16;
        while start % size != 0 || start + size - 1 > hi {
            size /= 2;
        }
        if port < start + size {
            return Some(size);
        }
        start += size;
    }
}

fn address(v6: bool, bytes: [u8; 16]) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(bytes))
    } else {
        IpAddr::V4(Ipv4Addr::new(bytes[0], bytes[1], bytes[2], bytes[3]))
    }
}

fn contains(net: IpNetwork, addr: IpAddr) -> bool {
    match (net, addr) {
        (IpNetwork::V4(net), IpAddr::V4(a)) => net.contains(a),
        (IpNetwork::V6(net), IpAddr::V6(a)) => net.contains(a),
        _ => false,
    }
}

/// The SIM's address is `addr`: its IPv4 address, or an address in its IPv6 /64.
fn holds(sim: &Sim, addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => sim.ipv4() == Some(a),
        IpAddr::V6(a) => sim.ipv6().is_some_and(|net| net.contains(a)),
    }
}

fn in_pool(policy: &ValidatedPolicy, addr: IpAddr) -> bool {
    policy.pools.iter().any(|&pool| contains(pool, addr))
}

/// A packet an ICMP error quotes: (source, its port, destination, its port, protocol), the
/// addresses in `PacketMeta`'s 16-byte layout.
pub type Quote = ([u8; 16], u16, [u8; 16], u16, u8);

/// (opener's address, its port, the other's address, its port, protocol).
type Flow = (IpAddr, u16, IpAddr, u16, u8);

/// Sessions as README's "Sessions" section states them, kept apart from
/// `enforcer_common::session`: a device's packet that a rule allows and that opens a
/// conversation (a TCP SYN without ACK, RST or FIN; any UDP datagram; an ICMP or ICMPv6 echo
/// request, RFC 792 and RFC 4443 §4.1) opens a session, and so does such a packet from outside
/// that an inbound rule allows; a packet of the other endpoint of an open session is its reply
/// (from the services' side for a session a device opened, from the core's for an inbound
/// one); a packet from outside every pool to a pool address that is neither a reply nor
/// allowed by an inbound rule is dropped as inbound. For a policy that stays the same (no reload, no quarantine), which is all
/// the differential test needs; the kernel fixtures cover re-checks.
#[derive(Debug, Default)]
pub struct Sessions {
    /// (opener's address, its port, the other's address, its port, protocol) → the rule that
    /// allowed it, and whether the opener was outside (an inbound rule). ICMP echo: the
    /// identifier is the opener's "port", the other's is 0. With the order it was opened in:
    /// between two devices each may open the same flow its own way, and the program keeps only
    /// the first (one entry for both directions), which decides whose side an ICMP error is.
    open: std::collections::HashMap<Flow, (u32, bool, u64)>,
    /// Sessions opened so far.
    opened: u64,
}

impl Sessions {
    /// Judge `meta` by the policy and the sessions so far, opening one if it should. `quoted`:
    /// for an ICMP or ICMPv6 error, the packet it quotes (source, its port, destination, its
    /// port, as the parser reports it).
    pub fn judge(
        &mut self,
        policy: &ValidatedPolicy,
        meta: &PacketMeta,
        quoted: Option<Quote>,
        iface_flags: u32,
    ) -> Verdict {
        let src = address(meta.v6, meta.src);
        let dst = address(meta.v6, meta.dst);
        // An error quoting a packet of an open session, either way, is that session's reply;
        // the device's side of the session sends it from the core's side, the other from the
        // services' side (as for every packet of the session).
        if let Some((qs, qsp, qd, qdp, proto)) = quoted {
            let (qs, qd) = (address(meta.v6, qs), address(meta.v6, qd));
            let by_opener = self.open.get(&(qs, qsp, qd, qdp, proto)).copied();
            let by_other = self.open.get(&(qd, qdp, qs, qsp, proto)).copied();
            // Both: the one opened first is the program's.
            let (by_opener, by_other) = match (by_opener, by_other) {
                (Some(a), Some(b)) if b.2 < a.2 => (None, Some(b)),
                (Some(a), Some(_)) => (Some(a), None),
                other => other,
            };
            if let Some((rule, inbound, _)) = by_opener.or(by_other) {
                // The error goes to the quoted source: the device when it opened the quoted
                // packet's session and is no inbound session's device, or the other way round.
                // Toward the device it comes from outside every pool; from the device's side
                // only from the device itself (the quoted destination).
                let to_device = by_opener.is_some() != inbound;
                let (wrong_side, sender_ok) = if to_device {
                    (IFACE_DROP_NON_POOL, !in_pool(policy, src))
                } else {
                    (IFACE_SERVICE, src == qd)
                };
                if iface_flags & wrong_side == 0 && sender_ok {
                    return Verdict::Pass(PassReason::Reply, rule);
                }
            }
        }
        let icmp_echo = |request: bool| match (meta.v6, meta.proto) {
            (false, 1) => meta.l4_flags == if request { 8 } else { 0 },
            (true, 58) => meta.l4_flags == if request { 128 } else { 129 },
            _ => false,
        };
        let ported = !meta.later_fragment && matches!(meta.proto, IPPROTO_TCP | IPPROTO_UDP);
        let tracked = ported || icmp_echo(true) || icmp_echo(false);
        // The echo identifier stands where the program's parser places it (`PacketMeta`).
        let (sport, dport) = (meta.sport, meta.dport);
        // The other endpoint of a session this packet's destination opened (a packet of a
        // session its own sender opened is the device's, even when both ends are the same).
        let own = self
            .open
            .contains_key(&(src, sport, dst, dport, meta.proto));
        // Replies to a device come from the services' side (not a core interface), a device's
        // replies from the core's side (not a service interface), and an echo request answers
        // nothing.
        if tracked
            && !own
            && !icmp_echo(true)
            && let Some(&(rule, inbound, _)) = self.open.get(&(dst, dport, src, sport, meta.proto))
        {
            let wrong_side = if inbound {
                IFACE_SERVICE
            } else {
                IFACE_DROP_NON_POOL
            };
            if iface_flags & wrong_side == 0 {
                return Verdict::Pass(PassReason::Reply, rule);
            }
        }
        let verdict = judge(policy, meta, iface_flags);
        let opens = match meta.proto {
            IPPROTO_TCP => ported && meta.l4_flags & 0x17 == 0x02,
            IPPROTO_UDP => ported,
            _ => icmp_echo(true),
        };
        let sender_is_sim = policy.sims.iter().any(|sim| holds(sim, src));
        // Audit mode opens sessions as the rules it stands in for would.
        if let Verdict::Pass(PassReason::Audit, rule) = verdict {
            if opens {
                let opened = self.opened;
                self.opened += 1;
                self.open
                    .entry((src, sport, dst, dport, meta.proto))
                    .or_insert((rule, !sender_is_sim, opened));
            }
            return verdict;
        }
        if let Verdict::Pass(PassReason::Inbound, rule) = verdict {
            if opens {
                let opened = self.opened;
                self.opened += 1;
                self.open
                    .entry((src, sport, dst, dport, meta.proto))
                    .or_insert((rule, true, opened));
            }
            return verdict;
        }
        if let Verdict::Pass(PassReason::Rule, rule) = verdict {
            // Nothing is opened toward a quarantined SIM: it may not answer.
            let to_quarantined = policy
                .sims
                .iter()
                .any(|sim| holds(sim, dst) && blocked(sim));
            if opens && !to_quarantined {
                let opened = self.opened;
                self.opened += 1;
                self.open
                    .entry((src, sport, dst, dport, meta.proto))
                    .or_insert((rule, false, opened));
            }
            return verdict;
        }
        if verdict == Verdict::Pass(PassReason::NonPool, 0)
            && !sender_is_sim
            && in_pool(policy, dst)
        {
            return Verdict::Drop(DropReason::Inbound);
        }
        verdict
    }
}
