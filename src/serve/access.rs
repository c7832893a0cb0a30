//! Who may use the server ([`AccessPolicy`]): the hosts, origins and key a request must match,
//! and which addresses the server may listen on without a key. [`super::security`] applies it
//! to every request.

use std::net::{IpAddr, SocketAddr};

use axum::http::{HeaderMap, StatusCode, header};
use subtle::ConstantTimeEq;

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
    pub(super) fn host_allowed(&self, host: &str) -> bool {
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

    pub(super) fn origin_allowed(&self, origin: &str) -> bool {
        let origin = normalize_origin(origin);
        self.cors_origins.iter().any(|o| o == "*" || *o == origin)
    }

    /// Whether `headers` carry the key (always, when there is none).
    pub(super) fn authorized(&self, headers: &HeaderMap) -> Result<(), ApiError> {
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
