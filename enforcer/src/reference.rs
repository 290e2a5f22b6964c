//! The userspace reference model of the XDP program, for differential tests and `enforcer
//! explain`-style tooling.
//!
//! Written independently of the kernel program on purpose: its own frame parser over a byte
//! slice, and its own lookups over a [`MapImage`] (both LPM tables are linear scans for the most
//! specific covering entry, written from their meaning rather than from the key's bit layout).
//! Only what must agree by definition is shared: the map types, the lookup sequence (`enforcer_common::decide::identify`) and the judgement (`decide`). The
//! parsing rules it implements are listed in `enforcer-ebpf/src/parse.rs`.

use std::collections::HashMap;

use enforcer_common::{
    DropReason, Inputs, PassReason, Verdict,
    decide::{self, PacketMeta, Tables},
    maps::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, NetEntry, PORT_BITS_ANY, PROTO_ANY,
        RuleKey, SegmentEntry, SimEntry,
    },
    rules::RuleTable,
    session::{self, Found, Opening, Quoted, Session, SessionKey, SessionState, SessionTable},
};

use crate::compile::MapImage;

/// What the reference parser makes of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// An IP packet for the lookups.
    Ip(PacketMeta),
    /// A verdict that needs no lookup (ARP, neighbour discovery).
    Done(Verdict),
    /// Neither IPv4, IPv6 nor ARP: judged by the interface's role (`decide::not_ip`).
    NotIp,
}

/// The verdict and the SIM it is counted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// What the program returns and why.
    pub verdict: Verdict,
    /// The sending SIM, whose counters move.
    pub sim: Option<SimEntry>,
}

/// The reference model loaded with one image.
pub struct Reference {
    generation: u8,
    sims_v4: HashMap<[u8; 4], SimEntry>,
    sims_v6: HashMap<[u8; 8], SimEntry>,
    image: MapImage,
    ifaces: HashMap<u32, u32>,
    /// The model's own session table: [`Reference::evaluate`] runs the program's session
    /// logic over it (`enforcer_common::session::judge`), as the kernel does over `SESSIONS`.
    sessions: std::cell::RefCell<Sessions>,
}

/// The reference model's session table: a map with a capacity, and the policy epoch.
#[derive(Debug, Default)]
pub struct Sessions {
    /// Live sessions.
    pub table: HashMap<SessionKey, Session>,
    /// Most sessions it holds (the kernel map's capacity).
    pub capacity: usize,
    /// The policy epoch in force.
    pub epoch: u32,
    /// Nanoseconds since the model started, raised by one per packet (the kernel's clock
    /// plays no part in verdicts).
    pub now_ns: u64,
}

/// The model's sessions with its policy tables: what [`session::judge`] needs.
struct WithTables<'a> {
    sessions: &'a mut Sessions,
    tables: &'a Reference,
}

impl SessionTable for WithTables<'_> {
    fn epoch(&self) -> u32 {
        self.sessions.epoch
    }

    fn now_ns(&self) -> u64 {
        self.sessions.now_ns
    }

    fn find(&mut self, key: &SessionKey) -> Option<Found> {
        self.sessions.table.get(key).map(Found::of)
    }

    fn create(&mut self, key: &SessionKey, opening: &Opening) -> bool {
        // As BPF_NOEXIST: an entry already there stays (another CPU's, in the kernel).
        if self.sessions.table.contains_key(key) {
            return true;
        }
        if self.sessions.table.len() >= self.sessions.capacity {
            return false;
        }
        let session = Session::opened(opening, self.sessions.now_ns);
        self.sessions.table.insert(*key, session);
        true
    }

    fn touch(&mut self, key: &SessionKey, from_device: bool, bytes: u64, proto: u8, flags: u8) {
        let now = self.sessions.now_ns;
        if let Some(s) = self.sessions.table.get_mut(key) {
            let slot = usize::from(!from_device);
            s.packets[slot] += 1;
            s.bytes[slot] += bytes;
            let from_opener = from_device == (s.flags & session::SESSION_INBOUND == 0);
            s.state =
                session::advance(SessionState::from_u8(s.state), proto, from_opener, flags) as u8;
            s.seen_ns = now;
        }
    }

    fn refresh(&mut self, key: &SessionKey, sim: &SimEntry, rule: u32, epoch: u32) {
        if let Some(s) = self.sessions.table.get_mut(key) {
            s.sim = sim.sim;
            s.segment = sim.segment;
            s.rule = rule;
            s.epoch = epoch;
        }
    }

    fn identify(&self, meta: &PacketMeta) -> Inputs {
        decide::identify(self.tables, meta)
    }

    fn iface_flags(&self, ifindex: u32) -> u32 {
        self.tables.iface_flags(ifindex)
    }

    fn outside_pools(&self, v6: bool, addr: &[u8; 16]) -> bool {
        let generation = self.tables.generation();
        let net = if v6 {
            self.tables.net_v6(generation, *addr)
        } else {
            self.tables
                .net_v4(generation, [addr[0], addr[1], addr[2], addr[3]])
        };
        net.is_none_or(|net| net.flags & enforcer_common::maps::NET_POOL == 0)
    }

    fn remove(&mut self, key: &SessionKey) {
        self.sessions.table.remove(key);
    }
}

impl Reference {
    /// A model of the program with `image` loaded as generation `generation` and per-interface
    /// flags `ifaces` (ifindex → `IFACE_*`).
    #[must_use]
    pub fn new(image: &MapImage, generation: u8, ifaces: HashMap<u32, u32>) -> Self {
        Self {
            generation,
            sims_v4: image.sims_v4.iter().copied().collect(),
            sims_v6: image.sims_v6.iter().copied().collect(),
            image: image.clone(),
            ifaces,
            sessions: std::cell::RefCell::new(Sessions {
                capacity: enforcer_common::maps::defaults::MAX_SESSIONS as usize,
                ..Sessions::default()
            }),
        }
    }

    /// Judge one frame that arrived on `ifindex`.
    #[must_use]
    pub fn evaluate(&self, frame: &[u8], ifindex: u32) -> Outcome {
        match parse(frame, ifindex) {
            Err(reason) => Outcome {
                verdict: Verdict::Drop(reason),
                sim: None,
            },
            Ok(Parsed::Done(verdict)) => Outcome { verdict, sim: None },
            Ok(Parsed::NotIp) => Outcome {
                verdict: decide::not_ip(self.iface_flags(ifindex)),
                sim: None,
            },
            Ok(Parsed::Ip(mut meta)) => {
                let mut sessions = self.sessions.borrow_mut();
                sessions.now_ns += 1;
                let mut table = WithTables {
                    sessions: &mut sessions,
                    tables: self,
                };
                if let Some(rule) =
                    session::related(&mut table, &quoted(frame), meta.ifindex, &meta.src)
                {
                    return Outcome {
                        verdict: Verdict::Pass(PassReason::Reply, rule),
                        sim: None,
                    };
                }
                let (verdict, src) = session::judge(&mut table, &mut meta, frame.len() as u64);
                Outcome {
                    verdict,
                    sim: src.sim(),
                }
            }
        }
    }

    /// The model after the program's policy was replaced by `image` in `generation`: its
    /// sessions stay, and the epoch moves on, as the loader's flip raises `CONFIG.epoch`.
    #[must_use]
    pub fn reloaded(self, image: &MapImage, generation: u8) -> Self {
        let mut sessions = self.sessions.into_inner();
        sessions.epoch = sessions.epoch.wrapping_add(1);
        Self {
            sessions: std::cell::RefCell::new(sessions),
            ..Self::new(image, generation, self.ifaces)
        }
    }

    /// A SIM's quarantine flag changed in place: the epoch moves on, as
    /// `Enforcer::bump_epoch` does after the daemon's quarantine.
    pub fn set_quarantined(&mut self, sim: u32, quarantined: bool) {
        for entry in self.sims_v4.values_mut().chain(self.sims_v6.values_mut()) {
            if entry.sim == sim {
                if quarantined {
                    entry.flags |= enforcer_common::maps::SIM_QUARANTINED;
                } else {
                    entry.flags &= !enforcer_common::maps::SIM_QUARANTINED;
                }
            }
        }
        let sessions = self.sessions.get_mut();
        sessions.epoch = sessions.epoch.wrapping_add(1);
    }

    /// Set interface `ifindex`'s `IFACE_*` flags, and move the epoch on, as
    /// `Enforcer::set_iface` does.
    pub fn set_iface(&mut self, ifindex: u32, flags: u32) {
        self.ifaces.insert(ifindex, flags);
        let sessions = self.sessions.get_mut();
        sessions.epoch = sessions.epoch.wrapping_add(1);
    }

    /// The model's session table (to inspect, to change its capacity or epoch).
    pub fn sessions(&self) -> std::cell::RefMut<'_, Sessions> {
        self.sessions.borrow_mut()
    }

    /// Judge an already parsed IP packet by the policy alone (the lookups and the decision,
    /// no parsing, no sessions).
    #[must_use]
    pub fn judge(&self, meta: &PacketMeta) -> Outcome {
        let inputs = decide::identify(self, meta);
        Outcome {
            verdict: decide::decide(&inputs),
            sim: inputs.src.sim(),
        }
    }
}

impl RuleTable for Reference {
    fn port_rule(&self, generation: u8, key: &RuleKey) -> Option<u32> {
        if generation != self.generation {
            return None;
        }
        self.image
            .rules
            .iter()
            .find(|(entry, _)| {
                entry.port_bits == 16
                    && (entry.subject, entry.class, entry.proto, entry.port)
                        == (key.subject, key.class, key.proto, key.port)
            })
            .map(|(_, value)| value.rule)
    }

    /// The most specific entry for the key's subject and class that allows its protocol and
    /// port: a port block (the smaller, the more specific), then the protocol on any port, then
    /// any protocol.
    fn rule(&self, generation: u8, key: &RuleKey) -> Option<u32> {
        if generation != self.generation {
            return None;
        }
        let allows = |entry: &RuleKey| {
            // Single-port entries live in `PORT_RULES` only, as in the kernel: a compiler that
            // lost a subject's single-port tier must not be hidden by finding them here.
            if entry.port_bits == 16 || entry.subject != key.subject || entry.class != key.class {
                return false;
            }
            if entry.proto == PROTO_ANY {
                return true;
            }
            if entry.proto != key.proto {
                return false;
            }
            if entry.port_bits == PORT_BITS_ANY {
                return true;
            }
            if key.port_bits == PORT_BITS_ANY {
                return false; // a packet without ports never matches a port block
            }
            let size = 1u32 << (16 - u32::from(entry.port_bits));
            let first = u32::from(entry.port);
            (first..first + size).contains(&u32::from(key.port))
        };
        let specificity = |entry: &RuleKey| match (entry.proto, entry.port_bits) {
            (PROTO_ANY, _) => 0,
            (_, PORT_BITS_ANY) => 1,
            (_, bits) => 2 + u32::from(bits),
        };
        self.image
            .rules
            .iter()
            .filter(|(entry, _)| allows(entry))
            .max_by_key(|(entry, _)| specificity(entry))
            .map(|(_, value)| value.rule)
    }
}

impl Tables for Reference {
    fn generation(&self) -> u8 {
        self.generation
    }

    fn sim_v4(&self, generation: u8, addr: [u8; 4]) -> Option<SimEntry> {
        (generation == self.generation)
            .then(|| self.sims_v4.get(&addr).copied())
            .flatten()
    }

    fn sim_v6(&self, generation: u8, prefix: [u8; 8]) -> Option<SimEntry> {
        (generation == self.generation)
            .then(|| self.sims_v6.get(&prefix).copied())
            .flatten()
    }

    fn net_v4(&self, generation: u8, addr: [u8; 4]) -> Option<NetEntry> {
        if generation != self.generation {
            return None;
        }
        let addr = u32::from_be_bytes(addr);
        self.image
            .nets_v4
            .iter()
            .filter(|net| {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(net.prefix_len))
                    .unwrap_or(0);
                addr & mask == u32::from_be_bytes(net.addr) & mask
            })
            .max_by_key(|net| net.prefix_len)
            .map(|net| net.entry)
    }

    fn net_v6(&self, generation: u8, addr: [u8; 16]) -> Option<NetEntry> {
        if generation != self.generation {
            return None;
        }
        let addr = u128::from_be_bytes(addr);
        self.image
            .nets_v6
            .iter()
            .filter(|net| {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(net.prefix_len))
                    .unwrap_or(0);
                addr & mask == u128::from_be_bytes(net.addr) & mask
            })
            .max_by_key(|net| net.prefix_len)
            .map(|net| net.entry)
    }

    fn single_port_used(&self, generation: u8, proto: u8, port: u16) -> bool {
        generation == self.generation
            && self.image.rules.iter().any(|(entry, _)| {
                entry.port_bits == 16 && entry.proto == proto && entry.port == port
            })
    }

    fn segment(&self, generation: u8, segment: u16) -> SegmentEntry {
        if generation != self.generation {
            return SegmentEntry::default();
        }
        self.image
            .segments
            .get(usize::from(segment))
            .copied()
            .unwrap_or_default()
    }

    fn iface_flags(&self, ifindex: u32) -> u32 {
        self.ifaces.get(&ifindex).copied().unwrap_or(0)
    }
}

/// Parse a frame by the rules in `enforcer-ebpf/src/parse.rs`, over a byte slice.
///
/// Written apart from the kernel parser: once the IP header is checked, everything after it is
/// read from a sub-slice that ends where the IP packet ends (`tot_len`, `payload_len`), so no
/// later read can reach Ethernet padding or a trailer.
///
/// # Errors
/// The drop reason of a frame the program drops while parsing: `Malformed` or `SourceRoute`.
pub fn parse(frame: &[u8], ifindex: u32) -> Result<Parsed, DropReason> {
    parse_with_quote(frame, ifindex).map(|(parsed, _)| parsed)
}

/// What an ICMP or ICMPv6 error frame quotes ([`Quoted`]; `found` false for any other frame),
/// read apart from the program's parser: an IPv4 header (version 4, IHL >= 5, not a later
/// fragment) or an IPv6 header without extension headers, whose source is the error's
/// destination, and eight bytes of a TCP, UDP or echo header, inside the error's IP packet.
#[must_use]
pub fn quoted(frame: &[u8]) -> Quoted {
    parse_with_quote(frame, 0).map_or_else(|_| Quoted::default(), |(_, quoted)| quoted)
}

/// Whether an ICMP error's quote (after the 8 bytes of `icmp`, a part of `frame`) starts, and
/// its IP packet ends, within the first 16,383 bytes of the frame: the program reads no quote
/// further in (its verifier bound).
fn quote_within(frame: &[u8], icmp: &[u8]) -> bool {
    const MAX_QUOTE_OFFSET: usize = 0x3fff;
    let start = icmp.as_ptr() as usize - frame.as_ptr() as usize;
    start + 8 <= MAX_QUOTE_OFFSET && start + icmp.len() <= MAX_QUOTE_OFFSET
}

fn quote_of(v6: bool, bytes: &[u8], error_dst: &[u8; 16]) -> Quoted {
    let header_len = if v6 {
        40
    } else {
        usize::from(bytes.first().map_or(0, |b| b & 0x0f)) * 4
    };
    let Some(header) = bytes.get(..header_len.max(20)) else {
        return Quoted::default();
    };
    let (src, dst, proto, echo) = if v6 {
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src.copy_from_slice(&header[8..24]);
        dst.copy_from_slice(&header[24..40]);
        if header[0] >> 4 != 6 {
            return Quoted::default();
        }
        (src, dst, header[6], (IPPROTO_ICMPV6, 128, 129))
    } else {
        let fragment_offset = u16::from_be_bytes([header[6], header[7]]) & 0x1fff;
        if header[0] >> 4 != 4 || header_len < 20 || fragment_offset != 0 {
            return Quoted::default();
        }
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        src[..4].copy_from_slice(&header[12..16]);
        dst[..4].copy_from_slice(&header[16..20]);
        (src, dst, header[9], (IPPROTO_ICMP, 8, 0))
    };
    let Some(l4) = bytes.get(header_len..header_len + 8) else {
        return Quoted::default();
    };
    if src != *error_dst {
        return Quoted::default();
    }
    let id = u16::from_be_bytes([l4[4], l4[5]]);
    let ports = match proto {
        IPPROTO_TCP | IPPROTO_UDP => (
            u16::from_be_bytes([l4[0], l4[1]]),
            u16::from_be_bytes([l4[2], l4[3]]),
        ),
        p if p == echo.0 && l4[0] == echo.1 => (id, 0),
        p if p == echo.0 && l4[0] == echo.2 => (0, id),
        _ => return Quoted::default(),
    };
    Quoted::of(&src, ports.0, &dst, ports.1, proto, v6)
}

fn parse_with_quote(frame: &[u8], ifindex: u32) -> Result<(Parsed, Quoted), DropReason> {
    let mut ethertype = be16(frame, 12)?;
    let mut at = 14;
    let mut tags = 0;
    while ethertype == 0x8100 || ethertype == 0x88A8 {
        if tags == 2 {
            return Err(DropReason::Malformed);
        }
        ethertype = be16(frame, at + 2)?;
        at += 4;
        tags += 1;
    }
    let l3 = frame.get(at..).unwrap_or_default();
    let ip = match ethertype {
        0x0800 => ipv4(l3)?,
        0x86DD => ipv6(l3)?,
        0x0806 => {
            return Ok((
                Parsed::Done(Verdict::Pass(PassReason::Neighbour, 0)),
                Quoted::default(),
            ));
        }
        _ => return Ok((Parsed::NotIp, Quoted::default())),
    };
    let mut meta = PacketMeta {
        v6: ip.v6,
        src: ip.src,
        dst: ip.dst,
        proto: ip.proto,
        dport: 0,
        sport: 0,
        l4_flags: 0,
        has_ports: false,
        later_fragment: ip.later_fragment,
        ifindex,
        reversed: false,
        session_absent: false,
    };
    if ip.later_fragment {
        return Ok((Parsed::Ip(meta), Quoted::default()));
    }
    let mut quoted = Quoted::default();
    let l4 = ip.l4;
    match ip.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let need = if ip.proto == IPPROTO_TCP { 20 } else { 8 };
            bytes(l4, 0, need)?;
            if ip.proto == IPPROTO_TCP {
                let header_len = usize::from(l4[12] >> 4) * 4;
                if header_len < 20 || header_len > l4.len() {
                    return Err(DropReason::Malformed);
                }
                meta.l4_flags = l4[13];
            }
            meta.dport = be16(l4, 2)?;
            meta.sport = be16(l4, 0)?;
            meta.has_ports = true;
        }
        IPPROTO_ICMP if !ip.v6 => {
            let icmp = bytes(l4, 0, 8)?;
            if session::is_icmp_error(false, icmp[0]) && quote_within(frame, l4) {
                quoted = quote_of(false, &l4[8..], &ip.dst);
            }
            echo(&mut meta, icmp, 8, 0);
        }
        IPPROTO_ICMPV6 if ip.v6 => {
            let icmp = bytes(l4, 0, 8)?;
            if ip.on_link && link_scoped(&ip.src, &ip.dst) && (133..=137).contains(&icmp[0]) {
                return Ok((
                    Parsed::Done(Verdict::Pass(PassReason::Neighbour, 0)),
                    Quoted::default(),
                ));
            }
            if session::is_icmp_error(true, icmp[0]) && quote_within(frame, l4) {
                quoted = quote_of(true, &l4[8..], &ip.dst);
            }
            echo(&mut meta, icmp, 128, 129);
        }
        _ => {}
    }
    Ok((Parsed::Ip(meta), quoted))
}

/// An IP header that checked out, and the transport bytes up to the IP packet's end.
struct IpPart<'a> {
    v6: bool,
    /// IPv6 hop limit 255 and no extension header (so no fragment): neighbour discovery that
    /// cannot have crossed a router (RFC 4861 §6.1.1, RFC 6980).
    on_link: bool,
    src: [u8; 16],
    dst: [u8; 16],
    proto: u8,
    later_fragment: bool,
    l4: &'a [u8],
}

fn bytes(data: &[u8], at: usize, len: usize) -> Result<&[u8], DropReason> {
    data.get(at..at + len).ok_or(DropReason::Malformed)
}

fn be16(data: &[u8], at: usize) -> Result<u16, DropReason> {
    bytes(data, at, 2).map(|b| u16::from_be_bytes([b[0], b[1]]))
}

fn ipv4(l3: &[u8]) -> Result<IpPart<'_>, DropReason> {
    let header = bytes(l3, 0, 20)?;
    if header[0] >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let ihl = usize::from(header[0] & 0x0f) * 4;
    let total = usize::from(be16(l3, 2)?);
    if ihl < 20 || total < ihl {
        return Err(DropReason::Malformed);
    }
    let packet = bytes(l3, 0, total)?;
    // RFC 791 §3.1: type 0 ends the list, type 1 is one byte, every other type has a length.
    // At most eight options (a no-op counts); a ninth that is not end-of-list is malformed.
    let mut options = &packet[20..ihl];
    let mut count = 0;
    while let Some(&kind) = options.first() {
        if count == 8 {
            if kind == 0 {
                break;
            }
            return Err(DropReason::Malformed);
        }
        count += 1;
        match kind {
            0 => break,
            1 => options = &options[1..],
            _ if matches!(kind & 0x1f, 3 | 9) => return Err(DropReason::SourceRoute),
            _ => {
                let len = usize::from(*options.get(1).ok_or(DropReason::Malformed)?);
                if len < 2 || len > options.len() {
                    return Err(DropReason::Malformed);
                }
                options = &options[len..];
            }
        }
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src[..4].copy_from_slice(&header[12..16]);
    dst[..4].copy_from_slice(&header[16..20]);
    Ok(IpPart {
        v6: false,
        on_link: false,
        src,
        dst,
        proto: header[9],
        later_fragment: be16(l3, 6)? & 0x1fff != 0,
        l4: &packet[ihl..],
    })
}

fn ipv6(l3: &[u8]) -> Result<IpPart<'_>, DropReason> {
    let header = bytes(l3, 0, 40)?;
    if header[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let payload_len = usize::from(be16(l3, 4)?);
    let mut next = header[6];
    if payload_len == 0 && next != 59 {
        return Err(DropReason::Malformed); // A jumbogram (RFC 2675): not supported.
    }
    let mut rest = bytes(l3, 40, payload_len)?;
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&header[8..24]);
    dst.copy_from_slice(&header[24..40]);
    let mut later_fragment = false;
    let mut seen = 0;
    while matches!(next, 0 | 43 | 44 | 60) {
        if seen == 6 {
            return Err(DropReason::Malformed);
        }
        seen += 1;
        let ext = bytes(rest, 0, 8)?;
        let len = if next == 44 {
            8
        } else {
            (usize::from(ext[1]) + 1) * 8
        };
        if next == 43 && ext[3] != 0 {
            return Err(DropReason::SourceRoute);
        }
        bytes(rest, 0, len)?;
        let fragment_offset = u16::from_be_bytes([ext[2], ext[3]]) >> 3;
        let was = next;
        next = ext[0];
        rest = &rest[len..];
        if was == 44 && fragment_offset != 0 {
            later_fragment = true;
            break;
        }
    }
    Ok(IpPart {
        v6: true,
        on_link: header[7] == 255 && seen == 0,
        src,
        dst,
        proto: next,
        later_fragment,
        l4: rest,
    })
}

/// Neighbour discovery that stays on its link (RFC 4861 §4, RFC 4291 §2.5.6, §2.7): from a
/// link-local source (fe80::/10), or to a link-local address or a link-scope multicast group
/// (ff0x with scope 2), none of which a router forwards. Written from the RFCs, apart from the
/// program's check.
fn link_scoped(src: &[u8; 16], dst: &[u8; 16]) -> bool {
    let src = std::net::Ipv6Addr::from(*src);
    let dst = std::net::Ipv6Addr::from(*dst);
    let link_local = |a: std::net::Ipv6Addr| a.segments()[0] & 0xffc0 == 0xfe80;
    let link_multicast = dst.is_multicast() && dst.segments()[0] & 0x000f == 0x0002;
    link_local(src) || link_local(dst) || link_multicast
}

/// The ICMP type, and an echo request's identifier as the source port or a reply's as the
/// destination port (RFC 792, RFC 4443 §4.1), as `PacketMeta` documents.
fn echo(meta: &mut PacketMeta, icmp: &[u8], request: u8, reply: u8) {
    meta.l4_flags = icmp[0];
    let id = u16::from_be_bytes([icmp[4], icmp[5]]);
    if icmp[0] == request {
        meta.sport = id;
    } else if icmp[0] == reply {
        meta.dport = id;
    }
}
