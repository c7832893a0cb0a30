//! The conversation types: openai-harmony's JSON both ways, builders, stop tokens, errors.

mod harmony_support;

use harmony_support::*;
use ossa_agent::harmony::{
    Author, ChannelConfig, Content, Conversation, DeveloperContent, HarmonyEncoding, HarmonyError,
    Message, ReasoningEffort, Role, SystemContent, ToolDescription, ToolNamespaceConfig,
};
use serde_json::json;

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
    let names: Vec<&String> = with_tools.tools.as_ref().unwrap().keys().collect();
    assert_eq!(names, ["browser", "python"]);
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
