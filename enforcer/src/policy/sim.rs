//! A SIM as a validated policy holds it, and its identifiers, packed small: a million SIMs take
//! 32 bytes each (the [`Sim`] itself) plus a heap block only for the few SIMs with an ICCID,
//! an MSISDN or rules of their own.
//!
//! Identifiers are digit strings that may start with zeros (MCC 001 is the test network), so
//! each is kept as its number and its digit count, in one `u64`; [`Digits`] gives the text back
//! without allocating.

use std::{
    cmp::Ordering,
    fmt,
    net::{Ipv4Addr, Ipv6Addr},
    num::NonZeroU64,
    str::FromStr,
};

use ipnetwork::Ipv6Network;

use super::{Rule, SimState};

/// An identifier's text: at most 20 ASCII digits, after an optional `+`. Derefs to `str`.
#[derive(Clone, Copy)]
pub struct Digits {
    bytes: [u8; 21],
    len: u8,
}

impl Digits {
    /// `prefix` followed by `value` written with exactly `width` digits (zeros in front).
    fn new(prefix: &str, value: u64, width: u8) -> Self {
        let mut bytes = [b'0'; 21];
        let start = prefix.len();
        bytes[..start].copy_from_slice(prefix.as_bytes());
        let len = start + usize::from(width);
        let mut rest = value;
        for byte in bytes[start..len].iter_mut().rev() {
            // A decimal digit: the cast cannot truncate.
            *byte = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        Self {
            bytes,
            // At most 21.
            len: len as u8,
        }
    }

    /// The text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and `+` are ever written into `bytes`.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

impl std::ops::Deref for Digits {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Display for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl fmt::Debug for Digits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

/// Text that is not a valid identifier of the kind named.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a valid {0}")]
pub struct InvalidIdentifier(pub &'static str);

/// `text` as a number if it is `min..=max` ASCII digits.
fn digits(text: &str, min: usize, max: usize) -> Option<u64> {
    if !(min..=max).contains(&text.len()) || max > 19 {
        return None;
    }
    text.bytes().try_fold(0u64, |value, byte| {
        byte.is_ascii_digit()
            .then(|| value * 10 + u64::from(byte - b'0'))
    })
}

/// Bits 56 and up of a packed identifier hold its shape; below, its number.
const SHAPE_SHIFT: u32 = 56;
const VALUE_MASK: u64 = (1 << SHAPE_SHIFT) - 1;

/// An IMSI (3GPP TS 23.003 §2.2): MCC (3 digits), MNC (2–3) and MSIN, 14 or 15 decimal digits
/// in all, leading zeros significant. Packed in 8 bytes: the number (< 10¹⁵, 50 bits) and the
/// digit count in bits 56–63. Ordered as its text is.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Imsi(NonZeroU64);

impl Imsi {
    /// The IMSI written as `text`, if it is 14 or 15 ASCII digits.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let value = digits(text, 14, 15)?;
        let packed = value | (text.len() as u64) << SHAPE_SHIFT;
        NonZeroU64::new(packed).map(Self)
    }

    /// The packed form: one `u64` per IMSI text, for use as a key. Of IMSIs of one length,
    /// the smaller number has the smaller key.
    #[must_use]
    pub const fn to_bits(self) -> u64 {
        self.0.get()
    }

    /// The number the digits spell (leading zeros lost: see [`Imsi::len`]).
    #[must_use]
    pub const fn value(self) -> u64 {
        self.0.get() & VALUE_MASK
    }

    /// How many digits it has: 14 or 15.
    #[must_use]
    pub const fn len(self) -> u8 {
        // The digit count was stored in the top byte.
        (self.0.get() >> SHAPE_SHIFT) as u8
    }

    /// Never empty; for clippy's `len_without_is_empty`.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        false
    }

    /// The digits as text, without allocating.
    #[must_use]
    pub fn text(self) -> Digits {
        Digits::new("", self.value(), self.len())
    }
}

impl Ord for Imsi {
    /// As the text compares: digit by digit, a prefix first.
    fn cmp(&self, other: &Self) -> Ordering {
        let scaled = |imsi: &Self| imsi.value() * 10u64.pow(u32::from(15 - imsi.len()));
        scaled(self)
            .cmp(&scaled(other))
            .then(self.len().cmp(&other.len()))
    }
}

impl PartialOrd for Imsi {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl FromStr for Imsi {
    type Err = InvalidIdentifier;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text).ok_or(InvalidIdentifier("IMSI (14 or 15 digits)"))
    }
}

impl fmt::Display for Imsi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.text().fmt(f)
    }
}

impl fmt::Debug for Imsi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text(), f)
    }
}

impl PartialEq<str> for Imsi {
    fn eq(&self, other: &str) -> bool {
        Self::parse(other) == Some(*self)
    }
}

impl PartialEq<&str> for Imsi {
    fn eq(&self, other: &&str) -> bool {
        *self == **other
    }
}

impl PartialEq<String> for Imsi {
    fn eq(&self, other: &String) -> bool {
        *self == **other
    }
}

/// An ICCID (ITU-T E.118): 19 or 20 decimal digits starting with the telecom industry
/// identifier 89. Packed in 8 bytes: the digits after `89` (< 10¹⁸, 60 bits) and the digit
/// count less 16 in bits 60–63.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Iccid(NonZeroU64);

impl Iccid {
    const SHIFT: u32 = 60;

    /// The ICCID written as `text`, if it is 19 or 20 ASCII digits starting with 89.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix("89")?;
        let value = digits(rest, 17, 18)?;
        NonZeroU64::new(value | (text.len() as u64 - 16) << Self::SHIFT).map(Self)
    }

    /// The packed form: one `u64` per ICCID text, for use as a key.
    #[must_use]
    pub const fn to_bits(self) -> u64 {
        self.0.get()
    }

    /// How many digits it has: 19 or 20.
    #[must_use]
    pub const fn len(self) -> u8 {
        // 3 or 4 was stored in the top bits.
        (self.0.get() >> Self::SHIFT) as u8 + 16
    }

    /// Never empty; for clippy's `len_without_is_empty`.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        false
    }

    /// The digits as text, without allocating.
    #[must_use]
    pub fn text(self) -> Digits {
        let value = self.0.get() & ((1 << Self::SHIFT) - 1);
        Digits::new("89", value, self.len() - 2)
    }
}

impl FromStr for Iccid {
    type Err = InvalidIdentifier;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text).ok_or(InvalidIdentifier(
            "ICCID (19 or 20 digits starting with 89)",
        ))
    }
}

impl fmt::Display for Iccid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.text().fmt(f)
    }
}

impl fmt::Debug for Iccid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text(), f)
    }
}

/// An MSISDN (ITU-T E.164 number): 8 to 15 decimal digits, as written: with or without a
/// leading `+` (kept, so that it prints as written). Packed in 8 bytes: the number (< 10¹⁵),
/// the digit count in bits 56–59 and bit 60 for the `+`.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Msisdn(NonZeroU64);

impl Msisdn {
    const PLUS: u64 = 1 << 60;

    /// The MSISDN written as `text`, if it is 8 to 15 ASCII digits after an optional `+`.
    #[must_use]
    pub fn parse(text: &str) -> Option<Self> {
        let (plus, number) = match text.strip_prefix('+') {
            Some(number) => (Self::PLUS, number),
            None => (0, text),
        };
        let value = digits(number, 8, 15)?;
        NonZeroU64::new(value | (number.len() as u64) << SHAPE_SHIFT | plus).map(Self)
    }

    /// The number, whether written with `+` or not.
    #[must_use]
    pub const fn value(self) -> u64 {
        self.0.get() & VALUE_MASK
    }

    /// How many digits it has (without the `+`): 8 to 15.
    #[must_use]
    pub const fn len(self) -> u8 {
        // The digit count sits in bits 56-59.
        ((self.0.get() >> SHAPE_SHIFT) & 0xf) as u8
    }

    /// Never empty; for clippy's `len_without_is_empty`.
    #[must_use]
    pub const fn is_empty(self) -> bool {
        false
    }

    /// The text as written, without allocating.
    #[must_use]
    pub fn text(self) -> Digits {
        let plus = if self.0.get() & Self::PLUS == 0 {
            ""
        } else {
            "+"
        };
        Digits::new(plus, self.value(), self.len())
    }
}

impl FromStr for Msisdn {
    type Err = InvalidIdentifier;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::parse(text).ok_or(InvalidIdentifier(
            "MSISDN (8 to 15 digits, optionally after +)",
        ))
    }
}

impl fmt::Display for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.text().fmt(f)
    }
}

impl fmt::Debug for Msisdn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text(), f)
    }
}

/// What few SIMs have: kept out of line so that the rest pay 8 bytes for it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
struct Extra {
    iccid: Option<Iccid>,
    msisdn: Option<Msisdn>,
    rules: Box<[Rule]>,
}

/// A SIM and its addresses, in 32 bytes. Addresses and the rarely given fields are read and
/// set through methods; `imsi`, `segment` and `state` are plain fields.
#[derive(Clone, PartialEq, Eq)]
pub struct Sim {
    /// Its IMSI.
    pub imsi: Imsi,
    /// ICCID, MSISDN and rules, if it has any; `None` rather than an empty block.
    extra: Option<Box<Extra>>,
    /// The upper 64 bits of its IPv6 /64, if [`Self::HAS_V6`].
    ipv6: [u8; 8],
    /// Its IPv4 address, if [`Self::HAS_V4`].
    ipv4: [u8; 4],
    /// Segment id.
    pub segment: u16,
    /// Active or quarantined.
    pub state: SimState,
    /// Which addresses it has: [`Self::HAS_V4`], [`Self::HAS_V6`].
    has: u8,
}

const _: () = assert!(size_of::<Sim>() == 32);

impl Sim {
    const HAS_V4: u8 = 1;
    const HAS_V6: u8 = 2;
    /// Not an address: the run-time IMEI-mismatch state (see [`Sim::imei_mismatch`]).
    const IMEI_MISMATCH: u8 = 4;
    /// Not an address: `mode = "audit"` on the SIM itself (see [`Sim::audit`]).
    const AUDIT: u8 = 8;

    /// Whether the SIM alone is in audit mode (`mode = "audit"` in its `[[sims]]` entry),
    /// whatever its segment's mode.
    #[must_use]
    pub const fn audit(&self) -> bool {
        self.has & Self::AUDIT != 0
    }

    /// Put the SIM alone in audit mode, or not.
    pub fn set_audit(&mut self, on: bool) {
        if on {
            self.has |= Self::AUDIT;
        } else {
            self.has &= !Self::AUDIT;
        }
    }

    /// Whether its data session runs on a device its IMEI lock does not allow: a run-time
    /// state the daemon sets from RADIUS accounting (never from a policy file); it compiles
    /// to `SIM_IMEI_MISMATCH`.
    #[must_use]
    pub const fn imei_mismatch(&self) -> bool {
        self.has & Self::IMEI_MISMATCH != 0
    }

    /// Set or clear the run-time IMEI-mismatch state.
    pub fn set_imei_mismatch(&mut self, on: bool) {
        if on {
            self.has |= Self::IMEI_MISMATCH;
        } else {
            self.has &= !Self::IMEI_MISMATCH;
        }
    }

    /// A SIM without addresses, identifiers or rules of its own.
    #[must_use]
    pub const fn new(imsi: Imsi, segment: u16, state: SimState) -> Self {
        Self {
            imsi,
            extra: None,
            ipv6: [0; 8],
            ipv4: [0; 4],
            segment,
            state,
            has: 0,
        }
    }

    /// Its IPv4 address, if any.
    #[must_use]
    pub fn ipv4(&self) -> Option<Ipv4Addr> {
        (self.has & Self::HAS_V4 != 0).then(|| Ipv4Addr::from(self.ipv4))
    }

    /// Give it IPv4 address `addr`, or none.
    pub fn set_ipv4(&mut self, addr: Option<Ipv4Addr>) {
        self.ipv4 = addr.map_or([0; 4], |a| a.octets());
        self.has = (self.has & !Self::HAS_V4) | if addr.is_some() { Self::HAS_V4 } else { 0 };
    }

    /// Its IPv6 /64, if any.
    #[must_use]
    pub fn ipv6(&self) -> Option<Ipv6Network> {
        if self.has & Self::HAS_V6 == 0 {
            return None;
        }
        let addr = Ipv6Addr::from(u128::from(u64::from_be_bytes(self.ipv6)) << 64);
        // 64 is a valid IPv6 prefix length.
        Ipv6Network::new(addr, 64).ok()
    }

    /// Give it IPv6 prefix `net`, or none. A SIM's IPv6 is a /64 (validation and bindings
    /// check that): what is kept is the /64 holding `net`'s first address.
    pub fn set_ipv6(&mut self, net: Option<Ipv6Network>) {
        debug_assert!(
            net.is_none_or(|n| n.prefix() == 64),
            "a SIM's IPv6 is a /64"
        );
        let high = net.map_or(0, |n| (u128::from(n.network()) >> 64) as u64);
        self.ipv6 = high.to_be_bytes();
        self.has = (self.has & !Self::HAS_V6) | if net.is_some() { Self::HAS_V6 } else { 0 };
    }

    /// Its ICCID, if given.
    #[must_use]
    pub fn iccid(&self) -> Option<Iccid> {
        self.extra.as_ref().and_then(|e| e.iccid)
    }

    /// Its MSISDN, if given.
    #[must_use]
    pub fn msisdn(&self) -> Option<Msisdn> {
        self.extra.as_ref().and_then(|e| e.msisdn)
    }

    /// Its own rules (besides its segment's); empty for most SIMs.
    #[must_use]
    pub fn rules(&self) -> &[Rule] {
        self.extra.as_ref().map_or(&[], |e| &e.rules)
    }

    /// Set its ICCID.
    pub fn set_iccid(&mut self, iccid: Option<Iccid>) {
        self.change_extra(|e| e.iccid = iccid);
    }

    /// Set its MSISDN.
    pub fn set_msisdn(&mut self, msisdn: Option<Msisdn>) {
        self.change_extra(|e| e.msisdn = msisdn);
    }

    /// Set its own rules.
    pub fn set_rules(&mut self, rules: Vec<Rule>) {
        self.change_extra(|e| e.rules = rules.into_boxed_slice());
    }

    /// Change the out-of-line fields, keeping `extra` `None` when they are all empty (so that
    /// equal SIMs compare equal).
    fn change_extra(&mut self, change: impl FnOnce(&mut Extra)) {
        let mut extra = self.extra.take().unwrap_or_default();
        change(&mut extra);
        if *extra != Extra::default() {
            self.extra = Some(extra);
        }
    }
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("imsi", &self.imsi)
            .field("iccid", &self.iccid())
            .field("msisdn", &self.msisdn())
            .field("ipv4", &self.ipv4())
            .field("ipv6", &self.ipv6())
            .field("segment", &self.segment)
            .field("state", &self.state)
            .field("rules", &self.rules())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_keep_leading_zeros_and_their_text() {
        for text in ["001010000000001", "00101000000001", "999999999999999"] {
            let imsi = Imsi::parse(text).expect(text);
            assert_eq!(imsi.text().as_str(), text);
            assert_eq!(imsi.to_string(), text);
            assert_eq!(imsi, text);
        }
        assert_ne!(
            Imsi::parse("00101000000001"),
            Imsi::parse("000101000000001")
        );
        for bad in [
            "",
            "0010100000000",
            "0010100000000011",
            "00101000000000a",
            "+01010000000001",
        ] {
            assert_eq!(Imsi::parse(bad), None, "{bad}");
        }
        for text in [
            "8949000000000000001",
            "89000000000000000000",
            "89999999999999999999",
        ] {
            assert_eq!(Iccid::parse(text).expect(text).to_string(), text);
        }
        for bad in [
            "8849000000000000001",
            "894900000000000001",
            "899999999999999999999",
        ] {
            assert_eq!(Iccid::parse(bad), None, "{bad}");
        }
        for text in [
            "+491700000001",
            "491700000001",
            "00000001",
            "+999999999999999",
        ] {
            assert_eq!(Msisdn::parse(text).expect(text).to_string(), text);
        }
        assert_eq!(
            Msisdn::parse("+491700000001").map(Msisdn::value),
            Msisdn::parse("491700000001").map(Msisdn::value)
        );
        for bad in [
            "1234567",
            "+1234567",
            "1234567890123456",
            "++12345678",
            "12345678+",
        ] {
            assert_eq!(Msisdn::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn imsis_order_as_their_text() {
        let mut texts = vec![
            "999999999999999",
            "00101000000001",
            "001010000000001",
            "00101000000000",
            "001010000000000",
            "10101000000000",
            "101010000000000",
        ];
        let mut imsis: Vec<Imsi> = texts.iter().map(|t| t.parse().expect(t)).collect();
        texts.sort_unstable();
        imsis.sort_unstable();
        let back: Vec<String> = imsis.iter().map(ToString::to_string).collect();
        assert_eq!(back, texts);
    }

    #[test]
    fn a_sim_keeps_what_it_is_given() {
        let mut sim = Sim::new(
            Imsi::parse("001010000000001").expect("imsi"),
            3,
            SimState::Active,
        );
        let plain = sim.clone();
        assert_eq!(
            (sim.ipv4(), sim.ipv6(), sim.iccid(), sim.msisdn()),
            (None, None, None, None)
        );
        let v4 = Ipv4Addr::new(10, 0, 0, 1);
        let v6: Ipv6Network = "2001:db8:1:2::/64".parse().expect("v6");
        sim.set_ipv4(Some(v4));
        sim.set_ipv6(Some(v6));
        sim.set_msisdn(Msisdn::parse("+491700000001"));
        assert_eq!((sim.ipv4(), sim.ipv6()), (Some(v4), Some(v6)));
        assert_eq!(
            sim.msisdn().map(|m| m.to_string()).as_deref(),
            Some("+491700000001")
        );
        sim.set_ipv4(None);
        sim.set_ipv6(None);
        sim.set_msisdn(None);
        assert_eq!(sim, plain, "cleared fields leave no trace");
    }
}
