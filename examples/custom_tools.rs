//! ossa as a library with your own tools: a typed function (`get_weather`, its JSON schema
//! derived from a Rust type by schemars, its arguments checked against it before your code
//! runs) and a custom search backend for the browser (here the `.md`/`.txt` files of a folder,
//! so the model researches your notes and cites them).
//!
//! ```sh
//! cargo run --release --example custom_tools -- --notes ~/notes "What did I write about tea, and what is the weather in Paris?"
//! ```

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use clap::Parser;
use ossa::agent::{Agent, AgentConfig, CancellationToken, ConversationSettings};
use ossa::tools::browser::{
    BrowserBackend, BrowserBackendError, PageContents, SearchResult, search_results_page, text_page,
};
use ossa::tools::{BrowserConfig, BrowserTool, FunctionTools, Tool, TypedFunction};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    model: common::ModelArgs,
    /// The folder of notes the browser searches.
    #[arg(long, default_value = ".")]
    notes: PathBuf,
    /// The question.
    question: String,
}

/// The arguments the model writes; their doc comments become the schema's descriptions.
#[derive(Debug, Deserialize, JsonSchema)]
struct WeatherQuery {
    /// The city, e.g. "Paris".
    city: String,
    /// Temperature unit.
    #[serde(default)]
    unit: Unit,
}

#[derive(Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Unit {
    #[default]
    Celsius,
    Fahrenheit,
}

/// What the model reads back (serialized as JSON).
#[derive(Debug, Serialize)]
struct Weather {
    city: String,
    temperature: f64,
    unit: Unit,
    sky: &'static str,
}

/// Your weather service would go here; this one always sees the same sky.
async fn get_weather(query: WeatherQuery) -> Result<Weather, String> {
    if query.city.trim().is_empty() {
        return Err("the city is empty".into());
    }
    let celsius = 18.0;
    let temperature = match query.unit {
        Unit::Celsius => celsius,
        Unit::Fahrenheit => celsius * 9.0 / 5.0 + 32.0,
    };
    Ok(Weather {
        city: query.city,
        temperature,
        unit: query.unit,
        sky: "clear",
    })
}

/// Searches the text files of a folder: a result per file containing every word of the query.
/// Pages are `notes:` URLs naming a file inside the folder; nothing outside it is read.
struct NotesBackend {
    dir: PathBuf,
}

impl NotesBackend {
    fn files(&self) -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut files: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file() && is_note(p))
            .collect();
        files.sort();
        files
    }
}

fn is_note(path: &Path) -> bool {
    matches!(
        path.extension().and_then(|e| e.to_str()),
        Some("md" | "txt")
    )
}

#[async_trait]
impl BrowserBackend for NotesBackend {
    fn source(&self) -> &str {
        "notes"
    }

    async fn search(&self, query: &str, topn: usize) -> Result<PageContents, BrowserBackendError> {
        let words: Vec<String> = query.split_whitespace().map(str::to_lowercase).collect();
        let mut results = Vec::new();
        for path in self.files() {
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            let lower = text.to_lowercase();
            if words.iter().all(|w| lower.contains(w.as_str())) {
                let name = path.file_name().unwrap_or_default().to_string_lossy();
                results.push(SearchResult {
                    url: format!("notes:{name}"),
                    title: name.to_string(),
                    summary: text.lines().take(2).collect::<Vec<_>>().join(" "),
                });
            }
        }
        results.truncate(topn.max(1));
        Ok(search_results_page(query, &results))
    }

    async fn fetch(&self, url: &str) -> Result<PageContents, BrowserBackendError> {
        let name = url
            .strip_prefix("notes:")
            .ok_or_else(|| BrowserBackendError::new(format!("{url} is not a note")))?;
        // A name, never a path: `notes:../secret` does not leave the folder.
        let path = self.dir.join(name);
        if name.contains(['/', '\\']) || name.starts_with('.') || !is_note(&path) {
            return Err(BrowserBackendError::new(format!("no note named {name:?}")));
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| BrowserBackendError::new(format!("{name}: {e}")))?;
        Ok(text_page(url, name, &text))
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (backend, encoding) = args.model.backend()?;

    let mut functions = FunctionTools::new();
    functions.add(TypedFunction::new(
        "get_weather",
        "Gets the current weather in a city.",
        get_weather,
    ))?;
    let notes = NotesBackend { dir: args.notes };
    let browser = BrowserTool::new(Arc::new(notes), BrowserConfig::default());
    let tools: Vec<Arc<dyn Tool>> = vec![Arc::new(browser), Arc::new(functions)];

    let agent = Agent::new(backend, encoding, tools, AgentConfig::default());
    let mut chat = agent.chat(&ConversationSettings::default());
    let report = chat
        .send(&args.question, &CancellationToken::new(), &mut common::show)
        .await?;
    common::finish(&report)
}
