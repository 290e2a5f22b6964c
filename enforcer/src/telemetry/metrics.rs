//! Prometheus metrics: the exposition at `GET /metrics` on `--metrics-address`, in the
//! Prometheus text format 0.0.4 (<https://prometheus.io/docs/instrumenting/exposition_formats/>),
//! written by the `prometheus` crate.
//!
//! No per-SIM label: a million SIMs would be a million series. Per-SIM data goes through IPFIX
//! and the CLI. The families:
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `enforcer_packets_total`, `enforcer_bytes_total` | counter | `segment` (`""`: no segment: unknown or spoofed sources), `verdict` (`pass`, `drop`), `reason` |
//! | `enforcer_sims` | gauge | `state` (`active`, `quarantined`) |
//! | `enforcer_sessions`, `enforcer_sessions_capacity` | gauge | |
//! | `enforcer_map_entries`, `enforcer_map_capacity` | gauge | `map` |
//! | `enforcer_policy_generation` | gauge | |
//! | `enforcer_policy_applies_total` | counter | `result` (`ok`, `error`) |
//! | `enforcer_policy_apply_duration_seconds` | histogram | |
//! | `enforcer_control_requests_total` | counter | `command` |
//! | `enforcer_ipfix_records_sent_total`, `…_messages_sent_total`, `…_messages_failed_total`, `…_records_deferred_total` | counter | |
//! | `enforcer_radius_requests_total` | counter | `outcome` (`applied`, `unchanged`, `stale`, `refused`, `deferred`, `unrecorded`) |
//! | `enforcer_radius_dropped_total` | counter | `reason` (`unknown_client`, `authenticator`, `attribute`, `length`, `code`, `status`) |
//! | `enforcer_radius_unrecorded_total` | counter | |
//!
//! Kernel counters (packets, bytes) are read from the pinned `VERDICT_STATS` map at each
//! scrape; the daemon's own state (SIMs, sessions, maps, policy) is published by the actor as
//! it changes and at each session sweep.

use std::sync::{Arc, Mutex, RwLock, atomic::Ordering};

use aya::maps::Map;
use enforcer_common::{DropReason, PassReason, Verdict, maps::SEGMENT_NONE};
use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use super::exporter::ExportStats;

/// The daemon's metrics, shared between the actor (which sets its state) and the HTTP server
/// (which reads the kernel counters and encodes everything).
pub struct Metrics {
    registry: Registry,
    packets: IntCounterVec,
    bytes: IntCounterVec,
    /// SIMs by state (`state`).
    pub sims: IntGaugeVec,
    /// Live sessions as of the last sweep.
    pub sessions: IntGauge,
    /// The session table's capacity.
    pub sessions_capacity: IntGauge,
    /// Entries per map (`map`).
    pub map_entries: IntGaugeVec,
    /// Capacity per map (`map`).
    pub map_capacity: IntGaugeVec,
    /// The active policy generation (0 or 1).
    pub policy_generation: IntGauge,
    /// Policy reloads (SIGHUP, `policy apply`) by `result`; the load at start is not one.
    pub policy_applies: IntCounterVec,
    /// How long reloads took, seconds.
    pub policy_apply_seconds: Histogram,
    /// Control-socket requests by `command`.
    pub control_requests: IntCounterVec,
    ipfix: [IntCounter; 4],
    deny: [IntCounter; 3],
    events: Option<Arc<super::events::EventStats>>,
    alert_counters: [IntCounter; 2],
    alerts: Option<Arc<super::alerts::AlertStats>>,
    radius_requests: IntCounterVec,
    radius_dropped: IntCounterVec,
    radius_unrecorded: IntCounter,
    radius: Option<Arc<crate::bindings::radius::Stats>>,
    /// Segment names by id, as of the policy in force.
    segments: RwLock<Vec<Option<String>>>,
    /// `VERDICT_STATS`, opened from its pin (read only here); its lock also makes one scrape
    /// at a time refill the mirrored counters.
    verdict_stats: Mutex<Option<Map>>,
    /// `FORWARD_STATS`, opened from its pin.
    forward_stats: Option<Map>,
    /// Packets by XDP forwarding outcome (`outcome`).
    forwarded: IntCounterVec,
    export: Option<Arc<ExportStats>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

/// Register `metric` in `registry` and return it.
fn registered<M: prometheus::core::Collector + Clone + 'static>(
    registry: &Registry,
    metric: M,
) -> M {
    // Names are distinct constants: registering cannot collide.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    registered(
        registry,
        IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    registered(
        registry,
        IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"),
    )
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    registered(registry, IntGauge::new(name, help).expect("valid metric"))
}

impl Metrics {
    /// The metrics, reading the kernel counters from `verdict_stats` (when given) and the
    /// exporter's from `export`.
    ///
    /// # Panics
    /// Never: every name and label is a valid constant.
    #[must_use]
    pub fn new(
        verdict_stats: Option<Map>,
        forward_stats: Option<Map>,
        export: Option<Arc<ExportStats>>,
        events: Option<Arc<super::events::EventStats>>,
        alerts: Option<Arc<super::alerts::AlertStats>>,
        radius: Option<Arc<crate::bindings::radius::Stats>>,
    ) -> Self {
        let r = Registry::new();
        let forwarded = counter_vec(
            &r,
            "enforcer_xdp_forward_packets_total",
            "Passed packets on interfaces that forward in XDP (--forward xdp), by outcome: \
             redirected, or why they went to the kernel's stack (bpf_fib_lookup's result)",
            &["outcome"],
        );
        let verdict = &["segment", "verdict", "reason"];
        let ipfix = [
            (
                "enforcer_ipfix_records_sent_total",
                "IPFIX records sent, summed over the collectors",
            ),
            ("enforcer_ipfix_messages_sent_total", "IPFIX messages sent"),
            (
                "enforcer_ipfix_messages_failed_total",
                "IPFIX messages whose send failed (collector down or unreachable)",
            ),
            (
                "enforcer_ipfix_records_deferred_total",
                "IPFIX records the exporter's queue had no room for, exported in a later round",
            ),
        ]
        .map(|(name, help)| registered(&r, IntCounter::new(name, help).expect("valid metric")));
        let deny = [
            ("enforcer_deny_events_total", "Deny events written out"),
            (
                "enforcer_deny_events_dropped_total",
                "Deny events read but not written (a queue was full)",
            ),
            (
                "enforcer_deny_events_suppressed_total",
                "Denied packets over their SIM's event budget, as the next events reported them",
            ),
        ]
        .map(|(name, help)| registered(&r, IntCounter::new(name, help).expect("valid metric")));
        let alert_counters = [
            ("enforcer_alerts_total", "Alerts raised"),
            (
                "enforcer_alert_webhook_failures_total",
                "Alerts the webhook did not accept after every retry, or found its queue full",
            ),
        ]
        .map(|(name, help)| registered(&r, IntCounter::new(name, help).expect("valid metric")));
        Self {
            packets: counter_vec(
                &r,
                "enforcer_packets_total",
                "Packets judged, by segment, verdict and reason",
                verdict,
            ),
            bytes: counter_vec(
                &r,
                "enforcer_bytes_total",
                "Bytes (whole frames) judged, by segment, verdict and reason",
                verdict,
            ),
            sims: gauge_vec(
                &r,
                "enforcer_sims",
                "SIMs in the policy in force, by state",
                &["state"],
            ),
            sessions: gauge(
                &r,
                "enforcer_sessions",
                "Live sessions as of the last sweep",
            ),
            sessions_capacity: gauge(
                &r,
                "enforcer_sessions_capacity",
                "Sessions the table holds at most",
            ),
            map_entries: gauge_vec(
                &r,
                "enforcer_map_entries",
                "Entries the policy in force uses, by map",
                &["map"],
            ),
            map_capacity: gauge_vec(&r, "enforcer_map_capacity", "Capacity by map", &["map"]),
            policy_generation: gauge(
                &r,
                "enforcer_policy_generation",
                "The active policy generation (0 or 1)",
            ),
            policy_applies: counter_vec(
                &r,
                "enforcer_policy_applies_total",
                "Policy reloads (SIGHUP, enforcer policy apply), by result",
                &["result"],
            ),
            policy_apply_seconds: registered(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new(
                        "enforcer_policy_apply_duration_seconds",
                        "How long a policy reload took, validation to the switch",
                    )
                    .buckets(vec![0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0]),
                )
                .expect("valid metric"),
            ),
            control_requests: counter_vec(
                &r,
                "enforcer_control_requests_total",
                "Commands received on the control socket, by command",
                &["command"],
            ),
            ipfix,
            deny,
            events,
            alert_counters,
            alerts,
            radius_requests: counter_vec(
                &r,
                "enforcer_radius_requests_total",
                "RADIUS Accounting-Requests recorded and answered, by outcome",
                &["outcome"],
            ),
            radius_dropped: counter_vec(
                &r,
                "enforcer_radius_dropped_total",
                "RADIUS datagrams dropped unanswered, by reason",
                &["reason"],
            ),
            radius_unrecorded: registered(
                &r,
                IntCounter::new(
                    "enforcer_radius_unrecorded_total",
                    "RADIUS requests left unanswered because the store could not record them",
                )
                .expect("valid metric"),
            ),
            radius,
            registry: r,
            segments: RwLock::new(Vec::new()),
            verdict_stats: Mutex::new(verdict_stats),
            forward_stats,
            forwarded,
            export,
        }
    }

    /// The segment names by id of the policy now in force.
    pub fn set_segments(&self, names: Vec<Option<String>>) {
        if let Ok(mut segments) = self.segments.write() {
            *segments = names;
        }
    }

    /// Read the kernel counters and the exporter's, and encode every metric.
    ///
    /// # Errors
    /// Reading `VERDICT_STATS`, or encoding.
    pub fn encode(&self) -> Result<String, String> {
        let guard = self
            .verdict_stats
            .lock()
            .map_err(|_| "the counters' lock is poisoned".to_owned())?;
        if let Some(map) = guard.as_ref() {
            self.read_kernel(map)?;
        }
        if let Some(map) = &self.forward_stats {
            let counts = crate::counters::forward_outcomes(map)
                .map_err(|e| format!("reading FORWARD_STATS: {e}"))?;
            for &(slot, outcome) in &enforcer_common::maps::FORWARD_OUTCOMES {
                mirror(
                    &self.forwarded.with_label_values(&[outcome]),
                    counts.get(slot as usize).copied().unwrap_or(0),
                );
            }
        }
        if let Some(export) = &self.export {
            let values = [
                &export.records_sent,
                &export.messages_sent,
                &export.messages_failed,
                &export.records_deferred,
            ];
            for (counter, value) in self.ipfix.iter().zip(values) {
                mirror(counter, value.load(Ordering::Relaxed));
            }
        }
        if let Some(events) = &self.events {
            let values = [&events.written, &events.dropped, &events.suppressed];
            for (counter, value) in self.deny.iter().zip(values) {
                mirror(counter, value.load(Ordering::Relaxed));
            }
        }
        if let Some(alerts) = &self.alerts {
            let values = [&alerts.raised, &alerts.webhook_failed];
            for (counter, value) in self.alert_counters.iter().zip(values) {
                mirror(counter, value.load(Ordering::Relaxed));
            }
        }
        if let Some(radius) = &self.radius {
            use crate::bindings::radius::{DROPS, OUTCOMES};
            for (label, value) in OUTCOMES.iter().zip(&radius.requests) {
                mirror(
                    &self.radius_requests.with_label_values(&[*label]),
                    value.load(Ordering::Relaxed),
                );
            }
            for (label, value) in DROPS.iter().zip(&radius.dropped) {
                mirror(
                    &self.radius_dropped.with_label_values(&[*label]),
                    value.load(Ordering::Relaxed),
                );
            }
            mirror(
                &self.radius_unrecorded,
                radius.unrecorded.load(Ordering::Relaxed),
            );
        }
        let mut text = Vec::new();
        TextEncoder::new()
            .encode(&self.registry.gather(), &mut text)
            .map_err(|e| format!("encoding the metrics: {e}"))?;
        drop(guard);
        String::from_utf8(text).map_err(|e| format!("encoding the metrics: {e}"))
    }

    fn read_kernel(&self, map: &Map) -> Result<(), String> {
        let segments = self
            .segments
            .read()
            .map_err(|_| "the segment names' lock is poisoned".to_owned())?
            .clone();
        let verdicts = crate::counters::verdicts(map, segments.len())
            .map_err(|e| format!("reading VERDICT_STATS: {e}"))?;
        // Segments a reload removed go; the others are set anew.
        self.packets.reset();
        self.bytes.reset();
        let blocks = segments
            .iter()
            .enumerate()
            .filter_map(|(id, name)| Some((u32::try_from(id).ok()?, name.clone()?)))
            .chain(std::iter::once((SEGMENT_NONE, String::new())));
        for (block, segment) in blocks {
            let all = PassReason::ALL
                .iter()
                .map(|&r| ("pass", r.name(), Verdict::Pass(r, 0)))
                .chain(
                    DropReason::ALL
                        .iter()
                        .map(|&r| ("drop", r.name(), Verdict::Drop(r))),
                );
            for (verdict, reason, v) in all {
                let index = enforcer_common::maps::verdict_stats_index(block, v.stats_slot());
                let counter = verdicts.get(index as usize).copied().unwrap_or_default();
                let labels = [segment.as_str(), verdict, reason];
                self.packets
                    .with_label_values(&labels)
                    .inc_by(counter.packets);
                self.bytes.with_label_values(&labels).inc_by(counter.bytes);
            }
        }
        Ok(())
    }
}

/// Set a counter to a total kept elsewhere (the exporter's): those only grow, so the counter
/// does too.
fn mirror(counter: &IntCounter, total: u64) {
    let now = counter.get();
    if total >= now {
        counter.inc_by(total - now);
    } else {
        counter.reset();
        counter.inc_by(total);
    }
}

/// The content type of the text format.
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Serve `GET /metrics` on `listener` until the runtime ends; other paths get 404.
pub async fn serve(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    use axum::{
        http::{StatusCode, header},
        routing::get,
    };
    let app = axum::Router::new().route(
        "/metrics",
        get(move || {
            let metrics = Arc::clone(&metrics);
            async move {
                match metrics.encode() {
                    Ok(text) => (StatusCode::OK, [(header::CONTENT_TYPE, CONTENT_TYPE)], text),
                    Err(err) => (
                        StatusCode::INTERNAL_SERVER_ERROR,
                        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
                        err,
                    ),
                }
            }
        }),
    );
    if let Err(err) = axum::serve(listener, app).await {
        tracing::error!(error = %err, "The metrics server stopped.");
    }
}
