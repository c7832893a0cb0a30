//! ossa: run gpt-oss as a tool-using agent on your own machine.
pub use ossa_agent as agent;
pub use ossa_engine as engine;
pub use ossa_sandbox as sandbox;
pub use ossa_tools as tools;

pub mod app;
pub mod config;
pub mod serve;
pub mod toolset;
