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

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio_stream::StreamExt;

use super::error::ApiError;
use super::state::{Limits, ServerState};

pub use super::access::{AccessPolicy, ExposureError};

/// The checks every request passes, in order: shutting down, `Host`, `Origin` (and CORS
/// preflights), the key, then for a POST its content type and body.
pub async fn guard(
    State(state): State<Arc<ServerState>>,
    request: Request,
    next: Next,
) -> Response {
    let (has_origin, allowed_origin) = origin_of(&state.settings.access, &request);
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
    check_access(&state.settings.access, &request, has_origin, allowed_origin)?;
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
    let limits = &state.settings.limits;
    let (parts, body) = request.into_parts();
    let declared = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limits.max_body_bytes as u64) {
        return Err(BodyError::TooLarge.response(limits));
    }
    let capacity = declared.map_or(0, |n| n as usize);
    let read = tokio::time::timeout(
        limits.body_timeout,
        read_body(body, capacity, limits.max_body_bytes),
    )
    .await
    .unwrap_or(Err(BodyError::Late));
    let body = read.map_err(|error| error.response(limits))?;
    Ok(Request::from_parts(parts, Body::from(body)))
}

enum BodyError {
    TooLarge,
    /// Not all there within the body timeout.
    Late,
    Broken(axum::Error),
}

impl BodyError {
    /// The answer; a body not read to its end (too large, too late) closes the connection,
    /// which cannot carry another request.
    fn response(self, limits: &Limits) -> Response {
        let (status, code, message) = match self {
            BodyError::Broken(e) => {
                return ApiError::invalid(None, format!("cannot read the request body: {e}"))
                    .into_response();
            }
            BodyError::TooLarge => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "request_too_large",
                format!(
                    "the request body is larger than this server takes ({} bytes; --max-body-mb sets it)",
                    limits.max_body_bytes
                ),
            ),
            BodyError::Late => (
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    limits.body_timeout.as_secs_f64()
                ),
            ),
        };
        let mut response =
            ApiError::new(status, "invalid_request_error", code, message).into_response();
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        response
    }
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
