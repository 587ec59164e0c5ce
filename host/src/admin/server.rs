//! The endpoint's HTTP/1.1 server (hyper). A read-only route ([`super::public`]: the UI,
//! `/api/v1/`, `/metrics`, `/healthz`, `/readyz`) is answered to anyone who can reach the
//! address; every other request must present the token, then goes to its route
//! ([`super::routes`]).
//!
//! The order is fixed, so nothing is read or done for a caller without the token: the token
//! (401), then the route (404, 405), then the body, bounded by [`MAX_BODY`] (413) and by time,
//! then the handler.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, CONTENT_TYPE, WWW_AUTHENTICATE};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use super::public;
use super::routes::{self, Reply, Route};
use super::token::Token;
use crate::swap::Gate;

/// The largest request body read: 64 MiB (a component of up to 48 MiB, base64).
pub const MAX_BODY: usize = 64 << 20;
/// How long a client may take to send its request's headers.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a client may take to send its request's body.
const BODY_TIMEOUT: Duration = Duration::from_secs(120);

/// What every request is answered from.
pub(super) struct State {
    pub(super) token: Token,
    pub(super) gate: Option<Arc<Gate>>,
    pub(super) monitor: Option<Arc<crate::monitor::Monitor>>,
}

/// Accepts connections on `listener` until `stop` changes, each served on a task of its own.
pub(super) async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    tokio::spawn(connection(stream, state.clone()));
                }
                Err(e) => {
                    tracing::warn!(error = %e, "The admin endpoint could not accept a connection.");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            },
            _ = stop.changed() => return,
        }
    }
}

async fn connection(stream: TcpStream, state: Arc<State>) {
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(respond(handle(&state, req).await)) }
    });
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(e) = served {
        tracing::debug!(error = %e, "An admin connection ended with an error.");
    }
}

/// Answers one request: token, route, body, handler.
async fn handle(state: &State, req: Request<Incoming>) -> Reply {
    let path = req.uri().path();
    if let Some(monitor) = &state.monitor
        && public::is_public(path)
    {
        let query = req.uri().query().unwrap_or_default();
        return public::answer(monitor, req.method(), path, query);
    }
    let authorization = req.headers().get(AUTHORIZATION).map(|v| v.as_bytes());
    if !state.token.authorizes(authorization) {
        return Reply::error(
            StatusCode::UNAUTHORIZED,
            "this request needs `Authorization: Bearer <token>` with the token of the pipeline's admin file",
        );
    }
    let route = match Route::of(req.method(), req.uri().path()) {
        Ok(r) => r,
        Err(reply) => return reply,
    };
    let body = if route.takes_body() {
        match body(req).await {
            Ok(b) => b,
            Err(reply) => return reply,
        }
    } else {
        Bytes::new()
    };
    match route {
        Route::Plugins => routes::plugins(state.gate.as_deref()),
        Route::Swap(name) => routes::swap(state.gate.clone(), name, &body).await,
        Route::Shadow(name) => routes::shadow(state.gate.clone(), name, &body).await,
        Route::ShadowReport(name) => routes::shadow_report(state.gate.as_deref(), &name),
        Route::Promote(name) => routes::promote(state.gate.clone(), name).await,
        Route::RollBack(name) => routes::roll_back(state.gate.clone(), name).await,
    }
}

/// The request's body, at most [`MAX_BODY`] bytes, within [`BODY_TIMEOUT`].
async fn body(req: Request<Incoming>) -> Result<Bytes, Reply> {
    let too_large = || {
        Reply::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!("the body is larger than {} MiB", MAX_BODY >> 20),
        )
    };
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    let limited = Limited::new(req.into_body(), MAX_BODY);
    match tokio::time::timeout(BODY_TIMEOUT, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(Reply::error(
            StatusCode::BAD_REQUEST,
            &format!("reading the body: {e}"),
        )),
        Err(_) => Err(Reply::error(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not come in time",
        )),
    }
}

fn respond(reply: Reply) -> Response<Full<Bytes>> {
    let (content_type, body) = match reply.raw {
        Some((t, bytes)) => (t, bytes),
        None => (
            "application/json",
            Bytes::from(serde_json::to_vec(&reply.body).unwrap_or_default()),
        ),
    };
    let mut builder = Response::builder()
        .status(reply.status)
        .header(CONTENT_TYPE, content_type)
        .header("x-content-type-options", "nosniff")
        .header("cache-control", "no-store")
        .header(
            "content-security-policy",
            "default-src 'self'; img-src 'self' data:; style-src 'self'; frame-ancestors 'none'",
        );
    if reply.status == StatusCode::UNAUTHORIZED {
        builder = builder.header(WWW_AUTHENTICATE, "Bearer");
    }
    builder
        .body(Full::new(body))
        .expect("a status and fixed headers make a response")
}
