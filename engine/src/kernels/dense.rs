//! Dense weights (bf16 or f32) read in place from the checkpoint mapping.

use crate::checkpoint::{Dtype, MappedBytes, TensorView};
use crate::error::Result;

use super::{
    SMALL_BATCH, SharedOut, TileLayout, bf16_to_f32, dot_bf16, dot_f32, for_row_chunks, gemm_tile,
};

/// Where the elements live: in the mapping when it is aligned for the element type (always the
/// case for files written by safetensors), otherwise in an owned copy.
#[derive(Clone)]
enum Storage {
    MappedBf16(MappedBytes),
    MappedF32(MappedBytes),
    OwnedBf16(Vec<u16>),
    OwnedF32(Vec<f32>),
}

/// Borrowed elements of a dense matrix.
#[derive(Clone, Copy)]
pub enum Elements<'a> {
    Bf16(&'a [u16]),
    F32(&'a [f32]),
}

/// A row-major matrix `[rows, cols]` of bf16 or f32.
#[derive(Clone)]
pub struct DenseMatrix {
    rows: usize,
    cols: usize,
    storage: Storage,
}

impl std::fmt::Debug for DenseMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DenseMatrix[{}x{}]", self.rows, self.cols)
    }
}

impl DenseMatrix {
    /// Wraps a 2-d (or, flattened, higher) bf16/f32 tensor as `[rows, cols]`.
    pub fn from_view(view: &TensorView, rows: usize, cols: usize) -> Result<DenseMatrix> {
        let bytes = view.bytes();
        debug_assert_eq!(view.numel(), rows * cols);
        let storage = match view.dtype {
            Dtype::Bf16 if (bytes.as_ptr() as usize).is_multiple_of(2) => {
                Storage::MappedBf16(view.mapped())
            }
            Dtype::F32 if (bytes.as_ptr() as usize).is_multiple_of(4) => {
                Storage::MappedF32(view.mapped())
            }
            Dtype::Bf16 => Storage::OwnedBf16(
                bytes
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect(),
            ),
            Dtype::F32 => Storage::OwnedF32(
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            _ => return Err(view.wrong_dtype("BF16 or F32")),
        };
        Ok(DenseMatrix {
            rows,
            cols,
            storage,
        })
    }

    /// A matrix that owns f32 values (tests, small derived weights).
    pub fn from_f32(rows: usize, cols: usize, values: Vec<f32>) -> DenseMatrix {
        assert_eq!(values.len(), rows * cols, "DenseMatrix::from_f32 shape");
        DenseMatrix {
            rows,
            cols,
            storage: Storage::OwnedF32(values),
        }
    }

    /// Rows `r0..r1` as a matrix of their own (shares the mapping; copies only owned data).
    pub fn slice_rows(&self, r0: usize, r1: usize) -> DenseMatrix {
        let c = self.cols;
        let storage = match &self.storage {
            Storage::MappedBf16(m) => Storage::MappedBf16(m.slice(r0 * c * 2, r1 * c * 2)),
            Storage::MappedF32(m) => Storage::MappedF32(m.slice(r0 * c * 4, r1 * c * 4)),
            Storage::OwnedBf16(v) => Storage::OwnedBf16(v[r0 * c..r1 * c].to_vec()),
            Storage::OwnedF32(v) => Storage::OwnedF32(v[r0 * c..r1 * c].to_vec()),
        };
        DenseMatrix {
            rows: r1 - r0,
            cols: c,
            storage,
        }
    }

    /// Drops the resident pages of a mapped matrix (see [`MappedBytes::release_pages`]).
    pub fn release_pages(&self) {
        match &self.storage {
            Storage::MappedBf16(m) | Storage::MappedF32(m) => m.release_pages(),
            Storage::OwnedBf16(_) | Storage::OwnedF32(_) => {}
        }
    }

    /// Bytes of the stored elements.
    pub fn storage_bytes(&self) -> usize {
        match self.elements() {
            Elements::Bf16(w) => w.len() * 2,
            Elements::F32(w) => w.len() * 4,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    pub fn elements(&self) -> Elements<'_> {
        match &self.storage {
            Storage::MappedBf16(m) => {
                let b = m.as_slice();
                // SAFETY: the mapped bytes live as long as `self`; `from_view` kept them only
                // when 2-aligned, and row slices start at multiples of 2 bytes; any bit
                // pattern is a u16, and len / 2 elements fit in the bytes.
                Elements::Bf16(unsafe {
                    std::slice::from_raw_parts(b.as_ptr().cast::<u16>(), b.len() / 2)
                })
            }
            Storage::MappedF32(m) => {
                let b = m.as_slice();
                // SAFETY: as above, with 4-byte alignment and f32 (any bit pattern is one).
                Elements::F32(unsafe {
                    std::slice::from_raw_parts(b.as_ptr().cast::<f32>(), b.len() / 4)
                })
            }
            Storage::OwnedBf16(v) => Elements::Bf16(v),
            Storage::OwnedF32(v) => Elements::F32(v),
        }
    }

    /// Copies row `r` into `out` as f32 (embedding lookups).
    pub fn row_to_f32(&self, r: usize, out: &mut [f32]) {
        let c = self.cols;
        match self.elements() {
            Elements::Bf16(w) => {
                for (o, &b) in out.iter_mut().zip(&w[r * c..(r + 1) * c]) {
                    *o = bf16_to_f32(b);
                }
            }
            Elements::F32(w) => out.copy_from_slice(&w[r * c..(r + 1) * c]),
        }
    }

    /// Expands rows `r0..r1` into `tile` (row-major, `cols` wide).
    fn rows_to_f32(&self, r0: usize, r1: usize, tile: &mut [f32]) {
        let c = self.cols;
        match self.elements() {
            Elements::Bf16(w) => {
                for (o, &b) in tile.iter_mut().zip(&w[r0 * c..r1 * c]) {
                    *o = bf16_to_f32(b);
                }
            }
            Elements::F32(w) => tile[..(r1 - r0) * c].copy_from_slice(&w[r0 * c..r1 * c]),
        }
    }

    /// Expands columns `c0..c1` of every row into `tile` (`[rows, c1-c0]`).
    fn cols_to_f32(&self, c0: usize, c1: usize, tile: &mut [f32]) {
        let (c, n) = (self.cols, c1 - c0);
        for r in 0..self.rows {
            let dst = &mut tile[r * n..(r + 1) * n];
            match self.elements() {
                Elements::Bf16(w) => {
                    for (o, &b) in dst.iter_mut().zip(&w[r * c + c0..r * c + c1]) {
                        *o = bf16_to_f32(b);
                    }
                }
                Elements::F32(w) => dst.copy_from_slice(&w[r * c + c0..r * c + c1]),
            }
        }
    }

    /// Output-major linear layer: `y[t, r] = bias[r] + Σ_c x[t, c]·W[r, c]`; `x` is
    /// `[t, cols]`, `y` is `[t, rows]`.
    pub fn linear(&self, x: &[f32], t: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        let cols = self.cols;
        let dot = |r: usize, xt: &[f32]| match self.elements() {
            Elements::Bf16(w) => dot_bf16(xt, &w[r * cols..(r + 1) * cols]),
            Elements::F32(w) => dot_f32(xt, &w[r * cols..(r + 1) * cols]),
        };
        let widen = |r0: usize, r1: usize, tile: &mut [f32]| self.rows_to_f32(r0, r1, tile);
        linear_f32((self.rows, cols), x, t, bias, y, dot, widen);
    }

    /// Input-major linear layer (the matrix is `[in, out]`): `y[t, j] = bias[j] + Σ_i x[t, i]·W[i, j]`.
    pub fn linear_input_major(&self, x: &[f32], t: usize, bias: Option<&[f32]>, y: &mut [f32]) {
        let (k, n) = (self.rows, self.cols);
        assert!(
            x.len() >= t * k && y.len() >= t * n,
            "DenseMatrix::linear_input_major shapes"
        );
        let out = SharedOut(y.as_mut_ptr());
        let chunk = if t <= SMALL_BATCH { 64 } else { tile_rows(k) };
        for_row_chunks(n, chunk, |c0, c1| {
            let width = c1 - c0;
            if t <= SMALL_BATCH {
                let mut acc = vec![0.0f32; width];
                for ti in 0..t {
                    acc.fill(0.0);
                    let xt = &x[ti * k..(ti + 1) * k];
                    for (i, &xi) in xt.iter().enumerate() {
                        match self.elements() {
                            Elements::Bf16(w) => {
                                for (a, &b) in acc.iter_mut().zip(&w[i * n + c0..i * n + c1]) {
                                    *a += xi * bf16_to_f32(b);
                                }
                            }
                            Elements::F32(w) => {
                                for (a, &b) in acc.iter_mut().zip(&w[i * n + c0..i * n + c1]) {
                                    *a += xi * b;
                                }
                            }
                        }
                    }
                    for (j, a) in acc.iter().enumerate() {
                        let v = a + bias.map_or(0.0, |b| b[c0 + j]);
                        // SAFETY: ti < t and c0 + j < c1 ≤ n: inside `y` (asserted ≥ t·n);
                        // columns c0..c1 are this task's alone (`for_row_chunks`).
                        unsafe { *out.at(ti * n + c0 + j) = v };
                    }
                }
                return;
            }
            let mut tile = vec![0.0f32; k * width];
            self.cols_to_f32(c0, c1, &mut tile);
            // SAFETY: `y` ([t, n], asserted) is valid at t·n + c for c in c0..c1, and those
            // columns are this task's alone (`for_row_chunks` splits them).
            unsafe { gemm_tile(x, t, k, (&tile, width, TileLayout::Cols), out, n, c0) };
            if let Some(b) = bias {
                for ti in 0..t {
                    for (j, bias_j) in (c0..c1).zip(&b[c0..c1]) {
                        // SAFETY: as above: (ti, j) is inside `y` and this task's.
                        unsafe { *out.at(ti * n + j) += bias_j };
                    }
                }
            }
        });
    }
}

/// `y[t, r] = bias[r] + Σ_c x[t, c]·W[r, c]` over `[rows, cols]` output-major weights and
/// f32 activations `x` (`[t, cols]`; `y` is `[t, rows]`): for a few tokens each row dotted
/// with each token in place (`dot(r, x_t)`); for more, tiles of rows widened to f32
/// (`widen(r0, r1, tile)`) and multiplied by gemm.
pub(crate) fn linear_f32(
    (rows, cols): (usize, usize),
    x: &[f32],
    t: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
    dot: impl Fn(usize, &[f32]) -> f32 + Sync + Send,
    widen: impl Fn(usize, usize, &mut [f32]) + Sync + Send,
) {
    assert!(
        x.len() >= t * cols && y.len() >= t * rows,
        "linear shapes: x {} for {t}×{cols}, y {} for {t}×{rows}",
        x.len(),
        y.len()
    );
    let out = SharedOut(y.as_mut_ptr());
    if t <= SMALL_BATCH {
        for_row_chunks(rows, 16, |r0, r1| {
            for r in r0..r1 {
                for ti in 0..t {
                    let mut v = dot(r, &x[ti * cols..(ti + 1) * cols]);
                    if let Some(b) = bias {
                        v += b[r];
                    }
                    // SAFETY: ti < t and r < rows: inside `y` (asserted ≥ t·rows); rows
                    // r0..r1 are this task's alone (`for_row_chunks` splits them).
                    unsafe { *out.at(ti * rows + r) = v };
                }
            }
        });
        return;
    }
    for_row_chunks(rows, tile_rows(cols), |r0, r1| {
        let mut tile = vec![0.0f32; (r1 - r0) * cols];
        widen(r0, r1, &mut tile);
        // SAFETY: `y` ([t, rows], asserted) is valid at t·rows + r for r in r0..r1, and
        // those columns are this task's alone (`for_row_chunks` splits them).
        unsafe {
            gemm_tile(
                x,
                t,
                cols,
                (&tile, r1 - r0, TileLayout::Rows),
                out,
                rows,
                r0,
            )
        };
        if let Some(b) = bias {
            for ti in 0..t {
                for (r, bias_r) in (r0..r1).zip(&b[r0..r1]) {
                    // SAFETY: as above: (ti, r) is inside `y` and this task's.
                    unsafe { *out.at(ti * rows + r) += bias_r };
                }
            }
        }
    });
}

/// Rows per expanded tile: about 512 KiB of f32, so a tile stays in L2 while gemm reuses it.
pub(crate) fn tile_rows(cols: usize) -> usize {
    ((512 * 1024) / (cols.max(1) * 4)).clamp(8, 256)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(x: &[f32], t: usize, w: &[f32], rows: usize, cols: usize, b: &[f32]) -> Vec<f32> {
        let mut y = vec![0.0; t * rows];
        for ti in 0..t {
            for r in 0..rows {
                let mut s = b[r] as f64;
                for c in 0..cols {
                    s += x[ti * cols + c] as f64 * w[r * cols + c] as f64;
                }
                y[ti * rows + r] = s as f32;
            }
        }
        y
    }

    fn values(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| {
                (((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 200) as f32
                    / 100.0
                    - 1.0
            })
            .collect()
    }

    #[test]
    fn both_paths_match_naive_for_both_layouts() {
        let (rows, cols) = (37, 70);
        let w = values(rows * cols, 1);
        let b = values(rows, 2);
        let m = DenseMatrix::from_f32(rows, cols, w.clone());
        // transpose for the input-major layout
        let mut wt = vec![0.0; rows * cols];
        for r in 0..rows {
            for c in 0..cols {
                wt[c * rows + r] = w[r * cols + c];
            }
        }
        let mt = DenseMatrix::from_f32(cols, rows, wt);
        for t in [1, 3, 9] {
            let x = values(t * cols, 3 + t as u32);
            let want = naive(&x, t, &w, rows, cols, &b);
            let mut y = vec![0.0; t * rows];
            m.linear(&x, t, Some(&b), &mut y);
            let mut y2 = vec![0.0; t * rows];
            mt.linear_input_major(&x, t, Some(&b), &mut y2);
            for i in 0..y.len() {
                assert!(
                    (y[i] - want[i]).abs() < 1e-4,
                    "t={t} i={i}: {} vs {}",
                    y[i],
                    want[i]
                );
                assert!(
                    (y2[i] - want[i]).abs() < 1e-4,
                    "t={t} i={i}: {} vs {}",
                    y2[i],
                    want[i]
                );
            }
        }
    }
}
