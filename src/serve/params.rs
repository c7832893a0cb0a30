//! What the endpoints share past reading a request: structured outputs, logprobs, ids.

use serde_json::{Map, Value};

use super::error::ApiError;
use super::state::ServerState;
use super::wire::request::{TextFormat, ToolParam};

/// A short random id with a prefix (`chatcmpl-…`, `call_…`).
pub fn new_id(prefix: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut out = String::from(prefix);
    for _ in 0..2 {
        let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
        hasher.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
        hasher.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos()),
        );
        out.push_str(&format!("{:016x}", hasher.finish()));
    }
    out
}

/// A function whose arguments are constrained (`strict: true`): its name, parameters and where
/// the request gave it.
pub struct StrictFunction {
    pub param: String,
    pub name: String,
    pub parameters: Value,
}

/// The structured outputs a request asks for, compiled for the server's tokenizer: the answer's
/// format and the strict functions' parameters. A schema llguidance cannot enforce, or a backend
/// that cannot constrain sampling, is a 400 naming the parameter. Also returns the text for
/// the developer message's `# Response Formats` section (how harmony shows the model the
/// schema it is to follow).
pub fn structured_outputs(
    state: &ServerState,
    format_param: &str,
    format: Option<TextFormat>,
    strict: Vec<StrictFunction>,
) -> Result<
    (
        Option<std::sync::Arc<ossa_agent::StructuredOutputs>>,
        Option<String>,
    ),
    ApiError,
> {
    use ossa_agent::{Backend as _, JsonSchema, StructuredOutputs};
    let (answer_schema, name, description) = match format {
        None | Some(TextFormat::Text) => (None, None, None),
        Some(TextFormat::JsonObject) => (Some(serde_json::json!({"type": "object"})), None, None),
        Some(TextFormat::JsonSchema(format)) => (
            Some(
                format
                    .schema
                    .unwrap_or_else(|| serde_json::json!({"type": "object"})),
            ),
            Some(format.name),
            format.description,
        ),
    };
    if answer_schema.is_none() && strict.is_empty() {
        return Ok((None, None));
    }
    let param = if answer_schema.is_some() {
        format_param.to_string()
    } else {
        strict[0].param.clone()
    };
    if !state.backend.samples_locally() {
        return Err(ApiError::invalid(
            param,
            "structured outputs (JSON schemas, strict functions) need the in-process engine; \
             this server generates with a remote backend",
        ));
    }
    let tokenizer = state.settings.encoding.tokenizer();
    let mut outputs = StructuredOutputs::default();
    let mut section = None;
    if let Some(schema) = answer_schema {
        outputs.answer = Some(JsonSchema::compile(tokenizer, &schema).map_err(|e| {
            ApiError::invalid(
                format_param.to_string(),
                format!("the schema cannot be enforced: {e}"),
            )
        })?);
        let mut text = String::from("# Response Formats\n\n");
        text.push_str(&format!(
            "## {}\n\n",
            name.as_deref().unwrap_or("json_object")
        ));
        if let Some(description) = description {
            text.push_str(&format!("// {description}\n"));
        }
        text.push_str(&schema.to_string());
        section = Some(text);
    }
    for function in strict {
        let schema = JsonSchema::compile(tokenizer, &function.parameters).map_err(|e| {
            ApiError::invalid(
                function.param.clone(),
                format!(
                    "the parameters of `{}` cannot be enforced (strict): {e}",
                    function.name
                ),
            )
        })?;
        outputs.functions.insert(function.name, schema);
    }
    Ok((Some(std::sync::Arc::new(outputs)), section))
}

/// The functions of `tools` marked `strict: true` (Chat Completions nests them in `function`,
/// the Responses API does not).
pub fn strict_functions(tools: &[ToolParam]) -> Vec<StrictFunction> {
    let mut out = Vec::new();
    for (i, tool) in tools.iter().enumerate() {
        let (function, at) = tool.function();
        if function.strict != Some(true) {
            continue;
        }
        let Some(name) = function.name else {
            continue;
        };
        let parameters = function.parameters.map_or_else(
            || serde_json::json!({"type": "object", "properties": {}}),
            Value::Object,
        );
        out.push(StrictFunction {
            param: format!("tools[{i}]{at}.parameters"),
            name,
            parameters,
        });
    }
    out
}

/// Appends the `# Response Formats` section to the developer's instructions.
pub fn with_format_section(
    instructions: Option<String>,
    section: Option<String>,
) -> Option<String> {
    match (instructions, section) {
        (Some(i), Some(s)) => Some(format!("{i}\n\n{s}")),
        (i, s) => i.or(s),
    }
}

/// The most alternatives per token OpenAI allows (`top_logprobs`).
pub const MAX_TOP_LOGPROBS: u32 = 20;

/// The `include` value that asks the Responses API for the answer's logprobs.
pub const INCLUDE_LOGPROBS: &str = "message.output_text.logprobs";

/// How many alternatives each answer token reports, when logprobs are asked for: checks the
/// range and that the backend has the logits.
pub fn logprobs_request(
    state: &ServerState,
    param: &str,
    enabled: bool,
    top: Option<u32>,
) -> Result<Option<usize>, ApiError> {
    use ossa_agent::Backend as _;
    if let Some(top) = top
        && top > MAX_TOP_LOGPROBS
    {
        return Err(ApiError::invalid(
            "top_logprobs".to_string(),
            format!("`top_logprobs` must be between 0 and {MAX_TOP_LOGPROBS}, not {top}"),
        ));
    }
    if !enabled {
        return Ok(None);
    }
    if !state.backend.samples_locally() {
        return Err(ApiError::invalid(
            param.to_string(),
            "logprobs need the in-process engine; this server generates with a remote backend",
        ));
    }
    Ok(Some(top.unwrap_or(0) as usize))
}

/// One alternative token, as OpenAI shows it.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopLogprob {
    pub token: String,
    /// An `f32` widened: printed as the widened value, as the APIs always have.
    pub logprob: f64,
    pub bytes: Vec<u8>,
}

/// One token of the answer with its alternatives (Chat Completions' `logprobs.content[]`, the
/// Responses API's `output_text.logprobs[]`).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLogprob {
    pub token: String,
    pub logprob: f64,
    pub bytes: Vec<u8>,
    pub top_logprobs: Vec<TopLogprob>,
}

impl TokenLogprob {
    pub fn new(tokenizer: &ossa_engine::Tokenizer, logprobs: &ossa_engine::TokenLogprobs) -> Self {
        let entry = |id: u32, logprob: f32| {
            let bytes = tokenizer.token_bytes(id).unwrap_or_default().to_vec();
            TopLogprob {
                token: String::from_utf8_lossy(&bytes).into_owned(),
                // JSON has no -inf; OpenAI writes -9999 for "never".
                logprob: if logprob.is_finite() {
                    f64::from(logprob)
                } else {
                    -9999.0
                },
                bytes,
            }
        };
        let chosen = entry(logprobs.token, logprobs.logprob);
        TokenLogprob {
            token: chosen.token,
            logprob: chosen.logprob,
            bytes: chosen.bytes,
            top_logprobs: logprobs.top.iter().map(|&(id, lp)| entry(id, lp)).collect(),
        }
    }
}

/// `/v1/completions`' legacy `logprobs` object: parallel lists, one entry per token.
#[derive(Debug, Clone, Default)]
pub struct LegacyLogprobs {
    pub tokens: Vec<String>,
    pub token_logprobs: Vec<f64>,
    /// Each position's alternatives, token text → logprob.
    pub top_logprobs: Vec<Map<String, Value>>,
    /// Where each token's text starts in the completion's text (bytes).
    pub text_offset: Vec<usize>,
    /// Entries already streamed.
    sent: usize,
}

impl LegacyLogprobs {
    pub fn push(
        &mut self,
        tokenizer: &ossa_engine::Tokenizer,
        logprobs: &ossa_engine::TokenLogprobs,
        text_offset: usize,
    ) {
        let entry = TokenLogprob::new(tokenizer, logprobs);
        self.tokens.push(entry.token);
        self.token_logprobs.push(entry.logprob);
        self.top_logprobs.push(
            entry
                .top_logprobs
                .into_iter()
                .map(|t| (t.token, Value::from(t.logprob)))
                .collect(),
        );
        self.text_offset.push(text_offset);
    }

    /// Every entry.
    pub fn all(&self) -> super::wire::completions::Logprobs {
        self.since(0)
    }

    /// The entries not streamed yet (marking them streamed).
    pub fn take_pending(&mut self) -> super::wire::completions::Logprobs {
        let from = self.sent.min(self.tokens.len());
        self.sent = self.tokens.len();
        self.since(from)
    }

    fn since(&self, from: usize) -> super::wire::completions::Logprobs {
        super::wire::completions::Logprobs {
            tokens: self.tokens[from..].to_vec(),
            token_logprobs: self.token_logprobs[from..].to_vec(),
            top_logprobs: self.top_logprobs[from..].to_vec(),
            text_offset: self.text_offset[from..].to_vec(),
        }
    }
}
