//! MCP function tools against a real MCP server process (`mcp_echo_server.py`, Python standard
//! library only, written from the MCP specification) over stdio and over streamable HTTP on
//! loopback: listing, calling, every kind of failure, crashes and restarts, name collisions and
//! the config file shape.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;

use ossa_tools::function::TypedFunction;
use ossa_tools::mcp::{self, ExposedTool, McpError, McpServer, McpServerConfig, call_result_text};
use ossa_tools::{FunctionTools, Tool, ToolCall};
use serde::Deserialize;
use serde_json::json;

/// The MCP echo server beside this file.
fn server() -> String {
    ossa_test_support::manifest_dir()
        .join("tests/mcp_echo_server.py")
        .display()
        .to_string()
}

fn stdio_config(name: &str) -> McpServerConfig {
    McpServerConfig::stdio(
        name,
        "python3",
        vec![server(), "--name".into(), name.to_string()],
    )
}

fn call(recipient: &str, content: &str) -> ToolCall {
    ToolCall {
        recipient: recipient.to_string(),
        channel: Some("commentary".into()),
        content_type: Some("<|constrain|>json".into()),
        content: content.to_string(),
    }
}

async fn answer(tools: &FunctionTools, recipient: &str, content: &str) -> String {
    let mut session = tools.open_session();
    let outputs = session.call(&call(recipient, content)).await;
    assert_eq!(outputs.len(), 1);
    assert_eq!(outputs[0].author, recipient);
    assert_eq!(outputs[0].channel.as_deref(), Some("commentary"));
    outputs[0].content.clone()
}

async fn tools_of(servers: &[Arc<McpServer>]) -> FunctionTools {
    let mut tools = FunctionTools::new();
    let (_, warnings) = mcp::add_tools(&mut tools, servers);
    assert!(warnings.is_empty(), "{warnings:?}");
    tools
}

/// Asserts what the model reads back for each `(recipient, arguments, answer)`.
async fn assert_answers(tools: &FunctionTools, cases: &[(&str, &str, &str)]) {
    for &(recipient, arguments, expected) in cases {
        assert_eq!(
            answer(tools, recipient, arguments).await,
            expected,
            "{recipient} {arguments}"
        );
    }
}

/// The server `config` names, connected, and its tools as functions.
async fn connect(config: McpServerConfig) -> (Arc<McpServer>, FunctionTools) {
    let server = McpServer::connect(config).await.expect("connects");
    let tools = tools_of(&[Arc::clone(&server)]).await;
    (server, tools)
}

/// The test server `one` on stdio, connected, and its tools as functions.
async fn connect_one() -> (Arc<McpServer>, FunctionTools) {
    connect(stdio_config("one")).await
}

/// The test server `one` with `change` made to its configuration, connected.
async fn connect_one_with(
    change: impl FnOnce(&mut McpServerConfig),
) -> (Arc<McpServer>, FunctionTools) {
    let mut config = stdio_config("one");
    change(&mut config);
    connect(config).await
}

const ALL_TOOLS: [&str; 13] = [
    "echo",
    "add",
    "fail",
    "reject",
    "crash",
    "pid",
    "slow",
    "whereami",
    "files.read",
    "environment",
    "big",
    "flood",
    "describe_user",
];

#[tokio::test]
async fn stdio_server_tools_become_functions_and_answer() {
    let (server, tools) = connect_one().await;
    assert_eq!(server.name(), "one");
    let listed: Vec<&str> = server.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(listed, ALL_TOOLS);
    let addressable = ALL_TOOLS.map(|name| {
        if name == "files.read" {
            "files_read"
        } else {
            name
        }
    });
    assert_eq!(
        tools.names(),
        addressable,
        "the dotted name is made addressable"
    );

    let namespace = tools.namespace();
    let echo = &namespace.tools[0];
    assert_eq!(echo.description, "Returns the text it was given.");
    assert_eq!(
        echo.parameters,
        Some(json!({
            "type": "object",
            "properties": {"text": {"type": "string", "description": "What to echo."}},
            "required": ["text"]
        }))
    );

    assert_answers(
        &tools,
        &[
            ("functions.echo", r#"{"text":"hello"}"#, "one: hello"),
            ("functions.add", r#"{"a":2,"b":3}"#, r#"{"sum":5}"#),
            (
                "functions.files_read",
                r#"{"path":"notes.txt"}"#,
                "contents of notes.txt",
            ),
            (
                "functions.describe_user",
                r#"{"name":"Ada","address":{"city":"London"}}"#,
                "Ada lives in London\n[image omitted: image/png]\na note",
            ),
        ],
    )
    .await;
    server.shutdown().await;
}

#[tokio::test]
async fn pydantic_style_schemas_are_cleaned_for_the_prompt_but_validated_as_sent() {
    let (server, tools) = connect_one().await;
    let namespace = tools.namespace();
    let describe = namespace
        .tools
        .iter()
        .find(|t| t.name == "describe_user")
        .expect("listed");
    assert_eq!(
        describe.parameters,
        Some(json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "Full name."},
                "address": {
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"]
                }
            },
            "required": ["name"]
        }))
    );
    // The server's own schema (with its $defs) validates: a null address is allowed, a bad one is not.
    assert_eq!(
        answer(
            &tools,
            "functions.describe_user",
            r#"{"name":"Bo","address":null}"#
        )
        .await
        .lines()
        .next(),
        Some("Bo lives in nowhere")
    );
    let out = answer(
        &tools,
        "functions.describe_user",
        r#"{"name":"Bo","address":{"town":"x"}}"#,
    )
    .await;
    assert_eq!(
        out,
        r#"Error: invalid arguments: at /address: "city" is a required property"#
    );
    server.shutdown().await;
}

#[tokio::test]
async fn bad_calls_and_tool_errors_come_back_as_messages() {
    let (server, tools) = connect_one().await;

    assert_answers(
        &tools,
        &[
            (
                "functions.add",
                r#"{"a":"two","b":3}"#,
                r#"Error: invalid arguments: at /a: "two" is not of type "integer""#,
            ),
            (
                "functions.add",
                r#"{"a":1}"#,
                r#"Error: invalid arguments: "b" is a required property"#,
            ),
        ],
    )
    .await;
    let out = answer(&tools, "functions.echo", "not json").await;
    assert!(
        out.starts_with("Error: the arguments are not valid JSON"),
        "{out}"
    );
    assert_answers(
        &tools,
        &[
            ("functions.fail", r#"{"message":"boom"}"#, "Error: boom"),
            (
                "functions.reject",
                "{}",
                r#"Error: MCP server `one` rejected the call: reject always rejects ({"hint":"do not call reject"})"#,
            ),
        ],
    )
    .await;
    let out = answer(&tools, "functions.nope", "{}").await;
    assert!(
        out.starts_with(
            "Error: unknown function `functions.nope`; available functions: echo, add,"
        ),
        "{out}"
    );
    // The server is still fine after all of that.
    assert_eq!(
        answer(&tools, "functions.echo", r#"{"text":"still here"}"#).await,
        "one: still here"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn a_crashed_stdio_server_is_reported_then_started_again() {
    let (server, tools) = connect_one().await;
    let first_pid = answer(&tools, "functions.pid", "{}").await;
    assert!(first_pid.parse::<u32>().is_ok(), "{first_pid}");

    let out = answer(&tools, "functions.crash", "{}").await;
    assert!(
        out.starts_with("Error: MCP server `one` stopped while running `crash`"),
        "{out}"
    );
    assert!(
        out.contains("it will be started again on the next call"),
        "{out}"
    );
    assert!(
        out.ends_with("Last lines on its stderr:\none: crashing on purpose"),
        "{out}"
    );

    let second_pid = answer(&tools, "functions.pid", "{}").await;
    assert!(second_pid.parse::<u32>().is_ok(), "{second_pid}");
    assert_ne!(first_pid, second_pid, "a new server process answers");
    assert_eq!(
        answer(&tools, "functions.echo", r#"{"text":"back"}"#).await,
        "one: back"
    );
    server.shutdown().await;
    // A server shut down on purpose is not started again.
    assert_eq!(
        answer(&tools, "functions.echo", r#"{"text":"late"}"#).await,
        "Error: MCP server `one` has been shut down"
    );
}

#[tokio::test]
async fn a_call_that_takes_too_long_times_out_and_the_server_keeps_working() {
    let (server, tools) = connect_one_with(|config| config.call_timeout_secs = Some(1)).await;
    let out = answer(&tools, "functions.slow", r#"{"seconds": 30}"#).await;
    assert_eq!(
        out,
        "Error: `slow` on MCP server `one` did not answer within 1 s"
    );
    assert_eq!(
        answer(&tools, "functions.echo", r#"{"text":"after"}"#).await,
        "one: after"
    );
    server.shutdown().await;
}

#[derive(Deserialize, schemars::JsonSchema)]
struct Empty {}

fn exposed(server: &str, tool: &str, function: &str) -> ExposedTool {
    ExposedTool {
        server: server.into(),
        tool: tool.into(),
        function: function.into(),
    }
}

#[tokio::test]
async fn colliding_names_are_prefixed_with_the_server_name() {
    let (servers, errors) = mcp::connect_all(&[stdio_config("one"), stdio_config("two")]).await;
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(
        servers.iter().map(|s| s.name()).collect::<Vec<_>>(),
        ["one", "two"]
    );

    let mut tools = FunctionTools::new();
    let (added, warnings) = mcp::add_tools(&mut tools, &servers);
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(added.len(), 26);
    assert!(added.contains(&exposed("one", "echo", "one__echo")));
    assert!(added.contains(&exposed("two", "files.read", "two__files_read")));
    assert_eq!(
        answer(&tools, "functions.one__echo", r#"{"text":"x"}"#).await,
        "one: x"
    );
    assert_eq!(
        answer(&tools, "functions.two__echo", r#"{"text":"x"}"#).await,
        "two: x"
    );

    // A Rust function declared first keeps its name; the one server's tool of that name moves.
    let mut tools = FunctionTools::new();
    tools
        .add(TypedFunction::new("pid", "Rust pid.", |_: Empty| async {
            Ok::<_, String>("rust")
        }))
        .expect("valid");
    let (added, _) = mcp::add_tools(&mut tools, &servers[..1]);
    assert!(added.contains(&exposed("one", "pid", "one__pid")));
    assert!(added.contains(&exposed("one", "echo", "echo")));
    assert_eq!(answer(&tools, "functions.pid", "{}").await, "rust");
    assert!(
        answer(&tools, "functions.one__pid", "{}")
            .await
            .parse::<u32>()
            .is_ok()
    );
    for server in &servers {
        server.shutdown().await;
    }
}

/// The streamable-HTTP test server on an ephemeral loopback port, killed on drop.
struct HttpServer {
    child: Child,
    url: String,
}

impl HttpServer {
    fn start() -> Self {
        let mut child = Command::new("python3")
            .arg(server())
            .args(["--http", "--name", "web"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 starts");
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("server announces its port");
        let port = line
            .trim()
            .strip_prefix("listening on ")
            .expect("announcement")
            .to_string();
        Self {
            child,
            url: format!("http://127.0.0.1:{port}/mcp"),
        }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn streamable_http_server_lists_and_answers_and_reports_its_crash() {
    let http = HttpServer::start();
    let server = McpServer::connect(McpServerConfig::http("web", &http.url))
        .await
        .expect("connects");
    let listed: Vec<&str> = server.tools().iter().map(|t| t.name.as_str()).collect();
    assert_eq!(listed, ALL_TOOLS);
    let tools = tools_of(&[Arc::clone(&server)]).await;

    assert_answers(
        &tools,
        &[
            ("functions.echo", r#"{"text":"over http"}"#, "web: over http"),
            ("functions.add", r#"{"a":40,"b":2}"#, r#"{"sum":42}"#),
            ("functions.fail", r#"{"message":"nope"}"#, "Error: nope"),
            (
                "functions.reject",
                "{}",
                r#"Error: MCP server `web` rejected the call: reject always rejects ({"hint":"do not call reject"})"#,
            ),
            (
                "functions.add",
                r#"{"a":1}"#,
                r#"Error: invalid arguments: "b" is a required property"#,
            ),
        ],
    )
    .await;

    // The server process dies in the middle of a call: the call gets a message, not a hang.
    let out = answer(&tools, "functions.crash", "{}").await;
    let expected = format!(
        "Error: MCP server `web` at {} failed while running `crash` (",
        http.url
    );
    assert!(out.starts_with(&expected), "{out}");
    assert!(
        out.ends_with("); it is reconnected on the next call"),
        "{out}"
    );
    // Nothing listens any more: the next call says so too, and nothing hangs.
    let out = answer(&tools, "functions.echo", r#"{"text":"anyone?"}"#).await;
    assert!(out.starts_with("Error: MCP server `web`"), "{out}");
    assert!(out.contains(&http.url), "{out}");
    drop(http);
}

#[tokio::test]
async fn servers_that_cannot_start_are_reported_clearly() {
    let (servers, errors) = mcp::connect_all(&[
        McpServerConfig::stdio("ghost", "/nonexistent/mcp-server", vec![]),
        McpServerConfig::stdio(
            "broken",
            "python3",
            vec![
                "-c".into(),
                "import sys; sys.stderr.write('bad configuration\\n'); sys.exit(2)".into(),
            ],
        ),
        stdio_config("fine"),
        McpServerConfig {
            name: "both".into(),
            command: Some("x".into()),
            url: Some("http://127.0.0.1:1/mcp".into()),
            ..Default::default()
        },
    ])
    .await;
    assert_eq!(servers.len(), 1, "the working server is still usable");
    assert_eq!(servers[0].name(), "fine");
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 3, "{messages:?}");
    assert!(matches!(errors[0], McpError::Spawn { .. }), "{messages:?}");
    assert!(
        messages[0].starts_with("MCP server `ghost`: could not start `/nonexistent/mcp-server`: "),
        "{messages:?}"
    );
    assert!(
        matches!(errors[1], McpError::Handshake { .. }),
        "{messages:?}"
    );
    assert!(
        messages[1].starts_with("MCP server `broken`: the MCP handshake failed: "),
        "{messages:?}"
    );
    assert!(
        messages[1].ends_with("Last lines on its stderr:\nbad configuration"),
        "{messages:?}"
    );
    assert_eq!(
        messages[2],
        "MCP server `both`: give either `command` (stdio) or `url` (HTTP), not both"
    );
    servers[0].shutdown().await;
}

#[tokio::test]
async fn an_http_url_with_nothing_listening_fails_to_connect() {
    // Bind a port, then free it, so nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let url = format!("http://127.0.0.1:{port}/mcp");
    let mut config = McpServerConfig::http("gone", &url);
    config.startup_timeout_secs = Some(10);
    let error = McpServer::connect(config)
        .await
        .err()
        .expect("fails")
        .to_string();
    assert!(
        error.starts_with(&format!(
            "MCP server `gone`: the MCP handshake failed: {url}: "
        )),
        "{error}"
    );
    assert!(error.contains("refused"), "{error}");
}

#[derive(Deserialize)]
struct ConfigFile {
    mcp_servers: Vec<McpServerConfig>,
}

#[test]
fn the_config_file_shape() {
    let text = r#"
        [[mcp_servers]]
        name = "files"
        command = "npx"
        args = ["-y", "@modelcontextprotocol/server-filesystem", "/home/me/notes"]
        env = { LOG_LEVEL = "warn" }
        env_vars = ["GITHUB_TOKEN"]
        call_timeout_secs = 30
        max_result_bytes = 1000

        [[mcp_servers]]
        name = "tracker"
        url = "https://mcp.example.com/mcp"
        headers = { "X-Team" = "core" }
        bearer_token_env_var = "TRACKER_TOKEN"
    "#;
    let config: ConfigFile = toml::from_str(text).expect("parses");
    // Whole values: every key not given is left at its default.
    let files = McpServerConfig {
        name: "files".into(),
        command: Some("npx".into()),
        args: [
            "-y",
            "@modelcontextprotocol/server-filesystem",
            "/home/me/notes",
        ]
        .map(String::from)
        .to_vec(),
        env: BTreeMap::from([("LOG_LEVEL".into(), "warn".into())]),
        env_vars: vec!["GITHUB_TOKEN".into()],
        call_timeout_secs: Some(30),
        max_result_bytes: Some(1000),
        ..McpServerConfig::default()
    };
    let tracker = McpServerConfig {
        name: "tracker".into(),
        url: Some("https://mcp.example.com/mcp".into()),
        headers: BTreeMap::from([("X-Team".into(), "core".into())]),
        bearer_token_env_var: Some("TRACKER_TOKEN".into()),
        ..McpServerConfig::default()
    };
    assert_eq!(config.mcp_servers, [files, tracker]);

    let typo = "[[mcp_servers]]\nname = \"x\"\ncomand = \"npx\"\n";
    let error = toml::from_str::<ConfigFile>(typo)
        .err()
        .expect("unknown keys are refused")
        .to_string();
    assert!(error.contains("unknown field `comand`"), "{error}");
}

#[tokio::test]
async fn config_mistakes_are_named() {
    let cases = [
        (
            McpServerConfig::http("h", "ftp://example.com"),
            "`url` must start with http:// or https://, got `ftp://example.com`",
        ),
        (
            McpServerConfig {
                name: "n".into(),
                ..Default::default()
            },
            "give `command` (stdio) or `url` (HTTP)",
        ),
        (
            McpServerConfig {
                args: vec!["x".into()],
                ..McpServerConfig::http("h", "http://127.0.0.1:1/mcp")
            },
            "`args`, `env`, `env_vars` and `cwd` apply to `command` servers only",
        ),
        (
            McpServerConfig {
                env_vars: vec!["GITHUB_TOKEN".into()],
                ..McpServerConfig::http("h", "http://127.0.0.1:1/mcp")
            },
            "`args`, `env`, `env_vars` and `cwd` apply to `command` servers only",
        ),
        (
            McpServerConfig {
                env_vars: vec!["OSSA_TEST_SURELY_UNSET_VARIABLE".into()],
                ..stdio_config("s")
            },
            "environment variable `OSSA_TEST_SURELY_UNSET_VARIABLE` (env_vars) is not set",
        ),
        (
            McpServerConfig {
                env_vars: vec!["A=B".into()],
                ..stdio_config("s")
            },
            "`env_vars`: `A=B` is not a variable name",
        ),
        (
            McpServerConfig {
                max_result_bytes: Some(0),
                ..stdio_config("s")
            },
            "`max_result_bytes` must be between 1 and 16777216, got 0",
        ),
        (
            McpServerConfig {
                bearer_token_env_var: Some("OSSA_TEST_SURELY_UNSET_TOKEN".into()),
                ..McpServerConfig::http("h", "http://127.0.0.1:1/mcp")
            },
            "environment variable `OSSA_TEST_SURELY_UNSET_TOKEN` (bearer_token_env_var) is not set",
        ),
        (
            McpServerConfig {
                headers: [("bad header".to_string(), "v".to_string())].into(),
                ..McpServerConfig::http("h", "http://127.0.0.1:1/mcp")
            },
            "invalid HTTP header name `bad header`",
        ),
    ];
    for (config, expected) in cases {
        let name = config.name.clone();
        let error = McpServer::connect(config)
            .await
            .err()
            .expect("refused")
            .to_string();
        assert_eq!(error, format!("MCP server `{name}`: {expected}"));
    }
}

#[tokio::test]
async fn stdio_servers_get_their_working_directory_and_environment() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = stdio_config("one");
    config.cwd = Some(dir.path().to_path_buf());
    config
        .env
        .insert("OSSA_TEST_VAR".into(), "from-config".into());
    let (server, tools) = connect(config).await;
    let cwd = dir.path().canonicalize().expect("canonical");
    assert_eq!(
        answer(&tools, "functions.whereami", "{}").await,
        format!("{} from-config", cwd.display())
    );
    server.shutdown().await;
}

#[test]
fn every_kind_of_result_content_reads_as_text() {
    let result = json!({
        "content": [
            {"type": "text", "text": "first"},
            {"type": "audio", "data": "AAAA", "mimeType": "audio/wav"},
            {"type": "resource", "resource": {"uri": "file:///x.bin", "mimeType": "application/octet-stream", "blob": "AAAA"}},
            {"type": "resource_link", "uri": "file:///notes.md", "name": "notes", "description": "My notes."},
            {"type": "something_new"}
        ]
    });
    assert_eq!(
        call_result_text(&result),
        Ok("first\n[audio omitted: audio/wav]\n[binary resource file:///x.bin (application/octet-stream)]\n\
[resource notes: file:///notes.md] My notes.\n[something_new content omitted]"
            .to_string())
    );
    assert_eq!(
        call_result_text(&json!({"content": [], "structuredContent": {"n": 1}})),
        Ok(r#"{"n":1}"#.to_string())
    );
    assert_eq!(call_result_text(&json!({"content": []})), Ok(String::new()));
    assert_eq!(
        call_result_text(&json!({"content": [], "isError": true})).map_err(|e| e.to_string()),
        Err("the tool reported an error without a message".to_string())
    );
}

/// A variable only the test process's own environment holds, standing for an API key.
const SECRET_VARIABLE: &str = "OSSA_TEST_SECRET_API_KEY";
const PASSED_VARIABLE: &str = "OSSA_TEST_PASSED_TOKEN";

/// The environment of a stdio server `config`, as it reports it.
async fn server_environment(config: McpServerConfig) -> serde_json::Map<String, serde_json::Value> {
    let (server, tools) = connect(config).await;
    let reported = answer(&tools, "functions.environment", "{}").await;
    server.shutdown().await;
    match serde_json::from_str(&reported) {
        Ok(serde_json::Value::Object(environment)) => environment,
        _ => panic!("not a JSON object: {reported}"),
    }
}

#[tokio::test]
async fn stdio_servers_see_a_minimal_environment_not_ossas_secrets() {
    const NAME: &str = "stdio_servers_see_a_minimal_environment_not_ossas_secrets";
    if std::env::var_os(SECRET_VARIABLE).is_none() {
        // The secret must be in ossa's own environment, and setting variables in a running
        // multi-threaded test process is unsound: run this test again in a process that has it.
        let output = Command::new(std::env::current_exe().expect("test binary"))
            .args(["--exact", NAME, "--test-threads=1"])
            .env(SECRET_VARIABLE, "sk-do-not-leak")
            .env(PASSED_VARIABLE, "ghp-passed-on-purpose")
            .env("LC_TIME", "C")
            .output()
            .expect("the test binary runs");
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stdout}\n{stderr}");
        assert!(
            stdout.contains("test result: ok. 1 passed"),
            "the test ran in the child: {stdout}"
        );
        return;
    }

    // The interpreter itself: a launcher such as pyenv's `python3` shim edits the environment
    // (its PATH, its own variables) before the server sees it.
    let python = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 runs");
    let python = String::from_utf8(python.stdout).expect("UTF-8");
    let config_for = |name: &str| McpServerConfig {
        command: Some(python.trim().to_string()),
        ..stdio_config(name)
    };
    let mut config = config_for("one");
    config.env_vars = vec![PASSED_VARIABLE.into()];
    config
        .env
        .insert("OSSA_TEST_VAR".into(), "from-config".into());
    let environment = server_environment(config).await;
    let value = |name: &str| environment.get(name).and_then(|v| v.as_str());
    assert_eq!(value(SECRET_VARIABLE), None, "{environment:?}");
    assert_eq!(value(PASSED_VARIABLE), Some("ghp-passed-on-purpose"));
    assert_eq!(value("OSSA_TEST_VAR"), Some("from-config"));
    assert_eq!(
        value("LC_TIME"),
        Some("C"),
        "locale variables are inherited"
    );
    for inherited in ["PATH", "HOME"] {
        assert_eq!(
            value(inherited).map(String::from),
            std::env::var(inherited).ok(),
            "{inherited}"
        );
    }
    // Nothing else came through: every variable the server has is on the list, a locale
    // variable or one the config names (cargo's and the CI's own variables stayed behind).
    for name in environment.keys() {
        assert!(
            mcp::INHERITED_VARIABLES.contains(&name.as_str())
                || name.starts_with("LC_")
                || name == PASSED_VARIABLE
                || name == "OSSA_TEST_VAR",
            "{name} leaked to the server"
        );
    }
    assert!(
        std::env::vars().count() > environment.len(),
        "ossa's environment has more than the server's"
    );

    // Without `env_vars`, the passed variable stays behind too.
    let environment = server_environment(config_for("two")).await;
    assert!(
        !environment.contains_key(PASSED_VARIABLE),
        "{environment:?}"
    );
    assert!(
        !environment.contains_key(SECRET_VARIABLE),
        "{environment:?}"
    );
}

#[tokio::test]
async fn a_huge_result_is_cut_to_the_limit_with_a_note_saying_how_much() {
    // A limit that falls inside a two-byte character: the cut goes back to its start.
    let (server, tools) = connect_one_with(|config| config.max_result_bytes = Some(1001)).await;
    let out = answer(&tools, "functions.big", r#"{"unit":"é","count":600000}"#).await;
    assert_eq!(
        out,
        format!(
            "{}\n[result truncated: the first 1000 of its 1200000 bytes are shown, 1199000 bytes were cut]",
            "é".repeat(500)
        )
    );
    // Error texts are what the model reads too.
    let out = answer(
        &tools,
        "functions.big",
        r#"{"unit":"e","count":5000,"error":true}"#,
    )
    .await;
    assert_eq!(
        out,
        format!(
            "Error: {}\n[result truncated: the first 1001 of its 5000 bytes are shown, 3999 bytes were cut]",
            "e".repeat(1001)
        )
    );
    // At the limit, nothing is cut.
    let out = answer(&tools, "functions.big", r#"{"unit":"a","count":1001}"#).await;
    assert_eq!(out, "a".repeat(1001));
    server.shutdown().await;

    // The default: 64 KiB.
    let (server, tools) = connect_one().await;
    let out = answer(&tools, "functions.big", r#"{"unit":"ab","count":100000}"#).await;
    assert_eq!(
        out,
        format!(
            "{}\n[result truncated: the first 65536 of its 200000 bytes are shown, 134464 bytes were cut]",
            "ab".repeat(32768)
        )
    );
    server.shutdown().await;
}

/// This process's peak resident memory (VmHWM), in bytes.
fn peak_memory() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("procfs");
    let line = status
        .lines()
        .find(|line| line.starts_with("VmHWM:"))
        .expect("VmHWM");
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .and_then(|n| n.parse().ok())
        .expect("a number");
    kib * 1024
}

#[tokio::test]
async fn a_stdio_server_streaming_an_endless_result_is_stopped_not_buffered() {
    // Far longer than the answer takes: a timeout would mean the result was waited for.
    let (server, tools) = connect_one_with(|config| config.call_timeout_secs = Some(100)).await;
    let first_pid = answer(&tools, "functions.pid", "{}").await;
    let before = peak_memory();
    // 4 GiB in one JSON-RPC line.
    let out = answer(&tools, "functions.flood", r#"{"megabytes":4096}"#).await;
    assert_eq!(
        out,
        "Error: MCP server `one` sent a message larger than 16 MiB while running `flood` (the most ossa reads), so it was stopped; it will be started again on the next call"
    );
    let grown = peak_memory().saturating_sub(before);
    assert!(
        grown < 512 << 20,
        "reading the flood raised peak memory by {grown} bytes"
    );
    // The server is started again and answers.
    let second_pid = answer(&tools, "functions.pid", "{}").await;
    assert_ne!(first_pid, second_pid);
    assert_eq!(
        answer(&tools, "functions.echo", r#"{"text":"after the flood"}"#).await,
        "one: after the flood"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn an_http_server_streaming_an_endless_result_fails_the_call_not_the_process() {
    let http = HttpServer::start();
    let mut config = McpServerConfig::http("web", &http.url);
    config.call_timeout_secs = Some(100);
    let (server, tools) = connect(config).await;
    let before = peak_memory();
    let out = answer(&tools, "functions.flood", r#"{"megabytes":4096}"#).await;
    assert_eq!(
        out,
        format!(
            "Error: MCP server `web` at {} failed while running `flood` (Transport closed: the server went away, or sent a message over 16 MiB, the most ossa reads); it is reconnected on the next call",
            http.url
        )
    );
    let grown = peak_memory().saturating_sub(before);
    assert!(
        grown < 512 << 20,
        "reading the flood raised peak memory by {grown} bytes"
    );
    assert_eq!(
        answer(&tools, "functions.echo", r#"{"text":"after the flood"}"#).await,
        "web: after the flood"
    );
    server.shutdown().await;
    drop(http);
}

/// The prompt's copy of the `deep` tool's schema with `depth` levels of `$ref`s inlined: level
/// `i` is an object of two level `i + 1` properties, and a level not inlined is `any` (`{}`).
fn deep_tree(level: usize, depth: usize) -> serde_json::Value {
    if level >= depth {
        return json!({});
    }
    let below = deep_tree(level + 1, depth);
    json!({"type": "object", "properties": {"left": below.clone(), "right": below}})
}

#[tokio::test]
async fn hostile_schemas_are_expanded_within_the_budget_and_their_tools_still_work() {
    let mut config = stdio_config("hostile");
    config.args.push("--hostile-schemas".into());
    let server = McpServer::connect(config).await.expect("connects");
    let mut tools = FunctionTools::new();
    let (added, warnings) = mcp::add_tools(&mut tools, &[Arc::clone(&server)]);
    assert_eq!(added.len(), ALL_TOOLS.len() + 2, "both tools are offered");

    // The deepest expansion within the budget, worked out from the listed schema.
    let deep = server
        .tools()
        .iter()
        .find(|tool| tool.name == "deep")
        .expect("listed");
    let depth = support::levels_within_the_inlining_budget(&deep.input_schema["$defs"], "L", 0, 18);
    assert_eq!(
        warnings,
        [format!(
            "MCP server `hostile`: tool `deep`: its parameter schema expands past 32 KiB through its `$ref`s; the model is shown {depth} levels of `$ref`s, deeper ones as `any`"
        )]
    );

    let namespace = tools.namespace();
    let described = |name: &str| {
        namespace
            .tools
            .iter()
            .find(|tool| tool.name == name)
            .and_then(|tool| tool.parameters.clone())
            .expect("described")
    };
    assert_eq!(
        described("deep"),
        json!({"type": "object", "properties": {"root": deep_tree(0, depth)}})
    );
    assert_eq!(
        described("cyclic"),
        json!({
            "type": "object",
            "properties": {"start": {
                "type": "object",
                "properties": {"b": {
                    "type": "object",
                    "properties": {"a": {}, "name": {"type": "string"}}
                }}
            }}
        }),
        "the cycle is cut where it closes"
    );

    // Arguments are still checked against the whole schema, at every depth.
    assert_eq!(
        answer(
            &tools,
            "functions.deep",
            r#"{"root":{"left":{"right":{}}}}"#
        )
        .await,
        r#"deep: {"root": {"left": {"right": {}}}}"#
    );
    let mut below_the_shown_depth = json!("leaf");
    for _ in 0..12 {
        below_the_shown_depth = json!({ "right": below_the_shown_depth });
    }
    assert_eq!(
        answer(
            &tools,
            "functions.deep",
            &json!({ "root": below_the_shown_depth }).to_string()
        )
        .await,
        format!(
            r#"Error: invalid arguments: at /root{}: "leaf" is not of type "object""#,
            "/right".repeat(12)
        )
    );
    assert_answers(
        &tools,
        &[
            (
                "functions.cyclic",
                r#"{"start":{"b":{"a":{"b":{"name":"x"}}}}}"#,
                r#"cyclic: {"start": {"b": {"a": {"b": {"name": "x"}}}}}"#,
            ),
            (
                "functions.cyclic",
                r#"{"start":{"b":{"a":{"b":{"name":3}}}}}"#,
                r#"Error: invalid arguments: at /start/b/a/b/name: 3 is not of type "string""#,
            ),
        ],
    )
    .await;
    server.shutdown().await;
}
