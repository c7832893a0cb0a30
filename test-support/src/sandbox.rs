//! One sandbox per test binary, opened the way users open it (the Python runtime fetched with
//! pip into ossa's data folder on first use, then cached), and cells run on it.

use std::sync::OnceLock;

use ossa_sandbox::{
    CallLimits, Limits, RunOutput, Sandbox, SandboxConfig, Session, SessionOptions, SessionState,
    Status,
};

pub fn sandbox() -> &'static Sandbox {
    static SANDBOX: OnceLock<Sandbox> = OnceLock::new();
    SANDBOX.get_or_init(|| {
        let config = SandboxConfig::from_env().expect("a data folder for ossa");
        Sandbox::open(config).unwrap_or_else(|e| panic!("the sandbox did not open: {e}"))
    })
}

pub fn session() -> Session {
    sandbox()
        .session(SessionOptions::default())
        .expect("a session")
}

/// A session with its own `limits` (no mount).
pub fn session_with(limits: Limits) -> Session {
    sandbox()
        .session(SessionOptions {
            mount: None,
            limits: Some(limits),
        })
        .expect("a session")
}

pub fn limits() -> CallLimits {
    sandbox().limits().call.clone()
}

/// Runs a cell with the default limits on a plain thread.
pub fn run(session: &Session, code: &str) -> RunOutput {
    session
        .run_blocking(code, &limits())
        .unwrap_or_else(|e| panic!("the call failed to run: {e}"))
}

/// Runs a cell that must succeed and returns its stdout.
pub fn ok(session: &Session, code: &str) -> String {
    let out = run(session, code);
    assert_eq!(
        out.status,
        Status::Ok,
        "code:\n{code}\nstdout:\n{}\nstderr:\n{}",
        out.stdout,
        out.stderr
    );
    out.stdout
}

/// Asserts that a cell ended with `status`, the Python exception `exception` in its stderr, and
/// its session (the interpreter with its variables) kept.
pub fn assert_failed_keeping_session(out: &RunOutput, status: Status, exception: &str) {
    assert_eq!(out.status, status, "{}", out.stderr);
    assert!(out.stderr.contains(exception), "{}", out.stderr);
    assert_eq!(out.session, SessionState::Kept);
}
