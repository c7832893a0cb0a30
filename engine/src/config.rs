//! `ModelConfig`: the Hugging Face `config.json` of a `gpt_oss` model, with the checks that turn a
//! config the engine cannot run exactly into an error instead of wrong logits.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{EngineError, Result};

/// Attention kind of one decoder layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LayerType {
    /// Sees the last `sliding_window` keys, itself included.
    SlidingAttention,
    /// Sees every earlier key.
    FullAttention,
}

/// RoPE parameters, in either the `rope_scaling` form of the released checkpoints or the
/// `rope_parameters` form of newer transformers (which also carries `rope_theta`).
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RopeScaling {
    /// `"yarn"` for gpt-oss; `"default"` (no scaling) is accepted too.
    #[serde(alias = "type")]
    pub rope_type: String,
    pub rope_theta: Option<f64>,
    pub factor: Option<f64>,
    pub beta_fast: Option<f64>,
    pub beta_slow: Option<f64>,
    pub original_max_position_embeddings: Option<usize>,
    pub truncate: Option<bool>,
    pub attention_factor: Option<f64>,
    pub mscale: Option<f64>,
    pub mscale_all_dim: Option<f64>,
}

/// `quantization_config` of the MXFP4 checkpoints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QuantizationConfig {
    pub quant_method: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub modules_to_not_convert: Vec<String>,
}

/// A token id or a list of them (`eos_token_id` may be either).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TokenIds {
    One(u32),
    Many(Vec<u32>),
}

/// The `gpt_oss` config.json. Unknown keys are ignored; known keys with values the engine
/// cannot honour exactly are rejected by [`ModelConfig::validate`].
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub model_type: String,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub num_key_value_heads: usize,
    #[serde(default = "default_head_dim")]
    pub head_dim: usize,
    pub num_local_experts: usize,
    /// Experts per token (`experts_per_token` in OpenAI's naming, also accepted).
    #[serde(default)]
    pub num_experts_per_tok: usize,
    pub experts_per_token: Option<usize>,
    #[serde(default = "default_sliding_window")]
    pub sliding_window: usize,
    /// One entry per layer; when absent, layers alternate starting with sliding attention.
    pub layer_types: Option<Vec<LayerType>>,
    #[serde(default = "default_rms_norm_eps")]
    pub rms_norm_eps: f64,
    pub rope_theta: Option<f64>,
    pub rope_scaling: Option<RopeScaling>,
    pub rope_parameters: Option<RopeScaling>,
    #[serde(default = "default_max_position_embeddings")]
    pub max_position_embeddings: usize,
    #[serde(default = "default_swiglu_limit")]
    pub swiglu_limit: f64,
    #[serde(default = "default_true")]
    pub attention_bias: bool,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    pub eos_token_id: Option<TokenIds>,
    pub pad_token_id: Option<u32>,
    pub quantization_config: Option<QuantizationConfig>,
}

fn default_head_dim() -> usize {
    64
}
fn default_sliding_window() -> usize {
    128
}
fn default_rms_norm_eps() -> f64 {
    1e-5
}
fn default_max_position_embeddings() -> usize {
    131072
}
fn default_swiglu_limit() -> f64 {
    7.0
}
fn default_true() -> bool {
    true
}

/// The RoPE frequencies the forward pass needs, resolved from either config form.
#[derive(Debug, Clone, PartialEq)]
pub struct RopeSettings {
    pub theta: f64,
    pub yarn: Option<YarnSettings>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct YarnSettings {
    pub factor: f64,
    pub beta_fast: f64,
    pub beta_slow: f64,
    pub original_max_position_embeddings: usize,
    pub truncate: bool,
    /// Multiplies cos and sin (the YaRN "concentration").
    pub attention_factor: f64,
}

impl ModelConfig {
    /// Reads and validates `config.json`.
    pub fn from_file(path: &Path) -> Result<ModelConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| EngineError::io(path, e))?;
        ModelConfig::from_json(&text, path)
    }

    /// Parses and validates config text; `path` only names the source in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<ModelConfig> {
        // Look at model_type first so a config of another architecture gets the clear error,
        // not a complaint about a missing gpt-oss key.
        let raw: serde_json::Value =
            serde_json::from_str(text).map_err(|e| EngineError::Config {
                path: path.into(),
                message: e.to_string(),
            })?;
        match raw.get("model_type").and_then(|v| v.as_str()) {
            Some("gpt_oss") => {}
            Some(other) => {
                return Err(EngineError::UnknownModelType {
                    path: path.into(),
                    found: other.into(),
                });
            }
            None => {
                return Err(EngineError::Config {
                    path: path.into(),
                    message: "model_type is missing".into(),
                });
            }
        }
        let mut config: ModelConfig =
            serde_json::from_value(raw).map_err(|e| EngineError::Config {
                path: path.into(),
                message: e.to_string(),
            })?;
        match (config.num_experts_per_tok, config.experts_per_token) {
            (0, Some(k)) => config.num_experts_per_tok = k,
            (n, Some(k)) if n != k => {
                return Err(EngineError::Config {
                    path: path.into(),
                    message: format!(
                        "num_experts_per_tok ({n}) and experts_per_token ({k}) disagree"
                    ),
                });
            }
            _ => {}
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Attention kind of every layer.
    pub fn layer_types(&self) -> Vec<LayerType> {
        match &self.layer_types {
            Some(types) => types.clone(),
            None => (0..self.num_hidden_layers)
                .map(|i| {
                    if i % 2 == 0 {
                        LayerType::SlidingAttention
                    } else {
                        LayerType::FullAttention
                    }
                })
                .collect(),
        }
    }

    /// End-of-sequence ids named by the config.
    pub fn eos_token_ids(&self) -> Vec<u32> {
        match &self.eos_token_id {
            Some(TokenIds::One(id)) => vec![*id],
            Some(TokenIds::Many(ids)) => ids.clone(),
            None => Vec::new(),
        }
    }

    /// Resolved RoPE settings (validated by [`ModelConfig::validate`]).
    pub fn rope(&self) -> RopeSettings {
        let params = self.rope_parameters.as_ref().or(self.rope_scaling.as_ref());
        let theta = params
            .and_then(|p| p.rope_theta)
            .or(self.rope_theta)
            .unwrap_or(150000.0);
        let yarn = params.filter(|p| p.rope_type == "yarn").map(|p| {
            let original = p
                .original_max_position_embeddings
                .unwrap_or(self.max_position_embeddings);
            let factor = p
                .factor
                .unwrap_or(self.max_position_embeddings as f64 / original as f64);
            let attention_factor = match (p.attention_factor, p.mscale, p.mscale_all_dim) {
                (Some(a), _, _) => a,
                (None, Some(m), Some(all)) if m != 0.0 && all != 0.0 => {
                    yarn_mscale(factor, m) / yarn_mscale(factor, all)
                }
                _ => yarn_mscale(factor, 1.0),
            };
            YarnSettings {
                factor,
                beta_fast: p.beta_fast.unwrap_or(32.0),
                beta_slow: p.beta_slow.unwrap_or(1.0),
                original_max_position_embeddings: original,
                truncate: p.truncate.unwrap_or(true),
                attention_factor,
            }
        });
        RopeSettings { theta, yarn }
    }

    fn validate(&self, path: &Path) -> Result<()> {
        let unsupported = |key: &str, value: String, reason: &str| EngineError::UnsupportedConfig {
            path: path.into(),
            key: key.into(),
            value,
            reason: reason.into(),
        };
        for (key, value) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("num_key_value_heads", self.num_key_value_heads),
            ("head_dim", self.head_dim),
            ("num_local_experts", self.num_local_experts),
            ("num_experts_per_tok", self.num_experts_per_tok),
            ("sliding_window", self.sliding_window),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if value == 0 {
                return Err(unsupported(key, "0".into(), "must be positive"));
            }
        }
        if self.vocab_size > u32::MAX as usize {
            return Err(unsupported(
                "vocab_size",
                self.vocab_size.to_string(),
                "too large",
            ));
        }
        if !self
            .num_attention_heads
            .is_multiple_of(self.num_key_value_heads)
        {
            return Err(unsupported(
                "num_key_value_heads",
                self.num_key_value_heads.to_string(),
                "must divide num_attention_heads",
            ));
        }
        if !self.head_dim.is_multiple_of(2) {
            return Err(unsupported(
                "head_dim",
                self.head_dim.to_string(),
                "RoPE needs an even head_dim",
            ));
        }
        if self.num_experts_per_tok > self.num_local_experts {
            return Err(unsupported(
                "num_experts_per_tok",
                self.num_experts_per_tok.to_string(),
                "more than num_local_experts",
            ));
        }
        if let Some(types) = &self.layer_types
            && types.len() != self.num_hidden_layers
        {
            return Err(unsupported(
                "layer_types",
                format!("{} entries", types.len()),
                "must have one entry per layer (num_hidden_layers)",
            ));
        }
        if !(self.rms_norm_eps.is_finite() && self.rms_norm_eps >= 0.0) {
            return Err(unsupported(
                "rms_norm_eps",
                self.rms_norm_eps.to_string(),
                "must be >= 0",
            ));
        }
        if !(self.swiglu_limit.is_finite() && self.swiglu_limit > 0.0) {
            return Err(unsupported(
                "swiglu_limit",
                self.swiglu_limit.to_string(),
                "must be > 0",
            ));
        }
        if let Some(q) = &self.quantization_config
            && q.quant_method != "mxfp4"
        {
            return Err(unsupported(
                "quantization_config.quant_method",
                q.quant_method.clone(),
                "only mxfp4 (the released format) is supported",
            ));
        }
        let (key, params) = match (&self.rope_parameters, &self.rope_scaling) {
            (Some(p), _) => ("rope_parameters", Some(p)),
            (None, Some(p)) => ("rope_scaling", Some(p)),
            (None, None) => ("rope_scaling", None),
        };
        if let Some(p) = params {
            match p.rope_type.as_str() {
                "yarn" | "default" => {}
                other => {
                    return Err(unsupported(
                        &format!("{key}.rope_type"),
                        other.into(),
                        "only yarn (gpt-oss) and default RoPE are implemented",
                    ));
                }
            }
            for (name, value) in [
                ("factor", p.factor),
                ("beta_fast", p.beta_fast),
                ("beta_slow", p.beta_slow),
            ] {
                if let Some(v) = value
                    && !(v.is_finite() && v > 0.0)
                {
                    return Err(unsupported(
                        &format!("{key}.{name}"),
                        v.to_string(),
                        "must be > 0",
                    ));
                }
            }
            if p.original_max_position_embeddings == Some(0) {
                return Err(unsupported(
                    &format!("{key}.original_max_position_embeddings"),
                    "0".into(),
                    "must be positive",
                ));
            }
        }
        let theta = self.rope();
        if !(theta.theta.is_finite() && theta.theta > 1.0) {
            return Err(unsupported(
                "rope_theta",
                theta.theta.to_string(),
                "must be > 1",
            ));
        }
        Ok(())
    }
}

/// YaRN's attention scaling as transformers' `get_mscale`.
fn yarn_mscale(scale: f64, mscale: f64) -> f64 {
    if scale <= 1.0 {
        1.0
    } else {
        0.1 * mscale * scale.ln() + 1.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"{"model_type":"gpt_oss","vocab_size":1100,"hidden_size":128,
        "intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":4,
        "num_key_value_heads":2,"head_dim":64,"num_local_experts":8,"experts_per_token":2,
        "sliding_window":8"#;

    fn parse(extra: &str) -> Result<ModelConfig> {
        ModelConfig::from_json(&format!("{BASE}{extra}}}"), Path::new("config.json"))
    }

    #[test]
    fn legacy_and_new_rope_forms_agree() {
        let legacy = parse(
            r#","rope_theta":150000,"rope_scaling":{"rope_type":"yarn","factor":32.0,
            "beta_fast":32.0,"beta_slow":1.0,"original_max_position_embeddings":4096,"truncate":false}"#,
        )
        .unwrap();
        let new = parse(
            r#","rope_parameters":{"rope_type":"yarn","rope_theta":150000,"factor":32.0,
            "beta_fast":32.0,"beta_slow":1.0,"original_max_position_embeddings":4096,"truncate":false}"#,
        )
        .unwrap();
        assert_eq!(legacy.rope(), new.rope());
        let yarn = legacy.rope().yarn.unwrap();
        assert!((yarn.attention_factor - (0.1 * 32f64.ln() + 1.0)).abs() < 1e-12);
        assert!(!yarn.truncate);
        assert_eq!(legacy.num_experts_per_tok, 2);
    }

    /// Absent optional keys stay out of the written config (not `null`), present ones are
    /// written in field order: the JSON a checkpoint's config.json round-trips through.
    #[test]
    fn serializes_only_the_optional_keys_that_are_set() {
        let bare = parse("").unwrap();
        assert_eq!(
            serde_json::to_string(&bare).unwrap(),
            r#"{"model_type":"gpt_oss","vocab_size":1100,"hidden_size":128,"intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":64,"num_local_experts":8,"num_experts_per_tok":2,"experts_per_token":2,"sliding_window":8,"rms_norm_eps":0.00001,"max_position_embeddings":131072,"swiglu_limit":7.0,"attention_bias":true,"tie_word_embeddings":false}"#
        );
        let rope = r#"{"rope_type":"yarn","rope_theta":150000.0,"factor":32.0,"beta_fast":32.0,"beta_slow":1.0,"original_max_position_embeddings":4096,"truncate":false,"attention_factor":1.0,"mscale":1.0,"mscale_all_dim":1.0}"#;
        let full = parse(&format!(
            r#","layer_types":["sliding_attention","full_attention","sliding_attention","full_attention"],"rope_theta":150000.0,"rope_scaling":{rope},"rope_parameters":{rope},"eos_token_id":[200002,199999],"pad_token_id":199999,"quantization_config":{{"quant_method":"mxfp4"}}"#
        ))
        .unwrap();
        assert_eq!(
            serde_json::to_string(&full).unwrap(),
            format!(
                r#"{{"model_type":"gpt_oss","vocab_size":1100,"hidden_size":128,"intermediate_size":128,"num_hidden_layers":4,"num_attention_heads":4,"num_key_value_heads":2,"head_dim":64,"num_local_experts":8,"num_experts_per_tok":2,"experts_per_token":2,"sliding_window":8,"layer_types":["sliding_attention","full_attention","sliding_attention","full_attention"],"rms_norm_eps":0.00001,"rope_theta":150000.0,"rope_scaling":{rope},"rope_parameters":{rope},"max_position_embeddings":131072,"swiglu_limit":7.0,"attention_bias":true,"tie_word_embeddings":false,"eos_token_id":[200002,199999],"pad_token_id":199999,"quantization_config":{{"quant_method":"mxfp4"}}}}"#
            )
        );
    }

    #[test]
    fn default_layer_types_alternate_from_sliding() {
        let c = parse("").unwrap();
        assert_eq!(
            c.layer_types(),
            vec![
                LayerType::SlidingAttention,
                LayerType::FullAttention,
                LayerType::SlidingAttention,
                LayerType::FullAttention
            ]
        );
    }

    #[test]
    fn rejects_unsupported_values() {
        let err = parse(r#","rope_scaling":{"rope_type":"longrope","factor":4.0}"#).unwrap_err();
        assert!(err.to_string().contains("rope_scaling.rope_type"), "{err}");
        let err = parse(r#","quantization_config":{"quant_method":"gptq"}"#).unwrap_err();
        assert!(err.to_string().contains("gptq"), "{err}");
        let err = parse(r#","layer_types":["full_attention"]"#).unwrap_err();
        assert!(err.to_string().contains("layer_types"), "{err}");
        let err = parse(r#","layer_types":["full_attention","x","y","z"]"#).unwrap_err();
        assert!(err.to_string().contains("config.json"), "{err}");
        let err =
            ModelConfig::from_json(r#"{"model_type":"llama"}"#, Path::new("c.json")).unwrap_err();
        assert!(matches!(err, EngineError::UnknownModelType { .. }), "{err}");
    }
}
