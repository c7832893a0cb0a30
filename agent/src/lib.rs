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
    Agent, AgentConfig, AgentError, AgentEvent, Cancel, Chat, ConversationSettings, Limit,
    ToolRequirement, TurnOutcome, TurnReport, tool_message,
};
pub use backend::{
    Backend, BackendError, EngineBackend, Finish, GenerationRequest, GenerationStats, LogprobSink,
};
pub use structured::{HarmonyMask, JsonSchema, SchemaError, StructuredOutputs};
