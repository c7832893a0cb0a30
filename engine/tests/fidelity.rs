//! Accuracy of every fast path (each non-f32 dtype with each instruction set, see
//! `ossa_engine::eval::fast_paths`) against the f32 engine, teacher-forced over the
//! reference's own sequence (prompt in one call, then its greedy tokens one by one through the
//! KV cache), on every fixture folder of the repository and under `OSSA_ENGINE_FIXTURES`.
//! Run with `--nocapture` for the figures.
//!
//! # Error model
//!
//! Rounding a vector to bf16 (8 significant bits, round to nearest) leaves a relative error
//! whose RMS is `U_BF16` = 2^-7 · sqrt(E[1/m²] / 12) ≈ 1.66e-3 (m the mantissa, log-uniform in
//! [1, 2)). q8 quantizes each block of 32 to int8 at scale amax/127, a relative RMS error of
//! `U_Q8` ≈ 5.5e-3 for Gaussian-like blocks, on the activations and on the q8_0 dense weights.
//! bf16 rounds at seven places (`RoundingSource`); accumulation, attention scores, softmax,
//! sinks, norms and the residual stream stay f32 (with all seven exact, bf16 equals f32
//! bitwise: checked below). The errors of the sources add in quadrature and the residual
//! stream carries them on, so the relative error ε_l = ‖δx‖/‖x‖ of the router's input grows
//! about linearly with depth: measured RMS over positions ≈ u·(1.6 + 0.85·l) on every fixture
//! shape, in both dtypes. The bound takes the worst position, about twice the RMS:
//! ε_l ≤ u·(4 + 2·l); after the last layer and the unembedding's own input rounding,
//! ε_final ≤ u·(5 + 2·L).
//!
//! A router logit difference r_a − r_b = (w_a − w_b)·x moves by (w_a − w_b)·δx, whose spread
//! relative to that of r_a − r_b itself is ε: so a decision flips only when the reference
//! margin is below Z·√2·ε·σ_l (σ_l the spread of the reference's router logits across experts,
//! Z = 6 standard deviations), with ε the measured error of that decision's input, itself
//! within the bound. A flip above that margin is a defect; below, a near-tie. A flip that is a
//! knock-on effect of an earlier one (an earlier layer flipped at this or an earlier position)
//! inherits a whole expert output's difference: reported, not bounded.
//!
//! The logits move by ε_final times their spread σ (RMS), and the largest of a vocabulary by
//! at most Z_LOGIT = 4 times that: |Δlogit| ≤ 4·ε_final·σ. Then KL(p‖q) ≤ (max |Δ|)²/2
//! (Hoeffding's lemma: KL ≤ (range of log q/p)²/8), and the top-1 token must agree wherever
//! the reference's top-1/top-2 gap exceeds twice the |Δlogit| bound. These bounds hold at
//! every position with the reference's routing pinned (rounding alone, through every cached
//! step) and at the clean positions of the free run.
//!
//! The instruction sets share a dtype's model, with one exception. Every int8 kernel
//! computes the scalar reference's exact integer block sums (only the f32 order of summing
//! the blocks differs: 1e-5 relative, tested in the kernels), so the integer paths add
//! nothing. q8 on AMX also runs prefill attention on bf16 tiles: the queries and the
//! probabilities are rounded to bf16 (keys and values are bf16 in the cache already), two
//! more roundings per layer. They add in quadrature, like bf16's own sources: u =
//! √(U_Q8² + 2·U_BF16²) ≈ 5.98e-3, 9 % above q8's.

mod common;

use std::path::Path;

use common::parity_fixtures;
use ossa_engine::eval::{Comparison, Pinning, fast_paths, reference_dtype_of, teacher_forced};
use ossa_engine::{DType, Engine, Isa, LoadOptions, RoundingSource};

/// RMS relative error of one rounding to bf16 (see the module doc).
const U_BF16: f64 = 1.66e-3;
/// RMS relative error of one int8 block quantization (see the module doc).
const U_Q8: f64 = 5.5e-3;
/// Standard deviations a rounding-driven router logit difference may reach.
const Z: f64 = 6.0;
/// The largest |Δlogit| of a position in units of the RMS one.
const Z_LOGIT: f64 = 4.0;

/// The error model of a dtype: router-input relative error ε_l ≤ u · (4 + 2·l).
struct ErrorModel {
    u: f64,
}

impl ErrorModel {
    fn of(dtype: DType, isa: Isa) -> ErrorModel {
        ErrorModel {
            u: match dtype {
                DType::Bf16 => U_BF16,
                // AMX: the tile attention's bf16 queries and probabilities (see the module doc).
                DType::Q8 if isa.name() == "amx" => (U_Q8 * U_Q8 + 2.0 * U_BF16 * U_BF16).sqrt(),
                DType::Q8 => U_Q8,
                // f32 against itself: only accumulation order differs.
                DType::F32 => 1e-6,
            },
        }
    }

    /// Bound of the router input's relative error at `layer`.
    fn router_input(&self, layer: usize) -> f64 {
        self.u * (4.0 + 2.0 * layer as f64)
    }

    /// Bound of the final hidden state's relative error after `layers`, the unembedding's
    /// input rounding included.
    fn final_hidden(&self, layers: usize) -> f64 {
        self.u * (5.0 + 2.0 * layers as f64)
    }

    /// The reference margin below which a decision may flip, given its input's error.
    fn near_tie(&self, input_error: f64, spread: f64) -> f64 {
        Z * std::f64::consts::SQRT_2 * input_error * spread
    }
}

/// At least this many positions, and this many of them one-token cached steps, must be
/// compared for a check to mean something.
const MIN_POSITIONS: usize = 48;
const MIN_CACHED: usize = 16;
/// Positions whose top-1 must agree (gap above twice the |Δlogit| bound), pinned. The |Δlogit|
/// bound at every position implies top-1 agreement there; this only makes sure the check is
/// not empty (q8's bound is wide on the deeper random models, whose logits spread ±4).
const MIN_TOP1: usize = 1;

fn load(dir: &Path, dtype: DType, isa: Option<Isa>) -> Result<Engine, String> {
    let mut engine = Engine::load(
        dir,
        &LoadOptions {
            dtype,
            threads: Some(2),
        },
    )
    .map_err(|e| format!("load {dtype:?}: {e}"))?;
    if let Some(isa) = isa {
        engine.set_isa(isa);
    }
    Ok(engine)
}

/// The reference's sequence: its prompt then its greedy tokens.
fn sequence(dir: &Path) -> (Vec<u32>, usize) {
    let r = common::read_reference(dir);
    let prompt = r.tokens.len();
    (r.tokens.into_iter().chain(r.greedy).collect(), prompt)
}

fn figures_line(c: &Comparison) -> String {
    let s = c.summary();
    let margins: Vec<String> = c
        .flips
        .iter()
        .map(|f| {
            format!(
                "L{}@{}:{:.3}{}(ε {:.0e})",
                f.layer,
                f.position,
                f.reference_margin,
                if f.knock_on { "*" } else { "" },
                f.router_input_error
            )
        })
        .collect();
    format!(
        "{} positions ({} cached, {} clean): KL mean {:.2e} p99 {:.2e} max {:.2e}, top-1 {:.1}%, max|Δlogit| {:.3}, routing {}/{} differ ({:.2}%) [{}]",
        s.positions,
        s.cached_positions,
        s.clean_positions,
        s.mean_kl,
        s.p99_kl,
        s.max_kl,
        100.0 * s.top1_agreement,
        s.max_abs_diff,
        s.flips,
        s.routing_decisions,
        100.0 * s.flips as f64 / s.routing_decisions.max(1) as f64,
        margins.join(" ")
    )
}

fn layer_line(c: &Comparison, model: &ErrorModel) -> String {
    c.layers
        .iter()
        .enumerate()
        .map(|(l, f)| {
            format!(
                "L{l} ε {:.1e} (max {:.1e}, bound {:.1e}) σ_r {:.2}",
                f.router_input_error_rms,
                f.router_input_error_max,
                model.router_input(l),
                f.router_logit_spread
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The error-model bounds on a comparison's clean positions and first flips; returns how
/// close the figures came to their bounds.
fn check_bounds(c: &Comparison, model: &ErrorModel, pinned: bool) -> Result<String, String> {
    let s = c.summary();
    if s.positions < MIN_POSITIONS || s.cached_positions < MIN_CACHED {
        return Err(format!(
            "only {} positions ({} cached) compared; at least {MIN_POSITIONS} ({MIN_CACHED}) needed",
            s.positions, s.cached_positions
        ));
    }
    if pinned && s.clean_positions != s.positions {
        return Err("pinned routing left positions unclean".into());
    }
    let mut worst_input = 0.0f64;
    for (l, f) in c.layers.iter().enumerate() {
        if f.clean_positions == 0 {
            if pinned {
                return Err(format!("layer {l}: no clean position"));
            }
            continue;
        }
        let bound = model.router_input(l);
        worst_input = worst_input.max(f.router_input_error_max / bound);
        if f.router_input_error_max > bound {
            return Err(format!(
                "layer {l}: router input relative error {:.2e} (rms {:.2e}) exceeds the model's {bound:.2e}",
                f.router_input_error_max, f.router_input_error_rms
            ));
        }
    }
    let mut worst_margin = 0.0f64;
    for flip in c.flips.iter().filter(|f| !f.knock_on) {
        let near_tie = model.near_tie(
            flip.router_input_error,
            c.layers[flip.layer].router_logit_spread,
        );
        worst_margin = worst_margin.max(f64::from(flip.reference_margin) / near_tie);
        if f64::from(flip.reference_margin) > near_tie {
            return Err(format!(
                "layer {} position {}: routing differs at f32 margin {:.3}, above the near-tie bound {near_tie:.3} (router input error {:.2e})",
                flip.layer, flip.position, flip.reference_margin, flip.router_input_error
            ));
        }
    }
    let eps = model.final_hidden(c.layers.len());
    let (mut worst_logit, mut top1_checked) = (0.0f64, 0);
    for p in c.positions.iter().filter(|p| p.clean) {
        let bound = Z_LOGIT * eps * p.reference_spread;
        worst_logit = worst_logit.max(f64::from(p.max_abs_diff) / bound);
        if p.relative_logit_error > eps || f64::from(p.max_abs_diff) > bound {
            return Err(format!(
                "position {}: max|Δlogit| {:.3} (relative {:.2e}) exceeds the model's {bound:.3} ({eps:.2e})",
                p.position, p.max_abs_diff, p.relative_logit_error
            ));
        }
        if p.kl > 0.5 * bound * bound {
            return Err(format!(
                "position {}: KL {:.2e} above the bound {:.2e}",
                p.position,
                p.kl,
                0.5 * bound * bound
            ));
        }
        if f64::from(p.reference_gap) > 2.0 * bound {
            top1_checked += 1;
            if !p.top1_equal {
                return Err(format!(
                    "position {}: top-1 differs though the reference's gap {:.3} exceeds 2·{bound:.3}",
                    p.position, p.reference_gap
                ));
            }
        }
    }
    if pinned && top1_checked < MIN_TOP1 {
        return Err(format!(
            "top-1 agreement checked at {top1_checked} positions only (gap above twice the bound); at least {MIN_TOP1} needed"
        ));
    }
    Ok(format!(
        "worst/bound: router input {worst_input:.2}, first-flip margin {worst_margin:.2}, logits {worst_logit:.2}; top-1 checked at {top1_checked}"
    ))
}

#[test]
fn fast_paths_within_their_error_model() {
    let fixtures = parity_fixtures();
    let paths = fast_paths();
    assert!(
        paths.iter().any(|&(d, _)| d == DType::Bf16) && paths.iter().any(|&(d, _)| d == DType::Q8),
        "fast paths {paths:?}"
    );
    let mut checks = common::Checks::default();
    for dir in &fixtures {
        let fixture = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let (tokens, prompt) = sequence(dir);
        let mut f32e = match load(dir, DType::F32, None) {
            Ok(e) => e,
            Err(e) => {
                checks.record(&fixture, Err(e));
                continue;
            }
        };
        for &(dtype, isa) in &paths {
            let name = format!("{fixture} {dtype:?}/{}", isa.name());
            assert_eq!(reference_dtype_of(dtype), Some(DType::F32));
            let model = ErrorModel::of(dtype, isa);
            let mut fast = match load(dir, dtype, Some(isa)) {
                Ok(e) => e,
                Err(e) => {
                    checks.record(&name, Err(e));
                    continue;
                }
            };
            for pinning in [Pinning::Reference, Pinning::Own] {
                let label = match pinning {
                    Pinning::Reference => "pinned",
                    Pinning::Own => "free",
                };
                let r = teacher_forced(&mut f32e, &mut fast, &tokens, prompt, pinning)
                    .map_err(|e| e.to_string())
                    .and_then(|c| {
                        let line = format!("{}\n     {}", figures_line(&c), layer_line(&c, &model));
                        check_bounds(&c, &model, pinning == Pinning::Reference)
                            .map(|margins| format!("{line}\n     {margins}"))
                            .map_err(|e| format!("{e}\n     {line}"))
                    });
                checks.record(&format!("{name} {label}"), r);
            }
        }
        // bf16's rounding inventory: with every source exact, bf16 is f32.
        let r = (|| -> Result<String, String> {
            let mut bf16 = load(dir, DType::Bf16, None)?;
            let mut lines = Vec::new();
            bf16.set_exact_sources(&RoundingSource::ALL);
            let c = teacher_forced(&mut f32e, &mut bf16, &tokens, prompt, Pinning::Own)
                .map_err(|e| e.to_string())?;
            let all_exact = c.summary().max_abs_diff;
            for source in RoundingSource::ALL {
                let others: Vec<RoundingSource> = RoundingSource::ALL
                    .into_iter()
                    .filter(|&s| s != source)
                    .collect();
                bf16.set_exact_sources(&others);
                let c = teacher_forced(&mut f32e, &mut bf16, &tokens, prompt, Pinning::Reference)
                    .map_err(|e| e.to_string())?;
                let eps: Vec<String> = c
                    .layers
                    .iter()
                    .map(|l| format!("{:.1e}", l.router_input_error_rms))
                    .collect();
                let moved = c.summary().max_abs_diff;
                let router_moved = c
                    .layers
                    .iter()
                    .map(|l| l.router_logit_error_max)
                    .fold(0.0, f32::max);
                // (With top-1 routing and pinned experts, the router's input rounding moves
                // only the router logits: one expert's weight is 1 whatever its logit.)
                if moved == 0.0 && router_moved == 0.0 {
                    return Err(format!(
                        "{source:?} alone changes nothing: its switch is dead"
                    ));
                }
                lines.push(format!(
                    "{source:?} alone: router input ε [{}], max|Δlogit| {moved:.3}",
                    eps.join(" ")
                ));
            }
            if all_exact > 1e-4 {
                return Err(format!(
                    "bf16 with every rounding exact differs from f32 by {all_exact:.2e}: a rounding source is missing from the inventory"
                ));
            }
            Ok(format!(
                "all exact: max|Δlogit| {all_exact:.1e}\n     {}",
                lines.join("\n     ")
            ))
        })();
        checks.record(&format!("{fixture} Bf16 sources"), r);
    }
    checks.assert_all_passed("accuracy");
}
