//! One conversation's browser: the page stack, the cursors, and the three commands.
//!
//! This follows the reference `SimpleBrowserTool` step for step, including the Python
//! semantics of the arguments the model sends (a cursor of `1.0` equals cursor 1, `true` is
//! index 1, a float link id is looked up as `"2.0"`), except where [`ReferenceQuirks`] names a
//! reference bug that ossa fixes.
//!
//! A page's display lines are computed once, when it arrives; wrapping, `find` and sizing a
//! view run on tokio's blocking threads, so a huge page costs its conversation time but never
//! stalls the async threads everyone else's requests run on. Control characters are stripped
//! from every page and from every answer (see [`crate::sanitize`]).

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use serde_json::{Map, Value};

use super::backend::BrowserBackend;
use super::display::{InvalidLocation, find_in_page, page_lines, render_view};
use super::page::PageContents;
use super::pyfmt::{maybe_truncate, py_repr, py_str, py_type_name};
use super::{BrowserConfig, ReferenceQuirks};
use crate::sanitize::strip_controls_in_place;
use crate::tool::{ToolCall, ToolOutput, ToolSession};

const VIEW_SOURCE_PREFIX: &str = "view-source:";

/// A page on the stack, with its display lines. Find result pages remember the page they
/// searched.
#[derive(Debug)]
struct Page {
    contents: PageContents,
    lines: Vec<String>,
    origin: Option<Arc<Page>>,
}

impl Page {
    /// Strips the page's control characters and wraps it (CPU work: call it off the async
    /// threads, through [`off_runtime`]).
    fn new(mut contents: PageContents, origin: Option<Arc<Page>>) -> Page {
        strip_controls_in_place(&mut contents.title);
        strip_controls_in_place(&mut contents.text);
        let lines = page_lines(&contents);
        Page {
            contents,
            lines,
            origin,
        }
    }
}

/// Runs page work (wrapping, `find`, sizing a view) on tokio's blocking threads.
async fn off_runtime<T: Send + 'static>(
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, String> {
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!("browser page work failed: {e}");
        format!("Internal browser error: {e}")
    })
}

/// A number as Python sees a JSON value: bools are the integers 0 and 1.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Num {
    Int(i64),
    Float(f64),
}

impl Num {
    fn of(value: &Value) -> Option<Num> {
        match value {
            Value::Bool(b) => Some(Num::Int(i64::from(*b))),
            Value::Number(n) => match n.as_i64() {
                Some(i) => Some(Num::Int(i)),
                None => n.as_f64().map(Num::Float),
            },
            _ => None,
        }
    }

    fn as_f64(self) -> f64 {
        match self {
            Num::Int(i) => i as f64,
            Num::Float(f) => f,
        }
    }

    fn equals(self, other: i64) -> bool {
        match self {
            Num::Int(i) => i == other,
            Num::Float(f) => f == other as f64,
        }
    }
}

/// Python truthiness of a JSON value.
fn truthy(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) | Some(Value::Bool(false)) => false,
        Some(Value::Number(n)) => n.as_f64().is_some_and(|f| f != 0.0),
        Some(Value::String(s)) => !s.is_empty(),
        Some(Value::Array(a)) => !a.is_empty(),
        Some(Value::Object(o)) => !o.is_empty(),
        Some(Value::Bool(true)) => true,
    }
}

/// A browser for one conversation. Created by [`BrowserTool::session`](super::BrowserTool::session).
pub struct BrowserSession {
    backend: Arc<dyn BrowserBackend>,
    config: Arc<BrowserConfig>,
    stack: Vec<Arc<Page>>,
    /// Pages by URL: with the reference quirk every page shown (its `pages` dict); otherwise
    /// the fetched pages, for following links without fetching again.
    cache: HashMap<String, Arc<Page>>,
    /// Searches and fetches made so far, against [`BrowserConfig::page_budget`].
    loads: usize,
}

impl std::fmt::Debug for BrowserSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserSession")
            .field("page_stack", &self.page_urls())
            .field("loads", &self.loads)
            .finish_non_exhaustive()
    }
}

/// `json.dumps(s)` for a string: ASCII only, other characters as `\uXXXX` escapes.
fn json_dumps_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || !c.is_ascii() => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The reference's dispatch error, `json.dumps({"error": message})`, authored by the recipient.
fn dispatch_error(call: &ToolCall, message: &str) -> ToolOutput {
    let content = format!("{{\"error\": {}}}", json_dumps_str(message));
    ToolOutput::text(call, call.recipient.clone(), content)
}

/// The arguments of a call: empty text is `{}`; anything but a JSON object is invalid.
fn parse_arguments(content: &str) -> Option<Map<String, Value>> {
    if content.is_empty() {
        return Some(Map::new());
    }
    match serde_json::from_str::<Value>(content) {
        Ok(Value::Object(map)) => Some(map),
        _ => None,
    }
}

/// Checks argument names like Python's keyword binding (which raises instead of answering).
fn check_arguments(
    function: &str,
    args: &Map<String, Value>,
    allowed: &[&str],
    required: &[&str],
) -> Result<(), String> {
    if let Some(unknown) = args.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!(
            "Invalid arguments for `{function}`: unknown argument `{unknown}`. Valid arguments: {}.",
            allowed
                .iter()
                .filter(|a| **a != "top_n")
                .copied()
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    if let Some(missing) = required.iter().find(|r| !args.contains_key(**r)) {
        return Err(format!(
            "Invalid arguments for `{function}`: missing required argument `{missing}`."
        ));
    }
    Ok(())
}

/// A viewport position as given: the value used and how it prints.
struct Loc {
    value: i64,
    /// How the header prints it (`True` for `true`, as the reference does).
    shown: String,
    /// How the out-of-range error prints it (Python `repr`).
    repr: String,
}

fn loc_argument(name: &str, value: Option<&Value>) -> Result<Loc, String> {
    let Some(value) = value else {
        return Ok(Loc {
            value: -1,
            shown: "-1".into(),
            repr: "-1".into(),
        });
    };
    match (Num::of(value), value) {
        (Some(Num::Int(i)), Value::Bool(_)) => Ok(Loc {
            value: i,
            shown: py_repr(value),
            repr: py_repr(value),
        }),
        (Some(Num::Int(i)), _) => Ok(Loc {
            value: i,
            shown: i.to_string(),
            repr: i.to_string(),
        }),
        (Some(Num::Float(f)), _) if f.is_finite() => {
            let i = f.floor() as i64;
            Ok(Loc {
                value: i,
                shown: i.to_string(),
                repr: py_repr(value),
            })
        }
        _ => Err(format!(
            "`{name}` should be an integer, not `{}`",
            py_type_name(value)
        )),
    }
}

impl BrowserSession {
    pub(super) fn new(backend: Arc<dyn BrowserBackend>, config: Arc<BrowserConfig>) -> Self {
        Self {
            backend,
            config,
            stack: Vec::new(),
            cache: HashMap::new(),
            loads: 0,
        }
    }

    fn quirks(&self) -> ReferenceQuirks {
        self.config.quirks
    }

    /// The URL of each page on the stack, by cursor (search pages have the URL `""`), as the
    /// reference's `page_stack`.
    pub fn page_urls(&self) -> Vec<String> {
        self.stack.iter().map(|p| p.contents.url.clone()).collect()
    }

    /// The URL a citation of each cursor should link to: the page's URL, the searched page's
    /// for `find` results, the page's own for its source view, `""` (no link) for search results.
    pub fn citation_urls(&self) -> Vec<String> {
        self.stack
            .iter()
            .map(|p| {
                let page = p.origin.as_ref().unwrap_or(p);
                let url = &page.contents.url;
                url.strip_prefix(VIEW_SOURCE_PREFIX)
                    .unwrap_or(url)
                    .to_string()
            })
            .collect()
    }

    /// The page a stack entry shows: itself, or with the reference's shared-URL bug, whatever
    /// page was stored last under its URL.
    fn resolve(&self, page: &Arc<Page>) -> Arc<Page> {
        if self.quirks().shared_search_url
            && let Some(latest) = self.cache.get(&page.contents.url)
        {
            return latest.clone();
        }
        page.clone()
    }

    fn push(&mut self, page: Arc<Page>, fetched: bool) {
        if self.quirks().shared_search_url || fetched {
            self.cache.insert(page.contents.url.clone(), page.clone());
        }
        self.stack.push(page);
    }

    /// The reference's `get_page(cursor)`.
    fn page_at(&self, cursor: &Value) -> Result<Arc<Page>, String> {
        let Some(top) = self.stack.last() else {
            return Err("No pages to access!".into());
        };
        let current = self.stack.len() as i64 - 1;
        let num = Num::of(cursor);
        if num.is_some_and(|n| n.equals(-1) || n.equals(current)) {
            return Ok(self.resolve(top));
        }
        match num {
            Some(Num::Int(i)) => {
                let len = self.stack.len() as i64;
                let index = if i < 0 { i + len } else { i };
                if (0..len).contains(&index) {
                    Ok(self.resolve(&self.stack[index as usize]))
                } else {
                    Err(format!(
                        "Cursor `{}` is out of range. Available cursor indices: [0 - {current}].",
                        py_repr(cursor)
                    ))
                }
            }
            _ => Err(format!(
                "`cursor` should be an integer, not `{}`",
                py_type_name(cursor)
            )),
        }
    }

    fn spend_load(&mut self) -> Result<(), String> {
        let budget = self.config.page_budget;
        if self.loads >= budget {
            return Err(format!(
                "Page budget exhausted: this conversation has already loaded {budget} pages (searches included), \
                 the limit. Work with the pages already open: `open` a `cursor` at another `loc`, or `find`."
            ));
        }
        self.loads += 1;
        Ok(())
    }

    /// Pushes nothing; shows the top page from `loc`, popping it again if `loc` is past its end.
    async fn show_top(
        &mut self,
        loc: usize,
        loc_shown: &str,
        loc_repr: &str,
        num_lines: i64,
    ) -> Result<String, String> {
        let Some(top) = self.stack.last() else {
            return Err("No pages to access!".into());
        };
        let page = self.resolve(top);
        let cursor = self.stack.len() - 1;
        let loc_shown = loc_shown.to_string();
        let view_tokens = self.config.view_tokens;
        let view = off_runtime(move || {
            render_view(
                &page.contents,
                &page.lines,
                cursor,
                loc,
                &loc_shown,
                num_lines,
                view_tokens,
            )
        })
        .await?;
        match view {
            Ok(text) => Ok(text),
            Err(InvalidLocation { total_lines, .. }) => {
                self.stack.pop();
                Err(InvalidLocation {
                    loc: loc_repr.to_string(),
                    total_lines,
                }
                .to_string())
            }
        }
    }

    async fn search(&mut self, args: &Map<String, Value>) -> Result<String, String> {
        check_arguments(
            "search",
            args,
            &["query", "topn", "top_n", "source"],
            &["query"],
        )?;
        let query = match args.get("query") {
            Some(Value::String(q)) => q.clone(),
            // The reference hands any value on to the search service, as Python's `str()`.
            Some(other) if self.quirks().non_string_query => py_str(other),
            Some(other) => {
                return Err(format!(
                    "`query` should be a string, not `{}`",
                    py_type_name(other)
                ));
            }
            None => {
                return Err(
                    "Invalid arguments for `search`: missing required argument `query`.".into(),
                );
            }
        };
        // `topn` is accepted and ignored, as in the reference: results are always
        // `max_search_results`, and the viewport decides how many are read.
        self.spend_load()?;
        let page = self
            .backend
            .search(&query, self.config.max_search_results)
            .await
            .map_err(|e| {
                format!(
                    "Error during search for `{query}`: {}",
                    maybe_truncate(&e.to_string(), 1024)
                )
            })?;
        let page = off_runtime(move || Page::new(page, None)).await?;
        self.push(Arc::new(page), false);
        self.show_top(0, "0", "0", -1).await
    }

    async fn fetch(&mut self, url: &str, direct: bool) -> Result<Arc<Page>, String> {
        if !direct && let Some(page) = self.cache.get(url) {
            return Ok(page.clone());
        }
        let error = |msg: String| {
            format!(
                "Error fetching URL `{}`: {}",
                maybe_truncate(url, 1024),
                maybe_truncate(&msg, 1024)
            )
        };
        self.spend_load()?;
        let result = match url.strip_prefix(VIEW_SOURCE_PREFIX) {
            Some(target) if !self.quirks().view_source_shows_page => {
                self.backend.fetch_source(target).await
            }
            Some(target) => self.backend.fetch(target).await,
            None => self.backend.fetch(url).await,
        };
        let contents = result.map_err(|e| error(e.to_string()))?;
        Ok(Arc::new(
            off_runtime(move || Page::new(contents, None)).await?,
        ))
    }

    async fn open(&mut self, args: &Map<String, Value>) -> Result<String, String> {
        check_arguments(
            "open",
            args,
            &["id", "cursor", "loc", "num_lines", "view_source", "source"],
            &[],
        )?;
        let id = args.get("id").cloned().unwrap_or(Value::from(-1));
        let cursor = args.get("cursor").cloned().unwrap_or(Value::from(-1));
        let loc = loc_argument("loc", args.get("loc"))?;
        let num_lines = loc_argument("num_lines", args.get("num_lines"))?.value;
        let view_source = truthy(args.get("view_source"));

        let mut current: Option<Arc<Page>> = None;
        let mut stay = false;
        let mut direct = false;
        let mut snippet_line: Option<usize> = None;
        let mut url = match &id {
            Value::String(url) => {
                direct = true;
                url.clone()
            }
            other => {
                let Some(num) = Num::of(other) else {
                    return Err(format!(
                        "`id` should be a link id (a number) or a URL (a string), not `{}`",
                        py_type_name(other)
                    ));
                };
                let page = self.page_at(&cursor)?;
                let url = if num.as_f64() >= 0.0 {
                    let target = match (num, other) {
                        (Num::Int(i), Value::Number(_)) => {
                            usize::try_from(i).ok().and_then(|i| page.contents.link(i))
                        }
                        _ => None,
                    };
                    let Some(target) = target else {
                        return Err(format!("Invalid link id `{}`.", py_str(other)));
                    };
                    if let (Num::Int(i), Some(snippets)) = (num, &page.contents.snippets) {
                        snippet_line = usize::try_from(i)
                            .ok()
                            .and_then(|i| snippets.get(i))
                            .and_then(|s| s.line_idx);
                    }
                    target.to_string()
                } else {
                    stay = !view_source;
                    page.contents.url.clone()
                };
                current = Some(page);
                url
            }
        };
        if view_source {
            url = format!("{VIEW_SOURCE_PREFIX}{url}");
            snippet_line = None;
        }
        let (page, fetched) = match current {
            Some(page) if stay => (page, false),
            // A find result links back to the page it searched (the reference looks the URL
            // up instead, which for search pages finds the latest search).
            Some(page)
                if !self.quirks().shared_search_url && !view_source && page.origin.is_some() =>
            {
                (page.origin.clone().unwrap_or(page), false)
            }
            _ => {
                let fetched = !view_source && (direct || !self.cache.contains_key(&url));
                let page = self.fetch(&url, direct || view_source).await?;
                // After a redirect the page has its final URL; following the same link again
                // must still find it.
                if fetched && !self.quirks().shared_search_url && page.contents.url != url {
                    self.cache.insert(url.clone(), page.clone());
                }
                (page, fetched)
            }
        };
        self.push(page, fetched);
        let start = if loc.value < 0 {
            match snippet_line {
                Some(line) if line > 4 => line - 4,
                Some(line) => line,
                None => 0,
            }
        } else {
            loc.value as usize
        };
        let (shown, repr) = if loc.value < 0 {
            (start.to_string(), start.to_string())
        } else {
            (loc.shown.clone(), loc.repr.clone())
        };
        self.show_top(start, &shown, &repr, num_lines).await
    }

    async fn find(&mut self, args: &Map<String, Value>) -> Result<String, String> {
        check_arguments("find", args, &["pattern", "cursor"], &["pattern"])?;
        let pattern = args
            .get("pattern")
            .map(py_str)
            .unwrap_or_default()
            .to_lowercase();
        let cursor = args.get("cursor").cloned().unwrap_or(Value::from(-1));
        let page = self.page_at(&cursor)?;
        if page.contents.snippets.is_some() {
            return Err("Cannot run `find` on search results page or find results page".into());
        }
        let keep_lines = !self.quirks().find_line_drift;
        let results = off_runtime(move || {
            let results = find_in_page(&pattern, &page.contents, &page.lines, keep_lines);
            Page::new(results, Some(page))
        })
        .await?;
        self.push(Arc::new(results), false);
        self.show_top(0, "0", "0", -1).await
    }

    /// Answers one model message addressed to `browser.*`.
    pub async fn handle(&mut self, call: &ToolCall) -> ToolOutput {
        let Some(function) = call.recipient.strip_prefix("browser.") else {
            return dispatch_error(call, "Invalid function arguments");
        };
        let Some(args) = parse_arguments(&call.content) else {
            return dispatch_error(call, "Invalid function arguments");
        };
        let result = match function {
            "search" => self.search(&args).await,
            "open" => self.open(&args).await,
            "find" => self.find(&args).await,
            other => return dispatch_error(call, &format!("Unknown function: {other}")),
        };
        let mut text = result.unwrap_or_else(|e| e);
        // Headers show URLs unquoted and errors quote what servers said: strip it all.
        strip_controls_in_place(&mut text);
        ToolOutput::text(call, format!("browser.{function}"), text)
    }
}

#[async_trait]
impl ToolSession for BrowserSession {
    async fn call(&mut self, call: &ToolCall) -> Vec<ToolOutput> {
        vec![self.handle(call).await]
    }

    fn citation_urls(&self) -> Option<Vec<String>> {
        Some(BrowserSession::citation_urls(self))
    }
}
