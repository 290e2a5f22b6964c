//! What the policy maps hold, generation by generation, as this process wrote (or read) them,
//! and the writes that take one generation to a new [`MapImage`]: a reload writes only what
//! differs, so a change to one SIM among a million writes a handful of entries.
//!
//! Pure: no map access. The loader reads [`Held`] from the maps once when it adopts pinned maps
//! of an earlier process, keeps it up to date as it writes, and turns a [`Plan`] into syscalls.
//!
//! Cost: the bindings are kept as a sorted vector (like a compiled image's SIMs, so a plan
//! merges two sorted lists, hashing no address) and each generation's SIM policies as a vector
//! by SIM index: 12 bytes per address and 5 per SIM and generation (about 25 MiB at a million
//! SIMs). A plan is linear in the policy, whatever it changes.

use std::collections::{BTreeMap, HashMap};

use enforcer_common::maps::{
    IPPROTO_UDP, MAX_SEGMENTS, NetEntry, PORT_WORDS, RuleEntry, RuleKey, SIM_NONE, SegmentEntry,
    SimBinding, SimEntry, SimKeyV4, SimKeyV6, SimPolicy,
};

use crate::compile::MapImage;

/// The contents of one generation's slots in every policy map.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Generation {
    /// `NET_V4` entries: (address, prefix length) → entry.
    pub nets_v4: HashMap<([u8; 4], u8), NetEntry>,
    /// `NET_V6` entries.
    pub nets_v6: HashMap<([u8; 16], u8), NetEntry>,
    /// `RULES_V2` and `PORT_RULES` entries (a key with `port_bits == 16` lives in `PORT_RULES`).
    pub rules: HashMap<RuleKey, RuleEntry>,
    /// `SEGMENTS` block, [`MAX_SEGMENTS`] entries.
    pub segments: Vec<SegmentEntry>,
    /// `PORTS_USED` block: TCP words, then UDP words.
    pub ports_used: Vec<u64>,
    /// SIM policy words (`SIMS`) by SIM index (`None`: no SIM of this generation's policy, value
    /// unknown); the whole vector is `None` when nothing is known, so every SIM of the next
    /// image is written.
    pub sim_policy: Option<Vec<Option<SimPolicy>>>,
}

impl Generation {
    /// A generation of fresh maps: nothing in the hashes and tries, zeroed arrays.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            segments: vec![SegmentEntry::default(); MAX_SEGMENTS as usize],
            ports_used: vec![0; 2 * PORT_WORDS as usize],
            sim_policy: Some(Vec::new()),
            ..Self::default()
        }
    }

    /// What `image` puts into a generation.
    #[must_use]
    pub fn of(image: &MapImage) -> Self {
        let mut segments = vec![SegmentEntry::default(); MAX_SEGMENTS as usize];
        for (slot, entry) in segments.iter_mut().zip(&image.segments) {
            *slot = *entry;
        }
        let mut ports_used = vec![0u64; 2 * PORT_WORDS as usize];
        for (key, _) in image.single_port_rules(true) {
            let udp = key.proto == IPPROTO_UDP;
            let word = usize::from(udp) * PORT_WORDS as usize + usize::from(key.port >> 6);
            ports_used[word] |= 1 << (key.port & 63);
        }
        let mut sim_policy = vec![None; image.sim_slots()];
        for e in image.sim_entries() {
            sim_policy[e.sim as usize] = Some(e.policy());
        }
        Self {
            nets_v4: image
                .nets_v4
                .iter()
                .map(|n| ((n.addr, n.prefix_len), n.entry))
                .collect(),
            nets_v6: image
                .nets_v6
                .iter()
                .map(|n| ((n.addr, n.prefix_len), n.entry))
                .collect(),
            rules: image.rules.iter().copied().collect(),
            segments,
            ports_used,
            sim_policy: Some(sim_policy),
        }
    }

    /// Entries of `RULES_V2` (`single` false) or `PORT_RULES` (true).
    #[must_use]
    pub fn rule_count(&self, single: bool) -> usize {
        self.rules
            .keys()
            .filter(|k| (k.port_bits == 16) == single)
            .count()
    }
}

/// Upserts and deletes for one map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Writes<K, V> {
    /// Entries to insert or replace.
    pub upserts: Vec<(K, V)>,
    /// Keys to delete.
    pub deletes: Vec<K>,
}

impl<K, V> Default for Writes<K, V> {
    fn default() -> Self {
        Self {
            upserts: Vec::new(),
            deletes: Vec::new(),
        }
    }
}

impl<K, V> Writes<K, V> {
    /// Syscall-level entries written (upserts plus deletes).
    #[must_use]
    pub fn len(&self) -> usize {
        self.upserts.len() + self.deletes.len()
    }

    /// Nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The entries of `new` that `old` lacks or holds with another value, and `old`'s keys that
/// `new` lacks.
fn diff_map<K: Copy + Eq + std::hash::Hash + Ord, V: Copy + PartialEq>(
    old: &HashMap<K, V>,
    new: &HashMap<K, V>,
) -> Writes<K, V> {
    let mut upserts: Vec<(K, V)> = new
        .iter()
        .filter(|(k, v)| old.get(k) != Some(v))
        .map(|(k, v)| (*k, *v))
        .collect();
    let mut deletes: Vec<K> = old
        .keys()
        .filter(|k| !new.contains_key(k))
        .copied()
        .collect();
    upserts.sort_unstable_by_key(|(k, _)| *k);
    deletes.sort_unstable();
    Writes { upserts, deletes }
}

/// Array slots of `new` that differ from `old`: (index, value).
fn diff_slots<V: Copy + PartialEq>(old: &[V], new: &[V]) -> Vec<(usize, V)> {
    new.iter()
        .enumerate()
        .filter(|(i, v)| old.get(*i) != Some(v))
        .map(|(i, v)| (i, *v))
        .collect()
}

/// Every write that takes the inactive generation from what it holds to a new image, and the
/// bindings to delete once the new generation is active.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// `NET_V4` of the target generation.
    pub nets_v4: Writes<([u8; 4], u8), NetEntry>,
    /// `NET_V6` of the target generation.
    pub nets_v6: Writes<([u8; 16], u8), NetEntry>,
    /// `RULES_V2` and `PORT_RULES` of the target generation.
    pub rules: Writes<RuleKey, RuleEntry>,
    /// `SEGMENTS` slots (segment id, entry) of the target generation.
    pub segments: Vec<(u16, SegmentEntry)>,
    /// `PORTS_USED` words (word of the TCP-then-UDP block, value) of the target generation.
    pub ports_used: Vec<(usize, u64)>,
    /// SIM policy words (SIM index, policy) of the target generation.
    pub sim_policy: Vec<(u32, SimPolicy)>,
    /// `SIM_V4_V2` bindings with their target slot set; the active slot is as it was.
    pub bindings_v4: Vec<(SimKeyV4, SimBinding)>,
    /// `SIM_V6_V2` bindings with their target slot set.
    pub bindings_v6: Vec<(SimKeyV6, SimBinding)>,
    /// `SIM_V4_V2` keys bound only in the old generation: deleted after the flip and the grace
    /// period.
    pub unbind_v4: Vec<SimKeyV4>,
    /// `SIM_V6_V2` keys bound only in the old generation.
    pub unbind_v6: Vec<SimKeyV6>,
    /// Addresses of the image that have no binding yet (IPv4, IPv6): the bindings maps grow
    /// by this much before the old generation's are deleted.
    pub new_bindings: (usize, usize),
    /// The new generation's contents, which the target holds once the plan is written.
    pub target: Generation,
    /// What changed against the active generation.
    pub summary: Summary,
}

/// How a reload changes the enforced policy, against the active generation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Summary {
    /// SIM indices in the new policy and not in the active one.
    pub sims_added: usize,
    /// SIM indices in the active policy and not in the new one.
    pub sims_removed: usize,
    /// SIM indices in both whose segment, flags, tiers or addresses changed.
    pub sims_changed: usize,
    /// Rule entries (`RULES_V2` and `PORT_RULES`) added, removed or changed against the active
    /// generation.
    pub rule_entries_changed: usize,
}

impl Plan {
    /// Map entries the plan writes before the flip (upserts and deletes).
    #[must_use]
    pub fn writes_before_flip(&self) -> usize {
        self.nets_v4.len()
            + self.nets_v6.len()
            + self.rules.len()
            + self.segments.len()
            + self.ports_used.len()
            + self.sim_policy.len()
            + self.bindings_v4.len()
            + self.bindings_v6.len()
    }
}

/// What the maps hold: both generations and every binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    /// Generation 0 and 1.
    pub generations: [Generation; 2],
    /// `SIM_V4_V2`, whole, sorted by key (as a compiled image's SIMs are, so a plan is one
    /// merge of two sorted lists, without hashing a million keys).
    pub bindings_v4: Vec<(SimKeyV4, SimBinding)>,
    /// `SIM_V6_V2`, whole, sorted by key.
    pub bindings_v6: Vec<(SimKeyV6, SimBinding)>,
    /// Run-time changes to `SIM_V4_V2` not yet folded into `bindings_v4`: key → what the map
    /// holds now (`None`: deleted). A run-time bind costs an insert here rather than a shift
    /// of a million-entry vector; [`Held::settle`] folds them in one merge (before every plan,
    /// and once enough accumulate: see [`PENDING_MAX`]).
    pub pending_v4: BTreeMap<SimKeyV4, Option<SimBinding>>,
    /// Run-time changes to `SIM_V6_V2` not yet folded into `bindings_v6`.
    pub pending_v6: BTreeMap<SimKeyV6, Option<SimBinding>>,
}

/// Run-time binding changes held apart before they are folded into the sorted vectors, at
/// least: the bound is this or an eighth of the bindings, whichever is larger, so that the
/// merge (a few milliseconds at a million bindings, a stall for the commands queued behind it)
/// comes once per that many changes and costs O(8) per change amortised.
pub const PENDING_MAX: usize = 4096;

/// Whether `pending` changes to `sorted` bindings are due to be folded in.
fn settle_due(pending: usize, sorted: usize) -> bool {
    pending >= PENDING_MAX.max(sorted / 8)
}

impl Held {
    /// Fresh maps.
    #[must_use]
    pub fn empty() -> Self {
        Self {
            generations: [Generation::empty(), Generation::empty()],
            bindings_v4: Vec::new(),
            bindings_v6: Vec::new(),
            pending_v4: BTreeMap::new(),
            pending_v6: BTreeMap::new(),
        }
    }

    /// What `SIM_V4_V2` holds at `key`.
    #[must_use]
    pub fn binding_v4(&self, key: SimKeyV4) -> Option<SimBinding> {
        lookup(&self.bindings_v4, &self.pending_v4, key)
    }

    /// What `SIM_V6_V2` holds at `key`.
    #[must_use]
    pub fn binding_v6(&self, key: SimKeyV6) -> Option<SimBinding> {
        lookup(&self.bindings_v6, &self.pending_v6, key)
    }

    /// Record that `SIM_V4_V2` now holds `binding` at `key` (`None`: the key was deleted).
    pub fn set_binding_v4(&mut self, key: SimKeyV4, binding: Option<SimBinding>) {
        self.pending_v4.insert(key, binding);
        if settle_due(self.pending_v4.len(), self.bindings_v4.len()) {
            settle(&mut self.bindings_v4, &mut self.pending_v4);
        }
    }

    /// Record that `SIM_V6_V2` now holds `binding` at `key` (`None`: the key was deleted).
    pub fn set_binding_v6(&mut self, key: SimKeyV6, binding: Option<SimBinding>) {
        self.pending_v6.insert(key, binding);
        if settle_due(self.pending_v6.len(), self.bindings_v6.len()) {
            settle(&mut self.bindings_v6, &mut self.pending_v6);
        }
    }

    /// Fold the run-time changes into the sorted vectors.
    pub fn settle(&mut self) {
        settle(&mut self.bindings_v4, &mut self.pending_v4);
        settle(&mut self.bindings_v6, &mut self.pending_v6);
    }

    /// The writes that make generation `target` hold `image` while the other one stays
    /// active. Call [`Held::settle`] first: run-time changes still pending are not seen.
    #[must_use]
    pub fn plan(&self, image: &MapImage, target: u8) -> Plan {
        debug_assert!(
            self.pending_v4.is_empty() && self.pending_v6.is_empty(),
            "plan before settle"
        );
        let active = target ^ 1;
        let new = Generation::of(image);
        let old = &self.generations[usize::from(target & 1)];
        let current = &self.generations[usize::from(active & 1)];

        let segments = diff_slots(&old.segments, &new.segments)
            .into_iter()
            .map(|(i, e)| (u16::try_from(i).unwrap_or(u16::MAX), e))
            .collect();
        let empty = Vec::new();
        let new_policy = new.sim_policy.as_ref().unwrap_or(&empty);
        let sim_policy: Vec<(u32, SimPolicy)> = new_policy
            .iter()
            .enumerate()
            .filter_map(|(sim, p)| {
                let p = (*p)?;
                let known = old
                    .sim_policy
                    .as_ref()
                    .and_then(|old| old.get(sim).copied().flatten());
                (known != Some(p)).then(|| (u32::try_from(sim).unwrap_or(u32::MAX), p))
            })
            .collect();

        // SIM indices whose addresses change between the active and the new policy.
        let mut moved = vec![false; new_policy.len()];
        let (bindings_v4, unbind_v4, new_v4) =
            plan_bindings(&self.bindings_v4, &image.sims_v4, target, &mut moved);
        let (bindings_v6, unbind_v6, new_v6) =
            plan_bindings(&self.bindings_v6, &image.sims_v6, target, &mut moved);

        let mut summary = Summary::default();
        if let Some(active) = &current.sim_policy {
            let slots = active.len().max(new_policy.len());
            for sim in 0..slots {
                let was = active.get(sim).copied().flatten();
                let now = new_policy.get(sim).copied().flatten();
                match (was, now) {
                    (None, Some(_)) => summary.sims_added += 1,
                    (Some(_), None) => summary.sims_removed += 1,
                    (Some(was), Some(now)) if was != now || moved.get(sim) == Some(&true) => {
                        summary.sims_changed += 1;
                    }
                    _ => {}
                }
            }
        } else {
            summary.sims_added = new_policy.iter().flatten().count();
        }
        summary.rule_entries_changed = diff_map(&current.rules, &new.rules).len();

        Plan {
            nets_v4: diff_map(&old.nets_v4, &new.nets_v4),
            nets_v6: diff_map(&old.nets_v6, &new.nets_v6),
            rules: diff_map(&old.rules, &new.rules),
            segments,
            ports_used: diff_slots(&old.ports_used, &new.ports_used),
            sim_policy,
            bindings_v4,
            bindings_v6,
            unbind_v4,
            unbind_v6,
            new_bindings: (new_v4, new_v6),
            target: new,
            summary,
        }
    }

    /// Record that `plan` was written to `target` (before the flip); takes the plan's new
    /// generation contents rather than copying them.
    pub fn written(&mut self, plan: &mut Plan, target: u8) {
        merge_into(&mut self.bindings_v4, &plan.bindings_v4);
        merge_into(&mut self.bindings_v6, &plan.bindings_v6);
        self.generations[usize::from(target & 1)] = std::mem::take(&mut plan.target);
    }

    /// Record that the bindings of `plan` bound only in the old generation were deleted.
    pub fn unbound(&mut self, plan: &Plan) {
        remove_sorted(&mut self.bindings_v4, &plan.unbind_v4);
        remove_sorted(&mut self.bindings_v6, &plan.unbind_v6);
    }
}

/// The binding at `key`: a pending change first, then the sorted vector.
fn lookup<K: Copy + Ord>(
    sorted: &[(K, SimBinding)],
    pending: &BTreeMap<K, Option<SimBinding>>,
    key: K,
) -> Option<SimBinding> {
    match pending.get(&key) {
        Some(change) => *change,
        None => sorted
            .binary_search_by(|(k, _)| k.cmp(&key))
            .ok()
            .map(|i| sorted[i].1),
    }
}

/// Fold `pending` into `sorted` (upserts and deletes) in one merge each, and empty it.
fn settle<K: Copy + Ord>(
    sorted: &mut Vec<(K, SimBinding)>,
    pending: &mut BTreeMap<K, Option<SimBinding>>,
) {
    if pending.is_empty() {
        return;
    }
    let changes = std::mem::take(pending);
    let upserts: Vec<(K, SimBinding)> = changes
        .iter()
        .filter_map(|(k, b)| b.map(|b| (*k, b)))
        .collect();
    let deletes: Vec<K> = changes
        .iter()
        .filter(|(_, b)| b.is_none())
        .map(|(k, _)| *k)
        .collect();
    merge_into(sorted, &upserts);
    remove_sorted(sorted, &deletes);
}

/// Upsert the sorted `updates` into the sorted `held`, in one merge.
fn merge_into<K: Copy + Ord>(held: &mut Vec<(K, SimBinding)>, updates: &[(K, SimBinding)]) {
    if updates.is_empty() {
        return;
    }
    let old = std::mem::take(held);
    held.reserve(old.len() + updates.len());
    let (mut a, mut b) = (old.into_iter().peekable(), updates.iter().peekable());
    loop {
        match (a.peek(), b.peek()) {
            (Some(x), Some(y)) if x.0 < y.0 => held.extend(a.next()),
            (Some(x), Some(y)) if x.0 == y.0 => {
                a.next();
                held.extend(b.next().copied());
            }
            (_, Some(_)) => held.extend(b.next().copied()),
            (Some(_), None) => held.extend(a.next()),
            (None, None) => break,
        }
    }
}

/// Remove the sorted `keys` from the sorted `held`.
fn remove_sorted<K: Copy + Ord>(held: &mut Vec<(K, SimBinding)>, keys: &[K]) {
    if keys.is_empty() {
        return;
    }
    let mut keys = keys.iter().peekable();
    held.retain(|(k, _)| {
        while keys.peek().is_some_and(|r| *r < k) {
            keys.next();
        }
        keys.peek() != Some(&k)
    });
}

/// Binding writes for one family, by merging the sorted `held` bindings with the sorted
/// `image`: every address of `image` whose `target` slot differs, and every held address the
/// image lacks (its target slot set to `SIM_NONE`, and listed for deletion after the flip).
/// SIM indices whose addresses change in the active generation's eyes are marked in `moved`.
/// Returns the upserts (sorted), the keys to unbind and how many image addresses are new.
fn plan_bindings<K: Copy + Ord>(
    held: &[(K, SimBinding)],
    image: &[(K, SimEntry)],
    target: u8,
    moved: &mut [bool],
) -> (Vec<(K, SimBinding)>, Vec<K>, usize) {
    use std::cmp::Ordering;
    let active = target ^ 1;
    let mut mark = |sim: u32| {
        if let Some(m) = moved.get_mut(sim as usize) {
            *m = true;
        }
    };
    let (mut upserts, mut unbind, mut new) = (Vec::new(), Vec::new(), 0);
    let (mut h, mut i) = (0, 0);
    while h < held.len() || i < image.len() {
        let order = match (held.get(h), image.get(i)) {
            (Some(x), Some(y)) => x.0.cmp(&y.0),
            (Some(_), None) => Ordering::Less,
            _ => Ordering::Greater,
        };
        match order {
            Ordering::Less => {
                // Held, not in the image: unbound in the target, deleted after the flip.
                let (key, current) = held[h];
                if current.of(target) != SIM_NONE {
                    upserts.push((key, current.with(target, SIM_NONE)));
                }
                mark(current.of(active));
                unbind.push(key);
                h += 1;
            }
            Ordering::Greater => {
                let (key, entry) = image[i];
                upserts.push((key, SimBinding::default().with(target, entry.sim)));
                mark(entry.sim);
                new += 1;
                i += 1;
            }
            Ordering::Equal => {
                let ((key, current), (_, entry)) = (held[h], image[i]);
                if current.of(target) != entry.sim {
                    upserts.push((key, current.with(target, entry.sim)));
                }
                let was = current.of(active);
                if was != entry.sim {
                    mark(entry.sim);
                    mark(was);
                }
                h += 1;
                i += 1;
            }
        }
    }
    (upserts, unbind, new)
}

#[cfg(test)]
mod tests {
    use enforcer_common::maps::{SIM_NONE, SimEntry};

    use super::Held;
    use crate::compile::MapImage;

    fn image(sims: &[([u8; 4], u32, u16)]) -> MapImage {
        let mut sims_v4: Vec<([u8; 4], SimEntry)> = sims
            .iter()
            .map(|&(addr, sim, segment)| {
                let entry = SimEntry {
                    sim,
                    segment,
                    ..SimEntry::default()
                };
                (addr, entry)
            })
            .collect();
        sims_v4.sort_unstable();
        MapImage {
            sims_v4,
            ..MapImage::default()
        }
    }

    /// Apply `image` to the generation after `active` as the loader would, without maps.
    fn apply(held: &mut Held, image: &MapImage, active: &mut u8) -> super::Plan {
        let target = *active ^ 1;
        let mut plan = held.plan(image, target);
        held.written(&mut plan, target);
        held.unbound(&plan);
        *active = target;
        plan
    }

    #[test]
    fn a_moved_address_is_rebound_in_the_target_only_and_the_old_one_deleted_after() {
        let mut held = Held::empty();
        let mut active = 0;
        let a = image(&[([10, 0, 0, 1], 0, 0), ([10, 0, 0, 2], 1, 0)]);
        apply(&mut held, &a, &mut active);
        apply(&mut held, &a, &mut active);
        // 10.0.0.2 moves to SIM 2; 10.0.0.1 leaves.
        let b = image(&[([10, 0, 0, 2], 2, 1)]);
        let target = active ^ 1;
        let plan = held.plan(&b, target);
        assert!(!plan.bindings_v4.is_empty());
        for (key, binding) in &plan.bindings_v4 {
            let was = held
                .bindings_v4
                .iter()
                .find(|(k, _)| k == key)
                .map_or(SIM_NONE, |(_, b)| b.of(active));
            assert_eq!(binding.of(active), was, "the active slot is never written");
        }
        assert_eq!(plan.unbind_v4, vec![[10, 0, 0, 1]]);
        assert_eq!(
            (
                plan.summary.sims_added,
                plan.summary.sims_removed,
                plan.summary.sims_changed
            ),
            (1, 2, 0)
        );
        apply(&mut held, &b, &mut active);
        assert_eq!(held.bindings_v4.len(), 1, "{:?}", held.bindings_v4);
        assert_eq!(held.bindings_v4[0].1.of(active), 2);
    }

    #[test]
    fn an_unchanged_image_plans_no_writes_once_both_generations_hold_it() {
        let mut held = Held::empty();
        let mut active = 0;
        let a = image(&[([10, 0, 0, 1], 0, 0), ([10, 0, 0, 3], 5, 2)]);
        let first = apply(&mut held, &a, &mut active);
        assert!(first.writes_before_flip() > 0);
        apply(&mut held, &a, &mut active);
        let third = apply(&mut held, &a, &mut active);
        assert_eq!(third.writes_before_flip(), 0, "{third:?}");
    }
}

#[cfg(test)]
mod pending_tests {
    use std::collections::BTreeMap;

    use enforcer_common::maps::SimBinding;

    use super::{Held, PENDING_MAX};

    fn binding(a: u32, b: u32) -> SimBinding {
        SimBinding { sim: [a, b] }
    }

    /// Run-time changes read back before and after they are folded in, in any order and past
    /// the fold threshold, equal a plain map of the same changes.
    #[test]
    fn pending_changes_read_and_settle_like_a_map() {
        let mut held = Held::empty();
        let mut model: BTreeMap<[u8; 4], SimBinding> = BTreeMap::new();
        for i in 0..1000u32 {
            let key = (i * 7).to_be_bytes();
            held.bindings_v4.push((key, binding(i, i)));
            model.insert(key, binding(i, i));
        }
        held.bindings_v4.sort_unstable();
        let mut state = 0x2545_f491_u32;
        for step in 0..(PENDING_MAX as u32 * 2 + 17) {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let key = (state % 9000).to_be_bytes();
            if state.is_multiple_of(3) {
                held.set_binding_v4(key, None);
                model.remove(&key);
            } else {
                held.set_binding_v4(key, Some(binding(step, u32::MAX)));
                model.insert(key, binding(step, u32::MAX));
            }
            if step.is_multiple_of(997) {
                for probe in [key, (state % 9000 + 1).to_be_bytes(), [0, 0, 0, 0]] {
                    assert_eq!(
                        held.binding_v4(probe),
                        model.get(&probe).copied(),
                        "{probe:?}"
                    );
                }
            }
        }
        assert!(
            held.pending_v4.len() < PENDING_MAX,
            "folded in at the threshold: {}",
            held.pending_v4.len()
        );
        held.settle();
        assert!(held.pending_v4.is_empty());
        let settled: Vec<([u8; 4], SimBinding)> = model.into_iter().collect();
        assert_eq!(
            held.bindings_v4, settled,
            "sorted, deletes gone, last change wins"
        );
    }
}
