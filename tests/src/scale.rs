//! Policies that once made compilation explode (issue 9), generated as policy text: the
//! linearity test (`tests/compile.rs`) and the benchmark's policy-size rows use the same ones.
//!
//! Destinations are /32s and /28s in 11.0.0.0/8, outside the pool 10.0.0.0/8 of every policy.

use std::fmt::Write as _;

/// A generated policy: its name in reports, its text and its number of rules.
pub struct ScalePolicy {
    /// What it stresses.
    pub name: String,
    /// TOML text.
    pub text: String,
    /// Rules in it.
    pub rules: usize,
    /// Distinct destination CIDRs in it.
    pub destinations: usize,
}

/// The `i`-th /32 of 11.0.0.0/8.
fn host(i: usize) -> String {
    format!("11.{}.{}.{}", (i >> 16) & 0xff, (i >> 8) & 0xff, i & 0xff)
}

fn header() -> String {
    "pools = [\"10.0.0.0/8\"]\n\n[[segments]]\nname = \"s\"\nrules = [\n".to_owned()
}

fn footer(text: &mut String) {
    text.push_str(
        "]\n\n[[sims]]\nimsi = \"001010000000001\"\nipv4 = \"10.0.0.1\"\nsegment = \"s\"\n",
    );
}

/// One rule towards `n` distinct /32s (issue 9: 70,000 took 75 s and overflowed `NET_V4`).
#[must_use]
pub fn one_rule_many_hosts(n: usize) -> ScalePolicy {
    let mut text = header();
    text.push_str("  { to = [");
    for i in 0..n {
        let _ = write!(text, "\"{}\",", host(i));
    }
    text.push_str("], proto = \"tcp\", ports = [443] },\n");
    footer(&mut text);
    ScalePolicy {
        name: format!("1 rule → {n} hosts"),
        text,
        rules: 1,
        destinations: n,
    }
}

/// `n` rules towards one host and port each, and one rule towards 0.0.0.0/0 for all their
/// ports (issue 9: 3,001 rules became 9,006,000 entries).
#[must_use]
pub fn wide_over_narrow(n: usize) -> ScalePolicy {
    let mut text = header();
    for i in 0..n {
        let _ = writeln!(
            text,
            "  {{ to = [\"{}\"], proto = \"tcp\", ports = [{}] }},",
            host(i),
            1000 + i
        );
    }
    let _ = writeln!(
        text,
        "  {{ to = [\"0.0.0.0/0\"], proto = \"tcp\", ports = [\"1000-{}\"] }},",
        999 + n
    );
    footer(&mut text);
    ScalePolicy {
        name: format!("{n} host rules + 1 wide"),
        text,
        rules: n + 1,
        destinations: n + 1,
    }
}

/// `n` rules, each towards its own host with its own wide port range (the worst ranges cut
/// into 28 to 30 aligned blocks).
#[must_use]
pub fn distinct_ranges(n: usize) -> ScalePolicy {
    let mut text = header();
    for i in 0..n {
        let lo = 1 + i % 1000;
        let hi = 65_534 - (i * 7) % 1000;
        let _ = writeln!(
            text,
            "  {{ to = [\"{}\"], proto = \"tcp\", ports = [\"{lo}-{hi}\"] }},",
            host(i)
        );
    }
    footer(&mut text);
    ScalePolicy {
        name: format!("{n} rules, distinct hosts and port ranges"),
        text,
        rules: n,
        destinations: n,
    }
}

/// `n` distinct destination CIDRs (/32s and /28s, some /32s inside the /28s), 100 per rule.
#[must_use]
pub fn many_cidrs(n: usize) -> ScalePolicy {
    let mut text = header();
    let rules = n.div_ceil(100);
    for r in 0..rules {
        text.push_str("  { to = [");
        for i in r * 100..((r + 1) * 100).min(n) {
            // Every fourth is the /28 around the host 16 places on: nesting without duplicates.
            if i % 4 == 3 {
                let _ = write!(text, "\"{}/28\",", host((i / 4) * 64 + 32));
            } else {
                let _ = write!(text, "\"{}\",", host((i / 4) * 64 + (i % 4) * 40 % 64));
            }
        }
        let _ = writeln!(text, "], proto = \"udp\", ports = [{}] }},", 2000 + r);
    }
    footer(&mut text);
    ScalePolicy {
        name: format!("{n} destination CIDRs"),
        text,
        rules,
        destinations: n,
    }
}
