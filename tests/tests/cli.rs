//! The CLI's error paths and `policy check`, through the real binary: clear messages, non-zero
//! exit, and nothing loaded or pinned when the input is bad.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use integration_tests::{Scratch, enforcer_bin};

fn enforcer(args: &[&str]) -> Output {
    Command::new(enforcer_bin())
        .args(args)
        .output()
        .expect("run enforcer")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Assert that the command failed and said `needle`, printing all it said otherwise.
fn fails_saying(out: &Output, needle: &str) {
    assert!(!out.status.success(), "succeeded: {}", text(out));
    assert!(text(out).contains(needle), "{}", text(out));
}

fn example() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policy.toml")
        .display()
        .to_string()
}

fn temp_policy(name: &str, body: &str) -> PathBuf {
    let path =
        std::env::temp_dir().join(format!("enforcer-cli-{}-{name}.toml", std::process::id()));
    std::fs::write(&path, body).expect("write temp policy");
    path
}

#[test]
fn policy_check_summarises_the_example() {
    let out = enforcer(&["policy", "check", &example()]);
    assert!(out.status.success(), "{}", text(&out));
    let text = text(&out);
    for needle in [
        "OK",
        "pools:       4 (3 IPv4, 1 IPv6)",
        "SIMs:        6 (5 active, 1 quarantined)",
        "rules:       9 (7 segment, 1 SIM, 1 inbound)",
        "PORT_RULES 12, RULES_V2 3",
        "kernel memory:",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
}

/// `policy check` and `run` size the maps with the same function: given capacities too small
/// for the policy, both fail and name the flag to raise and the value it needs.
#[test]
fn check_and_run_refuse_a_policy_too_large_for_the_given_capacities() {
    let limits = ["--max-rule-entries", "10", "--max-nets", "8"];
    let check = enforcer(&[&["policy", "check", &example()][..], &limits].concat());
    assert_eq!(check.status.code(), Some(1), "{}", text(&check));
    let check_text = text(&check);
    for needle in [
        "valid, but too large for the maps",
        "it needs 12 single-port rule entries but PORT_RULES holds 10; raise --max-rule-entries \
         to at least 12",
        "it needs 9 IPv4 networks but NET_V4 holds 8; raise --max-nets to at least 9",
    ] {
        assert!(
            check_text.contains(needle),
            "`{needle}` missing from:\n{check_text}"
        );
    }
    assert!(
        !check_text.contains("NET_V6 holds"),
        "NET_V6 fits:\n{check_text}"
    );

    let pin_dir = format!("/sys/fs/bpf/enforcer-cli-cap-{}", std::process::id());
    let args = [
        "run",
        "--policy",
        &example(),
        "--iface",
        "lo",
        "--pin-dir",
        &pin_dir,
    ];
    let run = enforcer(&[&args[..], &limits].concat());
    assert!(!run.status.success());
    assert!(
        text(&run).contains(
            "it needs 12 single-port rule entries but PORT_RULES holds 10; raise \
             --max-rule-entries to at least 12"
        ),
        "{}",
        text(&run)
    );
    assert!(!Path::new(&pin_dir).exists(), "nothing loaded or pinned");

    let fits = enforcer(&["policy", "check", &example(), "--max-rule-entries", "12"]);
    assert!(fits.status.success(), "{}", text(&fits));
}

#[test]
fn policy_check_lists_every_error_and_fails() {
    let path = temp_policy(
        "bad",
        "pools = [\"10.64.0.0/16\"]\n[[segments]]\nname = \"a\"\n[[sims]]\nimsi = \"1\"\nipv4 = \"10.1.1.1\"\nsegment = \"b\"\n",
    );
    let out = enforcer(&["policy", "check", path.to_str().expect("utf-8 path")]);
    std::fs::remove_file(&path).expect("remove temp policy");
    assert!(!out.status.success());
    let text = text(&out);
    assert!(text.contains("3 errors"), "{text}");
    assert!(
        text.contains(":5:8: IMSI `1`")
            && text.contains(":6:8: 10.1.1.1")
            && text.contains(":7:11: unknown segment"),
        "{text}"
    );
}

#[test]
fn run_with_an_invalid_policy_loads_and_pins_nothing() {
    let path = temp_policy("invalid", "pools = [\"10.64.0.0/33\"]\n");
    let pin_dir = format!("/sys/fs/bpf/enforcer-cli-{}", std::process::id());
    let out = enforcer(&[
        "run",
        "--policy",
        path.to_str().expect("utf-8 path"),
        "--iface",
        "lo",
        "--pin-dir",
        &pin_dir,
    ]);
    std::fs::remove_file(&path).expect("remove temp policy");
    assert!(!out.status.success());
    assert!(text(&out).contains("nothing was loaded"), "{}", text(&out));
    assert!(
        !Path::new(&pin_dir).exists(),
        "a rejected policy must not create pins"
    );
}

/// A metrics address already in use stops the start before anything is loaded, naming the
/// flag; the pins, socket and store it claimed are removed.
#[test]
fn run_refuses_a_metrics_address_in_use() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root for bpffs");
        return;
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let address = taken.local_addr().expect("address").to_string();
    let files = RunFiles::new("metrics-taken");
    let out = enforcer(&[
        "run",
        "--policy",
        &example(),
        "--iface",
        "lo",
        "--pin-dir",
        &files.pin_dir,
        "--socket",
        &files.socket,
        "--store",
        &files.store,
        "--metrics-address",
        &address,
    ]);
    fails_saying(
        &out,
        &format!("cannot serve metrics on --metrics-address {address}"),
    );
    assert!(!Path::new(&files.pin_dir).exists(), "nothing pinned");
    assert!(!Path::new(&files.socket).exists(), "no socket left");
}

#[test]
fn run_on_a_missing_interface_says_so() {
    let pin_dir = format!("/sys/fs/bpf/enforcer-cli-if-{}", std::process::id());
    let out = enforcer(&[
        "run",
        "--policy",
        &example(),
        "--iface",
        "nosuchif0",
        "--pin-dir",
        &pin_dir,
    ]);
    fails_saying(&out, "no network interface named `nosuchif0`");
    assert!(
        !Path::new(&pin_dir).exists(),
        "nothing pinned before the interfaces are checked"
    );
}

fn run_under_setpriv(setpriv: &[&str]) -> Output {
    let bin = enforcer_bin().display().to_string();
    Command::new("setpriv")
        .args(setpriv)
        // A pin directory that cannot be created: should the check pass, `run` stops there
        // instead of attaching to the host's loopback.
        .args([&bin, "run", "--policy", &example(), "--iface", "lo"])
        .args(["--pin-dir", "/proc/enforcer-never"])
        .output()
        .expect("run setpriv (util-linux)")
}

#[test]
fn run_as_an_unprivileged_user_names_the_capabilities() {
    let out = run_under_setpriv(&["--reuid=65534", "--regid=65534", "--clear-groups"]);
    fails_saying(&out, "needs CAP_BPF and CAP_NET_ADMIN; run it as root");
}

/// Privilege is judged by capabilities, not by uid: root without CAP_BPF (and CAP_SYS_ADMIN)
/// is refused, and a non-root user holding CAP_BPF and CAP_NET_ADMIN gets past the check.
#[test]
fn run_checks_capabilities_not_the_uid() {
    let out = run_under_setpriv(&[
        "--bounding-set=-bpf,-sys_admin",
        "--inh-caps=-bpf,-sys_admin",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("needs CAP_BPF;"),
        "root without CAP_BPF: {}",
        text(&out)
    );
    let out = run_under_setpriv(&[
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "--inh-caps=+bpf,+net_admin",
        "--ambient-caps=+bpf,+net_admin",
    ]);
    assert!(
        !text(&out).contains("needs CAP_"),
        "a user with CAP_BPF and CAP_NET_ADMIN passes the check: {}",
        text(&out)
    );
}

#[test]
fn interface_roles_are_checked() {
    for (iface, needle) in [
        ("bogus:lo", "unknown interface role `bogus`"),
        ("core:", "`core:` names no interface"),
        ("core:a:b", "names no interface"),
    ] {
        let out = enforcer(&["run", "--policy", &example(), "--iface", iface]);
        assert!(!out.status.success(), "{iface}");
        assert!(text(&out).contains(needle), "{iface}: {}", text(&out));
    }
}

#[test]
fn drop_non_pool_must_name_an_attached_interface() {
    let out = enforcer(&[
        "run",
        "--policy",
        &example(),
        "--iface",
        "lo",
        "--drop-non-pool",
        "eth9",
    ]);
    assert!(!out.status.success());
    assert!(
        text(&out)
            .contains("--drop-non-pool eth9 names an interface that is not given with --iface"),
        "{}",
        text(&out)
    );
}

#[test]
fn stats_without_a_running_enforcer_explains() {
    for command in [
        &["stats"][..],
        &["status"],
        &["sim", "show", "001010000000001"],
    ] {
        let mut args = command.to_vec();
        args.extend(["--socket", "/nonexistent/enforcer.sock"]);
        fails_saying(&enforcer(&args), "is `enforcer run` running");
    }
}

/// A policy of one SIM, 001010000000001 at 10.64.0.1, in segment `s` (tcp/443 allowed).
const ONE_SIM: &str = r#"
pools = ["10.64.0.0/16"]
[[segments]]
name = "s"
rules = [ { to = ["198.51.100.10"], proto = "tcp", ports = [443] } ]
[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
segment = "s"
"#;

/// The IMSI of generated fleet SIM `i`.
fn fleet_imsi(i: u32) -> String {
    format!("{:015}", 1_010_000_000_000u64 + u64::from(i))
}

/// A fleet policy in `scratch`: `sims` SIMs in an inventory, SIM `i` at 10.64.x.y in segment
/// `segments[i % len]`, each segment allowing tcp/443. Returns the policy's path.
fn fleet(scratch: &Scratch, sims: u32, segments: &[&str]) -> String {
    let mut csv = String::from("imsi,ipv4,segment\n");
    for i in 0..sims {
        csv.push_str(&format!(
            "{},10.64.{}.{},{}\n",
            fleet_imsi(i),
            (i + 1) >> 8,
            (i + 1) & 0xff,
            segments[i as usize % segments.len()]
        ));
    }
    scratch.write("sims.csv", &csv);
    let mut policy = String::from("pools = [\"10.64.0.0/16\"]\ninventory = \"sims.csv\"\n");
    for segment in segments {
        policy.push_str(&format!(
            "[[segments]]\nname = \"{segment}\"\n\
             rules = [ {{ to = [\"198.51.100.10\"], proto = \"tcp\", ports = [443] }} ]\n"
        ));
    }
    scratch.write("policy.toml", &policy)
}

const HEAD: &str = "pools = [\"10.64.0.0/16\"]\n[[segments]]\nname = \"a\"\n";

#[test]
fn policy_check_refuses_inventories_outside_its_directory_and_never_echoes_them() {
    let dir = Scratch::new("cli-escape");
    for inventory in ["/etc/passwd", "../../../../../../etc/passwd"] {
        let policy = dir.write("p.toml", &format!("inventory = \"{inventory}\"\n{HEAD}"));
        let out = enforcer(&["policy", "check", &policy]);
        let text = text(&out);
        assert!(!out.status.success(), "{text}");
        assert!(
            text.contains("outside the policy file's directory"),
            "{text}"
        );
        assert!(!text.contains("root:"), "{text}");
    }
    // Inside an allowed directory but not an inventory: refused, not quoted.
    let policy = dir.write("p.toml", &format!("inventory = \"/etc/passwd\"\n{HEAD}"));
    let out = enforcer(&["policy", "check", &policy, "--inventory-dir", "/etc"]);
    let text = text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("not an inventory"), "{text}");
    assert!(!text.contains("root:"), "{text}");
}

#[test]
fn policy_check_reads_an_inventory_from_an_allowed_directory() {
    let dir = Scratch::new("cli-invdir");
    let inventory = dir.write(
        "inv/sims.csv",
        "imsi,ipv4,segment\n001010000000001,10.64.0.1,a\n",
    );
    let policy = dir.write(
        "pol/p.toml",
        &format!("inventory = \"{inventory}\"\n{HEAD}"),
    );
    let out = enforcer(&["policy", "check", &policy]);
    assert!(!out.status.success(), "{}", text(&out));
    let inv_dir = dir.0.join("inv").display().to_string();
    let out = enforcer(&["policy", "check", &policy, "--inventory-dir", &inv_dir]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("SIMs:        1"), "{}", text(&out));
}

#[test]
fn policy_check_refuses_devices_fifos_and_large_files_quickly() {
    let dir = Scratch::new("cli-special");
    let fifo = dir.0.join("fifo.toml");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo")
            .success()
    );
    let fifo = fifo.display().to_string();
    for (file, needle) in [("/dev/zero", "is a device"), (fifo.as_str(), "is a FIFO")] {
        let started = std::time::Instant::now();
        let out = enforcer(&["policy", "check", file]);
        assert!(!out.status.success());
        assert_eq!(
            out.status.code(),
            Some(1),
            "an error, not an abort: {}",
            text(&out)
        );
        assert!(text(&out).contains(needle), "{}", text(&out));
        assert!(
            started.elapsed().as_secs() < 10,
            "{file}: {:?}",
            started.elapsed()
        );
    }
    let out = enforcer(&["policy", "check", &example(), "--max-file-size", "100"]);
    fails_saying(&out, "larger than 100 bytes");
}

#[test]
fn policy_check_caps_each_kind_of_error_with_a_count() {
    let dir = Scratch::new("cli-cap");
    let mut csv = String::from("imsi,ipv4,segment\n");
    for i in 0..60_000u32 {
        csv.push_str(&format!(
            "{:015},10.64.{}.{},metres\n",
            i + 1,
            i / 250,
            i % 250 + 1
        ));
    }
    dir.write("sims.csv", &csv);
    let policy = dir.write("p.toml", &format!("inventory = \"sims.csv\"\n{HEAD}"));
    let out = enforcer(&["policy", "check", &policy]);
    let text = text(&out);
    assert!(!out.status.success());
    assert!(text.lines().count() < 20, "{text}");
    assert!(
        text.contains("(60,000 errors; at most 10 of each kind shown)"),
        "{text}"
    );
    assert!(
        text.contains("sims.csv:12:1: … and 59,990 more rows with unknown segment `metres`"),
        "{text}"
    );
}

#[test]
fn logs_have_no_colour_codes_when_stderr_is_not_a_terminal() {
    let out = Command::new(enforcer_bin())
        .args(["policy", "check", &example()])
        .env("RUST_LOG", "debug")
        .output()
        .expect("run enforcer");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("Read policy file."),
        "a log line to look at: {stderr}"
    );
    assert!(!stderr.contains('\u{1b}'), "ANSI escape in {stderr:?}");
}

/// A network namespace of its own for a test that loads XDP; `None` (test skipped, with why)
/// when not root.
fn root_namespace(tag: &str) -> Option<integration_tests::netns::NetNs> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to load XDP");
        return None;
    }
    Some(integration_tests::netns::NetNs::new(&format!(
        "{}-{tag}",
        integration_tests::netns::unique_prefix()
    )))
}

/// A pin directory and control socket of one `enforcer run`, removed on drop (stopping the
/// daemon leaves its pins).
struct RunFiles {
    pin_dir: String,
    socket: String,
    store: String,
}

impl RunFiles {
    fn new(name: &str) -> Self {
        let id = format!("{}-{name}", std::process::id());
        Self {
            pin_dir: format!("/sys/fs/bpf/enforcer-cli-{id}"),
            socket: std::env::temp_dir()
                .join(format!("enforcer-cli-{id}.sock"))
                .display()
                .to_string(),
            store: std::env::temp_dir()
                .join(format!("enforcer-cli-{id}.db"))
                .display()
                .to_string(),
        }
    }

    /// `nsenter` arguments (not `ip netns exec`, which hides bpffs behind a fresh /sys).
    fn args(&self, ns: &str, mode: &str, bin: &str, policy: &str) -> Vec<String> {
        self.args_on(ns, mode, bin, policy, &["lo"])
    }

    fn args_on(
        &self,
        ns: &str,
        mode: &str,
        bin: &str,
        policy: &str,
        ifaces: &[&str],
    ) -> Vec<String> {
        let net = format!("--net=/run/netns/{ns}");
        let mut args: Vec<String> = [
            net.as_str(),
            bin,
            "run",
            "--policy",
            policy,
            "--xdp-mode",
            mode,
            "--pin-dir",
            &self.pin_dir,
            "--socket",
            &self.socket,
            "--store",
            &self.store,
        ]
        .map(str::to_owned)
        .to_vec();
        for iface in ifaces {
            args.extend(["--iface".to_owned(), (*iface).to_owned()]);
        }
        args
    }

    /// `enforcer detach` on this pin directory.
    fn detach(&self) -> Output {
        enforcer(&["detach", "--pin-dir", &self.pin_dir])
    }
}

impl Drop for RunFiles {
    fn drop(&mut self) {
        let _ = self.detach();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        let _ = std::fs::remove_file(&self.socket);
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", self.store));
        }
        // The flow export's state, saved beside the store when a daemon with a collector stops.
        let _ = std::fs::remove_file(std::path::Path::new(&self.store).with_extension("flows"));
    }
}

#[test]
fn attach_to_an_interface_held_by_another_program_names_it() {
    use std::io::BufRead as _;
    let Some(ns) = root_namespace("held") else {
        return;
    };
    let bin = enforcer_bin().display().to_string();
    let policy = example();
    let (first_files, second_files) = (RunFiles::new("held1"), RunFiles::new("held2"));
    let mut first = Running(
        Command::new("nsenter")
            .args(first_files.args(&ns.name, "skb", &bin, &policy))
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start the first enforcer"),
    );
    let stderr = first.0.stderr.take().expect("piped stderr");
    let mut lines = std::io::BufReader::new(stderr).lines();
    let ready = lines
        .by_ref()
        .map_while(Result::ok)
        .any(|line| line.contains("Enforcing"));
    let second = Command::new("nsenter")
        .args(second_files.args(&ns.name, "skb", &bin, &policy))
        .output()
        .expect("run the second enforcer");
    stop(first, libc::SIGTERM);
    assert!(ready, "the first enforcer never started enforcing");
    let text = text(&second);
    assert!(!second.status.success(), "{text}");
    assert!(
        text.contains("XDP program `enforcer` (id ") && text.contains("already holds `lo`"),
        "{text}"
    );
    assert!(
        !text.contains("--xdp-mode skb"),
        "no skb hint in skb mode: {text}"
    );
    // Stopping the first leaves `lo` enforced; `detach` frees it.
    let detached = first_files.detach();
    assert!(detached.status.success(), "{}", self::text(&detached));
    // With `lo` free again, native mode fails (lo has no driver XDP) and suggests skb.
    let third_files = RunFiles::new("held3");
    let third = Command::new("nsenter")
        .args(third_files.args(&ns.name, "native", &bin, &policy))
        .output()
        .expect("run the third enforcer");
    let text = self::text(&third);
    assert!(!third.status.success(), "{text}");
    assert!(text.contains("retry with `--xdp-mode skb`"), "{text}");
}

/// A collector that is no `HOST[:PORT]` or does not resolve, or a timeout out of range, is
/// refused before anything is loaded, naming the flag and what to give.
#[test]
fn run_refuses_a_bad_ipfix_setting() {
    for (args, said) in [
        (
            ["--ipfix-collector", "collector.invalid:4739"],
            "cannot resolve `collector.invalid:4739`",
        ),
        (["--ipfix-collector", "10.0.0.1:99999"], "give HOST[:PORT]"),
        (["--ipfix-active-timeout", "0"], "--ipfix-active-timeout"),
        (["--ipfix-mtu", "100"], "--ipfix-mtu"),
        (
            ["--alert-webhook", "ftp://alerts.example/hook"],
            "is no http:// or https:// URL",
        ),
    ] {
        let mut argv = vec![
            "run",
            "--policy",
            "/nonexistent/policy.toml",
            "--iface",
            "lo",
        ];
        argv.extend(args);
        let out = enforcer(&argv);
        assert_eq!(out.status.code(), Some(2), "{}", text(&out));
        fails_saying(&out, said);
    }
}

#[test]
fn run_refuses_the_same_interface_twice() {
    let out = enforcer(&[
        "run",
        "--policy",
        &example(),
        "--iface",
        "lo",
        "--iface",
        "lo",
    ]);
    fails_saying(&out, "--iface lo is given twice");
}

/// The active generation in a pinned `CONFIG` map.
fn pinned_generation(pin_dir: &str) -> u32 {
    use aya::maps::{Array, Map, MapData};
    let data = MapData::from_pin(std::path::Path::new(pin_dir).join("CONFIG")).expect("CONFIG pin");
    let config: Array<_, enforcer_common::maps::Config> =
        Array::try_from(Map::Array(data)).expect("CONFIG is an array");
    config.get(&0, 0).expect("CONFIG[0]").generation
}

/// Start `enforcer run` on `lo` of `ns` and wait until it enforces; `None` if it exits first.
fn start_enforcer(ns: &str, files: &RunFiles, policy: &str) -> Option<Running> {
    enforcing(&files.args(ns, "skb", &enforcer_bin().display().to_string(), policy))
}

/// A started `enforcer run`, killed (SIGKILL) and reaped when dropped, so a test that panics
/// leaves no daemon behind: an orphan would hold the test's output pipe open and pinned state.
struct Running(std::process::Child);

impl Running {
    fn id(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Start `nsenter ARGS` (an `enforcer run`) and wait until it logs that it enforces; `None`
/// if it exits first.
fn enforcing(args: &[String]) -> Option<Running> {
    use std::io::BufRead as _;
    let mut child = Running(
        Command::new("nsenter")
            .args(args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start enforcer"),
    );
    let stderr = child.0.stderr.take().expect("piped stderr");
    let ready = std::io::BufReader::new(stderr)
        .lines()
        .map_while(Result::ok)
        .any(|line| line.contains("Enforcing"));
    ready.then_some(child)
}

/// Send `signal` and wait for the daemon to exit.
fn stop(mut child: Running, signal: i32) {
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(i32::try_from(child.id()).expect("pid"), signal) };
    let _ = child.0.wait();
}

/// `run --config FILE` takes its flags from a TOML file (the policy, the interfaces with their
/// roles, pins, socket, store); a flag on the command line wins over the file (here
/// `--xdp-mode skb`: the file's `native` cannot attach to `lo`); a key that is no flag stops
/// the start with the file and line, before anything is loaded.
#[test]
fn run_takes_its_settings_from_a_config_file() {
    let Some(ns) = root_namespace("conf") else {
        return;
    };
    let files = RunFiles::new("conf");
    let scratch = Scratch::new("cli-config");
    let config_arg = scratch.write(
        "enforcer.toml",
        &format!(
            "# settings of one test daemon\npolicy = \"{}\"\niface = [\"core:lo\"]\n\
             xdp_mode = \"native\"\npin-dir = \"{}\"\nsocket = \"{}\"\nstore = \"{}\"\n\
             udp-timeout = 300\nipfix-collector = [\"127.0.0.1\"]\nipfix-idle-timeout = 30\n",
            example(),
            files.pin_dir,
            files.socket,
            files.store
        ),
    );
    let net = format!("--net=/run/netns/{}", ns.name);
    let bin = enforcer_bin().display().to_string();
    let child = enforcing(
        &[
            net.as_str(),
            &bin,
            "run",
            "--config",
            &config_arg,
            "--xdp-mode",
            "skb",
        ]
        .map(str::to_owned),
    );
    let status = enforcer(&["status", "--json", "--socket", &files.socket]);
    if let Some(child) = child {
        stop(child, libc::SIGTERM);
    }
    let _ = files.detach();
    assert!(status.status.success(), "{}", text(&status));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).expect("JSON");
    let iface = &status["interfaces"][0];
    assert_eq!(iface["iface"], "lo", "{status}");
    assert_eq!(iface["core_facing"], true, "the file's role: {status}");
    assert_eq!(iface["mode"], "skb", "the command line's mode: {status}");
    assert_eq!(
        status["export"]["collectors"][0], "127.0.0.1:4739",
        "the file's collector, on IPFIX's port: {status}"
    );
    let scan = status["session_scan"].as_str().unwrap_or_default();
    assert!(
        scan == "kernel" || scan.starts_with("batch: "),
        "how sweeps read the sessions: {status}"
    );

    scratch.write(
        "enforcer.toml",
        "policy = \"p.toml\"\n\niface = [\"lo\"]\nifaces = [\"lo\"]\n",
    );
    let pins = RunFiles::new("conf-bad");
    let out = Command::new("nsenter")
        .args([
            net.as_str(),
            &bin,
            "run",
            "--config",
            &config_arg,
            "--pin-dir",
            &pins.pin_dir,
        ])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(
        text(&out).contains(&format!("{config_arg}:4: unknown key `ifaces`")),
        "{}",
        text(&out)
    );
    assert!(!Path::new(&pins.pin_dir).exists(), "nothing was loaded");
}

/// One daemon per pin directory: a second `run` on the same pins is refused before it loads
/// anything, and the first one's policy (its generation) is untouched.
#[test]
fn a_second_run_on_the_same_pin_directory_changes_nothing() {
    let Some(ns) = root_namespace("lock") else {
        return;
    };
    let files = RunFiles::new("lock");
    let first = start_enforcer(&ns.name, &files, &example()).expect("the first run enforces");
    let generation = pinned_generation(&files.pin_dir);
    let other = RunFiles {
        pin_dir: files.pin_dir.clone(),
        socket: format!("{}.second", files.socket),
        store: format!("{}.second", files.store),
    };
    let second = Command::new("nsenter")
        .args(other.args(
            &ns.name,
            "skb",
            &enforcer_bin().display().to_string(),
            &example(),
        ))
        .output()
        .expect("run the second enforcer");
    let still = pinned_generation(&files.pin_dir);
    let pins_left = std::path::Path::new(&files.pin_dir).join("CONFIG").exists();
    std::mem::forget(other); // Its pin directory is the first run's; `files` cleans up.
    stop(first, libc::SIGTERM);
    let text = text(&second);
    assert!(!second.status.success(), "{text}");
    assert!(
        text.contains("another `enforcer run` is enforcing from pin directory"),
        "{text}"
    );
    assert_eq!(still, generation, "the second run flipped the live policy");
    assert!(pins_left, "the second run removed the first one's pins");
}

/// Whether `iface` in namespace `ns` has an XDP program attached.
fn has_xdp(ns: &str, iface: &str) -> bool {
    let link = Command::new("nsenter")
        .args([
            &format!("--net=/run/netns/{ns}"),
            "ip",
            "-d",
            "link",
            "show",
            iface,
        ])
        .output()
        .expect("ip link");
    String::from_utf8_lossy(&link.stdout).contains("prog/xdp")
}

/// A start that fails after loading (here: its last interface is held by another daemon's
/// program) detaches the links and removes the pins it created, and keeps what a previous run
/// left: that run's pins, and its link, which goes on enforcing.
#[test]
fn a_failed_start_removes_what_it_created_and_nothing_else() {
    let Some(ns) = root_namespace("fail") else {
        return;
    };
    ns.exec_ok(&[
        "ip", "link", "add", "fail0", "type", "veth", "peer", "name", "fail1",
    ]);
    ns.exec_ok(&["ip", "link", "set", "fail0", "up"]);
    ns.exec_ok(&["ip", "link", "set", "fail1", "up"]);
    let bin = enforcer_bin().display().to_string();
    // Another daemon holds fail1.
    let holder_files = RunFiles::new("failholder");
    let holder = enforcing(&holder_files.args_on(&ns.name, "skb", &bin, &example(), &["fail1"]))
        .expect("the holder enforces");

    let failing = RunFiles::new("fail");
    let out = Command::new("nsenter")
        .args(failing.args_on(&ns.name, "skb", &bin, &example(), &["fail0", "fail1"]))
        .output()
        .expect("run enforcer");
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("already holds `fail1`"),
        "{}",
        text(&out)
    );
    assert!(
        !Path::new(&failing.pin_dir).exists(),
        "a failed start left its pin directory"
    );
    assert!(
        !has_xdp(&ns.name, "fail0"),
        "a failed start left XDP on fail0"
    );
    assert!(
        has_xdp(&ns.name, "fail1"),
        "a failed start touched another daemon's link"
    );

    // A previous run killed with SIGKILL leaves its pins and its link on lo, enforcing; a
    // failed start on the same pins keeps both.
    let files = RunFiles::new("kept");
    let first = start_enforcer(&ns.name, &files, &example()).expect("the first run enforces");
    stop(first, libc::SIGKILL);
    assert!(
        has_xdp(&ns.name, "lo"),
        "SIGKILL removed enforcement from lo"
    );
    let out = Command::new("nsenter")
        .args(files.args_on(&ns.name, "skb", &bin, &example(), &["lo", "fail0", "fail1"]))
        .output()
        .expect("run enforcer");
    stop(holder, libc::SIGTERM);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        Path::new(&files.pin_dir).join("SIMS").exists(),
        "a failed start removed a previous run's pins"
    );
    assert!(
        has_xdp(&ns.name, "lo"),
        "a failed start detached a previous run's link"
    );
    assert!(
        !has_xdp(&ns.name, "fail0"),
        "a failed start left its own link on fail0"
    );
}

/// SIGHUP reloads the policy file into the running program (the generation flips, the state
/// file names the new rules, the daemon keeps running); an invalid file changes nothing.
#[test]
fn sighup_reloads_the_policy_and_an_invalid_one_changes_nothing() {
    let Some(ns) = root_namespace("hup") else {
        return;
    };
    let files = RunFiles::new("hup");
    let policy = temp_policy("hup", ONE_SIM);
    let policy_arg = policy.display().to_string();
    let child = start_enforcer(&ns.name, &files, &policy_arg).expect("the run enforces");
    let pid = i32::try_from(child.id()).expect("pid");
    let rules = || -> usize {
        let out = enforcer(&["stats", "--json", "--socket", &files.socket]);
        serde_json::from_slice::<serde_json::Value>(&out.stdout)
            .ok()
            .and_then(|v| v["rules"].as_array().map(Vec::len))
            .unwrap_or(0)
    };
    let wait_for = |what: &dyn Fn() -> bool| {
        (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(50));
            what()
        })
    };
    let before = pinned_generation(&files.pin_dir);
    let one_rule = rules();

    let mut text = std::fs::read_to_string(&policy).expect("read policy");
    text = text.replace(
        "ports = [443] } ]",
        "ports = [443] }, { to = [\"198.51.100.20\"], proto = \"udp\", ports = [53] } ]",
    );
    std::fs::write(&policy, &text).expect("edit policy");
    // SAFETY: kill has no memory preconditions; the pid is our child's.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    let reloaded = wait_for(&|| rules() == 2);
    let after = pinned_generation(&files.pin_dir);

    std::fs::write(&policy, "pools = [\"10.64.0.0/16\"]\n[[segments]\nname = ").expect("break");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGHUP) };
    std::thread::sleep(std::time::Duration::from_millis(500));
    let after_invalid = pinned_generation(&files.pin_dir);
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    stop(child, libc::SIGTERM);
    let _ = std::fs::remove_file(&policy);

    assert_eq!(one_rule, 1, "stats names the first policy's rule");
    assert!(
        reloaded,
        "SIGHUP did not reload the policy (rules in stats: {})",
        rules()
    );
    assert_ne!(
        after, before,
        "a reload fills the other generation and switches to it"
    );
    assert_eq!(
        after_invalid, after,
        "an invalid policy changed the running one"
    );
    assert!(alive, "an invalid policy on SIGHUP stopped the daemon");
}

/// Pins left by a run with smaller maps are refused by a start that needs larger ones, with a
/// message naming the map and what to do; nothing changes: the earlier run's program keeps
/// enforcing through its link and its maps stay as they were.
#[test]
fn pins_of_a_smaller_run_are_refused_and_nothing_changes() {
    let Some(ns) = root_namespace("reuse") else {
        return;
    };
    let bin = enforcer_bin().display().to_string();
    let files = RunFiles::new("reuse");
    let mut small = files.args(&ns.name, "skb", &bin, &example());
    small.extend(["--max-sims".to_owned(), "70000".to_owned()]);
    let child = enforcing(&small).expect("the first run enforces");
    stop(child, libc::SIGKILL);
    let generation = pinned_generation(&files.pin_dir);
    let mut large = files.args(&ns.name, "skb", &bin, &example());
    large.extend(["--max-sims".to_owned(), "200000".to_owned()]);
    let out = Command::new("nsenter")
        .args(&large)
        .output()
        .expect("run enforcer");
    let text = text(&out);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("pinned in") && text.contains("does not fit this start"),
        "{text}"
    );
    assert!(text.contains("this start needs 200000"), "{text}");
    assert_eq!(
        pinned_generation(&files.pin_dir),
        generation,
        "the refused start changed the pinned policy"
    );
    assert!(
        has_xdp(&ns.name, "lo"),
        "the refused start detached the earlier run's link"
    );
}

/// A `--socket` path that holds something other than a socket (a typo naming the policy file)
/// is refused and left as it was, and the start removes what it created.
#[test]
fn run_never_removes_a_file_that_is_not_a_socket() {
    let Some(ns) = root_namespace("notsock") else {
        return;
    };
    let mut files = RunFiles::new("notsock");
    let precious =
        std::env::temp_dir().join(format!("enforcer-cli-{}-precious", std::process::id()));
    std::fs::write(&precious, "keep me").expect("write file");
    files.socket = precious.display().to_string();
    let out = Command::new("nsenter")
        .args(files.args(
            &ns.name,
            "skb",
            &enforcer_bin().display().to_string(),
            &example(),
        ))
        .output()
        .expect("run enforcer");
    let kept = std::fs::read_to_string(&precious).unwrap_or_default();
    let _ = std::fs::remove_file(&precious);
    files.socket = format!("{}.none", files.socket);
    fails_saying(&out, "exists and is not a socket");
    assert_eq!(kept, "keep me", "the file at --socket was touched");
    assert!(
        !Path::new(&files.pin_dir).exists(),
        "the refused start left its pin directory"
    );
}

/// `detach` on a directory that is not on bpffs removes nothing, whatever its entries are
/// called.
#[test]
fn detach_refuses_a_directory_that_is_not_on_bpffs() {
    let dir = Scratch::new("cli-detach");
    let pins = dir.0.join("pins");
    std::fs::create_dir_all(pins.join("links")).expect("dirs");
    for name in ["prog", "SIMS", "links/eth0"] {
        std::fs::write(pins.join(name), "keep").expect("write");
    }
    let out = enforcer(&["detach", "--pin-dir", &pins.display().to_string()]);
    fails_saying(&out, "is not on a BPF filesystem");
    for name in ["prog", "SIMS", "links/eth0"] {
        assert!(pins.join(name).exists(), "detach removed {name}");
    }
}

/// `stats` of a fleet streams its rows after the reply: the table and the JSON list every SIM
/// once, in policy order, across several of the daemon's 256 KiB chunks; an older client that
/// asks without `stream` gets the rows inside the reply; one connection carries many commands;
/// an oversized command line is refused and ends its connection.
#[test]
fn stats_streams_the_fleet_and_a_connection_carries_many_commands() {
    use std::io::{BufRead as _, Write as _};

    use enforcer::control::{Command as Ctl, Reply, unix};
    let Some(ns) = root_namespace("stream") else {
        return;
    };
    let files = RunFiles::new("stream");
    const SIMS: u32 = 3000;
    let scratch = Scratch::new("cli-stream-fleet");
    let policy = fleet(&scratch, SIMS, &["even", "odd"]);
    let imsi = fleet_imsi;
    let child = start_enforcer(&ns.name, &files, &policy).expect("the run enforces");

    let table = enforcer(&["stats", "--socket", &files.socket]);
    let json = enforcer(&["stats", "--json", "--socket", &files.socket]);
    let old_client = unix::call(
        std::path::Path::new(&files.socket),
        &Ctl::Stats {
            imsis: Vec::new(),
            stream: None,
        },
    );
    let mut kept = unix::Client::connect(std::path::Path::new(&files.socket)).expect("connect");
    let replies: Vec<Reply> = [
        Ctl::Status,
        Ctl::SimQuarantine {
            imsi: imsi(7),
            source: "test".into(),
        },
        Ctl::SimShow { imsi: imsi(7) },
        Ctl::SimRelease { imsi: imsi(7) },
    ]
    .iter()
    .map(|c| kept.call(c).expect("a reply on the kept connection"))
    .collect();
    let mut raw = std::os::unix::net::UnixStream::connect(&files.socket).expect("connect");
    raw.write_all(&vec![b'x'; 70_000])
        .expect("write a long line");
    // The daemon may refuse the line and close before this is written (EPIPE): then nothing
    // after the refusal is read, which is what the test checks below.
    let _ = raw.write_all(b"\n{\"command\":\"status\"}\n");
    // After the refusal the connection ends: EOF, or ECONNRESET when the daemon closed with
    // the rest of the line unread (Linux reports that on a Unix stream socket).
    let lines: Vec<String> = std::io::BufReader::new(raw)
        .lines()
        .map_while(Result::ok)
        .collect();
    stop(child, libc::SIGTERM);
    let _ = files.detach();
    drop(scratch);

    assert!(table.status.success(), "{}", text(&table));
    let out = String::from_utf8(table.stdout).expect("UTF-8");
    let rows: Vec<&str> = out.lines().skip(1).take_while(|l| !l.is_empty()).collect();
    assert_eq!(rows.len(), SIMS as usize, "one row per SIM");
    for (i, row) in rows.iter().enumerate() {
        let i = u32::try_from(i).expect("fits");
        let segment = if i % 2 == 0 { "even" } else { "odd" };
        assert!(
            row.starts_with(&format!("{:<16} {:<16} active", imsi(i), segment)),
            "row {i}: {row}"
        );
    }
    assert!(
        out.contains("VERDICTS (packets)"),
        "the tail follows the rows"
    );
    let json: serde_json::Value = serde_json::from_slice(&json.stdout).expect("stats --json");
    let sims = json["sims"].as_array().expect("sims");
    assert_eq!(sims.len(), SIMS as usize);
    assert_eq!(sims[SIMS as usize - 1]["imsi"], imsi(SIMS - 1));
    assert_eq!(sims[1]["segment"], "odd");
    assert_eq!(json["rules"].as_array().map(Vec::len), Some(2));
    match old_client.expect("the older request is answered") {
        Reply::Stats(report) => assert_eq!(report.sims.len(), SIMS as usize),
        other => panic!("not stats: {other:?}"),
    }
    assert!(matches!(replies[0], Reply::Status(_)), "{:?}", replies[0]);
    match (&replies[1], &replies[2], &replies[3]) {
        (Reply::Sim(q), Reply::Sim(shown), Reply::Sim(released)) => {
            assert_eq!(q.state, "quarantined");
            assert_eq!(shown.state, "quarantined");
            assert_eq!(released.state, "active");
        }
        other => panic!("not SIM replies: {other:?}"),
    }
    assert_eq!(
        lines.len(),
        1,
        "the connection ends after the refusal: {lines:?}"
    );
    assert!(lines[0].contains("command longer than"), "{}", lines[0]);
}

/// A log reader that stops reading (here: the test, which never reads the pipe) must not stop
/// the daemon: 3,000 logged changes (far more than a pipe buffer's 64 KiB of lines) are
/// all answered, and the lines past the backlog are dropped rather than waited for.
#[test]
fn a_stalled_log_reader_does_not_stall_the_daemon() {
    use enforcer::control::{Command as Ctl, Reply, unix};
    let Some(ns) = root_namespace("stall") else {
        return;
    };
    let files = RunFiles::new("stall");
    let policy = temp_policy("stall", ONE_SIM);
    // Its stderr is a pipe this test keeps open and never reads.
    let args = files.args(
        &ns.name,
        "skb",
        &enforcer_bin().display().to_string(),
        &policy.display().to_string(),
    );
    let mut child = Running(
        Command::new("nsenter")
            .args(&args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("start enforcer"),
    );
    let unread = child.0.stderr.take();
    let up = (0..200).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(50));
        matches!(
            unix::call(std::path::Path::new(&files.socket), &Ctl::Status),
            Ok(Reply::Status(_))
        )
    });
    assert!(up, "the daemon did not start");
    let (done_tx, done) = std::sync::mpsc::channel();
    let socket = files.socket.clone();
    std::thread::spawn(move || {
        let mut client = unix::Client::connect(std::path::Path::new(&socket)).expect("connect");
        let mut answered = 0;
        for n in 0..3000 {
            let command = if n % 2 == 0 {
                Ctl::SimQuarantine {
                    imsi: "001010000000001".into(),
                    source: "a test that logs a long source to fill the pipe sooner".into(),
                }
            } else {
                Ctl::SimRelease {
                    imsi: "001010000000001".into(),
                }
            };
            if matches!(client.call(&command), Ok(Reply::Sim(_))) {
                answered += 1;
            }
        }
        let _ = done_tx.send(answered);
    });
    let answered = done.recv_timeout(std::time::Duration::from_secs(60));
    stop(child, libc::SIGKILL);
    drop(unread);
    let _ = files.detach();
    let _ = std::fs::remove_file(&policy);
    assert_eq!(
        answered,
        Ok(3000),
        "the daemon stopped answering while nobody read its log"
    );
}

/// A client that sends commands and never reads the replies is dropped once its replies have
/// waited 10 s, and no more than two fleet listings wait on readers at once: a third is
/// refused with what to do, and works again once a reader goes.
#[test]
fn unread_replies_and_listings_are_bounded() {
    use std::io::{Read as _, Write as _};

    use enforcer::control::{Command as Ctl, Reply, RowFormat, unix};
    let Some(ns) = root_namespace("bound") else {
        return;
    };
    let files = RunFiles::new("bound");
    // Enough rows (~2 MB as a table) that a listing outlasts the socket buffers.
    const SIMS: u32 = 20_000;
    let scratch = Scratch::new("cli-bound-fleet");
    let policy = fleet(&scratch, SIMS, &["s"]);
    let child = start_enforcer(&ns.name, &files, &policy).expect("the run enforces");
    let socket = std::path::Path::new(&files.socket);

    // Two listings nobody reads past their first bytes.
    let listing = || {
        let mut s = std::os::unix::net::UnixStream::connect(socket).expect("connect");
        let mut line = serde_json::to_vec(&Ctl::Stats {
            imsis: Vec::new(),
            stream: Some(RowFormat::Table),
        })
        .expect("encode");
        line.push(b'\n');
        s.write_all(&line).expect("send");
        let mut first = [0u8; 1];
        s.read_exact(&mut first).expect("the reply starts");
        s
    };
    let (one, two) = (listing(), listing());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let third = enforcer(&["stats", "--socket", &files.socket]);
    drop(one);
    let after = (0..50).any(|_| {
        std::thread::sleep(std::time::Duration::from_millis(100));
        enforcer(&["stats", "--socket", &files.socket])
            .status
            .success()
    });
    drop(two);

    // A client that writes commands and never reads.
    let mut deaf = std::os::unix::net::UnixStream::connect(socket).expect("connect");
    deaf.set_write_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("timeout");
    let status = b"{\"command\":\"status\"}\n".repeat(2000);
    let started = std::time::Instant::now();
    let mut dropped = false;
    while started.elapsed() < std::time::Duration::from_secs(25) {
        if deaf.write_all(&status).is_err() {
            dropped = true;
            break;
        }
    }
    let others = unix::call(socket, &Ctl::Status);
    stop(child, libc::SIGTERM);
    let _ = files.detach();
    drop(scratch);

    assert!(!third.status.success(), "a third listing was not refused");
    assert!(
        text(&third).contains("listings of the whole fleet are in progress"),
        "{}",
        text(&third)
    );
    assert!(after, "listings did not work again once a reader went");
    assert!(
        dropped,
        "a client that never reads its replies was not dropped within 25 s"
    );
    assert!(matches!(others, Ok(Reply::Status(_))), "{others:?}");
}
