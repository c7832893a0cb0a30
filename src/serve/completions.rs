//! `POST /v1/completions`: raw tokens after a prompt, as vLLM serves them.
//!
//! The prompt is text (special-token texts become their tokens) or a list of token ids. With
//! `return_token_ids: true` a choice carries `prompt_token_ids` and the generated `token_ids`
//! (the stop token included), in every streamed chunk too. `stop_token_ids` end the
//! generation (`stop_reason` names the one sampled); the model's end-of-sequence tokens do too
//! unless `ignore_eos`. `skip_special_tokens: false` keeps special tokens in the text, and
//! `include_stop_str_in_output: true` the stop token's or string's text.

use std::sync::Arc;
use std::time::Instant;

use axum::response::{IntoResponse, Response};
use ossa_agent::{Backend, Finish, GenerationRequest, GenerationStats, LogprobSink};
use ossa_engine::tokenizer::{AllowedSpecial, Tokenizer};
use serde_json::Value;
use tokio::sync::mpsc;

use super::common::{
    self, Admitted, Body, CancelOnDrop, CancellationToken, Posted, count, json_text,
};
use super::error::ApiError;
use super::log::{RequestLog, Usage};
use super::params::{LegacyLogprobs, logprobs_request, new_id};
use super::state::ServerState;
use super::stop;
use super::wire::chat::PromptTokensDetails;
use super::wire::completions::{
    Completion, CompletionChoice, CompletionRequest, Logprobs, StopReason, TextCompletionTag,
    Usage as CompletionUsage,
};
use super::wire::now;
use super::wire::request::OneOrList;

/// OpenAI's default.
const DEFAULT_MAX_TOKENS: usize = 16;

struct Generation {
    prompt: Vec<u32>,
    max_tokens: usize,
    sampling: ossa_engine::SamplingParams,
    stop_token_ids: Vec<u32>,
    stop_strings: Vec<String>,
    ignore_eos: bool,
    skip_special_tokens: bool,
    include_stop_str: bool,
    /// Where the request's log line gets its tokens.
    log: Arc<RequestLog>,
    return_token_ids: bool,
    include_usage: bool,
    /// `logprobs: N`: each token's log-probability and its N most likely alternatives.
    logprobs: Option<usize>,
}

pub async fn create(Posted { state, log, body }: Posted<CompletionRequest>) -> Response {
    let streamed = body.shared.stream();
    let started =
        parse_request(&state, body, log).and_then(|request| Ok((request, common::admit(&state)?)));
    common::answer(&state, started, streamed, stream, complete).await
}

fn tokenizer(state: &ServerState) -> &Tokenizer {
    state.settings.encoding.tokenizer()
}

fn parse_request(
    state: &ServerState,
    body: Body<CompletionRequest>,
    log: Arc<RequestLog>,
) -> Result<Generation, ApiError> {
    let Body {
        request: body,
        shared,
        ..
    } = body;
    shared.check_single_choice()?;
    if body.suffix.is_some() {
        return Err(ApiError::invalid(
            "suffix".to_string(),
            "`suffix` is not supported by this server",
        ));
    }
    if body.echo == Some(true) {
        return Err(ApiError::invalid(
            "echo".to_string(),
            "`echo` is not supported by this server (ask for `return_token_ids`)",
        ));
    }
    let tokenizer = tokenizer(state);
    let prompt = prompt_tokens(tokenizer, body.prompt.as_ref())?;
    let max_tokens = count("max_tokens", body.max_tokens)?.unwrap_or(DEFAULT_MAX_TOKENS);
    let context = state.backend.context_length();
    if prompt
        .len()
        .checked_add(max_tokens)
        .is_none_or(|total| total > context)
    {
        return Err(ApiError::context(
            "messages",
            format!(
                "This model's maximum context length is {context} tokens. However, you requested {} tokens ({} in the prompt, {max_tokens} in the completion). Please reduce the length of the prompt or the completion.",
                prompt.len().saturating_add(max_tokens),
                prompt.len()
            ),
        ));
    }
    // Within the context, the server's own limit cuts it.
    let max_tokens = state.max_tokens(Some(max_tokens)).unwrap_or(max_tokens);
    let stop_token_ids = body
        .stop_token_ids
        .unwrap_or_default()
        .iter()
        .enumerate()
        .map(|(i, &id)| token_id(tokenizer, &format!("stop_token_ids[{i}]"), u64::from(id)))
        .collect::<Result<_, _>>()?;
    let defaults = &state.settings.config.sampling;
    // The legacy API's `logprobs` is the number of alternatives (OpenAI allows up to 5).
    let logprobs = match body.logprobs {
        Some(n) if n > 5 => {
            return Err(ApiError::invalid(
                "logprobs".to_string(),
                format!("`logprobs` must be between 0 and 5, not {n}"),
            ));
        }
        Some(n) => logprobs_request(state, "logprobs", true, Some(n as u32))?,
        None => None,
    };
    Ok(Generation {
        prompt,
        max_tokens,
        sampling: shared.sampling(defaults)?,
        stop_token_ids,
        stop_strings: shared.stop(),
        ignore_eos: body.ignore_eos.unwrap_or(false),
        skip_special_tokens: body.skip_special_tokens.unwrap_or(true),
        include_stop_str: body.include_stop_str_in_output.unwrap_or(false),
        return_token_ids: body.return_token_ids.unwrap_or(false),
        log,
        include_usage: shared.include_usage(),
        logprobs,
    })
}

/// A token id of this model (`param` names where the request gave it).
fn token_id(tokenizer: &Tokenizer, param: &str, id: u64) -> Result<u32, ApiError> {
    u32::try_from(id)
        .ok()
        .filter(|&id| (id as usize) < tokenizer.vocab_size() && tokenizer.token_bytes(id).is_some())
        .ok_or_else(|| {
            ApiError::invalid(
                param.to_string(),
                format!(
                    "{id} is not a token id of this model (0 to {})",
                    tokenizer.vocab_size().saturating_sub(1)
                ),
            )
        })
}

/// The prompt: text, token ids, or a batch of one of either.
fn prompt_tokens(
    tokenizer: &Tokenizer,
    prompt: Option<&OneOrList<Value>>,
) -> Result<Vec<u32>, ApiError> {
    let param = "prompt".to_string();
    let text_tokens = |text: &str| {
        tokenizer
            .encode(text, AllowedSpecial::All)
            .map_err(|e| ApiError::invalid(param.clone(), format!("cannot tokenize: {e}")))
    };
    let tokens = match prompt {
        None => return Err(ApiError::invalid(param, "`prompt` is required")),
        Some(OneOrList::One(text)) => text_tokens(text)?,
        Some(OneOrList::List(items)) => list_tokens(tokenizer, items, &text_tokens)?,
    };
    if tokens.is_empty() {
        return Err(ApiError::invalid(param, "the prompt is empty"));
    }
    Ok(tokens)
}

/// A prompt given as a list: token ids, or a batch of one prompt (text or ids).
fn list_tokens(
    tokenizer: &Tokenizer,
    items: &[Value],
    text_tokens: &dyn Fn(&str) -> Result<Vec<u32>, ApiError>,
) -> Result<Vec<u32>, ApiError> {
    let param = "prompt".to_string();
    match items.first() {
        Some(Value::Number(_)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| {
                let param = format!("prompt[{i}]");
                let id = v.as_u64().ok_or_else(|| {
                    ApiError::invalid(
                        param.clone(),
                        format!("{v} is not a token id of this model"),
                    )
                })?;
                token_id(tokenizer, &param, id)
            })
            .collect(),
        Some(Value::String(text)) if items.len() == 1 => text_tokens(text),
        Some(Value::Array(ids)) if items.len() == 1 => list_tokens(tokenizer, ids, text_tokens),
        Some(_) if items.len() > 1 => Err(ApiError::invalid(
            param,
            "batches of prompts are not supported: send one prompt per request",
        )),
        _ => Ok(Vec::new()),
    }
}

/// What a generation produced so far, and how it ended.
struct Progress {
    token_ids: Vec<u32>,
    /// Text of the tokens so far (special tokens as the request asks).
    text: String,
    /// How much of `text` has been streamed.
    sent: usize,
    /// Set when a stop string was found: the text ends before (or after) it.
    stop_string: Option<String>,
    decoder: ossa_engine::tokenizer::StreamDecoder,
    /// The tokens' log-probabilities (with `logprobs`), all of them and those not yet sent.
    logprobs: LegacyLogprobs,
}

struct Outcome {
    finish_reason: &'static str,
    stop_reason: Option<StopReason>,
    stats: Option<GenerationStats>,
}

/// What [`generate`] hands the text to: `(new_text, new_token_ids, their_logprobs)`.
type OnText<'a> = dyn FnMut(&str, &[u32], Option<Logprobs>) + Send + 'a;

/// Runs the generation, calling `on_text(new_text, new_token_ids, their_logprobs)` as text
/// becomes safe to show (not possibly the start of a stop string); the logprobs are null unless
/// the request asked for them.
async fn generate(
    state: &Arc<ServerState>,
    request: &Generation,
    cancel: &CancellationToken,
    progress: &mut Progress,
    on_text: &mut OnText<'_>,
) -> Result<Outcome, ApiError> {
    let mut stops = request.stop_token_ids.clone();
    if !request.ignore_eos {
        stops.extend(state.settings.eos_tokens.iter().copied());
    }
    stops.sort_unstable();
    stops.dedup();
    let started = Instant::now();
    // Stops the generation when this future is dropped (the client went away before a
    // non-streamed answer was ready).
    let stop = CancelOnDrop(CancellationToken::new());
    let stop_handle = &stop.0;
    let (sender, mut receiver) = mpsc::unbounded_channel();
    let backend = Arc::clone(&state.backend);
    let worker = {
        let prompt = request.prompt.clone();
        let stops = stops.clone();
        let sampling = request.sampling.clone();
        let max_tokens = request.max_tokens;
        let handle = stop_handle.clone();
        let logprobs = request.logprobs.map(LogprobSink::new);
        tokio::task::spawn_blocking(move || {
            let generation = GenerationRequest {
                prompt: &prompt,
                max_tokens,
                stop_tokens: &stops,
                sampling,
                cancel: handle,
                mask: None,
                logprobs,
            };
            backend.generate(&generation, &mut |token| {
                let logprobs = generation.logprobs.as_ref().and_then(LogprobSink::take);
                let _ = sender.send((token, logprobs));
            })
        })
    };
    let tokenizer = tokenizer(state).clone();
    let hold = request
        .stop_strings
        .iter()
        .map(|s| s.len())
        .max()
        .unwrap_or(0)
        .saturating_sub(1);
    let mut pending_ids: Vec<u32> = Vec::new();
    loop {
        let token = tokio::select! {
            biased;
            _ = cancel.cancelled() => {
                stop_handle.cancel();
                None
            }
            token = receiver.recv() => token,
        };
        let Some((token, logprobs)) = token else {
            break;
        };
        if progress.stop_string.is_some() {
            continue;
        }
        if let Some(logprobs) = &logprobs {
            progress
                .logprobs
                .push(&tokenizer, logprobs, progress.text.len());
        }
        progress.token_ids.push(token);
        pending_ids.push(token);
        let is_stop = stops.contains(&token);
        let shown = if tokenizer.is_special(token) {
            let keep = !request.skip_special_tokens && (!is_stop || request.include_stop_str);
            if keep {
                progress.decoder.flush()
                    + &String::from_utf8_lossy(tokenizer.token_bytes(token).unwrap_or_default())
            } else {
                progress.decoder.flush()
            }
        } else {
            progress.decoder.push(token).unwrap_or_default()
        };
        progress.text.push_str(&shown);
        if let Some((at, stop)) = stop::find(&progress.text, progress.sent, &request.stop_strings) {
            let end = if request.include_stop_str {
                at + stop.len()
            } else {
                at
            };
            progress.text.truncate(end);
            progress.stop_string = Some(stop);
            stop_handle.cancel();
        }
        let safe = if progress.stop_string.is_some() {
            progress.text.len()
        } else {
            stop::floor_char_boundary(&progress.text, progress.text.len().saturating_sub(hold))
        };
        if safe > progress.sent {
            let logprobs = pending_logprobs(request, progress);
            on_text(&progress.text[progress.sent..safe], &pending_ids, logprobs);
            pending_ids.clear();
            progress.sent = safe;
        }
    }
    let stats = worker
        .await
        .map_err(|e| ApiError::server(format!("the generation thread failed: {e}")))?
        .map_err(|e| ApiError::backend(&e))?;
    let rest = progress.decoder.flush();
    if progress.stop_string.is_none() {
        progress.text.push_str(&rest);
    }
    if progress.text.len() > progress.sent || !pending_ids.is_empty() {
        let logprobs = pending_logprobs(request, progress);
        on_text(&progress.text[progress.sent..], &pending_ids, logprobs);
        progress.sent = progress.text.len();
    }
    let (finish_reason, stop_reason) = match (&progress.stop_string, stats.finish) {
        (Some(stop), _) => ("stop", Some(StopReason::Text(stop.clone()))),
        (None, Finish::Stop(token)) if request.stop_token_ids.contains(&token) => {
            ("stop", Some(StopReason::Token(token)))
        }
        (None, Finish::Stop(_)) => ("stop", None),
        (None, Finish::MaxTokens) => ("length", None),
        (None, Finish::Cancelled) => ("abort", None),
    };
    request.log.record(Usage {
        prompt_tokens: request.prompt.len(),
        completion_tokens: progress.token_ids.len(),
        // What the generation did not spend computing, it spent waiting for the engine.
        queue_wait: started
            .elapsed()
            .saturating_sub(stats.prefill + stats.decode),
    });
    Ok(Outcome {
        finish_reason,
        stop_reason,
        stats: Some(stats),
    })
}

/// The logprobs of the tokens not yet streamed; null without `logprobs`.
fn pending_logprobs(request: &Generation, progress: &mut Progress) -> Option<Logprobs> {
    request.logprobs.map(|_| progress.logprobs.take_pending())
}

fn usage(request: &Generation, outcome: &Outcome, generated: usize) -> CompletionUsage {
    let reused = outcome.stats.map_or(0, |s| s.reused_tokens);
    CompletionUsage {
        prompt_tokens: request.prompt.len(),
        completion_tokens: generated,
        total_tokens: request.prompt.len() + generated,
        prompt_tokens_details: PromptTokensDetails {
            cached_tokens: reused,
        },
    }
}

fn new_progress(state: &ServerState) -> Progress {
    Progress {
        token_ids: Vec::new(),
        text: String::new(),
        sent: 0,
        stop_string: None,
        decoder: tokenizer(state).stream_decoder(),
        logprobs: LegacyLogprobs::default(),
    }
}

async fn complete(
    state: &Arc<ServerState>,
    request: Generation,
    cancel: CancellationToken,
) -> Response {
    let mut progress = new_progress(state);
    let outcome = match generate(state, &request, &cancel, &mut progress, &mut |_, _, _| {}).await {
        Ok(outcome) => outcome,
        Err(error) => return error.into_response(),
    };
    let usage = usage(&request, &outcome, progress.token_ids.len());
    let ids = request.return_token_ids;
    let choice = CompletionChoice {
        index: 0,
        logprobs: request.logprobs.map(|_| progress.logprobs.all()),
        text: progress.text,
        finish_reason: Some(outcome.finish_reason.to_string()),
        stop_reason: outcome.stop_reason,
        prompt_token_ids: ids.then(|| request.prompt.clone()),
        token_ids: ids.then_some(progress.token_ids),
    };
    axum::Json(Completion {
        id: new_id("cmpl-"),
        object: TextCompletionTag,
        created: now(),
        model: state.settings.model_id.clone(),
        choices: vec![choice],
        usage: Some(usage),
    })
    .into_response()
}

fn stream(state: Arc<ServerState>, request: Generation, admitted: Admitted) -> impl IntoResponse {
    common::sse(admitted, move |sender, cancel| async move {
        let id = new_id("cmpl-");
        let created = now();
        // A chunk as the text of its `data:` event.
        let chunk = |choices: Vec<CompletionChoice>, usage: Option<CompletionUsage>| {
            json_text(&Completion {
                id: id.clone(),
                object: TextCompletionTag,
                created,
                model: state.settings.model_id.clone(),
                choices,
                usage,
            })
        };
        let send = |text: String| sender.data(text);
        sender.queue_note(&state);
        let mut first = true;
        let mut on_text = |text: &str, ids: &[u32], logprobs: Option<Logprobs>| {
            let with_ids = request.return_token_ids;
            let choice = CompletionChoice {
                index: 0,
                text: text.to_string(),
                logprobs,
                finish_reason: None,
                stop_reason: None,
                prompt_token_ids: (with_ids && first).then(|| request.prompt.clone()),
                token_ids: with_ids.then(|| ids.to_vec()),
            };
            first = false;
            send(chunk(vec![choice], None));
        };
        let mut progress = new_progress(&state);
        match generate(&state, &request, &cancel, &mut progress, &mut on_text).await {
            Ok(outcome) => {
                let usage = usage(&request, &outcome, progress.token_ids.len());
                let choice = CompletionChoice {
                    index: 0,
                    text: String::new(),
                    logprobs: None,
                    finish_reason: Some(outcome.finish_reason.to_string()),
                    stop_reason: outcome.stop_reason,
                    prompt_token_ids: None,
                    token_ids: request.return_token_ids.then(Vec::new),
                };
                send(chunk(vec![choice], None));
                if request.include_usage {
                    send(chunk(Vec::new(), Some(usage)));
                }
            }
            Err(error) => send(json_text(&error.body())),
        }
        send("[DONE]".to_string());
    })
}
