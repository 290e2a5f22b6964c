//! Benchmark building blocks: generated policies at scale, the frame shapes measured, per-run
//! statistics and lookup counting (the reference model's table calls, which are the kernel
//! program's map lookups: both run the shared `identify`).

use std::{
    cell::Cell,
    fmt::Write as _,
    path::{Path, PathBuf},
};

use enforcer::reference::{self, Parsed, Reference};
use enforcer_common::{
    decide::{PacketMeta, Tables, identify},
    maps::{NetEntry, RuleKey, SegmentEntry, SimEntry},
    rules::RuleTable,
};

use crate::frames::{Ext, Frame, L4};

/// Segments in generated policies.
pub const SEGMENTS: u32 = 4;

/// A generated policy on disk: `policy.toml` plus `sims.csv`.
pub struct Generated {
    /// The policy file.
    pub policy: PathBuf,
    /// SIMs in it.
    pub sims: u32,
    /// Rules per segment.
    pub rules_per_segment: u32,
}

/// The IPv4 address of generated SIM `i`: 10.0.0.0/8, skipping .0.
#[must_use]
pub fn sim_v4(i: u32) -> String {
    let n = i + 1;
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// Write a policy with `sims` SIMs (inventory CSV) and `rules` rules per segment into `dir`.
/// Rule 0 of every segment allows tcp/443 and udp/53 to 192.0.2.10 and 2001:db8::/32; the others each allow
/// one distinct /32 in 198.18.0.0/15 and one port, so the LPM and port classes grow with them.
/// SIM 1 is quarantined; the first 1,000 SIMs also have an IPv6 /64.
///
/// # Panics
/// When the files cannot be written.
#[must_use]
pub fn generate(dir: &Path, sims: u32, rules: u32) -> Generated {
    std::fs::create_dir_all(dir).expect("bench dir");
    let mut policy =
        String::from("pools = [\"10.0.0.0/8\", \"fd00:1::/32\"]\ninventory = \"sims.csv\"\n");
    for s in 0..SEGMENTS {
        let _ = writeln!(policy, "\n[[segments]]\nname = \"seg{s}\"\nrules = [");
        let _ = writeln!(
            policy,
            "  {{ to = [\"192.0.2.10\", \"2001:db8::/32\"], proto = [\"tcp\", \"udp\"], ports = [443, 53] }},"
        );
        for k in 1..rules {
            let _ = writeln!(
                policy,
                "  {{ to = [\"198.18.{}.{}\"], proto = \"tcp\", ports = [{}] }},",
                k / 256,
                k % 256,
                1000 + k
            );
        }
        let _ = writeln!(policy, "]");
    }
    let mut csv = String::with_capacity(sims as usize * 48);
    csv.push_str("imsi,ipv4,ipv6,segment,state\n");
    for i in 0..sims {
        let v6 = if i < 1000 {
            format!("fd00:1:0:{i:x}::/64")
        } else {
            String::new()
        };
        let state = if i == 1 { "quarantined" } else { "" };
        let _ = writeln!(
            csv,
            "{:015},{},{v6},seg{},{state}",
            1_010_000_000_000u64 + u64::from(i),
            sim_v4(i),
            i % SEGMENTS
        );
    }
    let path = dir.join("policy.toml");
    std::fs::write(&path, policy).expect("write policy");
    std::fs::write(dir.join("sims.csv"), csv).expect("write inventory");
    Generated {
        policy: path,
        sims,
        rules_per_segment: rules,
    }
}

/// The frame shapes measured, as (name, frame), in the order they must run: the first,
/// `allowed` (a SYN), opens the session that the established, reply and ICMP error shapes
/// find (its later runs are themselves the established path). The quarantined shape needs two
/// SIMs.
#[must_use]
pub fn shapes(sims: u32) -> Vec<(&'static str, Vec<u8>)> {
    // A SIM of segment 0 from the middle of the table (never SIM 1, the quarantined one).
    let active = sim_v4(sims / 2 / SEGMENTS * SEGMENTS);
    let other = sim_v4(sims / 2 / SEGMENTS * SEGMENTS + SEGMENTS);
    let mut truncated = Frame::new(&active, "192.0.2.10", L4::Tcp(443)).build();
    truncated.truncate(truncated.len() - 4);
    let allowed = Frame::new(&active, "192.0.2.10", L4::Tcp(443));
    [
        ("allowed", allowed.build()),
        ("allowed, established", allowed.clone().flags(0x10).build()),
        (
            "allowed, no session (ACK)",
            allowed.clone().sport(40001).flags(0x10).build(),
        ),
        ("reply", allowed.reply(0x12).build()),
        (
            "ICMP error quoting it",
            allowed.icmp_error("203.0.113.1", 3, 8).build(),
        ),
        (
            "denied (no rule)",
            Frame::new(&active, "192.0.2.10", L4::Tcp(444)).build(),
        ),
        ("lateral", Frame::new(&active, &other, L4::Tcp(443)).build()),
        (
            "spoofed",
            Frame::new("10.255.255.254", "192.0.2.10", L4::Tcp(443)).build(),
        ),
        (
            "quarantined",
            Frame::new(&sim_v4(1), "192.0.2.10", L4::Tcp(443)).build(),
        ),
    ]
    .into_iter()
    .filter(|(name, _)| sims >= 2 || *name != "quarantined")
    .chain([
        (
            "non-pool",
            Frame::new("203.0.113.1", &active, L4::Tcp(443)).build(),
        ),
        ("malformed", truncated),
        (
            "ipv6 + 2 ext headers",
            Frame::new("fd00:1::1", "2001:db8::10", L4::Tcp(443))
                .ext(&[Ext::HopByHop(0), Ext::DestOpts(0)])
                .build(),
        ),
        (
            "802.1Q",
            Frame::new(&active, "192.0.2.10", L4::Tcp(443))
                .vlans(&[0x8100])
                .build(),
        ),
        (
            "QinQ",
            Frame::new(&active, "192.0.2.10", L4::Tcp(443))
                .vlans(&[0x88a8, 0x8100])
                .build(),
        ),
    ])
    .collect()
}

/// Map lookups one frame costs, by kind.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Lookups {
    /// Hash lookups (SIM, single-port rule, interface).
    pub hash: u32,
    /// LPM trie lookups (networks, rules).
    pub lpm: u32,
    /// Array lookups (config, segment, ports used), which the verifier inlines.
    pub array: u32,
}

impl std::fmt::Display for Lookups {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}h+{}l+{}a", self.hash, self.lpm, self.array)
    }
}

struct Counting<'a> {
    inner: &'a Reference,
    hash: Cell<u32>,
    lpm: Cell<u32>,
    array: Cell<u32>,
}

impl Counting<'_> {
    fn bump(cell: &Cell<u32>) {
        cell.set(cell.get() + 1);
    }
}

impl RuleTable for Counting<'_> {
    fn port_rule(&self, generation: u8, key: &RuleKey) -> Option<u32> {
        Self::bump(&self.hash);
        self.inner.port_rule(generation, key)
    }
    fn rule(&self, generation: u8, key: &RuleKey) -> Option<u32> {
        Self::bump(&self.lpm);
        self.inner.rule(generation, key)
    }
}

impl Tables for Counting<'_> {
    fn generation(&self) -> u8 {
        Self::bump(&self.array);
        self.inner.generation()
    }
    // A bound address costs a hash lookup (the binding) and an array lookup (`SIMS`).
    fn sim_v4(&self, generation: u8, addr: [u8; 4]) -> Option<SimEntry> {
        Self::bump(&self.hash);
        let sim = self.inner.sim_v4(generation, addr);
        if sim.is_some() {
            Self::bump(&self.array);
        }
        sim
    }
    fn sim_v6(&self, generation: u8, prefix: [u8; 8]) -> Option<SimEntry> {
        Self::bump(&self.hash);
        let sim = self.inner.sim_v6(generation, prefix);
        if sim.is_some() {
            Self::bump(&self.array);
        }
        sim
    }
    fn net_v4(&self, generation: u8, addr: [u8; 4]) -> Option<NetEntry> {
        Self::bump(&self.lpm);
        self.inner.net_v4(generation, addr)
    }
    fn net_v6(&self, generation: u8, addr: [u8; 16]) -> Option<NetEntry> {
        Self::bump(&self.lpm);
        self.inner.net_v6(generation, addr)
    }
    fn single_port_used(&self, generation: u8, proto: u8, port: u16) -> bool {
        Self::bump(&self.array);
        self.inner.single_port_used(generation, proto, port)
    }
    fn segment(&self, generation: u8, segment: u16) -> SegmentEntry {
        Self::bump(&self.array);
        self.inner.segment(generation, segment)
    }
    fn iface_flags(&self, ifindex: u32) -> u32 {
        Self::bump(&self.hash);
        self.inner.iface_flags(ifindex)
    }
}

/// The lookups the program makes for `frame` (counters excluded: one to three per-CPU array
/// updates per packet).
#[must_use]
pub fn lookups(reference: &Reference, frame: &[u8], ifindex: u32) -> Lookups {
    let counting = Counting {
        inner: reference,
        hash: Cell::new(0),
        lpm: Cell::new(0),
        array: Cell::new(0),
    };
    if let Ok(Parsed::Ip(meta)) = reference::parse(frame, ifindex) {
        let meta: PacketMeta = meta;
        let _ = identify(&counting, &meta);
    }
    Lookups {
        hash: counting.hash.get(),
        lpm: counting.lpm.get(),
        array: counting.array.get(),
    }
}

/// Median, min and max of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// Median.
    pub median: f64,
    /// Minimum.
    pub min: f64,
    /// Maximum.
    pub max: f64,
}

impl Stats {
    /// Statistics of a non-empty sample.
    ///
    /// # Panics
    /// On an empty sample.
    #[must_use]
    pub fn of(samples: &[f64]) -> Self {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        assert!(n > 0, "no samples");
        let median = if n % 2 == 1 {
            sorted[n / 2]
        } else {
            (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
        };
        Self {
            median,
            min: sorted[0],
            max: sorted[n - 1],
        }
    }
}
