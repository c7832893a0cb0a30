//! Reading request fields with errors that name the field, and the sampling settings the
//! endpoints share.

use serde_json::{Map, Value};

use ossa_agent::harmony::ReasoningEffort;
use ossa_engine::SamplingParams;

use super::error::ApiError;

/// A request body's fields.
pub struct Fields<'a>(pub &'a Map<String, Value>);

impl<'a> Fields<'a> {
    /// The field, `None` when absent or null.
    pub fn get(&self, name: &str) -> Option<&'a Value> {
        self.0.get(name).filter(|v| !v.is_null())
    }

    pub fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(_) => Err(ApiError::invalid(
                name.to_string(),
                format!("`{name}` must be true or false"),
            )),
        }
    }

    pub fn f32(&self, name: &str) -> Result<Option<f32>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .filter(|x| x.is_finite())
                .map(|x| Some(x as f32))
                .ok_or_else(|| {
                    ApiError::invalid(name.to_string(), format!("`{name}` must be a number"))
                }),
        }
    }

    pub fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(v) => v.as_u64().map(Some).ok_or_else(|| {
                ApiError::invalid(
                    name.to_string(),
                    format!("`{name}` must be a whole number, 0 or more"),
                )
            }),
        }
    }

    /// A positive count (`max_tokens`).
    pub fn count(&self, name: &str) -> Result<Option<usize>, ApiError> {
        match self.u64(name)? {
            Some(0) => Err(ApiError::invalid(
                name.to_string(),
                format!("`{name}` must be at least 1"),
            )),
            Some(n) => Ok(Some(usize::try_from(n).unwrap_or(usize::MAX))),
            None => Ok(None),
        }
    }

    pub fn array(&self, name: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(ApiError::invalid(
                name.to_string(),
                format!("`{name}` must be an array"),
            )),
        }
    }

    /// `n`, which only 1 can satisfy (one engine, one sample per request).
    pub fn check_single_choice(&self) -> Result<(), ApiError> {
        match self.u64("n")? {
            None | Some(1) => Ok(()),
            Some(_) => Err(ApiError::invalid(
                "n".to_string(),
                "only n = 1 is supported: ask again for another sample",
            )),
        }
    }

    /// `temperature`, `top_p` and `seed` over the server's defaults.
    pub fn sampling(&self, defaults: &SamplingParams) -> Result<SamplingParams, ApiError> {
        let mut sampling = defaults.clone();
        if let Some(t) = self.f32("temperature")? {
            if !(0.0..=2.0).contains(&t) {
                return Err(ApiError::invalid(
                    "temperature".to_string(),
                    format!("`temperature` must be between 0 and 2, not {t}"),
                ));
            }
            sampling.temperature = t;
        }
        if let Some(p) = self.f32("top_p")? {
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::invalid(
                    "top_p".to_string(),
                    format!("`top_p` must be in (0, 1], not {p}"),
                ));
            }
            sampling.top_p = p;
        }
        if let Some(k) = self.get("top_k") {
            // vLLM's extension; -1 and 0 mean off.
            match k.as_i64() {
                Some(k) if k <= 0 => sampling.top_k = 0,
                Some(k) => sampling.top_k = usize::try_from(k).unwrap_or(usize::MAX),
                None => {
                    return Err(ApiError::invalid(
                        "top_k".to_string(),
                        "`top_k` must be a whole number",
                    ));
                }
            }
        }
        if let Some(seed) = self.get("seed") {
            // OpenAI's seeds may be negative; any 64 bits do.
            sampling.seed = match seed.as_i64() {
                Some(s) => Some(s as u64),
                None => Some(seed.as_u64().ok_or_else(|| {
                    ApiError::invalid("seed".to_string(), "`seed` must be a whole number")
                })?),
            };
        }
        Ok(sampling)
    }
}

/// `low`, `medium` or `high`.
pub fn parse_effort(param: &str, value: &Value) -> Result<ReasoningEffort, ApiError> {
    match value.as_str().map(str::to_ascii_lowercase).as_deref() {
        Some("low") | Some("minimal") => Ok(ReasoningEffort::Low),
        Some("medium") => Ok(ReasoningEffort::Medium),
        Some("high") => Ok(ReasoningEffort::High),
        _ => Err(ApiError::invalid(
            param.to_string(),
            format!("`{param}` must be \"low\", \"medium\" or \"high\", not {value}"),
        )),
    }
}

/// The text of a message's `content`: a string, or a list of text parts.
pub fn content_text(param: &str, content: Option<&Value>) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str) {
                    Some("text" | "input_text" | "output_text") => {
                        match part.get("text").and_then(Value::as_str) {
                            Some(t) => text.push_str(t),
                            None => {
                                return Err(ApiError::invalid(
                                    format!("{param}[{i}].text"),
                                    "a text part needs a string `text`",
                                ));
                            }
                        }
                    }
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
        Some(_) => Err(ApiError::invalid(
            param.to_string(),
            "`content` must be a string or a list of parts",
        )),
    }
}

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

/// Seconds since the epoch.
pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Chat Completions' `response_format`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// The Responses API's `text.format`: the same choices, the schema's fields beside `type`.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TextFormat {
    Text,
    JsonObject,
    JsonSchema(JsonSchemaFormat),
}

/// A named JSON schema the answer must follow.
#[derive(Debug, Clone, serde::Deserialize)]
pub struct JsonSchemaFormat {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    /// `None`: any JSON object.
    #[serde(default)]
    pub schema: Option<Value>,
    /// Whether the schema is enforced; ossa enforces it either way (constrained sampling
    /// costs a model nothing it would have written validly anyway). Read only so that a value
    /// that is not a boolean is a 400.
    #[serde(default)]
    #[allow(dead_code)]
    pub strict: Option<bool>,
}

impl From<ResponseFormat> for TextFormat {
    fn from(format: ResponseFormat) -> Self {
        match format {
            ResponseFormat::Text => TextFormat::Text,
            ResponseFormat::JsonObject => TextFormat::JsonObject,
            ResponseFormat::JsonSchema { json_schema } => TextFormat::JsonSchema(json_schema),
        }
    }
}

/// Reads a typed parameter, naming it and serde's reason when it does not fit.
pub fn typed<T: serde::de::DeserializeOwned>(param: &str, value: &Value) -> Result<T, ApiError> {
    serde_json::from_value(value.clone())
        .map_err(|e| ApiError::invalid(param.to_string(), format!("`{param}`: {e}")))
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
    state: &super::ServerState,
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
    let tokenizer = state.encoding.tokenizer();
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
pub fn strict_functions(tools: Option<&Vec<Value>>) -> Vec<StrictFunction> {
    let mut out = Vec::new();
    for (i, tool) in tools.into_iter().flatten().enumerate() {
        let (function, param) = match tool.get("function") {
            Some(f) => (f, format!("tools[{i}].function.parameters")),
            None => (tool, format!("tools[{i}].parameters")),
        };
        if function.get("strict").and_then(Value::as_bool) != Some(true) {
            continue;
        }
        let Some(name) = function.get("name").and_then(Value::as_str) else {
            continue;
        };
        let parameters = function
            .get("parameters")
            .filter(|p| !p.is_null())
            .cloned()
            .unwrap_or_else(|| serde_json::json!({"type": "object", "properties": {}}));
        out.push(StrictFunction {
            param,
            name: name.to_string(),
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

/// Chat Completions' `logprobs` and `top_logprobs`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ChatLogprobsParams {
    #[serde(default)]
    pub logprobs: Option<bool>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
}

/// The Responses API's `include` and `top_logprobs`.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ResponsesLogprobsParams {
    #[serde(default)]
    pub include: Option<Vec<String>>,
    #[serde(default)]
    pub top_logprobs: Option<u32>,
}

/// The `include` value that asks the Responses API for the answer's logprobs.
pub const INCLUDE_LOGPROBS: &str = "message.output_text.logprobs";

impl<'a> Fields<'a> {
    /// The fields `names` of the body as one typed struct (absent and null fields left out).
    pub fn typed_subset<T: serde::de::DeserializeOwned>(
        &self,
        names: &[&str],
    ) -> Result<T, ApiError> {
        let subset: Map<String, Value> = names
            .iter()
            .filter_map(|&n| self.get(n).map(|v| (n.to_string(), v.clone())))
            .collect();
        serde_json::from_value(Value::Object(subset)).map_err(|e| {
            ApiError::invalid(
                names.first().map(|n| n.to_string()),
                format!("`{}`: {e}", names.join("` / `")),
            )
        })
    }
}

/// How many alternatives each answer token reports, when logprobs are asked for: checks the
/// range and that the backend has the logits.
pub fn logprobs_request(
    state: &super::ServerState,
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
