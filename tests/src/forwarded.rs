//! Frames whose verdict depends on what the kernel will actually forward: IP lengths against
//! the frame, source routing, and non-IP frames on core-facing links. Shared by the kernel
//! fixture test and the `enforcer policy replay` test, which must give the same verdicts.

use enforcer_common::{DropReason, PassReason, Verdict};

use crate::frames::{Ext, Frame, L4};

/// The policy the frames are judged against.
pub const POLICY: &str = r#"
pools = ["10.64.0.0/16", "fd00:64::/48"]

[[segments]]
name = "chargers"
rules = [
  { to = ["198.51.100.10"], proto = "tcp", ports = [443] },
  { to = ["2001:db8::/32"], proto = "tcp", ports = [8080] },
  { to = ["2001:db8::/32"], proto = "icmpv6" },
  { to = ["192.0.2.0/24"], proto = "icmp" },
  { to = ["198.51.100.20"], proto = "udp", ports = [53] },
]

[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
ipv6 = "fd00:64:0:1::/64"
segment = "chargers"
"#;

/// One frame and the verdict it must get.
pub struct Fixture {
    /// What it is.
    pub name: &'static str,
    /// The frame.
    pub frame: Vec<u8>,
    /// Judged on a core-facing interface (`IFACE_DROP_NON_POOL`).
    pub core_facing: bool,
    /// The verdict.
    pub expected: Verdict,
}

fn hex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).expect("fixture hex"))
        .collect()
}

/// An IPv4 frame from the SIM to the payment host (TCP 443) with `options` as IP options
/// (padded with end-of-list to a multiple of four).
fn with_ipv4_options(options: &[u8]) -> Vec<u8> {
    let mut frame = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443)).build();
    let mut options = options.to_vec();
    options.resize(options.len().div_ceil(4) * 4, 0);
    let ihl = 5 + options.len() / 4;
    frame[14] = 0x40 | u8::try_from(ihl).expect("IHL");
    let total = u16::from_be_bytes([frame[16], frame[17]]) + u16::try_from(options.len()).unwrap();
    frame[16..18].copy_from_slice(&total.to_be_bytes());
    frame.splice(34..34, options);
    frame
}

/// An IPv6 frame from the SIM to 2001:db8::1 (TCP 8080) behind a routing header of `kind`
/// with `segments_left`, carrying one 16-byte address.
fn with_routing_header(kind: u8, segments_left: u8) -> Vec<u8> {
    let mut frame = Frame::new("fd00:64:0:1::1", "2001:db8::1", L4::Tcp(8080))
        .ext(&[Ext::Routing(2)])
        .build();
    // Routing header at 54: next, length (2 = 24 bytes), type, segments left, reserved, address.
    frame[56] = kind;
    frame[57] = segments_left;
    frame[62..78].copy_from_slice(
        &"2001:db8::99"
            .parse::<std::net::Ipv6Addr>()
            .unwrap()
            .octets(),
    );
    frame
}

fn ethertype(tag: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
    frame.extend_from_slice(tag);
    frame.extend_from_slice(payload);
    frame.resize(frame.len().max(60), 0);
    frame
}

/// Every fixture.
#[must_use]
#[expect(clippy::too_many_lines, reason = "one table of fixtures")]
pub fn fixtures() -> Vec<Fixture> {
    use DropReason::*;
    let rule = |id| Verdict::Pass(PassReason::Rule, id);
    let drop = Verdict::Drop;
    let ip_tcp = Frame::new("10.64.0.1", "198.51.100.10", L4::Tcp(443)).build();
    let mut ipv6_trailer = Frame::new("fd00:64:0:1::1", "2001:db8::1", L4::Tcp(8080)).build();
    ipv6_trailer.extend_from_slice(&[0xee; 10]);
    let mut ipv6_ext_past_payload = Frame::new("fd00:64:0:1::1", "2001:db8::1", L4::Tcp(8080))
        .ext(&[Ext::HopByHop(0)])
        .build();
    ipv6_ext_past_payload[18..20].copy_from_slice(&4u16.to_be_bytes()); // payload_len 4 < 8.
    let mut ipv4_short_tot_len = ip_tcp.clone();
    ipv4_short_tot_len[16..18].copy_from_slice(&30u16.to_be_bytes()); // 10 bytes of TCP.
    let no_next_header = {
        let mut f = Frame::new("fd00:64:0:1::1", "2001:db8::1", L4::Other(59, 0)).build();
        f[18..20].copy_from_slice(&0u16.to_be_bytes());
        f
    };
    let core = |name, frame, expected| Fixture {
        name,
        frame,
        core_facing: true,
        expected,
    };
    let edge = |name, frame, expected| Fixture {
        name,
        frame,
        core_facing: false,
        expected,
    };
    vec![
        // 1. Headers read past the end of the IP packet (the issue's three frames).
        edge(
            "tiny first fragment, TCP header in the padding (RFC 1858)",
            hex(
                "02000000000202000000000108004500001c12342000400600000a400001c633640a9c4001bb00000000000000000000000000000000000000000000",
            ),
            drop(Malformed),
        ),
        edge(
            "tot_len 20, TCP/443 header only in the trailer",
            hex(
                "02000000000202000000000108004500001412340000400600000a400001c633640a9c4001bb00000000000000005002ffff00000000",
            ),
            drop(Malformed),
        ),
        edge(
            "IPv6 payload_len 0 with a next header, ND only in the trailer",
            hex(
                "02000000000202000000000186dd6000000000003a40fd00006400000009000000000000000120010db9000000000000000000000001870000000000000020010db9000000000000000000000001",
            ),
            drop(Malformed),
        ),
        edge(
            "IPv4 tot_len cuts the TCP header short",
            ipv4_short_tot_len,
            drop(Malformed),
        ),
        edge(
            "IPv6 extension header runs past payload_len",
            ipv6_ext_past_payload,
            drop(Malformed),
        ),
        edge(
            "IPv4 with Ethernet padding",
            {
                let mut f = ip_tcp.clone();
                f.extend_from_slice(&[0; 6]);
                f
            },
            rule(0),
        ),
        edge(
            "IPv6 with a trailer after the packet",
            ipv6_trailer,
            rule(1),
        ),
        edge(
            "IPv6 payload_len 0, no next header (59)",
            no_next_header,
            drop(NoRule),
        ),
        // 2. Source routing.
        edge(
            "IPv4 loose source route (LSRR) via another device",
            with_ipv4_options(&[0x83, 7, 4, 10, 64, 0, 2]),
            drop(SourceRoute),
        ),
        edge(
            "IPv4 strict source route (SSRR) after a NOP",
            with_ipv4_options(&[0x01, 0x89, 7, 4, 10, 64, 0, 2]),
            drop(SourceRoute),
        ),
        edge(
            "IPv4 record route is not a source route",
            with_ipv4_options(&[0x07, 7, 4, 0, 0, 0, 0]),
            rule(0),
        ),
        edge(
            "IPv4 source route after end-of-list is padding",
            with_ipv4_options(&[0x00, 0x83, 7, 4]),
            rule(0),
        ),
        edge(
            "IPv4 option longer than the header",
            with_ipv4_options(&[0x07, 9, 4, 0]),
            drop(Malformed),
        ),
        edge(
            "IPv4 with eight no-ops and end-of-list",
            with_ipv4_options(&[1, 1, 1, 1, 1, 1, 1, 1, 0]),
            rule(0),
        ),
        edge(
            "IPv4 with nine options",
            with_ipv4_options(&[1, 1, 1, 1, 1, 1, 1, 1, 1]),
            drop(Malformed),
        ),
        edge(
            "IPv4 option without its length byte",
            with_ipv4_options(&[0x01, 0x01, 0x01, 0x07]),
            drop(Malformed),
        ),
        edge(
            "IPv6 type 0 routing header, segments left 1 (RFC 5095)",
            with_routing_header(0, 1),
            drop(SourceRoute),
        ),
        edge(
            "IPv6 segment routing header, segments left 2",
            with_routing_header(4, 2),
            drop(SourceRoute),
        ),
        edge(
            "IPv6 routing header with no segments left",
            with_routing_header(4, 0),
            rule(1),
        ),
        // Neighbour discovery passes unjudged only when it cannot have left its link.
        edge(
            "ND from a link-local source with hop limit 255",
            Frame::new("fe80::1", "ff02::1:ff00:1", L4::Icmp(135))
                .hop_limit(255)
                .build(),
            Verdict::Pass(PassReason::Neighbour, 0),
        ),
        edge(
            "ND-typed ICMPv6 from the SIM to another network (hop limit 64)",
            Frame::new("fd00:64:0:1::5", "2001:db9::1", L4::Icmp(135)).build(),
            drop(NoRule),
        ),
        edge(
            "on-link ND from a global source (Linux resolves from one)",
            Frame::new("fd00:64:0:1::5", "ff02::1:ff00:9", L4::Icmp(135))
                .hop_limit(255)
                .build(),
            Verdict::Pass(PassReason::Neighbour, 0),
        ),
        edge(
            "quarantined or not, ND-typed ICMPv6 from beyond a router is judged",
            Frame::new("fd00:64:0:1::5", "2001:db9::1", L4::Icmp(137))
                .hop_limit(254)
                .build(),
            drop(NoRule),
        ),
        edge(
            "ND from a spoofed pool address beyond a router",
            Frame::new("fd00:64:0:9::5", "ff02::1", L4::Icmp(134))
                .hop_limit(200)
                .build(),
            drop(Spoofed),
        ),
        edge(
            "fragmented ND is not trusted (RFC 6980)",
            Frame::new("fe80::1", "ff02::1", L4::Icmp(135))
                .hop_limit(255)
                .ext(&[Ext::Fragment(0, true)])
                .build(),
            Verdict::Pass(PassReason::NonPool, 0),
        ),
        core(
            "fragmented ND on a core-facing link",
            Frame::new("fe80::1", "ff02::1", L4::Icmp(135))
                .hop_limit(255)
                .ext(&[Ext::Fragment(0, true)])
                .build(),
            drop(NonPool),
        ),
        // TCP data offset.
        edge(
            "TCP data offset below five words",
            {
                let mut f = ip_tcp.clone();
                f[46] = 0x40;
                f
            },
            drop(Malformed),
        ),
        edge(
            "TCP data offset past the packet",
            {
                let mut f = ip_tcp.clone();
                f[46] = 0xf0;
                f
            },
            drop(Malformed),
        ),
        // 3. Non-IP frames on a core-facing link.
        core(
            "MPLS on a core-facing link",
            ethertype(&[0x88, 0x47], &[0, 0, 0x11, 0x40]),
            drop(NotIp),
        ),
        core(
            "PPPoE session on a core-facing link",
            ethertype(&[0x88, 0x64], &[0x11, 0, 0, 1, 0, 0x16, 0, 0x21]),
            drop(NotIp),
        ),
        core(
            "0x9100 tag on a core-facing link",
            ethertype(&[0x91, 0x00, 0x00, 0x64, 0x08, 0x00], &ip_tcp[14..]),
            drop(NotIp),
        ),
        core(
            "802.1Q tag around MPLS on a core-facing link",
            ethertype(&[0x81, 0x00, 0x00, 0x64, 0x88, 0x47], &[0, 0, 0x11, 0x40]),
            drop(NotIp),
        ),
        core(
            "ARP on a core-facing link",
            crate::frames::arp(),
            Verdict::Pass(PassReason::Neighbour, 0),
        ),
        core(
            "IPv4 from the SIM on a core-facing link",
            ip_tcp.clone(),
            rule(0),
        ),
        edge(
            "MPLS elsewhere passes",
            ethertype(&[0x88, 0x47], &[0, 0, 0x11, 0x40]),
            Verdict::Pass(PassReason::NotIp, 0),
        ),
        edge(
            "0x9100 tag elsewhere passes",
            ethertype(&[0x91, 0x00, 0x00, 0x64, 0x08, 0x00], &ip_tcp[14..]),
            Verdict::Pass(PassReason::NotIp, 0),
        ),
    ]
}
