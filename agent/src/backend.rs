//! Where tokens come from. The agent loop renders prompts itself and asks a [`Backend`] only for
//! tokens, so the in-process engine and a remote server fit behind the same trait.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ossa_engine::{
    CancellationToken, Engine, EngineError, GenerateParams, SamplingParams, SharedMask,
    TokenLogprobs,
};

/// One generation call.
#[derive(Debug, Clone)]
pub struct GenerationRequest<'a> {
    /// The rendered conversation, ending in `<|start|>assistant`.
    pub prompt: &'a [u32],
    /// Most tokens to sample (the stop token included).
    pub max_tokens: usize,
    /// Sampling ends after any of these.
    pub stop_tokens: &'a [u32],
    pub sampling: SamplingParams,
    /// Checked before every forward step.
    pub cancel: CancellationToken,
    /// Restricts each step's tokens (structured outputs); only backends whose
    /// [`Backend::samples_locally`] is true accept one.
    pub mask: Option<SharedMask>,
    /// Receives each token's log-probabilities just before the token callback sees the token
    /// (backends whose [`Backend::samples_locally`] is true; the others leave it empty).
    pub logprobs: Option<LogprobSink>,
}

/// Where a backend puts the log-probabilities of the token it is about to hand over.
#[derive(Debug, Clone)]
pub struct LogprobSink {
    top: usize,
    last: Arc<Mutex<Option<TokenLogprobs>>>,
}

impl LogprobSink {
    /// Asks for each token's log-probability and its `top` most likely alternatives'.
    pub fn new(top: usize) -> Self {
        Self {
            top,
            last: Arc::default(),
        }
    }

    pub fn top(&self) -> usize {
        self.top
    }

    pub fn put(&self, logprobs: Option<TokenLogprobs>) {
        *self
            .last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = logprobs;
    }

    /// The figures of the token being handed over, once.
    pub fn take(&self) -> Option<TokenLogprobs> {
        self.last
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
    }
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finish {
    /// Sampled this stop token (it was passed to the token callback).
    Stop(u32),
    MaxTokens,
    Cancelled,
}

/// What one generation call did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GenerationStats {
    pub finish: Finish,
    pub prompt_tokens: usize,
    /// Prompt tokens whose keys and values came from the backend's prefix cache.
    pub reused_tokens: usize,
    pub generated_tokens: usize,
    /// Time to the first token (prompt processing).
    pub prefill: Duration,
    /// Time for the tokens after the first.
    pub decode: Duration,
}

impl GenerationStats {
    /// Tokens per second after the first token; `None` with fewer than two tokens.
    pub fn decode_tokens_per_second(&self) -> Option<f64> {
        let seconds = self.decode.as_secs_f64();
        (self.generated_tokens > 1 && seconds > 0.0)
            .then(|| (self.generated_tokens - 1) as f64 / seconds)
    }

    /// Prompt tokens computed (not reused) per second.
    pub fn prefill_tokens_per_second(&self) -> Option<f64> {
        let seconds = self.prefill.as_secs_f64();
        let computed = self.prompt_tokens - self.reused_tokens;
        (computed > 0 && seconds > 0.0).then(|| computed as f64 / seconds)
    }
}

/// An error of the backend (the model failed, the server went away): it ends the turn. Each
/// variant keeps its cause, so callers can tell a prompt too long for the context from a lost
/// connection; the message is `{backend}: {cause}`. The cause is a field rather than
/// [`std::error::Error::source`] because the message already shows it (a printed error chain
/// would repeat it).
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The in-process engine refused the request or failed (e.g.
    /// [`EngineError::ContextOverflow`]).
    #[error("{backend}: {error}")]
    Engine {
        backend: String,
        /// Boxed: the engine's errors are large, and every `Result` carries the largest variant.
        error: Box<EngineError>,
    },
    /// The server could not be reached or answered with an HTTP error (`status`, when it
    /// answered at all).
    #[error("{backend}: {url}: {message}")]
    Http {
        backend: String,
        url: String,
        status: Option<u16>,
        message: String,
    },
    /// The connection broke while the server streamed the completion.
    #[error("{backend}: reading the stream: {error}")]
    Stream {
        backend: String,
        error: std::io::Error,
    },
    /// The server answered, but not as its API promises, or reported an error mid-stream.
    #[error("{backend}: {message}")]
    BadResponse { backend: String, message: String },
    /// The request asks for what this backend cannot do (sampling a remote server's API cannot
    /// express, structured outputs on a remote server).
    #[error("{backend}: {message}")]
    Unsupported { backend: String, message: String },
    /// Any other failure, as text (backends outside this crate, a generation that failed
    /// without a cause).
    #[error("{backend}: {message}")]
    Failed { backend: String, message: String },
}

impl BackendError {
    /// The backend's name ([`Backend::name`]).
    pub fn backend(&self) -> &str {
        match self {
            Self::Engine { backend, .. }
            | Self::Http { backend, .. }
            | Self::Stream { backend, .. }
            | Self::BadResponse { backend, .. }
            | Self::Unsupported { backend, .. }
            | Self::Failed { backend, .. } => backend,
        }
    }

    /// What went wrong, without the backend's name (which a server's clients need not learn).
    pub fn reason(&self) -> String {
        match self {
            Self::Engine { error, .. } => error.to_string(),
            Self::Http { url, message, .. } => format!("{url}: {message}"),
            Self::Stream { error, .. } => format!("reading the stream: {error}"),
            Self::BadResponse { message, .. }
            | Self::Unsupported { message, .. }
            | Self::Failed { message, .. } => message.clone(),
        }
    }
}

/// A source of sampled tokens.
pub trait Backend: Send + Sync {
    /// A short name for messages and status lines (a model directory, a URL).
    fn name(&self) -> String;

    /// Most tokens a prompt and its completion may hold together.
    fn context_length(&self) -> usize;

    /// Samples tokens after `request.prompt`, handing each to `on_token` as it comes. Blocks
    /// until done; the agent runs it on a blocking thread.
    fn generate(
        &self,
        request: &GenerationRequest<'_>,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<GenerationStats, BackendError>;

    /// Whether the backend samples in this process, from logits it holds: then it applies
    /// [`GenerationRequest::mask`] and fills [`GenerationRequest::logprobs`]. A backend that
    /// does not refuses a request with a mask.
    fn samples_locally(&self) -> bool {
        false
    }
}

/// The in-process engine. One generation at a time; its KV cache makes a request that extends
/// the previous one compute only the new tokens.
pub struct EngineBackend {
    engine: Mutex<Engine>,
    name: String,
    context_length: usize,
}

impl EngineBackend {
    pub fn new(engine: Engine) -> Self {
        let name = engine.model_dir().display().to_string();
        let context_length = engine.config().max_position_embeddings;
        Self {
            engine: Mutex::new(engine),
            name,
            context_length,
        }
    }

    /// Holds conversations to `tokens` (when fewer than the model's context): the agent ends a
    /// turn that would go past it, so the KV cache never grows beyond it.
    pub fn with_context_limit(mut self, tokens: usize) -> Self {
        self.context_length = self.context_length.min(tokens);
        self
    }

    /// Runs `f` with the engine (for statistics or to clear its cache).
    pub fn with_engine<T>(&self, f: impl FnOnce(&mut Engine) -> T) -> T {
        let mut engine = self
            .engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut engine)
    }
}

impl Backend for EngineBackend {
    fn name(&self) -> String {
        self.name.clone()
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn samples_locally(&self) -> bool {
        true
    }

    fn generate(
        &self,
        request: &GenerationRequest<'_>,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<GenerationStats, BackendError> {
        let error = |error: EngineError| BackendError::Engine {
            backend: self.name.clone(),
            error: Box::new(error),
        };
        // A panic in an earlier generation leaves the cache consistent (it is truncated on the
        // next request), so a poisoned lock is still usable.
        let mut engine = self
            .engine
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let params = GenerateParams {
            sampling: request.sampling.clone(),
            max_tokens: request.max_tokens,
            stop_tokens: request.stop_tokens.to_vec(),
            cancel: Some(request.cancel.clone()),
            mask: request.mask.clone(),
            logprobs: request.logprobs.as_ref().map(LogprobSink::top),
        };
        let started = Instant::now();
        let mut generation = engine.generate(request.prompt, &params).map_err(error)?;
        let mut first_token_at = None;
        let mut generated = 0;
        while let Some(item) = generation.next() {
            let token = item.map_err(error)?;
            first_token_at.get_or_insert_with(Instant::now);
            generated += 1;
            if let Some(sink) = &request.logprobs {
                sink.put(generation.logprobs().cloned());
            }
            on_token(token.token);
        }
        let finish = match generation.finish_reason() {
            Some(ossa_engine::FinishReason::Stop(token)) => Finish::Stop(token),
            Some(ossa_engine::FinishReason::Cancelled) => Finish::Cancelled,
            Some(ossa_engine::FinishReason::MaxTokens) | None => Finish::MaxTokens,
            Some(ossa_engine::FinishReason::Error) => {
                return Err(BackendError::Failed {
                    backend: self.name.clone(),
                    message: "generation failed".to_string(),
                });
            }
        };
        let cache = generation.cache_stats();
        let now = Instant::now();
        let first = first_token_at.unwrap_or(now);
        Ok(GenerationStats {
            finish,
            prompt_tokens: cache.prompt_tokens,
            reused_tokens: cache.reused_tokens,
            generated_tokens: generated,
            prefill: first - started,
            decode: now - first,
        })
    }
}
