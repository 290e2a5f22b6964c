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
}

impl DropReason {
    /// Every reason, in numeric order.
    pub const ALL: [DropReason; 7] = [
        DropReason::NoRule,
        DropReason::Lateral,
        DropReason::Spoofed,
        DropReason::Quarantined,
        DropReason::Malformed,
        DropReason::Fragment,
        DropReason::NonPool,
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
}

impl PassReason {
    /// Every reason, in numeric order.
    pub const ALL: [PassReason; 4] = [
        PassReason::Rule,
        PassReason::NonPool,
        PassReason::Neighbour,
        PassReason::NotIp,
    ];

    /// The stable snake_case name used in metrics, JSON and tables.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            PassReason::Rule => "rule",
            PassReason::NonPool => "non_pool",
            PassReason::Neighbour => "neighbour",
            PassReason::NotIp => "not_ip",
        }
    }
}

/// The outcome for one packet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Pass; for [`PassReason::Rule`] the second field is the matching rule id, else 0.
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

    /// The slot of this verdict inside one segment's block of [`crate::maps::VerdictCounter`]s.
    ///
    /// Pass reasons take slots `1..=4`, drop reasons `8..=14` (`8 + reason - 1`); slot 0 and
    /// the gaps are never written, leaving room for new reasons without moving old slots.
    #[must_use]
    pub const fn stats_slot(self) -> u32 {
        match self {
            Verdict::Pass(reason, _) => reason as u32,
            Verdict::Drop(reason) => crate::maps::DROP_SLOT_BASE + reason as u32 - 1,
        }
    }
}
