//! Developer-defined function tools: the `functions` namespace of the developer message.
//!
//! Every function, whether written in Rust ([`TypedFunction`]), served by an MCP server
//! ([`crate::mcp`]) or built in ([`crate::apply_patch`]), implements [`Function`]. A
//! [`FunctionTools`] gathers them into the one `functions` [`Tool`] the agent loop dispatches
//! `functions.NAME` calls to.
//!
//! A bad call never aborts the conversation: invalid JSON, arguments that break the schema, an
//! unknown function name and handler failures all come back as a `functions.NAME` message that
//! says what was wrong, so the model can correct itself and call again.

use std::fmt::Display;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use async_trait::async_trait;
use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::spec::{ToolDescription, ToolNamespaceConfig};
use crate::tool::{Placement, Tool, ToolCall, ToolOutput, ToolSession};

/// The harmony namespace developer functions live in: the model calls `functions.NAME`.
pub const NAMESPACE: &str = "functions";

/// At most this many schema violations are reported back to the model for one call.
const MAX_REPORTED_VIOLATIONS: usize = 8;

/// Why a call failed, worded for the model (the message it reads is `Error: {self}`).
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum FunctionError {
    /// The message was not JSON although the function takes JSON arguments.
    #[error(
        "the arguments are not valid JSON ({0}); send a JSON object that matches the parameters"
    )]
    InvalidJson(String),
    /// The JSON broke the function's parameter schema.
    #[error("invalid arguments: {}", .0.join("; "))]
    InvalidArguments(Vec<String>),
    /// The function ran and failed.
    #[error("{0}")]
    Failed(String),
}

/// A developer mistake while assembling the `functions` namespace.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum FunctionToolsError {
    /// Two functions with one name: the model could only ever reach one of them.
    #[error("two functions are named `{0}`")]
    DuplicateName(String),
    /// A name the model cannot address as `functions.NAME`.
    #[error(
        "invalid function name `{0}`: use 1 to 64 ASCII letters, digits, `_` or `-`, starting with a letter or `_`"
    )]
    InvalidName(String),
}

/// One function the model can call as `functions.NAME`.
#[async_trait]
pub trait Function: Send + Sync {
    /// Name, description and the parameter schema shown to the model.
    fn description(&self) -> &ToolDescription;
    /// Run the function on the model's raw message text (normally JSON arguments). The returned
    /// text is what the model reads.
    async fn call(&self, arguments: &str) -> Result<String, FunctionError>;
}

/// Whether `name` can be addressed as `functions.NAME` and rendered as `type NAME = ...`.
pub fn is_valid_function_name(name: &str) -> bool {
    let mut chars = name.chars();
    let Some(first) = chars.next() else {
        return false;
    };
    name.len() <= 64
        && (first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// The `functions` namespace: a set of [`Function`]s behind one [`Tool`].
#[derive(Clone, Default)]
pub struct FunctionTools {
    functions: Arc<Vec<Arc<dyn Function>>>,
}

impl FunctionTools {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a function; its name must be valid and not taken.
    pub fn add(
        &mut self,
        function: impl Function + 'static,
    ) -> Result<&mut Self, FunctionToolsError> {
        self.add_shared(Arc::new(function))
    }

    /// Add a function that is also held elsewhere.
    pub fn add_shared(
        &mut self,
        function: Arc<dyn Function>,
    ) -> Result<&mut Self, FunctionToolsError> {
        let name = &function.description().name;
        if !is_valid_function_name(name) {
            return Err(FunctionToolsError::InvalidName(name.clone()));
        }
        if self.contains(name) {
            return Err(FunctionToolsError::DuplicateName(name.clone()));
        }
        Arc::make_mut(&mut self.functions).push(function);
        Ok(self)
    }

    /// Whether a function of this name is already declared.
    pub fn contains(&self, name: &str) -> bool {
        self.functions.iter().any(|f| f.description().name == name)
    }

    /// The declared names, in declaration order.
    pub fn names(&self) -> Vec<String> {
        self.functions
            .iter()
            .map(|f| f.description().name.clone())
            .collect()
    }

    pub fn is_empty(&self) -> bool {
        self.functions.is_empty()
    }

    pub fn len(&self) -> usize {
        self.functions.len()
    }

    /// Answer one call addressed to `functions.NAME` (what a session does; also handy for
    /// `ossa tool functions.NAME ARGS`).
    pub async fn call(&self, call: &ToolCall) -> ToolOutput {
        let name = call
            .recipient
            .strip_prefix(NAMESPACE)
            .and_then(|rest| rest.strip_prefix('.'));
        let text = match name.and_then(|name| self.find(name)) {
            Some(function) => match function.call(&call.content).await {
                Ok(text) => text,
                Err(error) => {
                    tracing::debug!(recipient = %call.recipient, %error, "function call failed");
                    format!("Error: {error}")
                }
            },
            None => {
                tracing::debug!(recipient = %call.recipient, "call to an unknown function");
                let available = self.names();
                let available = if available.is_empty() {
                    "no functions are available".to_string()
                } else {
                    format!("available functions: {}", available.join(", "))
                };
                format!("Error: unknown function `{}`; {available}", call.recipient)
            }
        };
        ToolOutput::text(call, call.recipient.clone(), text)
    }

    fn find(&self, name: &str) -> Option<&Arc<dyn Function>> {
        self.functions.iter().find(|f| f.description().name == name)
    }
}

impl Tool for FunctionTools {
    fn name(&self) -> &str {
        NAMESPACE
    }

    fn namespace(&self) -> ToolNamespaceConfig {
        let tools = self
            .functions
            .iter()
            .map(|f| f.description().clone())
            .collect();
        ToolNamespaceConfig::new(NAMESPACE, None, tools)
    }

    fn placement(&self) -> Placement {
        Placement::Developer
    }

    fn open_session(&self) -> Box<dyn ToolSession> {
        Box::new(FunctionSession {
            tools: self.clone(),
        })
    }
}

struct FunctionSession {
    tools: FunctionTools,
}

#[async_trait]
impl ToolSession for FunctionSession {
    async fn call(&mut self, call: &ToolCall) -> Vec<ToolOutput> {
        vec![self.tools.call(call).await]
    }
}

/// A function written in Rust: arguments of type `A` (described by its `JsonSchema`), validated
/// and decoded before `handler` runs.
///
/// The handler returns `Result<R, E>`: a string `R` is passed to the model as is, any other
/// serializable `R` as compact JSON; an error `E` becomes `Error: {e}`.
///
/// ```
/// use ossa_tools::function::{FunctionTools, TypedFunction};
///
/// /// Weather request.
/// #[derive(serde::Deserialize, schemars::JsonSchema)]
/// struct Weather {
///     /// City and country, e.g. "Paris, France".
///     location: String,
/// }
///
/// let mut functions = FunctionTools::new();
/// functions
///     .add(TypedFunction::new(
///         "get_weather",
///         "Gets the current weather for a location.",
///         |args: Weather| async move { Ok::<_, String>(format!("sunny in {}", args.location)) },
///     ))
///     .unwrap();
/// ```
pub struct TypedFunction<A, H> {
    description: ToolDescription,
    arguments: ArgumentSchema,
    handler: H,
    _arguments: PhantomData<fn(A)>,
}

impl<A, H, Fut, R, E> TypedFunction<A, H>
where
    A: JsonSchema + DeserializeOwned + Send + 'static,
    H: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send,
    R: Serialize,
    E: Display,
{
    /// A function named `name`. When `description` is empty, the argument type's doc comment
    /// is used instead (the root doc comment is never rendered inside the parameter type).
    pub fn new(name: impl Into<String>, description: impl Into<String>, handler: H) -> Self {
        Self {
            description: ToolDescription::from_type::<A>(name, description),
            arguments: ArgumentSchema::new(parameters_schema::<A>()),
            handler,
            _arguments: PhantomData,
        }
    }
}

#[async_trait]
impl<A, H, Fut, R, E> Function for TypedFunction<A, H>
where
    A: JsonSchema + DeserializeOwned + Send + 'static,
    H: Fn(A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, E>> + Send,
    R: Serialize,
    E: Display,
{
    fn description(&self) -> &ToolDescription {
        &self.description
    }

    async fn call(&self, arguments: &str) -> Result<String, FunctionError> {
        let value = self.arguments.parse(arguments)?;
        let arguments: A = serde_json::from_value(value)
            .map_err(|error| FunctionError::InvalidArguments(vec![error.to_string()]))?;
        let result = (self.handler)(arguments)
            .await
            .map_err(|error| FunctionError::Failed(error.to_string()))?;
        result_text(&result)
    }
}

/// The text the model reads for a function's result: strings as they are, anything else as JSON.
pub fn result_text(result: &impl Serialize) -> Result<String, FunctionError> {
    match serde_json::to_value(result) {
        Ok(Value::String(text)) => Ok(text),
        Ok(value) => Ok(value.to_string()),
        Err(error) => Err(FunctionError::Failed(format!(
            "the result could not be serialized: {error}"
        ))),
    }
}

/// A function's parameter schema, compiled once: turns the model's message text into
/// validated JSON arguments.
pub struct ArgumentSchema {
    schema: Value,
    validator: Option<jsonschema::Validator>,
}

impl ArgumentSchema {
    /// Compile `schema`. A schema the validator cannot compile (possible for schemas from MCP
    /// servers) is still used for shape checks; only full validation is skipped, with a warning.
    pub fn new(schema: Value) -> Self {
        let validator = match jsonschema::validator_for(&schema) {
            Ok(validator) => Some(validator),
            Err(error) => {
                tracing::warn!(%error, "function parameter schema does not compile; arguments will not be validated");
                None
            }
        };
        Self { schema, validator }
    }

    /// The schema as given.
    pub fn schema(&self) -> &Value {
        &self.schema
    }

    /// Parse and validate the model's message text.
    ///
    /// Leniencies, each for output gpt-oss really produces: an empty message is `{}`; a JSON
    /// message wrapped in a Markdown code fence is unwrapped; for a function whose parameters are
    /// a plain string (like the reference's `apply_patch`), non-JSON text is that string.
    pub fn parse(&self, text: &str) -> Result<Value, FunctionError> {
        let text = strip_code_fence(text.trim());
        let takes_string = self.schema.get("type").and_then(Value::as_str) == Some("string");
        let value = if text.is_empty() {
            if takes_string {
                Value::String(String::new())
            } else {
                Value::Object(Map::new())
            }
        } else {
            match serde_json::from_str::<Value>(text) {
                Ok(Value::String(s)) if takes_string => Value::String(s),
                Ok(_) | Err(_) if takes_string => Value::String(text.to_string()),
                Ok(value) => value,
                Err(error) => return Err(FunctionError::InvalidJson(error.to_string())),
            }
        };
        self.validate(&value)?;
        Ok(value)
    }

    /// Check `value` against the schema; every violation is named with its JSON pointer.
    pub fn validate(&self, value: &Value) -> Result<(), FunctionError> {
        let Some(validator) = &self.validator else {
            return Ok(());
        };
        let mut violations = Vec::new();
        let mut total = 0usize;
        for error in validator.iter_errors(value) {
            for violation in describe_violation(&error) {
                total += 1;
                if violations.len() < MAX_REPORTED_VIOLATIONS {
                    violations.push(violation);
                }
            }
        }
        if total > violations.len() {
            violations.push(format!("and {} more", total - violations.len()));
        }
        if violations.is_empty() {
            Ok(())
        } else {
            Err(FunctionError::InvalidArguments(violations))
        }
    }
}

/// One schema violation in words, located by its JSON pointer. An `anyOf`/`oneOf` failure where
/// only one alternative has the right type (typically `X` or `null`) is explained by that
/// alternative's own violations: "not valid under any of the schemas" tells the model nothing.
fn describe_violation(error: &jsonschema::ValidationError<'_>) -> Vec<String> {
    use jsonschema::error::ValidationErrorKind;
    if let ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } =
        error.kind()
    {
        let path = error.instance_path();
        let mut candidates = context.iter().filter(|errors| {
            !(errors.len() == 1
                && matches!(errors[0].kind(), ValidationErrorKind::Type { .. })
                && errors[0].instance_path() == path)
        });
        if let (Some(only), None) = (candidates.next(), candidates.next()) {
            return only.iter().flat_map(describe_violation).collect();
        }
    }
    let path = error.instance_path().to_string();
    vec![if path.is_empty() {
        error.to_string()
    } else {
        format!("at {path}: {error}")
    }]
}

fn strip_code_fence(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let Some(body_start) = rest.find('\n') else {
        return text;
    };
    let Some(body) = rest[body_start + 1..].trim_end().strip_suffix("```") else {
        return text;
    };
    body.trim()
}

/// The JSON schema of `T` for validating its arguments: draft 2020-12, every subschema inlined
/// (recursive types keep their `$defs`), no `$schema`.
pub fn parameters_schema<T: JsonSchema>() -> Value {
    let generator = SchemaSettings::draft2020_12()
        .with(|settings| {
            settings.inline_subschemas = true;
            settings.meta_schema = None;
        })
        .into_generator();
    generator.into_root_schema_for::<T>().to_value()
}

/// The schema as the model should read it in the developer message.
///
/// openai-harmony renders parameters as TypeScript-like types and understands plain objects,
/// `properties`/`required`, `description`, `enum`, `oneOf`, `nullable`, `default` and `items`,
/// but not `$ref`, `anyOf`, `const` or `"type": "null"`. So: local `$ref`s are inlined (recursive
/// ones become `any`), `anyOf` becomes `oneOf`, `const` becomes a one-value `enum`, `null` is
/// dropped from optional properties and becomes `nullable` elsewhere, and `title`, `$schema`,
/// `$id`, `$comment` and the root `description` (rendered in a broken place) are removed.
/// Validation always uses the original schema; this copy is only for the prompt.
pub fn prompt_schema(schema: &Value) -> Value {
    let mut definitions = Map::new();
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(defs)) = schema.get(key) {
            for (name, def) in defs {
                definitions.insert(format!("#/{key}/{name}"), def.clone());
            }
        }
    }
    let mut rendered = schema.clone();
    let mut cleaner = SchemaCleaner {
        definitions: &definitions,
        expanding: Vec::new(),
    };
    cleaner.clean(&mut rendered, true);
    if let Value::Object(root) = &mut rendered {
        root.remove("$defs");
        root.remove("definitions");
        root.remove("description");
    }
    rendered
}

struct SchemaCleaner<'a> {
    definitions: &'a Map<String, Value>,
    expanding: Vec<String>,
}

impl SchemaCleaner<'_> {
    const MAX_DEPTH: usize = 32;

    /// `required`: whether a value must be present here (false for optional properties, where
    /// an explicit `null` says nothing the `?` does not already say).
    fn clean(&mut self, schema: &mut Value, required: bool) {
        let Value::Object(object) = schema else {
            return;
        };
        if let Some(Value::String(reference)) = object.get("$ref").cloned() {
            object.remove("$ref");
            let target = self.definitions.get(&reference).cloned();
            match target {
                Some(Value::Object(target))
                    if !self.expanding.contains(&reference)
                        && self.expanding.len() < Self::MAX_DEPTH =>
                {
                    for (key, value) in target {
                        object.entry(key).or_insert(value);
                    }
                    self.expanding.push(reference);
                    self.clean(schema, required);
                    self.expanding.pop();
                    return;
                }
                // Recursive or unresolvable: an unconstrained value, which harmony shows as `any`.
                _ => {}
            }
        }
        for key in [
            "$schema",
            "$id",
            "$comment",
            "title",
            "$defs",
            "definitions",
        ] {
            object.remove(key);
        }
        if object.get("default").is_some_and(Value::is_null) {
            object.remove("default");
        }
        if let Some(constant) = object.remove("const")
            && !object.contains_key("enum")
        {
            object.insert("enum".into(), Value::Array(vec![constant]));
        }
        if let Some(single) = single_all_of(object) {
            for (key, value) in single {
                object.entry(key).or_insert(value);
            }
        }
        if let Some(any_of) = object.remove("anyOf") {
            if object.contains_key("oneOf") {
                object.insert("anyOf".into(), any_of);
            } else {
                object.insert("oneOf".into(), any_of);
            }
        }
        self.drop_null_type(object, required);
        if self.drop_null_variant(object, required) {
            // The surviving variant was merged in unprocessed (it may be a `$ref`): go again.
            self.clean(schema, required);
            return;
        }

        let required_names: Vec<String> = object
            .get("required")
            .and_then(Value::as_array)
            .map(|names| {
                names
                    .iter()
                    .filter_map(Value::as_str)
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        if let Some(Value::Object(properties)) = object.get_mut("properties") {
            for (name, property) in properties.iter_mut() {
                self.clean(property, required_names.contains(name));
            }
        }
        for key in ["patternProperties"] {
            if let Some(Value::Object(map)) = object.get_mut(key) {
                for value in map.values_mut() {
                    self.clean(value, true);
                }
            }
        }
        for key in [
            "additionalProperties",
            "items",
            "contains",
            "not",
            "if",
            "then",
            "else",
            "propertyNames",
        ] {
            if let Some(value) = object.get_mut(key) {
                if let Value::Array(items) = value {
                    items.iter_mut().for_each(|item| self.clean(item, true));
                } else {
                    self.clean(value, true);
                }
            }
        }
        for key in ["oneOf", "anyOf", "allOf", "prefixItems"] {
            if let Some(Value::Array(items)) = object.get_mut(key) {
                items.iter_mut().for_each(|item| self.clean(item, true));
            }
        }
    }

    /// `"type": ["string", "null"]`: `string` for an optional value, else `nullable`.
    fn drop_null_type(&self, object: &mut Map<String, Value>, required: bool) {
        let Some(Value::Array(types)) = object.get("type") else {
            return;
        };
        if !types.iter().any(|t| t == "null") {
            return;
        }
        let rest: Vec<Value> = types.iter().filter(|t| *t != "null").cloned().collect();
        match rest.len() {
            0 => return,
            1 => {
                object.insert("type".into(), rest[0].clone());
            }
            _ => {
                object.insert("type".into(), Value::Array(rest));
            }
        }
        if let Some(Value::Array(values)) = object.get_mut("enum") {
            values.retain(|v| !v.is_null());
        }
        if required {
            object.insert("nullable".into(), Value::Bool(true));
        }
    }

    /// `oneOf: [X, {"type": "null"}]`: X itself (merged in when alone), `nullable` if required.
    /// Returns whether a lone surviving variant was merged into `object`.
    fn drop_null_variant(&self, object: &mut Map<String, Value>, required: bool) -> bool {
        let Some(Value::Array(variants)) = object.get("oneOf") else {
            return false;
        };
        let is_null = |v: &Value| v.get("type").and_then(Value::as_str) == Some("null");
        if !variants.iter().any(is_null) {
            return false;
        }
        let mut rest: Vec<Value> = variants.iter().filter(|v| !is_null(v)).cloned().collect();
        if rest.is_empty() {
            return false;
        }
        if required {
            object.insert("nullable".into(), Value::Bool(true));
        }
        if rest.len() > 1 {
            object.insert("oneOf".into(), Value::Array(rest));
            return false;
        }
        object.remove("oneOf");
        if let Value::Object(variant) = rest.remove(0) {
            for (key, value) in variant {
                object.entry(key).or_insert(value);
            }
        }
        true
    }
}

fn single_all_of(object: &mut Map<String, Value>) -> Option<Map<String, Value>> {
    match object.get("allOf") {
        Some(Value::Array(items)) if items.len() == 1 && items[0].is_object() => {}
        _ => return None,
    }
    match object.remove("allOf") {
        Some(Value::Array(mut items)) => match items.remove(0) {
            Value::Object(single) => Some(single),
            _ => None,
        },
        _ => None,
    }
}
