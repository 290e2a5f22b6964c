//! What changes between two validated policies: pools, segments, SIMs and rules, by identity.
//!
//! Identities, so that reordering a file is not a change: a pool by its CIDR, a segment by its
//! name, a SIM by its IMSI, a rule by its owner (`segment NAME` or `imsi NNN`) and its match
//! (destinations, protocols, ports as [`show::rule_match`] writes them). A rule whose match
//! is unchanged but whose description changed is "changed"; a rule that only moved to another
//! line is not reported. Two rules of one owner with the same match are paired in file order.
//! Pure: no I/O; the CLI prints the result as text or JSON.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;

use crate::policy::{Imsi, Rule, Sim, ValidatedPolicy, show};

/// Every difference between an old and a new policy.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct PolicyDiff {
    /// Pools only in the new policy.
    pub pools_added: Vec<String>,
    /// Pools only in the old policy.
    pub pools_removed: Vec<String>,
    /// Segment names only in the new policy.
    pub segments_added: Vec<String>,
    /// Segment names only in the old policy.
    pub segments_removed: Vec<String>,
    /// Segments in both whose description changed.
    pub segments_changed: Vec<Changed>,
    /// SIMs only in the new policy (new file order).
    pub sims_added: Vec<SimSummary>,
    /// SIMs only in the old policy (old file order).
    pub sims_removed: Vec<SimSummary>,
    /// SIMs in both with another segment, state, address or identifier.
    pub sims_changed: Vec<Changed>,
    /// Rule changes by owner; owners without changes are left out.
    pub rules: Vec<OwnerRules>,
}

/// A SIM as shown when it is added or removed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SimSummary {
    /// IMSI.
    pub imsi: String,
    /// Segment name.
    pub segment: String,
    /// `active` or `quarantined`.
    pub state: &'static str,
    /// IPv4 address, if any.
    pub ipv4: Option<String>,
    /// IPv6 /64, if any.
    pub ipv6: Option<String>,
}

/// Something present in both policies whose fields differ.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Changed {
    /// Its identity: a segment name, an IMSI or a rule's match.
    pub name: String,
    /// The fields that differ, in a fixed order.
    pub fields: Vec<FieldChange>,
}

/// One field's old and new value (`None`: not set).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// The policy key (`segment`, `state`, `ipv4`, `description`, ...).
    pub field: &'static str,
    /// Value in the old policy.
    pub old: Option<String>,
    /// Value in the new policy.
    pub new: Option<String>,
}

/// The rule changes of one owner.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OwnerRules {
    /// `segment NAME` or `imsi NNN`.
    pub owner: String,
    /// Rules only in the new policy, with their new `file:line`.
    pub added: Vec<RuleAt>,
    /// Rules only in the old policy, with their old `file:line`.
    pub removed: Vec<RuleAt>,
    /// Rules in both whose description changed, with both places.
    pub changed: Vec<RuleChanged>,
}

/// A rule and where it is written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleAt {
    /// Its match as policy text.
    pub rule: String,
    /// Its description.
    pub description: String,
    /// `file:line`.
    pub origin: String,
}

/// A rule whose match is the same in both policies but whose description changed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RuleChanged {
    /// Its match as policy text.
    pub rule: String,
    /// `file:line` in the old policy.
    pub old_origin: String,
    /// `file:line` in the new policy.
    pub new_origin: String,
    /// The fields that differ.
    pub fields: Vec<FieldChange>,
}

impl PolicyDiff {
    /// No differences at all.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.count() == 0
    }

    /// How many things differ (each added, removed or changed item counts once).
    #[must_use]
    pub fn count(&self) -> usize {
        self.pools_added.len()
            + self.pools_removed.len()
            + self.segments_added.len()
            + self.segments_removed.len()
            + self.segments_changed.len()
            + self.sims_added.len()
            + self.sims_removed.len()
            + self.sims_changed.len()
            + self
                .rules
                .iter()
                .map(|o| o.added.len() + o.removed.len() + o.changed.len())
                .sum::<usize>()
    }
}

/// Compare two policies. Linear in their size (hash maps by identity): two million-SIM
/// policies compare in well under a second once validated.
#[must_use]
pub fn diff(old: &ValidatedPolicy, new: &ValidatedPolicy) -> PolicyDiff {
    let mut out = PolicyDiff::default();
    let (old_pools, new_pools): (Vec<String>, Vec<String>) = (
        old.pools.iter().map(ToString::to_string).collect(),
        new.pools.iter().map(ToString::to_string).collect(),
    );
    out.pools_added = only_in(&new_pools, &old_pools);
    out.pools_removed = only_in(&old_pools, &new_pools);

    let old_segments: HashMap<&str, &crate::policy::Segment> =
        old.segments.iter().map(|s| (s.name.as_str(), s)).collect();
    let new_names: HashSet<&str> = new.segments.iter().map(|s| s.name.as_str()).collect();
    for segment in &new.segments {
        match old_segments.get(segment.name.as_str()) {
            None => out.segments_added.push(segment.name.clone()),
            Some(before) => {
                let mode = |s: &crate::policy::Segment| {
                    if s.audit { "audit" } else { "enforce" }.to_owned()
                };
                let alerts = |s: &crate::policy::Segment| {
                    let a = s.alerts;
                    let show =
                        |v: Option<u32>| v.map_or_else(|| "off".to_owned(), |v| v.to_string());
                    format!(
                        "deny_rate {}, learn_destinations {}, burst {}",
                        show(a.deny_rate),
                        show(a.learn_destinations),
                        show(a.burst)
                    )
                };
                let fields: Vec<FieldChange> = [
                    (
                        "description",
                        before.description.clone(),
                        segment.description.clone(),
                    ),
                    // Audit mode turns enforcement off for the segment's SIMs: a reviewer must
                    // see it.
                    ("mode", mode(before), mode(segment)),
                    ("alerts", alerts(before), alerts(segment)),
                    ("apns", before.apns.join(", "), segment.apns.join(", ")),
                    (
                        "imei_lock",
                        before
                            .imei_lock
                            .as_ref()
                            .map_or_else(|| "off".to_owned(), crate::policy::ImeiLock::text),
                        segment
                            .imei_lock
                            .as_ref()
                            .map_or_else(|| "off".to_owned(), crate::policy::ImeiLock::text),
                    ),
                ]
                .into_iter()
                .filter(|(_, a, b)| a != b)
                .map(|(field, a, b)| change(field, Some(&a), Some(&b)))
                .collect();
                if !fields.is_empty() {
                    out.segments_changed.push(Changed {
                        name: segment.name.clone(),
                        fields,
                    });
                }
            }
        }
    }
    out.segments_removed = old
        .segments
        .iter()
        .filter(|s| !new_names.contains(s.name.as_str()))
        .map(|s| s.name.clone())
        .collect();

    let old_sims: HashMap<Imsi, &Sim> = old.sims.iter().map(|s| (s.imsi, s)).collect();
    let new_imsis: HashSet<Imsi> = new.sims.iter().map(|s| s.imsi).collect();
    for sim in &new.sims {
        match old_sims.get(&sim.imsi) {
            None => out.sims_added.push(summary(new, sim)),
            Some(before) => {
                let fields = sim_fields(old, before, new, sim);
                if !fields.is_empty() {
                    out.sims_changed.push(Changed {
                        name: sim.imsi.to_string(),
                        fields,
                    });
                }
            }
        }
    }
    out.sims_removed = old
        .sims
        .iter()
        .filter(|s| !new_imsis.contains(&s.imsi))
        .map(|s| summary(old, s))
        .collect();

    out.rules = rule_changes(old, new);
    out
}

/// Items of `a` not in `b`, in `a`'s order.
fn only_in(a: &[String], b: &[String]) -> Vec<String> {
    let b: HashSet<&String> = b.iter().collect();
    a.iter().filter(|x| !b.contains(x)).cloned().collect()
}

fn change(field: &'static str, old: Option<&str>, new: Option<&str>) -> FieldChange {
    FieldChange {
        field,
        old: old.map(str::to_owned),
        new: new.map(str::to_owned),
    }
}

fn segment_name(policy: &ValidatedPolicy, id: u16) -> String {
    match policy.segment_name(id) {
        "" => format!("#{id}"),
        name => name.to_owned(),
    }
}

fn summary(policy: &ValidatedPolicy, sim: &Sim) -> SimSummary {
    SimSummary {
        imsi: sim.imsi.to_string(),
        segment: segment_name(policy, sim.segment),
        state: sim.state.name(),
        ipv4: sim.ipv4().map(|a| a.to_string()),
        ipv6: sim.ipv6().map(|n| n.to_string()),
    }
}

fn sim_fields(
    old: &ValidatedPolicy,
    before: &Sim,
    new: &ValidatedPolicy,
    after: &Sim,
) -> Vec<FieldChange> {
    // Most SIMs are unchanged: compare without building strings first.
    let same_segment = old.segment_name(before.segment) == new.segment_name(after.segment);
    if same_segment
        && before.state == after.state
        && before.ipv4() == after.ipv4()
        && before.ipv6() == after.ipv6()
        && before.iccid() == after.iccid()
        && before.msisdn() == after.msisdn()
        && before.audit() == after.audit()
    {
        return Vec::new();
    }
    let mode = |sim: &Sim| Some(if sim.audit() { "audit" } else { "enforce" }.to_owned());
    let pairs: [(&'static str, Option<String>, Option<String>); 7] = [
        (
            "segment",
            Some(segment_name(old, before.segment)),
            Some(segment_name(new, after.segment)),
        ),
        (
            "state",
            Some(before.state.name().to_owned()),
            Some(after.state.name().to_owned()),
        ),
        (
            "ipv4",
            before.ipv4().map(|a| a.to_string()),
            after.ipv4().map(|a| a.to_string()),
        ),
        (
            "ipv6",
            before.ipv6().map(|n| n.to_string()),
            after.ipv6().map(|n| n.to_string()),
        ),
        (
            "iccid",
            before.iccid().map(|i| i.to_string()),
            after.iccid().map(|i| i.to_string()),
        ),
        (
            "msisdn",
            before.msisdn().map(|m| m.to_string()),
            after.msisdn().map(|m| m.to_string()),
        ),
        // A SIM switched to audit mode is enforcement off for it: a reviewer must see it.
        ("mode", mode(before), mode(after)),
    ];
    pairs
        .into_iter()
        .filter(|(_, a, b)| a != b)
        .map(|(field, old, new)| FieldChange { field, old, new })
        .collect()
}

/// Every rule of a policy by owner, in file order: segments first, then SIMs, then the
/// segments' inbound rules.
fn rules_by_owner(policy: &ValidatedPolicy) -> Vec<(String, &[Rule])> {
    let segments = policy
        .segments
        .iter()
        .filter(|s| !s.rules.is_empty())
        .map(|s| (format!("segment {}", s.name), s.rules.as_slice()));
    let sims = policy
        .sims
        .iter()
        .filter(|s| !s.rules().is_empty())
        .map(|s| (format!("imsi {}", s.imsi), s.rules()));
    let inbound = policy
        .segments
        .iter()
        .filter(|s| !s.inbound.is_empty())
        .map(|s| (format!("segment {} inbound", s.name), s.inbound.as_slice()));
    segments.chain(sims).chain(inbound).collect()
}

fn rule_changes(old: &ValidatedPolicy, new: &ValidatedPolicy) -> Vec<OwnerRules> {
    // Owner → (old rules, new rules), owners in order of first appearance (new, then old).
    let mut order: Vec<String> = Vec::new();
    let mut sides: HashMap<String, (&[Rule], &[Rule])> = HashMap::new();
    for (owner, rules) in rules_by_owner(new) {
        order.push(owner.clone());
        sides.insert(owner, (&[], rules));
    }
    for (owner, rules) in rules_by_owner(old) {
        sides
            .entry(owner.clone())
            .or_insert_with(|| {
                order.push(owner);
                (&[], &[])
            })
            .0 = rules;
    }
    order
        .into_iter()
        .filter_map(|owner| {
            let (before, after) = sides[&owner];
            let changes = owner_changes(owner, old, before, new, after);
            let empty = changes.added.is_empty()
                && changes.removed.is_empty()
                && changes.changed.is_empty();
            (!empty).then_some(changes)
        })
        .collect()
}

fn owner_changes(
    owner: String,
    old: &ValidatedPolicy,
    before: &[Rule],
    new: &ValidatedPolicy,
    after: &[Rule],
) -> OwnerRules {
    let inbound = owner.ends_with(" inbound");
    let shown = |policy: &ValidatedPolicy, rule: &Rule| {
        if inbound {
            show::inbound_match(policy, rule)
        } else {
            show::rule_match(policy, rule)
        }
    };
    // Match text → the old rules with it, in file order; each new rule takes the first left.
    let mut unmatched: BTreeMap<String, std::collections::VecDeque<&Rule>> = BTreeMap::new();
    let mut old_order = Vec::with_capacity(before.len());
    for rule in before {
        let key = shown(old, rule);
        unmatched.entry(key.clone()).or_default().push_back(rule);
        old_order.push(key);
    }
    let mut out = OwnerRules {
        owner,
        added: Vec::new(),
        removed: Vec::new(),
        changed: Vec::new(),
    };
    for rule in after {
        let key = shown(new, rule);
        match unmatched
            .get_mut(&key)
            .and_then(std::collections::VecDeque::pop_front)
        {
            None => out.added.push(RuleAt {
                rule: key,
                description: rule.description.clone(),
                origin: rule.origin.clone(),
            }),
            Some(was) if was.description != rule.description => out.changed.push(RuleChanged {
                rule: key,
                old_origin: was.origin.clone(),
                new_origin: rule.origin.clone(),
                fields: vec![change(
                    "description",
                    Some(&was.description),
                    Some(&rule.description),
                )],
            }),
            Some(_) => {}
        }
    }
    // What is left unmatched was removed; report it in old file order.
    for key in old_order {
        if let Some(rule) = unmatched
            .get_mut(&key)
            .and_then(std::collections::VecDeque::pop_front)
        {
            out.removed.push(RuleAt {
                rule: key,
                description: rule.description.clone(),
                origin: rule.origin.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::policy;

    const BASE: &str = r#"
pools = ["10.64.0.0/16"]
[[segments]]
name = "meters"
rules = [
  { to = ["198.51.100.30"], proto = "tcp", ports = [4059], description = "head-end" },
  { to = ["192.0.2.53"], proto = "udp", ports = [53], description = "DNS" },
]
[[segments]]
name = "old"
[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
segment = "meters"
[[sims]]
imsi = "001010000000002"
ipv4 = "10.64.0.2"
segment = "meters"
"#;

    fn load(name: &str, text: &str) -> ValidatedPolicy {
        policy::from_str(Path::new(name), text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    #[test]
    fn a_policy_does_not_differ_from_itself_or_a_reordering() {
        let a = load("a.toml", BASE);
        assert!(diff(&a, &a).is_empty());
        // The same rules and SIMs in another order, with other lines: no difference.
        let reordered = r#"
pools = ["10.64.0.0/16"]
[[segments]]
name = "old"
[[segments]]
name = "meters"
rules = [

  { to = ["192.0.2.53"], proto = "udp", ports = [53], description = "DNS" },
  { ports = [4059], proto = "tcp", to = ["198.51.100.30"], description = "head-end" },
]
[[sims]]
imsi = "001010000000002"
ipv4 = "10.64.0.2"
segment = "meters"
[[sims]]
imsi = "001010000000001"
ipv4 = "10.64.0.1"
segment = "meters"
"#;
        let b = load("b.toml", reordered);
        let d = diff(&a, &b);
        assert!(d.is_empty(), "{d:#?}");
    }

    /// Switching a segment to audit mode (enforcement off for its SIMs) or changing its
    /// alerts is a change a reviewer sees.
    #[test]
    fn audit_mode_and_alerts_are_changes() {
        let a = load("a.toml", BASE);
        let b = load(
            "b.toml",
            &BASE.replace(
                "name = \"old\"\n",
                "name = \"old\"\nmode = \"audit\"\nalerts = { burst = 5 }\n",
            ),
        );
        let d = diff(&a, &b);
        assert_eq!(d.segments_changed.len(), 1, "{d:#?}");
        let fields: Vec<(&str, Option<&str>)> = d.segments_changed[0]
            .fields
            .iter()
            .map(|f| (f.field, f.new.as_deref()))
            .collect();
        assert_eq!(
            fields,
            vec![
                ("mode", Some("audit")),
                (
                    "alerts",
                    Some("deny_rate off, learn_destinations off, burst 5")
                )
            ]
        );
    }

    /// One SIM switched to audit mode is a change of that SIM.
    #[test]
    fn a_sims_own_audit_mode_is_a_change() {
        let a = load("a.toml", BASE);
        let b = load(
            "b.toml",
            &BASE.replace(
                "ipv4 = \"10.64.0.2\"\n",
                "ipv4 = \"10.64.0.2\"\nmode = \"audit\"\n",
            ),
        );
        let d = diff(&a, &b);
        assert_eq!(d.sims_changed.len(), 1, "{d:#?}");
        let field = &d.sims_changed[0].fields[0];
        assert_eq!(
            (field.field, field.old.as_deref(), field.new.as_deref()),
            ("mode", Some("enforce"), Some("audit"))
        );
    }

    #[test]
    fn reports_each_kind_of_change_by_identity() {
        let a = load("a.toml", BASE);
        let changed = BASE
            .replace(r#"["10.64.0.0/16"]"#, r#"["10.64.0.0/16", "10.65.0.0/16"]"#)
            .replace("name = \"old\"", "name = \"new\"")
            .replace("description = \"DNS\"", "description = \"resolver\"")
            .replace("ports = [4059]", "ports = [4060]")
            .replace(
                "ipv4 = \"10.64.0.2\"",
                "ipv4 = \"10.64.0.9\"\nstate = \"quarantined\"",
            )
            + r#"
[[sims]]
imsi = "001010000000003"
ipv4 = "10.65.0.3"
segment = "new"
rules = [{ to = ["imsi:001010000000001"], proto = "icmp" }]
"#;
        let b = load("b.toml", &changed);
        let d = diff(&a, &b);
        assert_eq!(d.pools_added, ["10.65.0.0/16"]);
        assert!(d.pools_removed.is_empty());
        assert_eq!(d.segments_added, ["new"]);
        assert_eq!(d.segments_removed, ["old"]);
        assert_eq!(d.sims_added.len(), 1);
        assert_eq!(d.sims_added[0].imsi, "001010000000003");
        assert_eq!(d.sims_added[0].segment, "new");
        assert!(d.sims_removed.is_empty());
        assert_eq!(d.sims_changed.len(), 1, "{:#?}", d.sims_changed);
        let fields: Vec<_> = d.sims_changed[0].fields.iter().map(|f| f.field).collect();
        assert_eq!(fields, ["state", "ipv4"]);
        assert_eq!(d.rules.len(), 2, "{:#?}", d.rules);
        let meters = &d.rules[0];
        assert_eq!(meters.owner, "segment meters");
        assert_eq!(
            meters.added[0].rule,
            r#"{ to = ["198.51.100.30"], proto = "tcp", ports = [4060] }"#
        );
        assert_eq!(meters.added[0].origin, "b.toml:6");
        assert_eq!(meters.removed[0].origin, "a.toml:6");
        assert_eq!(meters.changed.len(), 1);
        assert_eq!(meters.changed[0].fields[0].new.as_deref(), Some("resolver"));
        let sim = &d.rules[1];
        assert_eq!(sim.owner, "imsi 001010000000003");
        assert_eq!(
            sim.added[0].rule,
            r#"{ to = ["imsi:001010000000001"], proto = "icmp" }"#
        );
        // pool, 2 segments, 1 SIM added, 1 changed, 3 rule lines (+, -, ~) and 1 SIM rule.
        assert_eq!(d.count(), 9);
        // The reverse diff swaps added and removed.
        let back = diff(&b, &a);
        assert_eq!(back.pools_removed, d.pools_added);
        assert_eq!(back.sims_removed, d.sims_added);
    }

    #[test]
    fn rules_with_the_same_match_pair_in_order() {
        let one = r#"
pools = ["10.64.0.0/16"]
[[segments]]
name = "s"
rules = [{ to = ["192.0.2.1"], description = "a" }]
"#;
        let two = r#"
pools = ["10.64.0.0/16"]
[[segments]]
name = "s"
rules = [{ to = ["192.0.2.1"], description = "a" }, { to = ["192.0.2.1"], description = "b" }]
"#;
        let d = diff(&load("a.toml", one), &load("b.toml", two));
        assert_eq!(d.rules.len(), 1);
        assert_eq!(d.rules[0].added.len(), 1);
        assert_eq!(d.rules[0].added[0].description, "b");
        assert!(d.rules[0].changed.is_empty() && d.rules[0].removed.is_empty());
    }
}
