//! The public face of the crate: opening a [`Sandbox`], sessions, one-off runs and programs.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::budget::Usage;
use crate::error::{Result, SandboxError};
use crate::interp::{ARGV0, Interpreter, Start};
use crate::limits::{CallLimits, Limits};
use crate::runtime::{Runtime, RuntimeConfig};
use crate::session::{Session, SessionOptions};
use crate::shared::{Capacity, Shared, guest_dirs, on_guest_thread};
use crate::{RunOutput, SessionState, files};

/// How to open a [`Sandbox`].
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub runtime: RuntimeConfig,
    /// Default limits of every session and call.
    pub limits: Limits,
    /// Use the fuel-metered build of the interpreter (compiled separately, once), so calls may
    /// set a fuel limit. Implied by a fuel limit in `limits`.
    pub metered: bool,
    /// Interpreters alive at once, all sessions and one-off runs together (default 16). A
    /// session holds one from its first call until it is reset, idle past its timeout or
    /// closed; a one-off run or program holds one while it runs.
    pub max_interpreters: u32,
    /// Bytes of linear memory all interpreters together may hold (default 8 GiB); each also
    /// stays within its own `memory_bytes`. An interpreter starts with 40 MiB; code that needs
    /// more while the budget is in use gets MemoryError ([`crate::Stop::MemoryBudget`]).
    pub memory_budget: u64,
    /// How long starting an interpreter waits for one to end (or for memory to be returned)
    /// when the sandbox is at capacity (default 10 s); then it fails with
    /// [`SandboxError::AtCapacity`].
    pub capacity_wait: Duration,
    /// When the sandbox is at capacity, a session's interpreter unused this long may be ended
    /// to make room, the longest unused first (default 60 s); that session's next call starts a
    /// fresh interpreter and says so ([`crate::ResetReason::Evicted`]). `None`: never; idle
    /// interpreters then hold their room until their idle timeout.
    pub evict_idle_after: Option<Duration>,
    /// Serve interpreters from wasmtime's pooling allocator (default): faster start and
    /// teardown, with address space (not memory) reserved up front, about 4 GiB per
    /// interpreter. `false`: the on-demand allocator, for hosts that limit address space.
    pub pooling: bool,
}

impl SandboxConfig {
    pub const DEFAULT_MAX_INTERPRETERS: u32 = 16;
    pub const DEFAULT_MEMORY_BUDGET: u64 = 8 << 30;
    pub const DEFAULT_CAPACITY_WAIT: Duration = Duration::from_secs(10);
    pub const DEFAULT_EVICT_IDLE_AFTER: Duration = Duration::from_secs(60);

    /// Runtime from the environment (`OSSA_DATA_DIR`, `OSSA_PYTHON_WASM`), default limits.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            runtime: RuntimeConfig::from_env()?,
            limits: Limits::default(),
            metered: false,
            max_interpreters: Self::DEFAULT_MAX_INTERPRETERS,
            memory_budget: Self::DEFAULT_MEMORY_BUDGET,
            capacity_wait: Self::DEFAULT_CAPACITY_WAIT,
            evict_idle_after: Some(Self::DEFAULT_EVICT_IDLE_AFTER),
            pooling: true,
        })
    }
}

/// The Python sandbox of a process: the engine and the compiled interpreter. Clones share them.
#[derive(Clone)]
pub struct Sandbox {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("wasm", &self.shared.runtime.wasm)
            .field("metered", &self.shared.metered)
            .field("limits", &self.shared.limits)
            .field("budget", &self.shared.budget)
            .finish()
    }
}

/// A program for [`Sandbox::run_program`], run as `python` runs one on a command line.
#[derive(Clone, Debug)]
pub enum Program {
    /// `python -c CODE`.
    Code(String),
    /// `python NAME` with the script's text; the guest sees it at `/tmp/NAME`.
    Script { name: String, source: Vec<u8> },
}

/// Where `-c CODE` waits for the launcher, in the program's `/tmp`.
const CODE_FILE: &str = ".ossa-program.py";

/// Runs a program as `python -c CODE` or `python SCRIPT` would, but in `/mnt/data`, as sessions
/// work: WASI has no working directory to hand over (the guest's libc starts at `/`), and the
/// reactor's `run` cannot follow a `turn` that would change it first. The launcher's own frame
/// is left out of tracebacks, so they read as CPython's.
const LAUNCHER: &str = r#"
def _ossa_main(path, filename, argv0, remove):
    import os, sys
    os.chdir("/mnt/data")
    with open(path, "rb") as f:
        source = f.read()
    if remove:
        os.remove(path)
    main = sys.modules["__main__"].__dict__
    del main["_ossa_main"]
    if argv0 is not None:
        sys.argv[0] = argv0
        main["__file__"] = argv0
    try:
        exec(compile(source, filename, "exec"), main)
    except Exception as e:
        import traceback
        traceback.print_exception(type(e), e, e.__traceback__.tb_next)
        sys.exit(1)
"#;

/// `text` as a Python string literal.
fn py_str(text: &str) -> String {
    // JSON's string syntax is a subset of Python's.
    serde_json::Value::String(text.to_owned()).to_string()
}

/// Options of [`Sandbox::run_program`].
#[derive(Clone, Debug, Default)]
pub struct ProgramOptions {
    /// `sys.argv[1:]`.
    pub args: Vec<String>,
    /// Host folder at `/mnt/data`; `None`: an empty private folder, removed afterwards.
    pub mount: Option<PathBuf>,
    /// `None`: the sandbox's defaults.
    pub limits: Option<CallLimits>,
    /// Write the guest's stdout and stderr through to this process's as they come. Nothing is
    /// captured then, except the last 4 KiB of stderr (in [`RunOutput::stderr`]), which name
    /// the error a failed program ended with.
    pub live: bool,
}

impl Sandbox {
    /// Opens the sandbox: finds or fetches the runtime, loads or compiles the interpreter. The
    /// first use on a machine takes minutes (see [`Progress`]); later ones tens of milliseconds.
    /// Blocking; see [`Sandbox::open_async`].
    pub fn open(config: SandboxConfig) -> Result<Self> {
        let capacity = Capacity {
            max_interpreters: config.max_interpreters,
            memory_budget: config.memory_budget,
            wait: config.capacity_wait,
            evict_idle_after: config.evict_idle_after,
            pooling: config.pooling,
        };
        let shared = Shared::open(&config.runtime, config.limits, config.metered, &capacity)?;
        Ok(Self {
            shared: Arc::new(shared),
        })
    }

    /// [`Sandbox::open`] on a blocking thread.
    pub async fn open_async(config: SandboxConfig) -> Result<Self> {
        tokio::task::spawn_blocking(move || Self::open(config))
            .await
            .map_err(|e| SandboxError::wasm("the opening thread failed", e))?
    }

    pub fn limits(&self) -> &Limits {
        &self.shared.limits
    }

    pub fn runtime(&self) -> &Runtime {
        &self.shared.runtime
    }

    /// What the interpreters hold of the sandbox's budget now (for a server's status or logs).
    pub fn usage(&self) -> Usage {
        self.shared.budget.usage()
    }

    /// Whether calls may set a fuel limit.
    pub fn is_metered(&self) -> bool {
        self.shared.metered
    }

    /// A new session (an interpreter is started on its first call).
    pub fn session(&self, options: SessionOptions) -> Result<Session> {
        Session::open(self.shared.clone(), options)
    }

    /// One cell in a fresh interpreter that is discarded afterwards (stateless calls). Blocking.
    pub fn run_fresh(
        &self,
        code: &str,
        mount: Option<PathBuf>,
        limits: Option<&CallLimits>,
    ) -> Result<RunOutput> {
        let limits = limits.unwrap_or(&self.shared.limits.call).clone();
        self.shared.check_call(&limits)?;
        let shared = self.shared.clone();
        let code = code.to_owned();
        on_guest_thread(move || {
            let session_limits = &shared.limits;
            let (dirs, _owned) = guest_dirs(mount, session_limits.disk_bytes)?;
            let started = Instant::now();
            let before = files::list(&dirs.mount);
            let mut interpreter =
                Interpreter::session(&shared, &dirs, session_limits.max_open_files, None)?;
            let ended = interpreter.turn(&code, &limits, None, None);
            drop(interpreter);
            Ok(ended.into_output(&dirs, &before, SessionState::OneOff, None, started))
        })
    }

    /// A whole program, as `python -c CODE` or `python SCRIPT` would run it (no echo of values;
    /// the status carries the exit code). Blocking.
    pub fn run_program(&self, program: &Program, options: &ProgramOptions) -> Result<RunOutput> {
        let limits = options
            .limits
            .clone()
            .unwrap_or_else(|| self.shared.limits.call.clone());
        self.shared.check_call(&limits)?;
        let shared = self.shared.clone();
        let program = program.clone();
        let options = options.clone();
        on_guest_thread(move || {
            let (dirs, _owned) = guest_dirs(options.mount.clone(), shared.limits.disk_bytes)?;
            // Unbuffered, as for a live terminal, and so output before a stop is not lost. The
            // program itself is run by a launcher that first enters /mnt/data (see LAUNCHER).
            let (path, filename, argv0) = match &program {
                Program::Code(code) => {
                    let host = dirs.tmp.join(CODE_FILE);
                    std::fs::write(&host, code)
                        .map_err(|e| SandboxError::io("cannot write", &host, e))?;
                    (format!("/tmp/{CODE_FILE}"), "<string>".to_owned(), None)
                }
                Program::Script { name, source } => {
                    let name = std::path::Path::new(name)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "script.py".into());
                    let host = dirs.tmp.join(&name);
                    std::fs::write(&host, source)
                        .map_err(|e| SandboxError::io("cannot write", &host, e))?;
                    let guest = format!("/tmp/{name}");
                    (guest.clone(), guest.clone(), Some(guest))
                }
            };
            let launch = format!(
                "{LAUNCHER}_ossa_main({}, {}, {}, {})\n",
                py_str(&path),
                py_str(&filename),
                argv0.as_deref().map_or_else(|| "None".to_owned(), py_str),
                if argv0.is_none() { "True" } else { "False" },
            );
            let mut args = vec![ARGV0.to_owned(), "-u".to_owned(), "-c".to_owned(), launch];
            args.extend(options.args.iter().cloned());
            let started = Instant::now();
            let before = files::list(&dirs.mount);
            let start = Start {
                dirs: &dirs,
                args: &args,
                live: options.live,
                max_open_files: shared.limits.max_open_files,
                cancel: None,
            };
            let mut interpreter = Interpreter::new(&shared, start)?;
            let ended = interpreter.run_program(&limits, None);
            drop(interpreter);
            Ok(ended.into_output(&dirs, &before, SessionState::OneOff, None, started))
        })
    }
}
