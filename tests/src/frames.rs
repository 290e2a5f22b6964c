//! A frame builder for tests, written independently of both parsers (kernel and reference).
//!
//! Builds Ethernet frames with optional VLAN tags, IPv4 (with options, fragments) or IPv6 (with
//! extension headers), and TCP, UDP, ICMP or ICMPv6 headers. Checksums are not computed: the
//! enforcer never reads them.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Transport header to put after IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4 {
    /// TCP to this destination port (20-byte header).
    Tcp(u16),
    /// UDP to this destination port.
    Udp(u16),
    /// ICMP (IPv4) echo request, or ICMPv6 of the given type.
    Icmp(u8),
    /// Another protocol with `len` bytes of payload.
    Other(u8, usize),
}

/// An IPv6 extension header to insert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ext {
    /// Hop-by-hop options, `len` in 8-byte units beyond the first 8.
    HopByHop(u8),
    /// Routing header.
    Routing(u8),
    /// Destination options.
    DestOpts(u8),
    /// Fragment header with this offset (in 8-byte units) and more-fragments flag.
    Fragment(u16, bool),
}

/// What to build.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Outer-first VLAN tag ethertypes (0x8100 or 0x88a8).
    pub vlans: Vec<u16>,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Transport.
    pub l4: L4,
    /// IPv4 option bytes (multiple of 4, at most 40), one experimental option.
    pub ipv4_options: usize,
    /// IPv4 fragment offset (8-byte units) and more-fragments flag.
    pub ipv4_fragment: (u16, bool),
    /// Explicit IPv4 option bytes (padded with end-of-list to `ipv4_options`); empty: NOPs.
    pub ipv4_option_bytes: Vec<u8>,
    /// IPv6 extension headers, in order.
    pub ipv6_ext: Vec<Ext>,
    /// Segments-left of every routing header (0: already at the final destination).
    pub routing_segments_left: u8,
    /// Payload bytes after the transport header.
    pub payload: usize,
    /// IPv6 hop limit (IPv4 TTL stays 64).
    pub hop_limit: u8,
    /// TCP/UDP source port.
    pub sport: u16,
    /// TCP flags byte (SYN by default).
    pub tcp_flags: u8,
    /// The IPv4 ICMP type (echo request by default); IPv6 takes it from [`L4::Icmp`].
    pub icmp4_type: u8,
    /// Bytes after the 8-byte ICMP header: the packet an ICMP error quotes.
    pub quote: Vec<u8>,
}

impl Frame {
    /// A frame from `src` to `dst` with transport `l4` and nothing special.
    #[must_use]
    pub fn new(src: &str, dst: &str, l4: L4) -> Self {
        Self {
            vlans: Vec::new(),
            src: src.parse().expect("test source address"),
            dst: dst.parse().expect("test destination address"),
            l4,
            ipv4_options: 0,
            ipv4_fragment: (0, false),
            ipv4_option_bytes: Vec::new(),
            ipv6_ext: Vec::new(),
            routing_segments_left: 0,
            hop_limit: 64,
            payload: 0,
            sport: 40000,
            tcp_flags: 0x02,
            icmp4_type: 8,
            quote: Vec::new(),
        }
    }

    /// This frame (an ICMP or ICMPv6 one) quoting `quoted`'s IP header and the first eight
    /// bytes after it, whatever its addresses.
    #[must_use]
    pub fn quote_of(mut self, quoted: &Frame) -> Self {
        self.quote = quoted.icmp_error("192.0.2.1", 3, 8).quote;
        self
    }

    /// An ICMP (IPv4) or ICMPv6 error of type `kind` from `from` to this frame's source,
    /// quoting its IP header and the first `quoted` bytes after it (RFC 792 asks for 8; RFC
    /// 4443 §2.4 as much as fits).
    #[must_use]
    pub fn icmp_error(&self, from: &str, kind: u8, quoted: usize) -> Self {
        let mut error = Frame::new(from, &self.src.to_string(), L4::Icmp(kind));
        error.icmp4_type = kind;
        let whole = self.build();
        let l3 = 14 + 4 * self.vlans.len();
        let header = match self.src {
            IpAddr::V4(_) => usize::from(whole[l3] & 0x0f) * 4,
            IpAddr::V6(_) => 40,
        };
        let end = (l3 + header + quoted).min(whole.len());
        error.quote = whole[l3..end].to_vec();
        error
    }

    /// Set the TCP/UDP source port.
    #[must_use]
    pub fn sport(mut self, port: u16) -> Self {
        self.sport = port;
        self
    }

    /// Set the TCP flags byte (FIN 0x01, SYN 0x02, RST 0x04, ACK 0x10).
    #[must_use]
    pub fn flags(mut self, flags: u8) -> Self {
        self.tcp_flags = flags;
        self
    }

    /// Set the IPv4 ICMP type (0 echo reply, 8 echo request).
    #[must_use]
    pub fn icmp4(mut self, kind: u8) -> Self {
        self.icmp4_type = kind;
        self
    }

    /// The same flow's packet the other way: addresses and ports swapped (for ICMP echo, the
    /// reply type), with TCP flags `flags`.
    #[must_use]
    pub fn reply(&self, flags: u8) -> Self {
        let mut reply = self.clone();
        std::mem::swap(&mut reply.src, &mut reply.dst);
        reply.tcp_flags = flags;
        reply.l4 = match self.l4 {
            L4::Tcp(port) => {
                reply.sport = port;
                L4::Tcp(self.sport)
            }
            L4::Udp(port) => {
                reply.sport = port;
                L4::Udp(self.sport)
            }
            L4::Icmp(kind) => {
                reply.icmp4_type = if self.icmp4_type == 8 {
                    0
                } else {
                    self.icmp4_type
                };
                L4::Icmp(if kind == 128 { 129 } else { kind })
            }
            other => other,
        };
        reply
    }

    /// Add VLAN tags.
    #[must_use]
    pub fn vlans(mut self, tags: &[u16]) -> Self {
        self.vlans = tags.to_vec();
        self
    }

    /// Set the IPv6 hop limit.
    #[must_use]
    pub fn hop_limit(mut self, hop_limit: u8) -> Self {
        self.hop_limit = hop_limit;
        self
    }

    /// Add IPv6 extension headers.
    #[must_use]
    pub fn ext(mut self, ext: &[Ext]) -> Self {
        self.ipv6_ext = ext.to_vec();
        self
    }

    /// Serialise to bytes.
    #[must_use]
    pub fn build(&self) -> Vec<u8> {
        let mut l4 = Vec::new();
        let proto = match self.l4 {
            L4::Tcp(port) => {
                l4.extend_from_slice(&self.sport.to_be_bytes());
                l4.extend_from_slice(&port.to_be_bytes());
                l4.extend_from_slice(&[0; 8]);
                l4.extend_from_slice(&[0x50, self.tcp_flags, 0xff, 0xff, 0, 0, 0, 0]);
                6
            }
            L4::Udp(port) => {
                l4.extend_from_slice(&self.sport.to_be_bytes());
                l4.extend_from_slice(&port.to_be_bytes());
                let len = u16::try_from(8 + self.payload).unwrap_or(u16::MAX);
                l4.extend_from_slice(&len.to_be_bytes());
                l4.extend_from_slice(&[0, 0]);
                17
            }
            L4::Icmp(kind) => {
                let is_v6 = self.dst.is_ipv6();
                l4.extend_from_slice(&[
                    if is_v6 { kind } else { self.icmp4_type },
                    0,
                    0,
                    0,
                    0,
                    1,
                    0,
                    1,
                ]);
                l4.extend_from_slice(&self.quote);
                if is_v6 { 58 } else { 1 }
            }
            L4::Other(proto, len) => {
                l4.resize(len, 0xab);
                proto
            }
        };
        l4.resize(l4.len() + self.payload, 0x5a);

        // MACs, then per tag its TPID and TCI (VLAN 100), then the inner ethertype below.
        let mut frame = vec![0x02, 0, 0, 0, 0, 2, 0x02, 0, 0, 0, 0, 1];
        for tag in &self.vlans {
            frame.extend_from_slice(&tag.to_be_bytes());
            frame.extend_from_slice(&[0x00, 0x64]);
        }
        match (self.src, self.dst) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                frame.extend_from_slice(&0x0800u16.to_be_bytes());
                let mut header = ipv4_header(
                    src,
                    dst,
                    proto,
                    self.ipv4_options,
                    self.ipv4_fragment,
                    l4.len(),
                );
                if !self.ipv4_option_bytes.is_empty() {
                    let options = &mut header[20..];
                    options.fill(0);
                    let n = self.ipv4_option_bytes.len().min(options.len());
                    options[..n].copy_from_slice(&self.ipv4_option_bytes[..n]);
                }
                frame.extend(header);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                frame.extend_from_slice(&0x86DDu16.to_be_bytes());
                let (ext, first) = ipv6_ext(&self.ipv6_ext, proto, self.routing_segments_left);
                frame.extend(ipv6_header(
                    src,
                    dst,
                    first,
                    ext.len() + l4.len(),
                    self.hop_limit,
                ));
                frame.extend(ext);
            }
            _ => panic!("test frame mixes IPv4 and IPv6 addresses"),
        }
        frame.extend(l4);
        frame
    }
}

fn ipv4_header(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: u8,
    options: usize,
    fragment: (u16, bool),
    l4_len: usize,
) -> Vec<u8> {
    let header_len = 20 + options;
    let total = u16::try_from(header_len + l4_len).unwrap_or(u16::MAX);
    let ihl = u8::try_from(header_len / 4).unwrap_or(15);
    let frag = (fragment.0 & 0x1fff) | if fragment.1 { 0x2000 } else { 0 };
    let mut h = vec![0x40 | ihl, 0];
    h.extend_from_slice(&total.to_be_bytes());
    h.extend_from_slice(&[0x12, 0x34]);
    h.extend_from_slice(&frag.to_be_bytes());
    h.extend_from_slice(&[64, proto, 0, 0]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    // One experimental option (RFC 4727: copied, number 30) fills the options area; runs of
    // no-ops would exceed the eight options the enforcer walks.
    if options >= 4 {
        h.extend_from_slice(&[0x9e, u8::try_from(options).unwrap_or(40)]);
    }
    h.resize(header_len, 0);
    h
}

fn ipv6_header(src: Ipv6Addr, dst: Ipv6Addr, next: u8, payload: usize, hop_limit: u8) -> Vec<u8> {
    let mut h = vec![0x60, 0, 0, 0];
    h.extend_from_slice(&u16::try_from(payload).unwrap_or(u16::MAX).to_be_bytes());
    h.extend_from_slice(&[next, hop_limit]);
    h.extend_from_slice(&src.octets());
    h.extend_from_slice(&dst.octets());
    h
}

/// Extension header bytes and the first next-header value.
fn ipv6_ext(ext: &[Ext], proto: u8, segments_left: u8) -> (Vec<u8>, u8) {
    let code = |e: &Ext| match e {
        Ext::HopByHop(_) => 0,
        Ext::Routing(_) => 43,
        Ext::DestOpts(_) => 60,
        Ext::Fragment(..) => 44,
    };
    let mut bytes = Vec::new();
    for (i, e) in ext.iter().enumerate() {
        let next = ext.get(i + 1).map_or(proto, code);
        match e {
            Ext::HopByHop(len) | Ext::Routing(len) | Ext::DestOpts(len) => {
                let size = (usize::from(*len) + 1) * 8;
                let mut h = vec![next, *len];
                h.resize(size, 0);
                if matches!(e, Ext::Routing(_)) {
                    h[3] = segments_left;
                }
                bytes.extend(h);
            }
            Ext::Fragment(offset, more) => {
                let field = (offset << 3) | u16::from(*more);
                bytes.extend_from_slice(&[next, 0]);
                bytes.extend_from_slice(&field.to_be_bytes());
                bytes.extend_from_slice(&[0, 0, 0, 1]);
            }
        }
    }
    (bytes, ext.first().map_or(proto, code))
}

/// An ARP request frame.
#[must_use]
pub fn arp() -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 1, 0x08, 0x06]);
    f.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    f.resize(42, 0);
    f
}
