//! The endpoint's read-only routes, answered without the token: the UI's page and files,
//! `/api/v1/` (JSON), `/metrics` (Prometheus), `/healthz` and `/readyz`.
//!
//! They show nothing secret (see [`crate::monitor::api`]), and change nothing: anything that
//! does (swap, shadow, promote) stays behind the token in [`super::routes`].

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::json;

use super::routes::Reply;
use crate::monitor::{Monitor, assets, prometheus};

/// The most batches one `/api/v1/batches` answer holds.
const MAX_LIMIT: usize = crate::monitor::history::KEEP_BATCHES;

/// Whether `path` is a read-only route (so it needs no token).
pub(super) fn is_public(path: &str) -> bool {
    matches!(path, "/metrics" | "/healthz" | "/readyz")
        || path.starts_with("/api/v1/")
        || assets::find(path).is_some()
}

/// The answer to a read-only route; `None` when `path` is not one.
pub(super) fn answer(monitor: &Monitor, method: &Method, path: &str, query: &str) -> Reply {
    if *method != Method::GET && *method != Method::HEAD {
        return Reply::error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{path} takes GET only"),
        );
    }
    if let Some(a) = assets::find(path) {
        return Reply::raw(a.content_type, Bytes::from_static(a.body));
    }
    match path {
        "/metrics" => Reply::raw(prometheus::CONTENT_TYPE, Bytes::from(monitor.prometheus())),
        "/healthz" => Reply::ok(json!({ "alive": true })),
        "/readyz" => match monitor.readiness() {
            Ok(()) => Reply::ok(json!({ "ready": true })),
            Err(why) => Reply {
                status: StatusCode::SERVICE_UNAVAILABLE,
                body: json!({ "ready": false, "reason": why }),
                raw: None,
            },
        },
        _ => api(monitor, path.trim_start_matches("/api/v1/"), query),
    }
}

/// `/api/v1/<rest>`.
fn api(monitor: &Monitor, rest: &str, query: &str) -> Reply {
    let limit = limit(query);
    match rest
        .trim_end_matches('/')
        .split('/')
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["overview"] => Reply::ok(monitor.overview()),
        ["batches"] => Reply::ok(monitor.batches(limit)),
        ["batches", id] => match id.parse::<u64>().ok().and_then(|id| monitor.batch(id)) {
            Some(b) => Reply::ok(b),
            None => Reply::error(
                StatusCode::NOT_FOUND,
                &format!(
                    "batch {id} is not in the history (it keeps the last {MAX_LIMIT} batches)"
                ),
            ),
        },
        ["receivers"] => Reply::ok(monitor.receivers()),
        ["plugins"] => Reply::ok(monitor.plugins_json()),
        ["swaps"] => Reply::ok(monitor.swaps()),
        ["checkpoints"] => Reply::ok(monitor.checkpoints(limit)),
        ["dead-letters"] => Reply::ok(monitor.dead_letters()),
        _ => Reply::error(StatusCode::NOT_FOUND, "no such API document"),
    }
}

/// `limit=N` of the query (default 100, at most [`MAX_LIMIT`]).
fn limit(query: &str) -> usize {
    query
        .split('&')
        .find_map(|kv| kv.strip_prefix("limit="))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(100)
        .min(MAX_LIMIT)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_read_only_routes_are_public_and_every_control_route_needs_the_token() {
        for path in [
            "/",
            "/index.html",
            "/ui/app.js",
            "/metrics",
            "/healthz",
            "/readyz",
        ] {
            assert!(is_public(path), "{path}");
        }
        assert!(is_public("/api/v1/overview"));
        for path in [
            "/v1/plugins",
            "/v1/plugins/grep/swap",
            "/v1/plugins/grep/shadow",
            "/v1/plugins/grep/promote",
            "/api/v1",
            "/ui/../v1/plugins",
            "/admin.json",
        ] {
            assert!(!is_public(path), "{path}");
        }
    }

    #[test]
    fn a_batches_limit_is_read_from_the_query_and_capped() {
        assert_eq!(limit(""), 100);
        assert_eq!(limit("limit=5"), 5);
        assert_eq!(limit("x=1&limit=7"), 7);
        assert_eq!(limit("limit=99999999"), MAX_LIMIT);
        assert_eq!(limit("limit=-1"), 100);
    }
}
