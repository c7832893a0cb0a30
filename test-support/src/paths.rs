//! Where the tests' files are, read from the environment when the test runs.
//!
//! `env!("CARGO_MANIFEST_DIR")` is fixed when the test is compiled: two clones sharing one
//! target dir reuse each other's test binaries, and the tests then read the other clone's
//! fixtures. Cargo also sets `CARGO_MANIFEST_DIR` when it runs a test, bench or binary, so the
//! run-time value always names the checkout being tested.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

/// The folder of the package whose test is running (`CARGO_MANIFEST_DIR` at run time).
///
/// Panics, saying how to run the test, when the variable is not set (a test binary started by
/// hand rather than by `cargo test`).
pub fn manifest_dir() -> PathBuf {
    manifest_dir_from(std::env::var_os("CARGO_MANIFEST_DIR"))
}

fn manifest_dir_from(value: Option<OsString>) -> PathBuf {
    match value {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => panic!(
            "CARGO_MANIFEST_DIR is not set: run the tests with `cargo test`, or set it to the \
             folder of the package under test (e.g. the checkout's `engine/`)"
        ),
    }
}

/// The workspace's root: the package folder itself or the nearest folder above it whose
/// `Cargo.toml` has a `[workspace]` table.
pub fn workspace_root() -> PathBuf {
    workspace_root_of(&manifest_dir())
}

fn workspace_root_of(package: &Path) -> PathBuf {
    package
        .ancestors()
        .find(|dir| {
            std::fs::read_to_string(dir.join("Cargo.toml"))
                .is_ok_and(|text| text.lines().any(|line| line.trim() == "[workspace]"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no Cargo.toml with [workspace] in {} or above it (CARGO_MANIFEST_DIR)",
                package.display()
            )
        })
        .to_path_buf()
}

/// The repository's `tests/fixtures`.
pub fn fixtures() -> PathBuf {
    workspace_root().join("tests/fixtures")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[should_panic(expected = "CARGO_MANIFEST_DIR is not set")]
    fn a_missing_manifest_dir_says_how_to_run_the_tests() {
        manifest_dir_from(None);
    }

    #[test]
    #[should_panic(expected = "CARGO_MANIFEST_DIR is not set")]
    fn an_empty_manifest_dir_is_missing_too() {
        manifest_dir_from(Some(OsString::new()));
    }

    #[test]
    #[should_panic(expected = "no Cargo.toml with [workspace]")]
    fn a_folder_outside_any_workspace_is_named() {
        workspace_root_of(Path::new("/"));
    }
}
