//! Stable ids: SIM indices keyed by IMSI, segment ids keyed by name and rule ids keyed by the
//! rule's identity, so that reordering or extending a policy file moves no counter and no map
//! entry of anything that did not change.
//!
//! Takes a [`ValidatedPolicy`] (whose ids are positions in its vectors) and gives [`Ids`], the
//! stable id of every position, which [`crate::compile::compile`] writes into the maps.
//!
//! - **SIM index** (slot in `SIMS`, subject and class id): by IMSI.
//! - **Segment id** (block in `VERDICTS_V2`, slot in `SEGMENTS`): by segment name, `<
//!   MAX_SEGMENTS`.
//! - **Rule id** (slot in `RULE_STATS`): by [`rule_identity`], the owner plus a canonical text of
//!   what the rule matches (destinations by name, sorted protocols, merged port ranges). Moving a
//!   rule within its owner or changing its description keeps its id; changing what it matches
//!   makes it another rule. Identical rules of one owner are told apart by occurrence (`#2`).
//!
//! **Retired ids.** An id whose owner left the policy is *retired*: it is kept (so the same IMSI,
//! name or rule coming back gets its old id and its counters continue) and it is not given to
//! anything else, because its counter slot still holds the departed owner's totals. Retired ids
//! are released only by [`Allocator::release_retired`], which the daemon calls after it has read
//! out (or on purpose reset) the counters of the retired ids; released ids are reused lowest
//! first. Without releases the id space grows by one per distinct owner ever seen, bounded by
//! the maps' capacity (`--max-sims`, `RULE_STATS`, `MAX_SEGMENTS`): allocation past the bound is
//! an [`IdError`], never a silent reuse.

use std::collections::{BTreeSet, HashMap};

use enforcer_common::maps::{MAX_SEGMENTS, MAX_SIMS_LIMIT};

use crate::{
    compile::port_ranges_text,
    policy::{Dest, Rule, ValidatedPolicy},
};

/// The stable id of every SIM, segment and rule of one policy, by position in the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    /// SIM index of `policy.sims[i]`.
    pub sims: Vec<u32>,
    /// Segment id of `policy.segments[i]`, `< MAX_SEGMENTS`.
    pub segments: Vec<u16>,
    /// Rule id of the `i`-th rule in compile order: every segment's rules (segments in file
    /// order), then every SIM's rules (SIMs in policy order).
    pub rules: Vec<u32>,
}

impl Ids {
    /// Positional ids (SIM index = position, and so on), as a policy compiled on its own gets:
    /// for offline tools and tests, which have no store and no earlier policy to agree with.
    #[must_use]
    pub fn fresh(policy: &ValidatedPolicy) -> Self {
        let count = |n: usize| 0..u32::try_from(n).unwrap_or(u32::MAX);
        let rules = policy.segments.iter().map(|s| s.rules.len()).sum::<usize>()
            + policy.sims.iter().map(|s| s.rules().len()).sum::<usize>();
        Self {
            sims: count(policy.sims.len()).collect(),
            segments: (0..u16::try_from(policy.segments.len()).unwrap_or(u16::MAX)).collect(),
            rules: count(rules).collect(),
        }
    }

    /// SIM index slots used: the highest SIM index + 1.
    #[must_use]
    pub fn sim_slots(&self) -> usize {
        self.sims.iter().map(|&s| s as usize + 1).max().unwrap_or(0)
    }

    /// Rule id slots used: the highest rule id + 1.
    #[must_use]
    pub fn rule_slots(&self) -> usize {
        self.rules
            .iter()
            .map(|&r| r as usize + 1)
            .max()
            .unwrap_or(0)
    }
}

/// Which id space an [`IdError`] or a store row is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// SIM indices, keyed by IMSI.
    Sim,
    /// Segment ids, keyed by name.
    Segment,
    /// Rule ids, keyed by [`rule_identity`].
    Rule,
}

impl Kind {
    /// Lower-case name, for messages and store tables.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Sim => "SIM",
            Kind::Segment => "segment",
            Kind::Rule => "rule",
        }
    }
}

/// An id space is full.
#[derive(Debug, thiserror::Error)]
#[error(
    "no free {} id: {limit} are in use or retired; read out the counters of retired ids and \
     release them, or raise the capacity", kind.name()
)]
pub struct IdError {
    /// The id space.
    pub kind: Kind,
    /// Its size.
    pub limit: u32,
}

/// One id space: keys to ids, which of them are retired, and the free ids below the highest.
#[derive(Debug, Clone, Default)]
pub struct Space {
    /// Key → (id, retired). foldhash rather than SipHash: the keys come from our own policy
    /// file, not from the network, and a million lookups per reload is the hot path.
    ids: HashMap<String, (u32, bool), foldhash::fast::RandomState>,
    /// Released ids below `next`, reused lowest first.
    free: BTreeSet<u32>,
    next: u32,
}

/// What an assignment changed in one space: the rows a store must write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpaceChanges {
    /// New keys and their ids.
    pub added: Vec<(String, u32)>,
    /// Keys that were retired and are in use again.
    pub revived: Vec<String>,
    /// Keys in use before and not now.
    pub retired: Vec<String>,
}

impl SpaceChanges {
    /// Nothing changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.revived.is_empty() && self.retired.is_empty()
    }
}

impl Space {
    /// A space holding `rows` of (key, id, retired), as a store read them.
    #[must_use]
    pub fn from_rows(rows: impl IntoIterator<Item = (String, u32, bool)>) -> Self {
        let ids: HashMap<String, (u32, bool), _> = rows
            .into_iter()
            .map(|(key, id, retired)| (key, (id, retired)))
            .collect();
        let next = ids.values().map(|&(id, _)| id + 1).max().unwrap_or(0);
        let mut used = vec![false; next as usize];
        for &(id, _) in ids.values() {
            used[id as usize] = true;
        }
        let free = (0..next).filter(|&id| !used[id as usize]).collect();
        Self { ids, free, next }
    }

    /// The id of `key`, if it has one (in use or retired).
    #[must_use]
    pub fn id(&self, key: &str) -> Option<u32> {
        self.ids.get(key).map(|&(id, _)| id)
    }

    /// Keys with their ids and whether they are retired, in no particular order.
    pub fn rows(&self) -> impl Iterator<Item = (&str, u32, bool)> {
        self.ids
            .iter()
            .map(|(k, &(id, retired))| (k.as_str(), id, retired))
    }

    /// Give every key of `keys` an id (its own if it has one, else the lowest free one below
    /// `limit`) and retire the keys in use that `keys` lacks. Changes nothing: [`Space::apply`]
    /// records the result.
    fn plan(
        &self,
        kind: Kind,
        limit: u32,
        keys: &[&str],
    ) -> Result<(Vec<u32>, SpaceChanges), IdError> {
        let mut changes = SpaceChanges::default();
        let mut out = Vec::with_capacity(keys.len());
        // Ids of the keys given, by id: what is in use and not in `keys` gets retired.
        let mut seen = vec![false; self.next as usize];
        let mut free = self.free.iter().copied();
        let mut next = self.next;
        for key in keys {
            if let Some(&(id, retired)) = self.ids.get(*key) {
                if retired {
                    changes.revived.push((*key).to_owned());
                }
                seen[id as usize] = true;
                out.push(id);
                continue;
            }
            let id = match free.next() {
                Some(id) => id,
                None if next < limit => {
                    next += 1;
                    next - 1
                }
                None => return Err(IdError { kind, limit }),
            };
            changes.added.push(((*key).to_owned(), id));
            out.push(id);
        }
        for (key, &(id, retired)) in &self.ids {
            if !retired && !seen[id as usize] {
                changes.retired.push(key.clone());
            }
        }
        Ok((out, changes))
    }

    /// Record `changes` from [`Space::plan`] of this space.
    fn apply(&mut self, changes: &SpaceChanges) {
        for (key, id) in &changes.added {
            self.free.remove(id);
            self.next = self.next.max(id + 1);
            self.ids.insert(key.clone(), (*id, false));
        }
        for key in &changes.revived {
            if let Some((_, retired)) = self.ids.get_mut(key) {
                *retired = false;
            }
        }
        for key in &changes.retired {
            if let Some((_, retired)) = self.ids.get_mut(key) {
                *retired = true;
            }
        }
    }

    /// Forget every retired key; their ids become free. Returns the released (key, id) pairs.
    pub fn release_retired(&mut self) -> Vec<(String, u32)> {
        let released: Vec<(String, u32)> = self
            .ids
            .iter()
            .filter(|(_, (_, retired))| *retired)
            .map(|(k, &(id, _))| (k.clone(), id))
            .collect();
        for (key, id) in &released {
            self.ids.remove(key);
            self.free.insert(*id);
        }
        released
    }
}

/// The three id spaces.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    /// SIM indices by IMSI.
    pub sims: Space,
    /// Segment ids by name.
    pub segments: Space,
    /// Rule ids by [`rule_identity`].
    pub rules: Space,
}

/// What [`Allocator::assign`] changed, per space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// SIM rows.
    pub sims: SpaceChanges,
    /// Segment rows.
    pub segments: SpaceChanges,
    /// Rule rows.
    pub rules: SpaceChanges,
}

impl Allocator {
    /// Ids for `policy`: existing keys keep theirs, new ones get free ids, keys not in the
    /// policy are retired.
    ///
    /// # Errors
    /// [`IdError`] when a space is full (see the module docs on retired ids); then nothing
    /// is changed.
    pub fn assign(&mut self, policy: &ValidatedPolicy) -> Result<(Ids, Changes), IdError> {
        let planned = self.plan(policy)?;
        self.apply(&planned.1);
        Ok(planned)
    }

    /// The ids [`Allocator::assign`] would give, and its changes, without recording them: a
    /// store writes the changes first and then calls [`Allocator::apply`].
    ///
    /// # Errors
    /// As [`Allocator::assign`].
    pub fn plan(&self, policy: &ValidatedPolicy) -> Result<(Ids, Changes), IdError> {
        let imsi_texts: Vec<_> = policy.sims.iter().map(|s| s.imsi.text()).collect();
        let imsis: Vec<&str> = imsi_texts.iter().map(|t| t.as_str()).collect();
        let names: Vec<&str> = policy.segments.iter().map(|s| s.name.as_str()).collect();
        let identities = rule_identities(policy);
        let rules: Vec<&str> = identities.iter().map(String::as_str).collect();
        let (sims, sim_changes) = self.sims.plan(Kind::Sim, MAX_SIMS_LIMIT, &imsis)?;
        let (segments, segment_changes) =
            self.segments.plan(Kind::Segment, MAX_SEGMENTS, &names)?;
        let (rules, rule_changes) = self.rules.plan(Kind::Rule, u32::MAX, &rules)?;
        let ids = Ids {
            sims,
            // `Space::plan` keeps segment ids below MAX_SEGMENTS, which fits a u16.
            segments: segments
                .into_iter()
                .map(|id| u16::try_from(id).unwrap_or(u16::MAX))
                .collect(),
            rules,
        };
        let changes = Changes {
            sims: sim_changes,
            segments: segment_changes,
            rules: rule_changes,
        };
        Ok((ids, changes))
    }

    /// Record `changes` from [`Allocator::plan`].
    pub fn apply(&mut self, changes: &Changes) {
        self.sims.apply(&changes.sims);
        self.segments.apply(&changes.segments);
        self.rules.apply(&changes.rules);
    }

    /// Release every retired id of the three spaces (see the module docs): call it only once
    /// the counters of the retired ids have been read out or reset, as the next owner of an id
    /// inherits whatever its counter slot holds.
    pub fn release_retired(&mut self) -> Changes {
        let released = |space: &mut Space| SpaceChanges {
            retired: space
                .release_retired()
                .into_iter()
                .map(|(k, _)| k)
                .collect(),
            ..SpaceChanges::default()
        };
        Changes {
            sims: released(&mut self.sims),
            segments: released(&mut self.segments),
            rules: released(&mut self.rules),
        }
    }
}

/// The identity of every rule of `policy`, in compile order (see [`Ids::rules`]).
#[must_use]
pub fn rule_identities(policy: &ValidatedPolicy) -> Vec<String> {
    let mut seen: HashMap<String, u32> = HashMap::new();
    let mut out = Vec::new();
    let mut push = |owner: String, rule: &Rule| {
        let base = rule_identity(policy, &owner, rule);
        let n = seen.entry(base.clone()).or_insert(0);
        *n += 1;
        out.push(if *n == 1 {
            base
        } else {
            format!("{base} #{n}")
        });
    };
    for segment in &policy.segments {
        for rule in &segment.rules {
            push(format!("segment {}", segment.name), rule);
        }
    }
    for sim in &policy.sims {
        for rule in sim.rules() {
            push(format!("imsi {}", sim.imsi), rule);
        }
    }
    out
}

/// `OWNER: to=[…] protos=[…] ports=[…]`: destinations by name (CIDRs, `segment:NAME`,
/// `imsi:N`), sorted and deduplicated; protocol numbers sorted; port ranges merged. Positions in
/// the file never enter it.
#[must_use]
pub fn rule_identity(policy: &ValidatedPolicy, owner: &str, rule: &Rule) -> String {
    let to: BTreeSet<String> = rule
        .to
        .iter()
        .map(|dest| match dest {
            Dest::Net(net) => net.to_string(),
            Dest::Segment(id) => policy.segments.get(usize::from(*id)).map_or_else(
                || format!("segment#{id}"),
                |s| format!("segment:{}", s.name),
            ),
            Dest::Sim(index) => policy
                .sims
                .get(*index as usize)
                .map_or_else(|| format!("imsi#{index}"), |s| format!("imsi:{}", s.imsi)),
        })
        .collect();
    let protos: BTreeSet<u8> = rule.protos.iter().copied().collect();
    let to: Vec<String> = to.into_iter().collect();
    let protos: Vec<String> = protos.iter().map(u8::to_string).collect();
    format!(
        "{owner}: to=[{}] protos=[{}] ports=[{}]",
        to.join(","),
        protos.join(","),
        port_ranges_text(&rule.ports)
    )
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn policy(text: &str) -> ValidatedPolicy {
        crate::policy::from_str(Path::new("ids.toml"), text).expect("valid test policy")
    }

    const BASE: &str = r#"
pools = ["10.0.0.0/24"]
[[segments]]
name = "meters"
rules = [{ to = ["192.0.2.0/24"], proto = ["tcp"], ports = [443] },
         { to = ["198.51.100.1/32"], proto = ["udp"], ports = [53] }]
[[segments]]
name = "cams"
rules = [{ to = ["meters"] }]
[[sims]]
imsi = "001010000000001"
ipv4 = "10.0.0.1"
segment = "meters"
[[sims]]
imsi = "001010000000002"
ipv4 = "10.0.0.2"
segment = "cams"
"#;

    #[test]
    fn adding_a_sim_first_shifts_no_other_id() {
        let mut alloc = Allocator::default();
        let a = policy(BASE);
        let (before, _) = alloc.assign(&a).expect("ids");
        let b = policy(&BASE.replacen(
            "[[sims]]",
            "[[sims]]\nimsi = \"001010000000009\"\nipv4 = \"10.0.0.9\"\nsegment = \"cams\"\n\
             [[sims]]",
            1,
        ));
        let (after, changes) = alloc.assign(&b).expect("ids");
        assert_eq!(after.sims[1..], before.sims[..]);
        assert_eq!(after.sims[0], 2, "the new SIM takes the next free index");
        assert_eq!(after.segments, before.segments);
        assert_eq!(after.rules, before.rules);
        assert_eq!(changes.sims.added.len(), 1);
        assert!(changes.sims.retired.is_empty());
    }

    #[test]
    fn reordering_segments_and_rules_keeps_ids() {
        let mut alloc = Allocator::default();
        let (before, _) = alloc.assign(&policy(BASE)).expect("ids");
        let swapped = BASE.replace(
            "rules = [{ to = [\"192.0.2.0/24\"], proto = [\"tcp\"], ports = [443] },\n         \
             { to = [\"198.51.100.1/32\"], proto = [\"udp\"], ports = [53] }]",
            "rules = [{ to = [\"198.51.100.1/32\"], proto = [\"udp\"], ports = [53] },\n         \
             { to = [\"192.0.2.0/24\"], proto = [\"tcp\"], ports = [443] }]",
        );
        assert_ne!(swapped, BASE, "the test must reorder the rules");
        let (after, changes) = alloc.assign(&policy(&swapped)).expect("ids");
        assert_eq!(
            after.rules,
            vec![before.rules[1], before.rules[0], before.rules[2]]
        );
        assert!(changes.rules.is_empty());
    }

    #[test]
    fn a_retired_sim_index_is_not_reused_until_released() {
        let mut alloc = Allocator::default();
        let (first, _) = alloc.assign(&policy(BASE)).expect("ids");
        let without_first = BASE.replacen(
            "[[sims]]\nimsi = \"001010000000001\"\nipv4 = \"10.0.0.1\"\nsegment = \"meters\"\n",
            "",
            1,
        );
        let (_, changes) = alloc.assign(&policy(&without_first)).expect("ids");
        assert_eq!(changes.sims.retired, vec!["001010000000001".to_owned()]);
        let newcomer = without_first.replacen("001010000000002", "001010000000003", 1);
        let (ids, _) = alloc.assign(&policy(&newcomer)).expect("ids");
        assert_ne!(
            ids.sims[0], first.sims[0],
            "a retired index went to another SIM"
        );
        alloc.release_retired();
        let (ids, _) = alloc
            .assign(&policy(&newcomer.replacen(
                "001010000000003",
                "001010000000004",
                1,
            )))
            .expect("ids");
        assert!(
            first.sims.contains(&ids.sims[0]),
            "a released index is reused"
        );
    }

    #[test]
    fn a_returning_sim_gets_its_old_index() {
        let mut alloc = Allocator::default();
        let (first, _) = alloc.assign(&policy(BASE)).expect("ids");
        let without = BASE.replacen("001010000000001", "001010000000007", 1);
        alloc.assign(&policy(&without)).expect("ids");
        let (again, changes) = alloc.assign(&policy(BASE)).expect("ids");
        assert_eq!(again.sims, first.sims);
        assert_eq!(changes.sims.revived, vec!["001010000000001".to_owned()]);
    }

    #[test]
    fn fresh_ids_are_positions() {
        let ids = Ids::fresh(&policy(BASE));
        assert_eq!(ids.sims, vec![0, 1]);
        assert_eq!(ids.segments, vec![0, 1]);
        assert_eq!(ids.rules, vec![0, 1, 2]);
    }
}
