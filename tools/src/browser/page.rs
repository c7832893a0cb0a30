//! What the browser knows about a page: the model-readable text, its title and its links.

use serde::{Deserialize, Serialize};

/// A page as the model reads it (the reference's `PageContents`).
///
/// `text` is the page rendered as plain text with link markup `【{id}†{text}】`; the link with
/// id `i` points to `urls[i]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PageContents {
    /// The page URL (empty for search result pages).
    pub url: String,
    pub title: String,
    pub text: String,
    /// Link targets by id.
    pub urls: Vec<String>,
    /// Set on `find` result pages: one snippet per match, by link id.
    pub snippets: Option<Vec<Snippet>>,
}

/// One `find` match (the reference's `Extract`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snippet {
    pub url: String,
    pub text: String,
    pub title: String,
    /// The matched line; opening the match scrolls there.
    pub line_idx: Option<usize>,
}

impl PageContents {
    /// The link target for id `id`, if the page has it.
    pub fn link(&self, id: usize) -> Option<&str> {
        self.urls.get(id).map(String::as_str)
    }
}
