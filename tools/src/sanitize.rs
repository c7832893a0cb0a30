//! Control characters out of text that reaches the model or a terminal.
//!
//! Pages, programs and servers can put escape sequences in what they return: `ESC ] 52 ; ...`
//! writes the terminal's clipboard, `ESC [ 2 J` clears the screen, C1 codes such as U+009B do
//! the same on terminals that read them, a carriage return or backspaces overwrite what was
//! shown. Tool output and model text are passed through [`strip_controls`] before the model
//! reads them or a terminal shows them; only line feeds and tabs are kept.

use std::borrow::Cow;

/// True for the characters [`strip_controls`] removes: C0 controls but `\n` and `\t`, DEL, and
/// C1 controls (Unicode's `Cc` category).
pub fn is_stripped(c: char) -> bool {
    c.is_control() && c != '\n' && c != '\t'
}

/// `text` without control characters other than `\n` and `\t`; borrowed when it has none.
pub fn strip_controls(text: &str) -> Cow<'_, str> {
    if text.contains(is_stripped) {
        Cow::Owned(text.chars().filter(|&c| !is_stripped(c)).collect())
    } else {
        Cow::Borrowed(text)
    }
}

/// [`strip_controls`] in place.
pub fn strip_controls_in_place(text: &mut String) {
    if text.contains(is_stripped) {
        text.retain(|c| !is_stripped(c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escape_sequences_lose_their_control_characters() {
        let hostile = "a\x1b]52;c;aGk=\x07b\x1b[2Jc\u{9b}2Jd\u{9d}0;t\u{9c}e\r\x08\x7f\0f";
        assert_eq!(strip_controls(hostile), "a]52;c;aGk=b[2Jc2Jd0;tef");
        let mut owned = hostile.to_string();
        strip_controls_in_place(&mut owned);
        assert_eq!(owned, "a]52;c;aGk=b[2Jc2Jd0;tef");
    }

    #[test]
    fn text_newlines_tabs_and_other_unicode_are_kept() {
        let text = "line one\n\tindented — café 東京 🎉 \u{a0}\u{200b}\u{feff}";
        assert!(matches!(strip_controls(text), Cow::Borrowed(t) if t == text));
        for c in (0u32..0x20).chain(0x7f..0xa0).filter_map(char::from_u32) {
            assert_eq!(is_stripped(c), c != '\n' && c != '\t', "{:#x}", c as u32);
        }
        assert!(!is_stripped('\u{a0}'));
    }
}
