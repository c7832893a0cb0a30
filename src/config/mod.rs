//! ossa's configuration: the config file, the flags that override it, and the merged
//! [`Settings`] that `ossa chat`, `ossa run` and `ossa serve` share.
//!
//! The file is `$XDG_CONFIG_HOME/ossa/config.toml`, else `~/.config/ossa/config.toml`;
//! `OSSA_CONFIG` or `--config FILE` name another one (which must then exist). A missing default
//! file means defaults. `config.example.toml` at the repository root shows every key.
//!
//! Precedence, highest first: command-line flags, the config file, environment variables
//! (`EXA_API_KEY`, `OSSA_SEARCH_BACKEND`, ...), built-in defaults. The file beats the environment
//! because it is ossa's own and explicit, while variables such as `EXA_API_KEY` are often set for
//! other programs too.
//!
//! Relative paths in the file are relative to the file's folder; `~/` is the home folder. In
//! flags they are relative to the current folder, as usual.
//!
//! The flow is file → args → settings, one file per step, each importing only the ones above
//! it in this list (none imports `mod.rs` or the toolset; `crate::toolset` imports this module):
//!
//! - `values`: the checked values ([`Temperature`], [`TopP`], [`Count`], [`Seconds`],
//!   [`MemoryMib`], [`Interpreters`], [`HttpUrl`], [`Date`]) and the `parse_*` of names.
//! - `error`: [`ConfigError`].
//! - `file`: the TOML schema ([`Config`], one struct per section) and its loading
//!   ([`Config::load`]): what serde cannot check value by value, and paths anchored at the file.
//! - `tools`: [`ToolChoice`] and the file's sections as the tool crates' configs
//!   ([`Config::search_config`], [`Config::sandbox_config`], ...).
//! - `args`: the flags ([`ConfigArgs`]), clap's low-level view.
//! - `settings`: file + flags → [`Settings`] ([`ConfigArgs::resolve`]), the defaults applied.
//!
//! Invariant: a value with a range is checked once, when its type is made (`new`, reached from
//! `FromStr` for flags and `TryFrom` for the file and code), with one message; [`Config`] and
//! [`ConfigArgs`] hold such values only as those types, so [`Settings`] is built from checked
//! values and never checks again.

mod args;
mod error;
mod file;
mod settings;
mod tools;
mod values;

pub use args::ConfigArgs;
pub use error::ConfigError;
pub use file::{
    BrowserSection, Config, ConfigSource, DEFAULT_PROMPT_CACHE_MB, Env, PromptCacheSection,
    PythonSection, SearchSection, ToolsSection, default_config_path, process_env,
};
pub use settings::{
    DEFAULT_DTYPE, DEFAULT_MODEL, DEFAULT_REASONING_EFFORT, DEFAULT_TEMPERATURE, DEFAULT_TOP_P,
    RemoteSettings, Settings, prompt_cache_dir,
};
pub use tools::ToolChoice;
pub use values::{
    Count, Date, HttpUrl, Interpreters, MAX_INTERPRETERS, MemoryMib, Seconds, Temperature, TopP,
    parse_backend, parse_count, parse_date, parse_dtype, parse_effort, parse_temperature,
    parse_top_p, today,
};
