//! A scripted model for the serve tests: replies written as harmony messages, replayed as the
//! token ids the model would sample, with every prompt recorded. It is served in-process (as an
//! `ossa::agent::Backend`) or over HTTP as a vLLM-like `/v1/completions` endpoint that
//! `--backend openai-completions` drives; the HTTP server also plays a SearXNG instance and a
//! web site, so the browser's whole path runs on loopback.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
// Each test binary uses some of them.
#[allow(unused_imports)]
pub use ossa_test_support::scripted::{Script, analysis, call, final_answer, python_call, sampled};
use serde_json::{Value, json};

/// A web page for the browsing tests: what the model reads when it opens the search result.
pub const LIGHTHOUSE_PAGE: &str = "<html><head><title>The Ossa lighthouse</title></head><body>\
<h1>The Ossa lighthouse</h1>\
<p>The Ossa lighthouse stands 42 meters tall on the northern cape.</p>\
<p>Its lamp was first lit in 1911 and still turns every night.</p>\
</body></html>";

/// What the HTTP side serves besides the model.
#[derive(Default)]
struct Site {
    /// Path (`/pages/x.html`) → HTML.
    pages: HashMap<String, String>,
    /// SearXNG's `results` for every query.
    results: Vec<Value>,
    queries: Vec<String>,
}

/// What the handlers share: the script and the site.
pub struct Shared {
    script: Arc<Script>,
    site: Mutex<Site>,
}

/// The scripted model, a SearXNG-like search API and web pages on one loopback port, until
/// dropped.
pub type ScriptedServer = super::ScriptedHttp<Shared>;

/// The model name `/v1/models` lists.
pub const MODEL: &str = "scripted";

impl ScriptedServer {
    pub fn start() -> ScriptedServer {
        let routes = Router::new()
            .route("/v1/models", get(models))
            .route("/v1/completions", post(completions))
            .route("/search", get(search))
            .route("/pages/{name}", get(page));
        super::ScriptedHttp::start_on_loopback(
            |script| Shared {
                script,
                site: Mutex::new(Site::default()),
            },
            routes,
        )
    }

    /// The flags that make an ossa command generate with this model:
    /// `--backend openai-completions --url ROOT/v1 --remote-model scripted`.
    pub fn backend_args(&self) -> Vec<String> {
        ["--backend", "openai-completions", "--url"]
            .map(String::from)
            .into_iter()
            .chain([self.base.clone(), "--remote-model".into(), MODEL.into()])
            .collect()
    }

    /// A config file whose browser searches this server (SearXNG-like) and may open its pages.
    pub fn search_config(&self) -> String {
        format!(
            "[search]\nbackend = \"searxng\"\nurl = \"{}\"\n\n[browser]\nallow_private_addresses = true\n",
            self.root
        )
    }

    /// `ossa serve` with this model and `tools` (`--python`, `--browser`), its browser searching
    /// this server, on the scenarios' date at temperature 0.
    pub fn serve_with_search(&self, tools: &[&str]) -> super::serve::Server {
        let mut extra = tools.to_vec();
        extra.extend(["--date", "2026-01-01", "--temperature", "0"]);
        self.serve(&extra, Some(&self.search_config()))
    }

    /// `ossa serve` generating with this model, with `extra` flags and `config` (TOML).
    pub fn serve(&self, extra: &[&str], config: Option<&str>) -> super::serve::Server {
        let backend = self.backend_args();
        let args: Vec<&str> = backend
            .iter()
            .map(String::as_str)
            .chain(extra.iter().copied())
            .collect();
        super::serve::Server::start_with(&args, config)
    }

    /// Scripts a python call of `code`, then the final `answer`.
    pub fn script_python_then_answer(&self, code: &str, answer: &str) {
        self.script(&[python_call(code)]);
        self.script(&[final_answer(answer)]);
    }

    /// Serves [`LIGHTHOUSE_PAGE`] as the one search result for any query; returns its URL.
    pub fn add_lighthouse(&self) -> String {
        self.add_found_page(
            "lighthouse.html",
            LIGHTHOUSE_PAGE,
            "The Ossa lighthouse",
            "Facts about the lighthouse on the northern cape.",
        )
    }

    /// Serves `html` at `/pages/{name}`; returns its URL.
    pub fn add_page(&self, name: &str, html: &str) -> String {
        let path = format!("/pages/{name}");
        self.shared
            .site
            .lock()
            .expect("lock")
            .pages
            .insert(path.clone(), html.to_string());
        format!("{}{path}", self.root)
    }

    /// Serves `html` at `/pages/{name}` as what every search finds (with `title` and
    /// `content`); returns its URL.
    pub fn add_found_page(&self, name: &str, html: &str, title: &str, content: &str) -> String {
        let url = self.add_page(name, html);
        self.set_search_results(vec![
            json!({"url": url, "title": title, "content": content}),
        ]);
        url
    }

    /// What every search returns: SearXNG result objects (`url`, `title`, `content`).
    pub fn set_search_results(&self, results: Vec<Value>) {
        self.shared.site.lock().expect("lock").results = results;
    }

    /// The queries searched so far.
    pub fn queries(&self) -> Vec<String> {
        self.shared.site.lock().expect("lock").queries.clone()
    }
}

async fn models() -> Response {
    axum::Json(json!({
        "object": "list",
        "data": [{"id": MODEL, "object": "model", "max_model_len": 16384}],
    }))
    .into_response()
}

/// vLLM's streamed Completions with `return_token_ids`: one chunk per token, then the finish
/// reason. Stops after the first of `stop_token_ids` (kept, as `include_stop_str_in_output`).
async fn completions(State(shared): State<Arc<Shared>>, body: String) -> Response {
    let request: Value = match serde_json::from_str(&body) {
        Ok(v) => v,
        Err(e) => return (StatusCode::BAD_REQUEST, format!("not JSON: {e}")).into_response(),
    };
    let Some(prompt) = request["prompt"].as_array().map(|p| {
        p.iter()
            .filter_map(|t| t.as_u64().map(|t| t as u32))
            .collect::<Vec<u32>>()
    }) else {
        return (StatusCode::BAD_REQUEST, "the prompt must be token ids").into_response();
    };
    assert_eq!(request["stream"], true, "the remote backend streams");
    assert_eq!(request["return_token_ids"], true, "and asks for token ids");
    let stops: Vec<u64> = request["stop_token_ids"]
        .as_array()
        .map(|s| s.iter().filter_map(Value::as_u64).collect())
        .unwrap_or_default();
    let Some(reply) = shared.script.answer(&prompt) else {
        let error = json!({"error": {"message": "no reply scripted", "type": "server_error"}});
        return (StatusCode::INTERNAL_SERVER_ERROR, axum::Json(error)).into_response();
    };
    let mut body = String::new();
    let mut finish = "length";
    for token in reply {
        let chunk = json!({"object": "text_completion", "model": MODEL, "choices": [
            {"index": 0, "text": "", "token_ids": [token], "finish_reason": null},
        ]});
        body.push_str(&format!("data: {chunk}\n\n"));
        if stops.contains(&u64::from(token)) {
            finish = "stop";
            break;
        }
    }
    let last = json!({"object": "text_completion", "model": MODEL, "choices": [
        {"index": 0, "text": "", "token_ids": [], "finish_reason": finish, "stop_reason": null},
    ]});
    body.push_str(&format!("data: {last}\n\ndata: [DONE]\n\n"));
    ([(header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

/// SearXNG's JSON API: `GET /search?q=...&format=json`.
async fn search(
    State(shared): State<Arc<Shared>>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    assert_eq!(query.get("format").map(String::as_str), Some("json"));
    let mut site = shared.site.lock().expect("lock");
    site.queries
        .push(query.get("q").cloned().unwrap_or_default());
    axum::Json(json!({"query": query.get("q"), "results": site.results})).into_response()
}

async fn page(State(shared): State<Arc<Shared>>, UrlPath(name): UrlPath<String>) -> Response {
    let site = shared.site.lock().expect("lock");
    match site.pages.get(&format!("/pages/{name}")) {
        Some(html) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html.clone(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "no such page").into_response(),
    }
}
