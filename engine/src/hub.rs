//! Model ids from the Hugging Face Hub (`openai/gpt-oss-20b`): downloaded once into the
//! standard Hugging Face cache (`HF_HUB_CACHE`, else `$HF_HOME/hub`, else
//! `~/.cache/huggingface/hub`), then loaded from there like any directory. `HF_ENDPOINT` and
//! `HF_TOKEN` are honoured. Only the files the engine reads are fetched: config, weights (the
//! shards the index names), tokenizer. A model already complete in the cache is used without
//! touching the network, so ossa works offline after the first download.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

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
    let path = Path::new(spec);
    if path.is_dir() {
        return Ok(path.to_path_buf());
    }
    if !is_hub_id(spec) {
        return Err(EngineError::Hub {
            model: spec.into(),
            message: "not a model directory, and not a Hugging Face id like openai/gpt-oss-20b"
                .into(),
        });
    }
    let (id, revision) = match spec.split_once('@') {
        Some((id, rev)) => (id, Some(rev)),
        None => (spec, None),
    };
    download_model(id, revision, progress)
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

    let mut builder = ApiBuilder::from_cache(cache.clone()).with_progress(false);
    if let Some(endpoint) = std::env::var("HF_ENDPOINT").ok().filter(|e| !e.is_empty()) {
        builder = builder.with_endpoint(endpoint.trim_end_matches('/').to_string());
    }
    if let Some(token) = std::env::var("HF_TOKEN").ok().filter(|t| !t.is_empty()) {
        builder = builder.with_token(Some(token));
    }
    let api = builder.build().map_err(|e| hub_error(e.to_string()))?;
    let remote = api.repo(repo.clone());
    let info = remote.info().map_err(|e| {
        hub_error(format!(
            "cannot list the repository's files (is the id right, and is the network up?): {e}"
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
        };
        let path = remote
            .download_with_progress(file, forward)
            .map_err(|e| hub_error(format!("downloading {file}: {e}")))?;
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
}

impl Progress for Forward {
    fn init(&mut self, size: usize, _filename: &str) {
        self.total = size as u64;
        self.done = 0;
        if let Some(sink) = &self.sink {
            sink.update(&self.file, 0, self.total);
        }
    }

    fn update(&mut self, size: usize) {
        self.done += size as u64;
        if let Some(sink) = &self.sink {
            sink.update(&self.file, self.done, self.total);
        }
    }

    fn finish(&mut self) {}
}

#[cfg(test)]
mod tests {
    use super::is_hub_id;

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
