//! The RADIUS accounting wire format: reading an Accounting-Request (RFC 2866 §3, attributes of
//! RFC 2865 §5, RFC 2866 §5, RFC 3162 and the 3GPP vendor-specific attributes of 3GPP TS 29.061
//! §16.4.7), checking its Request Authenticator, and writing the Accounting-Response.
//!
//! Parsing reads only the datagram it is given: nothing is allocated beyond copies of the
//! attributes it keeps (each at most 253 bytes, a datagram at most 4,096), and every length is
//! checked before it is used, so any bytes give an [`Accounting`] or a [`PacketError`].

use std::net::{Ipv4Addr, Ipv6Addr};

use md5::{Digest as _, Md5};

/// Accounting-Request (RFC 2866 §3).
pub const ACCOUNTING_REQUEST: u8 = 4;
/// Accounting-Response (RFC 2866 §3).
pub const ACCOUNTING_RESPONSE: u8 = 5;
/// The smallest RADIUS packet: code, identifier, length and authenticator (RFC 2865 §3).
pub const HEADER_LEN: usize = 20;
/// The largest RADIUS packet (RFC 2865 §3).
pub const MAX_LEN: usize = 4096;
/// 3GPP's vendor id (IANA private enterprise number 10415).
pub const VENDOR_3GPP: u32 = 10415;

/// RFC 2865/2866 attribute types read here.
mod attr {
    pub const FRAMED_IP_ADDRESS: u8 = 8;
    pub const VENDOR_SPECIFIC: u8 = 26;
    pub const CALLED_STATION_ID: u8 = 30;
    pub const CALLING_STATION_ID: u8 = 31;
    pub const ACCT_STATUS_TYPE: u8 = 40;
    pub const ACCT_SESSION_ID: u8 = 44;
    pub const EVENT_TIMESTAMP: u8 = 55;
    pub const FRAMED_IPV6_PREFIX: u8 = 97;
}

/// 3GPP vendor-specific attribute types (TS 29.061 §16.4.7).
mod vsa {
    pub const IMSI: u8 = 1;
    pub const IMEISV: u8 = 20;
    pub const RAT_TYPE: u8 = 21;
    pub const USER_LOCATION_INFO: u8 = 22;
}

/// Acct-Status-Type (attribute 40, RFC 2866 §5.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusType {
    /// 1: a data session started.
    Start,
    /// 2: a data session ended.
    Stop,
    /// 3: a data session goes on (sent periodically and on changes).
    InterimUpdate,
    /// 7: the client (re)started: every session it had is gone.
    AccountingOn,
    /// 8: the client is going down: every session it had is gone.
    AccountingOff,
}

impl StatusType {
    fn from_code(code: u32) -> Option<Self> {
        Some(match code {
            1 => StatusType::Start,
            2 => StatusType::Stop,
            3 => StatusType::InterimUpdate,
            7 => StatusType::AccountingOn,
            8 => StatusType::AccountingOff,
            _ => return None,
        })
    }

    /// Its name as RFC 2866 spells it (`Start`, `Interim-Update`, ...).
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            StatusType::Start => "Start",
            StatusType::Stop => "Stop",
            StatusType::InterimUpdate => "Interim-Update",
            StatusType::AccountingOn => "Accounting-On",
            StatusType::AccountingOff => "Accounting-Off",
        }
    }
}

/// What an Accounting-Request says, as far as the enforcer reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accounting {
    /// Packet identifier (echoed in the response).
    pub identifier: u8,
    /// Acct-Status-Type.
    pub status: StatusType,
    /// Acct-Session-Id (44): the packet core's id of the data session; `None` if absent.
    pub session_id: Option<String>,
    /// 3GPP-IMSI (vendor 10415, type 1): 14 or 15 digits as sent (not yet checked).
    pub imsi: Option<String>,
    /// Framed-IP-Address (8).
    pub ipv4: Option<Ipv4Addr>,
    /// Framed-IPv6-Prefix (97, RFC 3162): the prefix address and length.
    pub ipv6: Option<(Ipv6Addr, u8)>,
    /// Calling-Station-Id (31): the MSISDN on a PGW/SMF (TS 29.061 §16.4.7.2).
    pub msisdn: Option<String>,
    /// Called-Station-Id (30): the APN/DNN.
    pub apn: Option<String>,
    /// 3GPP-IMEISV (type 20): the device's IMEI and software version, digits.
    pub imeisv: Option<String>,
    /// 3GPP-RAT-Type (type 21): radio access technology (TS 29.274 §8.17: 6 EUTRAN, 10 NR...).
    pub rat_type: Option<u8>,
    /// 3GPP-User-Location-Info (type 22), raw (its first byte is the location type).
    pub user_location: Option<Vec<u8>>,
    /// Event-Timestamp (55): Unix seconds when the event happened at the client.
    pub event_timestamp: Option<u32>,
}

impl Accounting {
    /// A request of `status` with packet identifier `identifier` and no attribute.
    #[must_use]
    pub const fn new(identifier: u8, status: StatusType) -> Self {
        Self {
            identifier,
            status,
            session_id: None,
            imsi: None,
            ipv4: None,
            ipv6: None,
            msisdn: None,
            apn: None,
            imeisv: None,
            rat_type: None,
            user_location: None,
            event_timestamp: None,
        }
    }
}

/// Why a datagram is not a valid Accounting-Request: it is dropped, counted by kind and never
/// answered (RFC 2866 §3: a request that is not valid is silently discarded).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PacketError {
    /// Shorter than its header or its Length field, or the Length is out of range.
    #[error("truncated or bad length: {0}")]
    Length(String),
    /// Not an Accounting-Request (the code is given).
    #[error("code {0} is not Accounting-Request (4)")]
    Code(u8),
    /// The Request Authenticator does not match the shared secret.
    #[error("the Request Authenticator does not match the client's shared secret")]
    Authenticator,
    /// An attribute is cut short, or has a length or value its type does not allow.
    #[error("malformed attribute {kind} at byte {offset}: {what}")]
    Attribute {
        /// Attribute type (for a 3GPP VSA, `26/10415/N`).
        kind: String,
        /// Offset of the attribute in the packet.
        offset: usize,
        /// What is wrong.
        what: &'static str,
    },
    /// Acct-Status-Type is missing or of a value the enforcer does not handle.
    #[error("Acct-Status-Type is missing or unknown ({0})")]
    Status(String),
}

impl PacketError {
    /// Metric label: `length`, `code`, `authenticator`, `attribute`, `status`.
    #[must_use]
    pub const fn kind(&self) -> &'static str {
        match self {
            PacketError::Length(_) => "length",
            PacketError::Code(_) => "code",
            PacketError::Authenticator => "authenticator",
            PacketError::Attribute { .. } => "attribute",
            PacketError::Status(_) => "status",
        }
    }
}

/// The packet's bytes up to its Length field, checked: at least a header, at most 4,096, not
/// longer than the datagram (octets beyond Length are padding, RFC 2865 §3).
fn framed(datagram: &[u8]) -> Result<&[u8], PacketError> {
    if datagram.len() < HEADER_LEN {
        return Err(PacketError::Length(format!(
            "{} bytes, less than a header",
            datagram.len()
        )));
    }
    let length = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    if !(HEADER_LEN..=MAX_LEN).contains(&length) || length > datagram.len() {
        return Err(PacketError::Length(format!(
            "Length {length} in a datagram of {} bytes",
            datagram.len()
        )));
    }
    Ok(&datagram[..length])
}

/// Whether the Request Authenticator of `packet` (already [`framed`]) is right for `secret`:
/// MD5(Code + Identifier + Length + 16 zero octets + attributes + secret) (RFC 2866 §3).
fn authentic(packet: &[u8], secret: &[u8]) -> bool {
    let mut md5 = Md5::new();
    md5.update(&packet[..4]);
    md5.update([0u8; 16]);
    md5.update(&packet[HEADER_LEN..]);
    md5.update(secret);
    let digest = md5.finalize();
    // Not secret-dependent timing worth a constant-time compare: the digest is public once
    // sent, and a mismatch is answered by silence either way.
    digest.as_slice() == &packet[4..HEADER_LEN]
}

/// Read an Accounting-Request from `datagram` and check it against the client's `secret`.
///
/// # Errors
/// [`PacketError`]: the datagram is to be dropped and counted, never answered.
pub fn parse(datagram: &[u8], secret: &[u8]) -> Result<Accounting, PacketError> {
    let packet = framed(datagram)?;
    if packet[0] != ACCOUNTING_REQUEST {
        return Err(PacketError::Code(packet[0]));
    }
    if !authentic(packet, secret) {
        return Err(PacketError::Authenticator);
    }
    let mut out = Accounting::new(packet[1], StatusType::Start);
    let mut status = None;
    let mut offset = HEADER_LEN;
    while offset < packet.len() {
        let bad = |what| PacketError::Attribute {
            kind: packet[offset].to_string(),
            offset,
            what,
        };
        let Some(&len) = packet.get(offset + 1) else {
            return Err(bad("no length octet"));
        };
        let len = usize::from(len);
        if len < 2 || offset + len > packet.len() {
            return Err(bad("its length runs past the packet or is below 2"));
        }
        let value = &packet[offset + 2..offset + len];
        match packet[offset] {
            attr::ACCT_STATUS_TYPE => {
                status = Some(integer(value).ok_or_else(|| bad("not 4 octets"))?);
            }
            // An empty Acct-Session-Id names no session.
            attr::ACCT_SESSION_ID => {
                out.session_id = Some(text(value).map_err(bad)?).filter(|s| !s.is_empty());
            }
            attr::FRAMED_IP_ADDRESS => {
                let octets: [u8; 4] = value.try_into().map_err(|_| bad("not 4 octets"))?;
                out.ipv4 = Some(Ipv4Addr::from(octets));
            }
            attr::FRAMED_IPV6_PREFIX => out.ipv6 = Some(ipv6_prefix(value).map_err(bad)?),
            attr::CALLING_STATION_ID => out.msisdn = Some(text(value).map_err(bad)?),
            attr::CALLED_STATION_ID => out.apn = Some(text(value).map_err(bad)?),
            attr::EVENT_TIMESTAMP => {
                out.event_timestamp = Some(integer(value).ok_or_else(|| bad("not 4 octets"))?);
            }
            attr::VENDOR_SPECIFIC => vendor_specific(value, offset, &mut out)?,
            _ => {}
        }
        offset += len;
    }
    out.status = match status {
        None => return Err(PacketError::Status("missing".into())),
        Some(code) => StatusType::from_code(code).ok_or(PacketError::Status(code.to_string()))?,
    };
    Ok(out)
}

/// A Vendor-Specific attribute's value (RFC 2865 §5.26): 3GPP's sub-attributes are read, other
/// vendors' skipped. `at` is the attribute's offset, for errors.
fn vendor_specific(value: &[u8], at: usize, out: &mut Accounting) -> Result<(), PacketError> {
    let bad = |kind: String, what| PacketError::Attribute {
        kind,
        offset: at,
        what,
    };
    let Some((vendor, mut rest)) = value.split_first_chunk::<4>() else {
        return Err(bad("26".into(), "shorter than its vendor id"));
    };
    if u32::from_be_bytes(*vendor) != VENDOR_3GPP {
        return Ok(());
    }
    while !rest.is_empty() {
        let kind = rest[0];
        let name = || format!("26/{VENDOR_3GPP}/{kind}");
        let len = usize::from(*rest.get(1).ok_or_else(|| bad(name(), "no length octet"))?);
        if len < 2 || len > rest.len() {
            return Err(bad(
                name(),
                "its length runs past the attribute or is below 2",
            ));
        }
        let sub = &rest[2..len];
        match kind {
            vsa::IMSI => out.imsi = Some(text(sub).map_err(|w| bad(name(), w))?),
            vsa::IMEISV => out.imeisv = Some(text(sub).map_err(|w| bad(name(), w))?),
            vsa::RAT_TYPE => {
                let &[rat] = sub else {
                    return Err(bad(name(), "not 1 octet"));
                };
                out.rat_type = Some(rat);
            }
            vsa::USER_LOCATION_INFO => out.user_location = Some(sub.to_vec()),
            _ => {}
        }
        rest = &rest[len..];
    }
    Ok(())
}

/// A 32-bit integer attribute (RFC 2865 §5: 4 octets, network order).
fn integer(value: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(value.try_into().ok()?))
}

/// A text attribute: UTF-8 without NUL (RFC 2865 §5, "text").
fn text(value: &[u8]) -> Result<String, &'static str> {
    if value.contains(&0) {
        return Err("text with a NUL octet");
    }
    std::str::from_utf8(value)
        .map(str::to_owned)
        .map_err(|_| "text that is not UTF-8")
}

/// Framed-IPv6-Prefix (RFC 3162 §2.3): reserved octet, prefix length (0-128), then only the
/// octets the length needs (at most 16).
fn ipv6_prefix(value: &[u8]) -> Result<(Ipv6Addr, u8), &'static str> {
    let [_, length, prefix @ ..] = value else {
        return Err("shorter than 2 octets");
    };
    if *length > 128 || prefix.len() > 16 || prefix.len() * 8 < usize::from(*length) {
        return Err("prefix length above 128 or beyond the octets given");
    }
    let mut octets = [0u8; 16];
    octets[..prefix.len()].copy_from_slice(prefix);
    Ok((Ipv6Addr::from(octets), *length))
}

/// The Accounting-Response to a request (RFC 2866 §3/§4.2): same identifier, no attributes,
/// Response Authenticator = MD5(Code + Identifier + Length + Request Authenticator + secret).
/// `request` is the request datagram as received (already parsed, so at least a header).
#[must_use]
pub fn response(request: &[u8], secret: &[u8]) -> [u8; HEADER_LEN] {
    let mut out = [0u8; HEADER_LEN];
    out[0] = ACCOUNTING_RESPONSE;
    out[1] = request[1];
    out[2..4].copy_from_slice(&(HEADER_LEN as u16).to_be_bytes());
    let mut md5 = Md5::new();
    md5.update(&out[..4]);
    md5.update(&request[4..HEADER_LEN]);
    md5.update(secret);
    out[4..].copy_from_slice(&md5.finalize());
    out
}

/// Build an Accounting-Request (for tests, benchmarks and the fuzzer's seeds): `attributes` as
/// `(type, value)` pairs, 3GPP VSAs given as `(26, vendor id + sub-attribute bytes)`; the
/// Request Authenticator is computed for `secret`.
///
/// # Panics
/// If an attribute value is longer than 253 bytes or the packet longer than 4,096.
#[must_use]
pub fn request(identifier: u8, attributes: &[(u8, Vec<u8>)], secret: &[u8]) -> Vec<u8> {
    let mut out = vec![ACCOUNTING_REQUEST, identifier, 0, 0];
    out.extend([0u8; 16]);
    for (kind, value) in attributes {
        let len = u8::try_from(value.len() + 2).expect("attribute of at most 253 bytes");
        out.push(*kind);
        out.push(len);
        out.extend(value);
    }
    assert!(out.len() <= MAX_LEN, "packet of at most 4,096 bytes");
    let length = u16::try_from(out.len()).expect("at most 4,096");
    out[2..4].copy_from_slice(&length.to_be_bytes());
    let mut md5 = Md5::new();
    md5.update(&out);
    md5.update(secret);
    let digest = md5.finalize();
    out[4..HEADER_LEN].copy_from_slice(&digest);
    out
}

/// Attribute builders for [`request`].
pub mod build {
    use std::net::{Ipv4Addr, Ipv6Addr};

    use super::{VENDOR_3GPP, attr, vsa};

    /// Acct-Status-Type: 1 Start, 2 Stop, 3 Interim-Update, 7 On, 8 Off.
    #[must_use]
    pub fn status(code: u32) -> (u8, Vec<u8>) {
        (attr::ACCT_STATUS_TYPE, code.to_be_bytes().to_vec())
    }
    /// Acct-Session-Id.
    #[must_use]
    pub fn session(id: &str) -> (u8, Vec<u8>) {
        (attr::ACCT_SESSION_ID, id.as_bytes().to_vec())
    }
    /// Framed-IP-Address.
    #[must_use]
    pub fn ipv4(address: Ipv4Addr) -> (u8, Vec<u8>) {
        (attr::FRAMED_IP_ADDRESS, address.octets().to_vec())
    }
    /// Framed-IPv6-Prefix with all 16 prefix octets.
    #[must_use]
    pub fn ipv6(prefix: Ipv6Addr, length: u8) -> (u8, Vec<u8>) {
        let mut value = vec![0, length];
        value.extend(prefix.octets());
        (attr::FRAMED_IPV6_PREFIX, value)
    }
    /// Calling-Station-Id (MSISDN).
    #[must_use]
    pub fn msisdn(text: &str) -> (u8, Vec<u8>) {
        (attr::CALLING_STATION_ID, text.as_bytes().to_vec())
    }
    /// Called-Station-Id (APN).
    #[must_use]
    pub fn apn(text: &str) -> (u8, Vec<u8>) {
        (attr::CALLED_STATION_ID, text.as_bytes().to_vec())
    }
    /// Event-Timestamp.
    #[must_use]
    pub fn timestamp(unix: u32) -> (u8, Vec<u8>) {
        (attr::EVENT_TIMESTAMP, unix.to_be_bytes().to_vec())
    }
    /// A 3GPP vendor-specific attribute.
    #[must_use]
    pub fn three_gpp(kind: u8, value: &[u8]) -> (u8, Vec<u8>) {
        let mut out = VENDOR_3GPP.to_be_bytes().to_vec();
        out.push(kind);
        out.push(u8::try_from(value.len() + 2).expect("sub-attribute of at most 253 bytes"));
        out.extend(value);
        (attr::VENDOR_SPECIFIC, out)
    }
    /// 3GPP-IMSI.
    #[must_use]
    pub fn imsi(digits: &str) -> (u8, Vec<u8>) {
        three_gpp(vsa::IMSI, digits.as_bytes())
    }
    /// 3GPP-IMEISV.
    #[must_use]
    pub fn imeisv(digits: &str) -> (u8, Vec<u8>) {
        three_gpp(vsa::IMEISV, digits.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    const SECRET: &[u8] = b"testing123";

    fn start() -> Vec<u8> {
        request(
            7,
            &[
                build::status(1),
                build::session("0A1B2C3D"),
                build::imsi("001010000000001"),
                build::ipv4(Ipv4Addr::new(10, 64, 0, 1)),
                build::ipv6("fd00:64:0:1::".parse().unwrap(), 64),
                build::msisdn("4915100000001"),
                build::apn("ev.example"),
                build::imeisv("3520990017614823"),
                build::three_gpp(21, &[6]),
                build::three_gpp(22, &[130, 1, 2, 3]),
                build::timestamp(1_700_000_000),
                (4, vec![127, 0, 0, 1]),
            ],
            SECRET,
        )
    }

    #[test]
    fn reads_every_attribute_of_a_start() {
        let got = parse(&start(), SECRET).unwrap();
        assert_eq!(got.identifier, 7);
        assert_eq!(got.status, StatusType::Start);
        assert_eq!(got.session_id.as_deref(), Some("0A1B2C3D"));
        assert_eq!(got.imsi.as_deref(), Some("001010000000001"));
        assert_eq!(got.ipv4, Some(Ipv4Addr::new(10, 64, 0, 1)));
        assert_eq!(got.ipv6, Some(("fd00:64:0:1::".parse().unwrap(), 64)));
        assert_eq!(got.msisdn.as_deref(), Some("4915100000001"));
        assert_eq!(got.apn.as_deref(), Some("ev.example"));
        assert_eq!(got.imeisv.as_deref(), Some("3520990017614823"));
        assert_eq!(got.rat_type, Some(6));
        assert_eq!(got.user_location, Some(vec![130, 1, 2, 3]));
        assert_eq!(got.event_timestamp, Some(1_700_000_000));
    }

    #[test]
    fn a_wrong_secret_or_a_changed_byte_fails_the_authenticator() {
        assert_eq!(parse(&start(), b"other"), Err(PacketError::Authenticator));
        let mut changed = start();
        let last = changed.len() - 1;
        changed[last] ^= 1;
        assert_eq!(parse(&changed, SECRET), Err(PacketError::Authenticator));
    }

    #[test]
    fn the_response_authenticator_follows_rfc_2866() {
        let request = start();
        let response = response(&request, SECRET);
        assert_eq!(response[0], ACCOUNTING_RESPONSE);
        assert_eq!(response[1], 7);
        assert_eq!(u16::from_be_bytes([response[2], response[3]]), 20);
        let mut md5 = Md5::new();
        md5.update([5, 7, 0, 20]);
        md5.update(&request[4..20]);
        md5.update(SECRET);
        assert_eq!(&response[4..], md5.finalize().as_slice());
    }

    #[test]
    fn bad_packets_name_what_is_wrong() {
        assert_eq!(parse(&[4, 1, 0], SECRET).unwrap_err().kind(), "length");
        let mut long = start();
        long[3] = long[3].wrapping_add(1);
        assert_eq!(parse(&long, SECRET).unwrap_err().kind(), "length");
        let mut code = start();
        code[0] = 1;
        assert_eq!(parse(&code, SECRET), Err(PacketError::Code(1)));
        // A Framed-IP-Address of 3 octets, properly signed: malformed, not unauthentic.
        let short = request(1, &[build::status(1), (8, vec![10, 0, 0])], SECRET);
        assert_eq!(parse(&short, SECRET).unwrap_err().kind(), "attribute");
        // An attribute whose length runs past the packet.
        let mut over = request(1, &[build::status(1), build::session("ab")], SECRET);
        let at = over.len() - 3;
        over[at] = 40;
        let over = resign(over);
        assert_eq!(parse(&over, SECRET).unwrap_err().kind(), "attribute");
        let none = request(1, &[build::session("ab")], SECRET);
        assert_eq!(parse(&none, SECRET).unwrap_err().kind(), "status");
        let unknown = request(1, &[build::status(15)], SECRET);
        assert_eq!(parse(&unknown, SECRET).unwrap_err().kind(), "status");
        let vsa = request(
            1,
            &[build::status(1), (26, vec![0, 0, 0x28, 0xaf, 1, 9, 1])],
            SECRET,
        );
        assert_eq!(parse(&vsa, SECRET).unwrap_err().kind(), "attribute");
    }

    #[test]
    fn padding_after_the_length_is_ignored() {
        let mut padded = start();
        padded.extend([0xff; 9]);
        assert!(parse(&padded, SECRET).is_ok());
    }

    /// Sign `packet` again after a test changed it.
    fn resign(mut packet: Vec<u8>) -> Vec<u8> {
        packet[4..20].fill(0);
        let mut md5 = Md5::new();
        md5.update(&packet);
        md5.update(SECRET);
        let digest = md5.finalize();
        packet[4..20].copy_from_slice(&digest);
        packet
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        /// Any bytes: an error or a request, never a panic.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes, SECRET);
        }

        /// Any attribute bytes behind a valid header and authenticator (so that the attribute
        /// walk, not the authenticator check, meets them): an error or a request, and what is
        /// kept is never longer than the packet.
        #[test]
        fn arbitrary_signed_attributes_never_panic(
            attributes in proptest::collection::vec(any::<u8>(), 0..600),
            status in 0u32..10,
        ) {
            let mut packet = request(3, &[build::status(status)], SECRET);
            packet.extend(&attributes);
            let length = u16::try_from(packet.len()).unwrap();
            packet[2..4].copy_from_slice(&length.to_be_bytes());
            let packet = resign(packet);
            if let Ok(got) = parse(&packet, SECRET) {
                let kept = got.session_id.map_or(0, |s| s.len())
                    + got.imsi.map_or(0, |s| s.len())
                    + got.msisdn.map_or(0, |s| s.len())
                    + got.apn.map_or(0, |s| s.len())
                    + got.imeisv.map_or(0, |s| s.len())
                    + got.user_location.map_or(0, |s| s.len());
                prop_assert!(kept <= packet.len());
            }
        }

        /// 3GPP VSAs of any content: an error or a request.
        #[test]
        fn arbitrary_3gpp_attributes_never_panic(
            subs in proptest::collection::vec((any::<u8>(), proptest::collection::vec(any::<u8>(), 0..40)), 0..5),
            cut in 0usize..8,
        ) {
            let mut value = VENDOR_3GPP.to_be_bytes().to_vec();
            for (kind, bytes) in &subs {
                value.push(*kind);
                value.push(u8::try_from(bytes.len() + 2).unwrap());
                value.extend(bytes);
            }
            value.truncate(value.len().saturating_sub(cut));
            let packet = request(1, &[build::status(1), (26, value)], SECRET);
            let _ = parse(&packet, SECRET);
        }
    }
}
