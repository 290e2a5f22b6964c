//! IPFIX messages (RFC 7011) for per-device flow records: the templates, the data records and
//! the packing of both into messages that fit the path MTU. Pure: no sockets, no clocks.
//!
//! Two templates, one per address family, carry the same fields in the same order:
//!
//! | IE | name | length |
//! |---|---|---|
//! | 152 | flowStartMilliseconds | 8 |
//! | 153 | flowEndMilliseconds | 8 |
//! | 8 / 27 | sourceIPv4Address / sourceIPv6Address | 4 / 16 |
//! | 12 / 28 | destinationIPv4Address / destinationIPv6Address | 4 / 16 |
//! | 7 | sourceTransportPort | 2 |
//! | 11 | destinationTransportPort | 2 |
//! | 4 | protocolIdentifier | 1 |
//! | 2 | packetDeltaCount | 8 |
//! | 1 | octetDeltaCount | 8 |
//! | 136 | flowEndReason | 1 |
//! | 89 | forwardingStatus | 1 (unsigned8, RFC 7270 §4.12) |
//! | 61 | flowDirection | 1 (0 ingress: toward the device, 1 egress: from it) |
//! | 455 | mobileIMSI | variable (string) |
//! | 456 | mobileMSISDN | variable (string, empty when the SIM has none) |
//! | PEN 32473 / 1 | enforcerSegment | variable (string) |
//! | PEN 32473 / 2 | enforcerRule | variable (string) |
//! | PEN 32473 / 3 | enforcerReason | variable (string: `rule`, `inbound`, `audit` for sessions; the drop reason, `no_rule`, `spoofed`, ..., for drops) |
//!
//! The enterprise number is 32473, IANA's "example enterprise number for documentation use"
//! (RFC 5612): a placeholder until the project registers its own.

use std::net::IpAddr;

/// IPFIX version number (RFC 7011 §3.1).
pub const VERSION: u16 = 10;
/// Set id of a template set (RFC 7011 §3.3.2).
pub const TEMPLATE_SET: u16 = 2;
/// Template id of IPv4 flow records.
pub const TEMPLATE_V4: u16 = 256;
/// Template id of IPv6 flow records.
pub const TEMPLATE_V6: u16 = 257;
/// The private enterprise number of the enterprise-specific elements (RFC 5612's example
/// number, a placeholder).
pub const PEN: u32 = 32473;
/// Enterprise element: the device's segment name (string).
pub const ENTERPRISE_SEGMENT: u16 = 1;
/// Enterprise element: the rule that allowed the flow (string).
pub const ENTERPRISE_RULE: u16 = 2;
/// Enterprise element: why the flow passed or was dropped (string).
pub const ENTERPRISE_REASON: u16 = 3;
/// Message header length (RFC 7011 §3.1).
const HEADER_LEN: usize = 16;
/// Set header length (RFC 7011 §3.3.2).
const SET_HEADER_LEN: usize = 4;
/// Length in a field specifier that marks a variable-length field (RFC 7011 §7).
const VARIABLE: u16 = 65535;
/// Strings longer than this are cut (at a character boundary) so a record always fits.
const MAX_STRING: usize = 240;

/// IANA information element ids used here (IANA "IPFIX Information Elements" registry).
pub mod ie {
    /// octetDeltaCount, unsigned64.
    pub const OCTET_DELTA_COUNT: u16 = 1;
    /// packetDeltaCount, unsigned64.
    pub const PACKET_DELTA_COUNT: u16 = 2;
    /// protocolIdentifier, unsigned8.
    pub const PROTOCOL_IDENTIFIER: u16 = 4;
    /// sourceTransportPort, unsigned16.
    pub const SOURCE_TRANSPORT_PORT: u16 = 7;
    /// sourceIPv4Address.
    pub const SOURCE_IPV4_ADDRESS: u16 = 8;
    /// destinationTransportPort, unsigned16.
    pub const DESTINATION_TRANSPORT_PORT: u16 = 11;
    /// destinationIPv4Address.
    pub const DESTINATION_IPV4_ADDRESS: u16 = 12;
    /// sourceIPv6Address.
    pub const SOURCE_IPV6_ADDRESS: u16 = 27;
    /// destinationIPv6Address.
    pub const DESTINATION_IPV6_ADDRESS: u16 = 28;
    /// flowDirection, unsigned8: 0 ingress, 1 egress.
    pub const FLOW_DIRECTION: u16 = 61;
    /// forwardingStatus, unsigned8 here (RFC 7270 §4.12).
    pub const FORWARDING_STATUS: u16 = 89;
    /// flowEndReason, unsigned8.
    pub const FLOW_END_REASON: u16 = 136;
    /// flowStartMilliseconds, dateTimeMilliseconds.
    pub const FLOW_START_MILLISECONDS: u16 = 152;
    /// flowEndMilliseconds, dateTimeMilliseconds.
    pub const FLOW_END_MILLISECONDS: u16 = 153;
    /// mobileIMSI, string (3GPP TS 23.003 §2.2).
    pub const MOBILE_IMSI: u16 = 455;
    /// mobileMSISDN, string (3GPP TS 23.003 §3.3).
    pub const MOBILE_MSISDN: u16 = 456;
}

/// flowEndReason (IE 136) values.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EndReason {
    /// No packet for the idle timeout.
    Idle = 1,
    /// The active timeout passed while the flow went on.
    Active = 2,
    /// The end of the flow was seen (TCP FIN both ways, RST).
    EndOfFlow = 3,
    /// Ended from outside: the daemon stopping, or a policy change revoking the session.
    Forced = 4,
    /// The exporter ran out of resources.
    LackOfResources = 5,
}

/// forwardingStatus (IE 89) as unsigned8: the top two bits the status, the low six the reason
/// (IANA "forwardingStatus" sub-registry, RFC 7270 §4.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum ForwardingStatus {
    /// 64: forwarded, reason unknown.
    Forwarded = 64,
    /// 128: dropped, reason unknown.
    Dropped = 128,
    /// 129: dropped, ACL deny.
    DroppedAclDeny = 129,
    /// 140: dropped, reverse path forwarding (a source not allowed where it came from).
    DroppedRpf = 140,
}

/// flowDirection (IE 61) from the device's point of view: its traffic leaves the device
/// (egress) or comes to it (ingress).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Direction {
    /// Toward the device.
    ToDevice = 0,
    /// From the device.
    FromDevice = 1,
}

/// One flow record: a session's traffic in one direction over one reporting interval.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FlowRecord {
    /// First packet of the interval (or the interval's start), Unix milliseconds.
    pub start_ms: u64,
    /// Last packet of the interval, Unix milliseconds.
    pub end_ms: u64,
    /// Source address; both addresses have the same family.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (TCP/UDP; 0 otherwise).
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Packets in the interval.
    pub packets: u64,
    /// IP bytes in the interval (the IP header included, RFC 7012 octetDeltaCount).
    pub octets: u64,
    /// Why the record was exported.
    pub end_reason: EndReason,
    /// Forwarded or dropped, and why.
    pub status: ForwardingStatus,
    /// From or toward the device.
    pub direction: Direction,
    /// The SIM's IMSI and MSISDN, the device's segment and the rule that allowed the flow
    /// (empty for drops): shared by the records of one session (both directions), so that a
    /// record costs no string copies.
    pub names: std::sync::Arc<super::FlowNames>,
    /// Why it passed (`rule`, `inbound`, `audit`) or was dropped (`no_rule`, `spoofed`, ...).
    pub reason: &'static str,
}

/// A field specifier: IE id, length, enterprise number (0 for IANA elements).
type Field = (u16, u16, u32);

fn fields(v6: bool) -> [Field; 17] {
    let (src, dst, addr_len) = if v6 {
        (ie::SOURCE_IPV6_ADDRESS, ie::DESTINATION_IPV6_ADDRESS, 16)
    } else {
        (ie::SOURCE_IPV4_ADDRESS, ie::DESTINATION_IPV4_ADDRESS, 4)
    };
    [
        (ie::FLOW_START_MILLISECONDS, 8, 0),
        (ie::FLOW_END_MILLISECONDS, 8, 0),
        (src, addr_len, 0),
        (dst, addr_len, 0),
        (ie::SOURCE_TRANSPORT_PORT, 2, 0),
        (ie::DESTINATION_TRANSPORT_PORT, 2, 0),
        (ie::PROTOCOL_IDENTIFIER, 1, 0),
        (ie::PACKET_DELTA_COUNT, 8, 0),
        (ie::OCTET_DELTA_COUNT, 8, 0),
        (ie::FLOW_END_REASON, 1, 0),
        (ie::FORWARDING_STATUS, 1, 0),
        (ie::FLOW_DIRECTION, 1, 0),
        (ie::MOBILE_IMSI, VARIABLE, 0),
        (ie::MOBILE_MSISDN, VARIABLE, 0),
        (ENTERPRISE_SEGMENT, VARIABLE, PEN),
        (ENTERPRISE_RULE, VARIABLE, PEN),
        (ENTERPRISE_REASON, VARIABLE, PEN),
    ]
}

/// The template set announcing both templates: set header, then each template record
/// (RFC 7011 §3.4.1).
#[must_use]
pub fn template_set() -> Vec<u8> {
    let mut set = vec![0u8; SET_HEADER_LEN];
    for (id, v6) in [(TEMPLATE_V4, false), (TEMPLATE_V6, true)] {
        let fields = fields(v6);
        set.extend_from_slice(&id.to_be_bytes());
        set.extend_from_slice(&u16::try_from(fields.len()).unwrap_or(0).to_be_bytes());
        for (id, len, pen) in fields {
            if pen == 0 {
                set.extend_from_slice(&id.to_be_bytes());
                set.extend_from_slice(&len.to_be_bytes());
            } else {
                set.extend_from_slice(&(id | 0x8000).to_be_bytes());
                set.extend_from_slice(&len.to_be_bytes());
                set.extend_from_slice(&pen.to_be_bytes());
            }
        }
    }
    close_set(&mut set, 0, TEMPLATE_SET);
    set
}

/// Write the set header of the set that starts at `at` in `buf`.
fn close_set(buf: &mut [u8], at: usize, id: u16) {
    let len = u16::try_from(buf.len() - at).unwrap_or(u16::MAX);
    buf[at..at + 2].copy_from_slice(&id.to_be_bytes());
    buf[at + 2..at + 4].copy_from_slice(&len.to_be_bytes());
}

/// `text`, cut to at most `max` (and [`MAX_STRING`]) bytes at a character boundary.
fn bounded(text: &str, max: usize) -> &str {
    let max = max.min(MAX_STRING);
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// Append a variable-length string of at most `max` bytes (RFC 7011 §7: one length byte
/// below 255).
fn put_string(out: &mut Vec<u8>, text: &str, max: usize) {
    let text = bounded(text, max);
    // `bounded` keeps it below 255 bytes: the one-byte length form.
    out.push(u8::try_from(text.len()).unwrap_or(0));
    out.extend_from_slice(text.as_bytes());
}

/// Append `addr` in the record's family (`v6`); a session's two endpoints always share it.
fn put_addr(out: &mut Vec<u8>, addr: IpAddr, v6: bool) {
    match (addr, v6) {
        (IpAddr::V4(a), false) => out.extend_from_slice(&a.octets()),
        (IpAddr::V6(a), true) => out.extend_from_slice(&a.octets()),
        (IpAddr::V4(a), true) => out.extend_from_slice(&a.to_ipv6_mapped().octets()),
        (IpAddr::V6(a), false) => out.extend_from_slice(
            &a.to_ipv4_mapped()
                .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED)
                .octets(),
        ),
    }
}

impl FlowRecord {
    /// The template this record is encoded with.
    #[must_use]
    pub fn template(&self) -> u16 {
        if self.src.is_ipv6() {
            TEMPLATE_V6
        } else {
            TEMPLATE_V4
        }
    }

    /// Append the record's encoding under [`FlowRecord::template`].
    pub fn encode(&self, out: &mut Vec<u8>) {
        self.encode_bounded(out, MAX_STRING);
    }

    /// Like [`FlowRecord::encode`], each string cut to at most `max_string` bytes.
    pub fn encode_bounded(&self, out: &mut Vec<u8>, max_string: usize) {
        out.extend_from_slice(&self.start_ms.to_be_bytes());
        out.extend_from_slice(&self.end_ms.to_be_bytes());
        let v6 = self.src.is_ipv6();
        put_addr(out, self.src, v6);
        put_addr(out, self.dst, v6);
        out.extend_from_slice(&self.src_port.to_be_bytes());
        out.extend_from_slice(&self.dst_port.to_be_bytes());
        out.push(self.proto);
        out.extend_from_slice(&self.packets.to_be_bytes());
        out.extend_from_slice(&self.octets.to_be_bytes());
        out.push(self.end_reason as u8);
        out.push(self.status as u8);
        out.push(self.direction as u8);
        for text in [
            self.names.imsi.as_str(),
            &self.names.msisdn,
            &self.names.segment,
            &self.names.rule,
            self.reason,
        ] {
            put_string(out, text, max_string);
        }
    }
}

/// Packs records into IPFIX messages for one transport session (one collector): keeps its
/// sequence number (RFC 7011 §3.1: data records sent before this message, modulo 2^32;
/// templates do not count).
#[derive(Debug, Clone)]
pub struct Packer {
    /// Observation domain id of every message.
    pub domain: u32,
    /// The largest message, bytes (the path MTU less the IP and UDP headers).
    pub max_message: usize,
    /// The longest string a record carries, so that a record fits a message on its own.
    max_string: usize,
    sequence: u32,
}

/// Bytes of a record without its strings (IPv6, the larger).
const FIXED_RECORD: usize = 8 + 8 + 16 + 16 + 2 + 2 + 1 + 8 + 8 + 1 + 1 + 1;
/// Strings per record.
const STRINGS: usize = 5;

impl Packer {
    /// A packer for messages of at most `max_message` bytes (at least 512). Strings are cut
    /// so that a record always fits a message on its own (83 bytes each at 512, 240 from 1,332).
    #[must_use]
    pub fn new(domain: u32, max_message: usize) -> Self {
        let max_message = max_message.clamp(512, usize::from(u16::MAX));
        let room = max_message - HEADER_LEN - SET_HEADER_LEN - FIXED_RECORD;
        Self {
            domain,
            max_message,
            max_string: (room / STRINGS - 1).min(MAX_STRING),
            sequence: 0,
        }
    }

    /// The sequence number the next message carries.
    #[must_use]
    pub fn sequence(&self) -> u32 {
        self.sequence
    }

    /// The messages carrying `records`, in order, exported at `export_time` (Unix seconds);
    /// the template set leads the first message when `templates` (also when `records` is
    /// empty: a template-only message).
    #[must_use]
    pub fn pack(
        &mut self,
        records: &[FlowRecord],
        templates: bool,
        export_time: u32,
    ) -> Vec<Vec<u8>> {
        let mut messages = Vec::new();
        let mut message = self.start(export_time);
        if templates {
            message.extend_from_slice(&template_set());
        }
        let mut in_message = 0u32;
        let mut set: Option<(usize, u16)> = None;
        let mut encoded = Vec::with_capacity(256);
        for record in records {
            encoded.clear();
            record.encode_bounded(&mut encoded, self.max_string);
            let template = record.template();
            let opens_set = set.is_none_or(|(_, id)| id != template);
            let need = encoded.len() + if opens_set { SET_HEADER_LEN } else { 0 };
            // Full: send what it holds (records, or the templates alone) and start another.
            if message.len() + need > self.max_message && message.len() > HEADER_LEN {
                if let Some((at, id)) = set.take() {
                    close_set(&mut message, at, id);
                }
                messages.push(self.finish(message, in_message));
                message = self.start(export_time);
                in_message = 0;
            }
            if set.is_none_or(|(_, id)| id != template) {
                if let Some((at, id)) = set.take() {
                    close_set(&mut message, at, id);
                }
                set = Some((message.len(), template));
                message.extend_from_slice(&[0; SET_HEADER_LEN]);
            }
            message.extend_from_slice(&encoded);
            in_message += 1;
        }
        if let Some((at, id)) = set.take() {
            close_set(&mut message, at, id);
        }
        if in_message > 0 || templates {
            messages.push(self.finish(message, in_message));
        }
        messages
    }

    fn start(&self, export_time: u32) -> Vec<u8> {
        let mut message = Vec::with_capacity(self.max_message);
        message.extend_from_slice(&VERSION.to_be_bytes());
        message.extend_from_slice(&[0, 0]);
        message.extend_from_slice(&export_time.to_be_bytes());
        message.extend_from_slice(&self.sequence.to_be_bytes());
        message.extend_from_slice(&self.domain.to_be_bytes());
        debug_assert_eq!(message.len(), HEADER_LEN);
        message
    }

    fn finish(&mut self, mut message: Vec<u8>, records: u32) -> Vec<u8> {
        let len = u16::try_from(message.len()).unwrap_or(u16::MAX);
        message[2..4].copy_from_slice(&len.to_be_bytes());
        self.sequence = self.sequence.wrapping_add(records);
        message
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(v6: bool, imsi: &str) -> FlowRecord {
        let (src, dst): (IpAddr, IpAddr) = if v6 {
            (
                "fd00:64::1".parse().unwrap(),
                "2001:db8::20".parse().unwrap(),
            )
        } else {
            ("10.64.0.2".parse().unwrap(), "192.0.2.53".parse().unwrap())
        };
        FlowRecord {
            start_ms: 1_764_000_000_123,
            end_ms: 1_764_000_001_456,
            src,
            dst,
            src_port: 40_000,
            dst_port: 53,
            proto: 17,
            packets: 7,
            octets: 980,
            end_reason: EndReason::Active,
            status: ForwardingStatus::Forwarded,
            direction: Direction::FromDevice,
            names: std::sync::Arc::new(crate::telemetry::FlowNames {
                imsi: imsi.to_owned(),
                msisdn: "+491700000002".to_owned(),
                segment: "meters".to_owned(),
                rule: "segment meters @ policy.toml:12".to_owned(),
            }),
            reason: "rule",
        }
    }

    /// Every data record of `messages` as decoded by netflow_parser: field name (IANA name,
    /// or `PEN/id`) → value as JSON, with each message's header.
    #[allow(clippy::type_complexity)]
    fn decode(
        messages: &[Vec<u8>],
    ) -> (
        Vec<serde_json::Value>,
        Vec<Vec<(String, serde_json::Value)>>,
    ) {
        let (headers, per_message) = decode_each(messages);
        (headers, per_message.into_iter().flatten().collect())
    }

    /// Like [`decode`], the records per message.
    #[allow(clippy::type_complexity)]
    fn decode_each(
        messages: &[Vec<u8>],
    ) -> (
        Vec<serde_json::Value>,
        Vec<Vec<Vec<(String, serde_json::Value)>>>,
    ) {
        let mut parser = netflow_parser::NetflowParser::default();
        let mut headers = Vec::new();
        let mut records = Vec::new();
        for message in messages {
            let out = parser.parse_bytes(message);
            assert!(out.error.is_none(), "netflow_parser: {:?}", out.error);
            let json = serde_json::to_value(&out.packets).expect("json");
            let packet = &json[0]["IPFix"];
            headers.push(packet["header"].clone());
            let mut in_message = Vec::new();
            for set in packet["flowsets"].as_array().expect("sets") {
                let Some(data) = set["body"]["Data"]["fields"].as_array() else {
                    continue;
                };
                for fields in data {
                    let mut record = Vec::new();
                    for pair in fields.as_array().expect("record") {
                        let name = match &pair[0] {
                            serde_json::Value::Object(o) if o.contains_key("IANA") => {
                                o["IANA"].as_str().expect("name").to_owned()
                            }
                            other => format!(
                                "{}/{}",
                                other["Enterprise"]["enterprise_number"],
                                other["Enterprise"]["field_number"]
                            ),
                        };
                        record.push((name, pair[1].clone()));
                    }
                    in_message.push(record);
                }
            }
            records.push(in_message);
        }
        (headers, records)
    }

    fn field<'a>(record: &'a [(String, serde_json::Value)], name: &str) -> &'a serde_json::Value {
        &record
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("no {name} in {record:?}"))
            .1
    }

    fn text(value: &serde_json::Value) -> String {
        let bytes: Vec<u8> = value["Vec"]
            .as_array()
            .map(|v| v.iter().map(|b| b.as_u64().unwrap_or(0) as u8).collect())
            .unwrap_or_default();
        String::from_utf8(bytes).unwrap_or_default()
    }

    /// An independent decoder reads back every field of an IPv4 and an IPv6 record, the
    /// header (version, domain, sequence) and both templates.
    #[test]
    fn records_decode_with_an_independent_parser() {
        let mut packer = Packer::new(7, 1472);
        let mut v6 = record(true, "001010000000003");
        v6.direction = Direction::ToDevice;
        v6.end_reason = EndReason::Idle;
        v6.status = ForwardingStatus::DroppedAclDeny;
        v6.proto = 6;
        let messages = packer.pack(
            &[record(false, "001010000000002"), v6.clone()],
            true,
            1_764_000_002,
        );
        assert_eq!(messages.len(), 1);
        let (headers, records) = decode(&messages);
        assert_eq!(headers[0]["version"], 10);
        assert_eq!(headers[0]["observation_domain_id"], 7);
        assert_eq!(headers[0]["sequence_number"], 0);
        assert_eq!(headers[0]["export_time"], 1_764_000_002);
        assert_eq!(headers[0]["length"], messages[0].len());
        assert_eq!(records.len(), 2);
        let r = &records[0];
        assert_eq!(
            field(r, "FlowStartMilliseconds")["Duration"]["secs"],
            1_764_000_000
        );
        assert_eq!(
            field(r, "FlowStartMilliseconds")["Duration"]["nanos"],
            123_000_000
        );
        assert_eq!(
            field(r, "FlowEndMilliseconds")["Duration"]["nanos"],
            456_000_000
        );
        assert_eq!(field(r, "SourceIpv4address")["Ip4Addr"], "10.64.0.2");
        assert_eq!(field(r, "DestinationIpv4address")["Ip4Addr"], "192.0.2.53");
        assert_eq!(field(r, "SourceTransportPort")["DataNumber"]["U16"], 40_000);
        assert_eq!(
            field(r, "DestinationTransportPort")["DataNumber"]["U16"],
            53
        );
        assert_eq!(field(r, "ProtocolIdentifier")["ProtocolType"], "Udp");
        assert_eq!(field(r, "PacketDeltaCount")["DataNumber"]["U64"], 7);
        assert_eq!(field(r, "OctetDeltaCount")["DataNumber"]["U64"], 980);
        assert_eq!(field(r, "FlowEndReason")["FlowEndReason"], "ActiveTimeout");
        assert_eq!(field(r, "FlowDirection")["DataNumber"]["U8"], 1);
        // 64: forwarded (01), reason unknown (0).
        assert_eq!(
            field(r, "ForwardingStatus"),
            &serde_json::json!({"ForwardingStatus": {"Forwarded": 0}})
        );
        assert_eq!(field(r, "MobileImsi")["String"], "001010000000002");
        assert_eq!(field(r, "MobileMsisdn")["String"], "+491700000002");
        assert_eq!(text(field(r, "32473/1")), "meters");
        assert_eq!(text(field(r, "32473/2")), "segment meters @ policy.toml:12");
        assert_eq!(text(field(r, "32473/3")), "rule");
        let r = &records[1];
        assert_eq!(field(r, "SourceIpv6address")["Ip6Addr"], "fd00:64::1");
        assert_eq!(
            field(r, "DestinationIpv6address")["Ip6Addr"],
            "2001:db8::20"
        );
        assert_eq!(field(r, "ProtocolIdentifier")["ProtocolType"], "Tcp");
        assert_eq!(field(r, "FlowEndReason")["FlowEndReason"], "IdleTimeout");
        assert_eq!(field(r, "FlowDirection")["DataNumber"]["U8"], 0);
        assert_eq!(field(r, "MobileImsi")["String"], "001010000000003");
        // 129 = status 10 (dropped), reason 1 (ACL deny).
        // 129: the top two bits 10 (dropped), the low six 1 (ACL deny).
        assert_eq!(
            field(r, "ForwardingStatus"),
            &serde_json::json!({"ForwardingStatus": {"Dropped": 1}})
        );
    }

    /// Many records: every message fits the limit, decodes, and carries the sequence number
    /// of the records sent before it; templates lead only the first.
    #[test]
    fn messages_fit_the_mtu_and_number_the_records() {
        let records: Vec<FlowRecord> = (0..500)
            .map(|i| record(i % 3 == 0, &format!("0010100000{i:05}")))
            .collect();
        let mut packer = Packer::new(1, 1472);
        let messages = packer.pack(&records, true, 1);
        assert!(messages.len() > 10, "{} messages", messages.len());
        let (headers, decoded) = decode(&messages);
        assert_eq!(decoded.len(), 500);
        let (_, per_message) = decode_each(&messages);
        let mut sent = 0u64;
        for ((message, header), records) in messages.iter().zip(&headers).zip(&per_message) {
            assert!(message.len() <= 1472, "{} bytes", message.len());
            assert_eq!(header["sequence_number"], sent);
            sent += records.len() as u64;
        }
        assert_eq!(packer.sequence(), 500);
        // The IMSIs come back in order.
        for (i, r) in decoded.iter().enumerate() {
            assert_eq!(
                field(r, "MobileImsi")["String"],
                format!("0010100000{i:05}")
            );
        }
        // A template-only message: no record, the sequence unchanged.
        let refresh = packer.pack(&[], true, 2);
        assert_eq!(refresh.len(), 1);
        assert_eq!(
            u32::from_be_bytes(refresh[0][8..12].try_into().unwrap()),
            500
        );
        assert_eq!(&refresh[0][16..18], &TEMPLATE_SET.to_be_bytes());
    }

    /// A string longer than a record allows is cut at a character boundary and still decodes.
    #[test]
    fn long_strings_are_cut_at_a_character_boundary() {
        let mut r = record(false, "001010000000002");
        std::sync::Arc::make_mut(&mut r.names).rule = "é".repeat(200);
        let messages = Packer::new(1, 1472).pack(&[r], true, 1);
        let (_, decoded) = decode(&messages);
        let rule = text(field(&decoded[0], "32473/2"));
        assert_eq!(rule, "é".repeat(MAX_STRING / 2));
    }

    /// At the smallest MTU, records with the longest strings still fit each message, and
    /// the templates go alone when no record fits beside them.
    #[test]
    fn the_smallest_messages_hold_the_longest_records() {
        let mut r = record(true, "001010000000002");
        let names = std::sync::Arc::make_mut(&mut r.names);
        names.rule = "x".repeat(300);
        names.segment = "y".repeat(300);
        names.msisdn = "z".repeat(300);
        r.reason = "w".repeat(300).leak();
        let mut packer = Packer::new(1, 512);
        let messages = packer.pack(&[r.clone(), r], true, 1);
        assert!(
            messages.iter().all(|m| m.len() <= 512),
            "{:?}",
            messages.iter().map(Vec::len).collect::<Vec<_>>()
        );
        let (_, decoded) = decode(&messages);
        assert_eq!(decoded.len(), 2);
        assert_eq!(text(field(&decoded[0], "32473/2")).len(), 83);
    }
}
