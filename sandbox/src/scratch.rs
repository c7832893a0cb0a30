//! Scratch folders of guests (`/tmp`, and `/mnt/data` when none is given) in the host's temp
//! folder, named `ossa-sandbox-<pid>-<kind>-XXXXXX`, mode 0700. They go when their session or
//! call ends; folders left by a process that died first are swept when a sandbox next opens.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use tempfile::TempDir;

use crate::error::{Result, SandboxError};
use crate::fsutil;

const PREFIX: &str = "ossa-sandbox-";

pub(crate) fn scratch_dir(kind: &str) -> Result<TempDir> {
    let parent = std::env::temp_dir();
    tempfile::Builder::new()
        .prefix(&format!("{PREFIX}{}-{kind}-", std::process::id()))
        .permissions(fs::Permissions::from_mode(0o700))
        .tempdir_in(&parent)
        .map_err(|e| SandboxError::io("cannot create a temporary folder in", &parent, e))
}

/// Removes scratch folders of this user whose process is gone. Only where `/proc` tells which
/// processes live; a folder whose pid was reused is left alone.
pub(crate) fn sweep_stale() {
    if fs::metadata("/proc/self").is_err() {
        return;
    }
    let Ok(entries) = fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix(PREFIX))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, _)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        // `DirEntry::metadata` does not follow a link: only real folders of this user go.
        match entry.metadata() {
            Ok(meta) if meta.is_dir() && meta.uid() == fsutil::current_uid() => {
                tracing::debug!(path = %entry.path().display(), "removing a stale sandbox folder");
                let _ = fs::remove_dir_all(entry.path());
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_folders_are_private_and_named_by_process() {
        let dir = scratch_dir("tmp").unwrap();
        let name = dir.path().file_name().unwrap().to_str().unwrap().to_owned();
        assert!(
            name.starts_with(&format!("ossa-sandbox-{}-tmp-", std::process::id())),
            "{name}"
        );
        let mode = fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
    }

    #[test]
    fn folders_of_dead_processes_are_swept_and_live_ones_kept() {
        // pid 0 is never a user process and has no /proc entry.
        let stale = std::env::temp_dir().join(format!("{PREFIX}0-tmp-test{}", std::process::id()));
        fs::create_dir_all(stale.join("sub")).unwrap();
        fs::write(stale.join("sub/file"), b"x").unwrap();
        let live = scratch_dir("data").unwrap();
        sweep_stale();
        assert!(!stale.exists());
        assert!(live.path().exists());
    }
}
