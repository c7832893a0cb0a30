//! Turning the model's browser citations into links, for the REPL and the server.
//!
//! gpt-oss cites browser pages as `【{cursor}†L{start}(-L{end})?】` (or a link-style
//! `【cursor†text†domain】`). [`normalize_citations`] replaces each citation whose cursor is a
//! page with a URL by ` ([domain](url)) ` and reports it as a `url_citation` annotation, exactly
//! as the reference's `SimpleBrowserTool.normalize_citations`. [`CitationStream`] does the same
//! on streamed deltas, holding back a citation cut across deltas until it is complete.

use std::sync::OnceLock;

use regex::Regex;

/// A citation turned into a link: code-point offsets into the normalized text.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Annotation {
    pub start_index: usize,
    pub end_index: usize,
    /// The domain shown (`docs.python.org`).
    pub title: String,
    pub url: String,
}

impl Annotation {
    /// The annotation type the OpenAI APIs use for these.
    pub const KIND: &'static str = "url_citation";
}

/// The result of [`normalize_citations`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Normalized {
    pub text: String,
    pub annotations: Vec<Annotation>,
    /// The text ends with an unfinished citation (`...【3†L1`).
    pub has_partial_citations: bool,
}

fn citation_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"【(?P<cursor>\d+)†(?P<content>[^†】]+)(?:†[^†】]+)?】")
            .unwrap_or_else(|e| panic!("citation pattern: {e}"))
    })
}

fn partial_pattern() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"【\d*(?:†[^†】]*(?:†[^†】]*)?)?\z")
            .unwrap_or_else(|e| panic!("partial citation pattern: {e}"))
    })
}

fn partial_before_newline() -> &'static Regex {
    static RE: OnceLock<Regex> = OnceLock::new();
    RE.get_or_init(|| {
        Regex::new(r"【\d*\n\z").unwrap_or_else(|e| panic!("partial citation pattern: {e}"))
    })
}

/// Where an unfinished trailing citation starts and ends (Python's `$` also matches before a
/// final newline, which only matters for `【` and digits followed by that newline).
fn partial_span(text: &str) -> Option<(usize, usize)> {
    let at_end = partial_pattern().find(text).map(|m| (m.start(), m.end()));
    let before_newline = partial_before_newline()
        .find(text)
        .map(|m| (m.start(), m.end() - 1));
    match (at_end, before_newline) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    }
}

/// `unquote(url).split("/")[2]`, or the URL itself when it has no third part.
fn citation_domain(url: &str) -> String {
    let unquoted = crate::browser::unquote_url(url);
    match unquoted.split('/').nth(2) {
        Some(domain) => domain.to_string(),
        None => url.to_string(),
    }
}

/// Replaces citations of pages in `page_urls` (by cursor) with ` ([domain](url)) `.
///
/// Citations of unknown cursors and of pages without a URL (search results) stay as written.
/// With `hide_partial_citations`, an unfinished citation at the end is removed.
pub fn normalize_citations(
    text: &str,
    page_urls: &[String],
    hide_partial_citations: bool,
) -> Normalized {
    let partial = partial_span(text);
    let has_partial_citations = partial.is_some();
    let mut source = text.to_string();
    if hide_partial_citations && let Some((start, end)) = partial {
        source.replace_range(start..end, "");
    }
    let mut out = String::with_capacity(source.len());
    let mut out_chars = 0usize;
    let mut annotations = Vec::new();
    let mut last = 0;
    for caps in citation_pattern().captures_iter(&source) {
        let Some(whole) = caps.get(0) else { continue };
        let before = &source[last..whole.start()];
        out.push_str(before);
        out_chars += before.chars().count();
        let cursor = caps.name("cursor").map_or("", |m| m.as_str());
        let url = cursor
            .parse::<usize>()
            .ok()
            .filter(|i| i.to_string() == cursor)
            .and_then(|i| page_urls.get(i))
            .filter(|u| !u.is_empty());
        let replacement = match url {
            Some(url) => {
                let domain = citation_domain(url);
                let replacement = format!(" ([{domain}]({url})) ");
                let len = replacement.chars().count();
                annotations.push(Annotation {
                    start_index: out_chars,
                    end_index: out_chars + len,
                    title: domain,
                    url: url.clone(),
                });
                replacement
            }
            None => whole.as_str().to_string(),
        };
        out_chars += replacement.chars().count();
        out.push_str(&replacement);
        last = whole.end();
    }
    out.push_str(&source[last..]);
    Normalized {
        text: out,
        annotations,
        has_partial_citations,
    }
}

/// Text ready to show from a [`CitationStream`], with its annotations (offsets count from the
/// start of the whole stream).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreamChunk {
    pub text: String,
    pub annotations: Vec<Annotation>,
}

/// Normalizes citations in streamed text. Text that may be the start of a citation is held
/// back until the citation closes (or clearly is not one); everything else passes through.
#[derive(Debug, Clone)]
pub struct CitationStream {
    page_urls: Vec<String>,
    pending: String,
    emitted_chars: usize,
}

/// Longer than this, held-back text is released: citations are short.
const MAX_HELD: usize = 512;

impl CitationStream {
    /// `page_urls`: the conversation's pages by cursor (e.g. the browser session's
    /// `citation_urls()`).
    pub fn new(page_urls: Vec<String>) -> Self {
        Self {
            page_urls,
            pending: String::new(),
            emitted_chars: 0,
        }
    }

    fn emit(&mut self, text: &str) -> StreamChunk {
        let normalized = normalize_citations(text, &self.page_urls, false);
        let offset = self.emitted_chars;
        self.emitted_chars += normalized.text.chars().count();
        StreamChunk {
            text: normalized.text,
            annotations: normalized
                .annotations
                .into_iter()
                .map(|a| Annotation {
                    start_index: a.start_index + offset,
                    end_index: a.end_index + offset,
                    ..a
                })
                .collect(),
        }
    }

    /// Feeds a delta; returns what can be shown now.
    pub fn push(&mut self, delta: &str) -> StreamChunk {
        self.pending.push_str(delta);
        let hold_from = partial_pattern()
            .find(&self.pending)
            .map(|m| m.start())
            .filter(|&start| self.pending.len() - start <= MAX_HELD)
            .unwrap_or(self.pending.len());
        let ready: String = self.pending[..hold_from].to_string();
        self.pending.replace_range(..hold_from, "");
        self.emit(&ready)
    }

    /// Ends the stream: held-back text is shown as it is (an unfinished citation stays).
    pub fn finish(mut self) -> StreamChunk {
        let rest = std::mem::take(&mut self.pending);
        self.emit(&rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn find_page_cursor_links_to_its_url_without_a_domain() {
        let urls = vec![String::new(), "/find?pattern=elsewhere".to_string()];
        let n = normalize_citations("Checked 【1†L12-L15】.", &urls, false);
        assert_eq!(
            n.text,
            "Checked  ([/find?pattern=elsewhere](/find?pattern=elsewhere)) ."
        );
        assert_eq!(n.annotations[0].start_index, 8);
    }
}
