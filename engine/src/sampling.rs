//! Choosing the next token from logits: greedy, or temperature → top-k → top-p → draw, with
//! the semantics of transformers' logits warpers and a seeded generator so a run repeats.

use crate::error::{EngineError, Result};

/// How to pick tokens. `temperature == 0` means greedy (then the rest is ignored).
#[derive(Debug, Clone, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    /// Keep the smallest set of most likely tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens, ties with the k-th included (0 = off).
    pub top_k: usize,
    /// Seed of the random generator; `None` draws one from the clock.
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams::greedy()
    }
}

impl SamplingParams {
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            seed: None,
        }
    }

    fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(EngineError::BadSampling {
                name: "temperature",
                value: self.temperature.to_string(),
                reason: "must be a finite number >= 0",
            });
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(EngineError::BadSampling {
                name: "top_p",
                value: self.top_p.to_string(),
                reason: "must be in (0, 1]",
            });
        }
        Ok(())
    }
}

/// xoshiro256** seeded through splitmix64: small, fast, and stable across versions (a seed
/// must give the same tokens tomorrow).
#[derive(Debug, Clone)]
struct Rng([u64; 4]);

impl Rng {
    fn new(seed: u64) -> Rng {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }
}

/// Samples tokens for one request.
#[derive(Debug, Clone)]
pub struct Sampler {
    params: SamplingParams,
    rng: Rng,
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    pub fn new(params: &SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64)
        });
        Ok(Sampler {
            params: params.clone(),
            rng: Rng::new(seed),
            candidates: Vec::new(),
        })
    }

    /// Picks the next token. NaN logits are never picked unless every logit is NaN.
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        if self.params.temperature == 0.0 || self.params.top_k == 1 {
            return argmax(logits);
        }
        let inv_t = 1.0 / self.params.temperature;
        self.candidates.clear();
        self.candidates.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, v)| !v.is_nan())
                .map(|(i, &v)| (i as u32, v * inv_t)),
        );
        if self.candidates.is_empty() {
            return 0;
        }
        let desc = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
        let k = self.params.top_k;
        if k > 0 && k < self.candidates.len() {
            self.candidates.select_nth_unstable_by(k - 1, desc);
            let kth = self.candidates[k - 1].1;
            // Keep ties with the k-th value, as transformers' TopKLogitsWarper does.
            let mut keep = k;
            for i in k..self.candidates.len() {
                if self.candidates[i].1 >= kth {
                    self.candidates.swap(keep, i);
                    keep += 1;
                }
            }
            self.candidates.truncate(keep);
        }
        self.candidates.sort_unstable_by(desc);
        let max = self.candidates[0].1;
        let mut total = 0.0f64;
        for c in &mut self.candidates {
            c.1 = (c.1 - max).exp();
            total += c.1 as f64;
        }
        if self.params.top_p < 1.0 {
            // Smallest prefix (most likely first) whose mass reaches top_p; at least one token.
            let target = self.params.top_p as f64 * total;
            let mut mass = 0.0f64;
            let mut keep = 0;
            for c in &self.candidates {
                mass += c.1 as f64;
                keep += 1;
                if mass >= target {
                    break;
                }
            }
            self.candidates.truncate(keep.max(1));
            total = mass;
        }
        let mut r = self.rng.next_f64() * total;
        for c in &self.candidates {
            r -= c.1 as f64;
            if r < 0.0 {
                return c.0;
            }
        }
        self.candidates.last().map_or(0, |c| c.0)
    }
}

/// Index of the largest logit; the first one on ties (like torch.argmax).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in logits.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best as u32
}
