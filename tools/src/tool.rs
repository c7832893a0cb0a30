//! The one interface the agent loop dispatches tool calls through.
//!
//! A [`Tool`] is shared by every conversation (HTTP client, sandbox, configuration). Per-conversation
//! state (the browser's page stack, a Python interpreter) lives in the [`ToolSession`] the tool opens
//! for each conversation, so one process can serve many conversations at once.

use std::path::PathBuf;

use async_trait::async_trait;

use crate::spec::ToolNamespaceConfig;

/// Where a namespace is declared in the harmony prompt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Placement {
    /// Built-in tools (`browser`, `python`) go into the system message.
    System,
    /// Developer-defined functions go into the developer message.
    Developer,
}

/// A model message addressed to a tool.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    /// The harmony recipient, e.g. `browser.search`, `python`, `functions.get_weather`.
    pub recipient: String,
    /// The channel the call was made on (results go back on the same channel).
    pub channel: Option<String>,
    /// The content type from the header, e.g. `json` or `<|constrain|>json` or `code`.
    pub content_type: Option<String>,
    /// The raw message text (JSON arguments, or code for `python`).
    pub content: String,
}

/// One message a tool sends back to the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutput {
    /// The tool author name the model sees, e.g. `browser.search`, `python`, `functions.get_weather`.
    pub author: String,
    /// Same channel as the call.
    pub channel: Option<String>,
    /// The text the model reads.
    pub content: String,
    /// Files the call produced (e.g. plots under `/mnt/data`), host paths, for the UI to show.
    pub files: Vec<PathBuf>,
}

impl ToolOutput {
    /// A text answer from `author` on the call's channel.
    pub fn text(call: &ToolCall, author: impl Into<String>, content: impl Into<String>) -> Self {
        Self {
            author: author.into(),
            channel: call.channel.clone(),
            content: content.into(),
            files: Vec::new(),
        }
    }
}

/// A tool shared across conversations.
pub trait Tool: Send + Sync {
    /// The namespace the model addresses (`browser`, `python`, `functions`).
    fn name(&self) -> &str;
    /// What the tool contributes to the prompt.
    fn namespace(&self) -> ToolNamespaceConfig;
    /// Where that description goes.
    fn placement(&self) -> Placement;
    /// State for one conversation.
    fn open_session(&self) -> Box<dyn ToolSession>;
}

/// One conversation's use of a tool.
#[async_trait]
pub trait ToolSession: Send {
    /// Answer a call. Failures (bad arguments, unknown function, fetch errors, timeouts) are
    /// returned as messages that tell the model what went wrong so it can recover; a tool call
    /// never aborts the conversation.
    async fn call(&mut self, call: &ToolCall) -> Vec<ToolOutput>;

    /// The URL of each page this conversation's browser has shown, by cursor, for turning the
    /// model's `【cursor†Lx-Ly】` citations into links (see [`crate::citations`]). `None` for
    /// tools that show no pages.
    fn citation_urls(&self) -> Option<Vec<String>> {
        None
    }
}
