//! Checks a [`RawPolicy`] and resolves it into a [`ValidatedPolicy`], collecting every error.

use std::{
    collections::{HashMap, HashSet},
    net::{IpAddr, Ipv4Addr},
    ops::Range,
    path::Path,
    str::FromStr,
};

use enforcer_common::maps::{
    IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP, IPPROTO_UDP, MAX_SEGMENTS, MAX_SIMS_LIMIT,
};
use ipnetwork::{IpNetwork, Ipv6Network};
use toml::Value;

use super::{
    Dest, PolicyError, PolicyErrors, Rule, Segment, Sim, SimState, ValidatedPolicy,
    error::SourceMap,
    inventory,
    raw::{self, Field, RawRule},
};

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
}

/// Validation state for one policy file and its inventory.
pub(super) struct Checker<'a> {
    source: &'a SourceMap<'a>,
    pub errors: Vec<PolicyError>,
    pools: Vec<IpNetwork>,
    segment_ids: HashMap<String, u16>,
    /// IMSI (as [`imsi_key`]) → SIM index; a u64 key rather than a String keeps a million-SIM
    /// validation lean.
    imsis: HashMap<u64, u32>,
    /// SIMs checked so far, valid or not: the next SIM's index.
    pub sims_seen: usize,
    ipv4s: HashSet<Ipv4Addr>,
    ipv6s: HashSet<Ipv6Network>,
}

pub(super) fn validate(path: &Path, text: &str) -> Result<ValidatedPolicy, PolicyErrors> {
    let source = SourceMap::new(path, text);
    let raw = raw::parse(&source, text).map_err(|error| PolicyErrors(vec![error]))?;
    let mut checker = Checker {
        source: &source,
        errors: raw::unknown_keys(&source, text),
        pools: Vec::new(),
        segment_ids: HashMap::new(),
        imsis: HashMap::new(),
        sims_seen: 0,
        ipv4s: HashSet::new(),
        ipv6s: HashSet::new(),
    };

    checker.pools(&raw.pools);
    let mut segments: Vec<Segment> = raw
        .segments
        .iter()
        .map(|segment| checker.segment_header(segment))
        .collect();
    if segments.len() > MAX_SEGMENTS as usize {
        let place = Place::Span(raw.segments[MAX_SEGMENTS as usize].span());
        checker.error(
            &place,
            format!("more than {MAX_SEGMENTS} segments; merge segments that share rules"),
        );
    }

    // Only valid SIMs are kept (one vector, no second copy at a million SIMs); a policy with an
    // invalid one fails anyway. `policy_sims` maps each `[[sims]]` entry to its place in `sims`.
    let mut sims: Vec<Sim> = Vec::with_capacity(raw.sims.len());
    let mut policy_sims: Vec<Option<usize>> = Vec::with_capacity(raw.sims.len());
    for sim in &raw.sims {
        let inner = sim.get_ref();
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
        };
        let checked = checker.sim(&text);
        policy_sims.push(checked.as_ref().map(|_| sims.len()));
        sims.extend(checked);
    }
    if let Some(inventory) = &raw.inventory
        && let Some(name) = checker.string(inventory, "inventory")
    {
        let place = Place::Span(inventory.span());
        let dir = path.parent().unwrap_or(Path::new("."));
        inventory::read(&mut checker, &dir.join(name), &place, &mut sims);
    }
    if checker.sims_seen > MAX_SIMS_LIMIT as usize {
        let place = Place::Span(0..0);
        checker.error(
            &place,
            format!("more than {MAX_SIMS_LIMIT} SIMs; split the fleet"),
        );
    }

    // Rules last: they may name any segment or SIM.
    for (segment, raw_segment) in segments.iter_mut().zip(&raw.segments) {
        segment.rules = checker.rules(&raw_segment.get_ref().rules);
    }
    for (place, raw_sim) in policy_sims.iter().zip(&raw.sims) {
        if let Some(sim) = place.and_then(|i| sims.get_mut(i)) {
            sim.rules = checker.rules(&raw_sim.get_ref().rules);
        }
    }

    if checker.errors.is_empty() {
        Ok(ValidatedPolicy {
            path: path.to_owned(),
            pools: checker.pools,
            segments,
            sims,
        })
    } else {
        let mut errors = checker.errors;
        errors.sort_by_key(|e| (e.line, e.column));
        Err(PolicyErrors(errors))
    }
}

impl<'a> Checker<'a> {
    pub(super) fn error(&mut self, place: &Place, message: impl Into<String>) {
        let error = match place {
            Place::Span(span) => self.source.error(span, message),
            Place::Line(line) => self.source.error_at_line(*line, message),
        };
        self.errors.push(error);
    }

    /// Report an error in another file (the inventory) at `line`.
    pub(super) fn error_in(&mut self, file: &SourceMap<'_>, line: usize, message: String) {
        self.errors.push(file.error_at_line(line, message));
    }

    fn string<'f>(&mut self, field: &'f Field, what: &str) -> Option<&'f str> {
        match field.get_ref() {
            Value::String(s) => Some(s.as_str()),
            other => {
                let place = Place::Span(field.span());
                self.error(
                    &place,
                    format!(
                        "`{what}` must be a string, found {} `{other}`; put it in quotes",
                        other.type_str()
                    ),
                );
                None
            }
        }
    }

    fn pools(&mut self, fields: &[Field]) {
        for field in fields {
            let Some(text) = self.string(field, "pools") else {
                continue;
            };
            let place = Place::Span(field.span());
            let Some(net) = self.network(text, &place, "pool") else {
                continue;
            };
            if let Some(other) = self.pools.iter().find(|p| overlaps(p, &net)) {
                let other = *other;
                self.error(
                    &place,
                    format!("pool {net} overlaps pool {other}; declare each address once"),
                );
                continue;
            }
            self.pools.push(net);
        }
        if fields.is_empty() {
            self.error(
                &Place::Span(0..0),
                "no `pools` declared; add `pools = [\"10.64.0.0/16\"]` with the SIM address pools",
            );
        }
    }

    /// Parse `text` as a CIDR (or a bare address, a host route) without host bits.
    fn network(&mut self, text: &str, place: &Place, what: &str) -> Option<IpNetwork> {
        let net = match IpNetwork::from_str(text) {
            Ok(net) => net,
            Err(_) => {
                self.error(
                    place,
                    format!(
                        "`{text}` is not a valid {what} CIDR; write it like 10.64.0.0/16 or \
                         2001:db8::/48"
                    ),
                );
                return None;
            }
        };
        if net.network() != net.ip() {
            self.error(
                place,
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
        let mut name = String::new();
        match &raw.name {
            None => self.error(
                &Place::Span(segment.span()),
                "segment without `name`; add `name = \"…\"`",
            ),
            Some(field) => {
                if let Some(text) = self.string(field, "name") {
                    let place = Place::Span(field.span());
                    if !valid_name(text) {
                        self.error(
                            &place,
                            format!(
                                "segment name `{text}` may use only letters, digits, `-`, `_` \
                                 and `.`"
                            ),
                        );
                    } else if text.starts_with("imsi:") || IpNetwork::from_str(text).is_ok() {
                        self.error(&place, format!("segment name `{text}` looks like a CIDR"));
                    } else if self.segment_ids.contains_key(text) {
                        self.error(
                            &place,
                            format!("segment `{text}` is declared twice; rename one"),
                        );
                    } else {
                        let id = u16::try_from(self.segment_ids.len()).unwrap_or(u16::MAX);
                        self.segment_ids.insert(text.to_owned(), id);
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
        Segment {
            name,
            description,
            rules: Vec::new(),
        }
    }

    /// Check one SIM; its index is its position among all SIMs read so far.
    pub(super) fn sim(&mut self, text: &SimText<'_>) -> Option<Sim> {
        let index = self.sims_seen;
        self.sims_seen += 1;
        let errors_before = self.errors.len();
        let imsi = match &text.imsi {
            None if text.invalid.contains(&"imsi") => None,
            None => {
                self.error(&text.whole, "SIM without `imsi`; every SIM needs its IMSI");
                None
            }
            Some((imsi, place)) => {
                if !(14..=15).contains(&imsi.len()) || !all_digits(imsi) {
                    self.error(
                        place,
                        format!("IMSI `{imsi}` must be 14 or 15 digits (MCC, MNC, MSIN)"),
                    );
                    None
                } else {
                    let index = u32::try_from(index).unwrap_or(u32::MAX);
                    match self.imsis.entry(imsi_key(imsi)) {
                        std::collections::hash_map::Entry::Occupied(_) => {
                            self.error(
                                place,
                                format!("IMSI {imsi} is listed twice; keep one entry"),
                            );
                            None
                        }
                        std::collections::hash_map::Entry::Vacant(slot) => {
                            slot.insert(index);
                            Some((*imsi).to_owned())
                        }
                    }
                }
            }
        };
        if let Some((iccid, place)) = &text.iccid
            && (!(19..=20).contains(&iccid.len()) || !all_digits(iccid) || !iccid.starts_with("89"))
        {
            self.error(
                place,
                format!("ICCID `{iccid}` must be 19 or 20 digits starting with 89 (ITU-T E.118)"),
            );
        }
        if let Some((msisdn, place)) = &text.msisdn {
            let digits = msisdn.strip_prefix('+').unwrap_or(msisdn);
            if !(8..=15).contains(&digits.len()) || !all_digits(digits) {
                self.error(
                    place,
                    format!(
                        "MSISDN `{msisdn}` must be 8 to 15 digits, optionally after `+` (E.164)"
                    ),
                );
            }
        }
        let ipv4 = text
            .ipv4
            .as_ref()
            .and_then(|(addr, place)| self.sim_ipv4(addr, place));
        let ipv6 = text
            .ipv6
            .as_ref()
            .and_then(|(net, place)| self.sim_ipv6(net, place));
        if text.ipv4.is_none()
            && text.ipv6.is_none()
            && !text.invalid.contains(&"ipv4")
            && !text.invalid.contains(&"ipv6")
        {
            self.error(
                &text.whole,
                "SIM without an address; give `ipv4` and/or `ipv6`",
            );
        }
        let segment = match &text.segment {
            None if text.invalid.contains(&"segment") => None,
            None => {
                self.error(
                    &text.whole,
                    "SIM without `segment`; name the segment it belongs to",
                );
                None
            }
            Some((name, place)) => {
                let id = self.segment_ids.get(*name).copied();
                if id.is_none() {
                    self.error(
                        place,
                        format!("unknown segment `{name}`; declare it under [[segments]]"),
                    );
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
                        format!("unknown state `{other}`; use `active` or `quarantined`"),
                    );
                    None
                }
            },
        };
        if self.errors.len() != errors_before {
            return None;
        }
        Some(Sim {
            imsi: imsi?,
            iccid: text.iccid.as_ref().map(|(s, _)| (*s).to_owned()),
            msisdn: text.msisdn.as_ref().map(|(s, _)| (*s).to_owned()),
            ipv4,
            ipv6,
            segment: segment?,
            state: state?,
            rules: Vec::new(),
        })
    }

    fn sim_ipv4(&mut self, text: &str, place: &Place) -> Option<Ipv4Addr> {
        let Ok(addr) = Ipv4Addr::from_str(text) else {
            self.error(
                place,
                format!("`{text}` is not an IPv4 address; write it like 10.64.0.1"),
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
                format!("{addr} is outside every pool; add its pool to `pools` or fix the address"),
            );
            return None;
        }
        if !self.ipv4s.insert(addr) {
            self.error(
                place,
                format!("{addr} is given to two SIMs; each address has one SIM"),
            );
            return None;
        }
        Some(addr)
    }

    fn sim_ipv6(&mut self, text: &str, place: &Place) -> Option<Ipv6Network> {
        let net = match Ipv6Network::from_str(text) {
            Ok(net) if net.prefix() == 64 && net.network() == net.ip() => net,
            _ => {
                self.error(
                    place,
                    format!(
                        "`{text}` is not an IPv6 /64 prefix; a SIM's IPv6 is its /64, written \
                         like 2001:db8:1:2::/64"
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
                format!("{net} is outside every pool; add its pool to `pools` or fix the prefix"),
            );
            return None;
        }
        if !self.ipv6s.insert(net) {
            self.error(
                place,
                format!("{net} is given to two SIMs; each prefix has one SIM"),
            );
            return None;
        }
        Some(net)
    }

    fn rules(&mut self, raw: &[toml::Spanned<RawRule>]) -> Vec<Rule> {
        raw.iter().filter_map(|rule| self.rule(rule)).collect()
    }

    fn rule(&mut self, rule: &toml::Spanned<RawRule>) -> Option<Rule> {
        let errors_before = self.errors.len();
        let raw = rule.get_ref();
        let whole = Place::Span(rule.span());
        let to = match &raw.to {
            None => {
                self.error(
                    &whole,
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
        let protos: Vec<u8> = match &raw.proto {
            None => Vec::new(),
            Some(field) => {
                let items = self.list(field, "proto");
                let any = items
                    .iter()
                    .any(|(v, _)| matches!(v, Value::String(s) if s == "any"));
                if any && items.len() > 1 {
                    let place = Place::Span(field.span());
                    self.error(&place, "`any` cannot be combined with other protocols");
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
        let ports: Vec<(u16, u16)> = match &raw.ports {
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
        let description = raw
            .description
            .as_ref()
            .and_then(|f| self.string(f, "description"))
            .unwrap_or_default()
            .to_owned();
        if self.errors.len() != errors_before {
            return None;
        }
        let at = self.source.error(&rule.span(), "");
        Some(Rule {
            to,
            protos,
            ports,
            description,
            origin: format!("{}:{}", at.file, at.line),
        })
    }

    /// The items of a value that may be written as one item or as an array.
    fn list<'f>(&mut self, field: &'f Field, what: &str) -> Vec<(&'f Value, Place)> {
        let place = Place::Span(field.span());
        match field.get_ref() {
            Value::Array(items) if items.is_empty() => {
                self.error(&place, format!("`{what}` is empty; list at least one item"));
                Vec::new()
            }
            // Array items carry no spans of their own in `toml::Value`: point at the array.
            Value::Array(items) => items.iter().map(|item| (item, place.clone())).collect(),
            value => vec![(value, place)],
        }
    }

    fn dest(&mut self, value: &Value, place: &Place) -> Option<Dest> {
        let Value::String(text) = value else {
            self.error(place, format!("destination `{value}` must be a string"));
            return None;
        };
        if let Some(imsi) = text.strip_prefix("imsi:") {
            return match self.imsis.get(&imsi_key(imsi)) {
                Some(&index) => Some(Dest::Sim(index)),
                None => {
                    self.error(place, format!("`{text}` names no SIM of this policy"));
                    None
                }
            };
        }
        let segment = text.strip_prefix("segment:").unwrap_or(text);
        if let Some(&id) = self.segment_ids.get(segment) {
            return Some(Dest::Segment(id));
        }
        let looks_like_address = text.contains('.')
            && text.chars().next().is_some_and(|c| c.is_ascii_digit())
            || text.contains(':');
        if !looks_like_address {
            self.error(
                place,
                format!("`{text}` is neither a CIDR, a known segment nor `imsi:…`"),
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
                format!(
                    "{net} lies inside pool {pool}: traffic to devices is lateral; name the \
                     destination segment or `imsi:…` instead"
                ),
            );
            return None;
        }
        Some(Dest::Net(net))
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
                format!(
                    "unknown protocol `{value}`; use tcp, udp, icmp, icmpv6, any, or an IP \
                     protocol number 1-255"
                ),
            );
        }
        proto
    }

    fn port_range(&mut self, value: &Value, place: &Place) -> Option<(u16, u16)> {
        let parsed = match value {
            Value::Integer(n) => u16::try_from(*n).ok().map(|p| (p, p)),
            Value::String(text) => match text.split_once('-') {
                None => text.trim().parse().ok().map(|p| (p, p)),
                Some((lo, hi)) => lo.trim().parse().ok().zip(hi.trim().parse().ok()),
            },
            _ => None,
        };
        match parsed {
            None => {
                self.error(
                    place,
                    format!("bad port `{value}`; write 443, \"443\" or \"8000-8100\" (0-65535)"),
                );
                None
            }
            Some((lo, hi)) if lo > hi => {
                self.error(
                    place,
                    format!("port range `{value}` is reversed; write {hi}-{lo}"),
                );
                None
            }
            Some(range) => Some(range),
        }
    }
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

/// An IMSI of 14-15 digits packed into a u64: the number, with bit 63 set for 14-digit IMSIs
/// so that leading zeros still tell them apart. Only for validated (or compared) digit strings;
/// anything else maps to `u64::MAX`, which no valid IMSI produces.
fn imsi_key(imsi: &str) -> u64 {
    match imsi.parse::<u64>() {
        Ok(value) if all_digits(imsi) && imsi.len() == 14 => value | 1 << 63,
        Ok(value) if all_digits(imsi) && imsi.len() == 15 => value,
        _ => u64::MAX,
    }
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
