//! Fuzzing of everything that reads untrusted bytes on the packet side: the reference frame
//! parser (the kernel parser's userspace twin), the display parser and the capture reader of
//! `enforcer policy replay`. Proptest feeds arbitrary bytes and mutations of a checked-in
//! corpus (`tests/corpus/frames/*.hex`, one frame per line; add every regression there), and
//! also pcap and pcapng files built from it and then mutated. Properties: no panic, no hang,
//! memory bounded by the input (the capture reader yields at most one packet per 16 bytes).
//!
//! `FUZZ_CASES` sets the cases per property (default 2,000: a few seconds in `cargo xtask
//! test`); `cargo xtask bench` runs 200,000.

use enforcer::{
    reference,
    replay::{self, capture::Capture},
};
use proptest::prelude::*;

fn corpus() -> Vec<Vec<u8>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus/frames");
    let mut frames = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("corpus directory") {
        let text = std::fs::read_to_string(entry.expect("corpus entry").path()).expect("corpus");
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let bytes = (0..line.len() / 2)
                .map(|i| u8::from_str_radix(&line[2 * i..2 * i + 2], 16).expect("corpus hex"))
                .collect();
            frames.push(bytes);
        }
    }
    assert!(
        frames.len() >= 5,
        "the corpus in {} is missing",
        dir.display()
    );
    frames
}

fn config() -> ProptestConfig {
    let cases = std::env::var("FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2_000);
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// A corpus frame with up to eight byte edits, a cut or an extension.
fn mutated() -> impl Strategy<Value = Vec<u8>> {
    let corpus = corpus();
    (
        prop::sample::select(corpus),
        prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..8),
        prop::option::of(any::<prop::sample::Index>()),
        prop::collection::vec(any::<u8>(), 0..16),
    )
        .prop_map(|(mut frame, edits, cut, tail)| {
            for (at, byte) in edits {
                let at = at.index(frame.len());
                frame[at] = byte;
            }
            if let Some(cut) = cut {
                frame.truncate(cut.index(frame.len() + 1));
            }
            frame.extend(tail);
            frame
        })
}

fn frames() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![mutated(), prop::collection::vec(any::<u8>(), 0..128)]
}

fn pcap_of(frames: &[Vec<u8>], ng: bool) -> Vec<u8> {
    integration_tests::capture::file(frames, ng)
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn frame_parsers_never_panic(frame in frames()) {
        let parsed = reference::parse(&frame, 1);
        let headers = replay::headers(&frame);
        // Whatever the reference parser accepts as IP, the display parser sees as IP too.
        if let Ok(reference::Parsed::Ip(meta)) = parsed {
            prop_assert!(headers.src.is_some(), "{meta:?}");
        }
    }

    #[test]
    fn capture_reader_never_panics_and_stays_bounded(
        frames in prop::collection::vec(frames(), 0..6),
        ng in any::<bool>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in prop::option::of(any::<prop::sample::Index>()),
    ) {
        let mut file = pcap_of(&frames, ng);
        for (at, byte) in edits {
            let at = at.index(file.len());
            file[at] = byte;
        }
        if let Some(cut) = cut {
            file.truncate(cut.index(file.len() + 1));
        }
        let limit = file.len() / 16 + 1;
        if let Ok(mut capture) = Capture::open(file.as_slice()) {
            let mut packets = 0;
            while let Some(packet) = capture.next_packet() {
                packets += 1;
                prop_assert!(packets <= limit, "more packets than the file can hold");
                match packet {
                    Ok(packet) => {
                        if let Ok(frame) = packet.frame {
                            let _ = reference::parse(&frame, 1);
                            let _ = replay::headers(&frame);
                        }
                    }
                    Err(_) => break,
                }
            }
        }
    }
}

/// The same mutated and arbitrary frames through the real XDP program: the harness checks
/// that the kernel returns the reference parser's verdict and counts it (every header walk of
/// the kernel against its userspace twin, on inputs no generator was written for).
#[test]
fn kernel_and_reference_agree_on_fuzzed_frames() {
    use proptest::test_runner::TestRunner;
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root to load XDP");
        return;
    }
    let harness = std::cell::RefCell::new(integration_tests::harness::Harness::new(
        integration_tests::forwarded::POLICY,
        &[],
    ));
    let mut runner = TestRunner::new(config());
    runner
        .run(&frames(), |frame| {
            // BPF_PROG_TEST_RUN refuses frames shorter than an Ethernet header.
            if frame.len() >= 14 {
                harness.borrow_mut().check(&frame);
            }
            Ok(())
        })
        .expect("kernel and reference agree");
}
