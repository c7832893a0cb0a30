//! The functions namespace rendered by OpenAI's own openai-harmony 0.0.8 into the developer
//! message: the TypeScript-like declarations the model reads must come out clean (every field,
//! its doc comment, `?` for optional, enums as string unions, nested objects in full).
//!
//! openai-harmony needs the o200k_base vocabulary: it is read from `TIKTOKEN_ENCODINGS_BASE` when
//! set, else from the copy the workspace's `tiktoken-rs` dependency ships in the cargo registry.

use std::path::PathBuf;

use openai_harmony::chat::{Conversation, DeveloperContent, Message, Role};
use openai_harmony::{HarmonyEncodingName, load_harmony_encoding};
use ossa_tools::function::TypedFunction;
use ossa_tools::{FunctionTools, Tool};
use schemars::JsonSchema;
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// Weather request.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct WeatherArgs {
    /// The city and state, e.g. San Francisco, CA
    location: String,
    /// Temperature unit.
    unit: Option<Unit>,
    /// How many days to forecast.
    days: Option<u8>,
}

#[derive(Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
enum Unit {
    Celsius,
    Fahrenheit,
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Order {
    /// Where it goes.
    destination: Destination,
    /// What to send.
    items: Vec<String>,
    /// Rush delivery.
    express: bool,
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Destination {
    city: String,
    zip: Option<String>,
}

fn vocabulary_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("TIKTOKEN_ENCODINGS_BASE") {
        return PathBuf::from(dir);
    }
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cargo")))
        .expect("CARGO_HOME or HOME is set");
    let registry = cargo_home.join("registry").join("src");
    for index in std::fs::read_dir(&registry)
        .expect("the cargo registry exists")
        .flatten()
    {
        let assets = index.path().join("tiktoken-rs-0.12.1").join("assets");
        if assets.join("o200k_base.tiktoken").is_file() {
            return assets;
        }
    }
    panic!(
        "o200k_base.tiktoken not found under {}; set TIKTOKEN_ENCODINGS_BASE",
        registry.display()
    );
}

/// Adds a function taking `A` whose handler never runs: only its declaration is rendered.
fn declare<A>(tools: &mut FunctionTools, name: &str, description: &str)
where
    A: JsonSchema + DeserializeOwned + Send + 'static,
{
    tools
        .add(TypedFunction::new(name, description, |_: A| async {
            Ok::<_, String>("")
        }))
        .expect("valid");
}

#[test]
fn openai_harmony_renders_typed_functions_as_clean_typescript() {
    let mut tools = FunctionTools::new();
    declare::<WeatherArgs>(&mut tools, "get_weather", "Gets the current weather.");
    declare::<Order>(&mut tools, "place_order", "Places an order.");

    // The harmony crate's own types, read from ours: the serde shapes are the same.
    let namespace: openai_harmony::chat::ToolNamespaceConfig =
        serde_json::from_value(serde_json::to_value(tools.namespace()).expect("serializes"))
            .expect("same shape");

    // SAFETY: this test binary has a single test, so no other thread reads the environment.
    unsafe { std::env::set_var("TIKTOKEN_ENCODINGS_BASE", vocabulary_dir()) };
    let encoding =
        load_harmony_encoding(HarmonyEncodingName::HarmonyGptOss).expect("encoding loads");
    let developer = Message::from_role_and_content(
        Role::Developer,
        DeveloperContent::new().with_tools(namespace),
    );
    let conversation = Conversation::from_messages([developer]);
    let tokens = encoding
        .render_conversation(&conversation, None)
        .expect("renders");
    let text = encoding.tokenizer().decode_utf8(&tokens).expect("decodes");

    let expected = "<|start|>developer<|message|># Tools\n\n## functions\n\nnamespace functions {\n\n\
// Gets the current weather.\n\
type get_weather = (_: {\n\
// The city and state, e.g. San Francisco, CA\n\
location: string,\n\
// Temperature unit.\n\
unit?: \"celsius\" | \"fahrenheit\",\n\
// How many days to forecast.\n\
days?: number,\n\
}) => any;\n\n\
// Places an order.\n\
type place_order = (_: {\n\
// Where it goes.\n\
destination:     // Where it goes.\n\
{\n\x20   city: string,\n\x20   zip?: string,\n\x20   },\n\
// What to send.\n\
items: string[],\n\
// Rush delivery.\n\
express: boolean,\n\
}) => any;\n\n\
} // namespace functions<|end|>";
    assert_eq!(text, expected);
}
