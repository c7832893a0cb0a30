//! A port of Python's `textwrap.wrap(line, width, replace_whitespace=False,
//! drop_whitespace=False)`, the line wrapper the reference browser numbers its lines with.
//!
//! Line numbers are part of what the model cites (`【3†L12-L15】`), so the wrap must break exactly
//! where CPython's does: tabs expanded per line, chunks split by textwrap's `wordsep_re` (words,
//! whitespace runs, hyphenated-word pieces, em-dashes), chunks packed greedily into 80 columns,
//! and chunks longer than a line broken after their last hyphen that fits.

/// `textwrap._whitespace`: the only characters textwrap treats as whitespace.
fn is_ws(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\x0b' | '\x0c' | '\r' | ' ')
}

/// Python's `\w` on `str` patterns: alphanumeric (letters and every numeric category) or `_`.
pub(crate) fn is_word(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_alphanumeric() || c == '_';
    }
    unicode::is_letter_or_number(c)
}

/// Python's `\d`: Unicode decimal digits (category Nd).
fn is_decimal(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit();
    }
    unicode::is_decimal(c)
}

/// textwrap's `letter` class, `[^\d\W]`.
fn is_letter(c: char) -> bool {
    is_word(c) && !is_decimal(c)
}

/// textwrap's `word_punct` class, `[\w!"'&.,?]`.
fn is_word_punct(c: char) -> bool {
    is_word(c) || matches!(c, '!' | '"' | '\'' | '&' | '.' | ',' | '?')
}

mod unicode {
    use std::sync::OnceLock;

    use regex::Regex;

    fn class(cell: &'static OnceLock<Option<Regex>>, pattern: &str) -> Option<&'static Regex> {
        cell.get_or_init(|| Regex::new(pattern).ok()).as_ref()
    }

    fn matches(cell: &'static OnceLock<Option<Regex>>, pattern: &str, c: char) -> bool {
        let mut buf = [0u8; 4];
        class(cell, pattern).is_some_and(|re| re.is_match(c.encode_utf8(&mut buf)))
    }

    pub(super) fn is_letter_or_number(c: char) -> bool {
        static RE: OnceLock<Option<Regex>> = OnceLock::new();
        matches(&RE, r"^[\p{L}\p{N}]$", c)
    }

    pub(super) fn is_decimal(c: char) -> bool {
        static RE: OnceLock<Option<Regex>> = OnceLock::new();
        matches(&RE, r"^\p{Nd}$", c)
    }
}

/// `str.expandtabs(8)`: the column restarts after `\n` and `\r`.
fn expand_tabs(line: &str) -> Vec<char> {
    let mut out = Vec::with_capacity(line.len());
    let mut column = 0usize;
    for c in line.chars() {
        match c {
            '\t' => {
                let spaces = 8 - column % 8;
                out.extend(std::iter::repeat_n(' ', spaces));
                column += spaces;
            }
            '\n' | '\r' => {
                out.push(c);
                column = 0;
            }
            _ => {
                out.push(c);
                column += 1;
            }
        }
    }
    out
}

/// `TextWrapper._split`: the chunks `wordsep_re.split` yields, as `[start, end)` ranges.
///
/// `wordsep_re` always matches at the current position (whitespace runs, em-dashes, or a lazy
/// run of non-whitespace that ends at a hyphen between letters, before whitespace or the end,
/// or before an em-dash), so the split is exactly the sequence of its matches.
fn split_chunks(s: &[char]) -> Vec<(usize, usize)> {
    let n = s.len();
    let at = |i: usize| -> Option<char> { s.get(i).copied() };
    // `-{2,}(?=\w)` starting at `i`: a run of at least two hyphens followed by a word character.
    let em_dash_at = |i: usize| -> Option<usize> {
        let mut j = i;
        while at(j) == Some('-') {
            j += 1;
        }
        (j - i >= 2 && at(j).is_some_and(is_word)).then_some(j)
    };
    let mut chunks = Vec::new();
    let mut p = 0;
    while p < n {
        let end = if is_ws(s[p]) {
            let mut q = p;
            while q < n && is_ws(s[q]) {
                q += 1;
            }
            q
        } else if let Some(q) = (p > 0 && is_word_punct(s[p - 1]))
            .then(|| em_dash_at(p))
            .flatten()
        {
            q
        } else {
            let mut q = p + 1;
            loop {
                // Hyphenated word: `-(?:(?<=lt{2}-)|(?<=lt-lt-))(?=lt-?lt)`.
                if at(q) == Some('-') {
                    let behind = (q >= 2 && is_letter(s[q - 2]) && is_letter(s[q - 1]))
                        || (q >= 3
                            && is_letter(s[q - 3])
                            && s[q - 2] == '-'
                            && is_letter(s[q - 1]));
                    let ahead = at(q + 1).is_some_and(is_letter)
                        && (at(q + 2).is_some_and(is_letter)
                            || (at(q + 2) == Some('-') && at(q + 3).is_some_and(is_letter)));
                    if behind && ahead {
                        break q + 1;
                    }
                }
                // End of word: `(?=ws|\Z)`.
                if q == n || is_ws(s[q]) {
                    break q;
                }
                // Before an em-dash: `(?<=wp)(?=-{2,}\w)`.
                if is_word_punct(s[q - 1]) && em_dash_at(q).is_some() {
                    break q;
                }
                q += 1;
            }
        };
        chunks.push((p, end));
        p = end;
    }
    chunks
}

/// Python `textwrap.wrap(line, width=width, replace_whitespace=False, drop_whitespace=False)`.
///
/// Widths count code points, as CPython does. `width` must be at least 1. Linear in the
/// length of `line`: a chunk longer than a line is consumed from its front, never copied.
pub fn wrap(line: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let s = expand_tabs(line);
    // textwrap's chunk stack as ranges of `s`, top (`chunks[-1]`) at the end.
    let mut chunks = split_chunks(&s);
    chunks.reverse();
    let mut lines = Vec::new();
    let mut current: Vec<(usize, usize)> = Vec::new();
    while !chunks.is_empty() {
        current.clear();
        let mut current_len = 0usize;
        while let Some(&(a, b)) = chunks.last() {
            if current_len + (b - a) <= width {
                current_len += b - a;
                current.push((a, b));
                chunks.pop();
            } else {
                break;
            }
        }
        if let Some(top) = chunks.last_mut()
            && top.1 - top.0 > width
        {
            current.push(take_long_word_piece(&s, top, current_len, width));
        }
        if !current.is_empty() {
            lines.push(current.iter().flat_map(|&(a, b)| &s[a..b]).collect());
        }
    }
    lines
}

/// `TextWrapper._handle_long_word` with `break_long_words` and `break_on_hyphens`: the piece
/// of the long chunk `top` that goes on the current line; `top` keeps the rest.
fn take_long_word_piece(
    s: &[char],
    top: &mut (usize, usize),
    current_len: usize,
    width: usize,
) -> (usize, usize) {
    let space_left = width.saturating_sub(current_len);
    let chunk = &s[top.0..top.1];
    let mut end = space_left.min(chunk.len());
    if chunk.len() > space_left {
        // `chunk.rfind('-', 0, space_left)`, used only if non-hyphens precede it.
        if let Some(hyphen) = chunk[..end].iter().rposition(|&c| c == '-')
            && hyphen > 0
            && chunk[..hyphen].iter().any(|&c| c != '-')
        {
            end = hyphen + 1;
        }
    }
    let piece = (top.0, top.0 + end);
    top.0 += end;
    piece
}

/// The reference's `wrap_lines`: split on `\n`, keep empty lines, wrap every other line.
pub fn wrap_lines(text: &str, width: usize) -> Vec<String> {
    let mut out = Vec::new();
    for line in text.split('\n') {
        if line.is_empty() {
            out.push(String::new());
        } else {
            out.extend(wrap(line, width));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_whitespace_at_break_points() {
        let line = "Regardless of your feelings on GC, it is pretty clearly a massive boon to making code safe.";
        assert_eq!(
            wrap(line, 80),
            vec![
                "Regardless of your feelings on GC, it is pretty clearly a massive boon to making",
                " code safe."
            ]
        );
    }

    #[test]
    fn breaks_hyphenated_domains() {
        let line = "  * 【1†References and Borrowing - The Rust Programming Language†doc.rust-lang.org】 A reference";
        let lines = wrap(line, 80);
        assert_eq!(
            lines[0],
            "  * 【1†References and Borrowing - The Rust Programming Language†doc.rust-"
        );
        assert_eq!(lines[1], "lang.org】 A reference");
    }
}
