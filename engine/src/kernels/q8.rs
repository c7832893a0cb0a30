//! 8-bit integer kernels: activations quantized per 32-block to int8 (ggml's q8_0: one f32
//! scale per block, values in -127..=127), dotted with
//! - q8_0 dense weights (attention projections, unembedding), converted from bf16 at load;
//! - packed MXFP4 expert weights, whose E2M1 codes are looked up as int8 (values ×2, so
//!   0, 1, 2, 3, 4, 6, 8, 12 and negatives, all exact) and whose E8M0 scale is a power of two.
//!
//! A block's 32 products are summed exactly in int32; only the per-block scale product is
//! floating point. Decode is memory-bound, so each kernel streams its weights exactly once.
//!
//! The SIMD paths are picked at run time ([`Isa::detect`]); every path computes the same
//! integer block sums as the portable [`Isa::SCALAR`] reference (only the order of the f32
//! accumulation of block results differs) and is unit-tested against it.

use super::SharedOut;
pub use super::isa::Isa;
use super::isa::Level;
use super::mxfp4::{BLOCK, BLOCK_BYTES, E8M0_SCALES, Mxfp4Matrix};

/// Values per quantization block.
pub const QK: usize = 32;

/// MXFP4 E2M1 codes ×2 as int8 (bit 3 is the sign), so every code is an integer.
pub const FP4_X2: [i8; 16] = [0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12];

/// [`FP4_X2`] + 12: unsigned, for `u8 × i8` instructions; the +12 is taken back with the
/// per-block activation sums ([`Q8Acts::corr`]).
const FP4_X2_U8: [u8; 16] = {
    let mut t = [0u8; 16];
    let mut i = 0;
    while i < 16 {
        t[i] = (FP4_X2[i] + 12) as u8;
        i += 1;
    }
    t
};

/// Where element `2j` (`odd` false) or `2j + 1` of block `b` of a row of `nb` blocks goes in
/// MXFP4 order: blocks go by fours (A, B, C, D) stored as [A even, B even, C even, D even,
/// A odd, B odd, C odd, D odd], so one 64-byte load of packed bytes lines up with 128
/// activations as they lie (and one 32-byte load, A and B or C and D, with 64); the blocks
/// after the last four go by pairs stored as [A even, B even, A odd, B odd], and a last odd
/// one as [even, odd].
#[inline(always)]
pub(crate) const fn mxfp4_slot(b: usize, nb: usize, j: usize, odd: bool) -> usize {
    let fours = nb / 4 * 4;
    if b < fours {
        (b / 4) * 128 + odd as usize * 64 + (b % 4) * 16 + j
    } else if b / 2 * 2 + 1 < nb {
        (b / 2) * 64 + (b % 2) * 16 + odd as usize * 32 + j
    } else {
        b * 32 + odd as usize * 16 + j
    }
}

/// Where the even and the odd elements of the pair of blocks `b`, `b + 1` (`b` even,
/// `b + 1 < nb`) start in MXFP4 order: 32 activations each, block `b`'s 16 first.
#[inline(always)]
fn mxfp4_pair(b: usize, nb: usize) -> (usize, usize) {
    (mxfp4_slot(b, nb, 0, false), mxfp4_slot(b, nb, 0, true))
}

/// Blocks per group of the AVX2 and AVX-VNNI MXFP4 kernels.
const GROUP: usize = 8;

/// The block of each int32 lane of those kernels' group sums: the order in which their
/// in-register transpose of a group's packed bytes leaves the 8 blocks.
const GROUP_LANE_BLOCKS: [usize; GROUP] = [0, 2, 4, 6, 1, 3, 5, 7];

/// Where element `2j` (`odd` false) or `2j + 1` of block `b` (inside the whole groups of 8)
/// goes in *group order*, what the AVX2 and AVX-VNNI MXFP4 kernels read: a group's 256
/// activations as 8 vectors of 32 bytes, vector `2k + odd` holding, in lane `l`, the 4
/// values that meet packed bytes `4k..4k + 4` of block `GROUP_LANE_BLOCKS[l]`. A group takes
/// the same 256 bytes in both orders, so the blocks after the last group stay in MXFP4 order.
const fn group_slot(b: usize, j: usize, odd: bool) -> usize {
    let mut lane = 0;
    while GROUP_LANE_BLOCKS[lane] != b % GROUP {
        lane += 1;
    }
    (b / GROUP) * GROUP * QK + (2 * (j / 4) + odd as usize) * 32 + lane * 4 + j % 4
}

/// Whether `isa`'s MXFP4 kernel reads activations in group order (see [`group_slot`]).
fn reads_group_order(isa: Isa) -> bool {
    matches!(isa.level(), Level::Avx2 | Level::AvxVnni)
}

/// For each 4-value word of a group in group order, the word of the group it comes from in
/// MXFP4 order (a group is a whole two fours there).
const GROUP_ORDER_WORDS: [usize; GROUP * QK / 4] = {
    let mut words = [0; GROUP * QK / 4];
    let mut b = 0;
    while b < GROUP {
        let mut k = 0;
        while k < 4 {
            let (j, mut odd) = (4 * k, 0);
            while odd < 2 {
                words[group_slot(b, j, odd == 1) / 4] = mxfp4_slot(b, GROUP, j, odd == 1) / 4;
                odd += 1;
            }
            k += 1;
        }
        b += 1;
    }
    words
};

/// One token's MXFP4-order values, scales and corrections written in group order: values by
/// [`group_slot`], and each group's scales and corrections in the lane order of its sums
/// ([`GROUP_LANE_BLOCKS`]); what follows the whole groups is copied as it is.
fn regroup_row(
    (xq, xd, corr): (&[i8], &[f32], &[i32]),
    nb: usize,
    (gq, gd, gc): (&mut [i8], &mut [f32], &mut [i32]),
) {
    let grouped = nb / GROUP * GROUP;
    let (values, rest) = (grouped * QK, nb * QK);
    for (to, from) in gq[..values]
        .chunks_exact_mut(GROUP * QK)
        .zip(xq[..values].chunks_exact(GROUP * QK))
    {
        for (w, &f) in GROUP_ORDER_WORDS.iter().enumerate() {
            to[4 * w..4 * w + 4].copy_from_slice(&from[4 * f..4 * f + 4]);
        }
    }
    gq[values..rest].copy_from_slice(&xq[values..rest]);
    for g in (0..grouped).step_by(GROUP) {
        for (lane, &b) in GROUP_LANE_BLOCKS.iter().enumerate() {
            gd[g + lane] = xd[g + b];
            gc[g + lane] = corr[g + b];
        }
    }
    gd[grouped..nb].copy_from_slice(&xd[grouped..nb]);
    gc[grouped..nb].copy_from_slice(&corr[grouped..nb]);
}

/// Rows of activations quantized per 32-block.
///
/// For MXFP4 weights the elements are reordered so the low nibbles (even elements) and high
/// nibbles (odd elements) of packed bytes line up with them (see [`mxfp4_slot`]), the
/// scale is halved to undo the ×2 of [`FP4_X2`], and `corr` holds −12·Σq per block. The AVX2
/// kernels read a copy in group order instead ([`Q8Acts::regroup_into`], made by the matmuls).
#[derive(Debug, Clone, Default)]
pub struct Q8Acts {
    pub qs: Vec<i8>,
    pub d: Vec<f32>,
    pub corr: Vec<i32>,
    pub rows: usize,
    pub cols: usize,
}

impl Q8Acts {
    /// Quantizes `x` (`[rows, cols]`, `cols` a multiple of 32), reusing the buffers.
    pub fn quantize(&mut self, x: &[f32], rows: usize, cols: usize, mxfp4_order: bool) {
        assert!(
            cols.is_multiple_of(QK) && x.len() >= rows * cols,
            "Q8Acts::quantize shapes"
        );
        self.rows = rows;
        self.cols = cols;
        let nb = cols / QK;
        self.qs.resize(rows * cols, 0);
        self.d.resize(rows * nb, 0.0);
        self.corr.resize(if mxfp4_order { rows * nb } else { 0 }, 0);
        if rows * cols == 0 {
            return;
        }
        // Rows in parallel (prefill quantizes thousands); a few rows stay on this thread.
        use rayon::prelude::*;
        const MIN_ROWS: usize = 16;
        let src = x[..rows * cols].par_chunks_exact(cols);
        let dst = self.qs.par_chunks_exact_mut(cols);
        let scales = self.d.par_chunks_exact_mut(nb);
        if mxfp4_order {
            let corr = self.corr.par_chunks_exact_mut(nb);
            src.zip(dst)
                .zip(scales)
                .zip(corr)
                .with_min_len(MIN_ROWS)
                .for_each(|(((src, dst), d), corr)| quantize_row_mxfp4(src, dst, d, corr));
        } else {
            src.zip(dst)
                .zip(scales)
                .with_min_len(MIN_ROWS)
                .for_each(|((src, dst), d)| {
                    for ((src, dst), d) in src
                        .chunks_exact(QK)
                        .zip(dst.chunks_exact_mut(QK))
                        .zip(d.iter_mut())
                    {
                        *d = quantize_block(src, dst);
                    }
                });
        }
    }

    /// Makes `self` the rows `rows` of `src`, in that order (reusing the buffers).
    pub fn gather_rows(&mut self, src: &Q8Acts, rows: impl Iterator<Item = usize>) {
        let nb = src.cols / QK;
        self.cols = src.cols;
        self.rows = 0;
        self.qs.clear();
        self.d.clear();
        self.corr.clear();
        for r in rows {
            self.qs
                .extend_from_slice(&src.qs[r * src.cols..(r + 1) * src.cols]);
            self.d.extend_from_slice(&src.d[r * nb..(r + 1) * nb]);
            if !src.corr.is_empty() {
                self.corr.extend_from_slice(&src.corr[r * nb..(r + 1) * nb]);
            }
            self.rows += 1;
        }
    }

    /// Writes into `out` the MXFP4-order activations `self` in the order `isa`'s MXFP4 kernel
    /// reads (group order for AVX2 and AVX-VNNI, [`group_slot`]), reusing its buffers; false
    /// (and `out` untouched) where that order is MXFP4 order itself.
    pub(crate) fn regroup_into(&self, isa: Isa, out: &mut Q8Acts) -> bool {
        if !reads_group_order(isa) || self.corr.is_empty() {
            return false;
        }
        let nb = self.cols / QK;
        out.qs.resize(self.qs.len(), 0);
        out.d.resize(self.d.len(), 0.0);
        out.corr.resize(self.corr.len(), 0);
        (out.rows, out.cols) = (self.rows, self.cols);
        for r in 0..self.rows {
            let (q, d) = self.row(r);
            let (rq, rb) = (r * self.cols, r * nb);
            regroup_row(
                (q, d, self.corr_row(r)),
                nb,
                (
                    &mut out.qs[rq..rq + self.cols],
                    &mut out.d[rb..rb + nb],
                    &mut out.corr[rb..rb + nb],
                ),
            );
        }
        true
    }

    /// Row `r`'s per-block corrections (MXFP4 order and its group-order copies only).
    pub fn corr_row(&self, r: usize) -> &[i32] {
        let nb = self.cols / QK;
        &self.corr[r * nb..(r + 1) * nb]
    }

    /// Row `r`: its values and block scales.
    pub fn row(&self, r: usize) -> (&[i8], &[f32]) {
        let nb = self.cols / QK;
        (
            &self.qs[r * self.cols..(r + 1) * self.cols],
            &self.d[r * nb..(r + 1) * nb],
        )
    }
}

/// One row in MXFP4 order (see [`Q8Acts`]): values placed by [`mxfp4_slot`], halved scales,
/// corrections −12·Σq. AVX-512 when the CPU has it (the same values bit for bit, as for
/// [`quantize_block`]): prefill quantizes every token's row and every expert's activations.
fn quantize_row_mxfp4(src: &[f32], dst: &mut [i8], d: &mut [f32], corr: &mut [i32]) {
    let nb = d.len();
    assert!(
        src.len() == nb * QK && dst.len() == nb * QK && corr.len() == nb,
        "quantize_row_mxfp4 shapes"
    );
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("avx512bw") {
        // SAFETY: AVX-512 F/BW were just detected (BW implies F); the lengths are asserted.
        return unsafe { x86::quantize_row_mxfp4_avx512(src, dst, d, corr) };
    }
    quantize_row_mxfp4_scalar(src, dst, d, corr);
}

fn quantize_row_mxfp4_scalar(src: &[f32], dst: &mut [i8], d: &mut [f32], corr: &mut [i32]) {
    let nb = d.len();
    for (b, block) in src.chunks_exact(QK).enumerate() {
        let (scale, inv) = block_scale(block);
        // A block's even and odd elements each land in 16 consecutive bytes.
        let (even_at, odd_at) = (mxfp4_slot(b, nb, 0, false), mxfp4_slot(b, nb, 0, true));
        let mut sum = 0i32;
        for j in 0..QK / 2 {
            let even = round_i8(block[2 * j] * inv);
            let odd = round_i8(block[2 * j + 1] * inv);
            dst[even_at + j] = even;
            dst[odd_at + j] = odd;
            sum += even as i32 + odd as i32;
        }
        d[b] = scale * 0.5;
        corr[b] = -12 * sum;
    }
}

/// `amax / 127` of a block and its inverse (0 for an all-zero block).
#[inline(always)]
fn block_scale(src: &[f32]) -> (f32, f32) {
    let mut amax = 0.0f32;
    for &v in src {
        // Not `f32::max`: its NaN rules keep the loop from vectorizing.
        let a = v.abs();
        amax = if a > amax { a } else { amax };
    }
    let scale = amax / 127.0;
    (scale, if scale > 0.0 { 1.0 / scale } else { 0.0 })
}

/// Rounds `v` (|v| ≤ 2^22) to the nearest integer, ties to even, with two adds that
/// vectorize on baseline x86-64 (`round_ties_even` there is a libm call per value).
#[inline(always)]
fn round_i8(v: f32) -> i8 {
    const MAGIC: f32 = 12_582_912.0; // 1.5 · 2^23: the sum has no fraction bits left
    ((v + MAGIC) - MAGIC) as i32 as i8
}

/// Quantizes one block of 32 into `dst` (round half to even); returns its scale. AVX2 when
/// the CPU has it (the same values bit for bit: `vcvtps2dq` rounds half to even too).
#[inline]
fn quantize_block(src: &[f32], dst: &mut [i8]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    if src.len() == QK && dst.len() == QK && std::arch::is_x86_feature_detected!("avx2") {
        // SAFETY: AVX2 was just detected and both blocks hold exactly 32 elements.
        return unsafe { x86::quantize_block_avx2(src, dst) };
    }
    quantize_block_scalar(src, dst)
}

fn quantize_block_scalar(src: &[f32], dst: &mut [i8]) -> f32 {
    let (scale, inv) = block_scale(src);
    for (q, &v) in dst.iter_mut().zip(src) {
        *q = round_i8(v * inv);
    }
    scale
}

/// Σ over blocks of (w·x in int32) · wd · xd for q8_0 weights and plain-order activations.
#[inline]
pub fn dot_q8_0(isa: Isa, wq: &[i8], wd: &[f32], xq: &[i8], xd: &[f32]) -> f32 {
    let nb = wd.len().min(xd.len());
    assert!(
        wq.len() >= nb * QK && xq.len() >= nb * QK,
        "dot_q8_0 shapes"
    );
    match isa.level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: only detection makes an `Isa` (isa.rs), and it offers AVX2 only with AVX2 and
        // FMA present; the assert gives `wq` and `xq` nb·32 values.
        Level::Avx2 => unsafe { x86::dot_q8_0_avx2(wq, wd, &[(xq, xd)], nb)[0] },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; AVX-VNNI is offered only above AVX2 and when detected.
        Level::AvxVnni => unsafe { x86::dot_q8_0_avxvnni(wq, wd, &[(xq, xd)], nb)[0] },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; these levels are offered only when AVX2, FMA and AVX-512
        // F/BW/DQ/VL/VNNI were all detected.
        Level::Avx512Vnni | Level::Amx => unsafe { x86::dot_q8_0_avx512(wq, wd, xq, xd, nb) },
        _ => dot_q8_0_scalar(wq, wd, xq, xd, nb),
    }
}

/// [`dot_q8_0`] of one row with `N` activation rows at once: the row is read once (prefill).
#[inline]
pub fn dot_q8_0_tokens<const N: usize>(
    isa: Isa,
    wq: &[i8],
    wd: &[f32],
    xs: &[(&[i8], &[f32]); N],
) -> [f32; N] {
    let nb = wd.len();
    assert!(
        wq.len() >= nb * QK && xs.iter().all(|(q, d)| q.len() >= nb * QK && d.len() >= nb),
        "dot_q8_0_tokens shapes"
    );
    match isa.level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: only detection makes an `Isa` (isa.rs), and it offers AVX2 only with AVX2 and
        // FMA present; the assert gives `wq` and every token nb·32 values.
        Level::Avx2 => unsafe { x86::dot_q8_0_avx2(wq, wd, xs, nb) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; AVX-VNNI is offered only above AVX2 and when detected.
        Level::AvxVnni => unsafe { x86::dot_q8_0_avxvnni(wq, wd, xs, nb) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: only detection makes an `Isa` (isa.rs), and these levels only with AVX2, FMA
        // and AVX-512 F/BW/DQ/VL/VNNI detected; the assert gives `wq` and every token nb·32
        // values and every token nb scales (nb = wd.len()).
        Level::Avx512Vnni | Level::Amx => unsafe { x86::dot_q8_0_avx512_tokens(wq, wd, xs, nb) },
        _ => xs.map(|(xq, xd)| dot_q8_0(isa, wq, wd, xq, xd)),
    }
}

fn dot_q8_0_scalar(wq: &[i8], wd: &[f32], xq: &[i8], xd: &[f32], nb: usize) -> f32 {
    let mut acc = 0.0f32;
    for b in 0..nb {
        let w = &wq[b * QK..(b + 1) * QK];
        let x = &xq[b * QK..(b + 1) * QK];
        let s: i32 = w.iter().zip(x).map(|(&a, &b)| a as i32 * b as i32).sum();
        acc += s as f32 * (wd[b] * xd[b]);
    }
    acc
}

/// Σ over blocks of (FP4×2 codes · x in int32) · 2^(e-127) · xd for one packed MXFP4 row and
/// one row of activations quantized in MXFP4 order (see [`Q8Acts`]; `corr` its sums).
#[inline]
pub fn dot_mxfp4_q8(
    isa: Isa,
    blocks: &[u8],
    scales: &[u8],
    xq: &[i8],
    xd: &[f32],
    corr: &[i32],
) -> f32 {
    dot_mxfp4_q8_tokens(isa, blocks, scales, &[(xq, xd, corr)])[0]
}

/// [`dot_mxfp4_q8`] of one row with `N` activation rows at once: the row is read and
/// unpacked once (prefill).
pub fn dot_mxfp4_q8_tokens<const N: usize>(
    isa: Isa,
    blocks: &[u8],
    scales: &[u8],
    xs: &[(&[i8], &[f32], &[i32]); N],
) -> [f32; N] {
    if !reads_group_order(isa) {
        return dot_mxfp4_kernel(isa, blocks, scales, xs);
    }
    // One row at a time (tests, benchmarks): the matmuls regroup each token once instead
    // (`Q8Acts::regroup_into`).
    let nb = scales.len();
    let grouped: [(Vec<i8>, Vec<f32>, Vec<i32>); N] = std::array::from_fn(|i| {
        let (q, d, c) = xs[i];
        assert!(
            q.len() >= nb * BLOCK && d.len() >= nb && c.len() >= nb,
            "dot_mxfp4_q8 shapes"
        );
        let mut out = (vec![0; nb * BLOCK], vec![0.0; nb], vec![0; nb]);
        regroup_row(xs[i], nb, (&mut out.0, &mut out.1, &mut out.2));
        out
    });
    let xs = std::array::from_fn(|i| {
        let (q, d, c) = &grouped[i];
        (&q[..], &d[..], &c[..])
    });
    dot_mxfp4_kernel(isa, blocks, scales, &xs)
}

/// [`dot_mxfp4_q8_tokens`] with the activations in the order `isa`'s kernel reads
/// ([`Q8Acts::regroup_into`]).
#[inline]
fn dot_mxfp4_kernel<const N: usize>(
    isa: Isa,
    blocks: &[u8],
    scales: &[u8],
    xs: &[(&[i8], &[f32], &[i32]); N],
) -> [f32; N] {
    let nb = scales.len();
    assert!(
        blocks.len() >= nb * BLOCK_BYTES
            && xs
                .iter()
                .all(|(q, d, c)| q.len() >= nb * BLOCK && d.len() >= nb && c.len() >= nb),
        "dot_mxfp4_q8 shapes"
    );
    match isa.level() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: only detection makes an `Isa` (isa.rs), and it offers AVX2 only with AVX2 and
        // FMA present; nb = scales.len() and the assert gives `blocks` nb·16 bytes and every
        // token nb·32 values, nb scales and nb corrections.
        Level::Avx2 => unsafe { x86::dot_mxfp4_avx2(blocks, scales, xs, nb) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above; AVX-VNNI is offered only above AVX2 and when detected.
        Level::AvxVnni => unsafe { x86::dot_mxfp4_avxvnni(blocks, scales, xs, nb) },
        #[cfg(target_arch = "x86_64")]
        Level::Avx512Vnni | Level::Amx => {
            if std::arch::is_x86_feature_detected!("avx512vbmi") {
                // SAFETY: as above; these levels are offered only with AVX-512 F/BW/DQ/VL/VNNI
                // detected, and VBMI was detected just now.
                unsafe { x86::dot_mxfp4_avx512vbmi(blocks, scales, xs, nb) }
            } else {
                // SAFETY: as above; these levels are offered only with AVX-512 F/BW/DQ/VL/VNNI
                // detected.
                unsafe { x86::dot_mxfp4_avx512(blocks, scales, xs, nb) }
            }
        }
        _ => xs.map(|(xq, xd, _)| dot_mxfp4_scalar(blocks, scales, xq, xd, 0, nb)),
    }
}

/// Blocks `from..nb` (`from` even), with the signed table: needs no correction.
fn dot_mxfp4_scalar(
    blocks: &[u8],
    scales: &[u8],
    xq: &[i8],
    xd: &[f32],
    from: usize,
    nb: usize,
) -> f32 {
    let mut acc = 0.0f32;
    for b in from..nb {
        let block = &blocks[b * BLOCK_BYTES..(b + 1) * BLOCK_BYTES];
        let mut s = 0i32;
        for (j, &byte) in block.iter().enumerate() {
            s += FP4_X2[(byte & 0x0f) as usize] as i32 * xq[mxfp4_slot(b, nb, j, false)] as i32;
            s += FP4_X2[(byte >> 4) as usize] as i32 * xq[mxfp4_slot(b, nb, j, true)] as i32;
        }
        acc += s as f32 * (E8M0_SCALES[scales[b] as usize] * xd[b]);
    }
    acc
}

/// A dense `[rows, cols]` matrix in q8_0: int8 values, one f32 scale per 32 of a row.
#[derive(Clone)]
pub struct Q8Matrix {
    rows: usize,
    cols: usize,
    qs: Vec<i8>,
    d: Vec<f32>,
}

impl std::fmt::Debug for Q8Matrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Q8Matrix[{}x{}]", self.rows, self.cols)
    }
}

impl Q8Matrix {
    /// Quantizes row-major f32 rows produced by `row(r, out)`; `cols` must be a multiple of
    /// 32. Rows are converted in parallel on the current rayon pool.
    pub fn quantize_rows(
        rows: usize,
        cols: usize,
        row: impl Fn(usize, &mut [f32]) + Sync + Send,
    ) -> Q8Matrix {
        assert!(cols.is_multiple_of(QK), "Q8Matrix: cols % 32 != 0");
        let mut qs = vec![0i8; rows * cols];
        let mut d = vec![0.0f32; rows * cols / QK];
        use rayon::prelude::*;
        let chunk = 64;
        qs.par_chunks_mut(chunk * cols)
            .zip(d.par_chunks_mut(chunk * cols / QK))
            .enumerate()
            .for_each_init(
                || vec![0.0f32; cols],
                |buf, (i, (q, dd))| {
                    for (j, (qrow, drow)) in q
                        .chunks_exact_mut(cols)
                        .zip(dd.chunks_exact_mut(cols / QK))
                        .enumerate()
                    {
                        row(i * chunk + j, buf);
                        for ((src, dst), d) in buf
                            .chunks_exact(QK)
                            .zip(qrow.chunks_exact_mut(QK))
                            .zip(drow.iter_mut())
                        {
                            *d = quantize_block(src, dst);
                        }
                    }
                },
            );
        Q8Matrix { rows, cols, qs, d }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The int8 values, `[rows, cols]`.
    pub(crate) fn values(&self) -> &[i8] {
        &self.qs
    }

    /// The block scales, `[rows, cols / 32]`.
    pub(crate) fn scales(&self) -> &[f32] {
        &self.d
    }

    /// Bytes of weights and scales.
    pub fn bytes(&self) -> usize {
        self.qs.len() + self.d.len() * 4
    }

    /// Rows `r0..r1` of [`Q8Matrix::linear`] on this thread.
    ///
    /// # Safety
    /// `y` valid for `[x.rows, self.rows]`; no other thread writes these rows' elements.
    pub(super) unsafe fn rows_into(
        &self,
        isa: Isa,
        x: &Q8Acts,
        bias: Option<&[f32]>,
        y: SharedOut,
        r0: usize,
        r1: usize,
    ) {
        let (cols, nb) = (self.cols, self.cols / QK);
        let row = |r: usize| {
            (
                &self.qs[r * cols..(r + 1) * cols],
                &self.d[r * nb..(r + 1) * nb],
            )
        };
        // SAFETY: the caller's contract, passed on.
        unsafe {
            rows_in_passes(
                (x.rows, self.rows),
                (r0, r1),
                bias,
                y,
                row,
                |(wq, wd), ti| {
                    dot_q8_0_tokens(isa, wq, wd, &std::array::from_fn(|i| x.row(ti + i)))
                },
                |(wq, wd), ti| dot_q8_0_tokens(isa, wq, wd, &[x.row(ti)])[0],
            )
        }
    }
}

/// Rows `r0..r1` of a `[t, rows]` matmul output: each weight row (`row(r)`) is dotted with
/// the tokens in passes of [`TOKENS_PER_ROW_PASS`] (`dots(row, ti)`: tokens `ti..ti + 4`)
/// while it is in L1, the last tokens one at a time (`dot(row, ti)`), and stored with its
/// bias. The passes go by tiles of [`TOKENS_PER_TILE`] tokens, each met by all the rows
/// before the next: the tile's activations stay in L1 and the rows (a task's, ~64 KiB) in
/// L2, where row by row every pass would read its tokens' activations from L2 again.
///
/// # Safety
/// `y` valid for `[t, rows]`; no other thread writes rows `r0..r1`' elements.
unsafe fn rows_in_passes<W: Copy>(
    (t, rows): (usize, usize),
    (r0, r1): (usize, usize),
    bias: Option<&[f32]>,
    y: SharedOut,
    row: impl Fn(usize) -> W,
    dots: impl Fn(W, usize) -> [f32; TOKENS_PER_ROW_PASS],
    dot: impl Fn(W, usize) -> f32,
) {
    let store = |ti: usize, r: usize, v: f32| {
        // SAFETY: (ti, r) lies in `y`'s [t, rows] and in rows r0..r1, which the caller gives
        // this call alone.
        unsafe { *y.at(ti * rows + r) = v + bias.map_or(0.0, |b| b[r]) };
    };
    let passes_end = t / TOKENS_PER_ROW_PASS * TOKENS_PER_ROW_PASS;
    for tile in (0..passes_end).step_by(TOKENS_PER_TILE) {
        let tile_end = (tile + TOKENS_PER_TILE).min(passes_end);
        for r in r0..r1 {
            let w = row(r);
            for ti in (tile..tile_end).step_by(TOKENS_PER_ROW_PASS) {
                for (i, v) in dots(w, ti).into_iter().enumerate() {
                    store(ti + i, r, v);
                }
            }
        }
    }
    for r in r0..r1 {
        let w = row(r);
        for ti in passes_end..t {
            store(ti, r, dot(w, ti));
        }
    }
}

/// Tokens whose activations stay in L1 while a task's rows (in L2) pass over them.
const TOKENS_PER_TILE: usize = 8;
const _: () = assert!(TOKENS_PER_TILE.is_multiple_of(TOKENS_PER_ROW_PASS));

/// Tokens dotted with one weight row per pass in prefill (registers hold their sums).
const TOKENS_PER_ROW_PASS: usize = 4;

impl Mxfp4Matrix<'_> {
    /// Rows `r0..r1` of [`Mxfp4Matrix::linear_q8`] on this thread, `x` in the order `isa`'s
    /// kernel reads ([`Q8Acts::regroup_into`]).
    ///
    /// # Safety
    /// `y` valid for `[x.rows, self.rows]`; no other thread writes these rows' elements.
    pub(super) unsafe fn rows_into(
        &self,
        isa: Isa,
        x: &Q8Acts,
        bias: Option<&[f32]>,
        y: SharedOut,
        r0: usize,
        r1: usize,
    ) {
        let nb = self.cols / BLOCK;
        let row = |r: usize| {
            (
                &self.blocks[r * nb * BLOCK_BYTES..(r + 1) * nb * BLOCK_BYTES],
                &self.scales[r * nb..(r + 1) * nb],
            )
        };
        let act = |ti: usize| {
            let (q, d) = x.row(ti);
            (q, d, x.corr_row(ti))
        };
        // SAFETY: the caller's contract, passed on.
        unsafe {
            rows_in_passes(
                (x.rows, self.rows),
                (r0, r1),
                bias,
                y,
                row,
                |(b, s), ti| dot_mxfp4_kernel(isa, b, s, &std::array::from_fn(|i| act(ti + i))),
                |(b, s), ti| dot_mxfp4_kernel(isa, b, s, &[act(ti)])[0],
            )
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    //! The SIMD kernels. Helpers that only compute on registers are safe `#[target_feature]`
    //! functions (callable without `unsafe` from kernels with those features); the kernels
    //! read memory through raw pointers, so they are `unsafe fn`s whose contract is the
    //! CPU's features plus the lengths their dispatchers in `q8.rs` assert.
    use super::{BLOCK, BLOCK_BYTES, FP4_X2_U8, QK};
    use std::arch::x86_64::*;

    #[target_feature(enable = "avx2")]
    #[inline]
    fn hsum256(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_movehdup_ps(s));
        _mm_cvtss_f32(s)
    }

    /// The products of `aw` (|w|) and `sx` (x with w's signs) summed per 4 bytes into 8 int32
    /// lanes, the AVX2 way.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn dot_signed_avx2(aw: __m256i, sx: __m256i) -> __m256i {
        // |w| ≤ 127, |x| ≤ 127: pairs sum to at most 32258, no i16 saturation.
        _mm256_madd_epi16(_mm256_maddubs_epi16(aw, sx), _mm256_set1_epi16(1))
    }

    #[target_feature(enable = "avx2,avxvnni")]
    #[inline]
    fn dot_signed_avxvnni(aw: __m256i, sx: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(_mm256_setzero_si256(), aw, sx)
    }

    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
    #[inline]
    fn dot_i8_avx512(w: __m512i, x: __m512i) -> __m512i {
        let aw = _mm512_abs_epi8(w);
        let neg = _mm512_movepi8_mask(w);
        let sx = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
        _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sx)
    }

    /// One q8_0 row against `N` token rows, a block per 256-bit step: the block's |w| is
    /// computed once for every token (prefill's passes read a row once for several tokens),
    /// each token's x takes w's signs, and `$dot` (the AVX2 emulation or AVX-VNNI) sums the
    /// block's 32 products in int32.
    ///
    /// # Safety
    /// The CPU has `$features`; `wq` and every token's values hold at least `nb`·32 values.
    macro_rules! q8_0_row_kernel {
        ($name:ident, $features:literal, $dot:ident) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name<const N: usize>(
                wq: &[i8],
                wd: &[f32],
                xs: &[(&[i8], &[f32]); N],
                nb: usize,
            ) -> [f32; N] {
                let mut accs = [_mm256_setzero_ps(); N];
                for b in 0..nb {
                    if b % 2 == 0 {
                        _mm_prefetch::<_MM_HINT_T0>(
                            wq.as_ptr().wrapping_add(b * QK + PREFETCH_AHEAD).cast(),
                        );
                    }
                    // SAFETY: b < nb and the row holds nb·32 values (the contract), so the
                    // 32 bytes at b·32 are inside it.
                    let w = unsafe { _mm256_loadu_si256(wq.as_ptr().add(b * QK).cast()) };
                    let aw = _mm256_sign_epi8(w, w);
                    for i in 0..N {
                        let (xq, xd) = xs[i];
                        // SAFETY: as above, for the token's nb·32 values.
                        let x = unsafe { _mm256_loadu_si256(xq.as_ptr().add(b * QK).cast()) };
                        let s = _mm256_cvtepi32_ps($dot(aw, _mm256_sign_epi8(x, w)));
                        accs[i] = _mm256_fmadd_ps(s, _mm256_set1_ps(wd[b] * xd[b]), accs[i]);
                    }
                }
                let mut out = [0.0f32; N];
                for i in 0..N {
                    out[i] = hsum256(accs[i]);
                }
                out
            }
        };
    }

    q8_0_row_kernel!(dot_q8_0_avx2, "avx2,fma", dot_signed_avx2);
    q8_0_row_kernel!(dot_q8_0_avxvnni, "avx2,fma,avxvnni", dot_signed_avxvnni);

    /// Two blocks per 512-bit step: int32 lanes 0-7 belong to the first, 8-15 to the second.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
    #[inline]
    fn pair_scale(s0: f32, s1: f32) -> __m512 {
        _mm512_insertf32x8(_mm512_set1_ps(s0), _mm256_set1_ps(s1), 1)
    }

    /// # Safety
    /// The CPU has the enabled features; `wq` and `xq` hold at least `nb`·32 values.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
    pub(super) unsafe fn dot_q8_0_avx512(
        wq: &[i8],
        wd: &[f32],
        xq: &[i8],
        xd: &[f32],
        nb: usize,
    ) -> f32 {
        let mut acc = _mm512_setzero_ps();
        let pairs = nb / 2;
        for p in 0..pairs {
            let b = 2 * p;
            _mm_prefetch::<_MM_HINT_T0>(wq.as_ptr().wrapping_add(b * QK + PREFETCH_AHEAD).cast());
            // SAFETY: b + 1 < nb, so the 64 bytes of blocks b and b + 1 are inside both rows
            // (nb·32 values each, the contract).
            let (w, x) = unsafe {
                (
                    _mm512_loadu_si512(wq.as_ptr().add(b * QK).cast()),
                    _mm512_loadu_si512(xq.as_ptr().add(b * QK).cast()),
                )
            };
            let s = _mm512_cvtepi32_ps(dot_i8_avx512(w, x));
            let scale = pair_scale(wd[b] * xd[b], wd[b + 1] * xd[b + 1]);
            acc = _mm512_fmadd_ps(s, scale, acc);
        }
        let mut total = _mm512_reduce_add_ps(acc);
        if nb % 2 == 1 {
            let b = nb - 1;
            // SAFETY: the last block, b < nb: its 32 bytes are inside both rows.
            let (w, x) = unsafe {
                (
                    _mm256_loadu_si256(wq.as_ptr().add(b * QK).cast()),
                    _mm256_loadu_si256(xq.as_ptr().add(b * QK).cast()),
                )
            };
            let aw = _mm256_sign_epi8(w, w);
            let sx = _mm256_sign_epi8(x, w);
            let s = _mm256_dpbusd_epi32(_mm256_setzero_si256(), aw, sx);
            total += hsum256(_mm256_cvtepi32_ps(s)) * (wd[b] * xd[b]);
        }
        total
    }

    /// One q8_0 row against `N` token rows: per pair of blocks the weights' |w| and sign
    /// mask are computed once and reused for every token; block scales (wd·xd) come eight at
    /// a time from two vector loads. Leftover blocks (fewer than 8) go to the one-token kernel.
    ///
    /// # Safety
    /// The CPU has the enabled features; `wq` and every token's values hold at least `nb`·32
    /// values, `wd` and every token's scales at least `nb`.
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni")]
    pub(super) unsafe fn dot_q8_0_avx512_tokens<const N: usize>(
        wq: &[i8],
        wd: &[f32],
        xs: &[(&[i8], &[f32]); N],
        nb: usize,
    ) -> [f32; N] {
        let idx = [
            _mm512_setr_epi32(0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1),
            _mm512_setr_epi32(2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3),
            _mm512_setr_epi32(4, 4, 4, 4, 4, 4, 4, 4, 5, 5, 5, 5, 5, 5, 5, 5),
            _mm512_setr_epi32(6, 6, 6, 6, 6, 6, 6, 6, 7, 7, 7, 7, 7, 7, 7, 7),
        ];
        let mut accs = [_mm512_setzero_ps(); N];
        let groups = nb / 8;
        for g in 0..groups {
            let b0 = g * 8;
            // SAFETY: for every load of this group: b0 + 8 ≤ nb, so the 8 scales at b0 are inside
            // `wd` and each token's scales, and the 64 bytes of blocks b (b + 1 < b0 + 8) are
            // inside `wq` and each token's values (the contract's lengths).
            let ws = unsafe { _mm256_loadu_ps(wd.as_ptr().add(b0)) };
            let mut s = [_mm512_setzero_ps(); N];
            for i in 0..N {
                // SAFETY: as above.
                let xd = unsafe { _mm256_loadu_ps(xs[i].1.as_ptr().add(b0)) };
                s[i] = _mm512_castps256_ps512(_mm256_mul_ps(ws, xd));
            }
            for (p, lane) in idx.iter().enumerate() {
                let b = b0 + 2 * p;
                _mm_prefetch::<_MM_HINT_T0>(
                    wq.as_ptr().wrapping_add(b * QK + PREFETCH_AHEAD).cast(),
                );
                // SAFETY: as above.
                let w = unsafe { _mm512_loadu_si512(wq.as_ptr().add(b * QK).cast()) };
                let aw = _mm512_abs_epi8(w);
                let neg = _mm512_movepi8_mask(w);
                for i in 0..N {
                    // SAFETY: as above.
                    let x = unsafe { _mm512_loadu_si512(xs[i].0.as_ptr().add(b * QK).cast()) };
                    let sx = _mm512_mask_sub_epi8(x, neg, _mm512_setzero_si512(), x);
                    let sum = _mm512_dpbusd_epi32(_mm512_setzero_si512(), aw, sx);
                    accs[i] = _mm512_fmadd_ps(
                        _mm512_cvtepi32_ps(sum),
                        _mm512_permutexvar_ps(*lane, s[i]),
                        accs[i],
                    );
                }
            }
        }
        let done = groups * 8;
        let mut out = [0.0f32; N];
        for i in 0..N {
            let (xq, xd) = xs[i];
            // SAFETY: same features; the slices from block `done` hold (nb - done)·32 values.
            let rest = unsafe {
                dot_q8_0_avx512(
                    &wq[done * QK..],
                    &wd[done..],
                    &xq[done * QK..],
                    &xd[done..],
                    nb - done,
                )
            };
            out[i] = _mm512_reduce_add_ps(accs[i]) + rest;
        }
        out
    }

    /// # Safety
    /// The CPU has AVX2; `src` and `dst` hold at least 32 values.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn quantize_block_avx2(src: &[f32], dst: &mut [i8]) -> f32 {
        let p = src.as_ptr();
        // SAFETY: four loads of 8 cover the 32 values `src` holds (the contract).
        let v = unsafe {
            [
                _mm256_loadu_ps(p),
                _mm256_loadu_ps(p.add(8)),
                _mm256_loadu_ps(p.add(16)),
                _mm256_loadu_ps(p.add(24)),
            ]
        };
        let sign = _mm256_set1_ps(-0.0);
        let a = v.map(|x| _mm256_andnot_ps(sign, x));
        let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
        let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps(m, 1));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_movehdup_ps(m));
        let scale = _mm_cvtss_f32(m) / 127.0;
        let inv = _mm256_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
        let q = v.map(|x| _mm256_cvtps_epi32(_mm256_mul_ps(x, inv)));
        // packs interleave 128-bit lanes: bytes come out as dwords [0, 2, 4, 6, 1, 3, 5, 7].
        let packed = _mm256_packs_epi16(
            _mm256_packs_epi32(q[0], q[1]),
            _mm256_packs_epi32(q[2], q[3]),
        );
        let ordered =
            _mm256_permutevar8x32_epi32(packed, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
        // SAFETY: `dst` holds 32 bytes (the contract), all of them written here.
        unsafe { _mm256_storeu_si256(dst.as_mut_ptr().cast(), ordered) };
        scale
    }

    /// [`super::quantize_row_mxfp4`] a block per step: the amax and scale as
    /// [`super::block_scale`] computes them, `vcvtps2dq` rounding half to even as
    /// [`super::round_i8`] does, even and odd elements split by one permute each.
    ///
    /// # Safety
    /// The CPU has AVX-512 F and BW; `src` and `dst` hold `d.len()`·32 values and `corr`
    /// `d.len()`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) unsafe fn quantize_row_mxfp4_avx512(
        src: &[f32],
        dst: &mut [i8],
        d: &mut [f32],
        corr: &mut [i32],
    ) {
        let nb = d.len();
        let evens = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
        let odds = _mm512_add_epi32(evens, _mm512_set1_epi32(1));
        for b in 0..nb {
            // SAFETY: b < nb and `src` holds nb·32 values (the contract).
            let (lo, hi) = unsafe {
                let p = src.as_ptr().add(b * QK);
                (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
            };
            // Equal to the scalar running maximum for finite inputs (a NaN activation gives
            // garbage either way).
            let amax = _mm512_reduce_max_ps(_mm512_max_ps(_mm512_abs_ps(lo), _mm512_abs_ps(hi)));
            let scale = amax / 127.0;
            let inv = _mm512_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
            let qlo = _mm512_cvtps_epi32(_mm512_mul_ps(lo, inv));
            let qhi = _mm512_cvtps_epi32(_mm512_mul_ps(hi, inv));
            let even = _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(qlo, evens, qhi));
            let odd = _mm512_cvtsepi32_epi8(_mm512_permutex2var_epi32(qlo, odds, qhi));
            let (even_at, odd_at) = (
                super::mxfp4_slot(b, nb, 0, false),
                super::mxfp4_slot(b, nb, 0, true),
            );
            // SAFETY: mxfp4_slot places a block's 16 even and 16 odd values inside the row's
            // nb·32 bytes, which `dst` holds (the contract).
            unsafe {
                _mm_storeu_si128(dst.as_mut_ptr().add(even_at).cast(), even);
                _mm_storeu_si128(dst.as_mut_ptr().add(odd_at).cast(), odd);
            }
            d[b] = scale * 0.5;
            corr[b] = -12 * _mm512_reduce_add_epi32(_mm512_add_epi32(qlo, qhi));
        }
    }

    /// Bytes ahead of the current packed group to prefetch.
    const PREFETCH_AHEAD: usize = 1024;

    /// Adds the `u8 × i8` products of `u` and `x`, four per int32 lane, to `acc`.
    #[target_feature(enable = "avx2")]
    #[inline]
    fn dpbusd_avx2(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        // u ≤ 24 here, |x| ≤ 127: pairs sum to at most 6096, no i16 saturation.
        _mm256_add_epi32(
            acc,
            _mm256_madd_epi16(_mm256_maddubs_epi16(u, x), _mm256_set1_epi16(1)),
        )
    }

    #[target_feature(enable = "avx2,avxvnni")]
    #[inline]
    fn dpbusd_avxvnni(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_avx_epi32(acc, u, x)
    }

    /// The weight scales 2^(e-127) of the 8 blocks of an MXFP4 group at block `b0` (built from
    /// the exponent bits), after asking for the packed bytes a few groups ahead: the hardware
    /// prefetcher stops at 4 KiB pages (rows are contiguous, so this runs into the next row).
    ///
    /// # Safety
    /// `scales` holds at least `b0 + 8` bytes.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn group_scales(bp: *const u8, scales: &[u8], b0: usize) -> __m256 {
        let ahead = bp.wrapping_add(b0 * BLOCK_BYTES + PREFETCH_AHEAD);
        _mm_prefetch::<_MM_HINT_T0>(ahead.cast());
        _mm_prefetch::<_MM_HINT_T0>(ahead.wrapping_add(64).cast());
        // SAFETY: the 8 bytes at b0 are inside `scales` (the contract).
        let e = unsafe { _mm_loadl_epi64(scales.as_ptr().add(b0).cast()) };
        _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu8_epi32(e), 23))
    }

    /// One token's 8 block scales of a group (`ws`·xd), with the group's +12 corrections
    /// (their sums times those scales) added to `acc`.
    ///
    /// # Safety
    /// The token's scales and corrections hold at least `b0 + 8` values.
    #[target_feature(enable = "avx2,fma")]
    #[inline]
    unsafe fn token_group_scales(
        ws: __m256,
        (_, xd, corr): (&[i8], &[f32], &[i32]),
        b0: usize,
        acc: &mut __m256,
    ) -> __m256 {
        // SAFETY: the 8 values at b0 are inside both slices (the contract).
        let (xd, c) = unsafe {
            (
                _mm256_loadu_ps(xd.as_ptr().add(b0)),
                _mm256_loadu_si256(corr.as_ptr().add(b0).cast()),
            )
        };
        let s = _mm256_mul_ps(ws, xd);
        *acc = _mm256_fmadd_ps(_mm256_cvtepi32_ps(c), s, *acc);
        s
    }

    /// A group's 8 blocks of packed MXFP4 bytes (128 bytes at `p`) as the 8 vectors of +12
    /// codes that meet the group's activations in group order ([`super::group_slot`]):
    /// vector `2k` (low nibbles) and `2k + 1` (high) hold packed bytes `4k..4k + 4` of each
    /// block, one block per int32 lane. Two blocks per load, then a 4×4 transpose of dwords
    /// in each 128-bit half, which leaves the blocks in [`super::GROUP_LANE_BLOCKS`] order.
    ///
    /// # Safety
    /// `p` points at 128 readable bytes.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn unpack_group(p: *const u8, lut: __m256i, m4: __m256i) -> [__m256i; 8] {
        // SAFETY: the 4 loads cover the 128 bytes at p (the contract).
        let [p0, p1, p2, p3] =
            std::array::from_fn(|i| unsafe { _mm256_loadu_si256(p.add(32 * i).cast()) });
        let (t0, t1) = (_mm256_unpacklo_epi32(p0, p1), _mm256_unpackhi_epi32(p0, p1));
        let (t2, t3) = (_mm256_unpacklo_epi32(p2, p3), _mm256_unpackhi_epi32(p2, p3));
        let dwords = [
            _mm256_unpacklo_epi64(t0, t2),
            _mm256_unpackhi_epi64(t0, t2),
            _mm256_unpacklo_epi64(t1, t3),
            _mm256_unpackhi_epi64(t1, t3),
        ];
        std::array::from_fn(|v| {
            let packed = dwords[v / 2];
            let nibbles = if v % 2 == 0 {
                packed
            } else {
                _mm256_srli_epi16(packed, 4)
            };
            _mm256_shuffle_epi8(lut, _mm256_and_si256(nibbles, m4))
        })
    }

    /// One token's int32 sums of a group's 8 blocks (lanes in [`super::GROUP_LANE_BLOCKS`]
    /// order): the 8 vectors of codes `w` against the token's 256 values at `x` (group order).
    /// Four `u8 × i8` products are added in int16 before one `pmaddwd`: a product pair is at
    /// most 2·24·127 = 6096, four of them 24384, under 2^15.
    ///
    /// # Safety
    /// `x` points at 256 readable bytes.
    #[target_feature(enable = "avx2")]
    #[inline]
    unsafe fn group_dot_avx2(w: &[__m256i; 8], x: *const i8) -> __m256i {
        // SAFETY: the 8 loads cover the 256 bytes at x (the contract).
        let xv = |v: usize| unsafe { _mm256_loadu_si256(x.add(32 * v).cast()) };
        let quad = |v: usize| {
            _mm256_add_epi16(
                _mm256_add_epi16(
                    _mm256_maddubs_epi16(w[v], xv(v)),
                    _mm256_maddubs_epi16(w[v + 1], xv(v + 1)),
                ),
                _mm256_add_epi16(
                    _mm256_maddubs_epi16(w[v + 2], xv(v + 2)),
                    _mm256_maddubs_epi16(w[v + 3], xv(v + 3)),
                ),
            )
        };
        let ones = _mm256_set1_epi16(1);
        _mm256_add_epi32(
            _mm256_madd_epi16(quad(0), ones),
            _mm256_madd_epi16(quad(4), ones),
        )
    }

    /// [`group_dot_avx2`] with `vpdpbusd` (two chains of four).
    ///
    /// # Safety
    /// `x` points at 256 readable bytes.
    #[target_feature(enable = "avx2,avxvnni")]
    #[inline]
    unsafe fn group_dot_avxvnni(w: &[__m256i; 8], x: *const i8) -> __m256i {
        // SAFETY: the 8 loads cover the 256 bytes at x (the contract).
        let xv = |v: usize| unsafe { _mm256_loadu_si256(x.add(32 * v).cast()) };
        let chain = |v: usize| {
            (v..v + 4).fold(_mm256_setzero_si256(), |acc, v| {
                _mm256_dpbusd_avx_epi32(acc, w[v], xv(v))
            })
        };
        _mm256_add_epi32(chain(0), chain(4))
    }

    #[target_feature(enable = "avx2,avx512f,avx512vl,avx512vnni")]
    #[inline]
    fn dpbusd_avx512vl(acc: __m256i, u: __m256i, x: __m256i) -> __m256i {
        _mm256_dpbusd_epi32(acc, u, x)
    }

    /// The whole pairs of blocks in `$range` of one MXFP4 row against the `N` tokens `$xs`,
    /// 256 bits at a time with their scales built one by one (`$lut`, `$m4`: the +12 table and
    /// the nibble mask): sums into the token's `$accs`, the +12 corrections into `$tails`.
    /// A macro so that it expands inside each kernel, under the kernel's features.
    ///
    /// Safety (of the expansion): every pair b, b + 1 in `$range` has b + 1 < `$nb`, `$bp`
    /// points at the row's `$nb`·16 packed bytes, and every token holds `$nb`·32 values.
    macro_rules! mxfp4_pairs {
        ($dot:ident, ($bp:expr, $scales:expr, $xs:expr, $nb:expr), $range:expr, ($lut:expr, $m4:expr), $accs:expr, $tails:expr) => {
            for b in ($range).step_by(2) {
                // SAFETY: b + 1 < nb: the pair's 32 packed bytes are inside the row.
                let packed = unsafe { _mm256_loadu_si256($bp.add(b * BLOCK_BYTES).cast()) };
                let lo = _mm256_shuffle_epi8($lut, _mm256_and_si256(packed, $m4));
                let hi =
                    _mm256_shuffle_epi8($lut, _mm256_and_si256(_mm256_srli_epi16(packed, 4), $m4));
                let (w0, w1) = (
                    f32::from_bits(($scales[b] as u32) << 23),
                    f32::from_bits(($scales[b + 1] as u32) << 23),
                );
                for i in 0..N {
                    let (xq, xd, corr) = $xs[i];
                    let (s0, s1) = (w0 * xd[b], w1 * xd[b + 1]);
                    $tails[i] += corr[b] as f32 * s0 + corr[b + 1] as f32 * s1;
                    let xp = xq.as_ptr();
                    let (even, odd) = super::mxfp4_pair(b, $nb);
                    // SAFETY: the pair's even and odd activations lie inside its blocks' 64
                    // values (`mxfp4_pair`), inside the token's row.
                    let (x0, x1) = unsafe {
                        (
                            _mm256_loadu_si256(xp.add(even).cast()),
                            _mm256_loadu_si256(xp.add(odd).cast()),
                        )
                    };
                    let sum = $dot($dot(_mm256_setzero_si256(), lo, x0), hi, x1);
                    let sv = _mm256_setr_m128(_mm_set1_ps(s0), _mm_set1_ps(s1));
                    $accs[i] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(sum), sv, $accs[i]);
                }
            }
        };
    }

    /// One MXFP4 row against `N` token rows in group order (one packed read, the unpacked
    /// weights reused from registers): each group of 8 blocks is unpacked once
    /// ([`unpack_group`]) into vectors with one block per int32 lane, so a token's group
    /// sum (`$group_dot`) is one vector of 8 block sums; the +12 is taken back from it in
    /// int32 with the token's corrections, then one convert and one multiply-add with the
    /// 8 scales 2^(e-127)·xd. The pairs after the groups go 256 bits at a time, a last odd
    /// block to the scalar code.
    ///
    /// # Safety
    /// The CPU has `$features`; `blocks` holds at least `nb`·16 bytes, `scales` exactly `nb`,
    /// and every token's values (group order) at least `nb`·32, its scales and corrections
    /// at least `nb`.
    macro_rules! mxfp4_row_kernel {
        ($name:ident, $features:literal, $dot:ident, $group_dot:ident) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name<const N: usize>(
                blocks: &[u8],
                scales: &[u8],
                xs: &[(&[i8], &[f32], &[i32]); N],
                nb: usize,
            ) -> [f32; N] {
                // SAFETY: the table is 16 bytes, one 128-bit load.
                let lut = _mm256_broadcastsi128_si256(unsafe {
                    _mm_loadu_si128(FP4_X2_U8.as_ptr().cast())
                });
                let m4 = _mm256_set1_epi8(0x0f);
                let mut accs = [_mm256_setzero_ps(); N];
                let pairs_end = nb / 2 * 2;
                let groups = nb / super::GROUP;
                let bp = blocks.as_ptr();
                let [l0, l1, l2, l3, l4, l5, l6, l7] = super::GROUP_LANE_BLOCKS.map(|b| b as i32);
                let lane_blocks = _mm256_setr_epi32(l0, l1, l2, l3, l4, l5, l6, l7);
                _mm_prefetch::<_MM_HINT_T0>(scales.as_ptr().wrapping_add(256).cast());
                for g in 0..groups {
                    let b0 = g * super::GROUP;
                    // SAFETY: for every access of this group: b0 + 8 ≤ nb, so the 8 scales,
                    // token scales and corrections at b0 are inside their slices, the group's
                    // 128 packed bytes inside `blocks` and its 256 values inside each token's
                    // (the contract's lengths).
                    let ws = unsafe { group_scales(bp, scales, b0) };
                    // In the lane order of the group's sums.
                    let ws = _mm256_permutevar8x32_ps(ws, lane_blocks);
                    // SAFETY: as above.
                    let w = unsafe { unpack_group(bp.add(b0 * BLOCK_BYTES), lut, m4) };
                    for i in 0..N {
                        let (xq, xd, corr) = xs[i];
                        // SAFETY: as above.
                        let (sum, xd, corr) = unsafe {
                            (
                                $group_dot(&w, xq.as_ptr().add(b0 * QK)),
                                _mm256_loadu_ps(xd.as_ptr().add(b0)),
                                _mm256_loadu_si256(corr.as_ptr().add(b0).cast()),
                            )
                        };
                        accs[i] = _mm256_fmadd_ps(
                            _mm256_cvtepi32_ps(_mm256_add_epi32(sum, corr)),
                            _mm256_mul_ps(ws, xd),
                            accs[i],
                        );
                    }
                }
                // Whole pairs after the groups, with scales built one by one.
                let mut tails = [0.0f32; N];
                mxfp4_pairs!(
                    $dot,
                    (bp, scales, xs, nb),
                    groups * 8..pairs_end,
                    (lut, m4),
                    accs,
                    tails
                );
                let mut out = [0.0f32; N];
                for i in 0..N {
                    let (xq, xd, _) = xs[i];
                    out[i] = hsum256(accs[i])
                        + tails[i]
                        + super::dot_mxfp4_scalar(blocks, scales, xq, xd, pairs_end, nb);
                }
                out
            }
        };
    }

    mxfp4_row_kernel!(dot_mxfp4_avx2, "avx2,fma", dpbusd_avx2, group_dot_avx2);
    mxfp4_row_kernel!(
        dot_mxfp4_avxvnni,
        "avx2,fma,avxvnni",
        dpbusd_avxvnni,
        group_dot_avxvnni
    );

    /// The low and high nibbles of 64 packed bytes looked up in the +12 table (`lut`: its 16
    /// entries in every 128-bit lane), by AVX-512BW's in-lane shuffle, which needs each index
    /// masked to 4 bits first.
    #[target_feature(enable = "avx512f,avx512bw")]
    #[inline]
    fn nibbles_shuffle(packed: __m512i, lut: __m512i) -> (__m512i, __m512i) {
        let m4 = _mm512_set1_epi8(0x0f);
        (
            _mm512_shuffle_epi8(lut, _mm512_and_si512(packed, m4)),
            _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(packed, 4), m4)),
        )
    }

    /// [`nibbles_shuffle`] by VBMI's byte permute, which reads only the low 6 bits of each
    /// index: with the table in all four lanes, the bits above the nibble pick one of four
    /// copies, so no mask is needed (3 instructions instead of 5 per 64 bytes). Decode is
    /// bound by how far ahead of its loads the core runs, so fewer instructions per byte
    /// stream faster: the experts' 2-thread rate went from ~14 to ~17.5 GB/s with this alone
    /// (`cargo bench --bench kernels -- experts`).
    #[target_feature(enable = "avx512f,avx512bw,avx512vbmi")]
    #[inline]
    fn nibbles_permute(packed: __m512i, lut: __m512i) -> (__m512i, __m512i) {
        (
            _mm512_permutexvar_epi8(packed, lut),
            _mm512_permutexvar_epi8(_mm512_srli_epi16(packed, 4), lut),
        )
    }

    /// [`mxfp4_row_kernel`] four blocks per 512-bit step: one 64-byte load of packed bytes,
    /// whose low and high nibbles meet the four's even and odd activations (two 64-byte loads
    /// as they lie, [`super::mxfp4_slot`]) in two dot instructions; int32 lanes 4k..4k+3
    /// belong to block k of the four. Few vector instructions per weight (no activation
    /// shuffles, no transpose): decode streams the experts from memory, and the less time a
    /// row's unpacking takes, the more of it overlaps the next row's loads.
    /// Whole pairs after the last group of 8 blocks run 256 bits at a time in the same call.
    ///
    /// Two instances differ in how the nibbles meet the table: `$nibbles` is
    /// [`nibbles_shuffle`] (AVX-512BW) or [`nibbles_permute`] (VBMI, two instructions fewer per
    /// step, which decode feels: see there).
    ///
    /// # Safety
    /// As [`mxfp4_row_kernel`]: the CPU has `$features`; `blocks` holds at least
    /// `nb`·16 bytes, `scales` exactly `nb`, and every token's values at least `nb`·32, its
    /// scales and corrections at least `nb`.
    macro_rules! mxfp4_avx512_kernel {
        ($name:ident, $features:literal, $nibbles:ident) => {
            #[target_feature(enable = $features)]
            pub(super) unsafe fn $name<const N: usize>(
                blocks: &[u8],
                scales: &[u8],
                xs: &[(&[i8], &[f32], &[i32]); N],
                nb: usize,
            ) -> [f32; N] {
                // SAFETY: the table is 16 bytes, one 128-bit load.
                let table = unsafe { _mm_loadu_si128(FP4_X2_U8.as_ptr().cast()) };
                // In every 128-bit lane (the shuffle's view; the permute's: four copies).
                let lut = _mm512_broadcast_i32x4(table);
                // Block k of a group's 8 gets lanes 4k..4k+3 of a step's sums (first or second
                // step).
                let lanes = [
                    _mm512_setr_epi32(0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3),
                    _mm512_setr_epi32(4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7),
                ];
                let mut accs = [_mm512_setzero_ps(); N];
                let mut corrs = [_mm256_setzero_ps(); N];
                let groups = nb / 8;
                let bp = blocks.as_ptr();
                _mm_prefetch::<_MM_HINT_T0>(scales.as_ptr().wrapping_add(256).cast());
                for g in 0..groups {
                    let b0 = g * 8;
                    // SAFETY: for every load of this group: b0 + 8 ≤ nb, so the 8 scales, token
                    // scales and corrections at b0 are inside their slices, the 128 packed bytes of
                    // blocks b0..b0 + 8 are inside `blocks` and their 256 activations inside each
                    // token's values (the contract's lengths).
                    let ws = unsafe { group_scales(bp, scales, b0) };
                    let mut s = [_mm512_setzero_ps(); N];
                    for i in 0..N {
                        // SAFETY: as above.
                        let si = unsafe { token_group_scales(ws, xs[i], b0, &mut corrs[i]) };
                        s[i] = _mm512_castps256_ps512(si);
                    }
                    for (step, lane) in lanes.iter().enumerate() {
                        let b = b0 + 4 * step;
                        // SAFETY: as above.
                        let packed = unsafe { _mm512_loadu_si512(bp.add(b * BLOCK_BYTES).cast()) };
                        let (lo, hi) = $nibbles(packed, lut);
                        for i in 0..N {
                            let xp = xs[i].0.as_ptr();
                            // Blocks b..b + 4 are a four: their even activations, then their odd
                            // ones, 64 each (`mxfp4_slot`).
                            // SAFETY: as above.
                            let (even, odd) = unsafe {
                                (
                                    _mm512_loadu_si512(xp.add(b * BLOCK).cast()),
                                    _mm512_loadu_si512(xp.add(b * BLOCK + 64).cast()),
                                )
                            };
                            let sum = _mm512_dpbusd_epi32(
                                _mm512_dpbusd_epi32(_mm512_setzero_si512(), lo, even),
                                hi,
                                odd,
                            );
                            accs[i] = _mm512_fmadd_ps(
                                _mm512_cvtepi32_ps(sum),
                                _mm512_permutexvar_ps(*lane, s[i]),
                                accs[i],
                            );
                        }
                    }
                }
                // Whole pairs after the groups (at most three), 256 bits at a time with their scales
                // built one by one, into the same accumulators; a last odd block goes to the scalar
                // code. (Inline rather than a call to the 256-bit kernel: a row of the 20b model
                // has 90 blocks, so this tail runs for every row.)
                let pairs_end = nb / 2 * 2;
                let (lut256, m4_256) = (_mm512_castsi512_si256(lut), _mm256_set1_epi8(0x0f));
                let mut tails = [0.0f32; N];
                mxfp4_pairs!(
                    dpbusd_avx512vl,
                    (bp, scales, xs, nb),
                    groups * 8..pairs_end,
                    (lut256, m4_256),
                    corrs,
                    tails
                );
                let mut out = [0.0f32; N];
                for i in 0..N {
                    let (xq, xd, _) = xs[i];
                    out[i] = _mm512_reduce_add_ps(accs[i]) + hsum256(corrs[i]) + tails[i];
                    if pairs_end < nb {
                        out[i] += super::dot_mxfp4_scalar(blocks, scales, xq, xd, pairs_end, nb);
                    }
                }
                out
            }
        };
    }

    mxfp4_avx512_kernel!(
        dot_mxfp4_avx512,
        "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni",
        nibbles_shuffle
    );
    mxfp4_avx512_kernel!(
        dot_mxfp4_avx512vbmi,
        "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,avx512vbmi",
        nibbles_permute
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::linear::{LinearJob, Weights, linear_batch, on_tiles};
    use crate::kernels::test_data::{bytes, values};

    #[test]
    fn simd_block_quantization_is_bit_identical_to_scalar() {
        for seed in 0..50u64 {
            let mut x = values(QK, 500 + seed);
            if seed % 5 == 0 {
                x[7] = 0.0;
                x[3] = -x[3].abs() * 40.0; // a dominant negative value: -127
            }
            if seed == 1 {
                x.fill(0.0);
            }
            let (mut a, mut b) = ([0i8; QK], [0i8; QK]);
            let sa = quantize_block(&x, &mut a);
            let sb = quantize_block_scalar(&x, &mut b);
            assert_eq!((sa.to_bits(), a), (sb.to_bits(), b), "seed {seed}");
        }
    }

    type RowQuantizer = fn(&[f32], &mut [i8], &mut [f32], &mut [i32]);

    #[test]
    fn simd_mxfp4_row_quantization_is_bit_identical_to_scalar() {
        // Odd block counts end in an unpaired block; one block is all zeros, one has a
        // dominant negative value, one ties (x.5 after scaling).
        for (seed, nb) in [(1u64, 1usize), (2, 2), (3, 3), (4, 5), (5, 90), (6, 7)] {
            let mut x = values(nb * QK, 900 + seed);
            x[..QK].fill(0.0);
            if nb > 1 {
                x[QK + 3] = -x[QK + 3].abs() * 40.0;
            }
            if nb > 2 {
                x[2 * QK] = 127.0;
                x[2 * QK + 1] = 2.5;
                x[2 * QK + 2] = -0.5;
            }
            let run = |f: RowQuantizer| {
                let (mut q, mut d, mut c) = (vec![0i8; nb * QK], vec![0.0f32; nb], vec![0i32; nb]);
                f(&x, &mut q, &mut d, &mut c);
                (q, d.iter().map(|v| v.to_bits()).collect::<Vec<_>>(), c)
            };
            assert_eq!(
                run(quantize_row_mxfp4),
                run(quantize_row_mxfp4_scalar),
                "{nb} blocks"
            );
        }
    }

    #[test]
    fn rounding_is_to_nearest_with_ties_to_even() {
        for (v, want) in [
            (0.4, 0),
            (0.5, 0),
            (1.5, 2),
            (2.5, 2),
            (-0.5, 0),
            (-1.5, -2),
            (126.6, 127),
            (-127.0, -127),
            (-3.2, -3),
        ] {
            assert_eq!(round_i8(v), want, "{v}");
        }
    }

    #[test]
    fn quantization_round_trips_within_half_a_step() {
        let x = values(96, 1);
        let mut q = Q8Acts::default();
        q.quantize(&x, 1, 96, false);
        for (b, xs) in x.chunks_exact(QK).enumerate() {
            let amax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!((q.d[b] - amax / 127.0).abs() <= 1e-7 * amax);
            for (j, &v) in xs.iter().enumerate() {
                let back = q.qs[b * QK + j] as f32 * q.d[b];
                assert!((back - v).abs() <= 0.5 * q.d[b] * 1.0001, "{back} vs {v}");
            }
        }
        // MXFP4 order: blocks 0 and 1 as a pair [0 even, 1 even, 0 odd, 1 odd], block 2
        // alone [even, odd]; halved scale; corrections −12·Σq.
        let mut m = Q8Acts::default();
        m.quantize(&x, 1, 96, true);
        for b in 0..3 {
            assert_eq!(m.d[b], q.d[b] * 0.5);
            let sum: i32 = q.qs[b * QK..(b + 1) * QK].iter().map(|&v| v as i32).sum();
            assert_eq!(m.corr[b], -12 * sum);
        }
        for j in 0..16 {
            assert_eq!(m.qs[j], q.qs[2 * j]);
            assert_eq!(m.qs[16 + j], q.qs[QK + 2 * j]);
            assert_eq!(m.qs[32 + j], q.qs[2 * j + 1]);
            assert_eq!(m.qs[48 + j], q.qs[QK + 2 * j + 1]);
            assert_eq!(m.qs[64 + j], q.qs[2 * QK + 2 * j]);
            assert_eq!(m.qs[80 + j], q.qs[2 * QK + 2 * j + 1]);
        }
        // An all-zero block quantizes to zeros, not NaN.
        let mut z = Q8Acts::default();
        z.quantize(&[0.0; 32], 1, 32, false);
        assert_eq!((z.d[0], z.qs.iter().all(|&v| v == 0)), (0.0, true));
    }

    /// The int8 MXFP4 dot equals the f32 dot of the exactly dequantized weights with the
    /// dequantized activations (the integer sums are exact; only f32 rounding differs).
    #[test]
    fn mxfp4_scalar_matches_dequantized_f32_math() {
        let (rows, cols) = (5, 160);
        let blocks = bytes(rows * cols / 2, 3);
        let scales: Vec<u8> = bytes(rows * cols / 32, 4)
            .iter()
            .map(|b| 118 + b % 12)
            .collect();
        let m = Mxfp4Matrix::new(&blocks, &scales, rows, cols).unwrap();
        let x = values(cols, 5);
        let mut plain = Q8Acts::default();
        plain.quantize(&x, 1, cols, false);
        let mut perm = Q8Acts::default();
        perm.quantize(&x, 1, cols, true);
        let xdq: Vec<f64> = (0..cols)
            .map(|c| plain.qs[c] as f64 * plain.d[c / QK] as f64)
            .collect();
        let mut row = vec![0.0f32; cols];
        for r in 0..rows {
            m.dequantize_row(r, &mut row);
            let want: f64 = row.iter().zip(&xdq).map(|(&w, &x)| w as f64 * x).sum();
            let (b, s) = (
                &blocks[r * cols / 2..(r + 1) * cols / 2],
                &scales[r * cols / 32..(r + 1) * cols / 32],
            );
            let got = dot_mxfp4_q8(Isa::SCALAR, b, s, &perm.qs, &perm.d, &perm.corr) as f64;
            assert!(
                (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                "row {r}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn q8_0_scalar_matches_dequantized_f32_math() {
        let (rows, cols) = (7, 96);
        let w = values(rows * cols, 8);
        let m = Q8Matrix::quantize_rows(rows, cols, |r, out| {
            out.copy_from_slice(&w[r * cols..(r + 1) * cols])
        });
        let x = values(2 * cols, 9);
        let mut q = Q8Acts::default();
        q.quantize(&x, 2, cols, false);
        let bias = values(rows, 10);
        let mut y = vec![0.0; 2 * rows];
        m.linear(Isa::SCALAR, &q, Some(&bias), &mut y);
        for t in 0..2 {
            for r in 0..rows {
                let want: f64 = bias[r] as f64
                    + (0..cols)
                        .map(|c| {
                            let wv = m.qs[r * cols + c] as f64 * m.d[(r * cols + c) / QK] as f64;
                            let xv = q.qs[t * cols + c] as f64 * q.d[(t * cols + c) / QK] as f64;
                            wv * xv
                        })
                        .sum::<f64>();
                let got = y[t * rows + r] as f64;
                assert!((got - want).abs() <= 1e-5 * want.abs().max(1.0));
                // And close to the unquantized product (8-bit both sides: ~1 %).
                let exact: f64 = bias[r] as f64
                    + (0..cols)
                        .map(|c| w[r * cols + c] as f64 * x[t * cols + c] as f64)
                        .sum::<f64>();
                let norm: f64 = (0..cols)
                    .map(|c| (w[r * cols + c] as f64 * x[t * cols + c] as f64).abs())
                    .sum();
                assert!((got - exact).abs() <= 0.02 * norm, "{got} vs {exact}");
            }
        }
    }

    /// Every SIMD path this CPU has against the scalar reference, on random data including
    /// extreme codes and scales, odd block counts and -127/127 activations.
    #[test]
    fn every_available_isa_matches_scalar() {
        let isas = Isa::available();
        assert_eq!(isas[0], Isa::SCALAR);
        eprintln!("testing {:?}", isas);
        for nb in [1usize, 2, 3, 7, 8, 9, 10, 13, 15, 17, 90] {
            let cols = nb * QK;
            for seed in 0..4u64 {
                let blocks = bytes(cols / 2, 100 + seed);
                let scales: Vec<u8> = bytes(nb, 200 + seed).iter().map(|b| 100 + b % 40).collect();
                let mut x = values(cols, 300 + seed);
                x[0] = 1e3; // a saturating block: ±127
                if cols > 40 {
                    x[40] = -1e3;
                }
                let mut perm = Q8Acts::default();
                perm.quantize(&x, 1, cols, true);
                let mut plain = Q8Acts::default();
                plain.quantize(&x, 1, cols, false);
                let w = values(cols, 400 + seed);
                let mut wq = Q8Acts::default();
                wq.quantize(&w, 1, cols, false);
                let (xq, xd, xc) = (&perm.qs, &perm.d, &perm.corr);
                let want_fp4 = dot_mxfp4_q8(Isa::SCALAR, &blocks, &scales, xq, xd, xc);
                let want_q8 = dot_q8_0(Isa::SCALAR, &wq.qs, &wq.d, &plain.qs, &plain.d);
                for &isa in &isas[1..] {
                    let got = dot_mxfp4_q8(isa, &blocks, &scales, xq, xd, xc);
                    assert!(
                        (got - want_fp4).abs() <= 1e-5 * want_fp4.abs().max(1.0),
                        "{isa:?} mxfp4 nb={nb}: {got} vs {want_fp4}"
                    );
                    let got = dot_q8_0(isa, &wq.qs, &wq.d, &plain.qs, &plain.d);
                    assert!(
                        (got - want_q8).abs() <= 1e-5 * want_q8.abs().max(1.0),
                        "{isa:?} q8_0 nb={nb}: {got} vs {want_q8}"
                    );
                }
            }
        }
    }

    /// Group order moves every 4-value word of a group exactly once.
    #[test]
    fn group_order_is_a_permutation_of_each_group() {
        let mut seen = [false; GROUP * QK / 4];
        for &from in &GROUP_ORDER_WORDS {
            assert!(!seen[from], "word {from} taken twice");
            seen[from] = true;
        }
        assert!(seen.iter().all(|&s| s));
        let mut lanes = GROUP_LANE_BLOCKS;
        lanes.sort_unstable();
        assert_eq!(lanes, [0, 1, 2, 3, 4, 5, 6, 7]);
    }

    /// The largest integer sums the MXFP4 kernels meet: every weight ±6 (codes 0x7, 0xF: +12
    /// table entries 24 and 0) against activations all 127 or all -127. Without VNNI the AVX2
    /// kernel adds four `maddubs` pair sums in i16 (at most ±4·6096 = ±24384 here, the most
    /// any input gives); a kernel that summed more before widening would wrap and show here.
    #[test]
    fn extreme_mxfp4_sums_match_scalar() {
        let isas = Isa::available();
        let nb = 90;
        let cols = nb * QK;
        let scales = vec![127u8; nb];
        let mut cases = 0;
        for byte in [0x77u8, 0xff, 0x7f, 0xf7] {
            let blocks = vec![byte; cols / 2];
            for sign in [1.0f32, -1.0] {
                let x = vec![sign; cols];
                let mut acts = Q8Acts::default();
                acts.quantize(&x, 1, cols, true);
                assert!(acts.qs.iter().all(|&q| q == (127.0 * sign) as i8));
                let (xq, xd, xc) = (&acts.qs, &acts.d, &acts.corr);
                let want = dot_mxfp4_q8(Isa::SCALAR, &blocks, &scales, xq, xd, xc);
                let exact: f32 = (0..cols)
                    .map(|j| {
                        // Even values are the low nibbles (`mxfp4::decode_block`).
                        let code = if j % 2 == 0 { byte & 0xf } else { byte >> 4 };
                        let w = if code == 0x7 { 6.0 } else { -6.0 };
                        w * sign
                    })
                    .sum();
                assert!(
                    (want - exact).abs() <= 1e-3 * exact.abs().max(1.0),
                    "{want} vs {exact}"
                );
                for &isa in &isas[1..] {
                    let got = dot_mxfp4_q8(isa, &blocks, &scales, xq, xd, xc);
                    assert!(
                        (got - want).abs() <= 1e-5 * want.abs().max(1.0),
                        "{isa:?} byte {byte:#x} sign {sign}: {got} vs {want}"
                    );
                    cases += 1;
                }
            }
        }
        eprintln!("{cases} SIMD cases against scalar on {isas:?}");
    }

    /// Both 512-bit MXFP4 kernels, one token and four, against the scalar reference: the
    /// dispatcher runs the VBMI one wherever the CPU has it, so the other (AVX-512 without
    /// VBMI, e.g. Cascade Lake) would otherwise go untested on such a machine.
    #[cfg(target_arch = "x86_64")]
    #[test]
    fn both_avx512_mxfp4_kernels_match_scalar() {
        if Isa::best().level() < Level::Avx512Vnni {
            eprintln!("SKIPPED: this CPU has no AVX-512 VNNI");
            return;
        }
        let vbmi = std::arch::is_x86_feature_detected!("avx512vbmi");
        let mut compared = 0;
        for nb in [1usize, 2, 3, 4, 7, 8, 9, 10, 17, 90] {
            let cols = nb * QK;
            let blocks = bytes(cols / 2, 600 + nb as u64);
            let scales: Vec<u8> = bytes(nb, 700 + nb as u64)
                .iter()
                .map(|b| 100 + b % 40)
                .collect();
            let tokens: Vec<Q8Acts> = (0..4u64)
                .map(|t| {
                    let mut x = values(cols, 800 + 10 * nb as u64 + t);
                    x[(t as usize * 37) % cols] = if t % 2 == 0 { 1e3 } else { -1e3 };
                    let mut q = Q8Acts::default();
                    q.quantize(&x, 1, cols, true);
                    q
                })
                .collect();
            let xs: [(&[i8], &[f32], &[i32]); 4] =
                std::array::from_fn(|t| (&tokens[t].qs[..], &tokens[t].d[..], &tokens[t].corr[..]));
            let want = xs.map(|(q, d, c)| dot_mxfp4_q8(Isa::SCALAR, &blocks, &scales, q, d, c));
            let mut kernels: Vec<(&str, [f32; 4], f32)> = Vec::new();
            // SAFETY: AVX-512 F/BW/DQ/VL/VNNI were detected (the level above); `blocks` holds
            // nb·16 bytes, `scales` nb, and every token nb·32 values, nb scales and corrections.
            let (four, one) = unsafe {
                (
                    x86::dot_mxfp4_avx512(&blocks, &scales, &xs, nb),
                    x86::dot_mxfp4_avx512(&blocks, &scales, &[xs[0]], nb)[0],
                )
            };
            kernels.push(("avx512", four, one));
            if vbmi {
                // SAFETY: as above, and VBMI was detected.
                let (four, one) = unsafe {
                    (
                        x86::dot_mxfp4_avx512vbmi(&blocks, &scales, &xs, nb),
                        x86::dot_mxfp4_avx512vbmi(&blocks, &scales, &[xs[0]], nb)[0],
                    )
                };
                kernels.push(("avx512vbmi", four, one));
            }
            for (name, four, one) in kernels {
                for (t, (&got, &w)) in four.iter().zip(&want).enumerate() {
                    assert!(
                        (got - w).abs() <= 1e-5 * w.abs().max(1.0),
                        "{name} nb={nb} token {t} of 4: {got} vs {w}"
                    );
                }
                assert!(
                    (one - want[0]).abs() <= 1e-5 * want[0].abs().max(1.0),
                    "{name} nb={nb} one token: {one} vs {}",
                    want[0]
                );
                compared += 1;
            }
        }
        assert_eq!(compared, if vbmi { 20 } else { 10 });
    }

    #[test]
    fn dense_multi_token_pass_matches_scalar_dots() {
        // Two tiles of passes of 4, then single tokens.
        let (rows, cols, t) = (5, 2880 + 96, TOKENS_PER_TILE + TOKENS_PER_ROW_PASS + 2);
        let w = values(rows * cols, 21);
        let m = Q8Matrix::quantize_rows(rows, cols, |r, out| {
            out.copy_from_slice(&w[r * cols..(r + 1) * cols])
        });
        let x = values(t * cols, 22);
        let mut q = Q8Acts::default();
        q.quantize(&x, t, cols, false);
        let nb = cols / QK;
        assert_every_isa_matches_row_dots(
            (t, rows),
            |isa, y| m.linear(isa, &q, None, y),
            |ti, r| {
                let (xq, xd) = q.row(ti);
                dot_q8_0(
                    Isa::SCALAR,
                    &m.qs[r * cols..(r + 1) * cols],
                    &m.d[r * nb..(r + 1) * nb],
                    xq,
                    xd,
                )
            },
        );
    }

    /// For every available instruction set: the `[t, rows]` outputs of `linear(isa, y)` each
    /// within f32 rounding (block terms summed in another order) of `row_dot(token, row)`.
    fn assert_every_isa_matches_row_dots(
        (t, rows): (usize, usize),
        linear: impl Fn(Isa, &mut [f32]),
        row_dot: impl Fn(usize, usize) -> f32,
    ) {
        for isa in Isa::available() {
            let mut y = vec![0.0; t * rows];
            linear(isa, &mut y);
            for ti in 0..t {
                for r in 0..rows {
                    let (got, want) = (y[ti * rows + r], row_dot(ti, r));
                    assert!(
                        (got - want).abs() <= 1e-4 * want.abs().max(1.0),
                        "{isa:?} t={ti} r={r}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn multi_token_pass_matches_single_token_dots() {
        // Two tiles of passes of 4, then single tokens; rows of whole groups of 8 blocks and
        // whole pairs (the 20b's 90 blocks), and rows whose groups end in a four and an odd
        // block (13) or a four, a pair and an odd block (15).
        let (rows, t) = (9, TOKENS_PER_TILE + TOKENS_PER_ROW_PASS + 3);
        for nb in [90, 13, 15] {
            let cols = nb * QK;
            let blocks = bytes(rows * cols / 2, 11);
            let scales: Vec<u8> = bytes(rows * nb, 12).iter().map(|b| 115 + b % 20).collect();
            let m = Mxfp4Matrix::new(&blocks, &scales, rows, cols).unwrap();
            let x = values(t * cols, 13);
            let mut q = Q8Acts::default();
            q.quantize(&x, t, cols, true);
            let bias = values(rows, 14);
            // The same block terms summed in another order: f32 rounding only.
            assert_every_isa_matches_row_dots(
                (t, rows),
                |isa, y| m.linear_q8(isa, &q, Some(&bias), y),
                |ti, r| {
                    let (b, s) = (
                        &blocks[r * cols / 2..(r + 1) * cols / 2],
                        &scales[r * nb..(r + 1) * nb],
                    );
                    let (xq, xd) = q.row(ti);
                    dot_mxfp4_q8(Isa::SCALAR, b, s, xq, xd, q.corr_row(ti)) + bias[r]
                },
            );
        }
    }

    /// The tiles are AMX's alone: any other instruction set (what a CPU without AMX, or a
    /// process the kernel refused tile data, gets) keeps every matmul on its row dots, and
    /// AMX itself only from `MIN_TOKENS` tokens on.
    #[test]
    fn only_amx_sends_matmuls_to_the_tiles() {
        for isa in Isa::available() {
            for tokens in [1, 7, 8, 9, 33] {
                let mut x = Q8Acts::default();
                x.quantize(&values(tokens * 64, 41), tokens, 64, false);
                let want = cfg!(target_arch = "x86_64") && isa.name() == "amx" && tokens >= 8;
                assert_eq!(on_tiles(isa, &x), want, "{isa} with {tokens} tokens");
            }
        }
    }

    /// A batch mixing q8_0 and MXFP4 matrices, one token and many (these go to the tiles
    /// when the CPU has AMX): each output as the scalar reference computes it alone.
    #[test]
    fn a_batch_equals_its_matmuls_one_by_one() {
        let cols = 96;
        let w = values(17 * cols, 31);
        let dense = Q8Matrix::quantize_rows(17, cols, |r, out| {
            out.copy_from_slice(&w[r * cols..(r + 1) * cols])
        });
        let blocks = bytes(9 * cols / 2, 32);
        let scales: Vec<u8> = bytes(9 * cols / 32, 33)
            .iter()
            .map(|b| 118 + b % 10)
            .collect();
        let fp4 = Mxfp4Matrix::new(&blocks, &scales, 9, cols).unwrap();
        let quantize = |tokens: usize, mxfp4: bool| {
            let mut q = Q8Acts::default();
            q.quantize(
                &values(tokens * cols, 34 + tokens as u64),
                tokens,
                cols,
                mxfp4,
            );
            q
        };
        let (x1, x20, x3) = (quantize(1, false), quantize(20, false), quantize(3, true));
        let bias = values(17, 35);
        for isa in Isa::available() {
            let (mut a, mut b, mut c) = (vec![0.0; 17], vec![0.0; 20 * 17], vec![0.0; 3 * 9]);
            linear_batch(
                isa,
                &mut [
                    LinearJob {
                        weights: Weights::Q8(&dense),
                        x: &x1,
                        bias: Some(&bias),
                        y: &mut a,
                    },
                    LinearJob {
                        weights: Weights::Q8(&dense),
                        x: &x20,
                        bias: None,
                        y: &mut b,
                    },
                    LinearJob {
                        weights: Weights::Mxfp4(fp4),
                        x: &x3,
                        bias: Some(&bias[..9]),
                        y: &mut c,
                    },
                ],
            );
            let (mut wa, mut wb, mut wc) = (vec![0.0; 17], vec![0.0; 20 * 17], vec![0.0; 3 * 9]);
            dense.linear(Isa::SCALAR, &x1, Some(&bias), &mut wa);
            dense.linear(Isa::SCALAR, &x20, None, &mut wb);
            fp4.linear_q8(Isa::SCALAR, &x3, Some(&bias[..9]), &mut wc);
            for (got, want) in [(&a, &wa), (&b, &wb), (&c, &wc)] {
                for (g, w) in got.iter().zip(want.iter()) {
                    assert!(
                        (g - w).abs() <= 1e-4 * w.abs().max(1.0),
                        "{isa}: {g} vs {w}"
                    );
                }
            }
        }
    }
}
