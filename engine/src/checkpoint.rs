//! Memory-mapped safetensors checkpoints, single-file or sharded with
//! `model.safetensors.index.json`. Tensors are handed out as views into the mapping: nothing is
//! copied, so the 13 GB of a gpt-oss-20b checkpoint cost only the pages the forward pass reads.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use memmap2::Mmap;
use serde::Deserialize;

use crate::error::{EngineError, Result};

/// Element types the engine reads. Anything else in a file is listed as `Other`, which is an
/// error only if the engine asks for that tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dtype {
    F32,
    F16,
    Bf16,
    U8,
    I64,
    Other,
}

impl Dtype {
    fn parse(name: &str) -> (Dtype, usize) {
        match name {
            "F32" => (Dtype::F32, 4),
            "F16" => (Dtype::F16, 2),
            "BF16" => (Dtype::Bf16, 2),
            "U8" => (Dtype::U8, 1),
            "I64" => (Dtype::I64, 8),
            "I8" | "BOOL" | "F8_E4M3" | "F8_E5M2" | "F8_E8M0" => (Dtype::Other, 1),
            "I16" | "U16" => (Dtype::Other, 2),
            "I32" | "U32" => (Dtype::Other, 4),
            "F64" | "U64" => (Dtype::Other, 8),
            _ => (Dtype::Other, 0),
        }
    }
}

/// One tensor: where its bytes are, and what the header says they are.
#[derive(Clone)]
pub struct TensorView {
    pub name: String,
    pub path: Arc<PathBuf>,
    pub dtype: Dtype,
    /// The dtype as written in the header (for error messages).
    pub dtype_name: String,
    pub shape: Vec<usize>,
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl std::fmt::Debug for TensorView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TensorView")
            .field("name", &self.name)
            .field("path", &self.path)
            .field("dtype", &self.dtype_name)
            .field("shape", &self.shape)
            .finish()
    }
}

impl TensorView {
    pub fn bytes(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    /// Fails unless the shape is exactly `expected`.
    pub fn expect_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape != expected {
            return Err(EngineError::WrongShape {
                path: self.path.to_path_buf(),
                tensor: self.name.clone(),
                expected: expected.to_vec(),
                found: self.shape.clone(),
            });
        }
        Ok(())
    }

    pub(crate) fn wrong_dtype(&self, expected: &str) -> EngineError {
        EngineError::WrongDtype {
            path: self.path.to_path_buf(),
            tensor: self.name.clone(),
            expected: expected.into(),
            found: self.dtype_name.clone(),
        }
    }

    /// Converts a small float tensor (norm weights, biases, sinks, routers) to f32.
    pub fn to_f32_vec(&self) -> Result<Vec<f32>> {
        let bytes = self.bytes();
        Ok(match self.dtype {
            Dtype::F32 => bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect(),
            Dtype::Bf16 => bytes
                .chunks_exact(2)
                .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            Dtype::F16 => bytes
                .chunks_exact(2)
                .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
                .collect(),
            _ => return Err(self.wrong_dtype("F32, BF16 or F16")),
        })
    }

    /// Reads an I64 tensor (reference token ids in test fixtures).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>> {
        if self.dtype != Dtype::I64 {
            return Err(self.wrong_dtype("I64"));
        }
        Ok(self
            .bytes()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }

    /// The raw bytes as a shared handle that keeps the mapping alive.
    pub(crate) fn mapped(&self) -> MappedBytes {
        MappedBytes {
            map: self.map.clone(),
            start: self.start,
            end: self.end,
        }
    }
}

/// Bytes inside a memory map, kept alive by an `Arc`.
#[derive(Clone)]
pub struct MappedBytes {
    map: Arc<Mmap>,
    start: usize,
    end: usize,
}

impl MappedBytes {
    pub fn as_slice(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }

    pub fn len(&self) -> usize {
        self.end - self.start
    }

    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Drops this range's pages from the process's resident set (they stay in the page
    /// cache; a later read faults them back in unchanged). For weights converted at load that
    /// are never read again, so the source and its converted copy are not both resident.
    pub fn release_pages(&self) {
        if self.is_empty() {
            return;
        }
        // SAFETY: the mapping is read-only and private: MADV_DONTNEED only discards resident
        // copies of file pages, so every later read still sees the file's bytes.
        let done = unsafe {
            self.map.unchecked_advise_range(
                memmap2::UncheckedAdvice::DontNeed,
                self.start,
                self.len(),
            )
        };
        if let Err(e) = done {
            tracing::debug!(error = %e, "madvise(DONTNEED) failed; pages stay resident");
        }
    }

    /// Bytes `start..end` of this range (clamped to it).
    pub fn slice(&self, start: usize, end: usize) -> MappedBytes {
        let end = (self.start + end).min(self.end);
        MappedBytes {
            map: self.map.clone(),
            start: (self.start + start).min(end),
            end,
        }
    }
}

#[derive(Deserialize)]
struct RawInfo {
    dtype: String,
    shape: Vec<usize>,
    data_offsets: [u64; 2],
}

#[derive(Deserialize)]
struct IndexFile {
    weight_map: BTreeMap<String, String>,
}

/// All tensors of a checkpoint, by name.
pub struct Checkpoint {
    tensors: HashMap<String, TensorView>,
    /// What was searched, for "missing tensor" errors.
    sources: String,
}

/// Upper bound on a safetensors JSON header; real ones are well under a megabyte.
const MAX_HEADER_BYTES: u64 = 100 << 20;

impl Checkpoint {
    /// Opens the weights of a model directory: `model.safetensors.index.json` if present,
    /// else `model.safetensors`.
    pub fn open_dir(dir: &Path) -> Result<Checkpoint> {
        let index = dir.join("model.safetensors.index.json");
        if index.is_file() {
            return Checkpoint::open_index(&index);
        }
        let single = dir.join("model.safetensors");
        if single.is_file() {
            return Checkpoint::open_files(&[single]);
        }
        Err(EngineError::NoWeights { dir: dir.into() })
    }

    fn open_index(index: &Path) -> Result<Checkpoint> {
        let text = std::fs::read_to_string(index).map_err(|e| EngineError::io(index, e))?;
        let parsed: IndexFile =
            serde_json::from_str(&text).map_err(|e| EngineError::BadSafetensors {
                path: index.into(),
                message: format!("bad index: {e}"),
            })?;
        let dir = index.parent().unwrap_or(Path::new("."));
        let mut files: Vec<PathBuf> = Vec::new();
        for (tensor, file) in &parsed.weight_map {
            let path = dir.join(file);
            if !path.is_file() {
                return Err(EngineError::MissingShard {
                    index: index.into(),
                    tensor: tensor.clone(),
                    file: path,
                });
            }
            if !files.contains(&path) {
                files.push(path);
            }
        }
        let mut checkpoint = Checkpoint::open_files(&files)?;
        // The index is the contract: a tensor it maps to one shard must be found in that shard.
        for (tensor, file) in &parsed.weight_map {
            match checkpoint.tensors.get(tensor) {
                Some(view) if *view.path == dir.join(file) => {}
                _ => {
                    return Err(EngineError::MissingTensor {
                        tensor: tensor.clone(),
                        searched: dir.join(file).display().to_string(),
                    });
                }
            }
        }
        checkpoint.sources = format!("{} ({} shards)", index.display(), files.len());
        Ok(checkpoint)
    }

    /// Opens and indexes the given safetensors files.
    pub fn open_files(files: &[PathBuf]) -> Result<Checkpoint> {
        let mut tensors = HashMap::new();
        for path in files {
            for view in open_file(path)? {
                tensors.insert(view.name.clone(), view);
            }
        }
        let sources = files
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        Ok(Checkpoint { tensors, sources })
    }

    pub fn get(&self, name: &str) -> Result<&TensorView> {
        self.tensors
            .get(name)
            .ok_or_else(|| EngineError::MissingTensor {
                tensor: name.into(),
                searched: self.sources.clone(),
            })
    }

    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }
}

fn open_file(path: &Path) -> Result<Vec<TensorView>> {
    let bad = |message: String| EngineError::BadSafetensors {
        path: path.into(),
        message,
    };
    let file = File::open(path).map_err(|e| EngineError::io(path, e))?;
    let file_len = file.metadata().map_err(|e| EngineError::io(path, e))?.len();
    if file_len < 8 {
        return Err(bad(format!("{file_len} bytes, too short for a header")));
    }
    // SAFETY: the file is mapped read-only; the engine never writes through it. A file changed
    // underneath a running process is outside what any mmap-based loader can defend against.
    let map = unsafe { Mmap::map(&file) }.map_err(|e| EngineError::io(path, e))?;
    crate::huge_pages::advise_map(&map);
    let header_len = u64::from_le_bytes(
        map[..8]
            .try_into()
            .map_err(|_| bad("short header".into()))?,
    );
    if header_len > MAX_HEADER_BYTES {
        return Err(bad(format!("header length {header_len} is implausible")));
    }
    let data_start = 8 + header_len;
    if data_start > file_len {
        return Err(EngineError::Truncated {
            path: path.into(),
            tensor: "(header)".into(),
            needed: data_start,
            actual: file_len,
        });
    }
    let header: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&map[8..data_start as usize])
            .map_err(|e| bad(format!("header is not valid JSON: {e}")))?;
    let map = Arc::new(map);
    let path = Arc::new(path.to_path_buf());
    let mut views = Vec::with_capacity(header.len());
    for (name, value) in header {
        if name == "__metadata__" {
            continue;
        }
        let info: RawInfo = serde_json::from_value(value)
            .map_err(|e| bad(format!("tensor {name}: bad header entry: {e}")))?;
        let (dtype, elem_size) = Dtype::parse(&info.dtype);
        let [begin, end] = info.data_offsets;
        let numel = info
            .shape
            .iter()
            .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
        let expected_bytes = numel.and_then(|n| n.checked_mul(elem_size as u64));
        if end < begin || (elem_size > 0 && expected_bytes != Some(end - begin)) {
            return Err(bad(format!(
                "tensor {name}: offsets {begin}..{end} do not hold {} of shape {:?}",
                info.dtype, info.shape
            )));
        }
        let needed = data_start
            .checked_add(end)
            .ok_or_else(|| bad(format!("tensor {name}: offset overflow")))?;
        if needed > file_len {
            return Err(EngineError::Truncated {
                path: path.to_path_buf(),
                tensor: name,
                needed,
                actual: file_len,
            });
        }
        views.push(TensorView {
            name,
            path: path.clone(),
            dtype,
            dtype_name: info.dtype,
            shape: info.shape,
            map: map.clone(),
            start: (data_start + begin) as usize,
            end: (data_start + end) as usize,
        });
    }
    Ok(views)
}
