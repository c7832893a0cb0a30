//! Which files a call wrote under `/mnt/data`: the mount is listed before and after the call
//! (without following links) and new or changed regular files are reported.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where the guest sees its read-write folder.
pub(crate) const MOUNT_GUEST: &str = "/mnt/data";

/// Entries looked at per listing: a guest that makes a million files costs the host a bounded
/// walk, and the report says how many were left out.
const MAX_WALK: usize = 20_000;
/// Files reported per call.
const MAX_REPORTED: usize = 1_000;

/// A file a call created or changed under `/mnt/data`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WrittenFile {
    /// Where the guest sees it, e.g. `/mnt/data/plot.png`.
    pub guest_path: String,
    /// Where it is on the host.
    pub host_path: PathBuf,
    pub bytes: u64,
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Stamp {
    len: u64,
    mtime_ns: i128,
    ino: u64,
    ctime_ns: i128,
}

/// The regular files under a mount, by path relative to it.
pub(crate) struct Listing {
    files: HashMap<PathBuf, Stamp>,
    /// The walk stopped at `MAX_WALK` entries.
    partial: bool,
}

pub(crate) fn list(root: &Path) -> Listing {
    let mut files = HashMap::new();
    let mut seen = 0usize;
    let mut partial = false;
    let mut stack = vec![PathBuf::new()];
    'walk: while let Some(relative) = stack.pop() {
        let Ok(entries) = fs::read_dir(root.join(&relative)) else {
            continue;
        };
        for entry in entries.flatten() {
            seen += 1;
            if seen > MAX_WALK {
                partial = true;
                break 'walk;
            }
            // `DirEntry::metadata` does not follow links: a link the guest made is not a way
            // to make the host report (or a UI open) a file outside the mount.
            let Ok(meta) = entry.metadata() else {
                continue;
            };
            let path = relative.join(entry.file_name());
            if meta.is_dir() {
                stack.push(path);
            } else if meta.is_file() {
                let stamp = Stamp {
                    len: meta.len(),
                    mtime_ns: i128::from(meta.mtime()) * 1_000_000_000
                        + i128::from(meta.mtime_nsec()),
                    ino: meta.ino(),
                    ctime_ns: i128::from(meta.ctime()) * 1_000_000_000
                        + i128::from(meta.ctime_nsec()),
                };
                files.insert(path, stamp);
            }
        }
    }
    Listing { files, partial }
}

/// Files in `after` that are not in `before` or changed since; the second value counts the ones
/// left out of the report (past `MAX_REPORTED`, or unlisted because the walk was cut short).
pub(crate) fn written(root: &Path, before: &Listing, after: &Listing) -> (Vec<WrittenFile>, usize) {
    let mut changed: Vec<(&PathBuf, &Stamp)> = after
        .files
        .iter()
        .filter(|(path, stamp)| before.files.get(*path) != Some(stamp))
        .collect();
    changed.sort_by(|a, b| a.0.cmp(b.0));
    let mut omitted = changed.len().saturating_sub(MAX_REPORTED);
    if after.partial {
        omitted += 1;
    }
    let files = changed
        .into_iter()
        .take(MAX_REPORTED)
        .map(|(relative, stamp)| WrittenFile {
            guest_path: format!("{MOUNT_GUEST}/{}", relative.to_string_lossy()),
            host_path: root.join(relative),
            bytes: stamp.len,
        })
        .collect();
    (files, omitted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_and_changed_files_are_reported_but_not_links_or_untouched_files() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::write(root.join("old.txt"), b"old").unwrap();
        fs::write(root.join("same.txt"), b"same").unwrap();
        let before = list(root);
        fs::write(root.join("old.txt"), b"changed!").unwrap();
        fs::create_dir(root.join("sub")).unwrap();
        fs::write(root.join("sub/new.png"), b"png").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", root.join("link")).unwrap();
        let after = list(root);
        let (files, omitted) = written(root, &before, &after);
        let names: Vec<&str> = files.iter().map(|f| f.guest_path.as_str()).collect();
        assert_eq!(names, ["/mnt/data/old.txt", "/mnt/data/sub/new.png"]);
        assert_eq!(files[0].bytes, 8);
        assert_eq!(files[1].host_path, root.join("sub/new.png"));
        assert_eq!(omitted, 0);
    }
}
