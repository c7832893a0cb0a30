//! Streaming parser throughput (tokens/s) on realistic completions, in each mode, and
//! rendering throughput for a prompt with tools.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ossa_agent::harmony::{
    Conversation, DeveloperContent, HarmonyEncoding, Message, ParseMode, Role, StreamableParser,
    SystemContent, ToolDescription,
};
use serde_json::json;

const PROSE: &str = "The harmony format separates the model's reasoning from its answer. Each message starts \
with a header that names the role and the channel, then the content, then a stop token. ";
const CJK: &str = "你好，世界！今日は良い天気ですね。안녕하세요, 세계! 東京タワーは高い。🎉👍🏽 ";

/// The tokens of a completion: analysis, a tool call, then a final answer, `repeat` times over.
fn completion(encoding: &HarmonyEncoding, text: &str, repeat: usize) -> Vec<u32> {
    let body = text.repeat(repeat);
    let messages = [
        Message::from_role_and_content(Role::Assistant, body.as_str()).with_channel("analysis"),
        Message::from_role_and_content(
            Role::Assistant,
            "{\"location\":\"Tokyo\",\"unit\":\"celsius\"}",
        )
        .with_channel("commentary")
        .with_recipient("functions.get_weather")
        .with_content_type("<|constrain|>json"),
        Message::from_role_and_content(Role::Assistant, body.as_str()).with_channel("final"),
    ];
    let mut tokens = encoding
        .render_conversation(&messages, None)
        .expect("renders");
    // The prompt ended in `<|start|>assistant`: drop those two tokens.
    tokens.drain(..2);
    tokens
}

fn parse(c: &mut Criterion) {
    let encoding = HarmonyEncoding::gpt_oss().expect("encoding");
    let mut group = c.benchmark_group("parse");
    for (name, text) in [("prose", PROSE), ("cjk_emoji", CJK)] {
        let tokens = completion(&encoding, text, 200);
        group.throughput(Throughput::Elements(tokens.len() as u64));
        for mode in [ParseMode::Strict, ParseMode::Lenient] {
            group.bench_with_input(
                BenchmarkId::new(format!("{mode:?}"), name),
                &tokens,
                |b, tokens| {
                    b.iter(|| {
                        let mut parser =
                            StreamableParser::new(encoding.clone(), Some(Role::Assistant), mode);
                        for &token in tokens {
                            parser.process(token).expect("parses");
                        }
                        parser.process_eos().expect("parses");
                        parser.into_messages()
                    })
                },
            );
        }
    }
    group.finish();
}

fn render(c: &mut Criterion) {
    let encoding = HarmonyEncoding::gpt_oss().expect("encoding");
    let tool = ToolDescription::new(
        "get_weather",
        "Gets the weather.",
        Some(
            json!({"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]}),
        ),
    );
    let conversation = Conversation::from_messages([
        Message::from_role_and_content(
            Role::System,
            SystemContent::new().with_browser_tool().with_python_tool(),
        ),
        Message::from_role_and_content(
            Role::Developer,
            DeveloperContent::new().with_function_tools(vec![tool]),
        ),
        Message::from_role_and_content(Role::User, PROSE.repeat(20)),
    ]);
    let tokens = encoding.prompt(&conversation).expect("renders");
    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(tokens.len() as u64));
    group.bench_function("prompt_with_tools", |b| {
        b.iter(|| encoding.prompt(&conversation).expect("renders"))
    });
    group.finish();
}

criterion_group!(benches, parse, render);
criterion_main!(benches);
