//! The REST API against a running daemon: bearer tokens, every endpoint's happy and unhappy
//! path, the quarantine of a SIM cutting its traffic, the event stream, TLS, and schemathesis
//! (from PyPI, installed by `cargo xtask setup`) generating requests from the OpenAPI
//! document: no 5xx, and every response as the document says.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use integration_tests::{
    Scratch, enforcer_bin,
    stream::gets_through,
    topology::{Daemon, Topology},
};

const TOKEN: &str = "0123456789abcdef0123456789abcdef";
const METER: &str = "001010000000002";

const POLICY: &str = r#"
pools = ["10.64.0.0/16", "fd00:64::/48"]

[[segments]]
name = "meters"
rules = [ { to = ["192.0.2.53"], proto = "udp", ports = [7001] } ]

[[sims]]
imsi = "001010000000002"
msisdn = "+491700000002"
ipv4 = "10.64.0.2"
segment = "meters"

[[sims]]
imsi = "001010000000003"
segment = "meters"
"#;

fn root() -> bool {
    integration_tests::root_or_skip()
}

/// `curl` in namespace `ns`: `method` `url` with the token (if any) and a JSON body (if
/// any); returns (status, body). `extra` are more curl arguments.
fn http(
    ns: &str,
    method: &str,
    url: &str,
    token: Option<&str>,
    body: Option<&str>,
    extra: &[&str],
) -> (u16, String) {
    let mut command = Command::new("ip");
    command
        .args(["netns", "exec", ns, "curl", "-sS", "-m", "20", "-X", method])
        .args(["-w", "\n%{http_code}"])
        .args(extra);
    if let Some(token) = token {
        command.args(["-H", &format!("Authorization: Bearer {token}")]);
    }
    if body.is_some() {
        command.args([
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            "@-",
        ]);
    }
    command
        .arg(url)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    let mut child = command
        .spawn()
        .expect("curl (installed by `cargo xtask setup`)");
    if let Some(body) = body {
        std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), body.as_bytes())
            .expect("body");
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().expect("curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", &text));
    (status.trim().parse().unwrap_or(0), body.to_owned())
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

/// Whether UDP from the meter's address to the service's port 7001 gets through.
fn passes(topology: &Topology) -> bool {
    gets_through(
        &topology.dev_a.name,
        "10.64.0.2",
        &topology.svc.name,
        "192.0.2.53:7001".parse().expect("address"),
    )
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn start(scratch: &Scratch, topology: &Topology, port: u16, tls: &[&str]) -> Daemon {
    let policy = scratch.write("policy.toml", POLICY);
    let token = scratch.write("token", &format!("{TOKEN}\n"));
    let address = format!("127.0.0.1:{port}");
    let mut args = vec!["--api-address", &address, "--api-token-file", &token];
    args.extend_from_slice(tls);
    Daemon::start_with_roles(
        &enforcer_bin(),
        Path::new(&policy),
        topology,
        "native",
        &args,
    )
}

#[test]
#[expect(clippy::too_many_lines, reason = "one walk through the API")]
fn rest_api_authenticates_commands_and_streams_events() {
    if !root() {
        return;
    }
    let scratch = Scratch::new("api");
    let topology = Topology::build(Path::new(env!("CARGO_BIN_EXE_netprobe")));
    let gw = topology.gw.name.clone();
    let port = free_port();
    let mut daemon = start(&scratch, &topology, port, &[]);
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: &str, token: Option<&str>| {
        http(&gw, "GET", &format!("{base}{path}"), token, None, &[])
    };
    let post = |path: &str, token: Option<&str>, body: Option<&str>| {
        http(&gw, "POST", &format!("{base}{path}"), token, body, &[])
    };

    // The document needs no token; everything else does, and without one nothing happens.
    let (status, body) = get("/openapi.json", None);
    assert_eq!(status, 200);
    assert!(json(&body)["paths"]["/sims/{imsi}/quarantine"].is_object());
    for token in [None, Some("wrong-token-wrong-token-wrong-tok")] {
        let (status, body) = get("/sims", token);
        assert_eq!(status, 401, "{body}");
        assert!(
            json(&body)["error"]
                .as_str()
                .is_some_and(|e| e.contains("bearer token"))
        );
        let (status, _) = post(&format!("/sims/{METER}/quarantine"), token, None);
        assert_eq!(status, 401);
    }
    assert!(
        passes(&topology),
        "an unauthenticated quarantine changed nothing"
    );

    // SIMs: a page, filters, one SIM, unknown and invalid IMSIs.
    let (status, body) = get("/sims?limit=1", Some(TOKEN));
    assert_eq!(status, 200, "{body}");
    let page = json(&body);
    assert_eq!(page["total"], 2);
    assert_eq!(page["sims"].as_array().map(Vec::len), Some(1));
    assert_eq!(page["sims"][0]["imsi"], METER);
    assert_eq!(page["sims"][0]["msisdn"], "+491700000002");
    let (_, body) = get(
        "/sims?imsi_prefix=0010100000000&state=active&segment=meters&offset=1",
        Some(TOKEN),
    );
    assert_eq!(json(&body)["sims"][0]["imsi"], "001010000000003");
    assert_eq!(get("/sims?limit=0", Some(TOKEN)).0, 400);
    assert_eq!(get("/sims?limit=abc", Some(TOKEN)).0, 400);
    assert_eq!(get("/sims?segment=nosuch", Some(TOKEN)).0, 400);
    let (status, body) = get(&format!("/sims/{METER}"), Some(TOKEN));
    assert_eq!(status, 200);
    assert_eq!(json(&body)["addresses"][0], "10.64.0.2");
    assert_eq!(get("/sims/001019999999999", Some(TOKEN)).0, 404);
    assert_eq!(get("/sims/12ab", Some(TOKEN)).0, 400);
    assert_eq!(get("/nosuch", Some(TOKEN)).0, 404);

    // The event stream: a denied packet arrives as `event: deny`.
    let events_file = PathBuf::from(scratch.write("events.txt", ""));
    let mut events = Command::new("ip")
        .args(["netns", "exec", &gw, "curl", "-sN", "-m", "30"])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .arg(format!("{base}/events"))
        .stdout(std::fs::File::create(&events_file).expect("events file"))
        .spawn()
        .expect("curl");
    std::thread::sleep(Duration::from_millis(500));

    // Quarantine by API: the meter's traffic stops at once; release: it flows again.
    let (status, body) = post(&format!("/sims/{METER}/quarantine"), Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    let sim = json(&body);
    assert_eq!(sim["state"], "quarantined");
    assert_eq!(sim["quarantine"]["source"], "api");
    assert!(!passes(&topology), "quarantined by API");
    let started = Instant::now();
    let mut seen = String::new();
    while started.elapsed() < Duration::from_secs(10) && !seen.contains("event: deny") {
        std::thread::sleep(Duration::from_millis(100));
        seen = std::fs::read_to_string(&events_file).unwrap_or_default();
    }
    let _ = events.kill();
    let _ = events.wait();
    assert!(
        seen.contains("event: deny") && seen.contains("\"reason\":\"quarantined\""),
        "the deny event streamed:\n{seen}"
    );
    assert_eq!(
        post(&format!("/sims/{METER}/release"), Some(TOKEN), None).0,
        200
    );
    assert!(passes(&topology), "released by API");
    let (status, body) = post(&format!("/sims/{METER}/release"), Some(TOKEN), None);
    assert_eq!(status, 409, "releasing twice is refused: {body}");

    // Bind and unbind; bad bodies are 4xx with a message and change nothing.
    let bind = format!("/sims/{METER}/bind");
    let (status, body) = post(&bind, Some(TOKEN), Some(r#"{"address":"10.64.0.9"}"#));
    assert_eq!(status, 200, "{body}");
    assert!(json(&body)["addresses"][0] == "10.64.0.9");
    for bad in ["{", r#"{"address":5}"#, r#"{"addr":"10.64.0.9"}"#, "[]"] {
        let (status, body) = post(&bind, Some(TOKEN), Some(bad));
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(json(&body)["error"].is_string());
    }
    let (status, _) = post(&bind, Some(TOKEN), Some(r#"{"address":"192.0.2.1"}"#));
    assert_eq!(status, 409, "an address outside every pool is refused");
    let huge = format!(r#"{{"text":"{}"}}"#, "x".repeat(9 << 20));
    let (status, body) = post("/policy/validate", Some(TOKEN), Some(&huge));
    assert_eq!(status, 413, "{body}");
    let lock = format!("{base}/sims/{METER}/imei-lock");
    let (status, body) = http(
        &gw,
        "PUT",
        &lock,
        Some(TOKEN),
        Some(r#"{"lock":"tac:35209900"}"#),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["imei"]["lock"], "tac:35209900");
    let (status, _) = http(
        &gw,
        "PUT",
        &lock,
        Some(TOKEN),
        Some(r#"{"lock":"tac:1"}"#),
        &[],
    );
    assert_eq!(status, 400, "a bad lock is refused");
    let (status, body) = http(
        &gw,
        "PUT",
        &lock,
        Some(TOKEN),
        Some(r#"{"lock":null}"#),
        &[],
    );
    assert_eq!(status, 200, "{body}");
    let imei = &json(&body)["imei"];
    assert!(
        imei.is_null() || imei["lock"] == "",
        "the policy's lock (none) is back: {body}"
    );
    let (status, body) = post(&format!("/sims/{METER}/unbind"), Some(TOKEN), None);
    assert_eq!(status, 200, "{body}");
    assert!(passes(&topology), "the file address is back");

    // Policy: in force, validate, diff, apply.
    let (status, body) = get("/policy", Some(TOKEN));
    assert_eq!(status, 200);
    assert!(
        json(&body)["path"]
            .as_str()
            .is_some_and(|p| p.ends_with("policy.toml"))
    );
    assert!(
        json(&body)["text"]
            .as_str()
            .is_some_and(|t| t.contains("[[segments]]")),
        "the policy's text: {body}"
    );
    let invalid = serde_json::json!({ "text": "pools = [\"10.64.0.0/99\"]" }).to_string();
    let (status, body) = post("/policy/validate", Some(TOKEN), Some(&invalid));
    assert_eq!(status, 200);
    let check = json(&body);
    assert_eq!(check["valid"], false);
    assert!(
        check["errors"][0]
            .as_str()
            .is_some_and(|e| e.contains(":1:")),
        "{check}"
    );
    let changed = POLICY.replace("ports = [7001]", "ports = [7001, 7002]");
    let text = serde_json::json!({ "text": changed }).to_string();
    let (status, body) = post("/policy/validate", Some(TOKEN), Some(&text));
    assert_eq!(
        (status, json(&body)["valid"].clone()),
        (200, serde_json::json!(true))
    );
    let (status, body) = post("/policy/diff", Some(TOKEN), Some(&text));
    assert_eq!(status, 200);
    assert!(body.contains("7002"), "the diff names the new port: {body}");
    let file = scratch.write("policy2.toml", &changed);
    let apply = serde_json::json!({ "path": file }).to_string();
    let (status, body) = post("/policy/apply", Some(TOKEN), Some(&apply));
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        post(
            "/policy/apply",
            Some(TOKEN),
            Some(r#"{"path":"relative.toml"}"#)
        )
        .0,
        400
    );
    let (status, body) = post(
        "/policy/apply",
        Some(TOKEN),
        Some(r#"{"path":"/etc/passwd"}"#),
    );
    assert_eq!(status, 400, "only files beside the policy in force: {body}");
    // A valid policy file, but in another directory: refused, the policy in force stays.
    let elsewhere = scratch.write("elsewhere/policy.toml", POLICY);
    let (status, body) = post(
        "/policy/apply",
        Some(TOKEN),
        Some(&serde_json::json!({ "path": elsewhere }).to_string()),
    );
    assert_eq!(status, 400, "only files beside the policy in force: {body}");
    let (_, body) = get("/policy", Some(TOKEN));
    assert_ne!(json(&body)["path"], elsewhere.as_str(), "{body}");

    // Counters and flows.
    let (status, body) = get("/stats/segments", Some(TOKEN));
    assert_eq!(status, 200);
    assert!(body.contains("pass_rule"), "{body}");
    let (status, body) = get(&format!("/stats/sims?imsi={METER}"), Some(TOKEN));
    assert_eq!(status, 200);
    assert_eq!(json(&body)["sims"][0]["imsi"], METER);
    assert_eq!(get("/flows", Some(TOKEN)).0, 200);
    assert_eq!(get("/status", Some(TOKEN)).0, 200);

    // schemathesis: requests generated from the document, with the token.
    let schemathesis =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/schemathesis-venv/bin/schemathesis");
    // It keeps a cache (`.schemathesis/`) in its working directory: the run's scratch one,
    // not the source tree.
    let out = Command::new("ip")
        .current_dir(&scratch.0)
        .args(["netns", "exec", &gw])
        .arg(&schemathesis)
        .args(["run", &format!("{base}/openapi.json")])
        .args(["-H", &format!("Authorization: Bearer {TOKEN}")])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            "--exclude-path",
            "/events",
            "--max-examples",
            "60",
            "--workers",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "1",
        ])
        .output()
        .expect("schemathesis (installed by `cargo xtask setup`)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "schemathesis found problems:\n{report}"
    );
    eprintln!(
        "{}",
        report.lines().rev().take(12).collect::<Vec<_>>().join("\n")
    );

    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "daemon stopped cleanly: {stderr}");
}

/// Over TLS, with a self-signed certificate: curl trusting it gets through; plain HTTP does
/// not; a daemon given a key that is no key does not start.
#[test]
fn rest_api_over_tls() {
    if !root() {
        return;
    }
    let scratch = Scratch::new("api-tls");
    let cert = PathBuf::from(scratch.write("cert.pem", ""));
    let key = PathBuf::from(scratch.write("key.pem", ""));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl (installed by `cargo xtask setup`)");
    assert!(
        made.status.success(),
        "{}",
        String::from_utf8_lossy(&made.stderr)
    );
    let topology = Topology::build(Path::new(env!("CARGO_BIN_EXE_netprobe")));
    let gw = topology.gw.name.clone();
    let port = free_port();
    let (cert_arg, key_arg) = (cert.to_str().expect("path"), key.to_str().expect("path"));
    let mut daemon = start(
        &scratch,
        &topology,
        port,
        &["--api-tls-cert", cert_arg, "--api-tls-key", key_arg],
    );
    let url = format!("https://127.0.0.1:{port}/sims/{METER}");
    let (status, body) = http(&gw, "GET", &url, Some(TOKEN), None, &["--cacert", cert_arg]);
    assert_eq!(status, 200, "{body}");
    assert_eq!(json(&body)["imsi"], METER);
    let plain = format!("http://127.0.0.1:{port}/sims/{METER}");
    let (status, _) = http(&gw, "GET", &plain, Some(TOKEN), None, &[]);
    assert_ne!(status, 200, "no plain HTTP on a TLS port");
    let (ok, _, stderr) = daemon.stop();
    assert!(ok, "daemon stopped cleanly: {stderr}");
}
