//! The o200k byte-pair encoder: pre-tokenization by the o200k pattern, then rank-ordered merges
//! exactly as tiktoken does them.
//!
//! tiktoken splits text with a backtracking regex (`fancy-regex`) because the pattern holds one
//! lookahead, `\s+(?!\S)`. That engine is slow and fails on long whitespace runs (tiktoken-rs
//! 0.12.1 panics with a regex stack overflow on two million spaces). Here the pattern runs on
//! the linear-time `regex` crate with that one alternative removed, and its effect is restored
//! by a rule (see [`Pretokenizer`]). Merging uses tiktoken's quadratic scan for short pieces and
//! a heap for long ones (same merge order: lowest rank first, leftmost on ties), so no input
//! takes more than `O(n log n)`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use rustc_hash::FxHashMap;

/// The o200k pre-tokenization pattern's alternatives, then `$($extra)` (alternatives placed just
/// before the final `\s+`).
macro_rules! o200k_pattern {
    ($($extra:literal),*) => {
        concat!(
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            "|",
            r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
            "|",
            r"\p{N}{1,3}",
            "|",
            r" ?[^\s\p{L}\p{N}]+[\r\n/]*",
            "|",
            r"\s*[\r\n]+",
            "|",
            $($extra, "|",)*
            r"\s+",
        )
    };
}

/// The o200k pre-tokenization pattern, as in openai-harmony's `public_encodings.rs` and in
/// the official `tokenizer.json` of gpt-oss.
pub const O200K_PATTERN: &str = o200k_pattern!(r"\s+(?!\S)");

/// [`O200K_PATTERN`] without its `\s+(?!\S)` alternative: every construct left has the same
/// leftmost-first meaning in the `regex` crate as in a backtracking engine.
const O200K_PATTERN_NO_LOOKAHEAD: &str = o200k_pattern!();

/// Splits text into the pieces the o200k pattern yields.
///
/// Why the lookahead can go: at a position where the first five alternatives fail and a
/// whitespace run `R` (holding no `\r`/`\n`, else `\s*[\r\n]+` would have matched) starts,
/// `\s+(?!\S)` matches all of `R` when `R` ends the text, `R` minus its last character when
/// `R` is two or more characters followed by a non-space, and fails otherwise, leaving `\s+`
/// to match the single character. The pattern without the lookahead matches all of `R` through
/// `\s+`; dropping the last character in the second case gives the same pieces. Such a match is
/// recognisable by its last character: only `\s+` can end a match in whitespace other than
/// `\r`/`\n` (the other alternatives end in a letter, mark, digit, symbol, `\r`, `\n` or `/`).
#[derive(Debug, Clone)]
pub(crate) struct Pretokenizer {
    regex: regex::Regex,
}

impl Pretokenizer {
    pub(crate) fn o200k() -> Result<Self, regex::Error> {
        Ok(Self {
            regex: regex::Regex::new(O200K_PATTERN_NO_LOOKAHEAD)?,
        })
    }

    /// Calls `piece` for every piece of `text`, in order; the pieces cover `text` exactly.
    pub(crate) fn for_each_piece(&self, text: &str, mut piece: impl FnMut(&str)) {
        let mut position = 0;
        while position < text.len() {
            let Some(found) = self.regex.find_at(text, position) else {
                // Unreachable for the o200k pattern (every character starts a match); kept so a
                // change of pattern can never loop or drop text silently.
                piece(&text[position..]);
                return;
            };
            if found.start() > position {
                piece(&text[position..found.start()]);
            }
            let mut end = found.end();
            let matched = found.as_str();
            if end < text.len()
                && let Some(last) = matched.chars().next_back()
                && last.is_whitespace()
                && last != '\r'
                && last != '\n'
                && matched.len() > last.len_utf8()
            {
                end -= last.len_utf8();
            }
            piece(&text[found.start()..end]);
            position = end;
        }
    }
}

/// Byte strings to ranks, and the merge loop.
#[derive(Debug, Clone)]
pub(crate) struct BytePairEncoder {
    ranks: FxHashMap<Box<[u8]>, u32>,
    pretokenizer: Pretokenizer,
}

/// Pieces longer than this many bytes merge through the heap.
const HEAP_MERGE_THRESHOLD: usize = 128;

impl BytePairEncoder {
    /// `ranks` must hold all 256 single bytes (checked by the caller).
    pub(crate) fn new(ranks: FxHashMap<Box<[u8]>, u32>, pretokenizer: Pretokenizer) -> Self {
        Self {
            ranks,
            pretokenizer,
        }
    }

    pub(crate) fn encode_ordinary_into(&self, text: &str, out: &mut Vec<u32>) {
        self.pretokenizer.for_each_piece(text, |piece| {
            let bytes = piece.as_bytes();
            match self.ranks.get(bytes) {
                Some(&rank) => out.push(rank),
                None if bytes.len() <= HEAP_MERGE_THRESHOLD => self.merge_short(bytes, out),
                None => self.merge_long(bytes, out),
            }
        });
    }

    fn rank(&self, bytes: &[u8]) -> u32 {
        self.ranks.get(bytes).copied().unwrap_or(u32::MAX)
    }

    /// Every single byte has a rank; a merged part is a vocabulary entry by construction.
    fn part_rank(&self, bytes: &[u8]) -> u32 {
        match self.ranks.get(bytes) {
            Some(&rank) => rank,
            None => {
                // Only reachable if the constructor's invariant is broken.
                tracing::error!(len = bytes.len(), "BPE part without a rank");
                u32::MAX
            }
        }
    }

    /// tiktoken's merge loop: boundaries with the rank of the pair starting at each.
    fn merge_short(&self, piece: &[u8], out: &mut Vec<u32>) {
        // (start of part, rank of the pair formed by this part and the next)
        let mut parts: Vec<(usize, u32)> = Vec::with_capacity(piece.len() + 1);
        for start in 0..piece.len() {
            let rank = if start + 2 <= piece.len() {
                self.rank(&piece[start..start + 2])
            } else {
                u32::MAX
            };
            parts.push((start, rank));
        }
        parts.push((piece.len(), u32::MAX));

        loop {
            let mut best = (u32::MAX, 0usize);
            for (index, &(_, rank)) in parts[..parts.len() - 1].iter().enumerate() {
                if rank < best.0 {
                    best = (rank, index);
                }
            }
            if best.0 == u32::MAX {
                break;
            }
            let index = best.1;
            parts.remove(index + 1);
            // The pair at `index` now spans parts index..index+2 of the updated list.
            parts[index].1 = self.pair_rank(piece, &parts, index);
            if index > 0 {
                parts[index - 1].1 = self.pair_rank(piece, &parts, index - 1);
            }
        }

        for window in parts.windows(2) {
            out.push(self.part_rank(&piece[window[0].0..window[1].0]));
        }
    }

    fn pair_rank(&self, piece: &[u8], parts: &[(usize, u32)], index: usize) -> u32 {
        if index + 2 < parts.len() {
            self.rank(&piece[parts[index].0..parts[index + 2].0])
        } else {
            u32::MAX
        }
    }

    /// The same merge order through a min-heap of (rank, left start): `O(n log n)`.
    fn merge_long(&self, piece: &[u8], out: &mut Vec<u32>) {
        let n = piece.len();
        // Parts are identified by their start; `next[start]` is the start of the following part
        // (or `n`), `prev[start]` the start of the previous one. `alive` marks current starts.
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.wrapping_sub(1)).collect();
        let mut alive = vec![true; n];
        let mut heap: BinaryHeap<Reverse<(u32, usize, usize, usize)>> =
            BinaryHeap::with_capacity(n);
        for start in 0..n.saturating_sub(1) {
            let rank = self.rank(&piece[start..start + 2]);
            if rank != u32::MAX {
                heap.push(Reverse((rank, start, start + 1, start + 2)));
            }
        }
        while let Some(Reverse((_, left, middle, end))) = heap.pop() {
            // Stale unless both parts are still exactly as they were when the pair was pushed.
            if !alive[left]
                || next[left] != middle
                || middle >= n
                || !alive[middle]
                || next[middle] != end
            {
                continue;
            }
            alive[middle] = false;
            next[left] = end;
            if end < n {
                prev[end] = left;
            }
            if left > 0 {
                let before = prev[left];
                let rank = self.rank(&piece[before..end]);
                if rank != u32::MAX {
                    heap.push(Reverse((rank, before, left, end)));
                }
            }
            if end < n {
                let after = next[end];
                let rank = self.rank(&piece[left..after]);
                if rank != u32::MAX {
                    heap.push(Reverse((rank, left, end, after)));
                }
            }
        }
        let mut start = 0;
        while start < n {
            out.push(self.part_rank(&piece[start..next[start]]));
            start = next[start];
        }
    }
}
