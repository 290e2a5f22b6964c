//! Stage 5 (opt-in), forward: a packet that passed on an interface with `IFACE_XDP_FORWARD` is
//! routed by the kernel's FIB (`bpf_fib_lookup`) and sent out of its egress interface with
//! `XDP_REDIRECT` through `FORWARD_DEVS`, skipping the kernel's stack, as the kernel's own
//! `samples/bpf/xdp_fwd` and xdp-tools' `xdp-forward` do. Whatever this path cannot finish
//! goes to the stack (`XDP_PASS`) untouched, exactly as without the flag: no route or
//! neighbour entry yet (the stack resolves it), a local destination, a TTL or hop limit about
//! to expire (the stack answers with ICMP time exceeded), a packet larger than the egress MTU,
//! an egress interface that is not one of the enforcer's, a VLAN-tagged frame.
//!
//! The verdict is made before this stage and is not changed by it; the frame is rewritten
//! (MAC addresses, TTL and IPv4 checksum, hop limit) only once it is sure to be redirected.
//!
//! Reads `FORWARD_DEVS`; writes `FORWARD_STATS` (one count per packet, by outcome).

use aya_ebpf::{
    bindings::{bpf_fib_lookup as FibParams, xdp_action::XDP_PASS},
    helpers::bpf_fib_lookup,
    programs::XdpContext,
};
use enforcer_common::maps::{
    FORWARD_FOREIGN_EGRESS, FORWARD_NOT_PLAIN_IP, FORWARD_OTHER, FORWARD_REDIRECTED, FORWARD_TTL,
};

use crate::maps::{FORWARD_DEVS, FORWARD_STATS};

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPV4_HLEN: usize = 20;
const IPV6_HLEN: usize = 40;
/// `AF_INET` and `AF_INET6` (Linux `include/linux/socket.h`), `bpf_fib_lookup.family`.
const AF_INET: u8 = 2;
const AF_INET6: u8 = 10;
/// Highest `BPF_FIB_LKUP_RET_*` code this build names (`NO_SRC_ADDR`).
const FIB_LAST_CODE: i64 = 9;
/// The traffic class and flow label of an IPv6 header's first word, in network order
/// (`IPV6_FLOWINFO_MASK`, RFC 8200 §3).
const IPV6_FLOWINFO_MASK: u32 = u32::from_be(0x0FFF_FFFF);

/// The action for a frame that passed on `ifindex`, an interface that forwards in XDP
/// (`IFACE_XDP_FORWARD`, checked by the caller): `XDP_REDIRECT` when it was routed and sent on,
/// else `XDP_PASS` (to the stack, untouched), the outcome counted in `FORWARD_STATS`. A BPF
/// function of its own: the 64-byte `bpf_fib_lookup` parameters live in its frame, not in the
/// one the policy lookups share.
#[inline(never)]
pub fn forward(ctx: &XdpContext, ifindex: u32) -> u32 {
    let (action, outcome) = route(ctx, ifindex);
    if let Some(count) = FORWARD_STATS.get_ptr_mut(outcome) {
        // SAFETY: a per-CPU slot, written only by this CPU while the program runs.
        unsafe { *count = (*count).wrapping_add(1) };
    }
    action
}

/// (action, `FORWARD_STATS` slot) for the frame.
#[inline(always)]
fn route(ctx: &XdpContext, ifindex: u32) -> (u32, u32) {
    let start = ctx.data();
    let end = ctx.data_end();
    if start.wrapping_add(ETH_HLEN + IPV4_HLEN) > end {
        return (XDP_PASS, FORWARD_NOT_PLAIN_IP);
    }
    let eth = start as *mut u8;
    // SAFETY: `[start, start + 34)` lies inside the frame (checked above), and so does
    // `[start, start + 54)` before any IPv6 field is read (checked below); every access is a
    // byte (align 1) within those bounds; nothing moves the frame while the program runs.
    let ip = unsafe { eth.add(ETH_HLEN) };
    // SAFETY: as above.
    let byte = |offset: usize| unsafe { *ip.add(offset) };
    // SAFETY: as above.
    let ethertype = unsafe { u16::from_be_bytes([*eth.add(12), *eth.add(13)]) };
    // SAFETY: an all-zero `bpf_fib_lookup` is valid (plain integers and unions of them).
    let mut fib: FibParams = unsafe { core::mem::zeroed() };
    fib.ifindex = ifindex;
    // A broadcast or multicast destination MAC is not addressed to this host as a router: the
    // stack would not forward it (it drops frames for other hosts too, which only a
    // promiscuous interface lets in).
    // SAFETY: as above.
    if unsafe { *eth } & 1 != 0 {
        return (XDP_PASS, FORWARD_NOT_PLAIN_IP);
    }
    let v6 = match ethertype {
        ETH_P_IP if byte(0) >> 4 == 4 => false,
        // The IPv6 header is the longer one: checked before any of its bytes beyond the
        // IPv4 header's length is read.
        ETH_P_IPV6 if start.wrapping_add(ETH_HLEN + IPV6_HLEN) <= end && byte(0) >> 4 == 6 => true,
        _ => return (XDP_PASS, FORWARD_NOT_PLAIN_IP),
    };
    // The TTL (IPv4, offset 8) or hop limit (IPv6, offset 7) about to expire: the stack
    // sends the ICMP error.
    let ttl_at = if v6 { 7 } else { 8 };
    if byte(ttl_at) <= 1 {
        return (XDP_PASS, FORWARD_TTL);
    }
    if v6 {
        fib.family = AF_INET6;
        fib.l4_protocol = byte(6);
        // The L3 length the FIB checks against the egress MTU: the payload and the 40-byte
        // header (`payload_len` counts only the payload, RFC 8200 §3).
        fib.__bindgen_anon_1.tot_len =
            u16::from_be_bytes([byte(4), byte(5)]).saturating_add(IPV6_HLEN as u16);
        fib.__bindgen_anon_2.flowinfo =
            u32::from_ne_bytes([byte(0), byte(1), byte(2), byte(3)]) & IPV6_FLOWINFO_MASK;
        let word = |at: usize| {
            u32::from_ne_bytes([
                byte(at),
                byte(at.wrapping_add(1)),
                byte(at.wrapping_add(2)),
                byte(at.wrapping_add(3)),
            ])
        };
        let src = [word(8), word(12), word(16), word(20)];
        let dst = [word(24), word(28), word(32), word(36)];
        fib.__bindgen_anon_3.ipv6_src = src;
        fib.__bindgen_anon_4.ipv6_dst = dst;
    } else {
        fib.family = AF_INET;
        fib.l4_protocol = byte(9);
        fib.__bindgen_anon_1.tot_len = u16::from_be_bytes([byte(2), byte(3)]);
        fib.__bindgen_anon_2.tos = byte(1);
        fib.__bindgen_anon_3.ipv4_src =
            u32::from_ne_bytes([byte(12), byte(13), byte(14), byte(15)]);
        fib.__bindgen_anon_4.ipv4_dst =
            u32::from_ne_bytes([byte(16), byte(17), byte(18), byte(19)]);
    }
    // SAFETY: `ctx.ctx` is the kernel's `xdp_md` for this run, `fib` a valid, writable
    // `bpf_fib_lookup` whose size is passed; flags 0: a full lookup (policy routing rules
    // included), as the stack would route the packet.
    let code = unsafe {
        bpf_fib_lookup(
            ctx.ctx.cast(),
            &raw mut fib,
            size_of::<FibParams>() as i32,
            0,
        )
    };
    if code != i64::from(FORWARD_REDIRECTED) {
        let slot = if (0..=FIB_LAST_CODE).contains(&code) {
            code as u32
        } else {
            FORWARD_OTHER
        };
        return (XDP_PASS, slot);
    }
    if FORWARD_DEVS.get(fib.ifindex).is_none() {
        return (XDP_PASS, FORWARD_FOREIGN_EGRESS);
    }
    // SAFETY: byte writes inside the header bounds checked above for this family.
    unsafe {
        if v6 {
            *ip.add(7) = byte(7).wrapping_sub(1);
        } else {
            // RFC 1624 incremental update for TTL - 1, as Linux's `ip_decrease_ttl`: the TTL
            // is the high byte of its 16-bit word, so the checksum (one's complement) gains
            // 0x0100, with the end-around carry.
            let check = u32::from(u16::from_ne_bytes([byte(10), byte(11)]))
                .wrapping_add(u32::from(0x0100u16.to_be()));
            let check = check.wrapping_add(u32::from(check >= 0xFFFF)) as u16;
            let [lo, hi] = check.to_ne_bytes();
            *ip.add(10) = lo;
            *ip.add(11) = hi;
            *ip.add(8) = byte(8).wrapping_sub(1);
        }
        for (i, (&dmac, &smac)) in fib.dmac.iter().zip(fib.smac.iter()).enumerate() {
            *eth.add(i) = dmac;
            *eth.add(i.wrapping_add(6)) = smac;
        }
    }
    match FORWARD_DEVS.redirect(fib.ifindex, 0) {
        Ok(action) => (action, FORWARD_REDIRECTED),
        // The interface left `FORWARD_DEVS` between the lookup and the redirect (it is being
        // removed): the frame is already rewritten for it, so it is dropped, never passed on
        // with another hop's addresses.
        Err(_) => (
            aya_ebpf::bindings::xdp_action::XDP_DROP,
            FORWARD_FOREIGN_EGRESS,
        ),
    }
}
