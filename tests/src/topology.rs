//! The gateway picture of `examples/policy.toml` on network namespaces, shared by the
//! end-to-end test and `cargo xtask demo`:
//!
//! ```text
//!  devA (EV chargers, one industrial PLC,      gw (enforcer on A, B, S,     svc (payment, OCPP,
//!        a spoofer, a non-pool host)  ──A──     forwarding)          ──S──  DNS, head-end, SCADA,
//!  devB (smart meters, industrial gateway) ─B─                              maintenance host)
//! ```
//!
//! Every name carries a per-run prefix; the namespaces (and with them the veths) and the pin
//! directory are removed when the [`Topology`] and [`Daemon`] are dropped, also on failure.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crate::netns::{NetNs, unique_prefix, veth};

/// Which namespace a probe starts in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// EV chargers, an industrial PLC, a spoofer and a non-pool host.
    DevA,
    /// Meters and an industrial gateway.
    DevB,
}

/// What a probe sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A TCP handshake.
    Tcp,
    /// `count` UDP datagrams, each echoed when it gets through.
    Udp(u32),
    /// One ICMP echo.
    Ping,
}

/// One flow of the scenario.
#[derive(Clone, Debug)]
pub struct Probe {
    /// Who sends it, in words.
    pub label: &'static str,
    /// Namespace it starts in.
    pub side: Side,
    /// Protocol.
    pub kind: Kind,
    /// Source address (bound).
    pub src: &'static str,
    /// Destination address.
    pub dst: &'static str,
    /// Destination port (TCP/UDP).
    pub port: u16,
    /// Whether the policy lets it through.
    pub expect_through: bool,
    /// Why, in words.
    pub why: &'static str,
}

/// The flows the demo shows and the end-to-end test checks, one per policy behaviour.
#[must_use]
pub fn scenario() -> Vec<Probe> {
    use Kind::{Ping, Tcp, Udp};
    use Side::{DevA, DevB};
    let p = |label, side, kind, src, dst, port, expect_through, why| Probe {
        label,
        side,
        kind,
        src,
        dst,
        port,
        expect_through,
        why,
    };
    vec![
        p(
            "EV charger -> payment host",
            DevA,
            Tcp,
            "10.64.0.1",
            "198.51.100.10",
            443,
            true,
            "ev-chargers rule: tcp/443",
        ),
        p(
            "EV charger -> OCPP backend",
            DevA,
            Tcp,
            "10.64.0.1",
            "198.51.100.20",
            9005,
            true,
            "ev-chargers rule: tcp/9000-9010",
        ),
        p(
            "EV charger -> OCPP backend (IPv6)",
            DevA,
            Tcp,
            "fd00:64:0:1::1",
            "2001:db8:100::20",
            8080,
            true,
            "ev-chargers rule, IPv6 /64 of the SIM",
        ),
        p(
            "EV charger -> DNS",
            DevA,
            Udp(3),
            "10.64.0.2",
            "192.0.2.53",
            53,
            true,
            "ev-chargers rule: udp/53",
        ),
        p(
            "EV charger -> DNS, wrong port",
            DevA,
            Udp(2),
            "10.64.0.2",
            "192.0.2.53",
            5353,
            false,
            "no rule (default deny)",
        ),
        p(
            "EV charger -> meters' head-end",
            DevA,
            Tcp,
            "10.64.0.1",
            "198.51.100.30",
            4059,
            false,
            "no rule: another segment's service",
        ),
        p(
            "Smart meter -> head-end",
            DevB,
            Udp(2),
            "10.65.0.1",
            "198.51.100.30",
            4059,
            true,
            "meters rule: udp/4059",
        ),
        p(
            "Quarantined meter -> head-end",
            DevB,
            Udp(2),
            "10.65.0.2",
            "198.51.100.30",
            4059,
            false,
            "SIM quarantined",
        ),
        p(
            "EV charger -> smart meter",
            DevA,
            Udp(1),
            "10.64.0.1",
            "10.65.0.1",
            4059,
            false,
            "lateral: pool destination, not named",
        ),
        p(
            "EV charger -> industrial gateway (ping)",
            DevA,
            Ping,
            "10.64.0.1",
            "10.66.0.1",
            0,
            false,
            "lateral",
        ),
        p(
            "Industrial GW -> PLC (ping)",
            DevB,
            Ping,
            "10.66.0.1",
            "10.66.0.2",
            0,
            true,
            "industrial rule names its own segment",
        ),
        p(
            "Industrial GW -> SCADA",
            DevB,
            Tcp,
            "10.66.0.1",
            "203.0.113.5",
            502,
            true,
            "industrial rule: tcp/502",
        ),
        p(
            "Industrial GW -> maintenance host",
            DevB,
            Tcp,
            "10.66.0.1",
            "192.0.2.200",
            22,
            true,
            "this SIM's own rule",
        ),
        p(
            "Industrial PLC -> maintenance host",
            DevA,
            Tcp,
            "10.66.0.2",
            "192.0.2.200",
            22,
            false,
            "the rule belongs to another SIM",
        ),
        p(
            "Spoofer (pool address, no SIM) -> DNS",
            DevA,
            Udp(1),
            "10.64.9.9",
            "192.0.2.53",
            53,
            false,
            "spoofed: no SIM bound",
        ),
        p(
            "Non-pool host -> DNS",
            DevA,
            Udp(1),
            "172.16.0.1",
            "192.0.2.53",
            53,
            true,
            "outside every pool: not the enforcer's business",
        ),
    ]
}

/// Services in `svc`, and the meter's echo server in `devB` (target of the lateral probe).
const SERVICES: &[&str] = &[
    "tcp:198.51.100.10:443",
    "tcp:198.51.100.20:9005",
    "tcp:[2001:db8:100::20]:8080",
    "udp:192.0.2.53:53",
    "udp:192.0.2.53:5353",
    "tcp:198.51.100.30:4059",
    "udp:198.51.100.30:4059",
    "tcp:203.0.113.5:502",
    "tcp:192.0.2.200:22",
];

/// The namespaces, links and servers.
pub struct Topology {
    /// Per-run name prefix.
    pub prefix: String,
    /// Gateway-side interfaces the enforcer attaches to: A and B face the devices (the packet
    /// core's side), S the services, in that order.
    pub gw_ifaces: Vec<String>,
    servers: Vec<Child>,
    // Dropped after the servers are killed; field order is drop order.
    /// Devices A.
    pub dev_a: NetNs,
    /// Devices B.
    pub dev_b: NetNs,
    /// Services.
    pub svc: NetNs,
    /// The gateway.
    pub gw: NetNs,
    netprobe: PathBuf,
}

impl Topology {
    /// Build it; `netprobe` is the path of the `netprobe` binary.
    ///
    /// # Panics
    /// When `ip` fails (tests need root).
    #[must_use]
    pub fn build(netprobe: &Path) -> Self {
        let prefix = unique_prefix();
        let ns = |role: &str| NetNs::new(&format!("{prefix}-{role}"));
        let (dev_a, dev_b, svc, gw) = (ns("devA"), ns("devB"), ns("svc"), ns("gw"));
        // No duplicate address detection: addresses (link-local ones too) are usable at once
        // instead of staying tentative for a second or two.
        for n in [&dev_a, &dev_b, &svc, &gw] {
            n.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.default.accept_dad=0"]);
            n.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.accept_dad=0"]);
        }
        let name = |x: &str| format!("{prefix}{x}");
        veth(&name("a"), &dev_a, &name("A"), &gw);
        veth(&name("b"), &dev_b, &name("B"), &gw);
        veth(&name("s"), &svc, &name("S"), &gw);

        let addr = |ns: &NetNs, dev: &str, a: &str| {
            let mut args = vec!["ip", "addr", "add", a, "dev", dev];
            if a.contains(':') {
                args.push("nodad");
            }
            ns.exec_ok(&args);
        };
        let route =
            |ns: &NetNs, to: &str, via: &str| ns.exec_ok(&["ip", "route", "add", to, "via", via]);

        addr(&gw, &name("A"), "10.255.1.1/24");
        addr(&gw, &name("A"), "fd00:ff:1::1/64");
        addr(&gw, &name("B"), "10.255.2.1/24");
        addr(&gw, &name("S"), "10.255.3.1/24");
        addr(&gw, &name("S"), "fd00:ff:3::1/64");
        gw.exec_ok(&["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
        gw.exec_ok(&["sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"]);

        // The link addresses (10.255.x.2, fd00:ff:x::2) stand for the PGW/UPF; the devices'
        // pool addresses sit behind it, on `lo`, as they would behind the tunnel: never the
        // source of the link's neighbour discovery.
        let a = name("a");
        addr(&dev_a, &a, "10.255.1.2/24");
        addr(&dev_a, &a, "fd00:ff:1::2/64");
        for host in [
            "10.64.0.1/32",
            "10.64.0.2/32",
            "10.66.0.2/32",
            "10.64.9.9/32",
            "172.16.0.1/32",
            "fd00:64:0:1::1/64",
        ] {
            addr(&dev_a, "lo", host);
        }
        route(&dev_a, "default", "10.255.1.1");
        route(&dev_a, "default", "fd00:ff:1::1");
        for host in [
            "10.64.0.1",
            "10.64.0.2",
            "10.66.0.2",
            "10.64.9.9",
            "172.16.0.1",
        ] {
            route(&gw, host, "10.255.1.2");
        }
        route(&gw, "fd00:64:0:1::/64", "fd00:ff:1::2");

        let b = name("b");
        addr(&dev_b, &b, "10.255.2.2/24");
        for host in ["10.65.0.1/32", "10.65.0.2/32", "10.66.0.1/32"] {
            addr(&dev_b, "lo", host);
        }
        route(&dev_b, "default", "10.255.2.1");
        for host in ["10.65.0.1", "10.65.0.2", "10.66.0.1"] {
            route(&gw, host, "10.255.2.2");
        }

        let s = name("s");
        addr(&svc, &s, "10.255.3.2/24");
        addr(&svc, &s, "fd00:ff:3::2/64");
        for host in [
            "198.51.100.10/32",
            "198.51.100.20/32",
            "198.51.100.30/32",
            "192.0.2.53/32",
            "203.0.113.5/32",
            "192.0.2.200/32",
            "2001:db8:100::20/128",
        ] {
            addr(&svc, &s, host);
        }
        route(&svc, "default", "10.255.3.1");
        route(&svc, "default", "fd00:ff:3::1");
        for host in [
            "198.51.100.10",
            "198.51.100.20",
            "198.51.100.30",
            "192.0.2.53",
            "203.0.113.5",
            "192.0.2.200",
        ] {
            route(&gw, host, "10.255.3.2");
        }
        route(&gw, "2001:db8:100::20", "fd00:ff:3::2");

        let mut topology = Self {
            prefix: prefix.clone(),
            gw_ifaces: vec![name("A"), name("B"), name("S")],
            servers: Vec::new(),
            dev_a,
            dev_b,
            svc,
            gw,
            netprobe: netprobe.to_owned(),
        };
        let svc_name = topology.svc.name.clone();
        let dev_b_name = topology.dev_b.name.clone();
        topology.serve(&svc_name, SERVICES);
        topology.serve(&dev_b_name, &["udp:10.65.0.1:4059", "tcp:10.65.0.1:4059"]);
        topology
    }

    fn serve(&mut self, ns: &str, specs: &[&str]) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns])
            .arg(&self.netprobe)
            .arg("serve")
            .args(specs)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start netprobe serve");
        // Wait for "ready" so probes never race the listeners.
        let mut out = child.stdout.take().expect("netprobe stdout");
        let mut buf = [0u8; 6];
        std::io::Read::read_exact(&mut out, &mut buf).expect("netprobe serve did not start");
        self.servers.push(child);
    }

    /// From the services' side, open a TCP connection (`udp` false) or send a UDP datagram
    /// and wait for its echo, from `src` to `dst:port`; true when it got through. A meter in
    /// `devB` (10.65.0.1) listens on TCP and UDP 4059.
    #[must_use]
    pub fn from_services(&self, udp: bool, src: &str, dst: &str, port: u16) -> bool {
        let netprobe = self.netprobe.to_string_lossy().into_owned();
        let port = port.to_string();
        let kind = if udp { "udp" } else { "tcp" };
        self.svc
            .exec(&[&netprobe, kind, src, dst, &port])
            .status
            .success()
    }

    /// Send one probe; true when it got through (handshake done, every echo back, ping reply).
    #[must_use]
    pub fn send(&self, probe: &Probe) -> bool {
        let ns = match probe.side {
            Side::DevA => &self.dev_a,
            Side::DevB => &self.dev_b,
        };
        let port = probe.port.to_string();
        let netprobe = self.netprobe.to_string_lossy().into_owned();
        let out = match probe.kind {
            Kind::Tcp => ns.exec(&[&netprobe, "tcp", probe.src, probe.dst, &port]),
            Kind::Udp(count) => ns.exec(&[
                &netprobe,
                "udp",
                probe.src,
                probe.dst,
                &port,
                &count.to_string(),
            ]),
            Kind::Ping => ns.exec(&[
                "ping", "-n", "-q", "-c", "1", "-W", "1", "-I", probe.src, probe.dst,
            ]),
        };
        out.status.success()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for server in &mut self.servers {
            let _ = server.kill();
            let _ = server.wait();
        }
    }
}

/// `enforcer run` on the gateway's interfaces, in the gateway's network namespace but the
/// host's mount namespace (so its pins land on the host's bpffs).
pub struct Daemon {
    child: Option<Child>,
    /// Pin directory.
    pub pin_dir: PathBuf,
    /// Control socket.
    pub socket: PathBuf,
    bin: PathBuf,
    state_dir: PathBuf,
    gw: String,
    args: Vec<std::ffi::OsString>,
}

impl Daemon {
    /// Start `bin run` with `policy` on the topology's gateway interfaces and wait until it
    /// enforces.
    ///
    /// # Panics
    /// When it does not start within 20 seconds.
    #[must_use]
    pub fn start(bin: &Path, policy: &Path, topology: &Topology, mode: &str) -> Self {
        Self::start_with(bin, policy, topology, mode, &[])
    }

    /// Like [`Daemon::start`], with extra `run` arguments.
    ///
    /// # Panics
    /// When it does not start within 20 seconds.
    #[must_use]
    pub fn start_with(
        bin: &Path,
        policy: &Path,
        topology: &Topology,
        mode: &str,
        extra: &[&str],
    ) -> Self {
        Self::launch(
            bin,
            policy,
            topology,
            mode,
            topology.gw_ifaces.clone(),
            extra,
        )
    }

    /// Like [`Daemon::start_with`], with the interfaces' roles given: A and B `core`, S
    /// `service`.
    ///
    /// # Panics
    /// When it does not start within 20 seconds.
    #[must_use]
    pub fn start_with_roles(
        bin: &Path,
        policy: &Path,
        topology: &Topology,
        mode: &str,
        extra: &[&str],
    ) -> Self {
        let last = topology.gw_ifaces.len().saturating_sub(1);
        let ifaces = topology
            .gw_ifaces
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let role = if i == last { "service" } else { "core" };
                format!("{role}:{name}")
            })
            .collect();
        Self::launch(bin, policy, topology, mode, ifaces, extra)
    }

    fn launch(
        bin: &Path,
        policy: &Path,
        topology: &Topology,
        mode: &str,
        ifaces: Vec<String>,
        extra: &[&str],
    ) -> Self {
        let state_dir = std::env::temp_dir().join(format!("{}-state", topology.prefix));
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/{}", topology.prefix));
        let socket = state_dir.join("enforcer.sock");
        let mut args: Vec<std::ffi::OsString> = vec!["run".into(), "--policy".into()];
        args.push(policy.into());
        args.extend(["--xdp-mode".into(), mode.into(), "--pin-dir".into()]);
        args.push(pin_dir.clone().into());
        args.push("--socket".into());
        args.push(socket.clone().into());
        args.push("--store".into());
        args.push(state_dir.join("enforcer.db").into());
        for iface in ifaces {
            args.extend(["--iface".into(), iface.into()]);
        }
        args.extend(extra.iter().map(Into::into));
        let mut daemon = Self {
            child: None,
            pin_dir,
            socket,
            bin: bin.to_owned(),
            state_dir,
            gw: topology.gw.name.clone(),
            args,
        };
        daemon.restart();
        daemon
    }

    /// Start the daemon again with the same arguments (after [`Daemon::kill`] or
    /// [`Daemon::stop`]) and wait until it answers on its socket.
    ///
    /// # Panics
    /// When it is running, or does not start within 20 seconds.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "the daemon is running");
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{}", self.gw))
            .arg(&self.bin)
            .args(&self.args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start enforcer run");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                let out = self
                    .child
                    .take()
                    .expect("child")
                    .wait_with_output()
                    .expect("daemon output");
                panic!(
                    "enforcer run exited early ({status}):\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            if self.socket.exists() && self.try_cli(&["status"]).is_ok() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "enforcer run did not start within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `enforcer ARGS --socket <this daemon's>`: stdout, or stderr as the error.
    ///
    /// # Errors
    /// The command's stderr when it fails.
    pub fn try_cli(&self, args: &[&str]) -> Result<String, String> {
        crate::output_text(
            Command::new(&self.bin)
                .args(args)
                .arg("--socket")
                .arg(&self.socket),
        )
    }

    /// `enforcer ARGS --socket <this daemon's>`; returns stdout.
    ///
    /// # Panics
    /// When the command fails.
    #[must_use]
    pub fn cli(&self, args: &[&str]) -> String {
        self.try_cli(args)
            .unwrap_or_else(|err| panic!("enforcer {} failed: {err}", args.join(" ")))
    }

    /// `enforcer stats` with extra arguments; returns stdout.
    ///
    /// # Panics
    /// When the command fails.
    #[must_use]
    pub fn stats(&self, extra: &[&str]) -> String {
        let mut args = vec!["stats"];
        args.extend_from_slice(extra);
        self.cli(&args)
    }

    /// `enforcer status --json`.
    ///
    /// # Panics
    /// When the command fails or prints no JSON.
    #[must_use]
    pub fn status(&self) -> serde_json::Value {
        serde_json::from_str(&self.cli(&["status", "--json"])).expect("status --json is JSON")
    }

    /// SIGKILL the daemon and reap it.
    ///
    /// # Panics
    /// When it is not running.
    pub fn kill(&mut self) {
        let mut child = self.child.take().expect("daemon not running");
        let _ = child.kill();
        let _ = child.wait();
    }

    /// `enforcer detach` on this daemon's pin directory (the daemon must be stopped).
    ///
    /// # Errors
    /// Its stderr.
    pub fn detach(&self) -> Result<String, String> {
        crate::output_text(
            Command::new(&self.bin)
                .args(["detach", "--pin-dir"])
                .arg(&self.pin_dir),
        )
    }

    /// Send SIGINT and wait; returns (success, stdout, stderr).
    ///
    /// # Panics
    /// When the daemon cannot be signalled or waited for.
    pub fn stop(&mut self) -> (bool, String, String) {
        let child = self.child.take().expect("daemon already stopped");
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(pid, libc::SIGINT) };
        let out = child.wait_with_output().expect("wait for enforcer run");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.child.is_some() {
            let (ok, _, stderr) = self.stop();
            if !ok {
                eprintln!("warning: enforcer run exited with an error:\n{stderr}");
            }
        }
        // Stopping leaves enforcement pinned: remove it (the namespaces go with the topology).
        if self.pin_dir.exists() {
            let _ = self.detach();
            let _ = std::fs::remove_dir_all(&self.pin_dir);
        }
        let _ = std::fs::remove_dir_all(&self.state_dir);
    }
}
