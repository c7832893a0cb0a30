//! Models by name through the real binary, with a fresh HOME and a Hugging Face hub of our own
//! on loopback (`HF_ENDPOINT`; never huggingface.co): `ossa pull gpt-oss:20b` downloads the tiny
//! MXFP4 checkpoint in the hub's shape (and resumes a partial file with a Range request),
//! `ossa list` / `ossa show` describe it, `generate` and `bench` find it by name (and by default)
//! with the hub gone, `ossa rm` asks before freeing it. Unknown names list the known ones, and a
//! hub that accepts connections but never answers is reported, naming the endpoint and the way
//! out, instead of waited on.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use sha2::{Digest, Sha256};

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "openai/gpt-oss-20b";
const CARD: &str = "---\nlicense: apache-2.0\npipeline_tag: text-generation\n---\n# tiny\n";

fn fixture() -> PathBuf {
    ossa_test_support::fixtures().join("gpt-oss-tiny-mxfp4")
}

/// A file the hub serves, with the ETag the real hub gives it: the SHA-256 for LFS files (the
/// weights), a 40-hex git blob id for small text files.
struct Served {
    bytes: Vec<u8>,
    etag: String,
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `openai/gpt-oss-20b` at COMMIT, made of the tiny fixture's files and a model card; with
/// `corrupt`, the weights' bytes are damaged in transit (their ETag still the true SHA-256).
fn repo_files(corrupt: bool) -> HashMap<String, Served> {
    let mut files = HashMap::new();
    for name in ["config.json", "model.safetensors"] {
        let mut bytes = std::fs::read(fixture().join(name)).expect("fixture file");
        let sha = sha256_hex(&bytes);
        let etag = if name.ends_with(".safetensors") {
            if corrupt {
                let middle = bytes.len() / 2;
                bytes[middle] ^= 0x40;
            }
            sha
        } else {
            sha[..40].to_string()
        };
        files.insert(name.to_string(), Served { bytes, etag });
    }
    let card = CARD.as_bytes().to_vec();
    let etag = sha256_hex(&card)[..40].to_string();
    files.insert("README.md".into(), Served { bytes: card, etag });
    files
}

/// A loopback HTTP server answering as the Hugging Face hub does for the API hf-hub uses:
/// `GET /api/models/{repo}/revision/{rev}` (the file list) and `GET /{repo}/resolve/{rev}/{file}`
/// (ETag, `x-repo-commit`, Range requests answered 206 with `Content-Range`). It records each
/// request line with its Range header.
struct Hub {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
}

/// How the hub sends the weights' bytes.
#[derive(Clone, Copy, PartialEq)]
enum Weights {
    Whole,
    /// Half the body, then the connection stays open with nothing more on it.
    StallMidway,
}

impl Hub {
    fn start() -> Self {
        Self::serving(repo_files(false))
    }

    fn serving(files: HashMap<String, Served>) -> Self {
        Self::serving_weights(files, Weights::Whole)
    }

    fn serving_weights(files: HashMap<String, Served>, weights: Weights) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let files = Arc::new(files);
        let requests = Arc::new(Mutex::new(Vec::new()));
        let log = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (files, log) = (files.clone(), log.clone());
                std::thread::spawn(move || serve(stream, &files, &log, weights));
            }
        });
        Self { url, requests }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().expect("log").clone()
    }
}

fn serve(
    mut stream: TcpStream,
    files: &HashMap<String, Served>,
    log: &Mutex<Vec<String>>,
    weights: Weights,
) {
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    let mut range = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("range")
        {
            range = Some(value.trim().to_string());
        }
    }
    let path = request_line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .to_string();
    log.lock()
        .expect("log")
        .push(format!("{path} {}", range.as_deref().unwrap_or("-")));

    let listing = format!("/api/models/{REPO}/revision/main");
    let resolve = format!("/{REPO}/resolve/main/");
    let (status, headers, body): (&str, Vec<(String, String)>, Vec<u8>) = if path == listing {
        let siblings: Vec<_> = files.keys().map(|f| json!({"rfilename": f})).collect();
        let body = json!({"id": REPO, "sha": COMMIT, "siblings": siblings}).to_string();
        (
            "200 OK",
            vec![("Content-Type".into(), "application/json".into())],
            body.into_bytes(),
        )
    } else if let Some(file) = path.strip_prefix(&resolve)
        && let Some(served) = files.get(file)
    {
        let size = served.bytes.len();
        let mut headers = vec![
            ("ETag".into(), format!("\"{}\"", served.etag)),
            ("x-repo-commit".into(), COMMIT.into()),
        ];
        match range
            .as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split_once('-'))
        {
            Some((start, end)) => {
                let start: usize = start.parse().unwrap_or(0).min(size);
                let end: usize = end.parse().map_or(size, |e: usize| (e + 1).min(size));
                headers.push((
                    "Content-Range".into(),
                    format!("bytes {start}-{}/{size}", end.max(1) - 1),
                ));
                (
                    "206 Partial Content",
                    headers,
                    served.bytes[start..end].to_vec(),
                )
            }
            None => ("200 OK", headers, served.bytes.clone()),
        }
    } else {
        ("404 Not Found", Vec::new(), b"not found".to_vec())
    };
    let mut head = format!(
        "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    let _ = stream.write_all(head.as_bytes());
    let body_request = path.ends_with(".safetensors") && range.as_deref() != Some("bytes=0-0");
    if weights == Weights::StallMidway && body_request {
        let _ = stream.write_all(&body[..body.len() / 2]);
        let _ = stream.flush();
        // The connection stays open, silent, until the test process ends.
        std::thread::sleep(Duration::from_secs(3600));
    }
    let _ = stream.write_all(&body);
}

/// `ossa ARGS` with a fresh HOME (so a fresh Hugging Face cache and config) and the hub at
/// `endpoint`; no proxy, no token, nothing of the user's.
fn ossa(home: &Path, endpoint: &str, args: &[&str], stdin: &str) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ossa"));
    ossa_test_support::in_private_home(command.args(args), home)
        .env("HF_ENDPOINT", endpoint)
        .env("OSSA_HUB_TIMEOUT", "2");
    for var in [
        "HF_HOME",
        "HF_HUB_CACHE",
        "HF_TOKEN",
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        command.env_remove(var);
    }
    // A hang is a failure, not a stuck test run: 120 s is far beyond any answer here.
    ossa_test_support::run_piped_within(&mut command, stdin, Duration::from_secs(120))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn ok(output: &Output, what: &str) -> String {
    assert!(
        output.status.success(),
        "{what} failed: {}\nstdout: {}\nstderr: {}",
        output.status,
        text(&output.stdout),
        text(&output.stderr)
    );
    text(&output.stdout)
}

fn hub_cache(home: &Path) -> PathBuf {
    home.join(".cache/huggingface/hub")
}

fn snapshot(home: &Path) -> PathBuf {
    hub_cache(home).join(format!("models--openai--gpt-oss-20b/snapshots/{COMMIT}"))
}

/// The address of a port nothing listens on (bound, then released).
fn closed_endpoint() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    drop(listener);
    url
}

#[test]
fn pull_list_show_run_by_name_and_rm() {
    let home = tempfile::tempdir().expect("home");
    let home = home.path();
    let hub = Hub::start();

    let empty = ok(&ossa(home, &hub.url, &["list"], ""), "list");
    assert!(empty.contains("No models downloaded yet"), "{empty}");

    let pull = ossa(home, &hub.url, &["pull", "gpt-oss:20b"], "");
    let out = ok(&pull, "pull");
    let err = text(&pull.stderr);
    assert!(
        err.contains(&format!("Fetching {REPO} from {}", hub.url)),
        "{err}"
    );
    assert!(err.contains("model.safetensors:"), "{err}");
    let snap = snapshot(home);
    assert!(out.contains("gpt-oss:20b: ready"), "{out}");
    assert!(out.contains(&snap.display().to_string()), "{out}");
    for file in ["config.json", "model.safetensors"] {
        assert_eq!(
            std::fs::read(snap.join(file)).expect("pulled file"),
            std::fs::read(fixture().join(file)).expect("fixture file"),
            "{file}"
        );
    }
    assert!(
        hub.requests()
            .iter()
            .any(|r| r.starts_with(&format!("/{REPO}/resolve/main/model.safetensors"))),
        "{:?}",
        hub.requests()
    );

    // Pulled already: nothing is fetched again.
    let before = hub.requests().len();
    ok(
        &ossa(home, &hub.url, &["pull", "gpt-oss-20b"], ""),
        "pull again",
    );
    assert_eq!(hub.requests().len(), before, "{:?}", hub.requests());

    let listed = ok(&ossa(home, &hub.url, &["list"], ""), "list");
    let row = listed
        .lines()
        .find(|l| l.starts_with("gpt-oss:20b "))
        .unwrap_or_else(|| panic!("no gpt-oss:20b row in:\n{listed}"));
    assert!(row.ends_with(&snap.display().to_string()), "{row}");
    assert!(row.contains("MiB"), "{row}");

    let shown = ok(
        &ossa(home, &hub.url, &["show", "openai/gpt-oss-20b"], ""),
        "show",
    );
    for expected in [
        format!("model         gpt-oss:20b ({REPO})"),
        format!("location      {}", snap.display()),
        "layers        4 (hidden size 128)".to_string(),
        "experts       8, 2 active per token".to_string(),
        "context       131072 tokens".to_string(),
        "quantization  mxfp4".to_string(),
        "vocabulary    1100 tokens".to_string(),
        "license       apache-2.0".to_string(),
    ] {
        assert!(shown.contains(&expected), "{expected:?} not in:\n{shown}");
    }

    // The hub gone, the name (and generate's default, gpt-oss-20b) still loads the model.
    let offline = closed_endpoint();
    for args in [
        &[
            "generate",
            "--model",
            "gpt-oss:20b",
            "--prompt-tokens",
            "1,2,3",
            "--max-tokens",
            "2",
        ][..],
        &["generate", "--prompt-tokens", "1,2,3", "--max-tokens", "2"][..],
    ] {
        let generated = ossa(home, &offline, args, "");
        ok(&generated, &format!("{args:?}"));
    }

    // rm asks; anything but yes keeps the files.
    let declined = ossa(home, &hub.url, &["rm", "gpt-oss:20b"], "n\n");
    assert!(!declined.status.success());
    assert!(text(&declined.stderr).contains("Remove gpt-oss:20b"));
    assert!(text(&declined.stderr).contains("Nothing removed"));
    assert!(snap.join("model.safetensors").is_file());

    let removed = ok(&ossa(home, &hub.url, &["rm", "gpt-oss:20b"], "y\n"), "rm");
    assert!(removed.contains("Removed gpt-oss:20b"), "{removed}");
    assert!(!hub_cache(home).join("models--openai--gpt-oss-20b").exists());
    let empty = ok(&ossa(home, &hub.url, &["list"], ""), "list after rm");
    assert!(empty.contains("No models downloaded yet"), "{empty}");

    let again = ossa(home, &hub.url, &["rm", "--yes", "gpt-oss:20b"], "");
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("gpt-oss:20b is not downloaded"),
        "{}",
        text(&again.stderr)
    );
}

#[test]
fn a_partial_download_resumes_where_it_stopped() {
    let home = tempfile::tempdir().expect("home");
    let home = home.path();
    let hub = Hub::start();
    let weights = std::fs::read(fixture().join("model.safetensors")).expect("fixture");
    let half = weights.len() / 2;
    // What an interrupted pull leaves: the first half of the blob in a `.part` file.
    let blobs = hub_cache(home).join("models--openai--gpt-oss-20b/blobs");
    std::fs::create_dir_all(&blobs).expect("blobs dir");
    std::fs::write(
        blobs.join(format!("{}.part", sha256_hex(&weights))),
        &weights[..half],
    )
    .expect("partial file");

    let listed = ok(&ossa(home, &hub.url, &["list"], ""), "list");
    assert!(
        listed.contains("incomplete: `ossa pull gpt-oss:20b` resumes it"),
        "{listed}"
    );

    ok(&ossa(home, &hub.url, &["pull"], ""), "pull");
    assert_eq!(
        std::fs::read(snapshot(home).join("model.safetensors")).expect("pulled"),
        weights
    );
    let asked = format!("/{REPO}/resolve/main/model.safetensors bytes={half}-");
    assert!(
        hub.requests().contains(&asked),
        "no {asked:?} in {:?}",
        hub.requests()
    );
}

#[test]
fn weights_damaged_in_transit_are_refused_and_fetched_again() {
    let home = tempfile::tempdir().expect("home");
    let home = home.path();
    let bad = Hub::serving(repo_files(true));
    let refused = ossa(home, &bad.url, &["pull", "gpt-oss:20b"], "");
    assert!(!refused.status.success());
    let err = text(&refused.stderr);
    assert!(err.contains("model.safetensors is corrupt"), "{err}");
    assert!(!snapshot(home).join("model.safetensors").exists());
    let listed = ok(&ossa(home, &bad.url, &["list"], ""), "list");
    assert!(listed.contains("incomplete"), "{listed}");

    let good = Hub::start();
    ok(
        &ossa(home, &good.url, &["pull", "gpt-oss:20b"], ""),
        "pull again",
    );
    assert_eq!(
        std::fs::read(snapshot(home).join("model.safetensors")).expect("pulled"),
        std::fs::read(fixture().join("model.safetensors")).expect("fixture")
    );
}

#[test]
fn rm_deletes_only_downloaded_models() {
    let home = tempfile::tempdir().expect("home");
    let home = home.path();
    // A model folder of the user's, given to rm: refused, untouched.
    let mine = home.join("my-model");
    std::fs::create_dir_all(&mine).expect("dir");
    std::fs::copy(fixture().join("config.json"), mine.join("config.json")).expect("copy");
    let output = ossa(
        home,
        &closed_endpoint(),
        &["rm", "--yes", mine.to_str().expect("utf-8 path")],
        "",
    );
    assert!(!output.status.success());
    assert!(
        text(&output.stderr).contains("is a local directory, not a downloaded model"),
        "{}",
        text(&output.stderr)
    );
    assert!(mine.join("config.json").is_file());
    // Ids that try to climb out of the cache are not ids.
    let output = ossa(home, &closed_endpoint(), &["rm", "--yes", "../.."], "");
    assert!(!output.status.success());
    assert!(home.exists() && mine.join("config.json").is_file());
}

#[test]
fn unknown_names_list_the_known_ones_everywhere() {
    let home = tempfile::tempdir().expect("home");
    let home = home.path();
    let offline = closed_endpoint();
    for args in [
        &["pull", "llama3"][..],
        &["show", "gpt-oss:7b"][..],
        &["rm", "--yes", "gpt-oss:7b"][..],
        &["bench", "--model", "gpt-oss:7b", "--bandwidth-gib", "0"][..],
        &["generate", "--model", "gpt-oss:7b", "--prompt-tokens", "1"][..],
        &["run", "--model", "gpt-oss:7b", "hello"][..],
    ] {
        let output = ossa(home, &offline, args, "");
        let err = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        for expected in ["gpt-oss:20b", "gpt-oss:120b", "--model DIR"] {
            assert!(
                err.contains(expected),
                "{args:?}: {expected:?} not in {err}"
            );
        }
    }
    // A directory is a model too: show reads it in place.
    let dir = fixture();
    let shown = ok(
        &ossa(
            home,
            &offline,
            &["show", dir.to_str().expect("utf-8 path")],
            "",
        ),
        "show DIR",
    );
    assert!(shown.contains("layers        4"), "{shown}");
}

#[test]
fn a_hub_that_never_answers_is_reported_not_waited_on() {
    let home = tempfile::tempdir().expect("home");
    let home = home.path();
    // Accepts connections and reads requests, but never answers.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("address"));
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            keep.lock().expect("held").push(stream);
        }
    });
    for args in [
        &["pull", "gpt-oss:20b"][..],
        &["run", "--model", "gpt-oss:20b", "hi"][..],
    ] {
        let output = ossa(home, &url, args, "");
        let err = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} succeeded");
        for expected in [
            url.as_str(),
            "--model DIR",
            "HF_ENDPOINT",
            "OSSA_HUB_TIMEOUT",
        ] {
            assert!(
                err.contains(expected),
                "{args:?}: {expected:?} not in {err}"
            );
        }
    }
    assert!(
        !held.lock().expect("held").is_empty(),
        "ossa never connected"
    );
}

#[test]
fn a_download_that_stalls_midway_ends_with_the_hint() {
    let home = tempfile::tempdir().expect("home");
    let home = home.path();
    let hub = Hub::serving_weights(repo_files(false), Weights::StallMidway);
    // `ossa` fails the test if this hangs.
    let output = ossa(home, &hub.url, &["pull", "gpt-oss:20b"], "");
    let err = text(&output.stderr);
    assert!(!output.status.success(), "the pull succeeded: {err}");
    for expected in [
        hub.url.as_str(),
        "model.safetensors",
        "stalled",
        "OSSA_HUB_TIMEOUT",
        "run again to resume",
        "--model DIR",
    ] {
        assert!(err.contains(expected), "{expected:?} not in {err}");
    }
    // The bytes that came are kept for the resume.
    let blobs = hub_cache(home).join("models--openai--gpt-oss-20b/blobs");
    let partial = std::fs::read_dir(&blobs)
        .expect("blobs")
        .flatten()
        .find(|e| e.file_name().to_string_lossy().ends_with(".part"))
        .expect("a .part file");
    assert!(partial.metadata().expect("size").len() > 0);
}

/// `ossa bench` on the tiny model: the first-token times come from two fresh processes (the
/// second reads the tool prompt back from the disk cache the first wrote), and the bandwidth
/// yardstick reports its spread.
#[test]
fn bench_times_the_first_token_from_fresh_processes() {
    let report = short_bench(&[
        "--threads",
        "2",
        "--bandwidth-gib",
        "0.01",
        "--bandwidth-passes",
        "3",
    ]);
    assert_eq!(report["ttft_from"], "process start", "{report}");
    let number = |key: &str| {
        report[key]
            .as_f64()
            .unwrap_or_else(|| panic!("{key} in {report}"))
    };
    // From process start includes the load, which the in-process figure starts after.
    for (total, from_load) in [
        ("ttft_cold_s", "ttft_cold_from_load_s"),
        ("ttft_cached_s", "ttft_cached_from_load_s"),
    ] {
        assert!(number(total) > number(from_load), "{total}: {report}");
        assert!(number(from_load) > 0.0, "{report}");
    }
    // The cached child read every full block of the prompt the cold child wrote.
    let prompt = number("ttft_prompt_tokens");
    let read = number("prompt_cache_read_tokens");
    assert!(prompt > 500.0 && read >= 128.0 && read < prompt, "{report}");
    let (min, median, max) = (
        number("read_bandwidth_gb_s_min"),
        number("read_bandwidth_gb_s"),
        number("read_bandwidth_gb_s_max"),
    );
    assert!(0.0 < min && min <= median && median <= max, "{report}");
    assert_eq!(report["read_bandwidth_passes"], 3);
    // The yardstick of the decode runs' own minutes: 3 passes before the one run, 5 after it,
    // pooled; the floor it gives judges the decode rate the report states.
    let (min, median, max) = (
        number("read_bandwidth_during_decode_gb_s_min"),
        number("read_bandwidth_during_decode_gb_s"),
        number("read_bandwidth_during_decode_gb_s_max"),
    );
    assert!(0.0 < min && min <= median && median <= max, "{report}");
    assert_eq!(
        report["read_bandwidth_during_decode_passes"],
        3 + 5,
        "{report}"
    );
    assert!(
        number("read_bandwidth_during_decode_gb_s_min")
            <= number("read_bandwidth_after_decode_gb_s")
            && number("read_bandwidth_after_decode_gb_s")
                <= number("read_bandwidth_during_decode_gb_s_max"),
        "the passes after the runs are among those pooled: {report}"
    );
    let floor = number("decode_floor_during_decode_tok_s");
    let fraction = number("decode_floor_fraction_during_decode");
    let decode = number("decode_depth0_tok_s");
    assert!(
        (fraction * floor - decode).abs() <= 1e-9 * decode,
        "{report}"
    );
    let bytes = number("decode_bytes_per_token_depth0");
    assert!(
        (floor * bytes - median * 1e9).abs() <= 1e-6 * median * 1e9,
        "{report}"
    );
}

/// `ossa bench --no-ttft` starts no first-token processes: the report has its prefill and
/// decode figures and none of the first-token or prompt-cache keys.
#[test]
fn bench_without_ttft_leaves_out_the_first_token_keys() {
    let report = short_bench(&["--no-ttft", "--bandwidth-gib", "0"]);
    let object = report.as_object().expect("an object");
    assert!(
        report["prefill_tok_s"].as_f64().is_some_and(|v| v > 0.0)
            && report["decode_depth0_tok_s"]
                .as_f64()
                .is_some_and(|v| v > 0.0),
        "{report}"
    );
    let left_in: Vec<&String> = object
        .keys()
        .filter(|k| k.starts_with("ttft_") || k.starts_with("prompt_cache_"))
        .collect();
    assert!(left_in.is_empty(), "{left_in:?} in {report}");
}

/// The JSON report of a short `ossa bench` on the tiny model (8 prompt tokens, 2 generated,
/// one run, no long-context runs) with `args` added.
fn short_bench(args: &[&str]) -> serde_json::Value {
    let home = tempfile::tempdir().expect("home");
    let dir = fixture();
    let mut all = vec![
        "bench",
        "--model",
        dir.to_str().expect("utf-8 path"),
        "--json",
        "--prompt-tokens",
        "8",
        "--gen-tokens",
        "2",
        "--runs",
        "1",
        "--depth",
        "0",
        "--long-prompt",
        "0",
    ];
    all.extend_from_slice(args);
    let out = ok(&ossa(home.path(), &closed_endpoint(), &all, ""), "bench");
    serde_json::from_str(out.trim()).expect("one JSON object")
}
