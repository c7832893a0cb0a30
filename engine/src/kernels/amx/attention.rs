//! AMX-BF16 attention for prefill: both products of `softmax(q·kᵀ)·v` on tiles, with f32
//! accumulation in the tiles.
//!
//! The bf16 KV cache is laid out once per call as B tiles ([`PackedKv`]): for `q·kᵀ`, 16 keys
//! side by side with their head dimensions in pairs (a transposition); for `p·v`, the values
//! of two consecutive keys interleaved per column. Queries (rounded to bf16) and
//! probabilities (computed in f32 as in the f32 path, then rounded to bf16) are the A tiles,
//! 16 rows at a time. Rounding `q` and `p` to bf16 (8 significant bits) is this path's only
//! difference from the f32 one, whose keys and values are the same bf16 numbers; the model
//! takes it only in the q8 mode, whose 8-bit activations dominate its error.

use super::{TileConfig, x86};
use crate::kernels::SharedOut;
use crate::kernels::{AttnShape, exp_approx, exp_minus_to_bf16, scale_max};
use rayon::prelude::*;

/// Head dimension the tiles are laid out for (gpt-oss's); other models take the f32 path.
pub(crate) const HEAD_DIM: usize = 64;
/// Keys per block: one A tile of probabilities (16 rows × 32 bf16).
const KEYS: usize = 32;
/// u16 per tile (16 rows × 64 bytes).
const TILE_U16: usize = 16 * 32;

/// Every tile 16 rows × 64 bytes. q·kᵀ: tmm0-1 scores, tmm2-3 the queries' two halves of the
/// head dimension, tmm4-7 keys. p·v: tmm0-3 outputs (16 columns each), tmm4 probabilities,
/// tmm5-7 values.
const BF16_TILES: [(u8, u16); 8] = [(16, 64); 8];

/// Keys and values of every KV head for positions `first..first + 32·blocks` (zeros past the
/// end), as B tiles. Per head and 32-key block: four key tiles `[16 keys][head-dim half]`,
/// row `r` = dimensions `2r, 2r + 1` of the half, column `n` = key; four value tiles (16
/// columns of the head dimension each), row `r` = keys `2r, 2r + 1`, column `c`.
pub(crate) struct PackedKv {
    first: usize,
    blocks: usize,
    keys: Vec<u16>,
    values: Vec<u16>,
}

const BLOCK_U16: usize = 4 * TILE_U16;

impl PackedKv {
    /// Packs positions `first..end` of `keys`/`values` (`[positions, kv_heads, 64]` bf16
    /// bits), heads in parallel.
    pub(crate) fn pack(
        keys: &[u16],
        values: &[u16],
        kv_heads: usize,
        first: usize,
        end: usize,
    ) -> PackedKv {
        let d = HEAD_DIM;
        assert!(
            first <= end && keys.len() >= end * kv_heads * d && values.len() == keys.len(),
            "PackedKv::pack shapes"
        );
        let blocks = (end - first).div_ceil(KEYS);
        let per_head = blocks * BLOCK_U16;
        let mut packed = PackedKv {
            first,
            blocks,
            keys: vec![0; kv_heads * per_head],
            values: vec![0; kv_heads * per_head],
        };
        packed
            .keys
            .par_chunks_mut(per_head)
            .zip(packed.values.par_chunks_mut(per_head))
            .enumerate()
            .for_each(|(g, (pk, pv))| {
                for j in first..end {
                    let local = j - first;
                    let block = local / KEYS;
                    let (sub, n) = ((local % KEYS) / 16, local % 16);
                    let k = &keys[(j * kv_heads + g) * d..][..d];
                    let v = &values[(j * kv_heads + g) * d..][..d];
                    for half in 0..2 {
                        let tile = &mut pk[block * BLOCK_U16 + (2 * sub + half) * TILE_U16..];
                        for r in 0..16 {
                            tile[r * 32 + 2 * n] = k[32 * half + 2 * r];
                            tile[r * 32 + 2 * n + 1] = k[32 * half + 2 * r + 1];
                        }
                    }
                    let (r, i) = ((local % KEYS) / 2, local % 2);
                    for chunk in 0..4 {
                        let tile = &mut pv[block * BLOCK_U16 + chunk * TILE_U16..];
                        for c in 0..16 {
                            tile[r * 32 + 2 * c + i] = v[16 * chunk + c];
                        }
                    }
                }
            });
        packed
    }

    fn key_tiles(&self, g: usize, block: usize) -> *const u16 {
        self.keys[(g * self.blocks + block) * BLOCK_U16..].as_ptr()
    }

    fn value_tiles(&self, g: usize, block: usize) -> *const u16 {
        self.values[(g * self.blocks + block) * BLOCK_U16..].as_ptr()
    }
}

/// Per-task buffers.
#[derive(Default)]
pub(crate) struct Scratch {
    q: Vec<u16>,
    scores: Vec<f32>,
    probs: Vec<u16>,
    out: Vec<f32>,
}

/// One task: query tokens `tokens` × the heads of KV group `g` (token-major rows) against
/// every key their positions see, written to `out` (`[t, heads, 64]`) rows of this task;
/// `sinks` has every head's.
///
/// # Safety
/// AMX-BF16 and AVX-512 BF16 usable (the `amx` [`crate::kernels::isa::Isa`]); no other task
/// writes these rows of `out`.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn attend_block(
    s: &mut Scratch,
    shape: &AttnShape,
    kv: &PackedKv,
    q: &[f32],
    start: usize,
    g: usize,
    tokens: std::ops::Range<usize>,
    sinks: &[f32],
    out: SharedOut,
) {
    let (nh, nkv, d) = (shape.heads, shape.kv_heads, HEAD_DIM);
    let group = nh / nkv;
    let m = tokens.len() * group;
    let m_pad = m.div_ceil(16) * 16;
    let first_pos = start + tokens.start;
    let (k0, k1) = (shape.first_key(first_pos), start + tokens.end);
    // The tile loads below read whole blocks b0..b1 of `kv`: they must exist.
    assert!(
        k0 >= kv.first
            && k1 <= kv.first + kv.blocks * KEYS
            && g < kv.keys.len() / (kv.blocks * BLOCK_U16).max(1),
        "attend_block: keys outside the packed cache"
    );
    let (b0, b1) = ((k0 - kv.first) / KEYS, (k1 - kv.first).div_ceil(KEYS));
    let cols = (b1 - b0) * KEYS;
    let origin = kv.first + b0 * KEYS;
    // Queries in bf16, zero rows past m.
    s.q.clear();
    s.q.resize(m_pad * d, 0);
    for (r, dst) in s.q.chunks_exact_mut(d).take(m).enumerate() {
        let (ti, head) = (tokens.start + r / group, g * group + r % group);
        // SAFETY: AVX-512F and AVX-512 BF16 are usable (the contract: the `amx` level requires
        // both); the slices' lengths are checked inside.
        unsafe { x86::to_bf16(&q[(ti * nh + head) * d..][..d], dst) };
    }
    // Buffers only grow: every element read below is written first.
    let grow = |v: &mut Vec<f32>, n: usize| {
        if v.len() < n {
            v.resize(n, 0.0);
        }
    };
    grow(&mut s.scores, 16 * cols);
    grow(&mut s.out, 16 * d);
    if s.probs.len() < 16 * cols {
        s.probs.resize(16 * cols, 0);
    }
    let scale = 1.0 / (d as f32).sqrt();
    // SAFETY: AMX is usable (the contract).
    let _tiles = unsafe { TileConfig::load(&BF16_TILES) };
    // One 16-row tile at a time, so its scores (16 × keys) stay in the core's cache.
    for rt in 0..m_pad / 16 {
        // SAFETY: the query tile is 16 rows of 128 bytes in `s.q`; each block's four key
        // tiles are in `kv`; `scores` holds 16 rows of `cols` f32.
        unsafe {
            x86::scores_tile(
                s.q[rt * 16 * d..].as_ptr(),
                (b0..b1).map(|b| kv.key_tiles(g, b)),
                s.scores.as_mut_ptr(),
                cols,
            );
        }
        let mut sums = [1.0f32; 16];
        for (i, sum) in sums.iter_mut().enumerate() {
            let row = rt * 16 + i;
            let probs = &mut s.probs[i * cols..(i + 1) * cols];
            if row >= m {
                probs.fill(0);
                continue;
            }
            let pos = first_pos + row / group;
            let (lo, hi) = (shape.first_key(pos) - origin, pos + 1 - origin);
            let sink = sinks[g * group + row % group];
            let scores = &mut s.scores[i * cols + lo..i * cols + hi];
            let max = scale_max(scores, scale, sink);
            *sum = exp_minus_to_bf16(scores, max, &mut probs[lo..hi]) + exp_approx(sink - max);
            probs[..lo].fill(0);
            probs[hi..].fill(0);
        }
        // SAFETY: `probs` holds 16 rows of `cols` bf16; each block's four value tiles are in
        // `kv`; `out` holds 16 rows of 64 f32.
        unsafe {
            x86::weighted_values_tile(
                s.probs.as_ptr(),
                cols,
                (b0..b1).map(|b| kv.value_tiles(g, b)),
                s.out.as_mut_ptr(),
            );
        }
        for (i, o) in s.out.chunks_exact(d).take(16).enumerate() {
            let row = rt * 16 + i;
            if row >= m {
                break;
            }
            let (ti, head) = (tokens.start + row / group, g * group + row % group);
            let inv = 1.0 / sums[i];
            for (c, &v) in o.iter().enumerate() {
                // SAFETY: ti < t and head < heads, so the element is inside `out` ([t, heads,
                // 64]); rows (tokens, heads of group g) are this task's alone (the contract).
                unsafe { *out.at((ti * nh + head) * d + c) = v * inv };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The packed layout itself, element by element.
    #[test]
    fn keys_and_values_are_laid_out_as_b_tiles() {
        let (nkv, first, end) = (3usize, 5usize, 5 + 40);
        let n = end * nkv * HEAD_DIM;
        let keys: Vec<u16> = (0..n).map(|i| i as u16).collect();
        let values: Vec<u16> = (0..n).map(|i| (i as u16).wrapping_mul(7)).collect();
        let p = PackedKv::pack(&keys, &values, nkv, first, end);
        assert_eq!(p.blocks, 2);
        for g in 0..nkv {
            for local in 0..2 * KEYS {
                let j = first + local;
                let (block, sub, n) = (local / KEYS, (local % KEYS) / 16, local % 16);
                for dim in 0..HEAD_DIM {
                    let (half, pair_row, i) = (dim / 32, (dim % 32) / 2, dim % 2);
                    let at = (g * p.blocks + block) * BLOCK_U16
                        + (2 * sub + half) * TILE_U16
                        + pair_row * 32
                        + 2 * n
                        + i;
                    let want = if j < end {
                        keys[(j * nkv + g) * HEAD_DIM + dim]
                    } else {
                        0
                    };
                    assert_eq!(p.keys[at], want, "key g={g} j={j} dim={dim}");
                    let (chunk, c) = (dim / 16, dim % 16);
                    let at = (g * p.blocks + block) * BLOCK_U16
                        + chunk * TILE_U16
                        + ((local % KEYS) / 2) * 32
                        + 2 * c
                        + local % 2;
                    let want = if j < end {
                        values[(j * nkv + g) * HEAD_DIM + dim]
                    } else {
                        0
                    };
                    assert_eq!(p.values[at], want, "value g={g} j={j} dim={dim}");
                }
            }
        }
    }
}
