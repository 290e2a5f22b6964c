//! Deny events: the program's reports of dropped packets (`DENY_EVENTS`, a BPF ring buffer,
//! at most `DENY_EVENTS_PER_SECOND` per SIM with the rest counted), read by a thread of the
//! daemon, named (IMSI, MSISDN, segment) and written as JSON lines to a file or stdout.

use std::borrow::Borrow;

use aya::maps::{MapData, RingBuf};
use enforcer_common::maps::DenyEvent;

/// Every event waiting in `ring`, oldest first (none if it is empty).
pub fn drain<T: Borrow<MapData>>(ring: &mut RingBuf<T>) -> Vec<DenyEvent> {
    let mut events = Vec::new();
    while let Some(item) = ring.next() {
        if item.len() >= size_of::<DenyEvent>() {
            // SAFETY: the program writes whole `DenyEvent`s (64 bytes, every bit pattern
            // valid); the item holds at least that many bytes, read unaligned.
            events.push(unsafe { std::ptr::read_unaligned(item.as_ptr().cast::<DenyEvent>()) });
        }
    }
    events
}

/// What the deny-event path did since the daemon started.
#[derive(Debug, Default)]
pub struct EventStats {
    /// Events written out.
    pub written: std::sync::atomic::AtomicU64,
    /// Events read but not written: a queue was full (the writer or the daemon behind).
    pub dropped: std::sync::atomic::AtomicU64,
    /// Denied packets the program raised no event for (over their SIM's budget), as the
    /// events carried them.
    pub suppressed: std::sync::atomic::AtomicU64,
}

/// One deny event as written: a JSON object per line.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DenyRecord {
    /// When the packet was dropped, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// The sender's IMSI, absent for a source that is no SIM (spoofed, outside every pool).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imsi: Option<String>,
    /// The sender's MSISDN, if it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub msisdn: Option<String>,
    /// The sender's segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// Source address.
    pub src: String,
    /// Destination address.
    pub dst: String,
    /// Source port (TCP, UDP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sport: Option<u16>,
    /// Destination port (TCP, UDP).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dport: Option<u16>,
    /// `tcp`, `udp`, `icmp`, `icmpv6` or the protocol number.
    pub proto: String,
    /// Why it was dropped, as `enforcer stats` names reasons (`no_rule`, `lateral`, ...), or
    /// `audit`: passed by audit mode, which the policy would have denied.
    pub reason: String,
    /// The interface it arrived on.
    pub iface: String,
    /// The sender's denied packets before this one that raised no event (over its budget of
    /// `DENY_EVENTS_PER_SECOND`).
    pub suppressed: u32,
    /// The sender's rule nearest to this packet (`file:line: what it matches`): toward the
    /// same destination for another port, or for the same port elsewhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nearby_rule: Option<String>,
}

/// The record of `event`, with names looked up by `names` (IMSI, MSISDN, segment of a SIM
/// index and segment id), `iface` (interface name of an ifindex) and `nearby` (the sender's
/// rule nearest to the packet: SIM index, destination, protocol, port).
pub fn record(
    event: &DenyEvent,
    names: impl Fn(u32, u16) -> (Option<String>, Option<String>, Option<String>),
    iface: impl Fn(u32) -> String,
    nearby: impl Fn(u32, std::net::IpAddr, u8, Option<u16>) -> Option<String>,
) -> DenyRecord {
    let addr = |a: [u8; 16]| super::ip(a, event.v6 == 1).to_string();
    let now_wall = std::time::SystemTime::now();
    let ago =
        std::time::Duration::from_nanos(super::monotonic_coarse_ns().saturating_sub(event.time_ns));
    let when = now_wall.checked_sub(ago).unwrap_or(now_wall);
    let (imsi, msisdn, segment) = if event.sim == enforcer_common::maps::DENY_NO_SIM {
        (None, None, None)
    } else {
        names(event.sim, event.segment)
    };
    let ports = matches!(event.proto, 6 | 17 | 132);
    let dst = super::ip(event.dst, event.v6 == 1);
    let nearby_rule = (event.sim != enforcer_common::maps::DENY_NO_SIM
        && matches!(
            enforcer_common::DropReason::ALL
                .iter()
                .find(|r| **r as u8 == event.reason),
            Some(enforcer_common::DropReason::NoRule | enforcer_common::DropReason::Fragment)
        ))
    .then(|| nearby(event.sim, dst, event.proto, ports.then_some(event.dport)))
    .flatten();
    DenyRecord {
        time: humantime::format_rfc3339_millis(when).to_string(),
        imsi,
        msisdn,
        segment,
        src: addr(event.src),
        dst: addr(event.dst),
        sport: ports.then_some(event.sport),
        dport: ports.then_some(event.dport),
        proto: crate::policy::show::proto_name(event.proto),
        reason: if event.reason == enforcer_common::maps::DENY_EVENT_AUDIT {
            "audit".to_owned()
        } else {
            enforcer_common::DropReason::ALL
                .iter()
                .find(|r| **r as u8 == event.reason)
                .map_or_else(
                    || format!("reason {}", event.reason),
                    |r| r.name().to_owned(),
                )
        },
        iface: iface(event.ifindex),
        suppressed: event.suppressed,
        nearby_rule,
    }
}

/// Read `DENY_EVENTS` (pinned at `pin`) on a thread of its own until `out` closes: each
/// wake-up's events go to `out` as one batch; a batch `out` has no room for is dropped and
/// counted.
///
/// # Errors
/// The pinned ring buffer cannot be opened.
pub fn spawn_reader(
    pin: &std::path::Path,
    out: tokio::sync::mpsc::Sender<Vec<DenyEvent>>,
    stats: std::sync::Arc<EventStats>,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    use std::os::fd::AsRawFd as _;
    let data = MapData::from_pin(pin).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut ring = RingBuf::try_from(aya::maps::Map::RingBuf(data))
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    std::thread::Builder::new()
        .name("enforcer-events".to_owned())
        .spawn(move || {
            let fd = ring.as_raw_fd();
            while !out.is_closed() {
                let mut poll = libc::pollfd {
                    fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd for the call; the ring's fd outlives it.
                unsafe { libc::poll(&raw mut poll, 1, 500) };
                let events = drain(&mut ring);
                if events.is_empty() {
                    continue;
                }
                let n = events.len() as u64;
                if out.try_send(events).is_err() {
                    stats
                        .dropped
                        .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                }
            }
        })
}

/// A thread named `name` writing the lines it is sent to `path` (`-`: stdout; a file is
/// appended to, created mode 0640), flushing whenever its queue (4,096 lines) runs empty; a
/// write that fails is logged and the next lines tried again.
///
/// # Errors
/// The file cannot be opened.
pub fn line_writer(
    path: &std::path::Path,
    name: &str,
) -> std::io::Result<std::sync::mpsc::SyncSender<String>> {
    use std::io::Write as _;
    let mut out: Box<dyn std::io::Write + Send> = if path == std::path::Path::new("-") {
        Box::new(std::io::stdout())
    } else {
        use std::os::unix::fs::OpenOptionsExt as _;
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .mode(0o640)
                .open(path)?,
        )
    };
    let (queue, lines) = std::sync::mpsc::sync_channel::<String>(4096);
    let what = name.to_owned();
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(move || {
            let mut buffered = std::io::BufWriter::new(&mut out);
            while let Ok(line) = lines.recv() {
                let mut ok = buffered.write_all(line.as_bytes()).is_ok();
                while let Ok(line) = lines.try_recv() {
                    ok &= buffered.write_all(line.as_bytes()).is_ok();
                }
                if !(ok && buffered.flush().is_ok()) {
                    tracing::warn!(writer = %what, "Writing lines failed; later ones are tried again.");
                }
            }
        })?;
    Ok(queue)
}

/// Where deny events go: a file (appended to) or stdout (`-`), written by a thread of its own
/// behind a bounded queue, so a slow disk never holds up the daemon.
pub struct Writer {
    queue: std::sync::mpsc::SyncSender<String>,
    stats: std::sync::Arc<EventStats>,
}

impl Writer {
    /// Open `path` (`-`: stdout) for appending, created mode 0640.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(
        path: &std::path::Path,
        stats: std::sync::Arc<EventStats>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            queue: line_writer(path, "enforcer-event-writer")?,
            stats,
        })
    }

    /// Queue `record` as a JSON line, without waiting: dropped (and counted) when the writer
    /// is behind.
    pub fn write(&self, record: &DenyRecord) {
        use std::sync::atomic::Ordering::Relaxed;
        let Ok(mut line) = serde_json::to_string(record) else {
            return;
        };
        line.push('\n');
        if self.queue.try_send(line).is_ok() {
            self.stats.written.fetch_add(1, Relaxed);
        } else {
            self.stats.dropped.fetch_add(1, Relaxed);
        }
        self.stats
            .suppressed
            .fetch_add(u64::from(record.suppressed), Relaxed);
    }
}
