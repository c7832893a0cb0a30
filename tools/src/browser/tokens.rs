//! Viewport sizing in o200k tokens, as the reference does it.
//!
//! The reference shows as many lines as fit in `view_tokens` tokens of the numbered text. It
//! counts a token's length as the code points of `bytes(token).decode("utf-8", "replace")`, so
//! tokens holding part of a UTF-8 sequence count as one replacement character each; that is
//! reproduced here because it decides where the viewport ends on non-ASCII pages.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::OnceLock;

use tiktoken_rs::CoreBPE;

struct Vocabulary {
    bpe: CoreBPE,
    /// Code-point length of each token's lossy UTF-8 decoding, by token id.
    lengths: Vec<usize>,
    /// The longest token in code points (128 for o200k_base).
    max_chars_per_token: usize,
}

fn vocabulary() -> Option<&'static Vocabulary> {
    static VOCAB: OnceLock<Option<Vocabulary>> = OnceLock::new();
    VOCAB
        .get_or_init(|| {
            let bpe = match tiktoken_rs::o200k_base() {
                Ok(bpe) => bpe,
                Err(e) => {
                    tracing::error!("cannot load the o200k_base vocabulary: {e}");
                    return None;
                }
            };
            // o200k_base has 200019 ids (200000 ordinary, specials above); gaps decode to
            // nothing and count 1, as the reference's `except` branch does.
            let lengths: Vec<usize> = (0..200_019u32)
                .map(|id| match bpe.decode_bytes(&[id]) {
                    Ok(bytes) => String::from_utf8_lossy(&bytes).chars().count(),
                    Err(_) => 1,
                })
                .collect();
            let max_chars_per_token = lengths.iter().copied().max().unwrap_or(128);
            Some(Vocabulary {
                bpe,
                lengths,
                max_chars_per_token,
            })
        })
        .as_ref()
}

/// Loads the vocabulary now (it takes a moment), so the first page view does not pay for it.
pub fn warm_up() {
    let _ = vocabulary();
}

/// The longest o200k token in code points (the reference's `max_chars_per_token`).
pub fn max_chars_per_token() -> usize {
    vocabulary().map_or(128, |v| v.max_chars_per_token)
}

/// The reference's `get_end_loc`: the end (exclusive) of the viewport that starts at `loc`.
///
/// With `num_lines > 0` that many lines are shown. Otherwise the numbered lines from `loc`
/// on are tokenized (at most `(view_tokens + 1) * max_chars_per_token` code points of them),
/// and the viewport ends at the line holding the end of the first `view_tokens` tokens.
pub fn end_loc(lines: &[String], loc: usize, num_lines: i64, view_tokens: usize) -> usize {
    let total = lines.len();
    let shown = if num_lines > 0 {
        usize::try_from(num_lines).unwrap_or(usize::MAX)
    } else {
        lines_in_view(lines, loc, view_tokens)
    };
    loc.saturating_add(shown).min(total)
}

fn lines_in_view(lines: &[String], loc: usize, view_tokens: usize) -> usize {
    let total = lines.len();
    let limit = (view_tokens + 1).saturating_mul(max_chars_per_token());
    // `join_lines(lines[loc:], add_line_numbers=True, offset=loc)`, built only as far as the
    // tokenizer will look.
    let mut txt = String::new();
    let mut chars = 0usize;
    for (i, line) in lines.iter().enumerate().skip(loc) {
        if i > loc {
            txt.push('\n');
            chars += 1;
        }
        let numbered = format!("L{i}: {line}");
        chars += numbered.chars().count();
        txt.push_str(&numbered);
        if chars > limit {
            break;
        }
    }
    // At least one code point per token, so short text always fits.
    if chars <= view_tokens {
        return total;
    }
    let head: String = txt.chars().take(limit).collect();
    let Some(vocab) = vocabulary() else {
        return total;
    };
    let tokens = match catch_unwind(AssertUnwindSafe(|| vocab.bpe.encode_ordinary(&head))) {
        Ok(tokens) => tokens,
        Err(_) => {
            tracing::warn!("tokenizer failed on a page; showing it without a token limit");
            return total;
        }
    };
    if tokens.len() <= view_tokens {
        return total;
    }
    let end_idx: usize = tokens[..view_tokens]
        .iter()
        .map(|&t| vocab.lengths.get(t as usize).copied().unwrap_or(1))
        .sum();
    txt.chars().take(end_idx).filter(|&c| c == '\n').count() + 1
}
