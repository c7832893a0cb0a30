//! The tool set built from a config file: the browser, apply_patch confined to its workspace,
//! MCP servers (a real one over stdio, and one that cannot start), and the Python sandbox with
//! the file's limits and folder, each used through the interface the agent calls.

use std::sync::Arc;

use ossa::config::Config;
use ossa::sandbox::Progress;
use ossa::tools::{Tool, ToolCall};
use ossa::toolset::{ToolChoice, Toolset, ToolsetError, build_tools};

/// The config file `text`, in a temporary folder of its own (removed when dropped).
fn config(text: &str) -> (tempfile::TempDir, Config) {
    let dir = tempfile::tempdir().unwrap();
    let home = |_: &str| None;
    let config = Config::from_toml(text, &dir.path().join("config.toml"), &home)
        .unwrap_or_else(|e| panic!("{e}\n{text}"));
    (dir, config)
}

/// The tool set `config` gives with the browser and python chosen or not.
async fn build(config: &Config, browser: bool, python: bool) -> Toolset {
    build_tools(config, &ToolChoice { browser, python }, Progress::Quiet)
        .await
        .unwrap()
}

/// The names of a tool set's tools, in order.
fn names(toolset: &Toolset) -> Vec<&str> {
    toolset.tools.iter().map(|t| t.name()).collect()
}

fn call(recipient: &str, content_type: &str, content: &str) -> ToolCall {
    ToolCall {
        recipient: recipient.into(),
        channel: Some("commentary".into()),
        content_type: Some(content_type.into()),
        content: content.into(),
    }
}

async fn answer(tool: &Arc<dyn Tool>, call: ToolCall) -> String {
    let mut session = tool.open_session();
    let mut outputs = session.call(&call).await;
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    outputs.remove(0).content
}

/// What the function `name` answers to JSON `arguments`.
async fn call_function(functions: &Arc<dyn Tool>, name: &str, arguments: &str) -> String {
    answer(functions, call(name, "<|constrain|>json", arguments)).await
}

/// What `functions.apply_patch` answers to a patch of `changes` (its lines between `Begin Patch`
/// and `End Patch`).
async fn apply_patch(functions: &Arc<dyn Tool>, changes: &str) -> String {
    let patch = format!("*** Begin Patch\n{changes}\n*** End Patch");
    call_function(functions, "functions.apply_patch", &patch).await
}

fn find<'a>(tools: &'a [Arc<dyn Tool>], name: &str) -> &'a Arc<dyn Tool> {
    tools
        .iter()
        .find(|t| t.name() == name)
        .unwrap_or_else(|| panic!("no {name} tool"))
}

#[tokio::test]
async fn browser_apply_patch_and_mcp_tools_are_built_from_the_file() {
    let echo_server = ossa_test_support::workspace_root().join("tools/tests/mcp_echo_server.py");
    let (dir, config) = config(&format!(
        r#"
[tools]
apply_patch_workspace = "work"

[browser]
view_tokens = 512

[[mcp_servers]]
name = "echo"
command = "python3"
args = ["{}", "--name", "echo"]

[[mcp_servers]]
name = "broken"
command = "/nonexistent/ossa-test-no-such-server"
"#,
        echo_server.display()
    ));
    std::fs::create_dir(dir.path().join("work")).unwrap();
    let toolset = build(&config, true, false).await;
    assert_eq!(names(&toolset), ["browser", "functions"]);
    let functions = toolset.functions.names();
    assert_eq!(functions[0], "apply_patch");
    assert!(functions.iter().any(|f| f == "echo"), "{functions:?}");
    assert_eq!(toolset.mcp_servers.len(), 1);
    assert!(toolset.mcp_tools.iter().all(|t| t.server == "echo"));
    assert_eq!(toolset.instructions.len(), 1);
    assert!(toolset.instructions[0].contains("*** Begin Patch"));
    // The server that cannot start is reported, not fatal.
    assert_eq!(toolset.warnings.len(), 1, "{:?}", toolset.warnings);
    assert!(
        toolset.warnings[0].contains("MCP server `broken`"),
        "{:?}",
        toolset.warnings
    );

    // The browser carries the file's settings; its namespace names the search source.
    let browser = find(&toolset.tools, "browser");
    let namespace = browser.namespace();
    assert!(
        namespace
            .description
            .as_deref()
            .unwrap_or("")
            .contains("sources="),
        "{namespace:?}"
    );

    // apply_patch writes inside the workspace and nowhere else.
    let functions = find(&toolset.tools, "functions");
    let done = apply_patch(
        functions,
        "*** Add File: notes/hello.txt\n+hello from the model",
    )
    .await;
    assert!(done.starts_with("Done!"), "{done}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("work/notes/hello.txt")).unwrap(),
        "hello from the model\n"
    );
    let refused = apply_patch(functions, "*** Add File: ../escape.txt\n+no").await;
    assert!(refused.starts_with("Error:"), "{refused}");
    assert!(!dir.path().join("escape.txt").exists());

    // The MCP server's tool answers through the same namespace.
    let echoed = call_function(functions, "functions.echo", r#"{"text": "through MCP"}"#).await;
    // The server answers `{its --name}: {text}`.
    assert_eq!(echoed, "echo: through MCP");

    toolset.shutdown().await;
}

#[tokio::test]
async fn nothing_chosen_and_nothing_configured_gives_no_tools() {
    let (_dir, config) = config("");
    let toolset = build(&config, false, false).await;
    assert!(toolset.tools.is_empty());
    assert!(toolset.functions.is_empty());
    assert!(toolset.warnings.is_empty());
}

#[tokio::test]
async fn a_missing_apply_patch_workspace_is_an_error_naming_it() {
    let (dir, config) = config("[tools]\napply_patch_workspace = \"not-there\"\n");
    let error = build_tools(&config, &ToolChoice::default(), Progress::Quiet)
        .await
        .unwrap_err();
    assert!(matches!(error, ToolsetError::Workspace { .. }), "{error:?}");
    let text = error.to_string();
    assert!(
        text.starts_with("[tools] apply_patch_workspace: "),
        "{text}"
    );
    assert!(
        text.contains(&dir.path().join("not-there").display().to_string()),
        "{text}"
    );
}

/// Uses the real sandbox (its runtime is fetched with pip on a machine's first run).
#[tokio::test]
async fn the_python_tool_gets_the_files_limits_and_folder() {
    let (dir, config) = config("[python]\ntimeout_s = 2\nmemory_mb = 128\nmount = \"shared\"\n");
    let toolset = build(&config, false, true).await;
    assert_eq!(names(&toolset), ["python"]);
    let python = find(&toolset.tools, "python");
    let mut session = python.open_session();
    let mut run = async |code: &str| {
        let mut outputs = session.call(&call("python", "code", code)).await;
        assert_eq!(outputs.len(), 1);
        outputs.remove(0).content
    };

    // /mnt/data is the configured folder (relative to the config file's folder).
    let out = run("open('/mnt/data/result.txt', 'w').write('42')\nprint(6 * 7)").await;
    assert_eq!(out, "42\n");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("shared/result.txt")).unwrap(),
        "42"
    );
    // The configured deadline and memory limit are the ones enforced.
    let out = run("while True:\n    pass").await;
    assert!(
        out.contains("[ERROR] Execution timed out after 2 s"),
        "{out}"
    );
    let out = run("block = bytearray(512 * 1024 * 1024)").await;
    assert!(out.contains("128 MiB memory limit"), "{out}");
}
