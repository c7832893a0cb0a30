//! The tokenizer against openai-harmony's fixtures (both backends and the built-in), the special
//! token table, and loading errors.

mod tokenizer_support;

use std::path::Path;

use ossa_engine::tokenizer::{
    AllowedSpecial, EncoderKind, EncoderPreference, Tokenizer, TokenizerError, TokenizerSource,
};
use serde_json::Value;
use tokenizer_support::*;

/// Every case of every case file: `ids` (all special tokens allowed), `ordinary_ids`, and both
/// decoded back to the text. Prints `N passed, M failed` per file.
fn run_cases(label: &str, tokenizer: &Tokenizer) {
    let mut total_failed = 0;
    for file in all_case_files() {
        let cases = read_cases(&file);
        let (mut passed, mut failed) = (0usize, 0usize);
        for case in &cases {
            let mut problems = Vec::new();
            match tokenizer.encode(&case.text, AllowedSpecial::All) {
                Ok(ids) if ids == case.ids => {}
                Ok(ids) => problems.push(format!(
                    "encode: got {} ids, first difference at {}",
                    ids.len(),
                    first_diff(&ids, &case.ids)
                )),
                Err(e) => problems.push(format!("encode: {e}")),
            }
            match tokenizer.encode_ordinary(&case.text) {
                Ok(ids) if ids == case.ordinary_ids => {}
                Ok(ids) => problems.push(format!(
                    "encode_ordinary: first difference at {}",
                    first_diff(&ids, &case.ordinary_ids)
                )),
                Err(e) => problems.push(format!("encode_ordinary: {e}")),
            }
            for (what, ids) in [("ids", &case.ids), ("ordinary_ids", &case.ordinary_ids)] {
                match tokenizer.decode(ids) {
                    Ok(text) if text == case.text => {}
                    Ok(_) => problems.push(format!("decode({what}) differs from the text")),
                    Err(e) => problems.push(format!("decode({what}): {e}")),
                }
            }
            if problems.is_empty() {
                passed += 1;
            } else {
                failed += 1;
                eprintln!("[{label}] FAILED {}: {}", case.name, problems.join("; "));
            }
        }
        println!(
            "tokenizer cases [{label}] {}: {passed} passed, {failed} failed",
            file.display()
        );
        eprintln!(
            "tokenizer cases [{label}] {}: {passed} passed, {failed} failed",
            file.display()
        );
        assert!(!cases.is_empty(), "{} holds no cases", file.display());
        total_failed += failed;
    }
    assert_eq!(
        total_failed, 0,
        "{total_failed} tokenizer case(s) failed for {label}"
    );
}

fn first_diff(a: &[u32], b: &[u32]) -> usize {
    a.iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()))
}

#[test]
fn cases_builtin() {
    assert_eq!(builtin().encoder_kind(), EncoderKind::Bpe);
    assert_eq!(builtin().source(), &TokenizerSource::Builtin);
    run_cases("builtin", builtin());
}

#[test]
fn cases_tokenizer_json_auto_uses_bpe() {
    // The fixture file is o200k: the automatic choice is ossa's encoder.
    assert_eq!(from_file_auto().encoder_kind(), EncoderKind::Bpe);
    run_cases("tokenizer.json/auto", from_file_auto());
}

#[test]
fn cases_tokenizer_json_huggingface() {
    assert_eq!(
        from_file_huggingface().encoder_kind(),
        EncoderKind::HuggingFace
    );
    run_cases("tokenizer.json/tokenizers", from_file_huggingface());
}

fn special_tokens_fixture() -> Value {
    let text = std::fs::read_to_string(fixtures().join("harmony/special_tokens.json"))
        .expect("special_tokens.json");
    serde_json::from_str(&text).expect("special_tokens.json is JSON")
}

fn check_special_table(label: &str, tokenizer: &Tokenizer) {
    let fixture = special_tokens_fixture();
    let all = fixture["all_special_tokens"]
        .as_array()
        .expect("all_special_tokens");
    assert_eq!(all.len(), 1091);
    assert_eq!(
        tokenizer.vocab_size(),
        fixture["total_ids_openai_harmony"].as_u64().unwrap() as usize,
        "{label}"
    );
    for entry in all {
        let text = entry["token"].as_str().unwrap();
        let id = entry["id"].as_u64().unwrap() as u32;
        assert_eq!(tokenizer.token_id(text), Some(id), "{label}: {text}");
        assert!(tokenizer.is_special(id), "{label}: {id} is special");
        assert_eq!(
            tokenizer.token_bytes(id),
            Some(text.as_bytes()),
            "{label}: bytes of {id}"
        );
        assert_eq!(
            tokenizer.encode(text, AllowedSpecial::All).unwrap(),
            vec![id],
            "{label}: {text}"
        );
    }
    let listed = tokenizer.special_tokens();
    assert_eq!(listed.len(), all.len());
    assert!(
        listed.windows(2).all(|w| w[0].1 < w[1].1),
        "special_tokens() is in id order"
    );
    for (text, id) in fixture["named_special_tokens"].as_object().unwrap() {
        assert_eq!(tokenizer.token_id(text), Some(id.as_u64().unwrap() as u32));
    }
    // Formatting tokens that are not in the vocabulary encode as text.
    for (text, ids) in fixture["formatting_tokens_not_in_vocab_encode_as_text"]
        .as_object()
        .unwrap()
    {
        let expected: Vec<u32> = ids
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(tokenizer.token_id(text), None);
        assert_eq!(
            tokenizer.encode(text, AllowedSpecial::All).unwrap(),
            expected,
            "{label}: {text}"
        );
    }
    for id in [0u32, 1000, 199_997] {
        assert!(!tokenizer.is_special(id));
    }
    assert!(!tokenizer.is_special(201_089));
    assert_eq!(tokenizer.token_bytes(201_089), None);
}

#[test]
fn special_tokens_match_openai_harmony() {
    check_special_table("builtin", builtin());
    check_special_table("tokenizer.json", from_file_auto());
}

#[test]
fn allowed_special_subsets() {
    let t = builtin();
    let text = "a<|start|>b<|end|>c";
    let ordinary = t.encode_ordinary(text).unwrap();
    assert_eq!(t.encode(text, AllowedSpecial::None).unwrap(), ordinary);
    assert_eq!(t.encode(text, false).unwrap(), ordinary);
    let a = t.encode_ordinary("a").unwrap();
    let b = t.encode_ordinary("b").unwrap();
    let c = t.encode_ordinary("c").unwrap();
    let all = [
        a.clone(),
        vec![200_006],
        b.clone(),
        vec![200_007],
        c.clone(),
    ]
    .concat();
    assert_eq!(t.encode(text, true).unwrap(), all);
    // Only <|end|>: the <|start|> text stays ordinary text, encoded with its neighbours.
    let only_end = [t.encode_ordinary("a<|start|>b").unwrap(), vec![200_007], c].concat();
    assert_eq!(
        t.encode(text, AllowedSpecial::Only(&["<|end|>"])).unwrap(),
        only_end
    );
    // Same split rules as tiktoken-rs.
    let allowed = std::collections::HashSet::from(["<|end|>"]);
    assert_eq!(tiktoken().encode(text, &allowed).unwrap().0, only_end);
}

#[test]
fn decode_errors_are_typed() {
    let t = builtin();
    match t.decode(&[15339, 201_089]) {
        Err(TokenizerError::UnknownToken {
            id: 201_089,
            vocab_size: 201_089,
        }) => {}
        other => panic!("expected UnknownToken, got {other:?}"),
    }
    // Byte 0xF0 alone (the first byte of a 4-byte character) is not UTF-8.
    let lead = (0..200_000u32)
        .find(|&id| t.token_bytes(id) == Some(&[0xF0][..]))
        .expect("byte token F0");
    assert!(matches!(
        t.decode(&[lead]),
        Err(TokenizerError::InvalidUtf8 { .. })
    ));
    assert_eq!(t.decode_lossy(&[lead]).unwrap(), "\u{FFFD}");
    assert_eq!(t.decode_bytes(&[lead]).unwrap(), vec![0xF0]);
    assert_eq!(t.decode(&[]).unwrap(), "");
    assert_eq!(t.encode("", true).unwrap(), Vec::<u32>::new());
}

#[test]
fn model_dir_uses_its_tokenizer_json_else_the_builtin() {
    let empty = tempfile::tempdir().unwrap();
    let t = Tokenizer::from_model_dir(empty.path()).unwrap();
    assert_eq!(t.source(), &TokenizerSource::Builtin);
    assert_eq!(
        t.encode("hello world", true).unwrap(),
        builtin().encode("hello world", true).unwrap()
    );

    let with_file = tempfile::tempdir().unwrap();
    std::fs::copy(tokenizer_json(), with_file.path().join("tokenizer.json")).unwrap();
    let t = Tokenizer::from_model_dir(with_file.path()).unwrap();
    assert_eq!(
        t.source(),
        &TokenizerSource::File(with_file.path().join("tokenizer.json"))
    );
    assert_eq!(t.encode("hello world", true).unwrap(), vec![24912, 2375]);

    let missing = empty.path().join("nope");
    match Tokenizer::from_model_dir(&missing) {
        Err(e @ TokenizerError::ModelDir { .. }) => assert!(e.to_string().contains("nope"), "{e}"),
        other => panic!("expected ModelDir error, got {other:?}"),
    }
    let file = empty.path().join("file");
    std::fs::write(&file, "x").unwrap();
    assert!(matches!(
        Tokenizer::from_model_dir(&file),
        Err(TokenizerError::ModelDir { .. })
    ));
}

fn load_err(dir: &Path, content: &str) -> TokenizerError {
    let path = dir.join("tokenizer.json");
    std::fs::write(&path, content).unwrap();
    Tokenizer::from_file(&path).expect_err("must not load")
}

#[test]
fn bad_tokenizer_files_name_the_file_and_the_problem() {
    let dir = tempfile::tempdir().unwrap();
    match Tokenizer::from_file(&dir.path().join("absent.json")) {
        Err(e @ TokenizerError::Read { .. }) => {
            assert!(e.to_string().contains("absent.json"), "{e}")
        }
        other => panic!("expected Read, got {other:?}"),
    }
    let e = load_err(dir.path(), "{ not json");
    assert!(matches!(e, TokenizerError::Parse { .. }), "{e:?}");
    assert!(e.to_string().contains("tokenizer.json"), "{e}");

    let e = load_err(
        dir.path(),
        r#"{"model": {"type": "WordPiece", "vocab": {}}, "decoder": null}"#,
    );
    assert!(
        matches!(e, TokenizerError::Unsupported { .. }) && e.to_string().contains("WordPiece"),
        "{e}"
    );

    // Each file's error names what is wrong with it.
    for (label, content, named) in [
        (
            "an unsupported decoder",
            r#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "decoder": {"type": "Metaspace"}}"#,
            "Metaspace",
        ),
        (
            "an added token with lstrip",
            r#"{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []}, "decoder": {"type": "ByteLevel"},
            "added_tokens": [{"id": 0, "content": "<x>", "special": true, "lstrip": true}]}"#,
            "lstrip",
        ),
        (
            "an absurd id (would size the id table)",
            r#"{"model": {"type": "BPE", "vocab": {"a": 4000000000}, "merges": []}, "decoder": {"type": "ByteLevel"}}"#,
            "4000000000",
        ),
        (
            "a byte-level vocabulary entry outside the byte alphabet",
            r#"{"model": {"type": "BPE", "vocab": {"a": 0, "\u0001": 1}, "merges": []}, "decoder": {"type": "ByteLevel"}}"#,
            "byte-level",
        ),
    ] {
        let e = load_err(dir.path(), content);
        assert!(e.to_string().contains(named), "{label}: {e}");
    }
}

#[test]
fn a_small_non_o200k_file_uses_the_tokenizers_library() {
    // A tiny byte-level BPE: "a", "b", "ab" and one special token.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenizer.json");
    std::fs::write(
        &path,
        r#"{"version": "1.0", "truncation": null, "padding": null,
            "added_tokens": [{"id": 3, "content": "<|x|>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
            "normalizer": null,
            "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false},
            "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                      "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": {"a": 0, "b": 1, "ab": 2}, "merges": [["a", "b"]]}}"#,
    )
    .unwrap();
    let t = Tokenizer::from_file(&path).unwrap();
    assert_eq!(t.encoder_kind(), EncoderKind::HuggingFace);
    assert_eq!(t.vocab_size(), 4);
    assert_eq!(t.encode("abab<|x|>a", true).unwrap(), vec![2, 2, 3, 0]);
    assert_eq!(t.encode_ordinary("ab").unwrap(), vec![2]);
    assert_eq!(t.decode(&[2, 3, 1]).unwrap(), "ab<|x|>b");
    assert!(t.is_special(3) && !t.is_special(2));
    let _ = EncoderPreference::Auto;
}

#[test]
fn pathological_inputs_do_not_fail() {
    // tiktoken-rs 0.12.1 panics (regex stack overflow) on this; ossa's encoder must not.
    let t = builtin();
    let mut text = " ".repeat(2_000_000);
    text.push('x');
    let ids = t.encode_ordinary(&text).unwrap();
    assert_eq!(t.decode(&ids).unwrap(), text);
    // The last space joins the word: " x" is one piece.
    assert_eq!(
        &ids[ids.len() - 1..],
        t.encode_ordinary(" x").unwrap().as_slice()
    );

    // Long single pieces take the heap merge; compare with tiktoken-rs where it copes.
    for piece in [
        "=".repeat(5000),
        "ab".repeat(3000),
        "\u{1F600}".repeat(700),
        "x".repeat(4097),
    ] {
        assert_eq!(
            t.encode_ordinary(&piece).unwrap(),
            tiktoken().encode_ordinary(&piece),
            "{}",
            &piece[..8]
        );
    }
}
