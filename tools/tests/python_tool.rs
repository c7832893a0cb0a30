//! The `python` tool on the real WebAssembly sandbox: the text the model reads for each kind of
//! cell (the reference Jupyter backend's rules), notebook state per conversation, limits, files
//! under /mnt/data, cancellation, and the Tool / ToolSession interface the agent loop uses.
//!
//! The sandbox is opened as users open it (`SandboxConfig::from_env`: the runtime fetched with
//! pip into ossa's data folder on first use, then cached).

use std::time::Duration;

use ossa_sandbox::{CallLimits, ResetReason, SessionOptions, Status, Stop};
use ossa_test_support::sandbox::sandbox;
use ossa_tools::python::{PythonSession, PythonTool, model_output};
use ossa_tools::{Placement, Tool, ToolCall, ToolNamespaceConfig, ToolOutput, ToolSession};

const WARN: &str =
    "[WARN] No output available. Use print() to output anything to stdout to receive the output";
const RESTARTED: &str = "[NOTE] The Python interpreter was restarted: variables and imports are \
                         gone; files in /mnt/data are kept.";

fn tool() -> PythonTool {
    PythonTool::new(sandbox().clone(), SessionOptions::default())
}

/// A tool whose calls have the sandbox's call limits as `change` leaves them.
fn tool_with(change: impl FnOnce(&mut CallLimits)) -> PythonTool {
    let mut limits = sandbox().limits().clone();
    change(&mut limits.call);
    PythonTool::new(
        sandbox().clone(),
        SessionOptions {
            mount: None,
            limits: Some(limits),
        },
    )
}

fn code(content: &str) -> ToolCall {
    ToolCall {
        recipient: "python".into(),
        channel: Some("analysis".into()),
        content_type: Some("code".into()),
        content: content.into(),
    }
}

/// Runs one cell through the ToolSession interface and returns the one message it gives.
async fn call(session: &mut PythonSession, content: &str) -> ToolOutput {
    let mut outputs = session.call(&code(content)).await;
    assert_eq!(outputs.len(), 1, "{outputs:?}");
    outputs.remove(0)
}

async fn text(session: &mut PythonSession, content: &str) -> String {
    call(session, content).await.content
}

#[tokio::test]
async fn printed_output_is_the_answer() {
    let mut session = tool().session();
    assert_eq!(text(&mut session, "print(6*7)").await, "42\n");
    assert_eq!(
        text(
            &mut session,
            "for i in range(3):\n    print(i, end=' ')\nprint()"
        )
        .await,
        "0 1 2 \n"
    );
}

#[tokio::test]
async fn the_final_expression_is_echoed_after_stdout() {
    let mut session = tool().session();
    assert_eq!(text(&mut session, "x = 3\nx").await, "3\n");
    assert_eq!(text(&mut session, "print('a')\n'b'").await, "a\n'b'\n");
    assert_eq!(
        text(&mut session, "import numpy as np\nnp.float64(1.5) * 2").await,
        "np.float64(3.0)\n"
    );
    // Only the last statement echoes, as in a notebook.
    assert_eq!(text(&mut session, "1 + 1\nprint('last')").await, "last\n");
}

#[tokio::test]
async fn stderr_follows_stdout_with_its_trailing_whitespace_removed() {
    let mut session = tool().session();
    let out = text(&mut session, "print('before   ')\nprint('  ')\n1/0").await;
    assert!(
        out.starts_with("before\nTraceback (most recent call last):\n"),
        "{out:?}"
    );
    assert!(
        out.ends_with("ZeroDivisionError: division by zero\n"),
        "{out:?}"
    );

    // The echoed value belongs to stdout: it comes before stderr.
    let out = text(
        &mut session,
        "import sys\nprint('out')\nsys.stderr.write('err\\n')\n7",
    )
    .await;
    assert_eq!(out, "out\n7\nerr\n");

    // With nothing on stdout, stderr alone.
    let out = text(
        &mut session,
        "import sys\nprint('only err', file=sys.stderr)",
    )
    .await;
    assert_eq!(out, "only err\n");
}

#[tokio::test]
async fn a_cell_that_shows_nothing_gets_the_reference_warning() {
    let mut session = tool().session();
    assert_eq!(text(&mut session, "x = 1").await, WARN);
    assert_eq!(text(&mut session, "None").await, WARN);
    assert_eq!(text(&mut session, "print('   ')").await, WARN);
}

#[tokio::test]
async fn state_is_kept_within_a_session_and_not_shared_between_sessions() {
    let tool = tool();
    let mut first = tool.session();
    let mut second = tool.session();
    assert_eq!(text(&mut first, "x = 41\nimport math").await, WARN);
    assert_eq!(
        text(&mut first, "print(x + 1, math.pi > 3)").await,
        "42 True\n"
    );
    let other = text(&mut second, "print(x)").await;
    assert!(
        other.ends_with("NameError: name 'x' is not defined\n"),
        "{other:?}"
    );
    assert!(other.starts_with("Traceback"), "{other:?}");
    // The first session is untouched by the second's failure.
    assert_eq!(text(&mut first, "x").await, "41\n");
}

#[tokio::test]
async fn a_timeout_keeps_what_was_printed_and_the_next_call_still_works() {
    let tool = tool_with(|call| call.deadline = Duration::from_secs(2));
    let mut session = tool.session();
    assert_eq!(text(&mut session, "x = 5").await, WARN);
    let out = text(
        &mut session,
        "print('started', flush=True)\nwhile True:\n    pass",
    )
    .await;
    assert_eq!(
        out,
        format!("started\n[ERROR] Execution timed out after 2 s\n{RESTARTED}")
    );
    // A fresh interpreter answers the next call; the model was told the state went.
    assert_eq!(text(&mut session, "print('again')").await, "again\n");
    let lost = text(&mut session, "x").await;
    assert!(
        lost.ends_with("NameError: name 'x' is not defined\n"),
        "{lost:?}"
    );
}

#[tokio::test]
async fn output_past_the_limit_is_cut_with_a_marker() {
    let tool = tool_with(|call| call.output_bytes = 1000);
    let mut session = tool.session();
    let out = text(&mut session, "print('x' * 5000)").await;
    let expected_start = format!("{}\n[output truncated: stdout", "x".repeat(1000));
    assert!(out.starts_with(&expected_start), "{out:?}");
    assert!(out.contains("4001 more bytes were dropped"), "{out:?}");
    assert!(out.len() < 1200, "{}", out.len());
}

#[tokio::test]
async fn files_written_under_mnt_data_are_listed_with_host_paths() {
    let mut session = tool().session();
    let out = call(
        &mut session,
        "import os\nos.makedirs('/mnt/data/sub', exist_ok=True)\n\
         open('/mnt/data/sub/b.csv', 'w').write('1,2\\n')\n\
         with open('a.txt', 'w') as f:\n    f.write('hello')\nprint('saved')",
    )
    .await;
    assert_eq!(out.content, "saved\n");
    let mount = session.mount().expect("the session is open").to_path_buf();
    assert_eq!(
        out.files,
        vec![mount.join("a.txt"), mount.join("sub/b.csv")],
        "{:?}",
        out.files
    );
    assert_eq!(std::fs::read_to_string(&out.files[0]).unwrap(), "hello");
    assert_eq!(std::fs::read_to_string(&out.files[1]).unwrap(), "1,2\n");

    // Files stay across calls; only new or changed ones are listed.
    let out = call(&mut session, "print(open('a.txt').read())").await;
    assert_eq!(out.content, "hello\n");
    assert!(out.files.is_empty(), "{:?}", out.files);
}

#[tokio::test]
async fn the_tool_through_the_agent_interface() {
    let tool: Box<dyn Tool> = Box::new(tool());
    assert_eq!(tool.name(), "python");
    assert_eq!(tool.namespace(), ToolNamespaceConfig::python());
    assert_eq!(tool.placement(), Placement::System);
    let mut session = tool.open_session();
    let outputs = session.call(&code("print(6*7)")).await;
    assert_eq!(
        outputs,
        vec![ToolOutput {
            author: "python".into(),
            channel: Some("analysis".into()),
            content: "42\n".into(),
            files: Vec::new(),
        }]
    );
    // The channel is the call's, whatever it is.
    let commentary = ToolCall {
        channel: Some("commentary".into()),
        ..code("print('c')")
    };
    let outputs = session.call(&commentary).await;
    assert_eq!(outputs[0].channel.as_deref(), Some("commentary"));
    assert_eq!(outputs[0].content, "c\n");
    assert!(session.citation_urls().is_none());
}

#[tokio::test]
async fn a_dropped_call_stops_the_code_and_the_next_call_says_so() {
    // A deadline far past the test's wait: only the cancel can end the loop early.
    let tool = tool_with(|call| call.deadline = Duration::from_secs(90));
    let mut session = tool.session();
    assert_eq!(text(&mut session, "y = 1").await, WARN);
    let dropped = tokio::time::timeout(
        Duration::from_secs(3),
        session.call(&code("while True:\n    pass")),
    )
    .await;
    assert!(dropped.is_err(), "the loop cannot finish: {dropped:?}");

    let out = session.run("print('next')").await.expect("the call runs");
    assert_eq!(
        out.started_fresh,
        Some(ResetReason::Stopped(Stop::Cancelled))
    );
    assert_eq!(out.status, Status::Ok);
    assert_eq!(
        model_output(&out),
        "[NOTE] This code ran in a fresh Python interpreter (the previous call was cancelled): \
         variables and imports are gone; files in /mnt/data are kept.\nnext\n"
    );
}

#[tokio::test]
async fn an_exit_is_reported_and_the_session_goes_on() {
    let mut session = tool().session();
    assert_eq!(
        text(&mut session, "print('bye')\nexit(3)").await,
        "bye\n[NOTE] The code exited the interpreter (status 3), so it was restarted: variables \
         and imports are gone; files in /mnt/data are kept."
    );
    assert_eq!(text(&mut session, "print('back')").await, "back\n");
}

#[tokio::test]
async fn a_sandbox_that_cannot_run_gets_a_message_not_a_panic() {
    // Less memory than the interpreter needs: the sandbox refuses to open the session.
    let tool = tool_with(|call| call.memory_bytes = 1 << 20);
    let mut session = tool.session();
    for _ in 0..2 {
        let out = call(&mut session, "print(1)").await;
        assert_eq!(out.author, "python");
        assert!(
            out.content.starts_with(
                "[ERROR] The Python tool could not run the code: invalid limit: memory"
            ),
            "{:?}",
            out.content
        );
    }
    assert!(session.mount().is_none());
}
