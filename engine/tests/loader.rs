//! Loading real files, good and broken: every error names the file and the tensor. Broken
//! checkpoints are made from the tiny MXFP4 fixture with the official `safetensors` writer.

mod common;

use std::path::{Path, PathBuf};

use ossa_engine::random_checkpoint::{
    RandomCheckpointOptions, tensor_layout, write_random_checkpoint,
};
use ossa_engine::{DType, Engine, EngineError, LoadOptions, Logits};
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

fn fixture() -> PathBuf {
    common::fixtures_root().join("gpt-oss-tiny-mxfp4")
}

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn load(dir: &Path) -> Result<Engine, EngineError> {
    Engine::load(
        dir,
        &LoadOptions {
            dtype: DType::F32,
            threads: Some(1),
        },
    )
}

/// Copies the fixture's config and rewrites its weights through `edit`, which may drop,
/// reshape or retype tensors: `(name, dtype, shape, bytes)`.
fn rewrite(
    dir: &Path,
    edit: impl Fn(&str, Dtype, Vec<usize>, &[u8]) -> Option<(Dtype, Vec<usize>, Vec<u8>)>,
) {
    std::fs::copy(fixture().join("config.json"), dir.join("config.json")).expect("copy config");
    let bytes = std::fs::read(fixture().join("model.safetensors")).expect("read weights");
    let st = SafeTensors::deserialize(&bytes).expect("parse weights");
    let mut kept: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, view) in st.tensors() {
        if let Some((dtype, shape, data)) =
            edit(&name, view.dtype(), view.shape().to_vec(), view.data())
        {
            kept.push((name, dtype, shape, data));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = kept
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.clone(),
                TensorView::new(*d, s.clone(), b).expect("valid view"),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))
        .expect("write weights");
}

/// [`rewrite`] with only `target`'s dtype and shape changed, by `edit`.
fn rewrite_one(dir: &Path, target: &str, edit: impl Fn(Dtype, Vec<usize>) -> (Dtype, Vec<usize>)) {
    rewrite(dir, |n, d, s, b| {
        let (d, s) = if n == target { edit(d, s) } else { (d, s) };
        Some((d, s, b.to_vec()))
    });
}

fn keep(_: &str, d: Dtype, s: Vec<usize>, b: &[u8]) -> Option<(Dtype, Vec<usize>, Vec<u8>)> {
    Some((d, s, b.to_vec()))
}

#[test]
fn rewritten_fixture_still_loads_and_runs() {
    let dir = temp_dir();
    rewrite(dir.path(), keep);
    let mut engine = load(dir.path()).expect("a faithful rewrite loads");
    let r = common::read_reference(&fixture());
    let logits = engine
        .forward(&r.tokens, Logits::Last, None)
        .expect("forward");
    let vocab = logits.len();
    let want = &r.logits[(r.tokens.len() - 1) * vocab..];
    assert!(common::max_abs_diff(&logits, want) < 1e-3);
}

#[test]
fn truncated_file_names_file_and_tensor() {
    let dir = temp_dir();
    rewrite(dir.path(), keep);
    let path = dir.path().join("model.safetensors");
    let len = std::fs::metadata(&path).expect("stat").len();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(len - 1000).expect("truncate");
    drop(file);
    match load(dir.path()) {
        Err(EngineError::Truncated {
            path: p,
            tensor,
            needed,
            actual,
        }) => {
            assert_eq!(p, path);
            assert_eq!(actual, len - 1000);
            assert!(needed > actual);
            assert!(
                tensor.starts_with("model.") || tensor == "lm_head.weight",
                "{tensor}"
            );
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    // Cut inside the header too.
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .expect("open");
    file.set_len(100).expect("truncate");
    drop(file);
    let err = load(dir.path()).expect_err("header cut");
    assert!(err.to_string().contains("model.safetensors"), "{err}");
}

#[test]
fn missing_tensor_is_named() {
    let dir = temp_dir();
    let gone = "model.layers.2.self_attn.sinks";
    rewrite(dir.path(), |n, d, s, b| {
        (n != gone).then(|| (d, s, b.to_vec()))
    });
    match load(dir.path()) {
        Err(EngineError::MissingTensor { tensor, searched }) => {
            assert_eq!(tensor, gone);
            assert!(searched.contains("model.safetensors"), "{searched}");
        }
        other => panic!("expected MissingTensor, got {other:?}"),
    }
    // A missing expert tensor names both layouts it looked for.
    let dir = temp_dir();
    rewrite(dir.path(), |n, d, s, b| {
        (!n.starts_with("model.layers.1.mlp.experts.down_proj_")).then(|| (d, s, b.to_vec()))
    });
    let err = load(dir.path()).expect_err("missing down_proj");
    let text = err.to_string();
    ossa_test_support::assert_contains_all(
        &text,
        &["model.layers.1.mlp.experts.down_proj_blocks", "bf16"],
    );
}

#[test]
fn wrong_shape_is_named() {
    let dir = temp_dir();
    let target = "model.layers.0.self_attn.q_proj.weight";
    rewrite_one(dir.path(), target, |d, s| (d, vec![s[1], s[0]]));
    match load(dir.path()) {
        Err(EngineError::WrongShape {
            path,
            tensor,
            expected,
            found,
        }) => {
            assert_eq!(tensor, target);
            assert_eq!(path, dir.path().join("model.safetensors"));
            assert_eq!(expected, vec![256, 128]);
            assert_eq!(found, vec![128, 256]);
        }
        other => panic!("expected WrongShape, got {other:?}"),
    }
}

#[test]
fn wrong_dtype_is_named() {
    let dir = temp_dir();
    let target = "model.layers.3.self_attn.o_proj.weight";
    rewrite_one(dir.path(), target, |_, s| (Dtype::F16, s));
    match load(dir.path()) {
        Err(EngineError::WrongDtype { tensor, found, .. }) => {
            assert_eq!(tensor, target);
            assert_eq!(found, "F16");
        }
        other => panic!("expected WrongDtype, got {other:?}"),
    }
    // Expert blocks stored as something other than U8.
    let dir = temp_dir();
    let target = "model.layers.0.mlp.experts.gate_up_proj_scales";
    rewrite_one(dir.path(), target, |_, s| (Dtype::I8, s));
    let err = load(dir.path()).expect_err("I8 scales");
    assert!(
        matches!(&err, EngineError::WrongDtype { tensor, .. } if tensor == target),
        "{err}"
    );
}

#[test]
fn config_errors_are_clear() {
    let dir = temp_dir();
    rewrite(dir.path(), keep);
    let config_path = dir.path().join("config.json");
    let config = std::fs::read_to_string(&config_path).expect("config");
    // The load error with `content` as the config.
    let load_with = |content: &str, what: &str| {
        std::fs::write(&config_path, content).expect("write");
        load(dir.path()).expect_err(what)
    };
    let err = load_with(&config.replace("\"gpt_oss\"", "\"llama\""), "llama");
    assert!(
        matches!(&err, EngineError::UnknownModelType { found, .. } if found == "llama"),
        "{err}"
    );
    let err = load_with(&config.replace("\"yarn\"", "\"dynamic\""), "dynamic rope");
    ossa_test_support::assert_contains_all(
        &err.to_string(),
        &["rope_scaling.rope_type", "dynamic"],
    );
    let err = load_with("{not json", "bad json");
    assert!(matches!(err, EngineError::Config { .. }), "{err}");
    std::fs::remove_file(&config_path).expect("rm");
    let err = load(dir.path()).expect_err("no config");
    assert!(
        matches!(&err, EngineError::Io { path, .. } if path.ends_with("config.json")),
        "{err}"
    );
}

#[test]
fn directory_without_weights_or_with_garbage() {
    let dir = temp_dir();
    std::fs::copy(
        fixture().join("config.json"),
        dir.path().join("config.json"),
    )
    .expect("copy");
    assert!(matches!(
        load(dir.path()),
        Err(EngineError::NoWeights { .. })
    ));
    let mut garbage = 20u64.to_le_bytes().to_vec();
    garbage.extend_from_slice(b"{\"a\": [1, 2, 3] xx }");
    std::fs::write(dir.path().join("model.safetensors"), garbage).expect("write");
    let err = load(dir.path()).expect_err("garbage header");
    assert!(matches!(err, EngineError::BadSafetensors { .. }), "{err}");
}

/// The random checkpoint writer reproduces the released layout: for the fixture's config it
/// lists exactly the tensors (names, dtypes, shapes) of the fixture's model.safetensors.
#[test]
fn random_checkpoint_layout_matches_the_released_layout() {
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("config.json")).expect("config"),
    )
    .expect("json");
    for (dir, mxfp4) in [
        (fixture(), true),
        (common::fixtures_root().join("gpt-oss-tiny-bf16"), false),
    ] {
        let bytes = std::fs::read(dir.join("model.safetensors")).expect("weights");
        let st = SafeTensors::deserialize(&bytes).expect("parse");
        let mut real: Vec<(String, String, Vec<usize>)> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, format!("{:?}", v.dtype()), v.shape().to_vec()))
            .collect();
        let mut ours: Vec<(String, String, Vec<usize>)> = tensor_layout(&config, mxfp4)
            .expect("layout")
            .into_iter()
            .map(|t| (t.name, t.dtype, t.shape))
            .collect();
        real.sort();
        ours.sort();
        assert_eq!(ours, real, "layout for mxfp4={mxfp4}");
    }
    // And the full-size preset has the 459 tensors and ~13.8 GB of the released 20b.
    let layout = tensor_layout(
        &ossa_engine::random_checkpoint::Preset::GptOss20b.config_json(),
        true,
    )
    .expect("20b");
    assert_eq!(layout.len(), 459);
    let bytes: usize = layout
        .iter()
        .map(|t| t.shape.iter().product::<usize>() * if t.dtype == "BF16" { 2 } else { 1 })
        .sum();
    assert!((13_000_000_000..14_000_000_000).contains(&bytes), "{bytes}");
}

/// A sharded checkpoint (index + shards) loads and computes exactly what the single file does;
/// a shard the index names but that is missing is reported.
#[test]
fn sharded_checkpoint_equals_single_file() {
    let config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture().join("config.json")).expect("config"),
    )
    .expect("json");
    let (single, sharded) = (temp_dir(), temp_dir());
    let opts = RandomCheckpointOptions {
        seed: 7,
        ..RandomCheckpointOptions::default()
    };
    let one =
        write_random_checkpoint(&config, single.path(), &opts, &mut |_, _| {}).expect("single");
    assert_eq!(one.files, vec![single.path().join("model.safetensors")]);
    let many = write_random_checkpoint(
        &config,
        sharded.path(),
        &RandomCheckpointOptions {
            max_shard_bytes: 600_000,
            ..opts
        },
        &mut |_, _| {},
    )
    .expect("sharded");
    assert!(many.files.len() >= 4, "{:?}", many.files);
    for file in many
        .files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "safetensors"))
    {
        let bytes = std::fs::read(file).expect("shard");
        SafeTensors::deserialize(&bytes).expect("the official reader accepts every shard");
    }
    let tokens: Vec<u32> = (0..20).map(|i| (i * 53) % 1100).collect();
    let a = load(single.path())
        .expect("single")
        .forward(&tokens, Logits::All, None)
        .expect("forward");
    let b = load(sharded.path())
        .expect("sharded")
        .forward(&tokens, Logits::All, None)
        .expect("forward");
    assert_eq!(a, b);
    assert!(a.iter().all(|v| v.is_finite()));
    let shard = many
        .files
        .iter()
        .find(|f| f.to_string_lossy().contains("-of-"))
        .expect("a shard");
    std::fs::remove_file(shard).expect("rm shard");
    let err = load(sharded.path()).expect_err("missing shard");
    assert!(matches!(err, EngineError::MissingShard { .. }), "{err}");
    assert!(
        err.to_string().contains(
            &shard
                .file_name()
                .expect("name")
                .to_string_lossy()
                .to_string()
        ),
        "{err}"
    );
}
