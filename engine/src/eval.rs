//! Teacher-forced accuracy of a fast path (bf16, q8, each instruction set) against a reference
//! engine (normally f32): both engines read the same token sequence, the first `prefill`
//! tokens in one forward call and the rest one token at a time through the KV cache, and
//! every position's next-token distribution is compared: KL(p_ref ‖ p_fast), top-1
//! agreement, max |Δlogit|, and the routing decisions (layer, token) that differ, with the
//! reference's router margin of each one. What `llama-perplexity --kl-divergence` reports for
//! llama.cpp's quantizations; the engine's accuracy test and `ossa eval kl` share it.
//!
//! A router near-tie that flips sends one token to another expert, which moves that token's
//! hidden state by a whole expert output; later layers and later tokens (through the keys and
//! values) inherit the difference. Such knock-on effects are real (users get them) but say
//! nothing about rounding. So each position and flip is marked *clean* when no decision of an
//! earlier layer at this or an earlier position differed, and [`Pinning::Reference`] runs the
//! fast path with the reference's routing imposed, which makes every position clean: the
//! differences left are rounding alone, position by position, through the whole cached decode.

use crate::engine::Engine;
use crate::error::{EngineError, Result};
use crate::kernels::isa::Isa;
use crate::model::{DType, ForwardTrace, Logits};

/// Whether the fast path routes on its own or follows the reference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pinning {
    /// The fast path routes on its own (what users run).
    Own,
    /// The fast path uses the reference's experts (weighted by its own router logits), so
    /// flips are recorded without their knock-on effect.
    Reference,
}

/// One position of the sequence: the distribution of the token after it.
#[derive(Debug, Clone, PartialEq)]
pub struct PositionFigures {
    pub position: usize,
    /// Computed as a one-token step through the KV cache (else in the prefill call).
    pub cached: bool,
    /// KL(p_ref ‖ p_fast) in nats.
    pub kl: f64,
    pub top1_equal: bool,
    /// The reference's top-1 minus top-2 logit: how close its choice was.
    pub reference_gap: f32,
    pub max_abs_diff: f32,
    /// Standard deviation of the reference's logits across the vocabulary.
    pub reference_spread: f64,
    /// Relative error of the logits, ‖Δlogits‖ / ‖logits_ref − mean(logits_ref)‖.
    pub relative_logit_error: f64,
    /// No routing decision at this or an earlier position differed in any layer.
    pub clean: bool,
}

/// A routing decision (layer, token) whose expert set differs from the reference's.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterFlip {
    pub layer: usize,
    pub position: usize,
    /// The reference's k-th minus (k+1)-th router logit at this decision.
    pub reference_margin: f32,
    /// The largest |Δ router logit| of this decision.
    pub router_logit_error: f32,
    /// The relative error of the router's input, ‖x_fast − x_ref‖ / ‖x_ref‖.
    pub router_input_error: f64,
    /// An earlier layer's decision at this or an earlier position differed already, so this
    /// one inherits a knock-on error, not rounding alone.
    pub knock_on: bool,
}

/// Router-input error of one layer over its clean positions.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct LayerFigures {
    pub clean_positions: usize,
    /// RMS over clean positions of ‖x_fast − x_ref‖ / ‖x_ref‖ (router input).
    pub router_input_error_rms: f64,
    pub router_input_error_max: f64,
    /// Largest |Δ router logit| over clean positions.
    pub router_logit_error_max: f32,
    /// RMS over tokens of the standard deviation of the reference's router logits across
    /// experts: the scale router margins are measured against.
    pub router_logit_spread: f64,
}

/// Everything one comparison measured.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Comparison {
    pub positions: Vec<PositionFigures>,
    pub flips: Vec<RouterFlip>,
    pub layers: Vec<LayerFigures>,
    /// (layer, token) routing decisions compared.
    pub routing_decisions: usize,
}

/// Aggregates of a [`Comparison`] (or of several).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Summary {
    pub positions: usize,
    pub cached_positions: usize,
    pub clean_positions: usize,
    pub mean_kl: f64,
    pub median_kl: f64,
    pub p99_kl: f64,
    pub max_kl: f64,
    /// Fraction of positions whose top-1 token equals the reference's.
    pub top1_agreement: f64,
    pub max_abs_diff: f32,
    pub routing_decisions: usize,
    pub flips: usize,
    /// Flips that are not knock-on effects of an earlier one.
    pub first_flips: usize,
    /// Largest reference margin among the flips that are not knock-on effects.
    pub max_first_flip_margin: f32,
}

impl Comparison {
    /// Adds another sequence's figures (positions renumbered after this one's).
    pub fn extend(&mut self, other: Comparison) {
        let offset = self.positions.len();
        self.positions
            .extend(other.positions.into_iter().map(|mut p| {
                p.position += offset;
                p
            }));
        self.flips.extend(other.flips.into_iter().map(|mut f| {
            f.position += offset;
            f
        }));
        self.routing_decisions += other.routing_decisions;
        if self.layers.len() < other.layers.len() {
            self.layers
                .resize(other.layers.len(), LayerFigures::default());
        }
        for (mine, theirs) in self.layers.iter_mut().zip(other.layers) {
            let n = mine.clean_positions + theirs.clean_positions;
            if n > 0 {
                let mix = |a: f64, na: usize, b: f64, nb: usize| {
                    ((a * a * na as f64 + b * b * nb as f64) / (na + nb) as f64).sqrt()
                };
                mine.router_input_error_rms = mix(
                    mine.router_input_error_rms,
                    mine.clean_positions,
                    theirs.router_input_error_rms,
                    theirs.clean_positions,
                );
                mine.router_logit_spread = mix(
                    mine.router_logit_spread,
                    mine.clean_positions,
                    theirs.router_logit_spread,
                    theirs.clean_positions,
                );
            }
            mine.clean_positions = n;
            mine.router_input_error_max = mine
                .router_input_error_max
                .max(theirs.router_input_error_max);
            mine.router_logit_error_max = mine
                .router_logit_error_max
                .max(theirs.router_logit_error_max);
        }
    }

    pub fn summary(&self) -> Summary {
        let n = self.positions.len();
        let mut kls: Vec<f64> = self.positions.iter().map(|p| p.kl).collect();
        kls.sort_by(f64::total_cmp);
        let quantile = |q: f64| -> f64 {
            if kls.is_empty() {
                return 0.0;
            }
            kls[((kls.len() - 1) as f64 * q).round() as usize]
        };
        let first: Vec<&RouterFlip> = self.flips.iter().filter(|f| !f.knock_on).collect();
        Summary {
            positions: n,
            cached_positions: self.positions.iter().filter(|p| p.cached).count(),
            clean_positions: self.positions.iter().filter(|p| p.clean).count(),
            mean_kl: kls.iter().sum::<f64>() / n.max(1) as f64,
            median_kl: quantile(0.5),
            p99_kl: quantile(0.99),
            max_kl: kls.last().copied().unwrap_or(0.0),
            top1_agreement: self.positions.iter().filter(|p| p.top1_equal).count() as f64
                / n.max(1) as f64,
            max_abs_diff: self
                .positions
                .iter()
                .map(|p| p.max_abs_diff)
                .fold(0.0, f32::max),
            routing_decisions: self.routing_decisions,
            flips: self.flips.len(),
            first_flips: first.len(),
            max_first_flip_margin: first.iter().map(|f| f.reference_margin).fold(0.0, f32::max),
        }
    }
}

/// KL(softmax(p) ‖ softmax(q)) in nats, in f64.
pub fn kl_divergence(p_logits: &[f32], q_logits: &[f32]) -> f64 {
    let log_norm = |logits: &[f32]| -> f64 {
        let max = logits
            .iter()
            .map(|&x| f64::from(x))
            .fold(f64::NEG_INFINITY, f64::max);
        max + logits
            .iter()
            .map(|&x| (f64::from(x) - max).exp())
            .sum::<f64>()
            .ln()
    };
    let (zp, zq) = (log_norm(p_logits), log_norm(q_logits));
    p_logits
        .iter()
        .zip(q_logits)
        .map(|(&a, &b)| {
            let log_p = f64::from(a) - zp;
            log_p.exp() * (log_p - (f64::from(b) - zq))
        })
        .sum::<f64>()
        .max(0.0)
}

fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

fn top_gap(v: &[f32]) -> f32 {
    let (mut first, mut second) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &x in v {
        if x > first {
            second = first;
            first = x;
        } else if x > second {
            second = x;
        }
    }
    first - second
}

fn position_figures(
    position: usize,
    cached: bool,
    reference: &[f32],
    fast: &[f32],
) -> PositionFigures {
    let mean = reference.iter().map(|&x| f64::from(x)).sum::<f64>() / reference.len() as f64;
    let (mut diff2, mut spread2, mut max_abs_diff) = (0.0f64, 0.0f64, 0.0f32);
    for (&r, &f) in reference.iter().zip(fast) {
        diff2 += f64::from(f - r).powi(2);
        spread2 += (f64::from(r) - mean).powi(2);
        max_abs_diff = max_abs_diff.max((f - r).abs());
    }
    PositionFigures {
        position,
        cached,
        kl: kl_divergence(reference, fast),
        top1_equal: argmax(reference) == argmax(fast),
        reference_gap: top_gap(reference),
        max_abs_diff,
        reference_spread: (spread2 / reference.len() as f64).sqrt(),
        relative_logit_error: (diff2 / spread2.max(f64::MIN_POSITIVE)).sqrt(),
        clean: true,
    }
}

fn norm(v: &[f32]) -> f64 {
    v.iter().map(|&x| f64::from(x).powi(2)).sum::<f64>().sqrt()
}

/// Runs `tokens` through both engines from an empty cache — `tokens[..prefill]` in one call,
/// then one token per call — and compares every position. Both caches are cleared first and
/// hold `tokens` afterwards.
pub fn teacher_forced(
    reference: &mut Engine,
    fast: &mut Engine,
    tokens: &[u32],
    prefill: usize,
    pinning: Pinning,
) -> Result<Comparison> {
    if tokens.is_empty() {
        return Err(EngineError::EmptyPrompt);
    }
    let (rc, fc) = (reference.config(), fast.config());
    if rc.vocab_size != fc.vocab_size
        || rc.num_hidden_layers != fc.num_hidden_layers
        || rc.num_local_experts != fc.num_local_experts
        || rc.num_experts_per_tok != fc.num_experts_per_tok
        || rc.hidden_size != fc.hidden_size
    {
        return Err(EngineError::ModelMismatch {
            reference: reference.model_dir().to_path_buf(),
            other: fast.model_dir().to_path_buf(),
            what: "shapes",
        });
    }
    let (vocab, hidden, layers) = (rc.vocab_size, rc.hidden_size, rc.num_hidden_layers);
    let (experts, k) = (rc.num_local_experts, rc.num_experts_per_tok);
    reference.clear_cache();
    fast.clear_cache();
    let prefill = prefill.clamp(1, tokens.len());
    let mut calls: Vec<&[u32]> = vec![&tokens[..prefill]];
    calls.extend(tokens[prefill..].chunks(1));

    let mut out = Comparison {
        layers: vec![LayerFigures::default(); layers],
        ..Comparison::default()
    };
    // Per layer, the first position whose decision differed (knock-on detection: a decision
    // at (l, i) is clean when no layer before l differed at a position <= i).
    let mut first_flip_at_layer: Vec<usize> = vec![usize::MAX; layers];
    let mut spread_sum2 = vec![0.0f64; layers];
    let mut error_sum2 = vec![0.0f64; layers];
    let mut start = 0;
    for call in calls {
        let t = call.len();
        let which = if start == 0 && t > 1 {
            Logits::All
        } else {
            Logits::Last
        };
        let mut rt = ForwardTrace::default();
        let ref_logits = reference.forward(call, which, Some(&mut rt))?;
        let mut ft = ForwardTrace {
            pinned_routing: (pinning == Pinning::Reference).then(|| rt.router_topk.clone()),
            ..ForwardTrace::default()
        };
        let fast_logits = fast.forward(call, which, Some(&mut ft))?;
        let rows = ref_logits.len() / vocab;
        // Routing, layer by layer.
        let mut newly_flipped: Vec<usize> = vec![usize::MAX; layers];
        for l in 0..layers {
            let upstream = first_flip_at_layer[..l]
                .iter()
                .chain(&newly_flipped[..l])
                .copied()
                .min()
                .unwrap_or(usize::MAX);
            let figures = &mut out.layers[l];
            for ti in 0..t {
                let position = start + ti;
                let clean = upstream > position;
                let (rx, fx) = (
                    &rt.router_inputs[l][ti * hidden..(ti + 1) * hidden],
                    &ft.router_inputs[l][ti * hidden..(ti + 1) * hidden],
                );
                let diff: Vec<f32> = rx.iter().zip(fx).map(|(a, b)| b - a).collect();
                let input_error = norm(&diff) / norm(rx).max(f64::MIN_POSITIVE);
                let (rl, fl) = (
                    &rt.router_logits[l][ti * experts..(ti + 1) * experts],
                    &ft.router_logits[l][ti * experts..(ti + 1) * experts],
                );
                let logit_error = rl
                    .iter()
                    .zip(fl)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                if clean {
                    let mean = rl.iter().sum::<f32>() / experts as f32;
                    let var = rl.iter().map(|&x| (x - mean).powi(2)).sum::<f32>() / experts as f32;
                    spread_sum2[l] += f64::from(var);
                    error_sum2[l] += input_error * input_error;
                    figures.clean_positions += 1;
                    figures.router_input_error_max =
                        figures.router_input_error_max.max(input_error);
                    figures.router_logit_error_max =
                        figures.router_logit_error_max.max(logit_error);
                }
                let mut rs = rt.router_topk[l][ti * k..(ti + 1) * k].to_vec();
                let mut fs = ft.router_topk[l][ti * k..(ti + 1) * k].to_vec();
                rs.sort_unstable();
                fs.sort_unstable();
                out.routing_decisions += 1;
                if rs != fs {
                    out.flips.push(RouterFlip {
                        layer: l,
                        position,
                        reference_margin: rt.router_margins[l][ti],
                        router_logit_error: logit_error,
                        router_input_error: input_error,
                        knock_on: !clean,
                    });
                    // Pinned, a flip changes nothing downstream.
                    if pinning == Pinning::Own {
                        newly_flipped[l] = newly_flipped[l].min(position);
                    }
                }
            }
        }
        for (first, new) in first_flip_at_layer.iter_mut().zip(&newly_flipped) {
            *first = (*first).min(*new);
        }
        // Logits: the last `rows` positions of this call.
        let any_flip_until = |position: usize| first_flip_at_layer.iter().any(|&f| f <= position);
        for row in 0..rows {
            let position = start + t - rows + row;
            let mut figures = position_figures(
                position,
                start > 0,
                &ref_logits[row * vocab..(row + 1) * vocab],
                &fast_logits[row * vocab..(row + 1) * vocab],
            );
            figures.clean = !any_flip_until(position);
            out.positions.push(figures);
        }
        start += t;
    }
    for (l, figures) in out.layers.iter_mut().enumerate() {
        let n = figures.clean_positions.max(1) as f64;
        figures.router_input_error_rms = (error_sum2[l] / n).sqrt();
        figures.router_logit_spread = (spread_sum2[l] / n).sqrt();
    }
    Ok(out)
}

/// Every fast path this CPU runs: each dtype but f32, with each instruction set the engine
/// can select ([`Engine::set_isa`]). A new dtype or instruction set joins the list (and so
/// the accuracy test and `ossa eval kl --isa all`) by itself.
pub fn fast_paths() -> Vec<(DType, Isa)> {
    DTYPES
        .into_iter()
        .filter(|&d| reference_dtype_of(d).is_some())
        .flat_map(|d| Isa::available().into_iter().map(move |isa| (d, isa)))
        .collect()
}

/// Every dtype; the exhaustive match makes a new variant fail to compile until it is listed.
const DTYPES: [DType; 3] = [DType::F32, DType::Bf16, DType::Q8];

/// The dtype a fast path is measured against: f32 for all but f32 itself (`None`).
pub fn reference_dtype_of(dtype: DType) -> Option<DType> {
    match dtype {
        DType::F32 => None,
        DType::Bf16 | DType::Q8 => Some(DType::F32),
    }
}
