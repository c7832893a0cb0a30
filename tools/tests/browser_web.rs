//! The browser over real HTTP on loopback: fixture pages, hostile servers, and every search
//! backend against a server answering in the provider's documented response shape.

mod support;

use std::collections::HashMap;
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ossa_tools::browser::{
    ApiProvider, ApiSpec, BRAVE, BrowserBackend, BrowserConfig, BrowserSession, BrowserTool,
    DuckDuckGoProvider, EXA, FetchConfig, Fetcher, PageContents, SEARXNG, SearchBackendKind,
    SearchConfig, SearchProvider, TAVILY, WebBackend, YOU, process_html,
};
use ossa_tools::tool::ToolCall;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use serde_json::json;
use support::{Reply, Request, TestServer, call};

fn local_fetch() -> FetchConfig {
    FetchConfig {
        allow_private_addresses: true,
        ..FetchConfig::default()
    }
}

fn client() -> reqwest::Client {
    ossa_tools::browser::search::api_client(Duration::from_secs(10)).expect("client")
}

fn backend(provider: Arc<dyn SearchProvider>, fetch: FetchConfig) -> WebBackend {
    WebBackend::new(provider, Fetcher::new(fetch).expect("fetcher"))
}

/// `spec`'s provider with `key`, at `base` (a test server); it reads pages through the API
/// when `read_pages`.
fn provider(spec: &'static ApiSpec, key: &str, base: String, read_pages: bool) -> Arc<ApiProvider> {
    Arc::new(ApiProvider::new(
        spec,
        client(),
        key.to_string(),
        Some(base),
        read_pages,
    ))
}

/// A web backend searching through `spec`'s provider (see [`provider`]), fetching on loopback.
fn api_backend(spec: &'static ApiSpec, key: &str, base: String, read_pages: bool) -> WebBackend {
    backend(provider(spec, key, base, read_pages), local_fetch())
}

/// A provider that is never asked to search (for fetch tests).
fn no_search() -> Arc<dyn SearchProvider> {
    provider(&SEARXNG, "", "http://127.0.0.1:9".to_string(), false)
}

// ---------------------------------------------------------------------------------------------
// Fixture pages served over HTTP

/// Every fixture page, served with its declared charset, reads over HTTP as it converts
/// in memory; the legacy-charset pages are decoded from their real bytes.
#[tokio::test]
async fn fixture_pages_read_over_http_like_in_memory() {
    let mut pages: Vec<(String, String)> = Vec::new();
    for path in support::case_files(&support::fixture_dir()) {
        let case = support::load_json(&path);
        for (url, page) in case["pages"].as_object().cloned().unwrap_or_default() {
            let html = page["html"].as_str().unwrap_or_default().to_string();
            if !html.trim().is_empty() && !pages.iter().any(|(u, _)| *u == url) {
                pages.push((url, html));
            }
        }
    }
    let served = pages.clone();
    let server = TestServer::start(move |req| {
        let Some((_, html)) = served.iter().find(|(u, _)| {
            u.split("://")
                .nth(1)
                .and_then(|r| r.find('/').map(|i| &r[i..]))
                == Some(req.target.as_str())
        }) else {
            return Reply::status(404, "no such page");
        };
        if html.contains("charset=Shift_JIS") {
            let (bytes, _, _) = encoding_rs::SHIFT_JIS.encode(html);
            return Reply::ok("text/html", bytes.into_owned());
        }
        if html.contains("charset=\"windows-1252\"") {
            let (bytes, _, _) = encoding_rs::WINDOWS_1252.encode(html);
            return Reply::ok("text/html", bytes.into_owned());
        }
        Reply::html(html)
    })
    .await;
    let web = backend(no_search(), local_fetch());
    let mut checked = 0;
    for (url, html) in &pages {
        let path = url
            .split("://")
            .nth(1)
            .and_then(|r| r.find('/').map(|i| r[i..].to_string()))
            .unwrap_or_default();
        let local = server.url(&path);
        let fetched = web
            .fetch(&local)
            .await
            .unwrap_or_else(|e| panic!("{local}: {e}"));
        let direct = process_html(html, &local, None).unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(fetched.text, direct.text, "{url}");
        assert_eq!(fetched.urls, direct.urls, "{url}");
        assert_eq!(fetched.title, direct.title, "{url}");
        checked += 1;
    }
    assert!(checked >= 15, "{checked}");
    let latin = web
        .fetch(&server.url("/encoding/latin.html"))
        .await
        .unwrap();
    assert!(
        latin
            .text
            .contains("Our naïve précis of the été menu costs €4,50"),
        "{}",
        latin.text
    );
    let sjis = web.fetch(&server.url("/encoding/sjis.html")).await.unwrap();
    assert_eq!(sjis.title, "日本語のページ");
    assert!(sjis.text.contains("# 東京の天気"), "{}", sjis.text);
}

// ---------------------------------------------------------------------------------------------
// Hostile servers

async fn fetch_error(server: &TestServer, path: &str, fetch: FetchConfig) -> String {
    let web = backend(no_search(), fetch);
    match web.fetch(&server.url(path)).await {
        Ok(page) => panic!("{path} should fail, got {} bytes of text", page.text.len()),
        Err(e) => e.to_string(),
    }
}

/// Fetches `path` with a size cap of `cap` bytes: the page must come back, cut.
async fn fetch_capped(server: &TestServer, path: &str, cap: usize) -> PageContents {
    let web = backend(
        no_search(),
        FetchConfig {
            max_bytes: cap,
            ..local_fetch()
        },
    );
    web.fetch(&server.url(path))
        .await
        .expect("a truncated page")
}

#[tokio::test]
async fn huge_page_is_cut_at_the_size_cap() {
    let server = TestServer::start(|_| Reply::Endless {
        content_type: "text/html".into(),
        chunk: b"<p>filler text that goes on and on</p>\n".repeat(200),
        max_chunks: 100_000,
    })
    .await;
    let cap = 256 * 1024;
    let page = fetch_capped(&server, "/huge", cap).await;
    assert!(page.text.len() < cap, "{}", page.text.len());
    assert!(page.text.contains("filler text"));
    assert!(
        page.text.ends_with("only its beginning was read.]"),
        "{}",
        &page.text[page.text.len() - 100..]
    );
}

#[tokio::test]
async fn gzip_bomb_is_cut_at_the_size_cap() {
    // 64 MiB of markup, gzipped to well under 1 MiB.
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let block = "<p>zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz</p>".repeat(1 << 10);
    for _ in 0..(64 * 1024 * 1024 / block.len()) {
        encoder.write_all(block.as_bytes()).expect("gzip");
    }
    let bomb = encoder.finish().expect("gzip");
    assert!(bomb.len() < 1 << 20);
    let server = TestServer::start(move |_| Reply::Full {
        status: 200,
        headers: vec![
            ("Content-Type".into(), "text/html".into()),
            ("Content-Encoding".into(), "gzip".into()),
        ],
        body: bomb.clone(),
    })
    .await;
    let cap = 1024 * 1024;
    let page = fetch_capped(&server, "/bomb", cap).await;
    assert!(page.text.len() <= cap, "{}", page.text.len());
    assert!(page.text.ends_with("only its beginning was read.]"));
}

#[tokio::test]
async fn slow_and_silent_servers_time_out() {
    let server = TestServer::start(|req| match req.path() {
        "/drip" => Reply::Drip {
            content_type: "text/html".into(),
            interval: Duration::from_millis(300),
            count: 40,
        },
        _ => Reply::Silent {
            r#for: Duration::from_secs(20),
        },
    })
    .await;
    let fetch = FetchConfig {
        timeout: Duration::from_secs(1),
        ..local_fetch()
    };
    assert_eq!(
        fetch_error(&server, "/drip", fetch.clone()).await,
        "timed out after 1 s"
    );
    assert_eq!(
        fetch_error(&server, "/silent", fetch).await,
        "timed out after 1 s"
    );
}

#[tokio::test]
async fn endless_redirects_stop_at_the_limit() {
    let server = TestServer::start(|req| {
        let n: usize = req.path().trim_start_matches("/r/").parse().unwrap_or(0);
        Reply::redirect(&format!("/r/{}", n + 1))
    })
    .await;
    let fetch = FetchConfig {
        max_redirects: 5,
        ..local_fetch()
    };
    assert_eq!(
        fetch_error(&server, "/r/0", fetch).await,
        "too many redirects (more than 5)"
    );
    assert!(server.requests().len() <= 7, "{}", server.requests().len());
}

#[tokio::test]
async fn http_errors_binary_and_unknown_schemes_are_explained() {
    let server = TestServer::start(|req| match req.path() {
        "/missing" => Reply::status(404, "not here"),
        "/broken" => Reply::status(500, "oops"),
        "/image.png" => Reply::ok("image/png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR".to_vec()),
        "/blob" => Reply::ok("application/octet-stream", vec![0u8, 1, 2, 3, 0, 0, 7, 255]),
        "/doc.pdf" => Reply::ok("application/pdf", b"%PDF-1.7\n".to_vec()),
        _ => Reply::status(404, ""),
    })
    .await;
    assert_eq!(
        fetch_error(&server, "/missing", local_fetch()).await,
        "HTTP 404 Not Found"
    );
    assert_eq!(
        fetch_error(&server, "/broken", local_fetch()).await,
        "HTTP 500 Internal Server Error"
    );
    assert_eq!(
        fetch_error(&server, "/image.png", local_fetch()).await,
        "unsupported content type `image/png`: the browser reads HTML, plain text and JSON"
    );
    assert!(
        fetch_error(&server, "/blob", local_fetch())
            .await
            .starts_with("unsupported content type `application/octet-stream`")
    );
    assert!(
        fetch_error(&server, "/doc.pdf", local_fetch())
            .await
            .starts_with("unsupported content type `application/pdf`")
    );
    let web = backend(no_search(), local_fetch());
    let err = web
        .fetch("file:///etc/passwd")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "unsupported URL scheme `file` (only http and https pages can be opened)"
    );
}

#[tokio::test]
async fn wrong_charset_label_is_corrected() {
    let text = "東京の天気：今日の東京は晴れです。明日は雨が降るかもしれません。";
    let (sjis, _, _) = encoding_rs::SHIFT_JIS.encode(text);
    let sjis = sjis.into_owned();
    let server = TestServer::start(move |req| match req.path() {
        // Declared UTF-8, really Shift_JIS.
        "/sjis" => Reply::ok(
            "text/html; charset=utf-8",
            [b"<p>".as_slice(), &sjis, b"</p>"].concat(),
        ),
        // Declared Latin-1, really UTF-8.
        _ => Reply::ok(
            "text/html; charset=iso-8859-1",
            "<p>Café crème</p>".as_bytes().to_vec(),
        ),
    })
    .await;
    let web = backend(no_search(), local_fetch());
    assert!(
        web.fetch(&server.url("/sjis"))
            .await
            .unwrap()
            .text
            .contains(text)
    );
    assert!(
        web.fetch(&server.url("/latin"))
            .await
            .unwrap()
            .text
            .contains("Café crème")
    );
}

#[tokio::test]
async fn local_addresses_are_refused_by_default() {
    let server = TestServer::start(|_| Reply::html("<p>secret</p>")).await;
    let web = backend(no_search(), FetchConfig::default());
    let err = web
        .fetch(&server.url("/admin"))
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        "refusing to open `127.0.0.1`: it is a local or private network address"
    );
    let err = web
        .fetch("http://localhost:9/")
        .await
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("refusing to open `localhost`"), "{err}");
    assert!(server.requests().is_empty(), "the server was contacted");
}

#[tokio::test]
async fn json_and_plain_text_pages() {
    let server = TestServer::start(|req| match req.path() {
        "/data.json" => Reply::ok(
            "application/json",
            br#"{"name":"ossa","tags":["a","b"]}"#.to_vec(),
        ),
        _ => Reply::ok(
            "text/plain; charset=utf-8",
            b"line one\r\nline two\r\n".to_vec(),
        ),
    })
    .await;
    let web = backend(no_search(), local_fetch());
    let json_page = web.fetch(&server.url("/data.json")).await.unwrap();
    assert_eq!(json_page.title, "data.json");
    assert!(
        json_page
            .text
            .contains("\"name\": \"ossa\",\n  \"tags\": ["),
        "{}",
        json_page.text
    );
    let text = web.fetch(&server.url("/notes.txt")).await.unwrap();
    assert_eq!(
        text.text,
        format!("\nURL: {}\nline one\nline two", server.url("/notes.txt"))
    );
}

#[test]
fn deeply_nested_markup_does_not_overflow() {
    let html = format!(
        "{}<p>deep text</p>{}",
        "<div>".repeat(100_000),
        "</div>".repeat(100_000)
    );
    let page = std::thread::Builder::new()
        .stack_size(2 * 1024 * 1024)
        .spawn(move || process_html(&html, "https://deep.example/", None))
        .expect("thread")
        .join()
        .expect("no stack overflow")
        .expect("converted");
    assert!(page.text.contains("deep text"));
}

// ---------------------------------------------------------------------------------------------
// A whole conversation over HTTP

#[tokio::test]
async fn search_then_open_then_find_over_http() {
    let srv = TestServer::start(|req| {
        let host = req.header("host").unwrap_or_default().replace(':', "%3A");
        match req.path() {
            "/html/" => Reply::html(&format!(
                r#"<div class="result results_links web-result"><h2 class="result__title"><a class="result__a" href="//duckduckgo.com/l/?uddg=http%3A%2F%2F{host}%2Fpage&rut=x">Local page</a></h2><a class="result__snippet">A page on loopback.</a></div>"#
            )),
            "/page" => Reply::html("<title>Local</title><main><h1>Hello</h1><p>The answer is 42.</p><p><a href='/other'>other</a></p></main>"),
            _ => Reply::status(404, ""),
        }
    })
    .await;
    let provider = Arc::new(DuckDuckGoProvider::new(client(), Some(srv.url(""))));
    let tool = BrowserTool::new(
        Arc::new(backend(provider, local_fetch())),
        BrowserConfig::default(),
    );
    let mut s = tool.session();
    let results = answer(&mut s, "browser.search", r#"{"query": "local"}"#).await;
    assert!(
        results.contains(&format!(
            "  * 【0†Local page†{}】 A page on loopback.",
            srv.addr
        )),
        "{results}"
    );
    let page = answer(&mut s, "browser.open", r#"{"id": 0}"#).await;
    let url = srv.url("/page");
    assert!(
        page.starts_with(&format!(
            "[1] Local ({url})\n**viewing lines [0 - 6] of 6**\n\nL0: \nL1: URL: {url}\nL2: # Hello"
        )),
        "{page}"
    );
    let found = answer(&mut s, "browser.find", r#"{"pattern": "answer"}"#).await;
    assert!(
        found.contains("L0: # 【0†match at L4】\nL1: The answer is 42."),
        "{found}"
    );
    let missing = answer(&mut s, "browser.open", r#"{"cursor": 1, "id": 0}"#).await;
    assert_eq!(
        missing,
        format!(
            "Error fetching URL `{}`: HTTP 404 Not Found",
            srv.url("/other")
        )
    );
    assert_eq!(s.citation_urls(), vec![String::new(), url.clone(), url]);
}

// ---------------------------------------------------------------------------------------------
// Search backends: request shape and response mapping, per provider documentation

/// What `session` answers to the browser function `name` called with `args`.
async fn answer(session: &mut BrowserSession, name: &str, args: &str) -> String {
    session.handle(&call(name, args)).await.content
}

fn result_lines(page: &ossa_tools::browser::PageContents) -> Vec<String> {
    page.text
        .lines()
        .filter(|l| l.starts_with("  * "))
        .map(str::to_string)
        .collect()
}

/// The result lines `web` shows for `query` (20 results asked for).
async fn search_lines(web: &WebBackend, query: &str) -> Vec<String> {
    result_lines(&web.search(query, 20).await.expect("search"))
}

#[tokio::test]
async fn exa_search_and_contents() {
    let server = TestServer::start(|req: &Request| {
        if req.header("x-api-key") != Some("exa-key") {
            return Reply::Full { status: 401, headers: vec![], body: br#"{"error":"Invalid API key"}"#.to_vec() };
        }
        match (req.method.as_str(), req.path()) {
            ("POST", "/search") => {
                let body = req.json();
                assert_eq!(body["numResults"], 20);
                assert_eq!(body["contents"], json!({"text": true, "summary": true}));
                Reply::json(&json!({
                    "requestId": "b5947044c4b78efa9552a7c89b306d95",
                    "resolvedSearchType": "neural",
                    "results": [
                        {"id": "https://doc.rust-lang.org/book/ch04-01-what-is-ownership.html", "title": "What is Ownership?",
                         "url": "https://doc.rust-lang.org/book/ch04-01-what-is-ownership.html", "publishedDate": null, "author": null,
                         "text": "Ownership is a set of rules...", "summary": "Rust's rules for memory."},
                        {"id": "https://en.wikipedia.org/wiki/Rust", "title": "Rust (programming language)",
                         "url": "https://en.wikipedia.org/wiki/Rust", "text": "Rust is a general-purpose language", "summary": ""}
                    ],
                    "costDollars": {"total": 0.005}
                }))
            }
            ("POST", "/contents") => {
                let body = req.json();
                assert_eq!(body["text"], json!({"includeHtmlTags": true}));
                let url = body["urls"][0].as_str().unwrap_or_default().to_string();
                if url.contains("missing") {
                    return Reply::json(&json!({"requestId": "x", "results": [], "statuses": [{"id": url, "status": "error"}]}));
                }
                Reply::json(&json!({"requestId": "x", "results": [{"id": url, "url": url, "title": "Ownership",
                    "text": "<h1>What is Ownership?</h1><p>Rules: <a href=\"/book/ch04-02.html\">borrowing</a>.</p>"}]}))
            }
            _ => Reply::status(404, ""),
        }
    })
    .await;
    let web = api_backend(&EXA, "exa-key", server.url("/"), true);
    let lines = search_lines(&web, "rust ownership").await;
    assert_eq!(server.requests()[0].json()["query"], "rust ownership");
    assert_eq!(
        lines,
        vec![
            "  * 【0†What is Ownership?†doc.rust-lang.org】 Rust's rules for memory.",
            "  * 【1†Rust (programming language)†en.wikipedia.org】 Rust is a general-purpose language",
        ]
    );
    let url = "https://doc.rust-lang.org/book/ch04-01-what-is-ownership.html";
    let read = web.fetch(url).await.expect("contents");
    assert_eq!(read.title, "Ownership");
    assert_eq!(
        read.text,
        format!("\nURL: {url}\n# What is Ownership?\n\nRules: 【0†borrowing】.")
    );
    assert_eq!(
        read.urls,
        vec!["https://doc.rust-lang.org/book/ch04-02.html".to_string()]
    );
    let missing = web
        .fetch("https://example.org/missing")
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        missing,
        "No contents returned for https://example.org/missing"
    );
    let err = api_backend(&EXA, "wrong", server.url(""), true)
        .search("x", 20)
        .await
        .unwrap_err()
        .to_string();
    assert_eq!(
        err,
        r#"Exa API error 401 Unauthorized: {"error":"Invalid API key"}"#
    );
}

#[tokio::test]
async fn you_search_and_contents() {
    let server = TestServer::start(|req: &Request| {
        assert_eq!(req.header("x-api-key"), Some("ydc-key"));
        match (req.method.as_str(), req.path()) {
            ("GET", "/v1/search") => {
                assert_eq!(req.query("query").as_deref(), Some("tokyo weather"));
                assert_eq!(req.query("count").as_deref(), Some("20"));
                Reply::json(&json!({
                    "results": {
                        "web": [{"url": "https://weather.example/tokyo", "title": "Tokyo forecast",
                                 "description": "Daily forecast", "snippets": ["Sunny today.", "Rain tomorrow."],
                                 "page_age": "2025-01-01T00:00:00"}],
                        "news": [{"url": "https://news.example/typhoon", "title": "Typhoon nears Tokyo",
                                  "description": "A typhoon is expected.", "page_age": "2025-01-01T00:00:00"}]
                    },
                    "metadata": {"search_uuid": "x", "query": "tokyo weather", "latency": 0.1}
                }))
            }
            ("POST", "/v1/contents") => {
                let body = req.json();
                assert_eq!(body["livecrawl_formats"], "html");
                let url = body["urls"][0].as_str().unwrap_or_default().to_string();
                Reply::json(&json!([{"url": url, "title": "Tokyo", "html": "<html><body><p>Sunny, 25°C.</p></body></html>",
                                     "markdown": "Sunny, 25°C."}]))
            }
            _ => Reply::status(404, ""),
        }
    })
    .await;
    let web = api_backend(&YOU, "ydc-key", server.url(""), true);
    assert_eq!(
        search_lines(&web, "tokyo weather").await,
        vec![
            "  * 【0†Tokyo forecast†weather.example】 Sunny today. Rain tomorrow.",
            "  * 【1†Typhoon nears Tokyo†news.example】 A typhoon is expected.",
        ]
    );
    let read = web
        .fetch("https://weather.example/tokyo")
        .await
        .expect("contents");
    assert_eq!(read.title, "Tokyo");
    assert!(read.text.ends_with("Sunny, 25°C."), "{}", read.text);
}

#[tokio::test]
async fn brave_search() {
    let server = TestServer::start(|req: &Request| {
        assert_eq!((req.method.as_str(), req.path()), ("GET", "/res/v1/web/search"));
        assert_eq!(req.header("x-subscription-token"), Some("brave-key"));
        assert_eq!(req.header("accept"), Some("application/json"));
        assert_eq!(req.query("q").as_deref(), Some("rust book"));
        assert_eq!(req.query("count").as_deref(), Some("20"));
        Reply::json(&json!({
            "type": "search",
            "query": {"original": "rust book"},
            "web": {"type": "search", "results": [
                {"title": "The <strong>Rust</strong> Programming Language", "url": "https://doc.rust-lang.org/book/",
                 "description": "Learn <strong>Rust</strong> &amp; its ownership model.", "is_source_local": false,
                 "profile": {"name": "Rust"}},
                {"title": "Rust <strong>Book</strong> exercises", "url": "https://exercises.example/rust", "description": ""}
            ]}
        }))
    })
    .await;
    let web = api_backend(&BRAVE, "brave-key", server.url(""), false);
    assert_eq!(
        search_lines(&web, "rust book").await,
        vec![
            "  * 【0†The Rust Programming Language†doc.rust-lang.org】 Learn Rust & its ownership model.",
            "  * 【1†Rust Book exercises†exercises.example】",
        ]
    );
}

#[tokio::test]
async fn tavily_search() {
    let server = TestServer::start(|req: &Request| {
        assert_eq!((req.method.as_str(), req.path()), ("POST", "/search"));
        assert_eq!(req.header("authorization"), Some("Bearer tvly-key"));
        let body = req.json();
        assert_eq!(body["query"], "solar eclipse 2024");
        assert_eq!(body["max_results"], 20);
        Reply::json(&json!({
            "query": "solar eclipse 2024", "answer": null, "images": [], "follow_up_questions": null,
            "results": [{"title": "Eclipse 2024", "url": "https://science.example/eclipse", "content": "The total\n eclipse crossed North America.",
                         "score": 0.98, "raw_content": null}],
            "response_time": 1.23
        }))
    })
    .await;
    let web = api_backend(&TAVILY, "tvly-key", server.url(""), false);
    assert_eq!(
        search_lines(&web, "solar eclipse 2024").await,
        vec!["  * 【0†Eclipse 2024†science.example】 The total eclipse crossed North America."]
    );
}

#[tokio::test]
async fn searxng_search() {
    let server = TestServer::start(|req: &Request| {
        assert_eq!((req.method.as_str(), req.path()), ("GET", "/searxng/search"));
        assert_eq!(req.query("format").as_deref(), Some("json"));
        if req.query("q").as_deref() == Some("blocked") {
            return Reply::status(403, "Forbidden");
        }
        Reply::json(&json!({
            "query": req.query("q"), "number_of_results": 0,
            "results": [
                {"url": "https://wiki.example/Kyoto", "title": "Kyoto", "content": "Former capital of Japan.", "engine": "wikipedia",
                 "engines": ["wikipedia"], "positions": [1], "score": 1.0, "category": "general"},
                {"url": "https://travel.example/kyoto", "title": "Visit Kyoto", "content": "Temples and gardens.", "engine": "duckduckgo",
                 "engines": ["duckduckgo"], "positions": [2], "score": 0.5, "category": "general"}
            ],
            "answers": [], "corrections": [], "infoboxes": [], "suggestions": [], "unresponsive_engines": []
        }))
    })
    .await;
    let web = api_backend(&SEARXNG, "", server.url("/searxng/"), false);
    assert_eq!(
        search_lines(&web, "kyoto").await,
        vec![
            "  * 【0†Kyoto†wiki.example】 Former capital of Japan.",
            "  * 【1†Visit Kyoto†travel.example】 Temples and gardens."
        ]
    );
    let err = web.search("blocked", 20).await.unwrap_err().to_string();
    assert!(err.contains("add `json` to `search.formats`"), "{err}");
}

#[tokio::test]
async fn duckduckgo_search() {
    let page_html = r##"<html><body><div id="links" class="results">
      <div class="result results_links results_links_deep result--ad"><div class="links_main links_deep result__body">
        <h2 class="result__title"><a rel="nofollow" class="result__a" href="https://duckduckgo.com/y.js?ad_provider=x">Sponsored thing</a></h2>
        <a class="result__snippet" href="#">Buy now</a></div></div>
      <div class="result results_links results_links_deep web-result "><div class="links_main links_deep result__body">
        <h2 class="result__title"><a rel="nofollow" class="result__a" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fwww.python.org%2Fdoc%2F&amp;rut=abc">Python <b>Documentation</b></a></h2>
        <div class="result__extras"><a class="result__url" href="//duckduckgo.com/l/?uddg=https%3A%2F%2Fwww.python.org%2Fdoc%2F">www.python.org/doc/</a></div>
        <a class="result__snippet" href="//duckduckgo.com/l/?uddg=x">The official <b>Python</b> documentation.</a></div></div>
      <div class="result results_links results_links_deep web-result "><div class="links_main links_deep result__body">
        <h2 class="result__title"><a rel="nofollow" class="result__a" href="https://realpython.com/">Real Python</a></h2>
        <a class="result__snippet" href="https://realpython.com/">Tutorials &amp; articles.</a></div></div>
    </div></body></html>"##;
    let server = TestServer::start(move |req: &Request| {
        assert_eq!((req.method.as_str(), req.path()), ("POST", "/html/"));
        let q = String::from_utf8_lossy(&req.body).to_string();
        if q == "q=captcha" {
            return Reply::html(r#"<html><body><div class="anomaly-modal__title">Unfortunately, bots use DuckDuckGo too.</div><form id="challenge-form"></form></body></html>"#);
        }
        assert_eq!(q, "q=python+docs");
        Reply::html(page_html)
    })
    .await;
    let ddg = Arc::new(DuckDuckGoProvider::new(client(), Some(server.url(""))));
    let web = backend(ddg, local_fetch());
    let page = web.search("python docs", 20).await.expect("search");
    assert_eq!(
        result_lines(&page),
        vec![
            "  * 【0†Python Documentation†www.python.org】 The official Python documentation.",
            "  * 【1†Real Python†realpython.com】 Tutorials & articles.",
        ]
    );
    assert_eq!(
        page.urls,
        vec![
            "https://www.python.org/doc/".to_string(),
            "https://realpython.com/".to_string()
        ]
    );
    let err = web.search("captcha", 20).await.unwrap_err().to_string();
    assert!(
        err.starts_with("DuckDuckGo refused the query with a bot check"),
        "{err}"
    );
}

#[test]
fn missing_keys_name_their_environment_variable() {
    for (kind, var) in [
        (SearchBackendKind::Exa, "EXA_API_KEY"),
        (SearchBackendKind::You, "YDC_API_KEY"),
        (SearchBackendKind::Brave, "BRAVE_API_KEY"),
        (SearchBackendKind::Tavily, "TAVILY_API_KEY"),
    ] {
        let err = SearchConfig::new(kind)
            .build(FetchConfig::default())
            .err()
            .expect("missing key")
            .to_string();
        assert_eq!(
            err,
            format!(
                "the {} search backend needs an API key: set {var}",
                kind.name()
            )
        );
    }
    let err = SearchConfig::new(SearchBackendKind::Searxng)
        .build(FetchConfig::default())
        .err()
        .expect("missing url")
        .to_string();
    assert!(err.contains("set SEARXNG_URL"), "{err}");
    assert!(
        SearchConfig::new(SearchBackendKind::DuckDuckGo)
            .build(FetchConfig::default())
            .is_ok()
    );
}

#[tokio::test]
async fn backend_errors_reach_the_model_as_search_errors() {
    let server = TestServer::start(|_| Reply::status(429, r#"{"message":"rate limited"}"#)).await;
    let tool = BrowserTool::new(
        Arc::new(api_backend(&BRAVE, "k", server.url(""), false)),
        BrowserConfig::default(),
    );
    let out = tool
        .session()
        .handle(&call("browser.search", r#"{"query": "q"}"#))
        .await;
    assert_eq!(out.author, "browser.search");
    assert_eq!(
        out.content,
        r#"Error during search for `q`: Brave Search API error 429 Too Many Requests: {"message":"rate limited"}"#
    );
}

/// Through the `Tool` interface: one session per conversation, results on the call's channel,
/// and a link that redirects is fetched once and then found in the session's cache.
#[tokio::test]
async fn tool_sessions_follow_redirects_once() {
    use ossa_tools::tool::{Placement, Tool};
    let server = TestServer::start(|req| match req.path() {
        "/start" => Reply::html("<title>Start</title><p><a href='/old'>moved page</a></p>"),
        "/old" => Reply::redirect("/new"),
        "/new" => Reply::html("<title>New</title><p>Arrived.</p>"),
        _ => Reply::status(404, ""),
    })
    .await;
    let tool = BrowserTool::new(
        Arc::new(backend(no_search(), local_fetch())),
        BrowserConfig::default(),
    );
    assert_eq!(tool.name(), "browser");
    assert_eq!(tool.placement(), Placement::System);
    let mut conversation = tool.open_session();
    let open = |args: String| ToolCall {
        recipient: "browser.open".into(),
        channel: Some("commentary".into()),
        content_type: None,
        content: args,
    };
    let out = conversation
        .call(&open(format!(r#"{{"id": "{}"}}"#, server.url("/start"))))
        .await;
    assert_eq!(out.len(), 1);
    assert_eq!(
        (out[0].author.as_str(), out[0].channel.as_deref()),
        ("browser.open", Some("commentary"))
    );
    for expected_cursor in [1, 2] {
        let out = conversation
            .call(&open(r#"{"cursor": 0, "id": 0}"#.to_string()))
            .await;
        let header = format!("[{expected_cursor}] New ({})", server.url("/new"));
        assert!(out[0].content.starts_with(&header), "{}", out[0].content);
    }
    let hits = server
        .requests()
        .iter()
        .filter(|r| r.path() == "/old")
        .count();
    assert_eq!(hits, 1, "the redirected link was fetched again");
    assert_eq!(conversation.citation_urls().map(|u| u.len()), Some(3));
}

// ---------------------------------------------------------------------------------------------
// Attacks on the address filter, on loopback. The "web" is a server on 127.0.0.1, let through
// by `allowed_addresses`; the "intranet" is a server on 127.0.0.2 that no page may reach.
// Names are answered by `TestDns`, so no real DNS is asked.

/// A DNS that answers from a table: the `n`th lookup of a name gets its `n`th answer (the last
/// one once they run out), and every lookup is counted.
struct TestDns {
    answers: HashMap<String, Vec<Vec<IpAddr>>>,
    lookups: Mutex<HashMap<String, usize>>,
}

impl TestDns {
    fn new(answers: &[(&str, &[&[&str]])]) -> Arc<Self> {
        let answers = answers
            .iter()
            .map(|(name, seq)| {
                let seq = seq
                    .iter()
                    .map(|ips| ips.iter().map(|ip| ip.parse().expect("an IP")).collect())
                    .collect();
                (name.to_string(), seq)
            })
            .collect();
        Arc::new(Self {
            answers,
            lookups: Mutex::new(HashMap::new()),
        })
    }

    fn lookups(&self, name: &str) -> usize {
        self.lookups.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

impl Resolve for TestDns {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_string();
        let n = {
            let mut lookups = self.lookups.lock().unwrap();
            let n = lookups.entry(host.clone()).or_default();
            *n += 1;
            *n - 1
        };
        let answer: Option<Vec<SocketAddr>> = self.answers.get(&host).map(|seq| {
            seq[n.min(seq.len() - 1)]
                .iter()
                .map(|ip| SocketAddr::new(*ip, 0))
                .collect()
        });
        Box::pin(async move {
            match answer {
                Some(addrs) => Ok(Box::new(addrs.into_iter()) as Addrs),
                None => Err(format!("no such name {host}").into()),
            }
        })
    }
}

/// The web server on 127.0.0.1 and the intranet server on 127.0.0.2, on the same port (so a
/// name that moves from one address to the other reaches the intranet if anything lets it).
async fn web_and_intranet(
    web: impl Fn(&Request) -> Reply + Send + Sync + 'static,
) -> (TestServer, TestServer) {
    let web = Arc::new(web);
    for _ in 0..20 {
        let handler = web.clone();
        let public = TestServer::start(move |req| handler(req)).await;
        let port = public.addr.port();
        if let Ok(intranet) = TestServer::start_on(&format!("127.0.0.2:{port}"), |_| {
            Reply::html("<title>Intranet</title><p>the admin password is hunter2</p>")
        })
        .await
        {
            return (public, intranet);
        }
    }
    panic!("no port free on both 127.0.0.1 and 127.0.0.2");
}

/// Page fetches as shipped (no private addresses) but for the web server's address.
fn guarded_fetch() -> FetchConfig {
    FetchConfig {
        allowed_addresses: vec!["127.0.0.1".parse().unwrap()],
        ..FetchConfig::default()
    }
}

fn guarded_browser(dns: Arc<TestDns>, fetch: FetchConfig) -> BrowserTool {
    let fetcher = Fetcher::with_resolver(fetch, dns).expect("fetcher");
    BrowserTool::new(
        Arc::new(WebBackend::new(no_search(), fetcher)),
        BrowserConfig::default(),
    )
}

fn open_url(url: &str) -> ToolCall {
    call("browser.open", &json!({"id": url}).to_string())
}

const LEGIT: &str = "<title>Lighthouse</title><p>The lighthouse is 42 meters tall.</p>";

#[tokio::test]
async fn redirects_to_private_addresses_are_refused() {
    let (web, intranet) = web_and_intranet(|req| {
        let port = req
            .header("host")
            .and_then(|h| h.rsplit(':').next())
            .unwrap_or("80")
            .to_string();
        match req.path() {
            "/to-literal" => Reply::redirect(&format!("http://127.0.0.2:{port}/admin")),
            "/to-name" => Reply::redirect(&format!("http://intranet.test:{port}/admin")),
            "/to-mapped" => Reply::redirect(&format!("http://[::ffff:127.0.0.2]:{port}/admin")),
            "/to-nat64" => Reply::redirect(&format!("http://[64:ff9b::7f00:2]:{port}/admin")),
            "/to-6to4" => Reply::redirect(&format!("http://[2002:7f00:2::1]:{port}/admin")),
            "/to-localhost" => Reply::redirect(&format!("http://localhost:{port}/admin")),
            "/to-file" => Reply::redirect("file:///etc/passwd"),
            "/legit" => Reply::html(LEGIT),
            _ => Reply::status(404, "no such page"),
        }
    })
    .await;
    let dns = TestDns::new(&[("intranet.test", &[&["127.0.0.2"]])]);
    let mut browser = guarded_browser(dns.clone(), guarded_fetch()).session();
    for (path, refused) in [
        ("/to-literal", "`127.0.0.2`"),
        ("/to-name", "`intranet.test`"),
        ("/to-mapped", "`[::ffff:7f00:2]`"),
        ("/to-nat64", "`[64:ff9b::7f00:2]`"),
        ("/to-6to4", "`[2002:7f00:2::1]`"),
        ("/to-localhost", "`localhost`"),
    ] {
        let out = browser.handle(&open_url(&web.url(path))).await;
        assert!(
            out.content.ends_with(&format!(
                "refusing to open {refused}: it is a local or private network address"
            )),
            "{path}: {}",
            out.content
        );
        // Meanwhile the browser keeps working for a legitimate page.
        let out = browser.handle(&open_url(&web.url("/legit"))).await;
        assert!(out.content.contains("42 meters tall"), "{}", out.content);
    }
    let out = browser.handle(&open_url(&web.url("/to-file"))).await;
    assert!(
        out.content
            .ends_with("unsupported URL scheme `file` (only http and https pages can be opened)"),
        "{}",
        out.content
    );
    assert_eq!(dns.lookups("intranet.test"), 1);
    assert!(intranet.requests().is_empty(), "the intranet was reached");
    assert_eq!(web.requests().len(), 13);
}

#[tokio::test]
async fn names_that_resolve_to_private_addresses_are_refused() {
    let (web, intranet) = web_and_intranet(|_| Reply::html(LEGIT)).await;
    let port = web.addr.port();
    let dns = TestDns::new(&[
        ("intranet.test", &[&["127.0.0.2"]]),
        ("metadata.test", &[&["169.254.169.254", "fd00::1"]]),
        // A private address first, a permitted one second: only the second is tried.
        ("mixed.test", &[&["127.0.0.2", "127.0.0.1"]]),
    ]);
    let web_fetch = backend_with(dns.clone(), guarded_fetch());
    for name in ["intranet.test", "metadata.test"] {
        let err = web_fetch
            .fetch(&format!("http://{name}:{port}/"))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            format!("refusing to open `{name}`: it is a local or private network address")
        );
    }
    let page = web_fetch
        .fetch(&format!("http://mixed.test:{port}/"))
        .await
        .expect("the permitted address is used");
    assert!(page.text.contains("42 meters tall"));
    assert!(intranet.requests().is_empty(), "the intranet was reached");
    assert_eq!(web.requests().len(), 1);
}

fn backend_with(dns: Arc<TestDns>, fetch: FetchConfig) -> WebBackend {
    WebBackend::new(
        no_search(),
        Fetcher::with_resolver(fetch, dns).expect("fetcher"),
    )
}

/// DNS rebinding: a name answers with a permitted address, then with an intranet one. The
/// check is the lookup the connection uses, so the second answer is refused, never connected
/// to; a check made with a lookup of its own would have let the second connection through.
#[tokio::test]
async fn dns_rebinding_cannot_move_a_checked_name() {
    let (web, intranet) = web_and_intranet(|_| Reply::html(LEGIT)).await;
    let port = web.addr.port();
    let dns = TestDns::new(&[("rebind.test", &[&["127.0.0.1"], &["127.0.0.2"]])]);
    let web_fetch = backend_with(dns.clone(), guarded_fetch());
    let url = format!("http://rebind.test:{port}/");
    let page = web_fetch.fetch(&url).await.expect("first answer: the web");
    assert!(page.text.contains("42 meters tall"));
    assert_eq!(dns.lookups("rebind.test"), 1, "one lookup per connection");
    // The web server closes each connection, so the next fetch looks the name up again.
    let err = web_fetch.fetch(&url).await.unwrap_err().to_string();
    assert_eq!(
        err,
        "refusing to open `rebind.test`: it is a local or private network address"
    );
    assert_eq!(dns.lookups("rebind.test"), 2);
    assert!(intranet.requests().is_empty(), "the intranet was reached");
}

/// A proxy is used only when configured, and every target it is asked for is checked first:
/// the proxy here plays the whole web (it answers for `public.test` itself).
#[tokio::test]
async fn a_configured_proxy_is_used_and_its_targets_are_checked() {
    let proxy = TestServer::start(|req| match req.target.as_str() {
        "http://public.test/page" => Reply::html(LEGIT),
        "http://public.test/redirect" => Reply::redirect("http://intranet.test/admin"),
        _ => Reply::html("<title>Intranet</title><p>reached through the proxy</p>"),
    })
    .await;
    let dns = TestDns::new(&[
        ("public.test", &[&["93.184.216.34"]]),
        ("intranet.test", &[&["10.0.0.5"]]),
        ("mixed.test", &[&["93.184.216.34", "10.0.0.5"]]),
    ]);
    let fetch = FetchConfig {
        proxy: Some(format!("http://{}", proxy.addr)),
        ..FetchConfig::default()
    };
    let mut browser = guarded_browser(dns.clone(), fetch).session();
    for (url, refused) in [
        ("http://intranet.test/admin", "`intranet.test`"),
        // The proxy could connect to either address: both must pass.
        ("http://mixed.test/", "`mixed.test`"),
        ("http://10.0.0.5/", "`10.0.0.5`"),
        ("http://public.test/redirect", "`intranet.test`"),
    ] {
        let out = browser.handle(&open_url(url)).await;
        assert!(
            out.content.ends_with(&format!(
                "refusing to open {refused}: it is a local or private network address"
            )),
            "{url}: {}",
            out.content
        );
        let out = browser.handle(&open_url("http://public.test/page")).await;
        assert!(out.content.contains("42 meters tall"), "{}", out.content);
    }
    let asked: Vec<String> = proxy.requests().iter().map(|r| r.target.clone()).collect();
    assert!(
        asked
            .iter()
            .all(|t| t == "http://public.test/page" || t == "http://public.test/redirect"),
        "{asked:?}"
    );
    assert_eq!(asked.len(), 5, "{asked:?}");
}

#[test]
fn a_proxy_that_is_not_a_url_is_a_clear_error() {
    let err = Fetcher::new(FetchConfig {
        proxy: Some("not a proxy".into()),
        ..FetchConfig::default()
    })
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid proxy `not a proxy`: expected http://host:port"
    );
}

// ---------------------------------------------------------------------------------------------
// Hostile pages

/// A page of megabytes without a space is one "word" that wrapping cuts into thousands of
/// lines: it is read, scrolled to its end and searched, once wrapped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_of_one_huge_word_is_read_to_its_end() {
    const LEN: usize = 4 * 1024 * 1024;
    let server = TestServer::start(|req| {
        let (first, filler) = match req.path() {
            "/word.txt" => ("", "a"),
            "/spaces.txt" => ("x", " "),
            _ => return Reply::status(404, ""),
        };
        let mut body = first.to_string();
        body.push_str(&filler.repeat(LEN - 6 - first.len()));
        body.push_str("needle");
        Reply::ok("text/plain", body.into_bytes())
    })
    .await;
    let fetch = FetchConfig {
        max_bytes: 8 * 1024 * 1024,
        ..local_fetch()
    };
    let tool = BrowserTool::new(
        Arc::new(backend(no_search(), fetch)),
        BrowserConfig::default(),
    );
    let head = |text: &str| text.chars().take(300).collect::<String>();
    for path in ["/word.txt", "/spaces.txt"] {
        let mut browser = tool.session();
        // A text page starts with an empty line and its URL.
        let lines = 2 + LEN.div_ceil(80);
        let out = browser.handle(&open_url(&server.url(path))).await;
        assert!(
            out.content.contains(&format!("] of {}**", lines - 1)),
            "{path}: {}",
            head(&out.content)
        );
        let last = browser
            .handle(&call(
                "browser.open",
                &format!(r#"{{"cursor": 0, "loc": {}}}"#, lines - 1),
            ))
            .await;
        assert!(
            last.content.ends_with(&format!(
                "L{}: {}needle",
                lines - 1,
                if path == "/word.txt" { "a" } else { " " }.repeat(LEN % 80 - 6)
            )),
            "{path}: {}",
            head(&last.content)
        );
        let found = browser
            .handle(&call(
                "browser.find",
                r#"{"pattern": "needle", "cursor": 0}"#,
            ))
            .await;
        assert!(
            found.content.contains(&format!("match at L{}", lines - 1)),
            "{path}: {}",
            head(&found.content)
        );
    }
}

/// Escape sequences in a page (OSC 52 clipboard write, screen clear, C1 CSI, backspaces) do not
/// reach the model; the text around them does.
#[tokio::test]
async fn control_characters_in_pages_do_not_reach_the_model() {
    const HOSTILE: &str =
        "Safe\x1b]52;c;cm0gLXJmIH4=\x07 text\x1b[2J and\u{9b}2J more\x08\x08\x7f\r end";
    let server = TestServer::start(|req| match req.path() {
        "/page.txt" => Reply::ok("text/plain; charset=utf-8", HOSTILE.as_bytes().to_vec()),
        "/page.html" => Reply::html(&format!(
            "<title>Title\x1b[2J</title><p>{HOSTILE}</p><p><a href='/x'>link\u{9d}0;x\u{9c}</a></p>"
        )),
        _ => Reply::status(404, ""),
    })
    .await;
    let tool = BrowserTool::new(
        Arc::new(backend(no_search(), local_fetch())),
        BrowserConfig::default(),
    );
    let mut browser = tool.session();
    for path in ["/page.txt", "/page.html"] {
        let out = browser.handle(&open_url(&server.url(path))).await;
        assert!(
            !out.content.contains(|c: char| c.is_control() && c != '\n'),
            "{path}: {:?}",
            out.content
        );
        assert!(
            out.content
                .contains("Safe]52;c;cm0gLXJmIH4= text[2J and2J more"),
            "{path}: {:?}",
            out.content
        );
        let found = browser
            .handle(&call("browser.find", r#"{"pattern": "more"}"#))
            .await;
        assert!(
            !found
                .content
                .contains(|c: char| c.is_control() && c != '\n'),
            "{:?}",
            found.content
        );
    }
}

/// With the reference's quirks, a `query` that is not a string goes to the search service as
/// Python's `str()` of it and the model reads the service's answer, here its error; without
/// them the model is told what was wrong and the service is not asked.
#[tokio::test]
async fn a_number_as_query_goes_to_the_search_service_with_reference_quirks() {
    let server = TestServer::start(|req: &Request| match req.query("q").as_deref() {
        Some("5") => Reply::status(400, r#"{"error": "query too short"}"#),
        Some("True") => Reply::json(&json!({"results": [
            {"url": "https://true.example/", "title": "True", "content": "A result for True."}
        ]})),
        _ => Reply::status(500, "unexpected query"),
    })
    .await;
    let web: Arc<dyn BrowserBackend> = Arc::new(api_backend(&SEARXNG, "", server.url(""), false));
    let reference = BrowserTool::new(
        web.clone(),
        BrowserConfig {
            quirks: ossa_tools::browser::ReferenceQuirks::all(),
            ..BrowserConfig::default()
        },
    );
    let out = reference
        .session()
        .handle(&call("browser.search", r#"{"query": 5}"#))
        .await;
    assert_eq!(
        out.content,
        r#"Error during search for `5`: SearXNG API error 400 Bad Request: {"error": "query too short"}"#
    );
    let out = reference
        .session()
        .handle(&call("browser.search", r#"{"query": true}"#))
        .await;
    assert!(out.content.starts_with("[0] True\n"), "{}", out.content);
    assert!(
        out.content.contains("A result for True."),
        "{}",
        out.content
    );
    assert_eq!(server.requests().len(), 2);

    let ossa = BrowserTool::new(web, BrowserConfig::default());
    let out = ossa
        .session()
        .handle(&call("browser.search", r#"{"query": 5}"#))
        .await;
    assert_eq!(out.content, "`query` should be a string, not `int`");
    assert_eq!(server.requests().len(), 2, "the service was asked");
}
