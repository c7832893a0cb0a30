//! Sampling semantics: greedy, temperature, top-k (ties kept), top-p (smallest set reaching p),
//! seeded repeatability. Frequencies are checked on thousands of seeded draws against the
//! softmax computed here independently; the bounds are several standard deviations wide.

use ossa_engine::{Sampler, SamplingParams};

fn draws(params: SamplingParams, logits: &[f32], n: usize) -> Vec<usize> {
    let mut sampler = Sampler::new(&params).expect("valid params");
    let mut counts = vec![0; logits.len()];
    for _ in 0..n {
        counts[sampler.sample(logits) as usize] += 1;
    }
    counts
}

fn params(temperature: f32, top_p: f32, top_k: usize, seed: u64) -> SamplingParams {
    SamplingParams {
        temperature,
        top_p,
        top_k,
        seed: Some(seed),
    }
}

#[test]
fn greedy_takes_the_first_maximum_and_ignores_nan() {
    let mut s = Sampler::new(&SamplingParams::greedy()).expect("greedy");
    assert_eq!(s.sample(&[0.1, 3.0, -1.0, 3.0]), 1);
    assert_eq!(s.sample(&[f32::NAN, 0.5, 0.2]), 1);
    // top_k = 1 is greedy too, whatever the temperature.
    let mut s = Sampler::new(&params(5.0, 1.0, 1, 3)).expect("top1");
    for _ in 0..50 {
        assert_eq!(s.sample(&[0.0, 0.1, 0.05]), 1);
    }
}

#[test]
fn temperature_one_follows_the_softmax() {
    let logits = [0.0f32, 1.0, 2.0, -1.0];
    let n = 20000;
    let counts = draws(params(1.0, 1.0, 0, 11), &logits, n);
    let z: f64 = logits.iter().map(|&l| (l as f64).exp()).sum();
    for (i, &c) in counts.iter().enumerate() {
        let p = (logits[i] as f64).exp() / z;
        let sd = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (c as f64 - n as f64 * p).abs() < 5.0 * sd,
            "token {i}: {c} draws, expected {:.0}",
            n as f64 * p
        );
    }
}

#[test]
fn low_temperature_sharpens_and_high_flattens() {
    let logits = [0.0f32, 1.0];
    let cold = draws(params(0.1, 1.0, 0, 5), &logits, 5000);
    let hot = draws(params(100.0, 1.0, 0, 5), &logits, 5000);
    assert!(cold[1] > 4990, "{cold:?}");
    assert!((2300..2700).contains(&hot[1]), "{hot:?}");
}

#[test]
fn top_k_keeps_the_k_best_and_their_ties() {
    let logits = [1.0f32, 5.0, 3.0, 4.0, 2.0];
    let counts = draws(params(1.0, 1.0, 2, 9), &logits, 5000);
    assert_eq!(counts[0] + counts[2] + counts[4], 0, "{counts:?}");
    // Renormalised over {4, 5}: p(5) = e / (1 + e) ≈ 0.731.
    let p = counts[1] as f64 / 5000.0;
    assert!((p - 0.731).abs() < 0.03, "{p}");
    // A tie with the k-th value stays in (transformers' TopKLogitsWarper keeps ties).
    let tied = [1.0f32, 3.0, 3.0, 0.0];
    let counts = draws(params(1.0, 1.0, 1 + 1, 9), &tied, 4000);
    assert_eq!(counts[0] + counts[3], 0);
    let tied3 = [3.0f32, 3.0, 3.0, 0.0];
    let counts = draws(params(1.0, 1.0, 2, 9), &tied3, 6000);
    assert!(
        counts[..3].iter().all(|&c| c > 1700),
        "ties with the 2nd value all kept: {counts:?}"
    );
    assert_eq!(counts[3], 0);
}

#[test]
fn top_p_keeps_the_smallest_set_reaching_p() {
    // Probabilities 0.5, 0.3, 0.15, 0.05.
    let logits: Vec<f32> = [0.5f32, 0.3, 0.15, 0.05].iter().map(|p| p.ln()).collect();
    let counts = draws(params(1.0, 0.7, 0, 21), &logits, 8000);
    assert_eq!(
        counts[2] + counts[3],
        0,
        "0.5 < 0.7 <= 0.8: only the first two: {counts:?}"
    );
    let p0 = counts[0] as f64 / 8000.0;
    assert!((p0 - 0.625).abs() < 0.03, "renormalised 0.5/0.8: {p0}");
    // p just above 0.8 needs the third token too.
    let counts = draws(params(1.0, 0.85, 0, 21), &logits, 8000);
    assert!(counts[2] > 0 && counts[3] == 0, "{counts:?}");
    // Tiny p keeps only the best token.
    let counts = draws(params(1.0, 0.01, 0, 21), &logits, 1000);
    assert_eq!(counts[0], 1000);
}

#[test]
fn seeds_repeat_and_differ() {
    let logits: Vec<f32> = (0..1000).map(|i| ((i * 37 % 101) as f32) / 20.0).collect();
    let seq = |seed| {
        let mut s = Sampler::new(&params(1.0, 0.9, 100, seed)).expect("params");
        (0..64).map(|_| s.sample(&logits)).collect::<Vec<u32>>()
    };
    assert_eq!(seq(42), seq(42));
    assert_ne!(seq(42), seq(43));
}

#[test]
fn invalid_parameters_are_rejected() {
    for bad in [
        params(-0.5, 1.0, 0, 0),
        params(f32::NAN, 1.0, 0, 0),
        params(1.0, 0.0, 0, 0),
        params(1.0, 1.5, 0, 0),
    ] {
        assert!(Sampler::new(&bad).is_err(), "{bad:?}");
    }
}
