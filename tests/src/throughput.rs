//! End-to-end packet rates through veth and namespaces: generator → gateway → sink, all on
//! CPU 0 (the same-CPU closed loop is the stable mode on 2 vCPUs), 64-byte UDP frames whose
//! sources cycle through every SIM.
//!
//! The generator is `xdp_gen` run by BPF_PROG_TEST_RUN in live-frames mode from a thread inside
//! the generator namespace (`XDP_TX` out of its veth into the gateway). The gateway runs one
//! configuration at a time on its ingress: the enforcer, nftables `netdev` ingress with a
//! verdict map, nftables `inet` forward with conntrack, a bare one-lookup XDP program, or a
//! drop-everything XDP program (the ceiling). Drops are counted where they happen (per-CPU map
//! or nft named counter), passes at the sink's XDP counter, over fixed windows.

use std::{
    fmt::Write as _,
    os::fd::AsRawFd as _,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use aya::{
    EbpfLoader,
    maps::{MapData, PerCpuArray},
    programs::{TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode},
};
use enforcer::{
    compile,
    counters::Totals,
    loader::{Capacity, Enforcer},
    policy,
};
use enforcer_common::maps::{IFACE_XDP_FORWARD, names};

use crate::{
    bench::{SEGMENTS, generate, sim_v4},
    netns::{NetNs, unique_prefix, veth},
};

/// Drop or forward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Frames to a port no rule allows.
    Drop,
    /// Frames to an allowed port, forwarded to the sink.
    Pass,
}

/// What runs on the gateway's ingress.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Filter {
    /// `xdp_drop_all`: the generator's and the veth path's ceiling.
    DropAll,
    /// `xdp_bare_drop` / `xdp_bare_pass`: one SIM_V4 lookup.
    Bare,
    /// `xdp_bare_sessions`: the frame's `SESSIONS` lookup, then the SIM_V4 one (drop mode
    /// only): the floor of looking a frame's session up before its SIM.
    BareSessions,
    /// The enforcer with the generated policy.
    Enforcer,
    /// The enforcer with its deny events off (`EVENTS_OFF`): what the deny-event budgets cost
    /// a flood (drop mode only).
    EnforcerNoEvents,
    /// The enforcer forwarding what passes in XDP (`--forward xdp`: `bpf_fib_lookup` and a
    /// redirect to the sink's veth), pass mode only.
    EnforcerXdpForward,
    /// nftables netdev ingress, verdict map SIM → segment chain.
    NftNetdev,
    /// nftables inet forward with conntrack, the same chains.
    NftInet,
}

impl Filter {
    /// Name in the report.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Filter::DropAll => "drop-all XDP (ceiling)",
            Filter::Bare => "bare one-lookup XDP",
            Filter::BareSessions => "bare session + SIM lookups XDP",
            Filter::Enforcer => "enforcer",
            Filter::EnforcerNoEvents => "enforcer, deny events off",
            Filter::EnforcerXdpForward => "enforcer, --forward xdp",
            Filter::NftNetdev => "nftables netdev",
            Filter::NftInet => "nftables inet + conntrack",
        }
    }
}

/// Window settings.
#[derive(Clone, Copy, Debug)]
pub struct Windows {
    /// Warm-up before counting.
    pub warmup: Duration,
    /// Counting window.
    pub window: Duration,
    /// Repetitions (median taken).
    pub reps: usize,
}

/// Generator, gateway and sink namespaces.
pub struct Rig {
    gw_in: String,
    sink_if: String,
    /// The gateway's interface toward the sink (`--forward xdp` redirects to it).
    gw_out: String,
    gen_ifindex: u32,
    gw_mac: [u8; 6],
    // Dropped last.
    generator: NetNs,
    gw: NetNs,
    sink: NetNs,
}

/// Run `f` with this thread in namespace `ns`, then return to the original namespace.
///
/// # Panics
/// When the namespace cannot be entered or left.
pub fn in_netns<T>(ns: &str, f: impl FnOnce() -> T) -> T {
    let original = std::fs::File::open("/proc/thread-self/ns/net").expect("open own netns");
    let target = std::fs::File::open(format!("/run/netns/{ns}")).expect("open target netns");
    // SAFETY: setns on a valid namespace descriptor; it affects only this thread.
    let entered = unsafe { libc::setns(target.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(entered, 0, "setns into {ns}");
    let result = f();
    // SAFETY: as above, back to the namespace the thread was in.
    let left = unsafe { libc::setns(original.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(left, 0, "setns back");
    result
}

impl Rig {
    /// Build the three namespaces.
    ///
    /// # Panics
    /// When `ip` fails.
    #[must_use]
    pub fn build() -> Self {
        let prefix = unique_prefix();
        let generator = NetNs::new(&format!("{prefix}-gen"));
        let gw = NetNs::new(&format!("{prefix}-gw"));
        let sink = NetNs::new(&format!("{prefix}-sink"));
        let (gen_if, gw_in, gw_out, sink_if) = (
            format!("{prefix}g"),
            format!("{prefix}G"),
            format!("{prefix}S"),
            format!("{prefix}s"),
        );
        veth(&gen_if, &generator, &gw_in, &gw);
        veth(&gw_out, &gw, &sink_if, &sink);
        gw.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        gw.exec_ok(&["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"]);
        gw.exec_ok(&[
            "sysctl",
            "-qw",
            &format!("net.ipv4.conf.{gw_in}.rp_filter=0"),
        ]);
        gw.exec_ok(&["ip", "addr", "add", "10.255.0.1/24", "dev", &gw_in]);
        gw.exec_ok(&["ip", "addr", "add", "10.255.1.1/24", "dev", &gw_out]);
        sink.exec_ok(&["ip", "addr", "add", "10.255.1.2/24", "dev", &sink_if]);
        gw.exec_ok(&["ip", "route", "add", "192.0.2.0/24", "via", "10.255.1.2"]);
        gw.exec_ok(&["ip", "route", "add", "10.0.0.0/9", "via", "10.255.0.2"]);
        let sink_mac = mac(&sink, &sink_if);
        gw.exec_ok(&[
            "ip",
            "neigh",
            "add",
            "10.255.1.2",
            "lladdr",
            &sink_mac,
            "nud",
            "permanent",
            "dev",
            &gw_out,
        ]);
        gw.exec_ok(&[
            "ip",
            "neigh",
            "add",
            "10.255.0.2",
            "lladdr",
            "02:00:00:00:00:01",
            "nud",
            "permanent",
            "dev",
            &gw_in,
        ]);
        let gw_mac = parse_mac(&mac(&gw, &gw_in));
        let gen_ifindex = in_netns(&generator.name, || if_index(&gen_if));
        Self {
            gw_in,
            gw_out,
            sink_if,
            gen_ifindex,
            gw_mac,
            generator,
            gw,
            sink,
        }
    }
}

fn mac(ns: &NetNs, iface: &str) -> String {
    let out = ns.exec(&["cat", &format!("/sys/class/net/{iface}/address")]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

fn parse_mac(text: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (slot, part) in mac.iter_mut().zip(text.split(':')) {
        *slot = u8::from_str_radix(part, 16).unwrap_or(0);
    }
    mac
}

fn if_index(name: &str) -> u32 {
    let name = std::ffi::CString::new(name).expect("interface name");
    // SAFETY: a valid NUL-terminated string.
    unsafe { libc::if_nametoindex(name.as_ptr()) }
}

/// Sum of a `BENCH_COUNT` slot 0 over CPUs.
fn bench_count(map: &aya::maps::Map) -> u64 {
    let array: PerCpuArray<&MapData, u64> = PerCpuArray::try_from(map).expect("BENCH_COUNT");
    array
        .get(&0, 0)
        .map(|values| values.iter().sum())
        .unwrap_or(0)
}

/// Pin the calling thread to CPU 0.
fn pin_cpu0() {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(0, &mut set);
        libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &raw const set);
    }
}

/// Run the generator from a thread in the generator namespace until `stop` is set.
fn start_generator(
    rig: &Rig,
    sims: u32,
    mode: Mode,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let ns = rig.generator.name.clone();
    let ifindex = rig.gen_ifindex;
    let mac = rig.gw_mac;
    std::thread::spawn(move || {
        pin_cpu0();
        in_netns(&ns, || {
            let dport: u16 = if mode == Mode::Pass { 53 } else { 9 };
            let dst = u32::from_ne_bytes([192, 0, 2, 10]);
            let mac_hi = u32::from_be_bytes([mac[0], mac[1], mac[2], mac[3]]);
            let mac_lo = u16::from_be_bytes([mac[4], mac[5]]);
            let mut ebpf = EbpfLoader::new()
                .override_global("GEN_SIMS", &sims, true)
                .override_global("GEN_DST", &dst, true)
                .override_global("GEN_DPORT", &dport, true)
                .override_global("GEN_DMAC_HI", &mac_hi, true)
                .override_global("GEN_DMAC_LO", &mac_lo, true)
                .load(enforcer::loader::object())
                .expect("load the generator object");
            let program: &mut Xdp = ebpf
                .program_mut("xdp_gen")
                .expect("xdp_gen")
                .try_into()
                .expect("xdp");
            program.load().expect("load xdp_gen");
            let frame = [0u8; 60];
            let mut ctx = [0u8; 24];
            ctx[4..8].copy_from_slice(&60u32.to_ne_bytes());
            ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
            let mut repeat: u32 = 1_000_000;
            while !stop.load(Ordering::Relaxed) {
                let mut opts = TestRunOptions::new();
                opts.data_in = Some(&frame);
                opts.ctx_in = Some(&ctx);
                opts.repeat = repeat;
                opts.attrs = TestRunAttrs::new().xdp_live_frames(64);
                let started = Instant::now();
                program.test_run(opts).expect("live-frames test run");
                // Aim for calls of about a quarter second, so stopping is prompt.
                let took = started.elapsed().as_secs_f64().max(1e-3);
                repeat = ((f64::from(repeat) * 0.25 / took) as u32).clamp(10_000, 50_000_000);
            }
        });
    })
}

/// Measure one (filter, mode) at `sims`: the median rate in packets per second.
///
/// # Panics
/// On setup failures.
pub fn measure(
    rig: &Rig,
    sims: u32,
    filter: Filter,
    mode: Mode,
    windows: Windows,
    policy_dir: &std::path::Path,
) -> Option<Measured> {
    if mode == Mode::Pass && matches!(filter, Filter::DropAll | Filter::EnforcerNoEvents) {
        return None;
    }
    if mode == Mode::Pass && filter == Filter::BareSessions {
        return None;
    }
    if mode == Mode::Drop && filter == Filter::EnforcerXdpForward {
        return None;
    }
    // The sink counts what the gateway forwards.
    let sink = in_netns(&rig.sink.name, || {
        let mut ebpf = EbpfLoader::new()
            .load(enforcer::loader::object())
            .expect("load sink object");
        let program: &mut Xdp = ebpf
            .program_mut("xdp_sink")
            .expect("xdp_sink")
            .try_into()
            .expect("xdp");
        program.load().expect("load xdp_sink");
        program
            .attach(&rig.sink_if, XdpMode::Driver)
            .expect("attach xdp_sink");
        ebpf
    });
    let setup_started = Instant::now();
    let setup = Gateway::set_up(rig, sims, filter, mode, policy_dir);
    let setup_s = setup_started.elapsed().as_secs_f64();
    let mut rates = Vec::new();
    for _ in 0..windows.reps {
        let stop = Arc::new(AtomicBool::new(false));
        let generator = start_generator(rig, sims, mode, Arc::clone(&stop));
        std::thread::sleep(windows.warmup);
        let count = |sink: &aya::Ebpf| match mode {
            Mode::Pass => bench_count(sink.map("BENCH_COUNT").expect("sink counter")),
            Mode::Drop => setup.drops(),
        };
        let before = count(&sink);
        let started = Instant::now();
        std::thread::sleep(windows.window);
        let after = count(&sink);
        let elapsed = started.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        generator.join().expect("generator thread");
        rates.push((after - before) as f64 / elapsed);
    }
    setup.tear_down();
    drop(sink); // Closing the link detaches the sink program.
    Some(Measured {
        pps: crate::bench::Stats::of(&rates),
        setup_s,
    })
}

/// One measurement.
#[derive(Clone, Copy, Debug)]
pub struct Measured {
    /// Packets per second: median, min, max over the repetitions.
    pub pps: crate::bench::Stats,
    /// Seconds to install the configuration (policy load, nft -f, attach).
    pub setup_s: f64,
}

/// What is installed on the gateway for one measurement.
enum Gateway {
    /// The enforcer instance, and the benchmark program attached instead of it, if any.
    Xdp(Box<Enforcer>, Option<&'static str>),
    /// An nft table of this family in this namespace, behind an `xdp_pass` program.
    Nft {
        family: &'static str,
        ns: String,
        passer: Box<Enforcer>,
    },
}

impl Gateway {
    fn set_up(
        rig: &Rig,
        sims: u32,
        filter: Filter,
        mode: Mode,
        policy_dir: &std::path::Path,
    ) -> Self {
        let generated = generate(policy_dir, sims, 1);
        let policy = policy::load(&generated.policy).expect("bench policy");
        let compiled = compile::compile_fresh(&policy).expect("compiles");
        let capacity =
            Capacity::for_image(&compiled.image, compiled.rules.len(), Capacity::default());
        match filter {
            Filter::Enforcer
            | Filter::EnforcerNoEvents
            | Filter::EnforcerXdpForward
            | Filter::Bare
            | Filter::BareSessions
            | Filter::DropAll => {
                in_netns(&rig.gw.name, || {
                    let mut enforcer = Enforcer::load(capacity, None).expect("load enforcer");
                    enforcer.apply(&compiled.image).expect("fill maps");
                    if filter == Filter::EnforcerNoEvents {
                        enforcer.set_deny_events(false).expect("deny events off");
                    }
                    if filter == Filter::EnforcerXdpForward {
                        // What the daemon does for `--forward xdp` on both interfaces.
                        for iface in [&rig.gw_in, &rig.gw_out] {
                            enforcer
                                .set_iface(if_index(iface), IFACE_XDP_FORWARD)
                                .expect("forward in XDP");
                        }
                    }
                    let program: Option<&'static str> = match (filter, mode) {
                        (
                            Filter::Enforcer
                            | Filter::EnforcerNoEvents
                            | Filter::EnforcerXdpForward,
                            _,
                        ) => None,
                        (Filter::Bare, Mode::Drop) => Some("xdp_bare"),
                        (Filter::Bare, Mode::Pass) => Some("xdp_bare_pass"),
                        (Filter::BareSessions, Mode::Drop) => Some("xdp_bare_sessions"),
                        _ => Some("xdp_drop_all"),
                    };
                    match program {
                        None => enforcer
                            .attach(&rig.gw_in, XdpMode::Driver)
                            .expect("attach enforcer"),
                        Some(name) => enforcer
                            .attach_program(name, &rig.gw_in, XdpMode::Driver)
                            .expect("attach bench program"),
                    }
                    Gateway::Xdp(Box::new(enforcer), program)
                })
            }
            Filter::NftNetdev | Filter::NftInet => {
                // XDP_PASS on the ingress veth, as for the XDP configurations (veth needs an XDP
                // program, or GRO, to take frames from the peer's XDP_TX).
                let script = nft_script(&rig.gw_in, sims, filter);
                let path = policy_dir.join("bench.nft");
                std::fs::write(&path, script).expect("write nft script");
                let out = rig.gw.exec(&["nft", "-f", &path.to_string_lossy()]);
                assert!(
                    out.status.success(),
                    "nft -f failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let passer = in_netns(&rig.gw.name, || {
                    let small = Capacity {
                        sims: 1024,
                        sim_v4: 1024,
                        sim_v6: 1024,
                        nets_v4: 1024,
                        nets_v6: 1024,
                        rule_entries: 1024,
                        port_rules: 1024,
                        rules: 1024,
                        sessions: 4096,
                    };
                    let mut enforcer = Enforcer::load(small, None).expect("load");
                    enforcer
                        .attach_program("xdp_pass", &rig.gw_in, XdpMode::Driver)
                        .expect("attach xdp_pass");
                    enforcer
                });
                let family = if filter == Filter::NftNetdev {
                    "netdev"
                } else {
                    "inet"
                };
                Gateway::Nft {
                    family,
                    ns: rig.gw.name.clone(),
                    passer: Box::new(passer),
                }
            }
        }
    }

    fn drops(&self) -> u64 {
        match self {
            Gateway::Xdp(enforcer, Some(_)) => {
                bench_count(enforcer.map("BENCH_COUNT").expect("BENCH_COUNT"))
            }
            Gateway::Xdp(enforcer, None) => {
                let totals = Totals::read(
                    enforcer.sim_table(),
                    enforcer.map(names::VERDICT_STATS).expect("VERDICT_STATS"),
                    enforcer.map(names::RULE_STATS).expect("RULE_STATS"),
                    0,
                    0,
                )
                .expect("counters");
                (0..SEGMENTS)
                    .map(|seg| {
                        totals
                            .drops(seg)
                            .iter()
                            .map(|(_, c)| c.packets)
                            .sum::<u64>()
                    })
                    .sum()
            }
            Gateway::Nft { family, ns, .. } => nft_counter(ns, family),
        }
    }

    /// Detach (closing the links) and delete the nft table.
    fn tear_down(self) {
        if let Gateway::Nft { family, ns, passer } = self {
            drop(passer);
            let out = crate::netns::run(
                "ip",
                &[
                    "netns", "exec", &ns, "nft", "delete", "table", family, "enfbench",
                ],
            );
            assert!(
                out.status.success(),
                "deleting the nft table: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Packets of the `drops` named counter, read without listing the (large) map.
fn nft_counter(ns: &str, family: &str) -> u64 {
    let out = crate::netns::run(
        "ip",
        &[
            "netns", "exec", ns, "nft", "-j", "list", "counter", family, "enfbench", "drops",
        ],
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    json["nftables"]
        .as_array()
        .and_then(|items| {
            items
                .iter()
                .find_map(|item| item["counter"]["packets"].as_u64())
        })
        .unwrap_or(0)
}

/// An nft script encoding the bench policy: a verdict map from each SIM to its segment chain,
/// the allowed flow accepted there, everything else from the pool dropped (spoofed included).
fn nft_script(iface: &str, sims: u32, filter: Filter) -> String {
    let mut s = String::new();
    let (family, hook) = match filter {
        Filter::NftNetdev => (
            "netdev",
            format!("type filter hook ingress device \"{iface}\" priority 0; policy accept;"),
        ),
        _ => (
            "inet",
            "type filter hook forward priority 0; policy accept;".to_owned(),
        ),
    };
    let _ = writeln!(s, "table {family} enfbench {{");
    let _ = writeln!(s, "  counter drops {{ }}");
    let _ = writeln!(
        s,
        "  map sim_seg {{ type ipv4_addr : verdict; size {}; elements = {{",
        sims.max(1) + sims / 8 + 16
    );
    for i in 0..sims {
        let _ = writeln!(s, "    {} : jump seg{},", sim_v4(i), i % SEGMENTS);
    }
    let _ = writeln!(s, "  }} }}");
    for seg in 0..SEGMENTS {
        let _ = writeln!(
            s,
            "  chain seg{seg} {{ ip daddr 192.0.2.10 udp dport {{ 53 }} accept; ip daddr 192.0.2.10 tcp dport {{ 443 }} accept; counter name drops drop; }}"
        );
    }
    let _ = writeln!(
        s,
        "  chain pool {{ ip saddr vmap @sim_seg; counter name drops drop; }}"
    );
    let ct = if filter == Filter::NftInet {
        "ct state established,related accept; "
    } else {
        ""
    };
    let _ = writeln!(
        s,
        "  chain main {{ {hook} {ct}ip saddr 10.0.0.0/8 jump pool; }}"
    );
    let _ = writeln!(s, "}}");
    s
}
