//! Attention over the KV cache: `softmax(q·kᵀ/√d ∪ sink)·v` per (token, head), causal, with an
//! optional sliding window.
//!
//! Work is split by (KV head, block of query tokens). Each task converts its KV head's keys
//! and values to f32 once and shares them among the query heads of its group (8 in gpt-oss)
//! and the tokens of its block, so both products are `gemm` calls instead of one dot product
//! per (query, key) pair. Masked-out positions are computed and then given probability zero:
//! a block of 32 queries on a 128-wide window wastes at most a fifth of its products.

use rayon::prelude::*;

pub(crate) use super::AttnShape;
use super::isa::{Isa, Level};
use super::{SharedOut, TileLayout, exp_approx, exp_minus, gemm_tile, scale_max};
use crate::kv_cache::KvElem;

/// Cache elements widened to f32 a run at a time, in a loop that vectorizes (bf16 → f32 is
/// a 16-bit shift; `half`'s per-element conversion also quiets NaNs, which keeps it scalar).
pub(crate) trait Widen: KvElem {
    fn widen(src: &[Self], dst: &mut Vec<f32>);

    /// The elements as bf16 bits, when they are bf16 (what the AMX path reads).
    fn bf16_bits(src: &[Self]) -> Option<&[u16]>;
}

impl Widen for f32 {
    fn widen(src: &[f32], dst: &mut Vec<f32>) {
        dst.extend_from_slice(src);
    }

    fn bf16_bits(_: &[f32]) -> Option<&[u16]> {
        None
    }
}

impl Widen for half::bf16 {
    fn bf16_bits(src: &[half::bf16]) -> Option<&[u16]> {
        use half::slice::HalfFloatSliceExt;
        Some(src.reinterpret_cast())
    }

    fn widen(src: &[half::bf16], dst: &mut Vec<f32>) {
        use half::slice::HalfFloatSliceExt;
        let bits: &[u16] = src.reinterpret_cast();
        let at = dst.len();
        dst.resize(at + bits.len(), 0.0);
        for (d, &b) in dst[at..].iter_mut().zip(bits) {
            *d = f32::from_bits((b as u32) << 16);
        }
    }
}

/// Query tokens per task: with 8 query heads per KV head, a 256-row product.
const QUERY_BLOCK: usize = 32;

/// Per-task buffers, reused across the tasks a thread runs.
#[derive(Default)]
struct Scratch {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    scores: Vec<f32>,
    /// Per row: the largest scaled score (or the sink), the sum of exponentials against it,
    /// and the exponentials times the values, `[rows, d]`.
    max: Vec<f32>,
    sum: Vec<f32>,
    out: Vec<f32>,
}

/// Attention of `t` new query tokens at positions `start..start + t`, `q` `[t, heads, d]`
/// (RoPE applied), over `keys`/`values` `[positions, kv_heads, d]` that already hold the new
/// tokens. `sinks` `[heads]` join each softmax as one extra logit with no value. Returns
/// `[t, heads, d]`.
///
/// `bf16_products`: an instruction set with which the two products may take bf16 inputs
/// (queries and probabilities rounded to bf16; the cache is already bf16) — with AMX, many
/// queries at once go through the tile kernels of [`super::amx::attention`]. `None` keeps
/// every product in f32 (the reference path).
#[allow(clippy::too_many_arguments)]
pub(crate) fn attend<E: Widen>(
    shape: &AttnShape,
    q: &[f32],
    t: usize,
    start: usize,
    keys: &[E],
    values: &[E],
    sinks: &[f32],
    bf16_products: Option<Isa>,
) -> Vec<f32> {
    Inputs {
        shape,
        q,
        t,
        start,
        keys,
        values,
        sinks,
    }
    .attend(bf16_products)
}

/// The arguments of one [`attend`] call.
#[derive(Clone, Copy)]
struct Inputs<'a, E> {
    shape: &'a AttnShape,
    q: &'a [f32],
    t: usize,
    start: usize,
    keys: &'a [E],
    values: &'a [E],
    sinks: &'a [f32],
}

impl<E: Widen> Inputs<'_, E> {
    /// [`attend`]: the AMX path where it applies, else the f32 path with the default limits.
    fn attend(&self, bf16_products: Option<Isa>) -> Vec<f32> {
        #[cfg(target_arch = "x86_64")]
        if let Some(out) = bf16_products.and_then(|isa| self.amx(isa)) {
            return out;
        }
        let _ = bf16_products;
        let limits = Limits {
            key_chunk: KEY_CHUNK,
            score_cap: SCORE_CAP,
            min_split: MIN_SPLIT,
            tasks_wanted: 4 * rayon::current_num_threads(),
        };
        self.within(limits)
    }

    /// The AMX-BF16 path, when `isa` has AMX, the keys are bf16, the head dimension is the tiles'
    /// and there are at least 16 query rows (tokens × heads of a group); else `None`.
    #[cfg(target_arch = "x86_64")]
    fn amx(&self, isa: Isa) -> Option<Vec<f32>> {
        use super::amx::attention::{HEAD_DIM, PackedKv, Scratch, attend_block};
        let (shape, t, start) = (self.shape, self.t, self.start);
        let (nh, nkv, d) = (shape.heads, shape.kv_heads, shape.head_dim);
        let group = nh / nkv;
        if isa.level() != Level::Amx || d != HEAD_DIM || t * group < 16 {
            return None;
        }
        let (kb, vb) = (E::bf16_bits(self.keys)?, E::bf16_bits(self.values)?);
        let (_, block_len) = self.query_blocks(SCORE_CAP);
        let kv = PackedKv::pack(kb, vb, nkv, shape.first_key(start), start + t);
        let mut out = vec![0.0f32; t * nh * d];
        let shared = SharedOut(out.as_mut_ptr());
        for_each_block(nkv, t, block_len, |s: &mut Scratch, g, tokens| {
            // SAFETY: `isa` is the AMX level, which detection offers only with AMX-BF16 and
            // AVX-512 BF16 present and tile data permitted; `out` is [t, heads, 64] and this
            // task alone writes the rows (its tokens, the heads of group g).
            unsafe { attend_block(s, shape, &kv, self.q, start, g, tokens, self.sinks, shared) };
        });
        Some(out)
    }

    /// Keys a block of queries sees at most (`span`), and the block length that keeps a
    /// block's scores (`[block × heads of a group, span]`) within `score_cap`.
    fn query_blocks(&self, score_cap: usize) -> (usize, usize) {
        let (shape, end) = (self.shape, self.start + self.t);
        let group = shape.heads / shape.kv_heads;
        let span = shape.window.map_or(end, |w| (w + QUERY_BLOCK).min(end));
        (
            span,
            (score_cap / (group * span).max(1)).clamp(1, QUERY_BLOCK),
        )
    }
}

/// `task(scratch, g, tokens)` for every KV head `g` and block of `block_len` query tokens of
/// `0..t`, in parallel; each thread reuses one scratch across the tasks it runs.
fn for_each_block<S: Default>(
    nkv: usize,
    t: usize,
    block_len: usize,
    task: impl Fn(&mut S, usize, std::ops::Range<usize>) + Send + Sync,
) {
    (0..nkv * t.div_ceil(block_len))
        .into_par_iter()
        .for_each_init(S::default, |s, i| {
            let (g, block) = (i % nkv, i / nkv);
            task(s, g, block * block_len..((block + 1) * block_len).min(t));
        });
}

/// Keys (and values) converted to f32 at a time: a task's scratch stays small however long
/// the context is.
const KEY_CHUNK: usize = 4096;
/// Most scores a task holds (`[queries × heads of a group, keys]`), 8 MiB: at long contexts a
/// task takes fewer queries.
const SCORE_CAP: usize = 2 << 20;
/// Fewest keys per task when a KV head's keys are split over several tasks.
const MIN_SPLIT: usize = 1024;

#[derive(Clone, Copy)]
struct Limits {
    key_chunk: usize,
    score_cap: usize,
    min_split: usize,
    /// Tasks that keep every core busy; a decode step (one block of queries) with fewer KV
    /// heads than that splits each head's keys into ranges of at least `min_split`, merged
    /// with the online-softmax rule.
    tasks_wanted: usize,
}

impl<E: Widen> Inputs<'_, E> {
    /// The f32 path, its work split as `limits` say.
    fn within(&self, limits: Limits) -> Vec<f32> {
        let Inputs {
            shape,
            q,
            t,
            start,
            keys,
            values,
            sinks,
        } = *self;
        let (nh, nkv, d) = (shape.heads, shape.kv_heads, shape.head_dim);
        let group = nh / nkv;
        assert!(
            q.len() == t * nh * d
                && keys.len() >= (start + t) * nkv * d
                && values.len() == keys.len()
                && sinks.len() == nh,
            "attention shapes"
        );
        let (span, block_len) = self.query_blocks(limits.score_cap);
        let blocks = t.div_ceil(block_len);
        let splits = if blocks == 1 {
            limits
                .tasks_wanted
                .div_ceil(nkv)
                .min(span / limits.min_split.max(1))
                .max(1)
        } else {
            1
        };
        let job = Job {
            inputs: *self,
            scale: 1.0 / (d as f32).sqrt(),
            key_chunk: limits.key_chunk.max(1),
        };
        let mut out = vec![0.0f32; t * nh * d];
        if splits == 1 {
            let shared = SharedOut(out.as_mut_ptr());
            for_each_block(nkv, t, block_len, |s: &mut Scratch, g, tokens| {
                let (t0, t1) = (tokens.start, tokens.end);
                let keys = shape.first_key(start + t0)..start + t1;
                job.partial(s, g, t0..t1, keys, Some(&sinks[g * group..(g + 1) * group]));
                for (row, o) in s.out.chunks_exact_mut(d).enumerate() {
                    let inv = 1.0 / s.sum[row];
                    o.iter_mut().for_each(|v| *v *= inv);
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
            return out;
        }
        // Split keys: each task leaves its rows' max, sum and weighted values; the merge rescales
        // them to the common max, the sink joining as one more exponential.
        let (k0, k1) = (shape.first_key(start), start + t);
        let per = (k1 - k0).div_ceil(splits);
        let parts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..nkv * splits)
            .into_par_iter()
            .map_init(Scratch::default, |s, task| {
                let (g, c) = (task % nkv, task / nkv);
                let c0 = (k0 + c * per).min(k1);
                job.partial(s, g, 0..t, c0..(c0 + per).min(k1), None);
                (s.max.clone(), s.sum.clone(), s.out.clone())
            })
            .collect();
        for g in 0..nkv {
            for row in 0..t * group {
                let (ti, head) = (row / group, g * group + row % group);
                let of = |c: usize| &parts[c * nkv + g];
                let max = (0..splits).fold(sinks[head], |m, c| m.max(of(c).0[row]));
                let mut denom = (sinks[head] - max).exp();
                let dst = &mut out[(ti * nh + head) * d..(ti * nh + head + 1) * d];
                for c in 0..splits {
                    let (m, l, o) = of(c);
                    let w = (m[row] - max).exp();
                    denom += l[row] * w;
                    for (a, &b) in dst.iter_mut().zip(&o[row * d..(row + 1) * d]) {
                        *a += b * w;
                    }
                }
                let inv = 1.0 / denom;
                dst.iter_mut().for_each(|v| *v *= inv);
            }
        }
        out
    }
}

/// What every task of one attention call shares.
struct Job<'a, E> {
    inputs: Inputs<'a, E>,
    scale: f32,
    key_chunk: usize,
}

impl<E: Widen> Job<'_, E> {
    /// For the rows (query tokens `tokens` × the heads of KV group `g`, token-major) against
    /// the keys in `range`, each row limited to the keys its position sees: the scaled scores'
    /// max (joined by the row's sink when `sinks` is given), the sum of exponentials against
    /// it (the sink's included), and those exponentials times the values, in `s.max`, `s.sum`
    /// and `s.out` `[rows, d]`. A row that sees none of the keys gets max −∞ and zeros.
    fn partial(
        &self,
        s: &mut Scratch,
        g: usize,
        tokens: std::ops::Range<usize>,
        range: std::ops::Range<usize>,
        sinks: Option<&[f32]>,
    ) {
        let Inputs {
            shape,
            q,
            start,
            keys,
            values,
            ..
        } = self.inputs;
        let (nh, nkv, d) = (shape.heads, shape.kv_heads, shape.head_dim);
        let group = nh / nkv;
        let (k0, k1) = (range.start, range.end);
        let (nk, m) = (k1 - k0, tokens.len() * group);
        let widen = |dst: &mut Vec<f32>, src: &[E], from: usize, to: usize| {
            dst.clear();
            for j in from..to {
                E::widen(&src[(j * nkv + g) * d..(j * nkv + g + 1) * d], dst);
            }
        };
        s.q.clear();
        for ti in tokens.clone() {
            let at = (ti * nh + g * group) * d;
            s.q.extend_from_slice(&q[at..at + group * d]);
        }
        s.scores.clear();
        s.scores.resize(m * nk, 0.0);
        for c0 in (k0..k1).step_by(self.key_chunk) {
            let c1 = (c0 + self.key_chunk).min(k1);
            widen(&mut s.k, keys, c0, c1);
            // SAFETY: `scores` is [m, nk]; this writes its columns c0 - k0 .. c1 - k0.
            unsafe {
                gemm_tile(
                    &s.q,
                    m,
                    d,
                    (&s.k, c1 - c0, TileLayout::Rows),
                    SharedOut(s.scores.as_mut_ptr()),
                    nk,
                    c0 - k0,
                );
            }
        }
        s.max.clear();
        s.sum.clear();
        for row in 0..m {
            let scores = &mut s.scores[row * nk..(row + 1) * nk];
            let pos = start + tokens.start + row / group;
            let lo = shape.first_key(pos).clamp(k0, k1) - k0;
            let hi = (pos + 1).clamp(k0, k1) - k0;
            let sink = sinks.map(|s| s[row % group]);
            let (max, sum) = if lo < hi {
                exp_against_max(&mut scores[lo..hi], self.scale, sink)
            } else {
                (sink.unwrap_or(f32::NEG_INFINITY), sink.map_or(0.0, |_| 1.0))
            };
            scores[..lo].fill(0.0);
            scores[hi.max(lo)..].fill(0.0);
            s.max.push(max);
            s.sum.push(sum);
        }
        s.out.clear();
        s.out.resize(m * d, 0.0);
        for c0 in (k0..k1).step_by(self.key_chunk) {
            let c1 = (c0 + self.key_chunk).min(k1);
            widen(&mut s.v, values, c0, c1);
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
    }
}

/// Raw dot products in, `exp(s·scale − max)` out, with `max` over the scaled scores and the
/// sink (if any); returns `max` and the sum of the exponentials, the sink's included. The
/// exponential is [`exp_approx`] (2 ulp), vectorized: at long contexts there are hundreds of
/// millions per prompt.
fn exp_against_max(scores: &mut [f32], scale: f32, sink: Option<f32>) -> (f32, f32) {
    let max = scale_max(scores, scale, sink.unwrap_or(f32::NEG_INFINITY));
    let sum = exp_minus(scores, max);
    (max, sum + sink.map_or(0.0, |sink| exp_approx(sink - max)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_data::values;

    fn max_abs_diff(got: &[f32], want: &[f32]) -> f32 {
        assert_eq!(got.len(), want.len(), "output lengths");
        got.iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    }

    /// One call's buffers, owned: what a test attends over.
    struct Case<E> {
        shape: AttnShape,
        q: Vec<f32>,
        t: usize,
        start: usize,
        keys: Vec<E>,
        values: Vec<E>,
        sinks: Vec<f32>,
    }

    impl<E: Widen> Case<E> {
        fn inputs(&self) -> Inputs<'_, E> {
            Inputs {
                shape: &self.shape,
                q: &self.q,
                t: self.t,
                start: self.start,
                keys: &self.keys,
                values: &self.values,
                sinks: &self.sinks,
            }
        }

        /// [`attend`] over these buffers.
        fn attend(&self, bf16_products: Option<Isa>) -> Vec<f32> {
            self.inputs().attend(bf16_products)
        }
    }

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

    /// Prefill from an empty cache, a chunk after a cached prefix, and single-token and
    /// three-token decode, with and without a window, across query-block boundaries; with the
    /// default limits, with tiny ones (keys in chunks of 7, blocks of 1-2 queries: the
    /// long-context path), and with each KV head's keys split over many tasks (ranges of 3
    /// keys, some seeing nothing under the window or the causal mask) and merged.
    #[test]
    fn matches_the_definition() {
        for window in [None, Some(8)] {
            let shape = AttnShape {
                heads: 4,
                kv_heads: 2,
                head_dim: 16,
                window,
            };
            for (start, t) in [(0, 1), (0, 70), (45, 37), (100, 1), (100, 3)] {
                let n = start + t;
                let case = Case {
                    shape,
                    q: values(t * 4 * 16, 1 + start as u64),
                    t,
                    start,
                    keys: values(n * 2 * 16, 2 + t as u64),
                    values: values(n * 2 * 16, 3),
                    sinks: vec![0.5, -1.0, 2.0, 0.0],
                };
                let want = naive(
                    &shape,
                    &case.q,
                    t,
                    start,
                    &case.keys,
                    &case.values,
                    &case.sinks,
                );
                let inputs = case.inputs();
                let tiny = Limits {
                    key_chunk: 7,
                    score_cap: 300,
                    min_split: MIN_SPLIT,
                    tasks_wanted: 1,
                };
                let split = Limits {
                    key_chunk: 5,
                    score_cap: SCORE_CAP,
                    min_split: 3,
                    tasks_wanted: 64,
                };
                for (label, got) in [
                    ("default", case.attend(None)),
                    ("tiny", inputs.within(tiny)),
                    ("split", inputs.within(split)),
                ] {
                    let err = max_abs_diff(&got, &want);
                    assert!(
                        err < 1e-5,
                        "{label} limits, window {window:?} start {start} t {t}: max |Δ| {err}"
                    );
                }
            }
        }
    }

    /// The AMX-BF16 path (bf16 cache, head dimension 64, at least 16 query rows) against the
    /// definition computed with the same bf16 keys and values and the queries rounded to bf16
    /// (its probabilities are rounded too: ≤ 2^-9 of each weight, so |Δ| ≤ 2^-9·max|v|): odd
    /// token counts (partial 16-row tiles and 32-key blocks), after a cached prefix, with a
    /// window; and the f32 path is taken where the AMX one does not apply.
    #[test]
    fn amx_path_matches_the_definition() {
        let Some(amx) = Isa::available().into_iter().find(|i| i.name() == "amx") else {
            eprintln!("no AMX on this CPU: the tile attention is not exercised");
            return;
        };
        // Groups of 8 query heads (gpt-oss's), and of 16, where one token fills a tile.
        let cases = [(0, 2), (0, 3), (0, 45), (37, 20), (100, 33)]
            .map(|(start, t)| (8, start, t))
            .into_iter()
            .chain([(16, 0, 1), (16, 50, 1), (16, 5, 7)]);
        for (window, (group, start, t)) in [None, Some(40)]
            .into_iter()
            .flat_map(|w| cases.clone().map(move |c| (w, c)))
        {
            let shape = AttnShape {
                heads: 2 * group,
                kv_heads: 2,
                head_dim: 64,
                window,
            };
            {
                let n = start + t;
                let q: Vec<f32> = values(t * shape.heads * 64, 7 + t as u64)
                    .iter()
                    .map(|v| v * 0.3)
                    .collect();
                let to_bf16 = |v: Vec<f32>| -> Vec<half::bf16> {
                    v.iter().map(|&x| half::bf16::from_f32(x)).collect()
                };
                let widen =
                    |x: &[half::bf16]| -> Vec<f32> { x.iter().map(|e| e.to_f32()).collect() };
                let q_rounded: Vec<f32> = q
                    .iter()
                    .map(|&x| half::bf16::from_f32(x).to_f32())
                    .collect();
                let case = Case {
                    shape,
                    q,
                    t,
                    start,
                    keys: to_bf16(values(n * 2 * 64, 8)),
                    values: to_bf16(values(n * 2 * 64, 9)),
                    sinks: (0..shape.heads)
                        .map(|h| (h % 16) as f32 * 0.25 - 2.0)
                        .collect(),
                };
                let want = naive(
                    &shape,
                    &q_rounded,
                    t,
                    start,
                    &widen(&case.keys),
                    &widen(&case.values),
                    &case.sinks,
                );
                let got = case
                    .inputs()
                    .amx(amx)
                    .expect("16 query rows or more take the tiles");
                assert_eq!(got, case.attend(Some(amx)));
                let err = max_abs_diff(&got, &want);
                assert!(
                    err < 3.0 / 512.0 * 1.5,
                    "group {group} window {window:?} start {start} t {t}: max |Δ| {err}"
                );
                // An f32 cache never takes the bf16 path: same as without an instruction set.
                let f32_cache = Case {
                    keys: widen(&case.keys),
                    values: widen(&case.values),
                    q: case.q,
                    sinks: case.sinks,
                    shape,
                    t,
                    start,
                };
                assert_eq!(f32_cache.attend(Some(amx)), f32_cache.attend(None));
            }
        }
        // Fewer than 16 query rows (one token of a group of 8) stay on the f32 path.
        let shape = AttnShape {
            heads: 16,
            kv_heads: 2,
            head_dim: 64,
            window: None,
        };
        let k: Vec<half::bf16> = values(9 * 2 * 64, 8)
            .iter()
            .map(|&x| half::bf16::from_f32(x))
            .collect();
        let case = Case {
            shape,
            q: values(16 * 64, 3),
            t: 1,
            start: 8,
            keys: k.clone(),
            values: k,
            sinks: vec![0.0; 16],
        };
        assert!(case.inputs().amx(amx).is_none());
    }

    #[test]
    fn bf16_widening_matches_half() {
        let values: Vec<half::bf16> = values(999, 9)
            .iter()
            .map(|&v| half::bf16::from_f32(v * 1e3))
            .chain([
                half::bf16::INFINITY,
                half::bf16::NEG_INFINITY,
                half::bf16::ZERO,
            ])
            .collect();
        let mut out = vec![1.0];
        half::bf16::widen(&values, &mut out);
        assert_eq!(out.len(), 1 + values.len());
        for (w, v) in out[1..].iter().zip(&values) {
            assert_eq!(w.to_bits(), v.to_f32().to_bits());
        }
    }
}
