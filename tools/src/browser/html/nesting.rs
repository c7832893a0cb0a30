//! A guard against pathologically deep markup.
//!
//! html5ever checks element scopes by walking the stack of open elements, so a page nesting
//! elements tens of thousands deep costs quadratic time (100 000 nested `<div>`s: over a
//! minute). Browsers cap the tree depth; this pre-pass does the same by dropping the tags (not
//! the text) of elements that would open deeper than the cap. Pages within the cap pass
//! through untouched, borrowed.

use std::borrow::Cow;

const VOID: &[&str] = &[
    "area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source",
    "track", "wbr", "basefont", "bgsound", "frame", "keygen",
];
const RAW_TEXT: &[&str] = &[
    "script", "style", "textarea", "title", "xmp", "iframe", "noembed", "noframes",
];
const CLOSES_P: &[&str] = &[
    "address",
    "article",
    "aside",
    "blockquote",
    "details",
    "div",
    "dl",
    "fieldset",
    "figcaption",
    "figure",
    "footer",
    "form",
    "h1",
    "h2",
    "h3",
    "h4",
    "h5",
    "h6",
    "header",
    "hr",
    "main",
    "menu",
    "nav",
    "ol",
    "p",
    "pre",
    "section",
    "table",
    "ul",
];

/// The open element a new `tag` implicitly closes (HTML's optional end tags), as the index to
/// truncate the stack to, looking no further back than `boundaries`.
fn implied_close(stack: &[(String, bool)], tag: &str) -> Option<usize> {
    let (targets, boundaries): (&[&str], &[&str]) = match tag {
        "li" => (&["li"], &["ul", "ol", "menu"]),
        "dt" | "dd" => (&["dt", "dd"], &["dl"]),
        "tr" => (&["tr", "td", "th"], &["table", "thead", "tbody", "tfoot"]),
        "td" | "th" => (&["td", "th"], &["tr", "table"]),
        "thead" | "tbody" | "tfoot" => (&["thead", "tbody", "tfoot", "tr", "td", "th"], &["table"]),
        "option" => (&["option"], &["select", "datalist"]),
        "optgroup" => (&["option", "optgroup"], &["select"]),
        t if CLOSES_P.contains(&t) => (
            &["p"],
            &[
                "button", "table", "td", "th", "caption", "object", "template",
            ],
        ),
        _ => return None,
    };
    // Implied ends concern recent elements; a bounded look-back keeps this linear.
    for (i, (name, _)) in stack.iter().enumerate().rev().take(256) {
        if targets.contains(&name.as_str()) {
            return Some(i);
        }
        if boundaries.contains(&name.as_str()) {
            return None;
        }
    }
    None
}

/// Index just past the `>` closing the tag that starts at `from` (quotes respected).
fn tag_end(bytes: &[u8], from: usize) -> usize {
    let mut i = from;
    let mut quote: Option<u8> = None;
    while i < bytes.len() {
        let b = bytes[i];
        match quote {
            Some(q) if b == q => quote = None,
            Some(_) => {}
            None if b == b'"' || b == b'\'' => quote = Some(b),
            None if b == b'>' => return i + 1,
            None => {}
        }
        i += 1;
    }
    bytes.len()
}

fn find_ci(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    haystack
        .get(from..)?
        .windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
        .map(|p| p + from)
}

/// Drops the tags of elements opened deeper than `max_depth`.
pub(crate) fn limit_nesting(html: &str, max_depth: usize) -> Cow<'_, str> {
    let bytes = html.as_bytes();
    let mut stack: Vec<(String, bool)> = Vec::new();
    let mut out: Option<String> = None;
    let mut copied = 0;
    let drop_tag = |out: &mut Option<String>, copied: &mut usize, start: usize, end: usize| {
        let o = out.get_or_insert_with(|| String::with_capacity(html.len()));
        o.push_str(&html[*copied..start]);
        *copied = end;
    };
    let mut i = 0;
    while let Some(rel) = bytes
        .get(i..)
        .and_then(|b| b.iter().position(|&c| c == b'<'))
    {
        let start = i + rel;
        let rest = &bytes[start..];
        if rest.starts_with(b"<!--") {
            i = find_ci(bytes, b"-->", start + 4).map_or(bytes.len(), |e| e + 3);
            continue;
        }
        if rest.starts_with(b"<!") || rest.starts_with(b"<?") {
            i = tag_end(bytes, start + 2);
            continue;
        }
        let closing = rest.get(1) == Some(&b'/');
        let name_start = start + if closing { 2 } else { 1 };
        let name_len = bytes[name_start..]
            .iter()
            .take_while(|b| b.is_ascii_alphanumeric() || **b == b'-')
            .count();
        if name_len == 0 || !bytes[name_start].is_ascii_alphabetic() {
            i = start + 1;
            continue;
        }
        let name = html[name_start..name_start + name_len].to_ascii_lowercase();
        let end = tag_end(bytes, name_start + name_len);
        if closing {
            if let Some(pos) = stack.iter().rposition(|(n, _)| *n == name) {
                let kept = stack[pos].1;
                stack.truncate(pos);
                if !kept {
                    drop_tag(&mut out, &mut copied, start, end);
                }
            }
            i = end;
            continue;
        }
        if RAW_TEXT.contains(&name.as_str()) {
            let closer = format!("</{name}");
            i = find_ci(bytes, closer.as_bytes(), end)
                .map_or(bytes.len(), |e| tag_end(bytes, e + closer.len()));
            continue;
        }
        let self_closing = end >= 2 && bytes[end - 2] == b'/';
        if !VOID.contains(&name.as_str()) && !self_closing {
            if let Some(pos) = implied_close(&stack, &name) {
                stack.truncate(pos);
            }
            let keep = stack.len() < max_depth;
            if !keep {
                drop_tag(&mut out, &mut copied, start, end);
            }
            stack.push((name, keep));
        }
        i = end;
    }
    match out {
        Some(mut o) => {
            o.push_str(&html[copied..]);
            Cow::Owned(o)
        }
        None => Cow::Borrowed(html),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shallow_pages_pass_untouched() {
        let html = "<ul><li>a<li>b</ul><p>x<p>y<table><tr><td>1<td>2<tr><td>3</table><script>if (a<b) {}</script>";
        assert!(matches!(
            limit_nesting(&html.repeat(200), 8),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn deep_tags_are_dropped_text_kept() {
        let html = format!("{}text{}", "<div>".repeat(10), "</div>".repeat(10));
        assert_eq!(
            limit_nesting(&html, 3),
            "<div><div><div>text</div></div></div>"
        );
    }
}
