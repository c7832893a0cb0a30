//! The config file: its TOML schema ([`Config`] and one struct per `[section]`), where it is
//! found, and its loading: parsing (each value checked by its type, see `values`), the checks
//! that span several keys, and the anchoring of relative paths at the file's folder.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ossa_agent::harmony::ReasoningEffort;
use ossa_engine::DType;
use ossa_tools::McpServerConfig;
use ossa_tools::browser::SearchBackendKind;
use serde::Deserialize;

use super::error::ConfigError;
use super::values::{Count, HttpUrl, Interpreters, MemoryMib, Seconds, Temperature, TopP, de_name};

/// A lookup of environment variables. [`process_env`] reads the process's; tests pass their own
/// so they need not change the process environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process's environment variable `name`, when set and not blank.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
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
/// each field (applied by [`ConfigArgs::resolve`](super::ConfigArgs::resolve) and the accessors).
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// A model name (`gpt-oss:20b`, `gpt-oss:120b`), a Hugging Face id or a model directory
    /// (default [`DEFAULT_MODEL`](super::DEFAULT_MODEL)).
    pub model: Option<String>,
    /// Precision: `f32` (the reference's numbers), `bf16`, or `q8` (int8 kernels; default).
    #[serde(deserialize_with = "de_name")]
    pub dtype: Option<DType>,
    /// Compute threads (default: every core).
    pub threads: Option<Count>,
    /// `low`, `medium` or `high` (default low).
    #[serde(deserialize_with = "de_name")]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Instructions put in the developer message.
    pub developer_message: Option<String>,
    /// Tokens one model response may have at most (default: until the context is full).
    pub max_tokens: Option<Count>,
    /// Tokens a conversation may hold (its KV cache's bound; default: the model's context).
    pub context: Option<Count>,
    /// Sampling temperature, 0 (greedy) or more (default 1).
    pub temperature: Option<Temperature>,
    /// Nucleus sampling, in (0, 1] (default 1: off).
    pub top_p: Option<TopP>,
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
    #[serde(deserialize_with = "de_name")]
    pub backend: Option<SearchBackendKind>,
    /// The key of `backend` (else its environment variable, e.g. `EXA_API_KEY`).
    pub api_key: Option<String>,
    /// The API's base URL: the SearXNG instance, or a proxy for the others. `url` is an alias.
    #[serde(alias = "url")]
    pub base_url: Option<HttpUrl>,
    /// Exa and You.com: read pages through their contents APIs (default true) rather than
    /// fetching them directly.
    pub provider_reads_pages: Option<bool>,
    /// Timeout of a search API call, in seconds (default 30).
    pub timeout_s: Option<Seconds>,
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
    pub view_tokens: Option<Count>,
    /// Results asked of the search service (default 20).
    pub max_search_results: Option<Count>,
    /// Searches and page fetches one conversation may make (default 100).
    pub page_budget: Option<Count>,
    /// Limit for a whole page fetch, in seconds (default 30).
    pub fetch_timeout_s: Option<Seconds>,
    /// Limit for connecting, in seconds (default 10).
    pub connect_timeout_s: Option<Seconds>,
    /// Redirects followed at most (default 10).
    pub max_redirects: Option<usize>,
    /// Bytes of a page read at most (default 5 MiB).
    pub max_page_bytes: Option<Count>,
    pub user_agent: Option<String>,
    /// Let pages lead to loopback and private-network addresses (default false).
    pub allow_private_addresses: Option<bool>,
    /// An HTTP proxy for page fetches (default none: direct, whatever `HTTP_PROXY` says).
    pub proxy: Option<HttpUrl>,
    /// Reproduce OpenAI's reference browser exactly, bugs included (default false).
    pub reference_quirks: Option<bool>,
}

/// `[python]`: the sandbox's limits and the folder it may use.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PythonSection {
    /// Wall-clock limit of one call, in seconds (default 120).
    pub timeout_s: Option<Seconds>,
    /// Memory of the interpreter, in MiB (default 1024, at least 48).
    pub memory_mb: Option<MemoryMib>,
    /// Bytes kept per output stream of a call (default 1 MiB).
    pub output_bytes: Option<Count>,
    /// Host folder the code sees at `/mnt/data` (default: a private temporary folder per
    /// conversation, removed afterwards).
    pub mount: Option<PathBuf>,
    /// An interpreter unused this long is discarded, in seconds (default 1800; 0: never).
    pub idle_timeout_s: Option<u64>,
    /// An interpreter older than this is replaced, in seconds (default 43200; 0: never).
    pub lifetime_s: Option<u64>,
    /// Files the code may hold open at once (default 256).
    pub max_open_files: Option<Count>,
    /// MiB a conversation's `/tmp` and `/mnt/data` together may grow by (default 512).
    pub disk_mb: Option<Count>,
    /// Interpreters alive at once, all conversations together (default 16, at most 1024).
    pub max_interpreters: Option<Interpreters>,
    /// Memory all interpreters together may hold, in MiB (default 8192, at least 48).
    pub memory_budget_mb: Option<MemoryMib>,
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
    pub max_mb: Option<Count>,
}

/// Default bound of the prompt cache folder, in MiB.
pub const DEFAULT_PROMPT_CACHE_MB: u64 = ossa_engine::prompt_cache::DEFAULT_MAX_BYTES >> 20;

impl PromptCacheSection {
    /// `max_mb`, else [`DEFAULT_PROMPT_CACHE_MB`].
    pub fn bound_mb(&self) -> u64 {
        self.max_mb
            .map_or(DEFAULT_PROMPT_CACHE_MB, |mb| mb.get() as u64)
    }
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
