//! One engine, many requests: generations take turns first come, first served. A request
//! waiting for its turn can be cancelled (its client went away) without holding up the others.
//!
//! The queue is per generation call, not per request: while one request runs a tool, another's
//! generation can use the engine. The engine's prefix cache is keyed by tokens, so interleaved
//! requests only cost recomputation, never each other's correctness.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use ossa_agent::{Backend, BackendError, Finish, GenerationRequest, GenerationStats};

/// How often a waiting generation checks whether it was cancelled.
const CANCEL_POLL: Duration = Duration::from_millis(50);

#[derive(Debug, Default)]
struct Tickets {
    next: u64,
    serving: u64,
    /// Tickets given up while waiting; skipped when their turn comes.
    abandoned: BTreeSet<u64>,
}

impl Tickets {
    fn advance(&mut self) {
        self.serving += 1;
        while self.abandoned.remove(&self.serving) {
            self.serving += 1;
        }
    }
}

/// The queue's state, for `/health`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QueueStatus {
    /// Generations running (0 or 1).
    pub running: u64,
    /// Generations waiting for the engine.
    pub waiting: u64,
}

/// A backend whose generations run one at a time, in arrival order.
pub struct FairBackend {
    inner: Arc<dyn Backend>,
    tickets: Mutex<Tickets>,
    turn: Condvar,
}

impl FairBackend {
    pub fn new(inner: Arc<dyn Backend>) -> Self {
        Self {
            inner,
            tickets: Mutex::new(Tickets::default()),
            turn: Condvar::new(),
        }
    }

    pub fn status(&self) -> QueueStatus {
        let tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        let outstanding = tickets.next - tickets.serving - tickets.abandoned.len() as u64;
        QueueStatus {
            running: outstanding.min(1),
            waiting: outstanding.saturating_sub(1),
        }
    }

    /// Waits for this ticket's turn; `false` when cancelled first (the ticket is given up).
    fn wait_turn(&self, ticket: u64, request: &GenerationRequest<'_>) -> bool {
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        let mut reported = None;
        while tickets.serving != ticket {
            if request.cancel.is_cancelled() {
                tickets.abandoned.insert(ticket);
                return false;
            }
            let ahead = ticket - tickets.serving;
            if reported != Some(ahead) {
                tracing::info!(ticket, ahead, "generation queued");
                reported = Some(ahead);
            }
            tickets = self
                .turn
                .wait_timeout(tickets, CANCEL_POLL)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
        true
    }

    fn release(&self) {
        let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
        tickets.advance();
        drop(tickets);
        self.turn.notify_all();
    }
}

/// Hands the engine on when the generation ends, however it ends.
struct Turn<'a>(&'a FairBackend);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Backend for FairBackend {
    fn name(&self) -> String {
        self.inner.name()
    }

    fn context_length(&self) -> usize {
        self.inner.context_length()
    }

    fn samples_locally(&self) -> bool {
        self.inner.samples_locally()
    }

    fn generate(
        &self,
        request: &GenerationRequest<'_>,
        on_token: &mut dyn FnMut(u32),
    ) -> Result<GenerationStats, BackendError> {
        let ticket = {
            let mut tickets = self.tickets.lock().unwrap_or_else(PoisonError::into_inner);
            let ticket = tickets.next;
            tickets.next += 1;
            ticket
        };
        if !self.wait_turn(ticket, request) {
            return Ok(GenerationStats {
                finish: Finish::Cancelled,
                prompt_tokens: request.prompt.len(),
                reused_tokens: 0,
                generated_tokens: 0,
                prefill: Duration::ZERO,
                decode: Duration::ZERO,
            });
        }
        let _turn = Turn(self);
        self.inner.generate(request, on_token)
    }
}

/// Requests let in at once (generating, waiting for the engine, or running a tool): past
/// `max`, a request is refused at once (429) rather than queued without bound.
#[derive(Debug)]
pub struct RequestSlots {
    max: usize,
    taken: Arc<AtomicUsize>,
}

/// One request's place; given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl RequestSlots {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            taken: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// A place, or `None` when all are taken.
    pub fn try_take(&self) -> Option<Slot> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |taken| {
                (taken < self.max).then_some(taken + 1)
            })
            .ok()
            .map(|_| Slot(Arc::clone(&self.taken)))
    }

    pub fn taken(&self) -> usize {
        self.taken.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_run_out_and_come_back() {
        let slots = RequestSlots::new(2);
        let a = slots.try_take().expect("first");
        let _b = slots.try_take().expect("second");
        assert!(slots.try_take().is_none());
        drop(a);
        assert_eq!(slots.taken(), 1);
        assert!(slots.try_take().is_some());
    }
}
