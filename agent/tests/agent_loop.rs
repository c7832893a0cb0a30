//! The agent loop's handling of what a real model may do wrong or slowly: unknown recipients,
//! bad arguments, garbage tokens, runaway tool calls, cancellation, limits. The model is
//! replaced by a scripted backend that replays harmony text (tokenized with the real encoding);
//! everything else (rendering, parsing, the function tools) is real.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use ossa_agent::harmony::{Content, Conversation, ReasoningEffort, Role};
use ossa_agent::{
    Agent, AgentConfig, AgentEvent, CancellationToken, Chat, ConversationSettings, Limit,
    ToolRequirement, TurnOutcome, TurnReport,
};
use ossa_test_support::scripted::{ScriptedBackend, encoding};
use ossa_tools::{Function, FunctionTools, Tool, TypedFunction};
use schemars::JsonSchema;
use serde::Deserialize;

/// The scripted model, replying with harmony `replies` in order.
fn scripted(replies: &[&str]) -> Arc<ScriptedBackend> {
    Arc::new(ScriptedBackend::with_texts(replies))
}

/// A `functions` namespace holding only `function`.
fn functions_tool(function: impl Function + 'static) -> Arc<dyn Tool> {
    let mut tools = FunctionTools::new();
    tools.add(function).expect("valid function");
    Arc::new(tools)
}

#[derive(Deserialize, JsonSchema)]
struct AddArgs {
    a: i64,
    b: i64,
}

fn add_tool(calls: Arc<AtomicUsize>) -> Arc<dyn Tool> {
    functions_tool(TypedFunction::new(
        "add",
        "Adds two integers.",
        move |args: AddArgs| {
            let calls = Arc::clone(&calls);
            async move {
                calls.fetch_add(1, Ordering::SeqCst);
                Ok::<_, String>((args.a + args.b).to_string())
            }
        },
    ))
}

#[derive(Deserialize, JsonSchema)]
struct NapArgs {
    seconds: u64,
}

fn nap_tool() -> Arc<dyn Tool> {
    functions_tool(TypedFunction::new(
        "nap",
        "Sleeps.",
        |args: NapArgs| async move {
            tokio::time::sleep(Duration::from_secs(args.seconds)).await;
            Ok::<_, String>("rested".to_string())
        },
    ))
}

fn agent(
    backend: Arc<ScriptedBackend>,
    tools: Vec<Arc<dyn Tool>>,
    config: AgentConfig,
) -> Arc<Agent> {
    Agent::new(backend, encoding().clone(), tools, config)
}

/// An agent with the `add` function, over the scripted `replies`: its backend, how many times
/// `add` ran, the agent.
fn adding_agent(replies: &[&str]) -> (Arc<ScriptedBackend>, Arc<AtomicUsize>, Arc<Agent>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let backend = scripted(replies);
    let agent = agent(
        backend.clone(),
        vec![add_tool(calls.clone())],
        AgentConfig::default(),
    );
    (backend, calls, agent)
}

/// Sends `text` in `chat`, recording the turn's events.
async fn send_recording(chat: &mut Chat, text: &str) -> (TurnReport, Vec<AgentEvent>) {
    let mut events = Vec::new();
    let report = chat
        .send(text, &CancellationToken::new(), &mut |e| events.push(e))
        .await
        .expect("turn");
    (report, events)
}

/// Sends `text` in `chat`, its events unseen.
async fn send(chat: &mut Chat, text: &str) -> TurnReport {
    chat.send(text, &CancellationToken::new(), &mut |_| {})
        .await
        .expect("turn")
}

/// The text the turn streamed on `channel` (`analysis` or `final`).
fn streamed(events: &[AgentEvent], channel: &str) -> String {
    events
        .iter()
        .filter_map(|e| match (channel, e) {
            ("analysis", AgentEvent::ReasoningDelta(d)) | ("final", AgentEvent::FinalDelta(d)) => {
                Some(d.as_str())
            }
            _ => None,
        })
        .collect()
}

#[track_caller]
fn assert_ends_with(prompt: &str, end: &str) {
    assert!(prompt.ends_with(end), "{prompt}");
}

#[track_caller]
fn assert_contains(prompt: &str, part: &str) {
    assert!(prompt.contains(part), "{prompt}");
}

const FINAL: &str = "<|channel|>final<|message|>Done.<|return|>";

#[tokio::test]
async fn function_call_result_goes_back_and_the_model_answers() {
    let (backend, calls, agent) = adding_agent(&[
        "<|channel|>analysis<|message|>Add them.<|end|><|start|>assistant<|channel|>commentary to=functions.add <|constrain|>json<|message|>{\"a\": 2, \"b\": 40}<|call|>",
        "<|channel|>final<|message|>It is 42.<|return|>",
    ]);
    let mut chat = agent.chat(&ConversationSettings::default());
    let (report, events) = send_recording(&mut chat, "What is 2 + 40?").await;
    assert_eq!(report.outcome, TurnOutcome::Final);
    assert_eq!(report.answer.as_deref(), Some("It is 42."));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(report.tool_calls, 1);
    let messages = &chat.conversation().messages;
    // system, developer (the function), user, analysis, call, result, final
    assert_eq!(messages.len(), 7);
    let result = &messages[5];
    assert_eq!(result.author.role, Role::Tool);
    assert_eq!(result.author.name.as_deref(), Some("functions.add"));
    assert_eq!(result.recipient.as_deref(), Some("assistant"));
    assert_eq!(result.channel.as_deref(), Some("commentary"));
    assert_eq!(result.text(), "42");
    // The second prompt renders the call (recipient before channel, as openai-harmony renders
    // it, whatever order the model wrote) and its result, then asks the assistant again.
    let prompts = backend.prompts();
    let second = encoding().tokenizer().decode(&prompts[1]).expect("decodes");
    assert_ends_with(
        &second,
        "<|start|>assistant to=functions.add<|channel|>commentary <|constrain|>json<|message|>{\"a\": 2, \"b\": 40}<|call|><|start|>functions.add to=assistant<|channel|>commentary<|message|>42<|end|><|start|>assistant",
    );
    // Deltas arrive by channel.
    let reasoning = streamed(&events, "analysis");
    assert_eq!(reasoning, "Add them.");
    let arguments: String = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::ToolArgumentsDelta { recipient, delta } if recipient == "functions.add" => {
                Some(delta.as_str())
            }
            _ => None,
        })
        .collect();
    assert_eq!(arguments, "{\"a\": 2, \"b\": 40}");
    assert!(
        events
            .iter()
            .any(|e| matches!(e, AgentEvent::ToolResult { output, .. } if output.content == "42"))
    );
}

#[tokio::test]
async fn unknown_recipient_and_bad_arguments_become_messages_the_model_reads() {
    let (backend, calls, agent) = adding_agent(&[
        "<|channel|>commentary to=functions.multiply <|constrain|>json<|message|>{\"a\": 1}<|call|>",
        "<|channel|>commentary to=weather.lookup <|constrain|>json<|message|>{}<|call|>",
        "<|channel|>commentary to=functions.add <|constrain|>json<|message|>{\"a\": \"two\"<|call|>",
        FINAL,
    ]);
    let mut chat = agent.chat(&ConversationSettings::default());
    let report = chat
        .send("Go.", &CancellationToken::new(), &mut |_| {})
        .await
        .expect("the turn survives bad calls");
    assert_eq!(report.outcome, TurnOutcome::Final);
    assert_eq!(report.tool_calls, 3);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no bad call reached the handler"
    );
    let results: Vec<(String, String)> = chat
        .conversation()
        .messages
        .iter()
        .filter(|m| m.author.role == Role::Tool)
        .map(|m| (m.author.name.clone().unwrap_or_default(), m.text()))
        .collect();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0].0, "functions.multiply");
    assert!(results[0].1.contains("multiply"), "{}", results[0].1);
    assert_eq!(results[1].0, "weather.lookup");
    assert_eq!(
        results[1].1,
        "Error: there is no tool `weather.lookup`. Available tools: functions."
    );
    assert_eq!(results[2].0, "functions.add");
    assert!(!results[2].1.is_empty());
    assert_eq!(backend.calls(), 4);
}

#[tokio::test]
async fn garbage_output_ends_the_turn_without_an_answer_or_a_panic() {
    let backend = scripted(&["<|message|><|channel|><|constrain|> to= <|end|>just text<|return|>"]);
    let agent = agent(backend, vec![], AgentConfig::default());
    let mut chat = agent.chat(&ConversationSettings::default());
    let report = chat
        .send("Hi", &CancellationToken::new(), &mut |_| {})
        .await
        .expect("malformed output is not an error");
    assert!(matches!(
        report.outcome,
        TurnOutcome::Final | TurnOutcome::NoAnswer
    ));
    // The conversation still renders for the next turn.
    let next = agent
        .encoding()
        .prompt(chat.conversation())
        .expect("still renders");
    assert!(!next.is_empty());
}

#[tokio::test]
async fn runaway_tool_calls_stop_at_the_limit() {
    let call = "<|channel|>commentary to=functions.add <|constrain|>json<|message|>{\"a\": 1, \"b\": 1}<|call|>";
    let backend = scripted(&[call, call, call, call, FINAL]);
    let calls = Arc::new(AtomicUsize::new(0));
    let config = AgentConfig {
        max_tool_calls: 2,
        ..AgentConfig::default()
    };
    let agent = agent(backend.clone(), vec![add_tool(calls.clone())], config);
    let mut chat = agent.chat(&ConversationSettings::default());
    let report = send(&mut chat, "Loop.").await;
    assert_eq!(report.outcome, TurnOutcome::Limit(Limit::ToolCalls(2)));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(backend.calls(), 3);
    // The third call, not run, still gets an answer: every call has its tool message, so the
    // conversation renders and can go on.
    let messages = &chat.conversation().messages;
    let last = messages.last().expect("messages");
    assert_eq!(last.author.role, Role::Tool);
    assert_eq!(
        last.text(),
        "[ERROR] This turn reached its limit of tool calls."
    );
    let calls_made = messages
        .iter()
        .filter(|m| m.recipient.as_deref() == Some("functions.add"))
        .count();
    let answers = messages
        .iter()
        .filter(|m| m.author.role == Role::Tool)
        .count();
    assert_eq!((calls_made, answers), (3, 3));
}

#[tokio::test]
async fn token_limit_ends_a_long_generation() {
    let backend = scripted(&[
        "<|channel|>analysis<|message|>one two three four five six seven eight nine ten<|end|>",
    ]);
    let config = AgentConfig {
        max_tokens: Some(6),
        ..AgentConfig::default()
    };
    let agent = agent(backend, vec![], config);
    let mut chat = agent.chat(&ConversationSettings::default());
    let report = send(&mut chat, "Count.").await;
    assert_eq!(report.outcome, TurnOutcome::Limit(Limit::Tokens(6)));
    assert_eq!(report.generated_tokens(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_a_running_tool_call_and_the_chat_goes_on() {
    let backend = scripted(&[
        "<|channel|>commentary to=functions.nap <|constrain|>json<|message|>{\"seconds\": 600}<|call|>",
        "<|channel|>final<|message|>Second turn.<|return|>",
    ]);
    let agent = agent(backend, vec![nap_tool()], AgentConfig::default());
    let mut chat = agent.chat(&ConversationSettings::default());
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let report = chat
        .send("Sleep.", &cancel, &mut move |e| {
            if matches!(e, AgentEvent::ToolCall(_)) {
                let trigger = trigger.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    trigger.cancel();
                });
            }
        })
        .await
        .expect("turn");
    assert_eq!(report.outcome, TurnOutcome::Cancelled);
    let last = chat.conversation().messages.last().expect("a message");
    assert_eq!(last.author.role, Role::Tool);
    assert_eq!(last.text(), "[ERROR] The user cancelled this call.");
    let next = chat
        .send("Again.", &CancellationToken::new(), &mut |_| {})
        .await
        .expect("turn");
    assert_eq!(next.answer.as_deref(), Some("Second turn."));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_generation_drops_the_partial_message() {
    let long = format!(
        "<|channel|>final<|message|>{}<|return|>",
        "word ".repeat(400)
    );
    let backend =
        Arc::new(ScriptedBackend::with_texts(&[&long]).token_delay(Duration::from_millis(5)));
    let agent = agent(backend, vec![], AgentConfig::default());
    let mut chat = agent.chat(&ConversationSettings::default());
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    let mut deltas = 0;
    let report = chat
        .send("Talk.", &cancel, &mut |e| {
            if matches!(e, AgentEvent::FinalDelta(_)) {
                deltas += 1;
                if deltas == 3 {
                    trigger.cancel();
                }
            }
        })
        .await
        .expect("turn");
    assert_eq!(report.outcome, TurnOutcome::Cancelled);
    assert!(
        report.generated_tokens() < 100,
        "{}",
        report.generated_tokens()
    );
    assert_eq!(
        chat.conversation().messages.last().map(|m| m.author.role),
        Some(Role::User)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wall_time_ends_a_slow_turn() {
    let backend = scripted(&[
        "<|channel|>commentary to=functions.nap <|constrain|>json<|message|>{\"seconds\": 600}<|call|>",
    ]);
    let config = AgentConfig {
        wall_time: Some(Duration::from_millis(300)),
        ..AgentConfig::default()
    };
    let agent = agent(backend, vec![nap_tool()], config);
    let mut chat = agent.chat(&ConversationSettings::default());
    let report = send(&mut chat, "Sleep.").await;
    assert_eq!(
        report.outcome,
        TurnOutcome::Limit(Limit::WallTime(Duration::from_millis(300)))
    );
}

#[tokio::test]
async fn preamble_reset_effort_and_saved_conversations() {
    let backend = scripted(&[FINAL, FINAL]);
    let agent = agent(
        backend.clone(),
        vec![add_tool(Arc::new(AtomicUsize::new(0)))],
        AgentConfig::default(),
    );
    let settings = ConversationSettings {
        reasoning_effort: ReasoningEffort::High,
        conversation_start_date: Some("2026-11-28".into()),
        developer_instructions: Some("Be brief.".into()),
        ..ConversationSettings::default()
    };
    let mut chat = agent.chat(&settings);
    chat.send("One.", &CancellationToken::new(), &mut |_| {})
        .await
        .expect("turn");
    let first = encoding()
        .tokenizer()
        .decode(&backend.prompts()[0])
        .expect("decodes");
    assert!(first.contains("Current date: 2026-11-28"), "{first}");
    assert!(first.contains("Reasoning: high"), "{first}");
    assert!(first.contains("# Instructions\n\nBe brief."), "{first}");
    assert!(first.contains("namespace functions {"), "{first}");
    assert!(first.contains("type add = (_: {"), "{first}");

    let saved = chat.conversation().to_json();
    let restored = Conversation::from_json(&saved).expect("loads");
    assert_eq!(&restored, chat.conversation());

    chat.set_reasoning_effort(ReasoningEffort::Low);
    chat.reset();
    assert_eq!(
        chat.conversation().messages.len(),
        2,
        "system and developer stay"
    );
    let Content::SystemContent(system) = &chat.conversation().messages[0].content[0] else {
        panic!("system content first");
    };
    assert_eq!(system.reasoning_effort, Some(ReasoningEffort::Low));
    let mut resumed = agent.chat_from(restored);
    let report = resumed
        .send("Two.", &CancellationToken::new(), &mut |_| {})
        .await
        .expect("turn");
    assert_eq!(report.answer.as_deref(), Some("Done."));
}

/// A browser-like tool: each call "opens" a page, which becomes citable by its cursor.
struct Pages;

struct PagesSession {
    opened: Vec<String>,
}

impl Tool for Pages {
    fn name(&self) -> &str {
        "pages"
    }
    fn namespace(&self) -> ossa_tools::ToolNamespaceConfig {
        ossa_tools::ToolNamespaceConfig::new("pages", Some("Opens pages.".into()), vec![])
    }
    fn placement(&self) -> ossa_tools::Placement {
        ossa_tools::Placement::System
    }
    fn open_session(&self) -> Box<dyn ossa_tools::ToolSession> {
        Box::new(PagesSession { opened: Vec::new() })
    }
}

#[async_trait::async_trait]
impl ossa_tools::ToolSession for PagesSession {
    async fn call(&mut self, call: &ossa_tools::ToolCall) -> Vec<ossa_tools::ToolOutput> {
        self.opened
            .push(format!("https://example.org/{}", self.opened.len()));
        vec![ossa_tools::ToolOutput::text(
            call,
            call.recipient.clone(),
            "[0] Example",
        )]
    }
    fn citation_urls(&self) -> Option<Vec<String>> {
        Some(self.opened.clone())
    }
}

#[tokio::test]
async fn pages_opened_in_a_turn_are_citable_before_the_answer_streams() {
    let backend = scripted(&[
        "<|channel|>analysis to=pages.open code<|message|>x<|call|>",
        "<|channel|>final<|message|>See 【0†L1-L2】.<|return|>",
    ]);
    let agent = agent(backend, vec![Arc::new(Pages)], AgentConfig::default());
    let mut chat = agent.chat(&ConversationSettings::default());
    let mut events = Vec::new();
    chat.send("Look it up.", &CancellationToken::new(), &mut |e| {
        events.push(e)
    })
    .await
    .expect("turn");
    let urls_at = events
        .iter()
        .position(|e| matches!(e, AgentEvent::PageUrls(urls) if urls == &["https://example.org/0".to_string()]))
        .unwrap_or_else(|| panic!("no PageUrls event in {events:#?}"));
    let final_at = events
        .iter()
        .position(|e| matches!(e, AgentEvent::FinalDelta(_)))
        .expect("the answer streams");
    assert!(urls_at < final_at);
    assert_eq!(
        chat.citation_urls(),
        vec!["https://example.org/0".to_string()]
    );
}

fn decoded_prompts(backend: &ScriptedBackend) -> Vec<String> {
    let prompts = backend.prompts();
    prompts
        .iter()
        .map(|p| encoding().tokenizer().decode(p).expect("decodes"))
        .collect()
}

#[tokio::test]
async fn a_named_tool_requirement_writes_the_call_header_for_the_model() {
    // The model only writes the arguments: the header is already in its prompt.
    let (backend, calls, agent) = adding_agent(&["{\"a\": 2, \"b\": 3}<|call|>", FINAL]);
    let mut chat = agent.chat(&ConversationSettings::default());
    chat.set_tool_requirement(ToolRequirement::Call("functions.add".into()));
    let report = send(&mut chat, "Add 2 and 3.").await;
    assert_eq!(report.outcome, TurnOutcome::Final);
    assert_eq!(report.answer.as_deref(), Some("Done."));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let prompts = decoded_prompts(&backend);
    assert_eq!(prompts.len(), 2);
    assert_ends_with(
        &prompts[0],
        "<|start|>assistant<|channel|>commentary to=functions.add <|constrain|>json<|message|>",
    );
    // The call is in the conversation as if the model had written it all; once made, the
    // requirement is met and the model answers freely.
    assert_ends_with(
        &prompts[1],
        "{\"a\": 2, \"b\": 3}<|call|><|start|>functions.add to=assistant<|channel|>commentary<|message|>5<|end|><|start|>assistant",
    );
}

#[tokio::test]
async fn a_required_call_cuts_an_early_answer_and_makes_the_model_name_a_function() {
    let (backend, calls, agent) = adding_agent(&[
        "<|channel|>analysis<|message|>Easy.<|end|><|start|>assistant<|channel|>final<|message|>It is 5.<|return|>",
        "add <|constrain|>json<|message|>{\"a\": 2, \"b\": 3}<|call|>",
        FINAL,
    ]);
    let mut chat = agent.chat(&ConversationSettings::default());
    chat.set_tool_requirement(ToolRequirement::AnyIn("functions".into()));
    let (report, events) = send_recording(&mut chat, "Add 2 and 3.").await;
    assert_eq!(report.outcome, TurnOutcome::Final);
    assert_eq!(report.answer.as_deref(), Some("Done."));
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Nothing of the cut answer reached the client.
    let answered = streamed(&events, "final");
    assert_eq!(answered, "Done.");
    let prompts = decoded_prompts(&backend);
    assert_eq!(prompts.len(), 3);
    assert_ends_with(&prompts[1], "<|channel|>commentary to=functions.");
    assert!(!prompts[1].contains("It is 5."), "{}", prompts[1]);
    assert_contains(
        &prompts[2],
        "<|start|>functions.add to=assistant<|channel|>commentary<|message|>5<|end|>",
    );
}

/// A client's function (`Chat::set_client_functions`) is not run: a finished call ends the turn
/// with it as data, the conversation ending with the call. A call not ended with `<|call|>`, or
/// whose arguments are not JSON, is answered to the model with an error and the turn goes on.
#[tokio::test]
async fn a_client_function_call_ends_the_turn_as_data() {
    let calls = Arc::new(AtomicUsize::new(0));
    let call = "<|channel|>commentary to=functions.add <|constrain|>json<|message|>";
    let backend = scripted(&[
        &format!("{call}{{\"a\": 2, \"b\": 40}}<|return|>"),
        &format!("{call}{{\"a\": 2, b}}<|call|>"),
        &format!("{call}{{\"a\": 2, \"b\": 40}}<|call|>"),
    ]);
    let agent = agent(
        backend.clone(),
        vec![add_tool(calls.clone())],
        AgentConfig::default(),
    );
    let mut chat = agent.chat(&ConversationSettings::default());
    chat.set_client_functions(["functions.add".to_string()]);
    let (report, events) = send_recording(&mut chat, "What is 2 + 40?").await;
    let TurnOutcome::FunctionCalls(handed) = &report.outcome else {
        panic!("{:?}", report.outcome);
    };
    assert_eq!(handed.len(), 1);
    assert_eq!(handed[0].recipient, "functions.add");
    assert_eq!(handed[0].content, "{\"a\": 2, \"b\": 40}");
    assert_eq!(calls.load(Ordering::SeqCst), 0, "the server never runs it");
    assert_eq!(backend.calls(), 3);
    let last = chat.conversation().messages.last().expect("messages");
    assert_eq!(last.author.role, Role::Assistant);
    assert_eq!(last.recipient.as_deref(), Some("functions.add"));
    let prompts = decoded_prompts(&backend);
    assert_contains(
        &prompts[1],
        "<|start|>functions.add to=assistant<|channel|>commentary<|message|>[ERROR] The call was not made: its message did not end with <|call|>.",
    );
    assert_contains(
        &prompts[2],
        "[ERROR] The call was not made: its arguments are not valid JSON",
    );
    // Only the call handed over is a `ToolCall`; the refused ones got their error results.
    let tool_calls = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::ToolCall(_)))
        .count();
    assert_eq!(tool_calls, 1);
    let errors = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::ToolResult { output, .. } if output.content.starts_with("[ERROR]")))
        .count();
    assert_eq!(errors, 2);
}
