//! Shared by the harmony tests: fixture folders, the encoding, case readers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use ossa_agent::harmony::{
    HarmonyEncoding, HarmonyError, Message, ParseMode, RenderConversationConfig, Role,
    StreamableParser,
};
use serde_json::{Value, json};

pub use ossa_test_support::fixtures;
pub use ossa_test_support::scripted::encoding;

/// The `*.json` files of `dir`, sorted.
pub fn case_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

/// The repository's case folder and, when `OSSA_HARMONY_CASES` names one, its `kind` subfolder.
pub fn case_dirs(kind: &str) -> Vec<PathBuf> {
    let mut dirs = vec![fixtures().join("harmony").join(kind)];
    if let Some(extra) = std::env::var_os("OSSA_HARMONY_CASES").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(extra).join(kind));
    }
    dirs
}

pub fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

pub fn role_of(value: &Value) -> Option<Role> {
    value
        .as_str()
        .map(|r| r.parse().unwrap_or_else(|e| panic!("{e}")))
}

pub fn config_of(value: &Value) -> Option<RenderConversationConfig> {
    value
        .get("auto_drop_analysis")
        .and_then(Value::as_bool)
        .map(|auto_drop_analysis| RenderConversationConfig { auto_drop_analysis })
}

pub fn mode_of(strict: &Value) -> ParseMode {
    if strict.as_bool().unwrap_or(true) {
        ParseMode::Strict
    } else {
        ParseMode::NonStrict
    }
}

pub fn ids(value: &Value) -> Vec<u32> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v.as_u64().expect("token id") as u32)
                .collect()
        })
        .unwrap_or_default()
}

/// The streaming snapshot the fixtures record after each token.
pub fn snapshot(parser: &StreamableParser) -> Value {
    json!({
        "state": parser.state().as_str(),
        "current_role": parser.current_role().map(|r| r.as_str()),
        "current_channel": parser.current_channel(),
        "current_recipient": parser.current_recipient(),
        "current_content_type": parser.current_content_type(),
        "last_content_delta": parser.last_content_delta(),
        "messages_so_far": parser.messages().len(),
    })
}

pub fn messages_json(messages: &[Message]) -> Value {
    serde_json::to_value(messages).expect("messages serialize")
}

/// Renders a render case; `Ok(tokens)` or the error's text.
pub fn render_case(encoding: &HarmonyEncoding, case: &Value) -> Result<Vec<u32>, String> {
    let conversation: ossa_agent::harmony::Conversation =
        serde_json::from_value(case["conversation"].clone())
            .map_err(|e| format!("conversation does not load: {e}"))?;
    let config = config_of(&case["config"]);
    let result: Result<Vec<u32>, HarmonyError> = match case["mode"].as_str() {
        Some("completion") => encoding.render_conversation_for_completion(
            &conversation,
            role_of(&case["next_turn_role"]).unwrap_or(Role::Assistant),
            config.as_ref(),
        ),
        Some("conversation") => encoding.render_conversation(&conversation, config.as_ref()),
        Some("training") => {
            encoding.render_conversation_for_training(&conversation, config.as_ref())
        }
        other => return Err(format!("unknown mode {other:?}")),
    };
    result.map_err(|e| e.to_string())
}
