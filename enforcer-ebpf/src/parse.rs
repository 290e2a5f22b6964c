//! Stage 1, parse: a bounded header walk from Ethernet to the transport ports.
//!
//! Takes the frame, returns [`Parsed::Ip`] with a [`PacketMeta`], a final verdict for frames
//! that are not the enforcer's business (ARP, neighbour discovery, non-IP), or
//! `Err(DropReason::Malformed)`. Touches no maps. The userspace reference parser
//! (`enforcer::reference::parse`) implements the same rules independently; the differential
//! test holds the two together. The rules:
//! - Ethernet, then up to [`MAX_VLAN_DEPTH`] 802.1Q/802.1ad tags; a third tag is malformed.
//! - ARP passes (neighbour); an ethertype other than IPv4/IPv6 passes (not IP).
//! - IPv4: version 4, IHL >= 5, the whole header and `tot_len` inside the frame, `tot_len` >=
//!   header length. A non-zero fragment offset marks a later fragment (no ports).
//! - IPv6: version 6, 40 bytes and `payload_len` inside the frame; hop-by-hop, routing and
//!   destination-options headers are skipped whole (each must fit in the frame), a fragment
//!   header too (a non-zero offset ends the walk as a later fragment); more than
//!   [`MAX_EXT_HDRS`] extension headers is malformed.
//! - TCP needs 20 bytes, UDP 8, ICMP (in IPv4) and ICMPv6 (in IPv6) 8; other protocols carry
//!   no ports and need nothing.
//! - ICMPv6 types 133-137 (router/neighbour discovery, redirect) pass (neighbour).

use core::mem::size_of;

use aya_ebpf::programs::XdpContext;
use enforcer_common::{
    DropReason, PassReason, Verdict,
    decide::{PacketMeta, v4_in_16},
    maps::{IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP},
};

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
    _hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
}

/// The part of every skippable extension header we read: next header and length.
#[repr(C)]
#[derive(Clone, Copy)]
struct ExtHdr {
    next: u8,
    len: u8,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct FragHdr {
    next: u8,
    _reserved: u8,
    offset_flags: [u8; 2],
    _id: [u8; 4],
}

/// First four bytes of TCP and UDP.
#[repr(C)]
#[derive(Clone, Copy)]
struct Ports {
    _src: [u8; 2],
    dst: [u8; 2],
}

/// Source and destination in `PacketMeta`'s 16-byte layout.
#[derive(Clone, Copy)]
struct Addrs {
    v6: bool,
    src: [u8; 16],
    dst: [u8; 16],
}

/// What the header walk found.
pub enum Parsed {
    /// An IP packet for the rest of the pipeline.
    Ip(PacketMeta),
    /// A frame whose verdict needs no lookup.
    Done(Verdict),
}

/// Read a `T` at `offset` from the frame start, or fail if it does not fit.
#[inline(always)]
fn read<T: Copy>(ctx: &XdpContext, offset: usize) -> Result<T, DropReason> {
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

/// A big-endian length field (0..=65535), checked so that every verifier knows its bounds.
///
/// Linux 6.1's verifier loses the range of a value built by a byte swap (`be16`) or by OR-ing
/// two bytes, and then rejects adding it to a packet pointer ("math between pkt pointer and
/// register with unbounded min value"). An explicit `> 0xffff` branch restores the bound, but
/// LLVM deletes it as always false; reading the value back through a volatile local makes it
/// opaque to LLVM, so the branch stays.
#[inline(always)]
fn length_field(bytes: [u8; 2]) -> Result<usize, DropReason> {
    let value = usize::from(u16::from_be_bytes(bytes));
    // SAFETY: a volatile read of a local that lives for the whole expression.
    let opaque = unsafe { core::ptr::read_volatile(&raw const value) };
    if opaque > usize::from(u16::MAX) {
        return Err(DropReason::Malformed);
    }
    Ok(opaque)
}

/// Fail unless `len` bytes from `offset` lie inside the frame.
#[inline(always)]
fn require(ctx: &XdpContext, offset: usize, len: usize) -> Result<(), DropReason> {
    if ctx.data().wrapping_add(offset).wrapping_add(len) > ctx.data_end() {
        return Err(DropReason::Malformed);
    }
    Ok(())
}

/// Walk the headers of one frame.
#[inline(always)]
pub fn packet(ctx: &XdpContext) -> Result<Parsed, DropReason> {
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
    let ifindex = ifindex(ctx);
    match ethertype {
        ETH_P_IP => ipv4(ctx, offset, ifindex),
        ETH_P_IPV6 => ipv6(ctx, offset, ifindex),
        ETH_P_ARP => Ok(Parsed::Done(Verdict::Pass(PassReason::Neighbour, 0))),
        ETH_P_8021Q | ETH_P_8021AD => Err(DropReason::Malformed),
        _ => Ok(Parsed::Done(Verdict::Pass(PassReason::NotIp, 0))),
    }
}

#[inline(always)]
fn ifindex(ctx: &XdpContext) -> u32 {
    // SAFETY: `ctx.ctx` points at the kernel's `xdp_md` for the duration of the program.
    unsafe { (*ctx.ctx).ingress_ifindex }
}

#[inline(always)]
fn ipv4(ctx: &XdpContext, l3: usize, ifindex: u32) -> Result<Parsed, DropReason> {
    let ip: Ipv4Hdr = read(ctx, l3)?;
    if ip.version_ihl >> 4 != 4 {
        return Err(DropReason::Malformed);
    }
    let header_len = usize::from(ip.version_ihl & 0x0f).wrapping_mul(4);
    let total_len = length_field(ip.tot_len)?;
    if header_len < size_of::<Ipv4Hdr>() || total_len < header_len {
        return Err(DropReason::Malformed);
    }
    require(ctx, l3, total_len)?;
    let later_fragment = u16::from_be_bytes(ip.frag_off) & 0x1fff != 0;
    let addrs = Addrs {
        v6: false,
        src: v4_in_16(ip.src),
        dst: v4_in_16(ip.dst),
    };
    transport(
        ctx,
        l3.wrapping_add(header_len),
        addrs,
        ip.proto,
        later_fragment,
        ifindex,
    )
}

#[inline(always)]
fn ipv6(ctx: &XdpContext, l3: usize, ifindex: u32) -> Result<Parsed, DropReason> {
    let ip: Ipv6Hdr = read(ctx, l3)?;
    if ip.version_class_flow[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let payload_len = length_field(ip.payload_len)?;
    require(ctx, l3, size_of::<Ipv6Hdr>().wrapping_add(payload_len))?;
    let addrs = Addrs {
        v6: true,
        src: ip.src,
        dst: ip.dst,
    };
    let mut next = ip.next;
    let mut offset = l3.wrapping_add(size_of::<Ipv6Hdr>());
    for _ in 0..MAX_EXT_HDRS {
        match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS => {
                let ext: ExtHdr = read(ctx, offset)?;
                let len = usize::from(ext.len).wrapping_add(1).wrapping_mul(8);
                require(ctx, offset, len)?;
                next = ext.next;
                offset = offset.wrapping_add(len);
            }
            IPV6_FRAGMENT => {
                let frag: FragHdr = read(ctx, offset)?;
                next = frag.next;
                offset = offset.wrapping_add(size_of::<FragHdr>());
                if u16::from_be_bytes(frag.offset_flags) >> 3 != 0 {
                    return transport(ctx, offset, addrs, next, true, ifindex);
                }
            }
            _ => break,
        }
    }
    if matches!(
        next,
        IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_FRAGMENT
    ) {
        return Err(DropReason::Malformed);
    }
    transport(ctx, offset, addrs, next, false, ifindex)
}

#[inline(always)]
fn transport(
    ctx: &XdpContext,
    l4: usize,
    addrs: Addrs,
    proto: u8,
    later_fragment: bool,
    ifindex: u32,
) -> Result<Parsed, DropReason> {
    let mut meta = PacketMeta {
        v6: addrs.v6,
        src: addrs.src,
        dst: addrs.dst,
        proto,
        dport: 0,
        has_ports: false,
        later_fragment,
        ifindex,
    };
    if later_fragment {
        return Ok(Parsed::Ip(meta));
    }
    let v6 = addrs.v6;
    match proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let min_len = if proto == IPPROTO_TCP { 20 } else { 8 };
            require(ctx, l4, min_len)?;
            let ports: Ports = read(ctx, l4)?;
            meta.dport = u16::from_be_bytes(ports.dst);
            meta.has_ports = true;
        }
        IPPROTO_ICMP if !v6 => require(ctx, l4, 8)?,
        IPPROTO_ICMPV6 if v6 => {
            require(ctx, l4, 8)?;
            let icmp_type: u8 = read(ctx, l4)?;
            if (133..=137).contains(&icmp_type) {
                return Ok(Parsed::Done(Verdict::Pass(PassReason::Neighbour, 0)));
            }
        }
        _ => {}
    }
    Ok(Parsed::Ip(meta))
}
