//! The RADIUS clients the daemon takes accounting from (`--radius-clients FILE`): the PGW/SMF
//! addresses and a shared secret each, as FreeRADIUS's `clients.conf` lists them.
//!
//! ```toml
//! [[clients]]
//! name = "pgw-1"            # shown in `sim show` and the logs
//! address = "192.0.2.10"    # or a prefix: "192.0.2.0/28"
//! secret = "a long random shared secret"
//! ```

use std::{net::IpAddr, path::Path};

use ipnetwork::IpNetwork;
use serde::Deserialize;

/// Largest clients file read, in bytes.
const MAX_BYTES: u64 = 1 << 20;

/// One RADIUS client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    /// Its name (`pgw-1`).
    pub name: std::sync::Arc<str>,
    /// Addresses it sends from.
    pub address: IpNetwork,
    /// Shared secret (RFC 2865 §3), bytes.
    pub secret: std::sync::Arc<[u8]>,
}

/// The clients, looked up by source address (the longest prefix wins).
#[derive(Debug, Clone, Default)]
pub struct Clients {
    clients: Vec<Client>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    clients: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    address: String,
    secret: String,
}

/// Why a clients file is refused (nothing is started).
#[derive(Debug, thiserror::Error)]
pub enum ClientsError {
    /// The file cannot be read.
    #[error("cannot read the RADIUS clients file {path}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not TOML of the expected shape (the message has line and column).
    #[error("{path}: {message}; see `enforcer run --help` for the format")]
    Format {
        /// The file.
        path: String,
        /// The TOML reader's message.
        message: String,
    },
    /// A client entry is invalid.
    #[error("{path}: client `{name}`: {what}")]
    Client {
        /// The file.
        path: String,
        /// The client's name.
        name: String,
        /// What is wrong and what to do.
        what: String,
    },
}

impl Clients {
    /// Read `path`.
    ///
    /// # Errors
    /// [`ClientsError`], naming the file and the client.
    pub fn load(path: &Path) -> Result<Self, ClientsError> {
        let shown = path.display().to_string();
        let io = |source| ClientsError::Io {
            path: shown.clone(),
            source,
        };
        let file = std::fs::File::open(path).map_err(io)?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::Read::take(file, MAX_BYTES), &mut text)
            .map_err(io)?;
        Self::parse(&text, &shown)
    }

    /// Read a clients file's text; `path` names it in errors.
    ///
    /// # Errors
    /// [`ClientsError::Format`] or [`ClientsError::Client`].
    pub fn parse(text: &str, path: &str) -> Result<Self, ClientsError> {
        let file: File = toml::from_str(text).map_err(|e| ClientsError::Format {
            path: path.to_owned(),
            message: e.to_string().trim_end().replace('\n', " "),
        })?;
        let mut clients: Vec<Client> = Vec::new();
        for entry in file.clients {
            let bad = |what: String| ClientsError::Client {
                path: path.to_owned(),
                name: entry.name.clone(),
                what,
            };
            if entry.name.is_empty() || entry.name.chars().any(char::is_whitespace) {
                return Err(bad("give a name without spaces".into()));
            }
            if clients.iter().any(|c| *c.name == *entry.name) {
                return Err(bad("the name is given twice; give each client once".into()));
            }
            let address = match entry.address.parse::<IpAddr>() {
                Ok(ip) => IpNetwork::from(ip),
                Err(_) => entry.address.parse::<IpNetwork>().map_err(|_| {
                    bad(format!(
                        "address `{}` is no IP address or prefix (e.g. 192.0.2.10 or \
                         192.0.2.0/28)",
                        entry.address
                    ))
                })?,
            };
            if entry.secret.is_empty() {
                return Err(bad(
                    "the secret is empty; give the PGW/SMF's shared secret".into()
                ));
            }
            if let Some(other) = clients.iter().find(|c| c.address == address) {
                return Err(bad(format!(
                    "address {address} is client `{}`'s too; give each address once",
                    other.name
                )));
            }
            clients.push(Client {
                name: entry.name.into(),
                address,
                secret: entry.secret.into_bytes().into(),
            });
        }
        if clients.is_empty() {
            return Err(ClientsError::Format {
                path: path.to_owned(),
                message: "no [[clients]]; list the PGW/SMF that send accounting".into(),
            });
        }
        // Longest prefix first, so the first match is the most specific.
        clients.sort_by_key(|c| std::cmp::Reverse(c.address.prefix()));
        Ok(Self { clients })
    }

    /// The client a datagram from `source` comes from, if any.
    #[must_use]
    pub fn find(&self, source: IpAddr) -> Option<&Client> {
        // An IPv4 client seen through an IPv6 socket as ::ffff:a.b.c.d.
        let source = match source {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(source, IpAddr::V4),
            v4 @ IpAddr::V4(_) => v4,
        };
        self.clients.iter().find(|c| c.address.contains(source))
    }

    /// Every client.
    #[must_use]
    pub fn all(&self) -> &[Client] {
        &self.clients
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_most_specific_client() {
        let clients = Clients::parse(
            r#"
[[clients]]
name = "pgws"
address = "192.0.2.0/24"
secret = "one"
[[clients]]
name = "pgw-1"
address = "192.0.2.10"
secret = "two"
"#,
            "c.toml",
        )
        .unwrap();
        let find = |a: &str| clients.find(a.parse().unwrap()).map(|c| c.name.to_string());
        assert_eq!(find("192.0.2.10").as_deref(), Some("pgw-1"));
        assert_eq!(find("::ffff:192.0.2.10").as_deref(), Some("pgw-1"));
        assert_eq!(find("192.0.2.11").as_deref(), Some("pgws"));
        assert_eq!(find("198.51.100.1"), None);
    }

    #[test]
    fn bad_files_name_the_place() {
        let err = |text: &str| Clients::parse(text, "c.toml").unwrap_err().to_string();
        assert!(err("[[clients]]\nname = \"a\"\n").contains("c.toml"));
        assert!(err("").contains("no [[clients]]") || err("").contains("missing field"));
        let bad_address = err("[[clients]]\nname = \"a\"\naddress = \"pgw\"\nsecret = \"s\"\n");
        assert!(bad_address.contains("client `a`") && bad_address.contains("no IP address"));
        let empty = err("[[clients]]\nname = \"a\"\naddress = \"192.0.2.1\"\nsecret = \"\"\n");
        assert!(empty.contains("secret is empty"));
        let twice = err(
            "[[clients]]\nname = \"a\"\naddress = \"192.0.2.1\"\nsecret = \"s\"\n\
             [[clients]]\nname = \"a\"\naddress = \"192.0.2.2\"\nsecret = \"s\"\n",
        );
        assert!(twice.contains("given twice"));
        let unknown =
            err("[[clients]]\nname = \"a\"\naddress = \"192.0.2.1\"\nsecret = \"s\"\nport = 1\n");
        assert!(unknown.contains("unknown field"));
    }
}
