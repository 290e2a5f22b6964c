//! Shared helpers of the integration tests: a frame builder, a harness that loads a policy
//! into the real XDP program and the reference model side by side, a seeded RNG and network
//! namespace guards.

pub mod bench;
pub mod capture;
pub mod daemon_bench;
pub mod deny_bench;
pub mod export_bench;
pub mod forwarded;
pub mod frames;
pub mod harness;
pub mod identity_bench;
pub mod netns;
pub mod rng;
pub mod scale;
pub mod stream;
pub mod throughput;
pub mod topology;

/// The `enforcer` binary the CLI and end-to-end tests run: `ENFORCER_BIN` (set by
/// `cargo xtask test`), else `target/debug/enforcer`.
///
/// # Panics
/// When it does not exist, saying how to build it.
#[must_use]
pub fn enforcer_bin() -> std::path::PathBuf {
    let bin = std::env::var_os("ENFORCER_BIN").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/enforcer"),
        std::path::PathBuf::from,
    );
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p enforcer` first (`cargo xtask test` does)",
        bin.display()
    );
    bin
}

/// Run `command` to completion: its standard output, or its standard error as the error (also
/// when it cannot be started).
///
/// # Errors
/// The command's stderr when it fails.
pub fn output_text(command: &mut std::process::Command) -> Result<String, String> {
    let out = command.output().map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// A directory of its own for one test (`enforcer-{name}-{pid}` under the temp dir), emptied
/// when made and removed when dropped, also when the test fails.
pub struct Scratch(pub std::path::PathBuf);

impl Scratch {
    /// Make it.
    ///
    /// # Panics
    /// When the directory cannot be created.
    #[must_use]
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("enforcer-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Self(dir)
    }

    /// Write `body` to `name` inside it (parents made); returns the path as text.
    ///
    /// # Panics
    /// When the write fails.
    pub fn write(&self, name: &str, body: &str) -> String {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&path, body).expect("write");
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `GET path` over HTTP/1.1 from inside network namespace `ns` to `addr`; returns (status
/// line, body).
///
/// # Panics
/// When the connection or the request fails, or the answer is no HTTP response.
#[must_use]
pub fn http_get(ns: &str, addr: &str, path: &str) -> (String, String) {
    use std::io::{Read as _, Write as _};
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    throughput::in_netns(ns, || {
        let mut stream = std::net::TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .expect("timeout");
        write!(
            stream,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        let (head, body) = response.split_once("\r\n\r\n").expect("HTTP response");
        (
            head.lines().next().unwrap_or_default().to_owned(),
            body.to_owned(),
        )
    })
}

/// Whether this runs as root, which namespaces and XDP need; says that the test is skipped when
/// not.
#[must_use]
pub fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    if !root {
        eprintln!("skipped: needs root for namespaces and XDP");
    }
    root
}
