//! Reading capture files: pcap (libpcap, microsecond or nanosecond) and pcapng, through the
//! `pcap-file` crate, into Ethernet frames the XDP program can judge.
//!
//! Link types: Ethernet (`LINKTYPE_ETHERNET`, 1) as captured; raw IP (`LINKTYPE_RAW` 101,
//! `LINKTYPE_IPV4` 228, `LINKTYPE_IPV6` 229) and Linux cooked captures (`LINKTYPE_LINUX_SLL`
//! 113, `LINKTYPE_LINUX_SLL2` 276, what `tcpdump -i any` writes) get a synthetic Ethernet
//! header with the packet's ethertype. Any other link type, a packet cut short by the capture's
//! snap length (`tcpdump -s`), or a packet of an interface no description block declares is
//! reported per packet as not judgeable, not guessed at. Memory stays bounded whatever the file
//! says: `pcap-file` reads through a fixed 8 MB buffer.

use std::io::{BufRead, BufReader, Read};

use pcap_file::{
    DataLink, PcapError,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};

/// Errors of reading a capture file.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    /// The file has no bytes.
    #[error("the capture file is empty")]
    Empty,
    /// Neither pcap nor pcapng.
    #[error(
        "not a pcap or pcapng file (it starts with {magic}); write captures with `tcpdump -w` \
         or `tshark -w`"
    )]
    UnknownFormat {
        /// The first bytes, in hex.
        magic: String,
    },
    /// The file could not be read.
    #[error("reading the capture failed")]
    Io(#[source] std::io::Error),
    /// The file is damaged or cut short at packet `number` (1-based; 0 for the file header).
    #[error(
        "the capture is damaged or cut short {}",
        if *number == 0 { "in its file header".to_owned() } else { format!("at packet {number}") }
    )]
    Damaged {
        /// Packet number, 1-based (0: the file header).
        number: u64,
        /// What the pcap reader found.
        #[source]
        source: PcapError,
    },
}

/// One packet of the capture, as an Ethernet frame when its link type allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Captured {
    /// Packet number in the file, 1-based (as Wireshark numbers them).
    pub number: u64,
    /// The Ethernet frame, or why the packet cannot be judged.
    pub frame: Result<Vec<u8>, String>,
}

enum Format<R: Read> {
    Pcap(PcapReader<R>),
    PcapNg {
        reader: Box<PcapNgReader<R>>,
        /// Link type of each interface, by interface id (Interface Description Blocks).
        links: Vec<DataLink>,
    },
}

/// A capture file being read, packet by packet.
pub struct Capture<R: Read> {
    format: Format<BufReader<R>>,
    number: u64,
}

const PCAP_MAGICS: [[u8; 4]; 4] = [
    [0xd4, 0xc3, 0xb2, 0xa1],
    [0xa1, 0xb2, 0xc3, 0xd4],
    [0x4d, 0x3c, 0xb2, 0xa1],
    [0xa1, 0xb2, 0x3c, 0x4d],
];
const PCAPNG_MAGIC: [u8; 4] = [0x0a, 0x0d, 0x0d, 0x0a];

impl<R: Read> Capture<R> {
    /// Open a capture, telling pcap from pcapng by its first four bytes.
    ///
    /// # Errors
    /// [`CaptureError::UnknownFormat`] for anything else, [`CaptureError::Damaged`] for a bad
    /// file header, [`CaptureError::Io`] when reading fails.
    pub fn open(reader: R) -> Result<Self, CaptureError> {
        let mut reader = BufReader::new(reader);
        let head = reader.fill_buf().map_err(CaptureError::Io)?;
        if head.is_empty() {
            return Err(CaptureError::Empty);
        }
        let magic: [u8; 4] = head
            .get(..4)
            .and_then(|m| m.try_into().ok())
            .unwrap_or_default();
        let damaged = |source| CaptureError::Damaged { number: 0, source };
        let format = if PCAP_MAGICS.contains(&magic) {
            Format::Pcap(PcapReader::new(reader).map_err(damaged)?)
        } else if magic == PCAPNG_MAGIC {
            Format::PcapNg {
                reader: Box::new(PcapNgReader::new(reader).map_err(damaged)?),
                links: Vec::new(),
            }
        } else {
            let shown = head.iter().take(4).map(|b| format!("{b:02x}")).collect();
            return Err(CaptureError::UnknownFormat { magic: shown });
        };
        Ok(Self { format, number: 0 })
    }

    /// The next packet, `None` at the end of the file.
    ///
    /// # Errors
    /// [`CaptureError::Damaged`] when the file is cut short or a record is invalid; reading
    /// stops there.
    pub fn next_packet(&mut self) -> Option<Result<Captured, CaptureError>> {
        let number = self.number + 1;
        let damaged = |source| CaptureError::Damaged { number, source };
        let (link, data, original_len) = match &mut self.format {
            Format::Pcap(reader) => {
                let link = Some(reader.header().datalink);
                // Raw records: a capture with a snap length (`tcpdump -s 96`) is valid, but
                // `pcap-file`'s checked records refuse an original length above it.
                match reader.next_raw_packet()? {
                    Ok(packet) => (link, packet.data.into_owned(), packet.orig_len),
                    Err(e) => return Some(Err(damaged(e))),
                }
            }
            Format::PcapNg { reader, links } => loop {
                let block = match reader.next_block()? {
                    Ok(block) => block,
                    Err(e) => return Some(Err(damaged(e))),
                };
                let link_of =
                    |id: u32| usize::try_from(id).ok().and_then(|i| links.get(i)).copied();
                match block {
                    Block::SectionHeader(_) => links.clear(),
                    Block::InterfaceDescription(idb) => links.push(idb.linktype),
                    Block::EnhancedPacket(epb) => {
                        let link = link_of(epb.interface_id);
                        break (link, epb.data.into_owned(), epb.original_len);
                    }
                    Block::SimplePacket(spb) => {
                        break (link_of(0), spb.data.into_owned(), spb.original_len);
                    }
                    Block::Packet(pb) => {
                        let link = link_of(u32::from(pb.interface_id));
                        break (link, pb.data.into_owned(), pb.original_len);
                    }
                    _ => {}
                }
            },
        };
        self.number = number;
        let captured = u32::try_from(data.len()).unwrap_or(u32::MAX);
        let frame = match link {
            None => Err(
                "the packet names an interface that no Interface Description Block declares"
                    .to_owned(),
            ),
            Some(_) if captured < original_len => Err(format!(
                "cut by the capture's snap length ({captured} of {original_len} bytes)"
            )),
            Some(link) => to_ethernet(link, data),
        };
        Some(Ok(Captured { number, frame }))
    }
}

/// Source and destination MAC of synthetic Ethernet headers (locally administered).
const SYNTHETIC_MACS: [u8; 12] = [2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1];

/// The packet as an Ethernet frame, or why it cannot be one.
fn to_ethernet(link: DataLink, data: Vec<u8>) -> Result<Vec<u8>, String> {
    let with_header = |ethertype: u16, payload: &[u8]| {
        let mut frame = Vec::with_capacity(14 + payload.len());
        frame.extend_from_slice(&SYNTHETIC_MACS);
        frame.extend_from_slice(&ethertype.to_be_bytes());
        frame.extend_from_slice(payload);
        frame
    };
    // A cooked header of `len` bytes with the protocol at `at`, then the packet.
    let cooked = |len: usize, at: usize| match (data.get(at..at + 2), data.get(len..)) {
        (Some(protocol), Some(payload)) => Ok(with_header(
            u16::from_be_bytes([protocol[0], protocol[1]]),
            payload,
        )),
        _ => Err(format!(
            "{link:?} header cut short ({} of {len} bytes)",
            data.len()
        )),
    };
    match link {
        DataLink::ETHERNET => Ok(data),
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => match data.first().map(|b| b >> 4) {
            Some(4) => Ok(with_header(0x0800, &data)),
            Some(6) => Ok(with_header(0x86DD, &data)),
            Some(v) => Err(format!("raw IP packet with IP version {v}")),
            None => Err("empty raw IP packet".to_owned()),
        },
        // struct sll_header: type, ARPHRD, address length, 8 address bytes, protocol (16 bytes).
        DataLink::LINUX_SLL => cooked(16, 14),
        // struct sll2_header: protocol first, 20 bytes in all.
        DataLink::LINUX_SLL2 => cooked(20, 0),
        other => Err(format!(
            "link type {other:?} is not supported; capture on an Ethernet interface or with \
             `tcpdump -i any` (Linux cooked)"
        )),
    }
}
