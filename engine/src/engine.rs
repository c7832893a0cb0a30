//! `Engine`: a loaded model, its thread pool and one KV cache, and the streaming generation API
//! the agent consumes. The engine knows token ids only: no chat format, no tools.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::checkpoint::Checkpoint;
use crate::config::ModelConfig;
use crate::error::{EngineError, Result};
use crate::kernels::isa::Isa;
use crate::kv_cache::KvCache;
use crate::model::{DType, ForwardTrace, Logits, Model, RoundingSource};
use crate::prompt_cache::{
    Numerics, PromptCache, PromptCacheError, PromptCacheOptions, PromptCacheStats,
};
use crate::sampling::{Sampler, SamplingParams, SharedMask, TokenLogprobs};
use crate::tokenizer::Tokenizer;

/// How to load a model. The default dtype is f32, the reference's numbers; the CLI picks q8.
#[derive(Debug, Clone, Default)]
pub struct LoadOptions {
    pub dtype: DType,
    /// Compute threads; `None` uses every available core.
    pub threads: Option<usize>,
}

/// What one `generate` call does.
#[derive(Debug, Clone)]
pub struct GenerateParams {
    pub sampling: SamplingParams,
    /// Most tokens to generate (the stop token included).
    pub max_tokens: usize,
    /// Generation ends after emitting any of these.
    pub stop_tokens: Vec<u32>,
    pub cancel: Option<CancellationToken>,
    /// Applied to every step's logits before sampling (structured outputs).
    pub mask: Option<SharedMask>,
    /// Compute each token's log-probability and this many alternatives'
    /// ([`Generation::logprobs`]).
    pub logprobs: Option<usize>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            sampling: SamplingParams::greedy(),
            max_tokens: 256,
            stop_tokens: Vec::new(),
            cancel: None,
            mask: None,
            logprobs: None,
        }
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FinishReason {
    /// Emitted this stop token (it is the last item of the stream).
    Stop(u32),
    MaxTokens,
    Cancelled,
    /// An error was returned by the stream.
    Error,
}

/// One generated token.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GeneratedToken {
    pub token: u32,
    /// 0 for the first generated token.
    pub index: usize,
    /// Time to produce this token (the first one includes the prefill).
    pub elapsed: Duration,
}

/// Prompt processing of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the cache.
    pub reused_tokens: usize,
    /// Of `reused_tokens`, those read from the prompt cache on disk.
    pub disk_tokens: usize,
    /// Prompt tokens run through the model.
    pub computed_tokens: usize,
}

/// Prefill figures of a generation.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrefillStats {
    pub cache: CacheStats,
    pub duration: Duration,
}

/// A loaded model ready to generate.
pub struct Engine {
    model: Model,
    tokenizer: Option<Tokenizer>,
    cache: KvCache,
    pool: rayon::ThreadPool,
    threads: usize,
    last_stats: Option<CacheStats>,
    dir: PathBuf,
    prompt_cache: Option<PromptCache>,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("dir", &self.dir)
            .field("model", &self.model)
            .field("threads", &self.threads)
            .field("cached_tokens", &self.cache.len())
            .finish()
    }
}

/// Prompt tokens per forward call during prefill: bounds activation memory for long prompts
/// and lets cancellation be noticed between chunks.
const PREFILL_CHUNK: usize = 512;

/// Largest difference between tokenizer ids and embedding rows still taken as the same
/// vocabulary (checkpoints pad their embedding tables).
const TOKENIZER_PADDING: usize = 1024;

impl Engine {
    /// Loads `config.json`, the safetensors weights (memory-mapped) and the tokenizer
    /// (`tokenizer.json`, or the built-in o200k_harmony) from a model directory.
    pub fn load(dir: &Path, options: &LoadOptions) -> Result<Engine> {
        let started = Instant::now();
        let config = ModelConfig::from_file(&dir.join("config.json"))?;
        let checkpoint = Checkpoint::open_dir(dir)?;
        let model = Model::load(&config, &checkpoint, options.dtype)?;
        // tokenizer.json when the directory has one, else the built-in o200k_harmony (201089
        // ids for gpt-oss' 201088 embedding rows). A tokenizer whose id count is further than
        // padding from the embedding table belongs to another model (tiny test models).
        let tokenizer =
            Tokenizer::from_model_dir(dir).map_err(|e| EngineError::Tokenizer(e.to_string()))?;
        let tokenizer = if tokenizer.vocab_size().abs_diff(config.vocab_size) <= TOKENIZER_PADDING {
            Some(tokenizer)
        } else {
            tracing::info!(
                tokenizer = tokenizer.vocab_size(),
                model = config.vocab_size,
                "the tokenizer does not match the model's vocabulary: running without text support"
            );
            None
        };
        let threads = options
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1);
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("ossa-engine-{i}"))
            .build()
            .map_err(|e| EngineError::ThreadPool {
                threads,
                message: e.to_string(),
            })?;
        let cache = model.new_cache();
        tracing::info!(
            dir = %dir.display(),
            layers = config.num_hidden_layers,
            mxfp4 = model.has_mxfp4_experts(),
            threads,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "model loaded"
        );
        Ok(Engine {
            model,
            tokenizer,
            cache,
            pool,
            threads,
            last_stats: None,
            dir: dir.into(),
            prompt_cache: None,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        self.model.config()
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The tokenizer; `None` only for models whose vocabulary is not o200k_harmony's size
    /// and that ship no `tokenizer.json` (tiny test models).
    pub fn tokenizer(&self) -> Option<&Tokenizer> {
        self.tokenizer.as_ref()
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs the int8 kernels with `isa` (see [`Model::set_isa`]).
    pub fn set_isa(&mut self, isa: Isa) {
        self.model.set_isa(isa);
        let numerics = self.numerics();
        if let Some(cache) = &mut self.prompt_cache {
            cache.set_numerics(numerics);
        }
    }

    fn numerics(&self) -> Numerics {
        Numerics {
            dtype: match self.model.dtype() {
                DType::F32 => "f32",
                DType::Bf16 => "bf16",
                DType::Q8 => "q8",
            },
            isa: self.model.isa().name(),
        }
    }

    /// Turns the prompt cache on disk on (`Some`) or off. While on, a request first reads the
    /// keys and values of its prompt's longest stored prefix from disk (past what the KV cache
    /// in memory holds), and when it ends its positions not yet on disk are written, so another
    /// process, or this one after a restart, starts without computing them. Files are checked
    /// before use; a bad one costs one warning line and a recomputation, never a wrong result.
    /// Fails if the folder cannot be made private or the model's files cannot be read.
    pub fn set_prompt_cache(
        &mut self,
        options: Option<&PromptCacheOptions>,
    ) -> Result<(), PromptCacheError> {
        self.prompt_cache = match options {
            Some(options) => Some(PromptCache::open(
                options,
                &self.dir,
                self.numerics(),
                self.cache.layer_count(),
                self.cache.stride(),
                self.cache.elem_bytes(),
            )?),
            None => None,
        };
        Ok(())
    }

    /// The prompt cache's folder, when it is on.
    pub fn prompt_cache_dir(&self) -> Option<&Path> {
        self.prompt_cache.as_ref().map(PromptCache::dir)
    }

    /// What the prompt cache on disk has done so far; `None` when it is off.
    pub fn prompt_cache_stats(&self) -> Option<PromptCacheStats> {
        self.prompt_cache.as_ref().map(PromptCache::stats)
    }

    /// Diagnostics: keeps `sources` in f32 (see [`Model::set_exact_sources`]); clears the cache.
    pub fn set_exact_sources(&mut self, sources: &[RoundingSource]) {
        self.model.set_exact_sources(sources);
        self.cache = self.model.new_cache();
    }

    /// Turns per-op timing of forward calls on or off (see [`Model::take_profile`]).
    pub fn set_profiling(&mut self, on: bool) {
        self.model.set_profiling(on);
    }

    pub fn model_dir(&self) -> &Path {
        &self.dir
    }

    /// Prompt processing of the most recent request.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.last_stats
    }

    /// Tokens currently in the KV cache.
    pub fn cached_tokens(&self) -> &[u32] {
        self.cache.tokens()
    }

    /// Bytes held by the KV cache.
    pub fn cache_memory_bytes(&self) -> usize {
        self.cache.memory_bytes()
    }

    pub fn clear_cache(&mut self) {
        self.cache.clear();
    }

    /// Low-level: runs `tokens` after the cached ones on the engine's threads and returns
    /// logits (see [`Model::forward`]).
    pub fn forward(
        &mut self,
        tokens: &[u32],
        logits: Logits,
        trace: Option<&mut ForwardTrace>,
    ) -> Result<Vec<f32>> {
        let (model, cache) = (&self.model, &mut self.cache);
        self.pool
            .install(|| model.forward(tokens, cache, logits, trace))
    }

    /// Starts generating after `prompt`. The cached prefix shared with `prompt` is reused and
    /// the rest of the cache dropped; the prompt is processed on the first `next()` (with the
    /// prompt cache on disk on, first extended by what the disk holds of it). When the stream
    /// ends, the cache holds the prompt and every generated token except the last.
    pub fn generate(&mut self, prompt: &[u32], params: &GenerateParams) -> Result<Generation<'_>> {
        if prompt.is_empty() {
            return Err(EngineError::EmptyPrompt);
        }
        let vocab = self.config().vocab_size;
        if let Some(&bad) = prompt.iter().find(|&&id| id as usize >= vocab) {
            return Err(EngineError::TokenOutOfRange {
                token: bad,
                vocab_size: vocab,
            });
        }
        let max_positions = self.config().max_position_embeddings;
        let sampler = Sampler::new(&params.sampling)?;
        let needed = prompt.len() + params.max_tokens.saturating_sub(1);
        if prompt.len() > max_positions {
            return Err(EngineError::ContextOverflow {
                needed,
                max: max_positions,
            });
        }
        // Reuse the common prefix, but always recompute at least the last prompt token: its
        // logits pick the first generated token.
        let reused = self.cache.common_prefix(prompt).min(prompt.len() - 1);
        self.cache.truncate(reused);
        let stats = CacheStats {
            prompt_tokens: prompt.len(),
            reused_tokens: reused,
            disk_tokens: 0,
            computed_tokens: prompt.len() - reused,
        };
        self.last_stats = Some(stats);
        tracing::debug!(prompt = prompt.len(), reused, "generate");
        Ok(Generation {
            engine: self,
            pending: prompt[reused..].to_vec(),
            prefilled: false,
            sampler,
            params: params.clone(),
            generated: 0,
            finish: None,
            stats,
            prefill: None,
            computed: false,
            logprobs: None,
        })
    }
}

/// A running generation: an iterator of tokens. Borrowing the engine mutably, it is the only
/// user of the KV cache while it lives.
pub struct Generation<'a> {
    engine: &'a mut Engine,
    /// Tokens to feed before the next sample: the prompt suffix, then each emitted token.
    pending: Vec<u32>,
    prefilled: bool,
    sampler: Sampler,
    params: GenerateParams,
    generated: usize,
    finish: Option<FinishReason>,
    stats: CacheStats,
    prefill: Option<PrefillStats>,
    /// Whether a forward call ran (then the prompt cache on disk may lack positions).
    computed: bool,
    /// The last token's log-probabilities, when asked for.
    logprobs: Option<TokenLogprobs>,
}

impl Generation<'_> {
    /// Why the stream ended; `None` while it is still running.
    pub fn finish_reason(&self) -> Option<FinishReason> {
        self.finish
    }

    /// Prefill figures, once the first token has been produced.
    pub fn prefill_stats(&self) -> Option<PrefillStats> {
        self.prefill
    }

    pub fn cache_stats(&self) -> CacheStats {
        self.stats
    }

    /// The log-probabilities of the token the iterator returned last (with
    /// [`GenerateParams::logprobs`]).
    pub fn logprobs(&self) -> Option<&TokenLogprobs> {
        self.logprobs.as_ref()
    }

    /// Number of tokens emitted so far.
    pub fn generated(&self) -> usize {
        self.generated
    }

    fn cancelled(&self) -> bool {
        self.params
            .cancel
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
    }

    /// Before the prefill: the positions of the prompt the disk has beyond those in memory.
    fn read_prompt_cache(&mut self) {
        let engine = &mut *self.engine;
        let Some(disk) = engine.prompt_cache.as_mut() else {
            return;
        };
        let mut prompt = engine.cache.tokens().to_vec();
        prompt.extend_from_slice(&self.pending);
        // The last prompt token is always computed: its logits pick the first token.
        let loaded = disk.load(&prompt, prompt.len() - 1, &mut engine.cache);
        if loaded > 0 {
            self.pending.drain(..loaded);
            self.stats.reused_tokens += loaded;
            self.stats.disk_tokens += loaded;
            self.stats.computed_tokens -= loaded;
            engine.last_stats = Some(self.stats);
        }
    }

    fn step(&mut self) -> Result<Option<u32>> {
        let started = Instant::now();
        if !self.prefilled {
            self.read_prompt_cache();
        }
        let engine = &mut *self.engine;
        let (model, cache, pool) = (&engine.model, &mut engine.cache, &engine.pool);
        let max = model.config().max_position_embeddings;
        if cache.len() + self.pending.len() > max {
            return Err(EngineError::ContextOverflow {
                needed: cache.len() + self.pending.len(),
                max,
            });
        }
        let mut logits = Vec::new();
        let chunks: Vec<Vec<u32>> = self
            .pending
            .chunks(PREFILL_CHUNK)
            .map(<[u32]>::to_vec)
            .collect();
        for chunk in chunks {
            if self
                .params
                .cancel
                .as_ref()
                .is_some_and(CancellationToken::is_cancelled)
            {
                return Ok(None);
            }
            self.computed = true;
            logits = pool.install(|| model.forward(&chunk, cache, Logits::Last, None))?;
        }
        self.pending.clear();
        if !self.prefilled {
            self.prefilled = true;
            self.prefill = Some(PrefillStats {
                cache: self.stats,
                duration: started.elapsed(),
            });
        }
        if let Some(mask) = &self.params.mask {
            mask.mask(&mut logits);
        }
        let token = self.sampler.sample(&logits);
        if let Some(mask) = &self.params.mask {
            mask.commit(token);
        }
        if let Some(top) = self.params.logprobs {
            let temperature = self.params.sampling.temperature;
            self.logprobs = Some(TokenLogprobs::compute(&logits, temperature, token, top));
        }
        Ok(Some(token))
    }
}

impl Drop for Generation<'_> {
    /// Writes what this generation computed to the prompt cache on disk (when it is on). At the
    /// end rather than after the prefill, so the answer's positions, which the next turn's
    /// prompt repeats, go too, and the first token waits for no write.
    fn drop(&mut self) {
        // After a panic in a forward call the cache may be half-written: keep it off disk.
        if self.computed
            && !std::thread::panicking()
            && let Some(disk) = self.engine.prompt_cache.as_mut()
        {
            disk.store(&self.engine.cache);
        }
    }
}

impl Iterator for Generation<'_> {
    type Item = Result<GeneratedToken>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.finish.is_some() {
            return None;
        }
        if self.cancelled() {
            self.finish = Some(FinishReason::Cancelled);
            return None;
        }
        if self.generated >= self.params.max_tokens {
            self.finish = Some(FinishReason::MaxTokens);
            return None;
        }
        let started = Instant::now();
        let token = match self.step() {
            Ok(Some(token)) => token,
            Ok(None) => {
                self.finish = Some(FinishReason::Cancelled);
                return None;
            }
            Err(e) => {
                self.finish = Some(FinishReason::Error);
                return Some(Err(e));
            }
        };
        let index = self.generated;
        self.generated += 1;
        if self.params.stop_tokens.contains(&token) {
            self.finish = Some(FinishReason::Stop(token));
        } else if self.generated >= self.params.max_tokens {
            self.finish = Some(FinishReason::MaxTokens);
        } else {
            self.pending.push(token);
        }
        Some(Ok(GeneratedToken {
            token,
            index,
            elapsed: started.elapsed(),
        }))
    }
}
