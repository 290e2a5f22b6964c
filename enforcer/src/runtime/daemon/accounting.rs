//! The actor's side of RADIUS accounting: a batch of requests becomes run-time bindings, in one
//! store transaction, then in the maps.
//!
//! - Start and Interim-Update bind the Framed-IP-Address (/32) and the /64 of the
//!   Framed-IPv6-Prefix to the SIM of the 3GPP-IMSI, taking an address over from another SIM's
//!   run-time binding when the packet core gave it anew (see [`Daemon::bind_core`]).
//! - Stop unbinds what that client's session (Acct-Session-Id) bound, never a newer session's.
//! - Accounting-On and Accounting-Off unbind everything that client bound: it restarted or
//!   goes down, so its sessions are gone.
//!
//! Only what the commit made durable is acknowledged: a request the store could not record
//! gets no Accounting-Response, so the client sends it again (RFC 2866 §2).

use std::net::IpAddr;

use anyhow::Context as _;
use enforcer_common::maps::SIM_IMEI_MISMATCH;
use tracing::{debug, error, info, warn};

use super::{BindResult, Daemon};
use crate::{
    bindings::radius::{Outcome, Request, StatusType},
    policy::{ImeiLock, ImeiMismatch},
    store,
    telemetry::alerts::Alert,
};

impl Daemon {
    /// Apply a batch of accounting requests; returns, request by request, whether it was
    /// recorded (to acknowledge).
    pub(crate) fn accounting(&mut self, batch: &[Request]) -> Vec<bool> {
        if let Err(err) = self.store.begin() {
            error!(error = %err, "Cannot start a store transaction; RADIUS requests left unanswered.");
            self.radius_stats
                .unrecorded
                .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
            return vec![false; batch.len()];
        }
        let mut outcomes = Vec::with_capacity(batch.len());
        for request in batch {
            let outcome = self.account(request);
            match &outcome {
                Outcome::Refused(why) => warn!(
                    client = %request.client,
                    status = request.accounting.status.name(),
                    imsi = request.accounting.imsi.as_deref().unwrap_or(""),
                    session = request.accounting.session_id.as_deref().unwrap_or(""),
                    why,
                    "RADIUS accounting refused."
                ),
                outcome => debug!(
                    client = %request.client,
                    status = request.accounting.status.name(),
                    imsi = request.accounting.imsi.as_deref().unwrap_or(""),
                    outcome = outcome.label(),
                    "RADIUS accounting."
                ),
            }
            outcomes.push(outcome);
        }
        if let Err(err) = self.store.commit() {
            // The maps may be ahead of the store now: apply the store's state again.
            error!(error = %err, "Cannot commit RADIUS bindings; re-applying the policy with the store's bindings, requests left unanswered.");
            let path = self.policy.path.clone();
            if let Err(err) = self.apply_file(&path) {
                error!(error = format!("{err:#}"), "Re-applying the policy failed.");
            }
            self.radius_stats
                .unrecorded
                .fetch_add(batch.len() as u64, std::sync::atomic::Ordering::Relaxed);
            return vec![false; batch.len()];
        }
        for outcome in &outcomes {
            self.radius_stats.count(outcome);
        }
        if outcomes.contains(&Outcome::Applied) {
            self.sessions_recheck();
        }
        outcomes
            .iter()
            .map(|o| !matches!(o, Outcome::Deferred | Outcome::Unrecorded))
            .collect()
    }

    /// Whether admitted SIMs wait for a reload of the policy to be added (the actor's loop
    /// then runs [`super::Event::Admit`]).
    pub(crate) fn admissions_due(&self) -> bool {
        self.admissions_due
    }

    /// Reload the policy in force, which adds the SIMs admitted since (see
    /// [`Daemon::admit_unknown`]). After a failure the admitted SIMs wait, deferred, for the
    /// next apply that succeeds (a SIGHUP, `policy apply`), rather than each retransmission
    /// costing another full reload.
    pub(crate) fn admit_pending(&mut self) {
        let count = self.admissions_pending.len();
        self.admissions_due = false;
        let path = self.policy.path.clone();
        match self.apply_file(&path) {
            Ok(applied) => info!(
                admitted = count,
                sims = applied.sims,
                took_ms = applied.took_ms,
                "Admitted SIMs unknown to the policy into their APNs' segments; their \
                 retransmitted Starts bind their addresses."
            ),
            Err(err) => {
                self.admissions_failed = Some(std::time::Instant::now());
                error!(
                    admitted = count,
                    error = format!("{err:#}"),
                    "Admitting SIMs failed; still enforcing the previous policy. A \
                     retransmission tries again after 30 s, or the next reload adds them."
                );
            }
        }
    }

    /// A Start or Interim-Update for an IMSI the policy does not list: with `unknown_imsi =
    /// "admit"`, record the SIM as admitted into the segment its APN (Called-Station-Id) maps
    /// to and have the policy reloaded; the request is deferred. Otherwise refused.
    fn admit_unknown(&mut self, request: &Request, imsi: &str, why: String) -> Outcome {
        if !self.policy.admit_unknown {
            return Outcome::Refused(why);
        }
        let Some(called) = request.accounting.apn.as_deref() else {
            return Outcome::Refused(format!(
                "{why}; and no Called-Station-Id (APN) to admit it by"
            ));
        };
        let Some(segment) = self.policy.segment_of_apn(called) else {
            return Outcome::Refused(format!(
                "{why}; and APN `{called}` is in no segment's `apns`"
            ));
        };
        if crate::policy::Imsi::parse(imsi).is_none() {
            return Outcome::Refused(format!("`{imsi}` is not an IMSI (14 or 15 digits)"));
        }
        if self.admissions_pending.contains(imsi) {
            // After a failed reload, retransmissions try again, at most every 30 s.
            if !self.admissions_due
                && self
                    .admissions_failed
                    .is_some_and(|t| t.elapsed() >= std::time::Duration::from_secs(30))
            {
                self.admissions_due = true;
            }
            return Outcome::Deferred;
        }
        // SIM ids in use and retired keep their slots: what a new id may take is past them.
        let capacity = self.enforcer.capacity().sims as usize;
        let taken = self
            .store
            .allocations()
            .sims
            .len()
            .max(self.policy.sims.len());
        if taken + self.admissions_pending.len() >= capacity {
            return Outcome::Refused(format!(
                "{why}; and the SIM table is full ({capacity} SIMs): restart with a larger \
                 --max-sims to admit more"
            ));
        }
        let admitted = store::Admitted {
            imsi: imsi.to_owned(),
            segment: self.policy.segment_name(segment).to_owned(),
            apn: crate::policy::apn_network_id(called),
            client: request.client.to_string(),
            at: request.received,
        };
        if let Err(err) = self.store.put_admitted(&admitted) {
            error!(imsi, error = %err, "Recording an admission failed; the request is left unanswered.");
            return Outcome::Unrecorded;
        }
        info!(
            imsi,
            segment = %admitted.segment,
            apn = %admitted.apn,
            client = %request.client,
            "Admitting a SIM unknown to the policy into its APN's segment."
        );
        self.admissions_pending.insert(imsi.to_owned());
        self.admissions_due = true;
        Outcome::Deferred
    }

    /// One request.
    fn account(&mut self, request: &Request) -> Outcome {
        let acct = &request.accounting;
        let at = event_time(request);
        match acct.status {
            StatusType::Start | StatusType::InterimUpdate => self.account_start(request),
            StatusType::Stop => {
                let Some(imsi) = acct.imsi.as_deref() else {
                    return Outcome::Refused("no 3GPP-IMSI".into());
                };
                let addresses = addresses(request);
                if let Some(session) = acct.session_id.as_deref() {
                    self.remember_stop(&request.client, session, at);
                }
                // Only a binding made before the Stop: a late duplicate Stop of a session id the
                // client used again leaves the new session alone.
                let result = self.unbind_core(
                    imsi,
                    |b| {
                        *b.client == *request.client
                            && b.at <= at
                            && match acct.session_id.as_deref() {
                                Some(session) => b.session == session,
                                None => addresses.contains(&b.address),
                            }
                    },
                    false,
                );
                match result {
                    Ok((imsi, 0)) => {
                        // A binding of another session in force: this Stop is older.
                        if [false, true]
                            .into_iter()
                            .any(|v6| self.bindings.contains_key(&(imsi.clone(), v6)))
                        {
                            Outcome::Stale
                        } else {
                            Outcome::Unchanged
                        }
                    }
                    Ok(_) => Outcome::Applied,
                    Err(err) => failed(&err),
                }
            }
            StatusType::AccountingOn | StatusType::AccountingOff => {
                let reset = self
                    .client_resets
                    .entry(request.client.to_string())
                    .or_insert(at);
                *reset = (*reset).max(at);
                // Only what the client bound before it (re)started: a retransmitted On/Off
                // that arrives late leaves newer sessions alone.
                let imsis: Vec<String> = self
                    .bindings
                    .values()
                    .filter(|b| *b.client == *request.client && b.at <= at)
                    .map(|b| b.imsi.clone())
                    .collect();
                let mut removed = 0;
                for imsi in imsis {
                    match self.unbind_core(
                        &imsi,
                        |b| *b.client == *request.client && b.at <= at,
                        false,
                    ) {
                        Ok((_, n)) => removed += n,
                        Err(err) => match failed(&err) {
                            // The store or the maps: unanswered, so the client sends it again
                            // and the bindings left are removed then.
                            Outcome::Unrecorded => return Outcome::Unrecorded,
                            _ => warn!(
                                imsi,
                                client = %request.client,
                                error = format!("{err:#}"),
                                "Could not unbind on the client's Accounting-On/Off."
                            ),
                        },
                    }
                }
                if removed > 0 {
                    Outcome::Applied
                } else {
                    Outcome::Unchanged
                }
            }
        }
    }

    /// Remember that `client` stopped `session` at `at`, so that a Start or Interim-Update of
    /// it arriving later (reordered, or replayed from a packet core's buffer) is stale rather
    /// than binding a dead session's address again. Bounded: the oldest half is forgotten when
    /// full.
    fn remember_stop(&mut self, client: &str, session: &str, at: i64) {
        /// Stopped sessions remembered at most.
        const STOPPED: usize = 200_000;
        if self.stopped.len() >= STOPPED {
            let mut times: Vec<i64> = self.stopped.values().copied().collect();
            let half = times.len() / 2;
            let median = *times.select_nth_unstable(half).1;
            self.stopped.retain(|_, t| *t > median);
        }
        self.stopped
            .entry((client.to_owned(), session.to_owned()))
            .and_modify(|t| *t = (*t).max(at))
            .or_insert(at);
    }

    /// Whether a Start or Interim-Update of `request` is older than what is in force for its
    /// SIM: its session was stopped since, or the SIM has a binding of another session that
    /// is newer. Decided before anything else, so that a stale request neither binds nor
    /// judges the IMEI (a late Start of the locked device must not lift the block of the
    /// device in use).
    fn stale(&self, request: &Request, imsi: &str, at: i64) -> bool {
        let acct = &request.accounting;
        let session = acct.session_id.as_deref().unwrap_or_default();
        if !session.is_empty()
            && let Some(&stopped) = self
                .stopped
                .get(&(request.client.to_string(), session.to_owned()))
        {
            // An Interim-Update of a stopped session is always late; a Start only counts again
            // when its own Event-Timestamp says it came after the Stop (an arrival time says
            // nothing about when a buffered request was made).
            let later =
                acct.status == StatusType::Start && acct.event_timestamp.is_some() && at > stopped;
            if !later {
                return true;
            }
        }
        // Made before the client's last Accounting-On/Off: that session is gone.
        if acct.event_timestamp.is_some()
            && self
                .client_resets
                .get(request.client.as_ref())
                .is_some_and(|&reset| at <= reset)
        {
            return true;
        }
        let Ok((_, _, sim)) = self.sim(imsi) else {
            return false;
        };
        let imsi = sim.imsi.to_string();
        [false, true].into_iter().any(|v6| {
            self.bindings
                .get(&(imsi.clone(), v6))
                .is_some_and(|b| other_session(b, &request.client, session) && b.at > at)
        })
    }

    /// Start or Interim-Update: check the device against the SIM's IMEI lock, then bind the
    /// addresses (a device the lock refuses gets them too, under the drop state, so that its
    /// packets are dropped as `imei_mismatch` rather than as spoofed).
    fn account_start(&mut self, request: &Request) -> Outcome {
        let acct = &request.accounting;
        let Some(imsi) = acct.imsi.as_deref() else {
            return Outcome::Refused("no 3GPP-IMSI".into());
        };
        let addresses = addresses(request);
        if addresses.is_empty() {
            return Outcome::Refused(
                "no Framed-IP-Address nor a Framed-IPv6-Prefix of /64 or longer".into(),
            );
        }
        let at = event_time(request);
        if let Err(err) = self.sim(imsi)
            && err.chain().any(|e| e.is::<crate::control::NotFound>())
        {
            return self.admit_unknown(request, imsi, format!("{err:#}"));
        }
        if self.stale(request, imsi, at) {
            // Judged one way only: a stale request may still block a device the lock refuses
            // (a thief's Start with a lagging clock), never lift a block.
            if let Err(err) = self.check_imei(imsi, acct.imeisv.as_deref(), at, false) {
                return failed(&err);
            }
            return Outcome::Stale;
        }
        let imei_changed = match self.check_imei(imsi, acct.imeisv.as_deref(), at, true) {
            Ok(changed) => changed,
            Err(err) => return failed(&err),
        };
        let mut outcome = Outcome::Unchanged;
        for address in addresses {
            let wanted = store::Binding {
                imsi: imsi.to_owned(),
                address,
                source: format!("radius:{}", request.client),
                at,
                client: request.client.to_string(),
                session: acct.session_id.clone().unwrap_or_default(),
            };
            match self.bind_core(wanted, true) {
                Ok(BindResult::Done { changed: true, .. }) => outcome = Outcome::Applied,
                Ok(BindResult::Done { changed: false, .. }) => {}
                Ok(BindResult::Stale(why)) => {
                    debug!(imsi, why, "Stale RADIUS request ignored.");
                    if outcome == Outcome::Unchanged {
                        outcome = Outcome::Stale;
                    }
                }
                Err(err) => return failed(&err),
            }
        }
        if imei_changed {
            outcome = Outcome::Applied;
        }
        outcome
    }

    /// Judge the device `imeisv` (3GPP-IMEISV) of a data session of SIM `imsi` against the
    /// SIM's IMEI lock: learn it for a `learn` lock that has none yet; on a device the lock
    /// refuses, set the SIM's drop state (or quarantine it, as `imei_mismatch` says) and raise
    /// an alert; on an allowed device, lift a drop state. A request without IMEISV is not
    /// judged. Store first, then the SIM's flag in the maps. Returns whether the SIM's state
    /// changed.
    fn check_imei(
        &mut self,
        imsi: &str,
        imeisv: Option<&str>,
        at: i64,
        may_lift: bool,
    ) -> anyhow::Result<bool> {
        let (position, index, sim) = self.sim(imsi)?;
        let imsi = sim.imsi.to_string();
        let lock = self.imei_lock_of(position);
        let sim = &self.policy.sims[position];
        let segment = self.policy.segment_name(sim.segment).to_owned();
        let previous = self.imei.get(&imsi).cloned();
        let mut state = previous.clone().unwrap_or_else(|| store::ImeiState {
            imsi: imsi.clone(),
            ..store::ImeiState::default()
        });
        // A 3GPP-IMEISV that is no IMEI(SV) (too short, not digits) is a device no lock
        // allows; only an absent one goes unjudged.
        let seen: Option<String> = imeisv.map(|s| s.chars().take(32).collect());
        let valid = seen
            .as_deref()
            .filter(|s| s.len() >= 14 && s.bytes().all(|b| b.is_ascii_digit()));
        let verdict = match (&lock, seen.as_deref(), valid) {
            // No lock (any more): a drop state an older policy set is lifted.
            (None, _, _) => Some(true),
            // Nothing to judge.
            (Some(_), None, _) => None,
            (Some(_), Some(_), None) => Some(false),
            (Some(ImeiLock::Learn), _, Some(device)) => {
                if state.learned.is_empty() {
                    state.learned = device[..14].to_owned();
                    info!(imsi, imei = %state.learned, "IMEI lock learned the SIM's device.");
                }
                Some(device[..14] == state.learned)
            }
            (Some(lock), _, Some(device)) => Some(lock.allows(device)),
        };
        if let Some(seen) = seen {
            state.seen = seen;
            state.at = at;
        }
        let mut changed = false;
        match verdict {
            Some(true) if state.mismatch && may_lift => {
                state.mismatch = false;
                changed = true;
            }
            Some(false) => {
                let expected = match &lock {
                    Some(ImeiLock::Learn) => state.learned.clone(),
                    Some(lock) => lock.text(),
                    None => String::new(),
                };
                let seen = state.seen.clone();
                let action = match self.policy.imei_mismatch {
                    ImeiMismatch::Drop => {
                        changed = !state.mismatch;
                        state.mismatch = true;
                        "its traffic is dropped (imei_mismatch) until a session of an allowed \
                         device starts"
                    }
                    ImeiMismatch::Quarantine => {
                        if !self.overrides.contains_key(&imsi) {
                            self.quarantine(&imsi, "imei-lock")?;
                            changed = true;
                        }
                        "the SIM is quarantined until `enforcer sim release`"
                    }
                };
                let news = previous
                    .as_ref()
                    .is_none_or(|p| !p.mismatch || p.seen != seen);
                if news {
                    warn!(imsi, expected, seen, action, "IMEI lock broken.");
                    if let Some(sink) = &self.alert_sink {
                        sink.send(&[Alert::imei_mismatch(
                            &imsi, &segment, &expected, &seen, action,
                        )]);
                    }
                }
            }
            Some(true) | None => {}
        }
        if previous.as_ref() != Some(&state) {
            self.store
                .put_imei(&state)
                .context("recording the IMEI state in the store")?;
        }
        if changed {
            self.enforcer
                .set_sim_flag(index, SIM_IMEI_MISMATCH, state.mismatch)
                .context("setting the SIM's IMEI state in the maps")?;
            self.policy.sims[position].set_imei_mismatch(state.mismatch);
            self.compiled_stale = true;
            if !state.mismatch {
                info!(
                    imsi,
                    "IMEI lock satisfied again; the SIM's traffic is judged by its rules."
                );
            }
        }
        self.imei.insert(imsi, state);
        Ok(changed)
    }
}

/// Whether binding `b` is of another session than `session` of `client`: another client, or
/// another Acct-Session-Id; a request without one is of another session than every binding.
pub(super) fn other_session(b: &store::Binding, client: &str, session: &str) -> bool {
    session.is_empty() || *b.client != *client || b.session != session
}

/// What a failed request is: the store or the maps failed (unrecorded: not answered, so the
/// client sends it again), or the daemon refused it (answered).
fn failed(err: &anyhow::Error) -> Outcome {
    if err
        .chain()
        .any(|e| e.is::<crate::store::StoreError>() || e.is::<crate::loader::LoadError>())
    {
        error!(
            error = format!("{err:#}"),
            "RADIUS request not recorded; left unanswered."
        );
        Outcome::Unrecorded
    } else {
        Outcome::Refused(format!("{err:#}"))
    }
}

/// When the request's event happened: its Event-Timestamp, but never later than a minute after
/// it arrived (a client clock ahead, or a forged timestamp, would otherwise win every later
/// conflict over the address), else its arrival.
fn event_time(request: &Request) -> i64 {
    /// How far ahead of this host's clock an Event-Timestamp may be, seconds.
    const AHEAD: i64 = 60;
    request
        .accounting
        .event_timestamp
        .map_or(request.received, |t| {
            i64::from(t).min(request.received.saturating_add(AHEAD))
        })
}

/// The addresses a request names: its Framed-IP-Address as a /32 and the /64 of its
/// Framed-IPv6-Prefix (3GPP TS 29.061 §11.2.1.3.2: a UE gets a /64); a shorter IPv6 prefix
/// (a delegated /56) is not bound, as the maps key IPv6 by /64.
fn addresses(request: &Request) -> Vec<ipnetwork::IpNetwork> {
    let acct = &request.accounting;
    let mut out = Vec::new();
    if let Some(v4) = acct.ipv4 {
        out.push(ipnetwork::IpNetwork::from(IpAddr::V4(v4)));
    }
    if let Some((prefix, length)) = acct.ipv6
        && length >= 64
        && let Ok(net) = ipnetwork::Ipv6Network::new(prefix, 64)
        && let Ok(net) = ipnetwork::Ipv6Network::new(net.network(), 64)
    {
        out.push(ipnetwork::IpNetwork::V6(net));
    }
    out
}

impl Daemon {
    /// The IMEI lock in force for the SIM at `position` of the policy: one set by command,
    /// else the policy's (its own, else its segment's).
    pub(super) fn imei_lock_of(&self, position: usize) -> Option<ImeiLock> {
        let sim = self.policy.sims.get(position)?;
        if !self.imei.is_empty()
            && let Some(state) = self.imei.get(sim.imsi.to_string().as_str())
            && !state.lock.is_empty()
        {
            return ImeiLock::parse(&state.lock)
                .ok()
                .filter(|l| *l != ImeiLock::Off);
        }
        self.policy.imei_lock(sim).cloned()
    }

    /// Set the SIM's IMEI lock by command in place of the policy's (`None`: the policy's again)
    /// and judge the device its last session ran on against it at once: locking a SIM to
    /// another device cuts the one in use. Store first, then the maps.
    pub(super) fn imei_lock_set(
        &mut self,
        imsi: &str,
        lock: Option<&str>,
    ) -> anyhow::Result<crate::control::SimInfo> {
        let parsed = lock.map(ImeiLock::parse).transpose().map_err(|e| {
            anyhow::anyhow!(crate::control::Invalid(format!("{e}; nothing changed")))
        })?;
        let (_, _, sim) = self.sim(imsi)?;
        let imsi = sim.imsi.to_string();
        let mut state = self
            .imei
            .get(&imsi)
            .cloned()
            .unwrap_or_else(|| store::ImeiState {
                imsi: imsi.clone(),
                ..store::ImeiState::default()
            });
        state.lock = parsed.as_ref().map(ImeiLock::text).unwrap_or_default();
        if parsed == Some(ImeiLock::Learn) {
            // A learn lock set now learns the device in use (or the next one).
            state.learned.clear();
        }
        self.store
            .put_imei(&state)
            .context("recording the IMEI lock in the store; nothing changed")?;
        let seen = (!state.seen.is_empty()).then(|| state.seen.clone());
        self.imei.insert(imsi.clone(), state);
        info!(
            imsi,
            lock = lock.unwrap_or("(the policy's)"),
            "IMEI lock set by command."
        );
        let at = i64::try_from(super::now()).unwrap_or(i64::MAX);
        self.check_imei(&imsi, seen.as_deref(), at, true)?;
        self.sim_info(&imsi)
    }

    /// Forget the device a `learn` lock learned for the SIM and lift its `imei_mismatch`
    /// state (`SimImeiReset`): store first, then the flag in the maps.
    pub(super) fn imei_reset(&mut self, imsi: &str) -> anyhow::Result<crate::control::SimInfo> {
        let (position, index, sim) = self.sim(imsi)?;
        let imsi = sim.imsi.to_string();
        let Some(mut state) = self.imei.get(&imsi).cloned() else {
            return self.sim_info(&imsi);
        };
        let was = state.mismatch;
        state.learned.clear();
        state.mismatch = false;
        self.store
            .put_imei(&state)
            .context("recording the IMEI state in the store; nothing changed")?;
        if was {
            self.enforcer
                .set_sim_flag(index, SIM_IMEI_MISMATCH, false)
                .context("clearing the SIM's IMEI state in the maps")?;
            self.policy.sims[position].set_imei_mismatch(false);
            self.compiled_stale = true;
        }
        info!(
            imsi,
            "IMEI lock reset: the next data session's device is learned."
        );
        self.imei.insert(imsi.clone(), state);
        self.sim_info(&imsi)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::event_time;
    use crate::bindings::radius::{Accounting, Request, StatusType};

    fn request(event_timestamp: Option<u32>, received: i64) -> Request {
        Request {
            client: Arc::from("pgw"),
            accounting: Accounting {
                event_timestamp,
                ..Accounting::new(1, StatusType::Start)
            },
            received,
        }
    }

    /// An Event-Timestamp counts, but never more than a minute ahead of this host's clock: a
    /// client clock ahead (or a forged time) must not win every later conflict.
    #[test]
    fn event_time_is_the_timestamp_clamped_to_a_minute_ahead() {
        assert_eq!(event_time(&request(Some(1_000), 2_000)), 1_000);
        assert_eq!(event_time(&request(Some(2_030), 2_000)), 2_030);
        assert_eq!(event_time(&request(Some(9_999_999), 2_000)), 2_060);
        assert_eq!(event_time(&request(None, 2_000)), 2_000);
    }
}
