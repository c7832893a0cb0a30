//! Hub ids are downloaded through the real hf-hub client from a server on loopback that speaks
//! huggingface.co's endpoints: the file list (`/api/models/{owner}/{name}/revision/{rev}`) and
//! resolve (`/{owner}/{name}/resolve/{rev}/{file}` with ETag = SHA-256, X-Repo-Commit, Range and
//! Content-Range; 404 with X-Error-Code for missing files). No other network is touched:
//! `HF_ENDPOINT` points the client at the loopback server.

#![cfg(feature = "hub")]

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use ossa_engine::hub::{DownloadProgress, resolve_model};
use ossa_engine::random_checkpoint::{RandomCheckpointOptions, write_random_checkpoint};
use ossa_engine::{DType, Engine, LoadOptions, Logits};
use sha2::{Digest, Sha256};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";

type Log = Arc<Mutex<Vec<(String, String)>>>;

/// Serves `repos` (id → directory) until the process ends; returns its base URL and a log of
/// (method, path) requests.
fn serve(repos: HashMap<String, PathBuf>) -> (String, Log) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let thread_log = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let repos = repos.clone();
            let log = thread_log.clone();
            std::thread::spawn(move || {
                let _ = handle(stream, &repos, &log);
            });
        }
    });
    (url, log)
}

fn handle(
    mut stream: TcpStream,
    repos: &HashMap<String, PathBuf>,
    log: &Log,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let mut range: Option<(usize, Option<usize>)> = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = value
                .trim()
                .strip_prefix("bytes=")
                .and_then(|r| r.split_once('-'))
                .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok())));
        }
    }
    let mut parts = request.split_whitespace();
    let (method, path) = (
        parts.next().unwrap_or("").to_string(),
        parts.next().unwrap_or("").to_string(),
    );
    log.lock()
        .expect("log")
        .push((method.clone(), path.clone()));

    // GET /api/models/{owner}/{name}/revision/{rev}: the repository's file list.
    if let Some(rest) = path.strip_prefix("/api/models/") {
        let segments: Vec<&str> = rest.splitn(4, '/').collect();
        let listing = match segments.as_slice() {
            [owner, name, "revision", _rev] => repos.get(&format!("{owner}/{name}")),
            _ => None,
        };
        let (status, body) = match listing {
            Some(dir) => {
                let mut files: Vec<serde_json::Value> = std::fs::read_dir(dir)?
                    .filter_map(|e| e.ok())
                    .filter(|e| e.path().is_file())
                    .map(|e| serde_json::json!({"rfilename": e.file_name().to_string_lossy()}))
                    .collect();
                files.sort_by_key(|v| v.to_string());
                let body = serde_json::json!({"sha": COMMIT, "siblings": files}).to_string();
                ("200 OK", body)
            }
            None => (
                "404 Not Found",
                r#"{"error":"Repository not found"}"#.to_string(),
            ),
        };
        write!(
            stream,
            "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )?;
        return stream.flush();
    }

    // /{owner}/{name}/resolve/{revision}/{file...}
    let segments: Vec<&str> = path.trim_start_matches('/').splitn(5, '/').collect();
    let file = match segments.as_slice() {
        [owner, name, "resolve", _rev, file] => repos
            .get(&format!("{owner}/{name}"))
            .map(|dir| dir.join(file))
            .filter(|p| p.is_file()),
        _ => None,
    };
    let Some(file) = file else {
        let body = b"Entry not found";
        write!(
            stream,
            "HTTP/1.1 404 Not Found\r\nX-Error-Code: EntryNotFound\r\nX-Repo-Commit: {COMMIT}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        if method == "GET" {
            stream.write_all(body)?;
        }
        return Ok(());
    };
    let mut bytes = Vec::new();
    std::fs::File::open(&file)?.read_to_end(&mut bytes)?;
    // Like the hub for LFS files: the ETag is the content's SHA-256. A file named
    // `*.corrupt-etag` is announced with the hash of other bytes, as a damaged transfer would be.
    let hashed: &[u8] = if file.to_string_lossy().contains("corrupt") {
        b"other bytes"
    } else {
        &bytes
    };
    let etag: String = Sha256::digest(hashed)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let total = bytes.len();
    let (start, end) = match range {
        Some((start, end)) => (start.min(total), end.map_or(total, |e| (e + 1).min(total))),
        None => (0, total),
    };
    let body = &bytes[start..end.max(start)];
    let status = if range.is_some() {
        "206 Partial Content"
    } else {
        "200 OK"
    };
    write!(
        stream,
        "HTTP/1.1 {status}\r\nETag: \"{etag}\"\r\nX-Repo-Commit: {COMMIT}\r\nContent-Range: bytes {start}-{}/{total}\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
        end.saturating_sub(1),
        body.len()
    )?;
    if method == "GET" {
        stream.write_all(body)?;
        if body.len() > 1 {
            // A real transfer, not hf-hub's one-byte metadata probe.
            log.lock().expect("log").push(("BODY".into(), path.clone()));
        }
    }
    stream.flush()
}

#[derive(Default)]
struct Recorder(Mutex<Vec<String>>);

impl DownloadProgress for Recorder {
    fn update(&self, _file: &str, _done: u64, _total: u64) {}
    fn finished(&self, file: &str) {
        self.0.lock().expect("lock").push(file.to_string());
    }
}

fn transfers(log: &Log, suffix: &str) -> usize {
    log.lock()
        .expect("log")
        .iter()
        .filter(|(m, p)| m == "BODY" && p.ends_with(suffix))
        .count()
}

#[test]
fn downloads_once_into_the_hf_cache_and_loads() {
    let cache = tempfile::tempdir().expect("cache dir");
    let sharded = tempfile::tempdir().expect("sharded repo");
    let tiny = common::fixtures_root().join("gpt-oss-tiny-mxfp4");
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tiny.join("config.json")).expect("config"))
            .expect("json");
    write_random_checkpoint(
        &config,
        sharded.path(),
        &RandomCheckpointOptions {
            seed: 3,
            max_shard_bytes: 800_000,
            ..RandomCheckpointOptions::default()
        },
        &mut |_, _| {},
    )
    .expect("sharded checkpoint");
    let corrupt = tempfile::Builder::new()
        .prefix("corrupt")
        .tempdir()
        .expect("corrupt repo");
    for file in ["config.json", "model.safetensors"] {
        std::fs::copy(tiny.join(file), corrupt.path().join(file)).expect("copy");
    }
    let repos = HashMap::from([
        ("test-org/corrupt".to_string(), corrupt.path().to_path_buf()),
        ("test-org/tiny".to_string(), tiny.clone()),
        (
            "test-org/tiny-sharded".to_string(),
            sharded.path().to_path_buf(),
        ),
    ]);
    let (url, log) = serve(repos);
    // SAFETY: this test binary has this single test, so no other thread reads the environment.
    unsafe {
        std::env::set_var("HF_ENDPOINT", &url);
        std::env::set_var("HF_HUB_CACHE", cache.path());
        std::env::set_var("HF_HUB_DISABLE_IMPLICIT_TOKEN", "1");
        std::env::remove_var("HF_TOKEN");
    }

    let recorder = Arc::new(Recorder::default());
    let dir = resolve_model("test-org/tiny", Some(recorder.clone())).expect("download");
    assert!(
        dir.starts_with(
            cache
                .path()
                .join("models--test-org--tiny")
                .join("snapshots")
                .join(COMMIT)
        ),
        "{}",
        dir.display()
    );
    assert_eq!(
        std::fs::read(dir.join("model.safetensors")).expect("weights"),
        std::fs::read(tiny.join("model.safetensors")).expect("original")
    );
    let finished = recorder.0.lock().expect("lock").clone();
    assert!(
        finished.contains(&"config.json".to_string())
            && finished.contains(&"model.safetensors".to_string()),
        "{finished:?}"
    );

    // The downloaded model computes the reference logits.
    let r = common::read_reference(&tiny);
    let mut engine = Engine::load(
        &dir,
        &LoadOptions {
            dtype: DType::F32,
            threads: Some(1),
        },
    )
    .expect("load");
    let logits = engine
        .forward(&r.tokens, Logits::Last, None)
        .expect("forward");
    let vocab = logits.len();
    assert!(common::max_abs_diff(&logits, &r.logits[(r.tokens.len() - 1) * vocab..]) < 1e-3);

    // Asking again touches no network at all: a complete cached model is used offline.
    let requests = log.lock().expect("log").len();
    let again = resolve_model("test-org/tiny", None).expect("cached");
    assert_eq!(again, dir);
    assert_eq!(log.lock().expect("log").len(), requests);
    assert_eq!(transfers(&log, "/tiny/resolve/main/model.safetensors"), 1);
    assert_eq!(transfers(&log, "/tiny/resolve/main/config.json"), 1);

    // A sharded repository: the index is read and every shard it names is fetched.
    let dir = resolve_model("test-org/tiny-sharded@main", None).expect("sharded download");
    let shards: Vec<String> = std::fs::read_dir(&dir)
        .expect("snapshot")
        .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().to_string()))
        .filter(|n| n.contains("-of-"))
        .collect();
    assert!(shards.len() >= 3, "{shards:?}");
    let mut engine = Engine::load(
        &dir,
        &LoadOptions {
            dtype: DType::F32,
            threads: Some(1),
        },
    )
    .expect("load sharded");
    assert!(
        engine
            .forward(&[1, 2, 3], Logits::Last, None)
            .expect("forward")
            .iter()
            .all(|v| v.is_finite())
    );

    // Unknown repository and malformed ids are clear errors.
    let err = resolve_model("test-org/missing", None).expect_err("missing repo");
    ossa_test_support::assert_contains_all(&err.to_string(), &["cannot list", "test-org/missing"]);

    // A transfer whose bytes do not hash to the hub's SHA-256 is rejected and not kept, so the
    // next attempt downloads again instead of loading damaged weights.
    let err = resolve_model("test-org/corrupt", None).expect_err("corrupt download");
    assert!(err.to_string().contains("corrupt"), "{err}");
    let before = transfers(&log, "/corrupt/resolve/main/config.json");
    let err = resolve_model("test-org/corrupt", None).expect_err("still corrupt");
    assert!(err.to_string().contains("corrupt"), "{err}");
    assert_eq!(
        transfers(&log, "/corrupt/resolve/main/config.json"),
        before + 1
    );
    let err = resolve_model("not-a-dir-or-id", None).expect_err("bad id");
    let err = err.to_string();
    ossa_test_support::assert_contains_all(&err, &["unknown model", "gpt-oss:20b", "--model DIR"]);
}
