//! The accept loop: HTTP/1.1 connections up to a cap (one more gets a 503 and is closed), a
//! deadline for each request's headers (slow or idle clients are dropped), and a shutdown that
//! cancels what is running and waits for it only until a deadline.
//!
//! axum's own `serve` sets none of these, so connections are served here with hyper directly.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::Service as HyperService;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use super::access::ExposureError;
use super::error::ApiError;
use super::routes::router;
use super::security::{self, AccessPolicy};
use super::state::{Limits, ServerState};
use super::store::StoreError;

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    // The cause is the source, printed after the message (`{:#}`): not in it too.
    #[error("cannot listen on {address}")]
    Bind {
        address: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no folder for stored responses: {0}")]
    StoreDir(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Exposure(#[from] ExposureError),
    #[error("the server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// How long a refused connection is given to read its 503.
const REFUSAL_TIME: Duration = Duration::from_secs(2);

/// How long to wait before accepting again when accepting fails (out of file descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `state` on `listener` until `shutdown` resolves; then stops accepting, cancels every
/// request in progress (streams end with what they have) and waits for open connections up
/// to the shutdown deadline.
pub async fn serve_on(
    listener: TcpListener,
    state: Arc<ServerState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let local = listener.local_addr().map_err(ServeError::Serve)?;
    state.settings.access.check_exposure(local)?;
    let limits = state.settings.limits.clone();
    let access = Arc::new(state.settings.access.clone());
    let loaded = Arc::new(OnceLock::new());
    let _ = loaded.set(Loaded::new(state));
    serve_switch(listener, loaded, access, &limits, shutdown).await;
    Ok(())
}

/// The API over a loaded model.
pub(super) struct Loaded {
    state: Arc<ServerState>,
    api: Api,
}

impl Loaded {
    pub(super) fn new(state: Arc<ServerState>) -> Self {
        Self {
            api: TowerToHyperService::new(router(Arc::clone(&state))),
            state,
        }
    }
}

type Api = TowerToHyperService<Router>;

/// What a connection is served by: the API once the model is loaded, before that the
/// loading answers (503), on the same port and under the same connection cap.
#[derive(Clone)]
struct Switch {
    loaded: Arc<OnceLock<Loaded>>,
    loading: Api,
}

impl HyperService<hyper::Request<Incoming>> for Switch {
    type Response = <Api as HyperService<hyper::Request<Incoming>>>::Response;
    type Error = <Api as HyperService<hyper::Request<Incoming>>>::Error;
    type Future = <Api as HyperService<hyper::Request<Incoming>>>::Future;

    fn call(&self, request: hyper::Request<Incoming>) -> Self::Future {
        match self.loaded.get() {
            Some(loaded) => loaded.api.call(request),
            None => self.loading.call(request),
        }
    }
}

/// Serves the loading answers until `loaded` is set, then the API, until `shutdown`
/// resolves; then stops accepting, cancels every request in progress (streams end with what
/// they have) and waits for open connections up to the shutdown deadline.
pub(super) async fn serve_switch(
    listener: TcpListener,
    loaded: Arc<OnceLock<Loaded>>,
    access: Arc<AccessPolicy>,
    limits: &Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let service = Switch {
        loaded: Arc::clone(&loaded),
        loading: TowerToHyperService::new(loading_router(access)),
    };
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    // Refusing takes a task too: past this many, extra connections are just closed.
    let refusals = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot accept a connection");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(permit) = Arc::clone(&connections).try_acquire_owned() else {
            if let Ok(permit) = Arc::clone(&refusals).try_acquire_owned() {
                tokio::spawn(async move {
                    refuse(stream).await;
                    drop(permit);
                });
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection =
            graceful.watch(http.serve_connection(TokioIo::new(stream), service.clone()));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended");
            }
            drop(permit);
        });
    }
    drop(listener);
    // Turns end (a stream sends what it has and closes); idle connections close now.
    if let Some(loaded) = loaded.get() {
        loaded.state.shutdown.cancel();
    }
    let open = graceful.count();
    if tokio::time::timeout(limits.shutdown_timeout, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            open,
            "connections still open at the shutdown deadline are closed"
        );
    }
}

/// How long a client is told to wait while the model loads.
const LOADING_RETRY_SECONDS: u64 = 5;

/// The answers while the model loads: `/health` says `loading`, everything else is a 503 with
/// `Retry-After`, in OpenAI's error shape. They pass no guard (it needs the loaded server's
/// state) and say nothing but that the model is loading.
/// The answers before the model is ready, to those the API would answer (see
/// [`security::loading_guard`]).
fn loading_router(access: Arc<AccessPolicy>) -> Router {
    Router::new()
        .fallback(loading_answer)
        .layer(axum::middleware::from_fn_with_state(
            access,
            security::loading_guard,
        ))
}

async fn loading_answer(uri: axum::http::Uri) -> axum::response::Response {
    let error = ApiError {
        retry_after: Some(LOADING_RETRY_SECONDS),
        ..ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "model_loading",
            "the model is loading; try again shortly",
        )
    };
    if uri.path() == "/health" {
        let mut body = error.body();
        body.status = Some("loading".to_string());
        let mut response = (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
        response.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(LOADING_RETRY_SECONDS),
        );
        return response;
    }
    error.into_response()
}

/// Tells a connection over the cap to come back later, then closes it.
async fn refuse(mut stream: TcpStream) {
    let error = ApiError {
        retry_after: Some(1),
        ..ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "server_error",
            "too_many_connections",
            "the server has as many connections open as it takes; try again shortly",
        )
    };
    // Not reached: an error body is strings and nulls, which JSON always writes.
    let body = serde_json::to_string(&error.body()).unwrap_or_default();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await?;
        // Read what the client sent, so closing does not reset the connection before it has
        // read the answer.
        let mut sink = [0u8; 4096];
        let mut left = 64 * 1024;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left -= n.min(left);
        }
        Ok::<_, std::io::Error>(())
    })
    .await;
}
