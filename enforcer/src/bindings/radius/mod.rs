//! RADIUS accounting from the packet core (RFC 2866, attributes of 3GPP TS 29.061 §16): the
//! PGW/SMF reports every data session's start, updates and stop with the address it gave the
//! device; the daemon binds that address to the SIM while the session lasts.
//!
//! [`packet`] reads and checks requests and writes responses, [`clients`] knows who may send
//! them, and [`serve`] receives them in batches, hands each batch to the actor (which applies
//! it in one store transaction and then to the maps) and acknowledges what the actor recorded.

pub mod clients;
pub mod packet;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use tokio::sync::{mpsc, oneshot};
use tracing::{debug, warn};

pub use self::{
    clients::{Client, Clients},
    packet::{Accounting, PacketError, StatusType},
};

/// The default accounting port (IANA `radius-acct`, RFC 2866 §1).
pub const DEFAULT_PORT: u16 = 1813;

/// Requests handed to the actor at once at most: what one read of the socket finds waiting.
const MAX_BATCH: usize = 512;

/// The accounting socket's receive buffer, bytes: a PGW's burst (say, Accounting-On recovery
/// re-sending every session) must wait in the kernel while the actor applies a batch, not be
/// dropped. Each datagram costs its skb's truesize (about 1 KiB on loopback) whatever its
/// length, so the default 208 KiB held about 200 requests.
pub const RECEIVE_BUFFER: usize = 16 << 20;

/// Raise `socket`'s receive buffer to [`RECEIVE_BUFFER`]: `SO_RCVBUFFORCE` (root, or
/// CAP_NET_ADMIN) past `net.core.rmem_max`, else `SO_RCVBUF` up to it. A failure only logs: the
/// socket works with the default.
pub fn enlarge_receive_buffer(socket: &std::net::UdpSocket) {
    use std::os::fd::AsRawFd as _;
    let size = libc::c_int::try_from(RECEIVE_BUFFER).unwrap_or(libc::c_int::MAX);
    let set = |option| {
        // SAFETY: setsockopt on a socket this process owns, with a pointer to a c_int and its
        // size, as SO_RCVBUF/SO_RCVBUFFORCE take.
        unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&raw const size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        }
    };
    if set(libc::SO_RCVBUFFORCE) != 0 && set(libc::SO_RCVBUF) != 0 {
        warn!(
            error = %std::io::Error::last_os_error(),
            "Cannot enlarge the RADIUS socket's receive buffer; bursts may be dropped (and \
             retransmitted by the packet core)."
        );
    }
}

/// One valid Accounting-Request, for the actor.
#[derive(Debug, Clone)]
pub struct Request {
    /// The client's name.
    pub client: Arc<str>,
    /// What it says.
    pub accounting: Accounting,
    /// When it arrived, Unix seconds.
    pub received: i64,
}

/// What the actor made of one request. Every outcome but [`Outcome::Unrecorded`] is
/// recorded, and every one but that and [`Outcome::Deferred`] acknowledged: the packet core
/// would otherwise retransmit a refusal forever.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Bindings changed.
    Applied,
    /// Nothing to change: a retransmission, an Interim-Update of a session in force, a Stop
    /// of a session already gone.
    Unchanged,
    /// Older than what is in force (a Stop or Start of a session that a newer one replaced):
    /// ignored.
    Stale,
    /// Refused (the text says why): an IMSI not in the policy, an address outside every pool
    /// or the policy file's address of another SIM, a request without IMSI or address.
    Refused(String),
    /// An IMSI the policy does not list, admitted into its APN's segment (`unknown_imsi =
    /// "admit"`): recorded, and the SIM is added by a reload of the policy; the request is not
    /// answered, so the client sends it again and the retransmission binds the address.
    Deferred,
    /// The store or the maps failed: nothing changed, and the request is not answered, so
    /// the client sends it again.
    Unrecorded,
}

impl Outcome {
    /// Metric label.
    #[must_use]
    pub const fn label(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Unchanged => "unchanged",
            Outcome::Stale => "stale",
            Outcome::Refused(_) => "refused",
            Outcome::Deferred => "deferred",
            Outcome::Unrecorded => "unrecorded",
        }
    }
}

/// Labels of [`Stats::requests`], in its order.
pub const OUTCOMES: [&str; 6] = [
    "applied",
    "unchanged",
    "stale",
    "refused",
    "deferred",
    "unrecorded",
];
/// Labels of [`Stats::dropped`], in its order: an unknown client, then [`PacketError::kind`].
pub const DROPS: [&str; 6] = [
    "unknown_client",
    "length",
    "code",
    "authenticator",
    "attribute",
    "status",
];

/// Counters of the accounting path since the daemon started.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests applied by outcome, in [`OUTCOMES`] order.
    pub requests: [AtomicU64; 6],
    /// Datagrams dropped unanswered, in [`DROPS`] order.
    pub dropped: [AtomicU64; 6],
    /// Requests of batches whose store commit failed: unanswered, so the client sends them
    /// again.
    pub unrecorded: AtomicU64,
}

impl Stats {
    /// Count one outcome.
    pub fn count(&self, outcome: &Outcome) {
        let i = OUTCOMES
            .iter()
            .position(|l| *l == outcome.label())
            .unwrap_or(0);
        self.requests[i].fetch_add(1, Ordering::Relaxed);
    }

    fn count_drop(&self, kind: &str) {
        let i = DROPS.iter().position(|l| *l == kind).unwrap_or(0);
        self.dropped[i].fetch_add(1, Ordering::Relaxed);
    }
}

/// A batch for the actor, and where it answers, request by request, whether each was recorded
/// (and is to be acknowledged).
pub type Batch = (Vec<Request>, oneshot::Sender<Vec<bool>>);

/// Receive Accounting-Requests on `socket` until the actor is gone: check each against its
/// client's secret, hand what a read of the socket finds to the actor as one batch, and send
/// an Accounting-Response for each request it recorded. Datagrams from unknown clients, with a
/// bad authenticator or malformed attributes are dropped and counted, never answered.
pub async fn serve(
    socket: tokio::net::UdpSocket,
    clients: Clients,
    batches: mpsc::Sender<Batch>,
    stats: Arc<Stats>,
) {
    let mut buffer = vec![0u8; packet::MAX_LEN + 1];
    loop {
        if let Err(err) = socket.readable().await {
            warn!(error = %err, "RADIUS socket failed; accounting stopped.");
            return;
        }
        let mut requests = Vec::new();
        let mut replies: Vec<(SocketAddr, [u8; packet::HEADER_LEN], Arc<[u8]>)> = Vec::new();
        while requests.len() < MAX_BATCH {
            let (length, peer) = match socket.try_recv_from(&mut buffer) {
                Ok(got) => got,
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(err) => {
                    debug!(error = %err, "RADIUS receive failed.");
                    break;
                }
            };
            let datagram = &buffer[..length];
            let Some(client) = clients.find(peer.ip()) else {
                stats.count_drop("unknown_client");
                debug!(peer = %peer, "RADIUS request from an unknown client dropped.");
                continue;
            };
            match packet::parse(datagram, &client.secret) {
                Ok(accounting) => {
                    let mut header = [0u8; packet::HEADER_LEN];
                    header.copy_from_slice(&datagram[..packet::HEADER_LEN]);
                    replies.push((peer, header, Arc::clone(&client.secret)));
                    requests.push(Request {
                        client: Arc::clone(&client.name),
                        accounting,
                        received: unix_now(),
                    });
                }
                Err(err) => {
                    stats.count_drop(err.kind());
                    debug!(peer = %peer, client = %client.name, error = %err, "RADIUS request dropped.");
                }
            }
        }
        if requests.is_empty() {
            continue;
        }
        let count = requests.len();
        let (answer, answered) = oneshot::channel();
        if batches.send((requests, answer)).await.is_err() {
            return;
        }
        let acks = answered.await.unwrap_or_else(|_| vec![false; count]);
        for (ack, (peer, header, secret)) in acks.into_iter().zip(replies) {
            if !ack {
                continue;
            }
            let response = packet::response(&header, &secret);
            if let Err(err) = socket.send_to(&response, peer).await {
                debug!(peer = %peer, error = %err, "RADIUS response not sent.");
            }
        }
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}
