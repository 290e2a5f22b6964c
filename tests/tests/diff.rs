//! `enforcer policy diff` through the binary: exit status like diff(1) (0 same, 1 different,
//! 2 error), the text sections with file:line, and the JSON shape.

use std::{path::PathBuf, process::Command};

use integration_tests::{Scratch, enforcer_bin};

fn enforcer(args: &[&str]) -> std::process::Output {
    Command::new(enforcer_bin())
        .args(args)
        .output()
        .expect("run enforcer")
}

fn example() -> String {
    std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policy.toml"),
    )
    .expect("read the example")
}

/// Write `text` as `name.toml` in `scratch` (removed when the test ends, passed or not).
fn write(scratch: &Scratch, name: &str, text: &str) -> String {
    scratch.write(&format!("{name}.toml"), text)
}

/// The example with one SIM quarantined, one SIM added, one rule's port changed and the
/// segment `meters` renamed in nothing but its description.
fn edited() -> String {
    example()
        .replacen(
            "imsi = \"001010000000202\"\nipv4 = \"10.66.0.2\"\nsegment = \"industrial\"",
            "imsi = \"001010000000202\"\nipv4 = \"10.66.0.2\"\nsegment = \"industrial\"\nstate = \
             \"quarantined\"",
            1,
        )
        .replacen("ports = [\"502\", \"44818\"]", "ports = [\"502\"]", 1)
        .replacen(
            "description = \"Smart meters on APN meters.example\"",
            "description = \"Smart meters\"",
            1,
        )
        + "\n[[sims]]\nimsi = \"001010000000203\"\nipv4 = \"10.66.0.3\"\nsegment = \"industrial\"\n"
}

#[test]
fn diff_exits_0_for_the_same_policy_1_for_changes_2_for_errors() {
    let scratch = Scratch::new("diff-exit");
    let old = write(&scratch, "same-old", &example());
    let same = enforcer(&["policy", "diff", &old, &old]);
    assert_eq!(same.status.code(), Some(0), "{:?}", same);
    assert!(String::from_utf8_lossy(&same.stdout).contains("no differences"));

    let new = write(&scratch, "changed", &edited());
    let changed = enforcer(&["policy", "diff", &old, &new]);
    let out = String::from_utf8_lossy(&changed.stdout);
    assert_eq!(changed.status.code(), Some(1), "{out}");
    for needle in [
        "segments:\n  ~ meters  description Smart meters on APN meters.example -> Smart meters",
        "SIMs:\n  + 001010000000203  segment industrial, active, 10.66.0.3",
        "  ~ 001010000000202  state active -> quarantined",
        "  segment industrial:\n    + ",
        "{ to = [\"203.0.113.0/24\"], proto = \"tcp\", ports = [502] }",
        "/same-old.toml:40  { to = [\"203.0.113.0/24\"], proto = \"tcp\", ports = [502, 44818] }",
        "5 differences",
    ] {
        assert!(out.contains(needle), "`{needle}` missing from:\n{out}");
    }

    let invalid = write(&scratch, "invalid", "pools = [\"10.64.0.0/33\"]\n");
    let error = enforcer(&["policy", "diff", &old, &invalid]);
    assert_eq!(error.status.code(), Some(2), "{error:?}");
    let err = String::from_utf8_lossy(&error.stderr);
    assert!(
        err.contains("reading the new policy") && err.contains(":1:"),
        "{err}"
    );
    assert!(error.stdout.is_empty());
    let missing = enforcer(&["policy", "diff", "/nonexistent/old.toml", &old]);
    assert_eq!(missing.status.code(), Some(2));
}

#[test]
fn diff_json_lists_changes_by_identity() {
    let scratch = Scratch::new("diff-json");
    let old = write(&scratch, "json-old", &example());
    let new = write(&scratch, "json-new", &edited());
    let out = enforcer(&["policy", "diff", &old, &new, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(json["sims_added"][0]["imsi"], "001010000000203");
    assert_eq!(json["sims_changed"][0]["name"], "001010000000202");
    assert_eq!(json["sims_changed"][0]["fields"][0]["field"], "state");
    assert_eq!(json["rules"][0]["owner"], "segment industrial");
    assert!(
        json["rules"][0]["removed"][0]["origin"]
            .as_str()
            .is_some_and(|o| o.ends_with("/json-old.toml:40")),
        "{json}"
    );
    assert_eq!(json["pools_added"], serde_json::json!([]));
}
