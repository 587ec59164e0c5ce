//! `amqps://` end to end, against RabbitMQ's TLS listener (port 5671) whose certificate a test
//! CA made by `scripts/services start` signed (`$SLUICE_TLS_DIR`): with the CA trusted
//! (`ca-file`, or `SSL_CERT_FILE`) every message is read; without it, or for a certificate
//! issued to another name, sluice stops at once with a certificate message and the user's exit
//! code instead of retrying; a TLS port that does not answer stays transient. Messages are
//! published over plain AMQP by the test's own client.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use sluice_tests::*;

use crate::amqp::{broker, ids, rt};
use crate::engine::{Running, committed, sluice_run, write_pipeline};

/// The user's exit code (`EXIT_USER`): do not restart.
const EXIT_USER: i32 = 2;
/// The transient exit code (`EXIT_TEMPFAIL`): a restart may succeed.
const EXIT_TEMPFAIL: i32 = 75;

/// The TLS listener's URL (`$SLUICE_AMQPS_URL`, else `amqps://guest:guest@127.0.0.1:5671`) and
/// the directory of the test CA (`$SLUICE_TLS_DIR`, else `tls` under the services' state
/// directory), when both are there; else the test fails (or, opted in, is skipped).
fn tls_broker(test: &str) -> Option<(String, PathBuf)> {
    let url = std::env::var("SLUICE_AMQPS_URL")
        .unwrap_or_else(|_| "amqps://guest:guest@127.0.0.1:5671".to_owned());
    let dir = std::env::var_os("SLUICE_TLS_DIR")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("SLUICE_SERVICES_DIR").map(|d| PathBuf::from(d).join("tls")))
        .unwrap_or_else(|| {
            PathBuf::from(std::env::var_os("HOME").unwrap_or_default())
                .join(".cache/sluice/services/tls")
        });
    if answers(&host_port(&url, 5671)) && dir.join("ca.pem").is_file() {
        return Some((url, dir));
    }
    skip_or_fail(
        test,
        &format!(
            "RabbitMQ's TLS listener ({url}) or the test CA ({}) is missing; `scripts/services start` makes both",
            dir.join("ca.pem").display()
        ),
    );
    None
}

fn pipeline(url: &str, queue: &str, extra: &str) -> String {
    format!(
        r#"version = 1
batch-interval = "300ms"
block-interval = "100ms"

[source]
kind = "amqp"
url = "{url}"
queues = ["{queue}"]
credit = 500
{extra}

[[sink]]
kind = "files"
path = "out"
"#
    )
}

/// Runs `sluice run` on `text` until it exits (at most 30 s) and returns its exit code, its
/// log and how long it ran.
fn run_to_exit(dir: &std::path::Path, text: &str, env: &[(&str, &str)]) -> (i32, String, Duration) {
    let pipeline = write_pipeline(dir, text);
    let mut cmd = sluice_run(dir, &pipeline, &plugins_dir());
    cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = Instant::now();
    let ended = Running::start(cmd).wait(Duration::from_secs(30));
    (
        ended.status.code().unwrap_or(-1),
        ended.stderr,
        started.elapsed(),
    )
}

#[test]
fn a_pipeline_reads_every_message_over_amqps_with_the_test_ca_trusted() {
    let test = "a_pipeline_reads_every_message_over_amqps_with_the_test_ca_trusted";
    let Some(_turn) = broker(test) else {
        return;
    };
    let Some((url, tls)) = tls_broker(test) else {
        return;
    };
    const N: usize = 3000;
    let tmp = tempfile::tempdir().unwrap();
    let queue = fresh_queue("amqps");
    rt().block_on(publish(&queue, &ids("t", 0..N)));
    let ca = tls.join("ca.pem");
    let text = pipeline(
        &url,
        &queue,
        &format!("ca-file = {:?}", ca.display().to_string()),
    );
    let pipeline = write_pipeline(tmp.path(), &text);
    let mut cmd = sluice_run(tmp.path(), &pipeline, &plugins_dir());
    cmd.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
    let mut sluice = Running::start(cmd);
    let out = tmp.path().join("out");
    let seen = || -> Vec<String> {
        committed(&out, "input", "txt")
            .into_values()
            .flatten()
            .collect()
    };
    sluice.wait_for("every message over TLS", Duration::from_secs(60), || {
        seen().len() >= N
    });
    sluice.interrupt();
    let run = sluice.wait(Duration::from_secs(30));
    run.assert_success();
    let got = seen();
    let expected: Vec<String> = ids("t", 0..N).into_iter().map(|(id, _)| id).collect();
    assert_eq!(got.len(), N, "each message once, nothing twice");
    assert_eq!(
        got.into_iter().collect::<BTreeSet<_>>(),
        expected.into_iter().collect::<BTreeSet<_>>(),
        "exactly the messages published"
    );
    assert!(
        run.events("Attached to the broker.")
            .iter()
            .any(|e| e["broker"]
                .as_str()
                .is_some_and(|b| b.starts_with("amqps://"))),
        "attached over amqps:\n{}",
        run.stderr
    );

    // The same trust through OpenSSL's variable instead of the key (`sluice validate`).
    let plain = write_pipeline(tmp.path(), &pipeline_text_without_ca(&url, &queue));
    let validate = Command::new(sluice_bin())
        .arg("validate")
        .arg(&plain)
        .env("SLUICE_CACHE_DIR", tmp.path().join("cache"))
        .env("SSL_CERT_FILE", &ca)
        .env_remove("SSL_CERT_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        validate.status.success(),
        "SSL_CERT_FILE trusts the CA: {}",
        String::from_utf8_lossy(&validate.stderr)
    );
}

fn pipeline_text_without_ca(url: &str, queue: &str) -> String {
    pipeline(url, queue, "")
}

#[test]
fn a_broker_certificate_from_an_untrusted_ca_stops_sluice_at_once_as_the_users_fault() {
    let test = "a_broker_certificate_from_an_untrusted_ca_stops_sluice_at_once_as_the_users_fault";
    let Some(_turn) = broker(test) else {
        return;
    };
    let Some((url, _)) = tls_broker(test) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let queue = fresh_queue("amqps-untrusted");
    let (code, log, took) = run_to_exit(tmp.path(), &pipeline(&url, &queue, ""), &[]);
    assert_eq!(
        code, EXIT_USER,
        "an untrusted certificate is the user's to fix, not retried as transient:\n{log}"
    );
    assert!(took < Duration::from_secs(20), "promptly: {took:?}");
    assert!(
        log.contains("certificate is not trusted")
            && log.contains("not signed by a certificate authority this host trusts")
            && log.contains("amqps://guest:***@127.0.0.1:5671")
            && log.contains("ca-file"),
        "the message names the endpoint, the reason and the remedy:\n{log}"
    );
    assert!(!log.contains("guest:guest"), "no password in the log");
}

#[test]
fn a_certificate_for_another_host_name_stops_sluice_at_once_as_the_users_fault() {
    let test = "a_certificate_for_another_host_name_stops_sluice_at_once_as_the_users_fault";
    let Some((_, tls)) = tls_broker(test) else {
        return;
    };
    // A TLS server whose certificate the same test CA issued, for not-this-host.example.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut server = Command::new("openssl")
        .args(["s_server", "-quiet", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(tls.join("other-host.pem"))
        .arg("-key")
        .arg(tls.join("other-host-key.pem"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("openssl s_server starts");
    let deadline = Instant::now() + Duration::from_secs(10);
    while !answers(&format!("127.0.0.1:{port}")) {
        assert!(Instant::now() < deadline, "openssl s_server did not listen");
        std::thread::sleep(Duration::from_millis(50));
    }
    let tmp = tempfile::tempdir().unwrap();
    let ca = tls.join("ca.pem").display().to_string();
    let text = pipeline(
        &format!("amqps://guest:guest@127.0.0.1:{port}"),
        "/queue/never-reached",
        &format!("ca-file = {ca:?}"),
    );
    let (code, log, took) = run_to_exit(tmp.path(), &text, &[]);
    let _ = server.kill();
    let _ = server.wait();
    assert_eq!(
        code, EXIT_USER,
        "a certificate for another name is the user's to fix:\n{log}"
    );
    assert!(took < Duration::from_secs(20), "promptly: {took:?}");
    assert!(
        log.contains("certificate is not trusted")
            && log.contains("not valid for the host name")
            && log.contains(&format!("127.0.0.1:{port}")),
        "the message names the endpoint and the name:\n{log}"
    );
}

#[test]
fn a_tls_port_that_does_not_answer_is_transient() {
    let test = "a_tls_port_that_does_not_answer_is_transient";
    let Some((_, tls)) = tls_broker(test) else {
        return;
    };
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let tmp = tempfile::tempdir().unwrap();
    let ca = tls.join("ca.pem").display().to_string();
    let text = pipeline(
        &format!("amqps://guest:guest@127.0.0.1:{port}"),
        "/queue/never-reached",
        &format!("ca-file = {ca:?}"),
    );
    let (code, log, _) = run_to_exit(tmp.path(), &text, &[]);
    assert_eq!(
        code, EXIT_TEMPFAIL,
        "a broker that does not answer may answer later:\n{log}"
    );
    assert!(
        log.contains("cannot reach the broker") && !log.contains("certificate"),
        "{log}"
    );
}
