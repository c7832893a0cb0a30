//! Random checkpoints with the exact tensor names, shapes and dtypes of the released gpt-oss
//! models, so loading, memory and speed can be measured at full size without a download.
//! Written streaming, tensor by tensor: a 13 GB checkpoint never sits in memory.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use serde_json::{Value, json};

use crate::config::ModelConfig;
use crate::error::{EngineError, Result};

/// Shapes of a released model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    GptOss20b,
    GptOss120b,
}

impl std::str::FromStr for Preset {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "gpt-oss-20b" => Ok(Preset::GptOss20b),
            "gpt-oss-120b" => Ok(Preset::GptOss120b),
            other => Err(format!(
                "unknown preset {other:?} (use gpt-oss-20b or gpt-oss-120b)"
            )),
        }
    }
}

impl Preset {
    /// The model's `config.json`, key for key as published.
    pub fn config_json(self) -> Value {
        let (layers, experts) = match self {
            Preset::GptOss20b => (24, 32),
            Preset::GptOss120b => (36, 128),
        };
        let layer_types: Vec<&str> = (0..layers)
            .map(|i| {
                if i % 2 == 0 {
                    "sliding_attention"
                } else {
                    "full_attention"
                }
            })
            .collect();
        json!({
            "architectures": ["GptOssForCausalLM"],
            "attention_bias": true,
            "attention_dropout": 0.0,
            "eos_token_id": 200002,
            "experts_per_token": 4,
            "head_dim": 64,
            "hidden_act": "silu",
            "hidden_size": 2880,
            "initial_context_length": 4096,
            "initializer_range": 0.02,
            "intermediate_size": 2880,
            "layer_types": layer_types,
            "max_position_embeddings": 131072,
            "model_type": "gpt_oss",
            "num_attention_heads": 64,
            "num_experts_per_tok": 4,
            "num_hidden_layers": layers,
            "num_key_value_heads": 8,
            "num_local_experts": experts,
            "output_router_logits": false,
            "pad_token_id": 199999,
            "quantization_config": {
                "modules_to_not_convert": [
                    "model.layers.*.self_attn",
                    "model.layers.*.mlp.router",
                    "model.embed_tokens",
                    "lm_head"
                ],
                "quant_method": "mxfp4"
            },
            "rms_norm_eps": 1e-05,
            "rope_scaling": {
                "beta_fast": 32.0,
                "beta_slow": 1.0,
                "factor": 32.0,
                "original_max_position_embeddings": 4096,
                "rope_type": "yarn",
                "truncate": false
            },
            "rope_theta": 150000,
            "router_aux_loss_coef": 0.9,
            "sliding_window": 128,
            "swiglu_limit": 7.0,
            "tie_word_embeddings": false,
            "transformers_version": "4.55.0.dev0",
            "use_cache": true,
            "vocab_size": 201088
        })
    }
}

/// How to write a random checkpoint.
#[derive(Debug, Clone)]
pub struct RandomCheckpointOptions {
    pub seed: u64,
    /// Experts as packed MXFP4 (released layout) or as bf16 `[E, in, out]`.
    pub mxfp4_experts: bool,
    /// Largest shard; a checkpoint that fits in one is written as `model.safetensors`.
    pub max_shard_bytes: u64,
}

impl Default for RandomCheckpointOptions {
    fn default() -> Self {
        RandomCheckpointOptions {
            seed: 0,
            mxfp4_experts: true,
            max_shard_bytes: 5_000_000_000,
        }
    }
}

/// Name, dtype (safetensors spelling) and shape of one tensor of a checkpoint layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub dtype: String,
    pub shape: Vec<usize>,
}

/// Every tensor the released layout has for `config_json`, in file order.
pub fn tensor_layout(config_json: &Value, mxfp4_experts: bool) -> Result<Vec<TensorSpec>> {
    let config = ModelConfig::from_json(&config_json.to_string(), Path::new("config.json"))?;
    Ok(tensor_specs(&config, mxfp4_experts)
        .into_iter()
        .map(|s| TensorSpec {
            name: s.name,
            dtype: s.dtype.to_string(),
            shape: s.shape,
        })
        .collect())
}

/// What [`write_random_checkpoint`] wrote.
#[derive(Debug, Clone)]
pub struct RandomCheckpointSummary {
    pub files: Vec<PathBuf>,
    pub tensors: usize,
    pub total_bytes: u64,
}

#[derive(Debug, Clone, Copy)]
enum Fill {
    /// bf16 uniform in [-a, a].
    Uniform(f32),
    /// bf16 uniform in [c - a, c + a].
    Around(f32, f32),
    /// Random bytes (MXFP4 codes).
    Bytes,
    /// E8M0 exponents centred on `2^e` (±1).
    Scales(i32),
}

#[derive(Debug, Clone)]
struct Spec {
    name: String,
    dtype: &'static str,
    shape: Vec<usize>,
    fill: Fill,
}

impl Spec {
    fn bytes(&self) -> u64 {
        let elem = if self.dtype == "BF16" { 2 } else { 1 };
        self.shape.iter().product::<usize>() as u64 * elem
    }
}

fn tensor_specs(c: &ModelConfig, mxfp4: bool) -> Vec<Spec> {
    let (h, i, e) = (c.hidden_size, c.intermediate_size, c.num_local_experts);
    let (nh, nkv, d) = (c.num_attention_heads, c.num_key_value_heads, c.head_dim);
    let bf16 = |name: String, shape: Vec<usize>, fill: Fill| Spec {
        name,
        dtype: "BF16",
        shape,
        fill,
    };
    let u8t = |name: String, shape: Vec<usize>, fill: Fill| Spec {
        name,
        dtype: "U8",
        shape,
        fill,
    };
    // Weights scaled like 1/sqrt(fan_in) so activations stay O(1) through the random model.
    let lin = |fan_in: usize| Fill::Uniform((3.0 / fan_in as f32).sqrt());
    // FP4 codes have an RMS of ~3.2: a scale of 2^-7 gives weights of RMS ~0.025 ≈ 1/sqrt(2880).
    let scale_exp = |fan_in: usize| -((fan_in as f32 * 10.0).sqrt().log2().round() as i32);
    let mut specs = vec![bf16(
        "model.embed_tokens.weight".into(),
        vec![c.vocab_size, h],
        Fill::Uniform(1.0),
    )];
    for l in 0..c.num_hidden_layers {
        let p = format!("model.layers.{l}");
        specs.push(bf16(
            format!("{p}.input_layernorm.weight"),
            vec![h],
            Fill::Around(1.0, 0.1),
        ));
        for (proj, out, inp) in [
            ("q_proj", nh * d, h),
            ("k_proj", nkv * d, h),
            ("v_proj", nkv * d, h),
            ("o_proj", h, nh * d),
        ] {
            specs.push(bf16(
                format!("{p}.self_attn.{proj}.weight"),
                vec![out, inp],
                lin(inp),
            ));
            if c.attention_bias {
                specs.push(bf16(
                    format!("{p}.self_attn.{proj}.bias"),
                    vec![out],
                    Fill::Uniform(0.02),
                ));
            }
        }
        specs.push(bf16(
            format!("{p}.self_attn.sinks"),
            vec![nh],
            Fill::Uniform(1.0),
        ));
        specs.push(bf16(
            format!("{p}.post_attention_layernorm.weight"),
            vec![h],
            Fill::Around(1.0, 0.1),
        ));
        specs.push(bf16(format!("{p}.mlp.router.weight"), vec![e, h], lin(h)));
        specs.push(bf16(
            format!("{p}.mlp.router.bias"),
            vec![e],
            Fill::Uniform(0.1),
        ));
        let x = format!("{p}.mlp.experts");
        if mxfp4 {
            specs.push(u8t(
                format!("{x}.gate_up_proj_blocks"),
                vec![e, 2 * i, h / 32, 16],
                Fill::Bytes,
            ));
            specs.push(u8t(
                format!("{x}.gate_up_proj_scales"),
                vec![e, 2 * i, h / 32],
                Fill::Scales(scale_exp(h)),
            ));
        } else {
            specs.push(bf16(format!("{x}.gate_up_proj"), vec![e, h, 2 * i], lin(h)));
        }
        specs.push(bf16(
            format!("{x}.gate_up_proj_bias"),
            vec![e, 2 * i],
            Fill::Uniform(0.02),
        ));
        if mxfp4 {
            specs.push(u8t(
                format!("{x}.down_proj_blocks"),
                vec![e, h, i / 32, 16],
                Fill::Bytes,
            ));
            specs.push(u8t(
                format!("{x}.down_proj_scales"),
                vec![e, h, i / 32],
                Fill::Scales(scale_exp(i)),
            ));
        } else {
            specs.push(bf16(format!("{x}.down_proj"), vec![e, i, h], lin(i)));
        }
        specs.push(bf16(
            format!("{x}.down_proj_bias"),
            vec![e, h],
            Fill::Uniform(0.02),
        ));
    }
    specs.push(bf16(
        "model.norm.weight".into(),
        vec![h],
        Fill::Around(1.0, 0.1),
    ));
    if !c.tie_word_embeddings {
        specs.push(bf16("lm_head.weight".into(), vec![c.vocab_size, h], lin(h)));
    }
    specs
}

/// splitmix64: fast, and plenty for filler values.
struct Fast(u64);

impl Fast {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

fn fill_chunk(fill: Fill, rng: &mut Fast, buf: &mut Vec<u8>, bytes: usize) {
    buf.clear();
    match fill {
        Fill::Bytes => {
            while buf.len() < bytes {
                buf.extend_from_slice(&rng.next().to_le_bytes());
            }
            buf.truncate(bytes);
        }
        Fill::Scales(exp) => {
            while buf.len() < bytes {
                let r = rng.next();
                for k in 0..8 {
                    buf.push((127 + exp + ((r >> (8 * k)) % 3) as i32 - 1) as u8);
                }
            }
            buf.truncate(bytes);
        }
        Fill::Uniform(_) | Fill::Around(..) => {
            let (centre, spread) = match fill {
                Fill::Around(c, a) => (c, a),
                Fill::Uniform(a) => (0.0, a),
                _ => (0.0, 0.0),
            };
            while buf.len() < bytes {
                let r = rng.next();
                for k in 0..4 {
                    let unit = ((r >> (16 * k)) & 0xffff) as f32 / 32768.0 - 1.0;
                    buf.extend_from_slice(
                        &half::bf16::from_f32(centre + spread * unit).to_le_bytes(),
                    );
                }
            }
            buf.truncate(bytes);
        }
    }
}

fn header_bytes(specs: &[&Spec]) -> Vec<u8> {
    let mut map = serde_json::Map::new();
    map.insert("__metadata__".into(), json!({"format": "pt"}));
    let mut offset = 0u64;
    for s in specs {
        let end = offset + s.bytes();
        map.insert(
            s.name.clone(),
            json!({"dtype": s.dtype, "shape": s.shape, "data_offsets": [offset, end]}),
        );
        offset = end;
    }
    let mut text = Value::Object(map).to_string().into_bytes();
    // Pad so the data starts 8-byte aligned, as the safetensors writers do.
    while !(text.len() + 8).is_multiple_of(8) {
        text.push(b' ');
    }
    text
}

/// Writes `config.json` and random weights for `config_json` (a gpt_oss config) into `out`.
/// `progress(done, total)` is called as bytes are written.
pub fn write_random_checkpoint(
    config_json: &Value,
    out: &Path,
    options: &RandomCheckpointOptions,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<RandomCheckpointSummary> {
    let config_path = out.join("config.json");
    let config = ModelConfig::from_json(&config_json.to_string(), &config_path)?;
    if options.mxfp4_experts
        && (!config.hidden_size.is_multiple_of(32) || !config.intermediate_size.is_multiple_of(32))
    {
        return Err(EngineError::UnsupportedConfig {
            path: config_path,
            key: "hidden_size/intermediate_size".into(),
            value: format!("{}/{}", config.hidden_size, config.intermediate_size),
            reason: "MXFP4 experts need multiples of 32".into(),
        });
    }
    std::fs::create_dir_all(out).map_err(|e| EngineError::io(out, e))?;
    let mut config_value = config_json.clone();
    if !options.mxfp4_experts
        && let Some(obj) = config_value.as_object_mut()
    {
        obj.remove("quantization_config");
    }
    let pretty = serde_json::to_string_pretty(&config_value).map_err(|e| EngineError::Config {
        path: config_path.clone(),
        message: e.to_string(),
    })?;
    std::fs::write(&config_path, pretty + "\n").map_err(|e| EngineError::io(&config_path, e))?;

    let specs = tensor_specs(&config, options.mxfp4_experts);
    // Greedy sharding in tensor order.
    let mut shards: Vec<Vec<&Spec>> = vec![Vec::new()];
    let mut shard_bytes = 0u64;
    for s in &specs {
        if shard_bytes > 0 && shard_bytes + s.bytes() > options.max_shard_bytes {
            shards.push(Vec::new());
            shard_bytes = 0;
        }
        shard_bytes += s.bytes();
        if let Some(last) = shards.last_mut() {
            last.push(s);
        }
    }
    let total: u64 = specs.iter().map(Spec::bytes).sum();
    let n = shards.len();
    let names: Vec<String> = if n == 1 {
        vec!["model.safetensors".into()]
    } else {
        (1..=n)
            .map(|k| format!("model-{k:05}-of-{n:05}.safetensors"))
            .collect()
    };
    let mut rng = Fast(options.seed ^ 0x5eed_0055_a0a0_0001);
    let mut buf = Vec::with_capacity(1 << 20);
    let mut done = 0u64;
    let mut files = Vec::new();
    let mut weight_map = serde_json::Map::new();
    for (shard, name) in shards.iter().zip(&names) {
        let path = out.join(name);
        let file = File::create(&path).map_err(|e| EngineError::io(&path, e))?;
        let mut w = BufWriter::with_capacity(8 << 20, file);
        let header = header_bytes(shard);
        let io = |e| EngineError::io(&path, e);
        w.write_all(&(header.len() as u64).to_le_bytes())
            .map_err(io)?;
        w.write_all(&header).map_err(io)?;
        for spec in shard {
            weight_map.insert(spec.name.clone(), Value::String(name.clone()));
            let mut left = spec.bytes() as usize;
            while left > 0 {
                let chunk = left.min(1 << 20);
                fill_chunk(spec.fill, &mut rng, &mut buf, chunk);
                w.write_all(&buf).map_err(io)?;
                left -= chunk;
                done += chunk as u64;
                progress(done, total);
            }
        }
        w.flush().map_err(io)?;
        files.push(path);
    }
    if n > 1 {
        let index = json!({"metadata": {"total_size": total}, "weight_map": weight_map});
        let path = out.join("model.safetensors.index.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&index).unwrap_or_default(),
        )
        .map_err(|e| EngineError::io(&path, e))?;
        files.push(path);
    }
    Ok(RandomCheckpointSummary {
        files,
        tensors: specs.len(),
        total_bytes: total,
    })
}
