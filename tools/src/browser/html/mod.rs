//! From HTML to the page the model reads.
//!
//! Links get exactly the ids the reference gives them (same candidates, same document order,
//! same resolved URLs, one id per distinct URL), so `open(id)` means the same thing on both.
//! The text is ossa's own rendering: main content only when the page marks it, no navigation
//! chrome, scripts or styles, markdown-like headings, lists, code blocks and pipe tables, and no
//! markdown escaping.

mod nesting;
mod render;
mod text;
pub(crate) mod urls;

use std::collections::HashMap;

use ego_tree::{NodeId, NodeRef};
use html5ever::driver::{self, ParseOpts};
use html5ever::tendril::TendrilSink;
use html5ever::tree_builder::TreeBuilderOpts;
use scraper::{Html, HtmlTreeSink, Node};

use super::page::PageContents;
use render::LinkKind;
pub(crate) use text::{clean_chars, squash_whitespace};

/// Why a document could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HtmlError {
    /// The reference's (lxml's) message for a blank document.
    #[error("Document is empty")]
    Empty,
}

/// One search hit, as providers report it.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct SearchResult {
    pub url: String,
    pub title: String,
    /// The provider's snippet or summary (plain text).
    pub summary: String,
}

fn parse(html: &str) -> Html {
    // Scripting off, as lxml: `<noscript>` content is markup, and its links get ids there too.
    let opts = ParseOpts {
        tree_builder: TreeBuilderOpts {
            scripting_enabled: false,
            ..Default::default()
        },
        ..Default::default()
    };
    driver::parse_document(HtmlTreeSink::new(Html::new_document()), opts).one(html)
}

fn element_name<'a>(node: &NodeRef<'a, Node>) -> Option<&'a str> {
    node.value().as_element().map(|e| e.name())
}

/// Whether any text node lies under `node` (the reference keeps a link whose
/// `" ".join(a.itertext())` is non-empty, so whitespace alone counts).
fn has_text(node: &NodeRef<'_, Node>) -> bool {
    node.descendants()
        .skip(1)
        .any(|d| d.value().as_text().is_some_and(|t| !t.is_empty()))
}

/// Assigns link ids in document order, the reference's way.
fn plan_links(doc: &Html, page_url: &str) -> (HashMap<NodeId, LinkKind>, Vec<String>) {
    let page_domain = urls::display_domain(page_url);
    let mut kinds = HashMap::new();
    let mut targets: Vec<String> = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    for node in doc.tree.root().descendants() {
        let Some(el) = node.value().as_element() else {
            continue;
        };
        if el.name() != "a" {
            continue;
        }
        let Some(href) = el.attr("href") else {
            continue;
        };
        let kind =
            if href.starts_with("mailto:") || href.starts_with("javascript:") || !has_text(&node) {
                LinkKind::Untouched
            } else if href.starts_with('#') {
                LinkKind::Fragment
            } else {
                let resolved = urls::urljoin(page_url, href).ok();
                let domain = resolved
                    .as_deref()
                    .and_then(|u| urls::reference_domain(u).ok())
                    .unwrap_or_default();
                match resolved {
                    Some(link) if !domain.is_empty() => {
                        let link = urls::arxiv_to_ar5iv(&link);
                        let shown = urls::display_domain(&link);
                        let id = *ids.entry(link.clone()).or_insert_with(|| {
                            targets.push(link);
                            targets.len() - 1
                        });
                        let domain = (!shown.eq_ignore_ascii_case(&page_domain)
                            && !shown.is_empty())
                        .then_some(shown);
                        LinkKind::Id { id, domain }
                    }
                    _ => LinkKind::Untouched,
                }
            };
        kinds.insert(node.id(), kind);
    }
    (kinds, targets)
}

/// The first `<title>`'s text.
fn document_title(doc: &Html) -> Option<String> {
    let title = doc
        .tree
        .root()
        .descendants()
        .find(|n| element_name(n) == Some("title"))?;
    let text: String = title
        .children()
        .filter_map(|c| c.value().as_text().map(|t| t.to_string()))
        .collect();
    Some(squash_whitespace(&text))
}

/// Converts an HTML document into a page (the reference's `process_html` with
/// `display_urls=True`): the text starts with an empty line and `URL: <url>`.
///
/// `title` (from the backend) wins over the document's `<title>`, which wins over the domain.
pub fn process_html(html: &str, url: &str, title: Option<&str>) -> Result<PageContents, HtmlError> {
    let html = clean_chars(html);
    if html.trim().is_empty() {
        return Err(HtmlError::Empty);
    }
    // Browsers cap the DOM depth too (Blink at 512).
    let doc = parse(&nesting::limit_nesting(&html, 512));
    let (links, targets) = plan_links(&doc, url);
    let title = match title.map(squash_whitespace).filter(|t| !t.is_empty()) {
        Some(t) => clean_chars(&t),
        None => document_title(&doc)
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| urls::reference_domain(url).unwrap_or_default()),
    };
    let body = render::render_document(&doc, &links, &targets);
    Ok(PageContents {
        url: url.to_string(),
        title,
        text: format!("\nURL: {url}\n{body}"),
        urls: targets,
        snippets: None,
    })
}

/// A plain-text document (text/plain, JSON, markdown) as a page: no links, lines as they are.
pub fn text_page(url: &str, title: &str, text: &str) -> PageContents {
    let text = clean_chars(&text.replace("\r\n", "\n").replace('\r', "\n"));
    PageContents {
        url: url.to_string(),
        title: clean_chars(title),
        text: format!("\nURL: {url}\n{}", text.trim_matches('\n')),
        urls: Vec::new(),
        snippets: None,
    }
}

/// The page `open(view_source=true)` shows: the document source as text, under the
/// `view-source:` URL, with no links.
pub fn source_page(url: &str, title: &str, source: &str) -> PageContents {
    text_page(&format!("view-source:{url}"), title, source)
}

/// The page a search shows: the reference's search page layout (`# Search Results` and one
/// `  * 【i†title†domain】 summary` item per hit, the page URL empty and the query as title),
/// rendered directly from the results rather than through unescaped HTML.
pub fn search_results_page(query: &str, results: &[SearchResult]) -> PageContents {
    let mut targets: Vec<String> = Vec::new();
    let mut ids: HashMap<String, usize> = HashMap::new();
    let mut items = Vec::new();
    for result in results {
        let url = clean_chars(&result.url);
        let title = clean_chars(&result.title)
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let title = title.replace('†', "‡");
        let summary = squash_whitespace(&clean_chars(&result.summary));
        let domain = urls::reference_domain(&url).unwrap_or_default();
        let link = if title.is_empty() || domain.is_empty() {
            title.clone()
        } else {
            let target = urls::arxiv_to_ar5iv(&url);
            let id = *ids.entry(target.clone()).or_insert_with(|| {
                targets.push(target);
                targets.len() - 1
            });
            format!("【{id}†{title}†{}】", urls::display_domain(&url))
        };
        let item = [link, summary]
            .into_iter()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        if !item.is_empty() {
            items.push(format!("  * {item}"));
        }
    }
    let mut text = String::from("\nURL: \n# Search Results");
    if !items.is_empty() {
        text.push_str("\n\n");
        text.push_str(&items.join("\n"));
    }
    PageContents {
        url: String::new(),
        title: query.to_string(),
        text,
        urls: targets,
        snippets: None,
    }
}
