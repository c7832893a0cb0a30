//! The text clean-ups every part of a page goes through (the reference's, character for
//! character).

/// The reference's character clean-up, applied to everything a page contributes: characters
/// above the Basic Multilingual Plane up to U+1FFFF (emoji) are dropped, the lenticular brackets
/// that delimit links become white ones so page text cannot fake a link, `◼` becomes `◾`, and
/// zero-width spaces go.
pub(crate) fn clean_chars(s: &str) -> String {
    s.chars()
        .filter_map(|c| match c {
            '\u{10000}'..='\u{1FFFF}' | '\u{200B}' => None,
            '【' => Some('〖'),
            '】' => Some('〗'),
            '◼' => Some('◾'),
            c => Some(c),
        })
        .collect()
}

/// Collapses whitespace runs to one space and trims.
pub(crate) fn squash_whitespace(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}
