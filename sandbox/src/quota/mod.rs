//! The guest's files: how many it may hold open and how much its folders may grow.
//!
//! wasmtime-wasi gives each file the guest opens a host descriptor and writes whatever it is
//! asked to, so without a bound one cell can take all of the process's descriptors (every other
//! session, and the server around them, then fails to open anything) or fill the disk (or the
//! memory, where the host's temp folder is a tmpfs). The WASI calls that open, close, grow,
//! create and remove files are shadowed here: each checks the caps, runs wasmtime-wasi's own
//! implementation of the call for the work, and counts what it did.
//!
//! - Open files: descriptors the guest opened (`path_open`) and has not closed, at most
//!   `Limits::max_open_files`; past it `path_open` fails with EMFILE.
//! - Disk: the bytes the session's folders (`/tmp` and `/mnt/data` together) grew by, at most
//!   `Limits::disk_bytes`. A write, a truncation that grows a file, and a new file, folder or link
//!   count; a write past the end counts the gap as well (a sparse file is charged as if it were
//!   filled), and every file, folder or link counts [`ENTRY_BYTES`] besides its bytes, so a
//!   million empty files cannot hide in the count. Deleting, truncating and replacing give the
//!   bytes back, except for files the guest still holds open (their space is freed when the last
//!   descriptor closes, and given back then) and for files with other hard links. A write that
//!   would pass the quota is refused whole with ENOSPC and nothing is written.
//!
//! The count starts at zero when the session starts (files already in a mounted folder are not
//! the session's) and never goes below zero, so deleting the user's own files grants nothing. It
//! belongs to the session, not to one interpreter: a reset does not refill it.
//!
//! The work and the sizes and positions both come from wasmtime-wasi's own preview-1
//! implementation (the `wasi_snapshot_preview1` module its linker wraps: public but generated,
//! pinned with wasmtime at `=48.0.8`), so the count sees exactly the descriptors and paths the
//! guest's call acts on.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use wasmtime_wasi::p1::types::{Filestat, Filetype};

mod shadow;

pub(crate) use shadow::shadow;

/// What each file, folder or link counts besides its bytes: a block, about what an inode, a
/// directory entry and a partly filled last block cost a file system (a tmpfs holds them in
/// memory).
pub(crate) const ENTRY_BYTES: u64 = 4096;

// preview1's errno for a full disk.
const ERRNO_NOSPC: i32 = 51;

/// How many bytes a session's folders grew by, shared by its successive interpreters.
#[derive(Debug)]
pub(crate) struct DiskUsage {
    limit: u64,
    used: AtomicU64,
}

impl DiskUsage {
    pub(crate) fn new(limit: u64) -> Arc<Self> {
        Arc::new(Self {
            limit,
            used: AtomicU64::new(0),
        })
    }

    pub(crate) fn limit(&self) -> u64 {
        self.limit
    }

    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    fn fits(&self, more: u64) -> bool {
        self.used()
            .checked_add(more)
            .is_some_and(|t| t <= self.limit)
    }

    fn charge(&self, bytes: u64) {
        // One interpreter at a time uses a session's count: no update is lost between the load
        // and the store, and `fetch_update` keeps it that way if that ever changes.
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_add(bytes))
            });
    }

    fn credit(&self, bytes: u64) {
        let _ = self
            .used
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |u| {
                Some(u.saturating_sub(bytes))
            });
    }
}

/// A descriptor the guest opened.
#[derive(Clone, Copy, Debug)]
struct OpenFile {
    /// The file's identity (wasmtime-wasi's inode hash); `None` for a folder.
    id: Option<u64>,
    /// Writes go to the end of the file.
    append: bool,
}

/// The caps the call hit, for a note after its output.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Refused {
    pub(crate) open_files: bool,
    pub(crate) disk: bool,
}

/// One interpreter's open files and its session's disk count (in the store's data).
pub(crate) struct FileGuard {
    max_open: usize,
    open: HashMap<u32, OpenFile>,
    disk: Arc<DiskUsage>,
    pub(crate) refused: Refused,
}

impl FileGuard {
    pub(crate) fn new(max_open: usize, disk: Arc<DiskUsage>) -> Self {
        Self {
            max_open,
            open: HashMap::new(),
            disk,
            refused: Refused::default(),
        }
    }

    pub(crate) fn max_open(&self) -> usize {
        self.max_open
    }

    pub(crate) fn disk(&self) -> &DiskUsage {
        &self.disk
    }

    /// Whether one of the guest's descriptors holds the file `id`, other than `except`.
    fn holds(&self, id: u64, except: Option<u32>) -> bool {
        self.open
            .iter()
            .any(|(fd, file)| Some(*fd) != except && file.id == Some(id))
    }

    /// Bytes that removing the entry `stat` describes gives back now.
    fn removal_frees(&self, stat: &Filestat) -> u64 {
        match stat.filetype {
            Filetype::Directory => ENTRY_BYTES,
            // The data stays while another link or an open descriptor holds it.
            Filetype::RegularFile if stat.nlink > 1 || self.holds(stat.ino, None) => ENTRY_BYTES,
            _ => stat.size.saturating_add(ENTRY_BYTES),
        }
    }

    fn refuse_disk(&mut self) -> i32 {
        self.refused.disk = true;
        ERRNO_NOSPC
    }
}

/// How a write to a file changes its size.
struct Write {
    size: u64,
    /// The offset written at; `None` when appending.
    at: Option<u64>,
}

impl Write {
    /// Bytes the file grows by when `n` bytes are written.
    fn growth(&self, n: u64) -> u64 {
        match self.at {
            None => n,
            Some(at) => at.saturating_add(n).saturating_sub(self.size),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat(filetype: Filetype, size: u64, nlink: u64, ino: u64) -> Filestat {
        Filestat {
            dev: 1,
            ino,
            filetype,
            nlink,
            size,
            atim: 0,
            mtim: 0,
            ctim: 0,
        }
    }

    #[test]
    fn the_count_refuses_past_the_limit_and_never_goes_below_zero() {
        let disk = DiskUsage::new(10_000);
        assert!(disk.fits(10_000));
        disk.charge(6_000);
        assert!(!disk.fits(4_001));
        assert!(disk.fits(4_000));
        disk.credit(1_000_000);
        assert_eq!(
            disk.used(),
            0,
            "removing files the session did not write grants nothing"
        );
        assert!(!disk.fits(u64::MAX), "no overflow");
    }

    #[test]
    fn writes_past_the_end_count_the_gap_and_appends_their_length() {
        let overwrite = Write {
            size: 100,
            at: Some(10),
        };
        assert_eq!(overwrite.growth(50), 0);
        assert_eq!(overwrite.growth(100), 10);
        let sparse = Write {
            size: 100,
            at: Some(10_000_000_000),
        };
        assert_eq!(sparse.growth(1), 10_000_000_000 - 99);
        let append = Write {
            size: 100,
            at: None,
        };
        assert_eq!(append.growth(7), 7);
    }

    #[test]
    fn removing_gives_back_only_what_is_freed() {
        let mut guard = FileGuard::new(8, DiskUsage::new(1 << 20));
        let lone = stat(Filetype::RegularFile, 5_000, 1, 7);
        assert_eq!(guard.removal_frees(&lone), 5_000 + ENTRY_BYTES);
        let linked = stat(Filetype::RegularFile, 5_000, 2, 7);
        assert_eq!(guard.removal_frees(&linked), ENTRY_BYTES);
        let folder = stat(Filetype::Directory, 4096, 2, 9);
        assert_eq!(guard.removal_frees(&folder), ENTRY_BYTES);
        let link = stat(Filetype::SymbolicLink, 11, 1, 10);
        assert_eq!(guard.removal_frees(&link), 11 + ENTRY_BYTES);
        // Held open: the data stays until the descriptor closes.
        guard.open.insert(
            5,
            OpenFile {
                id: Some(7),
                append: false,
            },
        );
        assert_eq!(guard.removal_frees(&lone), ENTRY_BYTES);
        assert!(guard.holds(7, None));
        assert!(!guard.holds(7, Some(5)));
    }
}
