//! Sessions: connections a device opened and the policy allowed, so that their replies, and
//! nothing else from outside, reach the device.
//!
//! One table entry per session, found from either direction with one lookup: the key holds
//! the two endpoints in a fixed order (the lesser (address, port) first, [`SessionKey::of`]),
//! and the entry records which of them is the device. The decision of what a packet does to
//! its session lives here, generic over [`SessionTable`], so that the XDP program (a kernel
//! hash map) and the reference model (its own table) share it, as they share `decide`.
//!
//! - A session is created only by a packet that the policy allows and that may open one (a
//!   TCP SYN without ACK, any UDP datagram, an ICMP/ICMPv6 echo request, [`opens`]): a
//!   device's packet that a rule allows, or a packet from outside toward a device that an
//!   inbound rule of the device's segment allows (an *inbound* session). A bare ACK or RST,
//!   or a packet from outside that no inbound rule allows, never creates one.
//! - Every packet of a session checked under the current policy epoch (`CONFIG.epoch`) passes
//!   at once: the opener's as allowed by the session's rule (`rule`, or `inbound`), the other
//!   side's as its reply (`reply`).
//! - A session checked under an older epoch is judged again on its next packet, in the
//!   opener's direction, against the policy in force: still allowed, it is brought up to date;
//!   denied (a removed rule, a quarantine), it is removed and the packet dropped.
//! - TCP state is followed enough to expire closed sessions quickly (the daemon removes idle
//!   and closed sessions, [`SessionState`]).
//! - A full table creates nothing: the packet that would have opened a session is dropped
//!   (`sessions_full`). No live session is ever evicted to make room.

use crate::{
    decide::{DstKind, Inputs, PacketMeta, Src, SrcKind, decide},
    maps::{
        IFACE_DROP_NON_POOL, IFACE_SERVICE, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP,
        SIM_BLOCKED, SimEntry, blocked_reason,
    },
    rules::AUDIT_RULE,
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

/// [`Session::flags`]: the device is the key's first endpoint (`addr_a`).
pub const SESSION_DEVICE_FIRST: u8 = 1;
/// [`Session::flags`]: the session was opened from outside, by a packet an inbound rule
/// allowed; the device answers.
pub const SESSION_INBOUND: u8 = 2;

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
    /// [`SESSION_DEVICE_FIRST`], [`SESSION_INBOUND`].
    pub flags: u8,
    /// When it was created, `CLOCK_MONOTONIC` nanoseconds at tick resolution, as
    /// `CLOCK_MONOTONIC_COARSE` (the program's clock, [`crate::maps::CLOCK_CALIBRATION`]).
    pub created_ns: u64,
    /// When its last packet was seen, same clock.
    pub seen_ns: u64,
    /// Packets from the device, to the device.
    pub packets: [u64; 2],
    /// Bytes from the device, to the device.
    pub bytes: [u64; 2],
}

/// What a new session starts with; the table adds the times ([`Session::opened`]). 24 bytes
/// on the program's stack where a [`Session`] takes 64.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Opening {
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
    /// [`Session::flags`].
    pub flags: u8,
    /// The opening packet's bytes, counted in the opener's direction.
    pub bytes: u64,
}

impl Session {
    /// A session as `opening` starts it at `now_ns`: one packet of the opener counted.
    #[inline(always)]
    #[must_use]
    pub fn opened(opening: &Opening, now_ns: u64) -> Self {
        let mut session = Session {
            sim: opening.sim,
            rule: opening.rule,
            epoch: opening.epoch,
            segment: opening.segment,
            state: opening.state,
            flags: opening.flags,
            created_ns: now_ns,
            seen_ns: now_ns,
            packets: [0; 2],
            bytes: [0; 2],
        };
        let slot = usize::from(opening.flags & SESSION_INBOUND != 0);
        session.packets[slot] = 1;
        session.bytes[slot] = opening.bytes;
        session
    }
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
        Some(SessionKey::between(
            &meta.src, meta.sport, &meta.dst, meta.dport, meta.proto, meta.v6,
        ))
    }

    /// Put the endpoints in the key's order (as [`SessionKey::between`]), in place; returns
    /// whether the endpoint that was first stays first.
    #[inline(always)]
    pub fn order(&mut self) -> bool {
        let (a, b) = (
            u128::from_ne_bytes(self.addr_a),
            u128::from_ne_bytes(self.addr_b),
        );
        let stays = (a, self.port_a) <= (b, self.port_b);
        if !stays {
            self.addr_a = b.to_ne_bytes();
            self.addr_b = a.to_ne_bytes();
            core::mem::swap(&mut self.port_a, &mut self.port_b);
        }
        stays
    }

    /// The key of a packet from `src` port `sport` to `dst` port `dport` (an echo's
    /// identifier as `PacketMeta` places it) of IP protocol `proto`, and whether `src` is the
    /// key's first endpoint.
    #[inline(always)]
    #[must_use]
    pub fn between(
        src: &[u8; 16],
        sport: u16,
        dst: &[u8; 16],
        dport: u16,
        proto: u8,
        v6: bool,
    ) -> (SessionKey, bool) {
        // Any total order will do, as long as both directions use it.
        let (s, d) = (u128::from_ne_bytes(*src), u128::from_ne_bytes(*dst));
        let src_first = (s, sport) <= (d, dport);
        let key = if src_first {
            SessionKey {
                addr_a: *src,
                addr_b: *dst,
                port_a: sport,
                port_b: dport,
                proto,
                v6: u8::from(v6),
                _pad: [0; 2],
            }
        } else {
            SessionKey {
                addr_a: *dst,
                addr_b: *src,
                port_a: dport,
                port_b: sport,
                proto,
                v6: u8::from(v6),
                _pad: [0; 2],
            }
        };
        (key, src_first)
    }
}

/// What an ICMP or ICMPv6 error quotes (RFC 792: destination unreachable, time exceeded,
/// parameter problem; RFC 4443 §3: those and packet too big): the session key of the quoted
/// packet, when the quote holds a whole IP header and the transport's first eight bytes of a
/// TCP segment, a UDP datagram or an echo, and the error goes back to the quoted packet's
/// sender (its destination is the quoted source). Written by the parsers; `found` false
/// otherwise.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Quoted {
    /// The quoted packet's session key.
    pub key: SessionKey,
    /// The quoted packet's source is the key's first endpoint.
    pub quoted_src_first: bool,
    /// A quote was found.
    pub found: bool,
}

impl Quoted {
    /// A quoted packet from `src` port `sport` to `dst` port `dport` (TCP, UDP; for an echo
    /// request the identifier as `sport` and 0 as `dport`, for an echo reply the other way
    /// round).
    #[inline(always)]
    #[must_use]
    pub fn of(src: &[u8; 16], sport: u16, dst: &[u8; 16], dport: u16, proto: u8, v6: bool) -> Self {
        let (key, quoted_src_first) = SessionKey::between(src, sport, dst, dport, proto, v6);
        Self {
            key,
            quoted_src_first,
            found: true,
        }
    }
}

impl Quoted {
    /// The quoted packet's (source, source port, destination, destination port).
    #[must_use]
    pub fn packet(&self) -> ([u8; 16], u16, [u8; 16], u16) {
        let k = &self.key;
        if self.quoted_src_first {
            (k.addr_a, k.port_a, k.addr_b, k.port_b)
        } else {
            (k.addr_b, k.port_b, k.addr_a, k.port_a)
        }
    }
}

/// Whether an ICMP type (`v6`: ICMPv6) is an error that quotes the packet it answers.
#[inline(always)]
#[must_use]
pub const fn is_icmp_error(v6: bool, kind: u8) -> bool {
    if v6 {
        matches!(kind, 1..=4)
    } else {
        matches!(kind, 3 | 11 | 12)
    }
}

/// An ICMP or ICMPv6 error from `error_src`, arriving on interface `ifindex`, that quotes a
/// packet of a live session checked under the policy in force: the rule that allowed the
/// session, so that it passes as a `reply` (path MTU discovery and unreachables keep
/// working). `None`, and the error is judged as the packet it is (toward a device:
/// `inbound`), when there is no such session, or one of an older epoch (to be judged again on
/// its next packet, a quarantine among the reasons), or when the error comes from where its
/// direction may not: as in [`judge`], the device's side not from a service interface and the
/// other side not from a core one; and an error sent from the device's side must come from
/// the device itself (another device forging one would reach a host its rules forbid), an
/// error toward the device from outside every pool (a router or the peer, not a pool address).
/// Nothing is created, counted in the session or changed.
#[inline(always)]
pub fn related<T: SessionTable>(
    table: &mut T,
    quoted: &Quoted,
    ifindex: u32,
    error_src: &[u8; 16],
) -> Option<u32> {
    if !quoted.found {
        return None;
    }
    let session = table.find(&quoted.key)?;
    if session.epoch != table.epoch() {
        return None;
    }
    // The error goes to the quoted packet's source; it is sent from the device's side when
    // the quoted destination is the device.
    let device_first = session.flags & SESSION_DEVICE_FIRST != 0;
    let from_device = device_first != quoted.quoted_src_first;
    let wrong_side = if from_device {
        IFACE_SERVICE
    } else {
        IFACE_DROP_NON_POOL
    };
    if table.iface_flags(ifindex) & wrong_side != 0 {
        return None;
    }
    let sender_ok = if from_device {
        // The quoted packet's destination: the device.
        let device = if quoted.quoted_src_first {
            &quoted.key.addr_b
        } else {
            &quoted.key.addr_a
        };
        error_src == device
    } else {
        table.outside_pools(quoted.key.v6 == 1, error_src)
    };
    sender_ok.then_some(session.rule)
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

/// The state after a packet with TCP flags `flags` (`from_opener`: sent by the side that
/// opened the session, the device unless [`SESSION_INBOUND`]) in state `state`. Non-TCP
/// sessions stay [`SessionState::Open`].
#[inline(always)]
#[must_use]
pub fn advance(state: SessionState, proto: u8, from_opener: bool, flags: u8) -> SessionState {
    if proto != IPPROTO_TCP {
        return SessionState::Open;
    }
    if flags & TCP_RST != 0 {
        return SessionState::Closed;
    }
    match state {
        // A new SYN on a closed session opens it again (a reused port).
        SessionState::Closed if from_opener && flags & (TCP_SYN | TCP_ACK) == TCP_SYN => {
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
        SessionState::SynSent if !from_opener => SessionState::Established,
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

/// Idle timeouts, seconds. `#[repr(C)]`: the session scan reads them from a map
/// ([`crate::scan::ScanArgs`]).
#[repr(C)]
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
    /// Add a new session ([`Session::opened`]); `false` when the table is full (nothing was
    /// added).
    fn create(&mut self, key: &SessionKey, opening: &Opening) -> bool;
    /// Count one packet of `bytes` bytes in `key`'s session (`from_device`: in the device's
    /// direction), move its state on with the packet's protocol and TCP flags ([`advance`],
    /// from the opener when `from_device` is not [`SESSION_INBOUND`]) and set its last-seen
    /// time (the kernel adds atomically: both directions may run on two CPUs at once).
    fn touch(&mut self, key: &SessionKey, from_device: bool, bytes: u64, proto: u8, flags: u8);
    /// Bring `key`'s session up to date after a check: its SIM, segment, rule and epoch.
    fn refresh(&mut self, key: &SessionKey, sim: &SimEntry, rule: u32, epoch: u32);
    /// Remove `key`'s session.
    fn remove(&mut self, key: &SessionKey);
    /// `IFACE_*` flags of interface `ifindex` (`IFACES`), 0 if unknown.
    fn iface_flags(&self, ifindex: u32) -> u32;
    /// Whether `addr` lies outside every pool of the policy in force (`NET_*`).
    fn outside_pools(&self, v6: bool, addr: &[u8; 16]) -> bool;
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
    /// [`Session::flags`].
    pub flags: u8,
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
            flags: session.flags,
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

/// Which side of a found session sent a packet, and whether the session covers it there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Side {
    /// The session covers the packet where it arrived. A session's packet may not come from
    /// everywhere: the device's side never arrives from the services (a forged device address),
    /// the other side never arrives on a core interface (a device forging a peer's address to
    /// another device), and only the opener sends echo requests. A packet from elsewhere is
    /// judged as it is, as if there were no session.
    pub exists: bool,
    /// The device sent it (always, for a packet the session does not cover).
    pub from_device: bool,
}

impl Side {
    /// No session found: judged as it is, in its own direction.
    pub const NONE: Side = Side {
        exists: false,
        from_device: true,
    };

    /// The side of a packet of the found `session` whose source is the key's first endpoint
    /// when `src_first`, that is an echo request when `echo_request`, and that arrived on an
    /// interface with `iface_flags` (`IFACE_*`).
    #[inline(always)]
    #[must_use]
    pub fn of(session: &Found, src_first: bool, echo_request: bool, iface_flags: u32) -> Side {
        let inbound = session.flags & SESSION_INBOUND != 0;
        let sent_by_device = (session.flags & SESSION_DEVICE_FIRST != 0) == src_first;
        let echo_answered = echo_request && (sent_by_device == inbound);
        let misplaced = if sent_by_device {
            iface_flags & IFACE_SERVICE != 0 || echo_answered
        } else {
            iface_flags & IFACE_DROP_NON_POOL != 0 || echo_answered
        };
        Side {
            exists: !misplaced,
            from_device: sent_by_device || misplaced,
        }
    }

    /// Whether the packet comes from `session`'s opener: the device, unless the session is
    /// inbound and covers the packet (a packet it does not cover is judged in its own
    /// direction, as the device's).
    #[inline(always)]
    #[must_use]
    pub fn from_opener(self, session: &Found) -> bool {
        self.from_device != (self.exists && session.flags & SESSION_INBOUND != 0)
    }
}

/// The verdict for a packet from `side` of the found `session` when the session covers it
/// and was checked under `epoch`, the policy in force: the opener's packets pass as the
/// session was opened (rule, inbound rule or audit), the other side's as replies, counted for
/// the device when it sent them. `None`: the policy judges the packet (no session covers it
/// there, or the session must be checked again).
#[inline(always)]
#[must_use]
pub fn covered(session: &Found, side: Side, epoch: u32) -> Option<(Verdict, Src)> {
    if !side.exists || session.epoch != epoch {
        return None;
    }
    let inbound = session.flags & SESSION_INBOUND != 0;
    let reason = opener_reason(side.from_opener(session), inbound, session.rule);
    let src = if side.from_device {
        device(session)
    } else {
        Src::default()
    };
    Some((Verdict::Pass(reason, session.rule), src))
}

/// Judge one packet with sessions (`meta` is left turned to the opener's direction): the
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
    let found = if tracked && !meta.session_absent {
        table.find(&key)
    } else {
        None
    };
    let found_exists = found.is_some();
    let session = found.unwrap_or_default();
    let inbound = session.flags & SESSION_INBOUND != 0;
    let side = if found_exists {
        Side::of(
            &session,
            src_first,
            echo_request(meta),
            table.iface_flags(meta.ifindex),
        )
    } else {
        Side::NONE
    };
    let (exists, from_device) = (side.exists, side.from_device);
    // The opener's packets pass as the policy allowed them; the other side's as replies.
    let from_opener = side.from_opener(&session);
    if let Some(judged) = covered(&session, side, epoch) {
        table.touch(&key, from_device, bytes, meta.proto, meta.l4_flags);
        return judged;
    }
    // No session, or one checked under another policy: judge the opener's direction (one
    // call site, so that the lookups are inlined once).
    meta.reversed = !from_opener;
    let inputs = table.identify(meta);
    if !tracked {
        return fresh(inputs);
    }
    // A quarantined SIM at the other end (the device itself, for an inbound packet) sends
    // and receives nothing, not even replies.
    let peer_quarantined =
        inputs.dst.kind == DstKind::Sim && inputs.dst.sim.flags & SIM_BLOCKED != 0;
    if exists {
        return recheck(
            table,
            &key,
            meta,
            bytes,
            &inputs,
            inbound,
            from_device,
            epoch,
        );
    }
    let (verdict, src) = fresh(inputs);
    let (opener_is_device, device_sim) = match verdict {
        Verdict::Pass(PassReason::Rule, _) => (true, src.sim),
        Verdict::Pass(PassReason::Inbound, _) => (false, inputs.dst.sim),
        // Audit mode opens sessions like the rules it stands in for, so replies come back.
        Verdict::Pass(PassReason::Audit, _) if inputs.src.kind == SrcKind::Sim => (true, src.sim),
        Verdict::Pass(PassReason::Audit, _) => (false, inputs.dst.sim),
        _ => return (verdict, src),
    };
    if let Verdict::Pass(_, rule) = verdict
        && opens(meta)
        && !peer_quarantined
    {
        let device_first = src_first == opener_is_device;
        let opening = Opening {
            sim: device_sim.sim,
            rule,
            epoch,
            segment: device_sim.segment,
            state: if meta.proto == IPPROTO_TCP {
                SessionState::SynSent as u8
            } else {
                SessionState::Open as u8
            },
            flags: if device_first {
                SESSION_DEVICE_FIRST
            } else {
                0
            } | if opener_is_device { 0 } else { SESSION_INBOUND },
            bytes,
        };
        if !table.create(&key, &opening) {
            return (Verdict::Drop(DropReason::SessionsFull), src);
        }
    }
    (verdict, src)
}

/// A packet of a session checked under an older epoch, judged in the opener's direction
/// (`inputs`): still allowed as the session was opened (by a device's rule, or by an inbound
/// rule when `inbound`), the session is brought up to date and the packet passes; otherwise
/// the session is removed and the packet dropped (or, for a device's own packet of a session it
/// opened, given the verdict it would get without a session).
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "one call site, inlined into the program"
)]
fn recheck<T: SessionTable>(
    table: &mut T,
    key: &SessionKey,
    meta: &PacketMeta,
    bytes: u64,
    inputs: &Inputs,
    inbound: bool,
    from_device: bool,
    epoch: u32,
) -> (Verdict, Src) {
    let device_quarantined = |sim: &SimEntry| sim.flags & SIM_BLOCKED != 0;
    let verdict = decide(inputs);
    // The device and the rule that allow the session now.
    let allowed = match verdict {
        Verdict::Pass(PassReason::Rule | PassReason::Audit, rule)
            if !inbound
                && inputs.src.kind == SrcKind::Sim
                && !(inputs.dst.kind == DstKind::Sim && device_quarantined(&inputs.dst.sim)) =>
        {
            Some((inputs.src.sim, rule))
        }
        Verdict::Pass(PassReason::Inbound | PassReason::Audit, rule)
            if inbound && inputs.dst.kind == DstKind::Sim =>
        {
            Some((inputs.dst.sim, rule))
        }
        _ => None,
    };
    if let Some((device, rule)) = allowed {
        table.refresh(key, &device, rule, epoch);
        table.touch(key, from_device, bytes, meta.proto, meta.l4_flags);
        let from_opener = from_device != inbound;
        let reason = opener_reason(from_opener, inbound, rule);
        let src = if from_device {
            Src {
                kind: SrcKind::Sim,
                sim: device,
            }
        } else {
            Src::default()
        };
        return (Verdict::Pass(reason, rule), src);
    }
    table.remove(key);
    let to_quarantined = inputs.dst.kind == DstKind::Sim && device_quarantined(&inputs.dst.sim);
    match verdict {
        Verdict::Pass(..) if to_quarantined => (
            Verdict::Drop(blocked_reason(inputs.dst.sim.flags)),
            Src::default(),
        ),
        // The device's own packet of a session it opened: what it gets without a session.
        _ if from_device && !inbound => (verdict, inputs.src),
        Verdict::Drop(reason) => (Verdict::Drop(reason), Src::default()),
        Verdict::Pass(..) => (Verdict::Drop(DropReason::Inbound), Src::default()),
    }
}

/// Why a packet of a live session passes: the opener's as its session was opened (by a
/// rule, an inbound rule, or audit mode: rule id `AUDIT_RULE`), the other side's as a reply.
#[inline(always)]
fn opener_reason(from_opener: bool, inbound: bool, rule: u32) -> PassReason {
    match (from_opener, inbound) {
        (true, _) if rule == AUDIT_RULE => PassReason::Audit,
        (true, false) => PassReason::Rule,
        (true, true) => PassReason::Inbound,
        (false, _) => PassReason::Reply,
    }
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
