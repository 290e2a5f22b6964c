//! Why a packet was passed or dropped.
//!
//! The numeric values are exported in metrics and map slots, and dashboards key on them: a value
//! is never changed or reused. A retired reason becomes `UnusedN`.

/// Why a packet was dropped. Stable numbers: see the module comment.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DropReason {
    /// The source SIM has no rule that allows this destination, protocol and port.
    NoRule = 1,
    /// The destination lies inside a pool and no rule names its segment or SIM.
    Lateral = 2,
    /// The source lies inside a declared pool but no SIM is bound to it.
    Spoofed = 3,
    /// The source SIM is quarantined.
    Quarantined = 4,
    /// The frame claims IPv4/IPv6 (or a VLAN tag) but cannot be parsed: truncated headers, bad
    /// version or IHL, too many VLAN tags or IPv6 extension headers.
    Malformed = 5,
    /// A non-first fragment (no ports) whose protocol no any-port rule allows.
    Fragment = 6,
    /// The source is outside every pool and the interface is set to drop such traffic.
    NonPool = 7,
    /// The packet asks routers to send it on to an address the enforcer did not judge: an IPv4
    /// loose or strict source-route option (LSRR, SSRR; RFC 791 §3.1) or an IPv6 routing
    /// header with segments left (RFC 8200 §4.4, RFC 5095). Fail closed: only the first hop is
    /// visible here, and a gateway that honours the route would forward it to another device
    /// (CVE-2007-2242).
    SourceRoute = 8,
    /// Neither IPv4, IPv6 nor ARP (e.g. MPLS, PPPoE, a 0x9100 tag) on a core-facing interface,
    /// where only device IP traffic is expected; such frames could carry IP past the parser.
    NotIp = 9,
    /// From outside every pool to a device, and part of no session the device opened (and no
    /// inbound rule allows it): nothing outside may open a connection to a device.
    Inbound = 10,
    /// The first packet of a session the policy allows, but the session table is full: no
    /// session is created and, failing closed, the packet is dropped. Live sessions are never
    /// evicted to make room.
    SessionsFull = 11,
    /// The SIM's data session runs on a device other than the one its IMEI lock names (the
    /// 3GPP-IMEISV of its RADIUS accounting, 3GPP TS 29.061 §16.4.7): everything it sends or
    /// would receive is dropped until a session of the locked device starts.
    ImeiMismatch = 12,
}

impl DropReason {
    /// Every reason, in numeric order.
    pub const ALL: [DropReason; 12] = [
        DropReason::NoRule,
        DropReason::Lateral,
        DropReason::Spoofed,
        DropReason::Quarantined,
        DropReason::Malformed,
        DropReason::Fragment,
        DropReason::NonPool,
        DropReason::SourceRoute,
        DropReason::NotIp,
        DropReason::Inbound,
        DropReason::SessionsFull,
        DropReason::ImeiMismatch,
    ];

    /// The stable snake_case name used in metrics, JSON and tables.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::NoRule => "no_rule",
            DropReason::Lateral => "lateral",
            DropReason::Spoofed => "spoofed",
            DropReason::Quarantined => "quarantined",
            DropReason::Malformed => "malformed",
            DropReason::Fragment => "fragment",
            DropReason::NonPool => "non_pool",
            DropReason::SourceRoute => "source_route",
            DropReason::NotIp => "not_ip",
            DropReason::Inbound => "inbound",
            DropReason::SessionsFull => "sessions_full",
            DropReason::ImeiMismatch => "imei_mismatch",
        }
    }
}

/// Why a packet was passed. Stable numbers: see the module comment.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum PassReason {
    /// An allow rule matched; the rule id is carried in [`Verdict::Pass`].
    Rule = 1,
    /// The source is outside every pool: the enforcer is not a general firewall.
    NonPool = 2,
    /// ARP or IPv6 neighbour discovery, which always pass so that links keep working.
    Neighbour = 3,
    /// Neither IPv4 nor IPv6 (nor ARP): not the enforcer's business.
    NotIp = 4,
    /// A packet that answers the opener of a session (toward a device that opened it, or
    /// from a device to the host that an inbound rule let in), checked against the policy in
    /// force; the rule id that allowed the session is carried in [`Verdict::Pass`].
    Reply = 5,
    /// A packet from outside every pool toward a device that one of the device's segment's
    /// `inbound` rules allows (a maintenance host opening SSH, say); the rule id is carried in
    /// [`Verdict::Pass`].
    Inbound = 6,
    /// The sender's (or, from outside, the destination's) segment is in audit mode and the
    /// policy would have denied the packet: passed and counted apart, so that a default-deny
    /// policy can be rolled out to a live fleet first as a dry run. The rule id is
    /// `AUDIT_RULE`.
    Audit = 7,
}

impl PassReason {
    /// Every reason, in numeric order.
    pub const ALL: [PassReason; 7] = [
        PassReason::Rule,
        PassReason::NonPool,
        PassReason::Neighbour,
        PassReason::NotIp,
        PassReason::Reply,
        PassReason::Inbound,
        PassReason::Audit,
    ];

    /// The stable snake_case name used in metrics, JSON and tables.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            PassReason::Rule => "rule",
            PassReason::NonPool => "non_pool",
            PassReason::Neighbour => "neighbour",
            PassReason::NotIp => "not_ip",
            PassReason::Reply => "reply",
            PassReason::Inbound => "inbound",
            PassReason::Audit => "audit",
        }
    }
}

/// The outcome for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Pass; for [`PassReason::Rule`], [`PassReason::Reply`] and [`PassReason::Inbound`] the
    /// second field is the rule id, else 0.
    Pass(PassReason, u32),
    /// Drop, for the given reason.
    Drop(DropReason),
}

/// `XDP_DROP` from the kernel's `enum xdp_action`.
pub const XDP_DROP: u32 = 1;
/// `XDP_PASS` from the kernel's `enum xdp_action`.
pub const XDP_PASS: u32 = 2;

impl Verdict {
    /// The XDP action the program returns for this verdict.
    #[must_use]
    pub const fn xdp_action(self) -> u32 {
        match self {
            Verdict::Pass(..) => XDP_PASS,
            Verdict::Drop(_) => XDP_DROP,
        }
    }

    /// Whether XDP forwarding (`IFACE_XDP_FORWARD`) may route this verdict's packet: an IP
    /// packet that passes, except neighbour discovery (ARP, and ICMPv6 ND, which the
    /// receiving host's stack must see) and frames that are not IP.
    #[must_use]
    pub const fn forwardable(self) -> bool {
        matches!(
            self,
            Verdict::Pass(
                PassReason::Rule
                    | PassReason::NonPool
                    | PassReason::Reply
                    | PassReason::Inbound
                    | PassReason::Audit,
                _
            )
        )
    }

    /// The slot of this verdict inside one segment's block of [`crate::maps::VerdictCounter`]s.
    ///
    /// Pass reasons take slots `1..=7` (today `1..=4`), drop reasons `8..=31` (`8 + reason -
    /// 1`, today `8..=16`); slot 0 and the gaps are never written, leaving room for new reasons
    /// without moving old slots. A compile-time check below keeps every reason in its block.
    #[must_use]
    pub const fn stats_slot(self) -> u32 {
        match self {
            Verdict::Pass(reason, _) => reason as u32,
            Verdict::Drop(reason) => crate::maps::DROP_SLOT_BASE + reason as u32 - 1,
        }
    }
}

// Every reason must land inside its own block of a segment's `VERDICT_SLOTS` slots: a pass
// reason below `DROP_SLOT_BASE`, a drop reason from `DROP_SLOT_BASE` to the end of the block.
// A new reason that does not fit fails the build here, not a counter at run time.
const _: () = {
    use crate::maps::{DROP_SLOT_BASE, VERDICT_SLOTS};
    let mut i = 0;
    while i < PassReason::ALL.len() {
        let slot = Verdict::Pass(PassReason::ALL[i], 0).stats_slot();
        assert!(slot >= 1 && slot < DROP_SLOT_BASE);
        i += 1;
    }
    let mut i = 0;
    while i < DropReason::ALL.len() {
        let slot = Verdict::Drop(DropReason::ALL[i]).stats_slot();
        assert!(slot >= DROP_SLOT_BASE && slot < VERDICT_SLOTS);
        i += 1;
    }
};

#[cfg(test)]
mod tests {
    use super::{DropReason, PassReason, Verdict};

    #[test]
    fn only_passed_ip_packets_are_forwarded_in_xdp() {
        for reason in PassReason::ALL {
            let to_stack = matches!(reason, PassReason::Neighbour | PassReason::NotIp);
            assert_eq!(
                Verdict::Pass(reason, 0).forwardable(),
                !to_stack,
                "{reason:?}"
            );
        }
        for reason in DropReason::ALL {
            assert!(!Verdict::Drop(reason).forwardable(), "{reason:?}");
        }
    }
}
