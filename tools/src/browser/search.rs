//! Search providers, each mapping its documented API response to [`SearchResult`]s, and the
//! [`WebBackend`] that combines a provider with page fetching.
//!
//! Exa and You.com are called as the reference calls them (including reading pages through
//! their contents APIs). Every provider's base URL is configurable, so a self-hosted instance,
//! a proxy or a test server can stand in.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use scraper::{Html, Selector};
use serde_json::{Value, json};

use super::backend::{BrowserBackend, BrowserBackendError};
use super::fetch::{ContentKind, Document, Fetcher, classify, decode_text, install_tls_provider};
use super::html::{
    SearchResult, process_html, search_results_page, source_page, squash_whitespace, text_page,
};
use super::page::PageContents;

/// A page read through a provider's contents API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProviderPage {
    pub url: String,
    pub title: String,
    pub html: String,
}

/// A web search API.
#[async_trait]
pub trait SearchProvider: Send + Sync {
    /// For messages: `Exa`, `You.com`, ...
    fn name(&self) -> &'static str;

    /// Up to `count` results for `query`.
    async fn search(
        &self,
        query: &str,
        count: usize,
    ) -> Result<Vec<SearchResult>, BrowserBackendError>;

    /// The page at `url` through the provider's contents API, or `None` when pages are fetched
    /// directly.
    async fn contents(&self, url: &str) -> Option<Result<ProviderPage, BrowserBackendError>> {
        let _ = url;
        None
    }
}

/// The largest API response read (JSON or DuckDuckGo HTML).
const MAX_API_RESPONSE: usize = 8 * 1024 * 1024;

/// An HTTP client for search APIs (no private-address guard: a SearXNG instance is often local).
pub fn api_client(timeout: Duration) -> Result<reqwest::Client, BrowserBackendError> {
    install_tls_provider();
    reqwest::Client::builder()
        .user_agent(format!("ossa/{}", env!("CARGO_PKG_VERSION")))
        .timeout(timeout)
        .connect_timeout(Duration::from_secs(10))
        .gzip(true)
        .build()
        .map_err(|e| BrowserBackendError::new(format!("cannot create an HTTP client: {e}")))
}

/// Runs HTML parsing and other page conversion on tokio's blocking threads, so a large page
/// does not stall the async threads.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, BrowserBackendError> + Send + 'static,
) -> Result<T, BrowserBackendError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        BrowserBackendError::new(format!("internal error while reading the page: {e}"))
    })?
}

fn trim_base(base: &str) -> String {
    base.trim_end_matches('/').to_string()
}

/// `application/x-www-form-urlencoded` / query-string encoding.
fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decodes `%XX` and `+` from a query-string value.
fn form_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = |b: u8| (b as char).to_digit(16);
                match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a response body up to [`MAX_API_RESPONSE`], failing on HTTP errors with the status
/// and the start of the body (where APIs explain what was wrong).
async fn read_body(
    provider: &str,
    mut response: reqwest::Response,
) -> Result<Vec<u8>, BrowserBackendError> {
    let status = response.status();
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| {
        BrowserBackendError::new(format!("{provider} API: error reading the response: {e}"))
    })? {
        body.extend_from_slice(&chunk);
        if body.len() > MAX_API_RESPONSE {
            return Err(BrowserBackendError::new(format!(
                "{provider} API: response larger than {MAX_API_RESPONSE} bytes"
            )));
        }
    }
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        let excerpt: String = text.trim().chars().take(300).collect();
        return Err(BrowserBackendError::new(format!(
            "{provider} API error {status}: {excerpt}"
        )));
    }
    Ok(body)
}

async fn read_json(
    provider: &str,
    response: reqwest::Response,
) -> Result<Value, BrowserBackendError> {
    let body = read_body(provider, response).await?;
    serde_json::from_slice(&body).map_err(|e| {
        BrowserBackendError::new(format!(
            "{provider} API returned a response that is not JSON: {e}"
        ))
    })
}

fn send_error(provider: &str, error: reqwest::Error) -> BrowserBackendError {
    if error.is_timeout() {
        BrowserBackendError::new(format!("{provider} API did not answer in time"))
    } else {
        let mut text = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(e) = source {
            text = format!("{text}: {e}");
            source = e.source();
        }
        BrowserBackendError::new(format!("{provider} API request failed: {text}"))
    }
}

fn str_field<'a>(value: &'a Value, key: &str) -> &'a str {
    value.get(key).and_then(Value::as_str).unwrap_or("")
}

/// Provider text that may carry HTML (Brave highlights matches with `<strong>`, entities).
fn plain(text: &str) -> String {
    if !text.contains(['<', '&']) {
        return squash_whitespace(text);
    }
    let fragment = Html::parse_fragment(text);
    let joined: String = fragment.root_element().text().collect();
    squash_whitespace(&joined)
}

fn results_array<'a>(
    provider: &str,
    value: &'a Value,
    path: &[&str],
) -> Result<&'a Vec<Value>, BrowserBackendError> {
    let mut node = value;
    for key in path {
        match node.get(key) {
            Some(next) => node = next,
            None => return Ok(empty()),
        }
    }
    node.as_array().ok_or_else(|| {
        BrowserBackendError::new(format!(
            "{provider} API response has no `{}` list",
            path.join(".")
        ))
    })
}

fn empty() -> &'static Vec<Value> {
    static EMPTY: OnceLock<Vec<Value>> = OnceLock::new();
    EMPTY.get_or_init(Vec::new)
}

/// A request to a search API.
enum Request {
    Get(String),
    /// A JSON body, sent with `content-type: application/json`.
    Post(String, Value),
}

/// How an API takes its key.
#[derive(Clone, Copy)]
enum Auth {
    /// Keyless (SearXNG).
    None,
    /// In this header.
    Header(&'static str),
    /// `Authorization: Bearer KEY`.
    Bearer,
}

/// A search API as data: how to ask it, where its answer lists the results, how one result
/// reads, and (Exa, You.com) how to read a page through it. Each provider is one row
/// ([`EXA`], [`YOU`], [`BRAVE`], [`TAVILY`], [`SEARXNG`]) run by [`ApiProvider`].
pub struct ApiSpec {
    /// For messages: `Exa`, `You.com`, ...
    name: &'static str,
    /// Where the API is unless configured (empty: it must be configured, as SearXNG).
    default_base: &'static str,
    auth: Auth,
    /// Sent with every search besides the key.
    headers: &'static [(&'static str, &'static str)],
    search: fn(base: &str, query: &str, count: usize) -> Request,
    /// Paths to the answer's result lists, read in order; a missing path is no results.
    lists: &'static [&'static [&'static str]],
    result: fn(&Value) -> SearchResult,
    /// Keep the first `count` results (an API without a count parameter).
    take_count: bool,
    /// What a 403 means, where it is a setup problem with a known fix.
    forbidden: Option<&'static str>,
    contents: Option<ContentsSpec>,
}

/// Reading a page through a provider's contents API.
struct ContentsSpec {
    request: fn(base: &str, url: &str) -> Request,
    page: fn(url: &str, answer: &Value) -> Result<ProviderPage, BrowserBackendError>,
}

/// Exa (`EXA_API_KEY`), the reference's default: `POST /search` with summaries, and pages
/// through `POST /contents` with HTML tags kept.
pub static EXA: ApiSpec = ApiSpec {
    name: "Exa",
    default_base: "https://api.exa.ai",
    auth: Auth::Header("x-api-key"),
    headers: &[],
    search: |base, query, count| {
        Request::Post(
            format!("{base}/search"),
            json!({"query": query, "numResults": count, "contents": {"text": true, "summary": true}}),
        )
    },
    lists: &[&["results"]],
    result: |r| {
        let summary = match str_field(r, "summary") {
            "" => str_field(r, "text").chars().take(300).collect(),
            s => s.to_string(),
        };
        hit_with_summary(r, &summary)
    },
    take_count: false,
    forbidden: None,
    contents: Some(ContentsSpec {
        request: |base, url| {
            Request::Post(
                format!("{base}/contents"),
                json!({"urls": [url], "text": {"includeHtmlTags": true}}),
            )
        },
        page: |url, answer| {
            let first = first_contents(url, Some(results_array("Exa", answer, &["results"])?))?;
            Ok(ProviderPage::from_entry(
                url,
                first,
                str_field(first, "text"),
            ))
        },
    }),
};

/// You.com (`YDC_API_KEY`): `GET /v1/search` (web and news results), pages through
/// `POST /v1/contents` as HTML, as the reference calls it.
pub static YOU: ApiSpec = ApiSpec {
    name: "You.com",
    default_base: "https://api.ydc-index.io",
    auth: Auth::Header("X-API-Key"),
    headers: &[],
    search: |base, query, count| {
        Request::Get(format!(
            "{base}/v1/search?query={}&count={count}",
            form_encode(query)
        ))
    },
    lists: &[&["results", "web"], &["results", "news"]],
    // A web result has snippets (the reference interpolates the list's repr; joined reads
    // better), a news result only its description.
    result: |r| {
        let snippets: Vec<&str> = r
            .get("snippets")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let summary = if snippets.is_empty() {
            str_field(r, "description").to_string()
        } else {
            snippets.join(" ")
        };
        hit_with_summary(r, &summary)
    },
    take_count: false,
    forbidden: None,
    contents: Some(ContentsSpec {
        request: |base, url| {
            Request::Post(
                format!("{base}/v1/contents"),
                json!({"urls": [url], "livecrawl_formats": "html"}),
            )
        },
        page: |url, answer| {
            let first = first_contents(url, answer.as_array())?;
            let html = first
                .get("html")
                .and_then(Value::as_str)
                .ok_or_else(|| BrowserBackendError::new(format!("No HTML returned for {url}")))?;
            Ok(ProviderPage::from_entry(url, first, html))
        },
    }),
};

/// Brave Search (`BRAVE_API_KEY`): `GET /res/v1/web/search`, at most 20 results a call.
pub static BRAVE: ApiSpec = ApiSpec {
    name: "Brave Search",
    default_base: "https://api.search.brave.com",
    auth: Auth::Header("X-Subscription-Token"),
    headers: &[("Accept", "application/json")],
    search: |base, query, count| {
        Request::Get(format!(
            "{base}/res/v1/web/search?q={}&count={}",
            form_encode(query),
            count.clamp(1, 20)
        ))
    },
    lists: &[&["web", "results"]],
    result: |r| SearchResult {
        url: str_field(r, "url").into(),
        title: plain(str_field(r, "title")),
        summary: plain(str_field(r, "description")),
    },
    take_count: false,
    forbidden: None,
    contents: None,
};

/// Tavily (`TAVILY_API_KEY`): `POST /search` with a bearer key, at most 20 results a call.
pub static TAVILY: ApiSpec = ApiSpec {
    name: "Tavily",
    default_base: "https://api.tavily.com",
    auth: Auth::Bearer,
    headers: &[],
    search: |base, query, count| {
        Request::Post(
            format!("{base}/search"),
            json!({"query": query, "max_results": count.clamp(1, 20), "search_depth": "basic"}),
        )
    },
    lists: &[&["results"]],
    result: title_and_content,
    take_count: false,
    forbidden: None,
    contents: None,
};

/// A SearXNG instance (`SEARXNG_URL`, keyless): `GET /search?format=json`.
pub static SEARXNG: ApiSpec = ApiSpec {
    name: "SearXNG",
    default_base: "",
    auth: Auth::None,
    headers: &[("Accept", "application/json")],
    search: |base, query, _| {
        Request::Get(format!(
            "{base}/search?q={}&format=json",
            form_encode(query)
        ))
    },
    lists: &[&["results"]],
    result: title_and_content,
    take_count: true,
    forbidden: Some(
        "the instance does not serve JSON; add `json` to `search.formats` in its settings.yml",
    ),
    contents: None,
};

/// A hit: the answer's `url` and `title` as given, `summary` with its whitespace squashed.
/// The first entry of a contents API's answer, or the error naming the page nothing came for.
fn first_contents<'a>(
    url: &str,
    entries: Option<&'a Vec<Value>>,
) -> Result<&'a Value, BrowserBackendError> {
    entries
        .and_then(|entries| entries.first())
        .ok_or_else(|| BrowserBackendError::new(format!("No contents returned for {url}")))
}

impl ProviderPage {
    /// The page `url` from a contents API's `entry`, titled by its `title` field.
    fn from_entry(url: &str, entry: &Value, html: &str) -> Self {
        Self {
            url: url.to_string(),
            title: str_field(entry, "title").into(),
            html: html.into(),
        }
    }
}

fn hit_with_summary(r: &Value, summary: &str) -> SearchResult {
    SearchResult {
        url: str_field(r, "url").into(),
        title: str_field(r, "title").into(),
        summary: squash_whitespace(summary),
    }
}

fn title_and_content(r: &Value) -> SearchResult {
    SearchResult {
        url: str_field(r, "url").into(),
        title: squash_whitespace(str_field(r, "title")),
        summary: squash_whitespace(str_field(r, "content")),
    }
}

/// A search API described by an [`ApiSpec`].
pub struct ApiProvider {
    spec: &'static ApiSpec,
    client: reqwest::Client,
    /// Empty for a keyless API.
    api_key: String,
    base_url: String,
    /// Read pages through the API's contents endpoint where it has one.
    read_pages: bool,
}

impl ApiProvider {
    pub fn new(
        spec: &'static ApiSpec,
        client: reqwest::Client,
        api_key: String,
        base_url: Option<String>,
        read_pages: bool,
    ) -> Self {
        let base_url = trim_base(base_url.as_deref().unwrap_or(spec.default_base));
        Self {
            spec,
            client,
            api_key,
            base_url,
            read_pages,
        }
    }

    async fn send(
        &self,
        request: Request,
        headers: &[(&str, &str)],
    ) -> Result<Value, BrowserBackendError> {
        let name = self.spec.name;
        let mut builder = match request {
            Request::Get(url) => self.client.get(url),
            Request::Post(url, body) => self
                .client
                .post(url)
                .header("content-type", "application/json")
                .body(body.to_string()),
        };
        builder = match self.spec.auth {
            Auth::None => builder,
            Auth::Header(header) => builder.header(header, &self.api_key),
            Auth::Bearer => builder.header("Authorization", format!("Bearer {}", self.api_key)),
        };
        for (header, value) in headers {
            builder = builder.header(*header, *value);
        }
        let response = builder.send().await.map_err(|e| send_error(name, e))?;
        if let Some(fix) = self.spec.forbidden
            && response.status() == reqwest::StatusCode::FORBIDDEN
        {
            return Err(BrowserBackendError::new(format!(
                "{name} API error 403 Forbidden: {fix}"
            )));
        }
        read_json(name, response).await
    }
}

#[async_trait]
impl SearchProvider for ApiProvider {
    fn name(&self) -> &'static str {
        self.spec.name
    }

    async fn search(
        &self,
        query: &str,
        count: usize,
    ) -> Result<Vec<SearchResult>, BrowserBackendError> {
        let spec = self.spec;
        let answer = self
            .send((spec.search)(&self.base_url, query, count), spec.headers)
            .await?;
        let mut results = Vec::new();
        for path in spec.lists {
            results.extend(
                results_array(spec.name, &answer, path)?
                    .iter()
                    .map(spec.result),
            );
        }
        results.retain(|r| !r.url.is_empty());
        if spec.take_count {
            results.truncate(count);
        }
        Ok(results)
    }

    async fn contents(&self, url: &str) -> Option<Result<ProviderPage, BrowserBackendError>> {
        let contents = self.spec.contents.as_ref().filter(|_| self.read_pages)?;
        let result = async {
            let answer = self
                .send((contents.request)(&self.base_url, url), &[])
                .await?;
            (contents.page)(url, &answer)
        };
        Some(result.await)
    }
}

/// DuckDuckGo's keyless HTML results page (`POST /html/`), the zero-setup default.
pub struct DuckDuckGoProvider {
    client: reqwest::Client,
    base_url: String,
}

impl DuckDuckGoProvider {
    pub const DEFAULT_BASE_URL: &'static str = "https://html.duckduckgo.com";

    pub fn new(client: reqwest::Client, base_url: Option<String>) -> Self {
        Self {
            client,
            base_url: trim_base(base_url.as_deref().unwrap_or(Self::DEFAULT_BASE_URL)),
        }
    }
}

fn selector(cell: &'static OnceLock<Option<Selector>>, css: &str) -> Option<&'static Selector> {
    cell.get_or_init(|| Selector::parse(css).ok()).as_ref()
}

/// The target of a DuckDuckGo result link (`//duckduckgo.com/l/?uddg=<encoded>&rut=...`).
fn ddg_target(href: &str) -> String {
    let href = href.trim();
    let absolute = if let Some(rest) = href.strip_prefix("//") {
        format!("https://{rest}")
    } else {
        href.to_string()
    };
    if absolute.contains("duckduckgo.com/l/")
        && let Some(query) = absolute.split_once('?').map(|(_, q)| q)
        && let Some(value) = query.split('&').find_map(|kv| kv.strip_prefix("uddg="))
    {
        return form_decode(value);
    }
    absolute
}

/// Parses DuckDuckGo's HTML results (ads skipped).
pub fn parse_duckduckgo(html: &str) -> Vec<SearchResult> {
    static RESULT: OnceLock<Option<Selector>> = OnceLock::new();
    static TITLE: OnceLock<Option<Selector>> = OnceLock::new();
    static SNIPPET: OnceLock<Option<Selector>> = OnceLock::new();
    let (Some(result_sel), Some(title_sel), Some(snippet_sel)) = (
        selector(&RESULT, "div.result"),
        selector(&TITLE, "a.result__a"),
        selector(&SNIPPET, ".result__snippet"),
    ) else {
        return Vec::new();
    };
    let doc = Html::parse_document(html);
    doc.select(result_sel)
        .filter(|r| !r.value().classes().any(|c| c == "result--ad"))
        .filter_map(|r| {
            let link = r.select(title_sel).next()?;
            let url = ddg_target(link.value().attr("href")?);
            let title = squash_whitespace(&link.text().collect::<String>());
            let summary = r
                .select(snippet_sel)
                .next()
                .map(|s| squash_whitespace(&s.text().collect::<String>()))
                .unwrap_or_default();
            (!url.is_empty()).then_some(SearchResult {
                url,
                title,
                summary,
            })
        })
        .collect()
}

#[async_trait]
impl SearchProvider for DuckDuckGoProvider {
    fn name(&self) -> &'static str {
        "DuckDuckGo"
    }

    async fn search(
        &self,
        query: &str,
        count: usize,
    ) -> Result<Vec<SearchResult>, BrowserBackendError> {
        let response = self
            .client
            .post(format!("{}/html/", self.base_url))
            .header("content-type", "application/x-www-form-urlencoded")
            .header("Accept", "text/html")
            .body(format!("q={}", form_encode(query)))
            .send()
            .await
            .map_err(|e| send_error("DuckDuckGo", e))?;
        let body = read_body("DuckDuckGo", response).await?;
        let (mut results, bot_check) = off_runtime(move || {
            let html = String::from_utf8_lossy(&body);
            let bot_check = html.contains("anomaly-modal") || html.contains("challenge-form");
            Ok((parse_duckduckgo(&html), bot_check))
        })
        .await?;
        if results.is_empty() && bot_check {
            return Err(BrowserBackendError::new(
                "DuckDuckGo refused the query with a bot check; try again later or configure another search backend",
            ));
        }
        results.truncate(count);
        Ok(results)
    }
}

/// A [`BrowserBackend`] made of a search provider and page fetching: through the provider's contents
/// API where it has one and is asked to, otherwise directly over HTTP.
pub struct WebBackend {
    provider: Arc<dyn SearchProvider>,
    fetcher: Fetcher,
}

impl WebBackend {
    pub fn new(provider: Arc<dyn SearchProvider>, fetcher: Fetcher) -> Self {
        Self { provider, fetcher }
    }

    /// Fetches `url` directly and converts it by content type.
    async fn fetch_direct(
        &self,
        url: &str,
        as_source: bool,
    ) -> Result<PageContents, BrowserBackendError> {
        let doc = self
            .fetcher
            .get(url)
            .await
            .map_err(|e| BrowserBackendError::new(e.to_string()))?;
        let max_bytes = self.fetcher.config().max_bytes;
        off_runtime(move || convert(doc, as_source, max_bytes)).await
    }
}

/// A fetched document as a page (or its source), by content type.
fn convert(
    doc: Document,
    as_source: bool,
    max_bytes: usize,
) -> Result<PageContents, BrowserBackendError> {
    let kind = classify(doc.content_type.as_deref(), &doc.body);
    let media = doc
        .content_type
        .clone()
        .unwrap_or_else(|| "application/octet-stream".into());
    if kind == ContentKind::Unsupported {
        let media = media.split(';').next().unwrap_or("").trim().to_string();
        return Err(BrowserBackendError::new(
            super::fetch::FetchError::UnsupportedContent(media).to_string(),
        ));
    }
    let text = decode_text(&doc.body, doc.content_type.as_deref(), &doc.url);
    let note = if doc.truncated {
        format!(
            "\n\n[The page is larger than {} MiB; only its beginning was read.]",
            max_bytes / (1024 * 1024)
        )
    } else {
        String::new()
    };
    let name = doc
        .url
        .rsplit('/')
        .find(|s| !s.is_empty())
        .unwrap_or(&doc.url)
        .to_string();
    if as_source {
        let mut page = source_page(&doc.url, &name, &text);
        page.text.push_str(&note);
        return Ok(page);
    }
    let mut page = match kind {
        ContentKind::Html => process_html(&text, &doc.url, None)
            .map_err(|e| BrowserBackendError::new(e.to_string()))?,
        ContentKind::Json => {
            let pretty = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| serde_json::to_string_pretty(&v).ok())
                .unwrap_or(text);
            text_page(&doc.url, &name, &pretty)
        }
        _ => text_page(&doc.url, &name, &text),
    };
    page.text.push_str(&note);
    Ok(page)
}

#[async_trait]
impl BrowserBackend for WebBackend {
    async fn search(&self, query: &str, topn: usize) -> Result<PageContents, BrowserBackendError> {
        let results = self.provider.search(query, topn).await?;
        Ok(search_results_page(query, &results))
    }

    async fn fetch(&self, url: &str) -> Result<PageContents, BrowserBackendError> {
        match self.provider.contents(url).await {
            Some(Ok(page)) => {
                off_runtime(move || {
                    process_html(&page.html, &page.url, Some(&page.title))
                        .map_err(|e| BrowserBackendError::new(e.to_string()))
                })
                .await
            }
            Some(Err(e)) => Err(e),
            None => self.fetch_direct(url, false).await,
        }
    }

    async fn fetch_source(&self, url: &str) -> Result<PageContents, BrowserBackendError> {
        match self.provider.contents(url).await {
            Some(Ok(page)) => Ok(source_page(&page.url, &page.title, &page.html)),
            Some(Err(e)) => Err(e),
            None => self.fetch_direct(url, true).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duckduckgo_redirect_links_are_unwrapped() {
        assert_eq!(
            ddg_target(
                "//duckduckgo.com/l/?uddg=https%3A%2F%2Fdoc.rust-lang.org%2Fbook%2F&rut=abc"
            ),
            "https://doc.rust-lang.org/book/"
        );
        assert_eq!(ddg_target("https://example.org/x"), "https://example.org/x");
    }

    #[test]
    fn form_encoding_round_trips() {
        assert_eq!(
            form_encode("rust ownership & borrowing"),
            "rust+ownership+%26+borrowing"
        );
        assert_eq!(
            form_decode("rust+ownership+%26+borrowing%"),
            "rust ownership & borrowing%"
        );
    }
}
