//! The wasmtime engine and the compiled interpreter, cached as native code.
//!
//! Compiling the 74 MB interpreter takes minutes and gigabytes, so it is done once and the
//! result (`.cwasm`) is kept under `<data>/python/compiled/`, named by the module's digest, the
//! version of ossa's change to it (`patch.rs`), the wasmtime version, the flavour (plain or
//! fuel-metered: metering changes the generated code) and the engine's compatibility hash.
//! Loading it is an mmap (tens of milliseconds).

use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use wasmtime::{Config, Engine, Module};

use crate::error::{Result, SandboxError};
use crate::fsutil::{self, FileLock};
use crate::patch::{self, PATCH_VERSION};
use crate::runtime::{Progress, Runtime};

/// The wasmtime release this crate pins (`=48.0.8` in Cargo.toml); part of the cache key.
pub(crate) const WASMTIME_VERSION: &str = "48.0.8";
/// The guest's stack. wasmtime's default 512 KiB overflows in ordinary deep Python code
/// (pickling a nested list), so the interpreter gets 8 MiB.
pub(crate) const WASM_STACK: usize = 8 << 20;
/// Native stack of the threads that run guest code: wasm frames live on it.
pub(crate) const NATIVE_STACK: usize = 32 << 20;

/// Tables per pooled instance (CPython's module has one; headroom for the runtime's own).
const POOL_TABLES_PER_INSTANCE: u32 = 4;
/// Memories per pooled interpreter: its linear memory, and the GC heap a store allocates (from
/// the same pool) once the guest throws its first wasm exception.
const POOL_MEMORIES_PER_INSTANCE: u32 = 2;

/// An engine; `pool_slots > 0` serves that many interpreters at once from the pooling allocator,
/// whose slots are reused without unmapping (start and teardown of a fresh interpreter take a
/// third of the time), `0` uses the on-demand allocator, which has no such cap (the sandbox's
/// budget bounds both).
pub(crate) fn engine(metered: bool, pool_slots: u32) -> Result<Engine> {
    let mut config = Config::new();
    config
        // CPython is built with the exnref exception-handling proposal (`try_table`).
        .wasm_exceptions(true)
        .epoch_interruption(true)
        .consume_fuel(metered)
        .max_wasm_stack(WASM_STACK)
        // With the `async` feature compiled in (wasmtime-wasi forces it), the engine insists on
        // an async stack at least as large as the wasm stack, used or not.
        .async_stack_size(WASM_STACK + (2 << 20));
    if pool_slots > 0 {
        let mut pool = wasmtime::PoolingAllocationConfig::new();
        pool.total_memories(pool_slots * POOL_MEMORIES_PER_INSTANCE)
            .total_core_instances(pool_slots)
            .total_gc_heaps(pool_slots)
            .total_tables(pool_slots * POOL_TABLES_PER_INSTANCE)
            .max_tables_per_module(POOL_TABLES_PER_INSTANCE)
            // Guests run synchronously on their own threads: no async stacks.
            .total_stacks(0)
            // wasm32's whole range, so any memory limit fits; only address space is reserved.
            .max_memory_size(4 << 30)
            .table_elements(1 << 17)
            .max_core_instance_size(8 << 20);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
    }
    Engine::new(&config).map_err(|e| SandboxError::wasm("cannot create the engine", e))
}

/// The compiled interpreter for `engine`: from the cache, or compiled now and cached.
pub(crate) fn module(
    engine: &Engine,
    runtime: &Runtime,
    metered: bool,
    progress: Progress,
) -> Result<Module> {
    let dir = runtime.home.join("compiled");
    fsutil::private_dir(&dir)?;
    let path = cache_path(&dir, engine, runtime, metered);
    if let Some(module) = load_cached(engine, &path) {
        return Ok(module);
    }
    let lock_path = path.with_extension("lock");
    let _lock = FileLock::acquire(&lock_path)?;
    // Another process may have compiled it while this one waited.
    if let Some(module) = load_cached(engine, &path) {
        return Ok(module);
    }
    let flavour = if metered { "fuel-metered " } else { "" };
    let started = std::time::Instant::now();
    let bytes =
        fs::read(&runtime.wasm).map_err(|e| SandboxError::io("cannot read", &runtime.wasm, e))?;
    // What gets compiled must be exactly the verified module.
    let actual = fsutil::sha256_bytes(&bytes);
    if actual != runtime.wasm_sha256 {
        return Err(SandboxError::Digest {
            path: runtime.wasm.clone(),
            expected: runtime.wasm_sha256.clone(),
            actual,
        });
    }
    // The verified module with CPython's interrupt exported (`patch.rs`); as it is when the
    // module does not name the function, and then Ctrl-C falls back to cancelling.
    let bytes = match patch::add_interrupt_export(&bytes)? {
        Some(patched) => patched,
        None => {
            tracing::warn!(
                "the interpreter does not name PyErr_SetInterruptEx; KeyboardInterrupt cannot be raised in it"
            );
            bytes
        }
    };
    let compiled = progress
        .during(
            &format!(
                "compiling the {flavour}Python runtime to native code (once: 1-5 minutes, about \
                 2.5 GB of memory)"
            ),
            || engine.precompile_module(&bytes),
        )
        .map_err(|e| SandboxError::wasm("cannot compile the interpreter", e))?;
    drop(bytes);
    fsutil::write_atomic(&path, &compiled)?;
    drop(compiled);
    progress.say(&format!(
        "compiled in {:.0} s; cached at {}",
        started.elapsed().as_secs_f64(),
        path.display()
    ));
    load_cached(engine, &path).ok_or_else(|| SandboxError::Wasm {
        context: "cannot load the interpreter just compiled",
        message: path.display().to_string(),
    })
}

fn cache_path(dir: &Path, engine: &Engine, runtime: &Runtime, metered: bool) -> PathBuf {
    let mut hasher = std::hash::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    let flavour = if metered { "fuel" } else { "plain" };
    let digest = runtime
        .wasm_sha256
        .get(..32)
        .unwrap_or(&runtime.wasm_sha256);
    dir.join(format!(
        "{digest}-{PATCH_VERSION}-wasmtime{WASMTIME_VERSION}-{flavour}-{:016x}.cwasm",
        hasher.finish()
    ))
}

/// The cached module, if the file is ossa's own and wasmtime accepts it. A refused file is
/// removed so the next step compiles afresh.
fn load_cached(engine: &Engine, path: &Path) -> Option<Module> {
    if !path.exists() {
        return None;
    }
    if !fsutil::is_private_file(path) {
        tracing::warn!(path = %path.display(), "ignoring a compiled module that is not a private file of this user");
        let _ = fs::remove_file(path);
        return None;
    }
    // SAFETY: `deserialize_file` runs the file's machine code. The file is a plain file owned by
    // this user, writable by no one else, in a 0700 folder that no guest is ever granted, and
    // was written (atomically) by `module` above from the verified interpreter.
    match unsafe { Module::deserialize_file(engine, path) } {
        Ok(module) => Some(module),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "the cached compiled module does not load; compiling again");
            let _ = fs::remove_file(path);
            None
        }
    }
}
