//! Which XDP program already holds an interface, for the attach error's hint.
//!
//! Reads `ip -j -d link show dev IF` (iproute2, which the gateway needs anyway). aya 0.14 has no
//! public reader for an interface's `IFLA_XDP` attributes (its netlink code is crate-private and
//! `LinkInfo` carries no ifindex), and a program attached through netlink rather than a BPF link
//! has no link to look up at all; `ip` reports both kinds, with program name and id.

use std::process::Command;

use aya::programs::XdpMode;

/// An XDP program attached to an interface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Kernel program id (`bpftool prog show id N`).
    pub id: u64,
    /// Program name, as the kernel keeps it (at most 15 characters).
    pub name: String,
}

/// The XDP programs attached to `iface`, as `ip` reports them; empty if none or unknown.
#[must_use]
pub fn holders(iface: &str) -> Vec<Holder> {
    let Ok(out) = Command::new("ip")
        .args(["-j", "-d", "link", "show", "dev", iface])
        .output()
    else {
        return Vec::new();
    };
    if !out.status.success() {
        return Vec::new();
    }
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// The XDP programs in `ip -j -d link show` output: `"xdp": {"prog": {...}}` for one program,
/// `"xdp": {"attached": [{"prog": {...}}, ...]}` for several modes at once.
#[must_use]
pub fn parse(json: &str) -> Vec<Holder> {
    let Ok(serde_json::Value::Array(links)) = serde_json::from_str::<serde_json::Value>(json)
    else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for xdp in links.iter().filter_map(|link| link.get("xdp")) {
        let entries = match xdp.get("attached") {
            Some(serde_json::Value::Array(entries)) => entries.iter().collect(),
            _ => vec![xdp],
        };
        for prog in entries.into_iter().filter_map(|e| e.get("prog")) {
            if let Some(id) = prog.get("id").and_then(serde_json::Value::as_u64) {
                let name = prog
                    .get("name")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("?")
                    .to_owned();
                found.push(Holder { id, name });
            }
        }
    }
    found
}

/// What to try after attaching to `iface` in `mode` failed: name the program that holds the
/// interface if there is one, else suggest generic XDP if native mode was asked for. Empty or
/// starting with `; `.
#[must_use]
pub fn attach_hint(iface: &str, mode: XdpMode) -> String {
    hint(iface, mode, &holders(iface))
}

fn hint(iface: &str, mode: XdpMode, holders: &[Holder]) -> String {
    if !holders.is_empty() {
        let names: Vec<String> = holders
            .iter()
            .map(|h| format!("`{}` (id {})", h.name, h.id))
            .collect();
        return format!(
            "; XDP program {} already holds `{iface}`: stop its owner or detach it with `ip \
             link set dev {iface} xdp off`",
            names.join(" and ")
        );
    }
    if mode == XdpMode::Driver {
        return "; if the driver lacks native XDP, retry with `--xdp-mode skb`".to_owned();
    }
    String::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_one_program_and_several_modes() {
        let one = r#"[{"ifindex":2,"ifname":"eth0","xdp":{"mode":2,"prog":{"id":42,"name":"enforcer","tag":"ab","jited":1}}}]"#;
        assert_eq!(
            parse(one),
            vec![Holder {
                id: 42,
                name: "enforcer".into()
            }]
        );
        let several = r#"[{"ifname":"eth0","xdp":{"mode":4,"attached":[{"mode":1,"prog":{"id":7,"name":"a"}},{"mode":2,"prog":{"id":8,"name":"b"}}]}}]"#;
        assert_eq!(parse(several).len(), 2);
        assert!(parse(r#"[{"ifname":"lo"}]"#).is_empty());
        assert!(parse("not json").is_empty());
    }

    #[test]
    fn hint_names_the_holder_and_suggests_skb_only_in_native_mode() {
        let holder = [Holder {
            id: 42,
            name: "other".into(),
        }];
        let named = hint("eth0", XdpMode::Skb, &holder);
        assert!(
            named.contains("`other` (id 42) already holds `eth0`"),
            "{named}"
        );
        assert!(!named.contains("--xdp-mode skb"), "{named}");
        assert!(hint("eth0", XdpMode::Driver, &[]).contains("--xdp-mode skb"));
        assert_eq!(hint("eth0", XdpMode::Skb, &[]), "");
    }
}
