//! The sandbox-wide budget: how many interpreters may be alive at once and how much linear
//! memory they may hold together. `ossa serve` keeps an interpreter per conversation; without a
//! bound, enough conversations exhaust the host's memory (or, past the pooling allocator, its
//! address space) for everyone.
//!
//! An interpreter takes a [`Permit`] before its store exists and a [`MemoryCharge`] for its
//! initial memory; the memory limiter then charges each growth to the budget, and a growth the
//! budget cannot cover fails as any refused `memory.grow` does (the guest raises MemoryError and
//! carries on). When no permit is free, starting asks the interpreter idle the longest (past a
//! minimum age) to end, so idle conversations make room for active ones; its session starts a
//! fresh one on its next call and says so. Failing that, starting waits a bounded time for room
//! (a burst of calls, a one-off run ending) and then fails with [`SandboxError::AtCapacity`],
//! which the Python tool shows the model as a tool error.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::error::{Result, SandboxError};

/// Linear memory an interpreter holds as soon as it exists (the snapshot's initial 640 pages);
/// reserved when it starts so that starting cannot fail halfway for want of budget.
pub(crate) const INITIAL_MEMORY: u64 = 40 << 20;

/// How often a waiting start looks at its cancel flag.
const WAIT_SLICE: Duration = Duration::from_millis(50);

pub(crate) struct Budget {
    max_interpreters: u32,
    memory: u64,
    wait: Duration,
    /// Idle this long, an interpreter may be ended to make room; `None`: never.
    evict_after: Option<Duration>,
    state: Mutex<State>,
    /// Signalled whenever an interpreter ends or memory is returned.
    freed: Condvar,
}

#[derive(Default)]
struct State {
    live: u32,
    /// Linear memory of all live interpreters (what their limiters charged).
    committed: u64,
    /// Interpreters alive but not running code.
    idle: Vec<Idle>,
    /// Owners asked to end their interpreter who have not answered yet.
    evicting: Vec<u64>,
    /// Starts waiting for room now.
    waiting: usize,
}

/// What a sandbox's interpreters hold of its budget now ([`crate::Sandbox::usage`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Usage {
    /// Interpreters alive (sessions' kept ones and one-off runs).
    pub interpreters: u32,
    pub max_interpreters: u32,
    /// Of those, kept by sessions between calls (ended first when room is needed).
    pub idle_interpreters: u32,
    /// Bytes of linear memory they hold.
    pub memory: u64,
    pub memory_budget: u64,
}

/// An interpreter alive but not running code, which a start may ask its owner to end.
struct Idle {
    owner: u64,
    since: Instant,
    evict: Box<dyn FnOnce() + Send>,
}

impl Budget {
    pub(crate) fn new(
        max_interpreters: u32,
        memory: u64,
        wait: Duration,
        evict_after: Option<Duration>,
    ) -> Result<Arc<Self>> {
        if max_interpreters == 0 {
            return Err(SandboxError::InvalidLimit(
                "max_interpreters must be at least 1".into(),
            ));
        }
        if memory < INITIAL_MEMORY {
            return Err(SandboxError::InvalidLimit(format!(
                "the memory budget must be at least {} MiB: one interpreter starts at that",
                INITIAL_MEMORY >> 20
            )));
        }
        Ok(Arc::new(Self {
            max_interpreters,
            memory,
            wait,
            evict_after,
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is two counters updated under the lock; a panic elsewhere leaves them whole.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A permit for one more interpreter and the charge for its initial memory: at once when
    /// both are free, else when another interpreter ends (an idle one is asked to), waiting at
    /// most the configured time (less if `cancel` is set meanwhile).
    pub(crate) fn admit(
        self: &Arc<Self>,
        cancel: Option<&CancellationToken>,
    ) -> Result<(Permit, MemoryCharge)> {
        let started = Instant::now();
        let mut state = self.lock();
        state.waiting += 1;
        let admitted = loop {
            let short = if state.live >= self.max_interpreters {
                Some(Short::Interpreters)
            } else if state.committed + INITIAL_MEMORY > self.memory {
                Some(Short::Memory)
            } else {
                None
            };
            let Some(short) = short else {
                state.live += 1;
                state.committed += INITIAL_MEMORY;
                let permit = Permit {
                    budget: self.clone(),
                };
                let charge = MemoryCharge {
                    budget: self.clone(),
                    bytes: INITIAL_MEMORY,
                    used: 0,
                };
                break Ok((permit, charge));
            };
            // One eviction in flight per waiting start: each ends one interpreter.
            if state.evicting.len() < state.waiting
                && let Some(evict) = self.take_evictable(&mut state)
            {
                drop(state);
                evict();
                state = self.lock();
                continue;
            }
            let waited = started.elapsed();
            let cancelled = cancel.is_some_and(CancellationToken::is_cancelled);
            if waited >= self.wait || cancelled {
                break Err(self.at_capacity(short, waited));
            }
            let slice = (self.wait - waited).min(WAIT_SLICE);
            state = self
                .freed
                .wait_timeout(state, slice)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        };
        state.waiting -= 1;
        admitted
    }

    /// The eviction of the interpreter idle the longest, if one is idle long enough; its owner
    /// is then counted as evicting until it answers ([`Budget::busy`] or [`Budget::kept`]).
    fn take_evictable(&self, state: &mut State) -> Option<Box<dyn FnOnce() + Send>> {
        let after = self.evict_after?;
        let oldest = state
            .idle
            .iter()
            .enumerate()
            .filter(|(_, idle)| idle.since.elapsed() >= after)
            .min_by_key(|(_, idle)| idle.since)
            .map(|(at, _)| at)?;
        let idle = state.idle.swap_remove(oldest);
        state.evicting.push(idle.owner);
        tracing::debug!(
            owner = idle.owner,
            idle_s = idle.since.elapsed().as_secs(),
            "asking an idle interpreter to make room"
        );
        Some(idle.evict)
    }

    /// `owner` holds an interpreter unused since `since`; when room is short, `evict` may be
    /// called (once, from another thread) to ask it to end that interpreter.
    pub(crate) fn idle(&self, owner: u64, since: Instant, evict: Box<dyn FnOnce() + Send>) {
        let mut state = self.lock();
        state.idle.retain(|idle| idle.owner != owner);
        state.idle.push(Idle {
            owner,
            since,
            evict,
        });
    }

    /// `owner` holds no idle interpreter now (it runs code, or ended its interpreter); an
    /// eviction asked of it is answered.
    pub(crate) fn busy(&self, owner: u64) {
        let mut state = self.lock();
        state.idle.retain(|idle| idle.owner != owner);
        state.evicting.retain(|o| *o != owner);
        drop(state);
        self.freed.notify_all();
    }

    /// `owner` kept its interpreter after an eviction asked of it (it was used since): the
    /// eviction is answered, its newer idle entry stays.
    pub(crate) fn kept(&self, owner: u64) {
        let mut state = self.lock();
        state.evicting.retain(|o| *o != owner);
        drop(state);
        self.freed.notify_all();
    }

    pub(crate) fn usage(&self) -> Usage {
        let state = self.lock();
        Usage {
            interpreters: state.live,
            max_interpreters: self.max_interpreters,
            idle_interpreters: state.idle.len() as u32,
            memory: state.committed,
            memory_budget: self.memory,
        }
    }

    fn at_capacity(&self, short: Short, waited: Duration) -> SandboxError {
        let what = match short {
            Short::Interpreters => format!(
                "all {} Python interpreters it may run at once are in use",
                self.max_interpreters
            ),
            Short::Memory => format!(
                "its {} MiB memory budget for all Python interpreters is in use",
                self.memory >> 20
            ),
        };
        SandboxError::AtCapacity { what, waited }
    }

    /// Takes `bytes` more from the memory budget if it has them.
    fn try_charge(&self, bytes: u64) -> bool {
        let mut state = self.lock();
        match state.committed.checked_add(bytes) {
            Some(total) if total <= self.memory => {
                state.committed = total;
                true
            }
            _ => false,
        }
    }

    fn refund(&self, bytes: u64) {
        let mut state = self.lock();
        state.committed = state.committed.saturating_sub(bytes);
        drop(state);
        self.freed.notify_all();
    }

    pub(crate) fn memory(&self) -> u64 {
        self.memory
    }
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("Budget")
            .field("max_interpreters", &self.max_interpreters)
            .field("memory", &self.memory)
            .field("live", &state.live)
            .field("committed", &state.committed)
            .field("idle", &state.idle.len())
            .finish()
    }
}

#[derive(Clone, Copy)]
enum Short {
    Interpreters,
    Memory,
}

/// One live interpreter. Held by the interpreter until its store is gone (so a pool slot is
/// free again before the next start is let in).
pub(crate) struct Permit {
    budget: Arc<Budget>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut state = self.budget.lock();
        state.live = state.live.saturating_sub(1);
        drop(state);
        self.budget.freed.notify_all();
    }
}

/// The linear memory one interpreter holds against the budget (its memory and, once it throws a
/// wasm exception, its GC heap); returned when dropped (with the store that owns it).
pub(crate) struct MemoryCharge {
    budget: Arc<Budget>,
    /// Taken from the budget: at least `used` (the initial memory is taken at admission).
    bytes: u64,
    /// The sizes of the interpreter's memories together.
    used: u64,
}

impl MemoryCharge {
    /// Takes `more` bytes for a growing memory, if the budget allows.
    pub(crate) fn grow(&mut self, more: u64) -> bool {
        let Some(used) = self.used.checked_add(more) else {
            return false;
        };
        if used > self.bytes {
            if !self.budget.try_charge(used - self.bytes) {
                return false;
            }
            self.bytes = used;
        }
        self.used = used;
        true
    }

    /// The whole budget, for messages.
    pub(crate) fn budget(&self) -> u64 {
        self.budget.memory()
    }
}

impl Drop for MemoryCharge {
    fn drop(&mut self) {
        self.budget.refund(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[test]
    fn interpreters_past_the_cap_wait_then_fail_and_a_freed_one_lets_the_next_in() {
        let budget = Budget::new(2, 1 << 30, Duration::from_millis(100), None).unwrap();
        let first = budget.admit(None).unwrap();
        let _second = budget.admit(None).unwrap();
        let started = Instant::now();
        let error = budget.admit(None).err().expect("a third is refused");
        assert!(started.elapsed() >= Duration::from_millis(100));
        let text = error.to_string();
        assert!(text.contains("all 2 Python interpreters"), "{text}");
        assert_eq!(
            (budget.usage().interpreters, budget.usage().memory),
            (2, 2 * INITIAL_MEMORY)
        );

        // A waiter gets in as soon as one ends.
        let waiting = {
            let budget = Budget::new(1, 1 << 30, Duration::from_secs(30), None).unwrap();
            let held = budget.admit(None).unwrap();
            let b = budget.clone();
            let waiter = std::thread::spawn(move || b.admit(None).map(|_| ()));
            std::thread::sleep(Duration::from_millis(50));
            drop(held);
            waiter.join().unwrap()
        };
        assert!(waiting.is_ok());
        drop(first);
        assert_eq!(
            (budget.usage().interpreters, budget.usage().memory),
            (1, INITIAL_MEMORY)
        );
    }

    #[test]
    fn memory_is_charged_on_growth_and_returned_on_drop() {
        let budget = Budget::new(8, 100 << 20, Duration::ZERO, None).unwrap();
        let (_p1, mut c1) = budget.admit(None).unwrap();
        let (_p2, mut c2) = budget.admit(None).unwrap();
        assert!(c1.grow(30 << 20), "within the initial charge: free");
        assert_eq!(budget.usage().memory, 80 << 20);
        // A second memory (the GC heap) counts on top of the first.
        assert!(c1.grow(20 << 20));
        assert_eq!(budget.usage().memory, 90 << 20);
        assert!(!c2.grow(60 << 20), "past the budget");
        assert!(c2.grow(50 << 20));
        // Nothing left for a third interpreter's initial memory.
        let error = budget.admit(None).err().expect("refused");
        assert!(
            error.to_string().contains("100 MiB memory budget"),
            "{error}"
        );
        drop(c1);
        assert_eq!(budget.usage().memory, 50 << 20);
        assert!(budget.admit(None).is_ok());
    }

    #[test]
    fn a_cancelled_start_stops_waiting() {
        let budget = Budget::new(1, 1 << 30, Duration::from_secs(60), None).unwrap();
        let _held = budget.admit(None).unwrap();
        let cancel = CancellationToken::new();
        cancel.cancel();
        let started = Instant::now();
        assert!(budget.admit(Some(&cancel)).is_err());
        assert!(started.elapsed() < Duration::from_secs(30));
    }

    #[test]
    fn the_interpreter_idle_the_longest_is_asked_to_make_room_once() {
        let budget =
            Budget::new(2, 1 << 30, Duration::from_secs(30), Some(Duration::ZERO)).unwrap();
        let (held_a, asked_a) = (
            budget.admit(None).unwrap(),
            Arc::new(AtomicBool::new(false)),
        );
        let (held_b, asked_b) = (
            budget.admit(None).unwrap(),
            Arc::new(AtomicBool::new(false)),
        );
        let since = Instant::now();
        let ask = |flag: &Arc<AtomicBool>| -> Box<dyn FnOnce() + Send> {
            let flag = flag.clone();
            Box::new(move || flag.store(true, Ordering::Relaxed))
        };
        budget.idle(2, since, ask(&asked_b));
        budget.idle(1, since - Duration::from_secs(5), ask(&asked_a));
        assert_eq!(budget.usage().idle_interpreters, 2);
        // The oldest (owner 1) is asked; while that is unanswered no one else is (the start,
        // cancelled, gives up at once).
        let cancelled = CancellationToken::new();
        cancelled.cancel();
        assert!(budget.admit(Some(&cancelled)).is_err());
        assert!(asked_a.load(Ordering::Relaxed));
        assert!(!asked_b.load(Ordering::Relaxed));
        // Owner 1 kept its interpreter (it was used meanwhile): the next start asks owner 2.
        budget.kept(1);
        let b = budget.clone();
        let waiter = std::thread::spawn(move || b.admit(None).map(|_| ()));
        while !asked_b.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(held_b);
        budget.busy(2);
        assert!(waiter.join().unwrap().is_ok());
        drop(held_a);
    }

    #[test]
    fn interpreters_idle_less_than_the_minimum_are_left_alone() {
        let budget = Budget::new(
            1,
            1 << 30,
            Duration::from_millis(100),
            Some(Duration::from_secs(3600)),
        )
        .unwrap();
        let _held = budget.admit(None).unwrap();
        let asked = Arc::new(AtomicBool::new(false));
        let flag = asked.clone();
        budget.idle(
            1,
            Instant::now(),
            Box::new(move || flag.store(true, Ordering::Relaxed)),
        );
        assert!(budget.admit(None).is_err());
        assert!(!asked.load(Ordering::Relaxed));
    }

    #[test]
    fn impossible_budgets_are_refused() {
        assert!(Budget::new(0, 1 << 30, Duration::ZERO, None).is_err());
        assert!(Budget::new(4, 1 << 20, Duration::ZERO, None).is_err());
    }
}
