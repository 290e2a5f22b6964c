//! Interfaces appearing and disappearing: RTM_NEWLINK / RTM_DELLINK from rtnetlink's link
//! multicast group, as [`LinkEvent`]s on a channel, so the daemon can attach XDP again to an
//! interface that was deleted and created anew (a modem re-enumerated, a VLAN or veth
//! re-created), whose new ifindex the old attachment does not cover.
//!
//! Built on the `rtnetlink` crate (rust-netlink: `netlink-sys` sockets, `netlink-packet-route`
//! message types, tokio integration) rather than a hand-rolled netlink parser: it is the
//! maintained Rust stack for rtnetlink, and its multicast connection is exactly `ip monitor
//! link`. The socket watches the network namespace of the thread that calls
//! [`watch_links`].
//!
//! RTM_NEWLINK also reports changes to an existing link (up/down, MTU, a new address); only a
//! new ifindex, or a known ifindex under a new name, is an [`LinkEventKind::Added`]. Links
//! present at the start are listed by [`LinkWatcher::initial`] and not reported again.

use std::collections::HashMap;

use futures_util::StreamExt as _;
use rtnetlink::{
    MulticastGroup,
    packet_core::NetlinkPayload,
    packet_route::{
        RouteNetlinkMessage,
        link::{LinkAttribute, LinkMessage},
    },
};
use tokio::{sync::mpsc, task::JoinHandle};

/// What happened to a link.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkEventKind {
    /// A link appeared (a new ifindex), or an existing one was renamed to `name`.
    Added,
    /// A link was deleted.
    Removed,
}

/// A link that appeared or disappeared.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize)]
pub struct LinkEvent {
    /// Interface name (`IFLA_IFNAME`).
    pub name: String,
    /// Interface index.
    pub ifindex: u32,
    /// Added or removed.
    pub kind: LinkEventKind,
}

/// Starting the watcher failed.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// The netlink socket could not be opened or joined to the link group.
    #[error(
        "opening a NETLINK_ROUTE socket subscribed to link events failed; it needs a \
             kernel with rtnetlink (any Linux) and no seccomp filter against netlink sockets"
    )]
    Socket(#[source] std::io::Error),
    /// Listing the links present at the start failed.
    #[error("listing the network interfaces (RTM_GETLINK dump) failed")]
    Dump(#[source] rtnetlink::Error),
}

/// A running watch; events arrive through [`LinkWatcher::next`]. Dropping it stops the watch.
pub struct LinkWatcher {
    initial: Vec<(String, u32)>,
    events: mpsc::UnboundedReceiver<LinkEvent>,
    tasks: [JoinHandle<()>; 2],
}

impl LinkWatcher {
    /// The links present when the watch started: (name, ifindex), in ifindex order.
    #[must_use]
    pub fn initial(&self) -> &[(String, u32)] {
        &self.initial
    }

    /// The next event; `None` once the netlink connection has ended.
    pub async fn next(&mut self) -> Option<LinkEvent> {
        self.events.recv().await
    }
}

impl Drop for LinkWatcher {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Watch the links of the calling thread's network namespace. Must run inside a tokio
/// runtime (it spawns the netlink connection and the event task).
///
/// # Errors
/// When the netlink socket cannot be opened or the initial link list cannot be read.
pub async fn watch_links() -> Result<LinkWatcher, WatchError> {
    // Subscribe before listing, so a link created meanwhile is not missed; the known set
    // filled by the listing keeps it from being reported twice.
    let (connection, handle, mut messages) =
        rtnetlink::new_multicast_connection(&[MulticastGroup::Link]).map_err(WatchError::Socket)?;
    let connection = tokio::spawn(connection);
    let mut known: HashMap<u32, String> = HashMap::new();
    let mut dump = handle.link().get().execute();
    while let Some(link) = dump.next().await {
        let link = match link {
            Ok(link) => link,
            Err(e) => {
                connection.abort();
                return Err(WatchError::Dump(e));
            }
        };
        if let Some(name) = name_of(&link) {
            known.insert(link.header.index, name);
        }
    }
    let mut initial: Vec<(String, u32)> = known.iter().map(|(i, n)| (n.clone(), *i)).collect();
    initial.sort_by_key(|(_, index)| *index);
    let (tx, events) = mpsc::unbounded_channel();
    let watch = tokio::spawn(async move {
        while let Some((message, _)) = messages.next().await {
            let NetlinkPayload::InnerMessage(message) = message.payload else {
                continue;
            };
            let Some(event) = event(&mut known, message) else {
                continue;
            };
            tracing::debug!(iface = %event.name, ifindex = event.ifindex, kind = ?event.kind,
                "Link event.");
            if tx.send(event).is_err() {
                return; // The watcher was dropped.
            }
        }
    });
    Ok(LinkWatcher {
        initial,
        events,
        tasks: [connection, watch],
    })
}

fn name_of(link: &LinkMessage) -> Option<String> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(name) => Some(name.clone()),
        _ => None,
    })
}

/// The event a message means, given the links known so far (updated).
fn event(known: &mut HashMap<u32, String>, message: RouteNetlinkMessage) -> Option<LinkEvent> {
    match message {
        RouteNetlinkMessage::NewLink(link) => {
            let ifindex = link.header.index;
            let name = name_of(&link)?;
            if known.get(&ifindex) == Some(&name) {
                return None; // A change to a link we know: state, MTU, addresses.
            }
            known.insert(ifindex, name.clone());
            Some(LinkEvent {
                name,
                ifindex,
                kind: LinkEventKind::Added,
            })
        }
        RouteNetlinkMessage::DelLink(link) => {
            let ifindex = link.header.index;
            let name = known.remove(&ifindex).or_else(|| name_of(&link))?;
            Some(LinkEvent {
                name,
                ifindex,
                kind: LinkEventKind::Removed,
            })
        }
        _ => None,
    }
}
