//! Rotary position embedding with YaRN scaling, computed in f32 exactly as transformers'
//! `_compute_yarn_parameters` and gpt-oss' `_apply_rotary_emb` (half-split, not interleaved).

use crate::config::RopeSettings;

#[derive(Debug, Clone)]
pub struct Rope {
    inv_freq: Vec<f32>,
    /// cos and sin are multiplied by this (YaRN's concentration, 1 without YaRN).
    attention_factor: f32,
}

impl Rope {
    pub fn new(settings: &RopeSettings, head_dim: usize) -> Rope {
        let half = head_dim / 2;
        let base = settings.theta;
        // pos_freqs = base ** (arange(0, dim, 2) / dim), in float32 like torch.
        let pos_freqs: Vec<f32> = (0..half)
            .map(|i| (base as f32).powf((2 * i) as f32 / head_dim as f32))
            .collect();
        let Some(yarn) = &settings.yarn else {
            return Rope {
                inv_freq: pos_freqs.iter().map(|p| 1.0 / p).collect(),
                attention_factor: 1.0,
            };
        };
        let correction_dim = |rotations: f64| {
            head_dim as f64
                * (yarn.original_max_position_embeddings as f64
                    / (rotations * 2.0 * std::f64::consts::PI))
                    .ln()
                / (2.0 * base.ln())
        };
        let (mut low, mut high) = (
            correction_dim(yarn.beta_fast),
            correction_dim(yarn.beta_slow),
        );
        if yarn.truncate {
            low = low.floor();
            high = high.ceil();
        }
        let low = low.max(0.0);
        let high = high.min(head_dim as f64 - 1.0);
        let high = if low == high { high + 0.001 } else { high };
        let inv_freq = pos_freqs
            .iter()
            .enumerate()
            .map(|(i, &p)| {
                let extrapolation = 1.0 / p;
                let interpolation = 1.0 / (yarn.factor as f32 * p);
                let ramp = ((i as f32 - low as f32) / (high as f32 - low as f32)).clamp(0.0, 1.0);
                let extrapolation_factor = 1.0 - ramp;
                interpolation * (1.0 - extrapolation_factor) + extrapolation * extrapolation_factor
            })
            .collect();
        Rope {
            inv_freq,
            attention_factor: yarn.attention_factor as f32,
        }
    }

    /// `(cos, sin)` tables `[positions, head_dim/2]` for `start..start+count`.
    pub fn tables(&self, start: usize, count: usize) -> (Vec<f32>, Vec<f32>) {
        let half = self.inv_freq.len();
        let mut cos = Vec::with_capacity(count * half);
        let mut sin = Vec::with_capacity(count * half);
        for p in start..start + count {
            for &f in &self.inv_freq {
                let angle = f * p as f32;
                cos.push(angle.cos() * self.attention_factor);
                sin.push(angle.sin() * self.attention_factor);
            }
        }
        (cos, sin)
    }

    /// Rotates one head vector in place with one position's row of the tables.
    #[inline]
    pub fn apply(x: &mut [f32], cos: &[f32], sin: &[f32]) {
        let half = cos.len();
        let (a, b) = x.split_at_mut(half);
        for i in 0..half {
            let (x1, x2) = (a[i], b[i]);
            a[i] = x1 * cos[i] - x2 * sin[i];
            b[i] = x2 * cos[i] + x1 * sin[i];
        }
    }
}
