//! Typed errors of the engine. Every loading error names the file and, where there is one, the
//! tensor, so a broken checkpoint can be found without a debugger.

use std::path::PathBuf;

/// Everything that can go wrong while loading a model or generating from it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{path} is not a valid config: {message}")]
    Config { path: PathBuf, message: String },

    #[error("{path}: model_type {found:?} is not supported (this engine runs \"gpt_oss\")")]
    UnknownModelType { path: PathBuf, found: String },

    #[error("{path}: {key} = {value} is not supported: {reason}")]
    UnsupportedConfig {
        path: PathBuf,
        key: String,
        value: String,
        reason: String,
    },

    #[error(
        "no weights found in {dir}: expected model.safetensors or model.safetensors.index.json"
    )]
    NoWeights { dir: PathBuf },

    #[error("{path} is not a valid safetensors file: {message}")]
    BadSafetensors { path: PathBuf, message: String },

    #[error(
        "{path} is truncated: tensor {tensor} ends at byte {needed} but the file has {actual} bytes"
    )]
    Truncated {
        path: PathBuf,
        tensor: String,
        needed: u64,
        actual: u64,
    },

    #[error("tensor {tensor} is missing (looked in {searched})")]
    MissingTensor { tensor: String, searched: String },

    #[error("{path}: tensor {tensor} has shape {found:?}, expected {expected:?}")]
    WrongShape {
        path: PathBuf,
        tensor: String,
        expected: Vec<usize>,
        found: Vec<usize>,
    },

    #[error("{path}: tensor {tensor} has dtype {found}, expected {expected}")]
    WrongDtype {
        path: PathBuf,
        tensor: String,
        expected: String,
        found: String,
    },

    #[error("{index}: tensor {tensor} is mapped to {file}, which does not exist")]
    MissingShard {
        index: PathBuf,
        tensor: String,
        file: PathBuf,
    },

    #[error("token id {token} is outside the vocabulary (size {vocab_size})")]
    TokenOutOfRange { token: u32, vocab_size: usize },

    #[error("the sequence would have {needed} tokens, more than the model's {max} positions")]
    ContextOverflow { needed: usize, max: usize },

    #[error("the prompt is empty: generation needs at least one token")]
    EmptyPrompt,

    #[error("invalid sampling parameter {name} = {value}: {reason}")]
    BadSampling {
        name: &'static str,
        value: String,
        reason: &'static str,
    },

    #[error("{other} is not the same model as {reference}: {what} differ")]
    ModelMismatch {
        reference: PathBuf,
        other: PathBuf,
        what: &'static str,
    },

    #[error(
        "pinned routing does not fit the call: layer {layer} needs {expected} expert ids (tokens × k, each below {experts}, distinct per token), got {found}"
    )]
    PinnedRouting {
        layer: usize,
        expected: usize,
        experts: usize,
        found: String,
    },

    #[error("cannot build a thread pool with {threads} threads: {message}")]
    ThreadPool { threads: usize, message: String },

    #[error("this CPU cannot run the {wanted} kernels (it has: {available})")]
    IsaUnavailable {
        wanted: &'static str,
        available: String,
    },

    #[error("tokenizer: {0}")]
    Tokenizer(String),

    #[error("model {model}: {message}")]
    Hub { model: String, message: String },
}

pub type Result<T, E = EngineError> = std::result::Result<T, E>;

impl EngineError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        EngineError::Io {
            path: path.into(),
            source,
        }
    }
}
