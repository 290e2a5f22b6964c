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
