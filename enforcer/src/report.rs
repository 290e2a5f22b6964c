//! What the daemon tells `enforcer stats`: the names behind map indices (the daemon keeps them
//! with the policy in force), and counter reports as tables or JSON.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

use enforcer_common::maps::SEGMENT_NONE;
use serde::{Deserialize, Serialize};

use crate::{compile::Compiled, counters::Totals, policy::ValidatedPolicy};

/// Names of a loaded policy, by stable id (`crate::ids`): SIM index → IMSI, segment id → name,
/// rule id → origin. Ids are not positions, so every list has holes (`None`) where an id is
/// retired, released or never used; counters are looked up by the same ids.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct State {
    /// Policy file loaded.
    pub policy: PathBuf,
    /// Where the maps are pinned.
    pub pin_dir: PathBuf,
    /// Segment names by segment id.
    pub segments: Vec<Option<String>>,
    /// SIMs by SIM index.
    pub sims: Vec<Option<SimName>>,
    /// Rules by rule id: `owner @ file:line`, then `: description` when the rule has one.
    pub rules: Vec<Option<String>>,
}

/// One SIM as `stats` shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SimName {
    /// IMSI.
    pub imsi: String,
    /// Segment id.
    pub segment: u16,
    /// `active` or `quarantined`.
    pub state: String,
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
        let mut sims: Vec<Option<SimName>> = vec![None; ids.sim_slots()];
        for (sim, &index) in policy.sims.iter().zip(&ids.sims) {
            sims[index as usize] = Some(SimName {
                imsi: sim.imsi.to_string(),
                segment: ids.segments[usize::from(sim.segment)],
                state: sim.state.name().to_owned(),
            });
        }
        Self {
            policy: policy.path.clone(),
            pin_dir: pin_dir.to_owned(),
            segments,
            sims,
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
}

/// A counter report.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Report {
    /// Per-SIM counters (filtered).
    pub sims: Vec<SimRow>,
    /// Per-segment verdicts, plus a `-` row for packets of no segment.
    pub segments: Vec<SegmentRow>,
    /// Per-rule packets passed.
    pub rules: Vec<RuleRow>,
}

/// One SIM's counters.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SegmentRow {
    /// Segment name, or `-` for packets of no segment.
    pub segment: String,
    /// `pass_<reason>` and `drop_<reason>` → packets.
    pub packets: Vec<(String, u64)>,
}

/// One rule's passes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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
    /// Build a report; `imsis` filters the SIM rows when not empty.
    #[must_use]
    pub fn new(state: &State, totals: &Totals, imsis: &[String]) -> Self {
        let sims = state
            .sims
            .iter()
            .zip(&totals.sims)
            .filter_map(|(name, c)| name.as_ref().map(|name| (name, c)))
            .filter(|(name, _)| imsis.is_empty() || imsis.contains(&name.imsi))
            .map(|(name, c)| SimRow {
                imsi: name.imsi.clone(),
                segment: state
                    .segments
                    .get(usize::from(name.segment))
                    .cloned()
                    .flatten()
                    .unwrap_or_default(),
                state: name.state.clone(),
                pass_packets: c.pass_packets,
                pass_bytes: c.pass_bytes,
                drop_packets: c.drop_packets,
                drop_bytes: c.drop_bytes,
            })
            .collect();
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
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{:<16} {:<16} {:<12} {:>10} {:>12} {:>10} {:>12}",
            "IMSI", "SEGMENT", "STATE", "PASS_PKTS", "PASS_BYTES", "DROP_PKTS", "DROP_BYTES"
        );
        for s in &self.sims {
            let _ = writeln!(
                out,
                "{:<16} {:<16} {:<12} {:>10} {:>12} {:>10} {:>12}",
                s.imsi,
                s.segment,
                s.state,
                s.pass_packets,
                s.pass_bytes,
                s.drop_packets,
                s.drop_bytes
            );
        }
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
