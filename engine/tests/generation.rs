//! The generation API on the tiny fixture: prefix reuse, stop tokens, budgets, cancellation,
//! errors. Expected tokens and logits come from the transformers reference.

mod common;

use std::sync::mpsc;

use common::{max_abs_diff, read_reference};
use ossa_engine::{
    CancellationToken, DType, Engine, EngineError, FinishReason, ForwardTrace, GenerateParams,
    LoadOptions, Logits, SamplingParams,
};

fn engine() -> Engine {
    let dir = common::fixtures_root().join("gpt-oss-tiny-mxfp4");
    Engine::load(
        &dir,
        &LoadOptions {
            dtype: DType::F32,
            threads: Some(2),
        },
    )
    .expect("load tiny fixture")
}

fn run(
    engine: &mut Engine,
    prompt: &[u32],
    params: &GenerateParams,
) -> (Vec<u32>, Option<FinishReason>) {
    let mut generation = engine.generate(prompt, params).expect("generate");
    let tokens = generation
        .by_ref()
        .map(|t| t.expect("token").token)
        .collect();
    (tokens, generation.finish_reason())
}

/// Keys/values kept for a prefix and extended with a suffix give the logits of a fresh
/// prefill, including after the cache held a different continuation that was cut off.
#[test]
fn prefix_reuse_matches_fresh_prefill() {
    let r = read_reference(&common::fixtures_root().join("gpt-oss-tiny-mxfp4"));
    let engine = engine();
    let model = engine.model();
    let vocab = model.config().vocab_size;
    let mut fresh = model.new_cache();
    let full = model
        .forward(&r.tokens, &mut fresh, Logits::All, None)
        .expect("fresh");

    let mut cache = model.new_cache();
    model
        .forward(&r.tokens[..25], &mut cache, Logits::Last, None)
        .expect("prefix");
    // A diverging continuation, then cut back to the common prefix.
    model
        .forward(&[5, 6, 7, 8, 9, 10, 11], &mut cache, Logits::Last, None)
        .expect("detour");
    assert_eq!(cache.common_prefix(&r.tokens), 25);
    cache.truncate(25);
    let suffix = model
        .forward(&r.tokens[25..], &mut cache, Logits::All, None)
        .expect("suffix");
    let diff = max_abs_diff(&suffix, &full[25 * vocab..]);
    assert!(diff < 1e-4, "reused prefix vs fresh prefill: {diff}");
    assert!(max_abs_diff(&suffix, &r.logits[25 * vocab..]) < 1e-3);
    assert_eq!(cache.tokens(), r.tokens.as_slice());
}

/// Through the engine: a second request reuses exactly the common prefix, and generates what a
/// fresh engine generates.
#[test]
fn engine_reuses_the_longest_common_prefix() {
    let r = read_reference(&common::fixtures_root().join("gpt-oss-tiny-mxfp4"));
    let mut engine = engine();
    let params = GenerateParams {
        max_tokens: 6,
        ..GenerateParams::default()
    };
    let mut first: Vec<u32> = r.tokens[..30].to_vec();
    first.extend([1, 2, 3]);
    run(&mut engine, &first, &params);
    let stats = engine.cache_stats().expect("stats");
    assert_eq!((stats.reused_tokens, stats.computed_tokens), (0, 33));
    assert_eq!(
        engine.cached_tokens().len(),
        33 + 5,
        "prompt + generated - last"
    );

    let (tokens, finish) = run(&mut engine, &r.tokens, &params);
    let stats = engine.cache_stats().expect("stats");
    assert_eq!(
        (
            stats.prompt_tokens,
            stats.reused_tokens,
            stats.computed_tokens
        ),
        (40, 30, 10)
    );
    assert_eq!(tokens, r.greedy[..6]);
    assert_eq!(finish, Some(FinishReason::MaxTokens));

    // The next turn extends the conversation: everything cached is reused.
    let mut next_turn: Vec<u32> = engine.cached_tokens().to_vec();
    next_turn.extend([tokens[5], 42, 43]);
    run(&mut engine, &next_turn, &params);
    let stats = engine.cache_stats().expect("stats");
    assert_eq!(stats.reused_tokens, 40 + 5);
    assert_eq!(stats.computed_tokens, 3);

    // The same prompt again recomputes only its last token.
    let (again, _) = run(&mut engine, &next_turn, &params);
    assert_eq!(engine.cache_stats().expect("stats").computed_tokens, 1);
    let mut fresh = self::engine();
    let (want, _) = run(&mut fresh, &next_turn, &params);
    assert_eq!(again, want);
}

#[test]
fn stops_on_stop_tokens_and_budgets() {
    let r = read_reference(&common::fixtures_root().join("gpt-oss-tiny-mxfp4"));
    let mut engine = engine();
    let stop = r.greedy[5];
    let first_stop = r.greedy.iter().position(|&t| t == stop).expect("present");
    let params = GenerateParams {
        max_tokens: 24,
        stop_tokens: vec![stop],
        ..GenerateParams::default()
    };
    let (tokens, finish) = run(&mut engine, &r.tokens, &params);
    assert_eq!(tokens, r.greedy[..=first_stop]);
    assert_eq!(finish, Some(FinishReason::Stop(stop)));
    // The stop token was never fed forward.
    assert_eq!(engine.cached_tokens().len(), r.tokens.len() + first_stop);

    let (tokens, finish) = run(
        &mut engine,
        &r.tokens,
        &GenerateParams {
            max_tokens: 0,
            ..GenerateParams::default()
        },
    );
    assert!(tokens.is_empty());
    assert_eq!(finish, Some(FinishReason::MaxTokens));
}

#[test]
fn cancellation_stops_the_stream() {
    let r = read_reference(&common::fixtures_root().join("gpt-oss-tiny-mxfp4"));
    let mut engine = engine();

    // Cancelled before the first step: nothing is computed.
    let cancel = CancellationToken::new();
    cancel.cancel();
    let params = GenerateParams {
        max_tokens: 10,
        cancel: Some(cancel),
        ..GenerateParams::default()
    };
    let (tokens, finish) = run(&mut engine, &r.tokens, &params);
    assert!(tokens.is_empty());
    assert_eq!(finish, Some(FinishReason::Cancelled));

    // Cancelled from another thread once the first token arrived.
    let cancel = CancellationToken::new();
    let remote = cancel.clone();
    let (tx, rx) = mpsc::channel::<()>();
    let canceller = std::thread::spawn(move || {
        if rx.recv().is_ok() {
            remote.cancel();
        }
    });
    let params = GenerateParams {
        max_tokens: 5000,
        cancel: Some(cancel),
        ..GenerateParams::default()
    };
    let mut generation = engine.generate(&r.tokens, &params).expect("generate");
    let mut count = 0;
    for item in generation.by_ref() {
        item.expect("token");
        count += 1;
        if count == 1 {
            tx.send(()).expect("signal");
        }
    }
    assert_eq!(generation.finish_reason(), Some(FinishReason::Cancelled));
    drop(generation);
    canceller.join().expect("canceller thread");
    assert!(count < 5000);
    // The cache is consistent: prompt + what was generated, minus the last token.
    assert_eq!(engine.cached_tokens().len(), r.tokens.len() + count - 1);
    assert_eq!(
        &engine.cached_tokens()[r.tokens.len()..r.tokens.len() + count.min(24) - 1],
        &r.greedy[..count.min(24) - 1]
    );
}

#[test]
fn bad_requests_are_errors() {
    let mut engine = engine();
    let params = GenerateParams::default();
    assert!(matches!(
        engine.generate(&[], &params),
        Err(EngineError::EmptyPrompt)
    ));
    assert!(matches!(
        engine.generate(&[1, 2, 1100], &params),
        Err(EngineError::TokenOutOfRange {
            token: 1100,
            vocab_size: 1100
        })
    ));
    let bad = GenerateParams {
        sampling: SamplingParams {
            temperature: -1.0,
            ..SamplingParams::greedy()
        },
        ..params
    };
    assert!(matches!(
        engine.generate(&[1, 2], &bad),
        Err(EngineError::BadSampling {
            name: "temperature",
            ..
        })
    ));
}

/// Pinned routing (a diagnostics input) that sends a token to one expert twice would have two
/// parallel writers of its output row: it is refused, naming the token, before the cache
/// changes; the engine then computes as before, and distinct pins are accepted.
#[test]
fn pinned_routing_with_a_repeated_expert_is_refused() {
    let mut engine = engine();
    let tokens = [1u32, 2, 3];
    let layers = engine.model().config().num_hidden_layers;
    let want = engine
        .forward(&tokens, Logits::All, None)
        .expect("plain forward");
    engine.clear_cache();
    let mut pins = vec![vec![0u32, 1, 2, 3, 4, 5]; layers];
    pins[2] = vec![0, 1, 5, 5, 4, 6];
    let mut trace = ForwardTrace {
        pinned_routing: Some(pins),
        ..ForwardTrace::default()
    };
    let err = engine
        .forward(&tokens, Logits::All, Some(&mut trace))
        .expect_err("a repeated expert is refused");
    assert!(
        matches!(&err, EngineError::PinnedRouting { layer: 2, found, .. } if found.contains("token 1")),
        "{err}"
    );
    assert!(engine.cached_tokens().is_empty(), "nothing cached");
    let again = engine
        .forward(&tokens, Logits::All, None)
        .expect("forward after");
    assert_eq!(max_abs_diff(&again, &want), 0.0);
    engine.clear_cache();
    let mut trace = ForwardTrace {
        pinned_routing: Some(vec![vec![7u32, 0, 6, 1, 5, 2]; layers]),
        ..ForwardTrace::default()
    };
    engine
        .forward(&tokens, Logits::All, Some(&mut trace))
        .expect("distinct pins run");
}

/// Profiling times every stage of real forward calls from their spans: each stage named once,
/// each with time; failed calls are not counted; off again, nothing is collected and the
/// logits are the same as with it on.
#[test]
fn profiling_names_every_stage_with_its_time() {
    let mut engine = engine();
    assert!(engine.model().take_profile().is_none(), "off by default");
    let plain = engine
        .forward(&[1, 2, 3, 4], Logits::All, None)
        .expect("forward");
    engine.clear_cache();
    engine.set_profiling(true);
    let profiled = engine
        .forward(&[1, 2, 3, 4], Logits::All, None)
        .expect("forward");
    assert_eq!(max_abs_diff(&plain, &profiled), 0.0);
    engine.forward(&[5], Logits::Last, None).expect("decode");
    assert!(engine.forward(&[5000], Logits::Last, None).is_err());
    let profile = engine.model().take_profile().expect("on");
    assert_eq!((profile.forward_calls, profile.tokens), (2, 5));
    let names: Vec<&str> = profile.ops.iter().map(|(name, _)| *name).collect();
    let stages = [
        "forward",
        "embed",
        "norm",
        "attention",
        "attn.qkv",
        "attn.core",
        "attn.o",
        "moe",
        "moe.router",
        "moe.gate_up",
        "moe.swiglu",
        "moe.down",
        "lm_head",
    ];
    let mut sorted = names.clone();
    sorted.sort();
    let mut want = stages.to_vec();
    want.sort();
    assert_eq!(sorted, want, "each stage once: {names:?}");
    for (name, time) in &profile.ops {
        assert!(!time.is_zero(), "{name} has no time");
    }
    assert_eq!(
        engine.model().take_profile().map(|p| p.forward_calls),
        Some(0),
        "taken"
    );
    engine.set_profiling(false);
    engine.forward(&[6], Logits::Last, None).expect("decode");
    assert!(engine.model().take_profile().is_none());
}

/// Seeded sampling through the engine repeats exactly; another seed gives another sequence.
#[test]
fn seeded_sampling_repeats() {
    let r = read_reference(&common::fixtures_root().join("gpt-oss-tiny-mxfp4"));
    let mut engine = engine();
    let sample = |seed| GenerateParams {
        max_tokens: 16,
        sampling: SamplingParams {
            temperature: 1.5,
            top_p: 0.95,
            top_k: 50,
            seed: Some(seed),
        },
        ..GenerateParams::default()
    };
    let (a, _) = run(&mut engine, &r.tokens, &sample(1));
    let (b, _) = run(&mut engine, &r.tokens, &sample(1));
    let (c, _) = run(&mut engine, &r.tokens, &sample(2));
    assert_eq!(a, b);
    assert_ne!(a, c);
    assert_ne!(a, r.greedy[..16]);
}
