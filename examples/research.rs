//! A research agent: gpt-oss with the browser it was trained on (search, open, find), answering
//! with citations, printed at the end as numbered sources.
//!
//! ```sh
//! cargo run --release --example research -- "What did the latest CPython release change?"
//! # another search backend: OSSA_SEARCH_BACKEND=searxng SEARXNG_URL=http://127.0.0.1:8888 …
//! ```

mod common;

use std::sync::Arc;

use clap::Parser;
use ossa::agent::harmony::ReasoningEffort;
use ossa::agent::{Agent, AgentConfig, CancellationToken, ConversationSettings};
use ossa::tools::browser::{FetchConfig, SearchConfig};
use ossa::tools::citations::normalize_citations;
use ossa::tools::{BrowserConfig, BrowserTool, Tool};

#[derive(Debug, Parser)]
struct Args {
    #[command(flatten)]
    model: common::ModelArgs,
    /// Let the browser open pages on private and loopback addresses (an intranet wiki, a
    /// local SearXNG's results); off by default so a page cannot make it reach them.
    #[arg(long)]
    allow_private_addresses: bool,
    /// The question.
    question: String,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (backend, encoding) = args.model.backend()?;

    // The search backend from the environment (DuckDuckGo unless OSSA_SEARCH_BACKEND says
    // otherwise); pages are fetched and converted to text on this machine.
    let fetch = FetchConfig {
        allow_private_addresses: args.allow_private_addresses,
        ..FetchConfig::default()
    };
    let search = SearchConfig::from_env()?.build(fetch)?;
    let browser = BrowserTool::new(search, BrowserConfig::default());
    let tools: Vec<Arc<dyn Tool>> = vec![Arc::new(browser)];

    let agent = Agent::new(backend, encoding, tools, AgentConfig::default());
    let settings = ConversationSettings {
        reasoning_effort: ReasoningEffort::Medium,
        ..ConversationSettings::default()
    };
    let mut chat = agent.chat(&settings);
    // The answer streams with the model's raw citations (`【3†L10-L15】`); they are resolved
    // against the pages the browser opened once the turn is over.
    let report = chat
        .send(
            &args.question,
            &CancellationToken::new(),
            &mut common::show_reasoning_and_tools,
        )
        .await?;
    let Some(raw) = &report.answer else {
        return common::finish(&report);
    };
    let answer = normalize_citations(raw, &chat.citation_urls(), true);
    println!("{}", answer.text);
    if !answer.annotations.is_empty() {
        println!("\nSources:");
        let mut seen = Vec::new();
        for annotation in &answer.annotations {
            if !seen.contains(&&annotation.url) {
                seen.push(&annotation.url);
                println!("[{}] {} — {}", seen.len(), annotation.title, annotation.url);
            }
        }
    }
    Ok(())
}
