//! Who may use the server: every request passes [`guard`] before it reaches an endpoint.
//!
//! The server's default is loopback with no key, and a web page the user visits can reach
//! loopback too. What keeps such pages out:
//! - `Host` must name the server: `localhost` (or `*.localhost`), an IP address, or a name
//!   given with `--allowed-host` (or `--host`). DNS rebinding points an attacker's name at
//!   127.0.0.1, but the browser still sends that name (`Host: evil.example:8000`).
//! - A request with an `Origin` (browsers send one with every cross-site request and every
//!   POST) is refused unless `--cors-origin` allows that origin; allowed origins get CORS
//!   headers and preflight answers.
//! - A POST body must be `Content-Type: application/json`: the only bodies a page may send
//!   without a preflight are form and `text/plain` ones.
//!
//! With `--api-key` (or `OSSA_API_KEY`) every request but `/health` must carry
//! `Authorization: Bearer KEY`; without one, only a loopback address may be bound. Bodies
//! are read here, within a size limit and a time limit, so a handler never waits on a client.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;
use tokio_stream::StreamExt;

use super::ServerState;
use super::error::ApiError;

/// Who may use the server.
#[derive(Debug, Clone, Default)]
pub struct AccessPolicy {
    /// The key every request (but `/health`) must send as `Authorization: Bearer KEY`;
    /// `None`: no key, and only loopback addresses may be bound.
    pub api_key: Option<String>,
    /// Host names requests may be addressed to besides `localhost` and IP addresses
    /// (lowercase); `*`: any (needs a key).
    pub allowed_hosts: Vec<String>,
    /// Origins (`http://localhost:3000`) whose web pages may call the server; `*`: any
    /// (needs a key).
    pub cors_origins: Vec<String>,
}

/// Why a policy cannot be served as asked.
#[derive(Debug, thiserror::Error)]
pub enum ExposureError {
    #[error(
        "refusing to listen on {0} without an API key: anyone who can reach it could use the \
         model and its tools. Set one with --api-key KEY or the OSSA_API_KEY environment \
         variable (clients send it as `Authorization: Bearer KEY`), or listen on 127.0.0.1"
    )]
    NoKey(SocketAddr),
    #[error(
        "refusing {flag} * without an API key: any web page could then use this server. Name \
         the {what} instead, or set a key with --api-key KEY or OSSA_API_KEY"
    )]
    Wildcard {
        flag: &'static str,
        what: &'static str,
    },
}

impl AccessPolicy {
    /// Normalizes the names and origins given on the command line (lowercase, no trailing
    /// dot or slash).
    pub fn new(
        api_key: Option<String>,
        allowed_hosts: impl IntoIterator<Item = String>,
        cors_origins: impl IntoIterator<Item = String>,
    ) -> Self {
        Self {
            api_key: api_key.filter(|k| !k.is_empty()),
            allowed_hosts: allowed_hosts
                .into_iter()
                .map(|h| normalize_host(&h))
                .collect(),
            cors_origins: cors_origins
                .into_iter()
                .map(|o| normalize_origin(&o))
                .collect(),
        }
    }

    /// Refuses what would expose a server without a key: a non-loopback address, or a
    /// wildcard host or origin.
    pub fn check_exposure(&self, bound: SocketAddr) -> Result<(), ExposureError> {
        if self.api_key.is_some() {
            return Ok(());
        }
        if !bound.ip().to_canonical().is_loopback() {
            return Err(ExposureError::NoKey(bound));
        }
        if self.allowed_hosts.iter().any(|h| h == "*") {
            return Err(ExposureError::Wildcard {
                flag: "--allowed-host",
                what: "host names clients use",
            });
        }
        if self.cors_origins.iter().any(|o| o == "*") {
            return Err(ExposureError::Wildcard {
                flag: "--cors-origin",
                what: "origins of the web pages that may call the server",
            });
        }
        Ok(())
    }

    /// Whether a request may be addressed to `host` (a `Host` header's value).
    fn host_allowed(&self, host: &str) -> bool {
        let Some(name) = host_name(host) else {
            return false;
        };
        // IP addresses cannot be rebound: a page that names one is that address's own
        // origin, and the Origin check covers pages from elsewhere.
        name.parse::<IpAddr>().is_ok()
            || name == "localhost"
            || name.ends_with(".localhost")
            || self.allowed_hosts.iter().any(|h| h == "*" || *h == name)
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        let origin = normalize_origin(origin);
        self.cors_origins.iter().any(|o| o == "*" || *o == origin)
    }

    /// Whether `headers` carry the key (always, when there is none).
    fn authorized(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(key) = &self.api_key else {
            return Ok(());
        };
        let sent = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, token) = v.trim().split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        match sent {
            Some(token) if bool::from(token.as_bytes().ct_eq(key.as_bytes())) => Ok(()),
            Some(_) => Err(unauthorized(
                "invalid_api_key",
                "Incorrect API key provided.",
            )),
            None => Err(unauthorized(
                "missing_api_key",
                "This server needs an API key: send it as `Authorization: Bearer KEY`.",
            )),
        }
    }
}

fn unauthorized(code: &'static str, message: &str) -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "invalid_request_error",
        code,
        message,
    )
}

/// `localhost.` → `localhost`, `EXAMPLE.org` → `example.org`.
fn normalize_host(host: &str) -> String {
    host.trim().trim_end_matches('.').to_ascii_lowercase()
}

/// `HTTP://Localhost:3000/` → `http://localhost:3000`.
fn normalize_origin(origin: &str) -> String {
    origin.trim().trim_end_matches('/').to_ascii_lowercase()
}

/// The name or address a `Host` value (`name[:port]`, `[v6][:port]`) names; `None` when it
/// is not one.
fn host_name(host: &str) -> Option<String> {
    let authority: axum::http::uri::Authority = host.trim().parse().ok()?;
    if authority.as_str().contains('@') {
        return None;
    }
    let name = authority.host();
    let name = name
        .strip_prefix('[')
        .and_then(|n| n.strip_suffix(']'))
        .unwrap_or(name);
    Some(normalize_host(name))
}

/// The checks every request passes, in order: shutting down, `Host`, `Origin` (and CORS
/// preflights), the key, then for a POST its content type and body.
pub async fn guard(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    let (has_origin, allowed_origin) = origin_of(&state.access, &request);
    let response = match check(&state, request, has_origin, &allowed_origin).await {
        Ok(request) => next.run(request).await,
        Err(response) => response,
    };
    with_cors(response, allowed_origin)
}

/// Whether the request names an `Origin`, and that origin when it may use the server.
fn origin_of(access: &AccessPolicy, request: &Request) -> (bool, Option<HeaderValue>) {
    let origin = request.headers().get(header::ORIGIN);
    let allowed = origin
        .filter(|o| o.to_str().is_ok_and(|o| access.origin_allowed(o)))
        .cloned();
    (origin.is_some(), allowed)
}

/// The CORS headers an allowed origin's answer carries (`Retry-After` readable by its page).
fn with_cors(mut response: Response, allowed_origin: Option<HeaderValue>) -> Response {
    if let Some(origin) = allowed_origin {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        headers.insert(
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            HeaderValue::from_static("retry-after"),
        );
        headers.append(header::VARY, HeaderValue::from_static("origin"));
    }
    response
}

/// Who may ask: the Host (DNS rebinding), the Origin (web pages), CORS preflights, and the API
/// key (not for `/health`). Checked before the model is loaded too.
#[allow(
    clippy::result_large_err,
    reason = "the error is the response, sent at once; `check` returns the same pair"
)]
fn check_access(
    access: &AccessPolicy,
    request: &Request,
    has_origin: bool,
    allowed_origin: &Option<HeaderValue>,
) -> Result<(), Response> {
    // An absolute URI's authority and the Host header must both pass.
    let mut hosts: Vec<&str> = Vec::new();
    if let Some(authority) = request.uri().authority() {
        hosts.push(authority.as_str());
    }
    if let Some(host) = request.headers().get(header::HOST) {
        hosts.push(host.to_str().unwrap_or_default());
    }
    if hosts.is_empty() {
        return Err(ApiError::invalid(None, "the request has no Host header").into_response());
    }
    if let Some(host) = hosts.iter().find(|h| !access.host_allowed(h)) {
        let shown: String = host.chars().filter(|c| !c.is_control()).take(100).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "host_not_allowed",
            format!(
                "this server does not answer to host `{shown}`: it answers to localhost and IP \
                 addresses, and to names given with --allowed-host NAME"
            ),
        )
        .into_response());
    }
    if has_origin && allowed_origin.is_none() {
        let origin = request
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .unwrap_or("?");
        let shown: String = origin.chars().take(100).collect();
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_request_error",
            "origin_not_allowed",
            format!(
                "requests from web pages at `{shown}` are refused (start the server with \
                 --cors-origin {shown} to let that site use it)"
            ),
        )
        .into_response());
    }
    if allowed_origin.is_some()
        && request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return Err(preflight(request.headers()));
    }
    if request.uri().path() != "/health" {
        access
            .authorized(request.headers())
            .map_err(IntoResponse::into_response)?;
    }
    Ok(())
}

/// [`guard`] while the model loads: the same checks of who is asking (a page on another site
/// does not learn even that the model is loading), then the loading answer.
pub async fn loading_guard(
    State(access): State<Arc<AccessPolicy>>,
    request: Request,
    next: Next,
) -> Response {
    let (has_origin, allowed_origin) = origin_of(&access, &request);
    let response = match check_access(&access, &request, has_origin, &allowed_origin) {
        Ok(()) => next.run(request).await,
        Err(response) => response,
    };
    with_cors(response, allowed_origin)
}

/// The request, its body read, when it may go on; otherwise the answer.
async fn check(
    state: &ServerState,
    request: Request,
    has_origin: bool,
    allowed_origin: &Option<HeaderValue>,
) -> Result<Request, Response> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "shutting_down",
            "the server is shutting down",
        )
        .into_response());
    }
    check_access(&state.access, &request, has_origin, allowed_origin)?;
    if request.method() != Method::POST {
        return Ok(request);
    }
    let json = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"));
    if !json {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "invalid_request_error",
            "unsupported_media_type",
            "the request body must be JSON, sent with `Content-Type: application/json`",
        )
        .into_response());
    }
    let limits = &state.limits;
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(too_large(limits.max_body_bytes));
    }
    let capacity = declared.map_or(0, |n| n as usize);
    let body = match tokio::time::timeout(
        limits.body_timeout,
        read_body(body, capacity, limits.max_body_bytes),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(BodyError::TooLarge)) => return Err(too_large(limits.max_body_bytes)),
        Ok(Err(BodyError::Broken(e))) => {
            return Err(
                ApiError::invalid(None, format!("cannot read the request body: {e}"))
                    .into_response(),
            );
        }
        Err(_) => return Err(body_timeout(limits.body_timeout)),
    };
    Ok(Request::from_parts(parts, Body::from(body)))
}

enum BodyError {
    TooLarge,
    Broken(axum::Error),
}

async fn read_body(body: Body, capacity: usize, max: usize) -> Result<Bytes, BodyError> {
    let mut stream = body.into_data_stream();
    let mut bytes = Vec::with_capacity(capacity.min(max));
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(BodyError::Broken)?;
        if bytes.len() + chunk.len() > max {
            return Err(BodyError::TooLarge);
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(bytes))
}

fn too_large(max: usize) -> Response {
    let mut response = ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "invalid_request_error",
        "request_too_large",
        format!(
            "the request body is larger than this server takes ({} bytes; --max-body-mb sets it)",
            max
        ),
    )
    .into_response();
    // The rest of the body is not read: the connection cannot carry another request.
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

fn body_timeout(limit: Duration) -> Response {
    let mut response = ApiError::new(
        StatusCode::REQUEST_TIMEOUT,
        "invalid_request_error",
        "request_timeout",
        format!(
            "the request body did not arrive within {} s",
            limit.as_secs_f64()
        ),
    )
    .into_response();
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    response
}

/// The answer to an allowed origin's CORS preflight (`guard` adds the origin).
fn preflight(headers: &HeaderMap) -> Response {
    let mut response = StatusCode::NO_CONTENT.into_response();
    let out = response.headers_mut();
    out.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("GET, POST, DELETE, OPTIONS"),
    );
    // The origin is trusted: whatever headers its client sends (the openai package adds
    // its own `x-stainless-*` ones).
    let requested = headers
        .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .cloned()
        .unwrap_or_else(|| HeaderValue::from_static("authorization, content-type"));
    out.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, requested);
    out.insert(
        header::ACCESS_CONTROL_MAX_AGE,
        HeaderValue::from_static("600"),
    );
    out.insert(
        header::VARY,
        HeaderValue::from_static("access-control-request-method, access-control-request-headers"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_are_loopback_names_addresses_or_allowed_names() {
        let policy = AccessPolicy::new(None, ["My-Box.lan.".to_string()], []);
        for host in [
            "localhost:8000",
            "LOCALHOST",
            "localhost.:8000",
            "app.localhost:1",
            "127.0.0.1:8000",
            "[::1]:8000",
            "[::1]",
            "192.168.1.20",
            "my-box.lan:8000",
        ] {
            assert!(policy.host_allowed(host), "{host}");
        }
        for host in [
            "evil.example:8000",
            "localhost.evil.example",
            "127.0.0.1.nip.io",
            "user@localhost",
            "",
            "my-box.lan.evil.example",
        ] {
            assert!(!policy.host_allowed(host), "{host}");
        }
    }

    #[test]
    fn origins_match_exactly() {
        let policy = AccessPolicy::new(None, [], ["http://localhost:3000/".to_string()]);
        assert!(policy.origin_allowed("http://LOCALHOST:3000"));
        assert!(!policy.origin_allowed("http://localhost:3001"));
        assert!(!policy.origin_allowed("null"));
    }

    #[test]
    fn exposure_without_a_key_is_refused() {
        let loopback: SocketAddr = "127.0.0.1:8000".parse().expect("address");
        let every: SocketAddr = "0.0.0.0:8000".parse().expect("address");
        let mapped: SocketAddr = "[::ffff:127.0.0.1]:8000".parse().expect("address");
        assert!(AccessPolicy::default().check_exposure(loopback).is_ok());
        assert!(AccessPolicy::default().check_exposure(mapped).is_ok());
        let error = AccessPolicy::default()
            .check_exposure(every)
            .expect_err("refused");
        assert!(error.to_string().contains("OSSA_API_KEY"), "{error}");
        let keyed = AccessPolicy::new(Some("k".into()), [], []);
        assert!(keyed.check_exposure(every).is_ok());
        let wildcard = AccessPolicy::new(None, [], ["*".to_string()]);
        assert!(wildcard.check_exposure(loopback).is_err());
    }
}
