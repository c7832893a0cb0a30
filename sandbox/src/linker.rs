//! The linker every store of an engine shares: WASI preview 1, the `poll_oneoff` and file-call
//! shadows, and the door.

use wasmtime::{Engine, Linker};

use crate::error::{Result, SandboxError};
use crate::host::{HostState, door, poll_oneoff};
use crate::quota;

/// WASI plus ossa's shadows and the door, shared by every store of an engine.
pub(crate) fn linker(engine: &Engine) -> Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |state: &mut HostState| &mut state.wasi)
        .map_err(|e| SandboxError::wasm("cannot link WASI", e))?;
    linker.allow_shadowing(true);
    linker
        .func_wrap("wasi_snapshot_preview1", "poll_oneoff", poll_oneoff)
        .map_err(|e| SandboxError::wasm("cannot link poll_oneoff", e))?;
    quota::shadow(&mut linker)?;
    linker.allow_shadowing(false);
    linker
        .func_wrap("host", "call", door)
        .map_err(|e| SandboxError::wasm("cannot link the host door", e))?;
    Ok(linker)
}
