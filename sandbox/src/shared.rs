//! What every interpreter of a sandbox shares (the engines, the compiled interpreter, the limits,
//! the epoch ticker), and the plumbing that sessions and one-off runs both use: checking limits,
//! the guest thread, the guest's folders.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Engine, InstancePre};

use crate::budget::Budget;
use crate::error::{Result, SandboxError};
use crate::host::HostState;
use crate::limits::{CallLimits, Limits};
use crate::linker;
use crate::quota::DiskUsage;
use crate::runtime::{Runtime, RuntimeConfig};

/// How often the engine's epoch advances: the granularity of deadlines and cancels.
const TICK: Duration = Duration::from_millis(10);
/// The interpreter starts with 40 MiB of linear memory; less cannot even instantiate it.
const MIN_MEMORY: u64 = 48 << 20;

/// An engine with the interpreter linked for it.
pub(crate) struct Flavor {
    pub(crate) engine: Engine,
    pub(crate) pre: InstancePre<HostState>,
}

/// The sandbox-wide bounds on interpreters (see [`crate::SandboxConfig`]).
pub(crate) struct Capacity {
    pub(crate) max_interpreters: u32,
    pub(crate) memory_budget: u64,
    pub(crate) wait: Duration,
    pub(crate) evict_idle_after: Option<Duration>,
    pub(crate) pooling: bool,
}

pub(crate) struct Shared {
    pub(crate) flavor: Flavor,
    pub(crate) budget: Arc<Budget>,
    pub(crate) runtime: Runtime,
    pub(crate) limits: Limits,
    pub(crate) metered: bool,
    ticker: Arc<AtomicBool>,
}

impl Shared {
    /// Finds the runtime, loads (or compiles) the interpreter and starts the epoch ticker.
    pub(crate) fn open(
        runtime: &RuntimeConfig,
        limits: Limits,
        metered: bool,
        capacity: &Capacity,
    ) -> Result<Self> {
        let metered = metered || limits.call.fuel.is_some();
        check_limits(&limits.call)?;
        let budget = Budget::new(
            capacity.max_interpreters,
            capacity.memory_budget,
            capacity.wait,
            capacity.evict_idle_after,
        )?;
        let progress = runtime.progress;
        let runtime = Runtime::locate(runtime)?;
        crate::scratch::sweep_stale();
        let ticker = Arc::new(AtomicBool::new(false));
        // The pool has exactly as many slots as the budget has permits.
        let pool_slots = if capacity.pooling {
            capacity.max_interpreters
        } else {
            0
        };
        let engine = crate::engine::engine(metered, pool_slots)?;
        let module = crate::engine::module(&engine, &runtime, metered, progress)?;
        let pre = linker::linker(&engine)?
            .instantiate_pre(&module)
            .map_err(|e| SandboxError::wasm("cannot link the interpreter", e))?;
        spawn_ticker(engine.clone(), ticker.clone())?;
        Ok(Shared {
            flavor: Flavor { engine, pre },
            budget,
            runtime,
            limits,
            metered,
            ticker,
        })
    }

    /// Refuses limits a call cannot run with.
    pub(crate) fn check_call(&self, limits: &CallLimits) -> Result<()> {
        if limits.fuel.is_some() && !self.metered {
            return Err(SandboxError::FuelNotMetered);
        }
        check_limits(limits)
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.ticker.store(true, Ordering::Relaxed);
    }
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

/// The host folders a guest sees.
pub(crate) struct Dirs {
    /// `/mnt/data`, read-write.
    pub(crate) mount: PathBuf,
    /// `/tmp` (also `HOME`), read-write, private to the interpreter's owner.
    pub(crate) tmp: PathBuf,
    /// What the guest wrote into both, against its quota.
    pub(crate) disk: Arc<DiskUsage>,
}

/// The folders of a guest, which may grow by `disk_bytes`; the second value removes the
/// temporary ones when dropped.
pub(crate) fn guest_dirs(
    mount: Option<PathBuf>,
    disk_bytes: u64,
) -> Result<(Dirs, Vec<tempfile::TempDir>)> {
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
        disk: DiskUsage::new(disk_bytes),
    };
    owned.push(tmp);
    Ok((dirs, owned))
}
