//! The text rendering of a parsed document.
//!
//! Output is markdown-like and meant for a model reading 80-column numbered lines: headings as
//! `#`, list items as `  * ` / `  1. ` (nested lists indented under their item), `<pre>` as a
//! 4-space indented block with tabs kept, inline code in backticks, block quotes as `> `, data
//! tables as `| a | b |` rows, images as `[Image N: alt]`, links as `【id†text】` or
//! `【id†text†domain】`. Navigation, scripts, styles, forms and hidden elements are skipped.

use std::collections::HashMap;

use ego_tree::{NodeId, NodeRef};
use scraper::{Html, Node};

use super::text::{clean_chars, squash_whitespace};

/// How a link element is treated, decided exactly as the reference's `_clean_links` does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LinkKind {
    /// Gets link id `id`; `domain` is shown after the text when it differs from the page's.
    Id { id: usize, domain: Option<String> },
    /// A same-page `#fragment` link: its text stays, without an id.
    Fragment,
    /// Left alone (mailto:, javascript:, no text, no domain): its content renders as usual.
    Untouched,
}

type NodeRefH<'a> = NodeRef<'a, Node>;

/// Deeper than this, elements are rendered as plain text (hostile pages nest thousands deep).
const MAX_DEPTH: usize = 256;

/// Elements whose whole subtree is not content.
const SKIPPED: &[&str] = &[
    "head", "script", "style", "noscript", "template", "svg", "canvas", "iframe", "object",
    "embed", "button", "select", "option", "optgroup", "input", "textarea", "datalist", "nav",
    "audio", "video", "source", "track", "map", "area", "title", "meta", "link", "base", "param",
    "rp",
];

/// Elements that end the current line.
const LINE_BLOCKS: &[&str] = &[
    "div",
    "section",
    "article",
    "main",
    "header",
    "footer",
    "aside",
    "address",
    "details",
    "summary",
    "figure",
    "figcaption",
    "fieldset",
    "legend",
    "form",
    "center",
    "hgroup",
    "dd",
    "caption",
    "body",
    "html",
    "search",
    "dialog",
    "menu",
    "tr",
];

/// Elements set off by blank lines.
const PARAGRAPH_BLOCKS: &[&str] = &["p", "dl", "dt"];

fn name<'a>(node: &NodeRefH<'a>) -> Option<&'a str> {
    node.value().as_element().map(|e| e.name())
}

fn attr<'a>(node: &NodeRefH<'a>, key: &str) -> Option<&'a str> {
    node.value().as_element().and_then(|e| e.attr(key))
}

/// Hidden or chrome by markup: `hidden`, `aria-hidden`, inline `display:none`, navigation roles.
fn is_hidden(node: &NodeRefH<'_>) -> bool {
    let Some(el) = node.value().as_element() else {
        return false;
    };
    if el.attr("hidden").is_some() || el.attr("aria-hidden").is_some_and(|v| v.trim() == "true") {
        return true;
    }
    if let Some(role) = el.attr("role") {
        let role = role.trim().to_ascii_lowercase();
        if role == "navigation" || role == "search" {
            return true;
        }
    }
    if let Some(style) = el.attr("style") {
        let style: String = style
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect::<String>()
            .to_ascii_lowercase();
        if style.contains("display:none") || style.contains("visibility:hidden") {
            return true;
        }
    }
    false
}

fn is_skipped(node: &NodeRefH<'_>) -> bool {
    match name(node) {
        Some(n) if SKIPPED.contains(&n) => true,
        Some("header") | Some("footer") => !node
            .ancestors()
            .any(|a| matches!(name(&a), Some("article") | Some("section") | Some("main"))),
        Some(_) => is_hidden(node),
        None => false,
    }
}

/// Length of the visible text under `node` (used to judge whether `<main>` holds the page).
fn text_len(node: &NodeRefH<'_>) -> usize {
    let mut total = 0;
    let mut skip_depth: Option<NodeId> = None;
    for edge in node.traverse() {
        match edge {
            ego_tree::iter::Edge::Open(n) => {
                if skip_depth.is_some() {
                    continue;
                }
                if matches!(
                    name(&n),
                    Some("script" | "style" | "noscript" | "template" | "svg")
                ) {
                    skip_depth = Some(n.id());
                } else if let Some(t) = n.value().as_text() {
                    total += t.trim().len();
                }
            }
            ego_tree::iter::Edge::Close(n) => {
                if skip_depth == Some(n.id()) {
                    skip_depth = None;
                }
            }
        }
    }
    total
}

/// What to render: the page's `<main>` (or `role="main"`, or its only `<article>`) when it
/// holds most of the text, otherwise the body.
fn content_root(doc: &Html) -> NodeRefH<'_> {
    let root = doc.tree.root();
    let body = root
        .descendants()
        .find(|n| name(n) == Some("body"))
        .unwrap_or(root);
    let main = root.descendants().find(|n| {
        (name(n) == Some("main")
            || attr(n, "role").is_some_and(|r| r.trim().eq_ignore_ascii_case("main")))
            && !n.ancestors().any(|a| is_hidden(&a))
    });
    let candidate = main.or_else(|| {
        let mut articles = root.descendants().filter(|n| name(n) == Some("article"));
        match (articles.next(), articles.next()) {
            (Some(one), None) => Some(one),
            _ => None,
        }
    });
    match candidate {
        Some(c) if text_len(&c) * 5 >= text_len(&body) => c,
        _ => body,
    }
}

/// A line prefix level (list item or block quote): `first` on its first line, `rest` after.
struct Indent {
    first: String,
    rest: String,
    used: bool,
}

#[derive(Default)]
struct Output {
    lines: Vec<String>,
    /// The open line, prefix included.
    current: Option<String>,
    /// Whether the open line has content after its prefix.
    has_content: bool,
    /// 1: start a new line before the next content; 2: also leave a blank line.
    pending_break: u8,
    pending_space: bool,
    /// The pending space came from inside a link's end; dropped before closing punctuation.
    soft_space: bool,
    /// Inside a list item that has no content yet (its first block joins the marker line).
    fresh_item: bool,
    indents: Vec<Indent>,
}

impl Output {
    fn request_break(&mut self, n: u8) {
        let n = if self.fresh_item { 1 } else { n };
        self.pending_break = self.pending_break.max(n);
        self.pending_space = false;
    }

    fn open_line(&mut self) {
        if let Some(line) = self.current.take() {
            self.lines.push(line);
            if self.pending_break >= 2 {
                self.lines.push(String::new());
            }
        }
        let mut prefix = String::new();
        for indent in &mut self.indents {
            prefix.push_str(if indent.used {
                &indent.rest
            } else {
                &indent.first
            });
            indent.used = true;
        }
        self.current = Some(prefix);
        self.has_content = false;
        self.pending_break = 0;
        self.fresh_item = false;
    }

    /// Appends text that is already laid out (no whitespace collapsing).
    fn push_raw(&mut self, s: &str) {
        if s.is_empty() {
            return;
        }
        if self.current.is_none() || self.pending_break > 0 {
            self.open_line();
        }
        if let Some(line) = self.current.as_mut() {
            let closing = s.starts_with([',', '.', ';', ':', '!', '?', ')', ']', '}']);
            if self.pending_space && self.has_content && !(self.soft_space && closing) {
                line.push(' ');
            }
            line.push_str(s);
        }
        self.pending_space = false;
        self.soft_space = false;
        self.has_content = true;
    }

    /// Appends flowing text: whitespace runs collapse to one space.
    fn push_text(&mut self, s: &str) {
        let mut word = String::new();
        for c in s.chars() {
            if matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0c') {
                if !word.is_empty() {
                    self.push_raw(&word);
                    word.clear();
                }
                self.pending_space = true;
            } else if c == '\u{a0}' {
                word.push(' ');
            } else {
                word.push(c);
            }
        }
        if !word.is_empty() {
            self.push_raw(&word);
        }
    }

    fn finish(mut self) -> Vec<String> {
        if let Some(line) = self.current.take() {
            self.lines.push(line);
        }
        self.lines
    }
}

pub(super) struct Renderer<'a> {
    links: &'a HashMap<NodeId, LinkKind>,
    targets: &'a [String],
    images: usize,
    out: Output,
}

/// Renders the document's content as text lines (trailing spaces trimmed, at most one blank
/// line in a row, none at the ends).
pub(super) fn render_document(
    doc: &Html,
    links: &HashMap<NodeId, LinkKind>,
    targets: &[String],
) -> String {
    let mut r = Renderer {
        links,
        targets,
        images: 0,
        out: Output::default(),
    };
    let root = content_root(doc);
    r.children(&root, 0);
    let lines = std::mem::take(&mut r.out).finish();
    let mut kept: Vec<&str> = Vec::new();
    for line in &lines {
        let line = line.trim_end();
        if !line.is_empty() || kept.last().is_some_and(|l| !l.is_empty()) {
            kept.push(line);
        }
    }
    while kept.last() == Some(&"") {
        kept.pop();
    }
    kept.join("\n")
}

impl<'a> Renderer<'a> {
    fn children(&mut self, node: &NodeRefH<'a>, depth: usize) {
        for child in node.children() {
            self.node(&child, depth + 1);
        }
    }

    fn node(&mut self, node: &NodeRefH<'a>, depth: usize) {
        match node.value() {
            Node::Text(t) => self.out.push_text(&t.text),
            Node::Element(_) => self.element(node, depth),
            _ => {}
        }
    }

    /// Renders `node`'s content inline into a string (for headings, cells, link text).
    fn inline_string(&mut self, node: &NodeRefH<'a>, depth: usize) -> String {
        let saved = std::mem::take(&mut self.out);
        self.children(node, depth);
        let inner = std::mem::replace(&mut self.out, saved);
        let lines = inner.finish();
        squash_whitespace(&lines.join(" "))
    }

    fn element(&mut self, node: &NodeRefH<'a>, depth: usize) {
        if is_skipped(node) {
            return;
        }
        let Some(tag) = name(node) else { return };
        if depth > MAX_DEPTH {
            let text: String = node
                .descendants()
                .filter_map(|d| d.value().as_text().map(|t| t.to_string()))
                .collect();
            self.out.push_text(&text);
            return;
        }
        match tag {
            "a" => self.link(node, depth),
            "br" => self.out.request_break(1),
            "wbr" => {}
            "hr" => {
                self.out.request_break(2);
                self.out.push_raw("---");
                self.out.request_break(2);
            }
            "img" => self.image(node),
            "math" => self.math(node),
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                let level = tag[1..].parse::<usize>().unwrap_or(1);
                let text = self.inline_string(node, depth);
                if !text.is_empty() {
                    self.out.request_break(2);
                    self.out.push_raw(&format!("{} {text}", "#".repeat(level)));
                    self.out.request_break(2);
                }
            }
            "pre" => self.pre(node, depth),
            "code" | "kbd" | "samp" | "tt" => self.code(node, depth),
            "sup" | "sub" => self.script(node, depth, if tag == "sup" { '^' } else { '_' }),
            "blockquote" => {
                self.out.request_break(2);
                self.out.indents.push(Indent {
                    first: "> ".into(),
                    rest: "> ".into(),
                    used: false,
                });
                self.children(node, depth);
                self.out.indents.pop();
                self.out.request_break(2);
            }
            "ul" | "ol" | "menu" if has_items(node) => self.list(node, depth, tag == "ol"),
            "li" => self.list_item(node, depth, "* ".to_string()),
            "table" => self.table(node, depth),
            "dt" => {
                self.out.request_break(2);
                self.children(node, depth);
                self.out.request_break(1);
            }
            "rt" => {
                let text = self.inline_string(node, depth);
                if !text.is_empty() {
                    self.out.push_raw(&format!("({text})"));
                }
            }
            t if PARAGRAPH_BLOCKS.contains(&t) => {
                self.out.request_break(2);
                self.children(node, depth);
                self.out.request_break(2);
            }
            t if LINE_BLOCKS.contains(&t) => {
                self.out.request_break(1);
                self.children(node, depth);
                self.out.request_break(1);
            }
            _ => self.children(node, depth),
        }
    }

    /// A link's own text, for its markup: visible text with whitespace squashed, `†` replaced,
    /// falling back to its label or image alt text when it has no visible text.
    fn link_label(&self, node: &NodeRefH<'a>, id: usize, depth: usize) -> String {
        let mut text = String::new();
        self.collect_label(node, &mut text, depth);
        let mut label = squash_whitespace(&text).replace('†', "‡");
        if label.is_empty() {
            let fallback = attr(node, "aria-label")
                .or_else(|| attr(node, "title"))
                .map(str::to_string)
                .or_else(|| {
                    node.descendants()
                        .filter(|d| name(d) == Some("img"))
                        .find_map(|img| {
                            attr(&img, "alt")
                                .or_else(|| attr(&img, "title"))
                                .map(str::to_string)
                        })
                })
                .unwrap_or_default();
            label = squash_whitespace(&clean_chars(&fallback)).replace('†', "‡");
        }
        if label.is_empty() {
            // No text, label or alt: name the link by where it goes.
            let target = self.targets.get(id).map(String::as_str).unwrap_or_default();
            let target = target.split(['?', '#']).next().unwrap_or_default();
            label = target
                .trim_end_matches('/')
                .rsplit('/')
                .next()
                .unwrap_or_default()
                .replace('†', "‡");
        }
        if label.is_empty() {
            "link".to_string()
        } else {
            label
        }
    }

    fn collect_label(&self, node: &NodeRefH<'a>, out: &mut String, depth: usize) {
        for child in node.children() {
            match child.value() {
                Node::Text(t) => out.push_str(&t.text),
                Node::Element(e) => {
                    if is_skipped(&child) || e.name() == "img" {
                        continue;
                    }
                    let block = LINE_BLOCKS.contains(&e.name())
                        || PARAGRAPH_BLOCKS.contains(&e.name())
                        || matches!(
                            e.name(),
                            "br" | "li" | "td" | "th" | "h1" | "h2" | "h3" | "h4" | "h5" | "h6"
                        );
                    if block {
                        out.push(' ');
                    }
                    if depth < MAX_DEPTH {
                        self.collect_label(&child, out, depth + 1);
                    }
                    if block {
                        out.push(' ');
                    }
                }
                _ => {}
            }
        }
    }

    fn link(&mut self, node: &NodeRefH<'a>, depth: usize) {
        match self.links.get(&node.id()).cloned() {
            Some(LinkKind::Id { id, domain }) => {
                let raw: String = node
                    .descendants()
                    .filter_map(|d| d.value().as_text().map(|t| t.to_string()))
                    .collect();
                if raw.starts_with(char::is_whitespace) {
                    self.out.pending_space = true;
                }
                let label = self.link_label(node, id, depth);
                let markup = match domain {
                    Some(d) => format!("【{id}†{label}†{d}】"),
                    None => format!("【{id}†{label}】"),
                };
                self.out.push_raw(&markup);
                if raw.ends_with(char::is_whitespace) {
                    self.out.pending_space = true;
                    self.out.soft_space = true;
                }
            }
            Some(LinkKind::Fragment) => {
                // Heading anchors (`¶`, `§`, `#`) are chrome.
                let text = squash_whitespace(
                    &node
                        .descendants()
                        .filter_map(|d| d.value().as_text().map(|t| t.to_string()))
                        .collect::<String>(),
                );
                if matches!(text.as_str(), "¶" | "§" | "#" | "") {
                    return;
                }
                self.children(node, depth);
            }
            Some(LinkKind::Untouched) | None => self.children(node, depth),
        }
    }

    fn image(&mut self, node: &NodeRefH<'a>) {
        let alt = attr(node, "alt");
        // `alt=""` marks a decorative image; 1-pixel images are trackers.
        if alt.is_some_and(|a| a.trim().is_empty()) {
            return;
        }
        let tiny = |key: &str| {
            attr(node, key)
                .and_then(|v| v.trim().trim_end_matches("px").parse::<u32>().ok())
                .is_some_and(|v| v <= 2)
        };
        if tiny("width") || tiny("height") {
            return;
        }
        let label = alt
            .or_else(|| attr(node, "title"))
            .map(|s| squash_whitespace(&clean_chars(s)))
            .filter(|s| !s.is_empty());
        let n = self.images;
        self.images += 1;
        match label {
            Some(l) => self.out.push_raw(&format!("[Image {n}: {l}]")),
            None => self.out.push_raw(&format!("[Image {n}]")),
        }
    }

    /// MathML: its `alttext` (often TeX) if present, else a linear text form.
    fn math(&mut self, node: &NodeRefH<'a>) {
        if let Some(alt) = attr(node, "alttext")
            .map(squash_whitespace)
            .filter(|a| !a.is_empty())
        {
            self.out.push_raw(&alt);
            return;
        }
        let text = math_text(node, 0);
        let text = squash_whitespace(&text);
        if !text.is_empty() {
            self.out.push_raw(&text);
        }
    }

    fn pre(&mut self, node: &NodeRefH<'a>, depth: usize) {
        let mut text = String::new();
        self.pre_text(node, &mut text, depth);
        let text = text
            .trim_end_matches(['\n', ' ', '\t'])
            .trim_start_matches('\n');
        if text.trim().is_empty() {
            return;
        }
        self.out.request_break(2);
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                self.out.request_break(1);
            }
            let line = line.trim_end_matches('\r');
            self.out.push_raw(&format!("    {line}"));
        }
        self.out.request_break(2);
    }

    fn pre_text(&mut self, node: &NodeRefH<'a>, out: &mut String, depth: usize) {
        for child in node.children() {
            match child.value() {
                Node::Text(t) => out.push_str(&t.text),
                Node::Element(e) => {
                    if is_skipped(&child) {
                        continue;
                    }
                    match e.name() {
                        "br" => out.push('\n'),
                        "img" => {
                            let saved = std::mem::take(&mut self.out);
                            self.image(&child);
                            let img = std::mem::replace(&mut self.out, saved).finish().join("");
                            out.push_str(&img);
                        }
                        "a" => match self.links.get(&child.id()).cloned() {
                            Some(LinkKind::Id { id, domain }) => {
                                let label = self.link_label(&child, id, depth);
                                match domain {
                                    Some(d) => out.push_str(&format!("【{id}†{label}†{d}】")),
                                    None => out.push_str(&format!("【{id}†{label}】")),
                                }
                            }
                            _ => self.pre_text(&child, out, depth + 1),
                        },
                        _ if depth < MAX_DEPTH => self.pre_text(&child, out, depth + 1),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
    }

    /// Whether a link the page numbered (`【n†…】`) lies inside `node`.
    fn contains_link(&self, node: &NodeRefH<'a>) -> bool {
        node.descendants()
            .any(|d| matches!(self.links.get(&d.id()), Some(LinkKind::Id { .. })))
    }

    fn code(&mut self, node: &NodeRefH<'a>, depth: usize) {
        // Links inside code keep their markup; code text stays plain then.
        if self.contains_link(node) {
            self.children(node, depth);
            return;
        }
        let text: String = node
            .descendants()
            .filter(|d| !d.ancestors().any(|a| is_skipped(&a)))
            .filter_map(|d| d.value().as_text().map(|t| t.to_string()))
            .collect();
        let leading = text.starts_with(char::is_whitespace);
        let trailing = text.ends_with(char::is_whitespace);
        let text = squash_whitespace(&text);
        if text.is_empty() {
            return;
        }
        let fence = if text.contains('`') { "``" } else { "`" };
        if leading {
            self.out.pending_space = true;
        }
        self.out.push_raw(&format!("{fence}{text}{fence}"));
        if trailing {
            self.out.pending_space = true;
        }
    }

    /// `<sup>`/`<sub>`: short simple content becomes `^{x}` / `_{x}`, as the reference writes
    /// exponents and indices; anything else stays inline.
    fn script(&mut self, node: &NodeRefH<'a>, depth: usize, mark: char) {
        if self.contains_link(node) {
            self.children(node, depth);
            return;
        }
        let text = self.inline_string(node, depth);
        if text.is_empty() {
            return;
        }
        let simple = text.chars().count() <= 16
            && !text.starts_with('[')
            && text.chars().all(|c| {
                c.is_alphanumeric() || matches!(c, '-' | '+' | '_' | '.' | '\'' | '*' | '−' | '′')
            });
        if simple {
            self.out.push_raw(&format!("{mark}{{{text}}}"));
        } else {
            self.out.push_text(&text);
        }
    }

    fn list(&mut self, node: &NodeRefH<'a>, depth: usize, ordered: bool) {
        let nested = self
            .out
            .indents
            .iter()
            .any(|i| i.rest.trim().is_empty() && !i.rest.is_empty());
        self.out.request_break(if nested { 1 } else { 2 });
        let mut number: i64 = attr(node, "start")
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(1);
        let reversed = attr(node, "reversed").is_some();
        let base = if nested { "" } else { "  " };
        for child in node.children() {
            if name(&child) == Some("li") && !is_skipped(&child) {
                if let Some(v) = attr(&child, "value").and_then(|s| s.trim().parse().ok()) {
                    number = v;
                }
                let marker = if ordered {
                    format!("{number}. ")
                } else {
                    "* ".to_string()
                };
                self.list_item(&child, depth + 1, format!("{base}{marker}"));
                number += if reversed { -1 } else { 1 };
            } else {
                self.node(&child, depth + 1);
            }
        }
        self.out.request_break(if nested { 1 } else { 2 });
    }

    fn list_item(&mut self, node: &NodeRefH<'a>, depth: usize, marker: String) {
        self.out.request_break(1);
        let rest = " ".repeat(marker.chars().count());
        self.out.indents.push(Indent {
            first: marker,
            rest,
            used: false,
        });
        self.out.fresh_item = true;
        self.children(node, depth);
        self.out.fresh_item = false;
        self.out.indents.pop();
        self.out.request_break(1);
    }

    fn table(&mut self, node: &NodeRefH<'a>, depth: usize) {
        let rows = table_rows(node);
        let layout = rows.iter().flat_map(|r| r.iter()).any(|cell| {
            cell.descendants().skip(1).any(|d| {
                matches!(
                    name(&d),
                    Some(
                        "table"
                            | "ul"
                            | "ol"
                            | "pre"
                            | "h1"
                            | "h2"
                            | "h3"
                            | "h4"
                            | "h5"
                            | "h6"
                            | "blockquote"
                            | "dl"
                    )
                )
            })
        });
        self.out.request_break(2);
        if let Some(caption) = node.children().find(|c| name(c) == Some("caption")) {
            let text = self.inline_string(&caption, depth);
            if !text.is_empty() {
                self.out.push_raw(&text);
                self.out.request_break(1);
            }
        }
        if layout || rows.iter().all(|r| r.len() <= 1) {
            for row in &rows {
                for cell in row {
                    self.out.request_break(1);
                    self.children(cell, depth + 1);
                    self.out.request_break(1);
                }
            }
            self.out.request_break(2);
            return;
        }
        let mut first = true;
        for row in &rows {
            let cells: Vec<String> = row
                .iter()
                .map(|cell| self.inline_string(cell, depth + 1).replace('|', "\\|"))
                .collect();
            if cells.iter().all(String::is_empty) {
                continue;
            }
            self.out.request_break(1);
            self.out.push_raw(&format!("| {} |", cells.join(" | ")));
            let header = row.iter().all(|c| name(c) == Some("th"))
                || row
                    .first()
                    .and_then(|c| c.parent())
                    .and_then(|tr| tr.parent())
                    .is_some_and(|p| name(&p) == Some("thead"));
            if first && header {
                self.out.request_break(1);
                self.out
                    .push_raw(&format!("|{}", " --- |".repeat(cells.len())));
            }
            first = false;
        }
        self.out.request_break(2);
    }
}

fn has_items(node: &NodeRefH<'_>) -> bool {
    node.children().any(|c| name(&c) == Some("li"))
}

/// The cells of a table's own rows (not those of nested tables), row by row.
fn table_rows<'a>(table: &NodeRefH<'a>) -> Vec<Vec<NodeRefH<'a>>> {
    let mut rows = Vec::new();
    let mut sections = vec![*table];
    for child in table.children() {
        if matches!(name(&child), Some("thead" | "tbody" | "tfoot")) {
            sections.push(child);
        }
    }
    for section in sections {
        for tr in section.children().filter(|c| name(c) == Some("tr")) {
            let cells: Vec<_> = tr
                .children()
                .filter(|c| matches!(name(c), Some("td" | "th")))
                .collect();
            if !cells.is_empty() {
                rows.push(cells);
            }
        }
    }
    rows
}

/// A linear text form of MathML: `x = y^{2}`, `(a)/(b)`, `sqrt(x)`.
fn math_text(node: &NodeRefH<'_>, depth: usize) -> String {
    if depth > MAX_DEPTH {
        return String::new();
    }
    let parts = |n: &NodeRefH<'_>| -> Vec<String> {
        n.children()
            .filter(|c| c.value().is_element() || c.value().is_text())
            .map(|c| match c.value() {
                Node::Text(t) => t.trim().to_string(),
                _ => math_text(&c, depth + 1),
            })
            .filter(|s| !s.is_empty())
            .collect()
    };
    match name(node) {
        Some("annotation" | "annotation-xml") => String::new(),
        Some("msup") => match parts(node).as_slice() {
            [base, sup] => format!("{base}^{{{sup}}}"),
            other => other.join(" "),
        },
        Some("msub") => match parts(node).as_slice() {
            [base, sub] => format!("{base}_{{{sub}}}"),
            other => other.join(" "),
        },
        Some("msubsup") => match parts(node).as_slice() {
            [base, sub, sup] => format!("{base}_{{{sub}}}^{{{sup}}}"),
            other => other.join(" "),
        },
        Some("mfrac") => match parts(node).as_slice() {
            [a, b] => format!("({a})/({b})"),
            other => other.join(" "),
        },
        Some("msqrt") => format!("sqrt({})", parts(node).join(" ")),
        Some("mo") => format!(" {} ", parts(node).join("")),
        _ => parts(node).join(""),
    }
}
