//! The link watcher (`enforcer::netlink_watch`) in a network namespace of its own: a veth pair
//! created, deleted and created again is reported as added, removed and added with a new
//! ifindex; links present at the start, and changes to a known link, are not reported.

use std::{
    os::fd::AsRawFd as _,
    sync::mpsc,
    time::{Duration, Instant},
};

use enforcer::netlink_watch::{LinkEvent, LinkEventKind, watch_links};
use integration_tests::netns::{NetNs, unique_prefix};

/// Run the watcher on a thread that entered `ns`; send its initial links once it is
/// subscribed, then forward its events, over std channels.
fn watch_in(
    ns: &str,
) -> (
    mpsc::Receiver<LinkEvent>,
    mpsc::Receiver<Vec<(String, u32)>>,
) {
    let (tx, rx) = mpsc::channel();
    let (ready_tx, ready_rx) = mpsc::channel();
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("open the namespace");
        // SAFETY: a valid namespace fd; CLONE_NEWNET moves only this thread.
        let entered = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(entered, 0, "setns: {}", std::io::Error::last_os_error());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        runtime.block_on(async move {
            let mut watcher = watch_links().await.expect("start the link watcher");
            ready_tx
                .send(watcher.initial().to_vec())
                .expect("report ready");
            while let Some(event) = watcher.next().await {
                if tx.send(event).is_err() {
                    return;
                }
            }
        });
    });
    (rx, ready_rx)
}

/// Collect events until `done` holds for them or five seconds pass.
fn collect(rx: &mpsc::Receiver<LinkEvent>, done: impl Fn(&[LinkEvent]) -> bool) -> Vec<LinkEvent> {
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut events = Vec::new();
    while !done(&events) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(event) => events.push(event),
            Err(_) => break,
        }
    }
    events
}

fn has(events: &[LinkEvent], name: &str, kind: LinkEventKind) -> Option<u32> {
    events
        .iter()
        .find(|e| e.name == name && e.kind == kind)
        .map(|e| e.ifindex)
}

#[test]
fn a_veth_deleted_and_recreated_is_removed_then_added_with_a_new_index() {
    let prefix = unique_prefix();
    let ns = NetNs::new(&format!("enforcer-t-{prefix}-links"));
    let (a, b) = (format!("{prefix}a"), format!("{prefix}b"));
    let (events, ready) = watch_in(&ns.name);
    let initial = ready
        .recv_timeout(Duration::from_secs(5))
        .expect("the watcher started");
    assert!(
        initial.iter().any(|(name, _)| name == "lo"),
        "initial links: {initial:?}"
    );

    ns.exec_ok(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
    ns.exec_ok(&["ip", "link", "set", &a, "up"]); // a change, not an addition
    let added = collect(&events, |e| {
        has(e, &a, LinkEventKind::Added).is_some() && has(e, &b, LinkEventKind::Added).is_some()
    });
    let first_index = has(&added, &a, LinkEventKind::Added)
        .unwrap_or_else(|| panic!("no Added for {a}: {added:?}"));
    assert!(has(&added, &b, LinkEventKind::Added).is_some(), "{added:?}");

    ns.exec_ok(&["ip", "link", "del", &a]); // takes its peer along
    let removed = collect(&events, |e| {
        has(e, &a, LinkEventKind::Removed).is_some() && has(e, &b, LinkEventKind::Removed).is_some()
    });
    assert_eq!(
        has(&removed, &a, LinkEventKind::Removed),
        Some(first_index),
        "{removed:?}"
    );
    assert!(
        has(&removed, &b, LinkEventKind::Removed).is_some(),
        "{removed:?}"
    );
    // Setting the deleted link up produced no second Added in between.
    assert!(
        !removed.iter().any(|e| e.kind == LinkEventKind::Added),
        "unexpected events: {removed:?}"
    );

    ns.exec_ok(&["ip", "link", "add", &a, "type", "veth", "peer", "name", &b]);
    let again = collect(&events, |e| has(e, &a, LinkEventKind::Added).is_some());
    let second_index = has(&again, &a, LinkEventKind::Added)
        .unwrap_or_else(|| panic!("no second Added for {a}: {again:?}"));
    assert_ne!(
        second_index, first_index,
        "a re-created link gets a new ifindex"
    );
    // Nothing about links outside the test's namespace, nor about lo.
    for event in added.iter().chain(&removed).chain(&again) {
        assert!(
            event.name == a || event.name == b,
            "an event for another link: {event:?}"
        );
    }
}
