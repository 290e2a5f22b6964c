//! The metering process: turns the kernel's session table, read each round (the sessions that
//! changed, and the whole table once per active timeout: `crate::scan_plan`), into flow
//! records with the active and idle timeouts of any flow exporter (RFC 7011 §2, RFC 5470 §5).
//!
//! The program counts each session's packets and bytes, per direction, from its first packet
//! on; the meter keeps, per session, what it has exported, and each round exports the
//! difference of the sessions whose timeout came:
//!
//! - **idle**: no packet for the idle timeout, counts not exported yet → flowEndReason 1;
//! - **active**: the record open for the active timeout while packets go on → 2;
//! - **end of flow**: the daemon removed the session closed (TCP FIN both ways, RST) → 3;
//!   removed idle → 1;
//! - **forced end**: the session vanished from the table without the daemon removing it (the
//!   program revoked it under a new policy), found at the next full round, or the daemon
//!   stops → 4. Until that full round, counts of a revoked session not exported yet go out as
//!   its timeouts come, as idle or active.
//!
//! Totals stay exact: a session's exported deltas add up to its kernel counters. What a
//! round exports counts as exported only once it is queued for sending ([`Meter::commit`]):
//! a full queue leaves it for the next round. Removed sessions are read as they are removed
//! (lookup-and-delete), so nothing the program counted before the removal is lost; a revoked
//! session's last packets between the round before and its revocation are the one gap (the
//! program removes it without the daemon seeing its last counters). A stopping daemon saves
//! what it exported per session ([`Meter::save`]) for the next one.

use std::{collections::HashMap, io, path::Path};

use enforcer_common::session::{Session, SessionKey};

use super::ipfix::EndReason;

/// Packets and bytes per direction: `[from the device, to the device]`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    /// Packets from the device, to the device.
    pub packets: [u64; 2],
    /// Bytes from the device, to the device.
    pub bytes: [u64; 2],
}

impl Counts {
    /// A session's counters.
    #[must_use]
    pub fn of(session: &Session) -> Self {
        Self {
            packets: session.packets,
            bytes: session.bytes,
        }
    }

    /// `self - earlier`, per counter (0 where a counter went back: a new session).
    #[must_use]
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts {
            packets: [
                self.packets[0].saturating_sub(earlier.packets[0]),
                self.packets[1].saturating_sub(earlier.packets[1]),
            ],
            bytes: [
                self.bytes[0].saturating_sub(earlier.bytes[0]),
                self.bytes[1].saturating_sub(earlier.bytes[1]),
            ],
        }
    }

    /// No packet.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        self.packets == [0, 0]
    }
}

/// One session's export state.
#[derive(Clone, Copy, Debug)]
struct Tracked {
    /// The session's creation time: the same key created anew is another session.
    created_ns: u64,
    /// Counters exported so far.
    exported: Counts,
    /// Counters when last read.
    last: Counts,
    /// Its last packet when last read.
    seen_ns: u64,
    /// Where the open record starts.
    record_start_ns: u64,
    /// The round it was last read in.
    round: u64,
    /// The round it was last checked for a timeout in.
    checked: u64,
    /// The deadline of its entry in [`Meter::watch`] (0: none).
    queued: u64,
    /// Set once it left the table: why.
    ended: Option<EndReason>,
    sim: u32,
    rule: u32,
    segment: u16,
    flags: u8,
}

/// A record due: one session's counts from `from` to `to`, for the export of each direction
/// with packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Due {
    /// The session.
    pub key: SessionKey,
    /// Its SIM index, rule id, segment id and `Session::flags` when last read.
    pub sim: u32,
    /// Rule id.
    pub rule: u32,
    /// Segment id.
    pub segment: u16,
    /// `Session::flags`.
    pub flags: u8,
    /// The counts the record covers.
    pub delta: Counts,
    /// The counters once it is exported.
    pub to: Counts,
    /// Start of the record, `CLOCK_MONOTONIC_COARSE` ns.
    pub start_ns: u64,
    /// Its last packet, same clock.
    pub end_ns: u64,
    /// Why it is exported.
    pub reason: EndReason,
    /// The session is gone: forget it once exported.
    pub ends: bool,
    /// The session's creation time: which session of the key the record is of.
    pub created_ns: u64,
    /// Its entry in the meter's watch list, which [`Meter::commit`] clears.
    watch_slot: usize,
}

/// The meter; see the module docs. Memory: about 360 bytes per live session (the hash
/// table's slack and the watch list included; 691 MiB at 2,000,000 in BENCHMARKS.md).
#[derive(Debug)]
pub struct Meter {
    active_ns: u64,
    idle_ns: u64,
    flows: HashMap<SessionKey, Tracked, foldhash::fast::RandomState>,
    round: u64,
    /// Sessions created before this (`CLOCK_MONOTONIC_COARSE` ns) that the meter does not
    /// know were counted by a daemon that stopped without saving its state: their counts so
    /// far cannot be told apart from what it exported, so they are taken as exported.
    adopt_before_ns: Option<u64>,
    adopted: u64,
    /// Sessions gone whose key a new session took before their last counts were exported:
    /// exported (as forced ends) from here until committed.
    superseded: Vec<(SessionKey, Tracked)>,
    /// Sessions with counts not exported at the last round, each with the time its next
    /// timeout comes (`u64::MAX` once its record was committed): a partial round
    /// ([`Meter::round_partial`]) checks those whose time came, whether or not the scan picked
    /// them. One live entry a session (`Tracked::queued`); an entry left behind when a session
    /// became due before its entry's time is dropped when that time comes (at most two, as
    /// the active timeout bounds every deadline).
    watch: Vec<(SessionKey, u64)>,
}

/// The file format's magic and version.
const MAGIC: &[u8; 8] = b"ENFLOWS1";
/// Bytes per session in the saved state: key, created_ns, exported counts.
const ENTRY: usize = size_of::<SessionKey>() + 8 + 32;

impl Meter {
    /// A meter with the given timeouts (seconds) that knows no session yet; sessions created
    /// before `adopt_before_ns` are taken as exported up to their first reading (see
    /// [`Meter::adopted`]).
    #[must_use]
    pub fn new(active_s: u64, idle_s: u64, adopt_before_ns: Option<u64>) -> Self {
        Self {
            active_ns: active_s.saturating_mul(1_000_000_000),
            idle_ns: idle_s.saturating_mul(1_000_000_000),
            flows: HashMap::default(),
            round: 0,
            adopt_before_ns,
            adopted: 0,
            superseded: Vec::new(),
            watch: Vec::new(),
        }
    }

    /// The idle timeout, nanoseconds.
    #[must_use]
    pub fn idle_ns(&self) -> u64 {
        self.idle_ns
    }

    /// The active timeout, nanoseconds.
    #[must_use]
    pub fn active_ns(&self) -> u64 {
        self.active_ns
    }

    /// Sessions tracked.
    #[must_use]
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// Whether it tracks no session.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Sessions found at start that an earlier daemon counted without saving its state (a
    /// crash): their counts up to that first reading are not exported.
    #[must_use]
    pub fn adopted(&self) -> u64 {
        self.adopted
    }

    /// One round at `now_ns`: `live` is the whole session table as read, `ended` the sessions
    /// the daemon removed this round with their final counters and why. A tracked session in
    /// neither went without the daemon (the program revoked it): a forced end. Returns the
    /// records due; [`Meter::commit`] them once queued.
    pub fn round(
        &mut self,
        now_ns: u64,
        live: &[(SessionKey, Session)],
        ended: &[(SessionKey, Session, EndReason)],
    ) -> Vec<Due> {
        self.round_with(now_ns, live, ended, true)
    }

    /// A round over part of the table: `read` holds at least every session that changed since
    /// the last round (`enforcer_common::scan::wanted`), `ended` as for [`Meter::round`]; the
    /// meter checks the timeouts of those and of the sessions whose counts it has not exported
    /// yet when their time comes (its idle timeout ends a record from what it read before),
    /// and nothing else. A session missing from `read` is not taken as gone: the next full
    /// [`Meter::round`] finds those.
    pub fn round_partial(
        &mut self,
        now_ns: u64,
        read: &[(SessionKey, Session)],
        ended: &[(SessionKey, Session, EndReason)],
    ) -> Vec<Due> {
        self.round_with(now_ns, read, ended, false)
    }

    fn round_with(
        &mut self,
        now_ns: u64,
        live: &[(SessionKey, Session)],
        ended: &[(SessionKey, Session, EndReason)],
        full: bool,
    ) -> Vec<Due> {
        self.round += 1;
        let round = self.round;
        let mut due = Vec::new();
        let readings = live
            .iter()
            .map(|(k, s)| (k, s, None))
            .chain(ended.iter().map(|(k, s, r)| (k, s, Some(*r))));
        for (key, session, ended) in readings {
            let counts = Counts::of(session);
            let tracked = match self.flows.get_mut(key) {
                Some(t) if t.created_ns == session.created_ns => t,
                other => {
                    if let Some(old) = other {
                        // The key's earlier session went and a new one came between rounds:
                        // its last counts are kept apart until they are exported.
                        let mut old = *old;
                        if !old.last.since(&old.exported).is_zero() {
                            old.ended = Some(old.ended.unwrap_or(EndReason::Forced));
                            self.superseded.push((*key, old));
                        }
                    }
                    let adopt = self
                        .adopt_before_ns
                        .is_some_and(|before| session.created_ns < before);
                    self.adopted += u64::from(adopt);
                    self.flows.insert(
                        *key,
                        Tracked {
                            created_ns: session.created_ns,
                            exported: if adopt { counts } else { Counts::default() },
                            last: counts,
                            seen_ns: session.seen_ns,
                            record_start_ns: if adopt { now_ns } else { session.created_ns },
                            round,
                            checked: 0,
                            queued: 0,
                            ended: None,
                            sim: session.sim,
                            rule: session.rule,
                            segment: session.segment,
                            flags: session.flags,
                        },
                    );
                    self.flows.get_mut(key).expect("just inserted")
                }
            };
            tracked.last = counts;
            tracked.seen_ns = session.seen_ns;
            tracked.round = round;
            tracked.ended = ended;
            tracked.sim = session.sim;
            tracked.rule = session.rule;
            tracked.segment = session.segment;
            tracked.flags = session.flags;
        }
        let (active_ns, idle_ns) = (self.active_ns, self.idle_ns);
        let mut empty_ended = Vec::new();
        let mut watch = Vec::new();
        let mut check = |key: &SessionKey,
                         tracked: &mut Tracked,
                         due: &mut Vec<Due>,
                         watch: &mut Vec<(SessionKey, u64)>| {
            tracked.checked = round;
            if full {
                // The watch list is built anew.
                tracked.queued = 0;
                if tracked.round != round && tracked.ended.is_none() {
                    tracked.ended = Some(EndReason::Forced);
                }
            }
            let pending = !tracked.last.since(&tracked.exported).is_zero();
            if !pending {
                // Whatever entry it has in the watch list goes stale.
                tracked.queued = 0;
                if tracked.ended.is_some() {
                    empty_ended.push(*key);
                }
                return;
            }
            // Its entry in the watch list outlives this round (a partial round keeps entries
            // not due without looking at them): then it is the one entry the session needs.
            let entry_lives = !full && tracked.queued > now_ns;
            let reason = match tracked.ended {
                Some(reason) => Some((reason, true)),
                None if now_ns.saturating_sub(tracked.seen_ns) >= idle_ns => {
                    Some((EndReason::Idle, false))
                }
                None if now_ns.saturating_sub(tracked.record_start_ns) >= active_ns => {
                    Some((EndReason::Active, false))
                }
                None => None,
            };
            if let Some((reason, ends)) = reason {
                // Checked again next round unless committed meanwhile.
                let mut d = Self::due_of(key, tracked, reason, ends);
                d.watch_slot = watch.len();
                due.push(d);
                tracked.queued = now_ns;
                watch.push((*key, now_ns));
            } else {
                // Deadlines only move later (a packet, an export), so a session's entry fires
                // no later than its timeout comes and is queued again then: one entry each.
                let deadline = tracked
                    .seen_ns
                    .saturating_add(idle_ns)
                    .min(tracked.record_start_ns.saturating_add(active_ns))
                    .max(1);
                if !entry_lives || deadline < tracked.queued {
                    tracked.queued = deadline;
                    watch.push((*key, deadline));
                }
            }
        };
        if full {
            for (key, tracked) in &mut self.flows {
                check(key, tracked, &mut due, &mut watch);
            }
        } else {
            let read = live
                .iter()
                .map(|(k, _)| k)
                .chain(ended.iter().map(|(k, ..)| k));
            for key in read {
                if let Some(tracked) = self.flows.get_mut(key)
                    && tracked.checked != round
                {
                    check(key, tracked, &mut due, &mut watch);
                }
            }
            for &(key, deadline) in &self.watch {
                if deadline == u64::MAX {
                    // Committed.
                    continue;
                }
                if deadline > now_ns {
                    // Not due yet: kept as it is, without looking the session up.
                    watch.push((key, deadline));
                    continue;
                }
                if let Some(tracked) = self.flows.get_mut(&key)
                    && tracked.queued == deadline
                    && tracked.checked != round
                {
                    check(&key, tracked, &mut due, &mut watch);
                }
            }
        }
        self.watch = watch;
        for key in empty_ended {
            self.flows.remove(&key);
        }
        for (key, old) in &self.superseded {
            due.push(Self::due_of(
                key,
                old,
                old.ended.unwrap_or(EndReason::Forced),
                true,
            ));
        }
        due
    }

    /// Every session's counts not yet exported, as forced ends (the daemon stopping); the
    /// sessions stay tracked (they live on in the kernel).
    #[must_use]
    pub fn flush(&self) -> Vec<Due> {
        self.flows
            .iter()
            .chain(self.superseded.iter().map(|(k, t)| (k, t)))
            .filter(|(_, t)| !t.last.since(&t.exported).is_zero())
            .map(|(key, t)| Self::due_of(key, t, EndReason::Forced, t.ended.is_some()))
            .collect()
    }

    fn due_of(key: &SessionKey, t: &Tracked, reason: EndReason, ends: bool) -> Due {
        Due {
            key: *key,
            sim: t.sim,
            rule: t.rule,
            segment: t.segment,
            flags: t.flags,
            delta: t.last.since(&t.exported),
            to: t.last,
            start_ns: t.record_start_ns,
            end_ns: t.seen_ns.max(t.record_start_ns),
            reason,
            ends,
            created_ns: t.created_ns,
            watch_slot: usize::MAX,
        }
    }

    /// `due` (of the last round: before the next one) were queued for export at `now_ns`:
    /// count them as exported.
    pub fn commit(&mut self, due: &[Due], now_ns: u64) {
        for d in due {
            let mut cleared = false;
            if let Some(entry) = self.watch.get_mut(d.watch_slot)
                && entry.0 == d.key
            {
                entry.1 = u64::MAX;
                cleared = true;
            }
            // Only the session the record was made of: a new one of the same key has other
            // counters.
            if d.ends {
                if self
                    .flows
                    .get(&d.key)
                    .is_some_and(|t| t.ended.is_some() && t.created_ns == d.created_ns)
                {
                    self.flows.remove(&d.key);
                }
                self.superseded
                    .retain(|(k, t)| !(*k == d.key && t.created_ns == d.created_ns));
                continue;
            }
            if let Some(t) = self.flows.get_mut(&d.key)
                && t.created_ns == d.created_ns
            {
                t.exported = d.to;
                t.record_start_ns = now_ns;
                if cleared {
                    // Nothing pending: no entry until its counts move again.
                    t.queued = 0;
                }
            }
        }
    }

    /// Save what was exported per session to `path` (written whole, then renamed into place),
    /// for the next daemon ([`Meter::load`]).
    ///
    /// # Errors
    /// Writing or renaming the file.
    pub fn save(&self, path: &Path) -> io::Result<()> {
        let mut out = Vec::with_capacity(16 + self.flows.len() * ENTRY);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(self.flows.len() as u64).to_le_bytes());
        for (key, t) in &self.flows {
            if t.ended.is_some() {
                continue;
            }
            out.extend_from_slice(&key.addr_a);
            out.extend_from_slice(&key.addr_b);
            out.extend_from_slice(&key.port_a.to_le_bytes());
            out.extend_from_slice(&key.port_b.to_le_bytes());
            out.extend_from_slice(&[key.proto, key.v6, 0, 0]);
            out.extend_from_slice(&t.created_ns.to_le_bytes());
            for v in t.exported.packets.iter().chain(&t.exported.bytes) {
                out.extend_from_slice(&v.to_le_bytes());
            }
        }
        let count = ((out.len() - 16) / ENTRY) as u64;
        out[8..16].copy_from_slice(&count.to_le_bytes());
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, &out)?;
        std::fs::rename(&tmp, path)
    }

    /// Take over what an earlier daemon saved at `path`, and remove the file (a later crash
    /// must not reuse it). Returns the sessions loaded; a missing file is 0, a damaged one or
    /// one that cannot be removed an error (and the meter unchanged).
    ///
    /// # Errors
    /// Reading the file, or a file that is not one [`Meter::save`] wrote.
    pub fn load(&mut self, path: &Path, now_ns: u64) -> io::Result<usize> {
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(0),
            Err(err) => return Err(err),
        };
        // A file left behind would be read again after a later crash and its sessions
        // exported twice: it is used only once it is gone.
        std::fs::remove_file(path)?;
        let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
        if bytes.len() < 16 || &bytes[..8] != MAGIC {
            return Err(bad("not a flow state file (bad magic)"));
        }
        let count = u64::from_le_bytes(bytes[8..16].try_into().unwrap_or_default());
        let body = &bytes[16..];
        if body.len() as u64 != count.saturating_mul(ENTRY as u64) {
            return Err(bad("truncated flow state file"));
        }
        let u64_at =
            |e: &[u8], at: usize| u64::from_le_bytes(e[at..at + 8].try_into().unwrap_or_default());
        for e in body.chunks_exact(ENTRY) {
            let mut key = SessionKey::default();
            key.addr_a.copy_from_slice(&e[0..16]);
            key.addr_b.copy_from_slice(&e[16..32]);
            key.port_a = u16::from_le_bytes([e[32], e[33]]);
            key.port_b = u16::from_le_bytes([e[34], e[35]]);
            key.proto = e[36];
            key.v6 = e[37];
            let exported = Counts {
                packets: [u64_at(e, 48), u64_at(e, 56)],
                bytes: [u64_at(e, 64), u64_at(e, 72)],
            };
            self.flows.insert(
                key,
                Tracked {
                    created_ns: u64_at(e, 40),
                    exported,
                    last: exported,
                    seen_ns: now_ns,
                    record_start_ns: now_ns,
                    round: self.round,
                    checked: 0,
                    queued: 0,
                    ended: None,
                    sim: 0,
                    rule: 0,
                    segment: 0,
                    flags: 0,
                },
            );
        }
        Ok(usize::try_from(count).unwrap_or(usize::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const S: u64 = 1_000_000_000;

    fn key(port: u16) -> SessionKey {
        let mut key = SessionKey {
            port_a: port,
            port_b: 53,
            proto: 17,
            ..SessionKey::default()
        };
        key.addr_a[..4].copy_from_slice(&[10, 64, 0, 2]);
        key.addr_b[..4].copy_from_slice(&[192, 0, 2, 53]);
        key
    }

    fn session(created: u64, seen: u64, packets: [u64; 2]) -> Session {
        Session {
            sim: 1,
            rule: 2,
            segment: 3,
            flags: enforcer_common::session::SESSION_DEVICE_FIRST,
            created_ns: created,
            seen_ns: seen,
            packets,
            bytes: [packets[0] * 100, packets[1] * 100],
            ..Session::default()
        }
    }

    fn exported(due: &[Due]) -> (Vec<EndReason>, [u64; 2]) {
        let total = due.iter().fold([0, 0], |t, d| {
            [t[0] + d.delta.packets[0], t[1] + d.delta.packets[1]]
        });
        (due.iter().map(|d| d.reason).collect(), total)
    }

    /// A long flow is exported every active timeout, each record only what is new; once quiet
    /// for the idle timeout its rest goes out as idle.
    #[test]
    fn active_then_idle() {
        let mut meter = Meter::new(60, 15, None);
        let k = key(40_000);
        let due = meter.round(10 * S, &[(k, session(0, 10 * S, [5, 5]))], &[]);
        assert!(due.is_empty(), "nothing due before a timeout");
        let due = meter.round(61 * S, &[(k, session(0, 61 * S, [9, 8]))], &[]);
        assert_eq!(exported(&due), (vec![EndReason::Active], [9, 8]));
        assert_eq!(due[0].start_ns, 0);
        meter.commit(&due, 61 * S);
        let due = meter.round(70 * S, &[(k, session(0, 65 * S, [12, 10]))], &[]);
        assert!(
            due.is_empty(),
            "the new record is open for less than the active timeout"
        );
        let due = meter.round(81 * S, &[(k, session(0, 65 * S, [12, 10]))], &[]);
        assert_eq!(exported(&due), (vec![EndReason::Idle], [3, 2]));
        assert_eq!((due[0].start_ns, due[0].end_ns), (61 * S, 65 * S));
        meter.commit(&due, 81 * S);
        assert!(
            meter
                .round(200 * S, &[(k, session(0, 65 * S, [12, 10]))], &[])
                .is_empty()
        );
        assert_eq!(meter.len(), 1, "an idle session is still tracked");
    }

    /// A session the daemon removes closed ends its flow (3), one removed idle ends idle (1),
    /// one that vanished (revoked by the program) is a forced end (4) with its last counts;
    /// none is tracked afterwards.
    #[test]
    fn removals_end_the_flow() {
        let mut meter = Meter::new(60, 15, None);
        let (a, b, c) = (key(1), key(2), key(3));
        let live = [
            (a, session(0, S, [1, 1])),
            (b, session(0, S, [2, 0])),
            (c, session(0, S, [3, 3])),
        ];
        assert!(meter.round(2 * S, &live, &[]).is_empty());
        let ended = [
            (a, session(0, 3 * S, [4, 4]), EndReason::EndOfFlow),
            (b, session(0, 3 * S, [2, 0]), EndReason::Idle),
        ];
        let due = meter.round(20 * S, &[], &ended);
        let mut reasons: Vec<(u16, EndReason, [u64; 2])> = due
            .iter()
            .map(|d| (d.key.port_a, d.reason, d.delta.packets))
            .collect();
        reasons.sort_by_key(|r| r.0);
        assert_eq!(
            reasons,
            vec![
                (1, EndReason::EndOfFlow, [4, 4]),
                (2, EndReason::Idle, [2, 0]),
                (3, EndReason::Forced, [3, 3]),
            ]
        );
        meter.commit(&due, 20 * S);
        assert!(meter.is_empty());
    }

    /// What is not committed (the exporter's queue was full) is due again next round, with
    /// what came since: nothing lost, nothing twice.
    #[test]
    fn uncommitted_records_come_again() {
        let mut meter = Meter::new(1, 15, None);
        let k = key(7);
        let due = meter.round(2 * S, &[(k, session(0, 2 * S, [3, 0]))], &[]);
        assert_eq!(exported(&due).1, [3, 0]);
        let due = meter.round(3 * S, &[(k, session(0, 3 * S, [5, 1]))], &[]);
        assert_eq!(exported(&due).1, [5, 1]);
        meter.commit(&due, 3 * S);
        let due = meter.round(5 * S, &[(k, session(0, 5 * S, [6, 1]))], &[]);
        assert_eq!(exported(&due).1, [1, 0]);
    }

    /// A key reused by a new session (the old one revoked and opened again between rounds):
    /// the old one's rest is a forced end, the new one counts from zero.
    #[test]
    fn a_reused_key_is_a_new_flow() {
        let mut meter = Meter::new(1, 15, None);
        let k = key(9);
        let due = meter.round(2 * S, &[(k, session(0, 2 * S, [3, 3]))], &[]);
        meter.commit(&due, 2 * S);
        let _ = meter.round(2 * S + 1, &[(k, session(0, 2 * S, [4, 3]))], &[]);
        let due = meter.round(4 * S, &[(k, session(3 * S, 4 * S, [1, 0]))], &[]);
        let mut got: Vec<(EndReason, [u64; 2])> =
            due.iter().map(|d| (d.reason, d.delta.packets)).collect();
        got.sort_by_key(|g| g.0 as u8);
        assert_eq!(
            got,
            vec![(EndReason::Active, [1, 0]), (EndReason::Forced, [1, 0])]
        );
    }

    /// A key reused while the old session's last record waits for room in the queue: the
    /// old counts come again each round until committed, and committing one session's
    /// record never forgets the other session of the key.
    #[test]
    fn a_reused_key_keeps_the_old_counts_until_exported() {
        let mut meter = Meter::new(60, 15, None);
        let k = key(11);
        let _ = meter.round(S, &[(k, session(0, S, [2, 2]))], &[]);
        // Ended idle with counts not exported, and the key opened again at once.
        let ended = [(k, session(0, S, [3, 2]), EndReason::Idle)];
        let due = meter.round(20 * S, &[], &ended);
        assert_eq!(exported(&due), (vec![EndReason::Idle], [3, 2]));
        // Not committed (the queue was full); the new session appears.
        let due = meter.round(21 * S, &[(k, session(21 * S, 21 * S, [1, 0]))], &[]);
        assert_eq!(exported(&due), (vec![EndReason::Idle], [3, 2]), "still due");
        // The new session ends too, before anything is committed.
        let due = meter.round(
            40 * S,
            &[],
            &[(k, session(21 * S, 22 * S, [4, 0]), EndReason::Idle)],
        );
        assert_eq!(exported(&due).1, [7, 2]);
        // Commit only the new session's record: the old one stays due.
        let (new, old): (Vec<Due>, Vec<Due>) =
            due.into_iter().partition(|d| d.created_ns == 21 * S);
        meter.commit(&new, 40 * S);
        let due = meter.round(41 * S, &[], &[]);
        assert_eq!(due, old);
        meter.commit(&due, 41 * S);
        assert!(meter.round(42 * S, &[], &[]).is_empty());
        assert!(meter.is_empty());
    }

    /// The state saved at a stop is taken over by the next meter: it exports only what came
    /// after, and the file is gone once read. A session re-created under the same key counts
    /// from zero; a damaged file is refused.
    #[test]
    fn state_survives_a_restart() {
        let dir = std::env::temp_dir().join(format!("enforcer-meter-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.flows");
        let mut meter = Meter::new(1, 15, None);
        let (a, b) = (key(1), key(2));
        let live = [
            (a, session(0, 2 * S, [10, 10])),
            (b, session(S, 2 * S, [5, 5])),
        ];
        let due = meter.round(2 * S, &live, &[]);
        meter.commit(&due, 2 * S);
        meter.save(&path).unwrap();

        let mut next = Meter::new(1, 15, None);
        assert_eq!(next.load(&path, 3 * S).unwrap(), 2);
        assert!(!path.exists(), "the state file is removed once read");
        let live = [
            (a, session(0, 4 * S, [12, 10])),
            (b, session(3 * S, 4 * S, [1, 0])),
        ];
        let due = next.round(5 * S, &live, &[]);
        let mut got: Vec<(u16, [u64; 2])> = due
            .iter()
            .map(|d| (d.key.port_a, d.delta.packets))
            .collect();
        got.sort_unstable();
        assert_eq!(got, vec![(1, [2, 0]), (2, [1, 0])]);

        std::fs::write(&path, b"ENFLOWS1\x05\0\0\0\0\0\0\0short").unwrap();
        assert!(Meter::new(1, 15, None).load(&path, 0).is_err());
        assert_eq!(
            Meter::new(1, 15, None).load(&path, 0).unwrap(),
            0,
            "gone once read"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// After a crash (no saved state), sessions older than the new daemon are taken as
    /// exported up to their first reading rather than exported twice.
    #[test]
    fn sessions_of_a_crashed_daemon_are_adopted() {
        let mut meter = Meter::new(1, 15, Some(10 * S));
        let (old, new) = (key(1), key(2));
        let live = [
            (old, session(S, 10 * S, [50, 50])),
            (new, session(11 * S, 11 * S, [1, 0])),
        ];
        let due = meter.round(12 * S, &live, &[]);
        assert_eq!(exported(&due).1, [1, 0]);
        assert_eq!(meter.adopted(), 1);
    }

    proptest! {
        /// Whatever the rounds, the timeouts and the commits that fail, the committed deltas
        /// of a session add up to its counters once it ends.
        #[test]
        fn committed_deltas_add_up_to_the_counters(
            steps in proptest::collection::vec((0u64..5, 0u64..5, any::<bool>(), 1u64..30), 1..60),
            active in 1u64..20,
            idle in 1u64..20,
        ) {
            let mut meter = Meter::new(active, idle, None);
            let k = key(5);
            let (mut now, mut seen) = (S, S);
            let mut counts = [0u64; 2];
            let mut total = [0u64; 2];
            for (out, back, commit, dt) in steps {
                now += dt * S / 2;
                if out + back > 0 {
                    seen = now;
                }
                counts = [counts[0] + out, counts[1] + back];
                let due = meter.round(now, &[(k, session(0, seen, counts))], &[]);
                if commit {
                    for d in &due {
                        total = [total[0] + d.delta.packets[0], total[1] + d.delta.packets[1]];
                    }
                    meter.commit(&due, now);
                }
            }
            now += S;
            let due = meter.round(now, &[], &[(k, session(0, seen, counts), EndReason::Idle)]);
            for d in &due {
                total = [total[0] + d.delta.packets[0], total[1] + d.delta.packets[1]];
            }
            meter.commit(&due, now);
            prop_assert_eq!(total, counts);
            prop_assert!(meter.is_empty());
        }

        /// A meter fed partial rounds (only what the session scan picks, a full round every
        /// few) exports the same records in the same rounds as a meter fed the whole table
        /// every round (but for revoked sessions, found gone at the next full round),
        /// and, per session, counts that add up to the kernel's counters: sessions that send,
        /// sessions that open, sessions the sweep removes and sessions the program revokes,
        /// with some commits failing.
        #[test]
        fn partial_rounds_export_what_full_rounds_export(
            seed in any::<u64>(),
            full_every in 1u64..12,
            idle in 5u64..300,
            active in proptest::sample::select(vec![60u64, 600]),
            commit_percent in 50u64..=100,
        ) {
            use std::collections::BTreeMap;
            use enforcer_common::scan::{ScanArgs, wanted};
            let mut rng = seed | 1;
            let mut next = move |n: u64| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng % n.max(1)
            };
            let (mut whole, mut part) =
                (Meter::new(active, idle, None), Meter::new(active, idle, None));
            // The kernel's table, and what each meter committed per (key, created_ns).
            let mut table: BTreeMap<u16, Session> = BTreeMap::new();
            // Final counters of the sessions that ended through the sweep (not revoked).
            let mut finals: BTreeMap<(SessionKey, u64), [u64; 2]> = BTreeMap::new();
            let mut revoked = std::collections::BTreeSet::new();
            let mut sums = [BTreeMap::new(), BTreeMap::new()];
            let add = |sums: &mut BTreeMap<(SessionKey, u64), [u64; 2]>, due: &[Due]| {
                for d in due {
                    let e = sums.entry((d.key, d.created_ns)).or_insert([0, 0]);
                    *e = [e[0] + d.delta.packets[0], e[1] + d.delta.packets[1]];
                }
            };
            let step = 7 * S + S / 2;
            let mut now = 100 * S;
            let mut last_scan: Option<u64> = None;
            for round in 0..40u64 {
                // Between rounds: packets, new sessions, revocations.
                for _ in 0..next(12) {
                    let port = next(16) as u16;
                    let at = now + 1 + next(step - 1);
                    let s = table.entry(port).or_insert_with(|| session(at, at, [0, 0]));
                    let more = [next(4), next(4)];
                    s.packets = [s.packets[0] + more[0], s.packets[1] + more[1]];
                    s.seen_ns = s.seen_ns.max(at);
                }
                if next(10) == 0 && let Some(&port) = table.keys().next() {
                    // Revoked: gone without the daemon; its counts since the last reading are
                    // the documented gap.
                    if let Some(gone) = table.remove(&port) {
                        revoked.insert((key(port), gone.created_ns));
                    }
                }
                now += step;
                // The sweep removes sessions idle for 40 s, with their last counters.
                let ended: Vec<_> = table
                    .iter()
                    .filter(|(_, s)| now - s.seen_ns > 40 * S)
                    .map(|(&p, s)| (key(p), *s, EndReason::Idle))
                    .collect();
                table.retain(|_, s| now - s.seen_ns <= 40 * S);
                for (k, s, _) in &ended {
                    finals.insert((*k, s.created_ns), s.packets);
                }
                let live: Vec<_> = table.iter().map(|(&p, s)| (key(p), *s)).collect();
                let full = last_scan.is_none() || round % full_every == 0;
                let args = ScanArgs {
                    now_ns: now,
                    since_ns: last_scan.map_or(0, |t| t - S),
                    all: u64::from(full),
                    timeouts: enforcer_common::session::Timeouts {
                        tcp_syn: 1000,
                        tcp_established: 1000,
                        tcp_closed: 1000,
                        udp: 1000,
                        icmp: 1000,
                    },
                    visited: 0,
                };
                last_scan = Some(now);
                let picked: Vec<_> =
                    live.iter().filter(|(k, s)| wanted(&args, k.proto, s)).copied().collect();
                let due_whole = whole.round(now, &live, &ended);
                let due_part = if full {
                    part.round(now, &picked, &ended)
                } else {
                    part.round_partial(now, &picked, &ended)
                };
                // Round by round, the same records, but for revoked sessions: the partial meter
                // finds them gone at its next full round, and until then exports what they
                // counted as their timeouts come (idle, active) rather than as forced ends.
                let unforced = |due: &[Due]| {
                    let mut v: Vec<_> = due
                        .iter()
                        .filter(|d| !revoked.contains(&(d.key, d.created_ns)))
                        .map(|d| (d.key, d.created_ns, d.reason as u8, d.delta.packets))
                        .collect();
                    v.sort_unstable();
                    v
                };
                prop_assert_eq!(unforced(&due_whole), unforced(&due_part), "seed {}", seed);
                // The watch list holds one live entry a session (the one `queued` names), and
                // what is left behind expires: it never holds more than a few entries for each
                // session the table held lately.
                let mut live = BTreeMap::new();
                let mut total = 0usize;
                for (k, d) in &part.watch {
                    if *d == u64::MAX {
                        continue;
                    }
                    total += 1;
                    if part.flows.get(k).is_some_and(|t| t.queued == *d) {
                        *live.entry(*k).or_insert(0) += 1;
                    }
                }
                prop_assert!(
                    live.values().all(|n| *n == 1),
                    "seed {}: live entries per session {:?}", seed, live.values().max()
                );
                // Every session with counts not exported has its entry.
                for (k, t) in &part.flows {
                    if !t.last.since(&t.exported).is_zero() {
                        prop_assert!(
                            live.get(k) == Some(&1),
                            "seed {}: pending session {} has no entry", seed, k.port_a
                        );
                    }
                }
                prop_assert!(
                    total <= 3 * (part.flows.len() + revoked.len() + finals.len()),
                    "seed {}: {} watch entries for {} sessions", seed, total, part.flows.len()
                );
                if next(100) < commit_percent {
                    add(&mut sums[0], &due_whole);
                    whole.commit(&due_whole, now);
                    add(&mut sums[1], &due_part);
                    part.commit(&due_part, now);
                }
            }
            // Everything ends: a final full round with the whole table removed, committed.
            now += 1000 * S;
            let ended: Vec<_> =
                table.iter().map(|(&p, s)| (key(p), *s, EndReason::Idle)).collect();
            for (k, s, _) in &ended {
                finals.insert((*k, s.created_ns), s.packets);
            }
            let [sums_whole, sums_part] = &mut sums;
            for (meter, sums) in [(&mut whole, sums_whole), (&mut part, sums_part)] {
                let due = meter.round(now, &[], &ended);
                add(sums, &due);
                meter.commit(&due, now);
                prop_assert!(meter.is_empty(), "seed {seed}: sessions left tracked");
            }
            prop_assert_eq!(&sums[0], &sums[1], "seed {}", seed);
            for (session, counts) in &finals {
                prop_assert_eq!(sums[0].get(session), Some(counts).filter(|c| **c != [0, 0]));
            }
        }
    }
}
