//! The built-in `browser` tool gpt-oss was trained on: `search`, `open`, `find`, with cursors
//! and citations.
//!
//! Layers, each with its own file:
//! - [`session`]: the commands and the page stack, with the reference's argument semantics;
//! - [`display`]: from a page to the text the model reads (header, 80-column numbered lines,
//!   o200k-token viewport, `find` pages), byte-identical to OpenAI's reference;
//! - [`html`]: from HTML to a page (link ids as the reference assigns them, ossa's text);
//! - [`fetch`] and [`search`]: HTTP with limits, and the search providers.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ossa_tools::browser::BrowserConfigError> {
//! use ossa_tools::browser::{BrowserConfig, BrowserTool, SearchConfig};
//! let search = SearchConfig::from_env()?; // OSSA_SEARCH_BACKEND, EXA_API_KEY, ...
//! let tool = BrowserTool::new(search.build(Default::default())?, BrowserConfig::default());
//! let mut session = tool.session(); // one per conversation
//! # Ok(()) }
//! ```

mod backend;
pub mod display;
pub mod fetch;
mod html;
mod page;
mod pyfmt;
pub mod search;
mod session;
mod textwrap;
mod tokens;

use std::sync::Arc;

pub use backend::{BrowserBackend, BrowserBackendError};
pub use fetch::{FetchConfig, FetchError, Fetcher};
pub use html::{
    HtmlError, SearchResult, process_html, search_results_page, source_page, text_page,
};
pub use page::{PageContents, Snippet};
pub use search::{
    ApiProvider, ApiSpec, BRAVE, DuckDuckGoProvider, EXA, ProviderPage, SEARXNG, SearchProvider,
    TAVILY, WebBackend, YOU,
};
pub use session::BrowserSession;
pub use textwrap::wrap_lines;

pub(crate) use pyfmt::unquote as unquote_url;

use crate::spec::ToolNamespaceConfig;
use crate::tool::{Placement, Tool, ToolSession};

/// Reference behaviours that are bugs; ossa fixes each one unless its switch is on. All on
/// reproduces OpenAI's `SimpleBrowserTool` exactly (for conformance runs and evaluations).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReferenceQuirks {
    /// Every search page has the URL `""` and is looked up by it, so an older search cursor
    /// (and `find` results on it) show the newest search's results.
    pub shared_search_url: bool,
    /// `find` strips link markup across wrapped lines, so a `†domain` split by the wrap merges
    /// two lines and later matches report (and open at) line numbers off by one or more.
    pub find_line_drift: bool,
    /// `open(view_source=true)` shows the rendered page instead of its source.
    pub view_source_shows_page: bool,
    /// `search` sends a `query` that is not a string on to the search service (as Python's
    /// `str()` of it), and the model reads whatever the service answers, instead of being
    /// told that `query` should be a string.
    pub non_string_query: bool,
}

impl ReferenceQuirks {
    /// Every quirk on: the reference's behaviour.
    pub fn all() -> Self {
        Self {
            shared_search_url: true,
            find_line_drift: true,
            view_source_shows_page: true,
            non_string_query: true,
        }
    }
}

/// Browser settings shared by all conversations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrowserConfig {
    /// Viewport size in o200k tokens (the reference's `view_tokens`).
    pub view_tokens: usize,
    /// Results asked of the search backend (the model's `topn` is ignored, as in the reference).
    pub max_search_results: usize,
    /// Searches and page fetches one conversation may make.
    pub page_budget: usize,
    pub quirks: ReferenceQuirks,
}

impl Default for BrowserConfig {
    fn default() -> Self {
        Self {
            view_tokens: 1024,
            max_search_results: 20,
            page_budget: 100,
            quirks: ReferenceQuirks::default(),
        }
    }
}

/// The `browser` tool: a backend and settings, shared; one [`BrowserSession`] per conversation.
#[derive(Clone)]
pub struct BrowserTool {
    backend: Arc<dyn BrowserBackend>,
    config: Arc<BrowserConfig>,
}

impl std::fmt::Debug for BrowserTool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrowserTool")
            .field("source", &self.backend.source())
            .field("config", &self.config)
            .finish()
    }
}

impl BrowserTool {
    pub fn new(backend: Arc<dyn BrowserBackend>, config: BrowserConfig) -> Self {
        Self {
            backend,
            config: Arc::new(config),
        }
    }

    /// The backend from the environment (see [`SearchConfig::from_env`]) with default settings.
    pub fn from_env() -> Result<Self, BrowserConfigError> {
        let backend = SearchConfig::from_env()?.build(FetchConfig::default())?;
        Ok(Self::new(backend, BrowserConfig::default()))
    }

    /// A new conversation's browser.
    pub fn session(&self) -> BrowserSession {
        BrowserSession::new(self.backend.clone(), self.config.clone())
    }

    pub fn config(&self) -> &BrowserConfig {
        &self.config
    }

    /// Loads the o200k vocabulary used for viewport sizing now instead of at the first page.
    pub fn warm_up(&self) {
        tokens::warm_up();
    }
}

impl Tool for BrowserTool {
    fn name(&self) -> &str {
        "browser"
    }

    /// The namespace as the reference tool declares it: harmony's browser tools, with the
    /// description ending `sources=<backend source>`.
    fn namespace(&self) -> ToolNamespaceConfig {
        let mut config = ToolNamespaceConfig::browser();
        config.description = Some(format!(
            "Tool for browsing.\nThe `cursor` appears in brackets before each browsing display: `[{{cursor}}]`.\n\
             Cite information from the tool using the following format:\n\
             `【{{cursor}}†L{{line_start}}(-L{{line_end}})?】`, for example: `【6†L9-L11】` or `【8†L3】`.\n\
             Do not quote more than 10 words directly from the tool output.\nsources={}",
            self.backend.source()
        ));
        config
    }

    fn placement(&self) -> Placement {
        Placement::System
    }

    fn open_session(&self) -> Box<dyn ToolSession> {
        Box::new(self.session())
    }
}

/// Which search service the browser uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SearchBackendKind {
    /// DuckDuckGo's HTML page: keyless, the default.
    DuckDuckGo,
    /// Exa (`EXA_API_KEY`), the reference's default.
    Exa,
    /// You.com (`YDC_API_KEY`).
    You,
    /// Brave Search (`BRAVE_API_KEY`).
    Brave,
    /// Tavily (`TAVILY_API_KEY`).
    Tavily,
    /// A self-hosted SearXNG (`SEARXNG_URL`, keyless).
    Searxng,
}

impl SearchBackendKind {
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "duckduckgo" | "ddg" => Some(Self::DuckDuckGo),
            "exa" => Some(Self::Exa),
            "you" | "you.com" | "youcom" | "ydc" => Some(Self::You),
            "brave" => Some(Self::Brave),
            "tavily" => Some(Self::Tavily),
            "searxng" | "searx" => Some(Self::Searxng),
            _ => None,
        }
    }

    /// The environment variable holding the API key (or, for SearXNG, the instance URL).
    pub fn env_var(self) -> Option<&'static str> {
        match self {
            Self::DuckDuckGo => None,
            Self::Exa => Some("EXA_API_KEY"),
            Self::You => Some("YDC_API_KEY"),
            Self::Brave => Some("BRAVE_API_KEY"),
            Self::Tavily => Some("TAVILY_API_KEY"),
            Self::Searxng => Some("SEARXNG_URL"),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::DuckDuckGo => "duckduckgo",
            Self::Exa => "exa",
            Self::You => "you",
            Self::Brave => "brave",
            Self::Tavily => "tavily",
            Self::Searxng => "searxng",
        }
    }
}

/// A browser configuration that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BrowserConfigError {
    #[error("the {backend} search backend needs an API key: set {var}")]
    MissingApiKey {
        backend: &'static str,
        var: &'static str,
    },
    #[error(
        "the searxng search backend needs the instance URL: set {var} (e.g. http://localhost:8080)"
    )]
    MissingBaseUrl { var: &'static str },
    #[error(
        "unknown search backend `{0}` (expected duckduckgo, exa, you, brave, tavily or searxng)"
    )]
    UnknownBackend(String),
    #[error("cannot set up HTTP: {0}")]
    Http(String),
}

/// How to search: the service, its key and its base URL.
#[derive(Clone, PartialEq, Eq)]
pub struct SearchConfig {
    pub kind: SearchBackendKind,
    pub api_key: Option<String>,
    /// The API's base URL (the SearXNG instance; for the others, to reach a proxy or test server).
    pub base_url: Option<String>,
    /// Exa and You.com: read pages through their contents APIs (as the reference does) rather
    /// than fetching them directly.
    pub provider_reads_pages: bool,
    /// Timeout for search API calls.
    pub api_timeout: std::time::Duration,
}

impl std::fmt::Debug for SearchConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchConfig")
            .field("kind", &self.kind)
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("base_url", &self.base_url)
            .field("provider_reads_pages", &self.provider_reads_pages)
            .finish()
    }
}

impl SearchConfig {
    pub fn new(kind: SearchBackendKind) -> Self {
        Self {
            kind,
            api_key: None,
            base_url: None,
            provider_reads_pages: true,
            api_timeout: std::time::Duration::from_secs(30),
        }
    }

    /// From the environment: `OSSA_SEARCH_BACKEND` (default `duckduckgo`), the backend's key
    /// variable (`EXA_API_KEY`, `YDC_API_KEY`, `BRAVE_API_KEY`, `TAVILY_API_KEY`), `SEARXNG_URL`,
    /// `OSSA_SEARCH_BASE_URL` (overrides the API base URL) and `OSSA_BROWSER_FETCH=direct` (fetch
    /// pages directly even with Exa or You.com).
    pub fn from_env() -> Result<Self, BrowserConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let kind = match var("OSSA_SEARCH_BACKEND") {
            Some(name) => {
                SearchBackendKind::parse(&name).ok_or(BrowserConfigError::UnknownBackend(name))?
            }
            None => SearchBackendKind::DuckDuckGo,
        };
        let mut config = Self::new(kind);
        match kind {
            SearchBackendKind::Searxng => config.base_url = var("SEARXNG_URL"),
            other => config.api_key = other.env_var().and_then(var),
        }
        if let Some(base) = var("OSSA_SEARCH_BASE_URL") {
            config.base_url = Some(base);
        }
        if var("OSSA_BROWSER_FETCH").is_some_and(|v| v.eq_ignore_ascii_case("direct")) {
            config.provider_reads_pages = false;
        }
        Ok(config)
    }

    /// Builds the backend, checking that the key (or SearXNG URL) is there.
    pub fn build(&self, fetch: FetchConfig) -> Result<Arc<dyn BrowserBackend>, BrowserConfigError> {
        let client = search::api_client(self.api_timeout)
            .map_err(|e| BrowserConfigError::Http(e.to_string()))?;
        let key = || {
            self.api_key.clone().filter(|k| !k.trim().is_empty()).ok_or(
                BrowserConfigError::MissingApiKey {
                    backend: self.kind.name(),
                    var: self.kind.env_var().unwrap_or("API_KEY"),
                },
            )
        };
        let base = self.base_url.clone();
        let reads = self.provider_reads_pages;
        let api = |spec: &'static ApiSpec, key: String, base: Option<String>| {
            Arc::new(ApiProvider::new(spec, client.clone(), key, base, reads))
        };
        let provider: Arc<dyn SearchProvider> = match self.kind {
            SearchBackendKind::DuckDuckGo => Arc::new(DuckDuckGoProvider::new(client, base)),
            SearchBackendKind::Exa => api(&EXA, key()?, base),
            SearchBackendKind::You => api(&YOU, key()?, base),
            SearchBackendKind::Brave => api(&BRAVE, key()?, base),
            SearchBackendKind::Tavily => api(&TAVILY, key()?, base),
            SearchBackendKind::Searxng => {
                let base = base.ok_or(BrowserConfigError::MissingBaseUrl { var: "SEARXNG_URL" })?;
                api(&SEARXNG, String::new(), Some(base))
            }
        };
        let fetcher = Fetcher::new(fetch).map_err(|e| BrowserConfigError::Http(e.to_string()))?;
        Ok(Arc::new(WebBackend::new(provider, fetcher)))
    }
}
