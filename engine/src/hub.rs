//! Model ids from the Hugging Face Hub (`openai/gpt-oss-20b`): downloaded once into the
//! standard Hugging Face cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), then loaded from there like any directory. `HF_ENDPOINT` and
//! `HF_TOKEN` are honoured. Only the files the engine reads are fetched: config, weights (the
//! shards the index names), tokenizer. A model already complete in the cache is used without
//! touching the network, so ossa works offline after the first download.
//!
//! Models may also be named as Ollama users name them (`gpt-oss:20b`, `gpt-oss:120b`, see
//! [`MODEL_NAMES`]); [`cached_models`] and [`remove_cached`] back `ossa list` and `ossa rm`.
//! The first request to the hub is bounded by [`HUB_TIMEOUT_ENV`] seconds, so an endpoint that
//! accepts connections but never answers is reported instead of waited on; so is a file whose
//! download goes that long without a byte arriving.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use hf_hub::api::Progress;
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use sha2::{Digest, Sha256};

use crate::error::{EngineError, Result};

/// Receives download progress, per file.
pub trait DownloadProgress: Send + Sync {
    /// `done` of `total` bytes of `file` have arrived (`total` is 0 when unknown).
    fn update(&self, file: &str, done: u64, total: u64);
    /// `file` is complete (or was already cached).
    fn finished(&self, file: &str);
    /// The hub at `endpoint` is about to be asked for `repo_id`'s files (a model not yet
    /// complete in the cache).
    fn contacting(&self, _endpoint: &str, _repo_id: &str) {}
}

/// Names a user may give instead of a Hugging Face id, as Ollama users write them. Each id's
/// own name (`gpt-oss-20b`) is accepted too.
pub const MODEL_NAMES: &[(&str, &str)] = &[
    ("gpt-oss:20b", "openai/gpt-oss-20b"),
    ("gpt-oss:120b", "openai/gpt-oss-120b"),
];

/// Seconds the hub may take to answer the first request (connecting included), and a file's
/// download may go without a byte arriving, before it is given up with an error naming the
/// endpoint; default [`DEFAULT_HUB_TIMEOUT`].
pub const HUB_TIMEOUT_ENV: &str = "OSSA_HUB_TIMEOUT";
/// The default of [`HUB_TIMEOUT_ENV`]: long enough for a slow link, short enough to notice.
pub const DEFAULT_HUB_TIMEOUT: Duration = Duration::from_secs(30);

/// The Hugging Face endpoint used: `HF_ENDPOINT`, else huggingface.co.
pub fn endpoint() -> String {
    std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|e| !e.is_empty())
        .map_or_else(
            || "https://huggingface.co".to_string(),
            |e| e.trim_end_matches('/').to_string(),
        )
}

fn hub_timeout() -> Duration {
    std::env::var(HUB_TIMEOUT_ENV)
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_HUB_TIMEOUT, Duration::from_secs_f64)
}

/// What a `--model` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// A local model directory, used as is.
    Dir(PathBuf),
    /// A Hugging Face repository, at `revision` (default `main`).
    Hub {
        id: String,
        revision: Option<String>,
    },
}

/// The known names, for error messages: `gpt-oss:20b (openai/gpt-oss-20b), ...`.
fn known_names() -> String {
    MODEL_NAMES
        .iter()
        .map(|(name, id)| format!("{name} ({id})"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The Hugging Face id a known name stands for (`gpt-oss:20b`, `gpt-oss-20b`, `gpt-oss`).
pub fn id_of_name(name: &str) -> Option<&'static str> {
    let name = name.to_ascii_lowercase();
    let name = match name.as_str() {
        // Ollama's `gpt-oss` (`gpt-oss:latest`) is the 20b model.
        "gpt-oss" | "gpt-oss:latest" => "gpt-oss:20b",
        other => other,
    };
    MODEL_NAMES
        .iter()
        .find(|(known, id)| *known == name || id.rsplit('/').next() == Some(name))
        .map(|(_, id)| *id)
}

/// The short name of a hub id, when it has one (`openai/gpt-oss-20b` → `gpt-oss:20b`).
pub fn name_of_id(id: &str) -> Option<&'static str> {
    MODEL_NAMES
        .iter()
        .find(|(_, known)| known.eq_ignore_ascii_case(id))
        .map(|(name, _)| *name)
}

/// Reads a `--model` value: an existing directory, a known name, or a hub id (`owner/name`,
/// optionally `@revision`). Anything else is an error listing the known names.
pub fn parse_model(spec: &str) -> Result<ModelSpec> {
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(ModelSpec::Dir(path.to_path_buf()));
    }
    let (name, revision) = match spec.split_once('@') {
        Some((name, rev)) if !rev.is_empty() => (name, Some(rev.to_string())),
        _ => (spec, None),
    };
    if let Some(id) = id_of_name(name) {
        return Ok(ModelSpec::Hub {
            id: id.to_string(),
            revision,
        });
    }
    let looks_like_path = spec.starts_with(['/', '.', '~']) || path.exists();
    if !looks_like_path && is_hub_id(spec) {
        return Ok(ModelSpec::Hub {
            id: name.to_string(),
            revision,
        });
    }
    let what = if looks_like_path {
        "no such model directory"
    } else {
        "unknown model"
    };
    Err(EngineError::Hub {
        model: spec.into(),
        message: format!(
            "{what}; known names: {}; a Hugging Face id (owner/name) or a model directory \
             (--model DIR) works too",
            known_names()
        ),
    })
}

/// Whether `spec` has the shape of a hub model id: `owner/name`, optionally `@revision`.
pub fn is_hub_id(spec: &str) -> bool {
    let id = spec.split_once('@').map_or(spec, |(id, _)| id);
    let Some((owner, name)) = id.split_once('/') else {
        return false;
    };
    let part_ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with(['.', '-'])
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    part_ok(owner) && part_ok(name) && !name.contains("..")
}

/// A local model directory as is, or a hub id downloaded (once) into the cache.
pub fn resolve_model(spec: &str, progress: Option<Arc<dyn DownloadProgress>>) -> Result<PathBuf> {
    match parse_model(spec)? {
        ModelSpec::Dir(dir) => Ok(dir),
        ModelSpec::Hub { id, revision } => download_model(&id, revision.as_deref(), progress),
    }
}

/// The Hugging Face cache directory models are downloaded into.
pub fn cache_dir() -> PathBuf {
    hub_cache().path().clone()
}

/// A model repository in the Hugging Face cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedModel {
    /// Its Hugging Face id (`openai/gpt-oss-20b`).
    pub id: String,
    /// Its folder in the cache (`models--openai--gpt-oss-20b`): everything `remove_cached`
    /// deletes.
    pub repo_dir: PathBuf,
    /// The snapshot directory to load, when the weights of `main` are all there; `None` for
    /// a download not finished (run `ossa pull` again to resume it).
    pub snapshot: Option<PathBuf>,
    /// Bytes on disk: blobs, partial downloads included.
    pub bytes: u64,
}

/// The models in the Hugging Face cache, sorted by id. A missing cache is an empty list.
pub fn cached_models() -> Result<Vec<CachedModel>> {
    let cache = hub_cache();
    let root = cache.path().clone();
    let entries = match std::fs::read_dir(&root) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(EngineError::io(&root, e)),
    };
    let mut models = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| EngineError::io(&root, e))?;
        let folder = entry.file_name();
        let Some(id) = folder
            .to_str()
            .and_then(|f| f.strip_prefix("models--"))
            .and_then(|rest| rest.split_once("--"))
            .map(|(owner, name)| format!("{owner}/{name}"))
        else {
            continue;
        };
        if !entry.path().is_dir() {
            continue;
        }
        models.push(cached_entry(&cache, &id, entry.path()));
    }
    models.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(models)
}

/// The cached model with this id, if any.
pub fn cached_model(id: &str) -> Result<Option<CachedModel>> {
    Ok(cached_models()?
        .into_iter()
        .find(|m| m.id.eq_ignore_ascii_case(id)))
}

fn cached_entry(cache: &Cache, id: &str, repo_dir: PathBuf) -> CachedModel {
    let repo = Repo::new(id.to_string(), RepoType::Model);
    CachedModel {
        id: id.to_string(),
        snapshot: cached_snapshot(cache, &repo, id),
        bytes: disk_usage(&repo_dir),
        repo_dir,
    }
}

/// Bytes of the regular files under `dir`; links (the snapshots' pointers) are not followed,
/// so each blob counts once.
pub fn disk_usage(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(t) if t.is_dir() => disk_usage(&entry.path()),
            Ok(t) if t.is_file() => entry.metadata().map_or(0, |m| m.len()),
            _ => 0,
        })
        .sum()
}

/// Deletes a cached model's folder (blobs, snapshots, partial downloads) and returns the
/// bytes freed. The folder is checked to be a direct child of the cache first.
pub fn remove_cached(model: &CachedModel) -> Result<u64> {
    let root = hub_cache().path().clone();
    if model.repo_dir.parent() != Some(root.as_path()) {
        return Err(EngineError::Hub {
            model: model.id.clone(),
            message: format!(
                "{} is not a model folder of the cache {}; nothing removed",
                model.repo_dir.display(),
                root.display()
            ),
        });
    }
    let bytes = disk_usage(&model.repo_dir);
    std::fs::remove_dir_all(&model.repo_dir).map_err(|e| EngineError::io(&model.repo_dir, e))?;
    tracing::info!(repo = %model.id, bytes, "model removed from the Hugging Face cache");
    Ok(bytes)
}

/// The cache the Python `huggingface_hub` library would use.
fn hub_cache() -> Cache {
    match std::env::var_os("HF_HUB_CACHE") {
        Some(dir) if !dir.is_empty() => Cache::new(PathBuf::from(dir)),
        _ => Cache::from_env(),
    }
}

const INDEX: &str = "model.safetensors.index.json";
const SINGLE: &str = "model.safetensors";

/// The shard files an index names, checked to stay inside the snapshot directory.
fn shards_of_index(index: &Path, repo_id: &str) -> Result<Vec<String>> {
    let hub_error = |message: String| EngineError::Hub {
        model: repo_id.into(),
        message,
    };
    let text = std::fs::read_to_string(index).map_err(|e| EngineError::io(index, e))?;
    let parsed: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| hub_error(format!("{INDEX} is not JSON: {e}")))?;
    let mut shards: Vec<String> = parsed
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| hub_error(format!("{INDEX} has no weight_map")))?
        .values()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect();
    shards.sort();
    shards.dedup();
    if let Some(bad) = shards
        .iter()
        .find(|s| s.contains("..") || s.starts_with('/'))
    {
        return Err(hub_error(format!("{INDEX} names an unsafe path {bad:?}")));
    }
    Ok(shards)
}

/// The snapshot directory of a model whose weights are all in the cache already.
fn cached_snapshot(cache: &Cache, repo: &Repo, repo_id: &str) -> Option<PathBuf> {
    let cached = cache.repo(repo.clone());
    let snapshot = cached.get("config.json")?.parent()?.to_path_buf();
    if snapshot.join(SINGLE).is_file() {
        return Some(snapshot);
    }
    let shards = shards_of_index(&cached.get(INDEX)?, repo_id).ok()?;
    shards
        .iter()
        .all(|s| snapshot.join(s).is_file())
        .then_some(snapshot)
}

/// Downloads config, weights and tokenizer of `repo_id` (`owner/name`) at `revision` (default
/// `main`) into the Hugging Face cache and returns the snapshot directory. Files already in
/// the cache are not fetched again; LFS files (the weights) are checked against their SHA-256.
pub fn download_model(
    repo_id: &str,
    revision: Option<&str>,
    progress: Option<Arc<dyn DownloadProgress>>,
) -> Result<PathBuf> {
    let hub_error = |message: String| EngineError::Hub {
        model: repo_id.into(),
        message,
    };
    let cache = hub_cache();
    let repo = Repo::with_revision(
        repo_id.to_string(),
        RepoType::Model,
        revision.unwrap_or("main").to_string(),
    );
    if let Some(snapshot) = cached_snapshot(&cache, &repo, repo_id) {
        tracing::debug!(repo = repo_id, dir = %snapshot.display(), "model found in the Hugging Face cache");
        return Ok(snapshot);
    }

    let endpoint = endpoint();
    if let Some(p) = &progress {
        p.contacting(&endpoint, repo_id);
    }
    let mut builder = ApiBuilder::from_cache(cache.clone())
        .with_progress(false)
        .with_endpoint(endpoint.clone());
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    let api = builder.build().map_err(|e| hub_error(e.to_string()))?;
    let remote = api.repo(repo.clone());
    // hf-hub's client has no timeouts of its own; this first request is bounded, so a hub
    // that accepts connections but never answers is reported rather than waited on forever.
    let timeout = hub_timeout();
    let info: hf_hub::api::RepoInfo = remote
        .info_request()
        .timeout(timeout)
        .call()
        .map_err(|e| e.to_string())
        .and_then(|response| response.into_json().map_err(|e| e.to_string()))
        .map_err(|e| {
            hub_error(format!(
                "cannot list the repository's files at {endpoint} (waited at most {}s; \
                 {HUB_TIMEOUT_ENV} sets the limit): {e}. Is the name right and the network \
                 up? Offline, pass a model directory (--model DIR); HF_ENDPOINT names a \
                 mirror",
                timeout.as_secs_f64()
            ))
        })?;
    let listed = |file: &str| info.siblings.iter().any(|s| s.rfilename == file);

    let fetch = |file: &str| -> Result<PathBuf> {
        if let Some(path) = cache.repo(repo.clone()).get(file) {
            if let Some(p) = &progress {
                p.finished(file);
            }
            return Ok(path);
        }
        let forward = Forward {
            file: file.to_string(),
            done: 0,
            total: 0,
            sink: progress.clone(),
            activity: Arc::new(Activity::new()),
        };
        let path = download_watched(&api, &repo, file, forward, timeout).map_err(|e| {
            hub_error(format!(
                "downloading {file} from {endpoint}: {e} (run again to resume; offline, \
                     pass a model directory: --model DIR)"
            ))
        })?;
        verify_blob(&path, file).map_err(hub_error)?;
        if let Some(p) = &progress {
            p.finished(file);
        }
        Ok(path)
    };

    if !listed("config.json") {
        return Err(hub_error("the repository has no config.json".into()));
    }
    let config = fetch("config.json")?;
    let snapshot = config
        .parent()
        .map(Path::to_path_buf)
        .ok_or_else(|| hub_error("bad cache path".into()))?;
    if listed(INDEX) {
        let index = fetch(INDEX)?;
        for shard in shards_of_index(&index, repo_id)? {
            fetch(&shard)?;
        }
    } else if listed(SINGLE) {
        fetch(SINGLE)?;
    } else {
        return Err(hub_error(format!(
            "the repository has neither {SINGLE} nor {INDEX}"
        )));
    }
    // Optional: without it the built-in o200k_harmony tokenizer is used.
    if listed("tokenizer.json") {
        fetch("tokenizer.json")?;
    }
    // The model card: its front matter names the license (`ossa show`).
    if listed("README.md") {
        fetch("README.md")?;
    }
    tracing::info!(repo = repo_id, dir = %snapshot.display(), "model available in the Hugging Face cache");
    Ok(snapshot)
}

/// LFS blobs are stored under their SHA-256 (the hub's ETag); a blob whose content does not
/// hash to its name was corrupted in transit and is removed so the next run fetches it again.
fn verify_blob(pointer: &Path, file: &str) -> std::result::Result<(), String> {
    let blob = std::fs::canonicalize(pointer).map_err(|e| format!("{}: {e}", pointer.display()))?;
    let Some(expected) = blob
        .file_name()
        .and_then(|n| n.to_str())
        .map(str::to_ascii_lowercase)
    else {
        return Ok(());
    };
    if expected.len() != 64 || !expected.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(()); // a git blob id (small text files): nothing to check against
    }
    let mut hasher = Sha256::new();
    let mut reader = std::fs::File::open(&blob).map_err(|e| format!("{}: {e}", blob.display()))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| format!("{}: {e}", blob.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    let actual: String = hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    if actual != expected {
        let _ = std::fs::remove_file(pointer);
        let _ = std::fs::remove_file(&blob);
        return Err(format!(
            "downloaded {file} is corrupt: its SHA-256 is {actual}, the hub says {expected}; it was removed, run again to fetch it anew"
        ));
    }
    Ok(())
}

/// Adapts hf-hub's per-download progress to [`DownloadProgress`].
struct Forward {
    file: String,
    done: u64,
    total: u64,
    sink: Option<Arc<dyn DownloadProgress>>,
    activity: Arc<Activity>,
}

/// When a download last made progress, for the watchdog of [`download_watched`].
struct Activity {
    origin: Instant,
    /// Milliseconds from `origin` to the last progress.
    last: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Self {
            origin: Instant::now(),
            last: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(now, Ordering::Relaxed);
    }

    fn idle(&self) -> Duration {
        self.origin
            .elapsed()
            .saturating_sub(Duration::from_millis(self.last.load(Ordering::Relaxed)))
    }
}

/// hf-hub's download of one file, given up when no byte has arrived for `stall`: its HTTP
/// client has no read timeout and no way to be given one, so a connection that stalls
/// mid-file would block forever. The download runs on its own thread; one given up stays
/// blocked there until the connection dies or the process ends (its `.part` file resumes on
/// the next run).
fn download_watched(
    api: &hf_hub::api::sync::Api,
    repo: &Repo,
    file: &str,
    forward: Forward,
    stall: Duration,
) -> std::result::Result<PathBuf, String> {
    let (tx, rx) = mpsc::channel();
    let activity = forward.activity.clone();
    let remote = api.repo(repo.clone());
    let name = file.to_string();
    std::thread::Builder::new()
        .name("ossa-hub-download".into())
        .spawn(move || {
            let _ = tx.send(remote.download_with_progress(&name, forward));
        })
        .map_err(|e| format!("cannot start the download thread: {e}"))?;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(result) => return result.map_err(|e| e.to_string()),
            Err(RecvTimeoutError::Disconnected) => {
                return Err("the download thread ended without a result".into());
            }
            Err(RecvTimeoutError::Timeout) if activity.idle() >= stall => {
                return Err(format!(
                    "no data arrived for {}s, the connection stalled ({HUB_TIMEOUT_ENV} sets \
                     the limit)",
                    stall.as_secs_f64()
                ));
            }
            Err(RecvTimeoutError::Timeout) => {}
        }
    }
}

impl Progress for Forward {
    fn init(&mut self, size: usize, _filename: &str) {
        self.activity.touch();
        self.total = size as u64;
        self.done = 0;
        if let Some(sink) = &self.sink {
            sink.update(&self.file, 0, self.total);
        }
    }

    fn update(&mut self, size: usize) {
        self.activity.touch();
        self.done += size as u64;
        if let Some(sink) = &self.sink {
            sink.update(&self.file, self.done, self.total);
        }
    }

    fn finish(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::{ModelSpec, id_of_name, is_hub_id, name_of_id, parse_model};

    #[test]
    fn names_resolve_to_hub_ids() {
        for (name, id) in [
            ("gpt-oss:20b", "openai/gpt-oss-20b"),
            ("GPT-OSS:20B", "openai/gpt-oss-20b"),
            ("gpt-oss", "openai/gpt-oss-20b"),
            ("gpt-oss-20b", "openai/gpt-oss-20b"),
            ("gpt-oss:120b", "openai/gpt-oss-120b"),
            ("gpt-oss-120b", "openai/gpt-oss-120b"),
        ] {
            assert_eq!(id_of_name(name), Some(id), "{name}");
            assert_eq!(
                parse_model(name).unwrap(),
                ModelSpec::Hub {
                    id: id.into(),
                    revision: None
                }
            );
        }
        assert_eq!(
            parse_model("gpt-oss:120b@abc").unwrap(),
            ModelSpec::Hub {
                id: "openai/gpt-oss-120b".into(),
                revision: Some("abc".into())
            }
        );
        assert_eq!(
            parse_model("openai/gpt-oss-20b").unwrap(),
            ModelSpec::Hub {
                id: "openai/gpt-oss-20b".into(),
                revision: None
            }
        );
        assert_eq!(name_of_id("openai/gpt-oss-120b"), Some("gpt-oss:120b"));
        assert_eq!(name_of_id("someone/else"), None);
    }

    #[test]
    fn unknown_names_list_the_known_ones() {
        for bad in ["gpt-oss:7b", "llama3", "./no/such/dir", "/no/such/dir"] {
            let message = parse_model(bad).unwrap_err().to_string();
            assert!(message.contains("gpt-oss:20b"), "{message}");
            assert!(message.contains("gpt-oss:120b"), "{message}");
            assert!(message.contains("--model DIR"), "{message}");
        }
        let dir = parse_model("/no/such/dir").unwrap_err().to_string();
        assert!(dir.contains("no such model directory"), "{dir}");
    }

    #[test]
    fn hub_id_shapes() {
        for ok in [
            "openai/gpt-oss-20b",
            "openai/gpt-oss-120b@main",
            "a_b/c.d-e",
        ] {
            assert!(is_hub_id(ok), "{ok}");
        }
        for bad in [
            "gpt-oss-20b",
            "/abs/path",
            "./rel/dir",
            "a/b/c",
            "a/..",
            "a/",
            "owner/na me",
        ] {
            assert!(!is_hub_id(bad), "{bad}");
        }
    }
}
