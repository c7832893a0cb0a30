//! `ossa eval kl` through the real binary on the tiny fixtures: the built-in text (the tiny
//! agent's scenarios) and a text file, every position compared, figures equal to a KL
//! divergence computed here from the engines directly, one report per instruction set with
//! `--isa all`, and clear errors for what cannot be compared.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use ossa_engine::{DType, Engine, Isa, LoadOptions, Logits, Tokenizer};
use ossa_test_support::stderr_of_failure;
use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    ossa_test_support::fixtures().join(name)
}

/// `ossa eval kl` on `model` with `args`, on 2 threads.
fn eval_kl(model: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ossa"));
    command
        .args(["eval", "kl", "--threads", "2", "--model"])
        .arg(model)
        .args(args);
    command
}

fn ossa_eval(model: &Path, args: &[&str]) -> Output {
    eval_kl(model, args).output().expect("ossa runs")
}

/// `text` in a file of its own, in a temporary folder (removed when dropped).
fn text_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text.txt");
    std::fs::write(&path, text).unwrap();
    (dir, path)
}

fn json_lines(output: &Output) -> Vec<Value> {
    assert!(
        output.status.success(),
        "ossa eval kl failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone())
        .expect("utf-8")
        .lines()
        .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
        .collect()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// The scenarios' sequences, read here from the fixture file: prompt + first reply.
fn scenario_sequences() -> Vec<Vec<u32>> {
    let text = std::fs::read_to_string(fixture("gpt-oss-tiny-agent/scenarios.json")).unwrap();
    let cases: Vec<Value> = serde_json::from_str(&text).unwrap();
    cases
        .iter()
        .map(|c| {
            c["prompt_tokens"]
                .as_array()
                .unwrap()
                .iter()
                .chain(c["generated_tokens"][0].as_array().unwrap())
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        })
        .collect()
}

/// KL(softmax(p) ‖ softmax(q)), written out in f64.
fn kl(p: &[f32], q: &[f32]) -> f64 {
    let lse = |v: &[f32]| {
        let m = v.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
        m + v.iter().map(|&x| (x as f64 - m).exp()).sum::<f64>().ln()
    };
    let (zp, zq) = (lse(p), lse(q));
    p.iter()
        .zip(q)
        .map(|(&a, &b)| {
            let lp = a as f64 - zp;
            lp.exp() * (lp - (b as f64 - zq))
        })
        .sum()
}

/// Every position's logits of one engine: the first half in one call, then token by token.
fn teacher_forced_logits(engine: &mut Engine, tokens: &[u32]) -> Vec<Vec<f32>> {
    engine.clear_cache();
    let vocab = engine.config().vocab_size;
    let prefill = (tokens.len() / 2).max(1);
    let mut rows: Vec<Vec<f32>> = engine
        .forward(&tokens[..prefill], Logits::All, None)
        .unwrap()
        .chunks(vocab)
        .map(<[f32]>::to_vec)
        .collect();
    for &t in &tokens[prefill..] {
        rows.push(engine.forward(&[t], Logits::Last, None).unwrap());
    }
    rows
}

#[test]
fn builtin_scenarios_compare_every_position_and_match_a_direct_kl() {
    let model = fixture("gpt-oss-tiny-agent");
    let reports = json_lines(&ossa_eval(&model, &["--dtype", "q8", "--json"]));
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    let sequences = scenario_sequences();
    let positions: usize = sequences.iter().map(Vec::len).sum();
    let cached: usize = sequences.iter().map(|s| s.len() - s.len() / 2).sum();
    assert!(positions > 900, "{positions}");
    assert_eq!(r["positions"], positions);
    assert_eq!(r["cached_positions"], cached);
    assert_eq!(r["dtype"], "q8");
    assert_eq!(r["reference"], "f32");

    // The same figures from the engines directly.
    let load = |dtype| {
        Engine::load(
            &model,
            &LoadOptions {
                dtype,
                threads: Some(2),
            },
        )
        .unwrap()
    };
    let (mut f32e, mut q8e) = (load(DType::F32), load(DType::Q8));
    let mut kls = Vec::new();
    let mut top1_equal = 0;
    for s in &sequences {
        let (a, b) = (
            teacher_forced_logits(&mut f32e, s),
            teacher_forced_logits(&mut q8e, s),
        );
        for (p, q) in a.iter().zip(&b) {
            kls.push(kl(p, q));
            let argmax = |v: &[f32]| {
                v.iter()
                    .enumerate()
                    .fold((0, f32::NEG_INFINITY), |best, (i, &x)| {
                        if x > best.1 { (i, x) } else { best }
                    })
                    .0
            };
            top1_equal += usize::from(argmax(p) == argmax(q));
        }
    }
    assert_eq!(kls.len(), positions);
    let mean = kls.iter().sum::<f64>() / kls.len() as f64;
    let max = kls.iter().copied().fold(0.0, f64::max);
    let got_mean = r["kl"]["mean"].as_f64().unwrap();
    assert!(
        (got_mean - mean).abs() <= 1e-9 + 1e-6 * mean,
        "mean KL {got_mean} vs {mean}"
    );
    assert!((r["kl"]["max"].as_f64().unwrap() - max).abs() <= 1e-9 + 1e-6 * max);
    assert_eq!(
        r["top1_agreement"].as_f64().unwrap(),
        top1_equal as f64 / positions as f64
    );
    // 4 layers × every position, k = 2 of 4 experts.
    assert_eq!(r["routing_decisions"], 4 * positions);
    assert!(mean > 0.0, "q8 cannot equal f32 exactly");
}

#[test]
fn text_file_and_every_isa() {
    let model = fixture("gpt-oss-tiny-agent");
    let text = "The quick brown fox jumps over the lazy dog. Sum the squares from 1 to 22 with python, then double it; 3385 is the answer.";
    let (_dir, path) = text_file(text);
    let tokens = Tokenizer::o200k_harmony()
        .unwrap()
        .encode_ordinary(text)
        .unwrap();
    let reports = json_lines(&ossa_eval(
        &model,
        &[
            "--dtype",
            "bf16",
            "--text",
            path.to_str().unwrap(),
            "--isa",
            "all",
            "--prefill",
            "4",
            "--json",
        ],
    ));
    let available: Vec<&str> = Isa::available().iter().map(|i| i.name()).collect();
    let isas: Vec<&str> = reports.iter().map(|r| r["isa"].as_str().unwrap()).collect();
    assert_eq!(isas, available);
    for r in &reports {
        assert_eq!(r["positions"], tokens.len());
        assert_eq!(r["cached_positions"], tokens.len() - 4);
        let mean = r["kl"]["mean"].as_f64().unwrap();
        assert!(mean.is_finite() && mean >= 0.0, "{r}");
    }

    // The text report names what it measured.
    let output = ossa_eval(&model, &["--text", path.to_str().unwrap(), "--pin-routing"]);
    assert!(output.status.success(), "{}", stderr(&output));
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert!(stdout.contains("Q8"), "{stdout}");
    assert!(stdout.contains("against F32"), "{stdout}");
    assert!(stdout.contains("routing pinned"), "{stdout}");
    assert!(
        stdout.contains(&format!("{} positions", tokens.len())),
        "{stdout}"
    );
    assert!(stdout.contains("KL divergence"), "{stdout}");
}

#[test]
fn what_cannot_be_compared_is_refused_clearly() {
    let agent = fixture("gpt-oss-tiny-agent");
    let (_empty_dir, empty) = text_file("");
    let (_text_dir, text) = text_file("hello");
    // A random tiny model (1100 ids, no tokenizer): the built-in o200k ids do not fit it, and
    // a text cannot be tokenized for it.
    let random = fixture("gpt-oss-tiny-mxfp4");
    let (empty, text) = (empty.to_str().unwrap(), text.to_str().unwrap());
    let cases: [(&Path, &[&str], &[&str]); 6] = [
        (&agent, &["--dtype", "f32"], &["nothing to compare"]),
        (&agent, &["--isa", "sse9"], &["--isa sse9", "scalar"]),
        (
            &agent,
            &["--text", "/nonexistent/text.txt"],
            &["/nonexistent/text.txt"],
        ),
        (&agent, &["--text", empty], &["empty"]),
        (&random, &[], &["1100-id vocabulary"]),
        (&random, &["--text", text], &["no tokenizer"]),
    ];
    for (model, args, needles) in cases {
        let what = format!("ossa eval kl --model {} {args:?}", model.display());
        let error = stderr_of_failure(&what, &ossa_eval(model, args));
        for needle in needles {
            assert!(error.contains(needle), "{what}: {error}");
        }
    }
}

/// `OSSA_ISA` picks the instruction set a process runs when `--isa` is not given: each one
/// this CPU has (so `amx` forces the tiles and `avx512vnni` forbids them), while a name the
/// CPU lacks or that does not exist is ignored with a warning for the best one. `--isa`
/// itself refuses what the CPU lacks.
#[test]
fn ossa_isa_forces_or_forbids_each_instruction_set() {
    let model = fixture("gpt-oss-tiny-agent");
    let (_dir, path) = text_file("Sum the squares from 1 to 22 with python.");
    let run = |env: Option<&str>, extra: &[&str]| {
        let mut command = eval_kl(&model, &["--json", "--text", path.to_str().unwrap()]);
        match env {
            Some(name) => command.env("OSSA_ISA", name),
            None => command.env_remove("OSSA_ISA"),
        };
        command.args(extra).output().expect("ossa runs")
    };
    let available = Isa::available();
    for isa in &available {
        let output = run(Some(&isa.name().to_uppercase()), &[]);
        let reports = json_lines(&output);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0]["isa"], isa.name(), "OSSA_ISA={}", isa.name());
        assert!(!stderr(&output).contains("OSSA_ISA ignored"));
    }
    let best = Isa::best().name();
    let mut refused = vec!["sse9"];
    refused.extend(
        ["avx2", "avxvnni", "avx512vnni", "amx"]
            .into_iter()
            .filter(|name| !available.iter().any(|i| i.name() == *name)),
    );
    for name in refused {
        let output = run(Some(name), &[]);
        assert_eq!(json_lines(&output)[0]["isa"], best, "OSSA_ISA={name}");
        assert!(
            stderr(&output).contains("OSSA_ISA ignored"),
            "OSSA_ISA={name}: {}",
            stderr(&output)
        );
        if name != "sse9" {
            let flag = run(None, &["--isa", name]);
            assert!(!flag.status.success(), "--isa {name}");
            assert!(stderr(&flag).contains(&format!("--isa {name}")));
        }
    }
    // The flag wins over the variable.
    let output = run(Some(best), &["--isa", "scalar"]);
    assert_eq!(json_lines(&output)[0]["isa"], "scalar");
}
