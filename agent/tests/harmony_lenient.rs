//! ossa's lenient parsing mode, rule by rule (see `ossa_agent::harmony::parser`), each next to
//! what the reference behaviour (strict) does with the same tokens.

mod harmony_support;

use harmony_support::*;
use ossa_agent::harmony::{Message, ParseMode, Role, StreamableParser};

fn tokens(text: &str) -> Vec<u32> {
    encoding().tokenizer().encode(text, true).unwrap()
}

fn parse(text: &str, role: Option<Role>, mode: ParseMode) -> Result<Vec<Message>, String> {
    parse_ids(tokens(text), role, mode)
}

fn parse_ids(ids: Vec<u32>, role: Option<Role>, mode: ParseMode) -> Result<Vec<Message>, String> {
    encoding()
        .parse_messages_from_completion_tokens(ids, role, mode)
        .map_err(|e| e.to_string())
}

fn lenient(text: &str) -> Vec<Message> {
    parse(text, Some(Role::Assistant), ParseMode::Lenient).expect("lenient never fails")
}

fn assistant(channel: Option<&str>, text: &str) -> Message {
    let mut m = Message::from_role_and_content(Role::Assistant, text);
    m.channel = channel.map(str::to_string);
    m
}

#[test]
fn rule_1_message_without_start() {
    let text =
        "<|channel|>analysis<|message|>think<|end|><|channel|>final<|message|>answer<|return|>";
    assert_eq!(
        parse(text, Some(Role::Assistant), ParseMode::Strict).unwrap_err(),
        "Unexpected token 200005 while expecting start token 200006"
    );
    assert_eq!(
        lenient(text),
        [
            assistant(Some("analysis"), "think"),
            assistant(Some("final"), "answer")
        ]
    );
    // Stray stop tokens between messages are ignored.
    let text = "<|channel|>final<|message|>a<|end|><|end|><|return|>";
    assert_eq!(lenient(text), [assistant(Some("final"), "a")]);
}

#[test]
fn rule_2_header_without_message_token() {
    // Spacing kept (the reference's non-strict mode joins words with single spaces).
    let text = "<|channel|>final Hello  world\n!<|return|>";
    assert_eq!(
        parse(text, Some(Role::Assistant), ParseMode::NonStrict).unwrap(),
        [assistant(Some("final"), "Hello world !")]
    );
    assert_eq!(lenient(text), [assistant(Some("final"), "Hello  world\n!")]);

    // A tool call whose `<|message|>` was left out is still a tool call.
    let text = "<|channel|>commentary to=functions.f <|constrain|>json {\"a\": 1}<|call|>";
    let expected = assistant(Some("commentary"), "{\"a\": 1}")
        .with_recipient("functions.f")
        .with_content_type("<|constrain|>json");
    assert_eq!(lenient(text), [expected]);

    // After `<|start|>` (the reference's non-strict mode drops this message).
    let text = "<|start|>assistant<|channel|>final hi<|end|>";
    assert_eq!(parse(text, None, ParseMode::NonStrict).unwrap(), []);
    assert_eq!(
        parse(text, None, ParseMode::Lenient).unwrap(),
        [assistant(Some("final"), "hi")]
    );

    // A plain answer with no header at all.
    assert_eq!(
        lenient("The answer is 42.<|return|>"),
        [assistant(None, "The answer is 42.")]
    );

    // Cut off inside the header: the reference fails, lenient keeps what there is.
    assert_eq!(
        parse("<|channel|>final", Some(Role::Assistant), ParseMode::Strict).unwrap_err(),
        "Unexpected EOS while waiting for message header to complete"
    );
    assert_eq!(lenient("<|channel|>final"), [assistant(Some("final"), "")]);
    assert_eq!(lenient(""), []);
}

#[test]
fn rule_3_text_before_start() {
    let text = "Sure!<|start|>assistant<|channel|>final<|message|>hi<|end|>";
    // The reference reads the stray text as a recipient.
    let strict = parse(text, Some(Role::Assistant), ParseMode::Strict).unwrap();
    assert_eq!(
        strict[0].recipient.as_deref(),
        Some("Sure!<|start|>assistant")
    );
    assert_eq!(
        lenient(text),
        [assistant(None, "Sure!"), assistant(Some("final"), "hi")]
    );
    // Whitespace alone is not a message.
    assert_eq!(
        lenient(" \n<|start|>assistant<|channel|>final<|message|>hi<|end|>"),
        [assistant(Some("final"), "hi")]
    );
}

#[test]
fn rule_4_malformed_headers() {
    // Content type before recipient: the reference rejects the order.
    let text =
        "<|channel|>commentary <|constrain|>json to=functions.get_weather<|message|>{}<|call|>";
    assert!(
        parse(text, Some(Role::Assistant), ParseMode::Strict)
            .unwrap_err()
            .starts_with("unexpected tokens remaining")
    );
    let expected = assistant(Some("commentary"), "{}")
        .with_recipient("functions.get_weather")
        .with_content_type("<|constrain|>json");
    assert_eq!(lenient(text), [expected]);

    // A tool's message when the role was given: the name is kept.
    let text = "functions.get_weather to=assistant<|channel|>commentary<|message|>{}<|end|>";
    assert!(parse(text, Some(Role::Tool), ParseMode::Strict).is_err());
    let parsed = parse(text, Some(Role::Tool), ParseMode::Lenient).unwrap();
    assert_eq!(parsed[0].author.role, Role::Tool);
    assert_eq!(
        parsed[0].author.name.as_deref(),
        Some("functions.get_weather")
    );
    assert_eq!(parsed[0].recipient.as_deref(), Some("assistant"));

    // An unknown lone role word names a tool.
    let text = "<|start|>robot<|message|>beep<|end|>";
    assert_eq!(
        parse(text, None, ParseMode::Strict).unwrap_err(),
        "Unknown role: robot"
    );
    let parsed = parse(text, None, ParseMode::Lenient).unwrap();
    assert_eq!(
        (
            parsed[0].author.role,
            parsed[0].author.name.as_deref(),
            parsed[0].text().as_str()
        ),
        (Role::Tool, Some("robot"), "beep")
    );

    // No role at all after `<|start|>`.
    assert_eq!(
        parse("<|start|><|message|>x<|end|>", None, ParseMode::Strict).unwrap_err(),
        "message header did not contain a role"
    );
    assert_eq!(
        parse("<|start|><|message|>x<|end|>", None, ParseMode::Lenient).unwrap(),
        [assistant(None, "x")]
    );

    // A channel marker without a value.
    let text = "<|channel|><|message|>x<|end|>";
    assert_eq!(
        parse(text, Some(Role::Assistant), ParseMode::Strict).unwrap_err(),
        "channel marker present but no channel value found in header"
    );
    assert_eq!(lenient(text), [assistant(None, "x")]);

    // Invalid UTF-8 in the header: U+FFFD rather than an error.
    let mut ids = tokens("<|channel|>fin");
    let lone_byte = (0..256u32)
        .find(|&id| encoding().tokenizer().token_bytes(id) == Some(&[0xE4][..]))
        .unwrap();
    ids.push(lone_byte);
    ids.extend(tokens("<|message|>x<|end|>"));
    let strict = parse_ids(ids.clone(), Some(Role::Assistant), ParseMode::Strict);
    assert_eq!(strict.unwrap_err(), "could not decode header");
    let parsed = parse_ids(ids, Some(Role::Assistant), ParseMode::Lenient).unwrap();
    assert_eq!(parsed, [assistant(Some("fin\u{FFFD}"), "x")]);
}

#[test]
fn rule_5_message_running_into_the_next() {
    let expected = [
        assistant(Some("analysis"), "think"),
        assistant(Some("final"), "answer"),
    ];
    for text in [
        "<|channel|>analysis<|message|>think<|start|>assistant<|channel|>final<|message|>answer<|return|>",
        "<|channel|>analysis<|message|>think<|channel|>final<|message|>answer<|return|>",
    ] {
        let strict = parse(text, Some(Role::Assistant), ParseMode::Strict).unwrap();
        assert_eq!(strict.len(), 1, "the reference keeps it all in one message");
        assert_eq!(lenient(text), expected);
    }
}

#[test]
fn rule_6_unknown_ids_in_content() {
    let mut ids = tokens("<|channel|>final<|message|>a");
    ids.push(250_000);
    ids.extend(tokens(" b<|end|>"));
    let strict = parse_ids(ids.clone(), Some(Role::Assistant), ParseMode::Strict).unwrap();
    assert_eq!(strict, [assistant(Some("final"), "a\u{FFFD}")]);
    let parsed = parse_ids(ids, Some(Role::Assistant), ParseMode::Lenient).unwrap();
    assert_eq!(parsed, [assistant(Some("final"), "a\u{FFFD} b")]);
}

/// On well-formed output, lenient is the reference: every fixture the reference parses without
/// error in strict mode gives the same messages and the same snapshots in lenient mode, except
/// where a documented rule applies (`<|start|>`/`<|channel|>` in content, text before
/// `<|start|>`).
#[test]
fn lenient_agrees_with_the_reference_on_well_formed_fixtures() {
    let mut checked = 0;
    for file in case_files(&fixtures().join("harmony/parse")) {
        let case = read_json(&file);
        if !case["error"].is_null()
            || case["strict"] != true
            || case["text"].as_str().unwrap().contains("Sure!")
        {
            continue;
        }
        let tokens = ids(&case["tokens"]);
        let mut parser = StreamableParser::new(
            encoding().clone(),
            role_of(&case["role"]),
            ParseMode::Lenient,
        );
        for (index, &token) in tokens.iter().enumerate() {
            parser.process(token).unwrap();
            assert_eq!(
                snapshot(&parser),
                case["streaming"][index],
                "{} token {index}",
                file.display()
            );
        }
        parser.process_eos().unwrap();
        assert_eq!(
            messages_json(parser.messages()),
            case["messages"],
            "{}",
            file.display()
        );
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} fixtures checked");
}

#[test]
fn message_spans_reproduce_the_sampled_tokens() {
    let text = "<|channel|>analysis<|message|>Need the weather.<|end|>\
<|start|>assistant to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{\"city\":\"Paris\"}<|call|>";
    let ids = tokens(text);
    for mode in [ParseMode::Strict, ParseMode::Lenient] {
        let mut parser = StreamableParser::new(encoding().clone(), Some(Role::Assistant), mode);
        for &t in &ids {
            parser.process(t).unwrap();
        }
        parser.process_eos().unwrap();
        assert_eq!(parser.messages().len(), 2);
        assert_eq!(parser.message_spans()[0].start, 0);
        let joined: Vec<u32> = (0..2)
            .flat_map(|i| parser.message_tokens(i).unwrap().to_vec())
            .collect();
        assert_eq!(joined, ids);
        // Each span is what rendering the parsed message gives (minus the prompt's
        // `<|start|>assistant` for the first).
        let second = encoding().render(&parser.messages()[1], None).unwrap();
        assert_eq!(parser.message_tokens(1).unwrap(), second.as_slice());
        let first = encoding().render(&parser.messages()[0], None).unwrap();
        assert_eq!(parser.message_tokens(0).unwrap(), &first[2..]);
    }
    // Rule 3 keeps the stray text's tokens in its own span.
    let ids = tokens("Sure!<|start|>assistant<|channel|>final<|message|>hi<|end|>");
    let mut parser = StreamableParser::new(
        encoding().clone(),
        Some(Role::Assistant),
        ParseMode::Lenient,
    );
    for &t in &ids {
        parser.process(t).unwrap();
    }
    parser.process_eos().unwrap();
    assert_eq!(
        parser.message_tokens(0).unwrap(),
        tokens("Sure!").as_slice()
    );
    assert_eq!(
        parser.message_tokens(1).unwrap(),
        tokens("<|start|>assistant<|channel|>final<|message|>hi<|end|>").as_slice()
    );
}

#[test]
fn streaming_exposes_header_fields_and_deltas() {
    let text = " to=functions.get_weather<|channel|>commentary <|constrain|>json<|message|>{\"a\":\"😀\"}<|call|>";
    let mut parser =
        StreamableParser::new(encoding().clone(), Some(Role::Assistant), ParseMode::Strict);
    let mut deltas = String::new();
    let mut saw_content_state = false;
    for t in tokens(text) {
        parser.process(t).unwrap();
        if parser.current_recipient().is_some() {
            saw_content_state = true;
            assert_eq!(parser.current_role(), Some(Role::Assistant));
            assert_eq!(parser.current_channel(), Some("commentary"));
            assert_eq!(parser.current_recipient(), Some("functions.get_weather"));
            assert_eq!(parser.current_content_type(), Some("<|constrain|>json"));
            assert!(deltas.len() <= parser.current_content().len());
        }
        deltas.push_str(parser.last_content_delta().unwrap_or(""));
    }
    assert!(saw_content_state);
    assert_eq!(deltas, "{\"a\":\"😀\"}");
    assert_eq!(parser.messages()[0].text(), deltas);
}

/// `message_if_header_ended_by` (what structured outputs ask before letting a header end)
/// foretells exactly what processing the token, or ending the stream, then does.
#[test]
fn the_message_a_header_would_make_is_foretold_exactly() {
    let encoding = encoding();
    let t = *encoding.formatting_tokens();
    let streams = [
        "<|channel|>analysis<|message|>think<|end|>to 355673 voertu",
        "<|channel|>final Hello  world\n!",
        "<|channel|>commentary to=functions.f <|constrain|>json {\"a\": 1}",
        "<|channel|>commentary",
        "<|channel|>made up channel",
        "to=python code<|channel|>analysis",
        "<|channel|>analysis<|message|>x<|channel|>final",
        "   ",
    ];
    let mut compared = 0;
    for stream in streams {
        let ids = tokens(stream);
        for cut in 0..=ids.len() {
            let mut parser =
                StreamableParser::new(encoding.clone(), Some(Role::Assistant), ParseMode::Lenient);
            for &id in &ids[..cut] {
                parser.process(id).expect("lenient never fails");
            }
            for end in [
                Some(t.message),
                Some(t.end),
                Some(t.return_),
                Some(t.call),
                Some(t.start),
                None,
            ] {
                let foretold = parser.message_if_header_ended_by(end);
                let mut after = StreamableParser::new(
                    encoding.clone(),
                    Some(Role::Assistant),
                    ParseMode::Lenient,
                );
                for &id in &ids[..cut] {
                    after.process(id).expect("lenient never fails");
                }
                let before = after.messages().len();
                let in_header = after.state() == ossa_agent::harmony::StreamState::Header;
                match end {
                    Some(id) => {
                        after.process(id).expect("lenient never fails");
                    }
                    None => {
                        after.process_eos().expect("lenient never fails");
                    }
                }
                let made = if !in_header {
                    None
                } else if end == Some(t.message) {
                    // The header became that of the message now being read.
                    (after.state() == ossa_agent::harmony::StreamState::Content).then(|| {
                        let mut m =
                            Message::from_role_and_content(after.current_role().expect("role"), "");
                        m.channel = after.current_channel().map(str::to_string);
                        m.recipient = after.current_recipient().map(str::to_string);
                        m.content_type = after.current_content_type().map(str::to_string);
                        m
                    })
                } else {
                    after.messages().get(before).cloned()
                };
                assert_eq!(foretold, made, "{stream:?} cut at {cut}, ended by {end:?}");
                compared += usize::from(made.is_some());
            }
        }
    }
    assert!(compared > 40, "only {compared} messages compared");
}
