//! Capture files for the replay and fuzz tests, written with `pcap-file` (the crate the
//! replayer reads with, but its writer, so the tests do not check the reader against itself
//! alone: tshark and the real files of operators are the other check).

use std::{borrow::Cow, time::Duration};

use pcap_file::{
    DataLink,
    pcap::{PcapHeader, PcapPacket, PcapWriter},
    pcapng::{
        PcapNgWriter,
        blocks::{
            enhanced_packet::EnhancedPacketBlock, interface_description::InterfaceDescriptionBlock,
        },
    },
};

/// A pcap (or with `ng`, pcapng) file of Ethernet frames, one millisecond apart.
///
/// # Panics
/// If a frame is longer than 4 GiB.
#[must_use]
pub fn file(frames: &[impl AsRef<[u8]>], ng: bool) -> Vec<u8> {
    let mut out = Vec::new();
    let stamp = |i: usize| Duration::from_millis(u64::try_from(i).unwrap_or(u64::MAX));
    if ng {
        let mut writer = PcapNgWriter::new(&mut out).expect("pcapng section header");
        writer
            .write_pcapng_block(InterfaceDescriptionBlock::new(DataLink::ETHERNET, 65_535))
            .expect("pcapng interface block");
        for (i, frame) in frames.iter().enumerate() {
            let frame = frame.as_ref();
            let block = EnhancedPacketBlock {
                interface_id: 0,
                timestamp: stamp(i),
                original_len: u32::try_from(frame.len()).expect("frame length"),
                data: Cow::Borrowed(frame),
                options: Vec::new(),
            };
            writer
                .write_pcapng_block(block)
                .expect("pcapng packet block");
        }
    } else {
        let header = PcapHeader {
            datalink: DataLink::ETHERNET,
            ..PcapHeader::default()
        };
        let mut writer = PcapWriter::with_header(&mut out, header).expect("pcap header");
        for (i, frame) in frames.iter().enumerate() {
            let frame = frame.as_ref();
            let len = u32::try_from(frame.len()).expect("frame length");
            writer
                .write_packet(&PcapPacket::new(stamp(i), len, frame))
                .expect("pcap packet");
        }
    }
    out
}
