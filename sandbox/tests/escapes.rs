//! Hostile code on the real guest: every escape must fail cleanly, the host must be unharmed, and
//! the session must stay usable (or be reset, saying so).

use std::io::ErrorKind;
use std::net::TcpListener;
use std::path::Path;
use std::time::Duration;

use ossa_sandbox::{
    CallLimits, ResetReason, RunOutput, Session, SessionOptions, SessionState, Status, Stop, Stream,
};
use ossa_test_support::sandbox::{
    assert_failed_keeping_session, limits, ok, run, sandbox, session,
};

/// Python that tries `expr` for each case and prints `name: ok <result>` or `name: <Exception>`.
fn attempts(cases: &[(&str, &str)]) -> String {
    let mut code = String::new();
    for (name, expr) in cases {
        code.push_str(&format!(
            "try:\n    _r = {expr}\n    print({name:?} + ': ok ' + repr(_r)[:200])\nexcept BaseException as _e:\n    print({name:?} + ': ' + type(_e).__name__)\n"
        ));
    }
    code
}

fn outcome<'a>(stdout: &'a str, name: &str) -> &'a str {
    let prefix = format!("{name}: ");
    stdout
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .unwrap_or_else(|| panic!("no line for {name} in:\n{stdout}"))
}

/// Runs `imports` and then every attempt of `cases` in `s`; returns what they printed.
fn try_all(s: &Session, imports: &str, cases: &[(&str, &str)]) -> String {
    ok(s, &format!("{imports}\n{}", attempts(cases)))
}

/// Every attempt named must have raised.
fn assert_refused(stdout: &str, names: &[&str]) {
    for name in names {
        let result = outcome(stdout, name);
        assert!(
            !result.starts_with("ok"),
            "{name} was not refused: {result}"
        );
    }
}

/// The deadline of the calls that are meant to run past one.
const SHORT_DEADLINE: Duration = Duration::from_secs(1);

/// Runs `code` in `s` under `limits` (the defaults with some changed).
fn run_under(s: &Session, code: &str, limits: &CallLimits) -> RunOutput {
    s.run_blocking(code, limits)
        .unwrap_or_else(|e| panic!("the call failed to run: {e}"))
}

/// A session whose `/mnt/data` is the host folder `mount`.
fn mounted_session(mount: &Path) -> Session {
    sandbox()
        .session(SessionOptions {
            mount: Some(mount.to_path_buf()),
            limits: None,
        })
        .unwrap()
}

#[test]
fn host_files_are_not_visible() {
    let s = session();
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let mount = s.mount().display().to_string();
    let cases = [
        ("passwd", "open('/etc/passwd').read()".to_owned()),
        ("root", "os.listdir('/')".to_owned()),
        ("etc", "os.listdir('/etc')".to_owned()),
        ("home", format!("os.listdir({home:?})")),
        ("host_mount_path", format!("os.listdir({mount:?})")),
        ("proc", "open('/proc/self/environ').read()".to_owned()),
        ("usr_local", "os.listdir('/usr/local')".to_owned()),
    ];
    let cases: Vec<(&str, &str)> = cases.iter().map(|(n, e)| (*n, e.as_str())).collect();
    let stdout = try_all(&s, "import os", &cases);
    for (name, _) in &cases {
        let result = outcome(&stdout, name);
        assert!(
            result == "FileNotFoundError" || result == "PermissionError",
            "{name} should fail, got {result}"
        );
    }
    assert!(!stdout.contains("root:x:0"), "{stdout}");
    // What the guest may see: its own folders.
    let listing = run(&s, "sorted(os.listdir('/usr/local/lib'))").value;
    assert_eq!(listing.as_deref(), Some("['python315.zip']"));
}

#[test]
fn dot_dot_cannot_leave_the_mount() {
    let outer = tempfile::tempdir().unwrap();
    std::fs::write(outer.path().join("secret.txt"), "host secret").unwrap();
    let mount = outer.path().join("mount");
    let s = mounted_session(&mount);
    let cases = [
        ("abs_dotdot", "open('/mnt/data/../secret.txt').read()"),
        ("rel_dotdot", "open('../secret.txt').read()"),
        ("deep_dotdot", "open('/mnt/data/a/../../secret.txt').read()"),
        ("list_parent", "os.listdir('/mnt/data/..')"),
        (
            "write_parent",
            "open('/mnt/data/../planted.txt', 'w').write('x')",
        ),
        ("mkdir_parent", "os.mkdir('/mnt/data/../planted_dir')"),
        ("chdir_up", "(os.chdir('..'), os.listdir('.'))"),
    ];
    let stdout = try_all(&s, "import os", &cases);
    assert_refused(&stdout, &cases.map(|(name, _)| name));
    assert!(!stdout.contains("host secret"));
    assert!(!outer.path().join("planted.txt").exists());
    assert!(!outer.path().join("planted_dir").exists());
}

#[test]
fn symlinks_cannot_leave_the_mount() {
    let outer = tempfile::tempdir().unwrap();
    let secret = outer.path().join("secret.txt");
    std::fs::write(&secret, "host secret").unwrap();
    std::fs::create_dir(outer.path().join("outside_dir")).unwrap();
    let mount = outer.path().join("mount");
    std::fs::create_dir(&mount).unwrap();
    // Links planted by someone on the host side, pointing out.
    std::os::unix::fs::symlink(&secret, mount.join("abs_link")).unwrap();
    std::os::unix::fs::symlink("../secret.txt", mount.join("rel_link")).unwrap();
    std::os::unix::fs::symlink(outer.path().join("outside_dir"), mount.join("dir_link")).unwrap();
    let s = mounted_session(&mount);
    let cases = [
        ("read_abs_link", "open('/mnt/data/abs_link').read()"),
        ("read_rel_link", "open('/mnt/data/rel_link').read()"),
        (
            "write_abs_link",
            "open('/mnt/data/abs_link', 'w').write('pwned')",
        ),
        (
            "write_rel_link",
            "open('/mnt/data/rel_link', 'a').write('pwned')",
        ),
        ("list_dir_link", "os.listdir('/mnt/data/dir_link')"),
        (
            "create_through_dir_link",
            "open('/mnt/data/dir_link/planted', 'w').write('x')",
        ),
        (
            "make_abs_link",
            "os.symlink('/etc/passwd', '/mnt/data/guest_abs')",
        ),
        (
            "make_rel_link",
            "os.symlink('../secret.txt', '/mnt/data/guest_rel')",
        ),
        ("read_guest_rel", "open('/mnt/data/guest_rel').read()"),
        (
            "hardlink_out",
            "os.link('/mnt/data/rel_link', '/mnt/data/hard')",
        ),
    ];
    let stdout = try_all(&s, "import os", &cases);
    assert_refused(
        &stdout,
        &[
            "read_abs_link",
            "read_rel_link",
            "write_abs_link",
            "write_rel_link",
            "list_dir_link",
            "create_through_dir_link",
            "make_abs_link",
            "read_guest_rel",
        ],
    );
    // A hard link to the link itself (not its target) would stay inside; any outcome is fine as
    // long as the secret is untouched.
    assert!(!stdout.contains("host secret"));
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret");
    assert!(!outer.path().join("outside_dir/planted").exists());
}

/// GHSA-m9f7-9w4p-gv38: `path_rename` with a trailing slash on a symlink that points out of the
/// preopen. Where `renameat` follows such a link (macOS, FreeBSD) a vulnerable host moved the
/// folder outside into the sandbox (or the reverse). wasmtime-wasi 48.0.8 carries the fix; this
/// tries the exploit end to end.
#[test]
fn rename_through_a_trailing_slash_link_cannot_move_outside_folders() {
    let outer = tempfile::tempdir().unwrap();
    let outside = outer.path().join("outside_dir");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious.txt"), "precious").unwrap();
    let mount = outer.path().join("mount");
    std::fs::create_dir(&mount).unwrap();
    std::os::unix::fs::symlink(&outside, mount.join("abs_link")).unwrap();
    std::os::unix::fs::symlink("../outside_dir", mount.join("rel_link")).unwrap();
    std::fs::create_dir(mount.join("inside_dir")).unwrap();
    let s = mounted_session(&mount);
    let cases = [
        (
            "abs_src_slash",
            "os.rename('/mnt/data/abs_link/', '/mnt/data/moved_abs')",
        ),
        (
            "rel_src_slash",
            "os.rename('/mnt/data/rel_link/', '/mnt/data/moved_rel')",
        ),
        (
            "both_slash",
            "os.rename('/mnt/data/rel_link/', '/mnt/data/moved_both/')",
        ),
        (
            "dest_slash_over_link",
            "os.rename('/mnt/data/inside_dir/', '/mnt/data/abs_link/')",
        ),
        (
            "list_moved",
            "os.listdir('/mnt/data/moved_abs') + os.listdir('/mnt/data/moved_rel')",
        ),
    ];
    let stdout = try_all(&s, "import os", &cases);
    assert_refused(
        &stdout,
        &["abs_src_slash", "rel_src_slash", "both_slash", "list_moved"],
    );
    assert!(!stdout.contains("precious.txt"), "{stdout}");
    // The outside folder is where it was, whole.
    assert_eq!(
        std::fs::read_to_string(outside.join("precious.txt")).unwrap(),
        "precious"
    );
    assert!(
        std::fs::symlink_metadata(outer.path().join("outside_dir"))
            .unwrap()
            .is_dir()
    );
    // Whatever the guest renamed stayed inside the mount.
    let inside_entries: Vec<_> = std::fs::read_dir(outer.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(inside_entries.len(), 2, "{inside_entries:?}");
}

#[test]
fn the_network_is_unreachable_even_on_loopback() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let s = session();
    let connect = format!("socket.create_connection(('127.0.0.1', {port}), timeout=2)");
    let raw =
        format!("socket.socket(socket.AF_INET, socket.SOCK_STREAM).connect(('127.0.0.1', {port}))");
    let url = format!("urllib.request.urlopen('http://127.0.0.1:{port}/', timeout=2).read()");
    let cases = [
        ("create_connection", connect.as_str()),
        ("raw_connect", &raw),
        ("urlopen", &url),
        ("resolve", "socket.getaddrinfo('localhost', 80)"),
        ("listen", "socket.socket().bind(('127.0.0.1', 0))"),
    ];
    let stdout = try_all(&s, "import socket, urllib.request", &cases);
    assert_refused(&stdout, &cases.map(|(name, _)| name));
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("the guest reached the host's listener: {other:?}"),
    }
}

#[test]
fn processes_and_native_code_are_unavailable() {
    let s = session();
    let cases = [
        ("subprocess", "subprocess.run(['id'], capture_output=True)"),
        ("system", "os.system('touch /tmp/ossa-pwned') == 0 or 1/0"),
        ("popen", "os.popen('id').read() or 1/0"),
        ("fork", "os.fork()"),
        ("execv", "os.execv('/bin/sh', ['sh'])"),
        ("ctypes", "__import__('ctypes').CDLL(None)"),
        ("ctypes_libc", "__import__('ctypes').CDLL('libc.so.6')"),
    ];
    let stdout = try_all(&s, "import os, subprocess", &cases);
    assert_refused(&stdout, &cases.map(|(name, _)| name));
    assert!(!std::path::Path::new("/tmp/ossa-pwned").exists());
}

#[test]
fn the_host_environment_is_not_visible() {
    let s = session();
    // Cargo sets these for every test process; none may reach the guest.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let out = run(&s, "import os\nsorted(os.environ.items())");
    assert_eq!(
        out.value.as_deref(),
        Some("[('HOME', '/tmp'), ('MPLBACKEND', 'Agg'), ('PYTHONTZPATH', ''), ('TMPDIR', '/tmp')]")
    );
}

#[test]
fn huge_allocations_fail_cleanly_and_name_the_memory_limit() {
    let s = session();
    let limits = CallLimits {
        memory_bytes: 512 << 20,
        ..limits()
    };
    // 4 GB does not even fit wasm32's address space: refused inside the guest.
    let out = run_under(
        &s,
        &attempts(&[
            ("bytes_4g", "b'x' * (4 * 1024**3)"),
            ("numpy_4g", "__import__('numpy').ones(2**29)"),
            ("list_4g", "[0] * (2**30)"),
        ]),
        &limits,
    );
    assert_eq!(out.status, Status::Ok, "{}", out.stderr);
    for name in ["bytes_4g", "numpy_4g", "list_4g"] {
        let result = outcome(&out.stdout, name);
        assert!(
            [
                "MemoryError",
                "OverflowError",
                "ValueError",
                "_ArrayMemoryError"
            ]
            .contains(&result),
            "{name}: {result}"
        );
    }
    // 1.5 GiB fits wasm32 but not the 512 MiB limit: the limit is named.
    let out = run_under(&s, "big = bytearray(1536 * 1024**2)", &limits);
    assert_failed_keeping_session(
        &out,
        Status::Stopped(Stop::Memory(512 << 20)),
        "MemoryError",
    );
    // The interpreter carries on, and a fitting allocation works.
    let out = run_under(&s, "small = bytearray(100 * 1024**2)\nlen(small)", &limits);
    assert_eq!(out.value.as_deref(), Some("104857600"));
}

#[test]
fn an_endless_loop_meets_the_deadline_and_the_session_is_reset() {
    let s = session();
    ok(&s, "x = 1");
    let limits = CallLimits {
        deadline: SHORT_DEADLINE,
        ..limits()
    };
    let out = run_under(&s, "print('started')\nwhile True:\n    pass", &limits);
    assert_eq!(out.status, Status::Stopped(Stop::Deadline(SHORT_DEADLINE)));
    assert_eq!(out.stdout, "started\n");
    assert_eq!(
        out.session,
        SessionState::Reset(ResetReason::Stopped(Stop::Deadline(SHORT_DEADLINE)))
    );
    let out = run(&s, "'x' in dir()");
    assert_eq!(out.value.as_deref(), Some("False"));
    assert_eq!(
        out.started_fresh,
        Some(ResetReason::Stopped(Stop::Deadline(SHORT_DEADLINE)))
    );
}

#[test]
fn sleeping_past_the_deadline_is_stopped_at_the_deadline() {
    let s = session();
    let limits = CallLimits {
        deadline: SHORT_DEADLINE,
        ..limits()
    };
    let out = run_under(
        &s,
        "import time\ntime.sleep(0.05)\nprint('short sleep ok')\ntime.sleep(600)",
        &limits,
    );
    assert_eq!(out.status, Status::Stopped(Stop::Deadline(SHORT_DEADLINE)));
    assert_eq!(out.stdout, "short sleep ok\n");
    // Without the poll_oneoff shadow the guest would sleep the full 600 s before the trap.
    assert!(
        out.elapsed < Duration::from_secs(60),
        "the sleep outlived the deadline: {:?}",
        out.elapsed
    );
}

#[test]
fn deep_recursion_is_contained() {
    let s = session();
    let out = run(&s, "def f(n):\n    return f(n + 1)\nf(0)");
    assert_failed_keeping_session(&out, Status::Error, "RecursionError");

    // With Python's own guard lifted, the wasm stack limit (or the deadline) stops it; the
    // host survives and the session is reset.
    let limits = CallLimits {
        deadline: Duration::from_secs(20),
        ..limits()
    };
    let out = run_under(
        &s,
        "import sys\nsys.setrecursionlimit(10**7)\ndef g(n):\n    return g(n + 1) + 1\ng(0)",
        &limits,
    );
    match &out.status {
        Status::Stopped(Stop::Stack) | Status::Stopped(Stop::Deadline(_)) => {
            assert!(matches!(out.session, SessionState::Reset(_)));
        }
        // CPython 3.15 may also catch the C stack running low and raise RecursionError.
        Status::Error => assert!(out.stderr.contains("RecursionError"), "{}", out.stderr),
        other => panic!("unexpected {other:?}: {}", out.stderr),
    }
    assert_eq!(run(&s, "1 + 1").value.as_deref(), Some("2"));
}

#[test]
fn an_output_flood_is_truncated_not_fatal() {
    let s = session();
    let limits = CallLimits {
        output_bytes: 64 << 10,
        ..limits()
    };
    let out = run_under(
        &s,
        "import sys\nprint('x' * 10_000_000)\nsys.stderr.write('e' * 5_000_000)\n'still running'",
        &limits,
    );
    assert_eq!(out.status, Status::Ok);
    assert_eq!(out.value.as_deref(), Some("'still running'"));
    assert_eq!(out.truncated, [Stream::Stdout, Stream::Stderr]);
    assert!(out.stdout.starts_with(&"x".repeat(1000)));
    assert!(out.stdout.len() < (64 << 10) + 200, "{}", out.stdout.len());
    assert!(out.stdout.contains(
        "[output truncated: stdout passed the 64 KiB limit; 9934465 more bytes were dropped]"
    ));

    // An endless flood ends at the deadline with the output still capped.
    let limits = CallLimits {
        deadline: SHORT_DEADLINE,
        output_bytes: 64 << 10,
        ..limits
    };
    let out = run_under(&s, "while True:\n    print('y' * 1000)", &limits);
    assert_eq!(out.status, Status::Stopped(Stop::Deadline(SHORT_DEADLINE)));
    assert_eq!(out.truncated, [Stream::Stdout]);
    assert!(out.stdout.len() < (64 << 10) + 200);
}

#[test]
fn thousands_of_files_are_fine_and_the_report_is_bounded() {
    let s = session();
    let out = run(
        &s,
        "import os\nos.makedirs('many')\nfor i in range(5000):\n    open(f'many/f{i:05}.txt', 'w').write(str(i))\nlen(os.listdir('many'))",
    );
    assert_eq!(out.status, Status::Ok, "{}", out.stderr);
    assert_eq!(out.value.as_deref(), Some("5000"));
    assert_eq!(out.files.len(), 1000);
    assert_eq!(out.files_omitted, 4000);
    assert_eq!(out.files[0].guest_path, "/mnt/data/many/f00000.txt");
    assert_eq!(
        std::fs::read_dir(s.mount().join("many")).unwrap().count(),
        5000
    );
    assert_eq!(
        std::fs::read_to_string(s.mount().join("many/f04999.txt")).unwrap(),
        "4999"
    );
    // The next call neither re-reports them nor slows to a halt.
    let out = run(&s, "sum(1 for _ in os.scandir('many'))");
    assert_eq!(out.value.as_deref(), Some("5000"));
    assert!(out.files.is_empty());
}
