//! Encode throughput (MB/s) of ossa's tokenizer backends against tiktoken-rs's o200k_harmony.
//!
//! Corpora: English prose (the repository's Markdown), Rust code (this crate's sources) and
//! multilingual text (the tokenizer fixture cases: many scripts, whitespace, numbers, emoji).

use std::path::{Path, PathBuf};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use ossa_engine::tokenizer::{EncoderPreference, Tokenizer};

fn workspace() -> PathBuf {
    ossa_test_support::workspace_root()
}

fn read_tree(dir: &Path, extension: &str, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            read_tree(&path, extension, out);
        } else if path.extension().and_then(|e| e.to_str()) == Some(extension)
            && let Ok(text) = std::fs::read_to_string(&path)
        {
            out.push_str(&text);
            out.push('\n');
        }
    }
}

fn corpora() -> Vec<(&'static str, String)> {
    let root = workspace();
    let mut prose = String::new();
    read_tree(&root.join("tests/fixtures"), "md", &mut prose);
    for name in ["README.md", "ARCHITECTURE.md", "GUIDE.md"] {
        if let Ok(text) = std::fs::read_to_string(root.join(name)) {
            prose.push_str(&text);
        }
    }
    let mut code = String::new();
    read_tree(&root.join("engine/src"), "rs", &mut code);
    let cases: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/tokenizer/cases.json"))
            .expect("cases.json"),
    )
    .expect("cases.json is JSON");
    let mut multilingual = String::new();
    for case in cases["cases"].as_array().expect("cases") {
        if case["mode"] == "ordinary" {
            multilingual.push_str(case["text"].as_str().unwrap_or_default());
            multilingual.push('\n');
        }
    }
    // Repeat small corpora so one iteration is long enough to time.
    let grow = |text: String| {
        if text.len() < 200_000 {
            text.repeat(200_000 / text.len().max(1) + 1)
        } else {
            text
        }
    };
    vec![
        ("prose", grow(prose)),
        ("code", grow(code)),
        ("multilingual", grow(multilingual)),
    ]
}

fn encode(c: &mut Criterion) {
    let builtin = Tokenizer::o200k_harmony().expect("built-in tokenizer");
    let fixture = workspace().join("tests/fixtures/tokenizer/tokenizer.json");
    let from_file = Tokenizer::from_file(&fixture).expect("tokenizer.json");
    let huggingface = Tokenizer::from_file_with(&fixture, EncoderPreference::HuggingFace)
        .expect("tokenizer.json");
    let tiktoken = tiktoken_rs::o200k_harmony().expect("tiktoken-rs o200k_harmony");

    let mut group = c.benchmark_group("encode_ordinary");
    group.sample_size(10);
    for (name, text) in corpora() {
        // Same output from every encoder, or the comparison is meaningless.
        let expected = tiktoken.encode_ordinary(&text);
        assert_eq!(
            builtin.encode_ordinary(&text).expect("encode"),
            expected,
            "{name}: builtin differs"
        );
        assert_eq!(
            huggingface.encode_ordinary(&text).expect("encode"),
            expected,
            "{name}: tokenizers differs"
        );
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_with_input(BenchmarkId::new("ossa_bpe_builtin", name), &text, |b, t| {
            b.iter(|| builtin.encode_ordinary(t).expect("encode"))
        });
        group.bench_with_input(
            BenchmarkId::new("ossa_bpe_tokenizer_json", name),
            &text,
            |b, t| b.iter(|| from_file.encode_ordinary(t).expect("encode")),
        );
        group.bench_with_input(
            BenchmarkId::new("tokenizers_0.23.2", name),
            &text,
            |b, t| b.iter(|| huggingface.encode_ordinary(t).expect("encode")),
        );
        group.bench_with_input(
            BenchmarkId::new("tiktoken_rs_0.12.1", name),
            &text,
            |b, t| b.iter(|| tiktoken.encode_ordinary(t)),
        );
    }
    group.finish();
}

criterion_group!(benches, encode);
criterion_main!(benches);
