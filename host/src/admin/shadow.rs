//! `sluice plugin shadow` and `sluice plugin promote`: the client side of shadow runs
//! (`crate::scheduler::shadow` runs them in the driver).

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use base64::Engine as _;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::AdminError;
use super::client::{Endpoint, SwapArgs, plugin_path, read_candidate};
use crate::swap::short;

/// Exit code of a shadow run whose candidate's output differed from the live version's.
pub const EXIT_DIFFERED: u8 = 1;

/// `sluice plugin shadow`: offers the candidate to run in the shadow for `batches` batches,
/// waits (at most `wait`) for its report and prints it. Returns the exit code: 0 the same
/// output, [`EXIT_DIFFERED`], or 2 when the candidate failed in the shadow; a refused
/// candidate is an error (exit 2).
pub fn shadow_command(args: &SwapArgs<'_>, batches: u32, wait: Duration) -> Result<u8, AdminError> {
    let (wasm, manifest) = read_candidate(args.file, args.name)?;
    let endpoint = Endpoint::find(args.target, args.token_file)?;
    let body = json!({
        "wasm_base64": base64::engine::general_purpose::STANDARD.encode(&wasm),
        "manifest": manifest,
        "params": args.params,
        "batches": batches,
    });
    let path = plugin_path(args.name, "shadow");
    let (status, answer) = endpoint.request(Method::POST, &path, Some(body))?;
    let field = |k: &str| answer[k].as_str().unwrap_or_default().to_owned();
    match status {
        StatusCode::ACCEPTED => {}
        StatusCode::UNPROCESSABLE_ENTITY => {
            return Err(AdminError::Refused {
                plugin: args.name.to_owned(),
                digest: field("digest"),
                reason: field("reason"),
            });
        }
        _ => return Err(endpoint.rejected(status, &answer)),
    }
    let digest = field("digest");
    println!(
        "plugin {}: candidate sha256 {} runs in the shadow of sha256 {} for {batches} batches; waiting for its report.",
        args.name,
        short(&digest),
        short(&field("live"))
    );
    let report = wait_for_report(&endpoint, args.name, &digest, wait)?;
    print!("{}", report_text(&report));
    Ok(if report["failed"].is_string() {
        2
    } else if report["differing"].as_u64().unwrap_or_default() > 0 {
        EXIT_DIFFERED
    } else {
        0
    })
}

/// Asks for the report every 200 ms until the shadow of `digest` is done.
fn wait_for_report(
    endpoint: &Endpoint,
    name: &str,
    digest: &str,
    wait: Duration,
) -> Result<Value, AdminError> {
    let started = Instant::now();
    loop {
        let (status, report) = endpoint.request(Method::GET, &plugin_path(name, "shadow"), None)?;
        if status != StatusCode::OK {
            return Err(endpoint.rejected(status, &report));
        }
        if report["digest"].as_str() != Some(digest) {
            return Err(AdminError::Usage(format!(
                "another shadow run of plugin {name} (sha256 {}) replaced this one",
                short(report["digest"].as_str().unwrap_or_default())
            )));
        }
        if report["done"] == true {
            return Ok(report);
        }
        if started.elapsed() > wait {
            return Err(AdminError::Usage(format!(
                "the shadow run had compared {} of {} batches after {wait:?} (--wait); it goes on in the pipeline: `curl` GET {} for its report",
                report["batches"].as_array().map_or(0, Vec::len),
                report["wanted"],
                plugin_path(name, "shadow")
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The report, for a person: per batch the record counts and differences, and the first
/// differing records with their source partition and offset.
pub fn report_text(r: &Value) -> String {
    let mut out = String::new();
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_default();
    for b in r["batches"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "batch {:>8}  live {:>8} records  candidate {:>8} records  {} differing",
            n(b, "batch"),
            n(b, "live_records"),
            n(b, "shadow_records"),
            n(b, "differences")
        );
        for d in b["first"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "    partition {} offset {}: live {}  candidate {}",
                n(d, "partition"),
                d["offset"]
                    .as_u64()
                    .map_or("?".to_owned(), |o| o.to_string()),
                record_text(&d["live"]),
                record_text(&d["shadow"])
            );
        }
    }
    let verdict = match r["failed"].as_str() {
        Some(f) => format!("the candidate failed: {f}"),
        None => format!(
            "{} of {} batches differed",
            n(r, "differing"),
            r["batches"].as_array().map_or(0, Vec::len)
        ),
    };
    let _ = writeln!(
        out,
        "shadow of plugin {}: candidate {} beside {}: {verdict}",
        r["plugin"].as_str().unwrap_or_default(),
        short(r["digest"].as_str().unwrap_or_default()),
        short(r["live"].as_str().unwrap_or_default())
    );
    out
}

fn record_text(r: &Value) -> String {
    if r.is_null() {
        return "(none)".to_owned();
    }
    match r["key"].as_str() {
        Some(k) => format!("{k:?}={:?}", r["value"].as_str().unwrap_or_default()),
        None => format!("{:?}", r["value"].as_str().unwrap_or_default()),
    }
}

/// `sluice plugin promote`: the latest shadow run's candidate goes live.
pub fn promote_command(
    target: &str,
    name: &str,
    token_file: Option<&std::path::Path>,
) -> Result<String, AdminError> {
    let (digest, previous) = post_version_change(target, name, token_file, "promote")?;
    Ok(format!(
        "plugin {name}: the candidate sha256 {digest} is promoted and goes live with the next batch to open (it replaces {previous})."
    ))
}

/// `sluice plugin rollback TARGET NAME`: plugin NAME goes back to the version live before the
/// current one; the answer, as a line to print.
pub fn rollback_command(
    target: &str,
    name: &str,
    token_file: Option<&std::path::Path>,
) -> Result<String, AdminError> {
    let (digest, previous) = post_version_change(target, name, token_file, "rollback")?;
    Ok(format!(
        "plugin {name}: back to sha256 {digest}, live with the next batch to open (it replaces {previous})."
    ))
}

/// `POST /v1/plugins/{name}/{action}` (promote, rollback): the short digests of the version
/// that goes live and of the one it replaces, or the refusal.
fn post_version_change(
    target: &str,
    name: &str,
    token_file: Option<&std::path::Path>,
    action: &str,
) -> Result<(String, String), AdminError> {
    let endpoint = Endpoint::find(target, token_file)?;
    let (status, answer) = endpoint.request(Method::POST, &plugin_path(name, action), None)?;
    let field = |k: &str| answer[k].as_str().unwrap_or_default().to_owned();
    match status {
        StatusCode::OK => Ok((
            short(&field("digest")).to_owned(),
            short(&field("previous")).to_owned(),
        )),
        StatusCode::UNPROCESSABLE_ENTITY => Err(AdminError::Refused {
            plugin: name.to_owned(),
            digest: field("digest"),
            reason: field("reason"),
        }),
        _ => Err(endpoint.rejected(status, &answer)),
    }
}
