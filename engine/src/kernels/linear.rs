//! Matmuls over int8 activations, chosen per job: the AMX tile kernels for prefill when the
//! CPU has them ([`amx`]), else the row dots of [`super::q8`] (VNNI / AVX2 / scalar), several
//! small ones (decode) in one parallel pass.

use super::SharedOut;
#[cfg(target_arch = "x86_64")]
use super::amx;
use super::isa::Isa;
#[cfg(target_arch = "x86_64")]
use super::isa::Level;
use super::mxfp4::Mxfp4Matrix;
use super::q8::{Q8Acts, Q8Matrix};

impl Q8Matrix {
    /// `y[t, r] = bias[r] + Σ_c x[t, c]·W[r, c]` for activations quantized in plain order.
    pub fn linear(&self, isa: Isa, x: &Q8Acts, bias: Option<&[f32]>, y: &mut [f32]) {
        linear_batch(
            isa,
            &mut [LinearJob {
                weights: Weights::Q8(self),
                x,
                bias,
                y,
            }],
        );
    }
}

impl Mxfp4Matrix<'_> {
    /// `y[t, r] = bias[r] + Σ_c x[t, c]·W[r, c]` with activations quantized in MXFP4 order.
    /// Each row is read from memory once and dotted with every token while it is in L1.
    pub fn linear_q8(&self, isa: Isa, x: &Q8Acts, bias: Option<&[f32]>, y: &mut [f32]) {
        linear_batch(
            isa,
            &mut [LinearJob {
                weights: Weights::Mxfp4(*self),
                x,
                bias,
                y,
            }],
        );
    }
}

/// The weights of one [`LinearJob`].
#[derive(Clone, Copy)]
pub enum Weights<'a> {
    Q8(&'a Q8Matrix),
    /// Activations quantized in MXFP4 order.
    Mxfp4(Mxfp4Matrix<'a>),
}

impl Weights<'_> {
    fn shape(&self) -> (usize, usize) {
        match self {
            Weights::Q8(m) => (m.rows(), m.cols()),
            Weights::Mxfp4(m) => (m.rows, m.cols),
        }
    }
}

/// One `y[t, r] = bias[r] + Σ_c x[t, c]·W[r, c]` of a [`linear_batch`].
pub struct LinearJob<'a> {
    pub weights: Weights<'a>,
    pub x: &'a Q8Acts,
    pub bias: Option<&'a [f32]>,
    pub y: &'a mut [f32],
}

/// Runs several matmuls. Those with many tokens (prefill) run one after another, each
/// spread over the pool (AMX tiles when `isa` has them); the others (decode: the q/k/v
/// projections, the selected experts) share one parallel pass over all their rows, so the
/// threads meet once instead of once per matrix.
pub fn linear_batch(isa: Isa, jobs: &mut [LinearJob<'_>]) {
    for job in jobs.iter() {
        let (rows, cols) = job.weights.shape();
        assert!(
            job.x.cols == cols
                && job.y.len() >= job.x.rows * rows
                && job.bias.is_none_or(|b| b.len() >= rows),
            "linear shapes"
        );
    }
    #[cfg(target_arch = "x86_64")]
    {
        let mut mxfp4 = Vec::new();
        for job in jobs.iter_mut().filter(|j| on_tiles(isa, j.x)) {
            match job.weights {
                Weights::Q8(m) => amx::q8_0_linear(isa, m, job.x, job.bias, job.y),
                Weights::Mxfp4(m) => mxfp4.push(amx::Mxfp4Job {
                    m,
                    x: job.x,
                    bias: job.bias,
                    y: &mut *job.y,
                }),
            }
        }
        // A layer's experts in one pass (prefill): see `mxfp4_linear_batch`.
        if !mxfp4.is_empty() {
            amx::mxfp4_linear_batch(isa, &mut mxfp4);
        }
    }
    let mut tasks = Vec::new();
    for (j, job) in jobs.iter().enumerate().filter(|(_, j)| !on_tiles(isa, j.x)) {
        let (rows, cols) = job.weights.shape();
        let bytes_per_row = match job.weights {
            Weights::Q8(_) => cols,
            Weights::Mxfp4(_) => cols / 2,
        };
        let chunk = rows_per_task(rows, bytes_per_row);
        tasks.extend(
            (0..rows)
                .step_by(chunk)
                .map(|r0| (j, r0, (r0 + chunk).min(rows))),
        );
    }
    // The AVX2 kernels read MXFP4 activations in their own order: each job's copied once,
    // into buffers this thread keeps for its next call.
    let mut copies = REGROUPED.take();
    copies.resize_with(copies.len().max(jobs.len()), Q8Acts::default);
    let regrouped: Vec<bool> = jobs
        .iter()
        .zip(copies.iter_mut())
        .map(|(j, copy)| match j.weights {
            Weights::Mxfp4(_) if !on_tiles(isa, j.x) => j.x.regroup_into(isa, copy),
            _ => false,
        })
        .collect();
    let outs: Vec<SharedOut> = jobs
        .iter_mut()
        .map(|j| SharedOut(j.y.as_mut_ptr()))
        .collect();
    let jobs = &*jobs;
    use rayon::prelude::*;
    tasks.into_par_iter().for_each(|(j, r0, r1)| {
        let job = &jobs[j];
        // SAFETY: each task writes rows r0..r1 of its own job's output, sized above.
        unsafe {
            match job.weights {
                Weights::Q8(m) => m.rows_into(isa, job.x, job.bias, outs[j], r0, r1),
                Weights::Mxfp4(m) => {
                    let x = if regrouped[j] { &copies[j] } else { job.x };
                    m.rows_into(isa, x, job.bias, outs[j], r0, r1)
                }
            }
        }
    });
    REGROUPED.set(copies);
}

thread_local! {
    /// The group-order copies of [`linear_batch`]'s MXFP4 activations on this thread, kept
    /// between calls: a forward pass allocates them in its first layer only (see the model's
    /// `MoeScratch`). Taken out for a call (a nested call would start empty, not fail).
    static REGROUPED: std::cell::RefCell<Vec<Q8Acts>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Whether a matmul over `x` goes to the AMX tile kernels.
pub(super) fn on_tiles(isa: Isa, x: &Q8Acts) -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        isa.level() == Level::Amx && x.rows >= amx::MIN_TOKENS
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (isa, x);
        false
    }
}

/// Rows per rayon task: about 64 KiB of 8-bit weights (few enough tasks that scheduling is
/// noise, enough that both cores stay busy to the end).
fn rows_per_task(rows: usize, cols: usize) -> usize {
    let by_bytes = (64 * 1024 / cols.max(1)).max(1);
    by_bytes.min(rows.div_ceil(8).max(1))
}
