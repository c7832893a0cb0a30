//! The request path the three endpoints share: reading a body into its typed request and the
//! shared fields (sampling, `seed`, `n`, `stop`, `stream`), the step that starts a request
//! (its cancel, the context check, the request log, a queue slot), message content and
//! function tools as harmony messages, and the SSE answer. No endpoint module imports
//! another; what two of them need lives here.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Extension, FromRequest, Request};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use ossa_agent::harmony::{Author, Message, ReasoningEffort, Role};
use ossa_agent::{AgentConfig, StructuredOutputs};
use ossa_engine::SamplingParams;
use ossa_tools::ToolDescription;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::UnboundedReceiverStream;

use super::error::{ApiError, parse_body};
use super::log::RequestLog;
use super::queue::Slot;
use super::state::ServerState;
use super::turn::{self, TurnSpec};
use super::wire::request::{self, Content, FunctionParam, SamplingRequest};

/// The one cancellation type (a turn's, a generation's, and what the server's shutdown
/// cancels), re-exported for the other modules.
pub(super) use ossa_agent::CancellationToken;

/// Cancels when dropped: when the response (or the handler) is dropped, i.e. when the client
/// went away, or when the future waiting for a generation is.
pub(super) struct CancelOnDrop(pub CancellationToken);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.cancel();
    }
}

/// A body read: the JSON as sent (for what a response echoes), the endpoint's typed request,
/// and the fields every endpoint shares.
pub(super) struct Body<T> {
    pub json: Value,
    pub request: T,
    pub shared: SamplingRequest,
}

/// What a `POST` endpoint's handler is given: the server, the request's log line, and the body
/// read ([`read_body`]); a body that does not read is answered with its error before the
/// handler runs.
pub(super) struct Posted<T> {
    pub state: Arc<ServerState>,
    pub log: Arc<RequestLog>,
    pub body: Body<T>,
}

impl<T: DeserializeOwned + Send> FromRequest<Arc<ServerState>> for Posted<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &Arc<ServerState>) -> Result<Self, Response> {
        let (Extension(log), bytes) =
            <(Extension<Arc<RequestLog>>, Bytes)>::from_request(request, state).await?;
        let body = read_body(&bytes).map_err(IntoResponse::into_response)?;
        Ok(Self {
            state: Arc::clone(state),
            log,
            body,
        })
    }
}

/// Reads a body: JSON, an object, then its typed request and the shared fields; every error
/// names the field it is about.
pub(super) fn read_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<Body<T>, ApiError> {
    let json = Value::Object(parse_body(bytes)?);
    let request = request::parse::<T>("", &json)?;
    let shared = request::parse::<SamplingRequest>("", &json)?;
    Ok(Body {
        json,
        request,
        shared,
    })
}

impl SamplingRequest {
    /// `n`, which only 1 can satisfy (one engine, one sample per request).
    pub fn check_single_choice(&self) -> Result<(), ApiError> {
        match self.n {
            None | Some(1) => Ok(()),
            Some(_) => Err(ApiError::invalid(
                "n".to_string(),
                "only n = 1 is supported: ask again for another sample",
            )),
        }
    }

    /// `temperature`, `top_p`, `top_k` and `seed` over the server's defaults.
    pub fn sampling(&self, defaults: &SamplingParams) -> Result<SamplingParams, ApiError> {
        let mut sampling = defaults.clone();
        if let Some(t) = self.temperature {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::invalid(
                    "temperature".to_string(),
                    format!("`temperature` must be between 0 and 2, not {t}"),
                ));
            }
            sampling.temperature = t;
        }
        if let Some(p) = self.top_p {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::invalid(
                    "top_p".to_string(),
                    format!("`top_p` must be in (0, 1], not {p}"),
                ));
            }
            sampling.top_p = p;
        }
        if let Some(k) = self.top_k {
            // vLLM's extension; -1 and 0 mean off.
            sampling.top_k = usize::try_from(k.0.max(0)).unwrap_or(usize::MAX);
        }
        if let Some(seed) = self.seed {
            // Its 64 bits: a negative seed as its two's complement.
            sampling.seed = Some(seed.0 as u64);
        }
        Ok(sampling)
    }

    /// A turn's agent config: this request's sampling and `max_tokens` (cut to the server's
    /// limit), its structured outputs and logprobs, over the server's defaults.
    pub fn agent_config(
        &self,
        state: &ServerState,
        max_tokens: Option<usize>,
        structured: Option<Arc<StructuredOutputs>>,
        logprobs: Option<usize>,
    ) -> Result<AgentConfig, ApiError> {
        let defaults = &state.settings.config;
        Ok(AgentConfig {
            sampling: self.sampling(&defaults.sampling)?,
            max_tokens: state.max_tokens(max_tokens),
            structured,
            logprobs,
            ..defaults.clone()
        })
    }

    pub fn stream(&self) -> bool {
        self.stream.unwrap_or(false)
    }

    /// `stream_options.include_usage`: a last chunk with the usage.
    pub fn include_usage(&self) -> bool {
        self.stream_options
            .as_ref()
            .and_then(|o| o.include_usage)
            .unwrap_or(false)
    }

    /// The `stop` strings.
    pub fn stop(&self) -> Vec<String> {
        self.stop.clone().unwrap_or_default().0
    }
}

/// A positive count (`max_tokens`): 0 is refused, naming `param`.
pub(super) fn count(param: &str, value: Option<u64>) -> Result<Option<usize>, ApiError> {
    match value {
        Some(0) => Err(ApiError::invalid(
            param.to_string(),
            format!("`{param}` must be at least 1"),
        )),
        Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
        None => Ok(None),
    }
}

/// `low`, `medium` or `high` (`minimal` is `low`).
pub(super) fn parse_effort(param: &str, value: &str) -> Result<ReasoningEffort, ApiError> {
    match value.to_ascii_lowercase().as_str() {
        "low" | "minimal" => Ok(ReasoningEffort::Low),
        "medium" => Ok(ReasoningEffort::Medium),
        "high" => Ok(ReasoningEffort::High),
        _ => Err(ApiError::invalid(
            param.to_string(),
            format!("`{param}` must be \"low\", \"medium\" or \"high\", not {value:?}"),
        )),
    }
}

/// The text of a message's `content` (`param` is its path): a string, or a list of text parts.
pub(super) fn content_text(param: &str, content: Option<&Content>) -> Result<String, ApiError> {
    match content {
        None => Ok(String::new()),
        Some(request::OneOrList::One(text)) => Ok(text.clone()),
        Some(request::OneOrList::List(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                match part.kind.as_deref() {
                    Some("text" | "input_text" | "output_text") => match &part.text {
                        Some(t) => text.push_str(t),
                        None => {
                            return Err(ApiError::invalid(
                                format!("{param}[{i}].text"),
                                "a text part needs a string `text`",
                            ));
                        }
                    },
                    Some(other) => {
                        return Err(ApiError::invalid(
                            format!("{param}[{i}].type"),
                            format!(
                                "content parts of type `{other}` are not supported (text only: gpt-oss reads text)"
                            ),
                        ));
                    }
                    None => {
                        return Err(ApiError::invalid(
                            format!("{param}[{i}]"),
                            "a content part needs a `type`",
                        ));
                    }
                }
            }
            Ok(text)
        }
    }
}

/// A client's function tool (`param` is the path of its fields: `tools[i]` or
/// `tools[i].function`).
pub(super) fn function_description(
    param: &str,
    function: &FunctionParam,
) -> Result<ToolDescription, ApiError> {
    let name = function
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::invalid(format!("{param}.name"), "a function needs a `name`"))?;
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    {
        return Err(ApiError::invalid(
            format!("{param}.name"),
            format!("function name `{name}` may hold only letters, digits, `_` and `-`"),
        ));
    }
    let description = function.description.as_deref().unwrap_or_default();
    let parameters = function.parameters.clone().map(Value::Object);
    Ok(ToolDescription::new(name, description, parameters))
}

/// The assistant's call of a function, as gpt-oss writes it.
pub(super) fn function_call_message(name: &str, arguments: String) -> Message {
    Message::from_role_and_content(Role::Assistant, arguments)
        .with_channel("commentary")
        .with_recipient(format!("functions.{name}"))
        .with_content_type("<|constrain|>json")
}

/// A function's output, as the model reads it.
pub(super) fn function_output_message(name: &str, output: String) -> Message {
    Message::from_author_and_content(Author::new(Role::Tool, format!("functions.{name}")), output)
        .with_channel("commentary")
        .with_recipient("assistant")
}

/// A request that may run: its cancel (cancelled when the client goes away), its queue slot.
pub(super) struct Admitted {
    pub guard: CancelOnDrop,
    pub slot: Slot,
}

impl Admitted {
    pub fn cancel(&self) -> CancellationToken {
        self.guard.0.clone()
    }
}

/// Admits a request: a queue slot (429 past the cap) and its own cancel.
pub(super) fn admit(state: &ServerState) -> Result<Admitted, ApiError> {
    let slot = state.admit()?;
    Ok(Admitted {
        guard: CancelOnDrop(state.request_cancel()),
        slot,
    })
}

/// Answers a request that `started` (or says why it could not): as an SSE stream when it asked
/// for one (`streamed`), else in one body, with its queue slot held and its cancel armed until
/// that body is written.
pub(super) async fn answer<'a, T, S, Fut>(
    state: &'a Arc<ServerState>,
    started: Result<(T, Admitted), ApiError>,
    streamed: bool,
    stream: impl FnOnce(Arc<ServerState>, T, Admitted) -> S,
    complete: impl FnOnce(&'a Arc<ServerState>, T, CancellationToken) -> Fut,
) -> Response
where
    S: IntoResponse,
    Fut: Future<Output = Response>,
{
    let (started, admitted) = match started {
        Ok(started) => started,
        Err(error) => return error.into_response(),
    };
    if streamed {
        stream(Arc::clone(state), started, admitted).into_response()
    } else {
        let response = complete(state, started, admitted.cancel()).await;
        drop(admitted);
        response
    }
}

/// The shared start of a chat turn: the turn `spec` describes, checked against the context
/// before anything runs (`param` names the request's conversation), logged to `log`, and
/// admitted; it starts with the endpoint's `request`.
pub(super) fn start_turn<R>(
    state: &Arc<ServerState>,
    request: R,
    spec: TurnSpec,
    param: &str,
    log: Arc<RequestLog>,
) -> Result<((R, turn::Turn), Admitted), ApiError> {
    let cancel = state.request_cancel();
    let prepared = turn::prepare(state, spec, &cancel, param)?.log_to(log);
    let slot = state.admit()?;
    Ok((
        (request, prepared),
        Admitted {
            guard: CancelOnDrop(cancel),
            slot,
        },
    ))
}

/// What a streaming task sends: `data:` text (JSON, `[DONE]`), an SSE comment, or an event
/// with a name (the Responses API's).
pub(super) enum Outgoing {
    Data(String),
    Comment(String),
    Named { name: &'static str, data: String },
}

/// The channel a streaming task writes to; a send that finds the client gone cancels the
/// request.
pub(super) struct Sender {
    sender: mpsc::UnboundedSender<Outgoing>,
    cancel: CancellationToken,
}

impl Sender {
    pub fn send(&self, outgoing: Outgoing) {
        if self.sender.send(outgoing).is_err() {
            self.cancel.cancel();
        }
    }

    pub fn data(&self, text: String) {
        self.send(Outgoing::Data(text));
    }

    /// The queue's note, when the request waits (`: queued: N generation(s) ahead`).
    pub fn queue_note(&self, state: &ServerState) {
        if let Some(note) = state.queue_note() {
            self.send(Outgoing::Comment(note));
        }
    }
}

/// An SSE answer written by `task`, run on its own tokio task with the request's slot held:
/// dropping the answer (the client went away) cancels the request.
pub(super) fn sse<F, Fut>(
    admitted: Admitted,
    task: F,
) -> Sse<impl tokio_stream::Stream<Item = Result<Event, Infallible>>>
where
    F: FnOnce(Sender, CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (sender, receiver) = mpsc::unbounded_channel::<Outgoing>();
    let Admitted { guard, slot } = admitted;
    let cancel = guard.0.clone();
    let running = task(
        Sender {
            sender,
            cancel: cancel.clone(),
        },
        cancel,
    );
    tokio::spawn(async move {
        let _slot = slot;
        running.await;
    });
    let events = UnboundedReceiverStream::new(receiver).map(move |outgoing| {
        let _ = &guard;
        Ok(match outgoing {
            Outgoing::Data(data) => Event::default().data(data),
            Outgoing::Comment(comment) => Event::default().comment(comment),
            Outgoing::Named { name, data } => Event::default().event(name).data(data),
        })
    });
    // Comments keep idle streams (a queued request, a long tool call) alive and let a closed
    // connection be noticed, which cancels the request.
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// A wire value as JSON text (an SSE event's `data`).
pub(super) fn json_text(value: &impl serde::Serialize) -> String {
    // Not reached: the wire types hold nothing JSON cannot write (no maps with other keys
    // than strings, no floats that are not finite).
    serde_json::to_string(value).unwrap_or_else(|error| {
        tracing::error!("a wire value did not serialize: {error}");
        String::from("{}")
    })
}
