//! A session: one interpreter kept across calls on its own thread, so its calls are serialized,
//! sessions run in parallel, and guest code never blocks an async runtime.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::{Result, SandboxError};
use crate::host::InterruptRequest;
use crate::interp::{Checkpoint, Ended, Interpreter};
use crate::limits::{CallLimits, Limits, Stop};
use crate::shared::{self, Dirs, Shared};
use crate::{ResetReason, RunOutput, SessionState, Status, files};

/// Time Python's own shutdown gets when an interpreter is discarded in good order.
const SHUTDOWN_BUDGET: Duration = Duration::from_secs(2);

/// Options of [`crate::Sandbox::session`].
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    /// Host folder mounted at `/mnt/data` (created if missing, kept afterwards). `None`: a fresh
    /// private folder that is removed when the session ends.
    pub mount: Option<PathBuf>,
    /// `None`: the sandbox's limits.
    pub limits: Option<Limits>,
}

enum Reply<T> {
    Async(tokio::sync::oneshot::Sender<T>),
    Blocking(mpsc::SyncSender<T>),
}

impl<T> Reply<T> {
    fn send(self, value: T) {
        // The caller may have gone (a dropped future): nothing to tell then.
        match self {
            Reply::Async(tx) => {
                let _ = tx.send(value);
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(value);
            }
        }
    }
}

enum Job {
    Run {
        code: String,
        limits: CallLimits,
        cancel: CancellationToken,
        reply: Reply<Result<RunOutput>>,
    },
    Reset {
        reply: Reply<()>,
    },
    /// The sandbox needs room: end the interpreter if it is still unused since `since`.
    Evict {
        since: Instant,
    },
}

/// Names the sessions to the sandbox's budget.
static NEXT_OWNER: AtomicU64 = AtomicU64::new(1);

/// One interpreter kept across calls (a notebook kernel). Calls are serialized in the order they
/// are made; dropping the session ends its interpreter (Python's shutdown runs, flushing open
/// files) and removes its private folders.
pub struct Session {
    /// `None` once closing. The worker holds a weak reference (to ask itself to make room), so
    /// dropping this one closes the channel.
    jobs: Option<Arc<mpsc::Sender<Job>>>,
    worker: Option<std::thread::JoinHandle<()>>,
    running: Arc<Mutex<Option<CancellationToken>>>,
    interrupt: Arc<InterruptRequest>,
    undo_on_cancel: Arc<AtomicBool>,
    shared: Arc<Shared>,
    limits: Limits,
    mount: PathBuf,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("mount", &self.mount)
            .field("limits", &self.limits)
            .finish()
    }
}

impl Session {
    pub(crate) fn open(shared: Arc<Shared>, options: SessionOptions) -> Result<Self> {
        let limits = options.limits.unwrap_or_else(|| shared.limits.clone());
        shared.check_call(&limits.call)?;
        let (dirs, owned) = shared::guest_dirs(options.mount, limits.disk_bytes)?;
        let mount = dirs.mount.clone();
        let (jobs, rx) = mpsc::channel();
        let jobs = Arc::new(jobs);
        let running = Arc::new(Mutex::new(None));
        let undo_on_cancel = Arc::new(AtomicBool::new(false));
        let interrupt = Arc::new(InterruptRequest::default());
        let state = Worker {
            interrupt: interrupt.clone(),
            undo_on_cancel: undo_on_cancel.clone(),
            checkpoint: Checkpoint::default(),
            owner: NEXT_OWNER.fetch_add(1, Ordering::Relaxed),
            jobs: Arc::downgrade(&jobs),
            shared: shared.clone(),
            dirs,
            _owned: owned,
            limits: limits.clone(),
            running: running.clone(),
            interpreter: None,
            fresh_because: None,
            last_used: Instant::now(),
        };
        let worker = std::thread::Builder::new()
            .name("ossa-python-session".into())
            .stack_size(crate::engine::NATIVE_STACK)
            .spawn(move || state.serve(rx))
            .map_err(|e| SandboxError::io("cannot start a thread", "ossa-python-session", e))?;
        Ok(Self {
            jobs: Some(jobs),
            worker: Some(worker),
            running,
            interrupt,
            undo_on_cancel,
            shared,
            limits,
            mount,
        })
    }

    /// Runs `code` as the next cell with the session's limits.
    pub async fn run(&self, code: &str) -> Result<RunOutput> {
        self.run_with(code, &self.limits.call).await
    }

    /// Runs `code` as the next cell with `limits` for this call only. Dropping the future cancels
    /// the call (the interpreter is then reset, as after any stop).
    pub async fn run_with(&self, code: &str, limits: &CallLimits) -> Result<RunOutput> {
        self.shared.check_call(limits)?;
        let cancel = CancellationToken::new();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Job::Run {
            code: code.to_owned(),
            limits: limits.clone(),
            cancel: cancel.clone(),
            reply: Reply::Async(tx),
        })?;
        // Cancels the call if the caller stops waiting (a dropped future).
        let guard = cancel.drop_guard();
        let result = rx.await.map_err(|_| SandboxError::SessionClosed)?;
        guard.disarm();
        result
    }

    /// Runs `code` as the next cell, blocking this thread (not for use inside an async task).
    pub fn run_blocking(&self, code: &str, limits: &CallLimits) -> Result<RunOutput> {
        self.shared.check_call(limits)?;
        let cancel = CancellationToken::new();
        let (tx, rx) = mpsc::sync_channel(1);
        self.submit(Job::Run {
            code: code.to_owned(),
            limits: limits.clone(),
            cancel,
            reply: Reply::Blocking(tx),
        })?;
        rx.recv().map_err(|_| SandboxError::SessionClosed)?
    }

    /// Stops the call running now, if any (it ends with [`Stop::Cancelled`] and the interpreter
    /// is reset). Calls queued behind it still run.
    pub fn cancel(&self) {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(cancel) = running.as_ref() {
            cancel.cancel();
        }
    }

    /// Raises `KeyboardInterrupt` in the call running now, as Ctrl-C does in Python: the code
    /// may catch it, `finally` blocks run, and the interpreter is kept with what the call did
    /// until then (an uncaught one ends the call with [`Status::Error`] and its traceback in
    /// stderr). A sleeping call is woken. The guest raises it at its next check between Python
    /// instructions; code that does not get there within `grace` (a long call into C, such as
    /// a big numpy operation) is stopped as by [`Session::cancel`]. False when no call is
    /// running (nothing is asked then).
    pub fn interrupt(&self, grace: Duration) -> bool {
        let running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.is_some() {
            self.interrupt.ask(grace);
        }
        running.is_some()
    }

    /// From now on a cancelled call ([`Session::cancel`], a dropped future) puts the interpreter
    /// back as it was before the call ([`SessionState::Restored`]) instead of discarding it, so
    /// what earlier calls defined survives, as a REPL user expects after Ctrl-C. It costs a copy
    /// of the interpreter's memory before every call (kept in a buffer as large; about 25 ms
    /// with numpy and pandas imported, `benches/sandbox.rs`).
    /// [`Session::interrupt`] is the gentler way: it keeps what the call did.
    pub fn undo_on_cancel(&self, on: bool) {
        self.undo_on_cancel.store(on, Ordering::Relaxed);
    }

    /// Discards the interpreter; the next call starts a fresh one. Files in `/mnt/data` stay.
    pub async fn reset(&self) -> Result<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.submit(Job::Reset {
            reply: Reply::Async(tx),
        })?;
        rx.await.map_err(|_| SandboxError::SessionClosed)
    }

    /// The host folder the guest sees at `/mnt/data`.
    pub fn mount(&self) -> &Path {
        &self.mount
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    fn submit(&self, job: Job) -> Result<()> {
        let jobs = self.jobs.as_ref().ok_or(SandboxError::SessionClosed)?;
        jobs.send(job).map_err(|_| SandboxError::SessionClosed)
    }

    /// Ends the session and waits until it is gone: a running call is cancelled, Python's
    /// shutdown runs (flushing files left open), the private folders are removed. Dropping a
    /// session does the same without waiting (a process that exits right after may then leave
    /// the folders behind; the next sandbox to open sweeps them).
    pub async fn close(self) {
        let mut this = self;
        if let Some(worker) = this.begin_close() {
            let _ = tokio::task::spawn_blocking(move || worker.join()).await;
        }
    }

    /// [`Session::close`] for plain threads.
    pub fn close_blocking(self) {
        let mut this = self;
        if let Some(worker) = this.begin_close() {
            let _ = worker.join();
        }
    }

    fn begin_close(&mut self) -> Option<std::thread::JoinHandle<()>> {
        self.cancel();
        self.jobs = None;
        self.worker.take()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The worker ends when the channel closes; a call still running is stopped first.
        let _ = self.begin_close();
    }
}

struct Worker {
    /// This session in the sandbox's budget.
    owner: u64,
    undo_on_cancel: Arc<AtomicBool>,
    /// The interpreter before the call running now, when calls can be undone.
    checkpoint: Checkpoint,
    jobs: Weak<mpsc::Sender<Job>>,
    shared: Arc<Shared>,
    dirs: Dirs,
    _owned: Vec<tempfile::TempDir>,
    limits: Limits,
    running: Arc<Mutex<Option<CancellationToken>>>,
    interrupt: Arc<InterruptRequest>,
    interpreter: Option<Interpreter>,
    /// Why the next call will run in a fresh interpreter.
    fresh_because: Option<ResetReason>,
    last_used: Instant,
}

impl Worker {
    fn serve(mut self, jobs: mpsc::Receiver<Job>) {
        loop {
            let job = match self.idle_wait() {
                Some(wait) => match jobs.recv_timeout(wait) {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => {
                        self.expire_idle();
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => break,
                },
            };
            match job {
                Job::Run {
                    code,
                    limits,
                    cancel,
                    reply,
                } => {
                    self.shared.budget.busy(self.owner);
                    let result = self.run(&code, &limits, cancel);
                    self.last_used = Instant::now();
                    self.offer_room();
                    reply.send(result);
                }
                Job::Reset { reply } => {
                    self.discard(ResetReason::Requested);
                    reply.send(());
                }
                Job::Evict { since } => {
                    if self.interpreter.is_some() && self.last_used == since {
                        self.discard(ResetReason::Evicted(Duration::from_secs(
                            since.elapsed().as_secs(),
                        )));
                    } else {
                        // Used since it was picked: it stays, and is idle again from now.
                        self.shared.budget.kept(self.owner);
                    }
                }
            }
        }
        if let Some(interpreter) = self.interpreter.take() {
            interpreter.shutdown(SHUTDOWN_BUDGET);
        }
        self.shared.budget.busy(self.owner);
    }

    /// Tells the budget that the interpreter kept after a call is idle: when the sandbox is at
    /// capacity, another session may ask (through this session's own queue) for its room.
    fn offer_room(&self) {
        if self.interpreter.is_none() {
            return;
        }
        let jobs = self.jobs.clone();
        let since = self.last_used;
        let evict = Box::new(move || {
            if let Some(jobs) = jobs.upgrade() {
                let _ = jobs.send(Job::Evict { since });
            }
        });
        self.shared.budget.idle(self.owner, since, evict);
    }

    /// How long to wait for the next job before the idle timeout discards the interpreter.
    fn idle_wait(&self) -> Option<Duration> {
        let idle = self.limits.idle_timeout?;
        self.interpreter.as_ref()?;
        Some(idle.saturating_sub(self.last_used.elapsed()))
    }

    fn expire_idle(&mut self) {
        if let Some(idle) = self.limits.idle_timeout
            && self.last_used.elapsed() >= idle
        {
            self.discard(ResetReason::IdleTimeout(idle));
        }
    }

    fn discard(&mut self, reason: ResetReason) {
        if let Some(interpreter) = self.interpreter.take() {
            tracing::debug!(%reason, "discarding the session's interpreter");
            interpreter.shutdown(SHUTDOWN_BUDGET);
            self.fresh_because = Some(reason);
        }
        self.shared.budget.busy(self.owner);
    }

    fn run(
        &mut self,
        code: &str,
        limits: &CallLimits,
        cancel: CancellationToken,
    ) -> Result<RunOutput> {
        let started = Instant::now();
        if let (Some(lifetime), Some(interpreter)) = (self.limits.lifetime, &self.interpreter)
            && interpreter.created.elapsed() >= lifetime
        {
            self.discard(ResetReason::Lifetime(lifetime));
        }
        let before = files::list(&self.dirs.mount);
        if cancel.is_cancelled() {
            // Cancelled while queued: nothing ran.
            let ended = Ended {
                stdout: String::new(),
                stderr: String::new(),
                value: None,
                truncated: Vec::new(),
                status: Status::Stopped(Stop::Cancelled),
                spent: false,
            };
            return Ok(ended.into_output(&self.dirs, &before, SessionState::Kept, None, started));
        }
        let started_fresh = match &self.interpreter {
            Some(_) => None,
            None => {
                self.interpreter = Some(Interpreter::session(
                    &self.shared,
                    &self.dirs,
                    self.limits.max_open_files,
                    Some(&cancel),
                )?);
                self.fresh_because.take()
            }
        };
        let Some(interpreter) = self.interpreter.as_mut() else {
            return Err(SandboxError::SessionClosed);
        };
        let undoable = self.undo_on_cancel.load(Ordering::Relaxed);
        if undoable {
            interpreter.checkpoint(&mut self.checkpoint);
        } else {
            // Its memory is not needed any more.
            self.checkpoint = Checkpoint::default();
        }
        {
            let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
            // An interrupt asked for an earlier call is not this call's.
            self.interrupt.clear();
            *running = Some(cancel.clone());
        }
        let ended = interpreter.turn(code, limits, Some(cancel), Some(self.interrupt.clone()));
        *self.running.lock().unwrap_or_else(|p| p.into_inner()) = None;
        if undoable && ended.status == Status::Stopped(Stop::Cancelled) && self.restore() {
            return Ok(ended.into_output(
                &self.dirs,
                &before,
                SessionState::Restored,
                started_fresh,
                started,
            ));
        }
        let state = if ended.spent {
            let reason = match &ended.status {
                Status::Exit(code) => ResetReason::Exited(*code),
                Status::Stopped(stop) => ResetReason::Stopped(stop.clone()),
                Status::Ok | Status::Error => {
                    ResetReason::Stopped(Stop::Crashed("the interpreter ended".into()))
                }
            };
            // A trapped interpreter must not run again, not even Python's shutdown.
            self.interpreter = None;
            self.fresh_because = Some(reason.clone());
            SessionState::Reset(reason)
        } else {
            SessionState::Kept
        };
        Ok(ended.into_output(&self.dirs, &before, state, started_fresh, started))
    }

    /// Replaces the interpreter with one put back at the checkpoint; false (the interpreter is
    /// gone) when that fails.
    fn restore(&mut self) -> bool {
        // The stopped interpreter gives its room in the budget back first.
        self.interpreter = None;
        match Interpreter::restore(
            &self.shared,
            &self.dirs,
            self.limits.max_open_files,
            &self.checkpoint,
        ) {
            Ok(interpreter) => {
                self.interpreter = Some(interpreter);
                true
            }
            Err(error) => {
                tracing::warn!(%error, "cannot put the interpreter back after a cancel");
                false
            }
        }
    }
}
