//! From a page to the text the model reads: the wrapped, numbered viewport under its header,
//! and `find` result pages. This layer reproduces the reference byte for byte.

use std::sync::OnceLock;

use regex::Regex;

use super::page::{PageContents, Snippet};
use super::pyfmt::{maybe_truncate, quote, unquote};
use super::textwrap::wrap_lines;
use super::tokens;

/// Display lines are wrapped at 80 columns.
pub const WRAP_WIDTH: usize = 80;

/// A viewport position the reference rejects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidLocation {
    /// `loc` as the model wrote it (Python form, e.g. `94` or `200.0`).
    pub loc: String,
    pub total_lines: usize,
}

impl std::fmt::Display for InvalidLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Invalid location parameter: `{}`. Cannot exceed page maximum of {}.",
            self.loc,
            self.total_lines as i64 - 1
        )
    }
}

/// The page's display lines (the reference's `wrap_lines(page.text)`).
pub fn page_lines(page: &PageContents) -> Vec<String> {
    wrap_lines(&page.text, WRAP_WIDTH)
}

/// Renders the viewport of `page` shown at `cursor`, from line `loc`; `lines` are the page's
/// [`page_lines`], computed once per page.
///
/// `loc_repr` is how `loc` prints in the header and errors (the model may send `True`).
/// `num_lines <= 0` sizes the viewport to `view_tokens` o200k tokens.
pub fn render_view(
    page: &PageContents,
    lines: &[String],
    cursor: usize,
    loc: usize,
    loc_repr: &str,
    num_lines: i64,
    view_tokens: usize,
) -> Result<String, InvalidLocation> {
    let total = lines.len();
    if loc >= total {
        return Err(InvalidLocation {
            loc: loc_repr.to_string(),
            total_lines: total,
        });
    }
    let end = tokens::end_loc(lines, loc, num_lines, view_tokens);
    let mut out = format!("[{cursor}] {}", page.title);
    let shown_url = maybe_truncate(&unquote(&page.url), 1024);
    if !shown_url.is_empty() {
        out.push_str(&format!(" ({shown_url})"));
    }
    out.push_str(&format!(
        "\n**viewing lines [{loc_repr} - {}] of {}**\n\n",
        end as i64 - 1,
        total as i64 - 1
    ));
    for (i, line) in lines[loc..end].iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        out.push_str(&format!("L{}: {line}", loc + i));
    }
    Ok(out)
}

/// The reference's link patterns, compiled once on first use.
struct LinkPatterns {
    partial_initial: Regex,
    partial_final: Regex,
    partial_final_before_newline: Regex,
    link: Regex,
}

fn link_patterns() -> &'static LinkPatterns {
    static PATTERNS: OnceLock<LinkPatterns> = OnceLock::new();
    PATTERNS.get_or_init(|| LinkPatterns {
        partial_initial: regex(r"^[^【】]*】"),
        partial_final: regex(r"【\d*(?:†(?P<content>[^†】]*)(?:†[^†】]*)?)?\z"),
        partial_final_before_newline: regex(r"【\d*\n\z"),
        link: regex(r"【\d+†(?P<content>[^†】]+)(?P<rest>(?:†[^†】]+)?】)"),
    })
}

fn regex(pattern: &str) -> Regex {
    match Regex::new(pattern) {
        Ok(re) => re,
        // The patterns are constants; a failure here is a bug caught by the unit tests.
        Err(e) => panic!("invalid built-in pattern {pattern}: {e}"),
    }
}

/// The newlines in `s`, which stripping must keep when `keep_lines` is set.
fn newlines_of(s: &str) -> String {
    s.chars().filter(|&c| c == '\n').collect()
}

/// The reference's `strip_links`: link markup becomes its text, on the joined display lines.
///
/// With `keep_lines`, line breaks inside the removed parts (a `†domain` that the wrap split)
/// are kept, so every stripped line stays at its display line number.
pub(crate) fn strip_links(text: &str, keep_lines: bool) -> String {
    let keep = |removed: &str| {
        if keep_lines {
            newlines_of(removed)
        } else {
            String::new()
        }
    };
    // `^[^【】]*】`: text before a leading unmatched `】`.
    let patterns = link_patterns();
    let mut text = match patterns.partial_initial.find(text) {
        Some(m) => format!("{}{}", keep(m.as_str()), &text[m.end()..]),
        None => text.to_string(),
    };
    // A trailing unfinished link becomes its content. Python's `$` also matches before a final
    // newline, which only matters when the tail is `【` and digits followed by that newline.
    let at_end = patterns.partial_final.captures(&text).and_then(|c| {
        let m = c.get(0)?;
        let content = c.name("content").map_or("", |g| g.as_str());
        let removed_after = &text[c.name("content").map_or(m.end(), |g| g.end())..m.end()];
        Some((
            m.start(),
            m.end(),
            format!("{content}{}", keep(removed_after)),
        ))
    });
    let before_newline = patterns
        .partial_final_before_newline
        .find(&text)
        .map(|m| (m.start(), m.end() - 1, String::new()));
    let replacement = match (at_end, before_newline) {
        (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
        (a, b) => a.or(b),
    };
    if let Some((start, end, with)) = replacement {
        text.replace_range(start..end, &with);
    }
    patterns
        .link
        .replace_all(&text, |c: &regex::Captures<'_>| {
            let content = c.name("content").map_or("", |g| g.as_str());
            let rest = c.name("rest").map_or("", |g| g.as_str());
            format!("{content}{}", keep(rest))
        })
        .into_owned()
}

/// Runs `find` for `pattern` (already lowercased) on `page`, whose [`page_lines`] are `lines`
/// (the reference's `run_find_in_page`): every line containing it starts a four-line snippet;
/// at most 50.
///
/// `keep_lines` fixes the reference's line-number drift (see [`strip_links`]).
pub fn find_in_page(
    pattern: &str,
    page: &PageContents,
    lines: &[String],
    keep_lines: bool,
) -> PageContents {
    const MAX_RESULTS: usize = 50;
    const SHOW_LINES: usize = 4;
    let joined = lines.join("\n");
    let stripped = strip_links(&joined, keep_lines);
    let lines: Vec<&str> = stripped.split('\n').collect();
    let mut chunks = Vec::new();
    let mut snippets = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !lines[i].to_lowercase().contains(pattern) {
            i += 1;
            continue;
        }
        let snippet = lines[i..(i + SHOW_LINES).min(lines.len())].join("\n");
        let k = chunks.len();
        chunks.push(format!("# 【{k}†match at L{i}】\n{snippet}"));
        snippets.push(Snippet {
            url: page.url.clone(),
            text: snippet,
            title: format!("#{k}"),
            line_idx: Some(i),
        });
        if chunks.len() == MAX_RESULTS {
            break;
        }
        i += SHOW_LINES;
    }
    let text = if chunks.is_empty() {
        format!("No `find` results for pattern: `{pattern}`")
    } else {
        chunks.join("\n\n")
    };
    PageContents {
        url: format!("{}/find?pattern={}", page.url, quote(pattern)),
        title: format!("Find results for text: `{pattern}` in `{}`", page.title),
        text,
        urls: vec![page.url.clone(); snippets.len()],
        snippets: Some(snippets),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strip_links_drifts_like_the_reference_unless_asked_to_keep_lines() {
        let text = "a 【1†Title†doc.rust-\nlang.org】 b\nnext";
        assert_eq!(strip_links(text, false), "a Title b\nnext");
        assert_eq!(strip_links(text, true), "a Title\n b\nnext");
    }

    #[test]
    fn strip_links_handles_partial_links_at_both_ends() {
        assert_eq!(strip_links("tail】 x 【2†open", false), " x open");
        assert_eq!(strip_links("x 【12\n", false), "x \n");
    }
}
