//! Visibility: per-device flow records exported over IPFIX (RFC 7011), and metrics.
//!
//! - [`meter`]: the session table, read each round, into records due (active and idle timeouts,
//!   exact deltas across rounds, removals and restarts);
//! - [`ipfix`]: the records and templates as IPFIX messages;
//! - [`exporter`]: a thread sending them to the collectors behind a bounded queue;
//! - [`metrics`]: the Prometheus exposition.

pub mod alerts;
pub mod drops;
pub mod events;
pub mod exporter;
pub mod ipfix;
pub mod meter;
pub mod metrics;

use std::net::IpAddr;

use enforcer_common::session::{SESSION_DEVICE_FIRST, SessionKey};

use self::{
    ipfix::{Direction, FlowRecord, ForwardingStatus},
    meter::Due,
};

/// Bytes of an Ethernet header, in the program's byte counts but not in octetDeltaCount
/// (RFC 7012: "the IP header(s) and IP payload").
pub(crate) const ETHERNET_HEADER: u64 = 14;

/// The names a record carries, looked up by the daemon: IMSI, MSISDN (empty if none), segment
/// and rule.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowNames {
    /// IMSI.
    pub imsi: String,
    /// MSISDN, empty if the SIM has none.
    pub msisdn: String,
    /// Segment name.
    pub segment: String,
    /// Rule (`owner @ file:line`).
    pub rule: String,
}

/// `CLOCK_MONOTONIC_COARSE` nanoseconds to Unix milliseconds, given both clocks now.
#[must_use]
pub fn wall_ms(mono_ns: u64, now_mono_ns: u64, now_wall_ms: u64) -> u64 {
    now_wall_ms.saturating_sub(now_mono_ns.saturating_sub(mono_ns) / 1_000_000)
}

/// An address as the maps hold it (16 bytes, IPv4 in the first four) in its family.
#[must_use]
pub fn ip(addr: [u8; 16], v6: bool) -> IpAddr {
    if v6 {
        IpAddr::from(addr)
    } else {
        IpAddr::from([addr[0], addr[1], addr[2], addr[3]])
    }
}

/// The device's and the peer's (address, port) of a session.
#[must_use]
pub fn endpoints(key: &SessionKey, flags: u8) -> ((IpAddr, u16), (IpAddr, u16)) {
    let v6 = key.v6 == 1;
    let a = (ip(key.addr_a, v6), key.port_a);
    let b = (ip(key.addr_b, v6), key.port_b);
    if flags & SESSION_DEVICE_FIRST != 0 {
        (a, b)
    } else {
        (b, a)
    }
}

/// The records of `due`: one per direction that carried packets, from the device first.
/// `names` gives the names of its SIM, segment and rule; the clocks convert its times.
pub fn records(
    due: &Due,
    names: &std::sync::Arc<FlowNames>,
    now_mono_ns: u64,
    now_wall_ms: u64,
    out: &mut Vec<FlowRecord>,
) {
    let (device, peer) = endpoints(&due.key, due.flags);
    // ICMP sessions are keyed by the echo identifier, which is no transport port.
    let ports = |p: u16| {
        if matches!(due.key.proto, 6 | 17 | 132) {
            p
        } else {
            0
        }
    };
    let start_ms = wall_ms(due.start_ns, now_mono_ns, now_wall_ms);
    let end_ms = wall_ms(due.end_ns, now_mono_ns, now_wall_ms).max(start_ms);
    for (i, direction) in [Direction::FromDevice, Direction::ToDevice]
        .into_iter()
        .enumerate()
    {
        if due.delta.packets[i] == 0 {
            continue;
        }
        let (src, dst) = if direction == Direction::FromDevice {
            (device, peer)
        } else {
            (peer, device)
        };
        out.push(FlowRecord {
            start_ms,
            end_ms,
            src: src.0,
            dst: dst.0,
            src_port: ports(src.1),
            dst_port: ports(dst.1),
            proto: due.key.proto,
            packets: due.delta.packets[i],
            // The program counts whole frames; octetDeltaCount counts from the IP header on.
            octets: due.delta.bytes[i].saturating_sub(ETHERNET_HEADER * due.delta.packets[i]),
            end_reason: due.reason,
            status: ForwardingStatus::Forwarded,
            direction,
            names: std::sync::Arc::clone(names),
            reason: if due.rule == enforcer_common::rules::AUDIT_RULE {
                "audit"
            } else if due.flags & enforcer_common::session::SESSION_INBOUND != 0 {
                "inbound"
            } else {
                "rule"
            },
        });
    }
}

/// `CLOCK_MONOTONIC_COARSE` nanoseconds now: the clock the program stamps sessions and deny
/// events with (`bpf_ktime_get_coarse_ns`).
#[must_use]
pub fn monotonic_coarse_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to write.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &raw mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}
