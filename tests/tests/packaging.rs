//! The files under `packaging/`: the systemd unit passes `systemd-analyze verify` (with its
//! binary pointed at the built one, since /usr/bin/enforcer is not installed here) and keeps
//! the settings operators rely on; the example policy is valid. `cargo xtask setup` installs
//! `systemd` for `systemd-analyze`.

use std::{path::PathBuf, process::Command};

use integration_tests::enforcer_bin;

fn packaging(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../packaging")
        .join(file)
}

fn unit_text() -> String {
    std::fs::read_to_string(packaging("enforcer.service")).expect("read packaging/enforcer.service")
}

/// Run `systemd-analyze verify` on `text` installed as `enforcer.service` in a scratch
/// directory; returns (success, what it printed).
fn verify(tag: &str, text: &str) -> (bool, String) {
    let dir = std::env::temp_dir().join(format!("enforcer-unit-{}-{tag}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create scratch directory");
    let unit = dir.join("enforcer.service");
    std::fs::write(&unit, text).expect("write unit copy");
    let out = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .expect("run systemd-analyze (install it with `cargo xtask setup`: package systemd)");
    let _ = std::fs::remove_dir_all(&dir);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

fn with_built_binary(text: &str) -> String {
    let bin = enforcer_bin()
        .canonicalize()
        .expect("absolute enforcer path");
    assert!(
        text.contains("/usr/bin/enforcer "),
        "ExecStart no longer runs /usr/bin/enforcer"
    );
    text.replace("/usr/bin/enforcer ", &format!("{} ", bin.display()))
}

#[test]
fn systemd_unit_verifies_without_a_warning() {
    let (ok, said) = verify("good", &with_built_binary(&unit_text()));
    // systemd-analyze exits 0 on unknown keys and bad values (it only warns), so any output
    // is a failure too.
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify:\n{said}"
    );
}

/// The check above would pass vacuously if this systemd said nothing about broken units.
#[test]
fn systemd_analyze_reports_a_broken_unit() {
    let broken = with_built_binary(&unit_text()).replace("KillMode=process", "KillMode=gently");
    let (_, said) = verify("broken", &broken);
    assert!(
        said.contains("KillMode") || said.contains("kill mode"),
        "{said}"
    );
    let missing = unit_text().replace("/usr/bin/enforcer ", "/nonexistent/enforcer ");
    let (ok, said) = verify("missing", &missing);
    assert!(
        !ok || !said.trim().is_empty(),
        "a missing binary went unnoticed"
    );
}

#[test]
fn systemd_unit_keeps_what_operators_rely_on() {
    let text = unit_text();
    for line in [
        "Type=notify",
        "EnvironmentFile=-/etc/default/enforcer",
        "ExecStart=/usr/bin/enforcer run --policy /etc/enforcer/policy.toml $ENFORCER_ARGS",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=always",
        "KillMode=process",
        "CapabilityBoundingSet=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_RESOURCE",
        "AmbientCapabilities=CAP_BPF CAP_NET_ADMIN CAP_PERFMON CAP_SYS_RESOURCE",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ReadWritePaths=/sys/fs/bpf /var/lib/enforcer /run/enforcer",
        "StateDirectory=enforcer",
        "RuntimeDirectory=enforcer",
        "RuntimeDirectoryPreserve=yes",
    ] {
        assert!(
            text.lines().any(|l| l.trim() == line),
            "`{line}` missing from packaging/enforcer.service"
        );
    }
    // The flags the unit passes are ones `run` has.
    let help = Command::new(enforcer_bin())
        .args(["run", "--help"])
        .output()
        .expect("run enforcer run --help");
    let help = String::from_utf8_lossy(&help.stdout);
    for flag in ["--policy", "--iface", "--drop-non-pool", "--xdp-mode"] {
        assert!(help.contains(flag), "`enforcer run` lost {flag}");
    }
}

#[test]
fn packaged_example_policy_is_valid() {
    let out = Command::new(enforcer_bin())
        .args(["policy", "check"])
        .arg(packaging("policy.toml"))
        .output()
        .expect("run enforcer policy check");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let default = std::fs::read_to_string(packaging("enforcer.default")).expect("read default");
    assert!(default.lines().any(|l| l.starts_with("ENFORCER_ARGS=")));
}
