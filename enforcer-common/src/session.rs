//! Sessions: connections a device opened and the policy allowed, so that their replies, and
//! nothing else from outside, reach the device.
//!
//! One table entry per session, found from either direction with one lookup: the key holds
//! the two endpoints in a fixed order (the lesser (address, port) first, [`SessionKey::of`]),
//! and the entry records which of them is the device. The decision of what a packet does to
//! its session lives here, generic over [`SessionTable`], so that the XDP program (a kernel
//! hash map) and the reference model (its own table) share it, as they share `decide`.
//!
//! - A session is created only by a device's packet that a rule allows and that may open one:
//!   a TCP SYN without ACK, any UDP datagram, an ICMP/ICMPv6 echo request ([`opens`]). A bare
//!   ACK or RST, or a packet from outside, never creates one.
//! - Every packet of a session checked under the current policy epoch (`CONFIG.epoch`) passes
//!   at once: the device's as allowed by the session's rule, the peer's as its reply.
//! - A session checked under an older epoch is judged again on its next packet, in the
//!   device's direction, against the policy in force: still allowed, it is brought up to date;
//!   denied (a removed rule, a quarantine), it is removed and the packet dropped.
//! - TCP state is followed enough to expire closed sessions quickly (the daemon removes idle
//!   and closed sessions, [`SessionState`]).
//! - A full table creates nothing: the packet that would have opened a session is dropped
//!   (`sessions_full`). No live session is ever evicted to make room.

use crate::{
    decide::{DstKind, Inputs, PacketMeta, Src, SrcKind, decide},
    maps::{
        IFACE_DROP_NON_POOL, IFACE_SERVICE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
        SIM_QUARANTINED, SimEntry,
    },
    verdict::{DropReason, PassReason, Verdict},
};

/// TCP flag bits (RFC 9293 §3.1).
pub const TCP_FIN: u8 = 0x01;
/// TCP SYN.
pub const TCP_SYN: u8 = 0x02;
/// TCP RST.
pub const TCP_RST: u8 = 0x04;
/// TCP ACK.
pub const TCP_ACK: u8 = 0x10;

/// ICMP echo request (RFC 792).
pub const ICMP_ECHO_REQUEST: u8 = 8;
/// ICMP echo reply.
pub const ICMP_ECHO_REPLY: u8 = 0;
/// ICMPv6 echo request (RFC 4443 §4.1).
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
/// ICMPv6 echo reply (RFC 4443 §4.2).
pub const ICMPV6_ECHO_REPLY: u8 = 129;

/// `SESSIONS` key: the two endpoints, the lesser first (see [`SessionKey::of`]). 40 bytes,
/// 8-aligned like `PacketMeta` (see there).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionKey {
    /// First endpoint's address (IPv4 in the first four bytes).
    pub addr_a: [u8; 16],
    /// Second endpoint's address.
    pub addr_b: [u8; 16],
    /// First endpoint's port (TCP, UDP; an echo's identifier for ICMP, 0 on the peer side).
    pub port_a: u16,
    /// Second endpoint's port.
    pub port_b: u16,
    /// IP protocol.
    pub proto: u8,
    /// 1 for IPv6.
    pub v6: u8,
    /// Zero.
    pub _pad: [u8; 2],
}

/// TCP state as far as the enforcer follows it; other protocols stay [`SessionState::Open`].
#[repr(u8)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SessionState {
    /// UDP or ICMP echo: open until idle.
    #[default]
    Open = 0,
    /// TCP: the device's SYN passed, no answer yet.
    SynSent = 1,
    /// TCP: the peer answered.
    Established = 2,
    /// TCP: a FIN was seen; the other side may still send.
    Closing = 3,
    /// TCP: both FINs, or an RST: gone after a short timeout.
    Closed = 4,
}

impl SessionState {
    /// From the stored byte (an unknown value reads as closed).
    #[must_use]
    pub const fn from_u8(value: u8) -> Self {
        match value {
            0 => SessionState::Open,
            1 => SessionState::SynSent,
            2 => SessionState::Established,
            3 => SessionState::Closing,
            _ => SessionState::Closed,
        }
    }

    /// The stable name shown by `enforcer flows`.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            SessionState::Open => "open",
            SessionState::SynSent => "syn_sent",
            SessionState::Established => "established",
            SessionState::Closing => "closing",
            SessionState::Closed => "closed",
        }
    }
}

/// `SESSIONS` value. 64 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Session {
    /// The device's SIM index.
    pub sim: u32,
    /// The rule that allowed the session (as of `epoch`).
    pub rule: u32,
    /// The policy epoch the session was last checked under.
    pub epoch: u32,
    /// The device's segment (as of `epoch`), for the per-segment counters.
    pub segment: u16,
    /// [`SessionState`].
    pub state: u8,
    /// 1 when the device is the key's first endpoint (`addr_a`), else 0.
    pub device_first: u8,
    /// When it was created, `CLOCK_MONOTONIC_COARSE` nanoseconds (`bpf_ktime_get_coarse_ns`).
    pub created_ns: u64,
    /// When its last packet was seen, same clock.
    pub seen_ns: u64,
    /// Packets from the device, to the device.
    pub packets: [u64; 2],
    /// Bytes from the device, to the device.
    pub bytes: [u64; 2],
}

impl SessionKey {
    /// The key of `meta`'s session, and whether `meta`'s source is the key's first
    /// endpoint; `None` for packets that belong to no session (non-first fragments, ICMP other
    /// than echo, protocols without ports).
    #[inline(always)]
    #[must_use]
    pub fn of(meta: &PacketMeta) -> Option<(SessionKey, bool)> {
        if meta.later_fragment {
            return None;
        }
        let tracked = match meta.proto {
            IPPROTO_TCP | IPPROTO_UDP => meta.has_ports,
            IPPROTO_ICMP if !meta.v6 => {
                meta.l4_flags == ICMP_ECHO_REQUEST || meta.l4_flags == ICMP_ECHO_REPLY
            }
            IPPROTO_ICMPV6 if meta.v6 => {
                meta.l4_flags == ICMPV6_ECHO_REQUEST || meta.l4_flags == ICMPV6_ECHO_REPLY
            }
            _ => false,
        };
        if !tracked {
            return None;
        }
        // Any total order will do, as long as both directions use it.
        let (s, d) = (u128::from_ne_bytes(meta.src), u128::from_ne_bytes(meta.dst));
        let src_first = (s, meta.sport) <= (d, meta.dport);
        let key = if src_first {
            SessionKey {
                addr_a: meta.src,
                addr_b: meta.dst,
                port_a: meta.sport,
                port_b: meta.dport,
                proto: meta.proto,
                v6: u8::from(meta.v6),
                _pad: [0; 2],
            }
        } else {
            SessionKey {
                addr_a: meta.dst,
                addr_b: meta.src,
                port_a: meta.dport,
                port_b: meta.sport,
                proto: meta.proto,
                v6: u8::from(meta.v6),
                _pad: [0; 2],
            }
        };
        Some((key, src_first))
    }
}

/// An ICMP or ICMPv6 echo request.
#[inline(always)]
fn echo_request(meta: &PacketMeta) -> bool {
    (meta.proto == IPPROTO_ICMP && meta.l4_flags == ICMP_ECHO_REQUEST)
        || (meta.proto == IPPROTO_ICMPV6 && meta.l4_flags == ICMPV6_ECHO_REQUEST)
}

/// Whether a device's packet (that a rule allows) may open a session: a TCP SYN without ACK
/// (nor RST, FIN), any UDP datagram, an ICMP/ICMPv6 echo request.
#[inline(always)]
#[must_use]
pub fn opens(meta: &PacketMeta) -> bool {
    match meta.proto {
        IPPROTO_TCP => meta.l4_flags & (TCP_SYN | TCP_ACK | TCP_RST | TCP_FIN) == TCP_SYN,
        IPPROTO_UDP => true,
        IPPROTO_ICMP => meta.l4_flags == ICMP_ECHO_REQUEST,
        IPPROTO_ICMPV6 => meta.l4_flags == ICMPV6_ECHO_REQUEST,
        _ => false,
    }
}

/// The state after a packet with TCP flags `flags` (`from_device`: sent by the device) in
/// state `state`. Non-TCP sessions stay [`SessionState::Open`].
#[inline(always)]
#[must_use]
pub fn advance(state: SessionState, proto: u8, from_device: bool, flags: u8) -> SessionState {
    if proto != IPPROTO_TCP {
        return SessionState::Open;
    }
    if flags & TCP_RST != 0 {
        return SessionState::Closed;
    }
    match state {
        // A new SYN on a closed session opens it again (a reused port).
        SessionState::Closed if from_device && flags & (TCP_SYN | TCP_ACK) == TCP_SYN => {
            SessionState::SynSent
        }
        SessionState::Closed => SessionState::Closed,
        _ if flags & TCP_FIN != 0 => {
            if state == SessionState::Closing {
                SessionState::Closed
            } else {
                SessionState::Closing
            }
        }
        SessionState::SynSent if !from_device => SessionState::Established,
        other => other,
    }
}

/// How long a session may stay idle in `state` before the daemon removes it, in seconds,
/// given the configured timeouts.
#[must_use]
pub const fn idle_timeout(state: SessionState, proto: u8, timeouts: &Timeouts) -> u64 {
    match (state, proto) {
        (SessionState::SynSent, _) => timeouts.tcp_syn,
        (SessionState::Established, _) => timeouts.tcp_established,
        (SessionState::Closing | SessionState::Closed, _) => timeouts.tcp_closed,
        (SessionState::Open, IPPROTO_UDP) => timeouts.udp,
        (SessionState::Open, _) => timeouts.icmp,
    }
}

/// Idle timeouts, seconds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timeouts {
    /// TCP after the device's SYN, before any answer.
    pub tcp_syn: u64,
    /// TCP once the peer answered.
    pub tcp_established: u64,
    /// TCP after a FIN or an RST.
    pub tcp_closed: u64,
    /// UDP.
    pub udp: u64,
    /// ICMP/ICMPv6 echo.
    pub icmp: u64,
}

impl Default for Timeouts {
    /// 30 s for an unanswered SYN, 2 h 4 min established (RFC 5382 REQ-5's minimum), 10 s
    /// closed, 60 s UDP (RFC 4787 REQ-5 asks at least 2 min for NAT bindings, but a session
    /// here only gates replies: a device that sends again opens a new one), 30 s ICMP echo.
    fn default() -> Self {
        Self {
            tcp_syn: 30,
            tcp_established: 7440,
            tcp_closed: 10,
            udp: 120,
            icmp: 30,
        }
    }
}

/// The session table as the packet path sees it: the kernel's `SESSIONS` map, or the
/// reference model's own table.
pub trait SessionTable {
    /// The policy epoch in force (`CONFIG.epoch`).
    fn epoch(&self) -> u32;
    /// `CLOCK_MONOTONIC` now, nanoseconds.
    fn now_ns(&self) -> u64;
    /// What the packet path needs of `key`'s session (not its timestamps and counters).
    fn find(&mut self, key: &SessionKey) -> Option<Found>;
    /// Add a new session; `false` when the table is full (nothing was added).
    fn create(&mut self, key: &SessionKey, session: &Session) -> bool;
    /// Count one packet of `bytes` bytes in `key`'s session, move its state on with the
    /// packet's protocol and TCP flags ([`advance`]) and set its last-seen time (the kernel adds
    /// atomically: both directions may run on two CPUs at once).
    fn touch(&mut self, key: &SessionKey, from_device: bool, bytes: u64, proto: u8, flags: u8);
    /// Bring `key`'s session up to date after a check: its SIM, segment, rule and epoch.
    fn refresh(&mut self, key: &SessionKey, sim: &SimEntry, rule: u32, epoch: u32);
    /// Remove `key`'s session.
    fn remove(&mut self, key: &SessionKey);
    /// `IFACE_*` flags of interface `ifindex` (`IFACES`), 0 if unknown.
    fn iface_flags(&self, ifindex: u32) -> u32;
    /// The policy's inputs for `meta` (`decide::identify` over the policy tables). A method
    /// rather than a closure: the program's copy must be inlined (`#[inline(always)]`), and
    /// a closure passed as a function item was called through an outlined shim whose stack
    /// frame, added to the caller's, passed the verifier's 512 bytes.
    fn identify(&self, meta: &PacketMeta) -> Inputs;
}

/// The fields of a [`Session`] the packet path reads: 16 bytes rather than 64 on the program's
/// 512-byte stack.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Found {
    /// [`Session::sim`].
    pub sim: u32,
    /// [`Session::rule`].
    pub rule: u32,
    /// [`Session::epoch`].
    pub epoch: u32,
    /// [`Session::segment`].
    pub segment: u16,
    /// [`Session::state`].
    pub state: u8,
    /// [`Session::device_first`].
    pub device_first: u8,
}

impl Found {
    /// The packet path's fields of `session`.
    #[inline(always)]
    #[must_use]
    pub fn of(session: &Session) -> Self {
        Self {
            sim: session.sim,
            rule: session.rule,
            epoch: session.epoch,
            segment: session.segment,
            state: session.state,
            device_first: session.device_first,
        }
    }
}

/// The device's SIM as the session recorded it, as a sender.
#[inline(always)]
fn device(session: &Found) -> Src {
    Src {
        kind: SrcKind::Sim,
        sim: SimEntry {
            sim: session.sim,
            segment: session.segment,
            flags: 0,
            tiers: 0,
        },
    }
}

/// Judge one packet with sessions (`meta` is left turned to the device's direction): the
/// policy's inputs ([`SessionTable::identify`], the table lookups) are gathered only when no
/// session of the current epoch covers the packet, and at one place (the program's stack and
/// the verifier's work stay those of one lookup sequence).
/// Returns the verdict and the sender to count it for. See the module comment for the rules.
#[inline(always)]
pub fn judge<T: SessionTable>(table: &mut T, meta: &mut PacketMeta, bytes: u64) -> (Verdict, Src) {
    let keyed = SessionKey::of(meta);
    let tracked = keyed.is_some();
    let (key, src_first) = keyed.unwrap_or_default();
    let epoch = table.epoch();
    let found = if tracked { table.find(&key) } else { None };
    let (found_exists, session) = match found {
        Some(session) => (true, session),
        None => (false, Found::default()),
    };
    let sent_by_device = !found_exists || (session.device_first == 1) == src_first;
    // Where a session's packet may not come from: then it is judged as it is, as if there
    // were no session. The device's side never arrives from the services (a forged device
    // address); a reply never arrives on a core interface (a device forging a peer's address
    // to another device); an echo request is no reply, whatever its identifier.
    let misplaced = found_exists && {
        let flags = table.iface_flags(meta.ifindex);
        if sent_by_device {
            flags & IFACE_SERVICE != 0
        } else {
            flags & IFACE_DROP_NON_POOL != 0 || echo_request(meta)
        }
    };
    let exists = found_exists && !misplaced;
    let from_device = sent_by_device || misplaced;
    if exists && session.epoch == epoch {
        table.touch(&key, from_device, bytes, meta.proto, meta.l4_flags);
        return if from_device {
            (
                Verdict::Pass(PassReason::Rule, session.rule),
                device(&session),
            )
        } else {
            (
                Verdict::Pass(PassReason::Reply, session.rule),
                Src::default(),
            )
        };
    }
    // No session, or one checked under another policy: judge the device's direction (one
    // call site, so that the lookups are inlined once).
    meta.reversed = !from_device;
    let inputs = table.identify(meta);
    if !tracked {
        return fresh(inputs);
    }
    // A quarantined SIM at the other end sends nothing, not even replies.
    let peer_quarantined =
        inputs.dst.kind == DstKind::Sim && inputs.dst.sim.flags & SIM_QUARANTINED != 0;
    if exists {
        return match decide(&inputs) {
            Verdict::Pass(PassReason::Rule, _) if peer_quarantined => {
                table.remove(&key);
                (Verdict::Drop(DropReason::Quarantined), Src::default())
            }
            Verdict::Pass(PassReason::Rule, rule) if inputs.src.kind == SrcKind::Sim => {
                table.refresh(&key, &inputs.src.sim, rule, epoch);
                table.touch(&key, from_device, bytes, meta.proto, meta.l4_flags);
                if from_device {
                    (Verdict::Pass(PassReason::Rule, rule), inputs.src)
                } else {
                    (Verdict::Pass(PassReason::Reply, rule), Src::default())
                }
            }
            denied => {
                table.remove(&key);
                match denied {
                    _ if from_device => (denied, inputs.src),
                    Verdict::Drop(reason) => (Verdict::Drop(reason), Src::default()),
                    Verdict::Pass(..) => (Verdict::Drop(DropReason::Inbound), Src::default()),
                }
            }
        };
    }
    let (verdict, src) = fresh(inputs);
    if let Verdict::Pass(PassReason::Rule, rule) = verdict
        && opens(meta)
        && !peer_quarantined
    {
        let now = table.now_ns();
        let session = Session {
            sim: src.sim.sim,
            rule,
            epoch,
            segment: src.sim.segment,
            state: if meta.proto == IPPROTO_TCP {
                SessionState::SynSent as u8
            } else {
                SessionState::Open as u8
            },
            device_first: u8::from(src_first),
            created_ns: now,
            seen_ns: now,
            packets: [1, 0],
            bytes: [bytes, 0],
        };
        if !table.create(&key, &session) {
            return (Verdict::Drop(DropReason::SessionsFull), src);
        }
    }
    (verdict, src)
}

/// The verdict without a session: the policy's, except that a packet from outside every pool
/// to a pool address is inbound and dropped.
#[inline(always)]
fn fresh(inputs: Inputs) -> (Verdict, Src) {
    let verdict = decide(&inputs);
    let toward_pool = matches!(inputs.dst.kind, DstKind::Sim | DstKind::PoolNoSim);
    match verdict {
        Verdict::Pass(PassReason::NonPool, _) if toward_pool => {
            (Verdict::Drop(DropReason::Inbound), inputs.src)
        }
        other => (other, inputs.src),
    }
}
