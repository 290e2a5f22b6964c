//! Crash consistency (issue 10): `kill -9` the daemon at random moments of a large apply
//! (10,000 SIMs change segment) many times. At every crash the pinned program must enforce
//! exactly the old policy or exactly the new one, for every SIM; after a restart the daemon's
//! names, store and maps agree again (the policy it starts with is enforced for every SIM, and
//! `stats` and `sim show` name the SIMs as the policy does).

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use integration_tests::{
    enforcer_bin,
    frames::{Frame, L4},
    harness::run_pinned,
    netns::{NetNs, unique_prefix},
    output_text,
    rng::Rng,
};

const SIMS: u32 = 10_000;
/// SIMs whose frames are judged after each crash (every SIM would take seconds per round).
const SAMPLED: u32 = 400;
const ROUNDS: u32 = 12;
const XDP_PASS: u32 = 2;
const XDP_DROP: u32 = 1;

fn imsi(i: u32) -> String {
    format!("{:015}", 1_010_000_000_000u64 + u64::from(i))
}

fn address(i: u32) -> String {
    let n = i + 1;
    format!("10.64.{}.{}", (n >> 8) & 0xff, n & 0xff)
}

/// A policy whose SIMs all sit in `segment`: s1 may send udp/7001, s2 udp/7002.
fn write_policy(dir: &Path, name: &str, segment: &str) -> PathBuf {
    let sub = dir.join(name);
    std::fs::create_dir_all(&sub).expect("policy dir");
    let policy = r#"pools = ["10.64.0.0/16"]
inventory = "sims.csv"

[[segments]]
name = "s1"
rules = [ { to = ["192.0.2.53"], proto = "udp", ports = [7001] } ]

[[segments]]
name = "s2"
rules = [ { to = ["192.0.2.53"], proto = "udp", ports = [7002] } ]
"#;
    let mut csv = String::from("imsi,ipv4,ipv6,segment,state\n");
    for i in 0..SIMS {
        let _ = writeln!(csv, "{},{},,{segment},", imsi(i), address(i));
    }
    std::fs::write(sub.join("policy.toml"), policy).expect("write policy");
    std::fs::write(sub.join("sims.csv"), csv).expect("write inventory");
    sub.join("policy.toml")
}

struct Files {
    dir: PathBuf,
    pin_dir: String,
    socket: PathBuf,
    store: PathBuf,
}

impl Drop for Files {
    fn drop(&mut self) {
        let _ = Command::new(enforcer_bin())
            .args(["detach", "--pin-dir", &self.pin_dir])
            .output();
        let _ = std::fs::remove_dir_all(&self.pin_dir);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start(ns: &NetNs, files: &Files, policy: &Path) -> Child {
    let mut child = Command::new("nsenter")
        .arg(format!("--net=/run/netns/{}", ns.name))
        .arg(enforcer_bin())
        .args([
            "run",
            "--xdp-mode",
            "skb",
            "--iface",
            "lo",
            "--pin-dir",
            &files.pin_dir,
        ])
        .arg("--socket")
        .arg(&files.socket)
        .arg("--store")
        .arg(&files.store)
        .arg("--policy")
        .arg(policy)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start enforcer run");
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if cli(files, &["status"]).is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("enforcer run did not start within 60 s");
}

fn cli(files: &Files, args: &[&str]) -> Result<String, String> {
    output_text(
        Command::new(enforcer_bin())
            .args(args)
            .arg("--socket")
            .arg(&files.socket),
    )
}

/// Which policy the pinned program enforces for each sampled SIM: `Some(true)` for s1's
/// verdicts (7001 passes, 7002 drops), `Some(false)` for s2's, `None` for anything else.
fn enforced(pin_dir: &str, sample: &[u32]) -> Vec<(u32, Option<bool>)> {
    let program = Xdp::from_pin(Path::new(pin_dir).join("prog"), XdpAttachType::Interface)
        .expect("open the pinned program");
    sample
        .iter()
        .map(|&i| {
            let src = address(i);
            let to_1 = run_pinned(
                &program,
                &Frame::new(&src, "192.0.2.53", L4::Udp(7001)).build(),
            );
            let to_2 = run_pinned(
                &program,
                &Frame::new(&src, "192.0.2.53", L4::Udp(7002)).build(),
            );
            let which = match (to_1, to_2) {
                (XDP_PASS, XDP_DROP) => Some(true),
                (XDP_DROP, XDP_PASS) => Some(false),
                _ => None,
            };
            (i, which)
        })
        .collect()
}

#[test]
fn kill_9_during_a_large_apply_leaves_the_old_or_the_new_policy_and_a_consistent_restart() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root");
        return;
    }
    let prefix = unique_prefix();
    let ns = NetNs::new(&format!("{prefix}-crash"));
    let dir = std::env::temp_dir().join(format!("{prefix}-crash"));
    let files = Files {
        pin_dir: format!("/sys/fs/bpf/{prefix}-crash"),
        socket: dir.join("enforcer.sock"),
        store: dir.join("enforcer.db"),
        dir: dir.clone(),
    };
    let old = write_policy(&dir, "old", "s1");
    let new = write_policy(&dir, "new", "s2");
    let mut rng = Rng::new(0x5eed_c4a5);
    let sample: Vec<u32> = (0..SAMPLED)
        .map(|_| rng.below(u64::from(SIMS)) as u32)
        .collect();

    // How long a full apply of the new policy takes, to spread the kills over it.
    let mut daemon = start(&ns, &files, &old);
    let timed = Instant::now();
    cli(&files, &["policy", "apply", &new.display().to_string()]).expect("apply the new policy");
    let apply_time = timed.elapsed();
    let _ = daemon.kill();
    let _ = daemon.wait();

    let (mut saw_old, mut saw_new) = (0, 0);
    for round in 0..ROUNDS {
        let mut daemon = start(&ns, &files, &old);
        let before = enforced(&files.pin_dir, &sample);
        assert!(
            before.iter().all(|(_, w)| *w == Some(true)),
            "round {round}: a restart with the old policy left SIMs on something else: {:?}",
            before
                .iter()
                .filter(|(_, w)| *w != Some(true))
                .take(5)
                .collect::<Vec<_>>()
        );
        // Names agree with the policy after the restart.
        let one = imsi(sample[0]);
        let shown = cli(&files, &["sim", "show", &one]).expect("sim show");
        assert!(shown.contains("segment:    s1"), "round {round}: {shown}");

        let apply = Command::new(enforcer_bin())
            .args(["policy", "apply"])
            .arg(&new)
            .arg("--socket")
            .arg(&files.socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start policy apply");
        // Kill anywhere from before the daemon reads the file to after the switch.
        let delay = apply_time.mul_f64(rng.below(1200) as f64 / 1000.0);
        std::thread::sleep(delay);
        let _ = daemon.kill();
        let _ = daemon.wait();
        let mut apply = apply;
        let _ = apply.wait();

        let after = enforced(&files.pin_dir, &sample);
        let all_old = after.iter().all(|(_, w)| *w == Some(true));
        let all_new = after.iter().all(|(_, w)| *w == Some(false));
        assert!(
            all_old || all_new,
            "round {round} (killed after {delay:?} of a {apply_time:?} apply): the pinned program \
             enforces a mix: {} SIMs old, {} new, {} neither",
            after.iter().filter(|(_, w)| *w == Some(true)).count(),
            after.iter().filter(|(_, w)| *w == Some(false)).count(),
            after.iter().filter(|(_, w)| w.is_none()).count()
        );
        if all_old {
            saw_old += 1;
        } else {
            saw_new += 1;
        }
    }
    // After the last crash, a restart is consistent again, and its store is usable.
    let mut daemon = start(&ns, &files, &old);
    let after = enforced(&files.pin_dir, &sample);
    let stats = cli(&files, &["stats", "--json", "--imsi", &imsi(sample[1])]).expect("stats");
    let _ = daemon.kill();
    let _ = daemon.wait();
    assert!(
        after.iter().all(|(_, w)| *w == Some(true)),
        "the final restart enforces the old policy"
    );
    assert!(
        stats.contains(&imsi(sample[1])) && stats.contains("\"s1\""),
        "{stats}"
    );
    eprintln!(
        "{ROUNDS} crashes during a {apply_time:?} apply: {saw_old} left the old policy, {saw_new} \
         the new one"
    );
}
