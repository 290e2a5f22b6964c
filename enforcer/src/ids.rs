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

use std::{
    borrow::Borrow,
    collections::{BTreeSet, HashMap},
    fmt,
};

use enforcer_common::maps::{MAX_SEGMENTS, MAX_SIMS_LIMIT};

use crate::{
    compile::port_ranges_text,
    policy::{Dest, Imsi, Rule, Sim, ValidatedPolicy},
};

/// The stable id of every SIM, segment and rule of one policy, by position in the policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ids {
    /// SIM index of `policy.sims[i]`.
    pub sims: Vec<u32>,
    /// Segment id of `policy.segments[i]`, `< MAX_SEGMENTS`.
    pub segments: Vec<u16>,
    /// Rule id of the `i`-th rule in compile order ([`ValidatedPolicy::rules`]): every
    /// segment's rules (segments in file order), every SIM's rules (SIMs in policy order),
    /// then every segment's inbound rules.
    pub rules: Vec<u32>,
}

impl Ids {
    /// Positional ids (SIM index = position, and so on), as a policy compiled on its own gets:
    /// for offline tools and tests, which have no store and no earlier policy to agree with.
    #[must_use]
    pub fn fresh(policy: &ValidatedPolicy) -> Self {
        let count = |n: usize| 0..u32::try_from(n).unwrap_or(u32::MAX);
        let rules = policy.rule_count();
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

/// Ids cannot be given.
#[derive(Debug, thiserror::Error)]
pub enum IdError {
    /// An id space is full.
    #[error(
        "no free {} id: {limit} are in use or retired; read out the counters of retired ids \
         and release them, or raise the capacity", kind.name()
    )]
    Full {
        /// The id space.
        kind: Kind,
        /// Its size.
        limit: u32,
    },
}

/// A SIM's key in the SIM id space: its IMSI as a number together with its digit count, so that
/// leading zeros (MCC 001) still tell IMSIs apart, in one `u64`: `digits << 50 | value` (an IMSI
/// has at most 15 digits and `10^15 < 2^50`). Keys order by digit count, then value: for IMSIs of
/// one length that is their text order. Eight bytes where a `String` key took 40 and more.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SimKey(u64);

impl SimKey {
    /// The most digits an IMSI has (3GPP TS 23.003).
    pub const MAX_DIGITS: u32 = 15;
    const VALUE_BITS: u32 = 50;

    /// The key of an IMSI of 1 to 15 ASCII digits; `None` for anything else.
    #[must_use]
    pub fn parse(imsi: &str) -> Option<Self> {
        let digits = u32::try_from(imsi.len()).ok()?;
        if !(1..=Self::MAX_DIGITS).contains(&digits) {
            return None;
        }
        let mut value = 0u64;
        for b in imsi.bytes() {
            if !b.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u64::from(b - b'0');
        }
        Some(Self(u64::from(digits) << Self::VALUE_BITS | value))
    }

    /// The key as one integer, as the store keeps it (below `2^54`, so it fits an `i64`).
    #[must_use]
    pub const fn to_bits(self) -> u64 {
        self.0
    }

    /// The key of [`SimKey::to_bits`]; `None` if `bits` is not one (a digit count outside 1 to
    /// 15, or a value with more digits than the count).
    #[must_use]
    pub fn from_bits(bits: u64) -> Option<Self> {
        let digits = bits >> Self::VALUE_BITS;
        let value = bits & ((1 << Self::VALUE_BITS) - 1);
        let fits = u32::try_from(digits)
            .ok()
            .filter(|d| (1..=Self::MAX_DIGITS).contains(d))
            .is_some_and(|d| value < 10u64.pow(d));
        fits.then_some(Self(bits))
    }

    /// How many digits the IMSI has, leading zeros included.
    #[must_use]
    pub const fn digits(self) -> u32 {
        // At most 15 by construction: the cast keeps every bit.
        (self.0 >> Self::VALUE_BITS) as u32
    }

    /// The IMSI as a number (its leading zeros are in [`SimKey::digits`]).
    #[must_use]
    pub const fn value(self) -> u64 {
        self.0 & ((1 << Self::VALUE_BITS) - 1)
    }
}

/// The IMSI text, leading zeros included.
impl fmt::Display for SimKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:0width$}",
            self.value(),
            width = self.digits() as usize
        )
    }
}

/// The key of `sim` in the SIM id space: the one place that reads a policy SIM's IMSI for ids.
#[must_use]
pub fn sim_key(sim: &Sim) -> SimKey {
    SimKey::from(sim.imsi)
}

/// The same IMSI, as the store keys it (a validated [`Imsi`] always fits).
impl From<Imsi> for SimKey {
    fn from(imsi: Imsi) -> Self {
        Self(u64::from(imsi.len()) << Self::VALUE_BITS | imsi.value())
    }
}

/// [`Space::places`] of a key without an id.
const NOT_FOUND: usize = usize::MAX;

/// One id space: keys to ids, which of them are retired, and the free ids below the highest.
///
/// The keys are a sorted vector beside their ids and retired flags (13 bytes per SIM, no
/// per-key allocation for SIMs, where a `HashMap<String, _>` took over 60): a policy's keys are
/// looked up in key order (see `Space::places`), each next to the previous one's place, so
/// nearly all are found without a search; new keys are merged in, O(n) per assignment.
#[derive(Debug, Clone)]
pub struct Space<K> {
    /// Sorted, each key once.
    keys: Vec<K>,
    /// Id of `keys[i]`.
    ids: Vec<u32>,
    /// Whether `keys[i]` is retired.
    retired: Vec<bool>,
    /// Released ids below `next`, reused lowest first.
    free: BTreeSet<u32>,
    next: u32,
}

impl<K> Default for Space<K> {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            ids: Vec::new(),
            retired: Vec::new(),
            free: BTreeSet::new(),
            next: 0,
        }
    }
}

/// What an assignment changed in one space: the rows a store must write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpaceChanges<K> {
    /// New keys and their ids.
    pub added: Vec<(K, u32)>,
    /// Keys that were retired and are in use again.
    pub revived: Vec<K>,
    /// Keys in use before and not now.
    pub retired: Vec<K>,
}

impl<K> Default for SpaceChanges<K> {
    fn default() -> Self {
        Self {
            added: Vec::new(),
            revived: Vec::new(),
            retired: Vec::new(),
        }
    }
}

impl<K> SpaceChanges<K> {
    /// Nothing changed.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.revived.is_empty() && self.retired.is_empty()
    }
}

impl<K: Ord + Clone> Space<K> {
    /// A space holding `rows` of (key, id, retired), as a store read them; rows in key order
    /// (as a store reads them) are taken as they come, others are sorted. Of rows with one key
    /// the first is kept.
    #[must_use]
    pub fn from_rows(rows: impl IntoIterator<Item = (K, u32, bool)>) -> Self {
        let mut space = Self::default();
        let mut sorted = true;
        for (key, id, retired) in rows {
            sorted &= space.keys.last().is_none_or(|last| *last < key);
            space.keys.push(key);
            space.ids.push(id);
            space.retired.push(retired);
        }
        if !sorted {
            let mut rows: Vec<(K, u32, bool)> = space.into_rows().collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            rows.dedup_by(|later, first| later.0 == first.0);
            space = Self::default();
            for (key, id, retired) in rows {
                space.keys.push(key);
                space.ids.push(id);
                space.retired.push(retired);
            }
        }
        space.next = space.ids.iter().map(|&id| id + 1).max().unwrap_or(0);
        let mut used = vec![false; space.next as usize];
        for &id in &space.ids {
            used[id as usize] = true;
        }
        space.free = (0..space.next).filter(|&id| !used[id as usize]).collect();
        space
    }

    /// The rows, by value, in key order.
    fn into_rows(self) -> impl Iterator<Item = (K, u32, bool)> {
        self.keys
            .into_iter()
            .zip(self.ids)
            .zip(self.retired)
            .map(|((k, id), r)| (k, id, r))
    }

    /// The place of `key` in `keys`.
    fn position<Q>(&self, key: &Q) -> Result<usize, usize>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.keys.binary_search_by(|k| k.borrow().cmp(key))
    }

    /// The id of `key`, if it has one (in use or retired).
    #[must_use]
    pub fn id<Q>(&self, key: &Q) -> Option<u32>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
    {
        self.position(key).ok().map(|at| self.ids[at])
    }

    /// How many keys have an id (in use or retired).
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// No key has an id.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Keys with their ids and whether they are retired, in key order.
    pub fn rows(&self) -> impl Iterator<Item = (&K, u32, bool)> {
        self.keys
            .iter()
            .zip(&self.ids)
            .zip(&self.retired)
            .map(|((k, &id), &retired)| (k, id, retired))
    }

    /// The place in `keys` of each of `keys`, [`NOT_FOUND`] for a key without an id. The keys
    /// are looked up in key order, each next to the previous one's place, so that a walk of a
    /// sorted policy finds nearly every key without a search: a policy in about key order (as
    /// inventories mostly are) is walked as it is, another is sorted first, as a million binary
    /// searches in random order cost several times a sort.
    fn places<Q, R>(&self, keys: &[R]) -> Vec<usize>
    where
        K: Borrow<Q>,
        Q: Ord + ?Sized,
        R: Borrow<Q>,
    {
        let mut places = vec![NOT_FOUND; keys.len()];
        let mut hint = 0;
        let mut find = |index: usize, key: &Q| {
            let place = match self.keys.get(hint) {
                Some(k) if k.borrow() == key => Ok(hint),
                _ => self.position(key),
            };
            match place {
                Ok(at) => {
                    places[index] = at;
                    hint = at + 1;
                }
                Err(at) => hint = at,
            }
        };
        let descents = keys
            .windows(2)
            .filter(|w| w[0].borrow() > w[1].borrow())
            .count();
        if descents <= keys.len() / 16 {
            for (index, key) in keys.iter().enumerate() {
                find(index, key.borrow());
            }
        } else {
            let mut order: Vec<(&Q, usize)> = keys
                .iter()
                .enumerate()
                .map(|(index, key)| (key.borrow(), index))
                .collect();
            order.sort_unstable_by(|a, b| a.0.cmp(b.0));
            for (key, index) in order {
                find(index, key);
            }
        }
        places
    }

    /// Give every key of `keys` an id (its own if it has one, else the lowest free one below
    /// `limit`) and retire the keys in use that `keys` lacks. Changes nothing: [`Space::apply`]
    /// records the result.
    fn plan<Q, R>(
        &self,
        kind: Kind,
        limit: u32,
        keys: &[R],
    ) -> Result<(Vec<u32>, SpaceChanges<K>), IdError>
    where
        K: Borrow<Q>,
        Q: Ord + ToOwned<Owned = K> + ?Sized,
        R: Borrow<Q>,
    {
        let mut changes = SpaceChanges {
            // Exact for a fresh space, the case where it is big.
            added: Vec::with_capacity(keys.len().saturating_sub(self.keys.len())),
            ..SpaceChanges::default()
        };
        let mut out = Vec::with_capacity(keys.len());
        let places = self.places::<Q, R>(keys);
        // Which of our keys `keys` holds, by place: those in use and not seen get retired.
        let mut seen = vec![false; self.keys.len()];
        let mut free = self.free.iter().copied();
        let mut next = self.next;
        for (key, &at) in keys.iter().zip(&places) {
            let key: &Q = key.borrow();
            if at != NOT_FOUND {
                if self.retired[at] && !seen[at] {
                    changes.revived.push(key.to_owned());
                }
                seen[at] = true;
                out.push(self.ids[at]);
                continue;
            }
            let id = match free.next() {
                Some(id) => id,
                None if next < limit => {
                    next += 1;
                    next - 1
                }
                None => return Err(IdError::Full { kind, limit }),
            };
            changes.added.push((key.to_owned(), id));
            out.push(id);
        }
        for (at, key) in self.keys.iter().enumerate() {
            if !self.retired[at] && !seen[at] {
                changes.retired.push(key.clone());
            }
        }
        Ok((out, changes))
    }

    /// Record `changes` from [`Space::plan`] of this space.
    fn apply(&mut self, changes: &SpaceChanges<K>) {
        for (keys, retired) in [(&changes.revived, false), (&changes.retired, true)] {
            for key in keys {
                if let Ok(at) = self.position(key) {
                    self.retired[at] = retired;
                }
            }
        }
        if changes.added.is_empty() {
            return;
        }
        for &(_, id) in &changes.added {
            self.free.remove(&id);
            self.next = self.next.max(id + 1);
        }
        let mut added: Vec<&(K, u32)> = changes.added.iter().collect();
        if !added.is_sorted_by(|a, b| a.0 <= b.0) {
            added.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        }
        // All after the last key (a fresh space, or keys in a new range): append in place.
        if self
            .keys
            .last()
            .is_none_or(|last| added.first().is_some_and(|a| *last < a.0))
        {
            // Exact: doubling a million-key space's capacity for a few keys would waste MiBs.
            self.keys.reserve_exact(added.len());
            self.ids.reserve_exact(added.len());
            self.retired.reserve_exact(added.len());
            self.keys.extend(added.iter().map(|a| a.0.clone()));
            self.ids.extend(added.iter().map(|a| a.1));
            self.retired.resize(self.keys.len(), false);
            return;
        }
        // One merge of two sorted runs, O(n): cheaper than an insert per key once there are
        // more than a few.
        let total = self.keys.len() + added.len();
        let mut old_space = std::mem::take(self);
        let mut merged = Self {
            keys: Vec::with_capacity(total),
            ids: Vec::with_capacity(total),
            retired: Vec::with_capacity(total),
            free: std::mem::take(&mut old_space.free),
            next: old_space.next,
        };
        let mut old = old_space.into_rows().peekable();
        let mut added = added.into_iter().peekable();
        loop {
            let first_added = added.peek().map(|a| &a.0);
            let row = if let Some(row) = old.next_if(|o| first_added.is_none_or(|k| o.0 < *k)) {
                row
            } else if let Some((key, id)) = added.next() {
                (key.clone(), *id, false)
            } else {
                break;
            };
            merged.keys.push(row.0);
            merged.ids.push(row.1);
            merged.retired.push(row.2);
        }
        *self = merged;
    }

    /// Forget every retired key; their ids become free. Returns the released (key, id) pairs.
    pub fn release_retired(&mut self) -> Vec<(K, u32)> {
        let mut released = Vec::new();
        let mut kept = 0;
        for at in 0..self.keys.len() {
            if self.retired[at] {
                released.push((self.keys[at].clone(), self.ids[at]));
                self.free.insert(self.ids[at]);
            } else {
                self.keys.swap(kept, at);
                self.ids[kept] = self.ids[at];
                self.retired[kept] = false;
                kept += 1;
            }
        }
        self.keys.truncate(kept);
        self.ids.truncate(kept);
        self.retired.truncate(kept);
        released
    }
}

/// The three id spaces.
#[derive(Debug, Clone, Default)]
pub struct Allocator {
    /// SIM indices by IMSI.
    pub sims: Space<SimKey>,
    /// Segment ids by name.
    pub segments: Space<String>,
    /// Rule ids by [`rule_identity`].
    pub rules: Space<String>,
}

/// What [`Allocator::assign`] changed, per space.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// SIM rows.
    pub sims: SpaceChanges<SimKey>,
    /// Segment rows.
    pub segments: SpaceChanges<String>,
    /// Rule rows.
    pub rules: SpaceChanges<String>,
}

impl Allocator {
    /// Ids for `policy`: existing keys keep theirs, new ones get free ids, keys not in the
    /// policy are retired.
    ///
    /// # Errors
    /// [`IdError`] when a space is full (see the module docs on retired ids) or an IMSI is
    /// not digits; then nothing is changed.
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
        let imsis = policy.sims.iter().map(sim_key).collect::<Vec<SimKey>>();
        let names: Vec<&str> = policy.segments.iter().map(|s| s.name.as_str()).collect();
        let identities = rule_identities(policy);
        let (sims, sim_changes) = self
            .sims
            .plan::<SimKey, _>(Kind::Sim, MAX_SIMS_LIMIT, &imsis)?;
        let (segments, segment_changes) =
            self.segments
                .plan::<str, _>(Kind::Segment, MAX_SEGMENTS, &names)?;
        let (rules, rule_changes) = self
            .rules
            .plan::<str, _>(Kind::Rule, u32::MAX, &identities)?;
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
        fn released<K: Ord + Clone>(space: &mut Space<K>) -> SpaceChanges<K> {
            SpaceChanges {
                retired: space
                    .release_retired()
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect(),
                ..SpaceChanges::default()
            }
        }
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
    for (owner, rule) in policy.rules() {
        push(policy.owner_name(owner), rule);
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

    fn imsi(text: &str) -> SimKey {
        SimKey::parse(text).expect("a test IMSI")
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
        assert_eq!(changes.sims.retired, vec![imsi("001010000000001")]);
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
        assert_eq!(changes.sims.revived, vec![imsi("001010000000001")]);
    }

    #[test]
    fn imsi_keys_keep_leading_zeros_and_digit_counts() {
        let texts = [
            "001010000000001",
            "00101000000001",
            "01010000000001",
            "1010000000001",
            "999999999999999",
            "0",
        ];
        let keys: Vec<SimKey> = texts.iter().map(|t| imsi(t)).collect();
        for (text, key) in texts.iter().zip(&keys) {
            assert_eq!(key.to_string(), *text, "the text comes back");
            assert_eq!(SimKey::from_bits(key.to_bits()), Some(*key));
        }
        let distinct: BTreeSet<SimKey> = keys.iter().copied().collect();
        assert_eq!(
            distinct.len(),
            texts.len(),
            "one value, many texts, many keys"
        );
        assert!(imsi("001010000000001") < imsi("001010000000002"));
        assert!(
            imsi("99999999999999") < imsi("000000000000000"),
            "by digit count first"
        );
        for bad in ["", "1234567890123456", "00101000000000a", "+0101", " 1"] {
            assert_eq!(SimKey::parse(bad), None, "{bad:?}");
        }
        // 16 digits, and a 2-digit count holding a 3-digit value.
        assert_eq!(SimKey::from_bits(16 << 50), None);
        assert_eq!(SimKey::from_bits(2 << 50 | 100), None);
        assert_eq!(SimKey::from_bits(5), None, "no digit count");
    }

    #[test]
    fn sims_out_of_key_order_and_many_changes_keep_ids() {
        // Keys in an order unlike theirs, added, retired and revived in one go.
        let imsis = |n: &[u64]| -> Vec<SimKey> {
            n.iter()
                .map(|n| imsi(&format!("{:015}", n * 7919 % 1000)))
                .collect()
        };
        let mut space: Space<SimKey> = Space::default();
        let first = imsis(&(0..50).collect::<Vec<_>>());
        let (ids, changes) = space
            .plan::<SimKey, _>(Kind::Sim, 1000, &first)
            .expect("ids");
        space.apply(&changes);
        assert_eq!(ids, (0..50).collect::<Vec<u32>>());
        let second = imsis(&(25..75).rev().collect::<Vec<_>>());
        let (again, changes) = space
            .plan::<SimKey, _>(Kind::Sim, 1000, &second)
            .expect("ids");
        space.apply(&changes);
        assert_eq!(changes.added.len(), 25);
        assert_eq!(changes.retired.len(), 25);
        for (key, id) in second.iter().zip(&again) {
            assert_eq!(space.id(key), Some(*id));
        }
        assert_eq!(&again[25..], &(25..50).rev().collect::<Vec<u32>>()[..]);
        let (back, changes) = space
            .plan::<SimKey, _>(Kind::Sim, 1000, &first)
            .expect("ids");
        space.apply(&changes);
        assert_eq!(back, ids, "the first SIMs come back to their ids");
        assert_eq!(changes.revived.len(), 25);
        let rows: Vec<SimKey> = space.rows().map(|(k, _, _)| *k).collect();
        assert!(rows.is_sorted(), "the space stays in key order");
        assert_eq!(space.len(), 75);
    }

    #[test]
    fn fresh_ids_are_positions() {
        let ids = Ids::fresh(&policy(BASE));
        assert_eq!(ids.sims, vec![0, 1]);
        assert_eq!(ids.segments, vec![0, 1]);
        assert_eq!(ids.rules, vec![0, 1, 2]);
    }
}
