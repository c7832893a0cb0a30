//! Why a configuration cannot be used: [`ConfigError`], for the file, the flags and the
//! environment alike.

use std::path::{Path, PathBuf};

/// Why the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A config file named explicitly (`--config`, `OSSA_CONFIG`) is not there.
    #[error("config file {path} (named by {named_by}) does not exist")]
    NotFound {
        path: PathBuf,
        named_by: &'static str,
    },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, has an unknown key, or a value of the wrong kind.
    #[error("{}", parse_message(path, *line, *column, key.as_deref(), message))]
    Parse {
        path: PathBuf,
        /// 1-based; 0 when the parser gave no position.
        line: usize,
        column: usize,
        /// The dotted key at that position (`python.memory_mb`), when there is one.
        key: Option<String>,
        message: String,
    },
    /// A value that parses but cannot work (a duplicate MCP server name, a key without its
    /// backend).
    #[error("{}: `{key}`: {message}", path.display())]
    Invalid {
        path: PathBuf,
        key: String,
        message: String,
    },
    /// Flags that do not go together, or an empty `--model` (values with a range are refused
    /// when parsed, with their own message).
    #[error("{flag}: {message}")]
    Flag { flag: &'static str, message: String },
    /// An environment variable ossa reads has a bad value.
    #[error("environment variable {var}: {message}")]
    Env { var: &'static str, message: String },
    /// The search backend in use has no API key.
    #[error(
        "the {backend} search backend needs an API key: set {var} or [search] api_key in {}",
        location_hint(file)
    )]
    MissingSearchKey {
        backend: &'static str,
        var: &'static str,
        file: Option<PathBuf>,
    },
    /// SearXNG in use without its instance URL.
    #[error(
        "the searxng search backend needs the instance URL: set SEARXNG_URL or [search] url in {} \
         (e.g. http://localhost:8080)",
        location_hint(file)
    )]
    MissingSearxngUrl { file: Option<PathBuf> },
}

fn parse_message(
    path: &Path,
    line: usize,
    column: usize,
    key: Option<&str>,
    message: &str,
) -> String {
    let mut out = path.display().to_string();
    if line > 0 {
        out.push_str(&format!(":{line}:{column}"));
    }
    if let Some(key) = key {
        out.push_str(&format!(": `{key}`"));
    }
    out.push_str(": ");
    out.push_str(message.trim_end());
    out
}

fn location_hint(file: &Option<PathBuf>) -> String {
    match file {
        Some(path) => path.display().to_string(),
        None => "ossa's config file (~/.config/ossa/config.toml)".to_string(),
    }
}
