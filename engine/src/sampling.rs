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

/// Restricts which tokens may come next (constrained decoding: structured outputs). The engine
/// calls [`LogitsMask::mask`] on each step's logits before sampling, then
/// [`LogitsMask::commit`] with the token it picked.
pub trait LogitsMask: Send {
    /// Sets the logits of the tokens that may not come next to `-inf`. At least one token must
    /// stay allowed (an implementation that finds none leaves the logits as they are).
    fn mask(&mut self, logits: &mut [f32]);
    /// The token sampled after the last [`LogitsMask::mask`].
    fn commit(&mut self, token: u32);
}

/// A [`LogitsMask`] a generation shares with whoever built it (the caller may read its state
/// afterwards).
#[derive(Clone)]
pub struct SharedMask(pub std::sync::Arc<std::sync::Mutex<dyn LogitsMask>>);

impl SharedMask {
    pub fn new(mask: impl LogitsMask + 'static) -> Self {
        SharedMask(std::sync::Arc::new(std::sync::Mutex::new(mask)))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, dyn LogitsMask + 'static> {
        // A mask that panicked mid-step is still the best description of the grammar's state.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub fn mask(&self, logits: &mut [f32]) {
        self.lock().mask(logits);
    }

    pub fn commit(&self, token: u32) {
        self.lock().commit(token);
    }
}

impl std::fmt::Debug for SharedMask {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedMask(..)")
    }
}

/// The log-probability of a sampled token and of the most likely alternatives, in the
/// distribution the token was drawn from: the logits after any [`LogitsMask`], divided by the
/// temperature (1 when greedy), log-softmaxed over the whole vocabulary, before top-k / top-p
/// truncation. A masked token has `-inf` and is never among the alternatives.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    pub token: u32,
    pub logprob: f32,
    /// Up to the requested number of (token, logprob), most likely first (ties: lower id).
    pub top: Vec<(u32, f32)>,
}

impl TokenLogprobs {
    /// Computes the figures of `token` and the `top` most likely tokens of `logits`.
    pub fn compute(logits: &[f32], temperature: f32, token: u32, top: usize) -> Self {
        let inv_t = if temperature > 0.0 {
            1.0 / temperature as f64
        } else {
            1.0
        };
        let max = logits
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .fold(f32::NEG_INFINITY, f32::max) as f64;
        let mut total = 0.0f64;
        // The `top` best, kept sorted (most likely first); `top` is small (at most 20).
        let mut best: Vec<(u32, f32)> = Vec::with_capacity(top + 1);
        for (i, &v) in logits.iter().enumerate() {
            if !v.is_finite() {
                continue;
            }
            total += ((v as f64 - max) * inv_t).exp();
            if top > 0 && (best.len() < top || v > best[best.len() - 1].1) {
                let at = best.partition_point(|&(_, b)| b >= v);
                best.insert(at, (i as u32, v));
                best.truncate(top);
            }
        }
        let log_total = total.ln();
        let logprob = |v: f32| -> f32 {
            if v.is_finite() {
                ((v as f64 - max) * inv_t - log_total) as f32
            } else {
                f32::NEG_INFINITY
            }
        };
        TokenLogprobs {
            token,
            logprob: logits
                .get(token as usize)
                .map_or(f32::NEG_INFINITY, |&v| logprob(v)),
            top: best.into_iter().map(|(id, v)| (id, logprob(v))).collect(),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn log_softmax(logits: &[f64]) -> Vec<f64> {
        let total: f64 = logits.iter().map(|v| v.exp()).sum();
        logits.iter().map(|v| v - total.ln()).collect()
    }

    #[test]
    fn logprobs_are_the_log_softmax_after_temperature_and_mask() {
        let logits = [1.0f32, 3.0, f32::NEG_INFINITY, 2.0, 3.0];
        // Greedy reports the plain distribution (temperature 1); the masked token is left out.
        let plain = log_softmax(&[1.0, 3.0, 2.0, 3.0]);
        let got = TokenLogprobs::compute(&logits, 0.0, 3, 3);
        assert!((got.logprob as f64 - plain[2]).abs() < 1e-6, "{got:?}");
        // Most likely first, ties by id; the masked token never appears.
        let ids: Vec<u32> = got.top.iter().map(|t| t.0).collect();
        assert_eq!(ids, vec![1, 4, 3]);
        assert!((got.top[0].1 as f64 - plain[1]).abs() < 1e-6);
        // At temperature 0.5 the logits are doubled first.
        let sharp = log_softmax(&[2.0, 6.0, 4.0, 6.0]);
        let got = TokenLogprobs::compute(&logits, 0.5, 0, 0);
        assert!((got.logprob as f64 - sharp[0]).abs() < 1e-6, "{got:?}");
        assert!(got.top.is_empty());
        let masked = TokenLogprobs::compute(&logits, 1.0, 2, 10);
        assert_eq!(masked.logprob, f32::NEG_INFINITY);
        assert_eq!(masked.top.len(), 4);
    }

    /// Bans every token but one.
    struct Only(u32);

    impl LogitsMask for Only {
        fn mask(&mut self, logits: &mut [f32]) {
            for (i, v) in logits.iter_mut().enumerate() {
                if i as u32 != self.0 {
                    *v = f32::NEG_INFINITY;
                }
            }
        }
        fn commit(&mut self, token: u32) {
            assert_eq!(token, self.0, "a masked token was sampled");
        }
    }

    #[test]
    fn the_sampler_never_picks_a_masked_token() {
        let mask = SharedMask::new(Only(7));
        for temperature in [0.0, 0.7, 1.5] {
            let mut sampler = Sampler::new(&SamplingParams {
                temperature,
                seed: Some(3),
                ..SamplingParams::greedy()
            })
            .expect("valid");
            for _ in 0..50 {
                let mut logits: Vec<f32> = (0..16).map(|i| (i % 5) as f32).collect();
                mask.mask(&mut logits);
                let token = sampler.sample(&logits);
                mask.commit(token);
            }
        }
    }
}
