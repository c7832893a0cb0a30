//! AMX-INT8 kernels for prefill: many tokens times a q8_0 or MXFP4 matrix on the tile unit.
//!
//! The integer block sums are exactly those of the scalar reference: each `tdpbssd` covers one
//! 32-block (K = 32), so a block's products are summed in int32 and only then scaled by the
//! weight scale (E8M0 or q8_0) times the token's activation scale, as in `q8.rs`. What the
//! tile unit buys is width: one instruction does 16 weight rows × 16 tokens × 32 products.
//!
//! Roles: the weights are the A operand (16 rows of one 32-block: a panel), the tokens the B
//! operand, so the transposition AMX wants for B (four consecutive bytes of each column side
//! by side) is done once per call on the activations ([`TileActs`]), not on every weight
//! block. MXFP4 panels are unpacked to int8 once (the E2M1 codes ×2 through a 16-entry table,
//! low nibbles then high nibbles of each block, so the activations take that order within a
//! block) and reused for every token tile; q8_0 panels are read in place. Per block, four
//! blocks at a time, the int32 results go through a small buffer into f32 accumulators (one
//! vector per weight row, lanes = tokens): `acc += f32(sum) · (w_scale · x_scale)`, transposed
//! in registers at the end so each token's 16 results leave in one store. While a panel
//! computes, it prefetches the next panel's weights, so unpacking streams from cache rather
//! than waiting on memory (prefill reads every expert once per layer).
//!
//! Linux only lets a process use tile data after `arch_prctl(ARCH_REQ_XCOMP_PERM,
//! XFEATURE_XTILEDATA)`; [`super::isa`] asks once when it detects the CPU, and offers AMX only when
//! that succeeded, so every function here may assume it.

use super::isa::{Isa, Level};
use super::mxfp4::{BLOCK_BYTES, Mxfp4Matrix};
use super::q8::{Q8Acts, Q8Matrix, QK, mxfp4_slot};
use super::{SharedOut, for_row_chunks};

pub(crate) mod attention;

/// Fewest tokens for which the tile kernels beat the VNNI row dots: below, one 16-token tile
/// is mostly padding and unpacking the weights is not repaid.
pub(crate) const MIN_TOKENS: usize = 8;

/// Weight rows per panel and tokens per tile (the tile unit's 16 rows).
const TILE: usize = 16;
/// Bytes of one 32-block of a panel or a token tile: 16 × 32.
const TILE_BLOCK: usize = TILE * QK;

/// Activations as AMX B tiles: per tile of 16 tokens and per 32-block, 8 rows of 64 bytes
/// where row `r` holds bytes `4r..4r + 4` of each token's block (token `i` at `4i`), then the
/// 16 tokens' scales of that block. Tokens past the end are zeros.
#[derive(Default)]
pub(crate) struct TileActs {
    rows: usize,
    nb: usize,
    q: Vec<i8>,
    d: Vec<f32>,
}

impl TileActs {
    /// Lays out `x`. `mxfp4_order` activations (see [`Q8Acts`]) come out with each block's 16
    /// even elements first, then its 16 odd ones: the order [`unpack_panel`] gives the
    /// weights. Plain ones keep their order (q8_0 weights are stored that way).
    pub(crate) fn pack(&mut self, x: &Q8Acts, mxfp4_order: bool) {
        use rayon::prelude::*;
        let nb = x.cols / QK;
        let tiles = x.rows.div_ceil(TILE);
        self.rows = x.rows;
        self.nb = nb;
        self.q.clear();
        self.q.resize(tiles * nb * TILE_BLOCK, 0);
        self.d.clear();
        self.d.resize(tiles * nb * TILE, 0.0);
        // One tile per task: the pool packs while it would otherwise wait for the matmul.
        self.q
            .par_chunks_mut(nb * TILE_BLOCK)
            .zip(self.d.par_chunks_mut(nb * TILE))
            .enumerate()
            .for_each(|(tile, (q, d))| {
                for lane in 0..(x.rows - tile * TILE).min(TILE) {
                    let (xq, xd) = x.row(tile * TILE + lane);
                    for b in 0..nb {
                        let mut block = [0i8; QK];
                        if mxfp4_order {
                            let (even, odd) =
                                (mxfp4_slot(b, nb, 0, false), mxfp4_slot(b, nb, 0, true));
                            block[..QK / 2].copy_from_slice(&xq[even..even + QK / 2]);
                            block[QK / 2..].copy_from_slice(&xq[odd..odd + QK / 2]);
                        } else {
                            block.copy_from_slice(&xq[b * QK..(b + 1) * QK]);
                        }
                        let dst = &mut q[b * TILE_BLOCK..][..TILE_BLOCK];
                        for (r, four) in block.chunks_exact(4).enumerate() {
                            dst[r * 64 + lane * 4..][..4].copy_from_slice(four);
                        }
                        d[b * TILE + lane] = xd[b];
                    }
                }
            });
    }

    fn tiles(&self) -> usize {
        self.rows.div_ceil(TILE)
    }
}

/// Per-thread buffers: one unpacked MXFP4 panel and a panel's block scales.
#[derive(Default)]
struct Scratch {
    /// `[nb][16 rows][32]` int8.
    weights: Vec<i8>,
    /// `[nb][16 rows]` f32.
    scales: Vec<f32>,
}

thread_local! {
    static SCRATCH: std::cell::RefCell<Scratch> = std::cell::RefCell::default();
}

/// Panels per rayon task: enough tasks that both cores stay busy to the end.
fn panels_per_task(panels: usize) -> usize {
    panels
        .div_ceil(8 * rayon::current_num_threads())
        .clamp(1, 16)
}

/// `y[t, r] = bias[r] + Σ_c x[t, c]·W[r, c]`, `x` quantized in MXFP4 order. `isa` must be
/// the AMX level: it proves the tile unit is there.
#[cfg(test)]
pub(crate) fn mxfp4_linear(
    isa: Isa,
    m: &Mxfp4Matrix,
    x: &Q8Acts,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    mxfp4_linear_batch(isa, &mut [Mxfp4Job { m: *m, x, bias, y }]);
}

/// One matmul of [`mxfp4_linear_batch`].
pub(crate) struct Mxfp4Job<'a> {
    pub(crate) m: Mxfp4Matrix<'a>,
    pub(crate) x: &'a Q8Acts,
    pub(crate) bias: Option<&'a [f32]>,
    pub(crate) y: &'a mut [f32],
}

/// [`mxfp4_linear`] for every job (a layer's experts) in one parallel pass over all their
/// panels: no wait at the end of each expert for the last task of its matmul.
pub(crate) fn mxfp4_linear_batch(isa: Isa, jobs: &mut [Mxfp4Job<'_>]) {
    use rayon::prelude::*;
    assert_eq!(isa.level(), Level::Amx, "amx::mxfp4_linear without AMX");
    for job in jobs.iter() {
        let (rows, cols, t) = (job.m.rows, job.m.cols, job.x.rows);
        assert!(
            job.x.cols == cols
                && job.y.len() >= t * rows
                && job.bias.is_none_or(|b| b.len() >= rows),
            "amx::mxfp4_linear shapes"
        );
    }
    let acts: Vec<TileActs> = jobs
        .par_iter()
        .map(|job| {
            let mut acts = TileActs::default();
            acts.pack(job.x, true);
            acts
        })
        .collect();
    let outs: Vec<SharedOut> = jobs
        .iter_mut()
        .map(|job| SharedOut(job.y.as_mut_ptr()))
        .collect();
    let jobs = &*jobs;
    let mut tasks = Vec::new();
    for (j, job) in jobs.iter().enumerate() {
        if job.x.rows == 0 {
            continue;
        }
        let panels = job.m.rows.div_ceil(TILE);
        let per_task = panels_per_task(panels);
        tasks.extend(
            (0..panels)
                .step_by(per_task)
                .map(|p0| (j, p0, (p0 + per_task).min(panels))),
        );
    }
    tasks.into_par_iter().for_each(|(j, p0, p1)| {
        let (m, bias, out, acts) = (&jobs[j].m, jobs[j].bias, outs[j], &acts[j]);
        let (rows, nb) = (m.rows, m.cols / QK);
        SCRATCH.with_borrow_mut(|s| {
            s.weights.resize(nb * TILE_BLOCK, 0);
            s.scales.resize(nb * TILE, 0.0);
            // SAFETY: `isa` is the AMX level (asserted), which detection offers only with
            // AMX-TILE/INT8 present and tile data permitted.
            let _tiles = unsafe { TileConfig::load(&INT8_TILES) };
            for p in p0..p1 {
                let (r0, r1) = (p * TILE, ((p + 1) * TILE).min(rows));
                let blocks = &m.blocks[r0 * nb * BLOCK_BYTES..r1 * nb * BLOCK_BYTES];
                let scales = &m.scales[r0 * nb..r1 * nb];
                // SAFETY: AMX and AVX-512 F/BW/VL/DQ are there (`isa` is the AMX level, which
                // detection offers only above AVX-512 VNNI) and INT8_TILES is loaded;
                // `unpack_mxfp4_panel` asserts its buffers' sizes and fills `s.weights` with
                // nb blocks of 16 rows of 32 (the A tiles `panel` reads) and `s.scales` with
                // nb·16 scales; job j's `y` holds [t, rows] (asserted) and this task alone
                // writes its rows r0..r1 (the tasks split each job's panels).
                unsafe {
                    x86::unpack_mxfp4_panel(
                        blocks,
                        scales,
                        r1 - r0,
                        nb,
                        &mut s.weights,
                        &mut s.scales,
                    );
                    x86::panel(
                        s.weights.as_ptr(),
                        TILE_BLOCK,
                        QK,
                        &s.scales,
                        acts,
                        Target {
                            y: out,
                            ldy: rows,
                            r0,
                            r1,
                            bias,
                        },
                        next_panel(m.blocks, r1 * nb * BLOCK_BYTES, TILE * nb * BLOCK_BYTES),
                    );
                }
            }
        });
    });
}

/// `y[t, r] = bias[r] + Σ_c x[t, c]·W[r, c]`, `x` quantized in plain order. `isa` must be
/// the AMX level: it proves the tile unit is there.
pub(crate) fn q8_0_linear(isa: Isa, m: &Q8Matrix, x: &Q8Acts, bias: Option<&[f32]>, y: &mut [f32]) {
    let (rows, cols, t) = (m.rows(), m.cols(), x.rows);
    assert_eq!(isa.level(), Level::Amx, "amx::q8_0_linear without AMX");
    assert!(
        x.cols == cols && y.len() >= t * rows && bias.is_none_or(|b| b.len() >= rows),
        "amx::q8_0_linear shapes"
    );
    if t == 0 || rows == 0 {
        return;
    }
    let nb = cols / QK;
    let mut acts = TileActs::default();
    acts.pack(x, false);
    let out = SharedOut(y.as_mut_ptr());
    let (qs, d) = (m.values(), m.scales());
    let panels = rows.div_ceil(TILE);
    for_row_chunks(panels, panels_per_task(panels), |p0, p1| {
        SCRATCH.with_borrow_mut(|s| {
            s.scales.resize(nb * TILE, 0.0);
            // SAFETY: `isa` is the AMX level (asserted), which detection offers only with
            // AMX-TILE/INT8 present and tile data permitted.
            let _tiles = unsafe { TileConfig::load(&INT8_TILES) };
            for p in p0..p1 {
                let (r0, r1) = (p * TILE, ((p + 1) * TILE).min(rows));
                for (n, r) in (r0..r1).enumerate() {
                    for b in 0..nb {
                        s.scales[b * TILE + n] = d[r * nb + b];
                    }
                }
                // A full panel is read in place (row stride `cols`); a last partial one is
                // copied into zeroed rows so the tile loads stay inside the buffer.
                let (base, block_step, stride) = if r1 - r0 == TILE {
                    (qs[r0 * cols..].as_ptr(), QK, cols)
                } else {
                    s.weights.clear();
                    s.weights.resize(TILE * cols, 0);
                    s.weights[..(r1 - r0) * cols].copy_from_slice(&qs[r0 * cols..r1 * cols]);
                    (s.weights.as_ptr(), QK, cols)
                };
                // SAFETY: AMX and AVX-512 are there (`isa` is the AMX level) and INT8_TILES is
                // loaded; `base` points at 16 rows of `cols` bytes (the matrix's rows r0..r0 +
                // 16, or the zero-padded copy), so every block's A tile is inside; `s.scales`
                // holds nb·16; `y` holds [t, rows] (asserted) and this task alone writes rows
                // r0..r1 (`for_row_chunks` splits the panels).
                unsafe {
                    x86::panel(
                        base,
                        block_step,
                        stride,
                        &s.scales,
                        &acts,
                        Target {
                            y: out,
                            ldy: rows,
                            r0,
                            r1,
                            bias,
                        },
                        next_panel(qs, r1 * cols, TILE * cols),
                    );
                }
            }
        });
    });
}

/// The bytes of the weights' next panel (`len` from `start`, cut at the end), which a panel
/// prefetches while it computes: the unpacking (or the tile loads) of that panel then finds
/// them in cache instead of waiting on memory.
fn next_panel<T>(all: &[T], start: usize, len: usize) -> &[T] {
    let start = start.min(all.len());
    &all[start..(start + len).min(all.len())]
}

/// Where a panel's results go: rows `r0..r1` of `y` (`[tokens, ldy]`), plus the bias.
struct Target<'a> {
    y: SharedOut,
    ldy: usize,
    r0: usize,
    r1: usize,
    bias: Option<&'a [f32]>,
}

/// A tile configuration loaded for the current thread; dropping it releases the tiles (so a
/// context switch need not save them).
struct TileConfig;

/// The int8 matmul shapes. tmm0-3: int32 results, 16 rows × 64 bytes; tmm4-5: weights, 16
/// rows × 32 bytes (one 32-block); tmm6-7: tokens, 8 rows × 64 bytes (one 32-block of 16
/// tokens).
const INT8_TILES: [(u8, u16); 8] = [
    (16, 64),
    (16, 64),
    (16, 64),
    (16, 64),
    (16, 32),
    (16, 32),
    (8, 64),
    (8, 64),
];

impl TileConfig {
    /// Loads palette 1 with `(rows, bytes per row)` for tmm0-7.
    ///
    /// # Safety
    /// AMX is usable: the CPU has it and Linux permitted tile data ([`permitted`]).
    unsafe fn load(shapes: &[(u8, u16); 8]) -> TileConfig {
        #[repr(C, align(64))]
        struct Config([u8; 64]);
        let mut c = Config([0; 64]);
        c.0[0] = 1;
        for (t, &(rows, bytes)) in shapes.iter().enumerate() {
            c.0[16 + 2 * t..18 + 2 * t].copy_from_slice(&bytes.to_le_bytes());
            c.0[48 + t] = rows;
        }
        // SAFETY: AMX is usable (the contract); the 64-byte configuration is valid for palette
        // 1 (every shape at most 16 rows of at most 64 bytes, reserved bytes zero).
        unsafe { x86::load_config(c.0.as_ptr()) };
        TileConfig
    }
}

impl Drop for TileConfig {
    fn drop(&mut self) {
        // SAFETY: a `TileConfig` exists only after `load`, whose contract is that AMX is usable.
        unsafe { x86::release() };
    }
}

#[cfg(target_arch = "x86_64")]
pub(crate) mod x86 {
    use std::arch::asm;
    use std::arch::x86_64::*;

    use super::{TILE, TILE_BLOCK, Target, TileActs};
    use crate::kernels::mxfp4::BLOCK_BYTES;
    use crate::kernels::q8::{FP4_X2, QK};

    /// # Safety
    /// AMX is usable (detected and permitted); `config` points at a valid 64-byte palette-1
    /// configuration (`ldtilecfg` faults on a bad one).
    pub(super) unsafe fn load_config(config: *const u8) {
        // SAFETY: the contract; the instruction only reads those 64 bytes.
        unsafe { asm!("ldtilecfg [{}]", in(reg) config, options(nostack, readonly)) };
    }

    /// # Safety
    /// AMX is usable (detected and permitted).
    pub(super) unsafe fn release() {
        // SAFETY: the contract; `tilerelease` touches no memory, only the tile state.
        unsafe { asm!("tilerelease", options(nostack, nomem)) };
    }

    /// `src` rounded to bf16 (to nearest, ties to even) as bits, 32 at a time.
    ///
    /// # Safety
    /// The CPU has AVX-512F and AVX-512 BF16.
    #[target_feature(enable = "avx512f,avx512bf16")]
    pub(super) unsafe fn to_bf16(src: &[f32], dst: &mut [u16]) {
        assert_eq!(src.len(), dst.len(), "to_bf16 lengths");
        let n = src.len();
        let mut i = 0;
        while i + 32 <= n {
            // SAFETY: i + 32 ≤ n = both lengths, so the 32 values at i are inside `src` and
            // `dst`; `__m512bh` and `__m512i` are both 64 plain bytes.
            unsafe {
                let lo = _mm512_loadu_ps(src.as_ptr().add(i));
                let hi = _mm512_loadu_ps(src.as_ptr().add(i + 16));
                let packed: __m512i = std::mem::transmute(_mm512_cvtne2ps_pbh(hi, lo));
                _mm512_storeu_si512(dst.as_mut_ptr().add(i).cast(), packed);
            }
            i += 32;
        }
        for (d, &v) in dst[i..].iter_mut().zip(&src[i..]) {
            *d = half::bf16::from_f32(v).to_bits();
        }
    }

    /// Scores of 16 query rows (bf16 `q`, 64 per row) against 32-key blocks of packed key
    /// tiles, block `i` stored at columns `32i..32i + 32` of `scores` (`cols` f32 per row).
    ///
    /// # Safety
    /// The bf16 tile configuration loaded; `q` valid for 16 rows of 64, each block pointer
    /// for four 1 KiB tiles, `scores` for 16 rows of `cols` ≥ 32·blocks.
    pub(super) unsafe fn scores_tile(
        q: *const u16,
        blocks: impl Iterator<Item = *const u16>,
        scores: *mut f32,
        cols: usize,
    ) {
        // SAFETY: the contract: the configuration is loaded and `q` holds 16 rows of 64 bf16
        // (128-byte stride; two 64-byte halves).
        unsafe {
            asm!(
                "tileloadd tmm2, [{q} + {s}]",
                "tileloadd tmm3, [{q} + {s} + 64]",
                q = in(reg) q,
                s = in(reg) 128usize,
                options(nostack),
            );
        }
        for (i, keys) in blocks.enumerate() {
            // SAFETY: the contract: `keys` holds four 1 KiB tiles; block i's 32 columns of
            // `scores` (16 rows, stride `cols` f32) lie inside it since cols ≥ 32·blocks.
            unsafe {
                asm!(
                "tileloadd tmm4, [{k} + {s}]",
                "tileloadd tmm5, [{k} + {s} + 1024]",
                "tileloadd tmm6, [{k} + {s} + 2048]",
                "tileloadd tmm7, [{k} + {s} + 3072]",
                "tilezero tmm0",
                "tilezero tmm1",
                "tdpbf16ps tmm0, tmm2, tmm4",
                "tdpbf16ps tmm0, tmm3, tmm5",
                "tdpbf16ps tmm1, tmm2, tmm6",
                "tdpbf16ps tmm1, tmm3, tmm7",
                "tilestored [{c} + {cs}], tmm0",
                "tilestored [{c} + {cs} + 64], tmm1",
                k = in(reg) keys,
                s = in(reg) 64usize,
                c = in(reg) scores.add(32 * i),
                cs = in(reg) cols * 4,
                options(nostack),
                );
            }
        }
    }

    /// Σ over 32-key blocks of 16 rows of bf16 probabilities (`cols` per row, block `i` at
    /// column `32i`) times the block's four packed value tiles, into 16 rows of 64 f32.
    ///
    /// # Safety
    /// The bf16 tile configuration loaded; `probs` valid for 16 rows of `cols` ≥ 32·blocks,
    /// each block pointer for four 1 KiB tiles, `out` for 16 rows of 64.
    pub(super) unsafe fn weighted_values_tile(
        probs: *const u16,
        cols: usize,
        blocks: impl Iterator<Item = *const u16>,
        out: *mut f32,
    ) {
        // SAFETY: the configuration is loaded (the contract); zeroing touches no memory.
        unsafe {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        }
        for (i, values) in blocks.enumerate() {
            // SAFETY: the contract: block i's 32 columns of `probs` (16 rows, stride `cols`)
            // lie inside it since cols ≥ 32·blocks; `values` holds four 1 KiB tiles.
            unsafe {
                asm!(
                "tileloadd tmm4, [{p} + {ps}]",
                "tileloadd tmm5, [{v} + {s}]",
                "tdpbf16ps tmm0, tmm4, tmm5",
                "tileloadd tmm6, [{v} + {s} + 1024]",
                "tdpbf16ps tmm1, tmm4, tmm6",
                "tileloadd tmm7, [{v} + {s} + 2048]",
                "tdpbf16ps tmm2, tmm4, tmm7",
                "tileloadd tmm5, [{v} + {s} + 3072]",
                "tdpbf16ps tmm3, tmm4, tmm5",
                p = in(reg) probs.add(32 * i),
                ps = in(reg) cols * 2,
                v = in(reg) values,
                s = in(reg) 64usize,
                options(nostack),
                );
            }
        }
        // SAFETY: the contract: `out` holds 16 rows of 64 f32 (256-byte stride, four 64-byte
        // column tiles).
        unsafe {
            asm!(
                "tilestored [{o} + {s}], tmm0",
                "tilestored [{o} + {s} + 64], tmm1",
                "tilestored [{o} + {s} + 128], tmm2",
                "tilestored [{o} + {s} + 192], tmm3",
                o = in(reg) out,
                s = in(reg) 256usize,
                options(nostack),
            );
        }
    }

    /// Unpacks `rows` (≤ 16) packed rows of `nb` blocks into `weights` `[nb][16][32]` (per
    /// block: the low nibbles' values, then the high nibbles') and their scales into
    /// `scales` `[nb][16]` (2^(e-127), with 2^-127 for e = 0 as in `E8M0_SCALES`). Rows past
    /// `rows` keep stale values: their results are never stored.
    ///
    /// # Safety
    /// The CPU has AVX-512 F/BW/VL (the buffers' sizes are asserted here).
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn unpack_mxfp4_panel(
        blocks: &[u8],
        scales: &[u8],
        rows: usize,
        nb: usize,
        weights: &mut [i8],
        out_scales: &mut [f32],
    ) {
        assert!(
            rows <= TILE
                && blocks.len() >= rows * nb * BLOCK_BYTES
                && scales.len() >= rows * nb
                && weights.len() >= nb * TILE_BLOCK
                && out_scales.len() >= nb * TILE,
            "unpack_mxfp4_panel shapes"
        );
        // SAFETY: the table is 16 bytes, one 128-bit load.
        let lut = _mm512_broadcast_i32x4(unsafe { _mm_loadu_si128(FP4_X2.as_ptr().cast()) });
        let low4 = _mm512_set1_epi8(0x0f);
        // Four blocks per 64-byte load; per block, its 16 low-nibble values then its 16
        // high-nibble ones (qword indices into [lo | hi]).
        let first = _mm512_setr_epi64(0, 1, 8, 9, 2, 3, 10, 11);
        let second = _mm512_setr_epi64(4, 5, 12, 13, 6, 7, 14, 15);
        let wp = weights.as_mut_ptr();
        for n in 0..rows {
            // SAFETY: n < rows and `blocks` holds rows·nb blocks (asserted).
            let row = unsafe { blocks.as_ptr().add(n * nb * BLOCK_BYTES) };
            let mut b = 0;
            while b < nb {
                let left = (nb - b).min(4);
                let mask = if left == 4 {
                    u64::MAX
                } else {
                    (1u64 << (16 * left)) - 1
                };
                // SAFETY: the mask reads only blocks b..b + left < nb of row n, inside
                // `blocks`; masked-off bytes are not accessed (and cannot fault).
                let packed =
                    unsafe { _mm512_maskz_loadu_epi8(mask, row.add(b * BLOCK_BYTES).cast()) };
                let lo = _mm512_shuffle_epi8(lut, _mm512_and_si512(packed, low4));
                let hi =
                    _mm512_shuffle_epi8(lut, _mm512_and_si512(_mm512_srli_epi16(packed, 4), low4));
                let ab = _mm512_permutex2var_epi64(lo, first, hi);
                let cd = _mm512_permutex2var_epi64(lo, second, hi);
                let halves = [
                    _mm512_castsi512_si256(ab),
                    _mm512_extracti64x4_epi64::<1>(ab),
                    _mm512_castsi512_si256(cd),
                    _mm512_extracti64x4_epi64::<1>(cd),
                ];
                for (j, half) in halves.iter().enumerate().take(left) {
                    // SAFETY: block b + j < nb, row n < 16: its 32 bytes at
                    // (b + j)·512 + n·32 are inside `weights` (nb·512 bytes, asserted).
                    unsafe {
                        _mm256_storeu_si256(wp.add((b + j) * TILE_BLOCK + n * QK).cast(), *half)
                    };
                }
                b += 4;
            }
        }
        // Scales: column b of the panel's rows, 16 at a time.
        let lanes = _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
        let offsets = _mm512_mullo_epi32(lanes, _mm512_set1_epi32(nb as i32));
        let valid: __mmask16 = if rows == TILE {
            0xffff
        } else {
            (1u16 << rows) - 1
        };
        let tiny = _mm512_set1_ps(f32::from_bits(1 << 22)); // 2^-127
        // Each lane gathers 4 bytes and keeps the low one, so lane n reads scales[n·nb + b..][..4]:
        // the last row's last three columns would read past `scales` (past the mapped file,
        // for a matrix's last panel); those columns take the bytes one by one.
        let last_row = rows.saturating_sub(1) * nb;
        let gathered = (scales.len() + 1).saturating_sub(last_row + 4).min(nb);
        for b in 0..nb {
            let e = if b < gathered {
                // SAFETY: the active lanes n < rows read bytes n·nb + b..n·nb + b + 4, which end
                // at most at last_row + b + 4 ≤ scales.len() since b < gathered; inactive
                // lanes are not read.
                unsafe {
                    _mm512_mask_i32gather_epi32::<1>(
                        _mm512_setzero_si512(),
                        valid,
                        offsets,
                        scales.as_ptr().add(b).cast(),
                    )
                }
            } else {
                let mut lanes = [0i32; TILE];
                for (n, lane) in lanes.iter_mut().enumerate().take(rows) {
                    *lane = scales[n * nb + b] as i32;
                }
                // SAFETY: `lanes` is 16 i32, one 512-bit load.
                unsafe { _mm512_loadu_epi32(lanes.as_ptr()) }
            };
            let e = _mm512_and_si512(e, _mm512_set1_epi32(0xff));
            let s = _mm512_castsi512_ps(_mm512_slli_epi32::<23>(e));
            let zero = _mm512_cmpeq_epi32_mask(e, _mm512_setzero_si512());
            // SAFETY: b < nb: the 16 f32 at b·16 are inside `out_scales` (nb·16, asserted).
            unsafe {
                _mm512_storeu_ps(
                    out_scales.as_mut_ptr().add(b * TILE),
                    _mm512_mask_mov_ps(s, zero, tiny),
                )
            };
        }
    }

    /// Accumulates the results of one group of four blocks (int32 tiles in `c`, 256 values
    /// each) into `acc`.
    ///
    /// # Safety
    /// The CPU has the enabled features; `c` is 64-byte aligned and holds `blocks`·256 i32,
    /// `w_scales` and `x_scales` `blocks`·16 f32 each.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    #[inline]
    unsafe fn scale_into(
        acc: &mut [__m512; TILE],
        c: *const i32,
        blocks: usize,
        w_scales: *const f32,
        x_scales: *const f32,
    ) {
        for j in 0..blocks {
            // SAFETY: j < blocks: the 16 token scales at j·16 and block j's 256 results (16
            // aligned rows of 16 from the aligned `c`) are inside the buffers (the contract).
            let xs = unsafe { _mm512_loadu_ps(x_scales.add(j * TILE)) };
            for (n, a) in acc.iter_mut().enumerate() {
                // SAFETY: as above, n < 16.
                let (sum, w) = unsafe {
                    (
                        _mm512_load_si512(c.add(j * TILE * TILE + n * TILE).cast()),
                        *w_scales.add(j * TILE + n),
                    )
                };
                let s = _mm512_mul_ps(xs, _mm512_set1_ps(w));
                *a = _mm512_fmadd_ps(_mm512_cvtepi32_ps(sum), s, *a);
            }
        }
    }

    #[repr(C, align(64))]
    struct Results([i32; 2 * 4 * TILE * TILE]);

    /// `rows[n]` lane `i` becomes `rows[i]` lane `n` (a 16 × 16 transpose in registers: 32-bit
    /// then 64-bit interleaves within 128-bit lanes, then two rounds of lane shuffles).
    #[target_feature(enable = "avx512f")]
    #[inline]
    fn transpose16(rows: &mut [__m512; TILE]) {
        let r = *rows;
        let mut a = [_mm512_setzero_ps(); TILE];
        for k in 0..TILE / 2 {
            a[2 * k] = _mm512_unpacklo_ps(r[2 * k], r[2 * k + 1]);
            a[2 * k + 1] = _mm512_unpackhi_ps(r[2 * k], r[2 * k + 1]);
        }
        // b[4g + c], 128-bit lane l: rows 4g..4g + 4 of column 4l + c.
        let mut b = [_mm512_setzero_ps(); TILE];
        let (lo, hi) = (
            |x: __m512, y: __m512| {
                _mm512_castpd_ps(_mm512_unpacklo_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)))
            },
            |x: __m512, y: __m512| {
                _mm512_castpd_ps(_mm512_unpackhi_pd(_mm512_castps_pd(x), _mm512_castps_pd(y)))
            },
        );
        for g in 0..4 {
            b[4 * g] = lo(a[4 * g], a[4 * g + 2]);
            b[4 * g + 1] = hi(a[4 * g], a[4 * g + 2]);
            b[4 * g + 2] = lo(a[4 * g + 1], a[4 * g + 3]);
            b[4 * g + 3] = hi(a[4 * g + 1], a[4 * g + 3]);
        }
        for c in 0..4 {
            let p0 = _mm512_shuffle_f32x4::<0x44>(b[c], b[4 + c]);
            let p1 = _mm512_shuffle_f32x4::<0xee>(b[c], b[4 + c]);
            let q0 = _mm512_shuffle_f32x4::<0x44>(b[8 + c], b[12 + c]);
            let q1 = _mm512_shuffle_f32x4::<0xee>(b[8 + c], b[12 + c]);
            rows[c] = _mm512_shuffle_f32x4::<0x88>(p0, q0);
            rows[4 + c] = _mm512_shuffle_f32x4::<0xdd>(p0, q0);
            rows[8 + c] = _mm512_shuffle_f32x4::<0x88>(p1, q1);
            rows[12 + c] = _mm512_shuffle_f32x4::<0xdd>(p1, q1);
        }
    }

    /// One panel of 16 weight rows times every token tile of `acts`. The weights' 32-block `b`
    /// is the A tile at `a + b·a_step` with row stride `a_stride`; `w_scales` is `[nb][16]`.
    /// `prefetch` (the next panel's bytes) is brought into L2 a little per block group.
    ///
    /// # Safety
    /// AMX-INT8 and AVX-512 usable, [`super::INT8_TILES`] loaded; `a` valid for 16 rows of
    /// `nb` blocks as described; `target.y` valid for `[acts.rows, ldy]` with r0 ≤ r1 ≤ ldy,
    /// r1 - r0 ≤ 16, its bias (if any) at least r1 long, and its rows r0..r1 written by no one
    /// else meanwhile.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq")]
    pub(super) unsafe fn panel<T>(
        a: *const i8,
        a_step: usize,
        a_stride: usize,
        w_scales: &[f32],
        acts: &TileActs,
        target: Target,
        prefetch: &[T],
    ) {
        let nb = acts.nb;
        debug_assert!(target.r1 - target.r0 <= TILE);
        let w_scales = &w_scales[..nb * TILE];
        // Written by the tile stores before the vector loads read it.
        let mut results = std::mem::MaybeUninit::<Results>::uninit();
        let c = results.as_mut_ptr().cast::<i32>();
        let groups = nb / 4;
        let tiles = acts.tiles();
        // Prefetch: the next panel's cache lines, spread over every group of every tile.
        let (mut ahead, ahead_end) = {
            let r = prefetch.as_ptr_range();
            (r.start.cast::<u8>(), r.end.cast::<u8>())
        };
        let lines = (ahead_end as usize - ahead as usize).div_ceil(64);
        let per_group = lines.div_ceil((groups * tiles).max(1));
        let mut prefetch_some = || {
            for _ in 0..per_group {
                if ahead >= ahead_end {
                    break;
                }
                _mm_prefetch::<_MM_HINT_T1>(ahead.cast());
                // Wrapping: the last step may pass `ahead_end` (a prefetch never faults).
                ahead = ahead.wrapping_add(64);
            }
        };
        let rows_here = target.r1 - target.r0;
        let row_mask: __mmask16 = if rows_here == TILE {
            0xffff
        } else {
            (1u16 << rows_here) - 1
        };
        let bias = match target.bias {
            // SAFETY: the mask reads lanes r0..r1 of the bias, at least r1 long (the contract).
            Some(b) => unsafe { _mm512_maskz_loadu_ps(row_mask, b.as_ptr().add(target.r0)) },
            None => _mm512_setzero_ps(),
        };
        for tile in 0..tiles {
            // This tile's activations: nb blocks of 16 tokens and their scales.
            let xq = acts.q[tile * nb * TILE_BLOCK..][..nb * TILE_BLOCK].as_ptr();
            let xd = &acts.d[tile * nb * TILE..][..nb * TILE];
            let mut acc = [_mm512_setzero_ps(); TILE];
            // Four blocks into tmm0-3, stored to half `slot` of `results`.
            let group = |g: usize, slot: usize| {
                let b = 4 * g;
                // SAFETY: blocks b..b + 4 ≤ nb: the weights' A tiles are inside `a` (the
                // contract), the tokens' B tiles (8 rows of 64) inside this tile's `xq`; the
                // four results (16 rows of 64 bytes each) fill half `slot` < 2 of `results`.
                unsafe {
                    let wa = |j: usize| a.add((b + j) * a_step);
                    let xb = |j: usize| xq.add((b + j) * TILE_BLOCK);
                    asm!(
                        "tileloadd tmm4, [{a0} + {sa}]",
                        "tileloadd tmm6, [{b0} + {sb}]",
                        "tilezero tmm0",
                        "tdpbssd tmm0, tmm4, tmm6",
                        "tileloadd tmm5, [{a1} + {sa}]",
                        "tileloadd tmm7, [{b1} + {sb}]",
                        "tilezero tmm1",
                        "tdpbssd tmm1, tmm5, tmm7",
                        "tileloadd tmm4, [{a2} + {sa}]",
                        "tileloadd tmm6, [{b2} + {sb}]",
                        "tilezero tmm2",
                        "tdpbssd tmm2, tmm4, tmm6",
                        "tileloadd tmm5, [{a3} + {sa}]",
                        "tileloadd tmm7, [{b3} + {sb}]",
                        "tilezero tmm3",
                        "tdpbssd tmm3, tmm5, tmm7",
                        "tilestored [{c} + {sb}], tmm0",
                        "tilestored [{c} + {sb} + 1024], tmm1",
                        "tilestored [{c} + {sb} + 2048], tmm2",
                        "tilestored [{c} + {sb} + 3072], tmm3",
                        a0 = in(reg) wa(0),
                        a1 = in(reg) wa(1),
                        a2 = in(reg) wa(2),
                        a3 = in(reg) wa(3),
                        b0 = in(reg) xb(0),
                        b1 = in(reg) xb(1),
                        b2 = in(reg) xb(2),
                        b3 = in(reg) xb(3),
                        c = in(reg) c.add(slot * 4 * TILE * TILE),
                        sa = in(reg) a_stride,
                        sb = in(reg) 64usize,
                        options(nostack),
                    );
                }
            };
            // Group g's four blocks, once `group(g, g % 2)` has stored them, scaled into `acc`.
            let scale_group = |acc: &mut [__m512; TILE], g: usize| {
                // SAFETY: AVX-512 usable; half g % 2 of the aligned `results` holds group g's
                // four blocks, stored by `group`; the scales of blocks 4·g..4·g + 4 ≤ nb are
                // inside `w_scales` and `xd`.
                unsafe {
                    scale_into(
                        acc,
                        c.add((g % 2) * 4 * TILE * TILE),
                        4,
                        w_scales[4 * g * TILE..].as_ptr(),
                        xd[4 * g * TILE..].as_ptr(),
                    );
                }
            };
            // Software pipeline: the tile unit works on group g while the vector units scale
            // group g - 1.
            if groups > 0 {
                group(0, 0);
                for g in 1..groups {
                    group(g, g % 2);
                    prefetch_some();
                    scale_group(&mut acc, g - 1);
                }
                prefetch_some();
                scale_group(&mut acc, groups - 1);
            }
            for b in 4 * groups..nb {
                // SAFETY: block b < nb: its A tile is inside `a`, its B tile inside `xq`;
                // the result (16 rows of 64 bytes) goes to the start of `results`, which
                // `scale_into` then reads with block b's scales.
                unsafe {
                    asm!(
                        "tileloadd tmm4, [{a} + {sa}]",
                        "tileloadd tmm6, [{b} + {sb}]",
                        "tilezero tmm0",
                        "tdpbssd tmm0, tmm4, tmm6",
                        "tilestored [{c} + {sb}], tmm0",
                        a = in(reg) a.add(b * a_step),
                        b = in(reg) xq.add(b * TILE_BLOCK),
                        c = in(reg) c,
                        sa = in(reg) a_stride,
                        sb = in(reg) 64usize,
                        options(nostack),
                    );
                    scale_into(
                        &mut acc,
                        c,
                        1,
                        w_scales[b * TILE..].as_ptr(),
                        xd[b * TILE..].as_ptr(),
                    );
                }
            }
            // acc[n] holds row r0 + n for the tile's 16 tokens: transposed, acc[i] holds
            // token i's 16 rows, one (masked) store each.
            transpose16(&mut acc);
            let tokens = (acts.rows - tile * TILE).min(TILE);
            for (i, sums) in acc.iter().enumerate().take(tokens) {
                let dst = target.y.at((tile * TILE + i) * target.ldy + target.r0);
                // SAFETY: token tile·16 + i < acts.rows; the mask writes its columns r0..r1
                // ≤ ldy, inside `y` and this task's alone (the contract).
                unsafe { _mm512_mask_storeu_ps(dst, row_mask, _mm512_add_ps(*sums, bias)) };
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::isa::Isa;
    use crate::kernels::q8::{dot_mxfp4_q8, dot_q8_0};
    use crate::kernels::test_data::{bytes, values};

    fn amx() -> Option<Isa> {
        let isa = Isa::available().into_iter().find(|i| i.name() == "amx");
        if isa.is_none() {
            eprintln!("this CPU (or kernel) offers no AMX: the tile kernels are not exercised");
        }
        isa
    }

    /// Activations with saturating blocks (±127) and an all-zero block among ordinary ones.
    fn activations(tokens: usize, cols: usize, seed: u64) -> Vec<f32> {
        let mut x = values(tokens * cols, seed);
        if let Some(v) = x.first_mut() {
            *v = 1e3;
        }
        if tokens * cols > 40 {
            x[40] = -1e3;
        }
        if tokens > 0 && cols >= 64 {
            x[32..64].fill(0.0);
        }
        x
    }

    /// `got` against the scalar reference per output, within f32 rounding of the block
    /// terms summed in another order (`scale` bounds their absolute sum).
    fn assert_close(label: &str, got: f32, want: f32, scale: f32) {
        assert!(
            (got - want).abs() <= 1e-5 * scale.max(1.0),
            "{label}: {got} vs {want} (scale {scale})"
        );
    }

    /// Odd shapes: partial panels (rows not a multiple of 16), 1 token, token counts that
    /// are not multiples of 16, block counts that are not multiples of 4 (K not a multiple
    /// of 64 or 128), an expert with no tokens; extreme codes and E8M0 scales 0 (2^-127) and 160 (2^33).
    #[test]
    fn mxfp4_tiles_match_the_scalar_reference() {
        let Some(isa) = amx() else { return };
        for (rows, cols) in [(1, 32), (5, 96), (16, 160), (17, 288), (40, 2880)] {
            let nb = cols / QK;
            let blocks = bytes(rows * cols / 2, rows as u64);
            let mut scales: Vec<u8> = bytes(rows * nb, 7 + cols as u64)
                .iter()
                .map(|b| 110 + b % 30)
                .collect();
            scales[0] = 0;
            if scales.len() > 3 {
                scales[3] = 160;
            }
            let m = Mxfp4Matrix::new(&blocks, &scales, rows, cols).expect("shapes");
            let bias = values(rows, 9);
            for tokens in [0, 1, 8, 15, 16, 17, 33] {
                let x = activations(tokens, cols, 100 + tokens as u64);
                let mut q = Q8Acts::default();
                q.quantize(&x, tokens, cols, true);
                let mut y = vec![f32::NAN; tokens * rows];
                mxfp4_linear(isa, &m, &q, Some(&bias), &mut y);
                let mut via_dispatch = vec![f32::NAN; tokens * rows];
                m.linear_q8(isa, &q, Some(&bias), &mut via_dispatch);
                for t in 0..tokens {
                    let (xq, xd) = q.row(t);
                    for r in 0..rows {
                        let (b, s) = (
                            &blocks[r * cols / 2..(r + 1) * cols / 2],
                            &scales[r * nb..(r + 1) * nb],
                        );
                        let want = dot_mxfp4_q8(Isa::SCALAR, b, s, xq, xd, q.corr_row(t)) + bias[r];
                        // Σ|terms| ≤ Σ_b 12·127·32 · scale_b · xd_b.
                        let scale: f32 = (0..nb)
                            .map(|bl| {
                                crate::kernels::mxfp4::E8M0_SCALES[s[bl] as usize]
                                    * xd[bl]
                                    * 12.0
                                    * 127.0
                                    * 32.0
                            })
                            .sum();
                        let label = format!("{rows}x{cols}, {tokens} tokens, t={t} r={r}");
                        assert_close(&label, y[t * rows + r], want, scale);
                        assert_close(&label, via_dispatch[t * rows + r], want, scale);
                    }
                }
            }
        }
    }

    /// A batch of experts of different shapes and token counts (none, one, partial tiles) in
    /// one pass gives each exactly what it gets alone (the same panels, the same sums).
    #[test]
    fn mxfp4_batch_equals_each_matmul_alone() {
        let Some(isa) = amx() else { return };
        let shapes = [
            (17, 288, 0usize),
            (40, 2880, 33),
            (5, 96, 1),
            (16, 160, 16),
            (33, 64, 9),
        ];
        // Per matmul: packed blocks, scales, bias, quantized tokens.
        type Case = (Vec<u8>, Vec<u8>, Vec<f32>, Q8Acts);
        let data: Vec<Case> = shapes
            .iter()
            .enumerate()
            .map(|(i, &(rows, cols, tokens))| {
                let scales = bytes(rows * cols / QK, 50 + i as u64)
                    .iter()
                    .map(|b| 115 + b % 20)
                    .collect();
                let mut q = Q8Acts::default();
                q.quantize(
                    &activations(tokens, cols, 70 + i as u64),
                    tokens,
                    cols,
                    true,
                );
                (
                    bytes(rows * cols / 2, 60 + i as u64),
                    scales,
                    values(rows, 80 + i as u64),
                    q,
                )
            })
            .collect();
        let matrix = |i: usize| {
            let (rows, cols, _) = shapes[i];
            Mxfp4Matrix::new(&data[i].0, &data[i].1, rows, cols).expect("shapes")
        };
        let mut alone: Vec<Vec<f32>> = Vec::new();
        for (i, &(rows, _, tokens)) in shapes.iter().enumerate() {
            let mut y = vec![f32::NAN; tokens * rows];
            mxfp4_linear(isa, &matrix(i), &data[i].3, Some(&data[i].2), &mut y);
            alone.push(y);
        }
        let mut together: Vec<Vec<f32>> = shapes
            .iter()
            .map(|&(rows, _, tokens)| vec![f32::NAN; tokens * rows])
            .collect();
        let mut jobs: Vec<Mxfp4Job> = together
            .iter_mut()
            .enumerate()
            .map(|(i, y)| Mxfp4Job {
                m: matrix(i),
                x: &data[i].3,
                bias: Some(&data[i].2),
                y,
            })
            .collect();
        mxfp4_linear_batch(isa, &mut jobs);
        drop(jobs);
        let bits = |v: &[f32]| v.iter().map(|f| f.to_bits()).collect::<Vec<_>>();
        for (i, (a, b)) in alone.iter().zip(&together).enumerate() {
            assert!(
                a.iter().all(|v| v.is_finite()),
                "job {i} left outputs unwritten"
            );
            assert_eq!(bits(a), bits(b), "job {i}");
        }
    }

    #[test]
    fn q8_0_tiles_match_the_scalar_reference() {
        let Some(isa) = amx() else { return };
        for (rows, cols) in [(1, 32), (5, 96), (16, 160), (17, 288), (33, 2880)] {
            let nb = cols / QK;
            let w = values(rows * cols, 3 + rows as u64);
            let m = Q8Matrix::quantize_rows(rows, cols, |r, out| {
                out.copy_from_slice(&w[r * cols..(r + 1) * cols]);
            });
            for tokens in [0, 1, 8, 15, 16, 17, 33] {
                let x = activations(tokens, cols, 200 + tokens as u64);
                let mut q = Q8Acts::default();
                q.quantize(&x, tokens, cols, false);
                let mut y = vec![f32::NAN; tokens * rows];
                q8_0_linear(isa, &m, &q, None, &mut y);
                let mut via_dispatch = vec![f32::NAN; tokens * rows];
                m.linear(isa, &q, None, &mut via_dispatch);
                for t in 0..tokens {
                    let (xq, xd) = q.row(t);
                    for r in 0..rows {
                        let (wq, wd) = (
                            &m.values()[r * cols..(r + 1) * cols],
                            &m.scales()[r * nb..(r + 1) * nb],
                        );
                        let want = dot_q8_0(Isa::SCALAR, wq, wd, xq, xd);
                        let scale: f32 =
                            (0..nb).map(|b| wd[b] * xd[b] * 127.0 * 127.0 * 32.0).sum();
                        let label = format!("{rows}x{cols}, {tokens} tokens, t={t} r={r}");
                        assert_close(&label, y[t * rows + r], want, scale);
                        assert_close(&label, via_dispatch[t * rows + r], want, scale);
                    }
                }
            }
        }
    }

    /// The B-tile layout itself: byte `4r + i` of token `lane`'s block `b` (in the order the
    /// weights are unpacked to) sits at row `r`, column `4·lane + i`; padding tokens are zero.
    #[test]
    fn activations_are_laid_out_as_b_tiles() {
        let (tokens, cols) = (19, 96);
        let x = values(tokens * cols, 5);
        let (mut plain, mut perm) = (Q8Acts::default(), Q8Acts::default());
        plain.quantize(&x, tokens, cols, false);
        perm.quantize(&x, tokens, cols, true);
        let (mut a, mut b) = (TileActs::default(), TileActs::default());
        a.pack(&plain, false);
        b.pack(&perm, true);
        let nb = cols / QK;
        assert_eq!(a.tiles(), 2);
        for t in 0..2 * TILE {
            let (tile, lane) = (t / TILE, t % TILE);
            for blk in 0..nb {
                let base = (tile * nb + blk) * TILE_BLOCK;
                for k in 0..QK {
                    let at = base + (k / 4) * 64 + lane * 4 + k % 4;
                    let (want_plain, want_perm) = if t < tokens {
                        // Even/odd order: k < 16 is element 2k, k ≥ 16 element 2(k-16)+1.
                        let nat = if k < 16 { 2 * k } else { 2 * (k - 16) + 1 };
                        (
                            plain.qs[t * cols + blk * QK + k],
                            plain.qs[t * cols + blk * QK + nat],
                        )
                    } else {
                        (0, 0)
                    };
                    assert_eq!(a.q[at], want_plain, "plain t={t} b={blk} k={k}");
                    assert_eq!(b.q[at], want_perm, "mxfp4 t={t} b={blk} k={k}");
                }
                let d = if t < tokens {
                    plain.d[t * nb + blk]
                } else {
                    0.0
                };
                assert_eq!(a.d[(tile * nb + blk) * TILE + lane], d);
                assert_eq!(b.d[(tile * nb + blk) * TILE + lane], d * 0.5);
            }
        }
    }
}
