//! ossa-agent: the harmony chat format and the agent loop.
//!
//! - [`harmony`]: rendering conversations to tokens and parsing sampled tokens, token-exact with
//!   openai-harmony.
//! - [`Backend`]: where tokens come from ([`EngineBackend`] runs the in-process engine,
//!   [`remote::RemoteBackend`] a server's Completions API).
//! - [`Agent`] / [`Chat`]: the loop that renders, samples, parses, calls tools and feeds their
//!   results back, emitting [`AgentEvent`]s as it goes.

mod agent;
mod backend;
pub mod harmony;
pub mod remote;
pub mod structured;

pub use agent::{
    Agent, AgentConfig, AgentError, AgentEvent, Chat, ConversationSettings, Limit, ToolRequirement,
    TurnOutcome, TurnReport, tool_message,
};
pub use backend::{
    Backend, BackendError, EngineBackend, Finish, GenerationRequest, GenerationStats, LogprobSink,
};
/// Cancels a turn: the running generation stops before its next token and a running tool call
/// is abandoned. Cloning shares it; use a fresh one per turn. The engine's type, so the same
/// token reaches the generation.
pub use ossa_engine::CancellationToken;
pub use structured::{HarmonyMask, JsonSchema, SchemaError, StructuredOutputs};
