//! The admin API's routes: which request goes to which handler, and the handlers.
//!
//! [`Route::of`] is the whole table; a new route (say `POST /v1/plugins/{name}/shadow`) is one
//! variant, one line there and one handler here. Every handler answers JSON: what was done,
//! or `{"error": …}`.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::swap::offer::{Candidate, Gate, OfferError, Origin, Outcome, Then};

/// A request the API knows, with what its path names.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// `GET /v1/plugins`: the live steps' plugins and their digests.
    Plugins,
    /// `POST /v1/plugins/{name}/swap`: offer a new version of plugin `name`.
    Swap(String),
    /// `POST /v1/plugins/{name}/shadow`: run a candidate of plugin `name` in the shadow.
    Shadow(String),
    /// `GET /v1/plugins/{name}/shadow`: the report of its latest shadow run.
    ShadowReport(String),
    /// `POST /v1/plugins/{name}/promote`: swap in the candidate of the latest shadow run.
    Promote(String),
    /// `POST /v1/plugins/{name}/rollback`: go back to the version live before the current one.
    RollBack(String),
}

impl Route {
    /// The route of `method` on `path`; else the reply that says why there is none (404 for
    /// a path the API does not have, 405 for a method the path does not take).
    pub(super) fn of(method: &Method, path: &str) -> Result<Route, Reply> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let (route, allowed) = match segments.as_slice() {
            ["v1", "plugins"] => (Route::Plugins, Method::GET),
            ["v1", "plugins", name, "swap"] => (Route::Swap(decode(name)?), Method::POST),
            ["v1", "plugins", name, "shadow"] if *method == Method::GET => {
                (Route::ShadowReport(decode(name)?), Method::GET)
            }
            ["v1", "plugins", name, "shadow"] => (Route::Shadow(decode(name)?), Method::POST),
            ["v1", "plugins", name, "promote"] => (Route::Promote(decode(name)?), Method::POST),
            ["v1", "plugins", name, "rollback"] => (Route::RollBack(decode(name)?), Method::POST),
            _ => return Err(Reply::error(StatusCode::NOT_FOUND, "no such route")),
        };
        if *method != allowed {
            return Err(Reply::error(
                StatusCode::METHOD_NOT_ALLOWED,
                &format!("{path} takes {allowed} only"),
            ));
        }
        Ok(route)
    }

    /// Whether the route reads a request body.
    pub(super) fn takes_body(&self) -> bool {
        matches!(self, Route::Swap(_) | Route::Shadow(_))
    }
}

/// A percent-decoded path segment.
fn decode(segment: &str) -> Result<String, Reply> {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| Reply::error(StatusCode::BAD_REQUEST, "the path is not UTF-8"))
}

/// An answer: a status and a JSON body.
#[derive(Debug)]
pub(super) struct Reply {
    pub(super) status: StatusCode,
    pub(super) body: Value,
    /// A body that is not JSON (a UI file, `/metrics`): its content type and bytes.
    pub(super) raw: Option<(&'static str, bytes::Bytes)>,
}

impl Reply {
    pub(super) fn ok(body: Value) -> Reply {
        Reply {
            status: StatusCode::OK,
            body,
            raw: None,
        }
    }

    pub(super) fn error(status: StatusCode, message: &str) -> Reply {
        Reply {
            status,
            body: json!({ "error": message }),
            raw: None,
        }
    }

    pub(super) fn raw(content_type: &'static str, body: bytes::Bytes) -> Reply {
        Reply {
            status: StatusCode::OK,
            body: Value::Null,
            raw: Some((content_type, body)),
        }
    }
}

/// `GET /v1/plugins`.
pub(super) fn plugins(gate: Option<&Gate>) -> Reply {
    let plugins = gate.map(Gate::plugins).unwrap_or_default();
    Reply::ok(json!({ "plugins": plugins }))
}

/// The body of `POST /v1/plugins/{name}/swap`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct SwapRequest {
    /// The component, base64.
    pub(super) wasm_base64: String,
    /// Its manifest's TOML text; none: the plugin has no manifest.
    #[serde(default)]
    pub(super) manifest: Option<String>,
    /// New parameters for every step that uses the plugin; none: the steps keep theirs.
    #[serde(default)]
    pub(super) params: Option<BTreeMap<String, String>>,
    /// A shadow run: how many batches to compare (default 5).
    #[serde(default)]
    pub(super) batches: Option<u32>,
}

/// `POST /v1/plugins/{name}/swap`: the version goes through the gate, as a file in the plugin
/// directory does (compiling and `init` run on a blocking thread, off the async workers).
pub(super) async fn swap(gate: Option<Arc<Gate>>, name: String, body: &[u8]) -> Reply {
    offer(gate, name, body, false).await
}

/// `POST /v1/plugins/{name}/shadow`: as a swap, but a version that passes runs in the shadow
/// of the live one (answers 202 `{"outcome": "shadowing", …}`).
pub(super) async fn shadow(gate: Option<Arc<Gate>>, name: String, body: &[u8]) -> Reply {
    offer(gate, name, body, true).await
}

/// `GET /v1/plugins/{name}/shadow`: the latest shadow run's report (404 when there is none).
pub(super) fn shadow_report(gate: Option<&Gate>, name: &str) -> Reply {
    let Some(gate) = gate else {
        return unknown(name);
    };
    match gate.shadow_report(name) {
        Ok(Some(report)) => Reply::ok(serde_json::to_value(report).unwrap_or_default()),
        Ok(None) => Reply::error(
            StatusCode::NOT_FOUND,
            &format!("no candidate of plugin `{name}` ran in the shadow in this run"),
        ),
        Err(_) => unknown(name),
    }
}

/// `POST /v1/plugins/{name}/promote`: the latest shadow run's candidate goes live.
/// `POST /v1/plugins/{name}/rollback`.
pub(super) async fn roll_back(gate: Option<Arc<Gate>>, name: String) -> Reply {
    let Some(gate) = gate else {
        return unknown(&name);
    };
    let done = tokio::task::spawn_blocking(move || {
        let outcome = gate.roll_back(&name);
        (name, outcome)
    })
    .await;
    answer(done)
}

pub(super) async fn promote(gate: Option<Arc<Gate>>, name: String) -> Reply {
    let Some(gate) = gate else {
        return unknown(&name);
    };
    let done = tokio::task::spawn_blocking(move || {
        let outcome = gate.promote(&name);
        (name, outcome)
    })
    .await;
    answer(done)
}

async fn offer(gate: Option<Arc<Gate>>, name: String, body: &[u8], shadow: bool) -> Reply {
    let request: SwapRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return Reply::error(StatusCode::BAD_REQUEST, &format!("the body: {e}")),
    };
    let wasm = match base64::engine::general_purpose::STANDARD.decode(&request.wasm_base64) {
        Ok(w) => w,
        Err(e) => {
            return Reply::error(StatusCode::BAD_REQUEST, &format!("`wasm_base64`: {e}"));
        }
    };
    let Some(gate) = gate else {
        return unknown(&name);
    };
    let candidate = Candidate::Bytes {
        wasm,
        manifest: request.manifest,
    };
    let params = request.params;
    let then = match shadow {
        true => Then::Shadow(request.batches.unwrap_or(5)),
        false => Then::GoLive,
    };
    let offered = tokio::task::spawn_blocking(move || {
        let outcome = gate.offer_then(&name, candidate, params, (Origin::Admin, then));
        (name, outcome)
    })
    .await;
    answer(offered)
}

type Done = Result<(String, Result<Outcome, OfferError>), tokio::task::JoinError>;

fn answer(done: Done) -> Reply {
    match done {
        Ok((name, Ok(outcome))) => outcome_reply(&name, outcome),
        Ok((name, Err(OfferError::UnknownPlugin(_)))) => unknown(&name),
        Ok((_, Err(e))) => Reply::error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
        Err(e) => Reply::error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("the check stopped: {e}"),
        ),
    }
}

fn unknown(name: &str) -> Reply {
    Reply::error(
        StatusCode::NOT_FOUND,
        &OfferError::UnknownPlugin(name.to_owned()).to_string(),
    )
}

fn outcome_reply(name: &str, outcome: Outcome) -> Reply {
    match outcome {
        Outcome::Live { digest, previous } => Reply::ok(
            json!({ "outcome": "live", "plugin": name, "digest": digest, "previous": previous }),
        ),
        Outcome::Unchanged { digest } => {
            Reply::ok(json!({ "outcome": "unchanged", "plugin": name, "digest": digest }))
        }
        Outcome::Shadowing { digest, live } => Reply {
            status: StatusCode::ACCEPTED,
            body: json!({ "outcome": "shadowing", "plugin": name, "digest": digest, "live": live }),
            raw: None,
        },
        Outcome::Refused { digest, reason } => Reply {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            body: json!({ "outcome": "refused", "plugin": name, "digest": digest, "reason": reason }),
            raw: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_route_is_found_by_method_and_path() {
        assert_eq!(
            Route::of(&Method::GET, "/v1/plugins").unwrap(),
            Route::Plugins
        );
        assert_eq!(
            Route::of(&Method::POST, "/v1/plugins/my%2Dtag/swap").unwrap(),
            Route::Swap("my-tag".into())
        );
        let status = |m: &Method, p: &str| Route::of(m, p).unwrap_err().status;
        assert_eq!(
            status(&Method::GET, "/v1/plugins/tag/swap"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            status(&Method::POST, "/v1/plugins"),
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(status(&Method::GET, "/v2/plugins"), StatusCode::NOT_FOUND);
        assert_eq!(
            Route::of(&Method::POST, "/v1/plugins/tag/promote").unwrap(),
            Route::Promote("tag".into())
        );
        assert_eq!(
            Route::of(&Method::GET, "/v1/plugins/tag/shadow").unwrap(),
            Route::ShadowReport("tag".into())
        );
        assert_eq!(
            Route::of(&Method::POST, "/v1/plugins/tag/shadow").unwrap(),
            Route::Shadow("tag".into())
        );
        assert_eq!(
            status(&Method::GET, "/v1/plugins/tag/promote"),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
