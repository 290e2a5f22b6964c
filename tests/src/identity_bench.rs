//! The benchmark's `identity` section (issue 13): RADIUS accounting and the REST API against
//! the real `enforcer run` on `lo` of a namespace of its own, with a fleet of SIMs that have
//! no address in the policy (the packet core gives them one).
//!
//! - **Bindings per second, sustained:** Accounting-Request Starts of distinct SIMs from 8
//!   client sockets, 128 in flight each (RADIUS identifiers are 8 bits per socket), each
//!   retransmitted after a second without an answer, as a PGW does; counted from the first
//!   send to the last Accounting-Response.
//! - **Start → first packet allowed:** a Start for an unbound SIM, then a frame from its new
//!   address run through the pinned program (`BPF_PROG_TEST_RUN`) in a loop until it passes.
//! - **`GET /sims/{imsi}` per second** from 4 keep-alive clients, and **`POST
//!   /sims/{imsi}/quarantine` → next packet dropped**, probed the same way.

use std::{
    fmt::Write as _,
    net::{Ipv4Addr, UdpSocket},
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use aya::programs::Xdp;
use aya_obj::programs::XdpAttachType;
use enforcer::bindings::radius::packet::{self, build};
use serde_json::{Value, json};

use crate::{
    daemon_bench::{Running, percentile},
    frames::{Frame, L4},
    harness::run_pinned,
    throughput::in_netns,
};

const SECRET: &[u8] = b"bench-secret-0123456789";
const TOKEN: &str = "bench-token-0123456789abcdef";
const XDP_PASS: u32 = 2;
const XDP_DROP: u32 = 1;

/// IMSI of SIM `i`.
fn imsi(i: u32) -> String {
    format!("00101{i:010}")
}

/// The address the packet core gives SIM `i`: 10.0.0.0/8 from 10.0.1.0 on.
fn address(i: u32) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0100 + i)
}

fn start_request(id: u8, sim: u32, session: &str) -> Vec<u8> {
    packet::request(
        id,
        &[
            build::status(1),
            build::session(session),
            build::imsi(&imsi(sim)),
            build::ipv4(address(sim)),
            build::apn("meters.example"),
        ],
        SECRET,
    )
}

/// Write the policy (`sims` SIMs without addresses, in an inventory) and the clients and token
/// files into `dir`; returns the policy's path.
fn files(dir: &Path, sims: u32) -> Result<std::path::PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| e.to_string())?;
    let io = |e: std::io::Error| e.to_string();
    std::fs::write(
        dir.join("policy.toml"),
        "pools = [\"10.0.0.0/8\"]\ninventory = \"sims.csv\"\n[[segments]]\nname = \"meters\"\n\
         rules = [ { to = [\"192.0.2.53\"], proto = \"udp\", ports = [7001] } ]\n",
    )
    .map_err(io)?;
    let mut csv = String::with_capacity(sims as usize * 24 + 16);
    csv.push_str("imsi,segment\n");
    for i in 0..sims {
        let _ = writeln!(csv, "{},meters", imsi(i));
    }
    std::fs::write(dir.join("sims.csv"), csv).map_err(io)?;
    std::fs::write(
        dir.join("clients.toml"),
        format!(
            "[[clients]]\nname = \"pgw\"\naddress = \"127.0.0.1\"\nsecret = \"{}\"\n",
            String::from_utf8_lossy(SECRET)
        ),
    )
    .map_err(io)?;
    std::fs::write(dir.join("token"), TOKEN).map_err(io)?;
    Ok(dir.join("policy.toml"))
}

/// Bind SIMs `0..count` with Starts from 8 sockets, 128 in flight each; returns the seconds
/// from the first send to the last answer and the retransmissions.
fn bind_all(ns: &str, server: &str, count: u32) -> Result<(f64, u64), String> {
    const SOCKETS: u32 = 8;
    const WINDOW: usize = 128;
    let retransmitted = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let threads: Vec<_> = (0..SOCKETS)
        .map(|t| {
            let ns = ns.to_owned();
            let server = server.to_owned();
            let retransmitted = Arc::clone(&retransmitted);
            std::thread::spawn(move || -> Result<(), String> {
                let socket =
                    in_netns(&ns, || UdpSocket::bind("127.0.0.1:0")).map_err(|e| e.to_string())?;
                socket
                    .set_read_timeout(Some(Duration::from_millis(50)))
                    .map_err(|e| e.to_string())?;
                let mine: Vec<u32> = (t..count).step_by(SOCKETS as usize).collect();
                let mut next = 0;
                // In flight, by identifier: (SIM, datagram, sent at).
                let mut flight: Vec<Option<(Vec<u8>, Instant)>> = vec![None; 256];
                let mut free: Vec<u8> = (0..=255).rev().collect();
                let mut done = 0;
                let mut buffer = [0u8; 64];
                while done < mine.len() {
                    while next < mine.len() && flight.iter().flatten().count() < WINDOW {
                        let Some(id) = free.pop() else { break };
                        let datagram = start_request(id, mine[next], &format!("s{}", mine[next]));
                        socket
                            .send_to(&datagram, &server)
                            .map_err(|e| e.to_string())?;
                        flight[usize::from(id)] = Some((datagram, Instant::now()));
                        next += 1;
                    }
                    match socket.recv(&mut buffer) {
                        Ok(n)
                            if n >= packet::HEADER_LEN
                                && buffer[0] == packet::ACCOUNTING_RESPONSE =>
                        {
                            let id = buffer[1];
                            if flight[usize::from(id)].take().is_some() {
                                free.push(id);
                                done += 1;
                            }
                        }
                        _ => {
                            for (datagram, sent) in flight.iter_mut().flatten() {
                                if sent.elapsed() > Duration::from_secs(1) {
                                    socket
                                        .send_to(datagram, &server)
                                        .map_err(|e| e.to_string())?;
                                    *sent = Instant::now();
                                    retransmitted.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                        }
                    }
                }
                Ok(())
            })
        })
        .collect();
    for thread in threads {
        thread
            .join()
            .map_err(|_| "a RADIUS client thread panicked".to_owned())??;
    }
    Ok((
        started.elapsed().as_secs_f64(),
        retransmitted.load(Ordering::Relaxed),
    ))
}

/// Run `frame` through the pinned program every 20 µs or so until it returns `action`; the
/// time from `since`, ms (NaN after 2 s). The pause between runs leaves this machine's second
/// CPU to the daemon and the client: a probe spinning flat out made three threads share two
/// CPUs, and the figures measured the scheduler's 3 ms slice instead.
fn until(program: &Xdp, frame: &[u8], action: u32, since: Instant) -> f64 {
    while since.elapsed() < Duration::from_secs(2) {
        if run_pinned(program, frame) == action {
            return since.elapsed().as_secs_f64() * 1e3;
        }
        std::thread::sleep(Duration::from_micros(20));
    }
    f64::NAN
}

/// Run the section with `sims` SIMs; appends a table to `md` and returns the figures.
///
/// # Errors
/// A daemon that fails to start, or a client that fails.
#[expect(clippy::too_many_lines, reason = "one section, measured in order")]
pub fn run(
    md: &mut String,
    work: &Path,
    bin: &Path,
    sims: u32,
    quick: bool,
) -> Result<Value, String> {
    let dir = work.join("identity");
    let policy = files(&dir, sims)?;
    let radius_port = 18_130 + u16::try_from(std::process::id() % 1000).unwrap_or(0);
    let api_port = radius_port + 1000;
    let extra: Vec<String> = [
        "--radius-clients",
        dir.join("clients.toml").to_str().unwrap_or_default(),
        "--radius-listen",
        &format!("127.0.0.1:{radius_port}"),
        "--api-address",
        &format!("127.0.0.1:{api_port}"),
        "--api-token-file",
        dir.join("token").to_str().unwrap_or_default(),
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    let (running, _) = Running::start_with(bin, &policy, "ident", &extra)?;
    let ns = running.ns.name.clone();
    let server = format!("127.0.0.1:{radius_port}");
    let program = Xdp::from_pin(
        Path::new(&running.pin_dir).join("prog"),
        XdpAttachType::Interface,
    )
    .map_err(|e| format!("opening the pinned program: {e}"))?;

    // Sustained bindings.
    let bound = if quick { 5_000 } else { sims.min(200_000) };
    let (seconds, retransmitted) = bind_all(&ns, &server, bound)?;
    let rate = f64::from(bound) / seconds;
    // Every one bound: a frame from the last SIM's address passes.
    let last = Frame::new(&address(bound - 1).to_string(), "192.0.2.53", L4::Udp(7001)).build();
    if run_pinned(&program, &last) != XDP_PASS {
        return Err("the last SIM bound does not pass".into());
    }

    // Start → first packet allowed, and → Accounting-Response.
    let samples = if quick { 20 } else { 300 };
    let socket = in_netns(&ns, || UdpSocket::bind("127.0.0.1:0")).map_err(|e| e.to_string())?;
    socket
        .set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let (mut to_pass, mut to_answer) = (Vec::new(), Vec::new());
    for k in 0..samples {
        let sim = bound + k;
        let frame = Frame::new(&address(sim).to_string(), "192.0.2.53", L4::Udp(7001)).build();
        let datagram = start_request(u8::try_from(k % 256).unwrap_or(0), sim, "lat");
        let since = Instant::now();
        socket
            .send_to(&datagram, &server)
            .map_err(|e| e.to_string())?;
        to_pass.push(until(&program, &frame, XDP_PASS, since));
        let mut buffer = [0u8; 64];
        socket
            .recv(&mut buffer)
            .map_err(|e| format!("no Accounting-Response: {e}"))?;
        to_answer.push(since.elapsed().as_secs_f64() * 1e3);
        std::thread::sleep(Duration::from_millis(5));
    }

    // REST: GET /sims/{imsi} from 4 keep-alive clients.
    let base = format!("http://127.0.0.1:{api_port}");
    let window = Duration::from_secs(if quick { 1 } else { 5 });
    let requests = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..4u32)
        .map(|c| {
            let (ns, base, requests) = (ns.clone(), base.clone(), Arc::clone(&requests));
            std::thread::spawn(move || -> Result<(), String> {
                in_netns(&ns, || {
                    let agent = ureq::Agent::new_with_defaults();
                    let started = Instant::now();
                    let mut i = c;
                    while started.elapsed() < window {
                        let mut response = agent
                            .get(format!("{base}/sims/{}", imsi(i % bound)))
                            .header("Authorization", format!("Bearer {TOKEN}"))
                            .call()
                            .map_err(|e| e.to_string())?;
                        let _ = response.body_mut().read_to_string();
                        requests.fetch_add(1, Ordering::Relaxed);
                        i += 4;
                    }
                    Ok(())
                })
            })
        })
        .collect();
    for client in clients {
        client
            .join()
            .map_err(|_| "a REST client panicked".to_owned())??;
    }
    let per_second = requests.load(Ordering::Relaxed) as f64 / window.as_secs_f64();

    // REST: quarantine → next packet dropped (and the release after, not measured).
    let agent = in_netns(&ns, ureq::Agent::new_with_defaults);
    let (mut to_drop, mut to_reply) = (Vec::new(), Vec::new());
    for k in 0..samples.min(100) {
        let sim = k;
        let frame = Frame::new(&address(sim).to_string(), "192.0.2.53", L4::Udp(7001)).build();
        let since = Instant::now();
        let agent = agent.clone();
        let url = format!("{base}/sims/{}/quarantine", imsi(sim));
        let ns2 = ns.clone();
        let poster = std::thread::spawn(move || {
            in_netns(&ns2, || {
                agent
                    .post(&url)
                    .header("Authorization", format!("Bearer {TOKEN}"))
                    .send_empty()
                    .map(|_| since.elapsed().as_secs_f64() * 1e3)
                    .map_err(|e| e.to_string())
            })
        });
        to_drop.push(until(&program, &frame, XDP_DROP, since));
        to_reply.push(
            poster
                .join()
                .map_err(|_| "the quarantine request panicked".to_owned())??,
        );
        let url = format!("{base}/sims/{}/release", imsi(sim));
        in_netns(&ns, || {
            ureq::Agent::new_with_defaults()
                .post(&url)
                .header("Authorization", format!("Bearer {TOKEN}"))
                .send_empty()
                .map_err(|e| e.to_string())
        })?;
    }
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);

    let p = |v: &[f64], q: f64| percentile(&mut v.to_vec(), q);
    let check = |ok: bool| if ok { "met" } else { "NOT met" };
    let _ = write!(
        md,
        "\n## SIM identity and API (`identity`)\n\n{sims} SIMs without addresses in the policy \
         (an inventory); the daemon on `lo` of its own namespace, RADIUS and REST on loopback.\n\n\
         | measure | figure | target |\n| --- | --- | --- |\n\
         | RADIUS Starts bound, sustained ({bound} SIMs, 8 sockets × 128 in flight) | {rate:.0} /s ({retransmitted} retransmitted) | ≥ 50,000/s: {} |\n\
         | Start → first packet allowed, p50 / p99 ({samples} samples) | {:.3} / {:.3} ms | p99 ≤ 5 ms: {} |\n\
         | Start → Accounting-Response, p50 / p99 | {:.3} / {:.3} ms | |\n\
         | `GET /sims/{{imsi}}`, 4 keep-alive clients | {per_second:.0} requests/s | |\n\
         | `POST /sims/{{imsi}}/quarantine` → next packet dropped, p50 / p99 | {:.3} / {:.3} ms | |\n\
         | `POST /sims/{{imsi}}/quarantine` → HTTP response, p50 / p99 | {:.3} / {:.3} ms | |\n",
        check(rate >= 50_000.0),
        p(&to_pass, 50.0),
        p(&to_pass, 99.0),
        check(p(&to_pass, 99.0) <= 5.0),
        p(&to_answer, 50.0),
        p(&to_answer, 99.0),
        p(&to_drop, 50.0),
        p(&to_drop, 99.0),
        p(&to_reply, 50.0),
        p(&to_reply, 99.0),
    );
    Ok(json!({
        "sims": sims,
        "radius_bindings_per_s": rate,
        "radius_retransmitted": retransmitted,
        "start_to_pass_ms": {"p50": p(&to_pass, 50.0), "p99": p(&to_pass, 99.0)},
        "start_to_response_ms": {"p50": p(&to_answer, 50.0), "p99": p(&to_answer, 99.0)},
        "get_sim_per_s": per_second,
        "quarantine_to_drop_ms": {"p50": p(&to_drop, 50.0), "p99": p(&to_drop, 99.0)},
        "quarantine_to_response_ms": {"p50": p(&to_reply, 50.0), "p99": p(&to_reply, 99.0)},
    }))
}
