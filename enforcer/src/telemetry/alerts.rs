//! Alerts: what an operator must hear about at once, as JSON lines (`--alerts FILE|-`) and
//! HTTP POSTs (`--alert-webhook URL`), with thresholds per segment (`alerts = { ... }` in the
//! policy):
//!
//! - `deny_rate`: a SIM's denied packets a second (from the deny events and the suppressed
//!   counts they carry) above its segment's `deny_rate`;
//! - `spoofed_source`: packets from a source that may not send (a pool address bound to no
//!   SIM, or outside every pool on a core interface; not link-local or unspecified sources,
//!   a link's own chatter), once per source and cooldown;
//! - `new_destination`: a session of a SIM toward an address, protocol and port it never used,
//!   once its segment's `learn_destinations` seconds since it was first seen have passed;
//! - `burst`: a SIM's bytes a second over a round above `burst` times its moving average;
//! - `imei_mismatch`: a SIM's data session on a device its IMEI lock does not allow (raised by
//!   the RADIUS accounting path, once per device that breaks the lock).
//!
//! Each SIM raises each kind at most once per [`COOLDOWN_S`] (a new destination once per
//! destination); memory is bounded per table ([`MAX_TRACKED`]).

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use enforcer_common::{DropReason, maps::DenyEvent};
use serde::Serialize;

use crate::policy::Alerts;

/// Seconds between two alerts of one kind for one SIM (or spoofed source).
pub const COOLDOWN_S: u64 = 300;
/// SIMs (or sources) each table follows at most.
pub const MAX_TRACKED: usize = 100_000;
/// Destinations learned per SIM at most; past that a SIM's new destinations are not alerted.
pub const MAX_DESTINATIONS: usize = 256;
/// Weight of the newest round in a SIM's moving average of bytes per round.
const EWMA_WEIGHT: f64 = 0.2;
/// Bytes a second below which no burst is alerted (noise of small devices).
const BURST_FLOOR: u64 = 16 * 1024;
/// Rounds of history a moving average needs before bursts are judged against it.
const BURST_WARMUP: u32 = 3;

/// One alert, as written and posted.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Alert {
    /// When, RFC 3339 UTC with milliseconds.
    pub time: String,
    /// `deny_rate`, `spoofed_source`, `new_destination`, `burst` or `imei_mismatch`.
    pub alert: &'static str,
    /// The SIM's IMSI (absent for a spoofed source).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imsi: Option<String>,
    /// Its segment.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
    /// The source address (spoofed sources).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// The destination (new destinations).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    /// Its protocol.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proto: Option<String>,
    /// Its port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The IMEI lock the device broke (`imei_mismatch`): an IMEI's 14 digits, `tac:…`, or the
    /// learned IMEI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imei_expected: Option<String>,
    /// The 3GPP-IMEISV the packet core reported (`imei_mismatch`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub imei_seen: Option<String>,
    /// What was measured (packets a second, bytes in the round, packets).
    pub value: f64,
    /// The threshold it crossed.
    pub threshold: f64,
    /// One sentence for a human.
    pub message: String,
}

/// A SIM's learned destinations.
#[derive(Debug, Default)]
struct Learned {
    since_ns: u64,
    destinations: HashSet<(IpAddr, u8, u16)>,
}

/// A SIM's traffic history for bursts.
#[derive(Debug, Default, Clone, Copy)]
struct History {
    total: u64,
    average: f64,
    rounds: u32,
}

/// The detectors' state.
#[derive(Debug, Default)]
pub struct Engine {
    denied: HashMap<u32, u64>,
    last_alert: HashMap<(u32, &'static str), u64>,
    spoofed: HashMap<IpAddr, u64>,
    learned: HashMap<u32, Learned>,
    history: HashMap<u32, History>,
}

/// What the engine needs to know of a SIM: its thresholds and names.
pub struct SimView {
    /// Its segment's thresholds.
    pub alerts: Alerts,
    /// IMSI.
    pub imsi: String,
    /// Segment name.
    pub segment: String,
}

impl Alert {
    /// An IMEI mismatch: the data session of SIM `imsi` (of `segment`) runs on the device
    /// `seen`, which the lock `expected` does not allow; `action` is what was done.
    #[must_use]
    pub fn imei_mismatch(
        imsi: &str,
        segment: &str,
        expected: &str,
        seen: &str,
        action: &str,
    ) -> Self {
        Self {
            imsi: Some(imsi.to_owned()),
            segment: Some(segment.to_owned()),
            imei_expected: Some(expected.to_owned()),
            imei_seen: Some(seen.to_owned()),
            ..Self::new(
                "imei_mismatch",
                format!(
                    "SIM {imsi} started a data session on device {seen}, which its IMEI lock \
                     ({expected}) does not allow; {action}"
                ),
                0.0,
                0.0,
            )
        }
    }

    /// An alert of `kind` now, with its message, measure and threshold; the rest empty.
    fn new(kind: &'static str, message: String, value: f64, threshold: f64) -> Self {
        Self {
            time: now_text(),
            alert: kind,
            imsi: None,
            segment: None,
            src: None,
            dst: None,
            proto: None,
            port: None,
            imei_expected: None,
            imei_seen: None,
            value,
            threshold,
            message,
        }
    }
}

fn now_text() -> String {
    humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string()
}

impl Engine {
    fn cooled(&mut self, sim: u32, kind: &'static str, now_ns: u64) -> bool {
        let cooldown = COOLDOWN_S * 1_000_000_000;
        let last = self.last_alert.get(&(sim, kind)).copied();
        if last.is_some_and(|t| now_ns.saturating_sub(t) < cooldown) {
            return false;
        }
        if self.last_alert.len() >= MAX_TRACKED && last.is_none() {
            // Cooled-down entries no longer matter: drop them rather than stop recording.
            self.last_alert
                .retain(|_, t| now_ns.saturating_sub(*t) < cooldown);
            if self.last_alert.len() >= MAX_TRACKED {
                // Every entry is within its cooldown: no room to remember this one, so no
                // alert rather than one every round.
                return false;
            }
        }
        self.last_alert.insert((sim, kind), now_ns);
        true
    }

    /// Take in deny events: counted per SIM for the round; a spoofed source alerts at once.
    pub fn deny(&mut self, events: &[DenyEvent], now_ns: u64, out: &mut Vec<Alert>) {
        for event in events {
            // Audit mode's reports are of packets that passed.
            if event.reason == enforcer_common::maps::DENY_EVENT_AUDIT {
                continue;
            }
            let packets = 1 + u64::from(event.suppressed);
            if event.sim != enforcer_common::maps::DENY_NO_SIM {
                if self.denied.len() < MAX_TRACKED || self.denied.contains_key(&event.sim) {
                    *self.denied.entry(event.sim).or_insert(0) += packets;
                }
                continue;
            }
            let spoofed = event.reason == DropReason::Spoofed as u8
                || event.reason == DropReason::NonPool as u8;
            if !spoofed {
                continue;
            }
            let src = super::ip(event.src, event.v6 == 1);
            // A link's own chatter (IPv6 link-local or unspecified sources: MLD reports, DAD)
            // is dropped on a core interface but forges nothing.
            let link_local = match src {
                IpAddr::V6(a) => a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80,
                IpAddr::V4(a) => a.is_unspecified() || a.is_link_local(),
            };
            if link_local {
                continue;
            }
            let last = self.spoofed.get(&src).copied();
            if last.is_some_and(|t| now_ns.saturating_sub(t) < COOLDOWN_S * 1_000_000_000) {
                continue;
            }
            if self.spoofed.len() >= MAX_TRACKED && last.is_none() {
                let cooldown = COOLDOWN_S * 1_000_000_000;
                self.spoofed
                    .retain(|_, t| now_ns.saturating_sub(*t) < cooldown);
                if self.spoofed.len() >= MAX_TRACKED {
                    continue;
                }
            }
            self.spoofed.insert(src, now_ns);
            let reason = if event.reason == DropReason::Spoofed as u8 {
                "a pool address bound to no SIM"
            } else {
                "outside every pool, on a core interface"
            };
            out.push(Alert {
                src: Some(src.to_string()),
                dst: Some(super::ip(event.dst, event.v6 == 1).to_string()),
                proto: Some(crate::policy::show::proto_name(event.proto)),
                ..Alert::new(
                    "spoofed_source",
                    format!("packets from {src} ({reason}) were dropped"),
                    packets as f64,
                    0.0,
                )
            });
        }
    }

    /// One round of `interval_s` seconds at `now_ns`: deny rates, new destinations among
    /// `sessions` (device SIM index, destination, protocol, port) and bursts in `bytes` (SIM
    /// index, its bytes so far, passed and dropped). `view` gives a SIM's thresholds and names
    /// (`None`: a SIM no longer in the policy).
    pub fn round(
        &mut self,
        now_ns: u64,
        interval_s: f64,
        sessions: &[(u32, IpAddr, u8, u16)],
        bytes: &[(u32, u64)],
        view: impl Fn(u32) -> Option<SimView>,
        out: &mut Vec<Alert>,
    ) {
        let denied = std::mem::take(&mut self.denied);
        for (sim, packets) in denied {
            let Some(v) = view(sim) else { continue };
            let Some(limit) = v.alerts.deny_rate else {
                continue;
            };
            let rate = packets as f64 / interval_s.max(0.001);
            if rate > f64::from(limit) && self.cooled(sim, "deny_rate", now_ns) {
                let message = format!(
                    "SIM {} ({}) had {rate:.1} packets a second denied, above {limit}",
                    v.imsi, v.segment
                );
                out.push(Alert {
                    imsi: Some(v.imsi),
                    segment: Some(v.segment),
                    ..Alert::new("deny_rate", message, rate, f64::from(limit))
                });
            }
        }
        for &(sim, dst, proto, port) in sessions {
            let Some(v) = view(sim) else { continue };
            let Some(learning) = v.alerts.learn_destinations else {
                continue;
            };
            if !self.learned.contains_key(&sim) && self.learned.len() >= MAX_TRACKED {
                continue;
            }
            let learned = self.learned.entry(sim).or_insert_with(|| Learned {
                since_ns: now_ns,
                destinations: HashSet::new(),
            });
            let destination = (dst, proto, port);
            if learned.destinations.contains(&destination)
                || learned.destinations.len() >= MAX_DESTINATIONS
            {
                continue;
            }
            learned.destinations.insert(destination);
            let learning_ns = u64::from(learning) * 1_000_000_000;
            if now_ns.saturating_sub(learned.since_ns) < learning_ns {
                continue;
            }
            let proto_name = crate::policy::show::proto_name(proto);
            let message = format!(
                "SIM {} ({}) opened a session to {dst} {proto_name}/{port}, which it never used \
                 before",
                v.imsi, v.segment
            );
            out.push(Alert {
                imsi: Some(v.imsi),
                segment: Some(v.segment),
                dst: Some(dst.to_string()),
                proto: Some(proto_name),
                port: Some(port),
                ..Alert::new("new_destination", message, 1.0, f64::from(learning))
            });
        }
        for &(sim, total) in bytes {
            let Some(v) = view(sim) else { continue };
            let Some(factor) = v.alerts.burst else {
                continue;
            };
            if !self.history.contains_key(&sim) && self.history.len() >= MAX_TRACKED {
                continue;
            }
            let history = self.history.entry(sim).or_insert(History {
                total,
                average: 0.0,
                rounds: 0,
            });
            // Bytes a second over the round, so a late round raises no false burst.
            let delta = (total.saturating_sub(history.total) as f64 / interval_s.max(0.001)) as u64;
            history.total = total;
            let burst = history.rounds >= BURST_WARMUP
                && delta >= BURST_FLOOR
                && delta as f64 > f64::from(factor) * history.average.max(1.0);
            let average = history.average;
            history.average = if history.rounds == 0 {
                delta as f64
            } else {
                EWMA_WEIGHT * delta as f64 + (1.0 - EWMA_WEIGHT) * history.average
            };
            history.rounds = history.rounds.saturating_add(1);
            if burst && self.cooled(sim, "burst", now_ns) {
                let message = format!(
                    "SIM {} ({}) sent and received {delta} bytes a second, {:.0} times its \
                     moving average",
                    v.imsi,
                    v.segment,
                    delta as f64 / average.max(1.0)
                );
                out.push(Alert {
                    imsi: Some(v.imsi),
                    segment: Some(v.segment),
                    ..Alert::new("burst", message, delta as f64, f64::from(factor) * average)
                });
            }
        }
    }
}

/// What the alert outputs did.
#[derive(Debug, Default)]
pub struct AlertStats {
    /// Alerts raised.
    pub raised: AtomicU64,
    /// Webhook posts that failed after every retry (or found the queue full).
    pub webhook_failed: AtomicU64,
}

/// Where alerts go: JSON lines and a webhook, each behind a bounded queue on a thread.
pub struct Sink {
    lines: Option<std::sync::mpsc::SyncSender<String>>,
    webhook: Option<std::sync::mpsc::SyncSender<String>>,
    stats: Arc<AlertStats>,
    /// The REST API's `/events` subscribers, when the API is on.
    stream: Option<tokio::sync::broadcast::Sender<Arc<crate::control::rest::StreamEvent>>>,
}

/// Attempts per webhook post, with a doubling pause from half a second between them.
const WEBHOOK_ATTEMPTS: u32 = 4;

impl Sink {
    /// Outputs to `path` (`-`: stdout; appended to, created 0640) and `webhook` (an
    /// `http://` or `https://` URL), either optional.
    ///
    /// # Errors
    /// The file cannot be opened.
    pub fn open(
        path: Option<&std::path::Path>,
        webhook: Option<&str>,
        stats: Arc<AlertStats>,
    ) -> std::io::Result<Self> {
        let lines = match path {
            Some(path) => Some(super::events::line_writer(path, "enforcer-alerts")?),
            None => None,
        };
        let webhook = match webhook {
            Some(url) => {
                let (queue, bodies) = std::sync::mpsc::sync_channel::<String>(1024);
                let url = url.to_owned();
                let stats = Arc::clone(&stats);
                std::thread::Builder::new()
                    .name("enforcer-webhook".to_owned())
                    .spawn(move || {
                        let agent: ureq::Agent = ureq::Agent::config_builder()
                            .timeout_global(Some(std::time::Duration::from_secs(10)))
                            .build()
                            .into();
                        while let Ok(body) = bodies.recv() {
                            if !post(&agent, &url, &body) {
                                stats.webhook_failed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    })?;
                Some(queue)
            }
            None => None,
        };
        Ok(Self {
            lines,
            webhook,
            stats,
            stream: None,
        })
    }

    /// Send every alert to the REST API's `/events` subscribers too.
    #[must_use]
    pub fn with_stream(
        mut self,
        stream: tokio::sync::broadcast::Sender<Arc<crate::control::rest::StreamEvent>>,
    ) -> Self {
        self.stream = Some(stream);
        self
    }

    /// Send `alerts` to every output without waiting (a full queue drops and counts).
    pub fn send(&self, alerts: &[Alert]) {
        for alert in alerts {
            self.stats.raised.fetch_add(1, Ordering::Relaxed);
            let Ok(json) = serde_json::to_string(alert) else {
                continue;
            };
            if let Some(lines) = &self.lines {
                let _ = lines.try_send(format!("{json}\n"));
            }
            if let Some(stream) = self.stream.as_ref().filter(|s| s.receiver_count() > 0) {
                let _ = stream.send(Arc::new(crate::control::rest::StreamEvent {
                    kind: "alert",
                    json: json.clone(),
                }));
            }
            if let Some(webhook) = &self.webhook
                && webhook.try_send(json).is_err()
            {
                self.stats.webhook_failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// POST `body` to `url`, retrying; whether it was accepted (2xx).
fn post(agent: &ureq::Agent, url: &str, body: &str) -> bool {
    let mut pause = std::time::Duration::from_millis(500);
    for attempt in 1..=WEBHOOK_ATTEMPTS {
        match agent
            .post(url)
            .header("Content-Type", "application/json")
            .send(body)
        {
            Ok(_) => return true,
            Err(err) => {
                tracing::warn!(url, attempt, error = %err, "Posting an alert failed.");
            }
        }
        if attempt < WEBHOOK_ATTEMPTS {
            std::thread::sleep(pause);
            pause *= 2;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    fn view(alerts: Alerts) -> impl Fn(u32) -> Option<SimView> {
        move |sim| {
            Some(SimView {
                alerts,
                imsi: format!("0010100000000{sim:02}"),
                segment: "meters".to_owned(),
            })
        }
    }

    fn denied(sim: u32, suppressed: u32, reason: DropReason) -> DenyEvent {
        DenyEvent {
            sim,
            suppressed,
            reason: reason as u8,
            proto: 17,
            ..DenyEvent::default()
        }
    }

    /// A SIM denied more than its segment allows alerts once per cooldown; below, never.
    #[test]
    fn deny_rate() {
        let alerts = Alerts {
            deny_rate: Some(10),
            ..Alerts::default()
        };
        let mut engine = Engine::default();
        let mut out = Vec::new();
        engine.deny(
            &[
                denied(1, 49, DropReason::NoRule),
                denied(2, 5, DropReason::NoRule),
            ],
            S,
            &mut out,
        );
        engine.round(S, 2.0, &[], &[], view(alerts), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].alert, out[0].value), ("deny_rate", 25.0));
        assert_eq!(out[0].imsi.as_deref(), Some("001010000000001"));
        engine.deny(&[denied(1, 99, DropReason::NoRule)], 2 * S, &mut out);
        engine.round(2 * S, 1.0, &[], &[], view(alerts), &mut out);
        assert_eq!(out.len(), 1, "cooldown");
    }

    /// A spoofed source alerts once per cooldown; SIM drops are no spoofing.
    #[test]
    fn spoofed_sources() {
        let mut engine = Engine::default();
        let mut out = Vec::new();
        let mut spoof = denied(enforcer_common::maps::DENY_NO_SIM, 0, DropReason::Spoofed);
        spoof.src[..4].copy_from_slice(&[10, 64, 9, 9]);
        engine.deny(&[spoof, spoof], S, &mut out);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].src.as_deref(), Some("10.64.9.9"));
        engine.deny(&[spoof], (COOLDOWN_S + 2) * S, &mut out);
        assert_eq!(out.len(), 2);
    }

    /// Destinations seen while learning are known; a new one afterwards alerts once.
    #[test]
    fn new_destinations_after_learning() {
        let alerts = Alerts {
            learn_destinations: Some(10),
            ..Alerts::default()
        };
        let mut engine = Engine::default();
        let mut out = Vec::new();
        let a: IpAddr = "192.0.2.53".parse().unwrap();
        let b: IpAddr = "192.0.2.54".parse().unwrap();
        engine.round(S, 1.0, &[(1, a, 17, 53)], &[], view(alerts), &mut out);
        engine.round(
            5 * S,
            1.0,
            &[(1, a, 17, 53), (1, a, 17, 54)],
            &[],
            view(alerts),
            &mut out,
        );
        assert!(out.is_empty(), "learning: {out:?}");
        engine.round(
            20 * S,
            1.0,
            &[(1, a, 17, 54), (1, b, 6, 443)],
            &[],
            view(alerts),
            &mut out,
        );
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!(
            (out[0].dst.as_deref(), out[0].port),
            (Some("192.0.2.54"), Some(443))
        );
        engine.round(30 * S, 1.0, &[(1, b, 6, 443)], &[], view(alerts), &mut out);
        assert_eq!(out.len(), 1, "alerted once");
    }

    /// Traffic far above its own moving average alerts, after a warm-up; steady traffic not.
    #[test]
    fn bursts() {
        let alerts = Alerts {
            burst: Some(5),
            ..Alerts::default()
        };
        let mut engine = Engine::default();
        let mut out = Vec::new();
        let mut total = 0;
        for round in 0..6 {
            total += 20_000;
            engine.round(round * S, 1.0, &[], &[(1, total)], view(alerts), &mut out);
        }
        assert!(out.is_empty(), "steady: {out:?}");
        total += 500_000;
        engine.round(7 * S, 1.0, &[], &[(1, total)], view(alerts), &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].alert, out[0].value), ("burst", 500_000.0));
    }
}
