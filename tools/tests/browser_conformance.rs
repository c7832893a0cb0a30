//! Conformance with OpenAI's reference `SimpleBrowserTool` on recorded sessions.
//!
//! Every recorded case (tests/fixtures/browser, plus the folder named by `OSSA_BROWSER_CASES`)
//! is replayed step by step:
//! - with every reference quirk switched on, each step must give the recorded output, author,
//!   channel and page stack byte for byte (the display layer's conformance);
//! - with ossa's defaults, a step is either identical or a deliberate difference: one of the
//!   named deviations below must, on its own, change that step. Anything else fails.
//!
//! Prints `N passed, M failed, K deliberate differences`.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use ossa_tools::browser::{
    BrowserBackend, BrowserBackendError, BrowserConfig, BrowserSession, BrowserTool, PageContents,
    ReferenceQuirks, SearchResult, process_html, search_results_page, source_page,
};
use ossa_tools::tool::ToolCall;
use serde_json::Value;
use support::call;

/// A reference bug ossa fixes, named as its deviation test is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Deviation {
    /// `each_search_page_keeps_its_own_results`
    SharedSearchUrl,
    /// `find_reports_display_line_numbers`
    FindLineDrift,
    /// `view_source_shows_the_page_source`
    ViewSource,
    /// `search_results_are_text_not_html`
    SearchHtml,
    /// `xhtml_with_an_xml_declaration_is_read`
    XmlDeclaration,
    /// `search_query_must_be_a_string`
    QueryType,
}

const ALL: [Deviation; 6] = [
    Deviation::SharedSearchUrl,
    Deviation::FindLineDrift,
    Deviation::ViewSource,
    Deviation::SearchHtml,
    Deviation::XmlDeclaration,
    Deviation::QueryType,
];

impl Deviation {
    fn test_name(self) -> &'static str {
        match self {
            Deviation::SharedSearchUrl => "each_search_page_keeps_its_own_results",
            Deviation::FindLineDrift => "find_reports_display_line_numbers",
            Deviation::ViewSource => "view_source_shows_the_page_source",
            Deviation::SearchHtml => "search_results_are_text_not_html",
            Deviation::XmlDeclaration => "xhtml_with_an_xml_declaration_is_read",
            Deviation::QueryType => "search_query_must_be_a_string",
        }
    }
}

/// The recorded world of one case, served the way the reference's fixture backend did.
struct FixtureBackend {
    pages: HashMap<String, (String, String)>,
    contents: HashMap<String, PageContents>,
    search: HashMap<String, Vec<SearchResult>>,
    search_pages: HashMap<String, PageContents>,
    fixed: BTreeSet<Deviation>,
}

fn without_fragment(url: &str) -> &str {
    url.split('#').next().unwrap_or(url)
}

impl FixtureBackend {
    fn new(case: &Value, fixed: BTreeSet<Deviation>) -> Self {
        let obj = |key: &str| {
            case.get(key)
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default()
        };
        let pages = obj("pages")
            .into_iter()
            .map(|(url, p)| {
                let html = p["html"].as_str().unwrap_or_default().to_string();
                let title = p
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string();
                (url, (html, title))
            })
            .collect();
        let contents = obj("page_contents")
            .iter()
            .map(|(url, p)| (url.clone(), support::page_from_fixture(url, p)))
            .collect();
        let search = obj("search")
            .into_iter()
            .map(|(q, results)| {
                let results = results
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .map(|r| SearchResult {
                        url: r["url"].as_str().unwrap_or_default().into(),
                        title: r["title"].as_str().unwrap_or_default().into(),
                        summary: r["summary"].as_str().unwrap_or_default().into(),
                    })
                    .collect();
                (q, results)
            })
            .collect();
        let search_pages = obj("search_pages")
            .iter()
            .map(|(q, p)| (q.clone(), support::page_from_fixture("", p)))
            .collect();
        Self {
            pages,
            contents,
            search,
            search_pages,
            fixed,
        }
    }

    fn page_html(&self, url: &str) -> Option<&(String, String)> {
        self.pages
            .get(url)
            .or_else(|| self.pages.get(without_fragment(url)))
    }
}

/// lxml's refusals, which the reference passes on as fetch errors.
fn lxml_error(html: &str) -> Option<&'static str> {
    let trimmed = html.trim();
    if trimmed.is_empty() {
        return Some("Document is empty");
    }
    if trimmed.starts_with("<?xml")
        && trimmed
            .split("?>")
            .next()
            .is_some_and(|decl| decl.contains("encoding"))
    {
        return Some(
            "Unicode strings with encoding declaration are not supported. Please use bytes input or XML fragments without declaration.",
        );
    }
    None
}

#[async_trait]
impl BrowserBackend for FixtureBackend {
    async fn search(&self, query: &str, topn: usize) -> Result<PageContents, BrowserBackendError> {
        let Some(results) = self.search.get(query) else {
            return Err(BrowserBackendError::new(
                "FixtureBackend error 503: search unavailable",
            ));
        };
        if self.fixed.contains(&Deviation::SearchHtml) {
            let n = topn.min(results.len());
            return Ok(search_results_page(query, &results[..n]));
        }
        self.search_pages
            .get(query)
            .cloned()
            .ok_or_else(|| BrowserBackendError::new("FixtureBackend error 503: search unavailable"))
    }

    async fn fetch(&self, url: &str) -> Result<PageContents, BrowserBackendError> {
        if let Some(page) = self.contents.get(url) {
            return Ok(page.clone());
        }
        let Some((html, title)) = self.page_html(url) else {
            return Err(BrowserBackendError::new(format!(
                "No contents returned for {url}"
            )));
        };
        if let Some(error) = lxml_error(html)
            && (!self.fixed.contains(&Deviation::XmlDeclaration) || html.trim().is_empty())
        {
            return Err(BrowserBackendError::new(error));
        }
        process_html(html, url, Some(title)).map_err(|e| BrowserBackendError::new(e.to_string()))
    }

    async fn fetch_source(&self, url: &str) -> Result<PageContents, BrowserBackendError> {
        let Some((html, title)) = self.page_html(url) else {
            return Err(BrowserBackendError::new(format!(
                "No contents returned for {url}"
            )));
        };
        let title = if title.is_empty() {
            self.contents
                .get(url)
                .map(|p| p.title.clone())
                .unwrap_or_default()
        } else {
            title.clone()
        };
        Ok(source_page(url, &title, html))
    }
}

/// What one step produced.
#[derive(Debug, Clone, PartialEq)]
struct StepOutcome {
    output: String,
    author: String,
    channel: Option<String>,
    page_stack: Vec<String>,
}

async fn replay(case: &Value, fixed: &BTreeSet<Deviation>) -> Vec<StepOutcome> {
    let quirks = ReferenceQuirks {
        shared_search_url: !fixed.contains(&Deviation::SharedSearchUrl),
        find_line_drift: !fixed.contains(&Deviation::FindLineDrift),
        view_source_shows_page: !fixed.contains(&Deviation::ViewSource),
        non_string_query: !fixed.contains(&Deviation::QueryType),
    };
    let backend = Arc::new(FixtureBackend::new(case, fixed.clone()));
    let config = BrowserConfig {
        quirks,
        page_budget: 10_000,
        ..BrowserConfig::default()
    };
    let tool = BrowserTool::new(backend, config);
    let mut session = tool.session();
    let mut outcomes = Vec::new();
    for step in case["steps"].as_array().cloned().unwrap_or_default() {
        let call = ToolCall {
            recipient: step["recipient"].as_str().unwrap_or_default().to_string(),
            channel: Some("analysis".to_string()),
            content_type: Some("<|constrain|>json".to_string()),
            content: step["arguments"].as_str().unwrap_or_default().to_string(),
        };
        let out = session.handle(&call).await;
        outcomes.push(StepOutcome {
            output: out.content,
            author: out.author,
            channel: out.channel,
            page_stack: session.page_urls(),
        });
    }
    outcomes
}

fn matches_fixture(step: &Value, got: &StepOutcome) -> Result<(), String> {
    let expected = step["output"].as_str().unwrap_or_default();
    if got.output != expected {
        return Err(first_difference(expected, &got.output));
    }
    let author = step["output_author"].as_str().unwrap_or_default();
    if got.author != author {
        return Err(format!("author: expected {author:?}, got {:?}", got.author));
    }
    let channel = step["output_channel"].as_str();
    if got.channel.as_deref() != channel {
        return Err(format!(
            "channel: expected {channel:?}, got {:?}",
            got.channel
        ));
    }
    if step["output_role"].as_str() != Some("tool")
        || step["output_recipient"].as_str() != Some("assistant")
    {
        return Err("the recorded message is not a tool message to the assistant".into());
    }
    let stack: Vec<String> = step["page_stack"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .map(|v| v.as_str().unwrap_or_default().to_string())
        .collect();
    if got.page_stack != stack {
        return Err(format!(
            "page stack: expected {stack:?}, got {:?}",
            got.page_stack
        ));
    }
    Ok(())
}

fn first_difference(expected: &str, got: &str) -> String {
    let (e, g): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), got.lines().collect());
    for i in 0..e.len().max(g.len()) {
        if e.get(i) != g.get(i) {
            return format!("line {i}: expected {:?}, got {:?}", e.get(i), g.get(i));
        }
    }
    format!(
        "outputs differ (expected {} bytes, got {})",
        expected.len(),
        got.len()
    )
}

/// Scripted results that the reference's unescaped search HTML would mangle.
fn has_html_specials(case: &Value) -> bool {
    case["search"].as_object().is_some_and(|s| {
        s.values()
            .flat_map(|v| v.as_array().cloned().unwrap_or_default())
            .any(|r| {
                let text = format!(
                    "{}{}",
                    r["title"].as_str().unwrap_or(""),
                    r["summary"].as_str().unwrap_or("")
                );
                let url = r["url"].as_str().unwrap_or("");
                text.contains(['<', '>', '&'])
                    || url.contains(['\'', '<', '>', '&'])
                    || !url.starts_with("http")
            })
    })
}

#[derive(Default)]
struct Tally {
    passed: usize,
    failed: Vec<String>,
    deliberate: BTreeMap<String, Vec<String>>,
}

async fn check_case(path: &Path, tally: &mut Tally) {
    let case = support::load_json(path);
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("?")
        .to_string();
    let steps = case["steps"].as_array().cloned().unwrap_or_default();
    let reference = replay(&case, &BTreeSet::new()).await;
    let ossa = replay(&case, &ALL.into_iter().collect()).await;
    let mut single = BTreeMap::new();
    for d in ALL {
        single.insert(d, replay(&case, &[d].into_iter().collect()).await);
    }
    for (i, step) in steps.iter().enumerate() {
        let label = format!(
            "{name} step {i} ({} {})",
            step["recipient"].as_str().unwrap_or(""),
            step["arguments"]
        );
        if step["output"].is_null() {
            // The reference raised (quirk 11); ossa answers with an error message instead.
            let ours = &ossa[i];
            if ours.output.trim().is_empty() || ours.output.starts_with('[') {
                tally.failed.push(format!(
                    "{label}: the reference raised; expected an error message, got {:?}",
                    ours.output
                ));
            } else {
                tally
                    .deliberate
                    .entry("bad_arguments_get_an_error_message".into())
                    .or_default()
                    .push(label);
            }
            continue;
        }
        if let Err(why) = matches_fixture(step, &reference[i]) {
            tally
                .failed
                .push(format!("{label} [reference quirks on]: {why}"));
            continue;
        }
        if matches_fixture(step, &ossa[i]).is_ok() {
            tally.passed += 1;
            continue;
        }
        let explained: Vec<Deviation> = ALL
            .into_iter()
            .filter(|d| matches_fixture(step, &single[d][i]).is_err())
            .filter(|d| *d != Deviation::SearchHtml || has_html_specials(&case))
            .collect();
        if explained.is_empty() {
            let why = matches_fixture(step, &ossa[i]).err().unwrap_or_default();
            tally.failed.push(format!("{label} [ossa]: {why}"));
        } else {
            let key = explained
                .iter()
                .map(|d| d.test_name())
                .collect::<Vec<_>>()
                .join(" + ");
            tally.deliberate.entry(key).or_default().push(label);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recorded_sessions_match_the_reference() {
    let files = support::all_case_files();
    assert!(!files.is_empty(), "no browser cases found");
    let mut tally = Tally::default();
    for path in &files {
        check_case(path, &mut tally).await;
    }
    let deliberate: usize = tally.deliberate.values().map(Vec::len).sum();
    for (deviation, steps) in &tally.deliberate {
        eprintln!(
            "deliberate difference `{deviation}` ({} steps):",
            steps.len()
        );
        for s in steps {
            eprintln!("    {s}");
        }
    }
    for f in &tally.failed {
        eprintln!("FAILED {f}");
    }
    eprintln!("browser conformance over {} case(s):", files.len());
    eprintln!(
        "{} passed, {} failed, {deliberate} deliberate differences",
        tally.passed,
        tally.failed.len()
    );
    assert!(
        tally.failed.is_empty(),
        "{} step(s) failed",
        tally.failed.len()
    );
}

/// The search page ossa renders from results equals the reference's for every scripted search
/// whose results contain no markup the reference would have parsed.
#[test]
fn search_pages_render_like_the_reference() {
    let mut compared = 0;
    for path in support::all_case_files() {
        let case = support::load_json(&path);
        if has_html_specials(&case) {
            continue;
        }
        for (query, page) in case["search_pages"]
            .as_object()
            .cloned()
            .unwrap_or_default()
        {
            let results: Vec<SearchResult> = case["search"][&query]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .take(page["topn"].as_u64().unwrap_or(20) as usize)
                .map(|r| SearchResult {
                    url: r["url"].as_str().unwrap_or_default().into(),
                    title: r["title"].as_str().unwrap_or_default().into(),
                    summary: r["summary"].as_str().unwrap_or_default().into(),
                })
                .collect();
            let ours = search_results_page(&query, &results);
            let reference = support::page_from_fixture("", &page);
            assert_eq!(
                ours,
                reference,
                "search page for {query:?} in {}",
                path.display()
            );
            compared += 1;
        }
    }
    assert!(compared > 0);
    eprintln!("{compared} search pages identical to the reference");
}

/// ossa's HTML conversion gives every page of every case the same links with the same ids as
/// the reference. The one deliberate difference: the arXiv rewrite touches only the host.
#[test]
fn html_conversion_keeps_the_reference_links() {
    let mut pages = 0;
    let mut links = 0;
    for path in support::all_case_files() {
        let case = support::load_json(&path);
        let html_of = case["pages"].as_object().cloned().unwrap_or_default();
        for (url, recorded) in case["page_contents"]
            .as_object()
            .cloned()
            .unwrap_or_default()
        {
            let Some(page) = html_of
                .get(&url)
                .or_else(|| html_of.get(without_fragment(&url)))
            else {
                continue;
            };
            let title = page.get("title").and_then(Value::as_str);
            let ours = process_html(page["html"].as_str().unwrap_or_default(), &url, title)
                .unwrap_or_else(|e| panic!("{url}: {e}"));
            let reference = support::page_from_fixture(&url, &recorded);
            assert_eq!(
                ours.urls.len(),
                reference.urls.len(),
                "{url}: number of links"
            );
            for (id, (a, b)) in ours.urls.iter().zip(&reference.urls).enumerate() {
                let same = a == b
                    || (b.contains("ar5iv.org") && a == &b.replace("ar5iv.org", "arxiv.org"));
                assert!(same, "{url}: link {id} is {a:?}, the reference has {b:?}");
            }
            pages += 1;
            links += ours.urls.len();
        }
    }
    assert!(pages > 0);
    eprintln!("{pages} pages, {links} links: same ids and targets as the reference");
}

/// The tool declares itself as the reference tool does.
#[test]
fn namespace_matches_the_reference_tool() {
    use ossa_tools::tool::Tool;
    let meta = support::load_json(&support::fixture_dir().join("tool_meta.json"));
    let tool = BrowserTool::new(
        Arc::new(FixtureBackend::new(&serde_json::json!({}), BTreeSet::new())),
        BrowserConfig::default(),
    );
    let ns = tool.namespace();
    assert_eq!(ns.description.as_deref(), meta["instruction"].as_str());
    let tools = serde_json::to_value(&ns.tools).unwrap();
    assert_eq!(tools, meta["harmony_browser_namespace"]["tools"]);
    assert_eq!(meta["view_tokens"], 1024);
    assert_eq!(meta["max_search_results"], 20);
    assert_eq!(BrowserConfig::default().view_tokens, 1024);
    assert_eq!(BrowserConfig::default().max_search_results, 20);
}

// ---------------------------------------------------------------------------------------------
// The deliberate differences, one test each, named as the conformance report names them.

/// A backend with a few in-memory pages and scripted searches.
struct MemoryBackend {
    pages: HashMap<String, String>,
    search: HashMap<String, Vec<SearchResult>>,
}

impl MemoryBackend {
    fn new(pages: &[(&str, &str)], search: &[(&str, Vec<SearchResult>)]) -> Arc<Self> {
        Arc::new(Self {
            pages: pages
                .iter()
                .map(|(u, h)| (u.to_string(), h.to_string()))
                .collect(),
            search: search
                .iter()
                .map(|(q, r)| (q.to_string(), r.clone()))
                .collect(),
        })
    }
}

#[async_trait]
impl BrowserBackend for MemoryBackend {
    async fn search(&self, query: &str, _topn: usize) -> Result<PageContents, BrowserBackendError> {
        let results = self
            .search
            .get(query)
            .ok_or_else(|| BrowserBackendError::new("no such search"))?;
        Ok(search_results_page(query, results))
    }
    async fn fetch(&self, url: &str) -> Result<PageContents, BrowserBackendError> {
        let html = self
            .pages
            .get(url)
            .ok_or_else(|| BrowserBackendError::new(format!("No contents returned for {url}")))?;
        process_html(html, url, None).map_err(|e| BrowserBackendError::new(e.to_string()))
    }
    async fn fetch_source(&self, url: &str) -> Result<PageContents, BrowserBackendError> {
        let html = self
            .pages
            .get(url)
            .ok_or_else(|| BrowserBackendError::new(format!("No contents returned for {url}")))?;
        Ok(source_page(url, "source", html))
    }
}

fn result(url: &str, title: &str, summary: &str) -> SearchResult {
    SearchResult {
        url: url.into(),
        title: title.into(),
        summary: summary.into(),
    }
}

fn session_with(backend: Arc<dyn BrowserBackend>, quirks: ReferenceQuirks) -> BrowserSession {
    BrowserTool::new(
        backend,
        BrowserConfig {
            quirks,
            ..BrowserConfig::default()
        },
    )
    .session()
}

/// What the model reads back for the browser call `recipient` with `arguments`.
async fn ask(session: &mut BrowserSession, recipient: &str, arguments: &str) -> String {
    session.handle(&call(recipient, arguments)).await.content
}

#[tokio::test]
async fn each_search_page_keeps_its_own_results() {
    let backend = MemoryBackend::new(
        &[
            (
                "https://alpha.example/1",
                "<title>Alpha one</title><p>alpha page</p>",
            ),
            (
                "https://beta.example/1",
                "<title>Beta one</title><p>beta page</p>",
            ),
        ],
        &[
            (
                "alpha",
                vec![result(
                    "https://alpha.example/1",
                    "Alpha one",
                    "first alpha",
                )],
            ),
            (
                "beta",
                vec![result("https://beta.example/1", "Beta one", "first beta")],
            ),
        ],
    );
    for (quirks, expect_alpha) in [
        (ReferenceQuirks::default(), true),
        (ReferenceQuirks::all(), false),
    ] {
        let mut s = session_with(backend.clone(), quirks);
        ask(&mut s, "browser.search", r#"{"query": "alpha"}"#).await;
        ask(&mut s, "browser.search", r#"{"query": "beta"}"#).await;
        let rescroll = ask(&mut s, "browser.open", r#"{"cursor": 0}"#).await;
        let found = ask(
            &mut s,
            "browser.find",
            r#"{"pattern": "first", "cursor": 0}"#,
        )
        .await;
        let opened = ask(&mut s, "browser.open", r#"{"cursor": 0, "id": 0}"#).await;
        assert_eq!(rescroll.contains("first alpha"), expect_alpha, "{rescroll}");
        assert_eq!(found.contains("first alpha"), expect_alpha, "{found}");
        assert_eq!(opened.contains("alpha page"), expect_alpha, "{opened}");
        assert_eq!(opened.contains("beta page"), !expect_alpha, "{opened}");
        // A find result on the older search page opens that page, not the newest search.
        let back = ask(&mut s, "browser.open", r#"{"cursor": 3, "id": 0}"#).await;
        assert_eq!(back.contains("first alpha"), expect_alpha, "{back}");
    }
}

/// Every `match at L<n>` of a find result names a display line that contains the pattern.
#[tokio::test]
async fn find_reports_display_line_numbers() {
    let case = support::load_json(&support::fixture_dir().join("00_search_open_scroll_find.json"));
    let backend = Arc::new(FixtureBackend::new(&case, BTreeSet::new()));
    for (quirks, expected) in [
        (ReferenceQuirks::default(), "L11"),
        (ReferenceQuirks::all(), "L10"),
    ] {
        let mut s = session_with(backend.clone(), quirks);
        let page = ask(&mut s, "browser.search", r#"{"query": "rust ownership"}"#).await;
        let found = ask(&mut s, "browser.find", r#"{"pattern": "elsewhere"}"#).await;
        assert!(
            found.contains(&format!("# 【0†match at {expected}】")),
            "{found}"
        );
        let line = page
            .lines()
            .find(|l| l.starts_with("L11: "))
            .unwrap_or_default();
        assert!(line.contains("elsewhere"), "display line 11 is {line:?}");
        let opened = ask(&mut s, "browser.open", r#"{"id": 0}"#).await;
        let first = if quirks == ReferenceQuirks::default() {
            "L7: "
        } else {
            "L6: "
        };
        assert!(
            opened.lines().nth(3).is_some_and(|l| l.starts_with(first)),
            "{opened}"
        );
    }
    // On a long page: every reported line holds a match.
    let mut s = session_with(backend, ReferenceQuirks::default());
    ask(
        &mut s,
        "browser.open",
        r#"{"id": "https://doc.rust-lang.org/book/ch04-01-what-is-ownership.html"}"#,
    )
    .await;
    let all = ask(
        &mut s,
        "browser.open",
        r#"{"cursor": 0, "loc": 0, "num_lines": 10000}"#,
    )
    .await;
    let found = ask(
        &mut s,
        "browser.find",
        r#"{"pattern": "heap", "cursor": 0}"#,
    )
    .await;
    let mut checked = 0;
    for n in found
        .split("match at L")
        .skip(1)
        .filter_map(|s| s.split('】').next()?.parse::<usize>().ok())
    {
        let line = all
            .lines()
            .find(|l| l.starts_with(&format!("L{n}: ")))
            .unwrap_or_default();
        assert!(line.to_lowercase().contains("heap"), "L{n} is {line:?}");
        checked += 1;
    }
    assert!(checked >= 10, "{found}");
}

#[tokio::test]
async fn view_source_shows_the_page_source() {
    let html = "<html><head><title>Src</title></head><body><p class=\"x\">Hello <b>world</b></p></body></html>";
    let backend = MemoryBackend::new(&[("https://src.example/", html)], &[]);
    let mut s = session_with(backend.clone(), ReferenceQuirks::default());
    let view_source = r#"{"id": "https://src.example/", "view_source": true}"#;
    let out = ask(&mut s, "browser.open", view_source).await;
    assert!(
        out.starts_with("[0] source (view-source:https://src.example/)"),
        "{out}"
    );
    assert!(out.contains("L2: <html><head><title>Src</title></head><body><p class=\"x\">Hello \nL3: <b>world</b></p>"), "{out}");
    assert_eq!(s.citation_urls(), vec!["https://src.example/".to_string()]);
    let mut reference = session_with(backend, ReferenceQuirks::all());
    let out = ask(&mut reference, "browser.open", view_source).await;
    assert!(
        out.starts_with("[0] Src (https://src.example/)") && out.contains("Hello world"),
        "{out}"
    );
}

#[test]
fn search_results_are_text_not_html() {
    let page = search_results_page(
        "generics",
        &[
            result(
                "https://doc.example/it's",
                "Vec<T> & friends",
                "uses <b>bold</b> &amp; more",
            ),
            result("https://doc.example/b", "Plain", "summary"),
        ],
    );
    assert_eq!(
        page.urls,
        vec![
            "https://doc.example/it's".to_string(),
            "https://doc.example/b".to_string()
        ]
    );
    assert!(
        page.text
            .contains("  * 【0†Vec<T> & friends†doc.example】 uses <b>bold</b> &amp; more"),
        "{}",
        page.text
    );
    assert_eq!(page.url, "");
    assert_eq!(page.title, "generics");
}

#[tokio::test]
async fn bad_arguments_get_an_error_message() {
    let backend = MemoryBackend::new(&[("https://a.example/", "<p>a</p>")], &[]);
    let mut s = session_with(backend, ReferenceQuirks::default());
    ask(&mut s, "browser.open", r#"{"id": "https://a.example/"}"#).await;
    let cases = [
        (
            "browser.search",
            "",
            "browser.search",
            "Invalid arguments for `search`: missing required argument `query`.",
        ),
        (
            "browser.find",
            "{}",
            "browser.find",
            "Invalid arguments for `find`: missing required argument `pattern`.",
        ),
        (
            "browser.open",
            r#"{"url": "https://a.example/"}"#,
            "browser.open",
            "Invalid arguments for `open`: unknown argument `url`. Valid arguments: id, cursor, loc, num_lines, view_source, source.",
        ),
        (
            "browser.open",
            r#"{"id": null}"#,
            "browser.open",
            "`id` should be a link id (a number) or a URL (a string), not `NoneType`",
        ),
        (
            "browser.open",
            r#"{"loc": "5"}"#,
            "browser.open",
            "`loc` should be an integer, not `str`",
        ),
        (
            "browser.open.extra",
            "{}",
            "browser.open.extra",
            r#"{"error": "Unknown function: open.extra"}"#,
        ),
    ];
    for (recipient, args, author, expected) in cases {
        let out = s.handle(&call(recipient, args)).await;
        assert_eq!(out.content, expected, "{recipient} {args}");
        assert_eq!(out.author, author);
        assert_eq!(
            s.page_urls(),
            vec!["https://a.example/".to_string()],
            "state changed by {recipient} {args}"
        );
    }
}

/// The reference passes any `query` on to the search service (`str()` of it in Python's
/// spelling) and shows the model the service's answer; ossa says what `query` should be.
#[tokio::test]
async fn search_query_must_be_a_string() {
    let backend = MemoryBackend::new(
        &[],
        &[(
            "5",
            vec![result("https://five.example/", "Five", "The number five.")],
        )],
    );
    let mut reference = session_with(backend.clone(), ReferenceQuirks::all());
    let out = ask(&mut reference, "browser.search", r#"{"query": 5}"#).await;
    assert!(out.starts_with("[0] 5\n"), "{out}");
    assert!(out.contains("The number five."), "{out}");
    let mut ossa = session_with(backend, ReferenceQuirks::default());
    for (query, shown, type_name) in [
        ("5.0", "5.0", "float"),
        ("true", "True", "bool"),
        ("null", "None", "NoneType"),
        (r#"["a", 1]"#, "['a', 1]", "list"),
        (r#"{"q": "x"}"#, "{'q': 'x'}", "dict"),
    ] {
        let args = format!(r#"{{"query": {query}}}"#);
        let out = reference.handle(&call("browser.search", &args)).await;
        assert_eq!(
            out.content,
            format!("Error during search for `{shown}`: no such search"),
            "{args}"
        );
        let out = ossa.handle(&call("browser.search", &args)).await;
        assert_eq!(
            out.content,
            format!("`query` should be a string, not `{type_name}`"),
            "{args}"
        );
    }
    assert!(ossa.page_urls().is_empty());
}

#[test]
fn xhtml_with_an_xml_declaration_is_read() {
    let xhtml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<html xmlns=\"http://www.w3.org/1999/xhtml\"><head><title>X page</title></head>\
                 <body><p>Hello <a href=\"/a\">link</a></p></body></html>";
    let page = process_html(xhtml, "https://x.example/p.xhtml", None).expect("xhtml is read");
    assert_eq!(page.title, "X page");
    assert!(page.text.ends_with("Hello 【0†link】"), "{}", page.text);
    assert_eq!(page.urls, vec!["https://x.example/a".to_string()]);
}

#[tokio::test]
async fn page_budget_limits_loads_per_conversation() {
    let backend = MemoryBackend::new(
        &[
            ("https://a.example/", "<p>a</p>"),
            ("https://b.example/", "<p>b</p>"),
        ],
        &[],
    );
    let tool = BrowserTool::new(
        backend,
        BrowserConfig {
            page_budget: 2,
            ..BrowserConfig::default()
        },
    );
    let mut s = tool.session();
    assert!(
        ask(&mut s, "browser.open", r#"{"id": "https://a.example/"}"#)
            .await
            .starts_with("[0]")
    );
    assert!(
        ask(&mut s, "browser.open", r#"{"id": "https://b.example/"}"#)
            .await
            .starts_with("[1]")
    );
    let refused = ask(&mut s, "browser.open", r#"{"id": "https://a.example/"}"#).await;
    assert!(refused.starts_with("Page budget exhausted"), "{refused}");
    // Pages already open stay usable, and a new conversation has its own budget.
    assert!(
        ask(&mut s, "browser.open", r#"{"cursor": 0, "loc": 1}"#)
            .await
            .starts_with("[2]")
    );
    let mut other = tool.session();
    assert!(
        ask(
            &mut other,
            "browser.open",
            r#"{"id": "https://a.example/"}"#
        )
        .await
        .starts_with("[0]")
    );
}

/// CPython's `textwrap.wrap(width=80, replace_whitespace=False, drop_whitespace=False)` on
/// varied lines (tests/support/textwrap_cases.json, see gen_python_oracles.py).
#[test]
fn line_wrapping_matches_cpython_textwrap() {
    let cases = support::load_json(
        &ossa_test_support::manifest_dir().join("tests/support/textwrap_cases.json"),
    );
    let cases = cases.as_array().cloned().unwrap_or_default();
    assert!(cases.len() > 500);
    for case in cases {
        let line = case["line"].as_str().unwrap_or_default();
        let expected: Vec<String> =
            serde_json::from_value(case["wrapped"].clone()).unwrap_or_default();
        assert_eq!(
            ossa_tools::browser::wrap_lines(line, 80),
            expected,
            "{line:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// How ossa's HTML conversion reads (requirements taken from the pages' markup)

fn fixture_page(case: &str, url: &str) -> PageContents {
    let case = support::load_json(&support::fixture_dir().join(case));
    let page = &case["pages"][url];
    process_html(
        page["html"].as_str().unwrap_or_default(),
        url,
        page.get("title").and_then(Value::as_str),
    )
    .unwrap_or_else(|e| panic!("{url}: {e}"))
}

/// Every one of `fragments` stands in the page `text`.
fn assert_reads(text: &str, fragments: &[&str]) {
    for fragment in fragments {
        assert!(
            text.contains(fragment),
            "{fragment:?} missing from:\n{text}"
        );
    }
}

#[test]
fn html_reads_the_main_content_without_chrome() {
    let url = "https://doc.rust-lang.org/book/ch04-01-what-is-ownership.html";
    let page = fixture_page("00_search_open_scroll_find.json", url);
    // mdBook's keyboard-help popup, theme menu and menu bar lie outside <main>.
    for chrome in ["Keyboard shortcuts", "Press `S`", "Ayu", "Coal"] {
        assert!(!page.text.contains(chrome), "{chrome:?} is chrome");
    }
    assert!(page.text.starts_with(&format!(
        "\nURL: {url}\n## What Is Ownership?\n\nOwnership is a set of rules"
    )));
    assert_reads(
        &page.text,
        &[
            // Lists and code blocks, inner indentation kept.
            "\n\n  * Each value in Rust has an owner.\n  * There can only be one owner at a time.\n",
            "\n    fn main() {\n        {                      // s is not valid here, since it's not yet declared\n",
            // Inline code in backticks.
            "the `String` type",
        ],
    );
    assert!(
        !page.text.contains("toc.js") && !page.text.contains("localStorage"),
        "scripts dropped"
    );

    let page = fixture_page(
        "02_open_url_scroll_link.json",
        "https://docs.python.org/3/library/itertools.html",
    );
    // Sphinx: navigation bars and sidebars (role="navigation") and the `¶` header links go.
    for chrome in ["Previous topic", "Navigation", "¶", "Report a Bug"] {
        assert!(!page.text.contains(chrome), "{chrome:?} is chrome");
    }
    assert!(
        page.text.contains(
            "\n| Iterator | Arguments | Results | Example |\n| --- | --- | --- | --- |\n"
        ),
        "tables as pipe rows"
    );
    assert!(!page.text.contains("4\\."), "no markdown escaping");
}

#[test]
fn html_reads_media_math_tables_and_blocks() {
    let page = fixture_page(
        "09_media_math_sup_sub.json",
        "https://example.org/media.html",
    );
    let text = &page.text;
    assert_reads(
        text,
        &[
            // The text after inline MathML stays (the reference drops it), the formula reads
            // linearly.
            "Inline MathML x = y^{2} disappears. Einstein wrote E = mc^{2} and water is H_{2}O.",
            "x^{n+1}, a_{i-1}, a_{i+1}, 10^{-3}",
            "Footnote[1]",
            "\n| Name | Value |\n| --- | --- |\n| alpha | 1 |\n| beta | 2 |\n| 【1†gamma】 | 3 |\n",
            "\n    col1\tcol2\tcol3\n    a\tb\tc\n        four-space indent\n    \t\ttwo tabs\n",
            "\n> A quoted passage.\n",
            "\n  1. first\n  2. second\n     1. nested\n",
            "[Image 0: A diagram of the stack]",
            "[Image 1: Heap layout]",
            "`inline_code()`, `Ctrl`+`C`.",
        ],
    );
    for hidden in ["script text", "color: red", "noscript text"] {
        assert!(!text.contains(hidden), "{hidden:?} should not be read");
    }
}

#[test]
fn html_link_text_reads_naturally() {
    let page = fixture_page(
        "07_links_page_markup.json",
        "https://example.org/links.html",
    );
    assert_reads(
        &page.text,
        &[
            // Text pieces are joined as rendered (the reference puts spaces between them:
            // `Vec <T>`).
            "【19†Vec<T> nested】",
            "【21†bolditalic】",
            "【18†lots of whitespace】,",
            // A link without text is named by where it goes (the reference shows `【20† 】`).
            "【20†e】",
            // Other schemes show their host (the reference shows `ftp:`).
            "【12†ftp link†ftp.example.org】",
        ],
    );
    // The arXiv rewrite changes the host only, not a query that mentions arxiv.org.
    assert_eq!(page.urls[10], "https://ar5iv.org/abs/1706.03762");
    assert_eq!(page.urls[11], "https://example.com/search?q=arxiv.org");
    // Page text cannot fake link markup.
    let page = fixture_page(
        "08_brackets_and_specials.json",
        "https://example.org/brackets.html",
    );
    assert!(
        page.text.contains("〖12†Fake link†evil.example〗") && !page.text.contains("【12"),
        "{}",
        page.text
    );
}

#[test]
fn titles_are_one_line() {
    let page = process_html(
        "<title>\n  Split\n  title\n</title><p>x</p>",
        "https://t.example/",
        None,
    )
    .unwrap();
    assert_eq!(page.title, "Split title");
    let page = process_html("<title>  </title><p>x</p>", "https://t.example/a", None).unwrap();
    assert_eq!(page.title, "t.example");
}
