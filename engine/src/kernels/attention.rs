//! Attention over the KV cache: `softmax(q·kᵀ/√d ∪ sink)·v` per (token, head), causal, with an
//! optional sliding window.
//!
//! Work is split by (KV head, block of query tokens). Each task converts its KV head's keys
//! and values to f32 once and shares them among the query heads of its group (8 in gpt-oss)
//! and the tokens of its block, so both products are `gemm` calls instead of one dot product
//! per (query, key) pair. Masked-out positions are computed and then given probability zero:
//! a block of 32 queries on a 128-wide window wastes at most a fifth of its products.

use rayon::prelude::*;

use super::{SharedOut, gemm_rows};
use crate::kv_cache::KvElem;

/// Query tokens per task: with 8 query heads per KV head, a 256-row product.
const QUERY_BLOCK: usize = 32;

/// Head layout of one attention layer.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AttnShape {
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
    /// `Some(w)`: a query at position `p` sees keys `p + 1 - w ..= p`.
    pub window: Option<usize>,
}

impl AttnShape {
    fn first_key(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }
}

/// Per-task buffers, reused across the tasks a thread runs.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    scores: Vec<f32>,
    out: Vec<f32>,
}

/// Attention of `t` new query tokens at positions `start..start + t`, `q` `[t, heads, d]`
/// (RoPE applied), over `keys`/`values` `[positions, kv_heads, d]` that already hold the new
/// tokens. `sinks` `[heads]` join each softmax as one extra logit with no value. Returns
/// `[t, heads, d]`.
pub(crate) fn attend<E: KvElem>(
    shape: &AttnShape,
    q: &[f32],
    t: usize,
    start: usize,
    keys: &[E],
    values: &[E],
    sinks: &[f32],
) -> Vec<f32> {
    let limits = Limits {
        key_chunk: KEY_CHUNK,
        score_cap: SCORE_CAP,
    };
    attend_within(shape, q, t, start, keys, values, sinks, limits)
}

/// Keys (and values) converted to f32 at a time: a task's scratch stays small however long
/// the context is.
const KEY_CHUNK: usize = 4096;
/// Most scores a task holds (`[queries × heads of a group, keys]`), 8 MiB: at long contexts a
/// task takes fewer queries.
const SCORE_CAP: usize = 2 << 20;

#[derive(Clone, Copy)]
struct Limits {
    key_chunk: usize,
    score_cap: usize,
}

#[allow(clippy::too_many_arguments)]
fn attend_within<E: KvElem>(
    shape: &AttnShape,
    q: &[f32],
    t: usize,
    start: usize,
    keys: &[E],
    values: &[E],
    sinks: &[f32],
    limits: Limits,
) -> Vec<f32> {
    let (nh, nkv, d) = (shape.heads, shape.kv_heads, shape.head_dim);
    let group = nh / nkv;
    assert!(
        q.len() == t * nh * d
            && keys.len() >= (start + t) * nkv * d
            && values.len() == keys.len()
            && sinks.len() == nh,
        "attention shapes"
    );
    let scale = 1.0 / (d as f32).sqrt();
    // Keys a block of queries sees at most, and the block size that keeps its scores in bounds.
    let span = shape
        .window
        .map_or(start + t, |w| (w + QUERY_BLOCK).min(start + t));
    let block_len = (limits.score_cap / (group * span).max(1)).clamp(1, QUERY_BLOCK);
    let key_chunk = limits.key_chunk.max(1);
    let mut out = vec![0.0f32; t * nh * d];
    let shared = SharedOut(out.as_mut_ptr());
    let blocks = t.div_ceil(block_len);
    (0..nkv * blocks)
        .into_par_iter()
        .for_each_init(Scratch::default, |s, task| {
            let (g, block) = (task % nkv, task / nkv);
            let (t0, t1) = (block * block_len, ((block + 1) * block_len).min(t));
            let (k0, k1) = (shape.first_key(start + t0), start + t1);
            let (nk, m) = (k1 - k0, (t1 - t0) * group);
            let to_f32 = |dst: &mut Vec<f32>, src: &[E], from: usize, to: usize| {
                dst.clear();
                for j in from..to {
                    let row = &src[(j * nkv + g) * d..(j * nkv + g + 1) * d];
                    dst.extend(row.iter().map(|e| e.to_f32()));
                }
            };
            s.q.clear();
            for ti in t0..t1 {
                let at = (ti * nh + g * group) * d;
                s.q.extend_from_slice(&q[at..at + group * d]);
            }
            s.scores.clear();
            s.scores.resize(m * nk, 0.0);
            for c0 in (k0..k1).step_by(key_chunk) {
                let c1 = (c0 + key_chunk).min(k1);
                to_f32(&mut s.k, keys, c0, c1);
                // SAFETY: `scores` is [m, nk]; this writes its columns c0 - k0 .. c1 - k0.
                unsafe {
                    gemm_rows(
                        &s.q,
                        m,
                        d,
                        &s.k,
                        c1 - c0,
                        SharedOut(s.scores.as_mut_ptr()),
                        nk,
                        c0 - k0,
                    );
                }
            }
            for (row, scores) in s.scores.chunks_exact_mut(nk).enumerate() {
                let (ti, head) = (t0 + row / group, g * group + row % group);
                let pos = start + ti;
                let (lo, hi) = (shape.first_key(pos) - k0, pos + 1 - k0);
                softmax_with_sink(&mut scores[lo..hi], scale, sinks[head]);
                scores[..lo].fill(0.0);
                scores[hi..].fill(0.0);
            }
            s.out.clear();
            s.out.resize(m * d, 0.0);
            for c0 in (k0..k1).step_by(key_chunk) {
                let c1 = (c0 + key_chunk).min(k1);
                to_f32(&mut s.v, values, c0, c1);
                // SAFETY: lhs is columns c0 - k0 .. c1 - k0 of `scores` [m, nk], rhs the chunk's
                // values [c1 - c0, d], dst `out` [m, d]; all in bounds, written only here.
                unsafe {
                    gemm::gemm(
                        m,
                        d,
                        c1 - c0,
                        s.out.as_mut_ptr(),
                        1,
                        d as isize,
                        true,
                        s.scores.as_ptr().add(c0 - k0),
                        1,
                        nk as isize,
                        s.v.as_ptr(),
                        1,
                        d as isize,
                        1.0,
                        1.0,
                        false,
                        false,
                        false,
                        gemm::Parallelism::None,
                    );
                }
            }
            for ti in t0..t1 {
                let src = &s.out[(ti - t0) * group * d..(ti - t0 + 1) * group * d];
                // SAFETY: rows (ti, heads of group g) belong to this task only; in bounds
                // because ti < t and the group's heads are < nh.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        src.as_ptr(),
                        shared.at((ti * nh + g * group) * d),
                        group * d,
                    );
                }
            }
        });
    out
}

/// Raw dot products in, probabilities out: `exp(s·scale − max) / (Σ exp(·) + exp(sink − max))`.
fn softmax_with_sink(scores: &mut [f32], scale: f32, sink: f32) {
    let mut max = sink;
    for s in scores.iter_mut() {
        *s *= scale;
        max = max.max(*s);
    }
    let mut denom = (sink - max).exp();
    for s in scores.iter_mut() {
        *s = (*s - max).exp();
        denom += *s;
    }
    let inv = 1.0 / denom;
    for s in scores.iter_mut() {
        *s *= inv;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_data::values;

    /// The definition, one (token, head) at a time, in f64.
    fn naive(
        shape: &AttnShape,
        q: &[f32],
        t: usize,
        start: usize,
        k: &[f32],
        v: &[f32],
        sinks: &[f32],
    ) -> Vec<f32> {
        let (nh, nkv, d) = (shape.heads, shape.kv_heads, shape.head_dim);
        let mut out = vec![0.0f32; t * nh * d];
        for ti in 0..t {
            let pos = start + ti;
            for h in 0..nh {
                let g = h / (nh / nkv);
                let qh = &q[(ti * nh + h) * d..][..d];
                // The window written out again, not taken from the code under test.
                let first = shape.window.map_or(0, |w| (pos + 1).saturating_sub(w));
                let keys: Vec<usize> = (first..=pos).collect();
                let logits: Vec<f64> = keys
                    .iter()
                    .map(|&j| {
                        let kj = &k[(j * nkv + g) * d..][..d];
                        qh.iter()
                            .zip(kj)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>()
                            / (d as f64).sqrt()
                    })
                    .collect();
                let max = logits.iter().copied().fold(sinks[h] as f64, f64::max);
                let denom: f64 = logits.iter().map(|l| (l - max).exp()).sum::<f64>()
                    + (sinks[h] as f64 - max).exp();
                for c in 0..d {
                    let acc: f64 = keys
                        .iter()
                        .zip(&logits)
                        .map(|(&j, l)| (l - max).exp() / denom * v[(j * nkv + g) * d + c] as f64)
                        .sum();
                    out[(ti * nh + h) * d + c] = acc as f32;
                }
            }
        }
        out
    }

    /// Prefill from an empty cache, a chunk after a cached prefix, and single-token decode,
    /// with and without a window, across query-block boundaries; with the default limits and
    /// with tiny ones (keys in chunks of 7, blocks of 1-2 queries: the long-context path).
    #[test]
    fn matches_the_definition() {
        for window in [None, Some(8)] {
            let shape = AttnShape {
                heads: 4,
                kv_heads: 2,
                head_dim: 16,
                window,
            };
            for (start, t) in [(0, 1), (0, 70), (45, 37), (100, 1)] {
                let n = start + t;
                let q = values(t * 4 * 16, 1 + start as u64);
                let k = values(n * 2 * 16, 2 + t as u64);
                let v = values(n * 2 * 16, 3);
                let sinks = vec![0.5, -1.0, 2.0, 0.0];
                let want = naive(&shape, &q, t, start, &k, &v, &sinks);
                let tiny = Limits {
                    key_chunk: 7,
                    score_cap: 300,
                };
                for (label, got) in [
                    ("default", attend(&shape, &q, t, start, &k, &v, &sinks)),
                    (
                        "tiny",
                        attend_within(&shape, &q, t, start, &k, &v, &sinks, tiny),
                    ),
                ] {
                    let err = got
                        .iter()
                        .zip(&want)
                        .map(|(a, b)| (a - b).abs())
                        .fold(0.0f32, f32::max);
                    assert!(
                        err < 1e-5,
                        "{label} limits, window {window:?} start {start} t {t}: max |Δ| {err}"
                    );
                }
            }
        }
    }
}
