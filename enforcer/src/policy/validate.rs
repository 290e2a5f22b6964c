//! Checks a [`RawPolicy`] and resolves it into a [`ValidatedPolicy`], collecting every error.

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    ops::Range,
    path::Path,
    str::FromStr,
};

use enforcer_common::maps::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, MAX_SEGMENTS, MAX_SIMS_LIMIT,
};
use ipnetwork::{IpNetwork, Ipv4Network, Ipv6Network};
use toml::Value;

use super::{
    Alerts, Dest, Iccid, ImeiLock, ImeiMismatch, Imsi, Msisdn, PolicyErrors, Rule, Segment, Sim,
    SimState, ValidatedPolicy,
    error::{Collector, SourceMap, clip},
    inventory,
    raw::{self, Field, RawRule},
    source::{LoadOptions, resolve_inventory},
};

/// Address families a destination can have, as bits.
const FAMILY_V4: u8 = 1;
const FAMILY_V6: u8 = 2;
const FAMILY_ANY: u8 = FAMILY_V4 | FAMILY_V6;

/// IPv6 prefixes that carry an IPv4 address in their last 32 bits: the NAT64 well-known prefix
/// (RFC 6052), through which a NAT64 gateway reaches the IPv4 address, and IPv4-mapped
/// addresses (RFC 4291), which dual-stack hosts use for IPv4 peers.
const EMBEDDING_PREFIXES: [(Ipv6Addr, &str); 2] = [
    (
        Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0),
        "the NAT64 well-known prefix 64:ff9b::/96",
    ),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0),
        "the IPv4-mapped prefix ::ffff:0:0/96",
    ),
];

/// Where a SIM was written, for "first at" in messages: bit 31 set for an inventory line, else
/// a byte offset of the policy text.
#[derive(Clone, Copy)]
struct Origin(u32);

impl Origin {
    const INVENTORY: u32 = 1 << 31;

    fn of(place: &Place) -> Self {
        match place {
            Place::Span(span) => {
                Self(u32::try_from(span.start).unwrap_or(u32::MAX) & !Self::INVENTORY)
            }
            Place::Line(line) => Self(u32::try_from(*line).unwrap_or(u32::MAX) | Self::INVENTORY),
        }
    }
}

/// Where a value stands: a byte span of the policy text, or a line of the inventory.
#[derive(Clone, Debug)]
pub(super) enum Place {
    Span(Range<usize>),
    Line(usize),
}

/// The fields of one SIM as text, wherever it was written.
pub(super) struct SimText<'a> {
    pub whole: Place,
    /// Fields that are present but not strings (already reported): not "missing".
    pub invalid: Vec<&'static str>,
    pub imsi: Option<(&'a str, Place)>,
    pub iccid: Option<(&'a str, Place)>,
    pub msisdn: Option<(&'a str, Place)>,
    pub ipv4: Option<(&'a str, Place)>,
    pub ipv6: Option<(&'a str, Place)>,
    pub segment: Option<(&'a str, Place)>,
    pub state: Option<(&'a str, Place)>,
    /// Only in `[[sims]]` entries (an inventory row has none).
    pub imei_lock: Option<(&'a str, Place)>,
    /// Only in `[[sims]]` entries: `enforce` or `audit`.
    pub mode: Option<(&'a str, Place)>,
}

/// Validation state for one policy file and its inventory.
pub(super) struct Checker<'a> {
    source: &'a SourceMap<'a>,
    pub errors: Collector,
    /// The inventory file's name, for errors at [`Place::Line`].
    pub inventory_file: String,
    pools: Vec<IpNetwork>,
    segment_ids: FastMap<String, u16>,
    /// Where each segment's name was written, by id.
    segment_places: Vec<usize>,
    /// IMSI → SIM index, for SIMs checked one by one.
    imsis: FastMap<Imsi, u32>,
    /// (IMSI bits, SIM index) of an inventory taken whole by [`Checker::take_inventory`],
    /// sorted.
    inventory_imsis: Vec<(u64, u32)>,
    /// SIMs checked so far, valid or not: the next SIM's index.
    pub sims_seen: usize,
    /// Where each SIM was written, by index.
    sim_origins: Vec<Origin>,
    /// Address families of each SIM, by index ([`FAMILY_V4`], [`FAMILY_V6`]).
    sim_families: Vec<u8>,
    /// `imei_lock` of `[[sims]]` entries, by IMSI.
    imei_locks: std::collections::HashMap<String, ImeiLock>,
    /// APNs listed by segments so far.
    apns_seen: std::collections::HashSet<String>,
    /// Address families of the SIMs of each segment, by id.
    segment_families: Vec<u8>,
    /// IPv4 address → SIM index.
    ipv4s: FastMap<u32, u32>,
    /// The upper 64 bits of an IPv6 /64 → SIM index.
    ipv6s: FastMap<u64, u32>,
    iccids: FastMap<u64, u32>,
    msisdns: FastMap<u64, u32>,
}

/// The maps keyed by SIM identifiers and addresses. foldhash rather than SipHash: a million
/// inserts of small fixed-size keys cost a third of the time, and the keys come from the
/// operator's own files, so resistance to crafted collisions is not needed.
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// SIM identifiers that must be unique besides the IMSI.
#[derive(Clone, Copy)]
enum Identifier {
    Iccid,
    Msisdn,
}

pub(super) fn validate(
    path: &Path,
    text: &str,
    options: &LoadOptions,
) -> Result<ValidatedPolicy, PolicyErrors> {
    // A UTF-8 byte order mark is not part of the first line: without it, columns count right.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let source = SourceMap::new(path, text);
    let raw = raw::parse(&source, text).map_err(|error| PolicyErrors(vec![error]))?;
    let mut errors = Collector::default();
    for error in raw::unknown_keys(&source, text) {
        errors.push("unknown key", error);
    }
    let mut checker = Checker {
        source: &source,
        errors,
        inventory_file: String::new(),
        pools: Vec::new(),
        segment_ids: FastMap::default(),
        segment_places: Vec::new(),
        imsis: FastMap::default(),
        inventory_imsis: Vec::new(),
        sims_seen: 0,
        sim_origins: Vec::new(),
        sim_families: Vec::new(),
        segment_families: Vec::new(),
        ipv4s: FastMap::default(),
        ipv6s: FastMap::default(),
        iccids: FastMap::default(),
        msisdns: FastMap::default(),
        imei_locks: std::collections::HashMap::new(),
        apns_seen: std::collections::HashSet::new(),
    };

    checker.pools(&raw.pools);
    let imei_mismatch = match raw.imei_mismatch.as_ref() {
        None => ImeiMismatch::Drop,
        Some(field) => match checker.string(field, "imei_mismatch") {
            Some("drop") | None => ImeiMismatch::Drop,
            Some("quarantine") => ImeiMismatch::Quarantine,
            Some(other) => {
                let message = format!(
                    "`imei_mismatch` is `drop` (the default) or `quarantine`, not `{}`",
                    clip(other)
                );
                checker.error(
                    &Place::Span(field.span()),
                    "an unknown IMEI mismatch action",
                    message,
                );
                ImeiMismatch::Drop
            }
        },
    };
    let core_sources = checker.core_sources(&raw.core_sources);
    let admit_unknown = match raw.unknown_imsi.as_ref() {
        None => false,
        Some(field) => match checker.string(field, "unknown_imsi") {
            Some("refuse") | None => false,
            Some("admit") => true,
            Some(other) => {
                let message = format!(
                    "`unknown_imsi` is `refuse` (the default) or `admit`, not `{}`",
                    clip(other)
                );
                checker.error(
                    &Place::Span(field.span()),
                    "an unknown unknown_imsi action",
                    message,
                );
                false
            }
        },
    };
    let mut segments: Vec<Segment> = raw
        .segments
        .iter()
        .map(|segment| checker.segment_header(segment))
        .collect();
    if segments.len() > MAX_SEGMENTS as usize {
        let place = Place::Span(raw.segments[MAX_SEGMENTS as usize].span());
        checker.error(
            &place,
            "too many segments",
            format!("more than {MAX_SEGMENTS} segments; merge segments that share rules"),
        );
    }

    // Only valid SIMs are kept (one vector, no second copy at a million SIMs); a policy with an
    // invalid one fails anyway. `policy_sims` maps each `[[sims]]` entry to its place in `sims`.
    let mut sims: Vec<Sim> = Vec::with_capacity(raw.sims.len());
    let mut policy_sims: Vec<Option<usize>> = Vec::with_capacity(raw.sims.len());
    for sim in &raw.sims {
        let inner = sim.get_ref();
        if checker.datetime_instead_of(&inner.datetime, &Place::Span(sim.span()), "a SIM") {
            policy_sims.push(None);
            continue;
        }
        let invalid = [
            ("imsi", &inner.imsi),
            ("ipv4", &inner.ipv4),
            ("ipv6", &inner.ipv6),
            ("segment", &inner.segment),
        ]
        .into_iter()
        .filter(|(_, f)| f.as_ref().is_some_and(|f| !f.get_ref().is_str()))
        .map(|(name, _)| name)
        .collect();
        let text = SimText {
            whole: Place::Span(sim.span()),
            invalid,
            imsi: field(&inner.imsi, "imsi", &mut checker),
            iccid: field(&inner.iccid, "iccid", &mut checker),
            msisdn: field(&inner.msisdn, "msisdn", &mut checker),
            ipv4: field(&inner.ipv4, "ipv4", &mut checker),
            ipv6: field(&inner.ipv6, "ipv6", &mut checker),
            segment: field(&inner.segment, "segment", &mut checker),
            state: field(&inner.state, "state", &mut checker),
            imei_lock: field(&inner.imei_lock, "imei_lock", &mut checker),
            mode: field(&inner.mode, "mode", &mut checker),
        };
        let checked = checker.sim(&text);
        policy_sims.push(checked.as_ref().map(|_| sims.len()));
        sims.extend(checked);
    }
    if let Some(inventory) = &raw.inventory
        && let Some(name) = checker.string(inventory, "inventory")
    {
        let place = Place::Span(inventory.span());
        match resolve_inventory(path, name, options) {
            Ok(inventory_path) => inventory::read(
                &mut checker,
                &inventory_path,
                options.max_file_bytes,
                &place,
                &mut sims,
            ),
            Err(error) => checker.error(&place, "inventory path", error.to_string()),
        }
    }
    if checker.sims_seen > MAX_SIMS_LIMIT as usize {
        let place = Place::Span(0..0);
        checker.error(
            &place,
            "too many SIMs",
            format!("more than {MAX_SIMS_LIMIT} SIMs; split the fleet"),
        );
    }

    // Rules last: they may name any segment or SIM. A SIM that failed its checks still has its
    // rules checked, so that every error is reported.
    for (segment, raw_segment) in segments.iter_mut().zip(&raw.segments) {
        segment.rules = checker.rules(&raw_segment.get_ref().rules);
        segment.inbound = raw_segment
            .get_ref()
            .inbound
            .iter()
            .filter_map(|rule| checker.inbound_rule(rule))
            .collect();
    }
    for (place, raw_sim) in policy_sims.iter().zip(&raw.sims) {
        let rules = checker.rules(&raw_sim.get_ref().rules);
        if let Some(sim) = place.and_then(|i| sims.get_mut(i)) {
            sim.set_rules(rules);
        }
    }

    if checker.errors.is_empty() {
        // The csv crate's path grows `sims` by doubling; the policy keeps no slack.
        sims.shrink_to_fit();
        Ok(ValidatedPolicy {
            path: path.to_owned(),
            pools: checker.pools,
            core_sources,
            segments,
            sims,
            imei_locks: checker.imei_locks,
            imei_mismatch,
            admit_unknown,
        })
    } else {
        Err(PolicyErrors(checker.errors.finish(source.file())))
    }
}

impl<'a> Checker<'a> {
    /// Report an error of `kind` (a phrase for the summary of a kind past the cap) at `place`:
    /// a span of the policy or a line of the inventory.
    pub(super) fn error(&mut self, place: &Place, kind: &'static str, message: impl Into<String>) {
        let error = match place {
            Place::Span(span) => self.source.error(span, message),
            Place::Line(line) => {
                let mut error = self.source.error_at_line(*line, message);
                error.file.clone_from(&self.inventory_file);
                error
            }
        };
        self.errors.push(kind, error);
    }

    /// The index of the SIM with IMSI `imsi`, if there is one.
    fn sim_index(&self, imsi: Imsi) -> Option<u32> {
        self.imsis.get(&imsi).copied().or_else(|| {
            let found = self
                .inventory_imsis
                .binary_search_by_key(&imsi.to_bits(), |(bits, _)| *bits);
            found.ok().map(|at| self.inventory_imsis[at].1)
        })
    }

    /// What [`QuickCheck`] needs of the checker, to share between threads.
    pub(super) fn quick_check(&self) -> QuickCheck<'_> {
        QuickCheck {
            pools: &self.pools,
            segment_ids: &self.segment_ids,
        }
    }

    /// Take the SIMs of an inventory whose rows each passed [`QuickCheck::sim`] (row `i` on
    /// line `i + 2`), appending them to `sims`, if no identifier or address repeats among
    /// them or with an earlier SIM. Sorting finds repeats with far fewer cache misses than a
    /// million map inserts. Changes nothing and returns the rows if one repeats: then the
    /// rows are checked one by one, which reports each repeat where [`Checker::sim`] would.
    pub(super) fn take_inventory(
        &mut self,
        rows: Vec<Sim>,
        sims: &mut Vec<Sim>,
    ) -> Result<(), Vec<Sim>> {
        fn repeats<K: Ord + Copy>(keys: &mut [K], earlier: impl Fn(K) -> bool) -> bool {
            keys.sort_unstable();
            keys.windows(2).any(|pair| pair[0] == pair[1]) || keys.iter().any(|k| earlier(*k))
        }
        let base = u32::try_from(self.sims_seen).unwrap_or(u32::MAX);
        let mut imsis: Vec<(u64, u32)> = rows
            .iter()
            .zip(base..)
            .map(|(sim, index)| (sim.imsi.to_bits(), index))
            .collect();
        imsis.sort_unstable();
        let mut ipv4s: Vec<u32> = rows.iter().filter_map(Sim::ipv4).map(u32::from).collect();
        let mut ipv6s: Vec<u64> = rows
            .iter()
            .filter_map(Sim::ipv6)
            .map(|net| (u128::from(net.network()) >> 64) as u64)
            .collect();
        let mut iccids: Vec<u64> = rows
            .iter()
            .filter_map(Sim::iccid)
            .map(Iccid::to_bits)
            .collect();
        let mut msisdns: Vec<u64> = rows
            .iter()
            .filter_map(Sim::msisdn)
            .map(|m| u64::from(m.len()) << 56 | m.value())
            .collect();
        let (imsi_map, ipv4_map, ipv6_map) = (&self.imsis, &self.ipv4s, &self.ipv6s);
        let (iccid_map, msisdn_map) = (&self.iccids, &self.msisdns);
        let repeated = imsis.windows(2).any(|pair| pair[0].0 == pair[1].0)
            || (!imsi_map.is_empty() && rows.iter().any(|sim| imsi_map.contains_key(&sim.imsi)))
            || repeats(&mut ipv4s, |k| ipv4_map.contains_key(&k))
            || repeats(&mut ipv6s, |k| ipv6_map.contains_key(&k))
            || repeats(&mut iccids, |k| iccid_map.contains_key(&k))
            || repeats(&mut msisdns, |k| msisdn_map.contains_key(&k));
        if repeated {
            return Err(rows);
        }
        self.sim_origins
            .extend((0..rows.len()).map(|i| Origin::of(&Place::Line(i + 2))));
        self.sim_families.reserve(rows.len());
        for sim in &rows {
            let families = if sim.ipv4().is_some() { FAMILY_V4 } else { 0 }
                | if sim.ipv6().is_some() { FAMILY_V6 } else { 0 };
            self.sim_families.push(families);
            if let Some(f) = self.segment_families.get_mut(usize::from(sim.segment)) {
                *f |= families;
            }
        }
        self.sims_seen += rows.len();
        self.inventory_imsis = imsis;
        if sims.is_empty() {
            *sims = rows;
        } else {
            sims.reserve_exact(rows.len());
            sims.extend(rows);
        }
        Ok(())
    }

    /// Make room for `sims` more SIMs, so that a large inventory fills its maps without
    /// rehashing.
    pub(super) fn reserve(&mut self, sims: usize) {
        self.imsis.reserve(sims);
        self.ipv4s.reserve(sims);
        self.ipv6s.reserve(sims);
        self.sim_origins.reserve(sims);
        self.sim_families.reserve(sims);
    }

    /// `file:line` (inventory) or `file:line:column` (policy) of a SIM, for "first at".
    fn sim_origin(&self, index: u32) -> String {
        match self.sim_origins.get(index as usize) {
            Some(Origin(at)) if at & Origin::INVENTORY != 0 => {
                format!("{}:{}", self.inventory_file, at & !Origin::INVENTORY)
            }
            Some(Origin(at)) => {
                let e = self.source.error(&(*at as usize..*at as usize), "");
                format!("{}:{}:{}", e.file, e.line, e.column)
            }
            None => "an earlier SIM".to_owned(),
        }
    }

    fn string<'f>(&mut self, field: &'f Field, what: &str) -> Option<&'f str> {
        match field.get_ref() {
            Value::String(s) => Some(s.as_str()),
            other => {
                let place = Place::Span(field.span());
                self.error(
                    &place,
                    "a value of the wrong type",
                    format!(
                        "`{what}` must be a string, found {} `{}`; put it in quotes",
                        type_name(other),
                        shown(other)
                    ),
                );
                None
            }
        }
    }

    fn pools(&mut self, fields: &[Field]) {
        for field in fields {
            let Some((net, place)) = self.cidr_entry(field, "pools", "pool") else {
                continue;
            };
            if net.prefix() == 0 {
                self.error(
                    &place,
                    "a pool of every address",
                    format!(
                        "pool `{net}` holds every address: every packet from outside the pools \
                         (service replies, management) would count as spoofed; list the SIM \
                         address pools of the packet core"
                    ),
                );
                continue;
            }
            if let IpNetwork::V6(v6) = net
                && v6.prefix() > 64
            {
                self.error(
                    &place,
                    "an IPv6 pool longer than /64",
                    format!(
                        "IPv6 pool `{net}` is longer than /64: a SIM's IPv6 is a whole /64, so \
                         none fits in it; give the pool as /64 or shorter"
                    ),
                );
                continue;
            }
            if let Some(index) = self.pools.iter().position(|p| overlaps(p, &net)) {
                let other = self.pools[index];
                let first = fields
                    .iter()
                    .find(|f| {
                        f.get_ref()
                            .as_str()
                            .is_some_and(|t| IpNetwork::from_str(t) == Ok(other))
                    })
                    .map(|f| self.source.error(&f.span(), ""))
                    .map(|e| format!(" (at {}:{}:{})", e.file, e.line, e.column))
                    .unwrap_or_default();
                self.error(
                    &place,
                    "overlapping pools",
                    format!("pool {net} overlaps pool {other}{first}; declare each address once"),
                );
                continue;
            }
            self.pools.push(net);
        }
        if fields.is_empty() {
            self.error(
                &Place::Span(0..0),
                "no pools",
                "no `pools` declared; add `pools = [\"10.64.0.0/16\"]` with the SIM address pools",
            );
        }
    }

    /// One entry of the CIDR list `key` (`what` names one in errors): the network and where
    /// it was written, or `None` with the error recorded.
    fn cidr_entry(&mut self, field: &Field, key: &str, what: &str) -> Option<(IpNetwork, Place)> {
        let text = self.string(field, key)?;
        let place = Place::Span(field.span());
        let net = self.network(text, &place, what)?;
        Some((net, place))
    }

    /// `core_sources`: CIDRs outside every pool, none of every address.
    fn core_sources(&mut self, fields: &[Field]) -> Vec<IpNetwork> {
        let mut out: Vec<IpNetwork> = Vec::new();
        for field in fields {
            let Some((net, place)) = self.cidr_entry(field, "core_sources", "core source") else {
                continue;
            };
            if net.prefix() == 0 {
                self.error(
                    &place,
                    "a core source of every address",
                    format!(
                        "core source `{net}` holds every address: a core interface would take \
                         any source, spoofed ones too; list the packet core's own prefixes, or \
                         attach the interface without the core role"
                    ),
                );
                continue;
            }
            if let Some(pool) = self.pools.iter().find(|p| overlaps(p, &net)).copied() {
                self.error(
                    &place,
                    "a core source inside a pool",
                    format!(
                        "core source {net} overlaps pool {pool}: pool addresses belong to SIMs \
                         and are judged as theirs; list only addresses outside the pools"
                    ),
                );
                continue;
            }
            if !out.contains(&net) {
                out.push(net);
            }
        }
        out
    }

    /// Parse `text` as a CIDR (or a bare address, a host route) without host bits.
    fn network(&mut self, text: &str, place: &Place, what: &str) -> Option<IpNetwork> {
        let net = match IpNetwork::from_str(text) {
            Ok(net) => net,
            Err(_) => {
                self.error(
                    place,
                    "an invalid CIDR",
                    format!(
                        "`{}` is not a valid {what} CIDR; write it like 10.64.0.0/16 or \
                         2001:db8::/48",
                        clip(text)
                    ),
                );
                return None;
            }
        };
        if net.network() != net.ip() {
            self.error(
                place,
                "a CIDR with host bits",
                format!(
                    "{what} `{text}` has host bits set; write {}/{}",
                    net.network(),
                    net.prefix()
                ),
            );
            return None;
        }
        Some(net)
    }

    fn segment_header(&mut self, segment: &toml::Spanned<raw::RawSegment>) -> Segment {
        let raw = segment.get_ref();
        let place = Place::Span(segment.span());
        if self.datetime_instead_of(&raw.datetime, &place, "a segment") {
            return Segment {
                name: String::new(),
                description: String::new(),
                rules: Vec::new(),
                inbound: Vec::new(),
                alerts: Alerts::default(),
                audit: false,
                imei_lock: None,
                apns: Vec::new(),
            };
        }
        let mut name = String::new();
        match &raw.name {
            None => self.error(
                &Place::Span(segment.span()),
                "a segment without a name",
                "segment without `name`; add `name = \"…\"`",
            ),
            Some(field) => {
                if let Some(text) = self.string(field, "name") {
                    let place = Place::Span(field.span());
                    if !valid_name(text) {
                        self.error(
                            &place,
                            "an invalid segment name",
                            format!(
                                "segment name `{}` may use only letters, digits, `-`, `_` \
                                 and `.`",
                                clip(text)
                            ),
                        );
                    } else if text.starts_with("imsi:")
                        || text.starts_with("segment:")
                        || IpNetwork::from_str(text).is_ok()
                    {
                        self.error(
                            &place,
                            "a segment name like a destination",
                            format!("segment name `{text}` looks like a CIDR or a prefixed name"),
                        );
                    } else if let Some(&id) = self.segment_ids.get(text) {
                        let first = self
                            .segment_places
                            .get(usize::from(id))
                            .copied()
                            .unwrap_or(0);
                        let e = self.source.error(&(first..first), "");
                        self.error(
                            &place,
                            "a segment declared twice",
                            format!(
                                "segment `{}` is declared twice (first at {}:{}:{}); rename one",
                                clip(text),
                                e.file,
                                e.line,
                                e.column
                            ),
                        );
                    } else {
                        let id = u16::try_from(self.segment_ids.len()).unwrap_or(u16::MAX);
                        self.segment_ids.insert(text.to_owned(), id);
                        self.segment_places.push(field.span().start);
                        self.segment_families.push(0);
                    }
                    name = text.to_owned();
                }
            }
        }
        let description = raw
            .description
            .as_ref()
            .and_then(|f| self.string(f, "description"))
            .unwrap_or_default()
            .to_owned();
        let alerts = raw
            .alerts
            .as_ref()
            .map(|a| self.alerts(a.get_ref()))
            .unwrap_or_default();
        let audit = match raw.mode.as_ref() {
            None => false,
            Some(field) => match self.string(field, "mode") {
                Some("audit") => true,
                Some("enforce") | None => false,
                Some(other) => {
                    let place = Place::Span(field.span());
                    self.error(
                        &place,
                        "an unknown mode",
                        format!(
                            "`mode` is `enforce` (the default) or `audit`, not `{}`",
                            clip(other)
                        ),
                    );
                    false
                }
            },
        };
        let imei_lock = raw.imei_lock.as_ref().and_then(|field| {
            let text = self.string(field, "imei_lock")?;
            match ImeiLock::parse(text) {
                Ok(lock @ (ImeiLock::Learn | ImeiLock::Tac(_))) => Some(lock),
                Ok(_) => {
                    self.error(
                        &Place::Span(field.span()),
                        "an IMEI lock a segment cannot have",
                        "a segment's `imei_lock` is `learn` or `tac:` and 8 digits; lock a \
                         single IMEI on its SIM",
                    );
                    None
                }
                Err(message) => {
                    self.error(&Place::Span(field.span()), "an invalid IMEI lock", message);
                    None
                }
            }
        });
        let apns = raw
            .apns
            .as_ref()
            .map(|field| self.apns(field))
            .unwrap_or_default();
        Segment {
            name,
            description,
            rules: Vec::new(),
            inbound: Vec::new(),
            alerts,
            audit,
            imei_lock,
            apns,
        }
    }

    /// A segment's `apns`: APN network identifiers (3GPP TS 23.003 §9.1: dot-separated labels
    /// of letters, digits and hyphens, at most 100 characters), each in one segment only.
    fn apns(&mut self, field: &Field) -> Vec<String> {
        let place = Place::Span(field.span());
        let Value::Array(items) = field.get_ref() else {
            self.error(
                &place,
                "a value of the wrong type",
                "`apns` is a list of APN names, e.g. [\"meters.example\"]",
            );
            return Vec::new();
        };
        let mut out = Vec::new();
        for item in items {
            let Value::String(text) = item else {
                self.error(
                    &place,
                    "a value of the wrong type",
                    "an APN must be a string",
                );
                continue;
            };
            let apn = crate::policy::apn_network_id(text);
            let label_ok = |l: &str| {
                !l.is_empty()
                    && l.len() <= 63
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                    && !l.starts_with('-')
                    && !l.ends_with('-')
            };
            if apn.is_empty() || apn.len() > 100 || !apn.split('.').all(label_ok) {
                self.error(
                    &place,
                    "an invalid APN",
                    format!(
                        "`{}` is no APN: give dot-separated labels of letters, digits and \
                         hyphens (3GPP TS 23.003 §9.1), e.g. meters.example",
                        clip(text)
                    ),
                );
                continue;
            }
            if self.apns_seen.contains(&apn) {
                self.error(
                    &place,
                    "an APN in two segments",
                    format!("APN `{apn}` is listed by another segment too; give it to one"),
                );
                continue;
            }
            self.apns_seen.insert(apn.clone());
            out.push(apn);
        }
        out
    }

    /// A segment's `alerts`: each threshold a whole number in its range.
    fn alerts(&mut self, raw: &raw::RawAlerts) -> Alerts {
        let mut number = |field: &Option<Field>, what: &str, max: i64, unit: &str| {
            let field = field.as_ref()?;
            match field.get_ref() {
                Value::Integer(n) if (1..=max).contains(n) => u32::try_from(*n).ok(),
                other => {
                    let place = Place::Span(field.span());
                    self.error(
                        &place,
                        "a value out of range",
                        format!(
                            "`alerts.{what}` must be a whole number of {unit} from 1 to {max}, \
                             found `{}`",
                            shown(other)
                        ),
                    );
                    None
                }
            }
        };
        Alerts {
            deny_rate: number(&raw.deny_rate, "deny_rate", 1_000_000, "packets a second"),
            learn_destinations: number(
                &raw.learn_destinations,
                "learn_destinations",
                31_536_000,
                "seconds",
            ),
            burst: number(&raw.burst, "burst", 1000, "times the moving average"),
        }
    }

    /// Check one SIM; its index is its position among all SIMs read so far.
    pub(super) fn sim(&mut self, text: &SimText<'_>) -> Option<Sim> {
        let index = u32::try_from(self.sims_seen).unwrap_or(u32::MAX);
        self.sims_seen += 1;
        self.sim_origins.push(Origin::of(&text.whole));
        let errors_before = self.errors.len();
        let imsi = match &text.imsi {
            None if text.invalid.contains(&"imsi") => None,
            None => {
                self.error(
                    &text.whole,
                    "a SIM without an IMSI",
                    "SIM without `imsi`; every SIM needs its IMSI",
                );
                None
            }
            Some((imsi, place)) => match Imsi::parse(imsi) {
                None => {
                    self.error(
                        place,
                        "an IMSI of the wrong shape",
                        format!(
                            "IMSI `{}` must be 14 or 15 digits (MCC, MNC, MSIN)",
                            clip(imsi)
                        ),
                    );
                    None
                }
                // One probe: the entry keeps the first SIM's index.
                Some(key) => match *self.imsis.entry(key).or_insert(index) {
                    first if first != index => {
                        let first = self.sim_origin(first);
                        self.error(
                            place,
                            "an IMSI listed twice",
                            format!(
                                "IMSI `{imsi}` is listed twice (first at {first}); keep one entry"
                            ),
                        );
                        None
                    }
                    _ => Some(key),
                },
            },
        };
        let mut iccid = None;
        if let Some((text, place)) = &text.iccid {
            iccid = Iccid::parse(text);
            match iccid {
                None => self.error(
                    place,
                    "an ICCID of the wrong shape",
                    format!(
                        "ICCID `{}` must be 19 or 20 digits starting with 89 (ITU-T E.118)",
                        clip(text)
                    ),
                ),
                // Each ICCID has its own packed value: 19 and 20 digits stay apart.
                Some(key) => self.unique(place, Identifier::Iccid, text, key.to_bits(), index),
            }
        }
        let mut msisdn = None;
        if let Some((text, place)) = &text.msisdn {
            msisdn = Msisdn::parse(text);
            match msisdn {
                None => self.error(
                    place,
                    "an MSISDN of the wrong shape",
                    format!(
                        "MSISDN `{}` must be 8 to 15 digits, optionally after `+` (E.164)",
                        clip(text)
                    ),
                ),
                // `+4915…` and `4915…` are the same number.
                Some(key) => self.unique(
                    place,
                    Identifier::Msisdn,
                    text,
                    u64::from(key.len()) << 56 | key.value(),
                    index,
                ),
            }
        }
        let ipv4 = text
            .ipv4
            .as_ref()
            .and_then(|(addr, place)| self.sim_ipv4(addr, place, index));
        let ipv6 = text
            .ipv6
            .as_ref()
            .and_then(|(net, place)| self.sim_ipv6(net, place, index));
        // A SIM without an address is valid: the packet core gives it one per data session
        // (RADIUS accounting, `sim bind`); until then nothing it sends matches it.
        let families = if text.ipv4.is_some() { FAMILY_V4 } else { 0 }
            | if text.ipv6.is_some() { FAMILY_V6 } else { 0 };
        self.sim_families.push(families);
        let segment = match &text.segment {
            None if text.invalid.contains(&"segment") => None,
            None => {
                self.error(
                    &text.whole,
                    "a SIM without a segment",
                    "SIM without `segment`; name the segment it belongs to",
                );
                None
            }
            Some((name, place)) => {
                let id = self.segment_ids.get(*name).copied();
                match id {
                    Some(id) => {
                        if let Some(f) = self.segment_families.get_mut(usize::from(id)) {
                            *f |= families;
                        }
                    }
                    None => self.error(
                        place,
                        "unknown segment",
                        format!(
                            "unknown segment `{}`; declare it under [[segments]]",
                            clip(name)
                        ),
                    ),
                }
                id
            }
        };
        let state = match &text.state {
            None => Some(SimState::Active),
            Some((state, place)) => match *state {
                "active" => Some(SimState::Active),
                "quarantined" => Some(SimState::Quarantined),
                other => {
                    self.error(
                        place,
                        "unknown state",
                        format!(
                            "unknown state `{}`; use `active` or `quarantined`",
                            clip(other)
                        ),
                    );
                    None
                }
            },
        };
        let audit = match &text.mode {
            None => false,
            Some((mode, place)) => match *mode {
                "audit" => true,
                "enforce" => false,
                other => {
                    self.error(
                        place,
                        "an unknown mode",
                        format!(
                            "`mode` is `enforce` (the default) or `audit`, not `{}`",
                            clip(other)
                        ),
                    );
                    false
                }
            },
        };
        let imei_lock = match &text.imei_lock {
            None => None,
            Some((lock, place)) => match ImeiLock::parse(lock) {
                Ok(lock) => Some(lock),
                Err(message) => {
                    self.error(place, "an invalid IMEI lock", message);
                    None
                }
            },
        };
        if self.errors.len() != errors_before {
            return None;
        }
        if let (Some(lock), Some(imsi)) = (imei_lock, imsi.as_ref()) {
            self.imei_locks.insert(imsi.to_string(), lock);
        }
        let mut sim = assemble(Sim::new(imsi?, segment?, state?), ipv4, ipv6, iccid, msisdn);
        sim.set_audit(audit);
        Some(sim)
    }

    /// Record `key` (an ICCID or MSISDN of SIM `index`) or report that an earlier SIM has it.
    fn unique(&mut self, place: &Place, id: Identifier, text: &str, key: u64, index: u32) {
        let table = match id {
            Identifier::Iccid => &mut self.iccids,
            Identifier::Msisdn => &mut self.msisdns,
        };
        let first = *table.entry(key).or_insert(index);
        if first == index {
            return;
        }
        let (kind, what) = match id {
            Identifier::Iccid => ("an ICCID on two SIMs", "ICCID"),
            Identifier::Msisdn => ("an MSISDN on two SIMs", "MSISDN"),
        };
        let first = self.sim_origin(first);
        self.error(
            place,
            kind,
            format!(
                "{what} `{text}` is given to two SIMs (first at {first}); each SIM has its own"
            ),
        );
    }

    fn sim_ipv4(&mut self, text: &str, place: &Place, index: u32) -> Option<Ipv4Addr> {
        let Ok(addr) = Ipv4Addr::from_str(text) else {
            self.error(
                place,
                "an invalid IPv4 address",
                format!(
                    "`{}` is not an IPv4 address; write it like 10.64.0.1",
                    clip(text)
                ),
            );
            return None;
        };
        if !self
            .pools
            .iter()
            .any(|pool| pool.contains(IpAddr::V4(addr)))
        {
            self.error(
                place,
                "an address outside every pool",
                format!("{addr} is outside every pool; add its pool to `pools` or fix the address"),
            );
            return None;
        }
        let first = *self.ipv4s.entry(u32::from(addr)).or_insert(index);
        if first != index {
            let first = self.sim_origin(first);
            self.error(
                place,
                "an address given to two SIMs",
                format!("{addr} is given to two SIMs (first at {first}); each address has one SIM"),
            );
            return None;
        }
        Some(addr)
    }

    fn sim_ipv6(&mut self, text: &str, place: &Place, index: u32) -> Option<Ipv6Network> {
        let net = match Ipv6Network::from_str(text) {
            Ok(net) if net.prefix() == 64 && net.network() == net.ip() => net,
            _ => {
                self.error(
                    place,
                    "an IPv6 that is not a /64",
                    format!(
                        "`{}` is not an IPv6 /64 prefix; a SIM's IPv6 is its /64, written \
                         like 2001:db8:1:2::/64",
                        clip(text)
                    ),
                );
                return None;
            }
        };
        if !self
            .pools
            .iter()
            .any(|pool| overlaps(pool, &IpNetwork::V6(net)) && pool.prefix() <= 64)
        {
            self.error(
                place,
                "an address outside every pool",
                format!("{net} is outside every pool; add its pool to `pools` or fix the prefix"),
            );
            return None;
        }
        // A /64 (checked above): its upper half is the whole of it.
        let key = (u128::from(net.network()) >> 64) as u64;
        let first = *self.ipv6s.entry(key).or_insert(index);
        if first != index {
            let first = self.sim_origin(first);
            self.error(
                place,
                "an address given to two SIMs",
                format!("{net} is given to two SIMs (first at {first}); each prefix has one SIM"),
            );
            return None;
        }
        Some(net)
    }

    fn rules(&mut self, raw: &[toml::Spanned<RawRule>]) -> Vec<Rule> {
        raw.iter().filter_map(|rule| self.rule(rule)).collect()
    }

    /// Report a date-time written where a table (`what`) belongs; true if there was one.
    fn datetime_instead_of(&mut self, datetime: &str, place: &Place, what: &str) -> bool {
        if datetime.is_empty() {
            return false;
        }
        self.error(
            place,
            "a date-time instead of a table",
            format!(
                "{what} must be a table, found date-time `{}`",
                clip(datetime)
            ),
        );
        true
    }

    fn rule(&mut self, rule: &toml::Spanned<RawRule>) -> Option<Rule> {
        let errors_before = self.errors.len();
        let raw = rule.get_ref();
        let whole = Place::Span(rule.span());
        if self.datetime_instead_of(&raw.datetime, &whole, "a rule (`{ to = [...] }`)") {
            return None;
        }
        let to: Vec<Dest> = match &raw.to {
            None => {
                self.error(
                    &whole,
                    "a rule without `to`",
                    "rule without `to`; list destinations: CIDRs, segments, imsi:…",
                );
                Vec::new()
            }
            Some(field) => self
                .list(field, "to")
                .into_iter()
                .filter_map(|(text, place)| self.dest(text, &place))
                .collect(),
        };
        self.finish_rule(
            to,
            [
                raw.proto.as_ref(),
                raw.ports.as_ref(),
                raw.description.as_ref(),
            ],
            rule.span(),
            errors_before,
        )
    }

    /// The rest of a rule or inbound rule, after its addresses (`to`, or `from`): `proto`,
    /// `ports` and `description` checked; the rule, unless an error was reported since
    /// `errors_before`. `span` is the whole rule's, for its `file:line` origin.
    fn finish_rule(
        &mut self,
        to: Vec<Dest>,
        [proto, ports, description]: [Option<&Field>; 3],
        span: std::ops::Range<usize>,
        errors_before: u64,
    ) -> Option<Rule> {
        let (protos, ports) = self.protos_and_ports(proto, ports, &to);
        let description = description
            .and_then(|f| self.string(f, "description"))
            .unwrap_or_default()
            .to_owned();
        if self.errors.len() != errors_before {
            return None;
        }
        let at = self.source.error(&span, "");
        Some(Rule {
            to,
            protos,
            ports,
            description,
            origin: format!("{}:{}", at.file, at.line),
        })
    }

    /// A rule's `proto` and `ports` (shared by rules and inbound rules; `to` are the rule's
    /// other addresses, for the address family check).
    fn protos_and_ports(
        &mut self,
        proto: Option<&Field>,
        ports: Option<&Field>,
        to: &[Dest],
    ) -> (Vec<u8>, Vec<(u16, u16)>) {
        let protos: Vec<u8> = match proto {
            None => Vec::new(),
            Some(field) => {
                let items = self.list(field, "proto");
                let any = items
                    .iter()
                    .any(|(v, _)| matches!(v, Value::String(s) if s == "any"));
                if any && items.len() > 1 {
                    let place = Place::Span(field.span());
                    self.error(
                        &place,
                        "`any` with other protocols",
                        "`any` cannot be combined with other protocols",
                    );
                }
                if any {
                    Vec::new()
                } else {
                    items
                        .into_iter()
                        .filter_map(|(value, place)| self.proto(value, &place))
                        .collect()
                }
            }
        };
        if let Some(field) = proto {
            self.family_mismatch(to, &protos, &Place::Span(field.span()));
        }
        let ports: Vec<(u16, u16)> = match ports {
            None => Vec::new(),
            Some(field) => {
                let place = Place::Span(field.span());
                if protos.is_empty()
                    || protos
                        .iter()
                        .any(|p| *p != IPPROTO_TCP && *p != IPPROTO_UDP)
                {
                    self.error(
                        &place,
                        "`ports` without tcp or udp",
                        "`ports` need `proto = \"tcp\"`, `\"udp\"` or [\"tcp\", \"udp\"]",
                    );
                }
                let ranges: Vec<(u16, u16)> = self
                    .list(field, "ports")
                    .into_iter()
                    .filter_map(|(value, place)| self.port_range(value, &place))
                    .collect();
                if ranges.contains(&(0, u16::MAX)) {
                    Vec::new() // Every port: the same as no `ports`.
                } else {
                    ranges
                }
            }
        };
        (protos, ports)
    }

    /// One inbound rule of a segment: `from` CIDRs outside every pool (not every address),
    /// `proto` and `ports` (the device's) as in a rule.
    fn inbound_rule(&mut self, rule: &toml::Spanned<raw::RawInbound>) -> Option<Rule> {
        let errors_before = self.errors.len();
        let raw = rule.get_ref();
        let whole = Place::Span(rule.span());
        if self.datetime_instead_of(
            &raw.datetime,
            &whole,
            "an inbound rule (`{ from = [...] }`)",
        ) {
            return None;
        }
        let mut from: Vec<Dest> = Vec::new();
        match &raw.from {
            None => self.error(
                &whole,
                "an inbound rule without `from`",
                "inbound rule without `from`; list the hosts that may open sessions to the \
                 segment's devices, as CIDRs outside every pool",
            ),
            Some(field) => {
                for (value, place) in self.list(field, "from") {
                    let Value::String(text) = value else {
                        self.error(
                            &place,
                            "an inbound source that is not a string",
                            format!("inbound source `{}` must be a string", shown(value)),
                        );
                        continue;
                    };
                    let Some(net) = self.network(text, &place, "inbound source") else {
                        continue;
                    };
                    if net.prefix() == 0 {
                        self.error(
                            &place,
                            "an inbound source of every address",
                            format!(
                                "inbound source `{net}` holds every address: it would expose \
                                 the segment's devices to anyone; list the hosts that need in"
                            ),
                        );
                        continue;
                    }
                    if let Some(pool) = self.pools.iter().find(|p| overlaps(p, &net)).copied() {
                        self.error(
                            &place,
                            "an inbound source inside a pool",
                            format!(
                                "inbound source {net} overlaps pool {pool}: devices reach each \
                                 other only by rules naming their segment or `imsi:…`; list \
                                 only addresses outside the pools"
                            ),
                        );
                        continue;
                    }
                    from.push(Dest::Net(net));
                }
            }
        }
        self.finish_rule(
            from,
            [
                raw.proto.as_ref(),
                raw.ports.as_ref(),
                raw.description.as_ref(),
            ],
            rule.span(),
            errors_before,
        )
    }

    /// A rule whose protocols all belong to one address family while its destinations all
    /// belong to the other can never match: `icmp` towards IPv6 only, `icmpv6` towards IPv4.
    fn family_mismatch(&mut self, to: &[Dest], protos: &[u8], place: &Place) {
        let family_of_proto = |proto: &u8| match *proto {
            IPPROTO_ICMP => FAMILY_V4,
            IPPROTO_ICMPV6 => FAMILY_V6,
            _ => FAMILY_ANY,
        };
        let proto_families = protos.iter().map(family_of_proto).fold(0, |a, f| a | f);
        let dest_families = to
            .iter()
            .map(|dest| {
                let families = match dest {
                    Dest::Net(IpNetwork::V4(_)) => FAMILY_V4,
                    Dest::Net(IpNetwork::V6(_)) => FAMILY_V6,
                    Dest::Segment(id) => self
                        .segment_families
                        .get(usize::from(*id))
                        .copied()
                        .unwrap_or(FAMILY_ANY),
                    Dest::Sim(index) => self
                        .sim_families
                        .get(*index as usize)
                        .copied()
                        .unwrap_or(FAMILY_ANY),
                };
                // A segment without SIMs yet matches nothing either way; say nothing.
                if families == 0 { FAMILY_ANY } else { families }
            })
            .fold(0, |a, f| a | f);
        if protos.is_empty() || to.is_empty() || proto_families & dest_families != 0 {
            return;
        }
        let (proto, family, other) = if proto_families == FAMILY_V4 {
            ("icmp", "IPv6", "icmpv6")
        } else {
            ("icmpv6", "IPv4", "icmp")
        };
        self.error(
            place,
            "a protocol of the other address family",
            format!(
                "`{proto}` never matches: every destination of this rule is {family}; use \
                 `{other}`, or add destinations of the other family"
            ),
        );
    }

    /// The items of a value that may be written as one item or as an array.
    fn list<'f>(&mut self, field: &'f Field, what: &str) -> Vec<(&'f Value, Place)> {
        let place = Place::Span(field.span());
        match field.get_ref() {
            Value::Array(items) if items.is_empty() => {
                self.error(
                    &place,
                    "an empty list",
                    format!("`{what}` is empty; list at least one item"),
                );
                Vec::new()
            }
            // Array items carry no spans of their own in `toml::Value`: point at the array.
            Value::Array(items) => items.iter().map(|item| (item, place.clone())).collect(),
            value => vec![(value, place)],
        }
    }

    fn dest(&mut self, value: &Value, place: &Place) -> Option<Dest> {
        let Value::String(text) = value else {
            self.error(
                place,
                "a destination that is not a string",
                format!("destination `{}` must be a string", shown(value)),
            );
            return None;
        };
        if let Some(imsi) = text.strip_prefix("imsi:") {
            return match Imsi::parse(imsi).and_then(|key| self.sim_index(key)) {
                Some(index) => Some(Dest::Sim(index)),
                None => {
                    self.error(
                        place,
                        "a destination naming no SIM",
                        format!("`{}` names no SIM of this policy", clip(text)),
                    );
                    None
                }
            };
        }
        if let Some(name) = text.strip_prefix("segment:") {
            return match self.segment_ids.get(name) {
                Some(&id) => Some(Dest::Segment(id)),
                None => {
                    self.error(
                        place,
                        "unknown segment",
                        format!(
                            "unknown segment `{}` in `{}`; declare it under [[segments]] or fix \
                             the name",
                            clip(name),
                            clip(text)
                        ),
                    );
                    None
                }
            };
        }
        if let Some(&id) = self.segment_ids.get(text.as_str()) {
            return Some(Dest::Segment(id));
        }
        let looks_like_address = text.contains('.')
            && text.chars().next().is_some_and(|c| c.is_ascii_digit())
            || text.contains(':');
        if !looks_like_address {
            self.error(
                place,
                "a destination that is neither CIDR nor name",
                format!(
                    "`{}` is neither a CIDR, a known segment nor `imsi:…`",
                    clip(text)
                ),
            );
            return None;
        }
        let net = self.network(text, place, "destination")?;
        if let Some(pool) = self
            .pools
            .iter()
            .find(|pool| overlaps(pool, &net) && pool.prefix() <= net.prefix())
        {
            let pool = *pool;
            self.error(
                place,
                "a CIDR inside a pool",
                format!(
                    "{net} lies inside pool {pool}: traffic to devices is lateral; name the \
                     destination segment or `imsi:…` instead"
                ),
            );
            return None;
        }
        if let IpNetwork::V6(v6) = net
            && let Some(message) = self.embedded_pool(v6)
        {
            self.error(place, "a CIDR inside a pool", message);
            return None;
        }
        Some(Dest::Net(net))
    }

    /// Why IPv6 destination `net` reaches an IPv4 pool through an address form that embeds
    /// IPv4 (NAT64, IPv4-mapped), if it does. The datapath carves pools out of wide CIDRs only
    /// in their own family, so such a CIDR would let devices reach each other through a NAT64
    /// gateway: it is refused like a CIDR inside a pool.
    fn embedded_pool(&self, net: Ipv6Network) -> Option<String> {
        for (prefix, name) in EMBEDDING_PREFIXES {
            // Safe: 96 is a valid IPv6 prefix length.
            let Ok(translation) = Ipv6Network::new(prefix, 96) else {
                continue;
            };
            if !overlaps(&IpNetwork::V6(net), &IpNetwork::V6(translation)) {
                continue;
            }
            if net.prefix() < 96 {
                // `net` contains the whole translation prefix, so every pool's image.
                let pool = self.pools.iter().find_map(|p| match p {
                    IpNetwork::V4(v4) => Some(*v4),
                    IpNetwork::V6(_) => None,
                })?;
                return Some(format!(
                    "{net} contains {name}, through which it reaches pool {pool} (e.g. \
                     {}): traffic to devices is lateral; leave 64:ff9b::/96 and ::ffff:0:0/96 \
                     out (for the IPv6 internet write 2000::/3)",
                    embed(prefix, pool.network())
                ));
            }
            // The low 32 bits carry the IPv4 address (truncation intended).
            let bits = u128::from(net.network()) as u32;
            let embedded = Ipv4Network::new(Ipv4Addr::from(bits), net.prefix() - 96).ok()?;
            if let Some(pool) = self
                .pools
                .iter()
                .find(|p| overlaps(p, &IpNetwork::V4(embedded)))
            {
                let relation = if pool.prefix() <= embedded.prefix() {
                    "lies inside"
                } else {
                    "contains"
                };
                return Some(format!(
                    "{net} is {embedded} written in {name}, and {relation} pool {pool}: \
                     traffic to devices is lateral; name the destination segment or `imsi:…` \
                     instead"
                ));
            }
        }
        None
    }

    fn proto(&mut self, value: &Value, place: &Place) -> Option<u8> {
        let proto = match value {
            Value::String(name) => match name.as_str() {
                "tcp" => Some(IPPROTO_TCP),
                "udp" => Some(IPPROTO_UDP),
                "icmp" => Some(IPPROTO_ICMP),
                "icmpv6" => Some(IPPROTO_ICMPV6),
                _ => None,
            },
            Value::Integer(n) => u8::try_from(*n).ok().filter(|n| *n != 0),
            _ => None,
        };
        if proto.is_none() {
            self.error(
                place,
                "unknown protocol",
                format!(
                    "unknown protocol `{}`; use tcp, udp, icmp, icmpv6, any, or an IP \
                     protocol number 1-255",
                    shown(value)
                ),
            );
        }
        proto
    }

    fn port_range(&mut self, value: &Value, place: &Place) -> Option<(u16, u16)> {
        let parsed = match value {
            Value::Integer(n) => u16::try_from(*n).ok().map(|p| (p, p)),
            Value::String(text) => match text.split_once('-') {
                None => port(text).map(|p| (p, p)),
                Some((lo, hi)) => port(lo).zip(port(hi)),
            },
            _ => None,
        };
        match parsed {
            None => {
                self.error(
                    place,
                    "a bad port",
                    format!(
                        "bad port `{}`; write 443, \"443\" or \"8000-8100\" (1-65535)",
                        shown(value)
                    ),
                );
                None
            }
            Some((0, 0)) => {
                self.error(
                    place,
                    "port 0",
                    format!(
                        "port `{}`: 0 is not a destination port; omit `ports` to allow every \
                         port",
                        shown(value)
                    ),
                );
                None
            }
            Some((lo, hi)) if lo > hi => {
                self.error(
                    place,
                    "a reversed port range",
                    format!("port range `{}` is reversed; write {hi}-{lo}", shown(value)),
                );
                None
            }
            Some(range) => Some(range),
        }
    }
}

/// The checks of [`Checker::sim`] that need no state beyond pools and segments: everything but
/// the repeats, which [`Checker::take_inventory`] finds. Shared by the threads that check an
/// inventory's rows.
pub(super) struct QuickCheck<'c> {
    pools: &'c [IpNetwork],
    segment_ids: &'c FastMap<String, u16>,
}

impl QuickCheck<'_> {
    /// The SIM `text` describes if [`Checker::sim`] would find nothing wrong with it on its
    /// own (a repeat aside); `None` if it would report something.
    pub(super) fn sim(&self, text: &SimText<'_>) -> Option<Sim> {
        let imsi = Imsi::parse(text.imsi.as_ref()?.0)?;
        let iccid = match &text.iccid {
            None => None,
            Some((text, _)) => Some(Iccid::parse(text)?),
        };
        let msisdn = match &text.msisdn {
            None => None,
            Some((text, _)) => Some(Msisdn::parse(text)?),
        };
        let ipv4 = match &text.ipv4 {
            None => None,
            Some((text, _)) => {
                let addr = dotted_quad(text).or_else(|| Ipv4Addr::from_str(text).ok())?;
                let in_pool = self.pools.iter().any(|p| p.contains(IpAddr::V4(addr)));
                Some(addr).filter(|_| in_pool)?.into()
            }
        };
        let ipv6 = match &text.ipv6 {
            None => None,
            Some((text, _)) => {
                let net = Ipv6Network::from_str(text).ok()?;
                let in_pool = self
                    .pools
                    .iter()
                    .any(|pool| overlaps(pool, &IpNetwork::V6(net)) && pool.prefix() <= 64);
                Some(net)
                    .filter(|n| n.prefix() == 64 && n.network() == n.ip() && in_pool)?
                    .into()
            }
        };
        let segment = *self.segment_ids.get(text.segment.as_ref()?.0)?;
        let state = match text.state.as_ref().map(|(state, _)| *state) {
            None | Some("active") => SimState::Active,
            Some("quarantined") => SimState::Quarantined,
            Some(_) => return None,
        };
        Some(assemble(
            Sim::new(imsi, segment, state),
            ipv4,
            ipv6,
            iccid,
            msisdn,
        ))
    }
}

/// An IPv4 address in its usual shape, four decimal numbers 0-255 without leading zeros
/// joined by dots, read without the standard parser's generality (a tenth of the time of a
/// million-row inventory went there). `None` for anything else, which the standard parser
/// then reads: this accepts nothing it refuses.
pub(super) fn dotted_quad(text: &str) -> Option<Ipv4Addr> {
    let mut octets = [0u8; 4];
    let mut parts = text.as_bytes().split(|&b| b == b'.');
    for octet in &mut octets {
        let part = parts.next()?;
        if part.is_empty() || part.len() > 3 || part.len() > 1 && part[0] == b'0' {
            return None;
        }
        let mut value = 0u16;
        for &digit in part {
            if !digit.is_ascii_digit() {
                return None;
            }
            value = value * 10 + u16::from(digit - b'0');
        }
        *octet = u8::try_from(value).ok()?;
    }
    parts.next().is_none().then_some(Ipv4Addr::from(octets))
}

/// A port written as text: ASCII digits only (no sign, no spaces inside), 0-65535.
fn port(text: &str) -> Option<u16> {
    let text = text.trim();
    if !all_digits(text) || text.len() > 5 {
        return None;
    }
    text.parse().ok()
}

/// The date-time a value stands for: through `Spanned`, toml hands a date-time over as a table
/// with one private key.
fn datetime(value: &Value) -> Option<String> {
    match value {
        Value::Datetime(datetime) => Some(datetime.to_string()),
        Value::Table(table) if table.len() == 1 => table
            .get("$__toml_private_datetime")
            .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned)),
        _ => None,
    }
}

/// The TOML type of a value, for messages.
fn type_name(value: &Value) -> &'static str {
    if datetime(value).is_some() {
        "date-time"
    } else {
        value.type_str()
    }
}

/// A TOML value for a message, shortened: a 20,000-element array is not echoed whole.
fn shown(value: &Value) -> String {
    if let Some(datetime) = datetime(value) {
        return clip(&datetime);
    }
    match value {
        Value::String(text) => format!("\"{}\"", clip(text)),
        Value::Array(items) if items.len() > 4 => {
            let head: Vec<String> = items.iter().take(3).map(shown).collect();
            format!("[{}, … {} more]", head.join(", "), items.len() - 3)
        }
        Value::Array(items) => {
            let all: Vec<String> = items.iter().map(shown).collect();
            clip(&format!("[{}]", all.join(", ")))
        }
        other => clip(&other.to_string()),
    }
}

/// IPv4 address `v4` inside IPv6 `prefix` /96.
fn embed(prefix: Ipv6Addr, v4: Ipv4Addr) -> Ipv6Addr {
    Ipv6Addr::from(u128::from(prefix) | u128::from(u32::from(v4)))
}

/// A string field of a policy SIM, with its place.
fn field<'f>(
    f: &'f Option<Field>,
    what: &str,
    checker: &mut Checker<'_>,
) -> Option<(&'f str, Place)> {
    let f = f.as_ref()?;
    checker.string(f, what).map(|s| (s, Place::Span(f.span())))
}

fn all_digits(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit())
}

fn valid_name(text: &str) -> bool {
    !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// Two CIDRs of the same family share an address (one contains the other).
pub(crate) fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    match (a, b) {
        (IpNetwork::V4(_), IpNetwork::V4(_)) | (IpNetwork::V6(_), IpNetwork::V6(_)) => {
            a.contains(b.network()) || b.contains(a.network())
        }
        _ => false,
    }
}

/// `sim` with its addresses and, only when it has either, its ICCID and MSISDN (which live in
/// a block allocated for the SIMs that have them).
fn assemble(
    mut sim: Sim,
    ipv4: Option<std::net::Ipv4Addr>,
    ipv6: Option<Ipv6Network>,
    iccid: Option<Iccid>,
    msisdn: Option<Msisdn>,
) -> Sim {
    sim.set_ipv4(ipv4);
    sim.set_ipv6(ipv6);
    if iccid.is_some() || msisdn.is_some() {
        sim.set_iccid(iccid);
        sim.set_msisdn(msisdn);
    }
    sim
}
