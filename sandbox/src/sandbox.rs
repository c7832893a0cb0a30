//! The shared part: engine, compiled interpreter, pre-linked instance, epoch ticker.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::{Engine, InstancePre};

use crate::error::{Result, SandboxError};
use crate::host::{self, HostState};
use crate::interp::{self, ARGV0, Dirs, Interpreter};
use crate::limits::{CallLimits, Limits};
use crate::runtime::{Progress, Runtime, RuntimeConfig};
use crate::session::{Session, SessionOptions};
use crate::{RunOutput, SessionState, files};

/// How often the engine's epoch advances: the granularity of deadlines and cancels.
pub(crate) const TICK: Duration = Duration::from_millis(10);
/// The interpreter starts with 40 MiB of linear memory; less cannot even instantiate it.
const MIN_MEMORY: u64 = 48 << 20;

/// How to open a [`Sandbox`].
#[derive(Clone, Debug)]
pub struct SandboxConfig {
    pub runtime: RuntimeConfig,
    /// Default limits of every session and call.
    pub limits: Limits,
    /// Use the fuel-metered build of the interpreter (compiled separately, once), so calls may
    /// set a fuel limit. Implied by a fuel limit in `limits`.
    pub metered: bool,
    /// Interpreters served at once from the pooling allocator (fast start and teardown; each
    /// slot reserves address space, not memory). Interpreters past it use the on-demand
    /// allocator. `0`: on-demand only.
    pub pool_slots: u32,
}

impl SandboxConfig {
    /// Runtime from the environment (`OSSA_DATA_DIR`, `OSSA_PYTHON_WASM`), default limits.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            runtime: RuntimeConfig::from_env()?,
            limits: Limits::default(),
            metered: false,
            pool_slots: 16,
        })
    }
}

/// An engine with the interpreter linked for it.
pub(crate) struct Flavor {
    pub(crate) engine: Engine,
    pub(crate) pre: InstancePre<HostState>,
}

pub(crate) struct Shared {
    /// On the pooling allocator, when it has slots.
    pub(crate) pooled: Option<Flavor>,
    /// On the on-demand allocator, made when first needed (the pool is full, or there is none).
    on_demand: Mutex<Option<Arc<Flavor>>>,
    pub(crate) runtime: Runtime,
    pub(crate) limits: Limits,
    pub(crate) metered: bool,
    progress: Progress,
    ticker: Arc<AtomicBool>,
}

impl Shared {
    pub(crate) fn on_demand(&self) -> Result<Arc<Flavor>> {
        let mut slot = self.on_demand.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(flavor) = slot.as_ref() {
            return Ok(flavor.clone());
        }
        let flavor = Arc::new(flavor(
            &self.runtime,
            self.metered,
            0,
            self.progress,
            &self.ticker,
        )?);
        *slot = Some(flavor.clone());
        Ok(flavor)
    }
}

fn flavor(
    runtime: &Runtime,
    metered: bool,
    pool_slots: u32,
    progress: Progress,
    ticker: &Arc<AtomicBool>,
) -> Result<Flavor> {
    let engine = crate::engine::engine(metered, pool_slots)?;
    let module = crate::engine::module(&engine, runtime, metered, progress)?;
    let linker = host::linker(&engine)?;
    let pre = linker
        .instantiate_pre(&module)
        .map_err(|e| SandboxError::wasm("cannot link the interpreter", e))?;
    spawn_ticker(engine.clone(), ticker.clone())?;
    Ok(Flavor { engine, pre })
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.ticker.store(true, Ordering::Relaxed);
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

/// Options of [`Sandbox::run_program`].
#[derive(Clone, Debug, Default)]
pub struct ProgramOptions {
    /// `sys.argv[1:]`.
    pub args: Vec<String>,
    /// Host folder at `/mnt/data`; `None`: an empty private folder, removed afterwards.
    pub mount: Option<PathBuf>,
    /// `None`: the sandbox's defaults.
    pub limits: Option<CallLimits>,
    /// Write the guest's stdout and stderr through to this process's as they come (nothing is
    /// captured then).
    pub live: bool,
}

impl Sandbox {
    /// Opens the sandbox: finds or fetches the runtime, loads or compiles the interpreter. The
    /// first use on a machine takes minutes (see [`Progress`]); later ones tens of milliseconds.
    /// Blocking; see [`Sandbox::open_async`].
    pub fn open(config: SandboxConfig) -> Result<Self> {
        let metered = config.metered || config.limits.call.fuel.is_some();
        check_limits(&config.limits.call)?;
        let runtime = Runtime::locate(&config.runtime)?;
        crate::scratch::sweep_stale();
        let progress = config.runtime.progress;
        let ticker = Arc::new(AtomicBool::new(false));
        let pooled = match config.pool_slots {
            0 => None,
            slots => Some(flavor(&runtime, metered, slots, progress, &ticker)?),
        };
        let shared = Shared {
            pooled,
            on_demand: Mutex::new(None),
            runtime,
            limits: config.limits,
            metered,
            progress,
            ticker,
        };
        if shared.pooled.is_none() {
            shared.on_demand()?;
        }
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
        self.check_call(&limits)?;
        let shared = self.shared.clone();
        let code = code.to_owned();
        on_guest_thread(move || {
            let (dirs, _owned) = guest_dirs(mount)?;
            let started = Instant::now();
            let before = files::list(&dirs.mount);
            let mut interpreter = Interpreter::session(&shared, &dirs)?;
            let ended = interpreter.turn(&code, &limits, None);
            drop(interpreter);
            Ok(output(
                ended,
                &dirs,
                &before,
                SessionState::OneOff,
                None,
                started,
            ))
        })
    }

    /// A whole program, as `python -c CODE` or `python SCRIPT` would run it (no echo of values;
    /// the status carries the exit code). Blocking.
    pub fn run_program(&self, program: &Program, options: &ProgramOptions) -> Result<RunOutput> {
        let limits = options
            .limits
            .clone()
            .unwrap_or_else(|| self.shared.limits.call.clone());
        self.check_call(&limits)?;
        let shared = self.shared.clone();
        let program = program.clone();
        let options = options.clone();
        on_guest_thread(move || {
            let (dirs, _owned) = guest_dirs(options.mount.clone())?;
            // Unbuffered, as for a live terminal, and so output before a stop is not lost.
            let mut args = vec![ARGV0.to_owned(), "-u".to_owned()];
            match &program {
                Program::Code(code) => {
                    args.push("-c".into());
                    args.push(code.clone());
                }
                Program::Script { name, source } => {
                    let name = std::path::Path::new(name)
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_else(|| "script.py".into());
                    let host = dirs.tmp.join(&name);
                    std::fs::write(&host, source)
                        .map_err(|e| SandboxError::io("cannot write", &host, e))?;
                    args.push(format!("/tmp/{name}"));
                }
            }
            args.extend(options.args.iter().cloned());
            let started = Instant::now();
            let before = files::list(&dirs.mount);
            let mut interpreter = Interpreter::new(&shared, &dirs, &args, options.live)?;
            let ended = interpreter.run_program(&limits, None);
            drop(interpreter);
            Ok(output(
                ended,
                &dirs,
                &before,
                SessionState::OneOff,
                None,
                started,
            ))
        })
    }

    pub(crate) fn check_call(&self, limits: &CallLimits) -> Result<()> {
        check_call(&self.shared, limits)
    }
}

pub(crate) fn check_call(shared: &Shared, limits: &CallLimits) -> Result<()> {
    if limits.fuel.is_some() && !shared.metered {
        return Err(SandboxError::FuelNotMetered);
    }
    check_limits(limits)
}

fn check_limits(limits: &CallLimits) -> Result<()> {
    if limits.memory_bytes < MIN_MEMORY {
        return Err(SandboxError::InvalidLimit(format!(
            "memory must be at least {} MiB: the interpreter alone starts at 40 MiB",
            MIN_MEMORY >> 20
        )));
    }
    if limits.deadline.is_zero() {
        return Err(SandboxError::InvalidLimit(
            "the deadline must be longer than zero".into(),
        ));
    }
    Ok(())
}

/// Advances the engine's epoch every `TICK` until the sandbox is dropped.
fn spawn_ticker(engine: Engine, stop: Arc<AtomicBool>) -> Result<()> {
    std::thread::Builder::new()
        .name("ossa-sandbox-epoch".into())
        .spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(TICK);
                engine.increment_epoch();
            }
        })
        .map(|_| ())
        .map_err(|e| SandboxError::io("cannot start a thread", "ossa-sandbox-epoch", e))
}

/// Runs `f` on a new thread with a stack big enough for the guest's, and waits for it.
pub(crate) fn on_guest_thread<T: Send + 'static>(
    f: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    let handle = std::thread::Builder::new()
        .name("ossa-python".into())
        .stack_size(crate::engine::NATIVE_STACK)
        .spawn(f)
        .map_err(|e| SandboxError::io("cannot start a thread", "ossa-python", e))?;
    handle
        .join()
        .map_err(|_| SandboxError::wasm("the interpreter thread", "panicked"))?
}

/// The folders of a guest; the second value removes the temporary ones when dropped.
pub(crate) fn guest_dirs(mount: Option<PathBuf>) -> Result<(Dirs, Vec<tempfile::TempDir>)> {
    let tmp = crate::scratch::scratch_dir("tmp")?;
    let mut owned = Vec::new();
    let mount = match mount {
        Some(path) => {
            std::fs::create_dir_all(&path)
                .map_err(|e| SandboxError::io("cannot create", &path, e))?;
            path
        }
        None => {
            let dir = crate::scratch::scratch_dir("data")?;
            let path = dir.path().to_owned();
            owned.push(dir);
            path
        }
    };
    let dirs = Dirs {
        mount,
        tmp: tmp.path().to_owned(),
    };
    owned.push(tmp);
    Ok((dirs, owned))
}

pub(crate) fn output(
    ended: interp::Ended,
    dirs: &Dirs,
    before: &files::Listing,
    session: SessionState,
    started_fresh: Option<crate::ResetReason>,
    started: Instant,
) -> RunOutput {
    let after = files::list(&dirs.mount);
    let (files, files_omitted) = files::written(&dirs.mount, before, &after);
    RunOutput {
        stdout: ended.stdout,
        stderr: ended.stderr,
        value: ended.value,
        status: ended.status,
        truncated: ended.truncated,
        files,
        files_omitted,
        session,
        started_fresh,
        elapsed: started.elapsed(),
    }
}
