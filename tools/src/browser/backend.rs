//! Where pages and search results come from.

use async_trait::async_trait;

use super::page::PageContents;

/// A backend failure; its text reaches the model after `Error fetching URL ...:` or
/// `Error during search for ...:`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BrowserBackendError(pub String);

impl BrowserBackendError {
    pub fn new(message: impl Into<String>) -> Self {
        Self(message.into())
    }
}

/// The browser's source of pages (the reference's `Backend`).
#[async_trait]
pub trait BrowserBackend: Send + Sync {
    /// The `sources=` value in the tool description.
    fn source(&self) -> &str {
        "web"
    }

    /// Runs a search and returns the results page (see
    /// [`search_results_page`](super::search_results_page)).
    async fn search(&self, query: &str, topn: usize) -> Result<PageContents, BrowserBackendError>;

    /// Fetches and converts the page at `url`.
    async fn fetch(&self, url: &str) -> Result<PageContents, BrowserBackendError>;

    /// The source of the page at `url`, for `open(view_source=true)` (see
    /// [`source_page`](super::source_page)).
    async fn fetch_source(&self, url: &str) -> Result<PageContents, BrowserBackendError> {
        let _ = url;
        Err(BrowserBackendError::new(
            "this search backend cannot show page sources",
        ))
    }
}
