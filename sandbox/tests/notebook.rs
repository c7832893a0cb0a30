//! The sandbox as the model uses it: a stateful notebook with the scientific stack, on the real
//! guest.

use std::time::Duration;

use ossa_sandbox::{
    CallLimits, Limits, Program, ProgramOptions, ResetReason, RunOutput, SandboxError,
    SessionOptions, SessionState, Status, Stop, Stream,
};
use ossa_test_support::sandbox::{limits, ok, run, sandbox, session, session_with};

#[test]
fn final_expression_is_echoed_apart_from_stdout() {
    let s = session();
    let out = run(&s, "print('hi')\n6 * 7");
    assert_eq!(out.status, Status::Ok);
    assert_eq!(out.stdout, "hi\n");
    assert_eq!(out.value.as_deref(), Some("42"));
    assert_eq!(out.stderr, "");
    assert_eq!(out.session, SessionState::Kept);

    // Jupyter's rule: a final expression that is None, or a statement, shows nothing.
    for code in [
        "x = 5",
        "None",
        "print('p')",
        "import math",
        "x = 1\nx += 1",
    ] {
        assert_eq!(run(&s, code).value, None, "{code}");
    }
    // Jupyter's trailing semicolon hides the value (the code still runs).
    let out = run(&s, "print('ran')\n6 * 7;");
    assert_eq!((out.stdout.as_str(), out.value), ("ran\n", None));
    // Only the last expression is shown, and its repr, not its str.
    let out = run(&s, "'first'\n'second'");
    assert_eq!(out.value.as_deref(), Some("'second'"));
    assert_eq!(out.stdout, "");
}

#[test]
fn state_carries_across_calls() {
    let s = session();
    ok(&s, "x = 41\nimport json\ndef double(v):\n    return v * 2");
    let out = run(&s, "double(x + 1), json.dumps({'a': [1, 2]})");
    assert_eq!(out.value.as_deref(), Some("(84, '{\"a\": [1, 2]}')"));
    assert_eq!(out.started_fresh, None);
    // `_` holds the last echoed value, as in the REPL.
    assert_eq!(run(&s, "_[0] + 1").value.as_deref(), Some("85"));
}

#[test]
fn exceptions_give_a_traceback_and_keep_the_state() {
    let s = session();
    ok(&s, "kept = 'yes'");
    let out = run(&s, "def f():\n    return 1 / 0\nf()");
    assert_eq!(out.status, Status::Error);
    assert!(
        out.stderr.contains("Traceback (most recent call last):"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("ZeroDivisionError: division by zero"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("in f"), "{}", out.stderr);
    assert_eq!(out.session, SessionState::Kept);

    let out = run(&s, "def broken(:\n    pass");
    assert_eq!(out.status, Status::Error);
    assert!(out.stderr.contains("SyntaxError"), "{}", out.stderr);

    assert_eq!(run(&s, "kept").value.as_deref(), Some("'yes'"));
}

#[test]
fn unicode_output_round_trips() {
    let s = session();
    let text = "héllo wörld ✓ 日本語 🐍 Ωμέγα";
    let out = run(&s, &format!("print({text:?})\n{text:?}"));
    assert_eq!(out.stdout, format!("{text}\n"));
    assert_eq!(out.value, Some(format!("'{text}'")));
    let out = run(&s, "import sys\nprint('ошибка', file=sys.stderr)");
    assert_eq!(out.stderr, "ошибка\n");
}

#[test]
fn numpy_pandas_and_scipy_compute() {
    let s = session();
    let stdout = ok(
        &s,
        "import numpy as np, pandas as pd\n\
         from scipy.optimize import brentq\n\
         inv = np.linalg.inv(np.array([[2.0, 0.0], [0.0, 4.0]]))\n\
         print(inv.tolist())\n\
         df = pd.DataFrame({'k': ['a', 'b', 'a'], 'v': [1, 2, 3]})\n\
         print(df.groupby('k')['v'].sum().to_dict())\n\
         print(round(brentq(lambda x: x * x - 2, 0, 2), 8))",
    );
    assert_eq!(
        stdout,
        "[[0.5, 0.0], [0.0, 0.25]]\n{'a': 4, 'b': 2}\n1.41421356\n"
    );
    // Imports made in one call are there in the next.
    assert_eq!(
        run(&s, "int(np.arange(5).sum())").value.as_deref(),
        Some("10")
    );
}

#[test]
fn a_matplotlib_plot_saved_under_mnt_data_is_a_real_png() {
    let s = session();
    let out = run(
        &s,
        "import matplotlib\n\
         import matplotlib.pyplot as plt\n\
         fig, ax = plt.subplots(figsize=(4, 3), dpi=50)\n\
         ax.plot([0, 1, 2], [0, 1, 4], label='squares')\n\
         ax.set_title('ünïcode title')\n\
         ax.legend()\n\
         fig.savefig('/mnt/data/plot.png')\n\
         matplotlib.get_backend().lower()",
    );
    assert_eq!(out.status, Status::Ok, "{}", out.stderr);
    assert_eq!(out.value.as_deref(), Some("'agg'"));
    assert_eq!(out.files.len(), 1, "{:?}", out.files);
    let file = &out.files[0];
    assert_eq!(file.guest_path, "/mnt/data/plot.png");
    assert_eq!(file.host_path, s.mount().join("plot.png"));
    let png = std::fs::read(&file.host_path).unwrap();
    assert_eq!(file.bytes, png.len() as u64);
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&png[8..12], &13u32.to_be_bytes(), "IHDR length");
    assert_eq!(&png[12..16], b"IHDR");
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert_eq!((width, height), (200, 150), "4x3 inches at 50 dpi");
    assert!(png.ends_with(b"IEND\xaeB`\x82"), "PNG ends with IEND");
}

#[test]
fn written_files_are_listed_and_untouched_ones_are_not() {
    let s = session();
    std::fs::write(s.mount().join("input.csv"), "a,b\n1,2\n").unwrap();
    std::fs::write(s.mount().join("untouched.txt"), "same").unwrap();
    let out = run(
        &s,
        "import os, pandas as pd\n\
         df = pd.read_csv('input.csv')\n\
         os.makedirs('out', exist_ok=True)\n\
         df.assign(c=df.a + df.b).to_csv('out/result.csv', index=False)\n\
         open('/mnt/data/input.csv', 'a').write('3,4\\n')\n\
         sorted(os.listdir('.'))",
    );
    assert_eq!(out.status, Status::Ok, "{}", out.stderr);
    assert_eq!(
        out.value.as_deref(),
        Some("['input.csv', 'out', 'untouched.txt']")
    );
    let listed: Vec<&str> = out.files.iter().map(|f| f.guest_path.as_str()).collect();
    assert_eq!(listed, ["/mnt/data/input.csv", "/mnt/data/out/result.csv"]);
    assert_eq!(
        std::fs::read_to_string(s.mount().join("out/result.csv")).unwrap(),
        "a,b,c\n1,2,3\n"
    );
    // A call that writes nothing lists nothing.
    assert!(run(&s, "1").files.is_empty());
}

#[test]
fn exit_ends_the_interpreter_and_the_next_call_starts_fresh() {
    let s = session();
    ok(&s, "x = 1");
    let out = run(&s, "print('bye')\nexit(3)");
    assert_eq!(out.status, Status::Exit(3));
    assert_eq!(out.stdout, "bye\n");
    assert_eq!(out.session, SessionState::Reset(ResetReason::Exited(3)));
    let out = run(&s, "x");
    assert_eq!(out.started_fresh, Some(ResetReason::Exited(3)));
    assert_eq!(out.status, Status::Error);
    assert!(out.stderr.contains("NameError"), "{}", out.stderr);
    // The fresh interpreter is a full one: imports work, and /mnt/data is still the cwd.
    assert_eq!(
        run(&s, "import os, numpy\nos.getcwd()").value.as_deref(),
        Some("'/mnt/data'")
    );
}

#[test]
fn a_fuel_limit_needs_the_metered_build() {
    let s = session();
    let limits = CallLimits {
        fuel: Some(1_000_000),
        ..limits()
    };
    match s.run_blocking("1", &limits) {
        Err(SandboxError::FuelNotMetered) => {}
        other => panic!("expected FuelNotMetered, got {other:?}"),
    }
}

#[test]
fn a_memory_limit_below_the_interpreter_is_refused() {
    let limits = Limits {
        call: CallLimits {
            memory_bytes: 16 << 20,
            ..limits()
        },
        ..Limits::default()
    };
    match sandbox().session(SessionOptions {
        mount: None,
        limits: Some(limits),
    }) {
        Err(SandboxError::InvalidLimit(message)) => {
            assert!(message.contains("40 MiB"), "{message}")
        }
        other => panic!("expected InvalidLimit, got {other:?}"),
    }
}

#[test]
fn programs_run_as_on_a_command_line() {
    let out = sandbox()
        .run_program(
            &Program::Code(
                "import os, sys\nprint(sys.argv, os.getcwd(), os.listdir())\n1 + 1\nsys.exit(3)"
                    .into(),
            ),
            &ProgramOptions {
                args: vec!["a".into(), "-b".into()],
                ..Default::default()
            },
        )
        .unwrap();
    // Programs work in /mnt/data, as sessions do.
    assert_eq!(out.stdout, "['-c', 'a', '-b'] /mnt/data []\n", "{out:?}");
    assert_eq!(out.value, None, "programs do not echo values");
    assert_eq!(out.status, Status::Exit(3));
    assert_eq!(out.session, SessionState::OneOff);

    let script =
        b"import sys\nprint(__name__, sys.argv[1:])\ndef f():\n    raise ValueError('boom')\nf()\n";
    let out = sandbox()
        .run_program(
            &Program::Script {
                name: "job.py".into(),
                source: script.to_vec(),
            },
            &ProgramOptions {
                args: vec!["x".into()],
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(out.stdout, "__main__ ['x']\n");
    assert_eq!(out.status, Status::Error);
    assert!(
        out.stderr.contains("File \"/tmp/job.py\", line 4, in f"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("ValueError: boom"), "{}", out.stderr);
    // The traceback is CPython's: the frames of the program only.
    assert!(
        out.stderr.starts_with(
            "Traceback (most recent call last):\n  File \"/tmp/job.py\", line 5, in <module>"
        ),
        "{}",
        out.stderr
    );
    assert!(!out.stderr.contains("_ossa"), "{}", out.stderr);

    // A program stopped by its deadline keeps what it printed before.
    let limits = CallLimits {
        deadline: Duration::from_secs(1),
        ..limits()
    };
    let out = sandbox()
        .run_program(
            &Program::Code("print('before')\nwhile True:\n    pass".into()),
            &ProgramOptions {
                limits: Some(limits),
                ..Default::default()
            },
        )
        .unwrap();
    assert_eq!(
        out.status,
        Status::Stopped(Stop::Deadline(Duration::from_secs(1)))
    );
    assert_eq!(out.status.exit_code(), 124);
    assert_eq!(out.stdout, "before\n");
}

#[test]
fn fresh_calls_share_nothing() {
    let first = sandbox().run_fresh("y = 7\ny", None, None).unwrap();
    assert_eq!(first.value.as_deref(), Some("7"));
    assert_eq!(first.session, SessionState::OneOff);
    let second = sandbox().run_fresh("y", None, None).unwrap();
    assert_eq!(second.status, Status::Error);
    assert!(second.stderr.contains("NameError"), "{}", second.stderr);
}

/// `code`'s result in a session whose limits `change` set, after `x = 1` and a `pause`.
fn after_a_pause(change: impl FnOnce(&mut Limits), pause: Duration, code: &str) -> RunOutput {
    let mut limits = sandbox().limits().clone();
    change(&mut limits);
    let s = session_with(limits);
    ok(&s, "x = 1");
    std::thread::sleep(pause);
    run(&s, code)
}

#[test]
fn an_idle_interpreter_is_discarded_and_the_next_call_says_so() {
    let out = after_a_pause(
        |limits| limits.idle_timeout = Some(Duration::from_millis(200)),
        Duration::from_millis(700),
        "x",
    );
    assert_eq!(
        out.started_fresh,
        Some(ResetReason::IdleTimeout(Duration::from_millis(200)))
    );
    assert!(out.stderr.contains("NameError"), "{}", out.stderr);
}

#[test]
fn an_interpreter_past_its_lifetime_is_replaced_before_the_next_call() {
    let out = after_a_pause(
        |limits| limits.lifetime = Some(Duration::from_millis(300)),
        Duration::from_millis(500),
        "'x' in dir()",
    );
    assert_eq!(
        out.started_fresh,
        Some(ResetReason::Lifetime(Duration::from_millis(300)))
    );
    assert_eq!(out.value.as_deref(), Some("False"));
}

#[test]
fn a_huge_value_is_truncated_with_a_marker() {
    let s = session();
    let limits = CallLimits {
        output_bytes: 1024,
        ..limits()
    };
    let out = s.run_blocking("'v' * 100_000", &limits).unwrap();
    assert_eq!(out.status, Status::Ok);
    assert_eq!(out.truncated, [Stream::Value]);
    let value = out.value.unwrap();
    assert!(value.starts_with("'vvvv"));
    assert!(
        value.contains("[output truncated: the value passed the 1 KiB limit;"),
        "{value}"
    );
}

#[tokio::test(flavor = "current_thread")]
async fn a_running_call_does_not_block_the_async_runtime() {
    let s = session();
    let ticks = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = ticks.clone();
    let ticker = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(10)).await;
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    });
    // On a single-threaded runtime the ticker only advances if `run` yields while Python runs.
    let out = s.run("import time\ntime.sleep(0.5)\n'done'").await.unwrap();
    assert_eq!(out.value.as_deref(), Some("'done'"));
    assert!(
        ticks.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "the runtime was blocked"
    );
    ticker.abort();
}

#[tokio::test]
async fn sessions_are_independent_and_run_side_by_side() {
    let a = session();
    let b = session();
    let (ra, rb) = tokio::join!(
        a.run("import time\nname = 'a'\ntime.sleep(0.3)\nname"),
        b.run("import time\nname = 'b'\ntime.sleep(0.3)\nname")
    );
    assert_eq!(ra.unwrap().value.as_deref(), Some("'a'"));
    assert_eq!(rb.unwrap().value.as_deref(), Some("'b'"));
    assert_ne!(a.mount(), b.mount());
    // Calls on one session are served in order.
    let (first, second) = tokio::join!(a.run("seq = [1]"), a.run("seq.append(2)\nseq"));
    assert_eq!(first.unwrap().status, Status::Ok);
    assert_eq!(second.unwrap().value.as_deref(), Some("[1, 2]"));
}

#[tokio::test]
async fn dropping_the_future_cancels_the_call() {
    let s = session();
    s.run("x = 1").await.unwrap();
    let timed_out =
        tokio::time::timeout(Duration::from_millis(300), s.run("while True:\n    pass")).await;
    assert!(timed_out.is_err());
    let out = s.run("'x' in dir()").await.unwrap();
    assert_eq!(
        out.started_fresh,
        Some(ResetReason::Stopped(Stop::Cancelled))
    );
    assert_eq!(out.value.as_deref(), Some("False"));
}

#[tokio::test]
async fn cancel_stops_the_running_call() {
    let s = std::sync::Arc::new(session());
    let runner = s.clone();
    let call = tokio::spawn(async move { runner.run("while True:\n    pass").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.cancel();
    let out = call.await.unwrap().unwrap();
    assert_eq!(out.status, Status::Stopped(Stop::Cancelled));
    assert_eq!(
        out.session,
        SessionState::Reset(ResetReason::Stopped(Stop::Cancelled))
    );
    assert_eq!(s.run("1 + 1").await.unwrap().value.as_deref(), Some("2"));
}

#[tokio::test]
async fn undo_on_cancel_keeps_what_earlier_calls_defined() {
    let s = std::sync::Arc::new(session());
    s.undo_on_cancel(true);
    s.run("import json\nx = 41\nwith open('kept.txt', 'w') as f:\n    f.write('k')")
        .await
        .unwrap();
    let runner = s.clone();
    let call = tokio::spawn(async move {
        runner
            .run("x = 0\nopen('during.txt', 'w').close()\nwhile True:\n    pass")
            .await
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    s.cancel();
    let out = call.await.unwrap().unwrap();
    assert_eq!(out.status, Status::Stopped(Stop::Cancelled));
    assert_eq!(out.session, SessionState::Restored);
    // The variables are those from before the cancelled call; its files stay.
    let after = s
        .run("import os\n(x + 1, json.dumps([1]), sorted(os.listdir('.')))")
        .await
        .unwrap();
    assert_eq!(after.started_fresh, None);
    assert_eq!(
        after.value.as_deref(),
        Some("(42, '[1]', ['during.txt', 'kept.txt'])"),
        "{after:?}"
    );
    // Restored twice in a row still works, and a later cell runs normally.
    let runner = s.clone();
    let call = tokio::spawn(async move { runner.run("while True:\n    pass").await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    s.cancel();
    assert_eq!(call.await.unwrap().unwrap().session, SessionState::Restored);
    assert_eq!(s.run("x * 2").await.unwrap().value.as_deref(), Some("82"));
}

#[tokio::test]
async fn reset_discards_variables_but_keeps_files() {
    let s = session();
    s.run("v = 1\nopen('/mnt/data/keep.txt', 'w').write('kept')")
        .await
        .unwrap();
    s.reset().await.unwrap();
    let out = s
        .run("open('/mnt/data/keep.txt').read(), 'v' in dir()")
        .await
        .unwrap();
    assert_eq!(out.value.as_deref(), Some("('kept', False)"));
    assert_eq!(out.started_fresh, Some(ResetReason::Requested));
}

#[test]
fn closing_a_session_flushes_open_files_and_removes_its_folders() {
    let mount = tempfile::tempdir().unwrap();
    let s = sandbox()
        .session(SessionOptions {
            mount: Some(mount.path().to_owned()),
            limits: None,
        })
        .unwrap();
    ok(
        &s,
        "f = open('/mnt/data/unclosed.txt', 'w')\nf.write('buffered')",
    );
    s.close_blocking();
    // Python's shutdown ran and flushed the file the code never closed; the given mount stays.
    assert_eq!(
        std::fs::read_to_string(mount.path().join("unclosed.txt")).unwrap(),
        "buffered"
    );

    let s = session();
    let scratch = s.mount().to_owned();
    ok(&s, "open('/mnt/data/x', 'w').write('x')");
    assert!(scratch.join("x").is_file());
    s.close_blocking();
    assert!(!scratch.exists(), "the session's own folder is removed");
}
