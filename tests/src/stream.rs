//! A sequence-numbered UDP flow between two namespaces, to tell exactly which packets crossed
//! the gateway while something changed there (a reload, a restart, a quarantine).

use std::{
    collections::BTreeSet,
    net::{SocketAddr, UdpSocket},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::throughput::in_netns;

/// A running flow; [`Stream::finish`] stops it and says what arrived.
pub struct Stream {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    received: Arc<Mutex<BTreeSet<u64>>>,
    sender: JoinHandle<()>,
    receiver: JoinHandle<()>,
}

/// What a finished flow sent and what arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Datagrams sent (sequence numbers `0..sent`).
    pub sent: u64,
    /// Sequence numbers that arrived.
    pub received: BTreeSet<u64>,
}

impl Outcome {
    /// Sequence numbers sent that never arrived.
    #[must_use]
    pub fn lost(&self) -> Vec<u64> {
        (0..self.sent)
            .filter(|n| !self.received.contains(n))
            .collect()
    }
}

impl Stream {
    /// Send a datagram every `interval` from `src` (bound in namespace `src_ns`) to `dst`
    /// (received in `dst_ns`).
    ///
    /// # Panics
    /// When a socket cannot be made.
    #[must_use]
    pub fn start(
        src_ns: &str,
        src: &str,
        dst_ns: &str,
        dst: SocketAddr,
        interval: Duration,
    ) -> Self {
        let rx = in_netns(dst_ns, || UdpSocket::bind(dst)).expect("bind the receiver");
        rx.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("receiver timeout");
        let tx = in_netns(src_ns, || UdpSocket::bind((src, 0))).expect("bind the sender");
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let received = Arc::new(Mutex::new(BTreeSet::new()));
        let sender = {
            let (stop, sent) = (stop.clone(), sent.clone());
            std::thread::spawn(move || {
                let start = Instant::now();
                let mut seq = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // Paced against the clock, so a slow wake-up does not thin the flow.
                    let due = start + interval * u32::try_from(seq).unwrap_or(u32::MAX);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    if tx.send_to(&seq.to_be_bytes(), dst).is_ok() {
                        seq += 1;
                        sent.store(seq, Ordering::Relaxed);
                    }
                }
            })
        };
        let receiver = {
            let (stop, received) = (stop.clone(), received.clone());
            std::thread::spawn(move || {
                let mut buf = [0u8; 64];
                let mut idle_since_stop = 0;
                loop {
                    match rx.recv(&mut buf) {
                        Ok(8) => {
                            let seq = u64::from_be_bytes(buf[..8].try_into().unwrap_or([0; 8]));
                            received.lock().expect("lock").insert(seq);
                        }
                        Ok(_) => {}
                        Err(_) if stop.load(Ordering::Relaxed) => {
                            idle_since_stop += 1;
                            if idle_since_stop >= 4 {
                                return;
                            }
                        }
                        Err(_) => {}
                    }
                }
            })
        };
        Self {
            stop,
            sent,
            received,
            sender,
            receiver,
        }
    }

    /// Datagrams sent so far.
    #[must_use]
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Sequence numbers received so far.
    ///
    /// # Panics
    /// When the receiver thread panicked.
    #[must_use]
    pub fn received(&self) -> BTreeSet<u64> {
        self.received.lock().expect("lock").clone()
    }

    /// Stop sending, wait for stragglers (200 ms of silence), and report.
    ///
    /// # Panics
    /// When a thread panicked.
    #[must_use]
    pub fn finish(self) -> Outcome {
        self.stop.store(true, Ordering::Relaxed);
        self.sender.join().expect("sender");
        self.receiver.join().expect("receiver");
        Outcome {
            sent: self.sent.load(Ordering::Relaxed),
            received: std::mem::take(&mut *self.received.lock().expect("lock")),
        }
    }
}

/// Whether UDP from `src` (in namespace `src_ns`) to `dst` (in `dst_ns`) gets through: some of
/// about 10 datagrams, 20 ms apart.
#[must_use]
pub fn gets_through(src_ns: &str, src: &str, dst_ns: &str, dst: SocketAddr) -> bool {
    let stream = Stream::start(src_ns, src, dst_ns, dst, Duration::from_millis(20));
    std::thread::sleep(Duration::from_millis(200));
    !stream.finish().received.is_empty()
}
