//! A [`Backend`] on a remote inference server. The agent renders harmony itself and the server
//! only samples: the prompt goes out as token ids and the sampled ids come back, so a
//! conversation is the same as on the in-process engine. Servers differ in how they return ids,
//! which stop tokens they honour, where they state their context and which sampling fields they
//! take, so each dialect ([`RemoteKind`]) is driven on its own terms:
//!
//! | | vLLM, `ossa serve` | llama.cpp `llama-server` | generic |
//! | --- | --- | --- | --- |
//! | endpoint | `/v1/completions` | native `/completion` | `/v1/completions` |
//! | ids back | `return_token_ids` | `tokens` of each streamed chunk | the text, re-tokenized |
//! | stops | `stop_token_ids` | its end-of-generation tokens (`<\|return\|>`, `<\|call\|>`), others cut here | `stop_token_ids`, or read from the text |
//! | context | `max_model_len` | the slot's `n_ctx` | `max_model_len`, else [`DEFAULT_CONTEXT_LENGTH`] |
//!
//! What [`RemoteBackend::connect`] checks, so a server that cannot be driven exactly is refused
//! at start with what to change: llama-server tokenizes harmony text as gpt-oss does
//! (`/tokenize`) and streams token ids (a one-token generation); a generic server keeps
//! harmony's special tokens in its text (a one-token generation biased to `<|call|>`).

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use ossa_engine::tokenizer::{AllowedSpecial, Tokenizer};
use ossa_engine::{CancellationToken, SamplingParams};
use serde_json::{Value, json};

use crate::{Backend, BackendError, Finish, GenerationRequest, GenerationStats};

/// The context assumed when the server does not say: gpt-oss's.
pub const DEFAULT_CONTEXT_LENGTH: usize = 131_072;

/// The least room a turn needs after the conversation's start (system message, instructions,
/// tool descriptions): a user message, reasoning, a tool call and its output, an answer.
/// A server with less is refused at start rather than stopping the first turn at its limit.
pub const MIN_TURN_TOKENS: usize = 1024;

/// Harmony text whose tokens show whether a server's vocabulary is gpt-oss's: every special
/// token the agent reads, and ordinary text around them.
const VOCABULARY_PROBE: &str = "<|start|>assistant<|channel|>analysis<|message|>Sum 1..22.<|end|>\
<|start|>assistant to=python<|channel|>commentary <|constrain|>json<|message|>print(1)<|call|>\
<|start|>assistant<|channel|>final<|message|>Done.<|return|>";

/// The server dialects the backend speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemoteKind {
    /// vLLM (token ids from 0.10.2 on) or `ossa serve`.
    Vllm,
    /// llama.cpp's `llama-server`.
    LlamaServer,
    /// Any other OpenAI-style Completions API: its text is re-tokenized, so it must keep
    /// harmony's special tokens in it.
    Generic,
}

impl RemoteKind {
    /// The names `--remote-kind` takes.
    pub const NAMES: [&'static str; 3] = ["vllm", "llama-server", "generic"];

    pub fn parse(name: &str) -> Option<RemoteKind> {
        match name {
            "vllm" => Some(RemoteKind::Vllm),
            "llama-server" => Some(RemoteKind::LlamaServer),
            "generic" => Some(RemoteKind::Generic),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            RemoteKind::Vllm => "vllm",
            RemoteKind::LlamaServer => "llama-server",
            RemoteKind::Generic => "generic",
        }
    }
}

impl std::fmt::Display for RemoteKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why the remote backend could not be set up, or cannot sample as asked.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("`{0}` is not an http:// or https:// URL")]
    Url(String),
    #[error("{url}: {message}")]
    Http {
        url: String,
        /// The HTTP status, when the server answered at all.
        status: Option<u16>,
        message: String,
    },
    #[error("{url}: the server serves no model named `{model}` (it serves: {served})")]
    UnknownModel {
        url: String,
        model: String,
        served: String,
    },
    /// The server answers but cannot run gpt-oss exactly as it is set up; `fix` says what to
    /// change.
    #[error("{url} ({kind}): {problem}. {fix}")]
    Unfit {
        url: String,
        kind: RemoteKind,
        problem: String,
        fix: String,
    },
    /// A sampling setting the server's API cannot express.
    #[error("{kind} cannot sample as asked: {message}")]
    Sampling { kind: RemoteKind, message: String },
}

impl RemoteError {
    /// Whether the server could not be reached or asked (a wrong URL, model or key), rather
    /// than found unfit: an unfit server's error says what to change.
    pub fn is_connection(&self) -> bool {
        matches!(
            self,
            RemoteError::Url(_) | RemoteError::Http { .. } | RemoteError::UnknownModel { .. }
        )
    }
}

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// The API's base URL, e.g. `http://host:8000/v1`.
    pub url: String,
    /// The model name the server knows; `None`: the first it lists.
    pub model: Option<String>,
    /// The dialect; `None`: detected from `/v1/models` (and llama-server's `/props`).
    pub kind: Option<RemoteKind>,
    /// `None`: what the server says, else [`DEFAULT_CONTEXT_LENGTH`].
    pub context_length: Option<usize>,
    /// Sent as `Authorization: Bearer ...` (`OPENAI_API_KEY`, vLLM's and llama-server's
    /// `--api-key`).
    pub api_key: Option<String>,
    /// Longest wait for the server to start answering (the queue, prompt processing).
    pub timeout: Duration,
}

impl RemoteOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            model: None,
            kind: None,
            context_length: None,
            api_key: std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            timeout: Duration::from_secs(600),
        }
    }
}

/// A server's completion API as a source of tokens.
pub struct RemoteBackend {
    /// The OpenAI API's base (`.../v1`).
    base: String,
    /// The server's root (`base` without `/v1`), where llama-server's own endpoints are.
    root: String,
    kind: RemoteKind,
    model: String,
    context_length: usize,
    http: Http,
    tokenizer: Tokenizer,
    /// Tokens whose bytes are not UTF-8 on their own, by their bytes: what llama-server leaves
    /// out of its stream (built on first need).
    partial_tokens: OnceLock<HashMap<Vec<u8>, u32>>,
}

impl std::fmt::Debug for RemoteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBackend")
            .field("base", &self.base)
            .field("kind", &self.kind)
            .field("model", &self.model)
            .field("context_length", &self.context_length)
            .finish_non_exhaustive()
    }
}

/// The HTTP client and the key it sends.
struct Http {
    agent: ureq::Agent,
    api_key: Option<String>,
}

impl Http {
    fn get(&self, url: &str) -> Result<Value, RemoteError> {
        let mut request = self.agent.get(url);
        if let Some(key) = &self.api_key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        Self::json(url, request.call().map_err(|e| http_error(url, e))?)
    }

    fn post(&self, url: &str, body: Value) -> Result<Value, RemoteError> {
        Self::json(url, self.send(url, body)?)
    }

    fn send(&self, url: &str, body: Value) -> Result<ureq::Response, RemoteError> {
        let mut request = self.agent.post(url);
        if let Some(key) = &self.api_key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        request.send_json(body).map_err(|e| http_error(url, e))
    }

    fn json(url: &str, response: ureq::Response) -> Result<Value, RemoteError> {
        response.into_json().map_err(|e| RemoteError::Http {
            url: url.to_string(),
            status: None,
            message: format!("the answer is not JSON: {e}"),
        })
    }
}

impl RemoteBackend {
    /// Connects: asks the server for its models (`GET /models`) to check the model name, tell
    /// the dialect and learn the context length, then checks that the server can be driven
    /// exactly (see the module's documentation). `tokenizer` is gpt-oss's.
    pub fn connect(options: &RemoteOptions, tokenizer: Tokenizer) -> Result<Self, RemoteError> {
        let base = options.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RemoteError::Url(options.url.clone()));
        }
        let root = base.strip_suffix("/v1").unwrap_or(&base).to_string();
        let http = Http {
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(30))
                .timeout_read(options.timeout)
                .build(),
            api_key: options.api_key.clone(),
        };
        let url = format!("{base}/models");
        let models = http.get(&url)?;
        let served: Vec<&Value> = models
            .get("data")
            .and_then(Value::as_array)
            .map(|d| d.iter().collect())
            .unwrap_or_default();
        let name_of = |m: &Value| m.get("id").and_then(Value::as_str).map(str::to_string);
        let entry = match &options.model {
            Some(model) => served
                .iter()
                .find(|m| name_of(m).as_deref() == Some(model.as_str()))
                .copied()
                .ok_or_else(|| RemoteError::UnknownModel {
                    url: url.clone(),
                    model: model.clone(),
                    served: served
                        .iter()
                        .filter_map(|m| name_of(m))
                        .collect::<Vec<_>>()
                        .join(", "),
                })?,
            None => served.first().copied().ok_or_else(|| RemoteError::Http {
                url: url.clone(),
                status: None,
                message: "the server lists no models".into(),
            })?,
        };
        let model = name_of(entry).ok_or_else(|| RemoteError::Http {
            url: url.clone(),
            status: None,
            message: "a listed model has no `id`".into(),
        })?;
        let kind = match options.kind {
            Some(kind) => kind,
            None => detect(&http, &root, entry),
        };
        let mut backend = Self {
            base,
            root,
            kind,
            model,
            context_length: DEFAULT_CONTEXT_LENGTH,
            http,
            tokenizer,
            partial_tokens: OnceLock::new(),
        };
        let served_context = match kind {
            RemoteKind::LlamaServer => backend.check_llama_server(entry)?,
            RemoteKind::Vllm => count(entry.get("max_model_len")),
            RemoteKind::Generic => {
                backend.check_generic()?;
                count(entry.get("max_model_len"))
            }
        };
        backend.context_length = match options.context_length.or(served_context) {
            Some(n) => n,
            None => {
                tracing::warn!(
                    url = %backend.base,
                    "the server does not say its context length; assuming {DEFAULT_CONTEXT_LENGTH} tokens"
                );
                DEFAULT_CONTEXT_LENGTH
            }
        };
        tracing::info!(
            base = %backend.base,
            kind = %backend.kind,
            model = %backend.model,
            context_length = backend.context_length,
            "remote backend ready"
        );
        Ok(backend)
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    pub fn kind(&self) -> RemoteKind {
        self.kind
    }

    /// Refuses sampling settings the server's API cannot express (rather than sampling
    /// something else): llama-server's seeds are 32-bit, a generic server has no top-k.
    pub fn check_sampling(&self, sampling: &SamplingParams) -> Result<(), RemoteError> {
        let refuse = |message: String| {
            Err(RemoteError::Sampling {
                kind: self.kind,
                message,
            })
        };
        match self.kind {
            // u32::MAX is llama.cpp's "pick a random seed".
            RemoteKind::LlamaServer => match sampling.seed {
                Some(seed) if seed >= u64::from(u32::MAX) => refuse(format!(
                    "its seeds are 32-bit (0 to {}); {seed} is not one",
                    u32::MAX - 1
                )),
                _ => Ok(()),
            },
            RemoteKind::Generic if sampling.top_k > 0 => refuse(format!(
                "the OpenAI Completions API has no top-k (asked: {}); drive vLLM or \
                 llama-server with --remote-kind, or leave top-k off",
                sampling.top_k
            )),
            _ => Ok(()),
        }
    }

    /// Refuses a server whose context cannot hold the conversation's start (`start_tokens`:
    /// system message, instructions, tool descriptions) and [`MIN_TURN_TOKENS`] more, saying
    /// how to start it with more.
    pub fn check_context(&self, start_tokens: usize) -> Result<(), RemoteError> {
        let needed = start_tokens + MIN_TURN_TOKENS;
        if self.context_length >= needed {
            return Ok(());
        }
        let fix = match self.kind {
            RemoteKind::LlamaServer => format!(
                "Start llama-server with more context per slot, e.g. `-c {}` and `-np 1` (with \
                 `-np N` each of the N slots gets 1/N of `-c`).",
                needed.next_power_of_two()
            ),
            RemoteKind::Vllm => format!("Start vLLM with `--max-model-len {needed}` or more."),
            RemoteKind::Generic => format!("Give the server a context of {needed} tokens or more."),
        };
        Err(self.unfit(
            format!(
                "its context holds {} tokens; the conversation's start (system message, \
                 instructions, tool descriptions) takes {start_tokens} and a turn needs at \
                 least {MIN_TURN_TOKENS} more",
                self.context_length
            ),
            fix,
        ))
    }

    fn unfit(&self, problem: impl Into<String>, fix: impl Into<String>) -> RemoteError {
        RemoteError::Unfit {
            url: self.base.clone(),
            kind: self.kind,
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// A probe generation's pieces: the id of `special` (the token it must end with) and
    /// `text` tokenized.
    fn probe(&self, special: &str, text: &str) -> Result<(u32, Vec<u32>), RemoteError> {
        let id = self.tokenizer.token_id(special).ok_or_else(|| {
            self.unfit(
                format!("the tokenizer has no `{special}`"),
                "Use gpt-oss's tokenizer.",
            )
        })?;
        let prompt = self
            .tokenizer
            .encode(text, AllowedSpecial::All)
            .map_err(|e| self.unfit(format!("tokenizing the probe: {e}"), ""))?;
        Ok((id, prompt))
    }

    /// llama-server: its vocabulary must be gpt-oss's (`/tokenize`) and its stream must carry
    /// token ids (a one-token generation). Returns the slot's context (`n_ctx` of
    /// `/v1/models`' `meta`, else of `/props`).
    fn check_llama_server(&self, entry: &Value) -> Result<Option<usize>, RemoteError> {
        let url = format!("{}/tokenize", self.root);
        let answer = self.http.post(
            &url,
            json!({"content": VOCABULARY_PROBE, "add_special": false, "parse_special": true}),
        )?;
        let got: Vec<u64> = answer
            .get("tokens")
            .and_then(Value::as_array)
            .map(|ids| ids.iter().filter_map(Value::as_u64).collect())
            .unwrap_or_default();
        let want = self
            .tokenizer
            .encode(VOCABULARY_PROBE, AllowedSpecial::All)
            .map_err(|e| self.unfit(format!("tokenizing the probe: {e}"), ""))?;
        if got != want.iter().map(|&id| u64::from(id)).collect::<Vec<_>>() {
            return Err(self.unfit(
                format!(
                    "its model does not tokenize harmony text as gpt-oss does (`/tokenize` of \
                     {VOCABULARY_PROBE:?} gives {got:?}, gpt-oss's o200k_harmony gives {want:?})"
                ),
                "Serve a gpt-oss GGUF (e.g. ggml-org/gpt-oss-20b-GGUF).",
            ));
        }
        // Ids come back one per streamed chunk, and `<|return|>` ends a generation: a
        // one-token generation biased to it shows both (a server too old to stream ids
        // cannot be driven exactly).
        let (return_, prompt) = self.probe(
            "<|return|>",
            "<|start|>assistant<|channel|>final<|message|>",
        )?;
        let request = GenerationRequest {
            prompt: &prompt,
            max_tokens: 1,
            stop_tokens: &[return_],
            sampling: SamplingParams::default(),
            cancel: CancellationToken::new(),
            mask: None,
            logprobs: None,
        };
        let mut body = self.llama_server_body(&request);
        body["logit_bias"] = json!([[return_, 100.0]]);
        let mut ids = Vec::new();
        let stats = self
            .stream_llama_server(body, &request, &mut |id| ids.push(id))
            .map_err(|e| {
                self.unfit(
                    format!("a one-token test generation failed: {}", e.reason()),
                    "Use a llama.cpp whose /completion streams `tokens` (ossa is tested with \
                     ggml-org/llama.cpp@0c1e570).",
                )
            })?;
        if ids != [return_] || stats.finish != Finish::Stop(return_) {
            return Err(self.unfit(
                format!(
                    "a one-token test generation biased to `<|return|>` gave ids {ids:?} and \
                     ended with {:?}",
                    stats.finish
                ),
                "Use a llama.cpp whose /completion streams `tokens` (ossa is tested with \
                 ggml-org/llama.cpp@0c1e570).",
            ));
        }
        let n_ctx = match count(entry.pointer("/meta/n_ctx")) {
            Some(n) => Some(n),
            None => {
                let props = self.http.get(&format!("{}/props", self.root))?;
                count(props.pointer("/default_generation_settings/n_ctx"))
            }
        };
        Ok(n_ctx)
    }

    /// A generic server: its text must keep harmony's special tokens, or the agent cannot
    /// tell the model's messages apart. One generation biased to `<|call|>` shows it.
    fn check_generic(&self) -> Result<(), RemoteError> {
        let (call, prompt) = self.probe(
            "<|call|>",
            "<|start|>assistant<|channel|>commentary to=functions.probe<|message|>{}",
        )?;
        let url = format!("{}/completions", self.base);
        let answer = self.http.post(
            &url,
            json!({
                "model": self.model,
                "prompt": prompt,
                "max_tokens": 1,
                "temperature": 0,
                "logit_bias": {call.to_string(): 100},
                "stop_token_ids": [call],
                "skip_special_tokens": false,
                "include_stop_str_in_output": true,
            }),
        )?;
        let text = answer
            .pointer("/choices/0/text")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if text.contains("<|call|>") || answer.pointer("/choices/0/token_ids").is_some() {
            return Ok(());
        }
        if text.is_empty() {
            return Err(self.unfit(
                "its completions leave out harmony's special tokens (asked to sample \
                 `<|call|>`, it returned no text), so the model's messages cannot be told apart",
                "Drive llama-server with --remote-kind llama-server (token ids) or start it with \
                 --special; other servers must honour `skip_special_tokens: false`.",
            ));
        }
        tracing::warn!(
            url = %self.base,
            "could not check that the server keeps special tokens in its text (it did not \
             honour logit_bias and sampled {text:?})"
        );
        Ok(())
    }

    /// vLLM's and the generic dialect's `/v1/completions`.
    fn generate_openai(
        &self,
        request: &GenerationRequest<'_>,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<GenerationStats, BackendError> {
        let url = format!("{}/completions", self.base);
        let error = |message: String| self.bad_response(message);
        let sampling = &request.sampling;
        let mut body = json!({
            "model": self.model,
            "prompt": request.prompt,
            "max_tokens": request.max_tokens,
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            // Neutral, so no server default (a generation_config's) changes the distribution.
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "stop_token_ids": request.stop_tokens,
            "stream": true,
            "stream_options": {"include_usage": true},
            "skip_special_tokens": false,
            "include_stop_str_in_output": true,
        });
        if let Some(seed) = sampling.seed {
            // Servers take signed 64-bit seeds.
            body["seed"] = json!(seed as i64);
        }
        if self.kind == RemoteKind::Vllm {
            body["return_token_ids"] = json!(true);
            // -1 is "off" in every vLLM (0 only in recent ones).
            body["top_k"] = json!(if sampling.top_k > 0 {
                sampling.top_k as i64
            } else {
                -1
            });
            body["min_p"] = json!(0.0);
            body["repetition_penalty"] = json!(1.0);
            // Harmony's stop tokens are the only stops; vLLM's EOS list (the model's
            // generation_config) holds `<|endoftext|>` too. vLLM still stops on
            // `stop_token_ids`; llama-server would not (this is why the generic dialect
            // never sends it).
            body["ignore_eos"] = json!(true);
        }
        let started = Instant::now();
        let response = self.http.send(&url, body).map_err(|e| self.http_error(e))?;
        let mut tally = Tally::new(started, on_token);
        let mut text = String::new();
        let mut finish_reason: Option<String> = None;
        let mut stop_reason = Value::Null;
        let mut reused = 0usize;
        let mut server_count = None;
        let mut timings = None;
        let cancelled = read_events(response, &request.cancel, |chunk| {
            if let Some(cached) = count(chunk.pointer("/usage/prompt_tokens_details/cached_tokens"))
            {
                reused = cached;
            }
            if let Some(n) = count(chunk.pointer("/usage/completion_tokens")) {
                server_count = Some(n);
            }
            if let Some(t) = chunk.get("timings") {
                timings = ServerTimings::read(t);
            }
            let Some(choice) = chunk.pointer("/choices/0") else {
                return Ok(Flow::More);
            };
            match choice.get("token_ids").and_then(Value::as_array) {
                Some(ids) => {
                    for id in ids {
                        tally.emit(token_id(id)?);
                    }
                }
                None => {
                    if let Some(piece) = choice.get("text").and_then(Value::as_str)
                        && !piece.is_empty()
                    {
                        tally.arrived();
                        text.push_str(piece);
                    }
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                finish_reason = Some(reason.to_string());
                stop_reason = choice.get("stop_reason").cloned().unwrap_or(Value::Null);
            }
            Ok(Flow::More)
        })
        .map_err(|e| self.stream_error(e))?;
        if !text.is_empty() {
            // The server sent text, not ids: its special tokens are kept, so this re-tokenizes
            // to the ids the model sampled (up to how ordinary text splits into tokens).
            let ids = self
                .tokenizer
                .encode(&text, AllowedSpecial::All)
                .map_err(|e| error(format!("re-tokenizing the completion: {e}")))?;
            if finish_reason.as_deref() == Some("stop")
                && !ids.iter().any(|&id| self.tokenizer.is_special(id))
            {
                return Err(error(
                    "the server's text carries none of harmony's special tokens, so the \
                     model's messages cannot be told apart (it must honour \
                     `skip_special_tokens: false`; llama-server: use --remote-kind llama-server \
                     or start it with --special)"
                        .to_string(),
                ));
            }
            for id in ids {
                tally.emit_late(id);
            }
        } else {
            // The server counted what it sampled; the ids are what was handed on.
            server_count = None;
        }
        let finish = if cancelled {
            Finish::Cancelled
        } else {
            match finish_reason.as_deref() {
                Some("length") => Finish::MaxTokens,
                Some("abort") => Finish::Cancelled,
                Some(_) => self.stop_finish(request.stop_tokens, &stop_reason, &mut tally),
                None => {
                    return Err(error(
                        "the stream ended without a finish reason".to_string(),
                    ));
                }
            }
        };
        let mut stats = tally.stats(finish, request.prompt.len(), reused, timings);
        if let Some(n) = server_count {
            stats.generated_tokens = n;
        }
        Ok(stats)
    }

    /// The stop a server reported (`finish_reason: "stop"`): the last id when it is a stop
    /// token (or another special token the server stopped on), else the token `stop_reason`
    /// names, else (a server that leaves the stop token out of its text) the one harmony
    /// implies: `<|call|>` ends a message to a recipient, `<|return|>` an answer. A token
    /// found that way is handed on, as the parser needs it.
    fn stop_finish(&self, stops: &[u32], stop_reason: &Value, tally: &mut Tally<'_>) -> Finish {
        if let Some(&last) = tally.ids.last()
            && (stops.contains(&last) || self.tokenizer.is_special(last))
        {
            return Finish::Stop(last);
        }
        let named = stop_reason
            .as_u64()
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| stops.contains(t));
        let implied = || {
            let call = self.tokenizer.token_id("<|call|>")?;
            let return_ = self.tokenizer.token_id("<|return|>")?;
            let token = if self.last_header_has_recipient(&tally.ids) {
                call
            } else {
                return_
            };
            stops.contains(&token).then_some(token)
        };
        match named.or_else(implied) {
            Some(token) => {
                tally.emit_late(token);
                Finish::Stop(token)
            }
            None => Finish::MaxTokens,
        }
    }

    /// Whether the header of the last message in `ids` (after its `<|start|>`, or from the
    /// start of the generation, up to `<|message|>`) names a recipient (`to=`).
    fn last_header_has_recipient(&self, ids: &[u32]) -> bool {
        let start = self.tokenizer.token_id("<|start|>");
        let message = self.tokenizer.token_id("<|message|>");
        let from = ids
            .iter()
            .rposition(|&id| Some(id) == start)
            .map_or(0, |i| i + 1);
        let header: Vec<u32> = ids[from..]
            .iter()
            .copied()
            .take_while(|&id| Some(id) != message)
            .collect();
        self.tokenizer
            .decode_lossy(&header)
            .is_ok_and(|h| h.contains("to="))
    }

    /// llama-server's native `/completion`: one chunk per token with its id (`tokens`), the
    /// server's own timings at the end.
    fn generate_llama_server(
        &self,
        request: &GenerationRequest<'_>,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<GenerationStats, BackendError> {
        self.stream_llama_server(self.llama_server_body(request), request, on_token)
    }

    fn llama_server_body(&self, request: &GenerationRequest<'_>) -> Value {
        let sampling = &request.sampling;
        let mut body = json!({
            "prompt": request.prompt,
            "n_predict": request.max_tokens,
            "stream": true,
            "cache_prompt": true,
            // ossa's sampling (temperature, then top-k, then top-p, as the engine does) and
            // none of the server's defaults: its min_p, penalties, DRY, XTC, mirostat.
            "samplers": ["temperature", "top_k", "top_p"],
            "temperature": sampling.temperature,
            "top_k": sampling.top_k,
            "top_p": sampling.top_p,
            "dynatemp_range": 0.0,
            "mirostat": 0,
            "n_probs": 0,
            // Clears the server's default biases: a server started with --ignore-eos has −∞ on
            // every end-of-generation token there, `<|return|>` and `<|call|>` among them, so
            // the model could never stop. (`ignore_eos: true` in a request does the same.)
            "logit_bias": [],
            "ignore_eos": false,
            // Replaces the server's stop strings (-r/--reverse-prompt), which would cut the
            // text and stop early; an empty list would keep them. No model writes a NUL.
            "stop": ["\u{0}"],
        });
        if let Some(seed) = sampling.seed {
            body["seed"] = json!(seed);
        }
        body
    }

    fn stream_llama_server(
        &self,
        body: Value,
        request: &GenerationRequest<'_>,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<GenerationStats, BackendError> {
        let url = format!("{}/completion", self.root);
        let error = |message: String| self.bad_response(message);
        let started = Instant::now();
        let response = self.http.send(&url, body).map_err(|e| self.http_error(e))?;
        let mut tally = Tally::new(started, on_token);
        // A stop token the server does not end on (`<|end|>`): the generation ends here.
        let mut stopped_here: Option<u32> = None;
        let mut ended: Option<(String, Value)> = None;
        let cancelled = read_events(response, &request.cancel, |chunk| {
            if chunk.get("stop").and_then(Value::as_bool) == Some(true) {
                ended = Some((
                    chunk
                        .get("stop_type")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_string(),
                    chunk,
                ));
                return Ok(Flow::Done);
            }
            let ids = chunk
                .get("tokens")
                .and_then(Value::as_array)
                .map(|ids| {
                    ids.iter()
                        .map(token_id)
                        .collect::<Result<Vec<u32>, String>>()
                })
                .transpose()?;
            let Some(ids) = ids else {
                if chunk
                    .get("content")
                    .and_then(Value::as_str)
                    .is_some_and(|c| !c.is_empty())
                {
                    return Err(
                        "the stream carries text but no token ids (`tokens`): use a \
                                newer llama.cpp"
                            .to_string(),
                    );
                }
                return Ok(Flow::More);
            };
            if ids.is_empty() {
                return Ok(Flow::More);
            }
            if stopped_here.is_some() {
                // The server sampled past a stop token it does not end on.
                return Ok(Flow::Done);
            }
            // llama-server sends no chunk for a token that leaves its text mid-character; the
            // next chunk's text holds its bytes and `tokens_predicted` counts it.
            if let Some(predicted) = count(chunk.get("tokens_predicted")) {
                let dropped = predicted.saturating_sub(tally.ids.len() + ids.len());
                if dropped > 0 {
                    let content = chunk
                        .get("content")
                        .and_then(Value::as_str)
                        .unwrap_or_default();
                    for id in self.recover_dropped(dropped, content, &ids)? {
                        tally.emit(id);
                    }
                }
            }
            for id in ids {
                tally.emit(id);
                if request.stop_tokens.contains(&id) {
                    stopped_here = Some(id);
                    break;
                }
            }
            Ok(Flow::More)
        })
        .map_err(|e| self.stream_error(e))?;
        let (finish, timings) = match ended {
            _ if cancelled => (Finish::Cancelled, None),
            Some((stop_type, last)) => {
                let timings = last.get("timings").and_then(ServerTimings::read);
                let finish = match (stop_type.as_str(), stopped_here) {
                    ("word", _) => {
                        return Err(error(format!(
                            "llama-server stopped at the stop string {} (a NUL was sampled)",
                            last.get("stopping_word").unwrap_or(&Value::Null)
                        )));
                    }
                    // Also a stop token it does not end on, sampled as the last one allowed.
                    (_, Some(token)) => Finish::Stop(token),
                    // An end-of-generation token that is not one of the request's.
                    ("eos", None) => tally
                        .ids
                        .last()
                        .map_or(Finish::MaxTokens, |&token| Finish::Stop(token)),
                    ("limit", None) => Finish::MaxTokens,
                    _ => Finish::Cancelled,
                };
                (finish, timings)
            }
            None => match stopped_here {
                Some(token) => (Finish::Stop(token), None),
                None => {
                    return Err(error(
                        "the stream ended before the generation did".to_string(),
                    ));
                }
            },
        };
        let reused = timings.map_or(0, |t| t.cached);
        Ok(tally.stats(finish, request.prompt.len(), reused, timings))
    }

    /// The ids of `dropped` tokens llama-server left out of its stream. Their bytes are the
    /// start of `content`, which ends with the text of `ids` (a special token's text may be
    /// left out, as llama-server does without --special). Each such token is not UTF-8 on its
    /// own, so the bytes split into exactly `dropped` of those tokens; the first split found
    /// is taken (they are unique in practice).
    fn recover_dropped(
        &self,
        dropped: usize,
        content: &str,
        ids: &[u32],
    ) -> Result<Vec<u32>, String> {
        let content = content.as_bytes();
        let mut with_specials = Vec::new();
        let mut ordinary = Vec::new();
        for &id in ids {
            let bytes = self.tokenizer.token_bytes(id).unwrap_or_default();
            with_specials.extend_from_slice(bytes);
            if !self.tokenizer.is_special(id) {
                ordinary.extend_from_slice(bytes);
            }
        }
        let own = [with_specials, ordinary]
            .into_iter()
            .find(|own| content.ends_with(own));
        let table = self.partial_tokens.get_or_init(|| {
            (0..self.tokenizer.vocab_size() as u32)
                .filter_map(|id| {
                    let bytes = self.tokenizer.token_bytes(id)?;
                    std::str::from_utf8(bytes)
                        .is_err()
                        .then(|| (bytes.to_vec(), id))
                })
                .collect()
        });
        own.and_then(|own| split(&content[..content.len() - own.len()], dropped, table))
            .ok_or_else(|| {
                format!(
                    "llama-server left {dropped} token(s) out of its stream and their text \
                     ({:?}) does not split into that many tokens",
                    String::from_utf8_lossy(content)
                )
            })
    }

    /// The server sent what its API does not promise.
    fn bad_response(&self, message: String) -> BackendError {
        BackendError::BadResponse {
            backend: self.name(),
            message,
        }
    }

    /// A request failed ([`Http::send`]: the server is unreachable or answered an HTTP error).
    fn http_error(&self, error: RemoteError) -> BackendError {
        match error {
            RemoteError::Http {
                url,
                status,
                message,
            } => BackendError::Http {
                backend: self.name(),
                url,
                status,
                message,
            },
            other => self.bad_response(other.to_string()),
        }
    }

    fn stream_error(&self, error: StreamError) -> BackendError {
        match error {
            StreamError::Read(error) => BackendError::Stream {
                backend: self.name(),
                error,
            },
            StreamError::Bad(message) => self.bad_response(message),
        }
    }

    fn unsupported(&self, message: String) -> BackendError {
        BackendError::Unsupported {
            backend: self.name(),
            message,
        }
    }
}

/// The dialect a server speaks, from its `/v1/models` entry (vLLM and `ossa serve` give
/// `max_model_len`, llama-server `owned_by: "llamacpp"` and `meta`), else from whether it
/// answers llama-server's `/props` (e.g. behind a proxy that rewrites the model list).
fn detect(http: &Http, root: &str, entry: &Value) -> RemoteKind {
    let owner = entry.get("owned_by").and_then(Value::as_str);
    if owner == Some("llamacpp") || entry.pointer("/meta/n_ctx").is_some() {
        return RemoteKind::LlamaServer;
    }
    if entry.get("max_model_len").is_some() || matches!(owner, Some("vllm" | "ossa")) {
        return RemoteKind::Vllm;
    }
    let props = http.get(&format!("{root}/props"));
    if props.is_ok_and(|p| p.get("default_generation_settings").is_some()) {
        return RemoteKind::LlamaServer;
    }
    RemoteKind::Generic
}

/// `bytes` as exactly `pieces` tokens of `table`, if they split so.
fn split(bytes: &[u8], pieces: usize, table: &HashMap<Vec<u8>, u32>) -> Option<Vec<u32>> {
    if pieces == 0 {
        return bytes.is_empty().then(Vec::new);
    }
    for end in (1..=bytes.len()).rev() {
        if let Some(&id) = table.get(&bytes[..end])
            && let Some(mut rest) = split(&bytes[end..], pieces - 1, table)
        {
            rest.insert(0, id);
            return Some(rest);
        }
    }
    None
}

fn count(value: Option<&Value>) -> Option<usize> {
    value
        .and_then(Value::as_u64)
        .and_then(|n| usize::try_from(n).ok())
}

fn token_id(value: &Value) -> Result<u32, String> {
    value
        .as_u64()
        .and_then(|id| u32::try_from(id).ok())
        .ok_or_else(|| format!("`{value}` is not a token id"))
}

/// What a server reports of its own work (llama.cpp's `timings`): the prompt time (to the
/// first token), the time of the tokens after it, and the prompt tokens its cache held.
#[derive(Debug, Clone, Copy)]
struct ServerTimings {
    prefill: Duration,
    decode: Duration,
    cached: usize,
}

impl ServerTimings {
    fn read(timings: &Value) -> Option<ServerTimings> {
        let ms = |key: &str| {
            timings
                .get(key)
                .and_then(Value::as_f64)
                .filter(|ms| ms.is_finite() && *ms >= 0.0)
                .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        };
        Some(ServerTimings {
            prefill: ms("prompt_ms")?,
            decode: ms("predicted_ms")?,
            cached: count(timings.get("cache_n")).unwrap_or(0),
        })
    }
}

/// The tokens handed on, and when they came.
struct Tally<'a> {
    on_token: &'a mut dyn FnMut(u32),
    started: Instant,
    first: Option<Instant>,
    last: Option<Instant>,
    ids: Vec<u32>,
}

impl<'a> Tally<'a> {
    fn new(started: Instant, on_token: &'a mut dyn FnMut(u32)) -> Self {
        Self {
            on_token,
            started,
            first: None,
            last: None,
            ids: Vec::new(),
        }
    }

    /// Something of the generation arrived now.
    fn arrived(&mut self) {
        let now = Instant::now();
        self.first.get_or_insert(now);
        self.last = Some(now);
    }

    /// A token that arrived now.
    fn emit(&mut self, id: u32) {
        self.arrived();
        self.emit_late(id);
    }

    /// A token known only after the text it came in (its arrival was recorded then).
    fn emit_late(&mut self, id: u32) {
        self.ids.push(id);
        (self.on_token)(id);
    }

    /// The figures: the server's own timings when it gives them, else when tokens arrived
    /// here (time to the first, then from the first to the last).
    fn stats(
        &self,
        finish: Finish,
        prompt_tokens: usize,
        reused_tokens: usize,
        timings: Option<ServerTimings>,
    ) -> GenerationStats {
        let (prefill, decode) = match timings {
            Some(t) => (t.prefill, t.decode),
            None => {
                let now = Instant::now();
                let first = self.first.unwrap_or(now);
                (first - self.started, self.last.unwrap_or(first) - first)
            }
        };
        GenerationStats {
            finish,
            prompt_tokens,
            reused_tokens,
            generated_tokens: self.ids.len(),
            prefill,
            decode,
        }
    }
}

enum Flow {
    More,
    Done,
}

/// Why reading a streamed completion failed.
enum StreamError {
    /// The connection broke.
    Read(std::io::Error),
    /// A chunk that is not what the API promises, or an error the server reported.
    Bad(String),
}

/// Reads a stream's `data:` events until `on_event` is done, `[DONE]` or the end of the
/// stream. Returns whether the generation was cancelled (then the connection is dropped, which
/// makes the server stop generating).
fn read_events(
    response: ureq::Response,
    cancel: &CancellationToken,
    mut on_event: impl FnMut(Value) -> Result<Flow, String>,
) -> Result<bool, StreamError> {
    let reader = BufReader::new(response.into_reader());
    for line in reader.lines() {
        if cancel.is_cancelled() {
            return Ok(true);
        }
        let line = line.map_err(StreamError::Read)?;
        let Some(data) = line.strip_prefix("data:").map(str::trim) else {
            continue;
        };
        if data == "[DONE]" {
            break;
        }
        let chunk: Value = serde_json::from_str(data)
            .map_err(|e| StreamError::Bad(format!("a streamed chunk is not JSON ({e}): {data}")))?;
        if let Some(message) = chunk.pointer("/error/message").and_then(Value::as_str) {
            return Err(StreamError::Bad(message.to_string()));
        }
        if let Flow::Done = on_event(chunk).map_err(StreamError::Bad)? {
            break;
        }
    }
    Ok(false)
}

/// [`RemoteBackend::connect`] as the agent takes it.
pub fn connect(
    options: &RemoteOptions,
    tokenizer: Tokenizer,
) -> Result<Arc<dyn Backend>, RemoteError> {
    Ok(Arc::new(RemoteBackend::connect(options, tokenizer)?))
}

fn http_error(url: &str, error: ureq::Error) -> RemoteError {
    let (status, message) = match error {
        ureq::Error::Status(code, response) => {
            let body = response.into_string().unwrap_or_default();
            let detail = serde_json::from_str::<Value>(&body)
                .ok()
                .and_then(|v| {
                    v.pointer("/error/message")
                        .and_then(Value::as_str)
                        .map(str::to_string)
                })
                .unwrap_or(body);
            (Some(code), format!("HTTP {code}: {}", detail.trim()))
        }
        ureq::Error::Transport(transport) => (None, transport.to_string()),
    };
    RemoteError::Http {
        url: url.to_string(),
        status,
        message,
    }
}

impl Backend for RemoteBackend {
    fn name(&self) -> String {
        format!("{} at {} ({})", self.model, self.base, self.kind)
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn generate(
        &self,
        request: &GenerationRequest<'_>,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<GenerationStats, BackendError> {
        self.check_sampling(&request.sampling)
            .map_err(|e| self.unsupported(e.to_string()))?;
        if request.mask.is_some() {
            // The server's own JSON grammars (vLLM `guided_json`, llama-server `json_schema`)
            // would constrain its whole completion, and ossa's completions there are the whole
            // harmony stream (reasoning, headers): passing the schema down would break them.
            return Err(self.unsupported(
                "structured outputs (a JSON schema) need the in-process engine: a remote \
                 server's grammar would constrain the model's reasoning and message headers too"
                    .to_string(),
            ));
        }
        match self.kind {
            RemoteKind::LlamaServer => self.generate_llama_server(request, on_token),
            RemoteKind::Vllm | RemoteKind::Generic => self.generate_openai(request, on_token),
        }
    }
}
