//! Fetching pages over HTTP for the browser, defensively.
//!
//! Every limit a hostile or broken server could push on us has a bound: a connect timeout and
//! an overall timeout, a redirect limit, a size cap applied to the decompressed stream (so a
//! gzip bomb stops at the cap), http(s) only, and by default no requests to loopback,
//! private or link-local addresses (a page must not steer the model into the local network).

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use regex::bytes::Regex;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{Url, redirect};

/// Limits and identity for page fetches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// Limit for the whole fetch, body included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_redirects: usize,
    /// Bytes of (decompressed) body read at most; the rest of a larger page is dropped.
    pub max_bytes: usize,
    pub user_agent: String,
    /// Allow URLs that resolve to loopback, private, link-local or other non-public addresses.
    pub allow_private_addresses: bool,
}

impl Default for FetchConfig {
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            max_redirects: 10,
            max_bytes: 5 * 1024 * 1024,
            user_agent: format!(
                "Mozilla/5.0 (compatible; ossa/{}; +https://github.com/ossa-rs/ossa)",
                env!("CARGO_PKG_VERSION")
            ),
            allow_private_addresses: false,
        }
    }
}

/// Why a fetch failed. The text is what the model reads after `Error fetching URL ...:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("not a valid URL: {0}")]
    InvalidUrl(String),
    #[error("unsupported URL scheme `{0}` (only http and https pages can be opened)")]
    UnsupportedScheme(String),
    #[error("refusing to open `{0}`: it is a local or private network address")]
    PrivateAddress(String),
    #[error("too many redirects (more than {0})")]
    TooManyRedirects(usize),
    #[error("timed out after {} s", .0.as_secs())]
    Timeout(Duration),
    #[error("HTTP {status}{}", reason.as_ref().map(|r| format!(" {r}")).unwrap_or_default())]
    Status { status: u16, reason: Option<String> },
    #[error("could not connect: {0}")]
    Connect(String),
    #[error("error while downloading: {0}")]
    Read(String),
    #[error("unsupported content type `{0}`: the browser reads HTML, plain text and JSON")]
    UnsupportedContent(String),
}

/// A fetched response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// The URL after redirects.
    pub url: String,
    pub content_type: Option<String>,
    pub body: Vec<u8>,
    /// The body was longer than [`FetchConfig::max_bytes`] and was cut there.
    pub truncated: bool,
}

/// True for addresses a public web page may not make us contact.
fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (o[1] & 0xc0) == 64) // carrier-grade NAT
                || (o[0] == 198 && (o[1] & 0xfe) == 18) // benchmarking
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private(IpAddr::V4(v4));
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || (s[0] & 0xfe00) == 0xfc00 // unique local
                || (s[0] & 0xffc0) == 0xfe80 // link local
                || (s[0] & 0xffc0) == 0xfec0 // site local
        }
    }
}

/// Resolves names and drops non-public addresses.
struct PublicOnlyResolver;

impl Resolve for PublicOnlyResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let public: Vec<SocketAddr> =
                addrs.into_iter().filter(|a| !is_private(a.ip())).collect();
            if public.is_empty() {
                return Err(Box::new(FetchError::PrivateAddress(host))
                    as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(public.into_iter()) as Addrs)
        })
    }
}

/// The host of `url` as an IP address, if it is one.
fn literal_ip(url: &Url) -> Option<IpAddr> {
    url.host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn check_url(url: &Url, allow_private: bool) -> Result<(), FetchError> {
    if !matches!(url.scheme(), "http" | "https") {
        return Err(FetchError::UnsupportedScheme(url.scheme().to_string()));
    }
    if !allow_private {
        let host = url.host_str().unwrap_or_default();
        if host.eq_ignore_ascii_case("localhost")
            || host.to_ascii_lowercase().ends_with(".localhost")
        {
            return Err(FetchError::PrivateAddress(host.to_string()));
        }
        if literal_ip(url).is_some_and(is_private) {
            return Err(FetchError::PrivateAddress(host.to_string()));
        }
    }
    Ok(())
}

/// Installs rustls' ring crypto provider as the process default (once). reqwest is built with
/// `rustls-no-provider` so no C crypto library is compiled; every reqwest client in the process
/// needs a provider installed before it is built.
pub fn install_tls_provider() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// Finds the most specific error text in a reqwest error chain.
fn describe(error: &reqwest::Error) -> String {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(error);
    let mut last = error.to_string();
    while let Some(e) = source {
        last = e.to_string();
        source = e.source();
    }
    last
}

/// An HTTP client for pages, with the limits of a [`FetchConfig`].
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    config: Arc<FetchConfig>,
}

impl Fetcher {
    pub fn new(config: FetchConfig) -> Result<Self, FetchError> {
        install_tls_provider();
        let max_redirects = config.max_redirects;
        let allow_private = config.allow_private_addresses;
        let policy = redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > max_redirects {
                return attempt.error(FetchError::TooManyRedirects(max_redirects));
            }
            if let Err(e) = check_url(attempt.url(), allow_private) {
                return attempt.error(e);
            }
            attempt.follow()
        });
        let mut builder = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            .timeout(config.timeout)
            .redirect(policy)
            .gzip(true);
        if !config.allow_private_addresses {
            builder = builder.dns_resolver(Arc::new(PublicOnlyResolver));
        }
        let client = builder
            .build()
            .map_err(|e| FetchError::Connect(describe(&e)))?;
        Ok(Self {
            client,
            config: Arc::new(config),
        })
    }

    pub fn config(&self) -> &FetchConfig {
        &self.config
    }

    fn map_error(&self, error: &reqwest::Error) -> FetchError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
        while let Some(e) = source {
            if let Some(fetch) = e.downcast_ref::<FetchError>() {
                return fetch.clone();
            }
            source = e.source();
        }
        if error.is_timeout() {
            FetchError::Timeout(self.config.timeout)
        } else if error.is_redirect() {
            FetchError::TooManyRedirects(self.config.max_redirects)
        } else if error.is_connect() || error.is_request() {
            FetchError::Connect(describe(error))
        } else {
            FetchError::Read(describe(error))
        }
    }

    /// GETs `url`, following redirects, reading at most `max_bytes` of body.
    pub async fn get(&self, url: &str) -> Result<Document, FetchError> {
        let parsed =
            Url::parse(url.trim()).map_err(|e| FetchError::InvalidUrl(format!("{url} ({e})")))?;
        check_url(&parsed, self.config.allow_private_addresses)?;
        let started = Instant::now();
        let request = self
            .client
            .get(parsed)
            .header(
                reqwest::header::ACCEPT,
                "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.9,*/*;q=0.5",
            )
            .header(reqwest::header::ACCEPT_LANGUAGE, "en-US,en;q=0.9");
        let mut response = request.send().await.map_err(|e| self.map_error(&e))?;
        let status = response.status();
        if status.is_client_error() || status.is_server_error() {
            return Err(FetchError::Status {
                status: status.as_u16(),
                reason: status.canonical_reason().map(str::to_string),
            });
        }
        let final_url = response.url().to_string();
        let content_type = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let mut body = Vec::new();
        let mut truncated = false;
        let deadline = self.config.timeout.saturating_sub(started.elapsed());
        let read = async {
            while let Some(chunk) = response.chunk().await? {
                let room = self.config.max_bytes - body.len();
                if chunk.len() >= room {
                    body.extend_from_slice(&chunk[..room]);
                    truncated = chunk.len() > room
                        || response.chunk().await?.is_some_and(|c| !c.is_empty());
                    break;
                }
                body.extend_from_slice(&chunk);
            }
            Ok::<(), reqwest::Error>(())
        };
        match tokio::time::timeout(deadline, read).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(self.map_error(&e)),
            Err(_) => return Err(FetchError::Timeout(self.config.timeout)),
        }
        tracing::debug!(url = %final_url, bytes = body.len(), truncated, "fetched");
        Ok(Document {
            url: final_url,
            content_type,
            body,
            truncated,
        })
    }
}

/// What a response body is, for reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    Html,
    Text,
    Json,
    /// Not readable as text (images, archives, PDF, ...).
    Unsupported,
}

/// The media type of a `Content-Type` value, lower-cased, without parameters.
fn media_type(content_type: &str) -> String {
    content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Classifies a body by its declared type, sniffing when the type is missing or generic.
pub fn classify(content_type: Option<&str>, body: &[u8]) -> ContentKind {
    let head = &body[..body.len().min(1024)];
    let looks_binary =
        head.contains(&0) && !head.starts_with(&[0xff, 0xfe]) && !head.starts_with(&[0xfe, 0xff]);
    let media = content_type.map(media_type).unwrap_or_default();
    let kind = match media.as_str() {
        "text/html" | "application/xhtml+xml" => ContentKind::Html,
        "application/json" | "text/json" => ContentKind::Json,
        m if m.ends_with("+json") => ContentKind::Json,
        m if m.starts_with("text/") => ContentKind::Text,
        "application/xml"
        | "application/javascript"
        | "application/x-javascript"
        | "application/ecmascript"
        | "application/x-sh"
        | "application/toml"
        | "application/yaml"
        | "application/x-yaml" => ContentKind::Text,
        m if m.ends_with("+xml") => ContentKind::Text,
        "" | "application/octet-stream" | "binary/octet-stream" => {
            let lower: Vec<u8> = head.iter().take(512).map(u8::to_ascii_lowercase).collect();
            let text = String::from_utf8_lossy(&lower);
            let trimmed = text.trim_start_matches(|c: char| c.is_whitespace() || c == '\u{feff}');
            if looks_binary || body.starts_with(b"%PDF-") {
                ContentKind::Unsupported
            } else if trimmed.starts_with("<!doctype html")
                || trimmed.starts_with("<html")
                || trimmed.contains("<body")
            {
                ContentKind::Html
            } else if trimmed.starts_with('{') || trimmed.starts_with('[') {
                ContentKind::Json
            } else {
                ContentKind::Text
            }
        }
        _ => ContentKind::Unsupported,
    };
    if kind != ContentKind::Unsupported && looks_binary {
        ContentKind::Unsupported
    } else {
        kind
    }
}

fn charset_param(content_type: &str) -> Option<&str> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        key.trim()
            .eq_ignore_ascii_case("charset")
            .then(|| value.trim().trim_matches(['"', '\'']))
    })
}

fn meta_charset() -> Option<&'static Regex> {
    static RE: OnceLock<Option<Regex>> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r#"(?i-u)(?:<meta[^>]*?charset\s*=\s*["']?\s*|<\?xml[^>]*?encoding\s*=\s*["'])([a-z0-9_:.\-]+)"#).ok()
    })
    .as_ref()
}

/// Decodes a text body: a BOM wins; then valid UTF-8 with non-ASCII content (servers often
/// mislabel UTF-8 as Latin-1); then the declared charset (header, then `<meta>` or the XML
/// declaration); then a statistical guess. Declared UTF-8 that does not decode is guessed too.
pub fn decode_text(body: &[u8], content_type: Option<&str>, url: &str) -> String {
    if let Some((encoding, bom)) = encoding_rs::Encoding::for_bom(body) {
        return encoding
            .decode_without_bom_handling(&body[bom..])
            .0
            .into_owned();
    }
    let declared = content_type
        .and_then(charset_param)
        .and_then(|label| encoding_rs::Encoding::for_label(label.as_bytes()))
        .or_else(|| {
            let head = &body[..body.len().min(4096)];
            let label = meta_charset()?.captures(head)?.get(1)?.as_bytes();
            encoding_rs::Encoding::for_label(label)
        });
    let valid_utf8 = std::str::from_utf8(body).ok();
    if let Some(text) = valid_utf8 {
        let ascii_only = body.is_ascii();
        if !ascii_only || declared.is_none_or(|e| e.is_ascii_compatible()) {
            return text.to_string();
        }
    }
    let encoding = match declared {
        Some(e) if e != encoding_rs::UTF_8 => e,
        _ => {
            // No scripts run here, so ISO-2022-JP may be guessed.
            let mut detector =
                chardetng::EncodingDetector::new(chardetng::Iso2022JpDetection::Allow);
            detector.feed(body, true);
            let tld = Url::parse(url)
                .ok()
                .and_then(|u| u.host_str().map(str::to_ascii_lowercase))
                .and_then(|h| h.rsplit('.').next().map(str::to_string))
                .filter(|t| {
                    !t.is_empty()
                        && t.bytes()
                            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                });
            detector.guess(
                tld.as_deref().map(str::as_bytes),
                chardetng::Utf8Detection::Allow,
            )
        }
    };
    encoding.decode_without_bom_handling(body).0.into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.5.5",
            "169.254.169.254",
            "::1",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
        ] {
            assert!(is_private(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1", "8.8.8.8"] {
            assert!(!is_private(ip.parse().unwrap()), "{ip}");
        }
    }

    #[test]
    fn charset_from_header_meta_bom_and_guess() {
        let latin =
            b"<html><head><meta charset=\"windows-1252\"></head><body>Caf\xe9</body></html>";
        assert!(decode_text(latin, None, "https://example.org/").contains("Café"));
        assert!(
            decode_text(
                b"Caf\xe9",
                Some("text/plain; charset=ISO-8859-1"),
                "https://example.org/"
            )
            .contains("Café")
        );
        // Mislabelled: declared Latin-1, really UTF-8.
        assert!(
            decode_text(
                "Café".as_bytes(),
                Some("text/html; charset=iso-8859-1"),
                "https://x.org/"
            )
            .contains("Café")
        );
        // Declared UTF-8 but Shift_JIS bytes: guessed.
        let (sjis, _, _) =
            encoding_rs::SHIFT_JIS.encode("日本語のページです。東京は日本の首都です。");
        let decoded = decode_text(
            &sjis,
            Some("text/html; charset=utf-8"),
            "https://example.jp/",
        );
        assert!(decoded.contains("東京"), "{decoded}");
        let mut bom = vec![0xef, 0xbb, 0xbf];
        bom.extend_from_slice("Café".as_bytes());
        assert_eq!(
            decode_text(&bom, Some("text/plain; charset=windows-1252"), ""),
            "Café"
        );
    }

    #[test]
    fn content_is_classified_by_type_and_sniffing() {
        assert_eq!(
            classify(Some("text/html; charset=utf-8"), b"<p>x"),
            ContentKind::Html
        );
        assert_eq!(
            classify(Some("application/ld+json"), b"{}"),
            ContentKind::Json
        );
        assert_eq!(
            classify(Some("image/png"), b"\x89PNG"),
            ContentKind::Unsupported
        );
        assert_eq!(classify(None, b"<!DOCTYPE html><html>"), ContentKind::Html);
        assert_eq!(
            classify(Some("application/octet-stream"), b"%PDF-1.7"),
            ContentKind::Unsupported
        );
        assert_eq!(
            classify(Some("text/html"), b"\x00\x01\x02binary"),
            ContentKind::Unsupported
        );
    }
}
