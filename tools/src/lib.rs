//! ossa-tools: the tools a gpt-oss agent can call (browser, python, functions).

pub mod spec;
pub mod tool;

pub use spec::{ToolDescription, ToolNamespaceConfig};
pub use tool::{Placement, Tool, ToolCall, ToolOutput, ToolSession};
