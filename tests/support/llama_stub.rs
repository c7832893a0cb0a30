//! A llama.cpp `llama-server` look-alike on loopback, for the remote backend's fast tests. Its
//! requests and answers have the shapes the real server (ggml-org/llama.cpp@0c1e570, the tree
//! `scripts/llama-cpp` builds) was seen to use, recorded with curl against the tiny agent's
//! GGUF; what it does follows that server's code (`tools/server/server-context.cpp`):
//!
//! - `GET /v1/models`: `owned_by: "llamacpp"`, the slot's context in `meta.n_ctx`.
//! - `GET /props`, `POST /tokenize` (`parse_special`).
//! - `POST /completion` (native, streamed): one chunk per token, `{"index", "content", "tokens":
//!   [id], "stop": false, "id_slot": -1, "tokens_predicted", "tokens_evaluated"}`, then a final
//!   chunk with `stop: true`, `stop_type` (`eos`, `limit`, `word`) and `timings`. A token that
//!   leaves the text mid-character gets no chunk: the next chunk's `content` holds its bytes and
//!   `tokens_predicted` counts it (seen for "🦀" = 0xF0 | 0x9F | 0xA6 | 0x80 written byte by
//!   byte: one chunk, `tokens: [222]`, `content: "🦀"`, `tokens_predicted` up by 4).
//! - `POST /v1/completions` (OpenAI's shape): text only; `<|return|>`, `<|call|>` are control
//!   tokens whose text is left out unless the server runs with `--special` (`<|channel|>`,
//!   `<|message|>`, `<|start|>`, `<|constrain|>`, `<|end|>` are always written).
//! - The end-of-generation tokens are `<|endoftext|>`, `<|return|>`, `<|call|>` (not `<|end|>`);
//!   `ignore_eos: true`, or a server started with `--ignore-eos` (whose bias a request's
//!   `logit_bias` replaces), puts −∞ on them: the model cannot stop and runs to `n_predict`.
//!   A request's `stop` strings replace the server's `-r` ones; an empty list keeps them.
//!
//! The model is scripted: each generation replays the next reply's token ids (a `logit_bias`
//! of 50 or more on one token makes that token the whole reply, as greedy sampling would).
//! Timings are made up but fixed (0.5 ms per prompt token computed, 2 ms per token after the
//! first), so figures reported from them can be checked exactly.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ossa::engine::tokenizer::{AllowedSpecial, Tokenizer};
use serde_json::{Value, json};

use super::scripted::Script;

/// The model path llama-server reports as the model's id.
pub const MODEL: &str = "/models/gpt-oss-tiny-agent.gguf";
/// Milliseconds per computed prompt token, and per generated token after the first.
pub const PROMPT_MS_PER_TOKEN: f64 = 0.5;
pub const DECODE_MS_PER_TOKEN: f64 = 2.0;

const ENDOFTEXT: u32 = 199_999;
const RETURN: u32 = 200_002;
const CALL: u32 = 200_012;

/// How the stub server was "started".
#[derive(Debug, Clone)]
pub struct StubSetup {
    /// `-c` per slot.
    pub n_ctx: usize,
    /// `--special`: control tokens' text in `/v1/completions` text.
    pub special: bool,
    /// `--ignore-eos`: −∞ on the end-of-generation tokens by default.
    pub ignore_eos: bool,
    /// `-r`: a stop string by default.
    pub reverse_prompt: Option<String>,
    /// A model that is not gpt-oss: `/tokenize` writes special-token texts as ordinary text.
    pub foreign_vocabulary: bool,
    /// An old server: chunks without `tokens`.
    pub no_token_ids: bool,
}

impl Default for StubSetup {
    fn default() -> Self {
        Self {
            n_ctx: 8192,
            special: false,
            ignore_eos: false,
            reverse_prompt: None,
            foreign_vocabulary: false,
            no_token_ids: false,
        }
    }
}

/// What the handlers share.
pub struct Shared {
    setup: StubSetup,
    script: Arc<Script>,
    tokenizer: Tokenizer,
    /// (path, body) of every POST.
    requests: Mutex<Vec<(String, Value)>>,
    /// The slot's cache: the last prompt and what was generated after it.
    cache: Mutex<Vec<u32>>,
}

/// The stub on a free loopback port, until dropped.
pub type LlamaStub = super::ScriptedHttp<Shared>;

impl LlamaStub {
    pub fn start(setup: StubSetup) -> LlamaStub {
        let routes = Router::new()
            .route("/v1/models", get(models))
            .route("/props", get(props))
            .route("/tokenize", post(tokenize))
            .route("/completion", post(completion))
            .route("/v1/completions", post(oai_completions));
        super::ScriptedHttp::start_on_loopback(
            |script| Shared {
                setup,
                script,
                tokenizer: ossa_test_support::scripted::encoding().tokenizer().clone(),
                requests: Mutex::new(Vec::new()),
                cache: Mutex::new(Vec::new()),
            },
            routes,
        )
    }

    /// The (path, body) of every POST so far.
    pub fn requests(&self) -> Vec<(String, Value)> {
        self.shared.requests.lock().expect("lock").clone()
    }

    /// The bodies of the generations (`/completion` and `/v1/completions`) so far.
    pub fn generations(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|(path, _)| path.ends_with("completion") || path.ends_with("completions"))
            .map(|(_, body)| body)
            .collect()
    }
}

/// Keeps a POST's body; `Err`: why it is not JSON.
fn record(shared: &Shared, path: &str, body: &str) -> Result<Value, String> {
    let body: Value = serde_json::from_str(body).map_err(|e| format!("not JSON: {e}"))?;
    shared
        .requests
        .lock()
        .expect("lock")
        .push((path.to_string(), body.clone()));
    Ok(body)
}

async fn models(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(json!({
        "models": [{"name": MODEL, "model": MODEL, "modified_at": "", "size": "", "digest": "",
                    "type": "model", "description": "", "tags": [""],
                    "capabilities": ["completion"], "parameters": "",
                    "details": {"parent_model": "", "format": "gguf", "family": "",
                                "families": [""], "parameter_size": "",
                                "quantization_level": ""}}],
        "object": "list",
        "data": [{"id": MODEL, "aliases": [MODEL], "tags": [], "object": "model",
                  "created": 1_796_538_785, "owned_by": "llamacpp",
                  "meta": {"vocab_type": 2, "n_vocab": 201_088, "n_ctx": shared.setup.n_ctx,
                           "n_ctx_train": 131_072, "n_embd": 64, "n_params": 26_040_160,
                           "size": 103_478_656, "ftype": "MXFP4 MoE"}}],
    }))
    .into_response()
}

async fn props(State(shared): State<Arc<Shared>>) -> Response {
    axum::Json(json!({
        "default_generation_settings": {
            "params": {"seed": 4_294_967_295_u64, "temperature": 0.8, "top_k": 40, "top_p": 0.95,
                       "min_p": 0.05, "ignore_eos": shared.setup.ignore_eos, "n_probs": 0,
                       "samplers": ["penalties", "dry", "top_n_sigma", "top_k", "typ_p",
                                    "top_p", "min_p", "xtc", "temperature"]},
            "n_ctx": shared.setup.n_ctx,
        },
        "total_slots": 1,
        "model_alias": MODEL,
        "model_path": MODEL,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|return|>",
        "build_info": "b1-0c1e570",
        "is_sleeping": false,
    }))
    .into_response()
}

async fn tokenize(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let body = match record(&shared, "/tokenize", &body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let content = body["content"].as_str().unwrap_or_default();
    let parse_special = body["parse_special"].as_bool().unwrap_or(true);
    let tokens = if parse_special && !shared.setup.foreign_vocabulary {
        shared.tokenizer.encode(content, AllowedSpecial::All)
    } else {
        shared.tokenizer.encode_ordinary(content)
    }
    .expect("encodes");
    axum::Json(json!({"tokens": tokens})).into_response()
}

/// What one generation produced, token by token, as llama-server would stream it.
struct Generated {
    /// (token, text sent with it, tokens predicted so far); a token that leaves the text
    /// mid-character is in the next entry's text and count.
    chunks: Vec<(u32, String, usize)>,
    count: usize,
    stop_type: &'static str,
    stopping_word: String,
    prompt_len: usize,
    cached: usize,
}

impl Shared {
    /// The text llama-server writes for `token`: control tokens only with `--special`.
    fn piece(&self, token: u32) -> Vec<u8> {
        let bytes = self
            .tokenizer
            .token_bytes(token)
            .unwrap_or_default()
            .to_vec();
        let always_written = [
            "<|channel|>",
            "<|message|>",
            "<|start|>",
            "<|constrain|>",
            "<|end|>",
        ];
        if self.tokenizer.is_special(token)
            && !self.setup.special
            && !always_written
                .iter()
                .any(|t| t.as_bytes() == bytes.as_slice())
        {
            return Vec::new();
        }
        bytes
    }

    fn generate(&self, request: &Value) -> Result<Generated, String> {
        let prompt: Vec<u32> = request["prompt"]
            .as_array()
            .ok_or("the prompt must be token ids")?
            .iter()
            .map(|t| {
                t.as_u64()
                    .map(|t| t as u32)
                    .ok_or("the prompt must be token ids")
            })
            .collect::<Result<_, _>>()?;
        let n_predict = request["n_predict"]
            .as_u64()
            .or(request["max_tokens"].as_u64())
            .map_or(usize::MAX, |n| n as usize);
        // The server's biases, replaced by a request's own list.
        let mut banned: HashSet<u32> = HashSet::new();
        let mut forced = None;
        match &request["logit_bias"] {
            Value::Null if self.setup.ignore_eos => {
                banned.extend([ENDOFTEXT, RETURN, CALL]);
            }
            Value::Object(biases) => {
                for (token, bias) in biases {
                    let token: u32 = token.parse().map_err(|_| "a bias key is not an id")?;
                    match bias.as_f64() {
                        Some(b) if b >= 50.0 => forced = Some(token),
                        Some(_) => {}
                        None => {
                            banned.insert(token);
                        }
                    }
                }
            }
            Value::Array(biases) => {
                for pair in biases {
                    let Some(token) = pair[0].as_u64().map(|t| t as u32) else {
                        continue;
                    };
                    match (pair[1].as_f64(), pair[1].as_bool()) {
                        (Some(b), _) if b >= 50.0 => forced = Some(token),
                        (_, Some(false)) => {
                            banned.insert(token);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
        if request["ignore_eos"] == true {
            banned.extend([ENDOFTEXT, RETURN, CALL]);
        }
        let stops: Vec<String> = match request["stop"].as_array() {
            Some(words)
                if words
                    .iter()
                    .any(|w| w.as_str().is_some_and(|w| !w.is_empty())) =>
            {
                words
                    .iter()
                    .filter_map(|w| w.as_str().map(str::to_string))
                    .filter(|w| !w.is_empty())
                    .collect()
            }
            _ => self.setup.reverse_prompt.iter().cloned().collect(),
        };
        let reply = match forced {
            Some(token) => vec![token],
            None => self.script.answer(&prompt).ok_or("no reply scripted")?,
        };
        let cached = {
            let mut cache = self.cache.lock().expect("lock");
            let common = cache
                .iter()
                .zip(&prompt)
                .take_while(|(a, b)| a == b)
                .count()
                .min(prompt.len().saturating_sub(1));
            cache.clone_from(&prompt);
            common
        };
        let mut generated = Generated {
            chunks: Vec::new(),
            count: 0,
            stop_type: "limit",
            stopping_word: String::new(),
            prompt_len: prompt.len(),
            cached,
        };
        let mut text: Vec<u8> = Vec::new();
        let mut sent = 0;
        for token in reply {
            if generated.count == n_predict {
                break;
            }
            if banned.contains(&token) {
                // The model cannot write it; what it writes instead is not scripted, so it is
                // left out and the generation runs to its limit.
                continue;
            }
            generated.count += 1;
            self.cache.lock().expect("lock").push(token);
            text.extend(self.piece(token));
            let complete = std::str::from_utf8(&text).is_ok();
            if complete {
                let mut piece = String::from_utf8(text[sent..].to_vec()).expect("UTF-8");
                sent = text.len();
                if let Some(word) = stops.iter().find(|w| piece.contains(w.as_str())) {
                    let at = piece.find(word.as_str()).unwrap_or(0);
                    piece.truncate(at);
                    generated.chunks.push((token, piece, generated.count));
                    generated.stop_type = "word";
                    generated.stopping_word = word.clone();
                    break;
                }
                generated.chunks.push((token, piece, generated.count));
            }
            if [ENDOFTEXT, RETURN, CALL].contains(&token) {
                generated.stop_type = "eos";
                break;
            }
        }
        Ok(generated)
    }
}

fn timings(generated: &Generated) -> Value {
    let computed = generated.prompt_len - generated.cached;
    json!({
        "cache_n": generated.cached,
        "prompt_n": computed,
        "prompt_ms": computed as f64 * PROMPT_MS_PER_TOKEN,
        "predicted_n": generated.count,
        "predicted_ms": generated.count.saturating_sub(1) as f64 * DECODE_MS_PER_TOKEN,
    })
}

fn sse(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({"error": {"code": status.as_u16(), "message": message,
                                "type": "invalid_request_error"}});
    (status, axum::Json(body)).into_response()
}

/// llama-server's native `/completion`, streamed (the only way ossa asks).
async fn completion(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let request = match record(&shared, "/completion", &body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    assert_eq!(request["stream"], true, "the remote backend streams");
    let generated = match shared.generate(&request) {
        Ok(generated) => generated,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let mut body = String::new();
    for (token, content, predicted) in &generated.chunks {
        let mut chunk = json!({"index": 0, "content": content, "tokens": [token], "stop": false,
                               "id_slot": -1, "tokens_predicted": predicted,
                               "tokens_evaluated": generated.prompt_len});
        if shared.setup.no_token_ids {
            chunk.as_object_mut().expect("object").remove("tokens");
        }
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    let last = json!({"index": 0, "content": "", "tokens": [], "id_slot": 0, "stop": true,
                      "model": MODEL, "tokens_predicted": generated.count,
                      "tokens_evaluated": generated.prompt_len, "has_new_line": false,
                      "truncated": false, "stop_type": generated.stop_type,
                      "stopping_word": generated.stopping_word,
                      "tokens_cached": generated.prompt_len + generated.count.saturating_sub(1),
                      "timings": timings(&generated)});
    body.push_str(&format!("data: {last}\n\n"));
    sse(body)
}

/// llama-server's `/v1/completions`: OpenAI's shape, text only.
async fn oai_completions(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let request = match record(&shared, "/v1/completions", &body) {
        Ok(body) => body,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let generated = match shared.generate(&request) {
        Ok(generated) => generated,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let finish = if generated.stop_type == "limit" {
        "length"
    } else {
        "stop"
    };
    let usage = json!({"completion_tokens": generated.count, "prompt_tokens": generated.prompt_len,
                       "total_tokens": generated.count + generated.prompt_len,
                       "prompt_tokens_details": {"cached_tokens": generated.cached}});
    let envelope = |choice: Value| {
        json!({"choices": [choice], "created": 1_796_538_851, "model": MODEL,
               "system_fingerprint": "b1-0c1e570", "object": "text_completion",
               "id": "chatcmpl-stub"})
    };
    if request["stream"] != true {
        let text: String = generated
            .chunks
            .iter()
            .map(|(_, t, _)| t.as_str())
            .collect();
        let mut response =
            envelope(json!({"text": text, "index": 0, "logprobs": null, "finish_reason": finish}));
        response["usage"] = usage;
        response["timings"] = timings(&generated);
        return axum::Json(response).into_response();
    }
    let mut body = String::new();
    for (_, text, _) in &generated.chunks {
        let chunk =
            envelope(json!({"text": text, "index": 0, "logprobs": null, "finish_reason": null}));
        body.push_str(&format!("data: {chunk}\n\n"));
    }
    let mut last =
        envelope(json!({"text": "", "index": 0, "logprobs": null, "finish_reason": finish}));
    if request["stream_options"]["include_usage"] == true {
        last["usage"] = usage;
    }
    last["timings"] = timings(&generated);
    body.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
    sse(body)
}
