//! What the three APIs' requests share: sampling, `stop`, message content, function tools,
//! `tool_choice`, `stream_options`, and [`parse`], which reads any of them from a body.
//!
//! Request types read only the fields ossa acts on and ignore the rest (clients send many
//! fields ossa has no use for: `user`, `store`, `parallel_tool_calls`...); the few a server
//! must not ignore are typed fields too, and the handler refuses them by name (`n` above 1,
//! `stop` in the Responses API, `suffix` and `echo` in Completions). Types are checked here,
//! values (ranges, roles, names) where they are used, with the same error shape: every error
//! names its field as a path (`input[2].content[0].type`), the way OpenAI's `param` does.
//!
//! No `#[serde(flatten)]` and no derived untagged or internally tagged enums where a path
//! matters: serde buffers those, and the path of an error inside them is lost. A field that
//! holds a string or a list ([`OneOrList`]) is read by a visitor that keeps it.

use std::fmt;
use std::marker::PhantomData;

use serde::Deserialize;
use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::super::error::ApiError;

/// Reads a request type from a body (or a part of one), naming the path of the field that did
/// not fit in the error's `param`, prefixed with `at` (the part's own path; empty for a body).
pub fn parse<'de, T: Deserialize<'de>>(at: &str, value: &'de Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|error| {
        let path = error.path().to_string();
        let message = error.into_inner().to_string();
        let param = match (at, path.as_str()) {
            (at, ".") => at.to_string(),
            ("", path) => path.to_string(),
            (at, path) if path.starts_with('[') => format!("{at}{path}"),
            (at, path) => format!("{at}.{path}"),
        };
        if param.is_empty() {
            ApiError::invalid(None, format!("the request body does not fit: {message}"))
        } else {
            ApiError::invalid(param.clone(), format!("`{param}`: {message}"))
        }
    })
}

/// A parameter read as one: an error anywhere inside it names the parameter itself
/// (`response_format`, `text.format`), as it always did, with serde's reason (`unknown variant
/// `yaml``, `missing field `json_schema``). For the answer formats, whose `type` picks the
/// variant: serde reads them whole before it knows the variant anyway.
#[derive(Debug, Clone)]
pub struct OneParam<T>(pub T);

impl<'de, T: serde::de::DeserializeOwned> Deserialize<'de> for OneParam<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        serde_json::from_value(value)
            .map(OneParam)
            .map_err(de::Error::custom)
    }
}

/// A string, or a list of `T` (`content`, `input`, `stop`, `prompt`).
#[derive(Debug, Clone)]
pub enum OneOrList<T> {
    One(String),
    List(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for OneOrList<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OneOrListVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for OneOrListVisitor<T> {
            type Value = OneOrList<T>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or a list")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(OneOrList::One(text.to_string()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                // Read element by element through `seq`: the path tracker counts them.
                let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
                while let Some(item) = seq.next_element()? {
                    items.push(item);
                }
                Ok(OneOrList::List(items))
            }
        }

        deserializer.deserialize_any(OneOrListVisitor(PhantomData))
    }
}

/// A whole number, from `i64::MIN` to `u64::MAX` (`top_k`, vLLM's, where -1 and 0 mean off;
/// `seed`, which may be negative in OpenAI's API: any 64 bits do).
#[derive(Debug, Clone, Copy)]
pub struct WholeNumber(pub i128);

impl<'de> Deserialize<'de> for WholeNumber {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WholeVisitor;

        impl Visitor<'_> for WholeVisitor {
            type Value = WholeNumber;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a whole number")
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(i128::from(n)))
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<WholeNumber, E> {
                Ok(WholeNumber(i128::from(n)))
            }
        }

        deserializer.deserialize_any(WholeVisitor)
    }
}

/// The sampling fields every endpoint reads (from the same body as its own request type).
#[derive(Debug, Default, Deserialize)]
pub struct SamplingRequest {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub top_k: Option<WholeNumber>,
    pub seed: Option<WholeNumber>,
    /// Choices asked for: only 1 can be given (one engine, one sample per request).
    pub n: Option<u64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Refused by the Responses API, which has none.
    pub stop: Option<Stop>,
}

/// `stop`: a string or a list of strings, empty ones dropped. One parameter: an element that
/// is not a string is an error of `stop` as a whole, as it always was.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stop(pub Vec<String>);

impl<'de> Deserialize<'de> for Stop {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let strings = match OneOrList::<Value>::deserialize(deserializer)? {
            OneOrList::One(text) => vec![text],
            OneOrList::List(items) => items
                .into_iter()
                .map(|item| match item {
                    Value::String(text) => Ok(text),
                    _ => Err(de::Error::custom("`stop` must be strings")),
                })
                .collect::<Result<_, _>>()?,
        };
        Ok(Stop(
            strings.into_iter().filter(|s| !s.is_empty()).collect(),
        ))
    }
}

/// `stream_options`.
#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    pub include_usage: Option<bool>,
}

/// A part of a message's `content` (or of a reasoning item's `content` and `summary`).
#[derive(Debug, Clone, Deserialize)]
pub struct ContentPartParam {
    /// Missing is a 400 naming the part (see [`super::super::common::content_text`]).
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub text: Option<String>,
}

/// A message's `content`: a string or a list of parts.
pub type Content = OneOrList<ContentPartParam>;

/// A function tool as the request gives it: `{name, description, parameters, strict}` (in
/// Chat Completions inside `function`, in the Responses API beside `type`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct FunctionParam {
    pub name: Option<String>,
    pub description: Option<String>,
    /// A JSON schema: an object.
    pub parameters: Option<Map<String, Value>>,
    pub strict: Option<bool>,
}

/// One of the request's `tools`: a function (nested in `function` in Chat Completions, flat in
/// the Responses API) or, in the Responses API, a built-in tool (`code_interpreter`,
/// `web_search`), whose other fields ossa does not read.
#[derive(Debug, Clone, Deserialize)]
pub struct ToolParam {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub function: Option<FunctionParam>,
    pub name: Option<String>,
    pub description: Option<String>,
    pub parameters: Option<Map<String, Value>>,
    pub strict: Option<bool>,
}

impl ToolParam {
    /// The function, and the path of its fields below `tools[i]`: nested in `function` when
    /// the tool has that field (Chat Completions), else the tool's own fields.
    pub fn function(&self) -> (FunctionParam, &'static str) {
        match &self.function {
            Some(function) => (function.clone(), ".function"),
            None => (self.flat_function(), ""),
        }
    }

    /// The function as the tool's own fields (the Responses API's shape).
    pub fn flat_function(&self) -> FunctionParam {
        FunctionParam {
            name: self.name.clone(),
            description: self.description.clone(),
            parameters: self.parameters.clone(),
            strict: self.strict,
        }
    }
}

/// `tool_choice`: a mode (`none`, `auto`, `required`) or an object naming a function or a
/// built-in tool. Its values are checked by [`super::super::functions::FunctionChoice`].
#[derive(Debug, Clone)]
pub enum ToolChoiceParam {
    Mode(String),
    Object(ToolChoiceObject),
}

/// `{"type": "function", "name": N}` (Responses), `{"type": "function", "function": {"name":
/// N}}` (Chat Completions), or a built-in tool's `{"type": ...}`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ToolChoiceObject {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub name: Option<String>,
    pub function: Option<NamedFunction>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct NamedFunction {
    pub name: Option<String>,
}

impl<'de> Deserialize<'de> for ToolChoiceParam {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ChoiceVisitor;

        impl<'de> Visitor<'de> for ChoiceVisitor {
            type Value = ToolChoiceParam;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string or an object")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Self::Value, E> {
                Ok(ToolChoiceParam::Mode(text.to_string()))
            }

            fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                ToolChoiceObject::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(ToolChoiceParam::Object)
            }
        }

        deserializer.deserialize_any(ChoiceVisitor)
    }
}

/// `reasoning` (`{"effort": ...}`).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ReasoningParam {
    pub effort: Option<String>,
}

/// Chat Completions' `response_format`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema { json_schema: JsonSchemaFormat },
}

/// The Responses API's `text.format`: the same choices, the schema's fields beside `type`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TextFormat {
    Text,
    JsonObject,
    JsonSchema(JsonSchemaFormat),
}

/// A named JSON schema the answer must follow.
#[derive(Debug, Clone, Deserialize)]
pub struct JsonSchemaFormat {
    pub name: String,
    pub description: Option<String>,
    /// `None`: any JSON object.
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

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::serve::wire::responses::CreateResponseRequest;

    fn param_of<T: serde::de::DeserializeOwned>(body: Value) -> Option<String> {
        parse::<T>("", &body).err().and_then(|error| error.param)
    }

    #[test]
    fn a_wrong_kind_deep_in_lists_and_objects_is_named_by_its_path() {
        let input = json!([{"role": "user", "content": "a"},
            {"type": "function_call", "name": "f", "arguments": "{}"},
            {"role": "user", "content": [{"type": "input_text", "text": "b"}, {"type": []}]}]);
        assert_eq!(
            param_of::<CreateResponseRequest>(json!({"input": input})).as_deref(),
            Some("input[2].content[1].type")
        );
        assert_eq!(
            param_of::<CreateResponseRequest>(
                json!({"input": "hi", "tool_choice": {"type": "function", "function": {"name": []}}})
            )
            .as_deref(),
            Some("tool_choice.function.name")
        );
        // A part's own prefix joins the path.
        let error = parse::<Content>("input[0].output", &json!([{"type": 1}])).expect_err("kind");
        assert_eq!(error.param.as_deref(), Some("input[0].output[0].type"));
        // A body that fits is read, fields ossa does not read ignored.
        let read: CreateResponseRequest =
            parse("", &json!({"input": "hi", "user": "u", "tools": null})).expect("fits");
        assert!(read.tools.is_none());
    }

    #[test]
    fn a_format_is_one_parameter() {
        for format in [json!({"type": "yaml"}), json!({"type": "json_schema"})] {
            let body = json!({"input": "hi", "text": {"format": format}});
            assert_eq!(
                param_of::<CreateResponseRequest>(body).as_deref(),
                Some("text.format")
            );
        }
    }

    #[test]
    fn whole_numbers_take_any_64_bits() {
        for (seed, want) in [(json!(-1), -1i128), (json!(u64::MAX), i128::from(u64::MAX))] {
            let read: SamplingRequest = parse("", &json!({"seed": seed})).expect("whole");
            assert_eq!(read.seed.map(|s| s.0), Some(want));
        }
        for bad in [json!(1.5), json!("7"), json!(1e30)] {
            assert_eq!(
                param_of::<SamplingRequest>(json!({"top_k": bad})).as_deref(),
                Some("top_k")
            );
        }
    }
}
