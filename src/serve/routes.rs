//! The routes: each endpoint's handler behind the access guard and the request log, and the
//! small endpoints (`/health`, `/v1/models`) answered here.

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use ossa_agent::Backend as _;

use super::error::ApiError;
use super::state::ServerState;
use super::{chat, completions, log, responses, security, store, wire};

/// The routes, over `state`.
pub fn router(state: Arc<ServerState>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat::create))
        .route("/v1/completions", post(completions::create))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::get).delete(responses::delete),
        )
        .route(
            "/v1/responses/{id}/input_items",
            get(responses::input_items),
        )
        // Model ids may hold slashes (`openai/gpt-oss-20b`).
        .route("/v1/models/{*id}", get(model))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Bodies are read (and limited) by the guard.
        .layer(DefaultBodyLimit::disable())
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            security::guard,
        ))
        // Outside the guard: refused requests are logged too.
        .layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            log::access_log,
        ))
        .with_state(state)
}

async fn health(State(state): State<Arc<ServerState>>) -> Response {
    let queue = state.backend.status();
    let store = match &state.store {
        None => None,
        Some(store) => match store::run(store, |store| store.usage()).await {
            Ok(usage) => Some(wire::models::StoreSize {
                responses: usage.responses,
                bytes: usage.bytes,
            }),
            Err(error) => return error.api_error().into_response(),
        },
    };
    axum::Json(wire::models::Health {
        status: "ok".to_string(),
        model: state.settings.model_id.clone(),
        queue: wire::models::Queue {
            running: queue.running,
            waiting: queue.waiting,
        },
        requests: state.slots.taken(),
        store,
    })
    .into_response()
}

fn model_object(state: &ServerState) -> wire::models::Model {
    wire::models::Model {
        id: state.settings.model_id.clone(),
        object: wire::models::ModelTag,
        created: state.created,
        owned_by: wire::models::OwnedByOssa,
        max_model_len: state.backend.context_length(),
    }
}

async fn models(State(state): State<Arc<ServerState>>) -> Response {
    axum::Json(wire::models::ModelList {
        object: wire::models::ListTag,
        data: vec![model_object(&state)],
    })
    .into_response()
}

/// `GET /v1/models/{id}`: the model this server serves, by the id `/v1/models` lists.
async fn model(
    State(state): State<Arc<ServerState>>,
    id: Result<axum::extract::Path<String>, axum::extract::rejection::PathRejection>,
) -> Response {
    match id {
        Ok(axum::extract::Path(id)) if id == state.settings.model_id => {
            axum::Json(model_object(&state)).into_response()
        }
        Ok(axum::extract::Path(id)) => model_not_found(&id, &state.settings.model_id),
        // An id that does not decode (not UTF-8) names no model either.
        Err(_) => model_not_found("", &state.settings.model_id),
    }
}

/// A 404 in OpenAI's shape for a model id other than the served one.
fn model_not_found(id: &str, served: &str) -> Response {
    let shown: String = id.chars().filter(|c| !c.is_control()).take(100).collect();
    let mut error = ApiError::new(
        StatusCode::NOT_FOUND,
        "invalid_request_error",
        "model_not_found",
        format!("The model `{shown}` does not exist; this server serves `{served}`."),
    );
    error.param = Some("model".into());
    error.into_response()
}

async fn not_found(uri: axum::http::Uri) -> Response {
    ApiError::not_found(format!("no such endpoint: {}", uri.path())).into_response()
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
    .into_response()
}
