//! Network namespaces and veth pairs for end-to-end tests, with unique per-run names and a guard
//! that deletes them on drop (also when the test fails), logging instead of panicking.

use std::{
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

static NEXT: AtomicU32 = AtomicU32::new(0);

/// A unique short prefix for this test run: `e<pid mod 1e5><n>` (fits 15-character ifnames).
#[must_use]
pub fn unique_prefix() -> String {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    format!("e{}{n}", std::process::id() % 100_000)
}

/// Run `ip` with `args`; panic with its stderr if it fails.
///
/// # Panics
/// When the command fails.
pub fn ip(args: &[&str]) {
    let out = run("ip", args);
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Run a command and return its output.
///
/// # Panics
/// When the command cannot be started.
#[must_use]
pub fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"))
}

/// A network namespace deleted on drop.
pub struct NetNs {
    /// Its name.
    pub name: String,
}

impl NetNs {
    /// Create `name`.
    ///
    /// # Panics
    /// When `ip netns add` fails.
    #[must_use]
    pub fn new(name: &str) -> Self {
        ip(&["netns", "add", name]);
        let ns = Self {
            name: name.to_owned(),
        };
        ns.exec_ok(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    /// Run a command inside the namespace.
    #[must_use]
    pub fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["netns", "exec", self.name.as_str()];
        full.extend_from_slice(args);
        run("ip", &full)
    }

    /// Run a command inside the namespace; panic if it fails.
    ///
    /// # Panics
    /// When the command fails.
    pub fn exec_ok(&self, args: &[&str]) {
        let out = self.exec(args);
        assert!(
            out.status.success(),
            "`{}` in {} failed: {}",
            args.join(" "),
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let out = run("ip", &["netns", "del", &self.name]);
        if !out.status.success() {
            eprintln!(
                "warning: deleting netns {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// Create a veth pair `a` (in `ns_a`) and `b` (in `ns_b`), both up.
///
/// # Panics
/// When `ip` fails.
pub fn veth(a: &str, ns_a: &NetNs, b: &str, ns_b: &NetNs) {
    ip(&[
        "link", "add", a, "netns", &ns_a.name, "type", "veth", "peer", "name", b, "netns",
        &ns_b.name,
    ]);
    ns_a.exec_ok(&["ip", "link", "set", a, "up"]);
    ns_b.exec_ok(&["ip", "link", "set", b, "up"]);
}
