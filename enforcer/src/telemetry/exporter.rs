//! The exporting process: a thread that packs flow records into IPFIX messages and sends them
//! over UDP to each collector (RFC 7011 §10.3), apart from the actor so that a slow or dead
//! collector never holds up enforcement or commands.
//!
//! - The actor hands records over through a bounded queue ([`QUEUE_RECORDS`] records): when it
//!   is full the hand-over fails at once and the meter keeps the counts for its next round, so
//!   memory stays bounded and nothing is counted twice.
//! - Each collector is its own transport session with its own sequence numbers. Templates go
//!   in the first message, again every template refresh interval (RFC 7011 §8.4; over UDP
//!   templates are never withdrawn), and again after a send failed (the collector may have
//!   restarted and lost them).
//! - A send that fails (ICMP port unreachable while the collector is down, a full socket
//!   buffer) drops that message: counted, never retried, never queued.

use std::{
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
        mpsc::{Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::JoinHandle,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use tracing::{debug, warn};

use super::ipfix::{FlowRecord, Packer};

/// Records the queue between the meter and the exporter holds at most (batches of up to
/// [`BATCH`]).
pub const QUEUE_RECORDS: usize = 262_144;
/// Records per hand-over.
pub const BATCH: usize = 4096;

/// Where and how to export.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportConfig {
    /// Collectors, each sent every record.
    pub collectors: Vec<SocketAddr>,
    /// Observation domain id of every message.
    pub domain: u32,
    /// Path MTU toward the collectors, bytes: messages fit in it with the IP and UDP headers.
    pub mtu: usize,
    /// Template refresh interval.
    pub template_refresh: Duration,
    /// Records per second sent to each collector at most (0: no limit): a round's burst
    /// (millions of records at a busy minute's end) is spread out instead of overrunning the
    /// collector's socket buffer.
    pub max_rate: u64,
}

/// What the exporter did, for `status` and the metrics.
#[derive(Debug, Default)]
pub struct ExportStats {
    /// Records sent (to every collector: counted once per collector).
    pub records_sent: AtomicU64,
    /// Messages sent.
    pub messages_sent: AtomicU64,
    /// Messages whose send failed (collector down, buffer full): their records are lost for
    /// that collector.
    pub messages_failed: AtomicU64,
    /// Records the queue had no room for, handed over again in a later round.
    pub records_deferred: AtomicU64,
    /// Records queued and not yet sent (or failed) by the exporter thread.
    pub records_queued: AtomicU64,
    /// Set when the daemon stops: what is queued goes out without pacing.
    pub draining: std::sync::atomic::AtomicBool,
}

/// The running exporter.
pub struct Exporter {
    queue: Option<SyncSender<Vec<FlowRecord>>>,
    thread: Option<JoinHandle<()>>,
    stats: Arc<ExportStats>,
}

/// One collector's transport session.
struct Collector {
    addr: SocketAddr,
    socket: UdpSocket,
    packer: Packer,
    templates_at: Option<Instant>,
    failing: bool,
    pacer: Pacer,
}

/// The shortest wait the pacer sleeps for: it sends ahead of the rate by up to this much
/// (1,000 records, about 85 messages, at the default 250,000 records/s, well within a
/// collector's socket buffer) rather than wake a thousand times a second, each wake-up costing
/// more CPU than the sends it spaces out.
const PACING_SLEEP: Duration = Duration::from_millis(4);

/// Spreads sends to at most `rate` records a second, with at most 100 ms of credit saved up
/// while idle.
struct Pacer {
    rate: u64,
    since: Instant,
    records: u64,
}

impl Pacer {
    fn new(rate: u64) -> Self {
        Self {
            rate,
            since: Instant::now(),
            records: 0,
        }
    }

    /// `records` were just sent: wait until the rate allows the next ones (not while
    /// `draining`).
    fn sent(&mut self, records: u64, draining: bool) {
        if self.rate == 0 || draining {
            return;
        }
        let now = Instant::now();
        let due = self.since + Duration::from_secs_f64(self.records as f64 / self.rate as f64);
        if now > due + Duration::from_millis(100) {
            // Idle for a while: start afresh rather than burst to catch up.
            self.since = now;
            self.records = 0;
        }
        self.records += records;
        let due = self.since + Duration::from_secs_f64(self.records as f64 / self.rate as f64);
        if let Some(wait) = due.checked_duration_since(now)
            && wait >= PACING_SLEEP
        {
            std::thread::sleep(wait);
        }
    }
}

impl Exporter {
    /// Start the exporter thread with a socket per collector.
    ///
    /// # Errors
    /// A socket that cannot be opened or connected.
    pub fn start(config: &ExportConfig) -> std::io::Result<Self> {
        let mut collectors = Vec::new();
        for &addr in &config.collectors {
            let bind: SocketAddr = if addr.is_ipv6() {
                (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
            } else {
                (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
            };
            let socket = UdpSocket::bind(bind)?;
            socket.connect(addr)?;
            socket.set_write_timeout(Some(Duration::from_millis(100)))?;
            let headers = if addr.is_ipv6() { 48 } else { 28 };
            collectors.push(Collector {
                addr,
                socket,
                packer: Packer::new(config.domain, config.mtu.saturating_sub(headers)),
                templates_at: None,
                failing: false,
                pacer: Pacer::new(config.max_rate),
            });
        }
        let (queue, incoming) = std::sync::mpsc::sync_channel(QUEUE_RECORDS / BATCH);
        let stats = Arc::new(ExportStats::default());
        let refresh = config.template_refresh;
        let thread = std::thread::Builder::new()
            .name("enforcer-ipfix".to_owned())
            .spawn({
                let stats = Arc::clone(&stats);
                move || run(&mut collectors, &incoming, refresh, &stats)
            })?;
        Ok(Self {
            queue: Some(queue),
            thread: Some(thread),
            stats,
        })
    }

    /// Its counters.
    #[must_use]
    pub fn stats(&self) -> &Arc<ExportStats> {
        &self.stats
    }

    /// Queue `records` without waiting.
    ///
    /// # Errors
    /// The records back, nothing queued, when the queue is full (counted as deferred).
    pub fn offer(&self, records: Vec<FlowRecord>) -> Result<(), Vec<FlowRecord>> {
        let Some(queue) = &self.queue else {
            return Err(records);
        };
        let len = records.len() as u64;
        // Counted before the hand-over, so the thread never subtracts what is not added yet.
        self.stats.records_queued.fetch_add(len, Ordering::Relaxed);
        queue.try_send(records).map_err(|err| {
            self.stats.records_queued.fetch_sub(len, Ordering::Relaxed);
            self.stats
                .records_deferred
                .fetch_add(len, Ordering::Relaxed);
            match err {
                TrySendError::Full(records) | TrySendError::Disconnected(records) => records,
            }
        })
    }

    /// Send what is queued, without pacing, and stop, waiting at most `deadline`. Returns the
    /// records left unsent when the deadline passed (0 when all went out).
    pub fn finish(mut self, deadline: Duration) -> u64 {
        self.stats.draining.store(true, Ordering::Relaxed);
        drop(self.queue.take());
        let Some(thread) = self.thread.take() else {
            return 0;
        };
        let start = Instant::now();
        while !thread.is_finished() && start.elapsed() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        if thread.is_finished() {
            let _ = thread.join();
            return 0;
        }
        let left = self.stats.records_queued.load(Ordering::Relaxed);
        warn!(
            records_unsent = left,
            "The IPFIX exporter did not finish sending in time; stopping without it."
        );
        left
    }
}

fn unix_seconds() -> u32 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    u32::try_from(secs).unwrap_or(u32::MAX)
}

/// The exporter thread: until the queue closes and is drained.
fn run(
    collectors: &mut [Collector],
    incoming: &Receiver<Vec<FlowRecord>>,
    refresh: Duration,
    stats: &ExportStats,
) {
    // Templates at once, so a collector can decode the first records.
    for collector in collectors.iter_mut() {
        collector.send(&[], stats, refresh);
    }
    loop {
        match incoming.recv_timeout(Duration::from_secs(1)) {
            Ok(records) => {
                for collector in collectors.iter_mut() {
                    collector.send(&records, stats, refresh);
                }
                stats
                    .records_queued
                    .fetch_sub(records.len() as u64, Ordering::Relaxed);
            }
            Err(RecvTimeoutError::Timeout) => {
                for collector in collectors.iter_mut() {
                    if collector.templates_due(refresh) {
                        collector.send(&[], stats, refresh);
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

impl Collector {
    fn templates_due(&self, refresh: Duration) -> bool {
        self.failing || self.templates_at.is_none_or(|at| at.elapsed() >= refresh)
    }

    fn send(&mut self, records: &[FlowRecord], stats: &ExportStats, refresh: Duration) {
        let templates = self.templates_due(refresh);
        let messages = self.packer.pack(records, templates, unix_seconds());
        let mut failed = false;
        let end = self.packer.sequence();
        for (i, message) in messages.iter().enumerate() {
            // Records in this message: the next one's sequence number less its own.
            let first = u32::from_be_bytes([message[8], message[9], message[10], message[11]]);
            let next = messages
                .get(i + 1)
                .map_or(end, |m| u32::from_be_bytes([m[8], m[9], m[10], m[11]]));
            self.pacer.sent(
                u64::from(next.wrapping_sub(first)),
                stats.draining.load(Ordering::Relaxed),
            );
            match self.socket.send(message) {
                Ok(_) => {
                    stats.messages_sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(err) => {
                    stats.messages_failed.fetch_add(1, Ordering::Relaxed);
                    if !self.failing && !failed {
                        warn!(collector = %self.addr, error = %err, "Sending IPFIX failed; records are dropped until the collector answers again.");
                    }
                    failed = true;
                }
            }
        }
        if !failed {
            stats
                .records_sent
                .fetch_add(records.len() as u64, Ordering::Relaxed);
            if self.failing {
                debug!(collector = %self.addr, "IPFIX collector reachable again.");
            }
        }
        if templates && !failed {
            self.templates_at = Some(Instant::now());
        }
        self.failing = failed;
    }
}
