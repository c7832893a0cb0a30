//! Limits: what a call and a session may use, and how a limit that was hit is reported.

use std::fmt;
use std::time::Duration;

use crate::budget::MemoryCharge;

/// Limits of one call (one cell). A sandbox has defaults; each call may override them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallLimits {
    /// Wall-clock time the call may take, sleeping included (gpt-oss's tool text promises 120 s).
    pub deadline: Duration,
    /// Bytes of guest linear memory (the interpreter starts at about 40 MiB).
    pub memory_bytes: u64,
    /// Bytes kept per output stream (stdout, stderr, the echoed value); the rest is dropped and
    /// a marker says so.
    pub output_bytes: usize,
    /// Instruction fuel (roughly 4e9 per second of guest CPU); `None` for no cap. Needs a sandbox
    /// opened with `metered: true`.
    pub fuel: Option<u64>,
}

impl Default for CallLimits {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(120),
            memory_bytes: 1 << 30,
            output_bytes: 1 << 20,
            fuel: None,
        }
    }
}

/// Limits of a sandbox: the default for each call, and the bounds of a session's interpreter.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    pub call: CallLimits,
    /// An interpreter left unused this long is discarded (its memory freed); the next call starts
    /// a fresh one and says so. `None`: kept while the session lives.
    pub idle_timeout: Option<Duration>,
    /// An interpreter older than this is discarded before the next call, which starts a fresh
    /// one and says so. `None`: no bound.
    pub lifetime: Option<Duration>,
    /// Files (and folders) the code may hold open at once; opening one more fails with
    /// `OSError` EMFILE ("too many open files"). Each holds a descriptor of this process.
    pub max_open_files: usize,
    /// Bytes the session's `/tmp` and `/mnt/data` together may grow by (writes, new files,
    /// growing truncations; each file, folder or link also counts 4 KiB); deleting gives them
    /// back. Past it a write fails with `OSError` ENOSPC ("no space left on device") and
    /// nothing is written. Counted per session, across its interpreters.
    pub disk_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            call: CallLimits::default(),
            idle_timeout: Some(Duration::from_secs(30 * 60)),
            lifetime: Some(Duration::from_secs(12 * 60 * 60)),
            max_open_files: 256,
            disk_bytes: 512 << 20,
        }
    }
}

/// Why a call stopped before its code finished.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stop {
    /// The wall-clock deadline passed.
    Deadline(Duration),
    /// The code failed after the memory limit refused it more memory.
    Memory(u64),
    /// The code failed after the sandbox's memory budget (this many bytes, shared by all its
    /// interpreters) refused it more memory: other sessions hold the rest.
    MemoryBudget(u64),
    /// The fuel ran out.
    Fuel(u64),
    /// The interpreter's stack overflowed (recursion deeper than the wasm stack).
    Stack,
    /// The caller cancelled the call.
    Cancelled,
    /// The interpreter trapped for another reason (a bug in the guest); the message is wasmtime's.
    Crashed(String),
}

impl Stop {
    /// A short name of the limit: `timeout`, `memory limit`, `fuel limit`, `stack limit`,
    /// `cancelled`, `crash`.
    pub fn name(&self) -> &'static str {
        match self {
            Stop::Deadline(_) => "timeout",
            Stop::Memory(_) => "memory limit",
            Stop::MemoryBudget(_) => "memory budget",
            Stop::Fuel(_) => "fuel limit",
            Stop::Stack => "stack limit",
            Stop::Cancelled => "cancelled",
            Stop::Crashed(_) => "crash",
        }
    }
}

impl fmt::Display for Stop {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stop::Deadline(limit) => write!(
                f,
                "timeout: the code ran longer than the {} limit",
                human_duration(*limit)
            ),
            Stop::Memory(limit) => write!(
                f,
                "memory limit: the code needed more than the {} MiB limit",
                limit / (1 << 20)
            ),
            Stop::MemoryBudget(budget) => write!(
                f,
                "memory budget: the code needed more memory while the sandbox's {} MiB for all \
                 interpreters was in use",
                budget / (1 << 20)
            ),
            Stop::Fuel(limit) => write!(
                f,
                "fuel limit: the code used all of its {limit} units of fuel"
            ),
            Stop::Stack => write!(
                f,
                "stack limit: the interpreter's stack overflowed (recursion too deep)"
            ),
            Stop::Cancelled => write!(f, "cancelled: the call was cancelled"),
            Stop::Crashed(message) => write!(f, "crash: the interpreter stopped: {message}"),
        }
    }
}

fn human_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 1.0 && secs.fract() == 0.0 {
        format!("{secs:.0} s")
    } else if secs >= 1.0 {
        format!("{secs:.1} s")
    } else {
        format!("{} ms", d.as_millis())
    }
}

/// Which bound refused memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Denied {
    /// The call's own memory limit.
    Limit,
    /// The sandbox's budget for all interpreters.
    Budget,
}

/// Records memory growth and refuses it past the call's limit or the sandbox's budget,
/// remembering that it did so: a refused `memory.grow` is not a trap (CPython raises MemoryError
/// and may carry on), so without this the host could not name the limit as the cause.
pub(crate) struct MemoryLimiter {
    pub(crate) limit: u64,
    pub(crate) denied: Option<Denied>,
    pub(crate) peak: u64,
    /// What this interpreter holds of the sandbox's budget; `None`: no budget (tests).
    charge: Option<MemoryCharge>,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            denied: None,
            peak: 0,
            charge: None,
        }
    }

    /// A limiter that also charges each growth to the sandbox's budget.
    pub(crate) fn with_budget(limit: u64, charge: MemoryCharge) -> Self {
        Self {
            charge: Some(charge),
            ..Self::new(limit)
        }
    }

    /// The budget for all interpreters, for messages (0 without one).
    pub(crate) fn budget(&self) -> u64 {
        self.charge.as_ref().map_or(0, MemoryCharge::budget)
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired > self.limit || maximum.is_some_and(|max| desired > max as u64) {
            self.denied = Some(Denied::Limit);
            return Ok(false);
        }
        // Called for each of the store's memories (CPython's, and the GC heap): the budget is
        // charged the growth.
        if let Some(charge) = &mut self.charge
            && !charge.grow(desired.saturating_sub(current as u64))
        {
            self.denied = Some(Denied::Budget);
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; CPython's grow only as modules load. A million
        // elements is far past any real need and bounds the host's allocation.
        Ok(desired <= 1 << 20)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn the_limiter_refuses_past_the_limit_and_remembers() {
        let mut limiter = MemoryLimiter::new(64 << 20);
        assert!(limiter.memory_growing(0, 40 << 20, None).unwrap());
        assert_eq!(limiter.denied, None);
        assert!(!limiter.memory_growing(40 << 20, 65 << 20, None).unwrap());
        assert_eq!(limiter.denied, Some(Denied::Limit));
        assert_eq!(limiter.peak, 40 << 20);
    }

    #[test]
    fn the_limiter_charges_the_budget_and_names_it_when_it_refuses() {
        let budget =
            crate::budget::Budget::new(2, 100 << 20, Duration::ZERO, None).expect("a valid budget");
        let (_permit, charge) = budget.admit(None).expect("room");
        let mut limiter = MemoryLimiter::with_budget(1 << 30, charge);
        assert!(limiter.memory_growing(0, 40 << 20, None).unwrap());
        assert!(limiter.memory_growing(40 << 20, 90 << 20, None).unwrap());
        assert!(!limiter.memory_growing(90 << 20, 110 << 20, None).unwrap());
        assert_eq!(limiter.denied, Some(Denied::Budget));
        assert_eq!(limiter.budget(), 100 << 20);
        assert_eq!(limiter.peak, 90 << 20);
    }

    #[test]
    fn stops_name_their_limit() {
        assert_eq!(
            Stop::Deadline(Duration::from_secs(120)).to_string(),
            "timeout: the code ran longer than the 120 s limit"
        );
        assert_eq!(
            Stop::Memory(512 << 20).to_string(),
            "memory limit: the code needed more than the 512 MiB limit"
        );
        assert_eq!(
            Stop::Deadline(Duration::from_millis(1500)).name(),
            "timeout"
        );
        assert!(
            Stop::Deadline(Duration::from_millis(1500))
                .to_string()
                .contains("1.5 s")
        );
        assert!(
            Stop::Deadline(Duration::from_millis(300))
                .to_string()
                .contains("300 ms")
        );
    }
}
