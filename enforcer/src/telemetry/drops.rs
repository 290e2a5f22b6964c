//! Dropped traffic for the flow export: deny events (each carrying the packets its SIM's
//! budget suppressed before it) summed per sender, destination, port, protocol and reason over
//! one interval, exported as records with forwardingStatus "dropped" (RFC 7270 §4.12). A flood
//! becomes one record per destination and interval, not a record per packet.
//!
//! Every denied packet is in an event or in the suppressed count the SIM's next event carries,
//! attributed to that event's destination, reason and interval. Counts held back at the end of
//! a flood are reported with the SIM's next denied packet, and lost if none comes before its
//! budget entry is evicted (65,536 SIMs denied more recently); a SIM denied while the ring
//! buffer is full and it has no budget entry is in no event at all. `enforcer stats` and the
//! metrics count every drop exactly. The table holds at most [`MAX_KEYS`]
//! destinations per interval; past that, a SIM's drops to new destinations are summed under
//! the unspecified address (`0.0.0.0`/`::`, port 0).

use std::collections::HashMap;

use enforcer_common::{DropReason, maps::DenyEvent};

use super::ipfix::{Direction, EndReason, FlowRecord, ForwardingStatus};

/// Destinations summed per interval at most.
pub const MAX_KEYS: usize = 65_536;

/// What a drop record is keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DropKey {
    /// SIM index, `DENY_NO_SIM` for none.
    pub sim: u32,
    /// Segment id.
    pub segment: u16,
    /// Source address.
    pub src: [u8; 16],
    /// Destination address.
    pub dst: [u8; 16],
    /// Destination port (TCP, UDP; 0 otherwise).
    pub dport: u16,
    /// IP protocol.
    pub proto: u8,
    /// 1 for IPv6.
    pub v6: u8,
    /// `DropReason` number.
    pub reason: u8,
}

/// The sums of one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DropSum {
    /// Packets denied.
    pub packets: u64,
    /// Their bytes (whole frames).
    pub bytes: u64,
    /// First and last event, `CLOCK_MONOTONIC` ns.
    pub first_ns: u64,
    /// Last event.
    pub last_ns: u64,
}

/// The drops of the current interval.
#[derive(Debug, Default)]
pub struct Drops {
    sums: HashMap<DropKey, DropSum, foldhash::fast::RandomState>,
    /// When the interval began, `CLOCK_MONOTONIC` ns (0: nothing yet).
    pub since_ns: u64,
}

impl Drops {
    /// Add one event (and the suppressed packets it carries).
    pub fn add(&mut self, event: &DenyEvent) {
        // Audit mode's reports are of packets that passed.
        if event.reason == enforcer_common::maps::DENY_EVENT_AUDIT {
            return;
        }
        let ports = matches!(event.proto, 6 | 17 | 132);
        let mut key = DropKey {
            sim: event.sim,
            segment: event.segment,
            src: event.src,
            dst: event.dst,
            dport: if ports { event.dport } else { 0 },
            proto: event.proto,
            v6: event.v6,
            reason: event.reason,
        };
        if self.sums.len() >= MAX_KEYS && !self.sums.contains_key(&key) {
            key.dst = [0; 16];
            key.dport = 0;
        }
        if self.since_ns == 0 {
            self.since_ns = event.time_ns;
        }
        let sum = self.sums.entry(key).or_insert(DropSum {
            first_ns: event.time_ns,
            ..DropSum::default()
        });
        sum.packets += 1 + u64::from(event.suppressed);
        sum.bytes += u64::from(event.bytes) + event.suppressed_bytes;
        sum.last_ns = sum.last_ns.max(event.time_ns);
        sum.first_ns = sum.first_ns.min(event.time_ns);
    }

    /// Keys summed.
    #[must_use]
    pub fn len(&self) -> usize {
        self.sums.len()
    }

    /// Whether nothing was dropped this interval.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.sums.is_empty()
    }

    /// The interval's sums; a new interval begins.
    pub fn take(&mut self) -> Vec<(DropKey, DropSum)> {
        self.since_ns = 0;
        self.sums.drain().collect()
    }

    /// Put back sums that could not be exported (merged with what came since).
    pub fn restore(&mut self, sums: Vec<(DropKey, DropSum)>) {
        for (key, sum) in sums {
            let mine = self.sums.entry(key).or_insert(DropSum {
                first_ns: sum.first_ns,
                ..DropSum::default()
            });
            mine.packets += sum.packets;
            mine.bytes += sum.bytes;
            mine.first_ns = mine.first_ns.min(sum.first_ns);
            mine.last_ns = mine.last_ns.max(sum.last_ns);
        }
    }
}

/// forwardingStatus of a drop reason: "ACL deny" (129) for what the policy refuses, "RPF"
/// (140: the source may not send from where it is) for forged and foreign sources, "unknown"
/// (128) otherwise (IANA "forwardingStatus" sub-registry).
#[must_use]
pub fn status(reason: u8) -> ForwardingStatus {
    match DropReason::ALL.iter().find(|r| **r as u8 == reason) {
        Some(
            DropReason::NoRule
            | DropReason::Lateral
            | DropReason::Quarantined
            | DropReason::Inbound,
        ) => ForwardingStatus::DroppedAclDeny,
        Some(DropReason::Spoofed | DropReason::NonPool) => ForwardingStatus::DroppedRpf,
        _ => ForwardingStatus::Dropped,
    }
}

/// The record of one drop sum; `names` as for sessions, with no rule; `wall_ms` converts its
/// times.
pub fn record(
    key: &DropKey,
    sum: &DropSum,
    names: std::sync::Arc<super::FlowNames>,
    wall_ms: impl Fn(u64) -> u64,
) -> FlowRecord {
    let addr = |a: [u8; 16]| super::ip(a, key.v6 == 1);
    let reason = DropReason::ALL
        .iter()
        .find(|r| **r as u8 == key.reason)
        .map_or("unknown", |r| r.name());
    let start_ms = wall_ms(sum.first_ns);
    FlowRecord {
        start_ms,
        end_ms: wall_ms(sum.last_ns).max(start_ms),
        src: addr(key.src),
        dst: addr(key.dst),
        src_port: 0,
        dst_port: key.dport,
        proto: key.proto,
        packets: sum.packets,
        octets: sum
            .bytes
            .saturating_sub(super::ETHERNET_HEADER * sum.packets),
        end_reason: EndReason::Active,
        status: status(key.reason),
        direction: if key.reason == DropReason::Inbound as u8 {
            Direction::ToDevice
        } else {
            Direction::FromDevice
        },
        names,
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(dst: u8, suppressed: u32, time_ns: u64) -> DenyEvent {
        let mut e = DenyEvent {
            time_ns,
            sim: 3,
            suppressed,
            suppressed_bytes: u64::from(suppressed) * 100,
            dport: 443,
            proto: 6,
            reason: DropReason::NoRule as u8,
            bytes: 100,
            ..DenyEvent::default()
        };
        e.src[..4].copy_from_slice(&[10, 64, 0, 3]);
        e.dst[..4].copy_from_slice(&[192, 0, 2, dst]);
        e
    }

    /// Events to one destination sum with the packets they carry; another destination is
    /// another sum; `take` starts a new interval and `restore` puts sums back.
    #[test]
    fn events_sum_per_destination() {
        let mut drops = Drops::default();
        drops.add(&event(1, 0, 10));
        drops.add(&event(1, 40, 20));
        drops.add(&event(2, 0, 30));
        let mut sums = drops.take();
        sums.sort_by_key(|(k, _)| k.dst);
        assert_eq!(sums.len(), 2);
        assert_eq!(
            sums[0].1,
            DropSum {
                packets: 42,
                bytes: 4200,
                first_ns: 10,
                last_ns: 20
            }
        );
        assert_eq!(sums[1].1.packets, 1);
        assert!(drops.is_empty());
        drops.add(&event(1, 0, 40));
        drops.restore(sums);
        let total: u64 = drops.take().iter().map(|(_, s)| s.packets).sum();
        assert_eq!(total, 44);
    }

    /// Past `MAX_KEYS` destinations, new ones are summed under the unspecified address, so
    /// memory stays bounded and no packet is lost.
    #[test]
    fn a_scan_is_bounded() {
        let mut drops = Drops::default();
        for i in 0..(MAX_KEYS as u32 + 100) {
            let mut e = event(0, 0, u64::from(i));
            e.dst[..4].copy_from_slice(&i.to_be_bytes());
            e.dst[0] = 198;
            drops.add(&e);
        }
        assert_eq!(drops.len(), MAX_KEYS + 1);
        let sums = drops.take();
        let other = sums
            .iter()
            .find(|(k, _)| k.dst == [0; 16])
            .expect("the rest");
        assert_eq!(other.1.packets, 100);
        assert_eq!(
            sums.iter().map(|(_, s)| s.packets).sum::<u64>(),
            MAX_KEYS as u64 + 100
        );
    }

    #[test]
    fn statuses_follow_the_iana_codes() {
        assert_eq!(status(DropReason::NoRule as u8) as u8, 129);
        assert_eq!(status(DropReason::Spoofed as u8) as u8, 140);
        assert_eq!(status(DropReason::SessionsFull as u8) as u8, 128);
    }
}
