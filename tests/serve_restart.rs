//! `ossa serve` after a restart: the server reads the prompts its predecessor computed from
//! the prompt cache on disk (reported as `cached_tokens`) and still answers with the oracle's
//! tokens.

mod support;

use serde_json::{Value, json};
use support::scenarios;
use support::serve::{CALL, RETURN, Server, curl_missing, curl_post, ids};
use support::{ENGINE_FLAGS, SCENARIO_FLAGS, fixture_dir};

fn serve(prompt_cache: &std::path::Path, extra: &[&str]) -> Server {
    let fixture = fixture_dir();
    let mut args = vec!["--model", fixture.to_str().expect("utf-8")];
    args.extend(ENGINE_FLAGS);
    args.extend(SCENARIO_FLAGS);
    args.extend(extra);
    Server::start_in(&args, None, Some(prompt_cache))
}

/// Completes `scenario`'s token prompt greedily: (generated ids, cached prompt tokens).
fn complete(server: &Server, scenario: &Value) -> (Vec<u64>, u64) {
    let body = json!({
        "model": "m", "prompt": scenario["prompt_tokens"], "max_tokens": 200,
        "temperature": 0, "stop_token_ids": [RETURN, CALL], "return_token_ids": true,
    });
    let (status, text) = curl_post(&format!("{}/completions", server.base), &body);
    assert_eq!(status, 200, "{text}");
    let response: Value = serde_json::from_str(&text).expect("JSON");
    let cached = response["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .expect("cached_tokens");
    (ids(&response["choices"][0]["token_ids"]), cached)
}

#[test]
fn a_restarted_server_reads_its_prompts_from_disk() {
    if curl_missing() {
        return;
    }
    let all = scenarios();
    let (first, second) = (&all[0], &all[1]);
    let prompt_len = ids(&first["prompt_tokens"]).len() as u64;
    let want = ids(&first["generated_tokens"][0]);
    let dir = tempfile::tempdir().expect("temp");
    let cache = dir.path().join("prompt-cache");

    // The generation writes its positions before the response is sent, so a server killed
    // right after answering has left them on disk.
    let server = serve(&cache, &[]);
    assert_eq!(complete(&server, first), (want.clone(), 0), "cold");
    drop(server);

    let server = serve(&cache, &[]);
    // Another conversation: the tool preamble it shares with the first comes from disk.
    let (tokens, cached) = complete(&server, second);
    assert_eq!(tokens, ids(&second["generated_tokens"][0]));
    let second_len = ids(&second["prompt_tokens"]).len() as u64;
    assert!(
        cached > 100 && cached < second_len - 1,
        "{cached}/{second_len}"
    );
    // The first again: the preamble from memory, the rest but the last token from disk.
    assert_eq!(
        complete(&server, first),
        (want.clone(), prompt_len - 1),
        "the same prompt after a restart"
    );
    drop(server);

    // Off: the full folder is not read.
    let server = serve(&cache, &["--no-prompt-cache"]);
    assert_eq!(complete(&server, first), (want, 0), "--no-prompt-cache");
}
