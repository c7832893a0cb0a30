//! Throughput of the int8 kernels, single-threaded (one rayon thread), per instruction set:
//! - one token through an MXFP4 matrix, and q8_0 × q8 row dots, over a matrix that stays in
//!   L2 (compute-bound);
//! - the same over 256 MiB of weights, more than the caches (memory-bound, as in decode);
//! - prefill: a 2880×2880 matrix times 64 tokens (one expert's share of a 512-token prompt),
//!   reported as multiply-adds per second;
//! - `decode_stream`: what one decode token's matmuls stream, on the whole pool: 24 layers ×
//!   4 selected experts' gate_up (5760×2880 MXFP4, ~850 MB), against the same bytes of q8_0
//!   rows (lm_head-like). The gap between the two (and to `ossa bench`'s read bandwidth) is
//!   how much slower the MoE kernel streams memory than the dense one.
//!
//! Reported as bytes of weights per second. `cargo bench --workspace --bench kernels`
//! (`-- decode_stream` for one group).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ossa_engine::kernels::linear::{LinearJob, Weights, linear_batch};
use ossa_engine::kernels::mxfp4::Mxfp4Matrix;
use ossa_engine::kernels::q8::{Isa, Q8Acts, Q8Matrix, dot_q8_0};

fn bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut s = seed.wrapping_mul(0x2545_f491_4f6c_dd1d) | 1;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            (s >> 24) as u8
        })
        .collect()
}

const COLS: usize = 2880;

fn activations(mxfp4_order: bool) -> Q8Acts {
    let x: Vec<f32> = bytes(COLS, 7)
        .iter()
        .map(|&b| b as f32 / 64.0 - 2.0)
        .collect();
    let mut q = Q8Acts::default();
    q.quantize(&x, 1, COLS, mxfp4_order);
    q
}

/// Packed MXFP4 bytes and scales (2^-7..2^0, like trained experts) of `rows` rows.
fn mxfp4_weights(rows: usize) -> (Vec<u8>, Vec<u8>) {
    let blocks = bytes(rows * COLS / 2, 1);
    let scales = bytes(rows * COLS / 32, 2)
        .iter()
        .map(|b| 120 + b % 8)
        .collect();
    (blocks, scales)
}

fn prefill(c: &mut Criterion) {
    const TOKENS: usize = 64;
    let x: Vec<f32> = bytes(TOKENS * COLS, 9)
        .iter()
        .map(|&b| b as f32 / 64.0 - 2.0)
        .collect();
    let (mut fp4_x, mut q8_x) = (Q8Acts::default(), Q8Acts::default());
    fp4_x.quantize(&x, TOKENS, COLS, true);
    q8_x.quantize(&x, TOKENS, COLS, false);
    let rows = COLS;
    let (blocks, scales) = mxfp4_weights(rows);
    let m = Mxfp4Matrix::new(&blocks, &scales, rows, COLS).expect("shapes");
    let dense = Q8Matrix::quantize_rows(rows, COLS, |r, out| {
        for (c, v) in out.iter_mut().enumerate() {
            *v = ((r * 31 + c * 17) % 255) as f32 / 128.0 - 1.0;
        }
    });
    let mut y = vec![0.0f32; TOKENS * rows];
    let mut group = c.benchmark_group("prefill_64_tokens");
    group.throughput(Throughput::Elements((rows * COLS * TOKENS) as u64));
    group.sample_size(10);
    for isa in Isa::available() {
        group.bench_with_input(BenchmarkId::new("mxfp4", isa.name()), &isa, |b, &isa| {
            b.iter(|| m.linear_q8(isa, &fp4_x, None, &mut y))
        });
        group.bench_with_input(BenchmarkId::new("q8_0", isa.name()), &isa, |b, &isa| {
            b.iter(|| dense.linear(isa, &q8_x, None, &mut y))
        });
    }
    group.finish();
}

fn bench(c: &mut Criterion) {
    let fp4_x = activations(true);
    let q8_x = activations(false);
    for (label, rows) in [("l2", 256usize), ("dram", 256 * 1024 * 1024 / (COLS / 2))] {
        let (blocks, scales) = mxfp4_weights(rows);
        let m = Mxfp4Matrix::new(&blocks, &scales, rows, COLS).expect("shapes");
        let nb = COLS / 32;
        // One token through the whole matrix on one thread, as a decode matmul runs it (the
        // AVX2 kernels read the activations regrouped once per matmul, not per row).
        let one_thread = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .expect("a one-thread pool");
        let mut y = vec![0.0f32; rows];
        per_isa(
            c,
            format!("mxfp4_q8_{label}"),
            rows * COLS * 17 / 32,
            &mut |isa| {
                one_thread.install(|| m.linear_q8(isa, &fp4_x, None, &mut y));
                y[0]
            },
        );

        let wq: Vec<i8> = bytes(rows * COLS, 3)
            .iter()
            .map(|&b| (b as i8).max(-127))
            .collect();
        let wd: Vec<f32> = (0..rows * COLS / 32)
            .map(|i| 1e-3 + i as f32 * 1e-9)
            .collect();
        row_dots(
            c,
            format!("q8_0_{label}"),
            rows * COLS * 9 / 8,
            rows,
            |isa, r| {
                dot_q8_0(
                    isa,
                    &wq[r * COLS..(r + 1) * COLS],
                    &wd[r * nb..(r + 1) * nb],
                    &q8_x.qs,
                    &q8_x.d,
                )
            },
        );
    }
}

/// A group timing `Σ_r row_dot(isa, r)` over `rows` rows (`weight_bytes` of weights) per
/// instruction set.
fn row_dots(
    c: &mut Criterion,
    name: String,
    weight_bytes: usize,
    rows: usize,
    row_dot: impl Fn(Isa, usize) -> f32,
) {
    per_isa(c, name, weight_bytes, &mut |isa| {
        (0..rows).map(|r| row_dot(isa, r)).sum()
    });
}

/// A group timing `run(isa)` (a pass over `weight_bytes` of weights) per instruction set.
fn per_isa(c: &mut Criterion, name: String, weight_bytes: usize, run: &mut impl FnMut(Isa) -> f32) {
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Bytes(weight_bytes as u64));
    group.sample_size(10);
    for isa in Isa::available() {
        group.bench_with_input(BenchmarkId::from_parameter(isa.name()), &isa, |b, &isa| {
            b.iter(|| run(isa))
        });
    }
    group.finish();
}

/// One decode token's expert and dense streams (see the module docs), on rayon's default
/// pool (every core, as decode runs), at the best instruction set only.
fn decode_stream(c: &mut Criterion) {
    const LAYERS: usize = 24;
    const EXPERTS: usize = 4;
    const ROWS: usize = 2 * COLS;
    let isa = Isa::best();
    let (fp4_x, q8_x) = (activations(true), activations(false));
    let (blocks, scales) = mxfp4_weights(LAYERS * EXPERTS * ROWS);
    let per_matrix = (ROWS * COLS / 2, ROWS * COLS / 32);
    let experts: Vec<Mxfp4Matrix> = (0..LAYERS * EXPERTS)
        .map(|i| {
            let (b, s) = per_matrix;
            Mxfp4Matrix::new(
                &blocks[i * b..(i + 1) * b],
                &scales[i * s..(i + 1) * s],
                ROWS,
                COLS,
            )
            .expect("shapes")
        })
        .collect();
    let mxfp4_bytes = blocks.len() + scales.len();
    // The same bytes as q8_0 (36 per 32 weights), one matrix per layer.
    let dense_rows = mxfp4_bytes * 32 / 36 / COLS / LAYERS;
    let dense: Vec<Q8Matrix> = (0..LAYERS)
        .map(|l| {
            Q8Matrix::quantize_rows(dense_rows, COLS, |r, out| {
                for (c, v) in out.iter_mut().enumerate() {
                    *v = ((r * 31 + c * 17 + l) % 255) as f32 / 128.0 - 1.0;
                }
            })
        })
        .collect();
    let mut ys = vec![vec![0.0f32; ROWS.max(dense_rows)]; EXPERTS];
    let mut group = c.benchmark_group("decode_stream");
    group.sample_size(10);
    group.throughput(Throughput::Bytes(mxfp4_bytes as u64));
    group.bench_function(BenchmarkId::new("mxfp4_experts", isa.name()), |b| {
        b.iter(|| {
            for layer in experts.chunks(EXPERTS) {
                let mut jobs: Vec<LinearJob> = layer
                    .iter()
                    .zip(ys.iter_mut())
                    .map(|(m, y)| LinearJob {
                        weights: Weights::Mxfp4(*m),
                        x: &fp4_x,
                        bias: None,
                        y: &mut y[..ROWS],
                    })
                    .collect();
                linear_batch(isa, &mut jobs);
            }
        })
    });
    group.throughput(Throughput::Bytes(
        (LAYERS * dense_rows * COLS * 36 / 32) as u64,
    ));
    group.bench_function(BenchmarkId::new("q8_0_dense", isa.name()), |b| {
        b.iter(|| {
            for m in &dense {
                m.linear(isa, &q8_x, None, &mut ys[0][..dense_rows]);
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench, prefill, decode_stream);
criterion_main!(benches);
