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
