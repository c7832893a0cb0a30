//! The prompt cache on disk: keys and values of what a process has read, kept in files so the
//! next process (another `ossa run`, a restarted server, a chat loaded from a file) reads them
//! back instead of computing them again.
//!
//! # Layout
//! A sequence's positions are cut into blocks of `block_tokens` positions counted from 0, one
//! file per block. A block is named by a hash chain: its id is `sha256(parent id, its tokens)`,
//! and the first block's parent is the *root*, a hash of everything that decides the numbers
//! in the cache (the model's files, the dtype, the kernels, this build, the layout). A name
//! therefore pins every token before the block's last position and the model that computed
//! them: sequences sharing a prefix share its full blocks, and a conversation that grows writes
//! only its new blocks. The last block of a sequence may be partial; a later generation writes
//! a longer one beside it and removes the one it wrote before.
//!
//! A lookup walks the prompt's full blocks by name, then takes, among the files whose parent is
//! the last block found, the one sharing the longest prefix with the rest of the prompt.
//! Attention is causal, so the positions before the divergence hold whatever follows them.
//!
//! # Safety
//! Files are written to a temporary file and renamed, so a reader sees a whole file or none,
//! and a reader keeps reading a file another process removes. Each file is checked before use:
//! magic and format version, the root (model, dtype, kernels, build), its place in the chain,
//! shape and length, and a CRC-32 of all its bytes. A bad file is skipped with one warning line
//! and removed; the generation computes those positions instead. The folder is private (0700,
//! owned by this user) because the files hold the conversations' tokens.
//!
//! # Size
//! After a write, least recently used files are removed until the folder holds at most
//! `max_bytes`. A use sets the mtime of every block on the path to the same instant; ties go
//! deepest first, so a prefix outlives its continuations, and blocks whose parent is gone go
//! before anything else.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use sha2::{Digest, Sha256};

use crate::kv_cache::KvCache;

/// Default bound of the folder: 4 GiB, about 87k positions of gpt-oss-20b (48 KiB each).
pub const DEFAULT_MAX_BYTES: u64 = 4 << 30;
/// Default positions per file: 6 MiB files on gpt-oss-20b. Smaller blocks duplicate less where
/// conversations diverge and rewrite less of a growing tail; larger ones make fewer files.
pub const DEFAULT_BLOCK_TOKENS: usize = 128;
const MAX_BLOCK_TOKENS: usize = 4096;

const MAGIC: [u8; 8] = *b"OSSA-KV\n";
const FORMAT_VERSION: u32 = 1;
/// magic, version, element bytes, layers, stride, start, count, reserved, root, parent.
const HEADER_BYTES: usize = 8 + 4 + 4 + 4 + 4 + 8 + 4 + 4 + 32 + 32;
const EXTENSION: &str = "kv";
const TEMP_PREFIX: &str = ".tmp-";
/// A temporary file this old was left by a process that died while writing.
const STALE_TEMP: Duration = Duration::from_secs(3600);
/// Bytes of each weight file's data hashed into the model's fingerprint (16 pages of 4 KiB).
const SAMPLE_PAGES: u64 = 16;
const PAGE: u64 = 4096;

type Id = [u8; 32];

/// Where the prompt cache lives and how big it may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PromptCacheOptions {
    /// The folder (created private if missing). Any number of models and processes share it.
    pub dir: PathBuf,
    /// The folder is kept at most this big (least recently used files go first).
    pub max_bytes: u64,
    /// Positions per file (1 to 4096). Part of the cache's identity: files written with another
    /// block size are not found.
    pub block_tokens: usize,
}

impl PromptCacheOptions {
    /// `dir` with the default bound and block size.
    pub fn new(dir: impl Into<PathBuf>) -> PromptCacheOptions {
        PromptCacheOptions {
            dir: dir.into(),
            max_bytes: DEFAULT_MAX_BYTES,
            block_tokens: DEFAULT_BLOCK_TOKENS,
        }
    }
}

/// What the prompt cache did since it was turned on.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PromptCacheStats {
    /// Generations that read positions from disk.
    pub hits: u64,
    /// Positions read from disk, and the bytes and time it took.
    pub read_tokens: u64,
    pub read_bytes: u64,
    pub read_time: Duration,
    /// Positions written to disk (a rewritten partial block counts again).
    pub written_tokens: u64,
    pub written_bytes: u64,
    pub write_time: Duration,
    /// Files found bad (truncated, corrupt, foreign) and skipped.
    pub rejected_files: u64,
    /// Files removed to keep the folder under its bound.
    pub evicted_files: u64,
}

impl PromptCacheStats {
    /// What happened since `earlier` (a copy taken before).
    pub fn since(&self, earlier: &PromptCacheStats) -> PromptCacheStats {
        PromptCacheStats {
            hits: self.hits - earlier.hits,
            read_tokens: self.read_tokens - earlier.read_tokens,
            read_bytes: self.read_bytes - earlier.read_bytes,
            read_time: self.read_time.saturating_sub(earlier.read_time),
            written_tokens: self.written_tokens - earlier.written_tokens,
            written_bytes: self.written_bytes - earlier.written_bytes,
            write_time: self.write_time.saturating_sub(earlier.write_time),
            rejected_files: self.rejected_files - earlier.rejected_files,
            evicted_files: self.evicted_files - earlier.evicted_files,
        }
    }
}

/// Why the prompt cache cannot be turned on.
#[derive(Debug, thiserror::Error)]
pub enum PromptCacheError {
    #[error("prompt cache folder {path}: {reason}")]
    Folder { path: PathBuf, reason: String },
    #[error("prompt cache: cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("prompt cache: block_tokens = {0} is out of range (1 to {MAX_BLOCK_TOKENS})")]
    BlockTokens(usize),
}

impl PromptCacheError {
    fn io(action: &'static str, path: &Path, source: io::Error) -> Self {
        PromptCacheError::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// What decides the numbers in a cache besides the model's files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Numerics {
    /// The dtype's name (f32, bf16, q8).
    pub dtype: &'static str,
    /// The int8 kernels' instruction set (q8 results differ between them).
    pub isa: &'static str,
}

/// Why a file was skipped: the one warning line says this.
#[derive(Debug, thiserror::Error)]
enum Reject {
    #[error("not a regular file")]
    NotAFile,
    #[error("not a prompt cache file")]
    BadMagic,
    #[error("format version {0}, this ossa reads {FORMAT_VERSION}")]
    Version(u32),
    #[error("written for another model, dtype, kernel set or ossa build")]
    Foreign,
    #[error("its header does not match its name or the model's shape")]
    Misplaced,
    #[error("{actual} bytes where its header implies {expected} (truncated or padded)")]
    Length { expected: u64, actual: u64 },
    #[error("checksum mismatch (corrupted)")]
    Checksum,
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// A block file's header, checked against the name it was found under.
struct Header {
    count: usize,
    tokens: Vec<u32>,
}

/// A candidate file for the block at some depth.
struct Candidate {
    path: PathBuf,
    file: File,
    header: Header,
    /// Positions of the prompt it matches.
    matched: usize,
}

/// The partial block this cache wrote last, removed once a longer block covers it.
#[derive(Debug, Clone)]
struct Tail {
    path: PathBuf,
    parent: Id,
    id: Id,
    start: usize,
    count: usize,
}

/// The prompt cache of one engine.
#[derive(Debug)]
pub(crate) struct PromptCache {
    dir: PathBuf,
    max_bytes: u64,
    block: usize,
    /// Hash of the model's files and this build.
    fingerprint: Id,
    numerics: Numerics,
    layers: usize,
    stride: usize,
    elem: usize,
    root: Id,
    tail: Option<Tail>,
    /// Files already warned about (when they could not be removed).
    warned: HashSet<PathBuf>,
    write_warned: bool,
    stats: PromptCacheStats,
}

impl PromptCache {
    /// Opens (creating it private if missing) the folder for the model in `model_dir`, whose
    /// caches have `layers` layers of `stride` elements of `elem` bytes per position.
    pub(crate) fn open(
        options: &PromptCacheOptions,
        model_dir: &Path,
        numerics: Numerics,
        layers: usize,
        stride: usize,
        elem: usize,
    ) -> Result<PromptCache, PromptCacheError> {
        if !(1..=MAX_BLOCK_TOKENS).contains(&options.block_tokens) {
            return Err(PromptCacheError::BlockTokens(options.block_tokens));
        }
        private_dir(&options.dir)?;
        let fingerprint = model_fingerprint(model_dir)
            .map_err(|e| PromptCacheError::io("fingerprint the model in", model_dir, e))?;
        let mut cache = PromptCache {
            dir: options.dir.clone(),
            max_bytes: options.max_bytes,
            block: options.block_tokens,
            fingerprint,
            numerics,
            layers,
            stride,
            elem,
            root: [0; 32],
            tail: None,
            warned: HashSet::new(),
            write_warned: false,
            stats: PromptCacheStats::default(),
        };
        cache.root = cache.compute_root();
        Ok(cache)
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn stats(&self) -> PromptCacheStats {
        self.stats
    }

    /// The kernels changed (`Engine::set_isa`): files of the old ones no longer match.
    pub(crate) fn set_numerics(&mut self, numerics: Numerics) {
        self.numerics = numerics;
        self.root = self.compute_root();
        self.tail = None;
    }

    fn compute_root(&self) -> Id {
        let mut h = Sha256::new();
        h.update(b"ossa prompt cache root\0");
        h.update(FORMAT_VERSION.to_le_bytes());
        h.update(self.fingerprint);
        for text in [self.numerics.dtype, self.numerics.isa] {
            h.update((text.len() as u64).to_le_bytes());
            h.update(text.as_bytes());
        }
        for n in [self.block, self.layers, self.stride, self.elem] {
            h.update((n as u64).to_le_bytes());
        }
        h.finalize().into()
    }

    fn file_bytes(&self, count: usize) -> u64 {
        (HEADER_BYTES + 4 * count + 2 * self.layers * count * self.stride * self.elem + 4) as u64
    }

    fn path_of(&self, parent: &Id, id: &Id, start: usize) -> PathBuf {
        self.dir.join(format!(
            "{}-{}-{start}.{EXTENSION}",
            hex(&parent[..16]),
            hex(&id[..16])
        ))
    }

    /// Appends to `cache` the stored positions of `prompt[..limit]` past those it holds (which
    /// must be `prompt`'s first ones), as far as disk has them. Returns the positions added.
    pub(crate) fn load(&mut self, prompt: &[u32], limit: usize, cache: &mut KvCache) -> usize {
        let started = Instant::now();
        let have = cache.len();
        debug_assert_eq!(cache.tokens(), &prompt[..have]);
        let limit = limit.min(prompt.len());
        if have >= limit {
            return 0;
        }
        // The prompt fills the cache up to `limit` whether its positions come from disk or not.
        cache.reserve(limit - have);
        let b = self.block;
        let mut parent = self.root;
        let mut start = 0;
        let mut used = Vec::new();
        // One buffer for every file: its pages are faulted in once.
        let mut buffer = Vec::new();
        let mut bytes = 0u64;
        loop {
            // The prompt's own next block, found by name.
            if start + b <= limit {
                let id = chain(&parent, &prompt[start..start + b]);
                if start + b <= have {
                    // In memory already: only its id is needed.
                    parent = id;
                    start += b;
                    continue;
                }
                let path = self.path_of(&parent, &id, start);
                match self.open_block(&path, &parent, start, Some(&id)) {
                    Ok(Some((file, header))) => {
                        match self.read_into(file, &header, start, b, &mut buffer, cache) {
                            Ok(read) => bytes += read,
                            Err(reject) => {
                                self.reject(&path, &reject);
                                break;
                            }
                        }
                        used.push(path);
                        parent = id;
                        start += b;
                        continue;
                    }
                    Ok(None) => {}
                    Err(reject) => {
                        self.reject(&path, &reject);
                        break;
                    }
                }
            }
            // The prompt diverges from every stored full block here, or ends inside this one:
            // the stored sibling sharing most with it.
            let rest = &prompt[start..limit];
            let least = have.saturating_sub(start) + 1;
            if let Some(best) = self.best_child(&parent, start, rest, least) {
                match self.read_into(
                    best.file,
                    &best.header,
                    start,
                    best.matched,
                    &mut buffer,
                    cache,
                ) {
                    Ok(read) => {
                        bytes += read;
                        used.push(best.path);
                    }
                    Err(reject) => self.reject(&best.path, &reject),
                }
            }
            break;
        }
        let loaded = cache.len() - have;
        if loaded > 0 {
            touch_all(&used, SystemTime::now());
            self.stats.hits += 1;
            self.stats.read_tokens += loaded as u64;
            self.stats.read_bytes += bytes;
            self.stats.read_time += started.elapsed();
            tracing::debug!(
                positions = loaded,
                bytes,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "prompt cache: read"
            );
        }
        loaded
    }

    /// Among the files whose parent is `parent`, the one sharing the longest prefix with
    /// `rest`, if that prefix is at least `least` positions.
    fn best_child(
        &mut self,
        parent: &Id,
        start: usize,
        rest: &[u32],
        least: usize,
    ) -> Option<Candidate> {
        let prefix = format!("{}-", hex(&parent[..16]));
        let suffix = format!("-{start}.{EXTENSION}");
        let entries = fs::read_dir(&self.dir).ok()?;
        let mut best: Option<Candidate> = None;
        for entry in entries.flatten() {
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if !name.starts_with(&prefix) || !name.ends_with(&suffix) {
                continue;
            }
            let path = entry.path();
            let Some((_, id, _)) = parse_name(name) else {
                continue;
            };
            let (file, header) = match self.open_block_partial_id(&path, parent, start, &id) {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(reject) => {
                    self.reject(&path, &reject);
                    continue;
                }
            };
            let matched = header
                .tokens
                .iter()
                .zip(rest)
                .take_while(|(a, b)| a == b)
                .count();
            if matched >= least && best.as_ref().is_none_or(|b| matched > b.matched) {
                best = Some(Candidate {
                    path,
                    file,
                    header,
                    matched,
                });
            }
        }
        best
    }

    /// [`PromptCache::open_block`] for a file whose id is known only by its name's first half.
    fn open_block_partial_id(
        &self,
        path: &Path,
        parent: &Id,
        start: usize,
        short_id: &[u8; 16],
    ) -> Result<Option<(File, Header)>, Reject> {
        let found = self.open_block(path, parent, start, None)?;
        if let Some((_, header)) = &found
            && chain(parent, &header.tokens)[..16] != short_id[..]
        {
            return Err(Reject::Misplaced);
        }
        Ok(found)
    }

    /// Opens a block file and checks its header: `Ok(None)` when there is no such file (it
    /// may have been removed since it was listed).
    fn open_block(
        &self,
        path: &Path,
        parent: &Id,
        start: usize,
        id: Option<&Id>,
    ) -> Result<Option<(File, Header)>, Reject> {
        // Never follow a link or open a FIFO: only regular files are read.
        match fs::symlink_metadata(path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(Reject::NotAFile),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        let meta = file.metadata()?;
        if !meta.is_file() {
            return Err(Reject::NotAFile);
        }
        let mut head = [0u8; HEADER_BYTES];
        if meta.len() < HEADER_BYTES as u64 {
            // Too short for a header: garbage or cut off.
            let mut magic = [0u8; 8];
            let prefix = file.read(&mut magic)?;
            return Err(if magic[..prefix] != MAGIC[..prefix] {
                Reject::BadMagic
            } else {
                Reject::Length {
                    expected: HEADER_BYTES as u64,
                    actual: meta.len(),
                }
            });
        }
        file.read_exact(&mut head)?;
        let u32_at =
            |at: usize| u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
        if head[..8] != MAGIC {
            return Err(Reject::BadMagic);
        }
        let version = u32_at(8);
        if version != FORMAT_VERSION {
            return Err(Reject::Version(version));
        }
        if head[40..72] != self.root {
            return Err(Reject::Foreign);
        }
        let elem = u32_at(12) as usize;
        let layers = u32_at(16) as usize;
        let stride = u32_at(20) as usize;
        let mut start_bytes = [0u8; 8];
        start_bytes.copy_from_slice(&head[24..32]);
        let file_start = u64::from_le_bytes(start_bytes);
        let count = u32_at(32) as usize;
        if (elem, layers, stride) != (self.elem, self.layers, self.stride)
            || file_start != start as u64
            || head[72..104] != parent[..]
            || !(1..=self.block).contains(&count)
        {
            return Err(Reject::Misplaced);
        }
        let expected = self.file_bytes(count);
        if meta.len() != expected {
            return Err(Reject::Length {
                expected,
                actual: meta.len(),
            });
        }
        let mut raw = vec![0u8; 4 * count];
        file.read_exact(&mut raw)?;
        let tokens: Vec<u32> = raw
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if let Some(id) = id
            && chain(parent, &tokens) != *id
        {
            return Err(Reject::Misplaced);
        }
        Ok(Some((file, Header { count, tokens })))
    }

    /// Reads a block whose header was checked, verifies its checksum, and appends its
    /// positions up to `take` (those `cache` lacks) to `cache`. Returns the bytes read.
    fn read_into(
        &self,
        mut file: File,
        header: &Header,
        start: usize,
        take: usize,
        bytes: &mut Vec<u8>,
        cache: &mut KvCache,
    ) -> Result<u64, Reject> {
        let count = header.count;
        let expected = self.file_bytes(count);
        bytes.clear();
        bytes.reserve(expected as usize);
        file.seek(SeekFrom::Start(0))?;
        // Bounded: a file that grew since its length was checked is not read whole.
        (&mut file).take(expected + 1).read_to_end(bytes)?;
        if bytes.len() as u64 != expected {
            return Err(Reject::Length {
                expected,
                actual: bytes.len() as u64,
            });
        }
        let (body, stored) = bytes.split_at(bytes.len() - 4);
        if crc32fast::hash(body) != u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]])
        {
            return Err(Reject::Checksum);
        }
        let skip = cache.len() - start;
        let take = take.min(count);
        if take <= skip {
            return Ok(bytes.len() as u64);
        }
        let row = self.stride * self.elem;
        let data = &body[HEADER_BYTES + 4 * count..];
        let layers: Vec<(&[u8], &[u8])> = (0..self.layers)
            .map(|l| {
                let keys = &data[2 * l * count * row..];
                let values = &keys[count * row..];
                (
                    &keys[skip * row..take * row],
                    &values[skip * row..take * row],
                )
            })
            .collect();
        cache.extend_from_le_bytes(&header.tokens[skip..take], &layers);
        Ok(bytes.len() as u64)
    }

    /// The one warning line for a bad file, which is then removed (it can only mislead).
    fn reject(&mut self, path: &Path, reason: &Reject) {
        self.stats.rejected_files += 1;
        let removed = fs::remove_file(path).is_ok();
        if self.warned.insert(path.to_path_buf()) {
            tracing::warn!(
                "prompt cache: ignoring {}: {reason}{}",
                path.display(),
                if removed { " (removed)" } else { "" }
            );
        }
    }

    /// Writes the blocks of `cache` that are not on disk yet, marks its path used, removes the
    /// partial block this cache wrote before if a longer one covers it now, and keeps the
    /// folder under its bound.
    pub(crate) fn store(&mut self, cache: &KvCache) {
        let tokens = cache.tokens();
        if tokens.is_empty() {
            return;
        }
        let started = Instant::now();
        let b = self.block;
        let mut parent = self.root;
        let mut start = 0;
        let mut budget = self.max_bytes;
        // (parent, id, path, positions) per block of the path.
        let mut path: Vec<(Id, Id, PathBuf, usize)> = Vec::new();
        let (mut written_tokens, mut written_bytes) = (0u64, 0u64);
        while start < tokens.len() {
            let end = (start + b).min(tokens.len());
            let size = self.file_bytes(end - start);
            if size > budget {
                // It would be evicted at once.
                break;
            }
            budget -= size;
            let id = chain(&parent, &tokens[start..end]);
            let file = self.path_of(&parent, &id, start);
            match fs::symlink_metadata(&file) {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    if let Err(e) = self.write_block(&file, &parent, start, end, cache) {
                        self.write_failed(&file, &e);
                        break;
                    }
                    written_tokens += (end - start) as u64;
                    written_bytes += size;
                }
                Err(e) => {
                    self.write_failed(&file, &e);
                    break;
                }
            }
            path.push((parent, id, file, end - start));
            parent = id;
            start = end;
        }
        let paths: Vec<PathBuf> = path.iter().map(|p| p.2.clone()).collect();
        touch_all(&paths, SystemTime::now());
        if let Some(old) = self.tail.take()
            && let Some((_, _, newer, _)) = path.get(old.start / b)
            && *newer != old.path
            && tokens.len() >= old.start + old.count
            && chain(&old.parent, &tokens[old.start..old.start + old.count]) == old.id
            && (old.start == 0
                || path
                    .get(old.start / b - 1)
                    .is_some_and(|p| p.1 == old.parent))
        {
            // Anything that matched the old tail matches the newer block as far.
            let _ = fs::remove_file(&old.path);
        }
        self.tail = path
            .last()
            .filter(|(_, _, _, n)| *n < b)
            .map(|(parent, id, file, n)| Tail {
                path: file.clone(),
                parent: *parent,
                id: *id,
                start: (path.len() - 1) * b,
                count: *n,
            });
        if written_tokens > 0 {
            self.stats.written_tokens += written_tokens;
            self.stats.written_bytes += written_bytes;
            self.evict();
            self.stats.write_time += started.elapsed();
            tracing::debug!(
                positions = written_tokens,
                bytes = written_bytes,
                ms = started.elapsed().as_secs_f64() * 1e3,
                "prompt cache: wrote"
            );
        }
    }

    fn write_failed(&mut self, path: &Path, error: &io::Error) {
        if !self.write_warned {
            self.write_warned = true;
            tracing::warn!(
                "prompt cache: cannot write {}: {error} (later failures are not reported)",
                path.display()
            );
        }
    }

    /// Writes positions `start..end` of `cache` as the block at `path`, through a temporary file
    /// renamed into place.
    fn write_block(
        &self,
        path: &Path,
        parent: &Id,
        start: usize,
        end: usize,
        cache: &KvCache,
    ) -> io::Result<()> {
        let count = end - start;
        let mut bytes = Vec::with_capacity(self.file_bytes(count) as usize);
        bytes.extend_from_slice(&MAGIC);
        for n in [
            FORMAT_VERSION,
            self.elem as u32,
            self.layers as u32,
            self.stride as u32,
        ] {
            bytes.extend_from_slice(&n.to_le_bytes());
        }
        bytes.extend_from_slice(&(start as u64).to_le_bytes());
        bytes.extend_from_slice(&(count as u32).to_le_bytes());
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&self.root);
        bytes.extend_from_slice(parent);
        for token in &cache.tokens()[start..end] {
            bytes.extend_from_slice(&token.to_le_bytes());
        }
        for layer in 0..self.layers {
            cache.append_le_bytes(layer, start..end, &mut bytes);
        }
        let crc = crc32fast::hash(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(bytes.len() as u64, self.file_bytes(count));
        let mut temp = tempfile::Builder::new()
            .prefix(TEMP_PREFIX)
            .tempfile_in(&self.dir)?;
        temp.write_all(&bytes)?;
        temp.persist(path).map_err(|e| e.error)?;
        Ok(())
    }

    /// Removes files until the folder holds at most `max_bytes`: blocks whose parent is gone
    /// first, then the least recently used, deepest first. Also clears temporary files left by
    /// processes that died while writing.
    fn evict(&mut self) {
        struct Entry {
            path: PathBuf,
            parent: [u8; 16],
            start: usize,
            mtime: SystemTime,
            bytes: u64,
        }
        let Ok(listing) = fs::read_dir(&self.dir) else {
            return;
        };
        let now = SystemTime::now();
        let mut entries = Vec::new();
        let mut ids = HashSet::new();
        let mut total = 0u64;
        for entry in listing.flatten() {
            let Ok(meta) = entry.metadata() else { continue };
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let mtime = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
            if name.starts_with(TEMP_PREFIX) {
                if meta.is_file() && now.duration_since(mtime).unwrap_or_default() > STALE_TEMP {
                    let _ = fs::remove_file(entry.path());
                }
                continue;
            }
            let Some((parent, id, start)) = parse_name(name) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            total += meta.len();
            ids.insert(id);
            entries.push(Entry {
                path: entry.path(),
                parent,
                start,
                mtime,
                bytes: meta.len(),
            });
        }
        if total <= self.max_bytes {
            return;
        }
        entries.sort_by(|a, b| {
            let orphan = |e: &Entry| e.start > 0 && !ids.contains(&e.parent);
            orphan(b)
                .cmp(&orphan(a))
                .then(a.mtime.cmp(&b.mtime))
                .then(b.start.cmp(&a.start))
        });
        for entry in entries {
            if total <= self.max_bytes {
                break;
            }
            match fs::remove_file(&entry.path) {
                Ok(()) => {
                    total -= entry.bytes;
                    self.stats.evicted_files += 1;
                }
                // Another process removed it first.
                Err(e) if e.kind() == io::ErrorKind::NotFound => total -= entry.bytes,
                Err(_) => {}
            }
        }
    }
}

/// The id of a block: its parent's id and its tokens.
fn chain(parent: &Id, tokens: &[u32]) -> Id {
    let mut h = Sha256::new();
    h.update(parent);
    for token in tokens {
        h.update(token.to_le_bytes());
    }
    h.finalize().into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 16]> {
    if text.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `PARENT-ID-START.kv` → (parent, id, start), the ids shortened to 16 bytes.
fn parse_name(name: &str) -> Option<([u8; 16], [u8; 16], usize)> {
    let stem = name.strip_suffix(EXTENSION)?.strip_suffix('.')?;
    let mut parts = stem.split('-');
    let parent = unhex(parts.next()?)?;
    let id = unhex(parts.next()?)?;
    let start = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((parent, id, start))
}

/// Marks files used now. The same instant for a whole path, so eviction's tie-break (deepest
/// first) keeps prefixes.
fn touch_all(paths: &[PathBuf], now: SystemTime) {
    for path in paths {
        if let Ok(file) = File::options().write(true).open(path) {
            let _ = file.set_modified(now);
        }
    }
}

/// Creates `dir` (and parents) private to this user, or checks that it is: a real folder owned
/// by this user that no one else can enter.
fn private_dir(dir: &Path) -> Result<(), PromptCacheError> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| PromptCacheError::io("create", dir, e))?;
    let meta = fs::symlink_metadata(dir).map_err(|e| PromptCacheError::io("inspect", dir, e))?;
    let folder = |reason: &str| PromptCacheError::Folder {
        path: dir.to_path_buf(),
        reason: reason.to_string(),
    };
    if !meta.is_dir() {
        return Err(folder("expected a folder, found a link or a file"));
    }
    if current_uid(dir) != Some(meta.uid()) {
        return Err(folder("the folder belongs to another user"));
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| PromptCacheError::io("restrict the permissions of", dir, e))?;
    }
    Ok(())
}

/// This process's effective uid: the owner of /proc/self on Linux, else of a file it makes.
fn current_uid(dir: &Path) -> Option<u32> {
    if let Ok(meta) = fs::metadata("/proc/self") {
        return Some(meta.uid());
    }
    let probe = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .ok()?;
    probe.as_file().metadata().ok().map(|m| m.uid())
}

/// A hash of what identifies a model's numbers, cheap to compute at load: `config.json`, and of
/// each `*.safetensors` file in the folder its name, size, modification time, header (tensor
/// names, dtypes, shapes, offsets) and 16 pages sampled across its data; then this build (the
/// crate version and the executable's size and modification time, so a rebuilt engine with
/// other kernels does not reuse its predecessor's numbers).
///
/// Size and mtime alone would miss a file replaced with a same-sized one whose mtime was kept
/// (`cp -p` of a fine-tune over the original); the header alone misses fine-tunes, which keep
/// every shape; the sampled pages catch both without reading gigabytes. Hashing the whole
/// checkpoint (13 GB for gpt-oss-20b) would cost more than the prefill it saves.
fn model_fingerprint(dir: &Path) -> io::Result<Id> {
    let mut h = Sha256::new();
    h.update(b"ossa model fingerprint 1\0");
    let config = fs::read(dir.join("config.json"))?;
    h.update((config.len() as u64).to_le_bytes());
    h.update(&config);
    let mut weights: Vec<PathBuf> = fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors") && p.is_file())
        .collect();
    weights.sort();
    for path in weights {
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
        let name = name.unwrap_or_default();
        h.update((name.len() as u64).to_le_bytes());
        h.update(name.as_bytes());
        let mut file = File::open(&path)?;
        let meta = file.metadata()?;
        let len = meta.len();
        h.update(len.to_le_bytes());
        h.update(mtime_nanos(&meta).to_le_bytes());
        let mut size = [0u8; 8];
        let header_len = match file.read_exact(&mut size) {
            Ok(()) => u64::from_le_bytes(size).min(len.saturating_sub(8)),
            Err(_) => 0,
        };
        let mut header = Vec::new();
        (&mut file).take(header_len).read_to_end(&mut header)?;
        h.update(&header);
        let data_start = (8 + header_len).min(len);
        let data = len - data_start;
        let mut page = vec![0u8; PAGE as usize];
        for i in 0..SAMPLE_PAGES {
            let at = data_start + data / SAMPLE_PAGES * i;
            file.seek(SeekFrom::Start(at))?;
            let n = read_up_to(&mut file, &mut page)?;
            h.update(&page[..n]);
        }
    }
    h.update(env!("CARGO_PKG_VERSION").as_bytes());
    if let Ok(meta) = std::env::current_exe().and_then(fs::metadata) {
        h.update(meta.len().to_le_bytes());
        h.update(mtime_nanos(&meta).to_le_bytes());
    }
    Ok(h.finalize().into())
}

fn mtime_nanos(meta: &fs::Metadata) -> i128 {
    meta.mtime() as i128 * 1_000_000_000 + meta.mtime_nsec() as i128
}

fn read_up_to(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match file.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_reject_others() {
        let parent = [7u8; 32];
        let id = chain(&parent, &[1, 2, 3]);
        let name = format!("{}-{}-256.kv", hex(&parent[..16]), hex(&id[..16]));
        let (p, i, start) = parse_name(&name).expect("parses");
        assert_eq!((&p[..], &i[..], start), (&parent[..16], &id[..16], 256));
        for bad in [
            "notes.txt",
            ".tmp-abc",
            "00-11-2.kv",
            &format!("{}-{}-x.kv", hex(&parent[..16]), hex(&id[..16])),
            &format!("{}-{}-1-2.kv", hex(&parent[..16]), hex(&id[..16])),
            &format!("{}-{}-1.kvx", hex(&parent[..16]), hex(&id[..16])),
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn chain_depends_on_parent_and_every_token() {
        let root = [0u8; 32];
        let a = chain(&root, &[1, 2, 3]);
        assert_ne!(a, chain(&root, &[1, 2, 4]));
        assert_ne!(a, chain(&root, &[1, 2]));
        assert_ne!(a, chain(&[1u8; 32], &[1, 2, 3]));
        // Token boundaries count: [1, 2] is not [258] read differently.
        assert_ne!(chain(&root, &[0x0102]), chain(&root, &[0x01, 0x02]));
    }
}
