//! The shadowed WASI file calls: each checks the [`FileGuard`]'s caps, runs wasmtime-wasi's own
//! implementation of the call for the work, and counts what it did (see the parent module).

use wasmtime::{AsContextMut, Caller, Linker};
use wasmtime_wasi::p1::types::{Fd, Filestat, Filetype, Lookupflags};
use wasmtime_wasi::p1::wasi_snapshot_preview1::{self, WasiSnapshotPreview1};
use wiggle::{GuestMemory, GuestPtr};

use super::{ENTRY_BYTES, FileGuard, OpenFile, Write};
use crate::error::{Result, SandboxError};
use crate::host::{HostState, guest_memory};

// preview1 errno values.
const ERRNO_SUCCESS: i32 = 0;
const ERRNO_MFILE: i32 = 33;

// preview1 flag bits.
const OFLAGS_CREAT: i32 = 1;
const OFLAGS_EXCL: i32 = 4;
const OFLAGS_TRUNC: i32 = 8;
const FDFLAGS_APPEND: i32 = 1;

/// Puts the shadows in `linker` in place of wasmtime-wasi's functions (shadowing allowed).
pub(crate) fn shadow(linker: &mut Linker<HostState>) -> Result<()> {
    macro_rules! shadow {
        ($($name:ident),*) => {
            $(linker
                .func_wrap("wasi_snapshot_preview1", stringify!($name), $name)
                .map_err(|e| SandboxError::wasm(concat!("cannot link ", stringify!($name)), e))?;)*
        };
    }
    shadow!(
        path_open,
        fd_close,
        fd_renumber,
        fd_fdstat_set_flags,
        fd_write,
        fd_pwrite,
        fd_filestat_set_size,
        path_unlink_file,
        path_rename,
        path_link,
        path_symlink,
        path_create_directory,
        path_remove_directory
    );
    Ok(())
}

/// Runs wasmtime-wasi's own implementation of the preview-1 call `$name` (the function its
/// linker wraps, with the raw arguments), as that wrapper does: on the guest's memory, with the
/// store's host-call fuel, blocking on the file system work.
macro_rules! original {
    // wasmtime-wasi implements most calls as futures (the file system work may block).
    (@finish $call:ident) => { wasmtime_wasi::runtime::in_tokio($call)? };
    (@finish $call:ident sync) => { $call? };
    ($caller:expr, $name:ident($($arg:expr),* $(,)?) $($sync:ident)?) => {{
        let caller: &mut Ctx<'_> = $caller;
        let fuel = caller.as_context_mut().hostcall_fuel();
        let memory = guest_memory(caller)
            .ok_or_else(|| wasmtime::format_err!("missing required memory export"))?;
        let (data, state) = memory.data_and_store_mut(&mut *caller);
        state.wasi.set_hostcall_fuel(fuel);
        let mut memory = GuestMemory::Unshared(data);
        let call = wasi_snapshot_preview1::$name(&mut state.wasi, &mut memory, $($arg),*);
        original!(@finish call $($sync)?)
    }};
}

type Ctx<'a> = Caller<'a, HostState>;

fn guard<'a>(caller: &'a mut Ctx<'_>) -> &'a mut FileGuard {
    &mut caller.data_mut().files
}

// --- Queries through wasmtime-wasi's preview-1 implementation. A failed query means the call
// itself will fail the same way; the shadow then lets it through uncounted.

fn fd_stat(caller: &mut Ctx<'_>, fd: i32) -> Option<Filestat> {
    let mut memory = GuestMemory::Unshared(&mut []);
    let wasi = &mut caller.data_mut().wasi;
    wasmtime_wasi::runtime::in_tokio(wasi.fd_filestat_get(&mut memory, Fd::from(fd))).ok()
}

fn fd_tell(caller: &mut Ctx<'_>, fd: i32) -> Option<u64> {
    let mut memory = GuestMemory::Unshared(&mut []);
    caller
        .data_mut()
        .wasi
        .fd_tell(&mut memory, Fd::from(fd))
        .ok()
}

/// What is at `path` (a guest string) under the folder `dirfd`.
fn path_stat(
    caller: &mut Ctx<'_>,
    dirfd: i32,
    follow: bool,
    path: i32,
    len: i32,
) -> Option<Filestat> {
    let memory = guest_memory(caller)?;
    let (data, state) = memory.data_and_store_mut(caller.as_context_mut());
    let mut memory = GuestMemory::Unshared(data);
    // wasmtime-wasi charges copying the path to the call's host fuel; this lookup copies it once.
    state.wasi.set_hostcall_fuel(len as u32 as usize);
    let flags = if follow {
        Lookupflags::SYMLINK_FOLLOW
    } else {
        Lookupflags::empty()
    };
    let path = GuestPtr::<str>::new((path as u32, len as u32));
    let stat = state
        .wasi
        .path_filestat_get(&mut memory, Fd::from(dirfd), flags, path);
    wasmtime_wasi::runtime::in_tokio(stat).ok()
}

fn read_u32(caller: &mut Ctx<'_>, ptr: i32) -> Option<u32> {
    let memory = guest_memory(caller)?;
    let mut bytes = [0u8; 4];
    memory
        .read(&*caller, ptr as u32 as usize, &mut bytes)
        .ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// The bytes `iovs` (an array of `count` (pointer, length) pairs) ask to write.
fn requested(caller: &mut Ctx<'_>, iovs: i32, count: i32) -> Option<u64> {
    let memory = guest_memory(caller)?;
    let start = iovs as u32 as usize;
    let len = (count as u32 as usize).checked_mul(8)?;
    let data = memory.data(&*caller).get(start..start.checked_add(len)?)?;
    Some(
        data.chunks_exact(8)
            .map(|iov| u64::from(u32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]])))
            .sum(),
    )
}

fn follows_links(lookupflags: i32) -> bool {
    lookupflags & 1 != 0
}

// --- The shadows.

#[allow(clippy::too_many_arguments)] // preview1's signature
fn path_open(
    mut caller: Ctx<'_>,
    dirfd: i32,
    dirflags: i32,
    path: i32,
    path_len: i32,
    oflags: i32,
    rights_base: i64,
    rights_inheriting: i64,
    fdflags: i32,
    opened: i32,
) -> wasmtime::Result<i32> {
    let files = guard(&mut caller);
    if files.open.len() >= files.max_open {
        files.refused.open_files = true;
        return Ok(ERRNO_MFILE);
    }
    let create = oflags & OFLAGS_CREAT != 0;
    let exclusive = oflags & OFLAGS_EXCL != 0;
    let truncate = oflags & OFLAGS_TRUNC != 0;
    // What is there now: whether the open creates a file, and what a truncation gives back.
    let existing = if (create && !exclusive) || truncate {
        path_stat(&mut caller, dirfd, follows_links(dirflags), path, path_len)
    } else {
        None
    };
    let creates = create && (exclusive || existing.is_none());
    if creates && !guard(&mut caller).disk.fits(ENTRY_BYTES) {
        return Ok(guard(&mut caller).refuse_disk());
    }
    let errno = original!(
        &mut caller,
        path_open(
            dirfd,
            dirflags,
            path,
            path_len,
            oflags,
            rights_base,
            rights_inheriting,
            fdflags,
            opened
        )
    );
    if errno != ERRNO_SUCCESS {
        return Ok(errno);
    }
    let Some(fd) = read_u32(&mut caller, opened) else {
        return Ok(errno);
    };
    let id = fd_stat(&mut caller, fd as i32)
        .filter(|s| s.filetype != Filetype::Directory)
        .map(|s| s.ino);
    let files = guard(&mut caller);
    files.open.insert(
        fd,
        OpenFile {
            id,
            append: fdflags & FDFLAGS_APPEND != 0,
        },
    );
    if creates {
        files.disk.charge(ENTRY_BYTES);
    }
    if let Some(old) = existing.filter(|s| truncate && s.filetype == Filetype::RegularFile) {
        files.disk.credit(old.size);
    }
    Ok(errno)
}

/// Bytes that closing `fd` gives back: those of a file already removed (no links left) that no
/// other descriptor of the guest holds.
fn closing_frees(caller: &mut Ctx<'_>, fd: i32) -> u64 {
    let files = guard(caller);
    let Some(id) = files.open.get(&(fd as u32)).and_then(|f| f.id) else {
        return 0;
    };
    if files.holds(id, Some(fd as u32)) {
        return 0;
    }
    match fd_stat(caller, fd) {
        Some(stat) if stat.nlink == 0 => stat.size,
        _ => 0,
    }
}

fn fd_close(mut caller: Ctx<'_>, fd: i32) -> wasmtime::Result<i32> {
    let frees = closing_frees(&mut caller, fd);
    let errno = original!(&mut caller, fd_close(fd));
    let files = guard(&mut caller);
    if errno == ERRNO_SUCCESS && files.open.remove(&(fd as u32)).is_some() {
        files.disk.credit(frees);
    }
    Ok(errno)
}

/// `dup2`: `to` is closed and `from` takes its number.
fn fd_renumber(mut caller: Ctx<'_>, from: i32, to: i32) -> wasmtime::Result<i32> {
    let frees = if from != to {
        closing_frees(&mut caller, to)
    } else {
        0
    };
    let errno = original!(&mut caller, fd_renumber(from, to));
    let files = guard(&mut caller);
    if errno == ERRNO_SUCCESS && from != to {
        if files.open.remove(&(to as u32)).is_some() {
            files.disk.credit(frees);
        }
        if let Some(file) = files.open.remove(&(from as u32)) {
            files.open.insert(to as u32, file);
        }
    }
    Ok(errno)
}

fn fd_fdstat_set_flags(mut caller: Ctx<'_>, fd: i32, flags: i32) -> wasmtime::Result<i32> {
    let errno = original!(&mut caller, fd_fdstat_set_flags(fd, flags) sync);
    if errno == ERRNO_SUCCESS
        && let Some(file) = guard(&mut caller).open.get_mut(&(fd as u32))
    {
        file.append = flags & FDFLAGS_APPEND != 0;
    }
    Ok(errno)
}

/// The write about to happen on `fd` (at `offset`, or at the descriptor's position); `None` for
/// descriptors that are not files the guest opened (stdout, stderr), and for calls that will
/// fail anyway.
fn plan_write(caller: &mut Ctx<'_>, fd: i32, offset: Option<u64>) -> Option<Write> {
    let file = *guard(caller).open.get(&(fd as u32))?;
    file.id?;
    let size = fd_stat(caller, fd)?.size;
    let at = if file.append {
        None
    } else {
        Some(match offset {
            Some(offset) => offset,
            None => fd_tell(caller, fd)?,
        })
    };
    Some(Write { size, at })
}

/// A write of the buffers `iovs` (`iovs_len` of them) that `plan` says may grow a file: refused
/// when its growth does not fit, its growth by the bytes `write` wrote (at `nwritten`) counted.
fn metered_write(
    caller: &mut Ctx<'_>,
    plan: Option<Write>,
    (iovs, iovs_len, nwritten): (i32, i32, i32),
    write: impl FnOnce(&mut Ctx<'_>) -> wasmtime::Result<i32>,
) -> wasmtime::Result<i32> {
    if let Some(plan) = &plan
        && let Some(requested) = requested(caller, iovs, iovs_len)
        && !guard(caller).disk.fits(plan.growth(requested))
    {
        return Ok(guard(caller).refuse_disk());
    }
    let errno = write(caller)?;
    if errno == ERRNO_SUCCESS
        && let Some(plan) = plan
        && let Some(n) = read_u32(caller, nwritten)
    {
        guard(caller).disk.charge(plan.growth(u64::from(n)));
    }
    Ok(errno)
}

fn fd_write(
    mut caller: Ctx<'_>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    let plan = plan_write(&mut caller, fd, None);
    metered_write(&mut caller, plan, (iovs, iovs_len, nwritten), |caller| {
        Ok(original!(caller, fd_write(fd, iovs, iovs_len, nwritten)))
    })
}

fn fd_pwrite(
    mut caller: Ctx<'_>,
    fd: i32,
    iovs: i32,
    iovs_len: i32,
    offset: i64,
    nwritten: i32,
) -> wasmtime::Result<i32> {
    let plan = plan_write(&mut caller, fd, Some(offset as u64));
    metered_write(&mut caller, plan, (iovs, iovs_len, nwritten), |caller| {
        Ok(original!(
            caller,
            fd_pwrite(fd, iovs, iovs_len, offset, nwritten)
        ))
    })
}

/// `ftruncate`: growing a file counts the new bytes (zeros or a hole alike).
fn fd_filestat_set_size(mut caller: Ctx<'_>, fd: i32, size: i64) -> wasmtime::Result<i32> {
    let old = match guard(&mut caller).open.get(&(fd as u32)) {
        Some(OpenFile { id: Some(_), .. }) => fd_stat(&mut caller, fd).map(|s| s.size),
        _ => None,
    };
    let new = size as u64;
    if let Some(old) = old
        && new > old
        && !guard(&mut caller).disk.fits(new - old)
    {
        return Ok(guard(&mut caller).refuse_disk());
    }
    let errno = original!(&mut caller, fd_filestat_set_size(fd, size));
    if errno == ERRNO_SUCCESS
        && let Some(old) = old
    {
        let disk = &guard(&mut caller).disk;
        if new > old {
            disk.charge(new - old);
        } else {
            disk.credit(old - new);
        }
    }
    Ok(errno)
}

fn path_unlink_file(mut caller: Ctx<'_>, dirfd: i32, path: i32, len: i32) -> wasmtime::Result<i32> {
    let removed = path_stat(&mut caller, dirfd, false, path, len);
    let errno = original!(&mut caller, path_unlink_file(dirfd, path, len));
    if errno == ERRNO_SUCCESS
        && let Some(stat) = removed
    {
        let files = guard(&mut caller);
        files.disk.credit(files.removal_frees(&stat));
    }
    Ok(errno)
}

/// A rename over an existing entry removes that entry.
fn path_rename(
    mut caller: Ctx<'_>,
    dirfd: i32,
    old: i32,
    old_len: i32,
    new_dirfd: i32,
    new: i32,
    new_len: i32,
) -> wasmtime::Result<i32> {
    let replaced = path_stat(&mut caller, new_dirfd, false, new, new_len);
    let source = match &replaced {
        Some(_) => path_stat(&mut caller, dirfd, false, old, old_len),
        None => None,
    };
    let errno = original!(
        &mut caller,
        path_rename(dirfd, old, old_len, new_dirfd, new, new_len)
    );
    if errno == ERRNO_SUCCESS
        && let Some(stat) = replaced
        // Renaming a file onto another link of itself changes nothing.
        && source.is_none_or(|s| s.ino != stat.ino)
    {
        let files = guard(&mut caller);
        files.disk.credit(files.removal_frees(&stat));
    }
    Ok(errno)
}

/// A new entry that costs `cost`: refused when it does not fit, counted when made.
fn create_entry(
    caller: &mut Ctx<'_>,
    cost: u64,
    make: impl FnOnce(&mut Ctx<'_>) -> wasmtime::Result<i32>,
) -> wasmtime::Result<i32> {
    if !guard(caller).disk.fits(cost) {
        return Ok(guard(caller).refuse_disk());
    }
    let errno = make(caller)?;
    if errno == ERRNO_SUCCESS {
        guard(caller).disk.charge(cost);
    }
    Ok(errno)
}

#[allow(clippy::too_many_arguments)] // preview1's signature
fn path_link(
    mut caller: Ctx<'_>,
    old_dirfd: i32,
    old_flags: i32,
    old: i32,
    old_len: i32,
    new_dirfd: i32,
    new: i32,
    new_len: i32,
) -> wasmtime::Result<i32> {
    create_entry(&mut caller, ENTRY_BYTES, |caller| {
        Ok(original!(
            caller,
            path_link(old_dirfd, old_flags, old, old_len, new_dirfd, new, new_len)
        ))
    })
}

/// A link holds its target's path.
fn path_symlink(
    mut caller: Ctx<'_>,
    target: i32,
    target_len: i32,
    dirfd: i32,
    path: i32,
    path_len: i32,
) -> wasmtime::Result<i32> {
    let cost = ENTRY_BYTES + u64::from(target_len as u32);
    create_entry(&mut caller, cost, |caller| {
        Ok(original!(
            caller,
            path_symlink(target, target_len, dirfd, path, path_len)
        ))
    })
}

fn path_create_directory(
    mut caller: Ctx<'_>,
    dirfd: i32,
    path: i32,
    len: i32,
) -> wasmtime::Result<i32> {
    create_entry(&mut caller, ENTRY_BYTES, |caller| {
        Ok(original!(caller, path_create_directory(dirfd, path, len)))
    })
}

fn path_remove_directory(
    mut caller: Ctx<'_>,
    dirfd: i32,
    path: i32,
    len: i32,
) -> wasmtime::Result<i32> {
    let errno = original!(&mut caller, path_remove_directory(dirfd, path, len));
    if errno == ERRNO_SUCCESS {
        guard(&mut caller).disk.credit(ENTRY_BYTES);
    }
    Ok(errno)
}
