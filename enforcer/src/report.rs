//! What the daemon tells `enforcer stats`: the names behind map indices (the daemon keeps them
//! with the policy in force), and counter reports as tables or JSON.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use enforcer_common::maps::SEGMENT_NONE;
use serde::{Deserialize, Serialize};

use enforcer_common::maps::SimCounters;

use crate::{
    compile::Compiled,
    counters::Totals,
    ids::Ids,
    policy::{Sim, ValidatedPolicy},
};

/// Names of a loaded policy, by stable id (`crate::ids`): segment id → name, rule id →
/// origin. Ids are not positions, so every list has holes (`None`) where an id is retired,
/// released or never used; counters are looked up by the same ids. SIMs are named from the
/// policy itself (a million names are not copied here).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// Policy file loaded.
    pub policy: PathBuf,
    /// Where the maps are pinned.
    pub pin_dir: PathBuf,
    /// Segment names by segment id.
    pub segments: Vec<Option<String>>,
    /// Rules by rule id: `owner @ file:line`, then `: description` when the rule has one.
    pub rules: Vec<Option<String>>,
}

impl State {
    /// Names for a policy loaded with its maps pinned at `pin_dir`.
    #[must_use]
    pub fn new(policy: &ValidatedPolicy, compiled: &Compiled, pin_dir: &Path) -> Self {
        let ids = &compiled.ids;
        let mut segments: Vec<Option<String>> = vec![
            None;
            ids.segments
                .iter()
                .map(|&s| usize::from(s) + 1)
                .max()
                .unwrap_or(0)
        ];
        for (segment, &id) in policy.segments.iter().zip(&ids.segments) {
            segments[usize::from(id)] = Some(segment.name.clone());
        }
        Self {
            policy: policy.path.clone(),
            pin_dir: pin_dir.to_owned(),
            segments,
            rules: compiled
                .rules
                .iter()
                .map(|r| {
                    r.as_ref().map(|r| {
                        if r.description.is_empty() {
                            format!("{} @ {}", r.owner, r.origin)
                        } else {
                            format!("{} @ {}: {}", r.owner, r.origin, r.description)
                        }
                    })
                })
                .collect(),
        }
    }

    /// The name of segment id `id`, empty if it has none.
    #[must_use]
    pub fn segment(&self, id: u16) -> &str {
        self.segments
            .get(usize::from(id))
            .and_then(Option::as_deref)
            .unwrap_or_default()
    }

    /// The row of `sim`, whose segment id is `segment`, with `counters`.
    #[must_use]
    pub fn sim_row(&self, sim: &Sim, segment: u16, counters: &SimCounters) -> SimRow {
        SimRow {
            imsi: sim.imsi.to_string(),
            segment: self.segment(segment).to_owned(),
            state: sim.state.name().to_owned(),
            pass_packets: counters.pass_packets,
            pass_bytes: counters.pass_bytes,
            drop_packets: counters.drop_packets,
            drop_bytes: counters.drop_bytes,
        }
    }

    /// Rows for the SIMs of `policy` (compiled with `ids`), with counters from `totals` by SIM
    /// index; `imsis` filters them when not empty. In policy order.
    #[must_use]
    pub fn sim_rows(
        &self,
        policy: &ValidatedPolicy,
        ids: &Ids,
        totals: &Totals,
        imsis: &[String],
    ) -> Vec<SimRow> {
        policy
            .sims
            .iter()
            .zip(&ids.sims)
            .filter(|(sim, _)| imsis.is_empty() || imsis.iter().any(|i| sim.imsi == *i))
            .map(|(sim, &index)| {
                let counters = totals.sims.get(index as usize).copied().unwrap_or_default();
                self.sim_row(sim, ids.segments[usize::from(sim.segment)], &counters)
            })
            .collect()
    }
}

/// A counter report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct Report {
    /// Per-SIM counters (filtered).
    pub sims: Vec<SimRow>,
    /// Per-segment verdicts, plus a `-` row for packets of no segment.
    pub segments: Vec<SegmentRow>,
    /// Per-rule packets passed.
    pub rules: Vec<RuleRow>,
}

/// One SIM's counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct SimRow {
    /// IMSI.
    pub imsi: String,
    /// Segment name.
    pub segment: String,
    /// State.
    pub state: String,
    /// Packets passed.
    pub pass_packets: u64,
    /// Bytes passed.
    pub pass_bytes: u64,
    /// Packets dropped.
    pub drop_packets: u64,
    /// Bytes dropped.
    pub drop_bytes: u64,
}

/// One segment's verdict counts (packets) by reason name.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct SegmentRow {
    /// Segment name, or `-` for packets of no segment.
    pub segment: String,
    /// `pass_<reason>` and `drop_<reason>` → packets, as `[name, packets]` pairs.
    #[schema(value_type = Vec<Vec<serde_json::Value>>)]
    pub packets: Vec<(String, u64)>,
}

/// One rule's passes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct RuleRow {
    /// Rule id.
    pub id: usize,
    /// Owner and place.
    pub rule: String,
    /// Packets passed.
    pub packets: u64,
    /// Bytes passed.
    pub bytes: u64,
}

impl Report {
    /// Build a report of `sims` (rows made by [`State::sim_rows`] or one by one), and every
    /// segment's verdicts and every rule's passes from `totals`.
    #[must_use]
    pub fn new(state: &State, totals: &Totals, sims: Vec<SimRow>) -> Self {
        let blocks = state
            .segments
            .iter()
            .enumerate()
            .filter_map(|(id, name)| Some((u32::try_from(id).ok()?, name.clone()?)))
            .chain([(SEGMENT_NONE, "-".to_owned())]);
        let segments = blocks
            .map(|(block, segment)| {
                let passes = totals
                    .passes(block)
                    .into_iter()
                    .map(|(r, c)| (format!("pass_{}", r.name()), c.packets));
                let drops = totals
                    .drops(block)
                    .into_iter()
                    .map(|(r, c)| (format!("drop_{}", r.name()), c.packets));
                SegmentRow {
                    segment,
                    packets: passes.chain(drops).filter(|(_, n)| *n > 0).collect(),
                }
            })
            .collect();
        let rules = state
            .rules
            .iter()
            .zip(&totals.rules)
            .enumerate()
            .filter_map(|(id, (rule, c))| Some((id, rule.as_ref()?, c)))
            .map(|(id, rule, c)| RuleRow {
                id,
                rule: rule.clone(),
                packets: c.packets,
                bytes: c.bytes,
            })
            .collect();
        Self {
            sims,
            segments,
            rules,
        }
    }

    /// Human-readable tables.
    #[must_use]
    pub fn to_table(&self) -> String {
        let mut rows = Vec::new();
        for s in &self.sims {
            let counters = SimCounters {
                pass_packets: s.pass_packets,
                pass_bytes: s.pass_bytes,
                drop_packets: s.drop_packets,
                drop_bytes: s.drop_bytes,
            };
            table_row(&mut rows, &s.imsi, &s.segment, &s.state, &counters);
        }
        let mut out = String::from(TABLE_HEADER);
        out.push_str(&String::from_utf8_lossy(&rows));
        out.push_str(&self.tail_table());
        out
    }

    /// The tables after the SIM rows: verdicts per segment, then the rules that passed
    /// packets.
    #[must_use]
    pub fn tail_table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(out, "\n{:<16} VERDICTS (packets)", "SEGMENT");
        for seg in &self.segments {
            let verdicts: Vec<String> = seg
                .packets
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let text = if verdicts.is_empty() {
                "-".to_owned()
            } else {
                verdicts.join(" ")
            };
            let _ = writeln!(out, "{:<16} {text}", seg.segment);
        }
        let used: Vec<&RuleRow> = self.rules.iter().filter(|r| r.packets > 0).collect();
        if !used.is_empty() {
            let _ = writeln!(out, "\n{:>4} {:>10} {:>12} RULE", "ID", "PACKETS", "BYTES");
            for r in used {
                let _ = writeln!(
                    out,
                    "{:>4} {:>10} {:>12} {}",
                    r.id, r.packets, r.bytes, r.rule
                );
            }
        }
        out
    }
}

/// The header line of the SIM table of `enforcer stats`.
pub const TABLE_HEADER: &str = "IMSI             SEGMENT          STATE         PASS_PKTS   PASS_BYTES  DROP_PKTS   DROP_BYTES\n";

/// Append one SIM's line of the table of `enforcer stats` to `out`: IMSI, segment and state
/// left-aligned in 16, 16 and 12 columns, then the four counters right-aligned in 10, 12, 10
/// and 12, single spaces between (wider values push the line out, as `format!` would).
/// Written by hand, not with `format!`: a million lines in a fraction of a second.
pub fn table_row(out: &mut Vec<u8>, imsi: &str, segment: &str, state: &str, c: &SimCounters) {
    let mut numbers = itoa::Buffer::new();
    let left = |out: &mut Vec<u8>, text: &str, width: usize| {
        out.extend_from_slice(text.as_bytes());
        let chars = text.chars().count();
        out.resize(out.len() + width.saturating_sub(chars), b' ');
        out.push(b' ');
    };
    left(out, imsi, 16);
    left(out, segment, 16);
    left(out, state, 12);
    for (i, (value, width)) in [
        (c.pass_packets, 10usize),
        (c.pass_bytes, 12),
        (c.drop_packets, 10),
        (c.drop_bytes, 12),
    ]
    .into_iter()
    .enumerate()
    {
        let text = numbers.format(value);
        if i > 0 {
            out.push(b' ');
        }
        out.resize(out.len() + width.saturating_sub(text.len()), b' ');
        out.extend_from_slice(text.as_bytes());
    }
    out.push(b'\n');
}

/// Append one SIM's row of `enforcer stats --json` to `out`, a [`SimRow`] as serde_json
/// writes it compactly, then a newline. `segment_json` is the segment name already encoded as
/// a JSON string (quotes included); IMSI and state need no escaping (digits, a fixed word).
pub fn json_row(out: &mut Vec<u8>, imsi: &str, segment_json: &str, state: &str, c: &SimCounters) {
    let mut numbers = itoa::Buffer::new();
    out.extend_from_slice(b"{\"imsi\":\"");
    out.extend_from_slice(imsi.as_bytes());
    out.extend_from_slice(b"\",\"segment\":");
    out.extend_from_slice(segment_json.as_bytes());
    out.extend_from_slice(b",\"state\":\"");
    out.extend_from_slice(state.as_bytes());
    out.push(b'"');
    for (name, value) in [
        ("pass_packets", c.pass_packets),
        ("pass_bytes", c.pass_bytes),
        ("drop_packets", c.drop_packets),
        ("drop_bytes", c.drop_bytes),
    ] {
        out.extend_from_slice(b",\"");
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(numbers.format(value).as_bytes());
    }
    out.extend_from_slice(b"}\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters() -> SimCounters {
        SimCounters {
            pass_packets: 12,
            pass_bytes: 123_456_789_012_345,
            drop_packets: 0,
            drop_bytes: 7,
        }
    }

    #[test]
    fn a_table_row_is_what_format_would_write() {
        for (imsi, segment, state) in [
            ("001010000000001", "meters", "active"),
            (
                "00101000000001",
                "a-segment-name-longer-than-16",
                "quarantined",
            ),
            ("001010000000001", "seg\u{e9}", "active"),
        ] {
            let c = counters();
            let mut out = Vec::new();
            table_row(&mut out, imsi, segment, state, &c);
            let want = format!(
                "{:<16} {:<16} {:<12} {:>10} {:>12} {:>10} {:>12}\n",
                imsi, segment, state, c.pass_packets, c.pass_bytes, c.drop_packets, c.drop_bytes
            );
            assert_eq!(String::from_utf8(out).expect("UTF-8"), want);
        }
        assert_eq!(
            TABLE_HEADER,
            format!(
                "{:<16} {:<16} {:<12} {:>10} {:>12} {:>10} {:>12}\n",
                "IMSI", "SEGMENT", "STATE", "PASS_PKTS", "PASS_BYTES", "DROP_PKTS", "DROP_BYTES"
            )
        );
    }

    #[test]
    fn a_json_row_is_what_serde_would_write() {
        let c = counters();
        let segment = "quote\" and \\ and \u{1}";
        let mut out = Vec::new();
        json_row(
            &mut out,
            "001010000000001",
            &serde_json::to_string(segment).expect("encodes"),
            "quarantined",
            &c,
        );
        let row = SimRow {
            imsi: "001010000000001".into(),
            segment: segment.into(),
            state: "quarantined".into(),
            pass_packets: c.pass_packets,
            pass_bytes: c.pass_bytes,
            drop_packets: c.drop_packets,
            drop_bytes: c.drop_bytes,
        };
        let mut want = serde_json::to_vec(&row).expect("encodes");
        want.push(b'\n');
        assert_eq!(String::from_utf8(out), String::from_utf8(want));
    }
}
