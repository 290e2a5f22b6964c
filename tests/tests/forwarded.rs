//! What the kernel will forward (issue: packet bounds, source routing, non-IP frames): every
//! fixture gets its verdict from the real program and the reference model, and `enforcer
//! policy replay` shows the same verdicts for the same frames read from pcap and pcapng files.

use std::{path::PathBuf, process::Command};

use enforcer_common::{Verdict, maps::IFACE_DROP_NON_POOL};
use integration_tests::{
    Scratch, enforcer_bin,
    forwarded::{Fixture, POLICY, fixtures},
    harness::{Harness, TEST_IFINDEX, hex},
};

/// The SIM's TCP/443 frame to the payment host: rule 0 of the fixtures' policy.
fn allowed() -> integration_tests::frames::Frame {
    integration_tests::frames::Frame::new(
        "10.64.0.1",
        "198.51.100.10",
        integration_tests::frames::L4::Tcp(443),
    )
}

fn name(verdict: Verdict) -> String {
    enforcer::replay::verdict_name(verdict)
}

#[test]
fn every_forwarding_fixture_gets_its_verdict() {
    for core_facing in [false, true] {
        let flags = if core_facing { IFACE_DROP_NON_POOL } else { 0 };
        let mut harness = Harness::new(POLICY, &[(TEST_IFINDEX, flags)]);
        for Fixture {
            name,
            frame,
            expected,
            ..
        } in fixtures()
            .into_iter()
            .filter(|f| f.core_facing == core_facing)
        {
            let reference = harness.reference.evaluate(&frame, TEST_IFINDEX).verdict;
            assert_eq!(
                reference,
                expected,
                "reference model, fixture `{name}`: {}",
                hex(&frame)
            );
            let kernel = harness.check(&frame).verdict;
            assert_eq!(kernel, expected, "fixture `{name}`: {}", hex(&frame));
        }
    }
}

/// A scratch directory with the test policy written in it.
fn with_policy(tag: &str) -> (Scratch, PathBuf) {
    let scratch = Scratch::new(&format!("replay-{tag}"));
    let policy = scratch.0.join("policy.toml");
    std::fs::write(&policy, POLICY).expect("write policy");
    (scratch, policy)
}

fn write_pcap(path: &PathBuf, frames: &[&[u8]]) {
    std::fs::write(path, integration_tests::capture::file(frames, false)).expect("write pcap");
}

fn write_pcapng(path: &PathBuf, frames: &[&[u8]]) {
    std::fs::write(path, integration_tests::capture::file(frames, true)).expect("write pcapng");
}

/// Run `enforcer policy replay --json` and return the verdict names per packet and the summary.
fn replay(
    policy: &PathBuf,
    capture: &PathBuf,
    core_facing: bool,
) -> (Vec<serde_json::Value>, serde_json::Value) {
    let mut cmd = Command::new(enforcer_bin());
    cmd.args(["policy", "replay"])
        .arg(policy)
        .arg(capture)
        .arg("--json");
    if core_facing {
        cmd.arg("--core-facing");
    }
    let out = cmd.output().expect("run enforcer policy replay");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "replay failed: {}{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary = lines.pop().expect("a summary line")["summary"].clone();
    (lines, summary)
}

#[test]
fn replay_shows_the_fixture_verdicts_from_pcap_and_pcapng() {
    let (scratch, policy) = with_policy("fixtures");
    for core_facing in [false, true] {
        let chosen: Vec<Fixture> = fixtures()
            .into_iter()
            .filter(|f| f.core_facing == core_facing)
            .collect();
        let frames: Vec<&[u8]> = chosen.iter().map(|f| f.frame.as_slice()).collect();
        let pcap = scratch.0.join(format!("f-{core_facing}.pcap"));
        let pcapng = scratch.0.join(format!("f-{core_facing}.pcapng"));
        write_pcap(&pcap, &frames);
        write_pcapng(&pcapng, &frames);
        for capture in [&pcap, &pcapng] {
            let (packets, summary) = replay(&policy, capture, core_facing);
            assert_eq!(packets.len(), chosen.len(), "one line per packet");
            for (fixture, packet) in chosen.iter().zip(&packets) {
                let shown = format!(
                    "{}_{}",
                    packet["verdict"].as_str().unwrap_or("?"),
                    packet["reason"].as_str().unwrap_or("?")
                );
                assert_eq!(
                    shown,
                    name(fixture.expected),
                    "fixture `{}`: {packet}",
                    fixture.name
                );
                if let Verdict::Pass(enforcer_common::PassReason::Rule, id) = fixture.expected {
                    assert_eq!(packet["rule"]["id"], id, "fixture `{}`", fixture.name);
                    let origin = packet["rule"]["origin"].as_str().unwrap_or_default();
                    assert!(
                        origin.starts_with(&format!("{}:", policy.display())),
                        "the rule's file:line is shown: {origin}"
                    );
                }
            }
            assert_eq!(summary["packets"], chosen.len());
            assert_eq!(summary["disagreements"], 0);
        }
    }
}

#[test]
fn replay_prints_a_table_with_addresses_ports_and_the_rule() {
    let (scratch, policy) = with_policy("table");
    let allowed = allowed().build();
    let capture = scratch.0.join("one.pcap");
    write_pcap(&capture, &[&allowed, &allowed[..10]]);
    let out = Command::new(enforcer_bin())
        .args(["policy", "replay"])
        .arg(&policy)
        .arg(&capture)
        .output()
        .expect("run replay");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let first = text.lines().nth(1).expect("a packet line");
    for part in [
        "10.64.0.1:40000",
        "198.51.100.10:443",
        "tcp",
        "pass rule",
        "#0",
        "policy.toml:",
    ] {
        assert!(first.contains(part), "`{part}` missing from: {first}");
    }
    assert!(
        text.contains("not judged: shorter than an Ethernet header"),
        "{text}"
    );
    assert!(text.contains("2 packets"), "{text}");
    assert!(text.contains("1 passed, 0 dropped, 1 not judged"), "{text}");
}

#[test]
fn replay_refuses_a_file_that_is_not_a_capture() {
    let (_scratch, policy) = with_policy("bad");
    let out = Command::new(enforcer_bin())
        .args(["policy", "replay"])
        .arg(&policy)
        .arg(&policy)
        .output()
        .expect("run replay");
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("not a pcap or pcapng file"), "{text}");
}

/// A little-endian pcap file written by hand, so that it can say what `pcap-file`'s writer
/// refuses to: a snap length below a packet's original length, any link type.
fn raw_pcap(snaplen: u32, linktype: u32, records: &[(&[u8], u32)]) -> Vec<u8> {
    let mut file = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    file.extend_from_slice(&snaplen.to_le_bytes());
    file.extend_from_slice(&linktype.to_le_bytes());
    for (data, original_len) in records {
        file.extend_from_slice(&[0; 8]); // Timestamp.
        file.extend_from_slice(&u32::try_from(data.len()).unwrap().to_le_bytes());
        file.extend_from_slice(&original_len.to_le_bytes());
        file.extend_from_slice(data);
    }
    file
}

/// Captures an operator may bring that cannot be judged frame by frame: each is listed as not
/// judged with its reason, and nothing else in the file is lost.
#[test]
fn replay_lists_what_it_cannot_judge_and_why() {
    let (scratch, policy) = with_policy("unjudged");
    let allowed = allowed();
    let frame = allowed.build();
    let mut jumbo = allowed.clone();
    jumbo.payload = 4000;
    let jumbo = jumbo.build();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "snap length",
            raw_pcap(
                96,
                1,
                &[
                    (&frame, 1514),
                    (&frame, u32::try_from(frame.len()).unwrap()),
                ],
            ),
            "cut by the capture's snap length (54 of 1514 bytes)",
        ),
        (
            "jumbo",
            raw_pcap(
                65_535,
                1,
                &[(&jumbo, u32::try_from(jumbo.len()).unwrap()), (&frame, 54)],
            ),
            "longer than the 3520 bytes",
        ),
        (
            "short cooked v2 header",
            raw_pcap(65_535, 276, &[(&[0x08, 0, 0, 0, 0], 5), (&frame, 54)]),
            "LINUX_SLL2 header cut short (5 of 20 bytes)",
        ),
    ];
    for (name, file, reason) in cases {
        let capture = scratch.0.join(format!("{}.pcap", name.replace(' ', "-")));
        std::fs::write(&capture, file).expect("write capture");
        let (packets, summary) = replay(&policy, &capture, false);
        assert_eq!(summary["not_judged"], 1, "{name}: {packets:?}");
        let why = packets[0]["not_judged"].as_str().unwrap_or_default();
        assert!(
            why.contains(reason),
            "{name}: `{why}` should say `{reason}`"
        );
        if name != "short cooked v2 header" {
            assert_eq!(
                packets[1]["reason"], "rule",
                "{name}: the next packet is judged"
            );
        }
    }
}

#[test]
fn replay_reads_standard_input_and_names_an_empty_file() {
    let (scratch, policy) = with_policy("stdin");
    let frame = allowed().build();
    let capture = scratch.0.join("in.pcap");
    std::fs::write(&capture, integration_tests::capture::file(&[frame], true)).expect("write");
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} policy replay {} - < {}",
            enforcer_bin().display(),
            policy.display(),
            capture.display()
        ))
        .output()
        .expect("run replay from stdin");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("1 packet against"), "{text}");

    let empty = scratch.0.join("empty.pcap");
    std::fs::write(&empty, b"").expect("write");
    let out = Command::new(enforcer_bin())
        .args(["policy", "replay"])
        .arg(&policy)
        .arg(&empty)
        .output()
        .expect("run replay");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("the capture file is empty"), "{err}");
    assert!(
        out.stdout.is_empty(),
        "no table header for an unreadable capture"
    );
}
