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
    DropReason, PassReason, Verdict,
    decide::{self, PacketMeta, Tables, v4_in_16},
    maps::{
        IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, NetEntry, PORT_BITS_ANY, PROTO_ANY,
        RuleKey, SimEntry,
    },
    rules::RuleTable,
};

use crate::compile::MapImage;

/// What the reference parser makes of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parsed {
    /// An IP packet for the lookups.
    Ip(PacketMeta),
    /// A verdict that needs no lookup (ARP, neighbour discovery, non-IP).
    Done(Verdict),
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
            Ok(Parsed::Ip(meta)) => {
                let inputs = decide::identify(self, &meta);
                Outcome {
                    verdict: decide::decide(&inputs),
                    sim: inputs.src.sim(),
                }
            }
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
            if entry.subject != key.subject || entry.class != key.class {
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

    fn sim_v4(&self, addr: [u8; 4]) -> Option<SimEntry> {
        self.sims_v4.get(&addr).copied()
    }

    fn sim_v6(&self, prefix: [u8; 8]) -> Option<SimEntry> {
        self.sims_v6.get(&prefix).copied()
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

    fn segment_tiers(&self, generation: u8, segment: u16) -> u8 {
        if generation != self.generation {
            return 0;
        }
        self.image
            .segments
            .get(usize::from(segment))
            .map_or(0, |s| s.tiers as u8)
    }

    fn iface_flags(&self, ifindex: u32) -> u32 {
        self.ifaces.get(&ifindex).copied().unwrap_or(0)
    }
}

/// Parse a frame by the rules in `enforcer-ebpf/src/parse.rs`, over a byte slice.
pub fn parse(frame: &[u8], ifindex: u32) -> Result<Parsed, DropReason> {
    let bytes = |at: usize, len: usize| frame.get(at..at + len).ok_or(DropReason::Malformed);
    let be16 = |at: usize| bytes(at, 2).map(|b| u16::from_be_bytes([b[0], b[1]]));

    let mut ethertype = be16(12)?;
    let mut at = 14;
    let mut tags = 0;
    while ethertype == 0x8100 || ethertype == 0x88A8 {
        if tags == 2 {
            return Err(DropReason::Malformed);
        }
        ethertype = be16(at + 2)?;
        at += 4;
        tags += 1;
    }
    let (addrs, proto, l4, later_fragment) = match ethertype {
        0x0800 => {
            let header = bytes(at, 20)?;
            if header[0] >> 4 != 4 {
                return Err(DropReason::Malformed);
            }
            let ihl = usize::from(header[0] & 0x0f) * 4;
            let total = usize::from(be16(at + 2)?);
            if ihl < 20 || total < ihl || at + total > frame.len() {
                return Err(DropReason::Malformed);
            }
            let offset = be16(at + 6)? & 0x1fff;
            let src: [u8; 4] = header[12..16].try_into().unwrap_or_default();
            let dst: [u8; 4] = header[16..20].try_into().unwrap_or_default();
            (
                (false, v4_in_16(src), v4_in_16(dst)),
                header[9],
                at + ihl,
                offset != 0,
            )
        }
        0x86DD => {
            let header = bytes(at, 40)?;
            if header[0] >> 4 != 6 {
                return Err(DropReason::Malformed);
            }
            let payload = usize::from(be16(at + 4)?);
            if at + 40 + payload > frame.len() {
                return Err(DropReason::Malformed);
            }
            let src: [u8; 16] = header[8..24].try_into().unwrap_or_default();
            let dst: [u8; 16] = header[24..40].try_into().unwrap_or_default();
            let mut next = header[6];
            let mut cursor = at + 40;
            let mut later = false;
            let mut seen = 0;
            loop {
                match next {
                    0 | 43 | 60 => {
                        let ext = bytes(cursor, 2)?;
                        let len = (usize::from(ext[1]) + 1) * 8;
                        bytes(cursor, len)?;
                        next = ext[0];
                        cursor += len;
                    }
                    44 => {
                        let frag = bytes(cursor, 8)?;
                        next = frag[0];
                        cursor += 8;
                        if u16::from_be_bytes([frag[2], frag[3]]) >> 3 != 0 {
                            later = true;
                            break;
                        }
                    }
                    _ => break,
                }
                seen += 1;
                if seen == 6 && matches!(next, 0 | 43 | 60 | 44) {
                    return Err(DropReason::Malformed);
                }
            }
            ((true, src, dst), next, cursor, later)
        }
        0x0806 => return Ok(Parsed::Done(Verdict::Pass(PassReason::Neighbour, 0))),
        _ => return Ok(Parsed::Done(Verdict::Pass(PassReason::NotIp, 0))),
    };
    let (v6, src, dst) = addrs;
    let mut meta = PacketMeta {
        v6,
        src,
        dst,
        proto,
        dport: 0,
        has_ports: false,
        later_fragment,
        ifindex,
    };
    if !later_fragment {
        match proto {
            IPPROTO_TCP => {
                bytes(l4, 20)?;
                meta.dport = be16(l4 + 2)?;
                meta.has_ports = true;
            }
            IPPROTO_UDP => {
                bytes(l4, 8)?;
                meta.dport = be16(l4 + 2)?;
                meta.has_ports = true;
            }
            IPPROTO_ICMP if !v6 => {
                bytes(l4, 8)?;
            }
            IPPROTO_ICMPV6 if v6 => {
                let icmp = bytes(l4, 8)?;
                if (133..=137).contains(&icmp[0]) {
                    return Ok(Parsed::Done(Verdict::Pass(PassReason::Neighbour, 0)));
                }
            }
            _ => {}
        }
    }
    Ok(Parsed::Ip(meta))
}
