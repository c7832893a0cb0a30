//! What the guest imports: WASI preview 1 from wasmtime-wasi, with `poll_oneoff` shadowed so a
//! sleeping guest still meets its deadline, the file calls shadowed to count open files and disk
//! use (`quota.rs`), and the `host.call` door the interpreter requires.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use wasmtime::{AsContextMut, Caller, Extern, Memory, TypedFunc};
use wasmtime_wasi::HostMonotonicClock;
use wasmtime_wasi::p1::WasiP1Ctx;

use crate::limits::MemoryLimiter;
use crate::quota::FileGuard;

/// Prefix of a door request carrying the `repr` of a cell's final expression (sent by the
/// display hook ossa installs in each interpreter). Anything else through the door is answered
/// "no host" (the guest raises ConnectionRefusedError).
pub(crate) const DISPLAY_PREFIX: &[u8] = b"\0ossa.display\0";

/// The store's data.
pub(crate) struct HostState {
    pub(crate) wasi: WasiP1Ctx,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) files: FileGuard,
    pub(crate) clock: CallClock,
    pub(crate) display: Display,
    pub(crate) monotonic_origin: Instant,
    /// CPython's `PyErr_SetInterruptEx`, when the module exports it (`patch.rs`).
    pub(crate) interrupt_export: Option<TypedFunc<i32, i32>>,
}

/// The running call's deadline, cancel flag and interrupt request, checked by the epoch callback
/// every tick and by the `poll_oneoff` shadow while the guest sleeps; records why it stopped the
/// guest.
#[derive(Default)]
pub(crate) struct CallClock {
    pub(crate) deadline: Option<Instant>,
    pub(crate) cancel: Option<CancellationToken>,
    pub(crate) interrupt: Option<Arc<InterruptRequest>>,
    /// When `KeyboardInterrupt` was raised in the guest, and how long it has to end the call.
    pub(crate) interrupted: Option<(Instant, Duration)>,
    pub(crate) stopped: Option<StopCause>,
}

/// A request from another thread that the running call raise `KeyboardInterrupt`, with the time
/// the guest then has to end the call before it is stopped as by a cancel.
#[derive(Debug, Default)]
pub(crate) struct InterruptRequest {
    asked: AtomicBool,
    grace_ms: AtomicU64,
}

impl InterruptRequest {
    pub(crate) fn ask(&self, grace: Duration) {
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        self.grace_ms.store(grace_ms, Ordering::Relaxed);
        self.asked.store(true, Ordering::Release);
    }

    pub(crate) fn clear(&self) {
        self.asked.store(false, Ordering::Relaxed);
    }

    fn asked(&self) -> Option<Duration> {
        self.asked
            .load(Ordering::Acquire)
            .then(|| Duration::from_millis(self.grace_ms.load(Ordering::Relaxed)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum StopCause {
    Deadline,
    Cancelled,
}

impl CallClock {
    /// Whether the guest must stop now; records the cause the first time.
    pub(crate) fn must_stop(&mut self) -> bool {
        if self.stopped.is_some() {
            return true;
        }
        if self
            .cancel
            .as_ref()
            .is_some_and(CancellationToken::is_cancelled)
        {
            self.stopped = Some(StopCause::Cancelled);
        } else if self.deadline.is_some_and(|d| Instant::now() >= d) {
            self.stopped = Some(StopCause::Deadline);
        } else if self
            .interrupted
            .is_some_and(|(at, grace)| at.elapsed() >= grace)
        {
            // The guest did not end the call at the interrupt (C code that never checks).
            self.stopped = Some(StopCause::Cancelled);
        }
        self.stopped.is_some()
    }

    /// An interrupt asked for and not yet raised in this call: its grace, noted as raised now.
    fn take_interrupt(&mut self) -> Option<Duration> {
        if self.interrupted.is_some() {
            return None;
        }
        let grace = self.interrupt.as_ref()?.asked()?;
        self.interrupted = Some((Instant::now(), grace));
        Some(grace)
    }
}

/// CPython's number for SIGINT (wasi-libc's, as POSIX's).
const SIGINT: i32 = 2;
/// Epoch ticks `PyErr_SetInterruptEx` gets (it only sets a few flags).
const RAISE_TICKS: u64 = 1000;

/// Raises `KeyboardInterrupt` in the guest if the call was asked to and it has not been yet:
/// calls CPython's `PyErr_SetInterruptEx(SIGINT)` (the export `patch.rs` adds) on the guest's
/// thread, re-entrantly, as a native SIGINT handler does; it only sets flags (it is meant to
/// run inside a signal handler), and the eval loop raises the exception at its next check.
/// Without the export, or when the call fails, the call is stopped as by a cancel instead.
pub(crate) fn raise_interrupt(mut ctx: impl AsContextMut<Data = HostState>) {
    let mut ctx = ctx.as_context_mut();
    if ctx.data_mut().clock.take_interrupt().is_none() {
        return;
    }
    let raised = match ctx.data().interrupt_export.clone() {
        Some(export) => {
            // No epoch check may stop this short call: from the epoch callback the deadline has
            // passed, and wasmtime has taken the callback out of the store while it runs, so a
            // check inside would trap. The next tick's deadline is set again after it.
            ctx.set_epoch_deadline(RAISE_TICKS);
            let result = export.call(&mut ctx, SIGINT);
            ctx.set_epoch_deadline(1);
            match result {
                Ok(0) => true,
                Ok(code) => {
                    tracing::warn!(code, "the interpreter refused the interrupt");
                    false
                }
                Err(error) => {
                    tracing::warn!(error = %format!("{error:#}"), "raising the interrupt failed");
                    false
                }
            }
        }
        None => false,
    };
    if !raised {
        ctx.data_mut().clock.stopped = Some(StopCause::Cancelled);
    }
}

/// The echoed value of the current call, as the display hook sent it.
#[derive(Default)]
pub(crate) struct Display {
    pub(crate) cap: usize,
    pub(crate) value: Option<Vec<u8>>,
    pub(crate) dropped: u64,
}

/// The guest's monotonic clock, with an origin the host knows, so `poll_oneoff` can turn an
/// absolute monotonic time into a wait.
pub(crate) struct MonotonicClock {
    pub(crate) origin: Instant,
}

impl HostMonotonicClock for MonotonicClock {
    fn resolution(&self) -> u64 {
        1
    }

    fn now(&self) -> u64 {
        u64::try_from(self.origin.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}

// preview1 errno values.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_FAULT: i32 = 21;
const ERRNO_INVAL: i32 = 28;
const ERRNO_NOMEM: i32 = 48;

const SUBSCRIPTION_SIZE: u64 = 48;
const EVENT_SIZE: u64 = 32;
const MAX_SUBSCRIPTIONS: u32 = 4096;
const TAG_CLOCK: u8 = 0;
const TAG_FD_READ: u8 = 1;
const TAG_FD_WRITE: u8 = 2;
const CLOCK_REALTIME: u32 = 0;
const CLOCK_MONOTONIC: u32 = 1;
const SUBCLOCK_ABSTIME: u16 = 1;
/// How long the shadow sleeps between checks of the deadline and the cancel flag.
const SLICE: Duration = Duration::from_millis(10);

pub(crate) fn guest_memory(caller: &mut Caller<'_, HostState>) -> Option<Memory> {
    match caller.get_export("memory") {
        Some(Extern::Memory(memory)) => Some(memory),
        _ => None,
    }
}

fn fits(memory_size: usize, ptr: u32, len: u64) -> bool {
    u64::from(ptr)
        .checked_add(len)
        .is_some_and(|end| end <= memory_size as u64)
}

/// `poll_oneoff(subscriptions, events, count, nevents_out) -> errno`, as wasmtime-wasi answers it
/// for this guest (no sockets, stdio only), except that a wait is cut in slices and ends with a
/// trap when the call's deadline passes or it is cancelled. wasmtime-wasi's own version blocks
/// in the host, where epoch interruption cannot reach, so `time.sleep(600)` would outlive any
/// deadline. Its arguments are guest addresses and a count: `u32`, the bits of wasm's `i32`s.
pub(crate) fn poll_oneoff(
    mut caller: Caller<'_, HostState>,
    subscriptions: u32,
    events: u32,
    count: u32,
    nevents_out: u32,
) -> wasmtime::Result<i32> {
    let Some(memory) = guest_memory(&mut caller) else {
        return Ok(ERRNO_INVAL);
    };
    if count == 0 {
        return Ok(ERRNO_INVAL);
    }
    if count > MAX_SUBSCRIPTIONS {
        return Ok(ERRNO_NOMEM);
    }
    let size = memory.data_size(&caller);
    let n = u64::from(count);
    if !fits(size, subscriptions, n * SUBSCRIPTION_SIZE)
        || !fits(size, events, n * EVENT_SIZE)
        || !fits(size, nevents_out, 4)
    {
        return Ok(ERRNO_FAULT);
    }
    let start = subscriptions as usize;
    let raw = memory.data(&caller)[start..start + (n * SUBSCRIPTION_SIZE) as usize].to_vec();
    let origin = caller.data().monotonic_origin;

    let mut ready = Vec::new();
    let mut clocks = Vec::new();
    for sub in raw.chunks_exact(SUBSCRIPTION_SIZE as usize) {
        let userdata = u64::from_le_bytes(sub[0..8].try_into().unwrap_or_default());
        match sub[8] {
            TAG_CLOCK => {
                let id = u32::from_le_bytes(sub[16..20].try_into().unwrap_or_default());
                let timeout = u64::from_le_bytes(sub[24..32].try_into().unwrap_or_default());
                let flags = u16::from_le_bytes(sub[40..42].try_into().unwrap_or_default());
                let now = match id {
                    CLOCK_REALTIME => SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map(|d| d.as_nanos() as u64)
                        .unwrap_or(0),
                    CLOCK_MONOTONIC => origin.elapsed().as_nanos() as u64,
                    // CPU-time clocks cannot be waited on, as in wasmtime-wasi.
                    _ => return Ok(ERRNO_INVAL),
                };
                let wait_ns = if flags & SUBCLOCK_ABSTIME == 0 {
                    timeout
                } else {
                    timeout.saturating_sub(now)
                };
                clocks.push((wait_ns, userdata));
            }
            tag @ (TAG_FD_READ | TAG_FD_WRITE) => ready.push((userdata, tag)),
            _ => return Ok(ERRNO_INVAL),
        }
    }

    let mut out = Vec::new();
    if !ready.is_empty() {
        // Descriptors (stdio, files) are always ready, as in wasmtime-wasi.
        for (userdata, tag) in ready {
            out.push(event(userdata, tag));
        }
    } else {
        let wait_ns = clocks.iter().map(|(ns, _)| *ns).min().unwrap_or(0);
        let until = Instant::now() + Duration::from_nanos(wait_ns);
        loop {
            if caller.data_mut().clock.must_stop() {
                return Err(wasmtime::format_err!(
                    "the call was stopped while the guest slept"
                ));
            }
            if caller.data().clock.interrupted.is_none() {
                raise_interrupt(&mut caller);
                if caller.data().clock.interrupted.is_some() {
                    if caller.data_mut().clock.must_stop() {
                        return Err(wasmtime::format_err!(
                            "the call was stopped while the guest slept"
                        ));
                    }
                    // The sleep ends early, as a signal ends it in a native CPython; the guest
                    // raises KeyboardInterrupt when it returns.
                    break;
                }
            }
            let now = Instant::now();
            if now >= until {
                break;
            }
            std::thread::sleep((until - now).min(SLICE));
        }
        for (ns, userdata) in clocks {
            if ns <= wait_ns {
                out.push(event(userdata, TAG_CLOCK));
            }
        }
    }
    let bytes: Vec<u8> = out.concat();
    memory.write(&mut caller, events as usize, &bytes)?;
    memory.write(
        &mut caller,
        nevents_out as usize,
        &(out.len() as u32).to_le_bytes(),
    )?;
    Ok(ERRNO_SUCCESS)
}

fn event(userdata: u64, tag: u8) -> [u8; EVENT_SIZE as usize] {
    let mut e = [0u8; EVENT_SIZE as usize];
    e[0..8].copy_from_slice(&userdata.to_le_bytes());
    // error (u16 at 8) is success; nbytes (u64 at 16) and flags (u16 at 24) are zero.
    e[10] = tag;
    e
}

// Door answers, as the guest's `_host` module reads them.
const DOOR_OK: i32 = 0;
const DOOR_NO_HOST: i32 = -1;
const DOOR_FAULT: i32 = -2;

/// `host.call(request, request_len, response_ptr_out, response_len_out) -> 0 | -1 | -2`.
/// ossa binds no tools to the guest; the door only carries the display hook's value.
pub(crate) fn door(
    mut caller: Caller<'_, HostState>,
    ptr: u32,
    len: u32,
    out_ptr_ptr: u32,
    out_len_ptr: u32,
) -> wasmtime::Result<i32> {
    let Some(memory) = guest_memory(&mut caller) else {
        return Ok(DOOR_FAULT);
    };
    let size = memory.data_size(&caller);
    if !fits(size, ptr, u64::from(len))
        || !fits(size, out_ptr_ptr, 4)
        || !fits(size, out_len_ptr, 4)
    {
        return Ok(DOOR_FAULT);
    }
    let start = ptr as usize;
    let data = memory.data(&caller);
    if !data[start..start + len as usize].starts_with(DISPLAY_PREFIX) {
        return Ok(DOOR_NO_HOST);
    }
    let body = start + DISPLAY_PREFIX.len();
    let body_len = len as usize - DISPLAY_PREFIX.len();
    let cap = caller.data().display.cap;
    let kept = body_len.min(cap);
    let value = memory.data(&caller)[body..body + kept].to_vec();
    let display = &mut caller.data_mut().display;
    display.value = Some(value);
    display.dropped = (body_len - kept) as u64;
    // An empty answer: the response pointer and length are both zero.
    memory.write(&mut caller, out_ptr_ptr as usize, &0u32.to_le_bytes())?;
    memory.write(&mut caller, out_len_ptr as usize, &0u32.to_le_bytes())?;
    Ok(DOOR_OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clock_stops_at_the_deadline_and_on_cancel() {
        let mut clock = CallClock {
            deadline: Some(Instant::now() + Duration::from_secs(3600)),
            ..Default::default()
        };
        assert!(!clock.must_stop());
        clock.deadline = Some(Instant::now());
        assert!(clock.must_stop());
        assert_eq!(clock.stopped, Some(StopCause::Deadline));

        let cancel = CancellationToken::new();
        let mut clock = CallClock {
            cancel: Some(cancel.clone()),
            ..Default::default()
        };
        assert!(!clock.must_stop());
        cancel.cancel();
        assert!(clock.must_stop());
        assert_eq!(clock.stopped, Some(StopCause::Cancelled));
    }

    #[test]
    fn an_interrupt_is_raised_once_and_stops_the_call_after_its_grace() {
        let request = Arc::new(InterruptRequest::default());
        let mut clock = CallClock {
            interrupt: Some(request.clone()),
            ..Default::default()
        };
        assert_eq!(clock.take_interrupt(), None, "nothing asked yet");
        request.ask(Duration::from_secs(3600));
        assert_eq!(clock.take_interrupt(), Some(Duration::from_secs(3600)));
        assert_eq!(clock.take_interrupt(), None, "raised once per call");
        assert!(!clock.must_stop(), "the guest has its grace");

        request.ask(Duration::ZERO);
        let mut clock = CallClock {
            interrupt: Some(request.clone()),
            ..Default::default()
        };
        assert_eq!(clock.take_interrupt(), Some(Duration::ZERO));
        assert!(clock.must_stop());
        assert_eq!(clock.stopped, Some(StopCause::Cancelled));

        request.clear();
        let mut clock = CallClock {
            interrupt: Some(request),
            ..Default::default()
        };
        assert_eq!(clock.take_interrupt(), None, "a cleared request is gone");
    }

    #[test]
    fn events_carry_userdata_and_type() {
        let e = event(0x0102_0304_0506_0708, TAG_FD_WRITE);
        assert_eq!(&e[0..8], &0x0102_0304_0506_0708u64.to_le_bytes());
        assert_eq!(e[10], TAG_FD_WRITE);
        assert!(e[11..].iter().all(|b| *b == 0));
    }
}
