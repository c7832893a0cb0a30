//! The fixture paths follow `CARGO_MANIFEST_DIR` as it is when a test runs, not as it was when
//! the test was built: this test binary runs itself again (one ignored test) in another
//! "checkout" and reads the paths that child prints.

use std::path::Path;
use std::process::{Command, Output};

use ossa_test_support::{fixtures, manifest_dir, workspace_root};

/// Run only by the tests below, in a child process: prints the three paths.
#[test]
#[ignore = "run in a child process by the tests of this file"]
fn child_prints_paths() {
    // On lines of their own: the harness writes `test child_prints_paths ... ` first.
    println!();
    println!("manifest_dir={}", manifest_dir().display());
    println!("workspace_root={}", workspace_root().display());
    println!("fixtures={}", fixtures().display());
}

fn run_child(manifest_dir: Option<&Path>) -> Output {
    let mut child = Command::new(std::env::current_exe().expect("this test binary"));
    child.args([
        "--exact",
        "child_prints_paths",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    match manifest_dir {
        Some(dir) => child.env("CARGO_MANIFEST_DIR", dir),
        None => child.env_remove("CARGO_MANIFEST_DIR"),
    };
    child.output().expect("the test binary runs again")
}

fn printed(output: &Output, key: &str) -> String {
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("the child printed no {key}: {stdout}"))
        .to_string()
}

#[test]
fn paths_come_from_the_environment_at_run_time() {
    // Another checkout: a workspace root with a member package, as `engine/` is in ossa.
    let other = tempfile::tempdir().expect("temp");
    std::fs::write(
        other.path().join("Cargo.toml"),
        "[workspace]\nmembers = [\"engine\"]\n",
    )
    .expect("write");
    let package = other.path().join("engine");
    std::fs::create_dir(&package).expect("mkdir");
    std::fs::write(package.join("Cargo.toml"), "[package]\nname = \"engine\"\n").expect("write");

    let output = run_child(Some(&package));
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        printed(&output, "manifest_dir"),
        package.display().to_string()
    );
    assert_eq!(
        printed(&output, "workspace_root"),
        other.path().display().to_string()
    );
    assert_eq!(
        printed(&output, "fixtures"),
        other.path().join("tests/fixtures").display().to_string()
    );
    // Not the folder this binary was built from.
    assert_ne!(
        printed(&output, "manifest_dir"),
        env!("CARGO_MANIFEST_DIR"),
        "the child must not use the build-time path"
    );
}

#[test]
fn this_checkout_is_found_when_cargo_runs_the_test() {
    // `cargo test` sets CARGO_MANIFEST_DIR to this package: its workspace is the repository.
    assert_eq!(manifest_dir().file_name(), Some("test-support".as_ref()));
    assert_eq!(workspace_root(), manifest_dir().parent().expect("parent"));
    assert!(fixtures().join("tokenizer/cases.json").is_file());
}

#[test]
fn without_cargo_manifest_dir_the_child_says_how_to_run_it() {
    let output = run_child(None);
    assert!(!output.status.success(), "{output:?}");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(all.contains("CARGO_MANIFEST_DIR is not set"), "{all}");
    assert!(all.contains("cargo test"), "{all}");
}
