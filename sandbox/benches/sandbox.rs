//! Figures for the Python sandbox: `cargo bench -p ossa-sandbox` (add `-- --cold` to also time a
//! cold compile of the interpreter into a scratch data folder; minutes and ~2.5 GB).
//!
//! Prints: opening a sandbox from the cache, a fresh interpreter per call (p50/p95), a call in a
//! kept session, `import numpy` / `import pandas` in a fresh session, file-heavy cells, host
//! memory per session.

use std::time::{Duration, Instant};

use ossa_sandbox::{CallLimits, Progress, Sandbox, SandboxConfig, SessionOptions, Status};

fn main() {
    let cold = std::env::args().any(|a| a == "--cold");
    let config = SandboxConfig::from_env().expect("a data folder");

    let started = Instant::now();
    let sandbox = Sandbox::open(config.clone()).expect("the sandbox opens");
    println!(
        "open (first in process; fetch/compile if missing): {:.1} ms",
        ms(started.elapsed())
    );
    let started = Instant::now();
    let again = Sandbox::open(SandboxConfig {
        runtime: quiet(&config),
        ..config.clone()
    })
    .expect("opens");
    println!(
        "open (compiled module cached, mmap):               {:.1} ms",
        ms(started.elapsed())
    );
    drop(again);

    let limits = sandbox.limits().call.clone();
    // Fresh interpreter per call: a new thread with its own /tmp and /mnt/data folders,
    // instantiate + prelude + the cell, teardown. `elapsed` is the part on the guest thread up to
    // the answer; the wall clock adds thread, folders and teardown.
    let on_demand = Sandbox::open(SandboxConfig {
        runtime: quiet(&config),
        pooling: false,
        ..config.clone()
    })
    .expect("opens");
    for (name, sb) in [
        ("pooling allocator", &sandbox),
        ("on-demand allocator", &on_demand),
    ] {
        let mut inside = Vec::new();
        let mut wall = Vec::new();
        for _ in 0..60 {
            let t = Instant::now();
            let out = sb.run_fresh("1 + 1", None, None).expect("runs");
            wall.push(t.elapsed());
            assert_eq!(out.value.as_deref(), Some("2"));
            inside.push(out.elapsed);
        }
        report(
            &format!("fresh interpreter, `1 + 1`, {name}, caller's wall clock"),
            &mut wall,
        );
        report(
            &format!("fresh interpreter, `1 + 1`, {name}, guest thread to the answer"),
            &mut inside,
        );
    }
    drop(on_demand);

    let session = sandbox
        .session(SessionOptions::default())
        .expect("a session");
    session.run_blocking("x = 0", &limits).expect("runs");
    let mut kept = Vec::new();
    for _ in 0..500 {
        let t = Instant::now();
        let out = session.run_blocking("1 + 1", &limits).expect("runs");
        kept.push(t.elapsed());
        assert_eq!(out.value.as_deref(), Some("2"));
    }
    report("kept session, `1 + 1` (round trip)", &mut kept);
    let mut kept_state = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        session
            .run_blocking("x += 1\nprint(x)", &limits)
            .expect("runs");
        kept_state.push(t.elapsed());
    }
    report("kept session, `x += 1; print(x)`", &mut kept_state);

    // What `undo_on_cancel` (the `ossa python` REPL) costs: a copy of the interpreter's memory
    // before each call, and a fresh instance given it back after a cancel.
    let undoable = sandbox
        .session(SessionOptions::default())
        .expect("a session");
    undoable
        .run_blocking("import numpy, pandas", &limits)
        .expect("runs");
    for (label, on) in [("off", false), ("on", true)] {
        undoable.undo_on_cancel(on);
        let mut calls = Vec::new();
        for _ in 0..100 {
            let t = Instant::now();
            undoable.run_blocking("1 + 1", &limits).expect("runs");
            calls.push(t.elapsed());
        }
        report(
            &format!("session with numpy+pandas, `1 + 1`, undo_on_cancel {label}"),
            &mut calls,
        );
    }
    let mut restores = Vec::new();
    for _ in 0..10 {
        std::thread::scope(|scope| {
            let session = &undoable;
            scope.spawn(move || {
                std::thread::sleep(Duration::from_millis(200));
                session.cancel();
            });
            let t = Instant::now();
            let out = session
                .run_blocking("while True:\n    pass", &limits)
                .expect("runs");
            // From the cancel to the answer: the trap, a fresh instance, the memory given back.
            restores.push(t.elapsed().saturating_sub(Duration::from_millis(200)));
            assert_eq!(out.session, ossa_sandbox::SessionState::Restored);
        });
    }
    report(
        "cancel of a running call to its answer, state restored",
        &mut restores,
    );

    let [mut numpy, mut pandas] = timed_in_fresh_sessions(
        &sandbox,
        &limits,
        Some("1"),
        ["import numpy", "import pandas"],
    );
    report("`import numpy` in a fresh session", &mut numpy);
    report("`import pandas` after numpy", &mut pandas);

    // File work: each of these calls passes the open-file and disk counts (quota.rs).
    const WRITES: &str = "import os\nb = b'x' * 4096\nwith open('/tmp/w', 'wb', buffering=0) as f:\n    for _ in range(20000):\n        f.write(b)\nos.remove('/tmp/w')";
    const FILES: &str = "import os\nfor i in range(5000):\n    with open(f'/tmp/f{i}', 'w') as f:\n        f.write('x')\nfor i in range(5000):\n    os.remove(f'/tmp/f{i}')";
    let [mut writes, mut files] = timed_in_fresh_sessions(&sandbox, &limits, None, [WRITES, FILES]);
    report("20,000 unbuffered 4 KiB writes to /tmp", &mut writes);
    report(
        "5,000 files in /tmp created, written, closed, removed",
        &mut files,
    );

    // Host memory per live session with numpy and pandas imported.
    let before = rss_kib();
    let sessions: Vec<_> = (0..8)
        .map(|_| {
            let s = sandbox
                .session(SessionOptions::default())
                .expect("a session");
            let out = s
                .run_blocking(
                    "import numpy, pandas\ndf = pandas.DataFrame({'a': range(1000)})",
                    &limits,
                )
                .expect("runs");
            assert_eq!(out.status, Status::Ok);
            s
        })
        .collect();
    let after = rss_kib();
    println!(
        "host RSS per session (numpy+pandas imported, 8 sessions): {:.1} MiB (process {:.0} -> {:.0} MiB)",
        (after.saturating_sub(before)) as f64 / 8.0 / 1024.0,
        before as f64 / 1024.0,
        after as f64 / 1024.0
    );
    drop(sessions);
    println!(
        "process peak RSS: {:.0} MiB",
        peak_rss_kib() as f64 / 1024.0
    );

    if cold {
        cold_compile(&sandbox);
    }
}

fn quiet(config: &SandboxConfig) -> ossa_sandbox::RuntimeConfig {
    ossa_sandbox::RuntimeConfig {
        progress: Progress::Quiet,
        ..config.runtime.clone()
    }
}

/// Compiles the interpreter from scratch into a scratch data folder (the fetched artifacts are
/// imported through OSSA_PYTHON_WASM's path, so nothing is downloaded).
fn cold_compile(sandbox: &Sandbox) {
    let scratch = tempfile::tempdir().expect("a scratch folder");
    let runtime = sandbox.runtime();
    let fetched = runtime.wasm.parent().expect("the runtime's folder");
    let artifacts = scratch.path().join("artifacts");
    std::fs::create_dir(&artifacts).expect("mkdir");
    for name in ["SHA256SUMS", "MANIFEST", "python-snapshot.wasm"] {
        std::fs::copy(fetched.join(name), artifacts.join(name)).expect("copy");
    }
    std::fs::copy(
        runtime.lib_dir.join(&runtime.zip_name),
        artifacts.join("python-stdlib.zip"),
    )
    .expect("copy");
    let config = SandboxConfig {
        runtime: ossa_sandbox::RuntimeConfig {
            data_dir: scratch.path().join("data"),
            artifacts: Some(artifacts),
            python: None,
            progress: Progress::Quiet,
        },
        limits: sandbox.limits().clone(),
        metered: false,
        max_interpreters: 1,
        memory_budget: SandboxConfig::DEFAULT_MEMORY_BUDGET,
        capacity_wait: SandboxConfig::DEFAULT_CAPACITY_WAIT,
        evict_idle_after: None,
        pooling: false,
    };
    let peak_before = peak_rss_kib();
    let started = Instant::now();
    Sandbox::open(config).expect("cold open");
    println!(
        "cold first use (verify + compile + cache): {:.1} s; process peak RSS {:.0} MiB (was {:.0})",
        started.elapsed().as_secs_f64(),
        peak_rss_kib() as f64 / 1024.0,
        peak_before as f64 / 1024.0
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// How long each of `programs` took, run in order in each of 5 fresh sessions (after
/// `warm_up`, when given).
fn timed_in_fresh_sessions<const N: usize>(
    sandbox: &Sandbox,
    limits: &CallLimits,
    warm_up: Option<&str>,
    programs: [&str; N],
) -> [Vec<Duration>; N] {
    let mut times: [Vec<Duration>; N] = std::array::from_fn(|_| Vec::new());
    for _ in 0..5 {
        let s = sandbox
            .session(SessionOptions::default())
            .expect("a session");
        if let Some(code) = warm_up {
            s.run_blocking(code, limits).expect("runs");
        }
        for (program, times) in programs.iter().zip(&mut times) {
            let out = s.run_blocking(program, limits).expect("runs");
            assert_eq!(out.status, Status::Ok, "{}", out.stderr);
            times.push(out.elapsed);
        }
    }
    times
}

fn report(name: &str, samples: &mut [Duration]) {
    samples.sort();
    let pick = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{name}: p50 {:.2} ms, p95 {:.2} ms, min {:.2} ms (n={})",
        ms(pick(0.5)),
        ms(pick(0.95)),
        ms(samples[0]),
        samples.len()
    );
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn rss_kib() -> u64 {
    status_kib("VmRSS:")
}

fn peak_rss_kib() -> u64 {
    status_kib("VmHWM:")
}
