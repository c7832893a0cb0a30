//! `Session::interrupt`: Ctrl-C as CPython has it, on the real guest. The guest marks that it is
//! where the test wants it by writing a file in its `/mnt/data`; the test waits for the file,
//! never for a time.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ossa_sandbox::{RunOutput, Session, SessionState, Status, Stop};
use ossa_test_support::sandbox::session;

/// Long enough that only a guest that never looks at the interrupt meets it.
const PATIENT: Duration = Duration::from_secs(120);

/// Waits until the guest wrote `name` (non-empty) in its `/mnt/data`.
fn wait_for_marker(session: &Session, name: &str) {
    let path = session.mount().join(name);
    let started = Instant::now();
    while !non_empty(&path) {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the guest never wrote {name}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn non_empty(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.len() > 0)
}

/// Starts `code` as a cell, waits for its marker, interrupts it with `grace`, and gives the
/// call's output.
async fn interrupted(s: &Arc<Session>, code: &str, marker: &str, grace: Duration) -> RunOutput {
    let runner = s.clone();
    let code = code.to_owned();
    let call = tokio::spawn(async move { runner.run(&code).await });
    let waiter = s.clone();
    let marker = marker.to_owned();
    tokio::task::spawn_blocking(move || wait_for_marker(&waiter, &marker))
        .await
        .unwrap();
    assert!(s.interrupt(grace), "a call is running");
    call.await.unwrap().unwrap()
}

#[tokio::test]
async fn interrupt_raises_keyboard_interrupt_and_keeps_the_session() {
    let s = Arc::new(session());
    // With undo on, as in the REPL: an interrupt that works must not undo anything.
    s.undo_on_cancel(true);
    assert!(!s.interrupt(PATIENT), "no call runs: nothing to interrupt");
    s.run("before = 'kept'").await.unwrap();

    // An uncaught KeyboardInterrupt ends the cell with its traceback; what the loop did stays.
    let out = interrupted(
        &s,
        "count = 0\nwhile True:\n    count += 1\n    if count == 1000:\n        \
         open('loop', 'w').write('in the loop')",
        "loop",
        PATIENT,
    )
    .await;
    assert_eq!(out.status, Status::Error, "{out:?}");
    assert!(
        out.stderr.trim_end().ends_with("KeyboardInterrupt"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("Traceback"), "{}", out.stderr);
    assert_eq!(out.session, SessionState::Kept);
    let after = s.run("before, count >= 1000").await.unwrap();
    assert_eq!(after.value.as_deref(), Some("('kept', True)"), "{after:?}");

    // Code that catches it goes on, and `finally` runs.
    let out = interrupted(
        &s,
        "try:\n    open('caught', 'w').write('x')\n    while True:\n        pass\n\
         except KeyboardInterrupt:\n    print('caught')\nfinally:\n    print('finally')\n\
         after_catch = True",
        "caught",
        PATIENT,
    )
    .await;
    assert_eq!(out.status, Status::Ok, "{out:?}");
    assert_eq!(out.stdout, "caught\nfinally\n");
    assert_eq!(
        s.run("after_catch").await.unwrap().value.as_deref(),
        Some("True")
    );

    // A sleeping cell is woken: it does not sleep its ten minutes (the grace would stop it
    // as a cancel long before, and the status would say so).
    let out = interrupted(
        &s,
        "import time\nopen('sleeping', 'w').write('x')\ntime.sleep(600)\nprint('slept')",
        "sleeping",
        PATIENT,
    )
    .await;
    assert_eq!(out.status, Status::Error, "{out:?}");
    assert!(out.stderr.contains("KeyboardInterrupt"), "{}", out.stderr);
    assert_eq!(out.stdout, "");
    // A later interrupt is a new one: each call gets its own.
    let out = s.run("time.sleep(0.01)\n'next'").await.unwrap();
    assert_eq!(out.value.as_deref(), Some("'next'"), "{out:?}");
}

#[tokio::test]
async fn a_guest_deaf_to_the_interrupt_is_cancelled_after_the_grace() {
    let s = Arc::new(session());
    s.undo_on_cancel(true);
    s.run("import itertools, os\nbefore = 'kept'")
        .await
        .unwrap();
    // `sum` over C iterators never returns to the eval loop, where the interrupt is raised. The
    // marker is written from inside the call (`os.write` called by `map`), so the interrupt
    // cannot arrive before the C loop is entered.
    let out = interrupted(
        &s,
        "fd = os.open('deaf', os.O_WRONLY | os.O_CREAT)\nbefore = 'changed'\n\
         sum(itertools.chain(map(os.write, [fd], [b'x']), itertools.repeat(1)))",
        "deaf",
        Duration::from_millis(500),
    )
    .await;
    assert_eq!(out.status, Status::Stopped(Stop::Cancelled), "{out:?}");
    assert_eq!(out.session, SessionState::Restored);
    // Undone: the cell's own assignment is gone, the session works.
    let after = s.run("before").await.unwrap();
    assert_eq!(after.value.as_deref(), Some("'kept'"), "{after:?}");
}
