//! [`TokenizerError`], apart from the tokenizer so its encoders can return it.

use std::path::PathBuf;
use std::string::FromUtf8Error;

/// What went wrong loading a tokenizer or turning ids into text.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("cannot read tokenizer file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid tokenizer.json: {source}")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path} is not a tokenizer ossa can use: {reason}")]
    Unsupported { path: PathBuf, reason: String },
    #[error("the tokenizers library cannot load {path}: {message}")]
    HuggingFace { path: PathBuf, message: String },
    #[error("model directory {path} cannot be read: {source}")]
    ModelDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the built-in o200k_harmony tokenizer: {0}")]
    Builtin(String),
    #[error("token id {id} is not in the vocabulary (ids 0..{vocab_size})")]
    UnknownToken { id: u32, vocab_size: usize },
    #[error("the decoded bytes are not valid UTF-8: {source}")]
    InvalidUtf8 {
        #[source]
        source: FromUtf8Error,
    },
    #[error("encoding failed: {0}")]
    Encode(String),
}
