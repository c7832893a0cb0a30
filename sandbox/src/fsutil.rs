//! Small host file-system helpers: private folders, advisory locks, atomic writes, digests.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Result, SandboxError};

/// Where ossa keeps data: `$OSSA_DATA_DIR`, else `$XDG_DATA_HOME/ossa`, else
/// `~/.local/share/ossa`.
pub fn default_data_dir() -> Result<PathBuf> {
    if let Some(dir) = non_empty_env("OSSA_DATA_DIR") {
        return Ok(PathBuf::from(dir));
    }
    if let Some(dir) = non_empty_env("XDG_DATA_HOME") {
        return Ok(PathBuf::from(dir).join("ossa"));
    }
    match non_empty_env("HOME") {
        Some(home) => Ok(PathBuf::from(home).join(".local/share/ossa")),
        None => Err(SandboxError::Artifacts {
            path: PathBuf::from("~"),
            reason: "neither OSSA_DATA_DIR, XDG_DATA_HOME nor HOME is set, so ossa has no data \
                     folder; set OSSA_DATA_DIR"
                .into(),
        }),
    }
}

pub(crate) fn non_empty_env(name: &str) -> Option<std::ffi::OsString> {
    std::env::var_os(name).filter(|v| !v.is_empty())
}

/// Creates `dir` (and parents) and makes sure it is a real folder owned by this user that no one
/// else can enter: the runtime and the compiled code live there, and a `.cwasm` is native code
/// that wasmtime runs as found.
pub(crate) fn private_dir(dir: &Path) -> Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| SandboxError::io("cannot create", dir, e))?;
    let meta = fs::symlink_metadata(dir).map_err(|e| SandboxError::io("cannot inspect", dir, e))?;
    if !meta.is_dir() {
        return Err(SandboxError::Artifacts {
            path: dir.to_owned(),
            reason: "expected a folder, found a link or a file".into(),
        });
    }
    if meta.uid() != current_uid() {
        return Err(SandboxError::Artifacts {
            path: dir.to_owned(),
            reason: "the folder belongs to another user".into(),
        });
    }
    if meta.mode() & 0o077 != 0 {
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
            .map_err(|e| SandboxError::io("cannot restrict", dir, e))?;
    }
    Ok(())
}

pub(crate) fn current_uid() -> u32 {
    // Linux shows the process's effective uid as the owner of /proc/self; elsewhere the owner of
    // a file this process just made tells the same, without an unsafe libc call.
    static UID: std::sync::OnceLock<u32> = std::sync::OnceLock::new();
    *UID.get_or_init(|| {
        if let Ok(meta) = fs::metadata("/proc/self") {
            return meta.uid();
        }
        let probe = std::env::temp_dir();
        tempfile::Builder::new()
            .prefix(".ossa-uid-")
            .tempfile_in(&probe)
            .ok()
            .and_then(|f| f.as_file().metadata().ok())
            .map(|m| m.uid())
            .unwrap_or(u32::MAX)
    })
}

/// True when `path` is a plain file (not a link) owned by this user and writable by no one else.
pub(crate) fn is_private_file(path: &Path) -> bool {
    match fs::symlink_metadata(path) {
        Ok(meta) => meta.is_file() && meta.uid() == current_uid() && meta.mode() & 0o022 == 0,
        Err(_) => false,
    }
}

/// An exclusive advisory lock on `path` (created if missing), held until dropped. Two processes
/// fetching or compiling at the same time take turns instead of corrupting each other's files.
pub(crate) struct FileLock {
    _file: File,
}

impl FileLock {
    pub(crate) fn acquire(path: &Path) -> Result<Self> {
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(path)
            .map_err(|e| SandboxError::io("cannot open the lock file", path, e))?;
        file.lock()
            .map_err(|e| SandboxError::io("cannot lock", path, e))?;
        Ok(Self { _file: file })
    }
}

/// Writes `bytes` to `dest` through a temporary file in the same folder and a rename, so a
/// reader sees the whole file or none of it.
pub(crate) fn write_atomic(dest: &Path, bytes: &[u8]) -> Result<()> {
    let dir = dest.parent().unwrap_or(Path::new("."));
    let mut tmp = tempfile::Builder::new()
        .prefix(".partial-")
        .tempfile_in(dir)
        .map_err(|e| SandboxError::io("cannot create a temporary file in", dir, e))?;
    tmp.write_all(bytes)
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(|e| SandboxError::io("cannot write", tmp.path(), e))?;
    fs::set_permissions(tmp.path(), fs::Permissions::from_mode(0o600))
        .map_err(|e| SandboxError::io("cannot restrict", tmp.path(), e))?;
    tmp.persist(dest)
        .map_err(|e| SandboxError::io("cannot rename into", dest, e.error))?;
    Ok(())
}

/// SHA-256 of a file, as lowercase hex.
pub(crate) fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).map_err(|e| SandboxError::io("cannot open", path, e))?;
    sha256_reader(&mut file).map_err(|e| SandboxError::io("cannot read", path, e))
}

pub(crate) fn sha256_reader(reader: &mut impl Read) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = reader.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

pub(crate) fn sha256_bytes(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}
