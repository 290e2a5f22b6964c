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

/// `cargo xtask package` with the built (debug) binary: a .deb that holds the binary, the
/// unit and the conffiles with the right modes, root-owned, whose Depends dpkg-shlibdeps
/// computed, and whose binary runs. The release build itself is left to `cargo xtask
/// package` (minutes); the layout does not depend on the profile.
#[test]
fn xtask_package_builds_a_debian_package() {
    let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let out_dir = std::env::temp_dir().join(format!("enforcer-deb-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out_dir);
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let built = Command::new(cargo)
        .current_dir(&workspace)
        .args(["xtask", "package", "--binary"])
        .arg(enforcer_bin())
        .arg("--out-dir")
        .arg(&out_dir)
        // Uncompressed: xz takes most of a minute on a debug binary, and the layout is the same.
        .args(["--compression", "none"])
        .output()
        .expect("run cargo xtask package");
    assert!(
        built.status.success(),
        "cargo xtask package failed:\n{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let arch = Command::new("dpkg")
        .arg("--print-architecture")
        .output()
        .expect("dpkg --print-architecture");
    let arch = String::from_utf8_lossy(&arch.stdout).trim().to_owned();
    let version = env!("CARGO_PKG_VERSION");
    let deb = out_dir.join(format!("enforcer_{version}_{arch}.deb"));
    assert!(deb.exists(), "{} missing", deb.display());
    let dpkg_deb = |args: &[&str]| -> String {
        let out = Command::new("dpkg-deb")
            .args(args)
            .arg(&deb)
            .output()
            .expect("run dpkg-deb");
        assert!(out.status.success(), "dpkg-deb {args:?} failed");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let field = |name: &str| {
        dpkg_deb(&["--field"])
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
    };
    assert_eq!(field("Package").as_deref(), Some("enforcer"));
    assert_eq!(field("Version").as_deref(), Some(version));
    let depends = field("Depends").expect("Depends");
    assert!(depends.contains("libc6 (>= "), "Depends: {depends}");
    let contents = dpkg_deb(&["--contents"]);
    for (mode, path) in [
        ("-rwxr-xr-x root/root", "./usr/bin/enforcer"),
        (
            "-rw-r--r-- root/root",
            "./lib/systemd/system/enforcer.service",
        ),
        ("-rw-r--r-- root/root", "./etc/default/enforcer"),
        ("-rw-r--r-- root/root", "./etc/enforcer/policy.toml"),
        ("-rw-r--r-- root/root", "./usr/share/doc/enforcer/README.md"),
        ("-rw-r--r-- root/root", "./usr/share/doc/enforcer/copyright"),
    ] {
        assert!(
            contents
                .lines()
                .any(|l| l.starts_with(mode) && l.ends_with(&format!(" {path}"))),
            "`{mode} ... {path}` missing from:\n{contents}"
        );
    }
    let unpacked = out_dir.join("root");
    let control = out_dir.join("control");
    dpkg_deb_to(&deb, "-x", &unpacked);
    dpkg_deb_to(&deb, "-e", &control);
    let conffiles = std::fs::read_to_string(control.join("conffiles")).expect("conffiles");
    assert_eq!(
        conffiles,
        "/etc/default/enforcer\n/etc/enforcer/policy.toml\n"
    );
    let unit = std::fs::read_to_string(unpacked.join("lib/systemd/system/enforcer.service"))
        .expect("unit in the package");
    assert_eq!(unit, unit_text());
    let runs = Command::new(unpacked.join("usr/bin/enforcer"))
        .arg("--version")
        .output()
        .expect("run the packaged binary");
    assert_eq!(
        String::from_utf8_lossy(&runs.stdout).trim(),
        format!("enforcer {version}")
    );
    let _ = std::fs::remove_dir_all(&out_dir);
}

fn dpkg_deb_to(deb: &std::path::Path, flag: &str, dir: &std::path::Path) {
    let status = Command::new("dpkg-deb")
        .arg(flag)
        .arg(deb)
        .arg(dir)
        .status()
        .expect("run dpkg-deb");
    assert!(status.success(), "dpkg-deb {flag} failed");
}
