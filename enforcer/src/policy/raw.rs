//! The policy file as written: TOML read with serde, every leaf kept with its byte span so that
//! validation can report all problems with file, line and column, not only the first.
//!
//! Leaves are `Spanned<toml::Value>` rather than typed fields: a wrong type (`imsi = 1234`) is
//! then one more validation error instead of the end of the parse. Unknown keys are found by a
//! walk over the same text with `toml_edit` (serde stops at the first one).

use std::ops::Range;

use serde::Deserialize;
use toml::{Spanned, Value};

use super::error::{PolicyError, SourceMap, clip};

/// A leaf value and where it stands.
pub type Field = Spanned<Value>;

/// The top level of a policy file.
#[derive(Debug, Deserialize)]
pub struct RawPolicy {
    /// Address pools (CIDRs) the SIMs get their addresses from.
    #[serde(default)]
    pub pools: Vec<Field>,
    /// Prefixes outside every pool whose packets a core interface accepts (the PGW's own
    /// addresses, say); every other non-pool source is dropped there.
    #[serde(default)]
    pub core_sources: Vec<Field>,
    /// Segments (per APN/DNN or customer), each with its rules.
    #[serde(default)]
    pub segments: Vec<Spanned<RawSegment>>,
    /// SIMs written in the policy itself.
    #[serde(default)]
    pub sims: Vec<Spanned<RawSim>>,
    /// Optional CSV inventory of further SIMs, relative to the policy file.
    pub inventory: Option<Field>,
    /// What an IMEI mismatch does: `drop` (the default) or `quarantine`.
    pub imei_mismatch: Option<Field>,
    /// What RADIUS accounting for an IMSI the policy does not list does: `refuse` (the
    /// default) or `admit` (into its APN's segment).
    pub unknown_imsi: Option<Field>,
}

/// `[[segments]]`.
#[derive(Debug, Deserialize)]
pub struct RawSegment {
    /// Unique name.
    pub name: Option<Field>,
    /// Free text.
    pub description: Option<Field>,
    /// Allow rules for every SIM of the segment.
    #[serde(default)]
    pub rules: Vec<Spanned<RawRule>>,
    /// What may open a session toward the segment's SIMs from outside every pool.
    #[serde(default)]
    pub inbound: Vec<Spanned<RawInbound>>,
    /// Alert thresholds for the segment's SIMs.
    pub alerts: Option<Spanned<RawAlerts>>,
    /// `enforce` (the default) or `audit`.
    pub mode: Option<Field>,
    /// IMEI lock of every SIM of the segment: `learn` or `tac:NNNNNNNN`.
    pub imei_lock: Option<Field>,
    /// APNs/DNNs whose data sessions of SIMs unknown to the policy land in this segment.
    pub apns: Option<Field>,
    /// Set when a date-time stands where this table should: toml hands date-times to serde as
    /// a table with this one private key.
    /// Empty otherwise.
    #[serde(rename = "$__toml_private_datetime", default)]
    pub datetime: String,
}

/// A segment's `alerts = { deny_rate, learn_destinations, burst }`.
#[derive(Debug, Deserialize)]
pub struct RawAlerts {
    /// Denied packets a second (per SIM) above which to alert.
    pub deny_rate: Option<Field>,
    /// Seconds a SIM's destinations are learned before a new one raises an alert.
    pub learn_destinations: Option<Field>,
    /// How many times its moving average a SIM's traffic may reach before an alert.
    pub burst: Option<Field>,
}

/// One inbound rule of a segment: `{ from = [...], proto, ports }`.
#[derive(Debug, Deserialize)]
pub struct RawInbound {
    /// Senders: CIDRs or addresses outside every pool.
    pub from: Option<Field>,
    /// As [`RawRule::proto`].
    pub proto: Option<Field>,
    /// The device's ports, as [`RawRule::ports`].
    pub ports: Option<Field>,
    /// Free text.
    pub description: Option<Field>,
    /// As [`RawRule::datetime`].
    #[serde(rename = "$__toml_private_datetime", default)]
    pub datetime: String,
}

/// `[[sims]]`.
#[derive(Debug, Deserialize)]
pub struct RawSim {
    /// 14–15 digits.
    pub imsi: Option<Field>,
    /// 19–20 digits starting with 89.
    pub iccid: Option<Field>,
    /// E.164: optional `+`, 8–15 digits.
    pub msisdn: Option<Field>,
    /// IPv4 address inside a pool.
    pub ipv4: Option<Field>,
    /// IPv6 /64 inside a pool.
    pub ipv6: Option<Field>,
    /// Segment name.
    pub segment: Option<Field>,
    /// `active` (default) or `quarantined`.
    pub state: Option<Field>,
    /// Extra allow rules for this SIM only.
    #[serde(default)]
    pub rules: Vec<Spanned<RawRule>>,
    /// IMEI lock: an IMEI, `tac:NNNNNNNN`, `learn` or `off`.
    pub imei_lock: Option<Field>,
    /// `enforce` (the default: the segment's mode) or `audit`: this SIM alone in audit mode.
    pub mode: Option<Field>,
    /// Set when a date-time stands where this table should: toml hands date-times to serde as
    /// a table with this one private key.
    /// Empty otherwise.
    #[serde(rename = "$__toml_private_datetime", default)]
    pub datetime: String,
}

/// One allow rule.
#[derive(Debug, Deserialize)]
pub struct RawRule {
    /// Destinations: CIDRs, addresses, segment names, `imsi:…`.
    pub to: Option<Field>,
    /// `tcp`, `udp`, `icmp`, `icmpv6`, `any` (default), a number, or a list of them.
    pub proto: Option<Field>,
    /// Ports or ranges: `443`, `"8000-8100"`, or a list.
    pub ports: Option<Field>,
    /// Free text.
    pub description: Option<Field>,
    /// Set when a date-time stands where this table should: toml hands date-times to serde as
    /// a table with this one private key.
    /// Empty otherwise.
    #[serde(rename = "$__toml_private_datetime", default)]
    pub datetime: String,
}

const TOP_KEYS: &[&str] = &[
    "pools",
    "core_sources",
    "segments",
    "sims",
    "inventory",
    "imei_mismatch",
    "unknown_imsi",
];
const SEGMENT_KEYS: &[&str] = &[
    "name",
    "description",
    "rules",
    "inbound",
    "alerts",
    "mode",
    "imei_lock",
    "apns",
];
const ALERT_KEYS: &[&str] = &["deny_rate", "learn_destinations", "burst"];
const SIM_KEYS: &[&str] = &[
    "imsi",
    "iccid",
    "msisdn",
    "ipv4",
    "ipv6",
    "segment",
    "state",
    "rules",
    "imei_lock",
    "mode",
];
const RULE_KEYS: &[&str] = &["to", "proto", "ports", "description"];
const INBOUND_KEYS: &[&str] = &["from", "proto", "ports", "description"];

/// Parse the text; a syntax or shape error ends the parse (there is no structure to go on from).
pub fn parse(source: &SourceMap<'_>, text: &str) -> Result<RawPolicy, PolicyError> {
    toml::from_str(text).map_err(|error| {
        let span = error.span().unwrap_or(0..0);
        let mut hint = table_not_array(text).map_or_else(String::new, |section| {
            format!(
                "; `[{section}]` is a single table, but each entry is one of an array of \
                 tables: write `[[{section}]]` (double brackets) above each"
            )
        });
        if let Some(first) = first_of_duplicate(text, error.message(), span.start) {
            let at = source.error(&(first..first), "");
            hint.push_str(&format!(
                " (first at {}:{}:{})",
                at.file, at.line, at.column
            ));
        }
        source.error(
            &span,
            format!(
                "{}{hint}; see the policy format in README.md",
                readable(error.message())
            ),
        )
    })
}

/// `segments`, `sims` or their `rules` written as one table (`[segments]`, `[segments.rules]`)
/// instead of an array of tables.
fn table_not_array(text: &str) -> Option<String> {
    let document = toml_edit::ImDocument::parse(text).ok()?;
    let root = document.as_table();
    for section in ["segments", "sims"] {
        match root.get(section) {
            Some(toml_edit::Item::Table(_)) => return Some(section.to_owned()),
            Some(toml_edit::Item::ArrayOfTables(entries))
                if entries
                    .iter()
                    .any(|entry| entry.get("rules").is_some_and(toml_edit::Item::is_table)) =>
            {
                return Some(format!("{section}.rules"));
            }
            _ => {}
        }
    }
    None
}

/// For a "duplicate key `K`" error at `offset`: where `K` was first written (a line starting
/// with `K =` or `[K]`, before the duplicate).
fn first_of_duplicate(text: &str, message: &str, offset: usize) -> Option<usize> {
    let rest = message.strip_prefix("duplicate key `")?;
    let key = &rest[..rest.find('`')?];
    let mut start = 0;
    for line in text[..offset.min(text.len())].split_inclusive('\n') {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        let after = trimmed
            .strip_prefix('[')
            .unwrap_or(trimmed)
            .strip_prefix(key)
            .map(str::trim_start);
        if after.is_some_and(|a| a.starts_with('=') || a.starts_with(']')) {
            return Some(start + indent);
        }
        start += line.len();
    }
    None
}

/// A parser message as one line in the policy's own terms: no serde type names, no private
/// datetime marker, quoted values shortened.
fn readable(message: &str) -> String {
    let one_line = message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(": ");
    let mut out = String::with_capacity(one_line.len().min(400));
    let mut rest = one_line.as_str();
    // Shorten every quoted value (serde quotes the string it did not expect).
    while let Some(start) = rest.find('"') {
        out.push_str(&rest[..=start]);
        rest = &rest[start + 1..];
        let end = rest.find('"').unwrap_or(rest.len());
        out.push_str(&clip(&rest[..end]));
        rest = &rest[end..];
        if let Some(stripped) = rest.strip_prefix('"') {
            out.push('"');
            rest = stripped;
        }
    }
    out.push_str(rest);
    for (from, to) in [
        ("struct RawSegment", "a `[[segments]]` table"),
        ("struct RawSim", "a `[[sims]]` table"),
        ("struct RawRule", "a rule table"),
        ("struct RawInbound", "an inbound rule table"),
        ("struct RawPolicy", "a policy"),
        ("invalid type: map", "invalid type: table or date-time"),
        ("a sequence", "an array"),
        ("expected sequence", "expected an array"),
        ("$__toml_private_datetime", "date-time"),
    ] {
        out = out.replace(from, to);
    }
    out
}

/// Every key the format does not know, with its place.
pub fn unknown_keys(source: &SourceMap<'_>, text: &str) -> Vec<PolicyError> {
    let Ok(document) = toml_edit::ImDocument::parse(text) else {
        return Vec::new(); // `parse` reports the syntax error.
    };
    let mut errors = Vec::new();
    let mut check = |table: &dyn TableLike, allowed: &[&str], place: &str| {
        for (key, span) in table.keys_with_spans() {
            if !allowed.contains(&key.as_str()) {
                errors.push(source.error(
                    &span,
                    format!(
                        "unknown key `{key}` in {place}; expected one of: {}",
                        allowed.join(", ")
                    ),
                ));
            }
        }
    };
    let root = document.as_table();
    check(root, TOP_KEYS, "the top level");
    for (section, keys) in [("segments", SEGMENT_KEYS), ("sims", SIM_KEYS)] {
        for table in tables_in(root.get(section)) {
            check(table.as_ref(), keys, &format!("a `[[{section}]]` entry"));
            for rule in tables_in(table.get_item("rules")) {
                check(rule.as_ref(), RULE_KEYS, "a rule");
            }
            for rule in tables_in(table.get_item("inbound")) {
                check(rule.as_ref(), INBOUND_KEYS, "an inbound rule");
            }
            if let Some(alerts) = table.get_item("alerts").and_then(single_table) {
                check(alerts.as_ref(), ALERT_KEYS, "`alerts`");
            }
        }
    }
    errors
}

/// A TOML table, standard or inline.
trait TableLike {
    fn keys_with_spans(&self) -> Vec<(String, Range<usize>)>;
}

impl TableLike for toml_edit::Table {
    fn keys_with_spans(&self) -> Vec<(String, Range<usize>)> {
        self.iter()
            .map(|(key, _)| {
                let span = self.key(key).and_then(toml_edit::Key::span).unwrap_or(0..0);
                (key.to_owned(), span)
            })
            .collect()
    }
}

impl TableLike for toml_edit::InlineTable {
    fn keys_with_spans(&self) -> Vec<(String, Range<usize>)> {
        self.iter()
            .map(|(key, _)| {
                let span = self.key(key).and_then(toml_edit::Key::span).unwrap_or(0..0);
                (key.to_owned(), span)
            })
            .collect()
    }
}

/// Owned view of one table of an array, whichever way it was written.
enum AnyTable<'a> {
    Table(&'a toml_edit::Table),
    Inline(&'a toml_edit::InlineTable),
}

impl AnyTable<'_> {
    fn as_ref(&self) -> &dyn TableLike {
        match self {
            AnyTable::Table(table) => *table,
            AnyTable::Inline(table) => *table,
        }
    }

    fn get_item(&self, key: &str) -> Option<ItemRef<'_>> {
        match self {
            AnyTable::Table(table) => table.get(key).map(ItemRef::Item),
            AnyTable::Inline(table) => table.get(key).map(ItemRef::Value),
        }
    }
}

enum ItemRef<'a> {
    Item(&'a toml_edit::Item),
    Value(&'a toml_edit::Value),
}

/// A single table, standard or inline.
fn single_table(item: ItemRef<'_>) -> Option<AnyTable<'_>> {
    match item {
        ItemRef::Item(toml_edit::Item::Table(table)) => Some(AnyTable::Table(table)),
        ItemRef::Item(toml_edit::Item::Value(toml_edit::Value::InlineTable(table)))
        | ItemRef::Value(toml_edit::Value::InlineTable(table)) => Some(AnyTable::Inline(table)),
        _ => None,
    }
}

fn tables_in<'a>(item: Option<impl Into<ItemRef<'a>>>) -> Vec<AnyTable<'a>> {
    let values = |array: &'a toml_edit::Array| {
        array
            .iter()
            .filter_map(|value| value.as_inline_table().map(AnyTable::Inline))
            .collect()
    };
    match item.map(Into::into) {
        Some(ItemRef::Item(toml_edit::Item::ArrayOfTables(array))) => {
            array.iter().map(AnyTable::Table).collect()
        }
        Some(ItemRef::Item(toml_edit::Item::Value(toml_edit::Value::Array(array))))
        | Some(ItemRef::Value(toml_edit::Value::Array(array))) => values(array),
        _ => Vec::new(),
    }
}

impl<'a> From<&'a toml_edit::Item> for ItemRef<'a> {
    fn from(item: &'a toml_edit::Item) -> Self {
        ItemRef::Item(item)
    }
}
