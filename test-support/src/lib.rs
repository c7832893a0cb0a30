//! What ossa's integration tests share, in one place (like codex-rs's `core_test_support`):
//! fixture paths found at run time, the scripted model (feature `agent`) and one sandbox per
//! test binary (feature `sandbox`). Helpers that need the root crate's binary or its server
//! types stay in the root's `tests/support`.

pub mod paths;
#[cfg(feature = "sandbox")]
pub mod sandbox;
#[cfg(feature = "agent")]
pub mod scripted;

pub use paths::{fixtures, manifest_dir, workspace_root};

use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `command` with `stdin` written to its standard input (then closed), and its output
/// captured.
pub fn run_piped(command: &mut Command, stdin: &str) -> Output {
    run_with_stdin(command, Some(stdin))
}

/// Runs `command` with its output captured, and `stdin` written to its standard input (then
/// closed), or no standard input at all (`/dev/null`) when `None`.
pub fn run_with_stdin(command: &mut Command, stdin: Option<&str>) -> Output {
    let mut child = command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the command starts");
    if let Some(text) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(text.as_bytes())
            .expect("stdin written");
    }
    child.wait_with_output().expect("the command ran")
}

/// Prints the `N passed, M failed` line of a conformance loop and fails with every failure.
pub fn assert_all_passed(passed: usize, failures: &[String]) {
    println!("{passed} passed, {} failed", failures.len());
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Checks every item (`Err` says what differed), then prints `N passed, M failed` and fails
/// with every failure.
pub fn check_all<T>(
    items: impl IntoIterator<Item = T>,
    mut check: impl FnMut(T) -> Result<(), String>,
) {
    let mut passed = 0;
    let mut failures = Vec::new();
    for item in items {
        match check(item) {
            Ok(()) => passed += 1,
            Err(failure) => failures.push(failure),
        }
    }
    assert_all_passed(passed, &failures);
}
