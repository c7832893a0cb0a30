//! `ossa python` used as a person uses it: the real binary in a pseudo-terminal and on pipes,
//! with the real sandbox. The interactive test types entries (one-line and blocks), walks the
//! history with the arrow keys, presses Ctrl-C at the prompt and in a running loop, and quits
//! with Ctrl-D.

#[path = "support/terminal.rs"]
mod terminal;

use std::io::Write;
use std::process::{Output, Stdio};
use std::time::Duration;

use terminal::{Terminal, ossa};

const UP: &str = "\x1b[A";

#[test]
fn python_repl_in_a_terminal() {
    let home = tempfile::tempdir().unwrap();
    let history = home.path().join("python_history");
    let history_arg = history.display().to_string();
    let mut term = Terminal::spawn(ossa(home.path(), &["python", "--history", &history_arg]));
    let banner = term.expect(">>> ");
    assert!(banner.contains("Ctrl-D quits"), "{banner}");

    // The working folder is /mnt/data, as for the model's tool.
    term.enter("import os; os.getcwd()");
    term.expect("'/mnt/data'");
    term.expect(">>> ");

    // A block goes on until an empty line; brackets until they close.
    term.enter("x = 41");
    term.expect(">>> ");
    term.enter("for i in range(2):");
    term.expect("... ");
    term.enter("    print('row', i)");
    term.expect("... ");
    term.enter("");
    term.expect("row 0\nrow 1\n");
    term.enter("total = (x +");
    term.expect("... ");
    term.enter("    1)");
    term.expect(">>> ");
    term.enter("total");
    term.expect("42\n");

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

    // Ctrl-C in a running loop stops it; the session keeps what came before.
    term.expect(">>> ");
    term.enter("while True: x = 0");
    term.expect("... ");
    term.enter("");
    std::thread::sleep(Duration::from_millis(1500));
    term.send("\x03");
    term.expect("KeyboardInterrupt");
    term.expect(">>> ");
    term.enter("x * 2");
    let value = term.expect(">>> ");
    assert!(value.contains("82"), "{value}");

    // Ctrl-D quits with success.
    term.send("\x04");
    assert!(term.wait().success(), "{}", term.screen());

    // The history file has the entries, one line each.
    let saved = std::fs::read_to_string(&history).expect("the history file");
    for line in ["x = 41", "for i in range(2):", "total", "x * 2"] {
        assert!(saved.lines().any(|l| l == line), "{line:?} in {saved}");
    }
    assert!(!saved.contains("undefined_name_typed"), "{saved}");
}

fn python_piped(args: &[&str], stdin: &str) -> Output {
    let home = tempfile::tempdir().unwrap();
    let mut command = ossa(home.path(), &[&["python"], args].concat());
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("ossa starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
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
