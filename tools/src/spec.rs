//! How a tool describes itself to the model: the harmony tool namespace types.
//!
//! The serde shape is openai-harmony's (`ToolNamespaceConfig`, `ToolDescription`) so saved
//! conversations round-trip with OpenAI's library. The built-in `browser` and `python`
//! namespaces carry OpenAI's descriptions verbatim: gpt-oss was trained on these exact words.

use serde::{Deserialize, Serialize};
use serde_json::json;

/// One function inside a namespace: name, description and JSON-Schema parameters.
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ToolDescription {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments; left out of the JSON when `None`, as Python's
    /// `Conversation.to_json()` does.
    pub parameters: Option<serde_json::Value>,
}

impl ToolDescription {
    pub fn new(
        name: impl Into<String>,
        description: impl Into<String>,
        parameters: Option<serde_json::Value>,
    ) -> Self {
        Self {
            name: name.into(),
            description: description.into(),
            parameters,
        }
    }

    /// A function described by the Rust type of its arguments (`#[derive(JsonSchema)]`): the
    /// parameters are its schema as the model should read it ([`prompt_schema`]), field doc
    /// comments becoming descriptions. An empty `description` takes the type's doc comment.
    /// A type whose schema expands past the budget is shown as deep as it fits, with a warning
    /// naming the function in the log.
    ///
    /// [`prompt_schema`]: crate::schema::prompt_schema
    pub fn from_type<T: schemars::JsonSchema>(
        name: impl Into<String>,
        description: impl Into<String>,
    ) -> Self {
        let name = name.into();
        let schema = crate::schema::parameters_schema::<T>();
        let mut description = description.into();
        if description.is_empty()
            && let Some(doc) = schema
                .get("description")
                .and_then(serde_json::Value::as_str)
        {
            description = doc.to_string();
        }
        let parameters = crate::schema::prompt_schema(&schema).unwrap_or_else(|error| {
            tracing::warn!("function `{name}`: {error}");
            error.into_shown()
        });
        Self::new(name, description, Some(parameters))
    }
}

/// A namespace of tools (`browser`, `python`, `functions`, ...).
#[serde_with::skip_serializing_none]
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ToolNamespaceConfig {
    pub name: String,
    /// Left out of the JSON when `None`, as Python's `Conversation.to_json()` does.
    pub description: Option<String>,
    #[serde(default)]
    pub tools: Vec<ToolDescription>,
}

const BROWSER_DESCRIPTION: &str = "Tool for browsing.\nThe `cursor` appears in brackets before each browsing display: `[{cursor}]`.\nCite information from the tool using the following format:\n`【{cursor}†L{line_start}(-L{line_end})?】`, for example: `【6†L9-L11】` or `【8†L3】`.\nDo not quote more than 10 words directly from the tool output.\nsources=web (default: web)";

const BROWSER_OPEN_DESCRIPTION: &str = "Opens the link `id` from the page indicated by `cursor` starting at line number `loc`, showing `num_lines` lines.\nValid link ids are displayed with the formatting: `【{id}†.*】`.\nIf `cursor` is not provided, the most recent page is implied.\nIf `id` is a string, it is treated as a fully qualified URL associated with `source`.\nIf `loc` is not provided, the viewport will be positioned at the beginning of the document or centered on the most relevant passage, if available.\nUse this function without `id` to scroll to a new location of an opened page.";

const PYTHON_DESCRIPTION: &str = "Use this tool to execute Python code in your chain of thought. The code will not be shown to the user. This tool should be used for internal reasoning, but not for code that is intended to be visible to the user (e.g. when creating plots, tables, or files).\n\nWhen you send a message containing Python code to python, it will be executed in a stateful Jupyter notebook environment. python will respond with the output of the execution or time out after 120.0 seconds. The drive at '/mnt/data' can be used to save and persist user files. Internet access for this session is UNKNOWN. Depends on the cluster.";

impl ToolNamespaceConfig {
    pub fn new(
        name: impl Into<String>,
        description: Option<String>,
        tools: Vec<ToolDescription>,
    ) -> Self {
        Self {
            name: name.into(),
            description,
            tools,
        }
    }

    /// The built-in `browser` namespace exactly as gpt-oss was trained on it.
    pub fn browser() -> Self {
        Self::new(
            "browser",
            Some(BROWSER_DESCRIPTION.to_string()),
            vec![
                ToolDescription::new(
                    "search",
                    "Searches for information related to `query` and displays `topn` results.",
                    Some(json!({
                        "type": "object",
                        "properties": {
                            "query": {"type": "string"},
                            "topn": {"type": "number", "default": 10},
                            "source": {"type": "string"}
                        },
                        "required": ["query"]
                    })),
                ),
                ToolDescription::new(
                    "open",
                    BROWSER_OPEN_DESCRIPTION,
                    Some(json!({
                        "type": "object",
                        "properties": {
                            "id": {"type": ["number", "string"], "default": -1},
                            "cursor": {"type": "number", "default": -1},
                            "loc": {"type": "number", "default": -1},
                            "num_lines": {"type": "number", "default": -1},
                            "view_source": {"type": "boolean", "default": false},
                            "source": {"type": "string"}
                        }
                    })),
                ),
                ToolDescription::new(
                    "find",
                    "Finds exact matches of `pattern` in the current page, or the page given by `cursor`.",
                    Some(json!({
                        "type": "object",
                        "properties": {
                            "pattern": {"type": "string"},
                            "cursor": {"type": "number", "default": -1}
                        },
                        "required": ["pattern"]
                    })),
                ),
            ],
        )
    }

    /// The built-in `python` namespace exactly as gpt-oss was trained on it.
    pub fn python() -> Self {
        Self::new("python", Some(PYTHON_DESCRIPTION.to_string()), vec![])
    }
}
