//! Validation: every error kind, with its line and column, all reported in one pass.

use std::path::Path;

use super::{Dest, PolicyError, SimState, from_str};

fn errors(text: &str) -> Vec<PolicyError> {
    match from_str(Path::new("p.toml"), text) {
        Ok(_) => panic!("policy should be invalid:\n{text}"),
        Err(e) => e.0,
    }
}

/// Assert exactly one error, on `line`, whose message contains `needle`.
fn one_error(text: &str, line: usize, needle: &str) {
    let errors = errors(text);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    let e = &errors[0];
    assert_eq!(e.line, line, "wrong line for {e}");
    assert!(e.message.contains(needle), "`{e}` lacks `{needle}`");
    assert_eq!(e.file, "p.toml");
}

const HEAD: &str = "pools = [\"10.64.0.0/16\", \"fd00:64::/48\"]\n[[segments]]\nname = \"a\"\n";

fn with(body: &str) -> String {
    format!("{HEAD}{body}")
}

#[test]
fn valid_policy_resolves_names() {
    let text = with(
        "rules = [ { to = [\"a\", \"198.51.100.0/24\", \"imsi:001010000000001\"], proto = \"tcp\", ports = [443, \"8000-8100\"] } ]\n\
         [[sims]]\nimsi = \"001010000000001\"\nipv4 = \"10.64.0.1\"\nipv6 = \"fd00:64:0:1::/64\"\nsegment = \"a\"\nstate = \"quarantined\"\n",
    );
    let policy = from_str(Path::new("p.toml"), &text).expect("valid");
    let rule = &policy.segments[0].rules[0];
    assert_eq!(rule.to[0], Dest::Segment(0));
    assert_eq!(rule.to[2], Dest::Sim(0));
    assert_eq!(rule.ports, vec![(443, 443), (8000, 8100)]);
    assert_eq!(rule.protos, vec![6]);
    assert_eq!(policy.sims[0].state, SimState::Quarantined);
    assert_eq!(rule.origin, "p.toml:4");
}

#[test]
fn unknown_keys_are_all_reported_with_their_place() {
    let text = with(
        "colour = \"red\"\n[[sims]]\nimsi = \"001010000000001\"\nipv4 = \"10.64.0.1\"\nsegment = \"a\"\nipsv4 = \"x\"\n",
    );
    let errors = errors(&text);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_eq!((errors[0].line, errors[0].column), (4, 1));
    assert!(errors[0].message.contains("unknown key `colour`"));
    assert_eq!(errors[1].line, 9);
    assert!(errors[1].message.contains("`ipsv4`"));
}

#[test]
fn unknown_key_in_an_inline_rule() {
    one_error(
        &with("rules = [ { to = [\"8.8.8.8\"], port = 53 } ]\n"),
        4,
        "unknown key `port`",
    );
}

#[test]
fn bad_cidr() {
    one_error(
        &with("rules = [ { to = [\"198.51.100.300/24\"] } ]\n"),
        4,
        "not a valid destination CIDR",
    );
}

#[test]
fn cidr_with_host_bits() {
    one_error("pools = [\"10.64.0.1/16\"]\n", 1, "write 10.64.0.0/16");
}

#[test]
fn rule_cidr_inside_a_pool_is_lateral() {
    one_error(
        &with("rules = [ { to = [\"10.64.1.0/24\"] } ]\n"),
        4,
        "lies inside pool 10.64.0.0/16",
    );
}

#[test]
fn sim_address_outside_every_pool() {
    one_error(
        &with("[[sims]]\nimsi = \"001010000000001\"\nipv4 = \"10.99.0.1\"\nsegment = \"a\"\n"),
        6,
        "outside every pool",
    );
}

#[test]
fn the_same_ip_twice() {
    one_error(
        &with(
            "[[sims]]\nimsi = \"001010000000001\"\nipv4 = \"10.64.0.1\"\nsegment = \"a\"\n[[sims]]\nimsi = \"001010000000002\"\nipv4 = \"10.64.0.1\"\nsegment = \"a\"\n",
        ),
        10,
        "given to two SIMs",
    );
}

#[test]
fn the_same_imsi_twice() {
    one_error(
        &with(
            "[[sims]]\nimsi = \"001010000000001\"\nipv4 = \"10.64.0.1\"\nsegment = \"a\"\n[[sims]]\nimsi = \"001010000000001\"\nipv4 = \"10.64.0.2\"\nsegment = \"a\"\n",
        ),
        9,
        "listed twice",
    );
}

#[test]
fn sim_in_an_unknown_segment() {
    one_error(
        &with("[[sims]]\nimsi = \"001010000000001\"\nipv4 = \"10.64.0.1\"\nsegment = \"b\"\n"),
        7,
        "unknown segment `b`",
    );
}

#[test]
fn reversed_port_range() {
    one_error(
        &with("rules = [ { to = [\"8.8.8.8\"], proto = \"udp\", ports = [\"100-50\"] } ]\n"),
        4,
        "reversed; write 50-100",
    );
}

#[test]
fn ports_without_tcp_or_udp() {
    one_error(
        &with("rules = [ { to = [\"8.8.8.8\"], proto = \"icmp\", ports = [53] } ]\n"),
        4,
        "`ports` need",
    );
}

#[test]
fn imsi_of_the_wrong_length() {
    one_error(
        &with("[[sims]]\nimsi = \"0010100000001\"\nipv4 = \"10.64.0.1\"\nsegment = \"a\"\n"),
        5,
        "14 or 15 digits",
    );
}

#[test]
fn imsi_with_letters() {
    one_error(
        &with("[[sims]]\nimsi = \"00101000000000A\"\nipv4 = \"10.64.0.1\"\nsegment = \"a\"\n"),
        5,
        "14 or 15 digits",
    );
}

#[test]
fn iccid_of_the_wrong_shape() {
    one_error(
        &with(
            "[[sims]]\nimsi = \"001010000000001\"\niccid = \"1234\"\nipv4 = \"10.64.0.1\"\nsegment = \"a\"\n",
        ),
        6,
        "ICCID `1234`",
    );
}

#[test]
fn msisdn_of_the_wrong_shape() {
    one_error(
        &with(
            "[[sims]]\nimsi = \"001010000000001\"\nmsisdn = \"+49-151\"\nipv4 = \"10.64.0.1\"\nsegment = \"a\"\n",
        ),
        6,
        "MSISDN",
    );
}

#[test]
fn ipv6_must_be_a_64() {
    one_error(
        &with(
            "[[sims]]\nimsi = \"001010000000001\"\nipv6 = \"fd00:64:0:1::/56\"\nsegment = \"a\"\n",
        ),
        6,
        "/64",
    );
}

#[test]
fn wrong_type_is_an_error_not_the_end() {
    let errors = errors(&with(
        "[[sims]]\nimsi = 1010000000001\nipv4 = \"10.64.0.1\"\nsegment = \"a\"\nstate = \"sleeping\"\n",
    ));
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(errors[0].message.contains("must be a string"));
    assert!(errors[1].message.contains("unknown state `sleeping`"));
}

#[test]
fn every_error_is_reported_not_only_the_first() {
    let text = "pools = [\"10.64.0.0/16\", \"10.64.1.0/24\"]\n\
                [[segments]]\nname = \"a\"\nrules = [ { to = [\"nowhere\"] } ]\n\
                [[segments]]\nname = \"a\"\n\
                [[sims]]\nimsi = \"1\"\nipv4 = \"10.1.1.1\"\nsegment = \"zz\"\n";
    let errors = errors(text);
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![1, 4, 6, 8, 9, 10], "{errors:#?}");
}

#[test]
fn syntax_error_names_the_place() {
    let errors = errors("pools = [\"10.64.0.0/16\"\n[[segments]]\n");
    assert_eq!(errors.len(), 1);
    assert!(
        errors[0].line >= 1 && errors[0].message.contains("README"),
        "{errors:?}"
    );
}

#[test]
fn missing_pools() {
    one_error("[[segments]]\nname = \"a\"\n", 1, "no `pools` declared");
}

#[test]
fn inventory_rows_are_checked_with_their_line() {
    let dir = std::env::temp_dir().join(format!("enforcer-inv-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    std::fs::write(
        dir.join("sims.csv"),
        "imsi,ipv4,segment,state\n001010000000001,10.64.0.1,a,\n001010000000002,10.99.0.1,a,active\n001010000000003,10.64.0.3,a,quarantined\n",
    )
    .expect("write inventory");
    let text = format!("inventory = \"sims.csv\"\n{HEAD}");
    let path = dir.join("p.toml");
    let errors = super::from_str(&path, &text)
        .expect_err("row 3 is outside the pools")
        .0;
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 3, "{errors:#?}");
    assert!(errors[0].file.ends_with("sims.csv"));
    std::fs::write(dir.join("sims.csv"), "imsi,ipv4,segment,state\n001010000000001,10.64.0.1,a,\n001010000000003,10.64.0.3,a,quarantined\n")
        .expect("write inventory");
    let policy = super::from_str(&path, &text).expect("valid inventory");
    assert_eq!(policy.sims.len(), 2);
    assert_eq!(policy.sims[1].state, SimState::Quarantined);
    std::fs::remove_dir_all(&dir).expect("clean up");
}

/// A fresh directory for files a test needs, removed when dropped.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir =
            std::env::temp_dir().join(format!("enforcer-policy-{}-{n}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        Self(dir)
    }

    fn write(&self, name: &str, body: &str) -> std::path::PathBuf {
        let path = self.0.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("parent dir");
        }
        std::fs::write(&path, body).expect("write file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Errors of the policy `text` written as `p.toml` in `dir`, with `options`.
fn errors_in(dir: &TempDir, text: &str, options: &super::LoadOptions) -> Vec<PolicyError> {
    let path = dir.write("p.toml", text);
    match super::load_with(&path, options) {
        Ok(_) => panic!("policy should be invalid:\n{text}"),
        Err(e) => e.0,
    }
}

fn one_error_in(
    dir: &TempDir,
    text: &str,
    options: &super::LoadOptions,
    needle: &str,
) -> PolicyError {
    let errors = errors_in(dir, text, options);
    assert_eq!(errors.len(), 1, "expected one error, got {errors:#?}");
    assert!(
        errors[0].message.contains(needle),
        "`{}` lacks `{needle}`",
        errors[0]
    );
    errors.into_iter().next().expect("one error")
}

fn inventory_policy(path: &str) -> String {
    format!("inventory = \"{path}\"\n{HEAD}")
}

// §2: inputs that reach outside the policy.

#[test]
fn inventory_absolute_path_is_refused_without_reading_it() {
    let dir = TempDir::new("abs");
    let e = one_error_in(
        &dir,
        &inventory_policy("/etc/passwd"),
        &super::LoadOptions::default(),
        "outside the policy file's directory",
    );
    assert!(e.message.contains("--inventory-dir"), "{e}");
    assert!(!e.message.contains("root:"), "{e}");
    assert_eq!((e.line, e.column), (1, 13), "{e}");
}

#[test]
fn inventory_dotdot_escape_is_refused() {
    let dir = TempDir::new("dotdot");
    let e = one_error_in(
        &dir,
        &inventory_policy("../../../../../../etc/passwd"),
        &super::LoadOptions::default(),
        "outside the policy file's directory",
    );
    assert!(!e.message.contains("root:"), "{e}");
}

#[test]
fn inventory_symlink_leaving_the_directory_is_refused() {
    let dir = TempDir::new("symlink");
    std::os::unix::fs::symlink("/etc/passwd", dir.0.join("sims.csv")).expect("symlink");
    one_error_in(
        &dir,
        &inventory_policy("sims.csv"),
        &super::LoadOptions::default(),
        "outside the policy file's directory",
    );
}

#[test]
fn inventory_in_a_subdirectory_and_through_dotdot_inside_is_read() {
    let dir = TempDir::new("inside");
    dir.write(
        "inv/sims.csv",
        "imsi,ipv4,segment\n001010000000001,10.64.0.1,a\n",
    );
    let path = dir.write("p.toml", &inventory_policy("inv/../inv/./sims.csv"));
    let policy = super::load(&path).expect("an inventory inside the directory is read");
    assert_eq!(policy.sims.len(), 1);
}

#[test]
fn inventory_dir_option_allows_another_directory() {
    let dir = TempDir::new("invdir");
    let inv = dir.write(
        "shared/sims.csv",
        "imsi,ipv4,segment\n001010000000001,10.64.0.1,a\n",
    );
    let text = inventory_policy(&inv.display().to_string());
    let policy_dir = TempDir::new("invdir-policy");
    let path = policy_dir.write("p.toml", &text);
    assert!(super::load(&path).is_err(), "refused without the option");
    let options = super::LoadOptions {
        inventory_dirs: vec![dir.0.join("shared")],
        ..super::LoadOptions::default()
    };
    let policy = super::load_with(&path, &options).expect("allowed by --inventory-dir");
    assert_eq!(policy.sims.len(), 1);
}

#[test]
fn a_file_that_is_not_an_inventory_is_never_quoted() {
    let dir = TempDir::new("notinv");
    dir.write(
        "sims.csv",
        "root:$6$secrethash:19000:0:99999:7:::\ndaemon:*:19000\n",
    );
    let e = one_error_in(
        &dir,
        &inventory_policy("sims.csv"),
        &super::LoadOptions::default(),
        "not an inventory",
    );
    assert!(
        !e.message.contains("root") && !e.message.contains("secret"),
        "{e}"
    );
    assert!(e.file.ends_with("sims.csv") && e.line == 1, "{e}");
}

#[test]
fn inventory_device_fifo_and_directory_are_refused_before_reading() {
    let dir = TempDir::new("special");
    let fifo = dir.0.join("fifo.csv");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success());
    std::fs::create_dir(dir.0.join("dir.csv")).expect("mkdir");
    let options = super::LoadOptions {
        inventory_dirs: vec!["/dev".into()],
        ..super::LoadOptions::default()
    };
    for (name, kind) in [
        ("/dev/zero", "is a device"),
        ("fifo.csv", "is a FIFO"),
        ("dir.csv", "is a directory"),
    ] {
        let started = std::time::Instant::now();
        one_error_in(&dir, &inventory_policy(name), &options, kind);
        assert!(
            started.elapsed().as_secs() < 5,
            "{name} took {:?}",
            started.elapsed()
        );
    }
}

#[test]
fn inventory_and_policy_over_the_size_limit_are_refused() {
    let dir = TempDir::new("limit");
    let rows: String = (1..=9)
        .map(|i| format!("00101000000000{i},10.64.0.{i},a\n"))
        .collect();
    dir.write("sims.csv", &format!("imsi,ipv4,segment\n{rows}"));
    let text = inventory_policy("sims.csv");
    let options = super::LoadOptions {
        max_file_bytes: u64::try_from(text.len()).expect("small"),
        ..super::LoadOptions::default()
    };
    one_error_in(&dir, &text, &options, "larger than");
    let options = super::LoadOptions {
        max_file_bytes: 10,
        ..super::LoadOptions::default()
    };
    let path = dir.write("p.toml", &text);
    let e = super::load_with(&path, &options)
        .expect_err("policy too large")
        .0;
    assert!(e[0].message.contains("larger than 10 bytes"), "{e:?}");
    assert!(e[0].message.contains("--max-file-size"), "{e:?}");
}

#[test]
fn policy_that_is_a_fifo_or_device_is_refused() {
    let dir = TempDir::new("policy-special");
    let fifo = dir.0.join("p.toml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("run mkfifo");
    assert!(status.success());
    for (path, kind) in [
        (fifo.as_path(), "FIFO"),
        (Path::new("/dev/zero"), "device"),
        (dir.0.as_path(), "directory"),
    ] {
        let e = super::load(path).expect_err("not a regular file").0;
        assert!(e[0].message.contains(kind), "{e:?}");
    }
}

#[test]
fn destinations_naming_a_pool_through_nat64_or_ipv4_mapped_are_lateral() {
    for to in [
        "64:ff9b::10.64.0.2",
        "64:ff9b::a40:0/120",
        "64:ff9b::/96",
        "::ffff:10.64.0.2/128",
        "::ffff:0:0/96",
        "::/0",
        "64:ff9b::/64",
    ] {
        one_error(
            &with(&format!("rules = [ {{ to = [\"{to}\"] }} ]\n")),
            4,
            "lateral",
        );
        let errors = errors(&with(&format!("rules = [ {{ to = [\"{to}\"] }} ]\n")));
        assert!(
            errors[0].message.contains("lateral") && errors[0].message.contains("10.64.0.0/16"),
            "{to}: {}",
            errors[0]
        );
    }
    let errors = errors(&with("rules = [ { to = [\"64:ff9b::10.64.0.2\"] } ]\n"));
    assert!(
        errors[0]
            .message
            .contains("is 10.64.0.2/32 written in the NAT64 well-known prefix 64:ff9b::/96, and lies inside pool 10.64.0.0/16"),
        "{}",
        errors[0]
    );
    // The same prefixes embedding an address outside every pool are ordinary destinations.
    for to in ["64:ff9b::192.0.2.1", "::ffff:198.51.100.0/120", "2000::/3"] {
        from_str(
            Path::new("p.toml"),
            &with(&format!("rules = [ {{ to = [\"{to}\"] }} ]\n")),
        )
        .unwrap_or_else(|e| panic!("{to}: {e}"));
    }
}

// §3: mistakes that used to pass silently.

fn inventory_errors(csv: &str) -> Vec<PolicyError> {
    let dir = TempDir::new("csv");
    dir.write("sims.csv", csv);
    errors_in(
        &dir,
        &inventory_policy("sims.csv"),
        &super::LoadOptions::default(),
    )
}

#[test]
fn inventory_header_with_a_repeated_column_is_an_error() {
    let errors = inventory_errors(
        "imsi,ipv4,segment,state,state\n001010000000001,10.64.0.1,a,active,quarantined\n",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(
        errors[0]
            .message
            .contains("column `state` appears twice (columns 4 and 5)"),
        "{}",
        errors[0]
    );
    let errors = inventory_errors(
        "imsi,imsi,ipv4,segment,segment\n001010000000001,001010000000002,10.64.0.1,a,a\n",
    );
    let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert!(
        messages[0].contains("`imsi` appears twice")
            && messages[1].contains("`segment` appears twice"),
        "{messages:?}"
    );
}

#[test]
fn inventory_header_with_unknown_or_missing_columns_names_them() {
    let errors = inventory_errors("imsi,ipv4,segmnt,colour\n001010000000001,10.64.0.1,a,red\n");
    let messages: Vec<&str> = errors.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(errors.len(), 3, "{errors:#?}");
    assert!(
        messages
            .iter()
            .any(|m| m.contains("unknown column `segmnt` (column 3)")),
        "{messages:?}"
    );
    assert!(
        messages
            .iter()
            .any(|m| m.contains("unknown column `colour` (column 4)")),
        "{messages:?}"
    );
    assert!(
        messages.iter().any(|m| m.contains("no `segment` column")),
        "{messages:?}"
    );
}

#[test]
fn the_same_iccid_or_msisdn_on_two_sims_points_at_the_first() {
    let sim = |n: u32, extra: &str| {
        format!(
            "[[sims]]\nimsi = \"00101000000000{n}\"\nipv4 = \"10.64.0.{n}\"\nsegment = \"a\"\n{extra}"
        )
    };
    one_error(
        &with(&format!(
            "{}{}",
            sim(1, "iccid = \"8901000000000000001\"\n"),
            sim(2, "iccid = \"8901000000000000001\"\n")
        )),
        13,
        "ICCID `8901000000000000001` is given to two SIMs (first at p.toml:4:1)",
    );
    one_error(
        &with(&format!(
            "{}{}",
            sim(1, "msisdn = \"+4915100000001\"\n"),
            sim(2, "msisdn = \"4915100000001\"\n")
        )),
        13,
        "is given to two SIMs (first at p.toml:4:1)",
    );
    let errors = inventory_errors(
        "imsi,iccid,ipv4,segment\n001010000000001,8901000000000000001,10.64.0.1,a\n001010000000002,8901000000000000001,10.64.0.2,a\n",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].message.contains("sims.csv:2)"), "{}", errors[0]);
    assert_eq!(errors[0].line, 3);
}

#[test]
fn pools_of_every_address_are_refused() {
    one_error(
        "pools = [\"0.0.0.0/0\"]\n",
        1,
        "every packet from outside the pools",
    );
    one_error("pools = [\"::/0\"]\n", 1, "holds every address");
}

#[test]
fn ipv6_pools_longer_than_64_are_refused() {
    one_error("pools = [\"fd00:64::/96\"]\n", 1, "longer than /64");
    from_str(Path::new("p.toml"), "pools = [\"fd00:64::/64\"]\n").expect("a /64 pool is fine");
}

#[test]
fn icmp_towards_the_other_family_never_matches() {
    one_error(
        &with("rules = [ { to = [\"2001:db8::/32\"], proto = \"icmp\" } ]\n"),
        4,
        "`icmp` never matches: every destination of this rule is IPv6; use `icmpv6`",
    );
    one_error(
        &with("rules = [ { to = [\"192.0.2.0/24\"], proto = [\"icmpv6\"] } ]\n"),
        4,
        "`icmpv6` never matches",
    );
    // A segment whose SIMs have only IPv6 addresses counts as IPv6.
    one_error(
        &with(
            "rules = [ { to = [\"a\"], proto = \"icmp\" } ]\n[[sims]]\nimsi = \"001010000000001\"\nipv6 = \"fd00:64:0:1::/64\"\nsegment = \"a\"\n",
        ),
        4,
        "`icmp` never matches",
    );
    for ok in [
        "rules = [ { to = [\"2001:db8::/32\", \"192.0.2.0/24\"], proto = \"icmp\" } ]\n",
        "rules = [ { to = [\"2001:db8::/32\"], proto = [\"icmp\", \"icmpv6\"] } ]\n",
        "rules = [ { to = [\"2001:db8::/32\"], proto = [\"icmp\", \"tcp\"] } ]\n",
    ] {
        from_str(Path::new("p.toml"), &with(ok)).unwrap_or_else(|e| panic!("{ok}: {e}"));
    }
}

#[test]
fn port_zero_and_signed_ports_are_refused() {
    for port in [
        "0",
        "\"0\"",
        "\"+443\"",
        "\"-1\"",
        "\"0-0\"",
        "\"+80-90\"",
        "\"4 43\"",
    ] {
        let errors = errors(&with(&format!(
            "rules = [ {{ to = [\"8.8.8.8\"], proto = \"tcp\", ports = [{port}] }} ]\n"
        )));
        assert_eq!(errors.len(), 1, "{port}: {errors:#?}");
        assert!(errors[0].message.contains("port"), "{port}: {}", errors[0]);
    }
    let policy = from_str(
        Path::new("p.toml"),
        &with("rules = [ { to = [\"8.8.8.8\"], proto = \"tcp\", ports = [\"1-1023\", \" 443 \", 65535] } ]\n"),
    )
    .expect("valid ports");
    assert_eq!(
        policy.segments[0].rules[0].ports,
        vec![(1, 1023), (443, 443), (65535, 65535)]
    );
}

#[test]
fn rules_of_a_sim_with_an_invalid_imsi_are_still_checked() {
    let errors = errors(&with(
        "[[sims]]\nimsi = \"12\"\nipv4 = \"10.64.0.1\"\nsegment = \"a\"\nrules = [ { to = [\"nowhere\"] } ]\n",
    ));
    let lines: Vec<usize> = errors.iter().map(|e| e.line).collect();
    assert_eq!(lines, vec![5, 8], "{errors:#?}");
    assert!(errors[1].message.contains("`nowhere`"), "{}", errors[1]);
}

// §4: messages.

#[test]
fn errors_of_one_kind_are_capped_with_a_count() {
    let mut csv = String::from("imsi,ipv4,segment\n");
    for i in 1..=25 {
        csv.push_str(&format!("0010100000000{i:02},10.64.0.{i},metres\n"));
    }
    csv.push_str("001010000000099,10.99.0.1,a\n");
    let dir = TempDir::new("cap");
    dir.write("sims.csv", &csv);
    let path = dir.write("p.toml", &inventory_policy("sims.csv"));
    let errors = super::load(&path).expect_err("invalid");
    assert_eq!(errors.count(), 26, "{errors}");
    let shown = &errors.0;
    assert_eq!(shown.len(), 12, "{errors}");
    assert!(
        shown[..10]
            .iter()
            .all(|e| e.message.contains("unknown segment `metres`"))
    );
    assert_eq!(
        shown[10].message, "… and 15 more rows with unknown segment `metres`",
        "{errors}"
    );
    assert_eq!(
        shown[10].line, 12,
        "the summary stands at the first row it stands for"
    );
    assert!(shown[11].message.contains("outside every pool"), "{errors}");
    let text = errors.to_string();
    assert!(
        text.contains("(26 errors; at most 10 of each kind shown)"),
        "{text}"
    );
}

#[test]
fn segment_prefix_with_an_unknown_name_says_unknown_segment() {
    one_error(
        &with("rules = [ { to = [\"segment:nope\"] } ]\n"),
        4,
        "unknown segment `nope`",
    );
}

#[test]
fn segments_written_as_a_table_get_a_hint() {
    let found = errors("pools = [\"10.64.0.0/16\"]\n[segments]\nname = \"a\"\n");
    assert_eq!(found.len(), 1, "{found:#?}");
    assert!(
        found[0].message.contains("write `[[segments]]`"),
        "{}",
        found[0]
    );
    assert_eq!(found[0].line, 2, "{}", found[0]);
    let sims = errors("pools = [\"10.64.0.0/16\"]\n[sims]\nimsi = \"001010000000001\"\n");
    assert!(sims[0].message.contains("write `[[sims]]`"), "{}", sims[0]);
    let rules = errors(&with("[segments.rules]\nto = [\"8.8.8.8\"]\n"));
    assert!(
        rules[0].message.contains("write `[[segments.rules]]`"),
        "{}",
        rules[0]
    );
}

#[test]
fn datetimes_are_named_as_such() {
    for text in [
        "pools = [\"10.64.0.0/16\"]\n[[segments]]\nname = 1979-05-27\n",
        "pools = [\"10.64.0.0/16\"]\nsegments = 1979-05-27T07:32:00Z\n",
        "pools = [\"10.64.0.0/16\"]\n[[segments]]\nname = \"a\"\nrules = [ 1979-05-27 ]\n",
        "pools = 1979-05-27\n",
    ] {
        let errors = errors(text);
        for e in &errors {
            assert!(!e.message.contains("toml_private"), "{e}");
        }
        assert!(
            errors.iter().any(|e| e.message.contains("date")),
            "{text}: {errors:#?}"
        );
    }
}

#[test]
fn syntax_errors_are_one_line() {
    for text in [
        "pools = [\"10.64.0.0/16\"\n[[segments]]\n",
        "pools = [\"10.64.0.0/16\"]\n[[segments]\nname = \"a\"\n",
        "pools = \n",
        "pools = [\"10.64.0.0/16\"]\npools = [\"10.65.0.0/16\"]\n",
    ] {
        let errors = errors(text);
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(!errors[0].message.contains('\n'), "{:?}", errors[0].message);
        assert!(errors[0].line >= 1, "{:?}", errors[0]);
    }
}

#[test]
fn long_values_are_not_echoed_whole() {
    let numbers: Vec<String> = (0..20_000).map(|n| n.to_string()).collect();
    let long = "x".repeat(100_000);
    for text in [
        format!(
            "pools = [\"10.64.0.0/16\"]\ninventory = [{}]\n",
            numbers.join(", ")
        ),
        with(&format!(
            "rules = [ {{ to = [\"8.8.8.8\"], proto = [{}] }} ]\n",
            numbers.join(", ")
        )),
        with(&format!("rules = [ {{ to = [\"{long}\"] }} ]\n")),
        format!("pools = [\"10.64.0.0/16\"]\nsegments = \"{long}\"\n"),
    ] {
        let errors = errors(&text);
        let total: usize = errors.iter().map(|e| e.message.len()).sum();
        assert!(total < 4_000, "{} bytes of messages", total);
    }
}

#[test]
fn columns_are_right_after_a_byte_order_mark() {
    let errors = errors("\u{feff}pools = [\"10.64.0.1/16\"]\n");
    assert_eq!((errors[0].line, errors[0].column), (1, 10), "{errors:?}");
    let errors = inventory_errors("\u{feff}imsi,ipv4,segment\n001010000000001,10.64.0.1,b\n");
    assert_eq!(
        errors.len(),
        1,
        "the BOM is not part of the `imsi` column: {errors:#?}"
    );
    assert!(errors[0].message.contains("unknown segment `b`"));
}

#[test]
fn an_unclosed_csv_quote_names_the_line_it_opened_on() {
    let errors = inventory_errors(
        "imsi,ipv4,segment\n001010000000001,10.64.0.1,a\n\"001010000000002,10.64.0.2,a\n001010000000003,10.64.0.3,a\n001010000000004,10.64.0.4,a\n",
    );
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_eq!(errors[0].line, 3, "{}", errors[0]);
    assert!(
        errors[0]
            .message
            .contains("a quote opened in column `imsi` on line 3 is not closed"),
        "{}",
        errors[0]
    );
}

#[test]
fn duplicates_point_at_their_first_occurrence() {
    let sim = |imsi: &str, ip: &str| {
        format!("[[sims]]\nimsi = \"{imsi}\"\nipv4 = \"{ip}\"\nsegment = \"a\"\n")
    };
    one_error(
        &with(&format!(
            "{}{}",
            sim("001010000000001", "10.64.0.1"),
            sim("001010000000001", "10.64.0.2")
        )),
        9,
        "(first at p.toml:4:1)",
    );
    one_error(
        &with(&format!(
            "{}{}",
            sim("001010000000001", "10.64.0.1"),
            sim("001010000000002", "10.64.0.1")
        )),
        10,
        "(first at p.toml:4:1)",
    );
    one_error(
        &with("[[segments]]\nname = \"a\"\n"),
        5,
        "declared twice (first at p.toml:3:8)",
    );
    one_error(
        "pools = [\"10.64.0.0/16\",\n  \"10.64.1.0/24\"]\n",
        2,
        "overlaps pool 10.64.0.0/16 (at p.toml:1:10)",
    );
    one_error(
        "pools = [\"10.64.0.0/16\"]\n  pools = [\"10.65.0.0/16\"]\n",
        2,
        "duplicate key `pools` in document root (first at p.toml:1:1)",
    );
}

/// The result of loading `inventory` (as `sims.csv`, beside a policy with segment `a`), once
/// through the fast path where it applies and once through the `csv` crate only.
fn both_readers(
    dir: &TempDir,
    inventory: &str,
) -> [Result<super::ValidatedPolicy, super::PolicyErrors>; 2] {
    both_readers_with(dir, &inventory_policy("sims.csv"), inventory)
}

/// As [`both_readers`], with policy `text`.
fn both_readers_with(
    dir: &TempDir,
    text: &str,
    inventory: &str,
) -> [Result<super::ValidatedPolicy, super::PolicyErrors>; 2] {
    dir.write("sims.csv", inventory);
    let path = dir.write("p.toml", text);
    [false, true].map(|only_csv| {
        super::inventory::ONLY_CSV.set(only_csv);
        let result = super::load(&path);
        super::inventory::ONLY_CSV.set(false);
        result
    })
}

#[test]
fn plain_inventories_read_by_hand_give_what_the_csv_crate_gives() {
    let dir = TempDir::new("fast-path");
    let row = |n: u32| format!("00101000000{n:04},10.64.0.{n},a,\n");
    let rows: String = (1..=5).map(row).collect();
    let plain = [
        format!("imsi,ipv4,segment,state\n{rows}"),
        // No line end after the last row.
        format!("imsi,ipv4,segment,state\n{}", rows.trim_end()),
        // `#` counts as a comment only first on a line.
        format!(
            "imsi,ipv4,segment,state\n{}001010000000009,10.64.0.9,a#b,\n",
            row(1)
        ),
        // Odd spacing: spaces, tabs and vertical tabs around fields and the header's names.
        format!(
            " imsi ,\tipv4, segment ,state \n 001010000000001 ,\t10.64.0.1\x0b, a , \n{}",
            row(2)
        ),
        // A line of spaces is a row of one field; a trailing comma is one field too many.
        format!(
            "imsi,ipv4,segment,state\n{}   \n{}001010000000009,10.64.0.9,a,,\n",
            row(1),
            row(2)
        ),
        // Errors on the first and the last row, and a repeated IMSI and address.
        format!(
            "imsi,ipv4,segment,state\n0010100000001,10.64.0.100,a,\n{rows}001010000000001,10.64.0.1,b,paused\n"
        ),
        "imsi,iccid,msisdn,ipv4,ipv6,segment,state\n001010000000001,8949000000000000001,+491700000001,,fd00:64:0:1::/64,a,\n001010000000002,8949000000000000001,491700000001,10.64.0.2,fd00:64:0:1::/64,a,active\n"
            .to_owned(),
        // Header problems.
        "imsi,ipv4,segment,colour\n".to_owned(),
        "imsi,ipv4,imsi,segment\n".to_owned(),
        "ipv4,state\n".to_owned(),
        "root:x:0:0:root:/root:/bin/bash\n".to_owned(),
        "imsi,ipv4,segment\n".to_owned(),
    ];
    for (case, inventory) in plain.iter().enumerate() {
        assert!(
            super::inventory::fast::applies(inventory.as_bytes()),
            "case {case} should take the fast path"
        );
        let [fast, csv] = both_readers(&dir, inventory);
        assert_eq!(fast, csv, "case {case}:\n{inventory}");
    }
    // Anything else goes to the csv crate: quotes, a byte order mark, `\r`, non-ASCII, blank
    // lines and comments (which the csv crate numbers lines oddly after).
    let other = [
        format!(
            "imsi,ipv4,segment,state\n\"001010000000001\",10.64.0.1,a,\n{}",
            row(2)
        ),
        format!("\u{feff}imsi,ipv4,segment,state\n{rows}"),
        format!("imsi,ipv4,segment,state\n{rows}").replace('\n', "\r\n"),
        format!("imsi,ipv4,segment,state\r{}", row(1).replace('\n', "\r")),
        format!(
            "imsi,ipv4,segment,state\n{}001010000000009,10.64.0.9,é,\n",
            row(1)
        ),
        format!("# export\n\nimsi,ipv4,segment,state\n# a comment\n\n{rows}\r\n#end"),
        format!("\nimsi,ipv4,segment,state\n{rows}"),
        // A plain header, then a blank line, a comment, a quote or `\r` further down.
        format!("imsi,ipv4,segment,state\n{}\n{}", row(1), row(2)),
        format!("imsi,ipv4,segment,state\n{rows}# end\n"),
        format!("imsi,ipv4,segment,state\n{rows}001010000000009,\"10.64.0.9\",a,\n"),
        format!("imsi,ipv4,segment,state\n{rows}001010000000009,10.64.0.9,a,\r\n"),
        "imsi,colour\n\"x\",1\n".to_owned(),
        String::new(),
    ];
    for (case, inventory) in other.iter().enumerate() {
        assert!(
            !super::inventory::fast::applies(inventory.as_bytes()) || inventory.is_empty(),
            "case {case} should not take the fast path"
        );
        let [fast, csv] = both_readers(&dir, inventory);
        assert_eq!(fast, csv, "case {case}:\n{inventory}");
    }
    // The plain cases did load or fail as expected, not all the same way.
    let [ok, _] = both_readers(&dir, &plain[1]);
    assert_eq!(ok.expect("valid").sims.len(), 5);
    let [bad, _] = both_readers(&dir, &plain[5]);
    let lines: Vec<usize> = bad.expect_err("invalid").0.iter().map(|e| e.line).collect();
    assert_eq!(lines, [2, 8, 8, 8, 8], "first and last rows");
}

#[test]
fn a_large_inventory_checked_on_two_threads_gives_what_the_csv_crate_gives() {
    let dir = TempDir::new("two-threads");
    // Over 1 MiB of rows, so that they are split in two at a line end.
    let n = 30_000u32;
    let row = |i: u32| {
        let state = if i.is_multiple_of(7) {
            "quarantined"
        } else {
            ""
        };
        format!(
            "0010100{i:08},10.64.{}.{},fd00:64:0:{i:x}::/64,a,{state}\n",
            i / 256,
            i % 256
        )
    };
    let rows: Vec<String> = (0..n).map(row).collect();
    let inventory = |rows: &[String]| format!("imsi,ipv4,ipv6,segment,state\n{}", rows.concat());
    assert!(inventory(&rows).len() > 1 << 20);
    let middle = (n / 2) as usize;
    // A rule naming an inventory SIM, a policy SIM, and the SIMs of the inventory.
    let text = format!(
        "inventory = \"sims.csv\"\n{HEAD}rules = [{{ to = [\"imsi:0010100{middle:08}\"] }}]\n\
         [[sims]]\nimsi = \"999990000000001\"\nipv4 = \"10.64.255.1\"\nsegment = \"a\"\n"
    );
    let [fast, csv] = both_readers_with(&dir, &text, &inventory(&rows));
    let policy = fast.expect("valid");
    assert_eq!(policy.sims.len(), n as usize + 1);
    let index = u32::try_from(middle).expect("index") + 1;
    assert_eq!(policy.segments[0].rules[0].to, [Dest::Sim(index)]);
    assert_eq!(Ok(policy), csv);
    // Repeats and bad rows at both ends of each half, and across the halves.
    let mut broken = rows.clone();
    broken[0] = rows[n as usize - 1].clone();
    broken[middle - 1] = row(n + 1).replace(",a,", ",b,");
    broken[middle] = row(n + 2).replace("fd00:64", "fd00:65");
    broken[middle + 1] = rows[middle - 2].clone();
    broken.push("999990000000001,10.64.255.1,,a,\n".to_owned());
    let [fast, csv] = both_readers_with(&dir, &text, &inventory(&broken));
    let errors = fast.expect_err("invalid");
    assert_eq!(Err(errors.clone()), csv);
    assert!(errors.0.len() >= 6, "{errors}");
}

#[test]
fn the_quick_ipv4_reader_accepts_only_what_the_standard_one_does() {
    let texts = [
        "10.64.0.1",
        "0.0.0.0",
        "255.255.255.255",
        "1.2.3.4",
        "256.1.1.1",
        "01.2.3.4",
        "1.2.3.04",
        "1.2.3",
        "1.2.3.4.5",
        "1..3.4",
        ".1.2.3",
        "1.2.3.",
        "1.2.3.4 ",
        "+1.2.3.4",
        "1.2.3.1000",
        "a.b.c.d",
        "",
        "::1",
        "1.2.3.-4",
        "0.00.0.0",
    ];
    for text in texts {
        let standard = text.parse::<std::net::Ipv4Addr>().ok();
        let quick = super::validate::dotted_quad(text);
        assert!(
            quick.is_none() || quick == standard,
            "{text}: {quick:?} vs {standard:?}"
        );
        if text == "10.64.0.1" || text == "255.255.255.255" || text == "0.0.0.0" {
            assert_eq!(quick, standard, "{text}");
        }
    }
}

#[test]
fn core_sources_are_checked_and_kept() {
    let text = format!(
        "core_sources = [\"192.0.2.0/29\", \"2001:db8:ff::/48\", \"192.0.2.0/29\"]\n{HEAD}"
    );
    let policy = from_str(Path::new("p.toml"), &text).expect("valid");
    assert_eq!(
        policy.core_sources,
        vec![
            "192.0.2.0/29".parse().expect("cidr"),
            "2001:db8:ff::/48".parse().expect("cidr"),
        ]
    );
    one_error(
        &HEAD.replacen("pools", "core_sources = [\"10.64.1.0/24\"]\npools", 1),
        1,
        "core source 10.64.1.0/24 overlaps pool 10.64.0.0/16",
    );
    one_error(
        &format!("core_sources = [\"0.0.0.0/0\"]\n{HEAD}"),
        1,
        "holds every address",
    );
    one_error(
        &format!("core_sources = [\"192.0.2.300/29\"]\n{HEAD}"),
        1,
        "192.0.2.300/29",
    );
    one_error(&format!("core_sources = [29]\n{HEAD}"), 1, "core_sources");
}

#[test]
fn inbound_rules_are_checked_and_kept() {
    let text = with(
        "inbound = [ { from = [\"192.0.2.10\", \"2001:db8:ff::/48\"], proto = \"tcp\", ports = [22], description = \"maintenance\" } ]\n",
    );
    let policy = from_str(Path::new("p.toml"), &text).expect("valid");
    let inbound = &policy.segments[0].inbound;
    assert_eq!(inbound.len(), 1);
    assert_eq!(
        inbound[0].to,
        vec![
            Dest::Net("192.0.2.10/32".parse().expect("cidr")),
            Dest::Net("2001:db8:ff::/48".parse().expect("cidr")),
        ]
    );
    assert_eq!(inbound[0].protos, vec![6]);
    assert_eq!(inbound[0].ports, vec![(22, 22)]);
    assert_eq!(inbound[0].origin, "p.toml:4");
    assert_eq!(policy.rule_count(), 1);
    assert_eq!(
        policy.owner_name(crate::policy::RuleOwner::Inbound(0)),
        "segment a inbound"
    );
    // Each mistake is named where it stands.
    one_error(
        &with("inbound = [ { from = [\"10.64.1.0/24\"], proto = \"tcp\" } ]\n"),
        4,
        "inbound source 10.64.1.0/24 overlaps pool 10.64.0.0/16",
    );
    one_error(
        &with("inbound = [ { from = [\"0.0.0.0/0\"], proto = \"tcp\" } ]\n"),
        4,
        "holds every address",
    );
    one_error(
        &with("inbound = [ { proto = \"tcp\", ports = [22] } ]\n"),
        4,
        "inbound rule without `from`",
    );
    one_error(
        &with("inbound = [ { from = [\"segment:a\"] } ]\n"),
        4,
        "not a valid inbound source CIDR",
    );
    one_error(
        &with("inbound = [ { from = [\"192.0.2.1\"], ports = [22] } ]\n"),
        4,
        "`ports` need",
    );
    one_error(
        &with("inbound = [ { from = [\"192.0.2.1\"], to = [\"a\"] } ]\n"),
        4,
        "unknown key `to` in an inbound rule; expected one of: from, proto, ports",
    );
}

/// A segment's `alerts` table: inline or standard, each threshold in range; a value out of
/// range or an unknown key is an error at its line.
#[test]
fn segment_alerts_are_validated() {
    let policy = from_str(
        Path::new("p.toml"),
        &with("alerts = { deny_rate = 20, learn_destinations = 3600, burst = 10 }\n"),
    )
    .expect("valid");
    let alerts = policy.segments[0].alerts;
    assert_eq!(
        (alerts.deny_rate, alerts.learn_destinations, alerts.burst),
        (Some(20), Some(3600), Some(10))
    );
    let policy = from_str(
        Path::new("p.toml"),
        &with("[segments.alerts]\ndeny_rate = 5\n"),
    )
    .expect("valid");
    assert_eq!(policy.segments[0].alerts.deny_rate, Some(5));
    assert_eq!(policy.segments[0].alerts.burst, None);
    one_error(
        &with("alerts = { deny_rate = 0 }\n"),
        4,
        "`alerts.deny_rate` must be a whole number of packets a second from 1 to 1000000",
    );
    one_error(&with("alerts = { burst = \"x\" }\n"), 4, "`alerts.burst`");
    one_error(
        &with("alerts = { deny_rates = 5 }\n"),
        4,
        "unknown key `deny_rates` in `alerts`; expected one of: deny_rate, learn_destinations, burst",
    );
}

/// `mode`: `enforce` (the default) or `audit`; anything else is an error at its line.
#[test]
fn segment_mode_is_enforce_or_audit() {
    let policy = from_str(Path::new("p.toml"), &with("mode = \"audit\"\n")).expect("valid");
    assert!(policy.segments[0].audit);
    let policy = from_str(Path::new("p.toml"), &with("mode = \"enforce\"\n")).expect("valid");
    assert!(!policy.segments[0].audit);
    one_error(
        &with("mode = \"dry-run\"\n"),
        4,
        "`mode` is `enforce` (the default) or `audit`, not `dry-run`",
    );
}

#[test]
fn imei_locks_of_sims_and_segments() {
    use super::{ImeiLock, ImeiMismatch};
    let text = format!(
        "imei_mismatch = \"quarantine\"\n{HEAD}imei_lock = \"tac:35209900\"\n\
         [[sims]]\nimsi = \"001010000000001\"\nsegment = \"a\"\nimei_lock = \"352099001761481\"\n\
         [[sims]]\nimsi = \"001010000000002\"\nsegment = \"a\"\n\
         [[sims]]\nimsi = \"001010000000003\"\nsegment = \"a\"\nimei_lock = \"off\"\n"
    );
    let policy = from_str(Path::new("p.toml"), &text).expect("valid");
    assert_eq!(policy.imei_mismatch, ImeiMismatch::Quarantine);
    let lock = |i: usize| policy.imei_lock(&policy.sims[i]).cloned();
    assert_eq!(lock(0), Some(ImeiLock::Imei("35209900176148".into())));
    assert_eq!(lock(1), Some(ImeiLock::Tac("35209900".into())));
    assert_eq!(lock(2), None, "`off` overrides the segment's lock");
    // A SIM without an address is valid: the packet core gives it one.
    assert!(policy.sims.iter().all(|s| s.ipv4().is_none()));

    // IMEISV: TAC, serial number, software version; the check digit of an IMEI is not in it.
    let imei = ImeiLock::parse("352099001761481").expect("IMEI");
    assert!(imei.allows("3520990017614823"));
    assert!(!imei.allows("3520990017614923"));
    assert!(!imei.allows("35209900"), "too short to be a device");
    let tac = ImeiLock::parse("tac:35209900").expect("TAC");
    assert!(tac.allows("3520990099999901") && !tac.allows("3520990199999901"));
    for bad in [
        "12345",
        "tac:123",
        "tac:3520990a",
        "learned",
        "35209900176148x",
    ] {
        assert!(ImeiLock::parse(bad).is_err(), "{bad}");
    }
}

#[test]
fn bad_imei_locks_name_their_place() {
    one_error(
        &with("[[sims]]\nimsi = \"001010000000001\"\nsegment = \"a\"\nimei_lock = \"12\"\n"),
        7,
        "is no IMEI lock",
    );
    one_error(
        &with("imei_lock = \"352099001761481\"\n"),
        4,
        "a segment's `imei_lock` is `learn` or `tac:`",
    );
    one_error(
        &format!("imei_mismatch = \"kill\"\n{HEAD}"),
        1,
        "`imei_mismatch` is `drop` (the default) or `quarantine`",
    );
}

#[test]
fn apns_map_sessions_of_unknown_imsis_to_segments() {
    let text = format!(
        "unknown_imsi = \"admit\"\n{HEAD}apns = [\"Meters.Example\", \"m2m\"]\n\
         [[segments]]\nname = \"b\"\napns = [\"ev.example\"]\n"
    );
    let policy = from_str(Path::new("p.toml"), &text).expect("valid");
    assert!(policy.admit_unknown);
    assert_eq!(policy.segments[0].apns, ["meters.example", "m2m"]);
    assert_eq!(policy.segment_of_apn("meters.example"), Some(0));
    assert_eq!(
        policy.segment_of_apn("METERS.EXAMPLE.mnc001.mcc001.gprs"),
        Some(0)
    );
    assert_eq!(policy.segment_of_apn("ev.example"), Some(1));
    assert_eq!(policy.segment_of_apn("other"), None);
    let refusing = from_str(Path::new("p.toml"), &with("")).expect("valid");
    assert!(
        !refusing.admit_unknown,
        "unknown IMSIs are refused by default"
    );
}

#[test]
fn bad_apns_name_their_place() {
    one_error(&with("apns = [\"bad apn\"]\n"), 4, "is no APN");
    one_error(&with("apns = \"meters\"\n"), 4, "`apns` is a list");
    one_error(
        &format!("{HEAD}apns = [\"m\"]\n[[segments]]\nname = \"b\"\napns = [\"M\"]\n"),
        7,
        "listed by another segment too",
    );
    one_error(
        &format!("unknown_imsi = \"maybe\"\n{HEAD}"),
        1,
        "`unknown_imsi` is `refuse` (the default) or `admit`",
    );
}

#[test]
fn a_single_sim_can_be_in_audit_mode() {
    let text = with(
        "[[sims]]\nimsi = \"001010000000001\"\nipv4 = \"10.64.0.1\"\nsegment = \"a\"\nmode = \"audit\"\n\
         [[sims]]\nimsi = \"001010000000002\"\nipv4 = \"10.64.0.2\"\nsegment = \"a\"\nmode = \"enforce\"\n",
    );
    let policy = from_str(Path::new("p.toml"), &text).expect("valid");
    assert!(policy.sims[0].audit());
    assert!(!policy.sims[1].audit());
    assert!(!policy.segments[0].audit, "the segment itself enforces");
    one_error(
        &with("[[sims]]\nimsi = \"001010000000001\"\nsegment = \"a\"\nmode = \"dry\"\n"),
        7,
        "`mode` is `enforce` (the default) or `audit`",
    );
}
