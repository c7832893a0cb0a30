//! What the tools are built from: [`ToolChoice`] (which built-in tools a run gets) and the
//! conversion of the file's sections into the tool crates' own configs (`SearchConfig`,
//! `BrowserConfig`, `FetchConfig`, the sandbox's `Limits` and `SandboxConfig`). The toolset
//! builds the tools from these; nothing here builds a tool.

use std::path::Path;
use std::time::Duration;

use ossa_sandbox::{CallLimits, Limits, SandboxConfig, SandboxError, SessionOptions};
use ossa_tools::browser::{
    BrowserConfig, FetchConfig, ReferenceQuirks, SearchBackendKind, SearchConfig,
};

use super::error::ConfigError;
use super::file::{Config, Env};
use super::values::{Count, HttpUrl, parse_backend};

/// The built-in tools to give the model.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ToolChoice {
    pub browser: bool,
    pub python: bool,
}

impl Config {
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
            .map(HttpUrl::into_string)
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
            search.api_timeout = seconds.duration();
        }
        Ok(search)
    }

    /// The browser's settings from `[browser]`.
    pub fn browser_config(&self) -> BrowserConfig {
        let section = &self.browser;
        let defaults = BrowserConfig::default();
        BrowserConfig {
            view_tokens: section.view_tokens.map_or(defaults.view_tokens, Count::get),
            max_search_results: section
                .max_search_results
                .map_or(defaults.max_search_results, Count::get),
            page_budget: section.page_budget.map_or(defaults.page_budget, Count::get),
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
            fetch.timeout = seconds.duration();
        }
        if let Some(seconds) = section.connect_timeout_s {
            fetch.connect_timeout = seconds.duration();
        }
        if let Some(n) = section.max_redirects {
            fetch.max_redirects = n;
        }
        if let Some(n) = section.max_page_bytes {
            fetch.max_bytes = n.get();
        }
        if let Some(agent) = &section.user_agent {
            fetch.user_agent = agent.clone();
        }
        if let Some(allow) = section.allow_private_addresses {
            fetch.allow_private_addresses = allow;
        }
        fetch.proxy = section.proxy.clone().map(HttpUrl::into_string);
        fetch
    }

    /// The sandbox's limits from `[python]`.
    pub fn sandbox_limits(&self) -> Limits {
        let section = &self.python;
        let mut limits = Limits::default();
        let call: &mut CallLimits = &mut limits.call;
        if let Some(seconds) = section.timeout_s {
            call.deadline = seconds.duration();
        }
        if let Some(mib) = section.memory_mb {
            call.memory_bytes = mib.bytes();
        }
        if let Some(bytes) = section.output_bytes {
            call.output_bytes = bytes.get();
        }
        let optional = |seconds: u64| (seconds > 0).then(|| Duration::from_secs(seconds));
        if let Some(seconds) = section.idle_timeout_s {
            limits.idle_timeout = optional(seconds);
        }
        if let Some(seconds) = section.lifetime_s {
            limits.lifetime = optional(seconds);
        }
        if let Some(files) = section.max_open_files {
            limits.max_open_files = files.get();
        }
        if let Some(mib) = section.disk_mb {
            limits.disk_bytes = (mib.get() as u64).saturating_mul(1 << 20);
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
            config.max_interpreters = interpreters.get();
        }
        if let Some(mib) = section.memory_budget_mb {
            config.memory_budget = mib.bytes();
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
