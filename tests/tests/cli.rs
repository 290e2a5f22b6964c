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
        "PORT_RULES 11, RULES_V2 3",
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
        "it needs 11 single-port rule entries but PORT_RULES holds 10; raise --max-rule-entries \
         to at least 11",
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
            "it needs 11 single-port rule entries but PORT_RULES holds 10; raise \
             --max-rule-entries to at least 11"
        ),
        "{}",
        text(&run)
    );
    assert!(!Path::new(&pin_dir).exists(), "nothing loaded or pinned");

    let fits = enforcer(&["policy", "check", &example(), "--max-rule-entries", "11"]);
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

#[test]
fn run_as_an_unprivileged_user_says_to_use_root() {
    let bin = enforcer_bin().display().to_string();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            &bin,
            "run",
            "--policy",
            &example(),
            "--iface",
            "lo",
        ])
        .output()
        .expect("run setpriv (util-linux)");
    assert!(!out.status.success());
    assert!(text(&out).contains("needs root"), "{}", text(&out));
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
