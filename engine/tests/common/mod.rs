//! Shared helpers of the engine's integration tests: fixture discovery and reading the
//! transformers reference outputs with the official `safetensors` crate.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub use ossa_test_support::fixtures as fixtures_root;

/// A folder is a parity fixture when it has a config, weights and reference outputs.
fn is_fixture(dir: &Path) -> bool {
    dir.join("config.json").is_file() && dir.join("reference.safetensors").is_file()
}

fn fixtures_under(root: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    if is_fixture(root) {
        found.push(root.to_path_buf());
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        let mut dirs: Vec<PathBuf> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        found.extend(dirs.into_iter().filter(|d| is_fixture(d)));
    }
    found
}

/// Every parity fixture of the repository, plus those under `OSSA_ENGINE_FIXTURES`; at least
/// two (the repository's tiny ones), or the test fails.
pub fn parity_fixtures() -> Vec<PathBuf> {
    let mut all = fixtures_under(&fixtures_root());
    if let Ok(extra) = std::env::var("OSSA_ENGINE_FIXTURES") {
        let extra = PathBuf::from(extra);
        assert!(
            extra.is_dir(),
            "OSSA_ENGINE_FIXTURES={} is not a directory",
            extra.display()
        );
        let more = fixtures_under(&extra);
        assert!(
            !more.is_empty(),
            "OSSA_ENGINE_FIXTURES={} holds no fixture folder",
            extra.display()
        );
        all.extend(more);
    }
    assert!(
        all.len() >= 2,
        "expected the repository's tiny fixtures, found {all:?}"
    );
    all
}

/// The reference tensors of one fixture.
pub struct Reference {
    pub tokens: Vec<u32>,
    /// `[T, vocab]`
    pub logits: Vec<f32>,
    pub greedy: Vec<u32>,
    /// `[N, vocab]`
    pub greedy_logits: Vec<f32>,
    /// `[layers, T, hidden]`
    pub layer_outputs: Vec<f32>,
    /// `[layers, T, k]`
    pub router_topk: Vec<u32>,
    pub shapes: HashMap<String, Vec<usize>>,
}

/// The bytes of reference tensor `name`, which must be stored as `dtype`.
fn tensor_data<'a>(
    st: &safetensors::SafeTensors<'a>,
    name: &str,
    dtype: safetensors::Dtype,
) -> &'a [u8] {
    let t = st
        .tensor(name)
        .unwrap_or_else(|e| panic!("reference tensor {name}: {e}"));
    assert_eq!(t.dtype(), dtype, "{name} dtype");
    t.data()
}

pub fn read_reference(dir: &Path) -> Reference {
    let bytes =
        std::fs::read(dir.join("reference.safetensors")).expect("read reference.safetensors");
    let st = safetensors::SafeTensors::deserialize(&bytes).expect("parse reference.safetensors");
    let mut shapes = HashMap::new();
    let f32s = |name: &str| -> Vec<f32> {
        tensor_data(&st, name, safetensors::Dtype::F32)
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let ids = |name: &str| -> Vec<u32> {
        tensor_data(&st, name, safetensors::Dtype::I64)
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")) as u32)
            .collect()
    };
    for name in [
        "tokens",
        "logits",
        "greedy",
        "greedy_logits",
        "layer_outputs",
        "router_topk",
    ] {
        shapes.insert(
            name.to_string(),
            st.tensor(name).expect("tensor").shape().to_vec(),
        );
    }
    Reference {
        tokens: ids("tokens"),
        logits: f32s("logits"),
        greedy: ids("greedy"),
        greedy_logits: f32s("greedy_logits"),
        layer_outputs: f32s("layer_outputs"),
        router_topk: ids("router_topk"),
        shapes,
    }
}

pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, x) in v.iter().enumerate() {
        if *x > v[best] {
            best = i;
        }
    }
    best as u32
}

/// Tallies named checks that run on past a failure, so one run reports every fixture's
/// outcome; [`Checks::assert_all_passed`] fails the test at the end if any failed.
#[derive(Default)]
pub struct Checks {
    passed: usize,
    failed: usize,
}

impl Checks {
    /// Prints `ok` or `FAIL` with the check's name and message, and counts it.
    pub fn record(&mut self, name: &str, outcome: Result<String, String>) {
        match outcome {
            Ok(msg) => {
                self.passed += 1;
                println!("ok   {name}: {msg}");
            }
            Err(msg) => {
                self.failed += 1;
                println!("FAIL {name}: {msg}");
            }
        }
    }

    /// Prints the counts; panics naming `what` checks when any failed.
    pub fn assert_all_passed(&self, what: &str) {
        let (passed, failed) = (self.passed, self.failed);
        println!("{passed} passed, {failed} failed");
        assert_eq!(failed, 0, "{failed} {what} checks failed");
    }
}

/// Runs one generation to its end: the tokens it emitted, why it stopped, and its
/// prompt-cache figures.
pub fn generate_to_end(
    engine: &mut ossa_engine::Engine,
    prompt: &[u32],
    params: &ossa_engine::GenerateParams,
) -> (
    Vec<u32>,
    Option<ossa_engine::FinishReason>,
    ossa_engine::CacheStats,
) {
    let mut generation = engine.generate(prompt, params).expect("generate");
    let tokens: Vec<u32> = generation
        .by_ref()
        .map(|t| t.expect("token").token)
        .collect();
    (tokens, generation.finish_reason(), generation.cache_stats())
}
