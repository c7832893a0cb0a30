//! `ossa python` used as a person uses it: the real binary in a pseudo-terminal and on pipes,
//! with the real sandbox. The interactive test types entries (one-line and blocks), walks the
//! history with the arrow keys, presses Ctrl-C at the prompt and in running entries, and quits
//! with Ctrl-D. Where a key must reach a running entry, the entry first writes a marker file in
//! the mounted folder and the test waits for the file (entries' output is shown only when they
//! end), never for a time.

#[path = "support/terminal.rs"]
mod terminal;

use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use ossa_test_support::run_piped;
use terminal::{Terminal, ossa};

const UP: &str = "\x1b[A";

#[test]
fn python_repl_in_a_terminal() {
    let home = tempfile::tempdir().unwrap();
    let history = home.path().join("python_history");
    let history_arg = history.display().to_string();
    let mount = tempfile::tempdir().unwrap();
    let mount_arg = mount.path().display().to_string();
    let mut term = Terminal::spawn(ossa(
        home.path(),
        &["python", "--history", &history_arg, "--mount", &mount_arg],
    ));
    let banner = term.expect(">>> ");
    assert!(banner.contains("Ctrl-D quits"), "{banner}");

    // The working folder is /mnt/data, as for the model's tool.
    term.enter("import os; os.getcwd()");
    term.expect("'/mnt/data'");
    term.expect(">>> ");

    // A block goes on until an empty line; brackets until they close.
    term.converse(&[
        ("x = 41", ">>> "),
        ("for i in range(2):", "... "),
        ("    print('row', i)", "... "),
        ("", "row 0\nrow 1\n"),
        ("total = (x +", "... "),
        ("    1)", ">>> "),
        ("total", "42\n"),
    ]);

    // Up recalls the last entry: Enter runs it again.
    term.expect(">>> ");
    term.send(UP);
    term.enter("");
    term.expect("42\n");

    // Ctrl-C at the prompt drops what was typed.
    term.expect(">>> ");
    term.send("undefined_name_typed");
    term.send("\x03");
    term.expect("KeyboardInterrupt");
    term.expect(">>> ");
    term.enter("x");
    term.expect("41\n");

    // Ctrl-C in a running loop raises KeyboardInterrupt there: a traceback, and the session
    // keeps what came before and what the loop did until then.
    term.expect(">>> ");
    term.converse(&[
        ("count = 0", ">>> "),
        ("while True:", "... "),
        ("    count += 1", "... "),
        ("    if count == 1000: open('loop', 'w').write('x')", "... "),
    ]);
    term.enter("");
    interrupt_at_marker(&mut term, mount.path(), "loop");
    term.expect("Traceback");
    term.expect("KeyboardInterrupt");
    term.expect(">>> ");
    term.enter("x * 2, count >= 1000");
    let value = term.expect(">>> ");
    assert!(value.contains("(82, True)"), "{value}");

    // Code that catches it goes on.
    term.converse(&[
        ("try:", "... "),
        ("    open('caught', 'w').write('x')", "... "),
        ("    while True: pass", "... "),
        ("except KeyboardInterrupt:", "... "),
        ("    print('caught it')", "... "),
    ]);
    term.enter("");
    interrupt_at_marker(&mut term, mount.path(), "caught");
    let shown = term.expect(">>> ");
    assert!(shown.contains("caught it"), "{shown}");
    assert!(!shown.contains("Traceback"), "{shown}");

    // A long sleep ends at once.
    term.enter("import time; open('sleeping', 'w').write('x'); time.sleep(600)");
    interrupt_at_marker(&mut term, mount.path(), "sleeping");
    term.expect("KeyboardInterrupt");
    term.expect(">>> ");

    // Code inside a long C call never sees the interrupt: after the grace the entry is stopped
    // and undone, and the session goes on. The marker is written from inside the C call.
    term.enter("import itertools, os; x = 1");
    term.expect(">>> ");
    term.enter(
        "fd = os.open('deaf', os.O_WRONLY | os.O_CREAT); x = 2; \
         sum(itertools.chain(map(os.write, [fd], [b'x']), itertools.repeat(1)))",
    );
    interrupt_at_marker(&mut term, mount.path(), "deaf");
    term.expect("did not stop at KeyboardInterrupt");
    term.expect(">>> ");
    term.enter("x");
    let value = term.expect(">>> ");
    assert!(value.contains('1') && !value.contains('2'), "{value}");

    // Ctrl-D quits with success.
    term.send("\x04");
    assert!(term.wait().success(), "{}", term.screen());

    // The history file has the entries, one line each.
    let saved = std::fs::read_to_string(&history).expect("the history file");
    for line in [
        "x = 41",
        "for i in range(2):",
        "total",
        "x * 2, count >= 1000",
    ] {
        assert!(saved.lines().any(|l| l == line), "{line:?} in {saved}");
    }
    assert!(!saved.contains("undefined_name_typed"), "{saved}");
}

/// Waits until the running entry wrote `marker` (non-empty) in the mounted folder, then
/// presses Ctrl-C.
fn interrupt_at_marker(term: &mut Terminal, mount: &Path, marker: &str) {
    let path = mount.join(marker);
    let started = Instant::now();
    while !std::fs::metadata(&path).is_ok_and(|m| m.len() > 0) {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the entry never wrote {marker}; screen:\n{}",
            term.screen()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    term.send("\x03");
}

fn python_piped(args: &[&str], stdin: &str) -> Output {
    let home = tempfile::tempdir().unwrap();
    run_piped(&mut ossa(home.path(), &[&["python"], args].concat()), stdin)
}

#[test]
fn every_entry_point_works_in_mnt_data_and_names_mount_for_host_files() {
    // A piped session: entries, the working folder, a host path that is not there.
    let out = python_piped(
        &[],
        "import os\nprint(os.getcwd())\nopen('/etc/hostname')\nprint('after')\n",
    );
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert_eq!(stdout, "/mnt/data\nafter\n");
    assert!(stderr.contains("FileNotFoundError"), "{stderr}");
    assert!(stderr.contains("--mount DIR"), "{stderr}");

    // `-c` and a script, with a mounted folder: relative paths are the mount's.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.txt"), "from the host").unwrap();
    let mount = dir.path().display().to_string();
    let out = python_piped(
        &[
            "--mount",
            &mount,
            "-c",
            "import os; print(os.getcwd(), open('in.txt').read())",
        ],
        "",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "/mnt/data from the host\n"
    );
    // `ossa tool python`: the model's tool, as the model calls it.
    let home = tempfile::tempdir().unwrap();
    let out = ossa(
        home.path(),
        &[
            "tool",
            "python",
            "import os; print(os.getcwd(), os.listdir())",
        ],
    )
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("/mnt/data []"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // `-c` and a script that fail on a host path name `--mount` too, after the traceback that
    // went to the terminal as it came.
    let out = python_piped(&["-c", "open('/home/someone/data.csv')"], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let error_at = stderr.find("FileNotFoundError").expect("the traceback");
    let hint_at = stderr.find("--mount DIR").expect("the hint");
    assert!(error_at < hint_at, "{stderr}");
    assert!(stderr.contains("temporary folder"), "{stderr}");
    let reads = dir.path().join("reads.py");
    std::fs::write(&reads, "import csv\nopen('./data.csv')\n").unwrap();
    let out = python_piped(&["--mount", &mount, reads.to_str().unwrap()], "");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&format!("here {mount}")), "{stderr}");
    // A program that ends well gets no hint, whatever it caught on the way.
    let out = python_piped(
        &[
            "-c",
            "try:\n    open('/home/x')\nexcept OSError:\n    print('handled')",
        ],
        "",
    );
    assert!(out.status.success());
    assert!(
        !String::from_utf8_lossy(&out.stderr).contains("--mount"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let script = dir.path().join("job.py");
    std::fs::write(&script, "open('out.txt', 'w').write('written')\n").unwrap();
    let out = python_piped(&["--mount", &mount, script.to_str().unwrap()], "");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.txt")).unwrap(),
        "written"
    );
}
