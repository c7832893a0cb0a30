//! Per-stage timing of forward calls, from the `tracing` spans the model opens around each
//! stage (`attn.qkv`, `moe.router`, `lm_head`...).
//!
//! The spans cost nothing measurable when no subscriber wants them (a level check against
//! `tracing`'s cached maximum). [`Model::set_profiling`](crate::Model::set_profiling) makes
//! a private subscriber whose [`SpanTimes`] layer sums each span's *own* busy time (entered
//! time minus that of the spans inside it) per name; forward calls run with it as their
//! thread's default, so the stages' times add up to the forward call's. (That subscriber
//! drops events: the forward path logs none.)

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tracing::span::{Attributes, Id};
use tracing::{Dispatch, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::registry::{LookupSpan, Registry};

/// Wall time per op, summed over forward calls, when profiling is on
/// ([`Model::set_profiling`](crate::Model::set_profiling)). Each op's time excludes the ops
/// inside it, so the times add up to the forward time.
#[derive(Debug, Clone, Default)]
pub struct OpProfile {
    pub forward_calls: usize,
    pub tokens: usize,
    /// Ops in the order they first ran.
    pub ops: Vec<(&'static str, Duration)>,
}

impl OpProfile {
    fn add(&mut self, name: &'static str, d: Duration) {
        match self.ops.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += d,
            None => self.ops.push((name, d)),
        }
    }
}

/// A [`Layer`] that sums every span's own busy time per span name into an [`OpProfile`].
#[derive(Clone, Default)]
pub struct SpanTimes {
    profile: Arc<Mutex<OpProfile>>,
}

/// Per-span state kept in the registry's extensions.
struct Busy {
    entered: Option<Instant>,
    /// Time entered, summed over entries.
    total: Duration,
    /// Of `total`, the time spent in the spans inside this one.
    children: Duration,
}

impl SpanTimes {
    /// What was collected since the last call (forward calls and tokens are counted by the
    /// caller with [`SpanTimes::count_call`]).
    pub fn take(&self) -> OpProfile {
        std::mem::take(&mut *self.lock())
    }

    /// Counts one forward call over `tokens` tokens.
    pub fn count_call(&self, tokens: usize) {
        let mut profile = self.lock();
        profile.forward_calls += 1;
        profile.tokens += tokens;
    }

    /// A dispatcher with this layer alone (on a fresh registry).
    pub fn dispatch(&self) -> Dispatch {
        Dispatch::new(Registry::default().with(self.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, OpProfile> {
        self.profile.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl<S> Layer<S> for SpanTimes
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, _attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Busy {
                entered: None,
                total: Duration::ZERO,
                children: Duration::ZERO,
            });
        }
    }

    fn on_enter(&self, id: &Id, ctx: Context<'_, S>) {
        if let Some(span) = ctx.span(id)
            && let Some(busy) = span.extensions_mut().get_mut::<Busy>()
        {
            busy.entered = Some(Instant::now());
        }
    }

    fn on_exit(&self, id: &Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(id) else { return };
        let Some(elapsed) = span.extensions_mut().get_mut::<Busy>().and_then(|busy| {
            let elapsed = busy.entered.take()?.elapsed();
            busy.total += elapsed;
            Some(elapsed)
        }) else {
            return;
        };
        if let Some(parent) = span.parent()
            && let Some(busy) = parent.extensions_mut().get_mut::<Busy>()
        {
            busy.children += elapsed;
        }
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let Some(span) = ctx.span(&id) else { return };
        if let Some(busy) = span.extensions_mut().remove::<Busy>() {
            self.lock()
                .add(span.name(), busy.total.saturating_sub(busy.children));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;
    use tracing::trace_span;

    /// Spans of one name add into one entry, in first-run order, and each counts only its
    /// own time: the sum never exceeds the wall time around them, which it would if the
    /// outer span's time included the inner one's sleep.
    #[test]
    fn own_busy_time_per_name() {
        let times = SpanTimes::default();
        let started = Instant::now();
        tracing::dispatcher::with_default(&times.dispatch(), || {
            let _outer = trace_span!("outer").entered();
            for _ in 0..2 {
                let _inner = trace_span!("inner").entered();
                std::thread::sleep(Duration::from_millis(5));
            }
            trace_span!("last").in_scope(|| std::hint::black_box(0));
        });
        let wall = started.elapsed();
        times.count_call(3);
        let profile = times.take();
        let names: Vec<&str> = profile.ops.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ["inner", "last", "outer"], "closed innermost first");
        assert_eq!((profile.forward_calls, profile.tokens), (1, 3));
        let inner = profile.ops[0].1;
        assert!(inner >= Duration::from_millis(10), "{inner:?}");
        let sum: Duration = profile.ops.iter().map(|(_, d)| *d).sum();
        assert!(sum <= wall, "{sum:?} > {wall:?}: nested time counted twice");
        // Taken: the next take starts empty.
        assert!(times.take().ops.is_empty());
    }
}
