//! The gpt-oss forward pass: embeddings, decoder layers (RMSNorm, attention with sinks and
//! sliding/full windows, top-k MoE with clamped SwiGLU), final norm, untied lm_head.
//!
//! Weights are views into the checkpoint mapping (see [`crate::checkpoint`]); activations are
//! f32 `[tokens, features]` buffers. In bf16 compute every matmul input is rounded to bf16 and
//! the KV cache is stored in bf16; accumulation and the residual stream stay f32.

use crate::checkpoint::{Checkpoint, Dtype, MappedBytes, TensorView};
use crate::config::{LayerType, ModelConfig};
use crate::error::{EngineError, Result};
use crate::kernels::attention::{self, AttnShape, Widen};
use crate::kernels::dense::DenseMatrix;
use crate::kernels::linear::{LinearJob, Weights, linear_batch};
use crate::kernels::mxfp4::{BLOCK, BLOCK_BYTES, Mxfp4Matrix};
use crate::kernels::q8::{Isa, Q8Acts, Q8Matrix, QK};
use crate::kernels::{add_scaled, dot_f32, round_to_bf16, swiglu};
use crate::kv_cache::{KvCache, LayerKv, LayerStore};
use crate::profile::{OpProfile, SpanTimes};
use crate::rope::Rope;
use rayon::prelude::*;
use tracing::trace_span;

/// Precision of the activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DType {
    /// f32 activations and KV cache: matches the f32 reference to ~1e-5.
    #[default]
    F32,
    /// bf16 matmul inputs and KV cache (half the cache memory), f32 accumulation.
    Bf16,
    /// The fast CPU mode: the dense matrices (attention projections, unembedding) converted
    /// to q8_0 at load, every matmul input quantized per 32-block to int8 (MXFP4 experts
    /// and q8_0 weights dotted in int32), bf16 KV cache. The router, norms, RoPE, attention
    /// scores and the residual stream stay f32.
    Q8,
}

impl std::str::FromStr for DType {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "f32" | "float32" => Ok(DType::F32),
            "bf16" | "bfloat16" => Ok(DType::Bf16),
            "q8" | "q8_0" | "int8" => Ok(DType::Q8),
            other => Err(format!("unknown dtype {other:?} (use f32, bf16 or q8)")),
        }
    }
}

/// Which positions get logits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last position (generation).
    Last,
    /// Every position of the call (`[tokens, vocab]`).
    All,
}

/// Per-layer internals of one forward call, for bisecting against a reference.
#[derive(Debug, Clone, Default)]
pub struct ForwardTrace {
    /// Residual stream after each layer, `[tokens, hidden]` each.
    pub layer_outputs: Vec<Vec<f32>>,
    /// Selected experts per layer, `[tokens, k]` each, by descending router logit.
    pub router_topk: Vec<Vec<u32>>,
    /// Per layer and token, the k-th minus the (k+1)-th router logit: how close the routing
    /// was to choosing another expert (infinite when every expert is selected).
    pub router_margins: Vec<Vec<f32>>,
    /// The router's input per layer, `[tokens, hidden]` each (as the router saw it).
    pub router_inputs: Vec<Vec<f32>>,
    /// Router logits per layer, `[tokens, experts]` each.
    pub router_logits: Vec<Vec<f32>>,
    /// Diagnostics input, read before the call: when set, layer l sends token i to the experts
    /// `pinned_routing[l][i*k..(i+1)*k]` instead of its own top-k (weighted by the softmax of
    /// its own logits of them), so that a comparison with another dtype measures rounding
    /// alone, without the knock-on effect of a router near-tie. `router_topk` still records the
    /// model's own choice. A token's ids must be distinct and below the expert count, else
    /// the call fails with [`crate::EngineError::PinnedRouting`].
    pub pinned_routing: Option<Vec<Vec<u32>>>,
}

/// Diagnostics: the places where [`DType::Bf16`] rounds to bf16 (the KV cache is bf16 in
/// [`DType::Q8`] too). [`Model::set_exact_sources`] keeps any of them in f32, to measure what
/// each one costs; with all of them exact, bf16 computes what f32 does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundingSource {
    /// The normed input of the q/k/v projections.
    AttentionInput,
    /// Keys and values stored in the cache.
    KvCache,
    /// The attention output, before the o projection.
    AttentionOutput,
    /// The normed input of the router.
    RouterInput,
    /// The normed input of the experts' gate_up projection.
    ExpertInput,
    /// The SwiGLU activation, before the down projection.
    ExpertActivation,
    /// The final normed hidden state, before the unembedding.
    LmHeadInput,
}

impl RoundingSource {
    pub const ALL: [RoundingSource; 7] = [
        RoundingSource::AttentionInput,
        RoundingSource::KvCache,
        RoundingSource::AttentionOutput,
        RoundingSource::RouterInput,
        RoundingSource::ExpertInput,
        RoundingSource::ExpertActivation,
        RoundingSource::LmHeadInput,
    ];

    fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

/// The weights of a linear layer, in the form the forward pass reads.
#[derive(Debug, Clone)]
enum Weight {
    /// bf16/f32 rows read in place from the checkpoint: f32 and bf16 compute, the router, and
    /// any matrix whose rows are not whole 32-blocks.
    Dense(DenseMatrix),
    /// q8_0, converted at load in [`DType::Q8`] (the checkpoint's pages are released).
    Q8(Q8Matrix),
}

impl Weight {
    /// `dense` as is, or converted to q8_0 when `quantize` (and its rows are whole blocks).
    fn new(dense: DenseMatrix, quantize: bool) -> Weight {
        if quantize && dense.cols().is_multiple_of(QK) {
            let m = Q8Matrix::quantize_rows(dense.rows(), dense.cols(), |r, out| {
                dense.row_to_f32(r, out)
            });
            // The source pages leave memory (they stay in the page cache).
            dense.release_pages();
            return Weight::Q8(m);
        }
        Weight::Dense(dense)
    }

    fn rows(&self) -> usize {
        match self {
            Weight::Dense(m) => m.rows(),
            Weight::Q8(m) => m.rows(),
        }
    }

    /// Bytes one pass over the matrix reads.
    fn bytes(&self) -> u64 {
        match self {
            Weight::Dense(m) => m.storage_bytes() as u64,
            Weight::Q8(m) => m.bytes() as u64,
        }
    }

    /// `y = x·Wᵀ + bias` for `x` `[t, in]`. A q8_0 matrix reads `xq`, the int8 form of `x`,
    /// quantizing it on first need so matmuls of the same input share it.
    fn linear(
        &self,
        x: &[f32],
        t: usize,
        xq: &mut Option<Q8Acts>,
        isa: Isa,
        bias: Option<&[f32]>,
    ) -> Vec<f32> {
        let mut y = vec![0.0; t * self.rows()];
        match self {
            Weight::Dense(m) => m.linear(x, t, bias, &mut y),
            Weight::Q8(m) => m.linear(isa, quantized(xq, x, t), bias, &mut y),
        }
        y
    }
}

/// `x` (`[t, cols]`) quantized in plain order, once.
fn quantized<'a>(xq: &'a mut Option<Q8Acts>, x: &[f32], t: usize) -> &'a Q8Acts {
    xq.get_or_insert_with(|| {
        let mut q = Q8Acts::default();
        q.quantize(x, t, x.len() / t, false);
        q
    })
}

/// A linear layer with an optional bias.
#[derive(Debug, Clone)]
struct Linear {
    weight: Weight,
    bias: Option<Vec<f32>>,
}

impl Linear {
    fn load(
        ck: &Checkpoint,
        prefix: &str,
        out: usize,
        inp: usize,
        bias: bool,
        quantize: bool,
    ) -> Result<Linear> {
        let weight = Weight::new(dense(ck, &format!("{prefix}.weight"), out, inp)?, quantize);
        let bias = if bias {
            Some(small(ck, &format!("{prefix}.bias"), &[out])?)
        } else {
            None
        };
        Ok(Linear { weight, bias })
    }

    fn forward(&self, x: &[f32], t: usize, xq: &mut Option<Q8Acts>, isa: Isa) -> Vec<f32> {
        self.weight.linear(x, t, xq, isa, self.bias.as_deref())
    }
}

/// Profiling on: the span-time layer and a dispatcher that feeds it.
struct Profiler {
    times: SpanTimes,
    dispatch: Option<tracing::Dispatch>,
}

impl Profiler {
    fn new() -> Profiler {
        let times = SpanTimes::default();
        let dispatch = Some(times.dispatch());
        Profiler { times, dispatch }
    }

    fn dispatch(&self) -> &tracing::Dispatch {
        self.dispatch.as_ref().expect("present until drop")
    }
}

impl Drop for Profiler {
    fn drop(&mut self) {
        // While this dispatcher lived, `tracing` let every stage span through to ask it; with
        // it gone, recomputing the callsites' interest makes them free again.
        drop(self.dispatch.take());
        tracing::callsite::rebuild_interest_cache();
    }
}

/// The positions of one forward call: the first and RoPE's tables for all of them.
struct Positions {
    start: usize,
    cos: Vec<f32>,
    sin: Vec<f32>,
}

struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    sinks: Vec<f32>,
    /// `Some(window)` on sliding-attention layers.
    window: Option<usize>,
    heads: usize,
    kv_heads: usize,
    head_dim: usize,
}

/// One expert tensor (gate_up or down) for all experts.
enum ExpertWeights {
    /// Packed `[E, out, in/32, 16]` blocks and `[E, out, in/32]` scales.
    Mxfp4 {
        blocks: MappedBytes,
        scales: MappedBytes,
        out: usize,
        inp: usize,
    },
    /// bf16/f32 `[E, in, out]` (input-major), one matrix per expert.
    InputMajor(Vec<DenseMatrix>),
}

impl ExpertWeights {
    /// One expert's packed matrix (MXFP4 layout only).
    fn mxfp4_expert(&self, expert: usize) -> Option<Mxfp4Matrix<'_>> {
        let ExpertWeights::Mxfp4 {
            blocks,
            scales,
            out,
            inp,
        } = self
        else {
            return None;
        };
        let nb = out * inp / 2;
        let ns = out * inp / BLOCK;
        let (b, s) = (blocks.as_slice(), scales.as_slice());
        Some(Mxfp4Matrix {
            blocks: &b[expert * nb..(expert + 1) * nb],
            scales: &s[expert * ns..(expert + 1) * ns],
            rows: *out,
            cols: *inp,
        })
    }

    fn linear(&self, expert: usize, x: &[f32], t: usize, bias: &[f32], y: &mut [f32]) {
        if let Some(m) = self.mxfp4_expert(expert) {
            m.linear(x, t, Some(bias), y);
        } else if let ExpertWeights::InputMajor(per_expert) = self {
            per_expert[expert].linear_input_major(x, t, Some(bias), y);
        }
    }

    fn is_mxfp4(&self) -> bool {
        matches!(self, ExpertWeights::Mxfp4 { .. })
    }
}

struct Experts {
    gate_up: ExpertWeights,
    gate_up_bias: Vec<f32>,
    down: ExpertWeights,
    down_bias: Vec<f32>,
    intermediate: usize,
    hidden: usize,
    limit: f32,
}

struct Moe {
    router: Linear,
    experts: Experts,
    num_experts: usize,
    top_k: usize,
}

struct DecoderLayer {
    input_norm: Vec<f32>,
    attention: Attention,
    post_norm: Vec<f32>,
    moe: Moe,
}

/// A loaded gpt-oss model: weights and the precomputed RoPE frequencies. Immutable; all state
/// of a sequence lives in its [`KvCache`].
pub struct Model {
    config: ModelConfig,
    dtype: DType,
    embed: DenseMatrix,
    layers: Vec<DecoderLayer>,
    norm: Vec<f32>,
    lm_head: Weight,
    rope: Rope,
    eps: f32,
    isa: Isa,
    profile: Option<Profiler>,
    /// [`RoundingSource`] bits kept in f32 (diagnostics; 0 normally).
    exact: u8,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("layers", &self.layers.len())
            .field("dtype", &self.dtype)
            .field("mxfp4_experts", &self.has_mxfp4_experts())
            .field("isa", &self.isa)
            .finish()
    }
}

fn small(ck: &Checkpoint, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
    let view = ck.get(name)?;
    view.expect_shape(shape)?;
    view.to_f32_vec()
}

fn dense(ck: &Checkpoint, name: &str, rows: usize, cols: usize) -> Result<DenseMatrix> {
    let view = ck.get(name)?;
    view.expect_shape(&[rows, cols])?;
    DenseMatrix::from_view(view, rows, cols)
}

fn u8_tensor(view: &TensorView, shape: &[usize]) -> Result<MappedBytes> {
    view.expect_shape(shape)?;
    if view.dtype != Dtype::U8 {
        return Err(view.wrong_dtype("U8"));
    }
    Ok(view.mapped())
}

fn load_expert_weights(
    ck: &Checkpoint,
    prefix: &str,
    experts: usize,
    inp: usize,
    out: usize,
) -> Result<ExpertWeights> {
    let blocks_name = format!("{prefix}_blocks");
    if ck.contains(&blocks_name) {
        if !inp.is_multiple_of(BLOCK) {
            return Err(EngineError::WrongShape {
                path: ck.get(&blocks_name)?.path.to_path_buf(),
                tensor: blocks_name,
                expected: vec![experts, out, inp.div_ceil(BLOCK), BLOCK_BYTES],
                found: ck.get(&format!("{prefix}_blocks"))?.shape.clone(),
            });
        }
        let blocks = u8_tensor(
            ck.get(&blocks_name)?,
            &[experts, out, inp / BLOCK, BLOCK_BYTES],
        )?;
        let scales = u8_tensor(
            ck.get(&format!("{prefix}_scales"))?,
            &[experts, out, inp / BLOCK],
        )?;
        return Ok(ExpertWeights::Mxfp4 {
            blocks,
            scales,
            out,
            inp,
        });
    }
    let view = ck.get(prefix).map_err(|_| EngineError::MissingTensor {
        tensor: format!("{blocks_name} (MXFP4) or {prefix} (bf16)"),
        searched: match ck.get(prefix) {
            Err(EngineError::MissingTensor { searched, .. }) => searched,
            _ => String::new(),
        },
    })?;
    view.expect_shape(&[experts, inp, out])?;
    let all = DenseMatrix::from_view(view, experts * inp, out)?;
    Ok(ExpertWeights::InputMajor(
        (0..experts)
            .map(|e| all.slice_rows(e * inp, (e + 1) * inp))
            .collect(),
    ))
}

impl Model {
    /// Builds the model from a checkpoint, checking every tensor's name, shape and dtype.
    pub fn load(config: &ModelConfig, ck: &Checkpoint, dtype: DType) -> Result<Model> {
        let h = config.hidden_size;
        let (nh, nkv, d) = (
            config.num_attention_heads,
            config.num_key_value_heads,
            config.head_dim,
        );
        let (e, i) = (config.num_local_experts, config.intermediate_size);
        let bias = config.attention_bias;
        let q8 = dtype == DType::Q8;
        let types = config.layer_types();
        let mut layers = Vec::with_capacity(config.num_hidden_layers);
        for (l, kind) in types.iter().enumerate() {
            let p = format!("model.layers.{l}");
            let attention = Attention {
                q: Linear::load(ck, &format!("{p}.self_attn.q_proj"), nh * d, h, bias, q8)?,
                k: Linear::load(ck, &format!("{p}.self_attn.k_proj"), nkv * d, h, bias, q8)?,
                v: Linear::load(ck, &format!("{p}.self_attn.v_proj"), nkv * d, h, bias, q8)?,
                o: Linear::load(ck, &format!("{p}.self_attn.o_proj"), h, nh * d, bias, q8)?,
                sinks: small(ck, &format!("{p}.self_attn.sinks"), &[nh])?,
                window: (*kind == LayerType::SlidingAttention).then_some(config.sliding_window),
                heads: nh,
                kv_heads: nkv,
                head_dim: d,
            };
            let x = format!("{p}.mlp.experts");
            let experts = Experts {
                gate_up: load_expert_weights(ck, &format!("{x}.gate_up_proj"), e, h, 2 * i)?,
                gate_up_bias: small(ck, &format!("{x}.gate_up_proj_bias"), &[e, 2 * i])?,
                down: load_expert_weights(ck, &format!("{x}.down_proj"), e, i, h)?,
                down_bias: small(ck, &format!("{x}.down_proj_bias"), &[e, h])?,
                intermediate: i,
                hidden: h,
                limit: config.swiglu_limit as f32,
            };
            layers.push(DecoderLayer {
                input_norm: small(ck, &format!("{p}.input_layernorm.weight"), &[h])?,
                attention,
                post_norm: small(ck, &format!("{p}.post_attention_layernorm.weight"), &[h])?,
                moe: Moe {
                    // The router stays exact: it is tiny, and an int8 router would flip
                    // routing near-ties (whole experts swapped) for no speed gain.
                    router: Linear::load(ck, &format!("{p}.mlp.router"), e, h, true, false)?,
                    experts,
                    num_experts: e,
                    top_k: config.num_experts_per_tok,
                },
            });
        }
        let embed = dense(ck, "model.embed_tokens.weight", config.vocab_size, h)?;
        let lm_head = if config.tie_word_embeddings && !ck.contains("lm_head.weight") {
            embed.clone()
        } else {
            dense(ck, "lm_head.weight", config.vocab_size, h)?
        };
        let lm_head = Weight::new(lm_head, q8);
        Ok(Model {
            config: config.clone(),
            dtype,
            embed,
            layers,
            norm: small(ck, "model.norm.weight", &[h])?,
            lm_head,
            rope: Rope::new(&config.rope(), d),
            eps: config.rms_norm_eps as f32,
            isa: Isa::detect(),
            profile: None,
            exact: 0,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// The instruction set of the int8 kernels ([`DType::Q8`]).
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Runs the int8 kernels with `isa` instead of the one detected (for comparisons, and to
    /// check the paths a CPU with fewer features takes). Only detection makes an [`Isa`], so
    /// any one given here runs on this CPU.
    pub fn set_isa(&mut self, isa: Isa) {
        self.isa = isa;
    }

    /// Diagnostics: keeps `sources` in f32 in bf16 compute (the KV cache also in q8). Takes
    /// effect for caches made afterwards ([`Model::new_cache`]).
    pub fn set_exact_sources(&mut self, sources: &[RoundingSource]) {
        self.exact = sources.iter().fold(0, |bits, s| bits | s.bit());
    }

    /// Turns per-op timing of forward calls on or off (off by default: it reads the clock
    /// twice per stage span). Turning it on clears what was collected. The times come from
    /// the stages' `tracing` spans (see `profile.rs`); any subscriber of the process can
    /// also see those spans (level TRACE, target `ossa_engine::model`).
    pub fn set_profiling(&mut self, on: bool) {
        self.profile = on.then(Profiler::new);
    }

    /// The per-op times collected since profiling was turned on or last taken.
    pub fn take_profile(&self) -> Option<OpProfile> {
        Some(self.profile.as_ref()?.times.take())
    }

    /// Bytes of weights one decode step reads: every layer's attention projections, router
    /// and `top_k` experts, and the unembedding (not the KV cache).
    pub fn decode_weight_bytes(&self) -> u64 {
        let mut total = self.lm_head.bytes();
        for layer in &self.layers {
            let a = &layer.attention;
            total += [&a.q, &a.k, &a.v, &a.o, &layer.moe.router]
                .into_iter()
                .map(|l| l.weight.bytes())
                .sum::<u64>();
            let ex = &layer.moe.experts;
            let per_expert = |w: &ExpertWeights| -> u64 {
                match w {
                    ExpertWeights::Mxfp4 { out, inp, .. } => (out * inp * 17 / 32) as u64,
                    ExpertWeights::InputMajor(m) => {
                        m.first().map_or(0, |m| m.storage_bytes() as u64)
                    }
                }
            };
            total += layer.moe.top_k as u64 * (per_expert(&ex.gate_up) + per_expert(&ex.down));
        }
        total
    }

    /// Whether the experts are the packed MXFP4 layout (else bf16/f32 input-major).
    pub fn has_mxfp4_experts(&self) -> bool {
        self.layers
            .first()
            .is_some_and(|l| l.moe.experts.gate_up.is_mxfp4())
    }

    /// An empty cache for this model, in the model's compute dtype.
    pub fn new_cache(&self) -> KvCache {
        let c = &self.config;
        KvCache::new(
            c.num_hidden_layers,
            c.num_key_value_heads * c.head_dim,
            self.dtype != DType::F32 && self.exact & RoundingSource::KvCache.bit() == 0,
        )
    }

    /// Runs `tokens` after the cached positions, appends their keys and values (and the tokens)
    /// to `cache`, and returns logits: `[vocab]` for [`Logits::Last`], `[tokens, vocab]` for
    /// [`Logits::All`]. Runs on the current rayon pool.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        trace: Option<&mut ForwardTrace>,
    ) -> Result<Vec<f32>> {
        let Some(profiler) = &self.profile else {
            return self.forward_stages(tokens, cache, logits, trace);
        };
        // The stages' spans go to the profiler: they are all opened on this thread. Each
        // span callsite caches whether any dispatcher wants it; a callsite first reached by
        // another thread while the profiler's dispatcher was being made can keep a stale
        // "never" (a race in tracing-core's registration), which would silently drop that
        // stage from the profile. Recomputing the cache here (profiling only) rules it out.
        tracing::callsite::rebuild_interest_cache();
        let out = tracing::dispatcher::with_default(profiler.dispatch(), || {
            self.forward_stages(tokens, cache, logits, trace)
        });
        if out.is_ok() {
            profiler.times.count_call(tokens.len());
        }
        out
    }

    /// [`Model::forward`], each stage in its span.
    fn forward_stages(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        mut trace: Option<&mut ForwardTrace>,
    ) -> Result<Vec<f32>> {
        let t = tokens.len();
        if t == 0 {
            return Err(EngineError::EmptyPrompt);
        }
        let vocab = self.config.vocab_size;
        if let Some(&bad) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(EngineError::TokenOutOfRange {
                token: bad,
                vocab_size: vocab,
            });
        }
        let start = cache.len();
        if start + t > self.config.max_position_embeddings {
            return Err(EngineError::ContextOverflow {
                needed: start + t,
                max: self.config.max_position_embeddings,
            });
        }
        let _forward = trace_span!("forward").entered();
        let h = self.config.hidden_size;
        let mut x = vec![0.0f32; t * h];
        let positions = trace_span!("embed").in_scope(|| {
            for (row, &id) in x.chunks_exact_mut(h).zip(tokens) {
                self.embed.row_to_f32(id as usize, row);
            }
            let (cos, sin) = self.rope.tables(start, t);
            Positions { start, cos, sin }
        });
        let mode = Mode {
            dtype: self.dtype,
            isa: self.isa,
            exact: self.exact,
        };
        let pinned = trace.as_deref_mut().and_then(|tr| tr.pinned_routing.take());
        if let Some(pinned) = &pinned {
            let (k, experts) = (
                self.config.num_experts_per_tok,
                self.config.num_local_experts,
            );
            for l in 0..self.layers.len() {
                // A token's experts must be distinct and exist: the combine in `Moe::forward`
                // writes each expert's tokens' output rows in parallel.
                let found = match pinned.get(l) {
                    None => Some("no entry".to_string()),
                    Some(p) if p.len() != t * k => Some(format!("{} ids", p.len())),
                    Some(p) => p.chunks_exact(k.max(1)).enumerate().find_map(|(ti, ids)| {
                        let bad = ids
                            .iter()
                            .enumerate()
                            .any(|(j, &e)| e as usize >= experts || ids[..j].contains(&e));
                        bad.then(|| format!("{ids:?} for token {ti}"))
                    }),
                };
                if let Some(found) = found {
                    return Err(EngineError::PinnedRouting {
                        layer: l,
                        expected: t * k,
                        experts,
                        found,
                    });
                }
            }
        }
        let mut moe_scratch = MoeScratch::default();
        for (l, layer) in self.layers.iter().enumerate() {
            let normed = trace_span!("norm").in_scope(|| {
                let mut normed = rms_norm(&x, &layer.input_norm, self.eps);
                if mode.rounds(RoundingSource::AttentionInput) {
                    round_to_bf16(&mut normed);
                }
                normed
            });
            let attn = layer
                .attention
                .forward(&normed, t, &positions, &mut cache.layers[l], mode);
            add_assign(&mut x, &attn);
            let norm_span = trace_span!("norm").entered();
            let mut normed = rms_norm(&x, &layer.post_norm, self.eps);
            // The router and the experts read the same rounded input, unless a diagnostic
            // keeps one of the two roundings exact.
            let (router_rounds, experts_round) = (
                mode.rounds(RoundingSource::RouterInput),
                mode.rounds(RoundingSource::ExpertInput),
            );
            let mut router_input = (router_rounds != experts_round).then(|| normed.clone());
            if let Some(r) = router_input.as_mut().filter(|_| router_rounds) {
                round_to_bf16(r);
            }
            if experts_round {
                round_to_bf16(&mut normed);
            }
            drop(norm_span);
            let mut routing = Routing {
                pinned: pinned.as_ref().and_then(|p| p.get(l)).map(Vec::as_slice),
                ..Routing::default()
            };
            let moe = layer.moe.forward(
                &normed,
                router_input.as_deref(),
                t,
                mode,
                &mut routing,
                &mut moe_scratch,
            );
            if let Some(tr) = trace.as_deref_mut() {
                tr.router_topk.push(routing.selected);
                tr.router_margins.push(routing.margins);
                tr.router_inputs
                    .push(router_input.unwrap_or_else(|| normed.clone()));
                tr.router_logits.push(routing.logits);
            }
            add_assign(&mut x, moe);
            if let Some(tr) = trace.as_deref_mut() {
                tr.layer_outputs.push(x.clone());
            }
        }
        cache.push_tokens(tokens);
        let rows = match logits {
            Logits::Last => &x[(t - 1) * h..],
            Logits::All => &x[..],
        };
        let n = rows.len() / h;
        let normed = trace_span!("norm").in_scope(|| {
            let mut normed = rms_norm(rows, &self.norm, self.eps);
            if mode.rounds(RoundingSource::LmHeadInput) {
                round_to_bf16(&mut normed);
            }
            normed
        });
        let _lm_head = trace_span!("lm_head").entered();
        Ok(self.lm_head.linear(&normed, n, &mut None, mode.isa, None))
    }
}

fn add_assign(x: &mut [f32], y: &[f32]) {
    for (a, b) in x.iter_mut().zip(y) {
        *a += b;
    }
}

/// How the arithmetic of one forward call runs.
#[derive(Debug, Clone, Copy)]
struct Mode {
    dtype: DType,
    isa: Isa,
    /// [`RoundingSource`] bits kept in f32.
    exact: u8,
}

impl Mode {
    /// Whether bf16 compute rounds at `source`.
    fn rounds(self, source: RoundingSource) -> bool {
        self.dtype == DType::Bf16 && self.exact & source.bit() == 0
    }

    /// int8 activations against the q8_0/MXFP4 integer kernels.
    fn int8(self) -> bool {
        self.dtype == DType::Q8
    }
}

/// `weight · x / sqrt(mean(x²) + eps)` per row, as GptOssRMSNorm in f32.
fn rms_norm(x: &[f32], weight: &[f32], eps: f32) -> Vec<f32> {
    let h = weight.len();
    let mut out = vec![0.0f32; x.len()];
    for (row, dst) in x.chunks_exact(h).zip(out.chunks_exact_mut(h)) {
        let mean = dot_f32(row, row) / h as f32;
        let inv = 1.0 / (mean + eps).sqrt();
        for ((o, &v), &w) in dst.iter_mut().zip(row).zip(weight) {
            *o = w * (v * inv);
        }
    }
    out
}

impl Attention {
    fn forward(
        &self,
        x: &[f32],
        t: usize,
        positions: &Positions,
        store: &mut LayerStore,
        mode: Mode,
    ) -> Vec<f32> {
        let _attention = trace_span!("attention").entered();
        let d = self.head_dim;
        let half = d / 2;
        let (mut q, mut k, v) = trace_span!("attn.qkv").in_scope(|| self.qkv(x, t, mode.isa));
        let core = trace_span!("attn.core").entered();
        let (cos, sin, start) = (&positions.cos, &positions.sin, positions.start);
        for ti in 0..t {
            let (c, s) = (
                &cos[ti * half..(ti + 1) * half],
                &sin[ti * half..(ti + 1) * half],
            );
            for head in q[ti * self.heads * d..(ti + 1) * self.heads * d].chunks_exact_mut(d) {
                Rope::apply(head, c, s);
            }
            for head in k[ti * self.kv_heads * d..(ti + 1) * self.kv_heads * d].chunks_exact_mut(d)
            {
                Rope::apply(head, c, s);
            }
        }
        // q8's 8-bit activations dominate its error: its attention products may take bf16
        // inputs (the tile kernels' format).
        let bf16_products = mode.int8().then_some(mode.isa);
        let mut out = match store {
            LayerStore::F32(kv) => self.attend(&q, &k, &v, t, start, kv, bf16_products),
            LayerStore::Bf16(kv) => self.attend(&q, &k, &v, t, start, kv, bf16_products),
        };
        if mode.rounds(RoundingSource::AttentionOutput) {
            round_to_bf16(&mut out);
        }
        drop(core);
        trace_span!("attn.o").in_scope(|| self.o.forward(&out, t, &mut None, mode.isa))
    }

    /// The three projections of `x`; as q8_0 matrices, one quantization of `x` and one
    /// parallel pass ([`linear_batch`]).
    fn qkv(&self, x: &[f32], t: usize, isa: Isa) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let mut xq = None;
        let (Weight::Q8(wq), Weight::Q8(wk), Weight::Q8(wv)) =
            (&self.q.weight, &self.k.weight, &self.v.weight)
        else {
            return (
                self.q.forward(x, t, &mut xq, isa),
                self.k.forward(x, t, &mut xq, isa),
                self.v.forward(x, t, &mut xq, isa),
            );
        };
        let xq = quantized(&mut xq, x, t);
        let (mut q, mut k, mut v) = (
            vec![0.0; t * wq.rows()],
            vec![0.0; t * wk.rows()],
            vec![0.0; t * wv.rows()],
        );
        linear_batch(
            isa,
            &mut [
                LinearJob {
                    weights: Weights::Q8(wq),
                    x: xq,
                    bias: self.q.bias.as_deref(),
                    y: &mut q,
                },
                LinearJob {
                    weights: Weights::Q8(wk),
                    x: xq,
                    bias: self.k.bias.as_deref(),
                    y: &mut k,
                },
                LinearJob {
                    weights: Weights::Q8(wv),
                    x: xq,
                    bias: self.v.bias.as_deref(),
                    y: &mut v,
                },
            ],
        );
        (q, k, v)
    }

    /// Appends the new keys/values, then attends over the cache.
    #[allow(clippy::too_many_arguments)]
    fn attend<E: Widen>(
        &self,
        q: &[f32],
        k: &[f32],
        v: &[f32],
        t: usize,
        start: usize,
        kv: &mut LayerKv<E>,
        bf16_products: Option<Isa>,
    ) -> Vec<f32> {
        kv.keys.extend(k.iter().map(|&a| E::from_f32(a)));
        kv.values.extend(v.iter().map(|&a| E::from_f32(a)));
        let shape = AttnShape {
            heads: self.heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
            window: self.window,
        };
        attention::attend(
            &shape,
            q,
            t,
            start,
            &kv.keys,
            &kv.values,
            &self.sinks,
            bf16_products,
        )
    }
}

/// Routing decisions of one layer, for traces.
#[derive(Default)]
struct Routing<'a> {
    /// `[t, k]` chosen experts by descending router logit.
    selected: Vec<u32>,
    /// `[t]` k-th minus (k+1)-th router logit.
    margins: Vec<f32>,
    /// `[t, experts]` router logits.
    logits: Vec<f32>,
    /// `[t, k]` experts to use instead of the chosen ones (diagnostics, see
    /// [`ForwardTrace::pinned_routing`]).
    pinned: Option<&'a [u32]>,
}

impl Moe {
    /// Routes each token to its top-k experts and sums their weighted outputs.
    /// `router_x` is the router's input when it differs from the experts' `x`.
    fn forward<'s>(
        &self,
        x: &[f32],
        router_x: Option<&[f32]>,
        t: usize,
        mode: Mode,
        routing: &mut Routing,
        scratch: &'s mut MoeScratch,
    ) -> &'s [f32] {
        let _moe = trace_span!("moe").entered();
        let router = trace_span!("moe.router").entered();
        let (e_count, k) = (self.num_experts, self.top_k);
        let ex = &self.experts;
        let (h, i) = (ex.hidden, ex.intermediate);
        let logits = self
            .router
            .forward(router_x.unwrap_or(x), t, &mut None, mode.isa);
        // Tokens and routing weights per expert.
        let mut assigned: Vec<Vec<(usize, f32)>> = vec![Vec::new(); e_count];
        let mut order: Vec<usize> = Vec::with_capacity(e_count);
        for ti in 0..t {
            let row = &logits[ti * e_count..(ti + 1) * e_count];
            order.clear();
            order.extend(0..e_count);
            // Descending logit, ties to the lower expert index; NaN sorts last.
            order.sort_by(|&a, &b| {
                row[b]
                    .partial_cmp(&row[a])
                    .unwrap_or(std::cmp::Ordering::Equal)
                    .then(a.cmp(&b))
            });
            routing.margins.push(
                order
                    .get(k)
                    .map_or(f32::INFINITY, |&next| row[order[k - 1]] - row[next]),
            );
            routing
                .selected
                .extend(order[..k].iter().map(|&e| e as u32));
            let pinned: Option<Vec<usize>> = routing.pinned.map(|p| {
                p[ti * k..(ti + 1) * k]
                    .iter()
                    .map(|&e| e as usize)
                    .collect()
            });
            let top = pinned.as_deref().unwrap_or(&order[..k]);
            let max = top
                .iter()
                .map(|&e| row[e])
                .fold(f32::NEG_INFINITY, f32::max);
            let exps: Vec<f32> = top.iter().map(|&e| (row[e] - max).exp()).collect();
            let sum: f32 = exps.iter().sum();
            for (&e, &w) in top.iter().zip(&exps) {
                assigned[e].push((ti, w / sum));
            }
        }
        routing.logits = logits;
        drop(router);
        let gate_up_span = trace_span!("moe.gate_up").entered();
        // int8 path: quantize every token once, gather each expert's rows.
        let int8 = mode.int8()
            && ex.gate_up.is_mxfp4()
            && ex.down.is_mxfp4()
            && h.is_multiple_of(QK)
            && i.is_multiple_of(QK);
        let active: Vec<(usize, &[(usize, f32)])> = assigned
            .iter()
            .enumerate()
            .filter(|(_, tokens)| !tokens.is_empty())
            .map(|(e, tokens)| (e, tokens.as_slice()))
            .collect();
        // Each active expert's rows follow the previous one's in the scratch buffers.
        let rows = t * k;
        let MoeScratch {
            all,
            xqs,
            gate_up,
            act,
            down,
            out,
        } = scratch;
        // Every kernel below writes all of its output, so the buffers are only resized:
        // no zeroing, and no fresh pages to fault in after the first layer.
        gate_up.resize(rows * 2 * i, 0.0);
        act.resize(rows * i, 0.0);
        down.resize(rows * h, 0.0);
        let gate_up_bias = |e: usize| &ex.gate_up_bias[e * 2 * i..(e + 1) * 2 * i];
        let down_bias = |e: usize| &ex.down_bias[e * h..(e + 1) * h];
        if int8 {
            all.quantize(x, t, h, true);
            xqs.resize_with(xqs.len().max(active.len()), Q8Acts::default);
            for ((_, tokens), xq) in active.iter().zip(xqs.iter_mut()) {
                xq.gather_rows(all, tokens.iter().map(|&(ti, _)| ti));
            }
            // Every selected expert in one batch: one parallel pass when decoding.
            let outs = split_rows(gate_up, &active, 2 * i);
            experts_int8(mode.isa, &ex.gate_up, &active, xqs, gate_up_bias, outs);
        } else {
            let mut xe = Vec::new();
            for (&(e, tokens), y) in active.iter().zip(split_rows(gate_up, &active, 2 * i)) {
                xe.clear();
                for &(ti, _) in tokens {
                    xe.extend_from_slice(&x[ti * h..(ti + 1) * h]);
                }
                ex.gate_up.linear(e, &xe, tokens.len(), gate_up_bias(e), y);
            }
        }
        drop(gate_up_span);
        let swiglu_span = trace_span!("moe.swiglu").entered();
        // Element-wise over (gate, up) pairs: all experts' rows in one call.
        swiglu(gate_up, ex.limit, !mode.int8(), act);
        if mode.rounds(RoundingSource::ExpertActivation) {
            round_to_bf16(act);
        }
        drop(swiglu_span);
        let down_span = trace_span!("moe.down").entered();
        if int8 {
            for ((act, xq), (_, tokens)) in split_rows(act, &active, i)
                .into_iter()
                .zip(xqs.iter_mut())
                .zip(&active)
            {
                xq.quantize(act, tokens.len(), i, true);
            }
            let outs = split_rows(down, &active, h);
            experts_int8(mode.isa, &ex.down, &active, xqs, down_bias, outs);
        } else {
            for ((&(e, tokens), act), y) in active
                .iter()
                .zip(split_rows(act, &active, i))
                .zip(split_rows(down, &active, h))
            {
                ex.down.linear(e, act, tokens.len(), down_bias(e), y);
            }
        }
        drop(down_span);
        // Each token's k expert rows, in ascending expert order (the order the sums were
        // always taken in), as (row of `down`, routing weight).
        let mut picks: Vec<(usize, f32)> = vec![(0, 0.0); rows];
        let mut filled = vec![0usize; t];
        let mut row = 0;
        for (_, tokens) in &active {
            for &(ti, w) in tokens.iter() {
                picks[ti * k + filled[ti]] = (row, w);
                filled[ti] += 1;
                row += 1;
            }
        }
        out.clear();
        out.resize(t * h, 0.0);
        let down = &*down;
        out.par_chunks_exact_mut(h)
            .zip(picks.par_chunks_exact(k.max(1)))
            .with_min_len(16)
            .for_each(|(o, picks)| {
                for &(row, w) in picks {
                    add_scaled(o, &down[row * h..(row + 1) * h], w);
                }
            });
        out
    }
}

/// Buffers one forward call's MoE layers share: after the first layer, no allocation, no
/// zeroed pages to fault in (at prefill sizes hundreds of MB per layer).
#[derive(Default)]
struct MoeScratch {
    /// Every token's input, quantized once.
    all: Q8Acts,
    /// Each active expert's tokens: gathered inputs, then its activations.
    xqs: Vec<Q8Acts>,
    /// `[t·k, 2·intermediate]`, `[t·k, intermediate]`, `[t·k, hidden]`: active experts' rows
    /// one after another.
    gate_up: Vec<f32>,
    act: Vec<f32>,
    down: Vec<f32>,
    /// `[t, hidden]`: the layer's output.
    out: Vec<f32>,
}

/// `buf` cut into one slice per active expert, `width` values per token of it.
/// One expert matmul (gate_up or down) of every selected expert over its tokens' int8
/// activations, all in one [`linear_batch`] (one parallel pass when decoding).
fn experts_int8<'a>(
    isa: Isa,
    weights: &ExpertWeights,
    active: &[(usize, &[(usize, f32)])],
    xqs: &[Q8Acts],
    bias: impl Fn(usize) -> &'a [f32],
    outs: Vec<&mut [f32]>,
) {
    let mut jobs: Vec<LinearJob> = active
        .iter()
        .zip(xqs)
        .zip(outs)
        .filter_map(|((&(e, _), x), y)| {
            Some(LinearJob {
                weights: Weights::Mxfp4(weights.mxfp4_expert(e)?),
                x,
                bias: Some(bias(e)),
                y,
            })
        })
        .collect();
    linear_batch(isa, &mut jobs);
}

fn split_rows<'a>(
    mut buf: &'a mut [f32],
    active: &[(usize, &[(usize, f32)])],
    width: usize,
) -> Vec<&'a mut [f32]> {
    active
        .iter()
        .map(|(_, tokens)| {
            let (head, rest) = std::mem::take(&mut buf).split_at_mut(tokens.len() * width);
            buf = rest;
            head
        })
        .collect()
}
