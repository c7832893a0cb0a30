//! Typed function tools: schema generation, argument validation, decoding, and the messages the
//! model gets back for good and bad calls.

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use ossa_tools::function::{FunctionToolsError, TypedFunction};
use ossa_tools::schema::{parameters_schema, prompt_schema};
use ossa_tools::{FunctionTools, Placement, Tool, ToolCall, ToolOutput};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Weather request.
#[derive(Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
struct WeatherArgs {
    /// The city and state, e.g. San Francisco, CA
    location: String,
    /// Temperature unit.
    unit: Option<Unit>,
    /// How many days to forecast.
    days: Option<u8>,
}

#[derive(Deserialize, JsonSchema, Debug, Clone, Copy)]
#[serde(rename_all = "lowercase")]
enum Unit {
    Celsius,
    Fahrenheit,
}

#[derive(Serialize)]
struct Forecast {
    temperature: i32,
    sunny: bool,
}

/// `get_weather` and `forecast`, and how many times `get_weather` ran.
fn weather_tools() -> (FunctionTools, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let mut tools = FunctionTools::new();
    let counter = Arc::clone(&calls);
    tools
        .add(TypedFunction::new(
            "get_weather",
            "Gets the current weather.",
            move |args: WeatherArgs| {
                // Counted when called: the function calls the handler only for valid arguments.
                counter.fetch_add(1, Ordering::SeqCst);
                let unit = args
                    .unit
                    .map_or("default".to_string(), |u| format!("{u:?}"));
                let answer = format!(
                    "weather for {} in {unit} over {:?} days",
                    args.location, args.days
                );
                async move { Ok::<_, String>(answer) }
            },
        ))
        .expect("valid function");
    tools
        .add(TypedFunction::new(
            "forecast",
            "Structured forecast.",
            |args: WeatherArgs| async move {
                if args.location == "Atlantis" {
                    return Err(format!("no weather station in {}", args.location));
                }
                Ok(Forecast {
                    temperature: 20,
                    sunny: true,
                })
            },
        ))
        .expect("valid function");
    (tools, calls)
}

fn call(recipient: &str, content_type: Option<&str>, content: &str) -> ToolCall {
    ToolCall {
        recipient: recipient.to_string(),
        channel: Some("commentary".to_string()),
        content_type: content_type.map(String::from),
        content: content.to_string(),
    }
}

async fn ask(tools: &FunctionTools, call: ToolCall) -> ToolOutput {
    let mut session = tools.open_session();
    let mut outputs = session.call(&call).await;
    assert_eq!(outputs.len(), 1, "one answer per call");
    outputs.remove(0)
}

/// Calls `recipient` with `arguments` as the model writes them (content type `json`).
async fn ask_json(tools: &FunctionTools, recipient: &str, arguments: &str) -> ToolOutput {
    ask(tools, call(recipient, Some("json"), arguments)).await
}

#[track_caller]
fn assert_starts_with(out: &ToolOutput, start: &str) {
    assert!(out.content.starts_with(start), "{}", out.content);
}

#[track_caller]
fn assert_ends_with(out: &ToolOutput, end: &str) {
    assert!(out.content.ends_with(end), "{}", out.content);
}

#[track_caller]
fn assert_contains(out: &ToolOutput, part: &str) {
    assert!(out.content.contains(part), "{}", out.content);
}

#[tokio::test]
async fn typed_call_is_decoded_and_answered_on_the_calls_channel() {
    let (tools, calls) = weather_tools();
    let out = ask(
        &tools,
        call(
            "functions.get_weather",
            Some("<|constrain|>json"),
            r#"{"location":"Tokyo","unit":"celsius","days":3}"#,
        ),
    )
    .await;
    assert_eq!(out.author, "functions.get_weather");
    assert_eq!(out.channel.as_deref(), Some("commentary"));
    assert_eq!(
        out.content,
        "weather for Tokyo in Celsius over Some(3) days"
    );
    assert!(out.files.is_empty());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn content_type_variants_and_fenced_json_are_all_accepted() {
    let (tools, _) = weather_tools();
    for content_type in [Some("json"), Some("<|constrain|>json"), None] {
        let out = ask(
            &tools,
            call(
                "functions.get_weather",
                content_type,
                r#" {"location":"Oslo"} "#,
            ),
        )
        .await;
        assert_eq!(
            out.content, "weather for Oslo in default over None days",
            "content type {content_type:?}"
        );
    }
    let fenced = "```json\n{\"location\": \"Lima\"}\n```";
    let out = ask_json(&tools, "functions.get_weather", fenced).await;
    assert_eq!(out.content, "weather for Lima in default over None days");
}

#[tokio::test]
async fn serializable_results_are_sent_as_json_and_handler_errors_as_messages() {
    let (tools, _) = weather_tools();
    let out = ask_json(&tools, "functions.forecast", r#"{"location":"Rome"}"#).await;
    assert_eq!(out.author, "functions.forecast");
    assert_eq!(out.content, r#"{"temperature":20,"sunny":true}"#);

    let out = ask_json(&tools, "functions.forecast", r#"{"location":"Atlantis"}"#).await;
    assert_eq!(out.content, "Error: no weather station in Atlantis");
}

#[tokio::test]
async fn invalid_json_is_reported_and_the_handler_never_runs() {
    let (tools, calls) = weather_tools();
    let out = ask_json(&tools, "functions.get_weather", r#"{"location": "Tokyo""#).await;
    assert_starts_with(
        &out,
        "Error: the arguments are not valid JSON (EOF while parsing an object",
    );
    assert_ends_with(&out, "send a JSON object that matches the parameters");
    assert_eq!(out.author, "functions.get_weather");
    assert_eq!(calls.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn schema_violations_are_each_named_with_their_location() {
    let (tools, calls) = weather_tools();

    let out = ask_json(&tools, "functions.get_weather", r#"{"unit":"celsius"}"#).await;
    assert_eq!(
        out.content,
        r#"Error: invalid arguments: "location" is a required property"#
    );

    let out = ask_json(
        &tools,
        "functions.get_weather",
        r#"{"location":"Paris","unit":"kelvin"}"#,
    )
    .await;
    assert_starts_with(&out, "Error: invalid arguments: at /unit: ");
    assert_contains(&out, r#""kelvin""#);

    let out = ask_json(
        &tools,
        "functions.get_weather",
        r#"{"location":7,"days":300,"wind":true}"#,
    )
    .await;
    assert_contains(&out, r#"at /location: 7 is not of type "string""#);
    assert_contains(&out, "at /days: 300 is greater than the maximum of 255");
    assert_contains(
        &out,
        "Additional properties are not allowed ('wind' was unexpected)",
    );

    let out = ask_json(&tools, "functions.get_weather", r#"["Paris"]"#).await;
    assert_contains(&out, r#"is not of type "object""#);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "no invalid call reached the handler"
    );
}

#[tokio::test]
async fn the_model_can_recover_after_a_bad_call_in_the_same_session() {
    let (tools, calls) = weather_tools();
    let mut session = tools.open_session();
    let bad = session
        .call(&call("functions.get_weather", Some("json"), "{}"))
        .await;
    assert!(bad[0].content.starts_with("Error: invalid arguments"));
    let good = session
        .call(&call(
            "functions.get_weather",
            Some("json"),
            r#"{"location":"Cairo"}"#,
        ))
        .await;
    assert_eq!(
        good[0].content,
        "weather for Cairo in default over None days"
    );
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unknown_functions_list_what_exists() {
    let (tools, _) = weather_tools();
    let out = ask_json(&tools, "functions.get_wether", "{}").await;
    assert_eq!(out.author, "functions.get_wether");
    assert_eq!(
        out.content,
        "Error: unknown function `functions.get_wether`; available functions: get_weather, forecast"
    );

    let out = ask(
        &FunctionTools::new(),
        call("functions.anything", None, "{}"),
    )
    .await;
    assert_eq!(
        out.content,
        "Error: unknown function `functions.anything`; no functions are available"
    );

    // A recipient outside the namespace is answered under its own name, not misrouted.
    let out = ask(&tools, call("browser.search", None, "{}")).await;
    assert_eq!(out.author, "browser.search");
    assert!(
        out.content
            .starts_with("Error: unknown function `browser.search`")
    );
}

#[derive(Deserialize, JsonSchema)]
struct NoArguments {}

#[tokio::test]
async fn an_empty_message_means_no_arguments() {
    let mut tools = FunctionTools::new();
    tools
        .add(TypedFunction::new(
            "now",
            "The time.",
            |_: NoArguments| async { Ok::<_, String>("12:00") },
        ))
        .expect("valid");
    for content in ["", "  ", "{}"] {
        let out = ask_json(&tools, "functions.now", content).await;
        assert_eq!(out.content, "12:00", "content {content:?}");
    }
}

#[test]
fn names_must_be_addressable_and_unique() {
    let mut tools = FunctionTools::new();
    let handler = |_: NoArguments| async { Ok::<_, String>("ok") };
    tools
        .add(TypedFunction::new("lookup", "d", handler))
        .expect("first is fine");
    assert_eq!(
        tools.add(TypedFunction::new("lookup", "d", handler)).err(),
        Some(FunctionToolsError::DuplicateName("lookup".into()))
    );
    for bad in [
        "",
        "has.dot",
        "has space",
        "9starts_with_digit",
        &"x".repeat(65),
    ] {
        assert_eq!(
            tools.add(TypedFunction::new(bad, "d", handler)).err(),
            Some(FunctionToolsError::InvalidName(bad.to_string())),
            "{bad:?}"
        );
    }
    tools
        .add(TypedFunction::new("_ok-name_2", "d", handler))
        .expect("valid name");
    assert_eq!(tools.names(), ["lookup", "_ok-name_2"]);
}

#[test]
fn the_namespace_goes_to_the_developer_message_with_clean_schemas() {
    let (tools, _) = weather_tools();
    assert_eq!(tools.name(), "functions");
    assert_eq!(tools.placement(), Placement::Developer);
    let namespace = tools.namespace();
    assert_eq!(namespace.name, "functions");
    assert_eq!(namespace.description, None);
    assert_eq!(namespace.tools.len(), 2);
    let weather = &namespace.tools[0];
    assert_eq!(weather.name, "get_weather");
    assert_eq!(weather.description, "Gets the current weather.");
    let expected = json!({
        "type": "object",
        "properties": {
            "location": {"type": "string", "description": "The city and state, e.g. San Francisco, CA"},
            "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "description": "Temperature unit."},
            "days": {
                "type": "integer",
                "format": "uint8",
                "minimum": 0,
                "maximum": 255,
                "description": "How many days to forecast."
            }
        },
        "required": ["location"],
        "additionalProperties": false
    });
    assert_eq!(weather.parameters.as_ref(), Some(&expected));
}

#[test]
fn the_argument_types_doc_comment_describes_a_function_given_no_description() {
    let mut tools = FunctionTools::new();
    tools
        .add(TypedFunction::new("weather", "", |_: WeatherArgs| async {
            Ok::<_, String>("")
        }))
        .expect("valid");
    assert_eq!(tools.namespace().tools[0].description, "Weather request.");
}

/// A shipment.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Shipment {
    /// Where it goes.
    destination: Address,
    /// Items, at least one.
    #[schemars(length(min = 1))]
    items: Vec<Item>,
    /// Optional gift note.
    note: Option<Note>,
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Address {
    city: String,
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Item {
    sku: String,
    quantity: u32,
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Note {
    text: String,
}

#[test]
fn nested_types_are_inlined_without_titles_or_refs() {
    let rendered = prompt_schema(&parameters_schema::<Shipment>()).expect("within the budget");
    let expected = json!({
        "type": "object",
        "properties": {
            "destination": {
                "description": "Where it goes.",
                "type": "object",
                "properties": {"city": {"type": "string"}},
                "required": ["city"]
            },
            "items": {
                "description": "Items, at least one.",
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "properties": {
                        "sku": {"type": "string"},
                        "quantity": {"type": "integer", "format": "uint32", "minimum": 0}
                    },
                    "required": ["sku", "quantity"]
                }
            },
            "note": {
                "description": "Optional gift note.",
                "type": "object",
                "properties": {"text": {"type": "string"}},
                "required": ["text"]
            }
        },
        "required": ["destination", "items"]
    });
    assert_eq!(rendered, expected);
}

/// A tree of categories.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Category {
    name: String,
    children: Vec<Category>,
}

#[tokio::test]
async fn recursive_types_render_as_any_below_the_first_level_yet_validate_fully() {
    let rendered = prompt_schema(&parameters_schema::<Category>()).expect("within the budget");
    assert_eq!(
        rendered,
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "children": {"type": "array", "items": {}}
            },
            "required": ["name", "children"]
        })
    );
    let mut tools = FunctionTools::new();
    tools
        .add(TypedFunction::new(
            "count",
            "Counts categories.",
            |c: Category| async move {
                fn count(c: &Category) -> usize {
                    1 + c.children.iter().map(count).sum::<usize>()
                }
                Ok::<_, String>(count(&c))
            },
        ))
        .expect("valid");
    let good = r#"{"name":"a","children":[{"name":"b","children":[]},{"name":"c","children":[]}]}"#;
    assert_eq!(ask_json(&tools, "functions.count", good).await.content, "3");
    let bad = r#"{"name":"a","children":[{"name":"b"}]}"#;
    let out = ask_json(&tools, "functions.count", bad).await;
    assert_eq!(
        out.content,
        r#"Error: invalid arguments: at /children/0: "children" is a required property"#
    );
}

/// Level `D{i}` holds two `D{i + 1}`s (the second optional), 18 levels down: inlined, its
/// schema has 2^18 copies.
macro_rules! binary_levels {
    ($($level:ident => $below:ty),* $(,)?) => {$(
        #[derive(Deserialize, JsonSchema)]
        #[allow(dead_code)]
        struct $level {
            // Boxed: by value, D0 would be 2^18 strings big.
            left: Box<$below>,
            right: Option<Box<$below>>,
        }
    )*};
}

binary_levels!(
    D0 => D1, D1 => D2, D2 => D3, D3 => D4, D4 => D5, D5 => D6, D6 => D7, D7 => D8, D8 => D9,
    D9 => D10, D10 => D11, D11 => D12, D12 => D13, D13 => D14, D14 => D15, D15 => D16,
    D16 => D17, D17 => String,
);

/// The prompt's copy of `D{level}` with `D1`..`D{depth}` inlined; deeper levels are `any`.
fn binary_tree(level: usize, depth: usize) -> serde_json::Value {
    if level > depth {
        return json!({});
    }
    let below = if level == 17 {
        json!({"type": "string"})
    } else {
        binary_tree(level + 1, depth)
    };
    json!({
        "type": "object",
        "properties": {"left": below.clone(), "right": below},
        "required": ["left"]
    })
}

/// What `f` logs at WARN and above (`LEVEL message` lines), and its result.
fn warnings_while<R>(f: impl FnOnce() -> R) -> (R, String) {
    use tracing::span::{Attributes, Id, Record};

    #[derive(Default)]
    struct Warnings(std::sync::Mutex<Vec<String>>);
    struct Message(String);
    impl tracing::field::Visit for Message {
        fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                self.0 = format!("{value:?}");
            }
        }
    }
    impl tracing::Subscriber for Warnings {
        fn enabled(&self, metadata: &tracing::Metadata<'_>) -> bool {
            *metadata.level() <= tracing::Level::WARN
        }
        fn new_span(&self, _: &Attributes<'_>) -> Id {
            Id::from_u64(1)
        }
        fn record(&self, _: &Id, _: &Record<'_>) {}
        fn record_follows_from(&self, _: &Id, _: &Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            let mut message = Message(String::new());
            event.record(&mut message);
            let line = format!("{} {}", event.metadata().level(), message.0);
            self.0.lock().expect("log").push(line);
        }
        fn enter(&self, _: &Id) {}
        fn exit(&self, _: &Id) {}
    }
    let warnings = Arc::new(Warnings::default());
    let result = tracing::subscriber::with_default(Arc::clone(&warnings), f);
    let lines = warnings.0.lock().expect("log").join("\n");
    (result, lines)
}

#[tokio::test]
async fn a_type_that_doubles_per_level_is_shown_as_deep_as_the_budget_allows() {
    let schema = parameters_schema::<D0>();
    let schema_size = serde_json::to_string(&schema).expect("serializes").len();
    assert!(
        schema_size < 4096,
        "each type is in the schema once: {schema_size} bytes"
    );

    // The deepest expansion within the budget (D0 is the root itself, inlined from D1 on).
    let depth = support::levels_within_the_inlining_budget(&schema["$defs"], "D", 1, 17);

    let too_large = prompt_schema(&schema).expect_err("over the budget");
    assert_eq!(too_large.ref_depth(), depth);
    assert_eq!(too_large.shown(), &binary_tree(0, depth));

    let (function, log) = warnings_while(|| {
        TypedFunction::new("plant", "Plants a tree.", |_: D0| async {
            Ok::<_, String>("planted")
        })
    });
    assert_eq!(
        log,
        format!(
            "WARN function `plant`: its parameter schema expands past 32 KiB through its `$ref`s; the model is shown {depth} levels of `$ref`s, deeper ones as `any`"
        )
    );
    let mut tools = FunctionTools::new();
    tools.add(function).expect("valid");
    assert_eq!(
        tools.namespace().tools[0].parameters,
        Some(binary_tree(0, depth))
    );
    // Arguments are checked against the whole schema, below the shown depth too.
    let mut arguments = json!("leaf");
    for _ in 0..12 {
        arguments = json!({ "left": arguments });
    }
    let out = ask_json(&tools, "functions.plant", &arguments.to_string()).await;
    assert_eq!(
        out.content,
        format!(
            "Error: invalid arguments: at {}: \"leaf\" is not of type \"object\"",
            "/left".repeat(12)
        )
    );
    arguments["left"]["right"] = json!({"left": {"left": "leaf"}});
    let out = ask_json(&tools, "functions.plant", &arguments.to_string()).await;
    assert_eq!(
        out.content,
        format!(
            "Error: invalid arguments: at {}: \"leaf\" is not of type \"object\"; at /left/right/left/left: \"leaf\" is not of type \"object\"",
            "/left".repeat(12)
        )
    );
}

/// A person and a company that contain each other.
#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Person {
    name: String,
    employer: Company,
}

#[derive(Deserialize, JsonSchema)]
#[allow(dead_code)]
struct Company {
    title: String,
    staff: Vec<Person>,
}

#[test]
fn types_that_contain_each_other_are_cut_where_the_cycle_closes() {
    let (rendered, log) = warnings_while(|| prompt_schema(&parameters_schema::<Person>()));
    assert_eq!(log, "", "a cycle is no error");
    assert_eq!(
        rendered.expect("within the budget"),
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string"},
                "employer": {
                    "type": "object",
                    "properties": {
                        "title": {"type": "string"},
                        "staff": {"type": "array", "items": {}}
                    },
                    "required": ["title", "staff"]
                }
            },
            "required": ["name", "employer"]
        })
    );
}
