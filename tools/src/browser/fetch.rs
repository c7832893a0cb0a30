//! Fetching pages over HTTP for the browser, defensively.
//!
//! Every limit a hostile or broken server could push on us has a bound: a connect timeout and
//! an overall timeout, a redirect limit, a size cap applied to the decompressed stream (so a
//! gzip bomb stops at the cap), http(s) only, and by default no requests to loopback,
//! private, link-local or other special-purpose addresses (a page must not steer the model into
//! the local network).
//!
//! The address check is where the connection is made: names are resolved once, by the
//! resolver reqwest connects with, and only the addresses that pass are handed on, so a name
//! that answers differently on a second lookup (DNS rebinding) cannot slip past a separate
//! check. Redirects are followed here, hop by hop, each target checked like the first. The
//! environment's proxy variables are never used for pages; a proxy named in the
//! configuration is, and then every target's addresses are checked before the proxy is asked
//! (the proxy looks the name up again itself: the check cannot be tied to its connection).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use regex::bytes::Regex;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::{StatusCode, Url, redirect};

/// Limits and identity for page fetches.
#[derive(Clone, PartialEq, Eq)]
pub struct FetchConfig {
    /// Limit for the whole fetch, redirects and body included.
    pub timeout: Duration,
    pub connect_timeout: Duration,
    pub max_redirects: usize,
    /// Bytes of (decompressed) body read at most; the rest of a larger page is dropped.
    pub max_bytes: usize,
    pub user_agent: String,
    /// Allow URLs that resolve to loopback, private, link-local or other non-public addresses.
    pub allow_private_addresses: bool,
    /// Non-public addresses that may be reached all the same (one local service), while
    /// every other stays refused.
    pub allowed_addresses: Vec<IpAddr>,
    /// An HTTP proxy for page fetches (`http://host:port`, credentials allowed). Without it
    /// pages are fetched directly: `HTTP_PROXY`, `HTTPS_PROXY` and `ALL_PROXY` are ignored.
    pub proxy: Option<String>,
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
            allowed_addresses: Vec::new(),
            proxy: None,
        }
    }
}

impl std::fmt::Debug for FetchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // A proxy URL may carry a password.
        let proxy = self.proxy.as_deref().map(|p| match Url::parse(p) {
            Ok(mut url) if url.password().is_some() => {
                let _ = url.set_password(Some("<set>"));
                url.to_string()
            }
            _ => p.to_string(),
        });
        f.debug_struct("FetchConfig")
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("max_redirects", &self.max_redirects)
            .field("max_bytes", &self.max_bytes)
            .field("user_agent", &self.user_agent)
            .field("allow_private_addresses", &self.allow_private_addresses)
            .field("allowed_addresses", &self.allowed_addresses)
            .field("proxy", &proxy)
            .finish()
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
    #[error("redirected to an invalid location `{0}`")]
    BadRedirect(String),
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
    #[error("invalid proxy `{0}`: expected http://host:port")]
    InvalidProxy(String),
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

const fn v4(a: u8, b: u8, c: u8, d: u8) -> u32 {
    u32::from_be_bytes([a, b, c, d])
}

/// IPv4 networks a page may not lead to: the entries of IANA's IPv4 special-purpose address
/// registry that are not globally reachable, multicast, and the reserved 240/4 (broadcast
/// included). 192.0.0.0/24 is refused whole, its two anycast services included.
const NON_PUBLIC_V4: [(u32, u32); 15] = [
    (v4(0, 0, 0, 0), 8),       // "this network"
    (v4(10, 0, 0, 0), 8),      // private
    (v4(100, 64, 0, 0), 10),   // shared address space (carrier-grade NAT)
    (v4(127, 0, 0, 0), 8),     // loopback
    (v4(169, 254, 0, 0), 16),  // link local (cloud metadata services)
    (v4(172, 16, 0, 0), 12),   // private
    (v4(192, 0, 0, 0), 24),    // IETF protocol assignments
    (v4(192, 0, 2, 0), 24),    // documentation
    (v4(192, 88, 99, 0), 24),  // 6to4 relay anycast (deprecated)
    (v4(192, 168, 0, 0), 16),  // private
    (v4(198, 18, 0, 0), 15),   // benchmarking
    (v4(198, 51, 100, 0), 24), // documentation
    (v4(203, 0, 113, 0), 24),  // documentation
    (v4(224, 0, 0, 0), 4),     // multicast
    (v4(240, 0, 0, 0), 4),     // reserved, limited broadcast
];

const fn v6(segments: [u16; 8]) -> u128 {
    let mut bits = 0u128;
    let mut i = 0;
    while i < 8 {
        bits = (bits << 16) | segments[i] as u128;
        i += 1;
    }
    bits
}

/// IPv6 networks a page may not lead to, from IANA's IPv6 special-purpose address registry,
/// plus multicast. Prefixes that embed an IPv4 address (IPv4-mapped, NAT64's 64:ff9b::/96,
/// 6to4's 2002::/16) are judged by that address instead (see [`embedded_ipv4`]).
const NON_PUBLIC_V6: [(u128, u32); 12] = [
    (v6([0, 0, 0, 0, 0, 0, 0, 0]), 96), // unspecified, loopback, IPv4-compatible (deprecated)
    (v6([0x64, 0xff9b, 1, 0, 0, 0, 0, 0]), 48), // local-use NAT64
    (v6([0x100, 0, 0, 0, 0, 0, 0, 0]), 64), // discard-only
    (v6([0x100, 0, 0, 1, 0, 0, 0, 0]), 64), // dummy prefix
    (v6([0x2001, 0, 0, 0, 0, 0, 0, 0]), 23), // IETF protocol assignments (Teredo, ORCHID, ...)
    (v6([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0]), 32), // documentation
    (v6([0x3fff, 0, 0, 0, 0, 0, 0, 0]), 20), // documentation
    (v6([0x5f00, 0, 0, 0, 0, 0, 0, 0]), 16), // segment routing (SRv6) SIDs
    (v6([0xfc00, 0, 0, 0, 0, 0, 0, 0]), 7), // unique local
    (v6([0xfe80, 0, 0, 0, 0, 0, 0, 0]), 10), // link local
    (v6([0xfec0, 0, 0, 0, 0, 0, 0, 0]), 10), // site local (deprecated)
    (v6([0xff00, 0, 0, 0, 0, 0, 0, 0]), 8), // multicast
];

fn in_network<T>(bits: T, network: T, prefix: u32, width: u32) -> bool
where
    T: Copy + PartialEq + std::ops::Shr<u32, Output = T>,
{
    prefix == 0 || bits >> (width - prefix) == network >> (width - prefix)
}

/// The IPv4 address an IPv6 address stands for, where the prefix says it carries one:
/// IPv4-mapped (`::ffff:a.b.c.d`), IPv4-translated (`::ffff:0:a.b.c.d`), NAT64's well-known
/// prefix (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::/48`).
fn embedded_ipv4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let bits = ip.to_bits();
    let low = Ipv4Addr::from_bits(bits as u32);
    match bits >> 32 {
        0xffff | 0xffff_0000 => return Some(low),
        prefix if prefix == v6([0x64, 0xff9b, 0, 0, 0, 0, 0, 0]) >> 32 => return Some(low),
        _ => {}
    }
    (bits >> 112 == 0x2002).then(|| Ipv4Addr::from_bits((bits >> 80) as u32))
}

/// True for addresses a public web page may not make us contact.
pub(crate) fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let bits = ip.to_bits();
            NON_PUBLIC_V4
                .iter()
                .any(|&(network, prefix)| in_network(bits, network, prefix, 32))
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = embedded_ipv4(ip) {
                return is_private(IpAddr::V4(v4));
            }
            let bits = ip.to_bits();
            NON_PUBLIC_V6
                .iter()
                .any(|&(network, prefix)| in_network(bits, network, prefix, 128))
        }
    }
}

/// Which addresses pages may lead to.
#[derive(Debug, Clone)]
struct AddressPolicy {
    any: bool,
    allowed: Arc<[IpAddr]>,
}

impl AddressPolicy {
    fn of(config: &FetchConfig) -> Self {
        Self {
            any: config.allow_private_addresses,
            allowed: config
                .allowed_addresses
                .iter()
                .map(IpAddr::to_canonical)
                .collect(),
        }
    }

    fn permits(&self, ip: IpAddr) -> bool {
        self.any || !is_private(ip) || self.allowed.contains(&ip.to_canonical())
    }

    /// Checks a URL before anything is sent: the scheme, `localhost` names, and the address
    /// when the host is one.
    fn check_url(&self, url: &Url) -> Result<(), FetchError> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(FetchError::UnsupportedScheme(url.scheme().to_string()));
        }
        if self.any {
            return Ok(());
        }
        let host = url.host_str().unwrap_or_default();
        let lower = host.to_ascii_lowercase();
        if lower == "localhost" || lower.ends_with(".localhost") {
            return Err(FetchError::PrivateAddress(host.to_string()));
        }
        let literal = literal_ip(url);
        if literal.is_some_and(|ip| !self.permits(ip)) {
            return Err(FetchError::PrivateAddress(host.to_string()));
        }
        Ok(())
    }
}

/// The operating system's resolver (`getaddrinfo`, on a blocking thread).
struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The host of `url` as an IP address, if it is one.
fn literal_ip(url: &Url) -> Option<IpAddr> {
    url.host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// Every address `lookup` gives for `host`.
async fn look_up(lookup: &dyn Resolve, host: &str) -> Result<Vec<SocketAddr>, FetchError> {
    let name = Name::from_str(host).map_err(|_| FetchError::InvalidUrl(host.to_string()))?;
    let addrs: Vec<SocketAddr> = lookup
        .resolve(name)
        .await
        .map_err(|e| FetchError::Connect(format!("cannot resolve {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(FetchError::Connect(format!("no address found for {host}")));
    }
    Ok(addrs)
}

/// The resolver reqwest connects with: only permitted addresses come out of it, so the
/// address connected to is always one that was checked.
struct CheckingResolver {
    lookup: Arc<dyn Resolve>,
    policy: AddressPolicy,
}

impl Resolve for CheckingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let lookup = self.lookup.clone();
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str();
            let permitted: Vec<SocketAddr> = look_up(lookup.as_ref(), host)
                .await?
                .into_iter()
                .filter(|a| policy.permits(a.ip()))
                .collect();
            if permitted.is_empty() {
                return Err(Box::new(FetchError::PrivateAddress(host.to_string())) as BoxError);
            }
            tracing::trace!(host, addresses = ?permitted, "resolved");
            Ok(Box::new(permitted.into_iter()) as Addrs)
        })
    }
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
#[derive(Clone)]
pub struct Fetcher {
    client: reqwest::Client,
    config: Arc<FetchConfig>,
    policy: AddressPolicy,
    /// Set when a proxy is used: the targets' names are looked up with it and checked before
    /// each request (without a proxy the client's own resolver checks them).
    proxy_lookup: Option<Arc<dyn Resolve>>,
}

impl std::fmt::Debug for Fetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fetcher")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Fetcher {
    /// A fetcher that looks names up with the operating system's resolver.
    pub fn new(config: FetchConfig) -> Result<Self, FetchError> {
        Self::with_resolver(config, Arc::new(SystemResolver))
    }

    /// A fetcher that looks names up with `lookup` (a custom DNS, or a test's fixed answers);
    /// the addresses it gives are checked like the system resolver's.
    pub fn with_resolver(
        config: FetchConfig,
        lookup: Arc<dyn Resolve>,
    ) -> Result<Self, FetchError> {
        install_tls_provider();
        let policy = AddressPolicy::of(&config);
        let builder = reqwest::Client::builder()
            .user_agent(config.user_agent.clone())
            .connect_timeout(config.connect_timeout)
            .redirect(redirect::Policy::none())
            .gzip(true);
        let (builder, proxy_lookup) = match &config.proxy {
            Some(proxy) => {
                let proxy = reqwest::Proxy::all(proxy.as_str())
                    .map_err(|_| FetchError::InvalidProxy(proxy.clone()))?;
                // The proxy's own name is looked up unchecked: it is the user's choice.
                let builder = builder.proxy(proxy).dns_resolver(lookup.clone());
                (builder, Some(lookup))
            }
            None => {
                let resolver = CheckingResolver {
                    lookup,
                    policy: policy.clone(),
                };
                (builder.no_proxy().dns_resolver(resolver), None)
            }
        };
        let client = builder
            .build()
            .map_err(|e| FetchError::Connect(describe(&e)))?;
        Ok(Self {
            client,
            config: Arc::new(config),
            policy,
            proxy_lookup,
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
        } else if error.is_connect() || error.is_request() {
            FetchError::Connect(describe(error))
        } else {
            FetchError::Read(describe(error))
        }
    }

    /// Checks where a request is about to go (each hop of a redirect chain).
    async fn check_target(&self, url: &Url) -> Result<(), FetchError> {
        self.policy.check_url(url)?;
        if let Some(lookup) = &self.proxy_lookup
            && !self.policy.any
            && literal_ip(url).is_none()
            && let Some(host) = url.host_str()
        {
            // The proxy may connect to any of the name's addresses: all of them must pass.
            let addrs = look_up(lookup.as_ref(), host).await?;
            if addrs.iter().any(|a| !self.policy.permits(a.ip())) {
                return Err(FetchError::PrivateAddress(host.to_string()));
            }
        }
        Ok(())
    }

    /// GETs `url`, following redirects (each target checked), reading at most `max_bytes` of
    /// body, all within the configured timeout.
    pub async fn get(&self, url: &str) -> Result<Document, FetchError> {
        let mut url =
            Url::parse(url.trim()).map_err(|e| FetchError::InvalidUrl(format!("{url} ({e})")))?;
        let started = Instant::now();
        let remaining = || self.config.timeout.saturating_sub(started.elapsed());
        let mut redirects = 0;
        let mut response = loop {
            self.check_target(&url).await?;
            let request = self
                .client
                .get(url.clone())
                .timeout(remaining())
                .header(
                    reqwest::header::ACCEPT,
                    "text/html,application/xhtml+xml,text/plain;q=0.9,application/json;q=0.9,*/*;q=0.5",
                )
                .header(reqwest::header::ACCEPT_LANGUAGE, "en-US,en;q=0.9");
            let response = request.send().await.map_err(|e| self.map_error(&e))?;
            let location = match response.status() {
                StatusCode::MOVED_PERMANENTLY
                | StatusCode::FOUND
                | StatusCode::SEE_OTHER
                | StatusCode::TEMPORARY_REDIRECT
                | StatusCode::PERMANENT_REDIRECT => response
                    .headers()
                    .get(reqwest::header::LOCATION)
                    .map(|l| String::from_utf8_lossy(l.as_bytes()).into_owned()),
                _ => None,
            };
            let Some(location) = location else {
                break response;
            };
            if redirects == self.config.max_redirects {
                return Err(FetchError::TooManyRedirects(self.config.max_redirects));
            }
            redirects += 1;
            url = url
                .join(&location)
                .map_err(|_| FetchError::BadRedirect(location.clone()))?;
            tracing::debug!(to = %url, "redirected");
        };
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
        match tokio::time::timeout(remaining(), read).await {
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

    /// One address inside and one just outside each special-purpose range, and public
    /// addresses of every shape that embeds IPv4.
    #[test]
    fn special_purpose_addresses_are_recognised() {
        let private = [
            "0.0.0.0",
            "0.255.255.255",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.255.254",
            "169.254.169.254",
            "172.16.5.5",
            "172.31.255.255",
            "192.0.0.1",
            "192.0.0.170",
            "192.0.2.1",
            "192.88.99.1",
            "192.168.0.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::127.0.0.1",
            "::8.8.8.8",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:0:127.0.0.1",
            "64:ff9b::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::8.8.8.8",
            "100::1",
            "100:0:0:1::1",
            "2001::1",
            "2001:1ff:ffff::1",
            "2001:db8::1",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::1",
            "2002:c0a8:1::1",
            "3fff::1",
            "5f00::1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "ff0e::1",
        ];
        for ip in private {
            assert!(is_private(ip.parse().unwrap()), "{ip} should be refused");
        }
        let public = [
            "1.1.1.1",
            "8.8.8.8",
            "93.184.216.34",
            "100.63.255.255",
            "100.128.0.0",
            "172.32.0.1",
            "192.0.1.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.255",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:200::1",
            "2606:2800:220:1::1",
            "2a00:1450:4001::200e",
        ];
        for ip in public {
            assert!(!is_private(ip.parse().unwrap()), "{ip} should be allowed");
        }
    }

    #[test]
    fn allowed_addresses_open_only_themselves() {
        let policy = AddressPolicy::of(&FetchConfig {
            allowed_addresses: vec!["127.0.0.1".parse().unwrap()],
            ..FetchConfig::default()
        });
        assert!(policy.permits("127.0.0.1".parse().unwrap()));
        assert!(policy.permits("::ffff:127.0.0.1".parse().unwrap()));
        assert!(!policy.permits("127.0.0.2".parse().unwrap()));
        assert!(!policy.permits("::1".parse().unwrap()));
        assert!(policy.permits("8.8.8.8".parse().unwrap()));
        let url = |u: &str| Url::parse(u).unwrap();
        assert!(policy.check_url(&url("http://127.0.0.1:8080/")).is_ok());
        for refused in [
            "http://127.0.0.2/",
            "http://[::1]/",
            "http://[::ffff:7f00:2]/",
            "http://2130706434/",
            "http://0x7f.0.0.2/",
            "http://localhost/",
            "http://a.localhost/",
        ] {
            assert!(
                matches!(
                    policy.check_url(&url(refused)),
                    Err(FetchError::PrivateAddress(_))
                ),
                "{refused}"
            );
        }
        assert_eq!(
            policy.check_url(&url("file:///etc/passwd")),
            Err(FetchError::UnsupportedScheme("file".into()))
        );
    }

    #[test]
    fn debug_output_hides_a_proxy_password() {
        let config = FetchConfig {
            proxy: Some("http://me:secret@proxy.example:3128".into()),
            ..FetchConfig::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("proxy.example:3128"), "{shown}");
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
        let cases: [(Option<&str>, &[u8], ContentKind); 6] = [
            (Some("text/html; charset=utf-8"), b"<p>x", ContentKind::Html),
            (Some("application/ld+json"), b"{}", ContentKind::Json),
            (Some("image/png"), b"\x89PNG", ContentKind::Unsupported),
            (None, b"<!DOCTYPE html><html>", ContentKind::Html),
            (
                Some("application/octet-stream"),
                b"%PDF-1.7",
                ContentKind::Unsupported,
            ),
            (
                Some("text/html"),
                b"\x00\x01\x02binary",
                ContentKind::Unsupported,
            ),
        ];
        for (content_type, body, kind) in cases {
            assert_eq!(
                classify(content_type, body),
                kind,
                "{content_type:?} {:?}",
                String::from_utf8_lossy(body)
            );
        }
    }
}
