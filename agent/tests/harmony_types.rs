//! The conversation types: openai-harmony's JSON both ways, builders, stop tokens, errors.

mod harmony_support;

use harmony_support::*;
use ossa_agent::harmony::{
    Author, ChannelConfig, Content, Conversation, DeveloperContent, HarmonyEncoding, HarmonyError,
    Message, ReasoningEffort, RenderConversationConfig, Role, SystemContent, ToolDescription,
    ToolNamespaceConfig,
};
use serde_json::{Value, json};

#[test]
fn stop_tokens_are_openai_harmonys() {
    let fixture = read_json(&fixtures().join("harmony/special_tokens.json"));
    assert_eq!(json!(encoding().stop_tokens()), fixture["stop_tokens"]);
    assert_eq!(
        json!(encoding().stop_tokens_for_assistant_actions()),
        fixture["stop_tokens_for_assistant_actions"]
    );
}

#[test]
fn python_shaped_json_round_trips_exactly() {
    let conversation = Conversation::from_messages([
        Message::from_role_and_content(
            Role::System,
            SystemContent::new()
                .with_conversation_start_date("2025-06-28")
                .with_browser_tool(),
        ),
        Message::from_role_and_content(
            Role::Developer,
            DeveloperContent::new()
                .with_instructions("Be brief.")
                .with_function_tools(vec![ToolDescription::new("f", "Does f.", None)]),
        ),
        Message::from_author_and_content(Author::new(Role::Tool, "functions.f"), "42")
            .with_channel("commentary")
            .with_recipient("assistant"),
        Message::from_role_and_content(Role::Assistant, "{}")
            .with_channel("commentary")
            .with_recipient("functions.f")
            .with_content_type("<|constrain|>json"),
    ]);
    let text = conversation.to_json();
    // Python's key order: role, name, content, channel, recipient, content_type; `type` last
    // in system/developer content; unset fields left out; tool parameters left out when none.
    assert!(
        text.starts_with(
            r#"{"messages":[{"role":"system","name":null,"content":[{"model_identity":"#
        ),
        "{text}"
    );
    assert!(text.contains(r#""conversation_start_date":"2025-06-28","knowledge_cutoff":"2024-06","channel_config""#), "{text}");
    assert!(text.contains(r#"{"instructions":"Be brief.","tools":{"functions":{"name":"functions","tools":[{"name":"f","description":"Does f."}]}},"type":"developer_content"}"#), "{text}");
    assert!(text.contains(r#"{"role":"tool","name":"functions.f","content":[{"type":"text","text":"42"}],"channel":"commentary","recipient":"assistant"}"#), "{text}");
    assert!(text.contains(r#""channel":"commentary","recipient":"functions.f","content_type":"<|constrain|>json"}"#), "{text}");
    assert_eq!(Conversation::from_json(&text).unwrap(), conversation);
}

/// Every optional field left unset is left out of the JSON (never `null`), each set one is
/// written in Python's order.
#[test]
fn unset_optional_fields_are_left_out() {
    let cases: [(&str, Content, &str); 4] = [
        (
            "bare system content",
            SystemContent {
                model_identity: None,
                reasoning_effort: None,
                conversation_start_date: None,
                knowledge_cutoff: None,
                channel_config: None,
                tools: None,
            }
            .into(),
            r#"{"type":"system_content"}"#,
        ),
        (
            "full system content",
            SystemContent::new()
                .with_reasoning_effort(ReasoningEffort::Low)
                .with_conversation_start_date("2025-06-28")
                .with_tools(ToolNamespaceConfig::new(
                    "ns",
                    Some("Tools.".into()),
                    vec![ToolDescription::new(
                        "f",
                        "Does f.",
                        Some(json!({"type": "object"})),
                    )],
                ))
                .into(),
            r#"{"model_identity":"You are ChatGPT, a large language model trained by OpenAI.","reasoning_effort":"Low","conversation_start_date":"2025-06-28","knowledge_cutoff":"2024-06","channel_config":{"valid_channels":["analysis","commentary","final"],"channel_required":true},"tools":{"ns":{"name":"ns","description":"Tools.","tools":[{"name":"f","description":"Does f.","parameters":{"type":"object"}}]}},"type":"system_content"}"#,
        ),
        (
            "bare developer content",
            DeveloperContent::new().into(),
            r#"{"type":"developer_content"}"#,
        ),
        (
            "full developer content",
            DeveloperContent::new()
                .with_instructions("Be brief.")
                .with_function_tools(vec![ToolDescription::new("f", "", None)])
                .into(),
            r#"{"instructions":"Be brief.","tools":{"functions":{"name":"functions","tools":[{"name":"f","description":""}]}},"type":"developer_content"}"#,
        ),
    ];
    for (name, content, expected) in cases {
        assert_eq!(serde_json::to_string(&content).unwrap(), expected, "{name}");
    }
}

#[test]
fn rust_shaped_json_loads() {
    // What openai-harmony's Rust crate writes: nulls for unset fields, `content` as a string
    // for a single text part, no `name` key.
    let json = r#"{"messages":[
        {"role":"system","content":[{"type":"system_content","model_identity":null,"reasoning_effort":"High",
          "tools":null,"conversation_start_date":null,"knowledge_cutoff":null,"channel_config":null}]},
        {"role":"user","content":"hi"},
        {"role":"assistant","content":"ok","channel":"final","recipient":null,"content_type":null}
    ]}"#;
    let conversation = Conversation::from_json(json).unwrap();
    assert_eq!(
        conversation.messages[0].content,
        [Content::SystemContent(SystemContent {
            model_identity: None,
            reasoning_effort: Some(ReasoningEffort::High),
            conversation_start_date: None,
            knowledge_cutoff: None,
            channel_config: None,
            tools: None,
        })]
    );
    assert_eq!(
        conversation.messages[1],
        Message::from_role_and_content(Role::User, "hi")
    );
    assert_eq!(
        conversation.messages[2],
        Message::from_role_and_content(Role::Assistant, "ok").with_channel("final")
    );
    assert!(Conversation::from_json(r#"{"messages":[{"role":"robot","content":"x"}]}"#).is_err());
}

#[test]
fn builders_match_openai_harmony_defaults() {
    let system = SystemContent::new();
    assert_eq!(
        system.model_identity.as_deref(),
        Some("You are ChatGPT, a large language model trained by OpenAI.")
    );
    assert_eq!(system.reasoning_effort, Some(ReasoningEffort::Medium));
    assert_eq!(system.knowledge_cutoff.as_deref(), Some("2024-06"));
    assert_eq!(
        system.channel_config,
        Some(ChannelConfig::require_channels([
            "analysis",
            "commentary",
            "final"
        ]))
    );
    let with_tools = SystemContent::new().with_python_tool().with_browser_tool();
    // In the order added, as openai-harmony's Python `with_tools` (a dict) keeps them.
    let names: Vec<&String> = with_tools.tools.as_ref().unwrap().keys().collect();
    assert_eq!(names, ["python", "browser"]);
    let developer = DeveloperContent::new().with_function_tools(vec![]);
    assert_eq!(
        developer.tools.unwrap()["functions"],
        ToolNamespaceConfig::new("functions", None, vec![])
    );
    assert_eq!("tool".parse::<Role>().unwrap(), Role::Tool);
    assert!("Tool".parse::<Role>().is_err());
}

#[test]
fn render_errors_are_the_references() {
    let e: &HarmonyEncoding = encoding();
    let tool = Message::from_role_and_content(Role::Tool, "x");
    assert_eq!(
        e.render(&tool, None).unwrap_err().to_string(),
        "Tools should have a name!"
    );
    let misplaced = Message::from_role_and_content(Role::User, SystemContent::new());
    assert!(matches!(
        e.render(&misplaced, None),
        Err(HarmonyError::SystemContentOutsideSystem(Role::User))
    ));
    assert_eq!(
        e.render(&misplaced, None).unwrap_err().to_string(),
        "SystemContent may only appear in system messages, found in User"
    );
    let misplaced = Message::from_role_and_content(Role::System, DeveloperContent::new());
    assert_eq!(
        e.render(&misplaced, None).unwrap_err().to_string(),
        "DeveloperContent may only appear in developer messages, found in System"
    );
}

#[test]
fn prompt_ends_with_the_assistant_start() {
    let conversation =
        Conversation::from_messages([Message::from_role_and_content(Role::User, "hi")]);
    let prompt = encoding().prompt(&conversation).unwrap();
    assert_eq!(
        encoding().tokenizer().decode(&prompt).unwrap(),
        "<|start|>user<|message|>hi<|end|><|start|>assistant"
    );
}

/// The conversation of `harmony-tool-order/conversation.json`, built with ossa's builders in
/// the order the script used openai-harmony's.
fn tool_order_conversation() -> Conversation {
    let database = ToolNamespaceConfig::new(
        "database",
        Some("Query the DB.".to_string()),
        vec![ToolDescription::new(
            "query",
            "Runs SQL.",
            Some(
                json!({"type": "object", "properties": {"sql": {"type": "string"}}, "required": ["sql"]}),
            ),
        )],
    );
    Conversation::from_messages([
        Message::from_role_and_content(
            Role::System,
            SystemContent::new()
                .with_conversation_start_date("2025-06-28")
                .with_python_tool()
                .with_browser_tool(),
        ),
        Message::from_role_and_content(
            Role::Developer,
            DeveloperContent::new()
                .with_instructions("Be brief.")
                .with_function_tools(vec![ToolDescription::new("f", "Does f.", None)])
                .with_tools(database),
        ),
        Message::from_role_and_content(Role::User, "hi"),
    ])
}

fn namespace_names(conversation: &Conversation) -> Vec<Vec<String>> {
    conversation
        .messages
        .iter()
        .flat_map(|m| &m.content)
        .filter_map(|c| match c {
            Content::SystemContent(s) => s.tools.as_ref(),
            Content::DeveloperContent(d) => d.tools.as_ref(),
            Content::Text(_) => None,
        })
        .map(|tools| tools.keys().cloned().collect())
        .collect()
}

#[test]
fn tool_namespaces_keep_their_order_through_json() {
    let case = read_json(&fixtures().join("harmony-tool-order/conversation.json"));
    // Python writes `", "` and `": "`; the same document compact, keys in its order.
    let python: Value = serde_json::from_str(
        case["conversation_json"]
            .as_str()
            .expect("conversation_json"),
    )
    .expect("python's JSON parses");
    let python = serde_json::to_string(&python).unwrap();

    let built = tool_order_conversation();
    assert_eq!(
        namespace_names(&built),
        [vec!["python", "browser"], vec!["functions", "database"]]
    );
    assert_eq!(
        built.to_json(),
        python,
        "ossa writes what openai-harmony writes"
    );

    // Loading openai-harmony's JSON and writing it back gives the same document.
    let loaded = Conversation::from_json(&python).unwrap();
    assert_eq!(
        namespace_names(&loaded),
        [vec!["python", "browser"], vec!["functions", "database"]]
    );
    assert_eq!(loaded.to_json(), python);

    // Rendering lists namespaces by name whatever the stored order, as openai-harmony does.
    let config = RenderConversationConfig {
        auto_drop_analysis: true,
    };
    let tokens = encoding()
        .render_conversation_for_completion(&loaded, Role::Assistant, Some(&config))
        .unwrap();
    assert_eq!(json!(tokens), case["completion_tokens"]);
    let text = encoding().tokenizer().decode(&tokens).unwrap();
    let position = |needle: &str| text.find(needle).unwrap_or_else(|| panic!("{needle}"));
    assert!(position("## browser") < position("## python"));
    assert!(position("## database") < position("## functions"));
}

#[test]
fn replacing_a_namespace_keeps_its_place() {
    // Assigning to an existing Python dict key keeps the key where it was.
    let system = SystemContent::new()
        .with_python_tool()
        .with_browser_tool()
        .with_tools(ToolNamespaceConfig::new(
            "python",
            Some("v2".to_string()),
            vec![],
        ));
    let tools = system.tools.unwrap();
    let names: Vec<&String> = tools.keys().collect();
    assert_eq!(names, ["python", "browser"]);
    assert_eq!(tools["python"].description.as_deref(), Some("v2"));
}
