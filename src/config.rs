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

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ossa_agent::harmony::ReasoningEffort;
use ossa_agent::remote::RemoteKind;
use ossa_engine::{DType, LoadOptions, PromptCacheOptions, SamplingParams};
use ossa_sandbox::{CallLimits, Limits, SandboxConfig, SandboxError, SessionOptions};
use ossa_tools::McpServerConfig;
use ossa_tools::browser::{
    BrowserConfig, FetchConfig, ReferenceQuirks, SearchBackendKind, SearchConfig,
};
use serde::{Deserialize, Deserializer};

use crate::toolset::ToolChoice;

/// The model used when neither the file nor a flag names one.
pub const DEFAULT_MODEL: &str = "openai/gpt-oss-20b";
/// gpt-oss's recommended sampling: temperature 1, top-p 1.
pub const DEFAULT_TEMPERATURE: f32 = 1.0;
pub const DEFAULT_TOP_P: f32 = 1.0;
pub const DEFAULT_REASONING_EFFORT: ReasoningEffort = ReasoningEffort::Low;
/// int8 kernels: the speed users compare runtimes by, with the published MXFP4 experts
/// untouched (the trained test agent's first reply of every scenario is token-exact in q8; the
/// exact-transcript tests use f32). The engine library's own default stays f32, the reference.
pub const DEFAULT_DTYPE: DType = DType::Q8;

/// A lookup of environment variables. [`process_env`] reads the process's; tests pass their own
/// so they need not change the process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment variable `name`, when set and not blank.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

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
    /// A flag's value is out of range.
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

/// Where a [`Config`] came from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum ConfigSource {
    /// Built in: there is no default location (neither `XDG_CONFIG_HOME` nor `HOME` is set).
    #[default]
    Defaults,
    /// The default location holds no file: defaults.
    Absent(PathBuf),
    /// Read from this file.
    File(PathBuf),
}

impl ConfigSource {
    /// The file read, or the default location that would have been.
    pub fn path(&self) -> Option<&Path> {
        match self {
            ConfigSource::Defaults => None,
            ConfigSource::Absent(path) | ConfigSource::File(path) => Some(path),
        }
    }
}

/// The config file's contents. Every key is optional; unset keys take the defaults described on
/// each field (applied by [`ConfigArgs::resolve`] and the accessors).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// A model name (`gpt-oss:20b`, `gpt-oss:120b`), a Hugging Face id or a model directory
    /// (default [`DEFAULT_MODEL`]).
    pub model: Option<String>,
    /// Precision: `f32` (the reference's numbers), `bf16`, or `q8` (int8 kernels; default).
    #[serde(deserialize_with = "de_dtype")]
    pub dtype: Option<DType>,
    /// Compute threads (default: every core).
    #[serde(deserialize_with = "de_count")]
    pub threads: Option<usize>,
    /// `low`, `medium` or `high` (default low).
    #[serde(deserialize_with = "de_effort")]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Instructions put in the developer message.
    pub developer_message: Option<String>,
    /// Tokens one model response may have at most (default: until the context is full).
    #[serde(deserialize_with = "de_count")]
    pub max_tokens: Option<usize>,
    /// Tokens a conversation may hold (its KV cache's bound; default: the model's context).
    #[serde(deserialize_with = "de_count")]
    pub context: Option<usize>,
    /// Sampling temperature, 0 (greedy) or more (default 1).
    #[serde(deserialize_with = "de_temperature")]
    pub temperature: Option<f32>,
    /// Nucleus sampling, in (0, 1] (default 1: off).
    #[serde(deserialize_with = "de_top_p")]
    pub top_p: Option<f32>,
    /// Sampling seed (default: drawn from the clock).
    pub seed: Option<u64>,
    pub tools: ToolsSection,
    pub search: SearchSection,
    pub browser: BrowserSection,
    pub python: PythonSection,
    pub prompt_cache: PromptCacheSection,
    /// MCP servers whose tools become functions (see [`McpServerConfig`]).
    pub mcp_servers: Vec<McpServerConfig>,
    /// Where this came from (not a key of the file).
    #[serde(skip)]
    pub source: ConfigSource,
}

/// `[tools]`: which tools are on by default (the `-b`/`-p` flags turn them on for one run,
/// `--no-browser`/`--no-python` off).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ToolsSection {
    pub browser: bool,
    pub python: bool,
    /// A folder the model may edit with the `apply_patch` function; unset: no such function.
    pub apply_patch_workspace: Option<PathBuf>,
}

/// `[search]`: the browser's search service.
#[derive(Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SearchSection {
    /// `duckduckgo` (keyless, the default), `exa`, `you`, `brave`, `tavily` or `searxng`.
    #[serde(deserialize_with = "de_backend")]
    pub backend: Option<SearchBackendKind>,
    /// The key of `backend` (else its environment variable, e.g. `EXA_API_KEY`).
    pub api_key: Option<String>,
    /// The API's base URL: the SearXNG instance, or a proxy for the others. `url` is an alias.
    #[serde(alias = "url", deserialize_with = "de_http_url")]
    pub base_url: Option<String>,
    /// Exa and You.com: read pages through their contents APIs (default true) rather than
    /// fetching them directly.
    pub provider_reads_pages: Option<bool>,
    /// Timeout of a search API call, in seconds (default 30).
    #[serde(deserialize_with = "de_seconds")]
    pub timeout_s: Option<f64>,
}

impl fmt::Debug for SearchSection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SearchSection")
            .field("backend", &self.backend)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("base_url", &self.base_url)
            .field("provider_reads_pages", &self.provider_reads_pages)
            .field("timeout_s", &self.timeout_s)
            .finish()
    }
}

/// `[browser]`: what the browser shows and how it fetches pages.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrowserSection {
    /// Viewport size in tokens (default 1024).
    #[serde(deserialize_with = "de_count")]
    pub view_tokens: Option<usize>,
    /// Results asked of the search service (default 20).
    #[serde(deserialize_with = "de_count")]
    pub max_search_results: Option<usize>,
    /// Searches and page fetches one conversation may make (default 100).
    #[serde(deserialize_with = "de_count")]
    pub page_budget: Option<usize>,
    /// Limit for a whole page fetch, in seconds (default 30).
    #[serde(deserialize_with = "de_seconds")]
    pub fetch_timeout_s: Option<f64>,
    /// Limit for connecting, in seconds (default 10).
    #[serde(deserialize_with = "de_seconds")]
    pub connect_timeout_s: Option<f64>,
    /// Redirects followed at most (default 10).
    pub max_redirects: Option<usize>,
    /// Bytes of a page read at most (default 5 MiB).
    #[serde(deserialize_with = "de_count")]
    pub max_page_bytes: Option<usize>,
    pub user_agent: Option<String>,
    /// Let pages lead to loopback and private-network addresses (default false).
    pub allow_private_addresses: Option<bool>,
    /// An HTTP proxy for page fetches (default none: direct, whatever `HTTP_PROXY` says).
    #[serde(deserialize_with = "de_http_url")]
    pub proxy: Option<String>,
    /// Reproduce OpenAI's reference browser exactly, bugs included (default false).
    pub reference_quirks: Option<bool>,
}

/// `[python]`: the sandbox's limits and the folder it may use.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PythonSection {
    /// Wall-clock limit of one call, in seconds (default 120).
    #[serde(deserialize_with = "de_seconds")]
    pub timeout_s: Option<f64>,
    /// Memory of the interpreter, in MiB (default 1024, at least 48).
    #[serde(deserialize_with = "de_memory_mb")]
    pub memory_mb: Option<u64>,
    /// Bytes kept per output stream of a call (default 1 MiB).
    #[serde(deserialize_with = "de_count")]
    pub output_bytes: Option<usize>,
    /// Host folder the code sees at `/mnt/data` (default: a private temporary folder per
    /// conversation, removed afterwards).
    pub mount: Option<PathBuf>,
    /// An interpreter unused this long is discarded, in seconds (default 1800; 0: never).
    pub idle_timeout_s: Option<u64>,
    /// An interpreter older than this is replaced, in seconds (default 43200; 0: never).
    pub lifetime_s: Option<u64>,
    /// Files the code may hold open at once (default 256).
    #[serde(deserialize_with = "de_count")]
    pub max_open_files: Option<usize>,
    /// MiB a conversation's `/tmp` and `/mnt/data` together may grow by (default 512).
    #[serde(deserialize_with = "de_count")]
    pub disk_mb: Option<usize>,
    /// Interpreters alive at once, all conversations together (default 16, at most 1024).
    #[serde(deserialize_with = "de_interpreters")]
    pub max_interpreters: Option<u32>,
    /// Memory all interpreters together may hold, in MiB (default 8192, at least 48).
    #[serde(deserialize_with = "de_memory_mb")]
    pub memory_budget_mb: Option<u64>,
    /// When all interpreters are in use, one unused this long may be ended to make room, in
    /// seconds (default 60; 0: never).
    pub evict_idle_s: Option<u64>,
}

/// `[prompt_cache]`: the keys and values of prompts seen before, kept on disk so a new process
/// starts without recomputing them (in `<data dir>/prompt-cache`; `OSSA_PROMPT_CACHE_DIR` moves
/// it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PromptCacheSection {
    /// Read and write it (default true; `--no-prompt-cache` turns it off for one run).
    pub enabled: Option<bool>,
    /// The folder is kept at most this big, in MiB; least recently used files go first
    /// (default 4096).
    #[serde(deserialize_with = "de_count_u64")]
    pub max_mb: Option<u64>,
}

/// Default bound of the prompt cache folder, in MiB.
pub const DEFAULT_PROMPT_CACHE_MB: u64 = ossa_engine::prompt_cache::DEFAULT_MAX_BYTES >> 20;

/// The prompt cache's folder: `OSSA_PROMPT_CACHE_DIR`, else `prompt-cache` in ossa's data folder
/// (`OSSA_DATA_DIR`, else `$XDG_DATA_HOME/ossa`, else `~/.local/share/ossa`); `None` when there is
/// no data folder (no `HOME`).
pub fn prompt_cache_dir(env: Env) -> Option<PathBuf> {
    if let Some(dir) = env("OSSA_PROMPT_CACHE_DIR") {
        return Some(PathBuf::from(dir));
    }
    ossa_sandbox::default_data_dir()
        .ok()
        .map(|dir| dir.join("prompt-cache"))
}

impl Config {
    /// The config file at `path`, which must exist; without one, the file `OSSA_CONFIG` names
    /// (which must exist), else the default location (defaults when there is no file there).
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Self::load_with(path, &process_env)
    }

    /// [`Config::load`] with the environment given.
    pub fn load_with(path: Option<&Path>, env: Env) -> Result<Config, ConfigError> {
        if let Some(path) = path {
            return Self::read_named(path, "--config", env);
        }
        if let Some(named) = env("OSSA_CONFIG") {
            return Self::read_named(Path::new(&named), "OSSA_CONFIG", env);
        }
        let Some(path) = default_config_path(env) else {
            return Ok(Config::default());
        };
        match std::fs::read_to_string(&path) {
            Ok(text) => Self::from_toml(&text, &path, env),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::debug!(path = %path.display(), "no config file; using defaults");
                Ok(Config {
                    source: ConfigSource::Absent(path),
                    ..Config::default()
                })
            }
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }

    fn read_named(path: &Path, named_by: &'static str, env: Env) -> Result<Config, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_toml(&text, path, env),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                Err(ConfigError::NotFound {
                    path: path.to_path_buf(),
                    named_by,
                })
            }
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Parses and checks a config file's text; `path` names it in errors and anchors its
    /// relative paths. `env` supplies `HOME` for `~/`.
    pub fn from_toml(text: &str, path: &Path, env: Env) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|error| {
            let (line, column, key) = match error.span() {
                Some(span) => {
                    let (line, column) = line_column(text, span.start);
                    (line, column, key_at(text, span))
                }
                None => (0, 0, None),
            };
            ConfigError::Parse {
                path: path.to_path_buf(),
                line,
                column,
                key,
                message: error.message().to_string(),
            }
        })?;
        config.check(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        let home = env("HOME");
        let fix = |p: &mut Option<PathBuf>| {
            if let Some(path) = p {
                *path = file_path(path, base, home.as_deref());
            }
        };
        if let Some(model) = &config.model
            && is_path_like(model)
        {
            config.model = Some(
                file_path(Path::new(model), base, home.as_deref())
                    .to_string_lossy()
                    .into_owned(),
            );
        }
        fix(&mut config.tools.apply_patch_workspace);
        fix(&mut config.python.mount);
        for server in &mut config.mcp_servers {
            fix(&mut server.cwd);
        }
        config.source = ConfigSource::File(path.to_path_buf());
        Ok(config)
    }

    /// What serde cannot check field by field.
    fn check(&self, path: &Path) -> Result<(), ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            key: key.to_string(),
            message,
        };
        if let Some(model) = &self.model
            && model.trim().is_empty()
        {
            return Err(invalid("model", "is empty".into()));
        }
        let search = &self.search;
        if let Some(key) = &search.api_key {
            match search.backend {
                None => {
                    return Err(invalid(
                        "search.api_key",
                        "set `backend` in [search] too: the key belongs to that service".into(),
                    ));
                }
                Some(kind @ (SearchBackendKind::DuckDuckGo | SearchBackendKind::Searxng)) => {
                    return Err(invalid(
                        "search.api_key",
                        format!("the {} backend takes no API key", kind.name()),
                    ));
                }
                Some(_) if key.trim().is_empty() => {
                    return Err(invalid("search.api_key", "is empty".into()));
                }
                Some(_) => {}
            }
        }
        if search.base_url.is_some() && search.backend.is_none() {
            return Err(invalid(
                "search.base_url",
                "set `backend` in [search] too: the URL belongs to that service".into(),
            ));
        }
        for (index, server) in self.mcp_servers.iter().enumerate() {
            let key = format!("mcp_servers[{index}]");
            if server.name.trim().is_empty() {
                return Err(invalid(&key, "`name` is empty".into()));
            }
            let key = format!("mcp_servers[{index}] ({})", server.name);
            match (&server.command, &server.url) {
                (Some(_), Some(_)) => {
                    return Err(invalid(
                        &key,
                        "give either `command` (stdio) or `url` (HTTP), not both".into(),
                    ));
                }
                (None, None) => {
                    return Err(invalid(
                        &key,
                        "give `command` (a stdio server) or `url` (an HTTP server)".into(),
                    ));
                }
                _ => {}
            }
            if self.mcp_servers[..index]
                .iter()
                .any(|other| other.name == server.name)
            {
                return Err(invalid(
                    &key,
                    format!("another server is also named `{}`", server.name),
                ));
            }
        }
        Ok(())
    }

    /// The search service to use: the file's `[search]`, then the environment
    /// (`OSSA_SEARCH_BACKEND`, the backend's key variable, `SEARXNG_URL`, `OSSA_SEARCH_BASE_URL`,
    /// `OSSA_BROWSER_FETCH=direct`). Fails when the backend's key (or SearXNG's URL) is missing.
    pub fn search_config(&self, env: Env) -> Result<SearchConfig, ConfigError> {
        let section = &self.search;
        let kind = match section.backend {
            Some(kind) => kind,
            None => match env("OSSA_SEARCH_BACKEND") {
                Some(name) => parse_backend(&name).map_err(|message| ConfigError::Env {
                    var: "OSSA_SEARCH_BACKEND",
                    message,
                })?,
                None => SearchBackendKind::DuckDuckGo,
            },
        };
        let file = self.source.path().map(Path::to_path_buf);
        let mut search = SearchConfig::new(kind);
        search.base_url = section
            .base_url
            .clone()
            .or_else(|| env("OSSA_SEARCH_BASE_URL"));
        match kind {
            SearchBackendKind::DuckDuckGo => {}
            SearchBackendKind::Searxng => {
                if search.base_url.is_none() {
                    search.base_url = env("SEARXNG_URL");
                }
                if search.base_url.is_none() {
                    return Err(ConfigError::MissingSearxngUrl { file });
                }
            }
            keyed => {
                let var = keyed.env_var().unwrap_or("API_KEY");
                search.api_key = section.api_key.clone().or_else(|| env(var));
                if search.api_key.is_none() {
                    return Err(ConfigError::MissingSearchKey {
                        backend: keyed.name(),
                        var,
                        file,
                    });
                }
            }
        }
        search.provider_reads_pages = section.provider_reads_pages.unwrap_or_else(|| {
            !env("OSSA_BROWSER_FETCH").is_some_and(|v| v.trim().eq_ignore_ascii_case("direct"))
        });
        if let Some(seconds) = section.timeout_s {
            search.api_timeout = Duration::from_secs_f64(seconds);
        }
        Ok(search)
    }

    /// The browser's settings from `[browser]`.
    pub fn browser_config(&self) -> BrowserConfig {
        let section = &self.browser;
        let defaults = BrowserConfig::default();
        BrowserConfig {
            view_tokens: section.view_tokens.unwrap_or(defaults.view_tokens),
            max_search_results: section
                .max_search_results
                .unwrap_or(defaults.max_search_results),
            page_budget: section.page_budget.unwrap_or(defaults.page_budget),
            quirks: match section.reference_quirks {
                Some(true) => ReferenceQuirks::all(),
                Some(false) => ReferenceQuirks::default(),
                None => defaults.quirks,
            },
        }
    }

    /// Page fetching limits from `[browser]`.
    pub fn fetch_config(&self) -> FetchConfig {
        let section = &self.browser;
        let mut fetch = FetchConfig::default();
        if let Some(seconds) = section.fetch_timeout_s {
            fetch.timeout = Duration::from_secs_f64(seconds);
        }
        if let Some(seconds) = section.connect_timeout_s {
            fetch.connect_timeout = Duration::from_secs_f64(seconds);
        }
        if let Some(n) = section.max_redirects {
            fetch.max_redirects = n;
        }
        if let Some(n) = section.max_page_bytes {
            fetch.max_bytes = n;
        }
        if let Some(agent) = &section.user_agent {
            fetch.user_agent = agent.clone();
        }
        if let Some(allow) = section.allow_private_addresses {
            fetch.allow_private_addresses = allow;
        }
        fetch.proxy.clone_from(&section.proxy);
        fetch
    }

    /// The sandbox's limits from `[python]`.
    pub fn sandbox_limits(&self) -> Limits {
        let section = &self.python;
        let mut limits = Limits::default();
        let call: &mut CallLimits = &mut limits.call;
        if let Some(seconds) = section.timeout_s {
            call.deadline = Duration::from_secs_f64(seconds);
        }
        if let Some(mib) = section.memory_mb {
            call.memory_bytes = mib.saturating_mul(1 << 20);
        }
        if let Some(bytes) = section.output_bytes {
            call.output_bytes = bytes;
        }
        let optional = |seconds: u64| (seconds > 0).then(|| Duration::from_secs(seconds));
        if let Some(seconds) = section.idle_timeout_s {
            limits.idle_timeout = optional(seconds);
        }
        if let Some(seconds) = section.lifetime_s {
            limits.lifetime = optional(seconds);
        }
        if let Some(files) = section.max_open_files {
            limits.max_open_files = files;
        }
        if let Some(mib) = section.disk_mb {
            limits.disk_bytes = (mib as u64).saturating_mul(1 << 20);
        }
        limits
    }

    /// How to open the sandbox: the runtime from the environment (`OSSA_DATA_DIR`,
    /// `OSSA_PYTHON_WASM`), `[python]`'s limits and the budget all conversations share.
    pub fn sandbox_config(&self) -> Result<SandboxConfig, SandboxError> {
        let section = &self.python;
        let mut config = SandboxConfig::from_env()?;
        config.limits = self.sandbox_limits();
        if let Some(interpreters) = section.max_interpreters {
            config.max_interpreters = interpreters;
        }
        if let Some(mib) = section.memory_budget_mb {
            config.memory_budget = mib.saturating_mul(1 << 20);
        }
        if let Some(seconds) = section.evict_idle_s {
            config.evict_idle_after = (seconds > 0).then(|| Duration::from_secs(seconds));
        }
        Ok(config)
    }

    /// Options of each conversation's Python session: the `[python] mount` folder (the sandbox's
    /// limits apply).
    pub fn python_session_options(&self) -> SessionOptions {
        SessionOptions {
            mount: self.python.mount.clone(),
            limits: None,
        }
    }
}

/// The default config file: `$XDG_CONFIG_HOME/ossa/config.toml` (when that is an absolute
/// path, as the XDG specification requires), else `$HOME/.config/ossa/config.toml`.
pub fn default_config_path(env: Env) -> Option<PathBuf> {
    if let Some(dir) = env("XDG_CONFIG_HOME")
        && Path::new(&dir).is_absolute()
    {
        return Some(PathBuf::from(dir).join("ossa").join("config.toml"));
    }
    env("HOME").map(|home| PathBuf::from(home).join(".config/ossa/config.toml"))
}

/// A model value that names a folder rather than a hub id.
fn is_path_like(model: &str) -> bool {
    model == "~"
        || model == "."
        || model == ".."
        || ["/", "~/", "./", "../"]
            .iter()
            .any(|prefix| model.starts_with(prefix))
}

/// A path from the file: `~/` expanded, relative paths taken from the file's folder.
fn file_path(path: &Path, base: &Path, home: Option<&str>) -> PathBuf {
    if let (Ok(rest), Some(home)) = (path.strip_prefix("~"), home) {
        return Path::new(home).join(rest);
    }
    let path: PathBuf = path
        .components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect();
    if path.is_relative() {
        base.join(path)
    } else {
        path
    }
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

/// The dotted key (`python.memory_mb`) of the `key = value` line holding `span`, with the table
/// header above it; `None` when the error is not on such a line (a header, a multi-line value).
fn key_at(text: &str, span: Range<usize>) -> Option<String> {
    let before = text.get(..span.start)?;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = text[line_start..].lines().next().unwrap_or("");
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    let bare = |k: &str| {
        !k.is_empty()
            && k.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
    };
    if !bare(key) {
        return None;
    }
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|header| {
            header
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|t| bare(t));
    Some(match table {
        Some(table) => format!("{table}.{key}"),
        None => key.to_string(),
    })
}

/// `low`, `medium` or `high`.
pub fn parse_effort(value: &str) -> Result<ReasoningEffort, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "low" => Ok(ReasoningEffort::Low),
        "medium" => Ok(ReasoningEffort::Medium),
        "high" => Ok(ReasoningEffort::High),
        _ => Err(format!(
            "unknown reasoning effort `{value}` (expected low, medium or high)"
        )),
    }
}

/// `f32`, `bf16` or `q8`.
pub fn parse_dtype(value: &str) -> Result<DType, String> {
    value.parse()
}

/// A search backend name (`duckduckgo`, `exa`, `you`, `brave`, `tavily`, `searxng`).
pub fn parse_backend(value: &str) -> Result<SearchBackendKind, String> {
    SearchBackendKind::parse(value).ok_or_else(|| {
        format!(
            "unknown search backend `{value}` (expected duckduckgo, exa, you, brave, tavily or \
             searxng)"
        )
    })
}

/// A date as `YYYY-MM-DD`, checked to exist.
pub fn parse_date(value: &str) -> Result<String, String> {
    let well_formed = value.len() == 10
        && value.char_indices().all(|(i, c)| {
            if i == 4 || i == 7 {
                c == '-'
            } else {
                c.is_ascii_digit()
            }
        });
    if well_formed && chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d").is_ok() {
        Ok(value.to_string())
    } else {
        Err(format!(
            "`{value}` is not a date written YYYY-MM-DD (e.g. 2025-08-05)"
        ))
    }
}

/// Today in the local time zone, `YYYY-MM-DD`.
pub fn today() -> String {
    chrono::Local::now()
        .date_naive()
        .format("%Y-%m-%d")
        .to_string()
}

fn check_temperature(value: f32) -> Result<f32, String> {
    if value.is_finite() && value >= 0.0 {
        Ok(value)
    } else {
        Err(format!(
            "temperature must be 0 (greedy) or more, got {value}"
        ))
    }
}

fn check_top_p(value: f32) -> Result<f32, String> {
    if value.is_finite() && value > 0.0 && value <= 1.0 {
        Ok(value)
    } else {
        Err(format!(
            "top_p must be more than 0 and at most 1, got {value}"
        ))
    }
}

fn check_count(value: usize) -> Result<usize, String> {
    if value == 0 {
        Err("must be at least 1".into())
    } else {
        Ok(value)
    }
}

fn check_interpreters(value: u32) -> Result<u32, String> {
    // Each interpreter's slot in the pool reserves address space (about 4 GiB) up front.
    if (1..=MAX_INTERPRETERS).contains(&value) {
        Ok(value)
    } else {
        Err(format!("must be 1 to {MAX_INTERPRETERS}, got {value}"))
    }
}

/// The most `[python] max_interpreters` may be.
pub const MAX_INTERPRETERS: u32 = 1024;

fn check_seconds(value: f64) -> Result<f64, String> {
    // Duration::from_secs_f64 panics past u64::MAX seconds; a year is more than any limit needs.
    if value.is_finite() && value > 0.0 && value <= 365.0 * 24.0 * 3600.0 {
        Ok(value)
    } else {
        Err(format!(
            "must be a number of seconds above 0 (and at most a year), got {value}"
        ))
    }
}

fn check_memory_mb(value: u64) -> Result<u64, String> {
    if value < 48 {
        Err(format!(
            "must be at least 48 (MiB): the interpreter alone starts at 40 MiB; got {value}"
        ))
    } else {
        Ok(value)
    }
}

fn custom<E: serde::de::Error>(message: String) -> E {
    E::custom(message)
}

fn de_effort<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ReasoningEffort>, D::Error> {
    parse_effort(&String::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

fn de_dtype<'de, D: Deserializer<'de>>(d: D) -> Result<Option<DType>, D::Error> {
    parse_dtype(&String::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

fn de_backend<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SearchBackendKind>, D::Error> {
    parse_backend(&String::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

fn de_http_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let url = String::deserialize(d)?;
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(Some(url))
    } else {
        Err(custom(format!(
            "must start with http:// or https://, got `{url}`"
        )))
    }
}

fn de_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<usize>, D::Error> {
    check_count(usize::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

fn de_count_u64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    match u64::deserialize(d)? {
        0 => Err(custom("must be at least 1".into())),
        n => Ok(Some(n)),
    }
}

fn de_seconds<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    check_seconds(f64::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

fn de_interpreters<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    check_interpreters(u32::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

fn de_memory_mb<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    check_memory_mb(u64::deserialize(d)?)
        .map(Some)
        .map_err(custom)
}

fn de_temperature<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    check_temperature(f64::deserialize(d)? as f32)
        .map(Some)
        .map_err(custom)
}

fn de_top_p<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f32>, D::Error> {
    check_top_p(f64::deserialize(d)? as f32)
        .map(Some)
        .map_err(custom)
}

/// The flags `ossa chat`, `ossa run` and `ossa serve` share (`#[command(flatten)]`); each
/// overrides the config file's value.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ConfigArgs {
    /// Config file [default: $XDG_CONFIG_HOME/ossa/config.toml, else
    /// ~/.config/ossa/config.toml; OSSA_CONFIG names another].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// A model name (gpt-oss:20b, gpt-oss:120b; `ossa list` shows what is downloaded), a
    /// Hugging Face id fetched once, or a model directory [default: gpt-oss:20b].
    #[arg(long, value_name = "NAME|DIR")]
    pub model: Option<String>,
    /// Compute threads [default: every core].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub threads: Option<usize>,
    /// Precision: f32 (exact), bf16, or q8 (int8 kernels, the fastest on a CPU) [default: q8].
    #[arg(long, value_name = "TYPE", value_parser = parse_dtype)]
    pub dtype: Option<DType>,
    /// How hard the model thinks: low, medium or high [default: low].
    #[arg(short = 'r', long, value_name = "EFFORT", value_parser = parse_effort)]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Give the model the browser (web search and pages).
    #[arg(short = 'b', long, overrides_with = "no_browser")]
    pub browser: bool,
    /// No browser, even if the config file turns it on.
    #[arg(long, overrides_with = "browser")]
    pub no_browser: bool,
    /// Give the model Python in the sandbox.
    #[arg(short = 'p', long, overrides_with = "no_python")]
    pub python: bool,
    /// No Python, even if the config file turns it on.
    #[arg(long, overrides_with = "python")]
    pub no_python: bool,
    /// Instructions for the developer message.
    #[arg(long, value_name = "TEXT")]
    pub developer_message: Option<String>,
    /// The conversation's date, shown to the model [default: today].
    #[arg(long, value_name = "YYYY-MM-DD", value_parser = parse_date)]
    pub date: Option<String>,
    /// Tokens one model response may have at most [default: until the context is full].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub max_tokens: Option<usize>,
    /// Tokens a conversation may hold, which bounds the KV cache's memory; a turn that would
    /// go past it stops with an error [default: the model's context, 131072 for gpt-oss].
    #[arg(long, value_name = "N", value_parser = parse_count)]
    pub context: Option<usize>,
    /// Sampling temperature; 0 is greedy [default: 1].
    #[arg(
        long,
        value_name = "T",
        value_parser = parse_temperature,
        allow_negative_numbers = true
    )]
    pub temperature: Option<f32>,
    /// Nucleus sampling: keep the likeliest tokens up to this probability [default: 1, off].
    #[arg(
        long,
        value_name = "P",
        value_parser = parse_top_p,
        allow_negative_numbers = true
    )]
    pub top_p: Option<f32>,
    /// Sampling seed, for repeatable runs.
    #[arg(long, value_name = "N")]
    pub seed: Option<u64>,
    /// Search service: duckduckgo, exa, you, brave, tavily or searxng.
    #[arg(long, value_name = "NAME", value_parser = parse_backend)]
    pub search_backend: Option<SearchBackendKind>,
    /// Host folder the Python code sees at /mnt/data [default: a private temporary folder].
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// Where tokens come from: `engine` (in this process) or `openai-completions` (a server
    /// such as vLLM, llama.cpp's llama-server or `ossa serve`, given by --url, sent token ids).
    #[arg(long, value_name = "KIND", value_parser = ["engine", "openai-completions"], default_value = "engine")]
    pub backend: String,
    /// The remote server's dialect: vllm (also `ossa serve`), llama-server or generic (any
    /// other OpenAI Completions API) [default: detected from the server].
    #[arg(long, value_name = "KIND", value_parser = parse_remote_kind)]
    pub remote_kind: Option<RemoteKind>,
    /// Base URL of the remote server's API, e.g. http://host:8000/v1.
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// The model name the remote server knows [default: the first it lists].
    #[arg(long, value_name = "NAME")]
    pub remote_model: Option<String>,
    /// Neither read nor write the prompt cache on disk (the keys and values of prompts seen
    /// before, so a new process starts without recomputing them; kept in
    /// $OSSA_DATA_DIR/prompt-cache, by default ~/.local/share/ossa/prompt-cache;
    /// OSSA_PROMPT_CACHE_DIR moves it).
    #[arg(long)]
    pub no_prompt_cache: bool,
}

/// A server that samples the tokens instead of the in-process engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteSettings {
    /// Base URL of its OpenAI-compatible API (`.../v1`).
    pub url: String,
    pub model: Option<String>,
    /// `None`: detected.
    pub kind: Option<RemoteKind>,
}

fn parse_remote_kind(value: &str) -> Result<RemoteKind, String> {
    RemoteKind::parse(value).ok_or_else(|| {
        format!(
            "unknown server kind `{value}` (expected {})",
            RemoteKind::NAMES.join(", ")
        )
    })
}

pub fn parse_count(value: &str) -> Result<usize, String> {
    let n: usize = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a whole number"))?;
    check_count(n)
}

/// A `--max-interpreters`-style flag's value, checked as `[python] max_interpreters` is.
pub fn parse_max_interpreters(value: &str) -> Result<u32, String> {
    let n: u32 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a whole number"))?;
    check_interpreters(n)
}

pub fn parse_temperature(value: &str) -> Result<f32, String> {
    let t: f32 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    check_temperature(t)
}

pub fn parse_top_p(value: &str) -> Result<f32, String> {
    let p: f32 = value
        .trim()
        .parse()
        .map_err(|_| format!("`{value}` is not a number"))?;
    check_top_p(p)
}

/// Everything a conversation needs to start: the config file merged with the flags, checked.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Model directory or Hugging Face id (for `ossa_engine::hub::resolve_model`).
    pub model: String,
    pub dtype: DType,
    /// `None`: every core.
    pub threads: Option<usize>,
    pub reasoning_effort: ReasoningEffort,
    pub developer_message: Option<String>,
    /// The conversation's date, `YYYY-MM-DD`.
    pub date: String,
    /// `None`: until the context is full.
    pub max_tokens: Option<usize>,
    /// Tokens a conversation may hold; `None`: the model's context.
    pub context: Option<usize>,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: Option<u64>,
    /// The built-in tools to give the model.
    pub tools: ToolChoice,
    /// The config with the flags applied (`--search-backend`, `--mount`): what
    /// [`crate::toolset::build_tools`] takes.
    pub config: Config,
    /// `Some`: generate on this server instead of loading the model here.
    pub remote: Option<RemoteSettings>,
    /// The prompt cache on disk; `None`: off.
    pub prompt_cache: Option<PromptCacheOptions>,
}

impl Settings {
    /// How to load the engine.
    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            dtype: self.dtype,
            threads: self.threads,
        }
    }

    /// How to sample (top-k off, as gpt-oss is meant to be sampled).
    pub fn sampling(&self) -> SamplingParams {
        SamplingParams {
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: 0,
            seed: self.seed,
        }
    }
}

impl ConfigArgs {
    /// Loads the config file and merges the flags over it.
    pub fn resolve(self) -> Result<Settings, ConfigError> {
        self.resolve_with(&process_env)
    }

    /// [`ConfigArgs::resolve`] with the environment given.
    pub fn resolve_with(self, env: Env) -> Result<Settings, ConfigError> {
        let mut config = Config::load_with(self.config.as_deref(), env)?;
        let flag = |flag: &'static str, result: Result<(), String>| {
            result.map_err(|message| ConfigError::Flag { flag, message })
        };
        // Flag values are checked by clap; these checks cover ConfigArgs built in code.
        if let Some(n) = self.threads {
            flag("--threads", check_count(n).map(drop))?;
        }
        if let Some(n) = self.max_tokens {
            flag("--max-tokens", check_count(n).map(drop))?;
        }
        if let Some(n) = self.context {
            flag("--context", check_count(n).map(drop))?;
        }
        if let Some(t) = self.temperature {
            flag("--temperature", check_temperature(t).map(drop))?;
        }
        if let Some(p) = self.top_p {
            flag("--top-p", check_top_p(p).map(drop))?;
        }
        let date = match self.date {
            Some(date) => parse_date(&date).map_err(|message| ConfigError::Flag {
                flag: "--date",
                message,
            })?,
            None => today(),
        };
        if let Some(model) = &self.model
            && model.trim().is_empty()
        {
            return Err(ConfigError::Flag {
                flag: "--model",
                message: "is empty".into(),
            });
        }

        if let Some(kind) = self.search_backend
            && config.search.backend != Some(kind)
        {
            // The file's key and URL belong to the file's backend, not to this one.
            config.search.backend = Some(kind);
            config.search.api_key = None;
            config.search.base_url = None;
        }
        if let Some(mount) = self.mount {
            config.python.mount = Some(mount);
        }
        let tools = ToolChoice {
            browser: (self.browser || config.tools.browser) && !self.no_browser,
            python: (self.python || config.tools.python) && !self.no_python,
        };
        if tools.browser {
            config.search_config(env)?;
        }
        let remote = match (self.backend.as_str(), self.url) {
            ("openai-completions", Some(url)) => Some(RemoteSettings {
                url,
                model: self.remote_model.clone(),
                kind: self.remote_kind,
            }),
            ("openai-completions", None) => {
                return Err(ConfigError::Flag {
                    flag: "--url",
                    message: "--backend openai-completions needs the server's --url (e.g. http://host:8000/v1)".into(),
                });
            }
            (_, Some(_)) => {
                return Err(ConfigError::Flag {
                    flag: "--url",
                    message: "--url is for --backend openai-completions".into(),
                });
            }
            _ if self.remote_kind.is_some() => {
                return Err(ConfigError::Flag {
                    flag: "--remote-kind",
                    message: "--remote-kind is for --backend openai-completions".into(),
                });
            }
            _ => None,
        };
        let prompt_cache = (!self.no_prompt_cache && config.prompt_cache.enabled.unwrap_or(true))
            .then(|| prompt_cache_dir(env))
            .flatten()
            .map(|dir| PromptCacheOptions {
                max_bytes: config
                    .prompt_cache
                    .max_mb
                    .unwrap_or(DEFAULT_PROMPT_CACHE_MB)
                    .saturating_mul(1 << 20),
                ..PromptCacheOptions::new(dir)
            });
        Ok(Settings {
            model: self
                .model
                .or_else(|| config.model.clone())
                .unwrap_or_else(|| DEFAULT_MODEL.to_string()),
            dtype: self.dtype.or(config.dtype).unwrap_or(DEFAULT_DTYPE),
            threads: self.threads.or(config.threads),
            reasoning_effort: self
                .reasoning_effort
                .or(config.reasoning_effort)
                .unwrap_or(DEFAULT_REASONING_EFFORT),
            developer_message: self
                .developer_message
                .or_else(|| config.developer_message.clone()),
            date,
            max_tokens: self.max_tokens.or(config.max_tokens),
            context: self.context.or(config.context),
            temperature: self
                .temperature
                .or(config.temperature)
                .unwrap_or(DEFAULT_TEMPERATURE),
            top_p: self.top_p.or(config.top_p).unwrap_or(DEFAULT_TOP_P),
            seed: self.seed.or(config.seed),
            tools,
            config,
            remote,
            prompt_cache,
        })
    }
}
