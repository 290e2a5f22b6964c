//! The CLI's error paths and `policy check`, through the real binary: clear messages, non-zero
//! exit, and nothing loaded or pinned when the input is bad.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
};

use integration_tests::enforcer_bin;

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
        "rules:       8 (7 segment, 1 SIM)",
        "RULES 14",
    ] {
        assert!(text.contains(needle), "`{needle}` missing from:\n{text}");
    }
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
    assert!(!out.status.success());
    assert!(
        text(&out).contains("no network interface named `nosuchif0`"),
        "{}",
        text(&out)
    );
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
    assert!(!out.status.success());
    assert!(
        text(&out).contains("needs CAP_BPF and CAP_NET_ADMIN; run it as root"),
        "{}",
        text(&out)
    );
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
    let out = enforcer(&["stats", "--state-file", "/nonexistent/state.json"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("is `enforcer run` running"),
        "{}",
        text(&out)
    );
}
