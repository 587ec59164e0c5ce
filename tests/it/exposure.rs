//! What the endpoint lets out (issue #14): the control routes refuse a missing or wrong
//! token; by default it cannot be reached from another host; and no page, API document or
//! metric holds a secret of the pipeline (a source password, a plugin parameter, the token).

use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::Path;
use std::time::Duration;

use sluice_tests::eventhubs_server::{Event, FakeEventHubs};
use sluice_tests::{fixtures_dir, plugin_dir_with, plugins_dir};

use crate::engine::{Running, WAIT_TIMEOUT, sluice_run, write_pipeline};
use crate::metrics::{admin_of, get, get_json, request};

/// Every control route, with a body that would be refused for what it says (never applied).
const CONTROL: &[(&str, &str)] = &[
    ("GET", "/v1/plugins"),
    ("POST", "/v1/plugins/grep/swap"),
    ("POST", "/v1/plugins/grep/shadow"),
    ("POST", "/v1/plugins/grep/promote"),
    ("GET", "/v1/plugins/grep/shadow"),
];

fn grep_pipeline(dir: &Path, extra: &str) -> std::path::PathBuf {
    write_pipeline(
        dir,
        &format!(
            r#"version = 1
name = "exposure"
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "generator"
partitions = 1
rate = 200

[[transform]]
plugin = "grep"
params = {{ pattern = "a" }}

[[sink]]
kind = "files"
path = "out"
{extra}"#
        ),
    )
}

#[test]
fn every_control_route_refuses_a_missing_or_wrong_token_and_lets_the_admin_files_token_in() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let pipeline = grep_pipeline(root, "");
    let mut run = Running::start(sluice_run(root, &pipeline, &plugins_dir()));
    let (address, token) = admin_of(&mut run, root);
    let wrong = "0".repeat(token.len());
    let near = format!("{}x", &token[..token.len() - 1]);
    for (method, path) in CONTROL {
        for (what, bearer) in [
            ("no token", None),
            ("a wrong token", Some(wrong.as_str())),
            ("a token one character off", Some(near.as_str())),
            ("an empty token", Some("")),
        ] {
            let (status, headers, body) = request(&address, method, path, bearer, "{}");
            assert_eq!(status, 401, "{method} {path} with {what}: {body}");
            assert_eq!(
                headers.get("www-authenticate").map(String::as_str),
                Some("Bearer")
            );
        }
        // The token without `Bearer `: refused too.
        let raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: {address}\r\nAuthorization: {token}\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
        );
        let mut s = TcpStream::connect(&address).unwrap();
        std::io::Write::write_all(&mut s, raw.as_bytes()).unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut s, &mut answer).unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 401"),
            "{method} {path}: {answer}"
        );

        let (status, _, body) = request(&address, method, path, Some(&token), "{}");
        assert_ne!(status, 401, "{method} {path} with the token: {body}");
        assert!(
            status < 500,
            "{method} {path} with the token: {status} {body}"
        );
    }
    let (status, _, body) = request(&address, "GET", "/v1/plugins", Some(&token), "");
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("\"grep\""), "{body}");
    run.interrupt();
    run.wait(WAIT_TIMEOUT).assert_success();
}

/// This machine's addresses other hosts may reach (`hostname -I`).
fn outward_addresses() -> Vec<IpAddr> {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    let ips: Vec<IpAddr> = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse().ok())
        .filter(|ip: &IpAddr| !ip.is_loopback())
        .collect();
    assert!(
        !ips.is_empty(),
        "this machine has no address besides loopback (hostname -I: {:?}): nothing to test against",
        String::from_utf8_lossy(&out.stdout)
    );
    ips
}

/// A TCP connection to this host's other addresses at the endpoint's port is refused, while
/// one to loopback is answered (and the admin file says loopback).
fn assert_loopback_only(address: &str) {
    let port: u16 = address.rsplit(':').next().unwrap().parse().unwrap();
    let loopback = format!("127.0.0.1:{port}");
    assert_eq!(get(&loopback, "/healthz").0, 200, "reachable on loopback");
    for ip in outward_addresses() {
        let there = SocketAddr::new(ip, port);
        match TcpStream::connect_timeout(&there, Duration::from_secs(3)) {
            Ok(_) => panic!("the endpoint answers on {there}, an address other hosts reach"),
            Err(e) => assert_eq!(
                e.kind(),
                std::io::ErrorKind::ConnectionRefused,
                "connecting to {there}: {e}"
            ),
        }
    }
    assert_eq!(address, loopback, "the admin file says loopback");
}

#[test]
fn by_default_the_endpoint_is_reachable_on_loopback_and_refused_on_this_hosts_other_addresses() {
    // No `--ui`, no terminal: `[admin] listen`'s default. And `--ui` alone: the UI's port,
    // still on loopback.
    let runs: Vec<(tempfile::TempDir, Running)> = [&[][..], &["--ui"][..]]
        .iter()
        .map(|args| {
            let tmp = tempfile::tempdir().unwrap();
            let pipeline = grep_pipeline(tmp.path(), "");
            let mut cmd = sluice_run(tmp.path(), &pipeline, &plugins_dir());
            cmd.args(*args);
            let run = Running::start(cmd);
            (tmp, run)
        })
        .collect();
    for (tmp, mut run) in runs {
        let (address, _) = admin_of(&mut run, tmp.path());
        assert_loopback_only(&address);
        run.interrupt();
        run.wait(WAIT_TIMEOUT).assert_success();
    }
}

/// The secrets the pipeline of the next test holds: the Event Hubs key (in its connection
/// string), two plugin parameters, and the admin token (in its token file).
const KEY: &str = "c2VjcmV0LWV4cG9zdXJlLWtleS0xMjM0NQ==";
const API_KEY: &str = "ApiKey-9sEcReT-param";
const PREFIX: &str = "Prefix-3sEcReT-param";
const TOKEN: &str = "Token-5sEcReT-0123456789abcdef";
/// What a SAS token made from the key would show.
const SAS: &[&str] = &["SharedAccessSignature", "sig="];

/// Every read-only route the endpoint serves to anyone.
fn public_routes(address: &str) -> Vec<String> {
    let mut routes: Vec<String> = [
        "/",
        "/index.html",
        "/ui/",
        "/ui/app.js",
        "/ui/style.css",
        "/metrics",
        "/healthz",
        "/readyz",
        "/api/v1/overview",
        "/api/v1/batches",
        "/api/v1/batches?limit=1000",
        "/api/v1/receivers",
        "/api/v1/plugins",
        "/api/v1/swaps",
        "/api/v1/checkpoints",
        "/api/v1/dead-letters",
        "/api/v1/nothing-here",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let batches = get_json(address, "/api/v1/batches");
    for b in batches["batches"].as_array().unwrap().iter().take(3) {
        routes.push(format!("/api/v1/batches/{}", b["batch"]));
    }
    routes
}

#[test]
fn no_page_api_document_or_metric_holds_a_key_a_plugin_parameter_or_the_token() {
    let events = |p: usize| -> Vec<Event> {
        (0..300)
            .map(|i| Event {
                body: format!("p{p}-e{i:04}").into_bytes(),
                partition_key: None,
                enqueued_ms: 1_700_000_000_000 + i as i64,
            })
            .collect()
    };
    let hub = FakeEventHubs::start("hub-exposure", "listen", KEY, vec![events(0), events(1)]);
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let plugins = root.join("plugins");
    plugin_dir_with(&plugins_dir(), &["grep"], &plugins);
    plugin_dir_with(&fixtures_dir(), &["panic"], &plugins);
    std::fs::write(root.join("token.txt"), format!("{TOKEN}\n")).unwrap();
    let pipeline = write_pipeline(
        root,
        &format!(
            r#"version = 1
name = "secrets"
batch-interval = "200ms"
block-interval = "50ms"

[source]
kind = "eventhubs"
connection-string = "{}"
partitions = 2
checkpoint-dir = "ckpt"

[[transform]]
plugin = "grep"
params = {{ pattern = "-e0" }}

[[transform]]
plugin = "panic"
params = {{ api-key = "{API_KEY}", poison-prefix = "{PREFIX}" }}

[[sink]]
kind = "files"
path = "out"

[admin]
token-file = "token.txt"
"#,
            hub.connection_string(KEY)
        ),
    );
    let mut cmd = sluice_run(root, &pipeline, &plugins);
    cmd.args(["--ui", "127.0.0.1:0"]);
    let mut run = Running::start(cmd);
    let (address, token) = admin_of(&mut run, root);
    assert_eq!(token, TOKEN, "the token is the token file's");
    run.wait_for("every event in", WAIT_TIMEOUT, || {
        get_json(&address, "/api/v1/overview")["totals"]["records_in"].as_u64() == Some(600)
    });
    // The hub throttles once: the receivers' errors are part of what is shown.
    hub.server_busy();
    std::thread::sleep(Duration::from_millis(700));
    let mut seen = 0;
    for route in public_routes(&address) {
        let (status, headers, body) = request(&address, "GET", &route, None, "");
        assert!(
            status == 200 || route == "/readyz" || route.ends_with("nothing-here"),
            "GET {route}: {status} {body}"
        );
        let all = format!("{headers:?}{body}");
        for secret in [KEY, API_KEY, PREFIX, TOKEN].iter().chain(SAS) {
            assert!(
                !all.contains(secret),
                "GET {route} shows the secret {secret:?}: {all}"
            );
        }
        seen += body.len();
    }
    assert!(
        seen > 10_000,
        "the routes answered with something: {seen} bytes"
    );
    run.interrupt();
    let ended = run.wait(WAIT_TIMEOUT);
    ended.assert_success();
    for secret in [KEY, API_KEY, TOKEN] {
        assert!(!ended.stderr.contains(secret), "the log shows {secret:?}");
    }
}
