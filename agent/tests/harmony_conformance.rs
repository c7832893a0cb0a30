//! Conformance with openai-harmony 0.0.8 on every fixture case: render cases give exactly the
//! reference's tokens (or its error), parse cases the same messages or error and the same
//! streaming snapshot after every token. Cases come from `tests/fixtures/harmony/{render,parse}`
//! and, when `OSSA_HARMONY_CASES` names a folder, from its `render/` and `parse/` too.

mod harmony_support;

use harmony_support::*;
use ossa_agent::harmony::{HarmonyEncoding, Message, StreamableParser};
use serde_json::Value;

fn check_render(encoding: &HarmonyEncoding, case: &Value) -> Result<(), String> {
    // The conversation's JSON survives a round trip in Python's exact shape.
    let conversation: ossa_agent::harmony::Conversation =
        serde_json::from_value(case["conversation"].clone())
            .map_err(|e| format!("does not load: {e}"))?;
    // Same keys in the same order as Python's `Conversation.to_json()`.
    let again = conversation.to_json();
    let want = serde_json::to_string(&case["conversation"]).map_err(|e| e.to_string())?;
    if again != want {
        return Err(format!(
            "JSON round trip differs:\n ours {again}\n want {want}"
        ));
    }
    match (render_case(encoding, case), &case["tokens"], &case["error"]) {
        (Ok(tokens), expected, _) if expected.is_array() => {
            let expected = ids(expected);
            if tokens != expected {
                let at = tokens
                    .iter()
                    .zip(&expected)
                    .position(|(a, b)| a != b)
                    .unwrap_or(tokens.len().min(expected.len()));
                let text = encoding
                    .tokenizer()
                    .decode_lossy(&tokens)
                    .unwrap_or_default();
                return Err(format!(
                    "tokens differ at {at} (ours {}, want {})\n ours: {text:?}\n want: {}",
                    tokens.len(),
                    expected.len(),
                    case["text"]
                ));
            }
            let text = encoding
                .tokenizer()
                .decode(&tokens)
                .map_err(|e| e.to_string())?;
            if case["text"].as_str() != Some(text.as_str()) {
                return Err("decoded text differs".into());
            }
            Ok(())
        }
        (Err(ours), _, Value::String(want)) if &ours == want => Ok(()),
        (Ok(_), _, want) => Err(format!("rendered, but the reference failed with {want}")),
        (Err(ours), _, want) => Err(format!("failed with {ours:?}, reference: {want}")),
    }
}

fn check_parse(encoding: &HarmonyEncoding, case: &Value) -> Result<(), String> {
    let tokens = ids(&case["tokens"]);
    let role = role_of(&case["role"]);
    let mode = mode_of(&case["strict"]);

    // Whole completion.
    match (
        encoding.parse_messages_from_completion_tokens(tokens.iter().copied(), role, mode),
        &case["error"],
    ) {
        (Ok(messages), Value::Null) => {
            let ours = messages_json(&messages);
            if ours != case["messages"] {
                return Err(format!(
                    "messages differ:\n ours {ours}\n want {}",
                    case["messages"]
                ));
            }
            let theirs: Vec<Message> =
                serde_json::from_value(case["messages"].clone()).map_err(|e| e.to_string())?;
            if theirs != messages {
                return Err("messages differ after loading the reference's JSON".into());
            }
        }
        (Err(e), Value::String(want)) if &e.to_string() == want => {}
        (Ok(m), want) => {
            return Err(format!(
                "parsed {} messages, reference error {want}",
                m.len()
            ));
        }
        (Err(e), want) => return Err(format!("error {:?}, reference {want}", e.to_string())),
    }

    // Token by token.
    let expected_steps = case["streaming"].as_array().cloned().unwrap_or_default();
    let mut parser = StreamableParser::new(encoding.clone(), role, mode);
    for (index, &token) in tokens.iter().enumerate() {
        if let Err(e) = parser.process(token) {
            return check_streaming_error(
                case,
                index,
                "process",
                &e.to_string(),
                &parser,
                &expected_steps,
            );
        }
        let ours = snapshot(&parser);
        match expected_steps.get(index) {
            Some(want) if *want == ours => {}
            want => {
                return Err(format!(
                    "snapshot after token {index} ({token}):\n ours {ours}\n want {want:?}"
                ));
            }
        }
    }
    if expected_steps.len() != tokens.len() {
        return Err(format!(
            "reference stopped after {} tokens, ours processed all",
            expected_steps.len()
        ));
    }
    if let Err(e) = parser.process_eos() {
        return check_streaming_error(
            case,
            tokens.len(),
            "process_eos",
            &e.to_string(),
            &parser,
            &expected_steps,
        );
    }
    let ours = snapshot(&parser);
    if ours != case["after_eos"] {
        return Err(format!(
            "after EOS:\n ours {ours}\n want {}",
            case["after_eos"]
        ));
    }
    if !case["streaming_error"].is_null() {
        return Err(format!(
            "reference failed while streaming: {}",
            case["streaming_error"]
        ));
    }
    if messages_json(parser.messages()) != case["messages"] {
        return Err("streamed messages differ".into());
    }
    Ok(())
}

fn check_streaming_error(
    case: &Value,
    index: usize,
    phase: &str,
    error: &str,
    parser: &StreamableParser,
    steps: &[Value],
) -> Result<(), String> {
    let want = &case["streaming_error"];
    if want["index"].as_u64() != Some(index as u64)
        || want["phase"].as_str() != Some(phase)
        || want["error"].as_str() != Some(error)
    {
        return Err(format!(
            "streaming error at {index} ({phase}): {error:?}; reference: {want}"
        ));
    }
    if steps.len() != index {
        return Err(format!(
            "reference recorded {} snapshots before its error, ours failed at {index}",
            steps.len()
        ));
    }
    if messages_json(parser.messages()) != case["messages_at_error"] {
        return Err(format!(
            "messages at error: ours {}, want {}",
            messages_json(parser.messages()),
            case["messages_at_error"]
        ));
    }
    Ok(())
}

fn run(kind: &str, check: fn(&HarmonyEncoding, &Value) -> Result<(), String>) {
    let encoding = encoding();
    let mut total_failed = 0;
    for dir in case_dirs(kind) {
        let files = case_files(&dir);
        assert!(!files.is_empty(), "no {kind} cases in {}", dir.display());
        let (mut passed, mut failed) = (0usize, 0usize);
        for file in files {
            let case = read_json(&file);
            match check(encoding, &case) {
                Ok(()) => passed += 1,
                Err(why) => {
                    failed += 1;
                    eprintln!("FAILED {kind} {}: {why}", file.display());
                }
            }
        }
        println!(
            "harmony {kind} cases in {}: {passed} passed, {failed} failed",
            dir.display()
        );
        eprintln!(
            "harmony {kind} cases in {}: {passed} passed, {failed} failed",
            dir.display()
        );
        total_failed += failed;
    }
    assert_eq!(
        total_failed, 0,
        "{total_failed} harmony {kind} case(s) failed"
    );
}

#[test]
fn render_cases() {
    run("render", check_render);
}

#[test]
fn parse_cases() {
    run("parse", check_parse);
}

/// The render cases again over the fixture `tokenizer.json`, with each encoder.
#[test]
fn render_cases_over_tokenizer_json() {
    use ossa_engine::tokenizer::{EncoderPreference, Tokenizer};
    let path = fixtures().join("tokenizer/tokenizer.json");
    for preference in [EncoderPreference::Auto, EncoderPreference::HuggingFace] {
        let tokenizer = Tokenizer::from_file_with(&path, preference).expect("tokenizer.json loads");
        let encoding = HarmonyEncoding::new(tokenizer).expect("harmony tokens present");
        let (mut passed, mut failed) = (0usize, 0usize);
        for file in case_files(&fixtures().join("harmony/render")) {
            match check_render(&encoding, &read_json(&file)) {
                Ok(()) => passed += 1,
                Err(why) => {
                    failed += 1;
                    eprintln!("FAILED render {} ({preference:?}): {why}", file.display());
                }
            }
        }
        eprintln!(
            "harmony render cases over tokenizer.json ({preference:?}): {passed} passed, {failed} failed"
        );
        assert_eq!(failed, 0);
    }
}
