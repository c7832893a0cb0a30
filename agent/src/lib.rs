//! ossa-agent: the harmony chat format and the agent loop.

pub mod harmony;
