//! Reading capture files: pcap (libpcap, microsecond or nanosecond) and pcapng, through the
//! `pcap-file` crate, into Ethernet frames the XDP program can judge.
//!
//! Link types: Ethernet (`LINKTYPE_ETHERNET`, 1) as captured; raw IP (`LINKTYPE_RAW` 101,
//! `LINKTYPE_IPV4` 228, `LINKTYPE_IPV6` 229) and Linux cooked captures (`LINKTYPE_LINUX_SLL`
//! 113, `LINKTYPE_LINUX_SLL2` 276, what `tcpdump -i any` writes) get a synthetic Ethernet
//! header with the packet's ethertype. Any other link type is an error per packet, not a
//! guess. Memory stays bounded whatever the file says: `pcap-file` reads through a fixed
//! 8 MB buffer and refuses a packet longer than the file's snap length.

use std::io::{BufRead, BufReader, Read};

use pcap_file::{
    DataLink, PcapError,
    pcap::PcapReader,
    pcapng::{Block, PcapNgReader},
};

/// Errors of reading a capture file.
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
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
    /// The file is damaged at packet `number` (1-based; 0 for the file header).
    #[error("the capture is damaged at packet {number}: {source}")]
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
        let (link, data) = match &mut self.format {
            Format::Pcap(reader) => {
                let link = reader.header().datalink;
                match reader.next_packet()? {
                    Ok(packet) => (link, packet.data.into_owned()),
                    Err(e) => return Some(Err(damaged(e))),
                }
            }
            Format::PcapNg { reader, links } => loop {
                let block = match reader.next_block()? {
                    Ok(block) => block,
                    Err(e) => return Some(Err(damaged(e))),
                };
                let link_of = |id: u32| {
                    usize::try_from(id)
                        .ok()
                        .and_then(|i| links.get(i))
                        .copied()
                        .unwrap_or(DataLink::Unknown(u32::MAX))
                };
                match block {
                    Block::SectionHeader(_) => links.clear(),
                    Block::InterfaceDescription(idb) => links.push(idb.linktype),
                    Block::EnhancedPacket(epb) => {
                        break (link_of(epb.interface_id), epb.data.into_owned());
                    }
                    Block::SimplePacket(spb) => break (link_of(0), spb.data.into_owned()),
                    Block::Packet(pb) => {
                        break (link_of(u32::from(pb.interface_id)), pb.data.into_owned());
                    }
                    _ => {}
                }
            },
        };
        self.number = number;
        Some(Ok(Captured {
            number,
            frame: to_ethernet(link, data),
        }))
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
    let field = |at: usize| {
        data.get(at..at + 2)
            .map(|b| u16::from_be_bytes([b[0], b[1]]))
            .ok_or_else(|| format!("{link:?} header cut short ({} bytes)", data.len()))
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
        DataLink::LINUX_SLL => Ok(with_header(field(14)?, data.get(16..).unwrap_or_default())),
        // struct sll2_header: protocol first, 20 bytes in all.
        DataLink::LINUX_SLL2 => Ok(with_header(field(0)?, data.get(20..).unwrap_or_default())),
        other => Err(format!(
            "link type {other:?} is not supported; capture on an Ethernet interface or with \
             `tcpdump -i any` (Linux cooked)"
        )),
    }
}
