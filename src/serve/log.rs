//! One line on stderr per request, as vLLM's and llama-server's request logs: method, path,
//! status, tokens in and out, time, and the time spent waiting for the engine. Printed when the
//! response body is done (a stream's last event sent, or the client gone), so a streamed
//! request's line has its tokens and whole time. `ossa serve --quiet` prints none.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use tokio_stream::StreamExt;

use super::state::ServerState;

/// What a request's handler reports for its log line.
#[derive(Debug, Default)]
pub struct RequestLog {
    fields: Mutex<Option<Usage>>,
}

/// Tokens and queue wait of a request that generated.
#[derive(Debug, Clone, Copy, Default)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Time the request's generations waited for others to finish.
    pub queue_wait: Duration,
}

impl RequestLog {
    pub fn record(&self, usage: Usage) {
        *self.fields.lock().unwrap_or_else(PoisonError::into_inner) = Some(usage);
    }

    fn usage(&self) -> Option<Usage> {
        *self.fields.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The log line, printed when dropped (with the response body).
struct Line {
    method: axum::http::Method,
    path: String,
    status: axum::http::StatusCode,
    started: Instant,
    log: Arc<RequestLog>,
}

impl Line {
    /// `ossa serve: POST /v1/chat/completions 200 1.234 s, 498 tokens in, 56 out, queued
    /// 0.000 s` (the tokens and queue only for a request that generated).
    fn text(&self) -> String {
        let usage = match self.log.usage() {
            Some(usage) => format!(
                ", {} tokens in, {} out, queued {:.3} s",
                usage.prompt_tokens,
                usage.completion_tokens,
                usage.queue_wait.as_secs_f64()
            ),
            None => String::new(),
        };
        format!(
            "ossa serve: {} {} {} {:.3} s{usage}",
            self.method,
            self.path,
            self.status.as_u16(),
            self.started.elapsed().as_secs_f64()
        )
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        eprintln!("{}", self.text());
    }
}

/// The middleware: gives the handler a [`RequestLog`] (an extension) and prints the line when
/// the response is done. The path is printed without its query (which may hold anything).
pub async fn access_log(
    State(state): State<Arc<ServerState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let log = Arc::new(RequestLog::default());
    request.extensions_mut().insert(Arc::clone(&log));
    if !state.settings.log_requests {
        return next.run(request).await;
    }
    let started = Instant::now();
    let method = request.method().clone();
    // Control characters could forge lines of their own.
    let path: String = request
        .uri()
        .path()
        .chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(200)
        .collect();
    let response = next.run(request).await;
    let line = Line {
        method,
        path,
        status: response.status(),
        started,
        log,
    };
    let (parts, body) = response.into_parts();
    let body = body.into_data_stream().map(move |chunk| {
        let _ = &line;
        chunk
    });
    Response::from_parts(parts, Body::from_stream(body))
}
