//! A program in a pseudo-terminal, driven as a person drives it: keys in, screen text out.
//! Shared by the tests of ossa's interactive prompts (`#[path]`-included, not part of
//! `support`, so the tests that do not use it need not compile it).
#![allow(dead_code)] // each test crate uses its own part

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A hang guard, not a speed check: the first turn starts the Python interpreter.
pub const PATIENCE: Duration = Duration::from_secs(180);

/// ossa's real data folder (where the Python runtime is cached), as ossa finds it.
pub fn real_data_dir() -> PathBuf {
    let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(dir) = var("OSSA_DATA_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = var("XDG_DATA_HOME") {
        return PathBuf::from(dir).join("ossa");
    }
    PathBuf::from(var("HOME").expect("HOME is set")).join(".local/share/ossa")
}

/// `ossa ARGS` with a private home: no user config, history or data is touched.
pub fn ossa(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ossa"));
    ossa_test_support::in_private_home(command.args(args), home)
        // The Python runtime is fetched and compiled once, not per test.
        .env("OSSA_DATA_DIR", real_data_dir())
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .env_remove("OSSA_SEARCH_BACKEND")
        .env_remove("RUST_LOG");
    command
}

/// A program running in a pseudo-terminal, and everything it has printed.
pub struct Terminal {
    master: File,
    child: Child,
    output: Arc<Mutex<Vec<u8>>>,
    closed: Arc<AtomicBool>,
    /// How much of the screen text the expectations have read.
    read: usize,
}

impl Terminal {
    /// Starts `command` as a terminal session leader with a 120x50 terminal.
    pub fn spawn(mut command: Command) -> Terminal {
        let mut master: libc::c_int = -1;
        let mut slave: libc::c_int = -1;
        let size = libc::winsize {
            ws_row: 50,
            ws_col: 120,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors into the given ints; the name and termios
        // pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here alone.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        for fd in [&master, &slave] {
            // SAFETY: setting close-on-exec on a descriptor we own.
            unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        }
        command
            .stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        // SAFETY: only async-signal-safe calls between fork and exec. The terminal on stdin
        // becomes the controlling terminal of a new session, so Ctrl-C sends SIGINT.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("ossa starts");
        // The parent's copies of the terminal's slave side must go, or reading never ends.
        drop(command);
        let master = File::from(master);
        let output = Arc::new(Mutex::new(Vec::new()));
        let closed = Arc::new(AtomicBool::new(false));
        let mut reader = master.try_clone().expect("dup");
        let (sink, done) = (Arc::clone(&output), Arc::clone(&closed));
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            loop {
                match reader.read(&mut buffer) {
                    Ok(0) => break,
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&buffer[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    // EIO: the program exited and closed the terminal.
                    Err(_) => break,
                }
            }
            done.store(true, Ordering::SeqCst);
        });
        Terminal {
            master,
            child,
            output,
            closed,
            read: 0,
        }
    }

    /// Types `keys` (`\r` is Enter, `\x03` is Ctrl-C).
    pub fn send(&mut self, keys: &str) {
        self.master.write_all(keys.as_bytes()).expect("typing");
        self.master.flush().expect("typing");
    }

    /// Types `line` and Enter.
    pub fn enter(&mut self, line: &str) {
        self.send(line);
        self.send("\r");
    }

    /// Types each step's line and Enter, then waits for what it brings (an output, a prompt).
    pub fn converse(&mut self, steps: &[(&str, &str)]) {
        for (line, answer) in steps {
            self.enter(line);
            self.expect(answer);
        }
    }

    /// Everything printed so far, as bytes.
    pub fn raw(&self) -> Vec<u8> {
        self.output.lock().unwrap().clone()
    }

    /// Everything printed so far as text, without terminal escape sequences.
    pub fn screen(&self) -> String {
        let raw = self.raw();
        let valid = match std::str::from_utf8(&raw) {
            Ok(text) => text.len(),
            Err(e) => e.valid_up_to(),
        };
        strip_escapes(std::str::from_utf8(&raw[..valid]).unwrap())
    }

    /// Waits until one of `needles` appears after what was read so far; returns which, and
    /// the text before it. Panics with the screen when none comes.
    pub fn expect_any(&mut self, needles: &[&str]) -> (usize, String) {
        let started = Instant::now();
        loop {
            let screen = self.screen();
            let unread = &screen[self.read..];
            let found = needles
                .iter()
                .enumerate()
                .filter_map(|(i, n)| unread.find(n).map(|at| (at, i)))
                .min();
            if let Some((at, index)) = found {
                let before = unread[..at].to_string();
                self.read += at + needles[index].len();
                return (index, before);
            }
            if self.closed.load(Ordering::SeqCst) && screen == self.screen() {
                panic!("ossa ended before printing {needles:?}; screen:\n{screen}");
            }
            if started.elapsed() > PATIENCE {
                panic!("no {needles:?} within {PATIENCE:?}; screen:\n{screen}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn expect(&mut self, needle: &str) -> String {
        self.expect_any(&[needle]).1
    }

    /// Waits for the program to exit.
    pub fn wait(&mut self) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("waiting for ossa") {
                return status;
            }
            if started.elapsed() > PATIENCE {
                let _ = self.child.kill();
                panic!("ossa did not exit; screen:\n{}", self.screen());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Terminal {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Text without CSI (`ESC [ ... final`), OSC (`ESC ] ... BEL` or `ESC ] ... ESC \`) and other
/// two-byte escape sequences; carriage returns dropped.
pub fn strip_escapes(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => match chars.next() {
                Some('[') => {
                    for c in chars.by_ref() {
                        if ('\x40'..='\x7e').contains(&c) {
                            break;
                        }
                    }
                }
                Some(']') => {
                    while let Some(c) = chars.next() {
                        if c == '\x07' {
                            break;
                        }
                        if c == '\x1b' && chars.peek() == Some(&'\\') {
                            chars.next();
                            break;
                        }
                    }
                }
                _ => {}
            },
            '\r' => {}
            c => out.push(c),
        }
    }
    out
}
