//! ossa-tools: the tools a gpt-oss agent can call (browser, python, functions).

pub mod apply_patch;
pub mod browser;
pub mod citations;
pub mod function;
pub mod mcp;
pub mod python;
pub mod sanitize;
pub mod schema;
pub mod spec;
pub mod tool;

pub use apply_patch::ApplyPatch;
pub use browser::{BrowserConfig, BrowserSession, BrowserTool};
pub use function::{Function, FunctionError, FunctionTools, TypedFunction};
pub use mcp::{McpServer, McpServerConfig};
pub use python::{PythonSession, PythonTool};
pub use sanitize::{strip_controls, strip_controls_in_place};
pub use spec::{ToolDescription, ToolNamespaceConfig};
pub use tool::{Placement, Tool, ToolCall, ToolOutput, ToolSession};
