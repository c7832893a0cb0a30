//! Compute kernels over weights that stay in their checkpoint form (memory-mapped bf16/f32,
//! packed MXFP4) and over the KV cache (`attention`). Everything here works on plain slices;
//! the model code only calls the `linear*` entry points and `attention::attend`, so faster
//! kernels (SIMD, 8-bit activations) replace bodies, not callers.
//!
//! Shape conventions: activations are row-major `[tokens, features]` f32. A weight is either
//! output-major `[out, in]` (nn.Linear, packed MXFP4) or input-major `[in, out]` (the bf16
//! expert layout). Two paths per weight kind:
//! - few tokens (decode): fused dot products over the stored rows, one pass over the weights;
//! - many tokens (prefill): a chunk of rows is expanded into a small f32 tile that stays in
//!   cache and multiplied with all tokens at once by `gemm` (the GEMM library candle's CPU
//!   backend uses). Only a tile per task exists at a time, never a whole expanded matrix.

#[cfg(target_arch = "x86_64")]
pub(crate) mod amx;
pub(crate) mod attention;
pub mod bandwidth;
pub mod dense;
pub mod isa;
pub mod linear;
pub mod mxfp4;
pub mod q8;

use rayon::prelude::*;

/// Runs an `#[inline(always)]` loop compiled once more with AVX-512 enabled when the CPU has
/// it, so the compiler vectorizes it 16 wide instead of the baseline's 4; both copies do the
/// same IEEE operations in the same order, so the results are identical.
macro_rules! with_avx512 {
    ($body:expr) => {{
        #[cfg(target_arch = "x86_64")]
        {
            #[target_feature(enable = "avx512f")]
            fn wide<R>(f: impl FnOnce() -> R) -> R {
                f()
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: AVX-512F was just detected; `wide` only enables it for `$body`.
                unsafe { wide(|| $body) }
            } else {
                $body
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            $body
        }
    }};
}

/// Up to this many tokens, a weight row is dotted with each token directly.
pub const SMALL_BATCH: usize = 4;

/// A raw pointer that rayon tasks may share because each writes a disjoint part of the output.
#[derive(Clone, Copy)]
pub(crate) struct SharedOut(pub(crate) *mut f32);
// SAFETY: the pointer is only dereferenced in `unsafe` code whose contract gives each task
// disjoint elements (distinct output rows or columns, or a task's own scratch buffer), while
// the `&mut` it came from is held by the caller for the whole parallel section.
unsafe impl Send for SharedOut {}
// SAFETY: as for `Send`: shared between tasks, but no two write the same element.
unsafe impl Sync for SharedOut {}

impl SharedOut {
    /// Pointer to element `i`. A method (not field access) so closures capture the whole
    /// `Sync` wrapper rather than the raw pointer.
    #[inline]
    pub(crate) fn at(self, i: usize) -> *mut f32 {
        self.0.wrapping_add(i)
    }
}

/// How a tile of `n` weight rows over `k` inputs lies in memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TileLayout {
    /// `[n, k]` row-major: each output's weights together (output-major matrices).
    Rows,
    /// `[k, n]` row-major: each input's weights together (input-major matrices).
    Cols,
}

/// `y[t, j0 + j] = Σ_c x[t, c] · W[j, c]` for a tile `W` of `n` rows of length `k` laid out
/// as `layout` says, where `y` has row stride `ldy`.
///
/// # Safety
/// `y` must be valid for writes at `t·ldy + j0 + j` for all `t < m`, `j < n`, and no other
/// thread may touch those elements meanwhile.
pub(crate) unsafe fn gemm_tile(
    x: &[f32],
    m: usize,
    k: usize,
    (tile, n, layout): (&[f32], usize, TileLayout),
    y: SharedOut,
    ldy: usize,
    j0: usize,
) {
    // `gemm` reads through raw pointers: the operands' sizes are checked, not assumed.
    assert!(x.len() >= m * k && tile.len() >= n * k, "gemm_tile shapes");
    // rhs is Wᵀ [k, n]: read from an [n, k] tile with column stride k and row stride 1, from
    // a [k, n] one with column stride 1 and row stride n.
    let strides = match layout {
        TileLayout::Rows => (k, 1),
        TileLayout::Cols => (1, n),
    };
    // SAFETY: the sizes are asserted; the destination is the caller's contract.
    unsafe { gemm_into(x, m, k, tile, n, strides, y, ldy, j0) }
}

/// `y[t, j0 + j] = Σ_i x[t, i] · rhs[i, j]`, `x` `[m, k]` row-major and `rhs` `[k, n]` read
/// from `tile` with the (column, row) strides `rhs_strides`.
///
/// # Safety
/// As [`gemm_tile`]; besides, `x` must hold `m·k` elements and the `[k, n]` view with
/// `rhs_strides` must lie inside `tile`.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_into(
    x: &[f32],
    m: usize,
    k: usize,
    tile: &[f32],
    n: usize,
    rhs_strides: (usize, usize),
    y: SharedOut,
    ldy: usize,
    j0: usize,
) {
    // SAFETY: lhs is x [m, k] row-major and rhs the [k, n] view of `tile`, both inside their
    // slices (the callers assert the sizes and pass strides that fit them); the destination
    // is the caller's contract.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            y.at(j0),
            1,
            ldy as isize,
            false,
            x.as_ptr(),
            1,
            k as isize,
            tile.as_ptr(),
            rhs_strides.0 as isize,
            rhs_strides.1 as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Runs `f(r0, r1)` over `[0, rows)` in chunks of `chunk` rows on the current rayon pool.
pub(crate) fn for_row_chunks(rows: usize, chunk: usize, f: impl Fn(usize, usize) + Sync + Send) {
    let chunk = chunk.max(1);
    let n = rows.div_ceil(chunk);
    (0..n).into_par_iter().for_each(|i| {
        let r0 = i * chunk;
        f(r0, (r0 + chunk).min(rows));
    });
}

#[inline]
pub fn bf16_to_f32(bits: u16) -> f32 {
    f32::from_bits((bits as u32) << 16)
}

/// Rounds every value to the nearest bf16 (ties to even), kept in f32.
pub fn round_to_bf16(values: &mut [f32]) {
    for v in values {
        *v = half::bf16::from_f32(*v).to_f32();
    }
}

/// Σ a[i]·b[i] with eight independent accumulators so the loop vectorizes.
#[inline]
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    dot_widened::<8, f32>(a, b, |v| v)
}

/// Σ x[i]·w[i] for bf16 weights stored as raw bits.
#[inline]
pub fn dot_bf16(x: &[f32], w: &[u16]) -> f32 {
    dot_widened::<16, u16>(x, w, bf16_to_f32)
}

/// Σ x[i]·widen(w[i]) over the shorter length, with `LANES` independent accumulators so the
/// loop vectorizes. Monomorphised per caller: the same machine code as a loop written out.
#[inline(always)]
fn dot_widened<const LANES: usize, W: Copy>(x: &[f32], w: &[W], widen: impl Fn(W) -> f32) -> f32 {
    let n = x.len().min(w.len());
    let (x, w) = (&x[..n], &w[..n]);
    let mut acc = [0.0f32; LANES];
    let mut cx = x.chunks_exact(LANES);
    let mut cw = w.chunks_exact(LANES);
    for (a, b) in (&mut cx).zip(&mut cw) {
        for i in 0..LANES {
            acc[i] += a[i] * widen(b[i]);
        }
    }
    let mut tail = 0.0;
    for (a, &b) in cx.remainder().iter().zip(cw.remainder()) {
        tail += a * widen(b);
    }
    acc.iter().sum::<f32>() + tail
}

/// `e^x` to within 2 ulp for `x` in [-87, 88] (clamped outside), in arithmetic that
/// vectorizes: `2^n · p(r)` with `n = round(x / ln 2)`, `r = x − n·ln 2` split in two parts for
/// accuracy, and a degree-6 Taylor polynomial on |r| ≤ ln 2 / 2. `n` comes out of the
/// rounding addition's bits (a float-to-int cast would be scalarized: Rust's saturates).
#[inline(always)]
pub(crate) fn exp_approx(x: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75; // ln 2 to 17 bits, so n·LN2_HI is exact
    const LN2_LO: f32 = 1.428_606_8e-6;
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: adding it rounds to an integer
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * LOG2E + MAGIC;
    let n = shifted - MAGIC;
    // |n| ≤ 127, so the integer sits in the low mantissa bits of `shifted`.
    let n_bits = shifted.to_bits().wrapping_sub(MAGIC.to_bits());
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    p * f32::from_bits(n_bits.wrapping_add(127) << 23)
}

/// gpt-oss's clamped SwiGLU over interleaved `[gate, up]` pairs: `(up + 1) · gate · σ(1.702 ·
/// gate)` with gate ≤ `limit` and |up| ≤ `limit`. `exact` uses the standard library's `exp`
/// (the f32/bf16 reference paths); otherwise [`exp_approx`], which vectorizes: the q8 path
/// quantizes the result to 8 bits right after, far coarser than its 2 ulp. Rows run in
/// parallel on the current rayon pool.
pub(crate) fn swiglu(gate_up: &[f32], limit: f32, exact: bool, out: &mut [f32]) {
    assert_eq!(gate_up.len(), 2 * out.len(), "swiglu shapes");
    const CHUNK: usize = 8192;
    out.par_chunks_mut(CHUNK)
        .zip(gate_up.par_chunks(2 * CHUNK))
        .for_each(|(out, pairs)| {
            if exact {
                swiglu_body(out, pairs, limit, f32::exp);
            } else {
                with_avx512!(swiglu_body(out, pairs, limit, exp_approx));
            }
        });
}

#[inline(always)]
fn swiglu_body(out: &mut [f32], pairs: &[f32], limit: f32, exp: impl Fn(f32) -> f32) {
    for (o, pair) in out.iter_mut().zip(pairs.chunks_exact(2)) {
        // `if` rather than `min`/`clamp`, whose NaN rules keep the loop from vectorizing (a
        // NaN stays NaN: it shows a broken kernel upstream).
        let gate = if pair[0] > limit { limit } else { pair[0] };
        let up = if pair[1] > limit {
            limit
        } else if pair[1] < -limit {
            -limit
        } else {
            pair[1]
        };
        *o = (up + 1.0) * (gate * (1.0 / (1.0 + exp(-(gate * 1.702)))));
    }
}

/// `out[i] += x[i] · w`: the MoE's weighted sum of expert rows. AVX-512 wide where the CPU
/// has it; a multiply then an add (never fused), so every width gives the same values.
pub(crate) fn add_scaled(out: &mut [f32], x: &[f32], w: f32) {
    assert_eq!(out.len(), x.len(), "add_scaled shapes");
    with_avx512!(add_scaled_body(out, x, w))
}

#[inline(always)]
fn add_scaled_body(out: &mut [f32], x: &[f32], w: f32) {
    for (o, &v) in out.iter_mut().zip(x) {
        *o += v * w;
    }
}

/// `v ← exp(v − max)` ([`exp_approx`]) for every element; returns their sum, kept in 16
/// partial sums so the loop vectorizes.
pub(crate) fn exp_minus(values: &mut [f32], max: f32) -> f32 {
    with_avx512!(exp_minus_body(values, max))
}

#[inline(always)]
fn exp_minus_body(values: &mut [f32], max: f32) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut chunks = values.chunks_exact_mut(16);
    for c in &mut chunks {
        for (v, a) in c.iter_mut().zip(acc.iter_mut()) {
            *v = exp_approx(*v - max);
            *a += *v;
        }
    }
    let mut sum = 0.0;
    for v in chunks.into_remainder() {
        *v = exp_approx(*v - max);
        sum += *v;
    }
    acc.iter().sum::<f32>() + sum
}

/// `dst ← bf16(exp(src − max))` ([`exp_approx`], rounded to nearest even) for every
/// element; returns the sum of the unrounded exponentials (16 partial sums).
pub(crate) fn exp_minus_to_bf16(src: &[f32], max: f32, dst: &mut [u16]) -> f32 {
    assert_eq!(src.len(), dst.len(), "exp_minus_to_bf16 lengths");
    with_avx512!(exp_minus_to_bf16_body(src, max, dst))
}

#[inline(always)]
fn exp_minus_to_bf16_body(src: &[f32], max: f32, dst: &mut [u16]) -> f32 {
    // Finite, positive inputs only: round to nearest even on the bits.
    let bf16 = |v: f32| {
        let bits = v.to_bits();
        (bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16) as u16
    };
    let mut acc = [0.0f32; 16];
    let mut chunks = src.chunks_exact(16);
    let mut out = dst.chunks_exact_mut(16);
    for (c, o) in (&mut chunks).zip(&mut out) {
        for ((v, d), a) in c.iter().zip(o.iter_mut()).zip(acc.iter_mut()) {
            let e = exp_approx(*v - max);
            *a += e;
            *d = bf16(e);
        }
    }
    let mut sum = 0.0;
    for (v, d) in chunks.remainder().iter().zip(out.into_remainder()) {
        let e = exp_approx(*v - max);
        sum += e;
        *d = bf16(e);
    }
    acc.iter().sum::<f32>() + sum
}

/// `v ← v · scale` for every element; returns the largest result (`floor` if larger), in 16
/// partial maxima so the loop vectorizes.
pub(crate) fn scale_max(values: &mut [f32], scale: f32, floor: f32) -> f32 {
    with_avx512!(scale_max_body(values, scale, floor))
}

#[inline(always)]
fn scale_max_body(values: &mut [f32], scale: f32, floor: f32) -> f32 {
    let mut acc = [floor; 16];
    let mut chunks = values.chunks_exact_mut(16);
    for c in &mut chunks {
        for (v, a) in c.iter_mut().zip(acc.iter_mut()) {
            *v *= scale;
            // Not `f32::max`: its NaN rules keep the loop from vectorizing.
            *a = if *v > *a { *v } else { *a };
        }
    }
    let mut max = acc.iter().fold(floor, |m, &a| if a > m { a } else { m });
    for v in chunks.into_remainder() {
        *v *= scale;
        max = if *v > max { *v } else { max };
    }
    max
}

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
    pub(crate) fn first_key(&self, pos: usize) -> usize {
        self.window.map_or(0, |w| (pos + 1).saturating_sub(w))
    }
}

/// Deterministic inputs for the kernels' unit tests.
#[cfg(test)]
pub(crate) mod test_data {
    fn xorshift(seed: u64, mul: u64) -> impl FnMut() -> u64 {
        let mut s = seed.wrapping_mul(mul) | 1;
        move || {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            s
        }
    }

    /// Values in (-3, 3), spanning signs and magnitudes.
    pub(crate) fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut next = xorshift(seed, 0x9e37_79b9_7f4a_7c15);
        (0..n)
            .map(|_| ((next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0) as f32 * 3.0)
            .collect()
    }

    pub(crate) fn bytes(n: usize, seed: u64) -> Vec<u8> {
        let mut next = xorshift(seed, 0x2545_f491_4f6c_dd1d);
        (0..n).map(|_| (next() >> 24) as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_approx_is_within_two_ulp_of_exp() {
        let mut worst = 0.0f64;
        for i in 0..=200_000 {
            let x = -87.0 + 175.0 * i as f32 / 200_000.0;
            let (got, want) = (exp_approx(x) as f64, (x as f64).exp());
            let ulp = (want as f32).to_bits();
            let step = f32::from_bits(ulp + 1) as f64 - want as f32 as f64;
            worst = worst.max((got - want).abs() / step);
        }
        assert!(worst <= 2.0, "worst error {worst} ulp");
        // Outside the range: clamped, never NaN or garbage.
        assert_eq!(exp_approx(-1e30), exp_approx(-87.0));
        assert!(exp_approx(1e30) > 1e38);
        assert_eq!(exp_approx(0.0), 1.0);
    }

    #[test]
    fn add_scaled_matches_the_plain_loop_bit_for_bit() {
        // Odd lengths leave a tail past the vector width.
        for (n, seed) in [(1usize, 1u64), (15, 2), (17, 3), (2880, 4), (2891, 5)] {
            let x = test_data::values(n, seed);
            let base = test_data::values(n, seed + 100);
            let w = 0.3173f32;
            let mut got = base.clone();
            add_scaled(&mut got, &x, w);
            let want: Vec<f32> = base.iter().zip(&x).map(|(&o, &v)| o + v * w).collect();
            let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&want), "{n} values");
        }
    }

    #[test]
    fn swiglu_approx_matches_exact() {
        let x = test_data::values(2 * 20_000, 3)
            .iter()
            .map(|v| v * 4.0)
            .collect::<Vec<_>>();
        let (mut a, mut b) = (vec![0.0; 20_000], vec![0.0; 20_000]);
        swiglu(&x, 7.0, true, &mut a);
        swiglu(&x, 7.0, false, &mut b);
        for (i, (a, b)) in a.iter().zip(&b).enumerate() {
            assert!((a - b).abs() <= 1e-6 * a.abs().max(1e-3), "{i}: {a} vs {b}");
        }
        // The clamps: gate above the limit is the limit, up is clamped both ways.
        let mut o = [0.0f32; 3];
        swiglu(&[10.0, 10.0, 7.0, 7.0, 1.0, -20.0], 7.0, true, &mut o);
        let glu7 = 7.0 / (1.0 + (-7.0f32 * 1.702).exp());
        assert_eq!(o[0], 8.0 * glu7);
        assert_eq!(o[1], 8.0 * glu7);
        assert_eq!(o[2], -6.0 * (1.0 / (1.0 + (-1.702f32).exp())));
    }

    #[test]
    fn softmax_pieces_match_their_definitions() {
        for n in [0usize, 1, 15, 16, 17, 100] {
            let x = test_data::values(n, n as u64 + 1);
            let mut a = x.clone();
            let max = scale_max(&mut a, 0.5, -1.0);
            let want_max = x.iter().map(|v| v * 0.5).fold(-1.0f32, f32::max);
            assert_eq!(max, want_max, "n={n}");
            for (a, v) in a.iter().zip(&x) {
                assert_eq!(*a, v * 0.5);
            }
            let sum = exp_minus(&mut a, max);
            let mut want_sum = 0.0f64;
            for (a, v) in a.iter().zip(&x) {
                let e = ((v * 0.5 - max) as f64).exp();
                want_sum += e;
                assert!((*a as f64 - e).abs() <= 3e-7 * e, "n={n}: {a} vs {e}");
            }
            assert!(
                (sum as f64 - want_sum).abs() <= 1e-6 * want_sum.max(1.0),
                "n={n}"
            );
        }
    }

    #[test]
    fn exp_to_bf16_rounds_like_half() {
        for n in [0usize, 5, 16, 33] {
            let x = test_data::values(n, 40 + n as u64);
            let mut e = x.clone();
            let want_sum = exp_minus(&mut e, 1.5);
            let mut bits = vec![0u16; n];
            let sum = exp_minus_to_bf16(&x, 1.5, &mut bits);
            assert!((sum - want_sum).abs() <= 1e-6 * want_sum.max(1.0));
            for (b, v) in bits.iter().zip(&e) {
                assert_eq!(*b, half::bf16::from_f32(*v).to_bits());
            }
        }
    }
}
