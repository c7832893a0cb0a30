//! Limits: what a call and a session may use, and how a limit that was hit is reported.

use std::fmt;
use std::time::Duration;

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
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            call: CallLimits::default(),
            idle_timeout: Some(Duration::from_secs(30 * 60)),
            lifetime: Some(Duration::from_secs(12 * 60 * 60)),
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

/// Records memory growth and refuses it past the limit, remembering that it did so: a refused
/// `memory.grow` is not a trap (CPython raises MemoryError and may carry on), so without this the
/// host could not name the memory limit as the cause.
pub(crate) struct MemoryLimiter {
    pub(crate) limit: u64,
    pub(crate) denied: bool,
    pub(crate) peak: u64,
}

impl MemoryLimiter {
    pub(crate) fn new(limit: u64) -> Self {
        Self {
            limit,
            denied: false,
            peak: 0,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired > self.limit || maximum.is_some_and(|max| desired > max as u64) {
            self.denied = true;
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
        assert!(!limiter.denied);
        assert!(!limiter.memory_growing(40 << 20, 65 << 20, None).unwrap());
        assert!(limiter.denied);
        assert_eq!(limiter.peak, 40 << 20);
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
