//! The parser on arbitrary token ids, and on id sequences biased toward special tokens: it never
//! panics, never hangs, and in lenient mode never fails; in every mode it can go on after an
//! error. Message spans always tile the stream in order.

mod harmony_support;

use harmony_support::*;
use ossa_agent::harmony::{ParseMode, Role, StreamState, StreamableParser};
use proptest::prelude::*;

const FORMATTING: [u32; 9] = [
    200_006, 200_008, 200_007, 200_002, 200_012, 200_005, 200_003, 199_998, 199_999,
];

fn id() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => prop::sample::select(FORMATTING.to_vec()),
        3 => 0u32..256,
        4 => 0u32..199_998,
        2 => 199_998u32..=201_088,
        1 => 201_089u32..300_000,
        1 => any::<u32>(),
    ]
}

fn check_spans(parser: &StreamableParser) -> Result<(), TestCaseError> {
    let mut previous_end = 0;
    prop_assert_eq!(parser.message_spans().len(), parser.messages().len());
    for span in parser.message_spans() {
        prop_assert!(
            span.start >= previous_end
                && span.start <= span.end
                && span.end <= parser.tokens().len(),
            "{:?}",
            span
        );
        previous_end = span.end;
    }
    Ok(())
}

/// [`run`] in strict, non-strict and lenient mode.
fn run_every_mode(tokens: &[u32], role: Option<Role>) -> Result<(), TestCaseError> {
    for mode in [ParseMode::Strict, ParseMode::NonStrict, ParseMode::Lenient] {
        run(tokens, role, mode)?;
    }
    Ok(())
}

fn run(tokens: &[u32], role: Option<Role>, mode: ParseMode) -> Result<(), TestCaseError> {
    let mut parser = StreamableParser::new(encoding().clone(), role, mode);
    let mut failed = false;
    for &token in tokens {
        // Go on after an error: the parser must stay usable.
        if let Err(e) = parser.process(token) {
            prop_assert!(
                mode != ParseMode::Lenient,
                "lenient mode failed on {}: {}",
                token,
                e
            );
            failed = true;
        }
        let _ = (
            parser.current_role(),
            parser.current_channel(),
            parser.last_content_delta(),
            parser.current_content(),
        );
    }
    let eos = parser.process_eos();
    if mode == ParseMode::Lenient {
        prop_assert!(eos.is_ok(), "lenient EOS failed: {:?}", eos.err());
        prop_assert_eq!(parser.state(), StreamState::ExpectStart);
    }
    check_spans(&parser)?;
    if mode == ParseMode::Lenient || !failed {
        // Everything decodes and re-serializes.
        let json = serde_json::to_string(parser.messages()).expect("serializes");
        let _: Vec<ossa_agent::harmony::Message> = serde_json::from_str(&json).expect("reloads");
    }
    Ok(())
}

fn roles() -> impl Strategy<Value = Option<Role>> {
    prop_oneof![
        Just(None),
        Just(Some(Role::Assistant)),
        Just(Some(Role::Tool)),
        Just(Some(Role::User))
    ]
}

/// [`run_every_mode`] on `cases` streams of `lengths` ids drawn from `ids`, under every role.
fn fuzz(cases: u32, ids: impl Strategy<Value = u32>, lengths: std::ops::Range<usize>) {
    let config = ProptestConfig {
        cases,
        ..ProptestConfig::default()
    };
    proptest!(config, |(tokens in prop::collection::vec(ids, lengths), role in roles())| {
        run_every_mode(&tokens, role)?;
    });
}

#[test]
fn never_panics_on_biased_ids() {
    fuzz(10_000, id(), 0..200);
}

#[test]
fn never_panics_on_arbitrary_ids() {
    fuzz(10_000, any::<u32>(), 0..64);
}

/// Long streams: work per token stays bounded (no quadratic blow-up hangs these).
#[test]
fn long_streams_finish() {
    fuzz(64, id(), 5_000..20_000);
}

#[test]
fn pathological_streams_finish() {
    let text = encoding()
        .tokenizer()
        .encode_ordinary(&"word ".repeat(100_000))
        .unwrap();
    // A header that never ends, then the end of the stream.
    for mode in [ParseMode::Strict, ParseMode::NonStrict, ParseMode::Lenient] {
        let mut parser = StreamableParser::new(encoding().clone(), Some(Role::Assistant), mode);
        for &t in &text {
            parser.process(t).unwrap();
        }
        let eos = parser.process_eos();
        assert_eq!(eos.is_ok(), mode == ParseMode::Lenient, "{mode:?}");
    }
    // Content with an unknown id early on, then a long tail.
    let mut tokens = encoding()
        .tokenizer()
        .encode("<|channel|>final<|message|>", true)
        .unwrap();
    tokens.push(250_000);
    tokens.extend(&text);
    for mode in [ParseMode::Strict, ParseMode::Lenient] {
        let messages = encoding()
            .parse_messages_from_completion_tokens(
                tokens.iter().copied(),
                Some(Role::Assistant),
                mode,
            )
            .unwrap();
        let content = messages[0].text();
        match mode {
            ParseMode::Lenient => assert_eq!(content.len(), 3 + 100_000 * 5),
            _ => assert_eq!(content, "\u{FFFD}"),
        }
    }
}
