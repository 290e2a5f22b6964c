//! Stage 1, parse: a bounded header walk from Ethernet to the transport ports.
//!
//! Takes the frame, returns [`Parsed::Ip`] with a [`PacketMeta`], a final verdict for frames
//! that need no lookup (ARP, neighbour discovery), [`Parsed::NotIp`] for frames that are not
//! IP, or `Err` with the drop reason. Touches no maps. The userspace reference parser
//! (`enforcer::reference::parse`) implements the same rules independently; the differential
//! test holds the two together. The rules:
//! - Ethernet, then up to [`MAX_VLAN_DEPTH`] 802.1Q/802.1ad tags; a third tag is malformed.
//! - ARP passes (neighbour); any other ethertype is not IP (judged by the interface's role).
//! - **Everything after the IP header is bounded by the IP packet's end** (IPv4 `tot_len`,
//!   IPv6 40 + `payload_len`), not by the frame's: the kernel trims Ethernet padding and
//!   trailers after XDP, so bytes there are never judged as headers (a tiny fragment whose TCP
//!   header lies in the padding is malformed, RFC 1858).
//! - IPv4: version 4, IHL >= 5, `tot_len` >= header length and inside the frame. Options are
//!   walked: a loose or strict source route (option number 3 or 9, any copy/class bits) drops
//!   the packet as `source_route`; an option whose length runs past the header, or more than
//!   eight options (no-ops count), is malformed.
//!   A non-zero fragment offset marks a later fragment (no ports).
//! - IPv6: version 6, 40 bytes and `payload_len` inside the frame; `payload_len` 0 with a next
//!   header other than 59 (a jumbogram, RFC 2675, not supported) is malformed. Hop-by-hop,
//!   routing and destination-options headers are skipped whole, a fragment header too (a
//!   non-zero offset ends the walk as a later fragment); a routing header with segments left
//!   drops the packet as `source_route`; more than [`MAX_EXT_HDRS`] extension headers is
//!   malformed.
//! - TCP needs 20 bytes and a data offset of at least 5 words that ends inside the packet, UDP
//!   8, ICMP (in IPv4) and ICMPv6 (in IPv6) 8; other protocols carry no ports and need nothing.
//! - An ICMP or ICMPv6 error (`enforcer_common::session::is_icmp_error`) is reported with
//!   where its quote starts, and [`quoted`] reads what it quotes, for the session check
//!   (`enforcer_common::session::Quoted`): an IPv4 header (version 4, IHL >= 5, not a later
//!   fragment) or an IPv6 header (version 6, no extension header) whose source is the error's
//!   destination, and the first eight bytes of TCP, UDP or an echo, all inside the error's IP
//!   packet. Anything else quotes nothing; the error itself is judged as it is.
//! - ICMPv6 types 133-137 (router/neighbour discovery, redirect) pass (neighbour) only when
//!   they come from the link itself and stay on it: hop limit 255, no extension header (so no
//!   fragment, RFC 4861 §6.1.1, RFC 6980), and a link-local source or a link-local or
//!   link-scope multicast destination. Any other is judged like any ICMPv6.

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use enforcer_common::{
    DropReason, PassReason, Verdict,
    decide::{PacketMeta, v4_in_16},
    maps::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
    session::{Quoted, SessionKey, is_icmp_error},
};

/// The furthest an ICMP error's quote, and the error's IP packet end, may lie in the frame
/// (16 KiB - 1, a power of two minus one, used as a mask); an error beyond quotes nothing.
const MAX_QUOTE_OFFSET: usize = 0x3fff;

/// QinQ: an S-tag and a C-tag. Deeper stacks do not occur on SGi/N6 links.
const MAX_VLAN_DEPTH: usize = 2;
/// RFC 8200 §4.1 recommends at most hop-by-hop, destination options, routing, fragment,
/// (AH), destination options: six covers that order; longer chains are malformed.
const MAX_EXT_HDRS: usize = 6;

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const ETH_P_ARP: u16 = 0x0806;
const ETH_P_8021Q: u16 = 0x8100;
const ETH_P_8021AD: u16 = 0x88A8;

const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DSTOPTS: u8 = 60;
/// "No next header": the only next header allowed with an IPv6 `payload_len` of 0.
const IPV6_NONXT: u8 = 59;

/// IPv4 options walked per header (a no-op byte counts as one); more is malformed. Real
/// traffic carries one or two (router alert, record route, timestamp).
const MAX_IPV4_OPTIONS: usize = 8;
const IPV4_HEADER_LEN: usize = 20;
const IPOPT_END: u8 = 0;
const IPOPT_NOOP: u8 = 1;
/// Option numbers (the low five bits of the type) of loose and strict source routing.
const IPOPT_NUMBER_LSRR: u8 = 3;
const IPOPT_NUMBER_SSRR: u8 = 9;
/// Offset of the TCP data-offset byte.
const TCP_DATA_OFFSET: usize = 12;
/// Offset of the TCP flags byte.
pub const TCP_FLAGS: usize = 13;
const ICMP_ECHO_REPLY: u8 = 0;
const ICMP_ECHO_REQUEST: u8 = 8;
const ICMPV6_ECHO_REQUEST: u8 = 128;
const ICMPV6_ECHO_REPLY: u8 = 129;
/// Every IPv6 extension header is at least 8 bytes long.
const IPV6_EXT_MIN_LEN: usize = 8;

#[repr(C)]
#[derive(Clone, Copy)]
struct EthHdr {
    _dst: [u8; 6],
    _src: [u8; 6],
    proto: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct VlanHdr {
    _tci: [u8; 2],
    proto: [u8; 2],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv4Hdr {
    version_ihl: u8,
    _tos: u8,
    tot_len: [u8; 2],
    _id: [u8; 2],
    frag_off: [u8; 2],
    _ttl: u8,
    proto: u8,
    _csum: [u8; 2],
    src: [u8; 4],
    dst: [u8; 4],
}

#[repr(C)]
#[derive(Clone, Copy)]
struct Ipv6Hdr {
    version_class_flow: [u8; 4],
    payload_len: [u8; 2],
    next: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

/// The part of every skippable extension header we read: next header, length, and for the
/// routing header its type and segments left (RFC 8200 §4.4).
#[repr(C)]
#[derive(Clone, Copy)]
struct ExtHdr {
    next: u8,
    len: u8,
    _routing_type: u8,
    segments_left: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct FragHdr {
    next: u8,
    _reserved: u8,
    offset_flags: [u8; 2],
    _id: [u8; 4],
}

/// The first eight bytes of ICMP and ICMPv6: type, code, checksum, and for echo messages the
/// identifier and sequence number.
#[repr(C)]
#[derive(Clone, Copy)]
struct IcmpHdr {
    kind: u8,
    _code: u8,
    _csum: [u8; 2],
    id: [u8; 2],
    _seq: [u8; 2],
}

/// The ICMP type in `l4_flags`; an echo request's identifier in `sport`, a reply's in `dport`
/// (see `PacketMeta`).
#[inline(always)]
fn echo_ids(meta: &mut PacketMeta, icmp: &IcmpHdr, request: u8, reply: u8) {
    meta.l4_flags = icmp.kind;
    let id = u16::from_be_bytes(icmp.id);
    if icmp.kind == request {
        meta.sport = id;
    } else if icmp.kind == reply {
        meta.dport = id;
    }
}

/// First four bytes of TCP and UDP.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ports {
    src: [u8; 2],
    dst: [u8; 2],
}

/// What the header walk found.
pub enum Parsed {
    /// An IP packet for the rest of the pipeline; its fields are in the `PacketMeta` given to
    /// [`packet`] (written in place: copies of it cost the program's 512-byte stack).
    Ip,
    /// An IP packet, as [`Parsed::Ip`], that is an ICMP or ICMPv6 error: what it quotes
    /// starts at the first offset ([`quoted`]), and its IP packet ends at the second.
    IcmpError(usize, usize),
    /// A frame whose verdict needs no lookup.
    Done(Verdict),
    /// Neither IPv4, IPv6 nor ARP: judged by the interface's role
    /// (`enforcer_common::decide::not_ip`).
    NotIp,
}

/// Read a `T` at `offset` from the frame start, or fail if it does not fit.
///
/// The offset goes through [`opaque`]: after a length check against the IP packet's end, LLVM
/// can prove a read in bounds (the IP end lies inside the frame) and delete its `data_end`
/// check, which the verifier needs to see ("invalid access to packet").
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, DropReason> {
    let offset = opaque(offset);
    let start = ctx.data();
    let end = ctx.data_end();
    if start.wrapping_add(offset).wrapping_add(size_of::<T>()) > end {
        return Err(DropReason::Malformed);
    }
    let ptr = start.wrapping_add(offset) as *const T;
    // SAFETY: the check above keeps `[ptr, ptr + size_of::<T>())` inside the frame, and every
    // header type here is made of byte arrays (align 1), so the read is in bounds and aligned.
    Ok(unsafe { ptr.read() })
}

/// A big-endian length field (0..=65535), bounded so that every verifier knows its range.
///
/// Linux 6.1's verifier loses the range of a value built by a byte swap (`be16`) or by OR-ing
/// two bytes, and then rejects adding it to a packet pointer ("math between pkt pointer and
/// register with unbounded min value"). Masking restores the bound, but LLVM deletes the mask as
/// a no-op; reading the value back through [`opaque`] hides it from LLVM, so the mask stays. The
/// mask comes right after the read (not a `> 0xffff` branch), so that even a copy LLVM spills to
/// the stack before any check is bounded: 6.1 does not carry a later check over to a spilled
/// copy of an unbounded value.
#[inline(always)]
fn length_field(bytes: [u8; 2]) -> Result<usize, DropReason> {
    Ok(opaque(usize::from(u16::from_be_bytes(bytes))) & 0xffff)
}

/// `value`, read back through a volatile local so that LLVM knows nothing about it: it can
/// neither delete a range check on it as always false nor a packet bounds check as implied by
/// an earlier one. The verifier still tracks the value through the stack.
#[inline(always)]
fn opaque(value: usize) -> usize {
    // SAFETY: a volatile read of a local that lives for the whole expression.
    unsafe { core::ptr::read_volatile(&raw const value) }
}

/// Fail unless `len` bytes from `offset` lie inside the frame.
#[inline(always)]
fn require(ctx: &XdpContext, offset: usize, len: usize) -> Result<(), DropReason> {
    if ctx.data().wrapping_add(offset).wrapping_add(len) > ctx.data_end() {
        return Err(DropReason::Malformed);
    }
    Ok(())
}

/// The session of a frame of the common shape, as [`v4_session`] reads it.
pub struct V4Session {
    /// Its `SESSIONS` key.
    pub key: SessionKey,
    /// The frame's source is the key's first endpoint.
    pub src_first: bool,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub proto: u8,
    /// The TCP flags byte; 0 for UDP.
    pub flags: u8,
}

/// The session key of a frame of the common shape: untagged Ethernet, IPv4 without options,
/// not a later fragment, TCP or UDP, every header as [`packet`] would accept it (the same
/// rules, so that [`packet`] would give the same addresses, ports and flags). `None` for any
/// other frame, which [`packet`] walks in full. Reads fixed offsets only: one bounds check for
/// the headers and scalar comparisons for the IP length, no copy of a header.
#[inline(always)]
#[expect(
    clippy::arithmetic_side_effects,
    clippy::indexing_slicing,
    reason = "offsets below 54 and indices below 4, all constant-bounded; this exact code \
              is the one Linux 6.1's verifier and JIT were tested with (a rewrite with \
              wrapping adds and no indexing left the SIM counters unmoved on 6.1)"
)]
pub fn v4_session(ctx: &XdpContext) -> Option<V4Session> {
    const L3: usize = 14;
    const L4: usize = L3 + IPV4_HEADER_LEN;
    let start = ctx.data();
    let end = ctx.data_end();
    // Ethernet, IPv4 and the eight bytes UDP needs; TCP checks its twenty below.
    if start.wrapping_add(L4 + 8) > end {
        return None;
    }
    let bytes = start as *const u8;
    // SAFETY: every offset read below the first check is under L4 + 8, inside the frame.
    let byte = |offset: usize| unsafe { *bytes.add(offset) };
    // Ethertype IPv4, version 4 with a 20-byte header, fragment offset 0.
    if byte(12) != 0x08
        || byte(13) != 0x00
        || byte(L3) != 0x45
        || byte(L3 + 6) & 0x1f != 0
        || byte(L3 + 7) != 0
    {
        return None;
    }
    let total_len = usize::from(u16::from_be_bytes([byte(L3 + 2), byte(L3 + 3)]));
    if L3.wrapping_add(total_len) > end.wrapping_sub(start) {
        return None;
    }
    let proto = byte(L3 + 9);
    let flags = match proto {
        IPPROTO_UDP if total_len >= IPV4_HEADER_LEN + 8 => 0,
        IPPROTO_TCP if total_len >= IPV4_HEADER_LEN + 20 => {
            if start.wrapping_add(L4 + 20) > end {
                return None;
            }
            // SAFETY: checked just above: L4 + 20 bytes lie inside the frame.
            let tcp = |offset: usize| unsafe { *bytes.add(L4 + offset) };
            // Data offset (RFC 9293 §3.1): at least five words, all inside the packet.
            let header_len = usize::from(tcp(TCP_DATA_OFFSET) >> 4).wrapping_mul(4);
            if header_len < 20 || header_len > total_len.wrapping_sub(IPV4_HEADER_LEN) {
                return None;
            }
            tcp(TCP_FLAGS)
        }
        _ => return None,
    };
    // The endpoints go straight into the key, then into its order (fewer values live at once
    // than in `SessionKey::between`'s copies: the program's frame stays within its limit).
    let mut key = SessionKey {
        proto,
        ..SessionKey::default()
    };
    for i in 0..4 {
        key.addr_a[i] = byte(L3 + 12 + i);
        key.addr_b[i] = byte(L3 + 16 + i);
    }
    key.port_a = u16::from_be_bytes([byte(L4), byte(L4 + 1)]);
    key.port_b = u16::from_be_bytes([byte(L4 + 2), byte(L4 + 3)]);
    let src_first = key.order();
    Some(V4Session {
        key,
        src_first,
        proto,
        flags,
    })
}

/// Walk the headers of one frame.
#[inline(always)]
pub fn packet(ctx: &XdpContext, meta: &mut PacketMeta) -> Result<Parsed, DropReason> {
    let eth: EthHdr = read(ctx, 0)?;
    let mut ethertype = u16::from_be_bytes(eth.proto);
    let mut offset = size_of::<EthHdr>();
    for _ in 0..MAX_VLAN_DEPTH {
        if ethertype != ETH_P_8021Q && ethertype != ETH_P_8021AD {
            break;
        }
        let vlan: VlanHdr = read(ctx, offset)?;
        ethertype = u16::from_be_bytes(vlan.proto);
        offset = offset.wrapping_add(size_of::<VlanHdr>());
    }
    meta.ifindex = ifindex(ctx);
    match ethertype {
        ETH_P_IP => ipv4(ctx, offset, meta),
        ETH_P_IPV6 => ipv6(ctx, offset, meta),
        ETH_P_ARP => Ok(Parsed::Done(Verdict::Pass(PassReason::Neighbour, 0))),
        ETH_P_8021Q | ETH_P_8021AD => Err(DropReason::Malformed),
        _ => Ok(Parsed::NotIp),
    }
}

/// The interface the frame arrived on.
#[inline(always)]
pub fn ifindex(ctx: &XdpContext) -> u32 {
    // SAFETY: `ctx.ctx` points at the kernel's `xdp_md` for the duration of the program.
    unsafe { (*ctx.ctx).ingress_ifindex }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize, meta: &mut PacketMeta) -> Result<Parsed, DropReason> {
    let ip: Ipv4Hdr = read(ctx, l3)?;
    if ip.version_ihl >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let header_len = usize::from(ip.version_ihl & 0x0f).wrapping_mul(4);
    let total_len = length_field(ip.tot_len)?;
    if header_len < IPV4_HEADER_LEN || total_len < header_len {
        return Err(DropReason::Malformed);
    }
    require(ctx, l3, total_len)?;
    if header_len > IPV4_HEADER_LEN {
        match ipv4_options(
            ctx,
            l3.wrapping_add(IPV4_HEADER_LEN),
            header_len.wrapping_sub(IPV4_HEADER_LEN),
        ) {
            OPTIONS_OK => {}
            OPTIONS_SOURCE_ROUTE => return Err(DropReason::SourceRoute),
            _ => return Err(DropReason::Malformed),
        }
    }
    let later_fragment = u16::from_be_bytes(ip.frag_off) & 0x1fff != 0;
    meta.v6 = false;
    meta.src = v4_in_16(ip.src);
    meta.dst = v4_in_16(ip.dst);
    transport(
        ctx,
        l3,
        l3.wrapping_add(header_len),
        l3.wrapping_add(total_len),
        ip.proto,
        later_fragment,
        meta,
    )
}

/// Walk the `len` option bytes at `start` (RFC 791 §3.1): end-of-list stops, no-op is one
/// byte, every other option has a length byte. A source route is refused; an option that runs
/// past the header is malformed, and so is a header with more than [`MAX_IPV4_OPTIONS`]
/// options (no-ops count), which real traffic never carries (Katran drops every packet with
/// options).
///
/// `#[inline(never)]`, a BPF-to-BPF call (Linux 4.16), like Katran's `parse_hdr_opt`: inlined,
/// every way out of the walk carried its own state into the rest of the program and the
/// verifier processed hundreds of thousands of instructions instead of about ten thousand; as a
/// subprogram the caller continues from one return value. Returns an `OPTIONS_*` code, not a
/// `Result`, so the value crossing the call is one plain register.
#[inline(never)]
fn ipv4_options(ctx: &XdpContext, start: usize, len: usize) -> u32 {
    match walk_ipv4_options(ctx, start, len) {
        Ok(()) => OPTIONS_OK,
        Err(DropReason::SourceRoute) => OPTIONS_SOURCE_ROUTE,
        Err(_) => OPTIONS_MALFORMED,
    }
}

const OPTIONS_OK: u32 = 0;
const OPTIONS_SOURCE_ROUTE: u32 = 1;
const OPTIONS_MALFORMED: u32 = 2;

#[inline(always)]
fn walk_ipv4_options(ctx: &XdpContext, start: usize, len: usize) -> Result<(), DropReason> {
    let mut at = 0usize;
    for _ in 0..MAX_IPV4_OPTIONS {
        if at >= len {
            return Ok(());
        }
        let kind: u8 = read(ctx, start.wrapping_add(at))?;
        if kind == IPOPT_END {
            return Ok(());
        }
        if kind == IPOPT_NOOP {
            at = at.wrapping_add(1);
            continue;
        }
        let number = kind & 0x1f;
        if number == IPOPT_NUMBER_LSRR || number == IPOPT_NUMBER_SSRR {
            return Err(DropReason::SourceRoute);
        }
        if at.wrapping_add(2) > len {
            return Err(DropReason::Malformed);
        }
        let option_len = usize::from(read::<u8>(ctx, start.wrapping_add(at).wrapping_add(1))?);
        if option_len < 2 || at.wrapping_add(option_len) > len {
            return Err(DropReason::Malformed);
        }
        at = at.wrapping_add(option_len);
    }
    if at >= len {
        return Ok(());
    }
    // A ninth option, unless it is the end of the list.
    let kind: u8 = read(ctx, start.wrapping_add(at))?;
    if kind == IPOPT_END {
        Ok(())
    } else {
        Err(DropReason::Malformed)
    }
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize, meta: &mut PacketMeta) -> Result<Parsed, DropReason> {
    let ip: Ipv6Hdr = read(ctx, l3)?;
    if ip.version_class_flow[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let payload_len = length_field(ip.payload_len)?;
    if payload_len == 0 && ip.next != IPV6_NONXT {
        return Err(DropReason::Malformed);
    }
    let ip_len = size_of::<Ipv6Hdr>().wrapping_add(payload_len);
    require(ctx, l3, ip_len)?;
    let ip_end = l3.wrapping_add(ip_len);
    meta.v6 = true;
    meta.src = ip.src;
    meta.dst = ip.dst;
    let mut next = ip.next;
    let mut offset = l3.wrapping_add(size_of::<Ipv6Hdr>());
    for _ in 0..MAX_EXT_HDRS {
        if !matches!(
            next,
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_FRAGMENT
        ) {
            break;
        }
        if offset.wrapping_add(IPV6_EXT_MIN_LEN) > ip_end {
            return Err(DropReason::Malformed);
        }
        if next == IPV6_FRAGMENT {
            let frag: FragHdr = read(ctx, offset)?;
            next = frag.next;
            offset = offset.wrapping_add(size_of::<FragHdr>());
            if u16::from_be_bytes(frag.offset_flags) >> 3 != 0 {
                return transport(ctx, l3, offset, ip_end, next, true, meta);
            }
            continue;
        }
        let ext: ExtHdr = read(ctx, offset)?;
        if next == IPV6_ROUTING && ext.segments_left != 0 {
            return Err(DropReason::SourceRoute);
        }
        let len = usize::from(ext.len).wrapping_add(1).wrapping_mul(8);
        if offset.wrapping_add(len) > ip_end {
            return Err(DropReason::Malformed);
        }
        next = ext.next;
        offset = offset.wrapping_add(len);
    }
    if matches!(
        next,
        IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_FRAGMENT
    ) {
        return Err(DropReason::Malformed);
    }
    transport(ctx, l3, offset, ip_end, next, false, meta)
}

/// Whether neighbour discovery at `l4` comes from the link itself and stays on it, so it may
/// pass unjudged: the hop limit is 255, which no router forwards (RFC 4861 §6.1.1, §7.1:
/// receivers require it); the ICMPv6 header directly follows the IPv6 header (no extension
/// headers, so no fragment: RFC 6980); and the packet is link-local in scope, so the gateway
/// will not forward it either: a link-local source (fe80::/10, which routers never forward,
/// RFC 4291 §2.5.6), or a link-local destination or link-scope multicast group (fe80::/10,
/// ff02::/16: where solicitations, DAD from the unspecified source and router discovery go,
/// RFC 4861 §4). A neighbour soliciting from its global address toward a solicited-node group
/// stays on the link and passes; "neighbour discovery" toward a global destination is judged
/// like any ICMPv6, so a device cannot use it to get past quarantine, spoofing or lateral
/// checks; one from behind the PGW/UPF arrives with a lower hop limit and is judged anyway.
/// The header is read again here rather than carried along the walk: a flag carried through
/// every path doubled the states the verifier explores.
#[inline(always)]
fn on_link(ctx: &XdpContext, l3: usize, l4: usize, meta: &PacketMeta) -> Result<bool, DropReason> {
    if l4 != l3.wrapping_add(size_of::<Ipv6Hdr>()) {
        return Ok(false);
    }
    let ip: Ipv6Hdr = read(ctx, l3)?;
    Ok(ip.hop_limit == 255 && link_scoped(&meta.src, &meta.dst))
}

/// A link-local source, or a link-local or link-scope multicast destination: see [`on_link`].
#[inline(always)]
fn link_scoped(src: &[u8; 16], dst: &[u8; 16]) -> bool {
    let link_local = |a: &[u8; 16]| a[0] == 0xfe && a[1] & 0xc0 == 0x80;
    let link_multicast = dst[0] == 0xff && dst[1] & 0x0f == 0x02;
    link_local(src) || link_local(dst) || link_multicast
}

/// Read the transport header at `l4`; every byte of it must lie before `ip_end`, the end of
/// the IP packet (not of the frame). `l3` is where the IP header starts.
#[inline(always)]
fn transport(
    ctx: &XdpContext,
    l3: usize,
    l4: usize,
    ip_end: usize,
    proto: u8,
    later_fragment: bool,
    meta: &mut PacketMeta,
) -> Result<Parsed, DropReason> {
    meta.proto = proto;
    meta.later_fragment = later_fragment;
    if later_fragment {
        return Ok(Parsed::Ip);
    }
    let v6 = meta.v6;
    let inside = |len: usize| {
        if l4.wrapping_add(len) > ip_end {
            Err(DropReason::Malformed)
        } else {
            Ok(())
        }
    };
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            inside(if proto == IPPROTO_TCP { 20 } else { 8 })?;
            let ports: Ports = read(ctx, l4)?;
            if proto == IPPROTO_TCP {
                // Data offset (RFC 9293 §3.1): at least five words, all inside the packet.
                let data_offset: u8 = read(ctx, l4.wrapping_add(TCP_DATA_OFFSET))?;
                let header_len = usize::from(data_offset >> 4).wrapping_mul(4);
                if header_len < 20 || l4.wrapping_add(header_len) > ip_end {
                    return Err(DropReason::Malformed);
                }
                meta.l4_flags = read(ctx, l4.wrapping_add(TCP_FLAGS))?;
            }
            meta.dport = u16::from_be_bytes(ports.dst);
            meta.sport = u16::from_be_bytes(ports.src);
            meta.has_ports = true;
        }
        IPPROTO_ICMP if !v6 => {
            inside(8)?;
            let icmp: IcmpHdr = read(ctx, l4)?;
            echo_ids(meta, &icmp, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY);
            if is_icmp_error(false, icmp.kind) {
                return Ok(Parsed::IcmpError(l4.wrapping_add(8), ip_end));
            }
        }
        IPPROTO_ICMPV6 if v6 => {
            inside(8)?;
            let icmp: IcmpHdr = read(ctx, l4)?;
            if (133..=137).contains(&icmp.kind) && on_link(ctx, l3, l4, meta)? {
                return Ok(Parsed::Done(Verdict::Pass(PassReason::Neighbour, 0)));
            }
            echo_ids(meta, &icmp, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY);
            if is_icmp_error(true, icmp.kind) {
                return Ok(Parsed::IcmpError(l4.wrapping_add(8), ip_end));
            }
        }
        _ => {}
    }
    Ok(Parsed::Ip)
}

/// The ports of a quoted transport header at `l4` (inside `ip_end`): TCP and UDP's, an echo
/// request's identifier as the source port, a reply's as the destination port; `None` for
/// anything else.
#[inline(always)]
fn quoted_ports(
    ctx: &XdpContext,
    l4: usize,
    ip_end: usize,
    proto: u8,
    echo: (u8, u8, u8),
) -> Option<(u16, u16)> {
    if l4.wrapping_add(8) > ip_end {
        return None;
    }
    let (echo_proto, request, reply) = echo;
    if proto == IPPROTO_TCP || proto == IPPROTO_UDP {
        let ports: Ports = read(ctx, l4).ok()?;
        Some((u16::from_be_bytes(ports.src), u16::from_be_bytes(ports.dst)))
    } else if proto == echo_proto {
        let icmp: IcmpHdr = read(ctx, l4).ok()?;
        let id = u16::from_be_bytes(icmp.id);
        if icmp.kind == request {
            Some((id, 0))
        } else if icmp.kind == reply {
            Some((0, id))
        } else {
            None
        }
    } else {
        None
    }
}

/// What an ICMP (`v6` false) or ICMPv6 error whose IP packet ends at `ip_end` and goes to
/// `error_dst` quotes at `at` (see the module comment), written into `out`: `found` false if
/// nothing usable. The key is assembled in place: copies of 40-byte keys spilled byte by byte
/// and cost more stack than the program has.
#[inline(always)]
pub fn quoted(
    ctx: &XdpContext,
    at: usize,
    ip_end: usize,
    v6: bool,
    error_dst: &[u8; 16],
    out: &mut Quoted,
) {
    out.found = false;
    // Linux 6.1's verifier gives up on a packet pointer whose variable offset may reach 64 KiB
    // ("R2 offset is outside of the packet" after a good bounds check): the quote's offset,
    // which crossed a function call as a plain number, is bounded first (and the mask is read
    // back through `opaque`, so that LLVM cannot drop it after the check).
    if at > MAX_QUOTE_OFFSET || ip_end > MAX_QUOTE_OFFSET {
        return;
    }
    let at = opaque(at) & MAX_QUOTE_OFFSET;
    let (header_len, proto) = if v6 {
        if at.wrapping_add(size_of::<Ipv6Hdr>()) > ip_end {
            return;
        }
        let Ok(first) = read::<[u8; 8]>(ctx, at) else {
            return;
        };
        let (Ok(src), Ok(dst)) = (
            read::<[u8; 16]>(ctx, at.wrapping_add(8)),
            read::<[u8; 16]>(ctx, at.wrapping_add(24)),
        ) else {
            return;
        };
        if first[0] >> 4 != 6 {
            return;
        }
        out.key.addr_a = src;
        out.key.addr_b = dst;
        (size_of::<Ipv6Hdr>(), first[6])
    } else {
        if at.wrapping_add(IPV4_HEADER_LEN) > ip_end {
            return;
        }
        let Ok(ip) = read::<Ipv4Hdr>(ctx, at) else {
            return;
        };
        let header_len = usize::from(ip.version_ihl & 0x0f).wrapping_mul(4);
        if ip.version_ihl >> 4 != 4
            || header_len < IPV4_HEADER_LEN
            || u16::from_be_bytes(ip.frag_off) & 0x1fff != 0
        {
            return;
        }
        out.key.addr_a = v4_in_16(ip.src);
        out.key.addr_b = v4_in_16(ip.dst);
        (header_len, ip.proto)
    };
    if out.key.addr_a != *error_dst {
        return;
    }
    let echo = if v6 {
        (IPPROTO_ICMPV6, ICMPV6_ECHO_REQUEST, ICMPV6_ECHO_REPLY)
    } else {
        (IPPROTO_ICMP, ICMP_ECHO_REQUEST, ICMP_ECHO_REPLY)
    };
    let Some((sport, dport)) = quoted_ports(ctx, at.wrapping_add(header_len), ip_end, proto, echo)
    else {
        return;
    };
    out.key.port_a = sport;
    out.key.port_b = dport;
    out.key.proto = proto;
    out.key.v6 = u8::from(v6);
    out.key._pad = [0; 2];
    out.quoted_src_first = out.key.order();
    out.found = true;
}
