//! A [`Backend`] on a server's Completions API (vLLM, another `ossa serve`): the agent renders
//! harmony itself, sends the prompt as token ids and reads the sampled token ids back
//! (`return_token_ids`, vLLM ≥ 0.10.2 and `ossa serve`). A server that returns only text gets
//! its text re-tokenized with special tokens kept (`skip_special_tokens: false`), so the
//! harmony parser still sees `<|channel|>`, `<|call|>` and the rest.

use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::{Backend, BackendError, Finish, GenerationRequest, GenerationStats};
use ossa_engine::tokenizer::{AllowedSpecial, Tokenizer};
use serde_json::{Value, json};

/// The context assumed when the server does not say (`max_model_len`): gpt-oss's.
pub const DEFAULT_CONTEXT_LENGTH: usize = 131_072;

/// Why the remote backend could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("`{0}` is not an http:// or https:// URL")]
    Url(String),
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: the server serves no model named `{model}` (it serves: {served})")]
    UnknownModel {
        url: String,
        model: String,
        served: String,
    },
}

/// How to reach the server.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// The API's base URL, e.g. `http://host:8000/v1`.
    pub url: String,
    /// The model name the server knows; `None`: the first it lists.
    pub model: Option<String>,
    /// `None`: the server's `max_model_len`, else [`DEFAULT_CONTEXT_LENGTH`].
    pub context_length: Option<usize>,
    /// Sent as `Authorization: Bearer ...` (`OPENAI_API_KEY`, vLLM's `--api-key`).
    pub api_key: Option<String>,
    /// Longest wait for the server to start answering (the queue, prompt processing).
    pub timeout: Duration,
    /// Ask for the sampled token ids (`return_token_ids`); off for servers that reject the
    /// field, whose text is then re-tokenized.
    pub token_ids: bool,
}

impl RemoteOptions {
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            model: None,
            context_length: None,
            api_key: std::env::var("OPENAI_API_KEY")
                .ok()
                .filter(|k| !k.is_empty()),
            timeout: Duration::from_secs(600),
            token_ids: true,
        }
    }
}

/// A server's Completions API as a source of tokens.
pub struct RemoteBackend {
    base: String,
    model: String,
    context_length: usize,
    api_key: Option<String>,
    token_ids: bool,
    tokenizer: Tokenizer,
    agent: ureq::Agent,
}

impl std::fmt::Debug for RemoteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteBackend")
            .field("base", &self.base)
            .field("model", &self.model)
            .field("context_length", &self.context_length)
            .finish_non_exhaustive()
    }
}

impl RemoteBackend {
    /// Connects: asks the server for its models (`GET /models`) to check the model name and
    /// learn the context length. `tokenizer` is the model's (for servers that return text).
    pub fn connect(options: &RemoteOptions, tokenizer: Tokenizer) -> Result<Self, RemoteError> {
        let base = options.url.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(RemoteError::Url(options.url.clone()));
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(30))
            .timeout_read(options.timeout)
            .build();
        let url = format!("{base}/models");
        let mut request = agent.get(&url);
        if let Some(key) = &options.api_key {
            request = request.set("Authorization", &format!("Bearer {key}"));
        }
        let models: Value = request
            .call()
            .map_err(|e| http_error(&url, e))?
            .into_json()
            .map_err(|e| RemoteError::Http {
                url: url.clone(),
                message: format!("the model list is not JSON: {e}"),
            })?;
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
                message: "the server lists no models".into(),
            })?,
        };
        let model = name_of(entry).ok_or_else(|| RemoteError::Http {
            url: url.clone(),
            message: "a listed model has no `id`".into(),
        })?;
        let context_length = options
            .context_length
            .or_else(|| {
                entry
                    .get("max_model_len")
                    .and_then(Value::as_u64)
                    .and_then(|n| usize::try_from(n).ok())
            })
            .unwrap_or(DEFAULT_CONTEXT_LENGTH);
        tracing::info!(%base, %model, context_length, "remote backend ready");
        Ok(Self {
            base,
            model,
            context_length,
            api_key: options.api_key.clone(),
            token_ids: options.token_ids,
            tokenizer,
            agent,
        })
    }

    pub fn model(&self) -> &str {
        &self.model
    }
}

/// [`RemoteBackend::connect`] as the agent takes it.
pub fn connect(
    options: &RemoteOptions,
    tokenizer: Tokenizer,
) -> Result<Arc<dyn Backend>, RemoteError> {
    Ok(Arc::new(RemoteBackend::connect(options, tokenizer)?))
}

fn http_error(url: &str, error: ureq::Error) -> RemoteError {
    let message = match error {
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
            format!("HTTP {code}: {}", detail.trim())
        }
        ureq::Error::Transport(transport) => transport.to_string(),
    };
    RemoteError::Http {
        url: url.to_string(),
        message,
    }
}

impl Backend for RemoteBackend {
    fn name(&self) -> String {
        format!("{} at {}", self.model, self.base)
    }

    fn context_length(&self) -> usize {
        self.context_length
    }

    fn generate(
        &self,
        request: &GenerationRequest<'_>,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<GenerationStats, BackendError> {
        let url = format!("{}/completions", self.base);
        let error = |message: String| BackendError {
            backend: self.name(),
            message,
        };
        let mut body = json!({
            "model": self.model,
            "prompt": request.prompt,
            "max_tokens": request.max_tokens,
            "temperature": request.sampling.temperature,
            "top_p": request.sampling.top_p,
            "stop_token_ids": request.stop_tokens,
            "stream": true,
            "stream_options": {"include_usage": true},
            "skip_special_tokens": false,
            "include_stop_str_in_output": true,
            // Harmony's stop tokens are the only stops; the server's EOS list may differ.
            "ignore_eos": true,
        });
        if self.token_ids {
            body["return_token_ids"] = json!(true);
        }
        if request.sampling.top_k > 0 {
            body["top_k"] = json!(request.sampling.top_k);
        }
        if let Some(seed) = request.sampling.seed {
            // Servers take signed 64-bit seeds.
            body["seed"] = json!(seed as i64);
        }
        let started = Instant::now();
        let mut call = self.agent.post(&url);
        if let Some(key) = &self.api_key {
            call = call.set("Authorization", &format!("Bearer {key}"));
        }
        let response = call
            .send_json(body)
            .map_err(|e| error(http_error(&url, e).to_string()))?;
        let reader = BufReader::new(response.into_reader());
        let mut first_token_at = None;
        let mut generated = 0usize;
        let mut text_only = String::new();
        let mut last_token = None;
        let mut finish_reason: Option<String> = None;
        let mut stop_reason = Value::Null;
        let mut reused = 0usize;
        let mut emit = |token: u32, last: &mut Option<u32>| {
            first_token_at.get_or_insert_with(Instant::now);
            generated += 1;
            *last = Some(token);
            on_token(token);
        };
        let mut cancelled = false;
        for line in reader.lines() {
            if request.cancel.is_cancelled() {
                // Dropping the connection makes the server stop generating.
                cancelled = true;
                break;
            }
            let line = line.map_err(|e| error(format!("reading the stream: {e}")))?;
            let Some(data) = line.strip_prefix("data:").map(str::trim) else {
                continue;
            };
            if data == "[DONE]" {
                break;
            }
            let chunk: Value = serde_json::from_str(data)
                .map_err(|e| error(format!("a streamed chunk is not JSON ({e}): {data}")))?;
            if let Some(message) = chunk.pointer("/error/message").and_then(Value::as_str) {
                return Err(error(message.to_string()));
            }
            if let Some(cached) = chunk
                .pointer("/usage/prompt_tokens_details/cached_tokens")
                .and_then(Value::as_u64)
            {
                reused = usize::try_from(cached).unwrap_or(0);
            }
            let Some(choice) = chunk.pointer("/choices/0") else {
                continue;
            };
            match choice.get("token_ids").and_then(Value::as_array) {
                Some(ids) => {
                    for id in ids {
                        let id = id
                            .as_u64()
                            .and_then(|id| u32::try_from(id).ok())
                            .ok_or_else(|| error(format!("`{id}` is not a token id")))?;
                        emit(id, &mut last_token);
                    }
                }
                None => {
                    if let Some(text) = choice.get("text").and_then(Value::as_str) {
                        text_only.push_str(text);
                    }
                }
            }
            if let Some(reason) = choice.get("finish_reason").and_then(Value::as_str) {
                finish_reason = Some(reason.to_string());
                stop_reason = choice.get("stop_reason").cloned().unwrap_or(Value::Null);
            }
        }
        if !text_only.is_empty() {
            // The server sent text, not ids: its special tokens are kept, so this re-tokenizes
            // to the ids the model sampled (up to BPE merges of ordinary text).
            let ids = self
                .tokenizer
                .encode(&text_only, AllowedSpecial::All)
                .map_err(|e| error(format!("re-tokenizing the completion: {e}")))?;
            for id in ids {
                emit(id, &mut last_token);
            }
        }
        let finish = if cancelled {
            Finish::Cancelled
        } else {
            match finish_reason.as_deref() {
                Some("length") => Finish::MaxTokens,
                Some("abort") => Finish::Cancelled,
                Some(_) => match last_token {
                    Some(token) if request.stop_tokens.contains(&token) => Finish::Stop(token),
                    _ => {
                        // A server that leaves the stop token out names it in `stop_reason`.
                        let named = stop_reason
                            .as_u64()
                            .and_then(|t| u32::try_from(t).ok())
                            .filter(|t| request.stop_tokens.contains(t));
                        match named {
                            Some(token) => {
                                emit(token, &mut last_token);
                                Finish::Stop(token)
                            }
                            None => Finish::MaxTokens,
                        }
                    }
                },
                None => {
                    return Err(error(
                        "the stream ended without a finish reason".to_string(),
                    ));
                }
            }
        };
        let now = Instant::now();
        let first = first_token_at.unwrap_or(now);
        Ok(GenerationStats {
            finish,
            prompt_tokens: request.prompt.len(),
            reused_tokens: reused,
            generated_tokens: generated,
            prefill: first - started,
            decode: now - first,
        })
    }
}
