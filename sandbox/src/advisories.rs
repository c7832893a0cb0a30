//! Exploits of the two wasmtime-wasi advisories that reach a WASI preview 1 guest, tried at the
//! system-call level through ossa's own linker (no libc in between to tidy the arguments).
//!
//! - GHSA-96f6-r43r-8c24: `fd_readdir` copied each entry's three padding bytes from uninitialised
//!   host memory into the guest. Fixed in wasmtime 48.0.4 (the entry is now built in a zeroed
//!   buffer); 48.0.8 carries it.
//! - GHSA-m9f7-9w4p-gv38: `path_rename` with a trailing slash on a symbolic link that points out
//!   of the preopen made `renameat` follow the link on macOS and FreeBSD. Fixed in the vendored
//!   cap-primitives of wasmtime-wasi (48.0.8 checks the source without following it, and on
//!   Linux lets the kernel refuse a slash-named link).
//!
//! Each test fails if the hole is open on this platform.

use tokio_util::sync::CancellationToken;
use wasmtime::{Module, Store};
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

use crate::host::{CallClock, Display, HostState, MonotonicClock};
use crate::limits::MemoryLimiter;
use crate::linker;
use crate::quota::{DiskUsage, FileGuard};

const GUEST: &str = r#"
(module
  (import "wasi_snapshot_preview1" "fd_readdir"
    (func $fd_readdir (param i32 i32 i32 i64 i32) (result i32)))
  (import "wasi_snapshot_preview1" "path_rename"
    (func $path_rename (param i32 i32 i32 i32 i32 i32) (result i32)))
  (memory (export "memory") 2)
  ;; readdir(fd, buf, len) -> errno; the byte count lands at address 0
  (func (export "readdir") (param i32 i32 i32) (result i32)
    (call $fd_readdir (local.get 0) (local.get 1) (local.get 2) (i64.const 0) (i32.const 0)))
  ;; rename(fd, old, old_len, new, new_len) -> errno
  (func (export "rename") (param i32 i32 i32 i32 i32) (result i32)
    (call $path_rename (local.get 0) (local.get 1) (local.get 2) (local.get 0) (local.get 3) (local.get 4)))
)
"#;

/// The first preopen's descriptor.
const PREOPEN_FD: i32 = 3;

struct Guest {
    store: Store<HostState>,
    instance: wasmtime::Instance,
    memory: wasmtime::Memory,
}

fn guest(dir: &std::path::Path) -> Guest {
    let engine = crate::engine::engine(false, 0).unwrap();
    let linker = linker::linker(&engine).unwrap();
    let module = Module::new(&engine, GUEST).unwrap();
    let mut wasi = WasiCtxBuilder::new();
    wasi.preopened_dir(dir, "/mnt/data", FsPerms::ReadWrite)
        .unwrap();
    let origin = std::time::Instant::now();
    wasi.monotonic_clock(MonotonicClock { origin });
    let state = HostState {
        wasi: wasi.build_p1(),
        limiter: MemoryLimiter::new(1 << 30),
        files: FileGuard::new(16, DiskUsage::new(1 << 30)),
        clock: CallClock {
            cancel: Some(CancellationToken::new()),
            ..Default::default()
        },
        display: Display::default(),
        monotonic_origin: origin,
        interrupt_export: None,
    };
    let mut store = Store::new(&engine, state);
    store.set_epoch_deadline(u64::MAX / 2);
    let instance = linker.instantiate(&mut store, &module).unwrap();
    let memory = instance.get_memory(&mut store, "memory").unwrap();
    Guest {
        store,
        instance,
        memory,
    }
}

#[test]
fn fd_readdir_writes_no_host_memory_into_entry_padding() {
    let dir = tempfile::tempdir().unwrap();
    // Many entries with names of every length mod 8, so entries land at every alignment.
    for i in 0..300 {
        std::fs::write(dir.path().join(format!("{}{i}", "n".repeat(i % 9))), b"").unwrap();
    }
    let mut g = guest(dir.path());
    let (buf, len) = (4096usize, 60_000usize);
    // Poison the buffer: any byte the host leaves alone stays 0xAA, any it writes is checked.
    g.memory.data_mut(&mut g.store)[buf..buf + len].fill(0xAA);
    let readdir = g
        .instance
        .get_typed_func::<(i32, i32, i32), i32>(&mut g.store, "readdir")
        .unwrap();
    let errno = readdir
        .call(&mut g.store, (PREOPEN_FD, buf as i32, len as i32))
        .unwrap();
    assert_eq!(errno, 0);
    let data = g.memory.data(&g.store);
    let used = u32::from_le_bytes(data[0..4].try_into().unwrap()) as usize;
    assert!(used > 300 * 24 && used < len, "{used}");
    let mut at = buf;
    let mut entries = 0;
    while at + 24 <= buf + used {
        let namlen = u32::from_le_bytes(data[at + 16..at + 20].try_into().unwrap()) as usize;
        assert_eq!(
            &data[at + 21..at + 24],
            &[0, 0, 0],
            "padding of entry {entries} at {at}"
        );
        at += 24 + namlen;
        entries += 1;
    }
    assert_eq!(entries, 302, "300 files plus . and ..");
}

#[test]
fn path_rename_with_a_trailing_slash_does_not_follow_a_link_out() {
    let outer = tempfile::tempdir().unwrap();
    let outside = outer.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"precious").unwrap();
    let mount = outer.path().join("mount");
    std::fs::create_dir(&mount).unwrap();
    std::os::unix::fs::symlink("../outside", mount.join("link")).unwrap();
    std::os::unix::fs::symlink(&outside, mount.join("abs")).unwrap();
    let mut g = guest(&mount);
    let rename = g
        .instance
        .get_typed_func::<(i32, i32, i32, i32, i32), i32>(&mut g.store, "rename")
        .unwrap();
    for (old, new) in [
        ("link/", "moved"),
        ("link/", "moved/"),
        ("abs/", "moved2"),
        ("link//", "moved3"),
    ] {
        let memory = g.memory.data_mut(&mut g.store);
        memory[100..100 + old.len()].copy_from_slice(old.as_bytes());
        memory[200..200 + new.len()].copy_from_slice(new.as_bytes());
        let errno = rename
            .call(
                &mut g.store,
                (PREOPEN_FD, 100, old.len() as i32, 200, new.len() as i32),
            )
            .unwrap();
        assert_ne!(errno, 0, "rename({old:?}, {new:?}) succeeded");
        assert_eq!(
            std::fs::read(outside.join("precious")).unwrap(),
            b"precious"
        );
        assert!(std::fs::symlink_metadata(&outside).unwrap().is_dir());
        assert!(!mount.join(new.trim_end_matches('/')).exists(), "{new}");
    }
    // The link itself is still a link, and renaming it by its plain name stays inside.
    assert!(
        std::fs::symlink_metadata(mount.join("link"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    let memory = g.memory.data_mut(&mut g.store);
    memory[100..104].copy_from_slice(b"link");
    memory[200..206].copy_from_slice(b"moved4");
    let errno = rename
        .call(&mut g.store, (PREOPEN_FD, 100, 4, 200, 6))
        .unwrap();
    assert_eq!(errno, 0);
    assert!(
        std::fs::symlink_metadata(mount.join("moved4"))
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert!(outside.join("precious").exists());
}
