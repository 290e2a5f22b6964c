//! Fuzzing the policy front end with proptest: the TOML reader, the CSV inventory reader and
//! validation (and, for policies that pass, compilation) over arbitrary bytes and over
//! structure-aware mutations of the checked-in corpus (`tests/corpus/policy/*.toml`,
//! `tests/corpus/inventory/*.csv`).
//!
//! Each case must finish without a panic, within [`CASE_TIMEOUT`] (a watchdog thread, so a
//! hang fails the test instead of stalling it), and within an allocation budget measured by a
//! counting global allocator. Accepted policies must also keep the invariants compile relies
//! on, and every error must be one bounded line.
//!
//! `FUZZ_CASES` sets the cases per property (default 64: a few seconds in `cargo test`; the
//! benchmark runs more), `FUZZ_SEED` fixes proptest's seed. A failure prints the shrunk input:
//! add it to the corpus as a new file, so every later run starts from it.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    cell::Cell,
    path::Path,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use enforcer::policy::{self, Dest, LoadOptions, ValidatedPolicy};
use integration_tests::Scratch;
use proptest::{
    prelude::*,
    test_runner::{Config, RngSeed, TestCaseError, TestRunner},
};

/// Longest a single case may take (a debug build on a shared machine).
const CASE_TIMEOUT: Duration = Duration::from_secs(20);
/// Allocation allowed per case: a fixed part plus a multiple of the input size.
const ALLOC_FIXED: usize = 32 << 20;
const ALLOC_PER_INPUT_BYTE: usize = 1024;
/// Mutations stop once an input is this large (bytes): cases stay quick.
const MAX_MUTATED: usize = 1 << 20;
/// A message longer than this echoes too much of the input.
const MAX_MESSAGE: usize = 1_000;

/// Counts live and peak heap bytes per thread: each case runs on a thread of its own, so other
/// tests running in parallel do not count against it.
struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn grew(bytes: usize) {
    // `try_with`: during thread teardown the counters may be gone; then nothing is counted.
    let _ = LIVE.try_with(|live| {
        let now = live.get() + bytes;
        live.set(now);
        let _ = PEAK.try_with(|peak| peak.set(peak.get().max(now)));
    });
}

fn shrank(bytes: usize) {
    let _ = LIVE.try_with(|live| live.set(live.get().saturating_sub(bytes)));
}

/// Restart the peak of this thread at its current use; returns that use.
fn reset_peak() -> usize {
    let live = LIVE.with(Cell::get);
    PEAK.with(|peak| peak.set(live));
    live
}

// SAFETY: every call is forwarded to the system allocator unchanged; the counters only observe
// (thread-local `Cell`s with const initialisers, which never allocate).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `alloc`'s contract, passed on as is.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            grew(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `realloc`'s contract, passed on as is.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        new
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn corpus(kind: &str, extension: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(kind);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == extension))
        .map(|path| {
            let name = path
                .file_name()
                .expect("file name")
                .to_string_lossy()
                .into_owned();
            (name, std::fs::read(&path).expect("read corpus file"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files
}

fn config() -> Config {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(64);
    let rng_seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|n| n.parse().ok())
        .map_or(RngSeed::Random, RngSeed::Fixed);
    Config {
        cases,
        rng_seed,
        // Failures are added to the corpus by hand, not to proptest-regressions files.
        failure_persistence: None,
        max_shrink_iters: 2_000,
        ..Config::default()
    }
}

/// Write `policy` (and `inventory` as `sims.csv`) into `dir`, load it on a watchdog thread, and
/// check time, allocation, messages and, if accepted, the invariants.
fn check(dir: &Path, policy: &[u8], inventory: Option<&[u8]>) -> Result<(), TestCaseError> {
    let accepted = check_accepted(dir, policy, inventory)?;
    if accepted {
        ACCEPTED.fetch_add(1, Ordering::Relaxed);
    }
    Ok(())
}

/// Cases whose policy was valid, for the summary line of a property.
static ACCEPTED: AtomicUsize = AtomicUsize::new(0);

/// [`check`], returning whether the policy was accepted.
fn check_accepted(
    dir: &Path,
    policy: &[u8],
    inventory: Option<&[u8]>,
) -> Result<bool, TestCaseError> {
    let policy_path = dir.join("p.toml");
    std::fs::write(&policy_path, policy).expect("write policy");
    if let Some(inventory) = inventory {
        std::fs::write(dir.join("sims.csv"), inventory).expect("write inventory");
    }
    let input = policy.len() + inventory.map_or(0, <[u8]>::len);
    let budget = ALLOC_FIXED + ALLOC_PER_INPUT_BYTE * input;
    let (tx, rx) = std::sync::mpsc::channel();
    let path = policy_path.clone();
    std::thread::spawn(move || {
        let result = std::panic::catch_unwind(|| run(&path));
        let _ = tx.send(result);
    });
    let (outcome, used) = match rx.recv_timeout(CASE_TIMEOUT) {
        Ok(Ok(outcome)) => outcome,
        Ok(Err(panic)) => {
            let message = panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                .unwrap_or_default();
            return Err(TestCaseError::fail(format!("panicked: {message}")));
        }
        Err(_) => {
            return Err(TestCaseError::fail(format!(
                "no answer within {CASE_TIMEOUT:?} (hang or runaway)"
            )));
        }
    };
    prop_assert!(
        used <= budget,
        "reading and validating allocated {used} bytes for {input} bytes of input (budget \
         {budget})"
    );
    outcome.map_err(TestCaseError::fail)
}

/// Validate (and compile what validates): `Ok(true)` if valid, `Err` names a broken invariant;
/// with the peak heap use of reading and validating.
fn run(path: &Path) -> (Result<bool, String>, usize) {
    let base = reset_peak();
    let loaded = policy::load_with(path, &LoadOptions::default());
    let used = PEAK.with(Cell::get).saturating_sub(base);
    (judge(loaded), used)
}

fn judge(loaded: Result<ValidatedPolicy, policy::PolicyErrors>) -> Result<bool, String> {
    match loaded {
        Ok(policy) => {
            invariants(&policy)?;
            // Compilation of a valid policy must not panic; an `Err` (a capacity) is allowed.
            // Its memory is not judged here: compile's growth with rules is issue 9 section 1.
            let _ = enforcer::compile::compile_fresh(&policy);
            Ok(true)
        }
        Err(errors) => {
            if errors.0.is_empty() {
                return Err("an invalid policy with no error".into());
            }
            for error in &errors.0 {
                let text = error.to_string();
                if error.message.is_empty() || error.message.contains('\n') {
                    return Err(format!("not one line: {text:?}"));
                }
                if error.message.chars().count() > MAX_MESSAGE {
                    return Err(format!("{} characters: {text:.200}", error.message.len()));
                }
            }
            Ok(false)
        }
    }
}

/// What compile relies on in a [`ValidatedPolicy`].
fn invariants(policy: &ValidatedPolicy) -> Result<(), String> {
    let segments = policy.segments.len();
    let sims = policy.sims.len();
    for (i, pool) in policy.pools.iter().enumerate() {
        if pool.prefix() == 0 {
            return Err(format!("pool {pool} of every address"));
        }
        for other in &policy.pools[i + 1..] {
            if pool.contains(other.network()) || other.contains(pool.network()) {
                return Err(format!("pools {pool} and {other} overlap"));
            }
        }
    }
    let mut v4 = std::collections::HashSet::new();
    let mut imsis = std::collections::HashSet::new();
    for sim in &policy.sims {
        if usize::from(sim.segment) >= segments {
            return Err(format!("SIM {} in segment {}", sim.imsi, sim.segment));
        }
        if !imsis.insert(&sim.imsi) {
            return Err(format!("IMSI {} twice", sim.imsi));
        }
        if let Some(addr) = sim.ipv4() {
            if !v4.insert(addr) {
                return Err(format!("{addr} twice"));
            }
            if !policy.pools.iter().any(|p| p.contains(addr.into())) {
                return Err(format!("{addr} outside the pools"));
            }
        }
    }
    let rules = policy
        .segments
        .iter()
        .flat_map(|s| &s.rules)
        .chain(policy.sims.iter().flat_map(|s| s.rules()));
    for rule in rules {
        for dest in &rule.to {
            match *dest {
                Dest::Segment(id) if usize::from(id) >= segments => {
                    return Err(format!("rule {} names segment {id}", rule.origin));
                }
                Dest::Sim(index) if index as usize >= sims => {
                    return Err(format!("rule {} names SIM {index}", rule.origin));
                }
                Dest::Net(net) if policy.pools.iter().any(|p| p.contains(net.network())) => {
                    return Err(format!(
                        "rule {} reaches into a pool with {net}",
                        rule.origin
                    ));
                }
                Dest::Net(ipnetwork::IpNetwork::V6(net)) if reaches_embedded_pool(policy, net) => {
                    return Err(format!(
                        "rule {} reaches a pool through NAT64 or IPv4-mapped {net}",
                        rule.origin
                    ));
                }
                _ => {}
            }
        }
        if rule
            .ports
            .iter()
            .any(|&(lo, hi)| lo > hi || (lo, hi) == (0, 0))
        {
            return Err(format!("rule {} has ports {:?}", rule.origin, rule.ports));
        }
    }
    Ok(())
}

/// True when IPv6 `net` contains the NAT64 (64:ff9b::/96) or IPv4-mapped (::ffff:0:0/96) form of
/// an address of an IPv4 pool.
fn reaches_embedded_pool(policy: &ValidatedPolicy, net: ipnetwork::Ipv6Network) -> bool {
    let prefixes: [u128; 2] = [0x0064_ff9b << 96, 0xffff << 32];
    policy.pools.iter().any(|pool| {
        let ipnetwork::IpNetwork::V4(pool) = pool else {
            return false;
        };
        prefixes.iter().any(|prefix| {
            let first = std::net::Ipv6Addr::from(prefix | u128::from(u32::from(pool.network())));
            let last = std::net::Ipv6Addr::from(prefix | u128::from(u32::from(pool.broadcast())));
            net.contains(first) || net.contains(last) || {
                // `net` inside the pool's image.
                let image =
                    ipnetwork::Ipv6Network::new(first, pool.prefix() + 96).expect("valid prefix");
                image.contains(net.network())
            }
        })
    })
}

/// A policy from pieces that are right (mostly) and pieces that are wrong in every way
/// validation knows, so that cases get past the parser and a fair share passes validation,
/// which then must keep the invariants.
fn generated_policy() -> impl Strategy<Value = String> {
    // (right, wrong) choices for each place.
    const POOLS: (&[&str], &[&str]) = (
        &["\"10.65.0.0/16\"", "\"fd00:65::/64\"", "\"192.0.0.0/24\""],
        &[
            "\"10.64.0.0/24\"",
            "\"fd00:64::/96\"",
            "\"0.0.0.0/0\"",
            "\"::/0\"",
            "\"10.64.0.1/16\"",
            "\"bogus\"",
            "1",
        ],
    );
    const DESTS: (&[&str], &[&str]) = (
        &[
            "a",
            "b",
            "segment:a",
            "imsi:001010000000000",
            "imsi:001010000000001",
            "198.51.100.0/24",
            "0.0.0.0/0",
            "2000::/3",
            "2001:db8::1",
            "64:ff9b::c0a8:0/112",
            "::ffff:192.168.0.0/112",
            "192.168.1.0/24",
        ],
        &[
            "segment:zz",
            "imsi:1",
            "10.64.0.0/24",
            "10.64.0.5",
            "::/0",
            "64:ff9b::10.64.0.2",
            "64:ff9b::/96",
            "::ffff:10.64.0.2",
            "::ffff:0:0/104",
            "fd00:64:0:1::/64",
            "nowhere",
        ],
    );
    const PROTOS: (&[&str], &[&str]) = (
        &[
            "",
            "proto = \"tcp\", ",
            "proto = \"udp\", ",
            "proto = \"icmp\", ",
            "proto = \"icmpv6\", ",
            "proto = \"any\", ",
            "proto = [\"tcp\", \"udp\"], ",
            "proto = 6, ",
            "proto = [\"icmp\", \"icmpv6\"], ",
        ],
        &[
            "proto = 0, ",
            "proto = 256, ",
            "proto = [\"any\", \"tcp\"], ",
            "proto = [], ",
        ],
    );
    const PORTS: (&[&str], &[&str]) = (
        &[
            "",
            "ports = [443]",
            "ports = [\"1-2\", 80]",
            "ports = [\"0-65535\"]",
            "ports = \"53\"",
        ],
        &[
            "ports = [\"0\"]",
            "ports = [0]",
            "ports = [\"+443\"]",
            "ports = [\"443-80\"]",
            "ports = [70000]",
            "ports = []",
            "ports = [-1]",
        ],
    );
    const IMSIS: (&[&str], &[&str]) = (
        &[
            "\"001010000000001\"",
            "\"001010000000002\"",
            "\"00101000000003\"",
            "\"001010000000004\"",
        ],
        &["\"1\"", "\"abc\"", "123"],
    );
    const IPV4S: (&[&str], &[&str]) = (
        &["", "10.64.0.1", "10.64.0.2", "10.65.0.9"],
        &["10.99.0.1", "x"],
    );
    const IPV6S: (&[&str], &[&str]) = (
        &["", "fd00:64:0:1::/64", "fd00:64:0:2::/64"],
        &["fd00:64:0:1::/56"],
    );
    const SEGMENTS: (&[&str], &[&str]) =
        (&["a", "b"], &["zz", "", "1.2.3.4", "imsi:x", "bad name"]);
    const STATES: (&[&str], &[&str]) = (&["", "active", "quarantined"], &["sleeping"]);
    const ICCIDS: (&[&str], &[&str]) = (
        &["", "8901000000000000001"],
        &["1234", "8901000000000000002"],
    );
    const MSISDNS: (&[&str], &[&str]) = (&["", "+4915100000001"], &["+49-1", "4915100000001"]);
    let pick = |(right, wrong): (&'static [&'static str], &'static [&'static str])| {
        prop_oneof![
            19 => (0..right.len()).prop_map(move |i| right[i]),
            1 => (0..wrong.len()).prop_map(move |i| wrong[i]),
        ]
    };
    let rule = (
        proptest::collection::vec(pick(DESTS), 1..4),
        pick(PROTOS),
        pick(PORTS),
    )
        .prop_map(|(to, proto, ports)| {
            let to: Vec<String> = to.iter().map(|d| format!("\"{d}\"")).collect();
            let mut parts = vec![format!("to = [{}]", to.join(", "))];
            let proto = proto.trim_end_matches([',', ' ']);
            if !proto.is_empty() {
                parts.push(proto.to_owned());
            }
            // Right ports go with tcp/udp only; wrong ones anywhere.
            let port_protocol =
                proto.contains("tcp") || proto.contains("udp") || proto == "proto = 6";
            if !ports.is_empty() && (port_protocol || PORTS.1.contains(&ports)) {
                parts.push(ports.to_owned());
            }
            format!("  {{ {} }},\n", parts.join(", "))
        });
    let rules = proptest::collection::vec(rule, 0..4)
        .prop_map(|rules| format!("rules = [\n{}]\n", rules.concat()));
    let segment = (pick(SEGMENTS), rules.clone())
        .prop_map(|(name, rules)| format!("\n[[segments]]\nname = \"{name}\"\n{rules}"));
    let field = move |key: &'static str, list| {
        pick(list).prop_map(move |v| {
            if v.is_empty() {
                String::new()
            } else {
                format!("{key} = \"{v}\"\n")
            }
        })
    };
    // SIM `i` gets its own IMSI and addresses unless a wrong value is picked (or a duplicate,
    // through the wrong lists).
    let sim_rules = rules.clone();
    let sim = move |i: usize| {
        (
            pick(IMSIS),
            pick(IPV4S),
            pick(IPV6S),
            any::<u8>(),
            field("segment", SEGMENTS),
            field("state", STATES),
            field("iccid", ICCIDS),
            field("msisdn", MSISDNS),
            proptest::option::of(sim_rules.clone()),
        )
            .prop_map(
                move |(imsi, ipv4, ipv6, which, segment, state, iccid, msisdn, rules)| {
                    let imsi = if IMSIS.0.contains(&imsi) {
                        format!("\"00101000000{i:04}\"")
                    } else {
                        imsi.to_owned()
                    };
                    let ipv4 = match (IPV4S.0.contains(&ipv4), which % 3) {
                        (true, 0) => String::new(),
                        (true, _) => format!("ipv4 = \"10.64.0.{}\"\n", i + 1),
                        (false, _) => format!("ipv4 = \"{ipv4}\"\n"),
                    };
                    let ipv6 = match (IPV6S.0.contains(&ipv6), which % 3) {
                        (true, 1) => String::new(),
                        (true, _) => format!("ipv6 = \"fd00:64:0:{i:x}::/64\"\n"),
                        (false, _) => format!("ipv6 = \"{ipv6}\"\n"),
                    };
                    // Right ICCIDs and MSISDNs made unique per SIM.
                    let iccid = iccid.replace("000000001\"", &format!("00000{i:04}\""));
                    let msisdn = msisdn.replace("00001\"", &format!("1{i:04}\""));
                    format!(
                        "\n[[sims]]\nimsi = {imsi}\n{ipv4}{ipv6}{segment}{state}{iccid}{msisdn}{}",
                        rules.unwrap_or_default()
                    )
                },
            )
    };
    let sims = (0..5usize).prop_flat_map(move |n| {
        (0..n)
            .map(&sim)
            .collect::<Vec<_>>()
            .prop_map(|sims| sims.concat())
    });
    let right_pools: Vec<&str> = POOLS.0.to_vec();
    (
        proptest::sample::subsequence(right_pools, 0..=POOLS.0.len()),
        proptest::option::weighted(0.05, pick((POOLS.1, POOLS.1))),
        proptest::option::weighted(0.05, segment),
        rules.clone(),
        rules,
        sims,
    )
        .prop_map(|(mut pools, wrong_pool, extra, rules_a, rules_b, sims)| {
            // The SIMs' own pools, then some more.
            pools.splice(0..0, ["\"10.64.0.0/16\"", "\"fd00:64::/48\""]);
            pools.extend(wrong_pool);
            format!(
                "pools = [{}]\n\n[[segments]]\nname = \"a\"\n{rules_a}\n[[segments]]\nname = \
                 \"b\"\n{rules_b}{}{sims}",
                pools.join(", "),
                extra.unwrap_or_default()
            )
        })
}

/// Text that often matters to a TOML policy parser or validator.
const POLICY_TOKENS: &[&str] = &[
    "[[segments]]\n",
    "[segments]\n",
    "[[sims]]\n",
    "[sims]\n",
    "[[segments.rules]]\n",
    "pools = [\"10.64.0.0/16\"]\n",
    "inventory = \"sims.csv\"\n",
    "inventory = \"../x.csv\"\n",
    "inventory = \"/dev/zero\"\n",
    "\"0.0.0.0/0\"",
    "\"::/0\"",
    "\"64:ff9b::10.64.0.2\"",
    "\"::ffff:10.64.0.0/112\"",
    "\"fd00:64::/96\"",
    "1979-05-27",
    "1979-05-27T07:32:00Z",
    "-1",
    "0",
    "65536",
    "99999999999999999999",
    "\"+443\"",
    "\"0-65535\"",
    "\"443-80\"",
    "\"icmp\"",
    "\"icmpv6\"",
    "\"any\"",
    "\"imsi:001010000000001\"",
    "\"segment:a\"",
    "\"segment:\"",
    "\"imsi:\"",
    "{",
    "}",
    "[",
    "]",
    "=",
    ",",
    "\"",
    "'",
    "'''",
    "\"\"\"",
    "\n",
    "#",
    "\u{feff}",
    "\\u0000",
    "\"\\uD800\"",
    "inf",
    "nan",
    "true",
    "1e308",
    "{ to = [\"a\"], proto = [\"tcp\", \"udp\"], ports = [\"1-2\", 3] }",
    "\"001010000000001\"",
    "\"10.64.0.1\"",
    "\"fd00:64:0:1::/64\"",
    "a.b.c = 1\n",
];

/// Text that often matters to a CSV inventory reader.
const CSV_TOKENS: &[&str] = &[
    "\"",
    ",",
    "\n",
    "\r\n",
    "\r",
    "#",
    "\u{feff}",
    "imsi",
    "iccid",
    "msisdn",
    "ipv4",
    "ipv6",
    "segment",
    "state",
    "001010000000001",
    "10.64.0.1",
    "fd00:64:0:1::/64",
    "a",
    "b",
    "quarantined",
    "active",
    "\"\"",
    " ",
    "\t",
    ";",
    "\0",
    "\u{2028}",
    "89010000000000000011",
    "+4915100000001",
    "10.65.0.255",
];

/// One edit of a corpus file; positions are fractions of its length, so they shrink well.
#[derive(Debug, Clone)]
enum Mutation {
    /// Insert a dictionary token.
    Token(f64, usize),
    /// Insert random bytes.
    Bytes(f64, Vec<u8>),
    /// Delete a range.
    Delete(f64, usize),
    /// Copy a line of another corpus file to the start of a line.
    Splice(f64, usize, f64),
    /// Repeat a line many times (inventories with many rows, policies with many rules).
    Repeat(f64, u16),
}

fn mutation(files: usize) -> impl Strategy<Value = Mutation> {
    let at = 0.0..1.0f64;
    prop_oneof![
        4 => (at.clone(), any::<usize>()).prop_map(|(a, t)| Mutation::Token(a, t)),
        2 => (at.clone(), proptest::collection::vec(any::<u8>(), 1..8))
            .prop_map(|(a, b)| Mutation::Bytes(a, b)),
        2 => (at.clone(), 1..40usize).prop_map(|(a, n)| Mutation::Delete(a, n)),
        2 => (at.clone(), 0..files, 0.0..1.0f64).prop_map(|(a, f, l)| Mutation::Splice(a, f, l)),
        1 => (at, 2..2_000u16).prop_map(|(a, n)| Mutation::Repeat(a, n)),
    ]
}

fn apply(
    base: &[u8],
    mutations: &[Mutation],
    corpus: &[(String, Vec<u8>)],
    tokens: &[&str],
) -> Vec<u8> {
    let mut out = base.to_vec();
    let pos = |out: &Vec<u8>, at: f64| {
        // Truncation intended: a fraction of the length.
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a fraction of a small length"
        )]
        let p = (at * out.len() as f64) as usize;
        p.min(out.len())
    };
    let line_start = |out: &Vec<u8>, p: usize| {
        out[..p]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| i + 1)
    };
    for m in mutations {
        if out.len() > MAX_MUTATED {
            break;
        }
        match m {
            Mutation::Token(at, t) => {
                let p = pos(&out, *at);
                let token = tokens[t % tokens.len()].as_bytes();
                out.splice(p..p, token.iter().copied());
            }
            Mutation::Bytes(at, bytes) => {
                let p = pos(&out, *at);
                out.splice(p..p, bytes.iter().copied());
            }
            Mutation::Delete(at, n) => {
                let p = pos(&out, *at);
                let end = (p + n).min(out.len());
                out.drain(p..end);
            }
            Mutation::Splice(at, file, line) => {
                let other = &corpus[file % corpus.len()].1;
                let lines: Vec<&[u8]> = other.split(|&b| b == b'\n').collect();
                #[expect(
                    clippy::cast_possible_truncation,
                    clippy::cast_sign_loss,
                    clippy::cast_precision_loss,
                    reason = "a fraction of a small count"
                )]
                let chosen = lines[((line * lines.len() as f64) as usize).min(lines.len() - 1)];
                let p = line_start(&out, pos(&out, *at));
                let mut text = chosen.to_vec();
                text.push(b'\n');
                out.splice(p..p, text);
            }
            Mutation::Repeat(at, times) => {
                let p = line_start(&out, pos(&out, *at));
                let end = out[p..]
                    .iter()
                    .position(|&b| b == b'\n')
                    .map_or(out.len(), |i| p + i + 1);
                let mut line = out[p..end].to_vec();
                // A last line without its newline would be repeated into one line, and the next
                // repeat would multiply it: inputs grew to gigabytes before this newline.
                if line.last() != Some(&b'\n') {
                    line.push(b'\n');
                }
                if line.len() > 1 {
                    let copies: Vec<u8> = line
                        .iter()
                        .copied()
                        .cycle()
                        .take(line.len() * usize::from(*times))
                        .collect();
                    out.splice(end..end, copies);
                }
            }
        }
    }
    out
}

fn run_property<S: Strategy>(
    name: &str,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let started = std::time::Instant::now();
    let config = config();
    let cases = config.cases;
    let mut runner = TestRunner::new(config);
    let accepted_before = ACCEPTED.load(Ordering::Relaxed);
    if let Err(failure) = runner.run(&strategy, test) {
        panic!("{name}: {failure}\nadd the input above to tests/corpus/ as a new file");
    }
    // Approximate when properties run in parallel: the counter is shared.
    eprintln!(
        "{name}: {cases} cases in {:?}, about {} valid",
        started.elapsed(),
        ACCEPTED.load(Ordering::Relaxed) - accepted_before
    );
}

#[test]
fn every_corpus_file_is_checked_without_panic() {
    let dir = Scratch::new("fuzz-corpus");
    let policies = corpus("policy", "toml");
    let inventories = corpus("inventory", "csv");
    let host = &policies
        .iter()
        .find(|(n, _)| n == "inventory-host.toml")
        .expect("host policy")
        .1;
    for (name, text) in &policies {
        check(&dir.0, text, None).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    for (name, csv) in &inventories {
        check(&dir.0, host, Some(csv)).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn policy_reader_survives_arbitrary_bytes() {
    let dir = Scratch::new("fuzz-policy-bytes");
    run_property(
        "arbitrary policy bytes",
        proptest::collection::vec(any::<u8>(), 0..2_048),
        |bytes| check(&dir.0, &bytes, None),
    );
}

#[test]
fn policy_reader_survives_mutated_corpus_policies() {
    let dir = Scratch::new("fuzz-policy-mutated");
    let policies = corpus("policy", "toml");
    // The inventory the corpus policies may name, so mutations also reach the CSV path.
    std::fs::write(dir.0.join("sims.csv"), &corpus("inventory", "csv")[0].1).expect("inventory");
    let files = policies.len();
    run_property(
        "mutated corpus policies",
        (0..files, proptest::collection::vec(mutation(files), 1..8)),
        |(file, mutations)| {
            let text = apply(&policies[file].1, &mutations, &policies, POLICY_TOKENS);
            check(&dir.0, &text, None)
        },
    );
}

#[test]
fn validation_keeps_its_invariants_on_generated_policies() {
    let dir = Scratch::new("fuzz-policy-generated");
    run_property("generated policies", generated_policy(), |text| {
        check(&dir.0, text.as_bytes(), None)
    });
}

#[test]
fn inventory_reader_survives_arbitrary_bytes() {
    let dir = Scratch::new("fuzz-inventory-bytes");
    let host = inventory_host();
    run_property(
        "arbitrary inventory bytes",
        proptest::collection::vec(any::<u8>(), 0..2_048),
        |bytes| check(&dir.0, &host, Some(&bytes)),
    );
}

#[test]
fn inventory_reader_survives_mutated_corpus_inventories() {
    let dir = Scratch::new("fuzz-inventory-mutated");
    let host = inventory_host();
    let inventories = corpus("inventory", "csv");
    let files = inventories.len();
    run_property(
        "mutated corpus inventories",
        (0..files, proptest::collection::vec(mutation(files), 1..8)),
        |(file, mutations)| {
            let csv = apply(&inventories[file].1, &mutations, &inventories, CSV_TOKENS);
            check(&dir.0, &host, Some(&csv))
        },
    );
}

/// The corpus policy that names an inventory, for the inventory fuzzers.
fn inventory_host() -> Vec<u8> {
    corpus("policy", "toml")
        .into_iter()
        .find(|(n, _)| n == "inventory-host.toml")
        .expect("tests/corpus/policy/inventory-host.toml")
        .1
}
