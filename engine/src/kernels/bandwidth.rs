//! How fast this machine reads memory: the floor under decode speed, which must stream every
//! active weight once per token.

use std::time::Instant;

use super::isa::{Isa, Level};

/// Read bandwidths in bytes per second over several passes: on a shared or virtual machine a
/// single pass (or the best one) says little, so the spread goes with the median.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bandwidth {
    pub min: f64,
    pub median: f64,
    pub max: f64,
    pub passes: usize,
}

impl Bandwidth {
    /// The spread of several passes' rates (bytes per second); `None` for no pass.
    pub fn of_rates(mut rates: Vec<f64>) -> Option<Bandwidth> {
        rates.sort_by(f64::total_cmp);
        let n = rates.len();
        (n > 0).then(|| Bandwidth {
            min: rates[0],
            median: if n % 2 == 1 {
                rates[n / 2]
            } else {
                (rates[n / 2 - 1] + rates[n / 2]) / 2.0
            },
            max: rates[n - 1],
            passes: n,
        })
    }
}

/// Read bandwidth over `passes` passes of `threads` threads reading `bytes` (split evenly)
/// with the widest loads the CPU has. The buffer is written once first so every page is
/// resident, then read once untimed: the first read after the writes also writes the dirty
/// lines back (measured on this VM: 11–16 GB/s against 17 for the passes after it over
/// 256 MiB, 16–18 against 19–21 over 1 GiB), which is not what decode does. It is freed on
/// return.
pub fn read_bandwidth(bytes: usize, threads: usize, passes: usize) -> Bandwidth {
    let rates = read_rates(bytes, threads, passes);
    Bandwidth::of_rates(rates).expect("read_rates makes at least one pass")
}

/// Each pass's rate (bytes per second) of [`read_bandwidth`], in order (at least one pass).
pub fn read_rates(bytes: usize, threads: usize, passes: usize) -> Vec<f64> {
    let threads = threads.max(1);
    let words = (bytes / 8).max(threads * 64);
    let mut buf = vec![0u64; words];
    // Decode reads the checkpoint in 2 MiB pages where it can (`huge_pages`); the yardstick
    // reads the same kind, or decode would seem to beat the machine.
    crate::huge_pages::advise_fresh(&buf);
    for (i, w) in buf.iter_mut().enumerate() {
        *w = i as u64;
    }
    let isa = Isa::best();
    let chunk = words.div_ceil(threads);
    let mut rates = Vec::with_capacity(passes.max(1));
    // The untimed pass first (see `read_bandwidth`).
    for pass in 0..=passes.max(1) {
        let started = Instant::now();
        let sums: u64 = std::thread::scope(|scope| {
            let handles: Vec<_> = buf
                .chunks(chunk)
                .map(|part| scope.spawn(move || sum_words(part, isa)))
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(0))
                .fold(0, u64::wrapping_add)
        });
        std::hint::black_box(sums);
        let secs = started.elapsed().as_secs_f64();
        if pass > 0 {
            rates.push((words * 8) as f64 / secs.max(1e-9));
        }
    }
    rates
}

/// Σ `words` (wrapping), with AVX-512 loads when `isa` has them (an [`Isa`] is made only by
/// detection, so it cannot promise what the CPU lacks).
fn sum_words(words: &[u64], isa: Isa) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if isa.level() >= Level::Avx512Vnni {
        // SAFETY: detection offers these levels only when it found AVX-512F (isa.rs).
        return unsafe { sum_words_avx512(words) };
    }
    let _ = isa;
    // Four accumulators: the loop vectorizes to the baseline's 128-bit loads.
    let mut acc = [0u64; 4];
    let mut chunks = words.chunks_exact(4);
    for c in &mut chunks {
        for i in 0..4 {
            acc[i] = acc[i].wrapping_add(c[i]);
        }
    }
    chunks
        .remainder()
        .iter()
        .chain(&acc)
        .fold(0, |a, &b| a.wrapping_add(b))
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
/// # Safety
/// The CPU has AVX-512F.
unsafe fn sum_words_avx512(words: &[u64]) -> u64 {
    use std::arch::x86_64::*;
    let mut acc = [_mm512_setzero_si512(); 4];
    let mut blocks = words.chunks_exact(32);
    for block in &mut blocks {
        for (i, a) in acc.iter_mut().enumerate() {
            // SAFETY: `block` holds 32 words, so words 8i..8i+8 are in bounds.
            let v = unsafe { _mm512_loadu_si512(block.as_ptr().add(8 * i).cast()) };
            *a = _mm512_add_epi64(*a, v);
        }
    }
    let total = _mm512_add_epi64(
        _mm512_add_epi64(acc[0], acc[1]),
        _mm512_add_epi64(acc[2], acc[3]),
    );
    blocks
        .remainder()
        .iter()
        .fold(_mm512_reduce_add_epi64(total) as u64, |a, &b| {
            a.wrapping_add(b)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_read_loops_sum_every_word() {
        let words: Vec<u64> = (0..1000u64).map(|i| i * 3 + 1).collect();
        let want = words.iter().sum::<u64>();
        for isa in Isa::available() {
            assert_eq!(sum_words(&words, isa), want, "{isa}");
        }
        // Passes over a small buffer give positive, finite, ordered rates.
        let rate = read_bandwidth(1 << 20, 2, 4);
        assert_eq!(rate.passes, 4);
        assert!(rate.min.is_finite() && rate.min > 0.0);
        assert!(rate.min <= rate.median && rate.median <= rate.max);
    }
}
