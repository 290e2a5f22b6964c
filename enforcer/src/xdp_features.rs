//! Whether an interface's driver can send frames redirected to it by XDP (`ndo_xdp_xmit`), as
//! the kernel reports it in the `netdev` generic netlink family (Linux 6.3+,
//! `Documentation/netlink/specs/netdev.yaml`): `NETDEV_CMD_DEV_GET` answers with the device's
//! `xdp-features`, whose `NETDEV_XDP_ACT_NDO_XMIT` bit is that capability. A frame redirected
//! to an interface without it is dropped by the kernel when it is sent (`xdp_redirect_err`),
//! so `--forward xdp` redirects only to interfaces that have it (the others' traffic takes the
//! stack).
//!
//! Messages are framed with rust-netlink's `netlink-packet-generic` (the family lookup through
//! `nlctrl` is its own type); the `netdev` request is a list of plain attributes.

use netlink_packet_core::{
    DefaultNla, Emitable, NLM_F_REQUEST, NetlinkMessage, NetlinkPayload, Nla as _, NlasIterator,
    Parseable, ParseableParametrized,
};
use netlink_packet_generic::{
    GenlFamily, GenlHeader, GenlMessage,
    ctrl::{GenlCtrl, GenlCtrlCmd, nlas::GenlCtrlAttrs},
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_GENERIC};

/// `NETDEV_CMD_DEV_GET`.
const NETDEV_CMD_DEV_GET: u8 = 1;
/// `NETDEV_A_DEV_IFINDEX` (u32).
const NETDEV_A_DEV_IFINDEX: u16 = 1;
/// `NETDEV_A_DEV_XDP_FEATURES` (u64 of `NETDEV_XDP_ACT_*` bits).
const NETDEV_A_DEV_XDP_FEATURES: u16 = 3;
/// `NETDEV_XDP_ACT_NDO_XMIT`: the driver implements `ndo_xdp_xmit`.
pub const NETDEV_XDP_ACT_NDO_XMIT: u64 = 4;

/// Why the features could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FeaturesError {
    /// The kernel has no `netdev` family (before Linux 6.3): nothing to ask.
    #[error("this kernel does not report XDP features (the netdev netlink family is Linux 6.3+)")]
    Unsupported,
    /// The kernel refused the request (an unknown interface: `ENODEV`).
    #[error("the kernel refused to report XDP features (errno {0})")]
    Refused(i32),
    /// The socket or a message failed.
    #[error("asking the kernel for XDP features failed: {0}")]
    Netlink(String),
}

/// A `netdev` family message: a command and its attributes.
#[derive(Debug, Clone)]
struct Netdev {
    family: u16,
    cmd: u8,
    nlas: Vec<DefaultNla>,
}

impl GenlFamily for Netdev {
    fn family_name() -> &'static str {
        "netdev"
    }
    fn family_id(&self) -> u16 {
        self.family
    }
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        1
    }
}

impl Emitable for Netdev {
    fn buffer_len(&self) -> usize {
        self.nlas.as_slice().buffer_len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        self.nlas.as_slice().emit(buffer);
    }
}

impl ParseableParametrized<[u8], GenlHeader> for Netdev {
    fn parse_with_param(
        buf: &[u8],
        header: GenlHeader,
    ) -> Result<Self, netlink_packet_core::DecodeError> {
        let nlas = NlasIterator::new(buf)
            .map(|nla| nla.and_then(|nla| DefaultNla::parse(&nla)))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            family: 0,
            cmd: header.cmd,
            nlas,
        })
    }
}

/// The `NETDEV_XDP_ACT_*` bits of interface `ifindex`, in the calling thread's network
/// namespace.
///
/// # Errors
/// [`FeaturesError::Unsupported`] before Linux 6.3; [`FeaturesError::Refused`] for an
/// unknown ifindex; [`FeaturesError::Netlink`] if the socket or a message fails.
pub fn xdp_features(ifindex: u32) -> Result<u64, FeaturesError> {
    let socket = open().map_err(|e| FeaturesError::Netlink(e.to_string()))?;
    let family = family_id(&socket)?;
    let request = Netdev {
        family,
        cmd: NETDEV_CMD_DEV_GET,
        nlas: vec![DefaultNla::new(
            NETDEV_A_DEV_IFINDEX,
            ifindex.to_ne_bytes().to_vec(),
        )],
    };
    let reply: Netdev = exchange(&socket, request)?;
    reply
        .nlas
        .iter()
        .find(|nla| nla.kind() == NETDEV_A_DEV_XDP_FEATURES)
        .and_then(|nla| {
            let mut value = [0u8; 8];
            nla.emit_value(&mut value);
            nla.value_len().eq(&8).then_some(u64::from_ne_bytes(value))
        })
        .ok_or_else(|| FeaturesError::Netlink("the reply has no xdp-features".to_owned()))
}

/// Whether interface `ifindex` can send frames redirected to it (`ndo_xdp_xmit`).
///
/// # Errors
/// As [`xdp_features`].
pub fn can_take_redirects(ifindex: u32) -> Result<bool, FeaturesError> {
    xdp_features(ifindex).map(|bits| bits & NETDEV_XDP_ACT_NDO_XMIT != 0)
}

fn open() -> std::io::Result<Socket> {
    let mut socket = Socket::new(NETLINK_GENERIC)?;
    socket.bind_auto()?;
    socket.connect(&SocketAddr::new(0, 0))?;
    Ok(socket)
}

/// The `netdev` family's id, from `nlctrl`.
fn family_id(socket: &Socket) -> Result<u16, FeaturesError> {
    let request = GenlCtrl {
        cmd: GenlCtrlCmd::GetFamily,
        nlas: vec![GenlCtrlAttrs::FamilyName(Netdev::family_name().to_owned())],
    };
    match exchange::<GenlCtrl>(socket, request) {
        Ok(reply) => reply
            .nlas
            .iter()
            .find_map(|nla| match nla {
                GenlCtrlAttrs::FamilyId(id) => Some(*id),
                _ => None,
            })
            .ok_or_else(|| FeaturesError::Netlink("nlctrl named no family id".to_owned())),
        Err(FeaturesError::Refused(libc::ENOENT)) => Err(FeaturesError::Unsupported),
        Err(e) => Err(e),
    }
}

/// Send one request and read its one reply.
fn exchange<F>(socket: &Socket, payload: F) -> Result<F, FeaturesError>
where
    F: GenlFamily + Emitable + ParseableParametrized<[u8], GenlHeader> + std::fmt::Debug,
{
    let netlink = |e: &dyn std::fmt::Display| FeaturesError::Netlink(e.to_string());
    let mut message = GenlMessage::from_payload(payload);
    message.finalize();
    let mut request = NetlinkMessage::from(message);
    request.header.flags = NLM_F_REQUEST;
    request.finalize();
    let mut buffer = vec![0u8; request.buffer_len()];
    request.serialize(&mut buffer);
    socket.send(&buffer, 0).map_err(|e| netlink(&e))?;
    let mut reply = Vec::with_capacity(8192);
    socket.recv(&mut reply, 0).map_err(|e| netlink(&e))?;
    let message = NetlinkMessage::<GenlMessage<F>>::deserialize(&reply).map_err(|e| netlink(&e))?;
    match message.payload {
        NetlinkPayload::InnerMessage(inner) => Ok(inner.payload),
        NetlinkPayload::Error(err) => Err(FeaturesError::Refused(err.raw_code().abs())),
        other => Err(FeaturesError::Netlink(format!(
            "unexpected reply {other:?}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Loopback has no `ndo_xdp_xmit`: every kernel that reports features says so. Skipped
    /// where the kernel does not report them.
    #[test]
    fn loopback_takes_no_redirects() {
        match can_take_redirects(1) {
            Ok(can) => assert!(!can, "lo reported NDO_XMIT"),
            Err(FeaturesError::Unsupported) => {}
            Err(e) => panic!("{e}"),
        }
    }
}
