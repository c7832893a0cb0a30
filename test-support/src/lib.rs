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

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Runs `command` with `stdin` written to its standard input (then closed), and its output
/// captured.
pub fn run_piped(command: &mut Command, stdin: &str) -> Output {
    run_with_stdin(command, Some(stdin))
}

/// Runs `command` with its output captured, and `stdin` written to its standard input (then
/// closed), or no standard input at all (`/dev/null`) when `None`.
pub fn run_with_stdin(command: &mut Command, stdin: Option<&str>) -> Output {
    spawn_with_stdin(command, stdin)
        .wait_with_output()
        .expect("the command ran")
}

/// [`run_piped`] with a hang guard: a command still running `limit` after it started is killed
/// and the test fails, so that a hang is a failure rather than a stuck test run.
pub fn run_piped_within(command: &mut Command, stdin: &str, limit: Duration) -> Output {
    let mut child = spawn_with_stdin(command, Some(stdin));
    // Both pipes are drained while it runs, so a full pipe cannot hold it up.
    let (stdout, stderr) = (child.stdout.take(), child.stderr.take());
    let out = thread::spawn(move || read_all(stdout));
    let err = thread::spawn(move || read_all(stderr));
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            panic!("{command:?} still running after {limit:?}: it hangs");
        }
        thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().expect("stdout"),
        stderr: err.join().expect("stderr"),
    }
}

/// Starts `command` with stdout and stderr piped and `stdin` written to its standard input
/// (then closed), or none at all when `None`.
fn spawn_with_stdin(command: &mut Command, stdin: Option<&str>) -> Child {
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
    child
}

fn read_all(pipe: Option<impl Read>) -> Vec<u8> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        let _ = pipe.read_to_end(&mut bytes);
    }
    bytes
}

/// Keeps an `ossa` command off the user's setup and other tests' files: HOME and the XDG
/// config, cache, data and state folders are in `home`, its prompt cache too, and no
/// `OSSA_CONFIG` names another config file.
pub fn in_private_home<'c>(command: &'c mut Command, home: &Path) -> &'c mut Command {
    command
        .env("HOME", home)
        .env("XDG_CONFIG_HOME", home.join(".config"))
        .env("XDG_CACHE_HOME", home.join(".cache"))
        .env("XDG_DATA_HOME", home.join(".local/share"))
        .env("XDG_STATE_HOME", home.join(".local/state"))
        .env("OSSA_PROMPT_CACHE_DIR", home.join("prompt-cache"))
        .env_remove("OSSA_CONFIG")
}

/// Fails the test unless `text` holds every one of `parts`, naming the first it lacks and
/// showing the whole text.
#[track_caller]
pub fn assert_contains_all(text: &str, parts: &[&str]) {
    if let Some(missing) = parts.iter().find(|part| !text.contains(*part)) {
        panic!("{missing:?} is missing from:\n{text}");
    }
}

/// Where two sequences first differ (one ending before the other counts), or `None` when they
/// are the same.
pub fn first_difference<T: PartialEq>(got: &[T], want: &[T]) -> Option<usize> {
    if got == want {
        return None;
    }
    let same = got.iter().zip(want).take_while(|(a, b)| a == b).count();
    Some(same)
}

/// The standard output of a command that must have succeeded; else the test fails naming
/// `what`, how it exited and both its outputs.
pub fn stdout_of_success(what: &str, output: &Output) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{what} failed ({}):\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The standard error of a command that must have failed; else the test fails naming `what`
/// and what it printed.
pub fn stderr_of_failure(what: &str, output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr).to_string();
    assert!(
        !output.status.success(),
        "{what} succeeded:\nstdout:\n{}\nstderr:\n{stderr}",
        String::from_utf8_lossy(&output.stdout)
    );
    stderr
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
