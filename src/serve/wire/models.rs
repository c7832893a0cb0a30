//! What every API shares on the wire: `GET /v1/models` (and `/v1/models/{id}`), `GET /health`,
//! and the error body.

use serde::{Deserialize, Serialize};

use super::constant;
pub use super::responses::ListTag;

constant! {
    /// `"object": "model"`.
    ModelTag = "model";
    /// `"owned_by": "ossa"`.
    OwnedByOssa = "ossa";
}

/// The served model, as `/v1/models` lists it (with vLLM's `max_model_len`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    pub id: String,
    pub object: ModelTag,
    pub created: u64,
    pub owned_by: OwnedByOssa,
    /// The context length, in tokens.
    pub max_model_len: usize,
}

/// `GET /v1/models`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelList {
    pub object: ListTag,
    pub data: Vec<Model>,
}

/// `GET /health` once the model is loaded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// `"ok"`.
    pub status: String,
    pub model: String,
    pub queue: Queue,
    /// Requests in progress (generating or waiting).
    pub requests: usize,
    /// Null without a store.
    pub store: Option<StoreSize>,
}

/// Generations running (0 or 1) and waiting for the engine.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    pub running: u64,
    pub waiting: u64,
}

/// The response store: responses kept and their size.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreSize {
    pub responses: u64,
    pub bytes: u64,
}

/// An error in OpenAI's shape: `{"error": {"message", "type", "param", "code"}}`; `/health`
/// adds `"status": "loading"` while the model loads.
#[serde_with::skip_serializing_none]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorBody {
    pub status: Option<String>,
    pub error: ErrorDetail,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ErrorDetail {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}
