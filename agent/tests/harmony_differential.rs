//! Differential property tests against OpenAI's `openai-harmony` 0.0.8 crate: generated
//! conversations (every role, channels, recipients, content types, tool namespaces with generated
//! JSON schemas, unicode, special-token text) must render to the same tokens or the same error,
//! and generated token streams must parse to the same messages or error, with the same state
//! after every token. The reference reads its vocabulary offline: the o200k_base.tiktoken it
//! expects is written to a temporary folder (and checked against its SHA-256) and named by
//! `TIKTOKEN_ENCODINGS_BASE`.

mod harmony_support;

use std::sync::OnceLock;

use harmony_support::*;
use openai_harmony::chat as reference_chat;
use openai_harmony::{HarmonyEncodingName, ParseOptions, load_harmony_encoding};
use ossa_agent::harmony::{
    Author, ChannelConfig, Content, Conversation, DeveloperContent, Message, ParseMode,
    ReasoningEffort, RenderConversationConfig, Role, StreamableParser, SystemContent,
    ToolDescription, ToolNamespaceConfig,
};
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

const O200K_SHA256: &str = "446a9538cb6c348e3516120d7c08b09f57c36495e2acfffe59a5bf8b0cfb1a2d";

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// openai-harmony's encoding, loaded from an o200k_base.tiktoken written from the vocabulary
/// that tiktoken-rs ships (through ossa's built-in tokenizer, which is built from it); the file
/// must hash to the value openai-harmony checks.
fn reference() -> &'static openai_harmony::HarmonyEncoding {
    static R: OnceLock<(tempfile::TempDir, openai_harmony::HarmonyEncoding)> = OnceLock::new();
    &R.get_or_init(|| {
        let tokenizer = encoding().tokenizer();
        let mut file = String::new();
        for rank in 0..199_998u32 {
            let bytes = tokenizer
                .token_bytes(rank)
                .expect("every o200k rank has bytes");
            file.push_str(&base64(bytes));
            file.push(' ');
            file.push_str(&rank.to_string());
            file.push('\n');
        }
        let digest = format!("{:x}", Sha256::digest(file.as_bytes()));
        assert_eq!(
            digest, O200K_SHA256,
            "the o200k_base.tiktoken written is not OpenAI's"
        );
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::write(dir.path().join("o200k_base.tiktoken"), &file).expect("write vocabulary");
        // SAFETY: set once, before openai-harmony reads it; Rust's own environment accesses are
        // serialised by std, and nothing else in this test binary touches the environment.
        unsafe { std::env::set_var("TIKTOKEN_ENCODINGS_BASE", dir.path()) };
        let reference = load_harmony_encoding(HarmonyEncodingName::HarmonyGptOss)
            .expect("openai-harmony loads offline");
        (dir, reference)
    })
    .1
}

/// A `RenderConversationConfig` of openai-harmony (the type is not exported; it is taken from
/// a function that accepts it).
fn infer_config<C: Default>(
    _: fn(
        &openai_harmony::HarmonyEncoding,
        &'static reference_chat::Conversation,
        Option<&C>,
    ) -> anyhow::Result<Vec<u32>>,
) -> C {
    C::default()
}

/// Renders `conversation` with the reference; `Err` holds the error's text.
fn reference_render(
    conversation: &reference_chat::Conversation,
    mode: RenderMode,
    config: Option<bool>,
) -> Result<Vec<u32>, String> {
    let mut cfg = infer_config(
        openai_harmony::HarmonyEncoding::render_conversation::<&'static reference_chat::Conversation>,
    );
    let cfg = config.map(|auto_drop_analysis| {
        cfg.auto_drop_analysis = auto_drop_analysis;
        &cfg
    });
    let r = reference();
    match mode {
        RenderMode::Completion(role) => {
            r.render_conversation_for_completion(conversation, reference_role(role), cfg)
        }
        RenderMode::Conversation => r.render_conversation(conversation, cfg),
        RenderMode::Training => r.render_conversation_for_training(conversation, cfg),
    }
    .map_err(|e| e.to_string())
}

fn ours_render(
    conversation: &Conversation,
    mode: RenderMode,
    config: Option<bool>,
) -> Result<Vec<u32>, String> {
    let config = config.map(|auto_drop_analysis| RenderConversationConfig { auto_drop_analysis });
    let e = encoding();
    match mode {
        RenderMode::Completion(role) => {
            e.render_conversation_for_completion(conversation, role, config.as_ref())
        }
        RenderMode::Conversation => e.render_conversation(conversation, config.as_ref()),
        RenderMode::Training => e.render_conversation_for_training(conversation, config.as_ref()),
    }
    .map_err(|e| e.to_string())
}

fn reference_role(role: Role) -> reference_chat::Role {
    serde_json::from_value(serde_json::to_value(role).unwrap()).unwrap()
}

#[derive(Debug, Clone, Copy)]
enum RenderMode {
    Completion(Role),
    Conversation,
    Training,
}

// ---------------------------------------------------------------------------------------------
// Generators.

fn role() -> impl Strategy<Value = Role> {
    prop::sample::select(vec![
        Role::User,
        Role::Assistant,
        Role::System,
        Role::Developer,
        Role::Tool,
    ])
}

fn text() -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        4 => "[a-zA-Z ,.!?']{0,24}",
        2 => "\\PC{0,12}",
        1 => prop::sample::select(vec![
            "<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>",
            "<|reserved_200500|>", "<|refusal|>", "\n\n", "  ", "\t", "🎉👍🏽", "नमस्ते", "你好，世界", "don't",
            "```python\nprint(1)\n```", "{\"a\": 1}",
        ]).prop_map(str::to_string),
    ];
    prop::collection::vec(fragment, 0..4).prop_map(|parts| parts.concat())
}

fn word() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(vec!["analysis", "commentary", "final"]).prop_map(str::to_string),
        1 => "[a-z_.@!#]{1,10}",
        1 => "\\PC{1,4}",
    ]
}

fn recipient() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.4,
        prop_oneof![
            prop::sample::select(vec![
                "all",
                "functions.get_weather",
                "browser.search",
                "python",
                "user",
                "assistant"
            ])
            .prop_map(str::to_string),
            "[a-z_.]{1,12}",
        ],
    )
}

fn content_type() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.3,
        prop::sample::select(vec![
            "<|constrain|>json",
            "json",
            "<|constrain|>",
            "text",
            "<|constrain|>yaml x",
            "code",
        ])
        .prop_map(str::to_string),
    )
}

/// JSON values a schema may carry as `default`, `enum` members, `examples`.
fn json_scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        "[a-z0-9 \"]{0,8}".prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        (-1000.0f64..1000.0).prop_map(|f| json!(f)),
        any::<bool>().prop_map(Value::from),
        Just(Value::Null),
        Just(json!([1, "a"])),
        Just(json!({"k": "v"})),
    ]
}

fn description() -> impl Strategy<Value = Option<String>> {
    prop::option::weighted(
        0.4,
        prop_oneof![
            "[A-Za-z ,.]{0,20}",
            Just("Line one.\nLine two.".to_string())
        ],
    )
}

/// Sets `key` in `schema` when there is a `value`.
fn insert_some(schema: &mut Map<String, Value>, key: &str, value: Option<Value>) {
    if let Some(value) = value {
        schema.insert(key.into(), value);
    }
}

fn leaf_schema() -> impl Strategy<Value = Value> {
    (
        prop::sample::select(vec![
            "string", "number", "integer", "boolean", "null", "weird", "array", "none",
        ]),
        description(),
        prop::option::weighted(0.3, json_scalar()),
        prop::option::weighted(0.2, prop::collection::vec(json_scalar(), 0..4)),
        prop::option::weighted(0.15, any::<bool>()),
        prop::option::weighted(
            0.1,
            prop::collection::vec(
                prop::sample::select(vec!["string", "integer", "null", "number"]),
                0..3,
            ),
        ),
    )
        .prop_map(
            |(kind, description, default, enumeration, nullable, type_list)| {
                let mut schema = Map::new();
                match type_list {
                    Some(list) => {
                        schema.insert("type".into(), json!(list));
                    }
                    None if kind != "none" => {
                        schema.insert("type".into(), json!(kind));
                    }
                    None => {}
                }
                insert_some(&mut schema, "description", description.map(|d| json!(d)));
                insert_some(&mut schema, "enum", enumeration.map(Value::Array));
                insert_some(&mut schema, "default", default);
                insert_some(&mut schema, "nullable", nullable.map(|n| json!(n)));
                Value::Object(schema)
            },
        )
}

fn schema() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        10 => leaf_schema(),
        1 => prop::sample::select(vec![json!(true), json!("x"), json!(3), json!({"oneOf": "bad"})]),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            // Objects: properties in generated order, some required, comments.
            (
                prop::collection::vec(
                    (
                        "[a-z_]{1,8}|\\PC{1,3}",
                        inner.clone(),
                        prop::option::weighted(0.1, "[A-Z][a-z]{0,6}"),
                        prop::option::weighted(0.1, prop::collection::vec(json_scalar(), 0..3))
                    ),
                    0..4
                ),
                prop::collection::vec(any::<prop::sample::Index>(), 0..3),
                description(),
                prop::option::weighted(0.1, json_scalar()),
            )
                .prop_map(|(properties, required, description, default)| {
                    let mut props = Map::new();
                    for (name, mut schema, title, examples) in properties {
                        if let Value::Object(map) = &mut schema {
                            if let Some(t) = title {
                                map.insert("title".into(), json!(t));
                            }
                            if let Some(e) = examples {
                                map.insert("examples".into(), Value::Array(e));
                            }
                        }
                        props.insert(name, schema);
                    }
                    let names: Vec<String> = props.keys().cloned().collect();
                    let mut schema = Map::new();
                    schema.insert("type".into(), json!("object"));
                    insert_some(&mut schema, "description", description.map(|d| json!(d)));
                    schema.insert("properties".into(), Value::Object(props));
                    if !names.is_empty() && !required.is_empty() {
                        let req: Vec<&String> = required
                            .iter()
                            .map(|i| &names[i.index(names.len())])
                            .collect();
                        schema.insert("required".into(), json!(req));
                    }
                    insert_some(&mut schema, "default", default);
                    Value::Object(schema)
                }),
            // Arrays.
            (inner.clone(), description()).prop_map(|(items, description)| {
                let mut schema = json!({"type": "array", "items": items});
                if let Some(d) = description {
                    schema["description"] = json!(d);
                }
                schema
            }),
            // oneOf, at the top or as a property, with per-variant comments.
            (
                prop::collection::vec(inner.clone(), 0..3),
                description(),
                prop::option::weighted(0.3, json_scalar()),
                prop::option::weighted(0.3, any::<bool>())
            )
                .prop_map(|(variants, description, default, nullable)| {
                    let mut schema = Map::new();
                    schema.insert("oneOf".into(), Value::Array(variants));
                    insert_some(&mut schema, "description", description.map(|d| json!(d)));
                    insert_some(&mut schema, "default", default);
                    insert_some(&mut schema, "nullable", nullable.map(|n| json!(n)));
                    Value::Object(schema)
                }),
        ]
    })
}

fn tool_description() -> impl Strategy<Value = ToolDescription> {
    (
        "[a-z_]{1,10}",
        text(),
        prop::option::weighted(0.8, schema()),
    )
        .prop_map(|(name, description, parameters)| {
            ToolDescription::new(name, description, parameters)
        })
}

fn namespace() -> impl Strategy<Value = ToolNamespaceConfig> {
    prop_oneof![
        1 => Just(ToolNamespaceConfig::browser()),
        1 => Just(ToolNamespaceConfig::python()),
        3 => ("[a-z]{1,8}", prop::option::of(text()), prop::collection::vec(tool_description(), 0..3))
            .prop_map(|(name, description, tools)| ToolNamespaceConfig::new(name, description, tools)),
    ]
}

fn namespaces() -> impl Strategy<Value = Option<Vec<ToolNamespaceConfig>>> {
    prop::option::weighted(0.5, prop::collection::vec(namespace(), 0..3))
}

fn system_content() -> impl Strategy<Value = SystemContent> {
    (
        prop::option::of(text()),
        prop::option::of(prop::sample::select(vec![
            ReasoningEffort::Low,
            ReasoningEffort::Medium,
            ReasoningEffort::High,
        ])),
        prop::option::of("20[0-9]{2}-[01][0-9]-[0-3][0-9]"),
        prop::option::of("20[0-9]{2}-[01][0-9]"),
        prop::option::of((prop::collection::vec(word(), 0..4), any::<bool>())),
        namespaces(),
    )
        .prop_map(
            |(identity, effort, date, cutoff, channels, tools)| SystemContent {
                model_identity: identity,
                reasoning_effort: effort,
                conversation_start_date: date,
                knowledge_cutoff: cutoff,
                channel_config: channels.map(|(valid_channels, channel_required)| ChannelConfig {
                    valid_channels,
                    channel_required,
                }),
                tools: tools.map(|list| list.into_iter().map(|ns| (ns.name.clone(), ns)).collect()),
            },
        )
}

fn developer_content() -> impl Strategy<Value = DeveloperContent> {
    (
        prop::option::of(text()),
        prop::option::weighted(0.7, prop::collection::vec(tool_description(), 0..4)),
        namespaces(),
    )
        .prop_map(|(instructions, functions, others)| {
            let mut developer = DeveloperContent {
                instructions,
                tools: None,
            };
            for ns in others.unwrap_or_default() {
                developer = developer.with_tools(ns);
            }
            if let Some(functions) = functions {
                developer = developer.with_function_tools(functions);
            }
            developer
        })
}

fn content_for(role: Role) -> BoxedStrategy<Content> {
    let text = text().prop_map(Content::from);
    match role {
        Role::System => prop_oneof![6 => system_content().prop_map(Content::from), 1 => text, 1 => developer_content().prop_map(Content::from)].boxed(),
        Role::Developer => prop_oneof![6 => developer_content().prop_map(Content::from), 1 => text, 1 => system_content().prop_map(Content::from)].boxed(),
        _ => prop_oneof![20 => text, 1 => system_content().prop_map(Content::from)].boxed(),
    }
}

fn message() -> impl Strategy<Value = Message> {
    role().prop_flat_map(|role| {
        let name = if role == Role::Tool {
            prop::option::weighted(
                0.95,
                prop_oneof![
                    "functions\\.[a-z_]{1,8}",
                    Just("browser.search".to_string())
                ],
            )
            .boxed()
        } else {
            prop::option::weighted(0.1, "[a-zA-Z]{1,6}").boxed()
        };
        (
            Just(role),
            name,
            prop::collection::vec(content_for(role), 1..3),
            prop::option::weighted(0.6, word()),
            recipient(),
            content_type(),
        )
            .prop_map(
                |(role, name, content, channel, recipient, content_type)| Message {
                    author: Author { role, name },
                    recipient,
                    content,
                    channel,
                    content_type,
                },
            )
    })
}

fn conversation() -> impl Strategy<Value = Conversation> {
    prop::collection::vec(message(), 0..7).prop_map(Conversation::from_messages)
}

fn render_mode() -> impl Strategy<Value = RenderMode> {
    prop_oneof![
        2 => role().prop_map(RenderMode::Completion),
        1 => Just(RenderMode::Conversation),
        1 => Just(RenderMode::Training),
    ]
}

// ---------------------------------------------------------------------------------------------
// Token streams.

/// Tokens of a fragment of model output: header pieces, content, split characters, stop
/// tokens, any special token, ids outside the vocabulary.
fn stream_fragment() -> impl Strategy<Value = Vec<u32>> {
    let tokenizer = encoding().tokenizer().clone();
    let encode = move |text: String| tokenizer.encode_ordinary(&text).expect("encodes");
    let byte_tokens = {
        let tokenizer = encoding().tokenizer().clone();
        move |(text, cut): (String, usize)| {
            let bytes = text.as_bytes();
            let bytes = &bytes[..bytes.len().saturating_sub(cut)];
            bytes
                .iter()
                .map(|&b| {
                    (0..256u32)
                        .find(|&id| tokenizer.token_bytes(id) == Some(&[b][..]))
                        .expect("byte token")
                })
                .collect::<Vec<u32>>()
        }
    };
    prop_oneof![
        4 => (word(), text(), prop::sample::select(vec![200_007u32, 200_002, 200_012])).prop_map(|(channel, body, stop)| {
            // A whole well-formed message.
            let mut v = vec![200_006];
            v.extend(encode_word("assistant"));
            v.push(200_005);
            v.extend(encode_word(&channel));
            v.push(200_008);
            v.extend(encode_word(&body));
            v.push(stop);
            v
        }),
        4 => Just(vec![200_006]),
        4 => Just(vec![200_008]),
        4 => prop::sample::select(vec![200_007u32, 200_002, 200_012]).prop_map(|t| vec![t]),
        3 => word().prop_map(move |w| { let mut v = vec![200_005]; v.extend(encode_word(&w)); v }),
        2 => Just(vec![200_003]),
        3 => prop::sample::select(vec![
            "assistant", "user", "tool", "system", "developer", "functions.get_weather", "robot", " to=functions.get_weather",
            " to=browser.search", " json", "json", " ", "\n", " <|constrain|>json", "to=x<|constrain|>json",
        ]).prop_map(encode_word),
        6 => text().prop_map(encode),
        2 => ("[é😀你नमस्ते€]{1,3}", 0usize..3).prop_map(byte_tokens),
        1 => (199_998u32..201_089).prop_map(|t| vec![t]),
        1 => (0u32..199_998).prop_map(|t| vec![t]),
        1 => (201_089u32..201_200).prop_map(|t| vec![t]),
    ]
}

fn encode_word(text: &str) -> Vec<u32> {
    encoding()
        .tokenizer()
        .encode_ordinary(text)
        .expect("encodes")
}

/// A whole well-formed assistant message (`with_start`: preceded by `<|start|>assistant`).
fn whole_message(with_start: bool) -> impl Strategy<Value = Vec<u32>> {
    (
        prop::option::weighted(0.8, word()),
        recipient(),
        content_type(),
        text(),
        prop::sample::select(vec![200_007u32, 200_002, 200_012]),
    )
        .prop_map(move |(channel, recipient, content_type, body, stop)| {
            let mut message = Message::from_role_and_content(Role::Assistant, body);
            message.channel = channel;
            message.recipient = recipient;
            message.content_type = content_type;
            let mut tokens = encoding().render(&message, None).expect("renders");
            *tokens.last_mut().expect("end token") = stop;
            if !with_start {
                tokens.drain(..2);
            }
            tokens
        })
}

fn token_stream() -> impl Strategy<Value = Vec<u32>> {
    prop_oneof![
        // Anything.
        prop::collection::vec(stream_fragment(), 0..14).prop_map(|parts| parts.concat()),
        // Mostly well-formed: a first message (its `<|start|>assistant` ended the prompt), more
        // messages, a few stray fragments anywhere.
        (
            whole_message(false),
            prop::collection::vec(whole_message(true), 0..4),
            prop::collection::vec((any::<prop::sample::Index>(), stream_fragment()), 0..3),
        )
            .prop_map(|(first, rest, strays)| {
                let mut tokens = first;
                for message in rest {
                    tokens.extend(message);
                }
                for (at, fragment) in strays {
                    let at = at.index(tokens.len() + 1);
                    tokens.splice(at..at, fragment);
                }
                tokens
            }),
    ]
}

/// Reference messages in ossa's types (through the reference's own JSON).
fn from_reference(messages: &[reference_chat::Message]) -> Vec<Message> {
    serde_json::from_value(serde_json::to_value(messages).expect("reference serializes"))
        .expect("ossa reads reference JSON")
}

fn reference_snapshot(parser: &openai_harmony::StreamableParser) -> Value {
    let state: Value =
        serde_json::from_str(&parser.state_json().expect("state json")).expect("json");
    json!({
        "state": state["state"],
        "current_role": parser.current_role().map(|r| r.as_str().to_string()),
        "current_channel": parser.current_channel(),
        "current_recipient": parser.current_recipient(),
        "current_content_type": parser.current_content_type(),
        "last_content_delta": parser.last_content_delta().expect("delta"),
        "messages_so_far": parser.messages().len(),
    })
}

fn compare_parse(tokens: &[u32], role: Option<Role>, strict: bool) -> Result<(), TestCaseError> {
    let mode = if strict {
        ParseMode::Strict
    } else {
        ParseMode::NonStrict
    };
    let reference_role = role.map(reference_role);
    let options = ParseOptions { strict };

    let theirs = reference()
        .parse_messages_from_completion_tokens_with_options(
            tokens.iter().copied(),
            reference_role.clone(),
            options,
        )
        .map(|m| from_reference(&m))
        .map_err(|e| e.to_string());
    let ours = encoding()
        .parse_messages_from_completion_tokens(tokens.iter().copied(), role, mode)
        .map_err(|e| e.to_string());
    prop_assert_eq!(
        &ours,
        &theirs,
        "whole parse, role {:?}, strict {}",
        role,
        strict
    );

    let mut reference_parser = openai_harmony::StreamableParser::new_with_options(
        reference().clone(),
        reference_role,
        options,
    )
    .expect("parser");
    let mut parser = StreamableParser::new(encoding().clone(), role, mode);
    for (index, &token) in tokens.iter().enumerate() {
        let theirs = reference_parser
            .process(token)
            .map(|_| ())
            .map_err(|e| e.to_string());
        let ours = parser.process(token).map(|_| ()).map_err(|e| e.to_string());
        prop_assert_eq!(&ours, &theirs, "token {} ({})", index, token);
        if ours.is_err() {
            prop_assert_eq!(
                parser.messages().to_vec(),
                from_reference(reference_parser.messages())
            );
            return Ok(());
        }
        prop_assert_eq!(
            snapshot(&parser),
            reference_snapshot(&reference_parser),
            "after token {} ({})",
            index,
            token
        );
        prop_assert_eq!(
            parser.current_content(),
            reference_parser.current_content().expect("content")
        );
    }
    let theirs = reference_parser
        .process_eos()
        .map(|_| ())
        .map_err(|e| e.to_string());
    let ours = parser.process_eos().map(|_| ()).map_err(|e| e.to_string());
    prop_assert_eq!(&ours, &theirs, "eos");
    prop_assert_eq!(
        parser.messages().to_vec(),
        from_reference(reference_parser.messages())
    );
    if ours.is_ok() {
        prop_assert_eq!(
            snapshot(&parser),
            reference_snapshot(&reference_parser),
            "after eos"
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1500, max_shrink_iters: 4000, ..ProptestConfig::default() })]

    #[test]
    fn render_matches_openai_harmony(
        conversation in conversation(),
        mode in render_mode(),
        config in prop::option::of(any::<bool>()),
    ) {
        // ossa's JSON loads in the reference (same shape), and comes back unchanged.
        let json = serde_json::to_string(&conversation).unwrap();
        let theirs: reference_chat::Conversation = serde_json::from_str(&json).expect("reference reads ossa's JSON");
        let back: Conversation = serde_json::from_value(serde_json::to_value(&theirs).unwrap()).expect("ossa reads reference JSON");
        prop_assert_eq!(&back, &conversation);

        let ours = ours_render(&conversation, mode, config);
        let reference = reference_render(&theirs, mode, config);
        prop_assert_eq!(ours, reference, "mode {:?} config {:?}", mode, config);
    }

    #[test]
    fn single_message_render_matches(message in message(), has_functions in any::<bool>()) {
        let json = serde_json::to_string(&message).unwrap();
        let theirs: reference_chat::Message = serde_json::from_str(&json).expect("reference reads ossa's JSON");
        let ours = encoding()
            .render(&message, Some(&ossa_agent::harmony::RenderOptions { conversation_has_function_tools: has_functions }))
            .map_err(|e| e.to_string());
        let mut options = infer_options(openai_harmony::HarmonyEncoding::render);
        options.conversation_has_function_tools = has_functions;
        let reference = reference().render(&theirs, Some(&options)).map_err(|e| e.to_string());
        prop_assert_eq!(ours, reference);
    }
}

/// openai-harmony's `RenderOptions` (not exported either).
fn infer_options<O: Default>(
    _: fn(
        &openai_harmony::HarmonyEncoding,
        &reference_chat::Message,
        Option<&O>,
    ) -> anyhow::Result<Vec<u32>>,
) -> O {
    O::default()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 4000, max_shrink_iters: 4000, ..ProptestConfig::default() })]

    #[test]
    fn parse_matches_openai_harmony(
        tokens in token_stream(),
        role in prop::option::weighted(0.7, prop_oneof![4 => Just(Role::Assistant), 1 => role()]),
    ) {
        compare_parse(&tokens, role, true)?;
        compare_parse(&tokens, role, false)?;
    }

    /// Streams that start like a real completion (after `<|start|>assistant`).
    #[test]
    fn parse_of_plausible_completions_matches(
        header in prop::sample::select(vec![
            "<|channel|>final<|message|>", "<|channel|>analysis<|message|>", " to=functions.f<|channel|>commentary json<|message|>",
            "<|channel|>commentary to=functions.f <|constrain|>json<|message|>", "<|channel|>final ", "",
        ]),
        body in text(),
        stop in prop::sample::select(vec![200_007u32, 200_002, 200_012]),
        rest in token_stream(),
    ) {
        let mut tokens = encoding().tokenizer().encode(header, true).unwrap();
        tokens.extend(encode_word(&body));
        tokens.push(stop);
        tokens.extend(rest);
        compare_parse(&tokens, Some(Role::Assistant), true)?;
        compare_parse(&tokens, Some(Role::Assistant), false)?;
    }
}

#[test]
fn builtin_namespaces_equal_openai_harmonys() {
    for (ours, theirs) in [
        (
            ToolNamespaceConfig::browser(),
            reference_chat::ToolNamespaceConfig::browser(),
        ),
        (
            ToolNamespaceConfig::python(),
            reference_chat::ToolNamespaceConfig::python(),
        ),
    ] {
        // Same content, field by field (through the reference's own serialization).
        let theirs: ToolNamespaceConfig =
            serde_json::from_value(serde_json::to_value(&theirs).unwrap()).unwrap();
        assert_eq!(ours, theirs);
        let theirs_json = serde_json::to_string(&theirs).unwrap();
        assert_eq!(serde_json::to_string(&ours).unwrap(), theirs_json);
    }
}

#[test]
fn schemars_function_tools_render_like_openai_harmony() {
    use schemars::JsonSchema;
    /// Book a table.
    #[derive(JsonSchema)]
    #[allow(dead_code)]
    struct Booking {
        /// Restaurant name.
        restaurant: String,
        /// Number of guests.
        guests: u8,
        /// When, ISO 8601.
        time: Option<String>,
        /// Seating preference.
        seating: Option<Seating>,
        /// Dietary needs, if any.
        diets: Vec<String>,
    }
    #[derive(JsonSchema)]
    #[allow(dead_code)]
    enum Seating {
        Indoor,
        Outdoor,
    }
    let tool = ToolDescription::from_type::<Booking>("book_table", "");
    assert_eq!(tool.description, "Book a table.");
    let developer = Message::from_role_and_content(
        Role::Developer,
        DeveloperContent::new().with_function_tools(vec![tool]),
    );
    let conversation = Conversation::from_messages([developer]);
    let theirs: reference_chat::Conversation =
        serde_json::from_str(&serde_json::to_string(&conversation).unwrap()).unwrap();
    let ours = ours_render(&conversation, RenderMode::Conversation, None).unwrap();
    assert_eq!(
        ours,
        reference_render(&theirs, RenderMode::Conversation, None).unwrap()
    );
    let text = encoding().tokenizer().decode(&ours).unwrap();
    for expected in [
        "// Book a table.\ntype book_table = (_: {\n",
        "// Restaurant name.\nrestaurant: string,\n",
        "// Number of guests.\nguests: number,\n",
        "time?: string,",
        "seating?: \"Indoor\" | \"Outdoor\",",
        "diets: string[],",
    ] {
        assert!(text.contains(expected), "{expected:?} missing from {text}");
    }
}

/// The generators must reach the interesting cases, or the comparisons above say little: most
/// conversations render, some fail; most streams parse to messages, some fail; tool schemas get
/// rendered.
#[test]
fn generators_cover_successes_and_failures() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let (mut rendered, mut failed, mut with_schemas) = (0, 0, 0);
    for _ in 0..400 {
        let conversation = conversation().new_tree(&mut runner).unwrap().current();
        match ours_render(&conversation, RenderMode::Conversation, None) {
            Ok(tokens) => {
                rendered += 1;
                if encoding()
                    .tokenizer()
                    .decode_lossy(&tokens)
                    .unwrap()
                    .contains("(_: ")
                {
                    with_schemas += 1;
                }
            }
            Err(_) => failed += 1,
        }
    }
    eprintln!(
        "conversations: {rendered} rendered ({with_schemas} with parameter types), {failed} errors"
    );
    assert!(
        rendered > 200 && failed > 10 && with_schemas > 40,
        "{rendered} {failed} {with_schemas}"
    );

    let (mut parsed, mut errors, mut messages) = (0, 0, 0);
    for strategy_index in 0..2 {
        for _ in 0..400 {
            let tokens = if strategy_index == 0 {
                token_stream().new_tree(&mut runner).unwrap().current()
            } else {
                let mut t = encoding()
                    .tokenizer()
                    .encode("<|channel|>final<|message|>", true)
                    .unwrap();
                t.extend(token_stream().new_tree(&mut runner).unwrap().current());
                t
            };
            match encoding().parse_messages_from_completion_tokens(
                tokens,
                Some(Role::Assistant),
                ParseMode::Strict,
            ) {
                Ok(m) => {
                    parsed += 1;
                    messages += m.len();
                }
                Err(_) => errors += 1,
            }
        }
    }
    eprintln!("streams: {parsed} parsed ({messages} messages), {errors} errors");
    assert!(
        parsed > 250 && errors > 150 && messages > 2 * parsed,
        "{parsed} {errors} {messages}"
    );
}
