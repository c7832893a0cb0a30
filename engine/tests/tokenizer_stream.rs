//! Streaming detokenization: tokens that end mid-character never split a character across
//! deltas; invalid bytes come out as U+FFFD; flushing releases an incomplete tail.

mod tokenizer_support;

use ossa_engine::tokenizer::{StreamDecoder, TokenizerError};
use proptest::prelude::*;
use tokenizer_support::*;

/// The single-byte token for `byte`.
fn byte_token(byte: u8) -> u32 {
    let t = builtin();
    (0..200_000u32)
        .find(|&id| t.token_bytes(id) == Some(&[byte][..]))
        .expect("every byte has a token")
}

fn feed(decoder: &mut StreamDecoder, ids: &[u32]) -> Vec<String> {
    ids.iter().map(|&id| decoder.push(id).unwrap()).collect()
}

/// Pushes each byte's token in turn, checking the delta each gives.
fn push_bytes(decoder: &mut StreamDecoder, steps: &[(u8, &str)]) {
    for (i, &(byte, delta)) in steps.iter().enumerate() {
        assert_eq!(
            decoder.push(byte_token(byte)).unwrap(),
            delta,
            "step {i}: byte {byte:#04x}"
        );
    }
}

#[test]
fn emoji_split_over_byte_tokens() {
    // The ids of openai-harmony's utf8__emoji_split_bytes fixture: 😀 as four byte tokens.
    let ids = [172, 253, 246, 222];
    assert_eq!(builtin().decode_bytes(&ids).unwrap(), "😀".as_bytes());
    let mut d = builtin().stream_decoder();
    assert_eq!(feed(&mut d, &ids), ["", "", "", "😀"]);
    assert!(d.pending_bytes().is_empty());
    assert_eq!(d.flush(), "");
}

#[test]
fn text_before_a_split_character_is_released_at_once() {
    let t = builtin();
    let mut d = t.stream_decoder();
    let hi = t.encode_ordinary("hi").unwrap();
    assert_eq!(feed(&mut d, &hi).concat(), "hi");
    // "é" = C3 A9: the first byte alone yields nothing, the second completes it.
    assert_eq!(d.push(byte_token(0xC3)).unwrap(), "");
    assert_eq!(d.pending_bytes(), &[0xC3]);
    assert_eq!(d.push(byte_token(0xA9)).unwrap(), "é");
}

#[test]
fn invalid_bytes_become_replacement_characters() {
    let mut d = builtin().stream_decoder();
    push_bytes(
        &mut d,
        &[
            // F0 9F then "a": the truncated character is invalid once "a" arrives.
            (0xF0, ""),
            (0x9F, ""),
            (b'a', "\u{FFFD}a"),
            // A lone continuation byte is invalid at once.
            (0x80, "\u{FFFD}"),
            // FF can never appear in UTF-8.
            (0xFF, "\u{FFFD}"),
        ],
    );
}

#[test]
fn flush_releases_an_incomplete_tail() {
    let mut d = builtin().stream_decoder();
    push_bytes(&mut d, &[(0xE4, ""), (0xB8, "")]);
    assert_eq!(d.flush(), "\u{FFFD}");
    assert_eq!(d.flush(), "");
    // After a flush the decoder starts clean.
    push_bytes(&mut d, &[(b'z', "z")]);
}

#[test]
fn special_tokens_stream_as_their_text() {
    let mut d = builtin().stream_decoder();
    assert_eq!(d.push(200_006).unwrap(), "<|start|>");
    match d.push(300_000) {
        Err(TokenizerError::UnknownToken { id: 300_000, .. }) => {}
        other => panic!("expected UnknownToken, got {other:?}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1000, ..ProptestConfig::default() })]

    /// Valid text: every delta ends on a character boundary of the text, and together they are
    /// the text.
    #[test]
    fn deltas_of_valid_text_never_split_characters(text in "\\PC{0,60}") {
        let t = builtin();
        let ids = t.encode_ordinary(&text).unwrap();
        let mut d = t.stream_decoder();
        let mut so_far = String::new();
        for id in ids {
            so_far.push_str(&d.push(id).unwrap());
            prop_assert!(text.starts_with(&so_far));
        }
        so_far.push_str(&d.flush());
        prop_assert_eq!(so_far, text);
    }

    /// Arbitrary ids (byte tokens included): the deltas and the flush are exactly the lossy
    /// decoding of all bytes.
    #[test]
    fn deltas_of_any_ids_are_the_lossy_decoding(ids in prop::collection::vec(prop_oneof![
        3 => 0u32..256,
        3 => 0u32..199_998,
        1 => 199_998u32..201_089,
    ], 0..40)) {
        let t = builtin();
        let mut d = t.stream_decoder();
        let mut out = String::new();
        for &id in &ids {
            out.push_str(&d.push(id).unwrap());
        }
        out.push_str(&d.flush());
        prop_assert_eq!(out, String::from_utf8_lossy(&t.decode_bytes(&ids).unwrap()).into_owned());
    }
}
