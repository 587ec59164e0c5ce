//! The client side of the admin endpoint, for the command line (`sluice plugin swap`).
//!
//! The endpoint is found from a pipeline file (its admin file gives the address and the
//! token) or given as `host:port` (the token then comes from a file or `SLUICE_ADMIN_TOKEN`).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_TYPE, HOST};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use super::AdminError;
use super::file::{AdminFile, path_of_pipeline};
use super::token::Token;

/// The environment variable that holds the token when the endpoint is given as `host:port`.
pub const TOKEN_ENV: &str = "SLUICE_ADMIN_TOKEN";
/// How long connecting may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request may take (a swap compiles and instantiates the new version).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(300);

/// A running pipeline's admin endpoint, and the token it takes.
#[derive(Debug)]
pub struct Endpoint {
    /// `host:port`.
    pub address: String,
    token: Token,
}

/// What a swap came to when the new version was not refused.
#[derive(Debug, PartialEq, Eq)]
pub enum Swapped {
    /// It goes live with the next batch to open.
    Live {
        /// Its sha256.
        digest: String,
        /// The sha256 it replaced.
        previous: String,
    },
    /// It was the live version already.
    Unchanged {
        /// Its sha256.
        digest: String,
    },
}

impl Endpoint {
    /// The endpoint `target` names: a pipeline file (its admin file is read), else `host:port`.
    /// `token_file` (else `$SLUICE_ADMIN_TOKEN` for `host:port`) gives the token.
    pub fn find(target: &str, token_file: Option<&Path>) -> Result<Endpoint, AdminError> {
        let given = match token_file {
            Some(path) => Some(Token::from_text(&std::fs::read_to_string(path).map_err(
                |e| AdminError::Usage(format!("--token-file {}: {e}", path.display())),
            )?)),
            None => None,
        };
        if Path::new(target).is_file() {
            let file = AdminFile::read(&path_of_pipeline(Path::new(target))?)?;
            return Ok(Endpoint {
                address: file.address.to_string(),
                token: given.unwrap_or(file.token),
            });
        }
        if !target.contains(':') {
            return Err(AdminError::Usage(format!(
                "{target:?} is neither a pipeline file nor an address as host:port"
            )));
        }
        let token = match given {
            Some(t) => t,
            None => Token::from_text(&std::env::var(TOKEN_ENV).map_err(|_| {
                AdminError::Usage(format!(
                    "{target} is an address: give its token with --token-file or ${TOKEN_ENV}"
                ))
            })?),
        };
        Ok(Endpoint {
            address: target.to_owned(),
            token,
        })
    }

    /// Offers `wasm` (with `manifest`, and `params` when given) as the new version of `name`.
    pub fn swap(
        &self,
        name: &str,
        wasm: &[u8],
        manifest: Option<String>,
        params: Option<BTreeMap<String, String>>,
    ) -> Result<Swapped, AdminError> {
        let body = json!({
            "wasm_base64": base64::engine::general_purpose::STANDARD.encode(wasm),
            "manifest": manifest,
            "params": params,
        });
        let path = format!(
            "/v1/plugins/{}/swap",
            percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
        );
        let (status, answer) = self.request(Method::POST, &path, Some(body))?;
        let field = |k: &str| answer[k].as_str().unwrap_or_default().to_owned();
        match (status, answer["outcome"].as_str()) {
            (StatusCode::OK, Some("live")) => Ok(Swapped::Live {
                digest: field("digest"),
                previous: field("previous"),
            }),
            (StatusCode::OK, Some("unchanged")) => Ok(Swapped::Unchanged {
                digest: field("digest"),
            }),
            (StatusCode::UNPROCESSABLE_ENTITY, _) => Err(AdminError::Refused {
                plugin: name.to_owned(),
                digest: field("digest"),
                reason: field("reason"),
            }),
            _ => Err(self.rejected(status, &answer)),
        }
    }

    /// `GET /v1/plugins`: the live steps' plugins, as the endpoint lists them.
    pub fn plugins(&self) -> Result<Value, AdminError> {
        match self.request(Method::GET, "/v1/plugins", None)? {
            (StatusCode::OK, answer) => Ok(answer["plugins"].clone()),
            (status, answer) => Err(self.rejected(status, &answer)),
        }
    }

    pub(super) fn rejected(&self, status: StatusCode, answer: &Value) -> AdminError {
        if status == StatusCode::UNAUTHORIZED {
            return AdminError::Unauthorized {
                address: self.address.clone(),
            };
        }
        AdminError::Rejected {
            status: status.as_u16(),
            message: answer["error"].as_str().unwrap_or_default().to_owned(),
        }
    }

    /// One request (HTTP/1.1, one connection), its status and JSON answer.
    pub(super) fn request(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(StatusCode, Value), AdminError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| self.unreachable(format!("starting the async runtime: {e}")))?;
        let body = body.map_or_else(Vec::new, |b| serde_json::to_vec(&b).unwrap_or_default());
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(HOST, &self.address)
            .header(AUTHORIZATION, format!("Bearer {}", self.token.expose()))
            .header(CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| AdminError::Usage(format!("the request: {e}")))?;
        rt.block_on(async {
            tokio::time::timeout(REQUEST_TIMEOUT, self.send(request))
                .await
                .map_err(|_| self.unreachable(format!("no answer within {REQUEST_TIMEOUT:?}")))?
        })
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Result<(StatusCode, Value), AdminError> {
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect(&self.address),
        )
        .await
        .map_err(|_| self.unreachable(format!("no connection within {CONNECT_TIMEOUT:?}")))?
        .map_err(|e| self.unreachable(e.to_string()))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        tokio::spawn(connection);
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| self.unreachable(e.to_string()))?;
        let status = response.status();
        let bytes = response
            .into_body()
            .collect()
            .await
            .map_err(|e| self.unreachable(e.to_string()))?
            .to_bytes();
        let answer = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, answer))
    }

    fn unreachable(&self, message: String) -> AdminError {
        AdminError::Unreachable {
            address: self.address.clone(),
            message,
        }
    }
}

/// `sluice plugin swap`'s arguments.
#[derive(Debug)]
pub struct SwapArgs<'a> {
    /// A pipeline file, or `host:port`.
    pub target: &'a str,
    /// The plugin.
    pub name: &'a str,
    /// The new version's `.wasm`.
    pub file: &'a Path,
    /// New parameters, if any.
    pub params: Option<BTreeMap<String, String>>,
    /// Where the token is, if not in the admin file.
    pub token_file: Option<&'a Path>,
}

/// `sluice plugin swap`: reads the file (and `NAME.toml` beside it), offers it, and says what
/// came of it; a refusal is an error that carries the reason.
pub fn swap_command(args: &SwapArgs<'_>) -> Result<String, AdminError> {
    let (wasm, manifest) = read_candidate(args.file, args.name)?;
    let endpoint = Endpoint::find(args.target, args.token_file)?;
    let short = |d: &str| d[..12.min(d.len())].to_owned();
    Ok(
        match endpoint.swap(args.name, &wasm, manifest, args.params.clone())? {
            Swapped::Live { digest, previous } => format!(
                "plugin {}: sha256 {} passed its checks and goes live with the next batch to open (it replaces {}).",
                args.name,
                short(&digest),
                short(&previous)
            ),
            Swapped::Unchanged { digest } => format!(
                "plugin {}: sha256 {} is the live version already; nothing changed.",
                args.name,
                short(&digest)
            ),
        },
    )
}

/// The component at `file` and the manifest `NAME.toml` beside it (none when there is none).
pub(super) fn read_candidate(
    file: &Path,
    name: &str,
) -> Result<(Vec<u8>, Option<String>), AdminError> {
    let wasm =
        std::fs::read(file).map_err(|e| AdminError::Usage(format!("{}: {e}", file.display())))?;
    let manifest_path = file.with_file_name(format!("{name}.toml"));
    let manifest = match std::fs::read_to_string(&manifest_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(AdminError::Usage(format!(
                "{}: {e}",
                manifest_path.display()
            )));
        }
    };
    Ok((wasm, manifest))
}

/// The path of route `what` of plugin `name`: `/v1/plugins/{name}/{what}`.
pub(super) fn plugin_path(name: &str, what: &str) -> String {
    format!(
        "/v1/plugins/{}/{what}",
        percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC)
    )
}

/// `KEY=VALUE` pairs as parameters.
pub fn parse_params(pairs: &[String]) -> Result<BTreeMap<String, String>, AdminError> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
            _ => Err(AdminError::Usage(format!(
                "--param {p:?}: expected KEY=VALUE"
            ))),
        })
        .collect()
}

/// `sluice status [TARGET]`: the overview (`/api/v1/overview`) of the pipeline TARGET names (a
/// pipeline file, `host:port` or `http://host:port/`; default `127.0.0.1:4040`). The read-only
/// API needs no token.
pub fn overview(target: Option<&str>) -> Result<Value, AdminError> {
    let target = target.unwrap_or("127.0.0.1:4040");
    let address = if Path::new(target).is_file() {
        AdminFile::read(&path_of_pipeline(Path::new(target))?)?
            .address
            .to_string()
    } else {
        let bare = target
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        if !bare.contains(':') {
            return Err(AdminError::Usage(format!(
                "{target:?} is neither a pipeline file nor an address as host:port"
            )));
        }
        bare
    };
    let endpoint = Endpoint {
        address,
        token: Token::from_text(""),
    };
    match endpoint.request(Method::GET, "/api/v1/overview", None)? {
        (StatusCode::OK, answer) => Ok(answer),
        (status, answer) => Err(endpoint.rejected(status, &answer)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_are_key_equals_value() {
        let p = parse_params(&["a=1".into(), "b=x=y".into(), "c=".into()]).unwrap();
        assert_eq!(p["a"], "1");
        assert_eq!(p["b"], "x=y");
        assert_eq!(p["c"], "");
        assert!(parse_params(&["novalue".into()]).is_err());
        assert!(parse_params(&["=1".into()]).is_err());
    }

    #[test]
    fn a_word_is_neither_a_pipeline_file_nor_an_address() {
        assert!(matches!(
            Endpoint::find("no-such-pipeline", None),
            Err(AdminError::Usage(_))
        ));
    }
}
