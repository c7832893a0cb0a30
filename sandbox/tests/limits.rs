//! Attacks on the sandbox's resource caps, on the real guest: open files, disk use in `/tmp` and
//! `/mnt/data`, the number of interpreters and their memory. Each shows the refusal (an `OSError`
//! or `MemoryError` the code sees, or an error before any code runs) and that the session, and
//! the others of the same sandbox, keep working.

use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use ossa_sandbox::{
    Limits, ResetReason, Sandbox, SandboxConfig, SandboxError, Session, SessionOptions,
    SessionState, Status, Stop,
};
use ossa_test_support::sandbox::{assert_failed_keeping_session, limits, ok, run, sandbox};

/// Small caps, so an attack reaches them in a fraction of a second.
const DISK: u64 = 16 << 20;

fn capped(mount: Option<&Path>) -> Session {
    sandbox()
        .session(SessionOptions {
            mount: mount.map(Path::to_path_buf),
            limits: Some(Limits {
                disk_bytes: DISK,
                ..sandbox().limits().clone()
            }),
        })
        .unwrap()
}

/// This process's descriptors that point into `dir` (below it, not `dir` itself).
fn descriptors_into(dir: &Path) -> usize {
    let dir = dir.canonicalize().unwrap();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter(|target| target.starts_with(&dir) && *target != dir)
        .count()
}

fn process_descriptors() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[test]
fn opening_files_in_a_loop_stops_at_the_cap_and_everyone_keeps_working() {
    let cap = sandbox().limits().max_open_files;
    let s = ossa_test_support::sandbox::session();
    let other = ossa_test_support::sandbox::session();
    ok(&s, "kept = 'still here'");
    let before = process_descriptors();
    let out = run(
        &s,
        "import errno\nheld = []\ntry:\n    while True:\n        held.append(open(f'/mnt/data/f{len(held)}', 'w'))\nexcept OSError as e:\n    print(len(held), errno.errorcode[e.errno])",
    );
    assert_eq!(out.status, Status::Ok, "{}", out.stderr);
    assert_eq!(out.stdout.trim(), format!("{cap} EMFILE"));
    assert!(
        out.stderr.contains("Too many open files") && out.stderr.contains(&cap.to_string()),
        "the note names the cap: {}",
        out.stderr
    );
    // The guest's files are real host descriptors, exactly as many as the cap.
    assert_eq!(descriptors_into(s.mount()), cap);
    let during = process_descriptors();
    assert!(
        during < before + cap + 64,
        "the process holds {during} descriptors, {before} before the attack"
    );

    // Meanwhile another session of the same sandbox opens files and imports modules.
    let other_out = ok(
        &other,
        "import fractions\nwith open('/mnt/data/x', 'w') as f:\n    f.write('hi')\nprint(open('/mnt/data/x').read(), fractions.Fraction(1, 3))",
    );
    assert_eq!(other_out, "hi 1/3\n");

    // The attacker's interpreter survives with its variables; closing frees the descriptors.
    assert_eq!(out.session, SessionState::Kept);
    ok(&s, "for f in held:\n    f.close()\ndel held");
    assert_eq!(descriptors_into(s.mount()), 0);
    let again = ok(
        &s,
        "import fractions\nwith open('/mnt/data/after', 'w') as f:\n    f.write('ok')\nprint(kept, open('/mnt/data/after').read())",
    );
    assert_eq!(again, "still here ok\n");
}

/// Writes 1 MiB blocks to `path`, 400 MiB in all (the issue's attack on `/tmp`), until refused.
fn fill(s: &Session, path: &str) -> ossa_sandbox::RunOutput {
    run(
        s,
        &format!(
            "import errno, os\nblock = b'x' * (1 << 20)\nwritten = 0\ntry:\n    with open({path:?}, 'wb') as f:\n        for _ in range(400):\n            f.write(block)\n            written += len(block)\nexcept OSError as e:\n    print(errno.errorcode[e.errno], written >> 20, os.path.getsize({path:?}) >> 20)"
        ),
    )
}

/// A 400 MiB file is refused at the quota, nothing past it reaches the disk, and after a delete
/// the session writes again with its variables intact.
fn big_file_is_refused(s: &Session, path: &str, host: Option<&Path>) {
    let quota_mib = DISK >> 20;
    ok(s, "kept = 42");
    let out = fill(s, path);
    assert_eq!(out.status, Status::Ok, "{}", out.stderr);
    let fields: Vec<&str> = out.stdout.split_whitespace().collect();
    assert_eq!(fields.first(), Some(&"ENOSPC"), "{}", out.stdout);
    let written: u64 = fields[1].parse().unwrap();
    let size: u64 = fields[2].parse().unwrap();
    assert!(written < quota_mib && size < quota_mib, "{}", out.stdout);
    assert!(
        written >= quota_mib - 2,
        "the quota is usable: {}",
        out.stdout
    );
    assert!(out.stderr.contains("No space left"), "{}", out.stderr);
    if let Some(host) = host {
        let meta = std::fs::metadata(host).unwrap();
        assert!(meta.len() < DISK && meta.blocks() * 512 <= DISK + (1 << 20));
    }
    assert_eq!(out.session, SessionState::Kept);
    // Deleting gives the bytes back.
    ok(s, &format!("os.remove({path:?})"));
    let again = ok(
        s,
        &format!(
            "with open({path:?}, 'wb') as f:\n    f.write(b'y' * (10 << 20))\nprint(kept, os.path.getsize({path:?}) >> 20)"
        ),
    );
    assert_eq!(again, "42 10\n");
}

#[test]
fn a_big_file_in_tmp_is_refused_at_the_quota() {
    let s = capped(None);
    big_file_is_refused(&s, "/tmp/big", None);
}

#[test]
fn a_big_file_in_a_private_mnt_data_is_refused_at_the_quota() {
    let s = capped(None);
    let host = s.mount().join("big");
    big_file_is_refused(&s, "/mnt/data/big", Some(&host));
}

#[test]
fn a_big_file_in_a_mounted_host_folder_is_refused_at_the_quota() {
    let dir = tempfile::tempdir().unwrap();
    // The user's own files do not count against the session, and deleting them grants nothing.
    std::fs::write(dir.path().join("user.csv"), vec![b'u'; 4 << 20]).unwrap();
    let s = capped(Some(dir.path()));
    ok(&s, "import os\nos.remove('/mnt/data/user.csv')");
    big_file_is_refused(&s, "/mnt/data/big", Some(&dir.path().join("big")));
}

#[test]
fn tmp_and_mnt_data_share_one_quota_that_a_reset_does_not_refill() {
    let s = capped(None);
    ok(
        &s,
        "with open('/tmp/a', 'wb') as f:\n    f.write(b'a' * (10 << 20))",
    );
    let out = fill(&s, "/mnt/data/b");
    let refused_at: u64 = out
        .stdout
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    assert!(refused_at < 6, "{}", out.stdout);
    // A fresh interpreter for the same session starts from the same count.
    let exit = run(&s, "exit()");
    assert!(matches!(exit.session, SessionState::Reset(_)));
    let out = fill(&s, "/mnt/data/c");
    assert!(out.stdout.starts_with("ENOSPC 0"), "{}", out.stdout);
    assert!(out.started_fresh.is_some());
}

#[test]
fn many_small_files_count_their_entries() {
    let s = capped(None);
    let out = run(
        &s,
        "import errno\nn = 0\ntry:\n    while True:\n        with open(f'/mnt/data/s{n}', 'w') as f:\n            f.write('x' * 100)\n        n += 1\nexcept OSError as e:\n    print(n, errno.errorcode[e.errno])",
    );
    assert_eq!(out.status, Status::Ok, "{}", out.stderr);
    let (n, errno) = out.stdout.trim().split_once(' ').unwrap();
    let n: u64 = n.parse().unwrap();
    assert_eq!(errno, "ENOSPC");
    // Each file counts a 4 KiB entry besides its 100 bytes: far fewer than DISK / 100.
    let each = 4096 + 100;
    assert!(n <= DISK / each && n + 2 >= DISK / each, "{n} files");
    let on_disk = std::fs::read_dir(s.mount()).unwrap().count() as u64;
    assert!(on_disk <= n + 1, "{on_disk} files on the host");
    // Removing them gives it all back.
    ok(
        &s,
        "import os\nfor name in os.listdir('/mnt/data'):\n    os.remove('/mnt/data/' + name)",
    );
    ok(
        &s,
        "with open('/mnt/data/big', 'wb') as f:\n    f.write(b'z' * (12 << 20))",
    );
}

#[test]
fn sparse_files_and_growing_truncations_count_their_full_size() {
    let s = capped(None);
    let out = ok(
        &s,
        r#"import errno, os
results = []
def attempt(name, action):
    try:
        action()
        results.append(name + ' ok')
    except OSError as e:
        results.append(name + ' ' + errno.errorcode[e.errno])
f = open('/mnt/data/sparse', 'wb', buffering=0)
attempt('seek_write', lambda: (f.seek(10**10), f.write(b'x')))
attempt('truncate', lambda: f.truncate(10**10))
fd = os.open('/mnt/data/sparse2', os.O_RDWR | os.O_CREAT)
attempt('pwrite', lambda: os.pwrite(fd, b'x', 10**10))
attempt('ftruncate', lambda: os.ftruncate(fd, 10**10))
attempt('path_truncate', lambda: os.truncate('/mnt/data/sparse2', 10**10))
attempt('append_past_quota', lambda: open('/mnt/data/sparse2', 'ab', buffering=0).write(b'x' * (20 << 20)))
attempt('small_growth', lambda: os.ftruncate(fd, 1000))
attempt('shrink', lambda: os.ftruncate(fd, 10))
os.close(fd)
f.close()
print('\n'.join(results))"#,
    );
    assert_eq!(
        out,
        "seek_write ENOSPC\ntruncate ENOSPC\npwrite ENOSPC\nftruncate ENOSPC\npath_truncate ENOSPC\nappend_past_quota ENOSPC\nsmall_growth ok\nshrink ok\n"
    );
    for name in ["sparse", "sparse2"] {
        let meta = std::fs::metadata(s.mount().join(name)).unwrap();
        assert!(meta.len() <= 10 && meta.blocks() <= 8, "{name}: {meta:?}");
    }
    ok(&s, "x = 1");
}

/// A sandbox with room for few interpreters that never ends idle ones to make room.
fn small_sandbox(max_interpreters: u32, memory_budget: u64) -> Sandbox {
    Sandbox::open(SandboxConfig {
        max_interpreters,
        memory_budget,
        capacity_wait: Duration::from_millis(300),
        evict_idle_after: None,
        ..SandboxConfig::from_env().unwrap()
    })
    .unwrap()
}

/// Two sessions of `sandbox`, each with an interpreter started by running its cell.
fn two_running_sessions(
    sandbox: &Sandbox,
    first_cell: &str,
    second_cell: &str,
) -> (Session, Session) {
    let first = sandbox.session(SessionOptions::default()).unwrap();
    let second = sandbox.session(SessionOptions::default()).unwrap();
    ok(&first, first_cell);
    ok(&second, second_cell);
    (first, second)
}

/// A sandbox with room for one interpreter, which ends an idle one at once to make room.
fn one_room_sandbox() -> Sandbox {
    Sandbox::open(SandboxConfig {
        max_interpreters: 1,
        capacity_wait: Duration::from_secs(60),
        evict_idle_after: Some(Duration::ZERO),
        ..SandboxConfig::from_env().unwrap()
    })
    .unwrap()
}

#[test]
fn an_idle_interpreter_makes_room_and_its_session_is_told() {
    let sandbox = one_room_sandbox();
    let first = sandbox.session(SessionOptions::default()).unwrap();
    ok(
        &first,
        "a = 1\nopen('/mnt/data/kept.txt', 'w').write('file')",
    );
    let second = sandbox.session(SessionOptions::default()).unwrap();
    assert_eq!(run(&second, "b = 2\nb").value.as_deref(), Some("2"));
    assert_eq!(
        sandbox.usage().interpreters,
        1,
        "the room was given, not added"
    );
    // The first session's interpreter was ended for the second; its next call says so, and
    // its files are still there.
    let out = run(
        &first,
        "print('a' in globals(), open('/mnt/data/kept.txt').read())",
    );
    assert_eq!(out.stdout, "False file\n");
    assert!(
        matches!(out.started_fresh, Some(ResetReason::Evicted(_))),
        "{:?}",
        out.started_fresh
    );
    // ...which in turn took the room of the second, idle now.
    let out = run(&second, "'b' in globals()");
    assert_eq!(out.value.as_deref(), Some("False"));
}

#[test]
fn a_running_interpreter_is_not_ended_to_make_room() {
    let sandbox = one_room_sandbox();
    let busy = sandbox.session(SessionOptions::default()).unwrap();
    ok(&busy, "import time\nx = 1");
    let waiting = sandbox.session(SessionOptions::default()).unwrap();
    std::thread::scope(|scope| {
        let running = scope.spawn(|| {
            run(
                &busy,
                "open('/mnt/data/started', 'w').close()\ntime.sleep(2)\nx += 1\nx",
            )
        });
        // The long call runs before the other asks for room.
        while !busy.mount().join("started").exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let out = run(&waiting, "'started'");
        assert_eq!(out.value.as_deref(), Some("'started'"));
        let long = running.join().unwrap();
        assert_eq!(long.status, Status::Ok, "{}", long.stderr);
        assert_eq!(
            long.value.as_deref(),
            Some("2"),
            "the long call ran to its end"
        );
    });
}

#[test]
fn interpreters_past_the_budget_are_refused_until_one_ends() {
    let small = small_sandbox(2, 8 << 30);
    let (first, second) = two_running_sessions(&small, "a = 1", "b = 2");

    let third = small.session(SessionOptions::default()).unwrap();
    let error = third.run_blocking("c = 3", &limits()).unwrap_err();
    assert!(matches!(error, SandboxError::AtCapacity { .. }), "{error}");
    assert!(
        error.to_string().contains("all 2 Python interpreters"),
        "{error}"
    );
    let error = small.run_fresh("1 + 1", None, None).unwrap_err();
    assert!(matches!(error, SandboxError::AtCapacity { .. }), "{error}");
    let usage = small.usage();
    assert_eq!(
        (
            usage.interpreters,
            usage.idle_interpreters,
            usage.max_interpreters
        ),
        (2, 2, 2)
    );

    // The ones running keep their state meanwhile.
    assert_eq!(run(&first, "a").value.as_deref(), Some("1"));
    assert_eq!(run(&second, "b").value.as_deref(), Some("2"));

    first.close_blocking();
    ok(&third, "c = 3");
    assert_eq!(run(&third, "c").value.as_deref(), Some("3"));
    assert_eq!(run(&second, "b").value.as_deref(), Some("2"));
}

#[test]
fn a_start_past_the_budget_waits_and_gets_in_when_an_interpreter_ends() {
    let small = Sandbox::open(SandboxConfig {
        max_interpreters: 1,
        capacity_wait: Duration::from_secs(120),
        evict_idle_after: None,
        ..SandboxConfig::from_env().unwrap()
    })
    .unwrap();
    let first = small.session(SessionOptions::default()).unwrap();
    ok(&first, "a = 1");
    let second = small.session(SessionOptions::default()).unwrap();
    std::thread::scope(|scope| {
        let waiting = scope.spawn(|| second.run_blocking("'in'", &limits()));
        // While it waits, the interpreter holding the room keeps working.
        for _ in 0..3 {
            ok(&first, "a += 1");
        }
        assert!(!waiting.is_finished(), "no room: it must still wait");
        assert_eq!(run(&first, "a").value.as_deref(), Some("4"));
        first.close_blocking();
        let out = waiting.join().unwrap().expect("in once the first ended");
        assert_eq!(out.value.as_deref(), Some("'in'"));
    });
}

#[test]
fn the_memory_budget_is_shared_and_its_refusal_is_a_memory_error() {
    let small = small_sandbox(4, 256 << 20);
    let (first, second) = two_running_sessions(&small, "a = bytearray(150 << 20)", "x = 5");
    let out = run(&second, "b = bytearray(150 << 20)");
    assert_failed_keeping_session(
        &out,
        Status::Stopped(Stop::MemoryBudget(256 << 20)),
        "MemoryError",
    );
    assert_eq!(run(&second, "x").value.as_deref(), Some("5"));

    // With the first one gone its memory is back.
    first.close_blocking();
    ok(&second, "b = bytearray(150 << 20)\nprint(len(b) >> 20)");
}

#[test]
fn an_interpreter_that_would_not_fit_the_memory_budget_is_refused() {
    let small = small_sandbox(4, 128 << 20);
    let first = small.session(SessionOptions::default()).unwrap();
    ok(&first, "a = bytearray(60 << 20)");
    let second = small.session(SessionOptions::default()).unwrap();
    let error = second.run_blocking("1", &limits()).unwrap_err();
    assert!(
        error.to_string().contains("128 MiB memory budget"),
        "{error}"
    );
    assert_eq!(run(&first, "len(a) >> 20").value.as_deref(), Some("60"));
    drop(first);
    // Dropping ends the interpreter in the background; the start waits for it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match second.run_blocking("2 + 2", &limits()) {
            Ok(out) => {
                assert_eq!(out.value.as_deref(), Some("4"));
                break;
            }
            Err(e) if std::time::Instant::now() < deadline => {
                assert!(matches!(e, SandboxError::AtCapacity { .. }), "{e}");
            }
            Err(e) => panic!("the memory was not returned: {e}"),
        }
    }
}
