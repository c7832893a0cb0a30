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
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::schema::parameters_schema;
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

impl<A: JsonSchema, H> TypedFunction<A, H> {
    /// A function named `name`. When `description` is empty, the argument type's doc comment
    /// is used instead (the root doc comment is never rendered inside the parameter type).
    ///
    /// Only the bound that ties the handler's argument to `A` is needed here (it lets a closure's
    /// parameter type be inferred); the rest is checked where it becomes a [`Function`].
    pub fn new<Fut>(name: impl Into<String>, description: impl Into<String>, handler: H) -> Self
    where
        H: Fn(A) -> Fut,
    {
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
