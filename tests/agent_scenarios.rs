//! End to end through the library: the tiny trained gpt-oss agent (tests/fixtures/gpt-oss-tiny-agent)
//! must reproduce, token for token, the transcripts OpenAI's implementation produced with it:
//! rendering, the f32 forward pass, parsing, the python call in the real sandbox and the tool
//! output contract all have to be right. `OSSA_AGENT_SCENARIOS` names a folder with more
//! scenarios (a `scenarios.json` of the same format, and optionally its own model).

mod support;

use std::path::Path;
use std::sync::Arc;

use ossa::agent::harmony::{HarmonyEncoding, ReasoningEffort, RenderConversationConfig, Role};
use ossa::agent::{
    Agent, AgentConfig, AgentEvent, CancellationToken, ConversationSettings, EngineBackend,
    TurnOutcome,
};
use ossa::engine::{DType, Engine, LoadOptions};
use ossa::sandbox::SessionOptions;
use ossa::tools::Tool;
use ossa::tools::python::PythonTool;
use serde_json::Value;
use support::{assert_all_passed, fixture_dir, sandbox, scenarios_in};

fn agent_for(model: &Path, tools: &[String]) -> Arc<Agent> {
    // f32: a few of the tiny model's expert choices are near-ties that bf16 rounding flips.
    let engine = Engine::load(
        model,
        &LoadOptions {
            dtype: DType::F32,
            threads: Some(2),
        },
    )
    .unwrap_or_else(|e| panic!("loading {}: {e}", model.display()));
    let encoding = match engine.tokenizer() {
        Some(tokenizer) => HarmonyEncoding::new(tokenizer.clone()).expect("harmony tokens"),
        None => HarmonyEncoding::gpt_oss().expect("the built-in o200k_harmony"),
    };
    let mut agent_tools: Vec<Arc<dyn Tool>> = Vec::new();
    for tool in tools {
        match tool.as_str() {
            "python" => agent_tools.push(Arc::new(PythonTool::new(
                sandbox(),
                SessionOptions::default(),
            ))),
            other => panic!("scenario asks for tool {other:?}, which this test does not provide"),
        }
    }
    Agent::new(
        Arc::new(EngineBackend::new(engine)),
        encoding,
        agent_tools,
        AgentConfig::default(),
    )
}

fn settings(system: &Value) -> ConversationSettings {
    let effort = match system["reasoning_effort"].as_str() {
        Some("low") => ReasoningEffort::Low,
        Some("medium") => ReasoningEffort::Medium,
        Some("high") => ReasoningEffort::High,
        other => panic!("unknown reasoning_effort {other:?}"),
    };
    ConversationSettings {
        reasoning_effort: effort,
        conversation_start_date: system["conversation_start_date"].as_str().map(String::from),
        ..ConversationSettings::default()
    }
}

fn tool_names(system: &Value) -> Vec<String> {
    system["tools"]
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| t.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// Runs one scenario; `Err` says what differed.
async fn run_scenario(agent: &Arc<Agent>, scenario: &Value) -> Result<(), String> {
    let name = scenario["name"].as_str().unwrap_or("?");
    let mut chat = agent.chat(&settings(&scenario["system"]));
    let user = scenario["user"].as_str().ok_or("scenario without user")?;

    // The first prompt, token for token.
    let mut conversation = chat.conversation().clone();
    conversation
        .messages
        .push(ossa::agent::harmony::Message::from_role_and_content(
            Role::User,
            user,
        ));
    let prompt = agent
        .encoding()
        .render_conversation_for_completion(
            &conversation,
            Role::Assistant,
            Some(&RenderConversationConfig::default()),
        )
        .map_err(|e| e.to_string())?;
    let expected_prompt: Vec<u32> = serde_json::from_value(scenario["prompt_tokens"].clone())
        .map_err(|e| format!("prompt_tokens: {e}"))?;
    if let Some(at) = ossa_test_support::first_difference(&prompt, &expected_prompt) {
        return Err(format!("{name}: first prompt differs at token {at}"));
    }

    let mut events = Vec::new();
    let report = chat
        .send(user, &CancellationToken::new(), &mut |event| {
            events.push(event)
        })
        .await
        .map_err(|e| format!("{name}: {e}"))?;
    if report.outcome != TurnOutcome::Final {
        return Err(format!("{name}: turn ended with {:?}", report.outcome));
    }
    let produced: Vec<Value> = chat.conversation().messages[report.first_message..]
        .iter()
        .map(|m| serde_json::to_value(m).expect("messages serialize"))
        .collect();
    if produced != scenario["expected"].as_array().cloned().unwrap_or_default() {
        return Err(format!(
            "{name}: transcript differs\n got: {}\nwant: {}",
            serde_json::to_string_pretty(&produced).unwrap_or_default(),
            serde_json::to_string_pretty(&scenario["expected"]).unwrap_or_default()
        ));
    }

    // One generation call per recorded call, each producing the recorded number of tokens.
    let generated: Vec<Vec<u32>> = serde_json::from_value(scenario["generated_tokens"].clone())
        .map_err(|e| format!("generated_tokens: {e}"))?;
    let counts: Vec<usize> = report
        .generations
        .iter()
        .map(|g| g.generated_tokens)
        .collect();
    let want: Vec<usize> = generated.iter().map(Vec::len).collect();
    if counts != want {
        return Err(format!(
            "{name}: generated {counts:?} tokens per call, want {want:?}"
        ));
    }
    // The prefix cache hits on every call after the first: everything up to the previous
    // call's stop token is reused (the render reproduces the tokens the model produced).
    for pair in report.generations.windows(2) {
        let kept = pair[0].prompt_tokens + pair[0].generated_tokens - 1;
        if pair[1].reused_tokens < kept {
            return Err(format!(
                "{name}: a later call reused {} prompt tokens, want at least {kept}",
                pair[1].reused_tokens
            ));
        }
    }
    if report.cache_hits() + 1 < report.generations.len() {
        return Err(format!("{name}: {} cache hits", report.cache_hits()));
    }

    // The events tell the same story as the transcript.
    let tool_calls = events
        .iter()
        .filter(|e| matches!(e, AgentEvent::ToolCall(_)))
        .count();
    if tool_calls != report.tool_calls || tool_calls + 1 != generated.len() {
        return Err(format!("{name}: {tool_calls} tool call events"));
    }
    let final_text: String = events
        .iter()
        .filter_map(|e| match e {
            AgentEvent::FinalDelta(d) => Some(d.as_str()),
            _ => None,
        })
        .collect();
    if Some(final_text) != report.answer {
        return Err(format!(
            "{name}: streamed final text differs from the answer"
        ));
    }
    Ok(())
}

async fn run_folder(dir: &Path, model_fallback: &Path) -> (usize, Vec<String>) {
    let scenarios = scenarios_in(dir);
    let model = if dir.join("config.json").is_file() {
        dir.to_path_buf()
    } else {
        model_fallback.to_path_buf()
    };
    let mut passed = 0;
    let mut failures = Vec::new();
    let mut agents: Vec<(Vec<String>, Arc<Agent>)> = Vec::new();
    for scenario in &scenarios {
        let tools = tool_names(&scenario["system"]);
        let agent = match agents.iter().find(|(t, _)| *t == tools) {
            Some((_, agent)) => agent.clone(),
            None => {
                let agent = agent_for(&model, &tools);
                agents.push((tools, agent.clone()));
                agent
            }
        };
        match run_scenario(&agent, scenario).await {
            Ok(()) => passed += 1,
            Err(e) => failures.push(e),
        }
    }
    (passed, failures)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tiny_agent_reproduces_every_transcript() {
    let (passed, failures) = run_folder(&fixture_dir(), &fixture_dir()).await;
    assert_all_passed(passed, &failures);
    assert!(passed >= 4, "the fixture has four scenarios");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extra_scenarios_from_the_environment() {
    let Some(dir) = std::env::var_os("OSSA_AGENT_SCENARIOS") else {
        println!("OSSA_AGENT_SCENARIOS not set: no extra scenarios");
        return;
    };
    let (passed, failures) = run_folder(Path::new(&dir), &fixture_dir()).await;
    assert_all_passed(passed, &failures);
}
