//! The prompt cache on disk, on the tiny fixtures: a second engine (as a new process would)
//! reads a stored prefix back and computes exactly what the engine that wrote it would have
//! computed next; bad files (truncated, corrupted, garbage, foreign, links, FIFOs) are skipped
//! with one warning line and never change a result; the folder stays under its bound by
//! evicting the least recently used files; concurrent engines share a folder safely.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use common::{max_abs_diff, read_reference};
use ossa_engine::{
    CacheStats, DType, Engine, GenerateParams, LoadOptions, Logits, PromptCacheOptions,
};

const MXFP4: &str = "gpt-oss-tiny-mxfp4";
const BF16: &str = "gpt-oss-tiny-bf16";
/// Small blocks, so the fixture's 40-token prompts span full and partial blocks.
const BLOCK: usize = 16;

fn load(model: &str, dtype: DType) -> Engine {
    Engine::load(
        &common::fixtures_root().join(model),
        &LoadOptions {
            dtype,
            threads: Some(2),
        },
    )
    .expect("load tiny fixture")
}

fn options(dir: &Path) -> PromptCacheOptions {
    PromptCacheOptions {
        block_tokens: BLOCK,
        ..PromptCacheOptions::new(dir)
    }
}

fn cached(model: &str, dtype: DType, dir: &Path) -> Engine {
    let mut engine = load(model, dtype);
    engine
        .set_prompt_cache(Some(&options(dir)))
        .expect("prompt cache on");
    engine
}

/// What one greedy generation gave.
#[derive(Debug)]
struct Outcome {
    tokens: Vec<u32>,
    stats: CacheStats,
    /// Logits of one more token run through the KV cache the generation left: they depend on
    /// every key and value in it, so equal bits mean equal caches.
    next_logits: Vec<f32>,
}

fn generate(engine: &mut Engine, prompt: &[u32], max_tokens: usize) -> Outcome {
    let params = GenerateParams {
        max_tokens,
        ..GenerateParams::default()
    };
    let (tokens, _, stats) = common::generate_to_end(engine, prompt, &params);
    let last = *tokens.last().expect("a token");
    let next_logits = engine
        .forward(&[last], Logits::Last, None)
        .expect("one more token");
    Outcome {
        tokens,
        stats,
        next_logits,
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The fixture's 40-token prompt, and another sharing its first 30 tokens.
fn prompts() -> (Vec<u32>, Vec<u32>) {
    let r = read_reference(&common::fixtures_root().join(MXFP4));
    let mut first = r.tokens[..30].to_vec();
    first.extend([1, 2, 3]);
    (first, r.tokens)
}

/// The block files in `dir`, with their first position, in position order.
fn block_files(dir: &Path) -> Vec<(PathBuf, usize)> {
    let mut files: Vec<(PathBuf, usize)> = std::fs::read_dir(dir)
        .expect("list the cache")
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let start = name.strip_suffix(".kv")?.rsplit('-').next()?.parse().ok()?;
            Some((e.path(), start))
        })
        .collect();
    files.sort_by(|a, b| (a.1, &a.0).cmp(&(b.1, &b.0)));
    files
}

fn files_at(dir: &Path, start: usize) -> Vec<PathBuf> {
    block_files(dir)
        .into_iter()
        .filter(|(_, s)| *s == start)
        .map(|(p, _)| p)
        .collect()
}

/// Log lines written while `f` runs on this thread.
fn with_logs<T>(f: impl FnOnce() -> T) -> (T, Vec<String>) {
    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);
    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log sink").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let sink = Sink::default();
    let writer = sink.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .finish();
    let out = tracing::subscriber::with_default(subscriber, f);
    let text = String::from_utf8(sink.0.lock().expect("log sink").clone()).expect("utf-8 logs");
    (out, text.lines().map(str::to_string).collect())
}

fn warnings(lines: &[String]) -> Vec<&String> {
    lines
        .iter()
        .filter(|l| l.contains("prompt cache"))
        .collect()
}

/// A second engine reads the shared prefix from disk and then computes, bit for bit, what the
/// engine holding it in memory computes; both give the cold run's tokens.
fn disk_prefix_matches_the_warm_run(dtype: DType, tolerance: f32) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, second) = prompts();

    let mut writer = cached(MXFP4, dtype, dir.path());
    let wrote = generate(&mut writer, &first, 6);
    assert_eq!(wrote.stats.disk_tokens, 0, "an empty folder");
    assert_eq!(
        block_files(dir.path())
            .iter()
            .map(|f| f.1)
            .collect::<Vec<_>>(),
        vec![0, 16, 32],
        "33 prompt + 5 generated positions: two full blocks and a partial one"
    );

    // A new engine, as a new process: the 30 shared positions come from disk.
    let (reader, logs) = with_logs(|| {
        let mut reader = cached(MXFP4, dtype, dir.path());
        let outcome = generate(&mut reader, &second, 6);
        (reader, outcome)
    });
    let (reader, from_disk) = reader;
    assert!(warnings(&logs).is_empty(), "{logs:?}");
    assert_eq!(
        (
            from_disk.stats.reused_tokens,
            from_disk.stats.disk_tokens,
            from_disk.stats.computed_tokens
        ),
        (30, 30, 10)
    );
    let stats = reader.prompt_cache_stats().expect("on");
    assert_eq!((stats.hits, stats.read_tokens), (1, 30));
    assert_eq!(stats.rejected_files, 0);

    // The engine that never restarted: the same prefix from memory.
    let mut warm = load(MXFP4, dtype);
    generate(&mut warm, &first, 6);
    let in_memory = generate(&mut warm, &second, 6);
    assert_eq!(in_memory.stats.reused_tokens, 30);
    assert_eq!(from_disk.tokens, in_memory.tokens);
    assert_eq!(bits(&from_disk.next_logits), bits(&in_memory.next_logits));

    // And a cold run: reusing a prefix (from memory or disk) computes the same answer, within
    // the rounding of a different batch shape.
    let mut cold = load(MXFP4, dtype);
    let fresh = generate(&mut cold, &second, 6);
    assert_eq!(fresh.stats.reused_tokens, 0);
    assert_eq!(from_disk.tokens, fresh.tokens);
    let diff = max_abs_diff(&from_disk.next_logits, &fresh.next_logits);
    assert!(diff < tolerance, "disk prefix vs cold run: {diff}");
}

#[test]
fn disk_prefix_matches_the_warm_run_f32() {
    disk_prefix_matches_the_warm_run(DType::F32, 1e-4);
    let r = read_reference(&common::fixtures_root().join(MXFP4));
    let dir = tempfile::tempdir().expect("temp dir");
    // The same prompt twice across engines: all but its last token from disk, the reference's
    // tokens.
    generate(&mut cached(MXFP4, DType::F32, dir.path()), &r.tokens, 6);
    let again = generate(&mut cached(MXFP4, DType::F32, dir.path()), &r.tokens, 6);
    assert_eq!(
        (again.stats.disk_tokens, again.stats.computed_tokens),
        (39, 1)
    );
    assert_eq!(again.tokens, r.greedy[..6]);
}

#[test]
fn disk_prefix_matches_the_warm_run_q8() {
    disk_prefix_matches_the_warm_run(DType::Q8, 0.05);
}

/// A conversation that grows writes only its new positions, and the partial block it wrote
/// before is replaced by the longer one.
#[test]
fn a_growing_conversation_extends_its_files() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, prompt) = prompts();
    let mut engine = cached(MXFP4, DType::F32, dir.path());
    let turn1 = generate(&mut engine, &prompt, 4);
    // 40 + 3 positions: blocks at 0, 16 and a partial one at 32.
    let tail = files_at(dir.path(), 32);
    assert_eq!(tail.len(), 1);
    let written = engine.prompt_cache_stats().expect("on").written_tokens;
    assert_eq!(written, 43);

    let mut next: Vec<u32> = engine.cached_tokens()[..43].to_vec();
    next.extend([turn1.tokens[3], 7, 8, 9, 10, 11, 12]);
    generate(&mut engine, &next, 4);
    // 50 + 3 positions: the block at 32 is full now, the old partial one is gone.
    let at32 = files_at(dir.path(), 32);
    assert_eq!(at32.len(), 1, "{at32:?}");
    assert_ne!(at32, tail);
    assert_eq!(files_at(dir.path(), 48).len(), 1);
    let stats = engine.prompt_cache_stats().expect("on");
    assert_eq!(
        stats.written_tokens - written,
        16 + 5,
        "the rewritten block at 32 and the new tail"
    );

    // A new engine reads the whole conversation but its last token.
    let mut fresh = cached(MXFP4, DType::F32, dir.path());
    let resumed = generate(&mut fresh, &next, 4);
    assert_eq!(resumed.stats.disk_tokens, next.len() - 1);
    let mut cold = load(MXFP4, DType::F32);
    assert_eq!(resumed.tokens, generate(&mut cold, &next, 4).tokens);
}

/// One way to spoil a file.
#[derive(Debug, Clone, Copy)]
enum Damage {
    /// The last 100 bytes cut off.
    Truncated,
    /// One byte of the keys and values flipped: only the checksum notices.
    FlippedKvByte,
    /// One token of the header changed: the file no longer belongs under its name.
    FlippedToken,
    /// Random bytes.
    Garbage,
    /// A valid header claiming four billion positions.
    HugeCount,
    /// Empty.
    Empty,
    /// A link to another block file.
    Symlink,
    /// A FIFO: opening it for reading would wait forever.
    Fifo,
}

fn damage(path: &Path, how: Damage) {
    let mut bytes = std::fs::read(path).expect("read block");
    match how {
        Damage::Truncated => bytes.truncate(bytes.len() - 100),
        Damage::FlippedKvByte => {
            let at = bytes.len() - 50;
            bytes[at] ^= 0x10;
        }
        Damage::FlippedToken => bytes[104] ^= 1,
        Damage::Garbage => {
            let mut state = 0x9e37_79b9_7f4a_7c15u64;
            for b in &mut bytes {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                *b = state as u8;
            }
        }
        Damage::HugeCount => bytes[32..36].copy_from_slice(&u32::MAX.to_le_bytes()),
        Damage::Empty => bytes.clear(),
        Damage::Symlink | Damage::Fifo => {
            std::fs::remove_file(path).expect("remove block");
            if let Damage::Symlink = how {
                let other = path.with_file_name("elsewhere");
                std::fs::write(&other, &bytes).expect("write target");
                std::os::unix::fs::symlink(&other, path).expect("symlink");
            } else {
                let status = std::process::Command::new("mkfifo")
                    .arg(path)
                    .status()
                    .expect("mkfifo runs");
                assert!(status.success(), "mkfifo");
            }
            return;
        }
    }
    std::fs::write(path, bytes).expect("write block");
}

/// Every kind of damage, to a block found by name (at 0) and to one found among partial matches
/// (at 16): one warning line, the file removed, the positions before it still used, the answer
/// the cold run's; the next engine writes a good file again.
#[test]
fn bad_files_are_skipped_with_one_warning() {
    let (first, second) = prompts();
    let mut cold = load(MXFP4, DType::F32);
    let want = generate(&mut cold, &second, 6);
    for how in [
        Damage::Truncated,
        Damage::FlippedKvByte,
        Damage::FlippedToken,
        Damage::Garbage,
        Damage::HugeCount,
        Damage::Empty,
        Damage::Symlink,
        Damage::Fifo,
    ] {
        for start in [0, 16] {
            let case = format!("{how:?} at {start}");
            let dir = tempfile::tempdir().expect("temp dir");
            generate(&mut cached(MXFP4, DType::F32, dir.path()), &first, 6);
            let [bad] = &files_at(dir.path(), start)[..] else {
                panic!("{case}: one block at {start}");
            };
            damage(bad, how);

            let ((outcome, stats), logs) = with_logs(|| {
                let mut engine = cached(MXFP4, DType::F32, dir.path());
                let outcome = generate(&mut engine, &second, 6);
                (outcome, engine.prompt_cache_stats().expect("on"))
            });
            let warned = warnings(&logs);
            assert_eq!(warned.len(), 1, "{case}: {logs:?}");
            assert!(warned[0].contains("ignoring"), "{case}: {}", warned[0]);
            assert_eq!(logs.len(), 1, "{case}: one line: {logs:?}");
            assert_eq!(stats.rejected_files, 1, "{case}");
            assert_eq!(outcome.stats.disk_tokens, start, "{case}");
            assert_eq!(outcome.tokens, want.tokens, "{case}");
            let diff = max_abs_diff(&outcome.next_logits, &want.next_logits);
            assert!(diff < 1e-4, "{case}: {diff}");

            // Removed and rewritten by that engine: the next one reads it all, quietly.
            let (again, logs) =
                with_logs(|| generate(&mut cached(MXFP4, DType::F32, dir.path()), &second, 6));
            assert!(warnings(&logs).is_empty(), "{case}: {logs:?}");
            assert_eq!(again.stats.disk_tokens, 39, "{case}");
            assert_eq!(again.tokens, want.tokens, "{case}");
        }
    }
}

/// A file that disappears (another process evicted it) stops the read there, without a
/// warning.
#[test]
fn a_vanished_block_ends_the_read_quietly() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, second) = prompts();
    generate(&mut cached(MXFP4, DType::F32, dir.path()), &first, 6);
    for path in files_at(dir.path(), 16) {
        std::fs::remove_file(path).expect("remove");
    }
    let (outcome, logs) =
        with_logs(|| generate(&mut cached(MXFP4, DType::F32, dir.path()), &second, 6));
    assert!(logs.is_empty(), "{logs:?}");
    assert_eq!(outcome.stats.disk_tokens, 16);
}

/// Files of another model, or of the same model in another dtype, share the folder without
/// being used; one copied under this model's name is refused as foreign.
#[test]
fn other_models_and_dtypes_share_the_folder_safely() {
    let (first, second) = prompts();
    for (model, dtype) in [(BF16, DType::F32), (MXFP4, DType::Q8)] {
        let case = format!("{model} {dtype:?}");
        let dir = tempfile::tempdir().expect("temp dir");
        generate(&mut cached(MXFP4, DType::F32, dir.path()), &first, 6);
        let theirs = files_at(dir.path(), 0);
        assert_eq!(theirs.len(), 1);

        let mut cold = load(model, dtype);
        let want = generate(&mut cold, &second, 6);
        let (outcome, logs) =
            with_logs(|| generate(&mut cached(model, dtype, dir.path()), &second, 6));
        assert!(logs.is_empty(), "{case}: {logs:?}");
        assert_eq!(outcome.stats.disk_tokens, 0, "{case}");
        assert_eq!(
            bits(&outcome.next_logits),
            bits(&want.next_logits),
            "{case}"
        );
        // Both models' files are there now.
        let ours: Vec<PathBuf> = files_at(dir.path(), 0)
            .into_iter()
            .filter(|p| !theirs.contains(p))
            .collect();
        assert_eq!(ours.len(), 1, "{case}");

        // The other model's bytes under this model's name.
        std::fs::copy(&theirs[0], &ours[0]).expect("copy");
        let (outcome, logs) =
            with_logs(|| generate(&mut cached(model, dtype, dir.path()), &second, 6));
        let warned = warnings(&logs);
        assert_eq!(warned.len(), 1, "{case}: {logs:?}");
        assert!(warned[0].contains("another model"), "{case}: {}", warned[0]);
        assert_eq!(outcome.stats.disk_tokens, 0, "{case}");
        assert_eq!(
            bits(&outcome.next_logits),
            bits(&want.next_logits),
            "{case}"
        );
        // The first model still reads its own.
        let mine = generate(&mut cached(MXFP4, DType::F32, dir.path()), &second, 6);
        assert_eq!(mine.stats.disk_tokens, 30, "{case}");
    }
}

/// Past its bound the folder drops the least recently used conversation, whole, and keeps a
/// recently read one.
#[test]
fn the_bound_evicts_the_least_recently_used() {
    let dir = tempfile::tempdir().expect("temp dir");
    let r = read_reference(&common::fixtures_root().join(MXFP4));
    // Three conversations with nothing in common, each 24 positions: two blocks.
    let conversation = |first: u32| -> Vec<u32> {
        let mut tokens = vec![first];
        tokens.extend(&r.tokens[1..24]);
        tokens
    };
    let (x, y, z) = (conversation(100), conversation(200), conversation(300));
    let mut probe = cached(MXFP4, DType::F32, dir.path());
    generate(&mut probe, &x, 1);
    let one: u64 = block_files(dir.path())
        .iter()
        .map(|(p, _)| std::fs::metadata(p).expect("size").len())
        .sum();
    std::fs::remove_dir_all(dir.path()).expect("empty the folder");

    // Room for two conversations, not three.
    let bounded = PromptCacheOptions {
        max_bytes: 2 * one + one / 2,
        ..options(dir.path())
    };
    let mut engine = load(MXFP4, DType::F32);
    engine.set_prompt_cache(Some(&bounded)).expect("on");
    generate(&mut engine, &x, 1);
    generate(&mut engine, &y, 1);
    // x is read again (from disk: a fresh engine), so y is now the least recently used.
    let mut reader = load(MXFP4, DType::F32);
    reader.set_prompt_cache(Some(&bounded)).expect("on");
    assert_eq!(generate(&mut reader, &x, 1).stats.disk_tokens, 23);
    generate(&mut engine, &z, 1);
    let stats = engine.prompt_cache_stats().expect("on");
    assert_eq!(stats.evicted_files, 2, "y's two blocks");
    let total: u64 = block_files(dir.path())
        .iter()
        .map(|(p, _)| std::fs::metadata(p).expect("size").len())
        .sum();
    assert!(
        total <= bounded.max_bytes,
        "{total} > {}",
        bounded.max_bytes
    );

    let mut fresh = load(MXFP4, DType::F32);
    fresh.set_prompt_cache(Some(&bounded)).expect("on");
    // y last: writing it evicts again.
    for (name, prompt, kept) in [("x", &x, 23), ("z", &z, 23), ("y", &y, 0)] {
        let outcome = generate(&mut fresh, prompt, 1);
        assert_eq!(outcome.stats.disk_tokens, kept, "{name}");
    }
}

/// A bound smaller than one block: nothing is written rather than written and evicted.
#[test]
fn a_tiny_bound_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_, prompt) = prompts();
    let mut engine = load(MXFP4, DType::F32);
    let tiny = PromptCacheOptions {
        max_bytes: 1000,
        ..options(dir.path())
    };
    engine.set_prompt_cache(Some(&tiny)).expect("on");
    generate(&mut engine, &prompt, 3);
    assert!(block_files(dir.path()).is_empty());
}

/// Turned off, the engine neither reads nor writes.
#[test]
fn off_reads_and_writes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (first, second) = prompts();
    generate(&mut cached(MXFP4, DType::F32, dir.path()), &first, 6);
    let before = block_files(dir.path());
    let mut engine = cached(MXFP4, DType::F32, dir.path());
    engine.set_prompt_cache(None).expect("off");
    assert_eq!(engine.prompt_cache_stats(), None);
    let outcome = generate(&mut engine, &second, 6);
    assert_eq!(outcome.stats.disk_tokens, 0);
    assert_eq!(block_files(dir.path()), before);
}

/// Engines in parallel threads (as processes would) write and read the same folder: every
/// result is the one-engine result, and no file is ever found bad.
#[test]
fn concurrent_engines_share_a_folder() {
    let dir = tempfile::tempdir().expect("temp dir");
    let r = read_reference(&common::fixtures_root().join(MXFP4));
    let prompts: Vec<Vec<u32>> = (0..6u32)
        .map(|i| {
            let mut p = r.tokens[..20].to_vec();
            p.extend([i + 1, i + 2, (i * 7) % 50 + 3]);
            p.extend(&r.tokens[20..30]);
            p
        })
        .collect();
    let mut alone = load(MXFP4, DType::F32);
    let want: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| {
            alone.clear_cache();
            generate(&mut alone, p, 4).tokens
        })
        .collect();
    let handles: Vec<_> = (0..4)
        .map(|worker| {
            let dir = dir.path().to_path_buf();
            let prompts = prompts.clone();
            std::thread::spawn(move || {
                with_logs(|| {
                    let mut engine = cached(MXFP4, DType::F32, &dir);
                    let mut got = Vec::new();
                    // Workers walk the prompts in different orders.
                    let step = [1, 5, 7, 11][worker];
                    for round in 0..3 {
                        for k in 0..prompts.len() {
                            let i = (k * step + round) % prompts.len();
                            engine.clear_cache();
                            got.push((i, generate(&mut engine, &prompts[i], 4).tokens));
                        }
                    }
                    got
                })
            })
        })
        .collect();
    for handle in handles {
        let (got, logs) = handle.join().expect("worker");
        assert!(logs.is_empty(), "{logs:?}");
        for (i, tokens) in got {
            assert_eq!(tokens, want[i], "prompt {i}");
        }
    }
}

/// The folder and its files are made private; a link or a file in its place is refused.
#[test]
fn the_folder_is_private() {
    let root = tempfile::tempdir().expect("temp dir");
    let open = root.path().join("open");
    std::fs::create_dir(&open).expect("mkdir");
    std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).expect("chmod");
    let mut engine = cached(MXFP4, DType::F32, &open);
    let mode = std::fs::metadata(&open).expect("stat").permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    // The files hold the conversation's tokens: only their owner reads them.
    let (_, prompt) = prompts();
    generate(&mut engine, &prompt, 2);
    let files = block_files(&open);
    assert!(!files.is_empty());
    for (file, _) in files {
        let mode = std::fs::metadata(&file).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{}", file.display());
    }
    let fresh = root.path().join("a/b/cache");
    engine
        .set_prompt_cache(Some(&options(&fresh)))
        .expect("created");
    let mode = std::fs::metadata(&fresh)
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);

    let link = root.path().join("link");
    std::os::unix::fs::symlink(&open, &link).expect("symlink");
    let error = engine
        .set_prompt_cache(Some(&options(&link)))
        .expect_err("a link");
    assert!(error.to_string().contains("link"), "{error}");
    let file = root.path().join("file");
    std::fs::write(&file, "x").expect("file");
    assert!(engine.set_prompt_cache(Some(&options(&file))).is_err());
    let bad_block = PromptCacheOptions {
        block_tokens: 0,
        ..options(&open)
    };
    assert!(engine.set_prompt_cache(Some(&bad_block)).is_err());
}
