//! MXFP4 expert weights, used packed.
//!
//! Layout (as in the released checkpoints): blocks `[rows, cols/32, 16]` u8 and scales
//! `[rows, cols/32]` u8, output-major. Byte `b` of a block holds element `2b` in its low nibble
//! and `2b + 1` in its high nibble; a nibble is an FP4 E2M1 code (see [`FP4_VALUES`]); a scale
//! byte `e` is E8M0, the power of two `2^(e-127)`.
//!
//! Only the selected experts' rows are ever touched. Decode dots each packed row with the
//! activations directly; prefill expands a tile of rows to f32 and uses gemm. Issue 7's int8
//! activation kernels slot in behind [`Mxfp4Matrix::linear`].

use super::dense::linear_f32;

/// Values of the 16 FP4 E2M1 codes; bit 3 is the sign.
pub const FP4_VALUES: [f32; 16] = [
    0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0,
];

/// Elements per scale block.
pub const BLOCK: usize = 32;
/// Bytes per packed block.
pub const BLOCK_BYTES: usize = 16;

/// `2^(e-127)` for every E8M0 byte, computed like `torch.ldexp` (so 255 gives infinity).
pub static E8M0_SCALES: [f32; 256] = e8m0_table();

const fn e8m0_table() -> [f32; 256] {
    let mut t = [0.0f32; 256];
    let mut e = 0;
    while e < 256 {
        t[e] = if e == 0 {
            f32::from_bits(1 << 22) // 2^-127, a subnormal
        } else if e == 255 {
            f32::INFINITY
        } else {
            f32::from_bits((e as u32) << 23)
        };
        e += 1;
    }
    t
}

/// Both values of every packed byte: `[low nibble, high nibble]`, one lookup per two weights.
static BYTE_PAIRS: [[f32; 2]; 256] = byte_pair_table();

const fn byte_pair_table() -> [[f32; 2]; 256] {
    let mut t = [[0.0f32; 2]; 256];
    let mut b = 0;
    while b < 256 {
        t[b] = [FP4_VALUES[b & 0x0f], FP4_VALUES[b >> 4]];
        b += 1;
    }
    t
}

/// Decodes one 16-byte block with its scale into 32 values.
#[inline(always)]
fn decode_block(block: &[u8], scale: f32, out: &mut [f32; BLOCK]) {
    for (i, &byte) in block.iter().enumerate().take(BLOCK_BYTES) {
        let [lo, hi] = BYTE_PAIRS[byte as usize];
        out[2 * i] = lo * scale;
        out[2 * i + 1] = hi * scale;
    }
}

/// One expert's packed matrix `[rows, cols]`.
#[derive(Clone, Copy)]
pub struct Mxfp4Matrix<'a> {
    pub blocks: &'a [u8],
    pub scales: &'a [u8],
    pub rows: usize,
    pub cols: usize,
}

impl<'a> Mxfp4Matrix<'a> {
    /// Views `rows × cols` packed weights; `cols` must be a multiple of 32 and the slices
    /// exactly `rows·cols/2` and `rows·cols/32` bytes.
    pub fn new(blocks: &'a [u8], scales: &'a [u8], rows: usize, cols: usize) -> Option<Self> {
        let ok = cols.is_multiple_of(BLOCK)
            && blocks.len() == rows * cols / 2
            && scales.len() == rows * cols / BLOCK;
        ok.then_some(Mxfp4Matrix {
            blocks,
            scales,
            rows,
            cols,
        })
    }

    fn row(&self, r: usize) -> (&'a [u8], &'a [u8]) {
        let nb = self.cols / BLOCK;
        (
            &self.blocks[r * nb * BLOCK_BYTES..(r + 1) * nb * BLOCK_BYTES],
            &self.scales[r * nb..(r + 1) * nb],
        )
    }

    /// Decodes row `r` into `out` (exactly: every MXFP4 value is representable in f32).
    pub fn dequantize_row(&self, r: usize, out: &mut [f32]) {
        let (blocks, scales) = self.row(r);
        for_each_block(blocks, scales, out.chunks_exact_mut(BLOCK), |w, dst| {
            dst.copy_from_slice(w)
        });
    }

    /// `y[t, r] = bias[r] + Σ_c x[t, c]·W[r, c]`; `x` is `[t, cols]`, `y` is `[t, rows]`.
    pub fn linear(&self, x: &[f32], t: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        let dot = |r: usize, xt: &[f32]| {
            let (blocks, scales) = self.row(r);
            dot_packed_row(blocks, scales, xt)
        };
        let widen = |r0: usize, r1: usize, tile: &mut [f32]| {
            for (r, out) in (r0..r1).zip(tile.chunks_exact_mut(self.cols)) {
                self.dequantize_row(r, out);
            }
        };
        linear_f32((self.rows, self.cols), x, t, bias, y, dot, widen);
    }
}

/// Dot product of one packed row with f32 activations: each block is decoded (scale folded
/// in, exact since the scale is a power of two) into a small buffer and multiplied into 32
/// independent accumulators, which the compiler vectorizes; one reduction per row.
#[inline]
pub fn dot_packed_row(blocks: &[u8], scales: &[u8], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; BLOCK];
    for_each_block(blocks, scales, x.chunks_exact(BLOCK), |w, xs| {
        for i in 0..BLOCK {
            acc[i] += w[i] * xs[i];
        }
    });
    acc.iter().sum()
}

/// Decodes the packed blocks of a row one by one (scale folded in) and hands each, with the
/// matching item of `with` (the row's 32-value pieces of activations or output), to `f`.
#[inline(always)]
fn for_each_block<T>(
    blocks: &[u8],
    scales: &[u8],
    with: impl Iterator<Item = T>,
    mut f: impl FnMut(&[f32; BLOCK], T),
) {
    let mut w = [0.0f32; BLOCK];
    for ((block, &e), item) in blocks.chunks_exact(BLOCK_BYTES).zip(scales).zip(with) {
        decode_block(block, E8M0_SCALES[e as usize], &mut w);
        f(&w, item);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_the_documented_nibble_order_and_scales() {
        // One row of 32: byte b = (hi << 4) | lo, lo = code for element 2b, hi for 2b+1.
        let mut blocks = [0u8; 16];
        for (b, byte) in blocks.iter_mut().enumerate() {
            let lo = (b % 16) as u8;
            let hi = ((b + 7) % 16) as u8;
            *byte = (hi << 4) | lo;
        }
        let scales = [127u8 - 2]; // 2^-2
        let m = Mxfp4Matrix::new(&blocks, &scales, 1, 32).unwrap();
        let mut row = [0.0f32; 32];
        m.dequantize_row(0, &mut row);
        for b in 0..16 {
            assert_eq!(row[2 * b], FP4_VALUES[b % 16] * 0.25);
            assert_eq!(row[2 * b + 1], FP4_VALUES[(b + 7) % 16] * 0.25);
        }
        assert_eq!(FP4_VALUES[7], 6.0);
        assert_eq!(FP4_VALUES[9], -0.5);
        assert_eq!(E8M0_SCALES[127], 1.0);
        assert_eq!(E8M0_SCALES[0], 2f32.powi(-127));
        assert_eq!(E8M0_SCALES[254], 2f32.powi(127));
    }

    #[test]
    fn fused_dot_and_tiled_gemm_agree_with_dequantized_math() {
        let (rows, cols) = (21, 96);
        let blocks: Vec<u8> = (0..rows * cols / 2).map(|i| (i * 37 + 11) as u8).collect();
        let scales: Vec<u8> = (0..rows * cols / 32).map(|i| 120 + (i % 6) as u8).collect();
        let m = Mxfp4Matrix::new(&blocks, &scales, rows, cols).unwrap();
        let bias: Vec<f32> = (0..rows).map(|i| i as f32 * 0.1).collect();
        for t in [1, 2, 7] {
            let x: Vec<f32> = (0..t * cols)
                .map(|i| ((i * 7919) % 101) as f32 / 50.0 - 1.0)
                .collect();
            let mut y = vec![0.0; t * rows];
            m.linear(&x, t, Some(&bias), &mut y);
            let mut row = vec![0.0; cols];
            for r in 0..rows {
                m.dequantize_row(r, &mut row);
                for ti in 0..t {
                    let want: f64 = bias[r] as f64
                        + row
                            .iter()
                            .zip(&x[ti * cols..])
                            .map(|(a, b)| *a as f64 * *b as f64)
                            .sum::<f64>();
                    let got = y[ti * rows + r] as f64;
                    assert!(
                        (got - want).abs() < 1e-4 * want.abs().max(1.0),
                        "t={t} r={r}: {got} vs {want}"
                    );
                }
            }
        }
    }
}
