//! ossa-engine: gpt-oss inference in-process: tokenizer, checkpoint loading, forward pass,
//! generation. Knows nothing of harmony or tools.
//!
//! Start with [`Engine`] (load a model directory, [`Engine::generate`] a token stream) and
//! [`Model`] (the forward pass over a [`KvCache`]).

pub mod checkpoint;
pub mod config;
pub mod engine;
pub mod error;
pub mod eval;
#[cfg(feature = "hub")]
pub mod hub;
mod huge_pages;
pub mod kernels;
pub mod kv_cache;
pub mod model;
mod profile;
pub mod prompt_cache;
pub mod random_checkpoint;
pub mod rope;
pub mod sampling;
pub mod tokenizer;

pub use config::ModelConfig;
pub use engine::{
    CacheStats, Engine, FinishReason, GenerateParams, GeneratedToken, Generation, LoadOptions,
    PrefillStats,
};
pub use error::{EngineError, Result};
pub use kernels::isa::Isa;
pub use kv_cache::KvCache;
pub use model::{DType, ForwardTrace, Logits, Model, RoundingSource};
pub use profile::OpProfile;
pub use prompt_cache::{PromptCacheError, PromptCacheOptions, PromptCacheStats};
pub use sampling::{LogitsMask, Sampler, SamplingParams, SharedMask, TokenLogprobs};
pub use tokenizer::{AllowedSpecial, StreamDecoder, Tokenizer, TokenizerError};
/// Cancels a generation (before its next forward step or prefill chunk) and, in the agent, the
/// turn around it; cloning shares it. The one cancellation type of the workspace.
pub use tokio_util::sync::CancellationToken;
