//! `ossa tool`: the real binary calling the real tools (the Python sandbox, the browser over HTTP
//! on loopback, apply_patch in a temporary folder) and printing exactly what the model reads.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

const WARN: &str =
    "[WARN] No output available. Use print() to output anything to stdout to receive the output";

/// `ossa tool ARGS...` with no user config file in the way (an empty config folder).
fn ossa_tool(config_home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ossa"));
    command
        .arg("tool")
        .args(args)
        .env("XDG_CONFIG_HOME", config_home)
        .env_remove("OSSA_CONFIG")
        .env_remove("OSSA_SEARCH_BACKEND");
    ossa_test_support::run_piped(&mut command, stdin.unwrap_or(""))
}

/// [`ossa_tool`], which must succeed.
fn ossa_tool_ok(config_home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    let out = ossa_tool(config_home, args, stdin);
    assert!(out.status.success(), "{}", stderr(&out));
    out
}

/// What a file the tool wrote holds.
fn file_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn stdout(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).expect("UTF-8 stdout")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn python_prints_what_the_model_reads() {
    let home = tempfile::tempdir().unwrap();
    let out = ossa_tool_ok(home.path(), &["python", "print(6*7)"], None);
    assert_eq!(stdout(&out), "42\n");

    // The code from stdin; the final expression is echoed.
    let out = ossa_tool_ok(home.path(), &["python", "-"], Some("x = 3\nx"));
    assert_eq!(stdout(&out), "3\n");
}

#[test]
fn calls_in_one_invocation_share_the_interpreter() {
    let home = tempfile::tempdir().unwrap();
    let out = ossa_tool_ok(
        home.path(),
        &["python", "x = 41", "python", "print(x + 1)"],
        None,
    );
    // Messages are separated by a newline when one lacks it; the last is printed as is.
    assert_eq!(stdout(&out), format!("{WARN}\n42\n"));
    let err = stderr(&out);
    assert!(err.contains("==> python <=="), "{err}");
}

#[test]
fn python_files_are_listed_and_kept_in_the_mount() {
    let home = tempfile::tempdir().unwrap();
    let data = tempfile::tempdir().unwrap();
    let mount = data.path().to_str().unwrap();
    let out = ossa_tool_ok(
        home.path(),
        &[
            "--mount",
            mount,
            "python",
            "open('/mnt/data/result.txt', 'w').write('hello')\nprint('ok')",
        ],
        None,
    );
    assert_eq!(stdout(&out), "ok\n");
    let err = stderr(&out);
    assert!(err.contains("/mnt/data/result.txt (5 bytes)"), "{err}");
    assert_eq!(file_text(&data.path().join("result.txt")), "hello");
}

#[test]
fn a_python_timeout_is_reported_to_the_model_not_as_a_failure() {
    let home = tempfile::tempdir().unwrap();
    let out = ossa_tool_ok(
        home.path(),
        &[
            "--timeout",
            "1",
            "python",
            "print('working', flush=True)\nwhile True:\n    pass",
        ],
        None,
    );
    assert_eq!(
        stdout(&out),
        "working\n[ERROR] Execution timed out after 1 s\n[NOTE] The Python interpreter was \
         restarted: variables and imports are gone; files in /mnt/data are kept."
    );
}

/// An HTTP/1.1 server on loopback until the test process ends: `answer` gets each request's
/// line (`GET /path HTTP/1.1`) and gives the status and the HTML to send. Returns its root URL.
fn serve_http(answer: impl Fn(&str) -> (&'static str, String) + Send + 'static) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let address = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().expect("socket"));
            let mut request_line = String::new();
            if reader.read_line(&mut request_line).is_err() {
                continue;
            }
            // Skip the headers.
            loop {
                let mut line = String::new();
                match reader.read_line(&mut line) {
                    Ok(0) | Err(_) => break,
                    Ok(_) if line == "\r\n" || line == "\n" => break,
                    Ok(_) => {}
                }
            }
            let (status, body) = answer(request_line.trim_end());
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes());
        }
    });
    format!("http://{address}")
}

/// Serves `pages` (path, HTML) over HTTP/1.1 on loopback until the test process ends.
fn serve(pages: Vec<(String, String)>) -> String {
    serve_http(move |request_line| {
        let path = request_line.split_whitespace().nth(1).unwrap_or("");
        match pages.iter().find(|(p, _)| p == path) {
            Some((_, html)) => ("200 OK", html.clone()),
            None => ("404 Not Found", "no such page".to_string()),
        }
    })
}

fn fixture(name: &str) -> serde_json::Value {
    let path = ossa_test_support::fixtures().join("browser").join(name);
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The reference browser's session on a short page (open, open again, find), replayed against
/// the same page served on loopback: the same text, with the page's URL in place.
#[test]
fn browser_open_and_find_on_a_loopback_page() {
    let case = fixture("06_dispatch_errors.json");
    let reference_url = "https://example.org/short.html";
    let html = case["pages"][reference_url]["html"]
        .as_str()
        .unwrap()
        .to_string();
    let base = serve(vec![("/short.html".into(), html)]);
    let url = format!("{base}/short.html");
    let steps: Vec<&serde_json::Value> = case["steps"]
        .as_array()
        .unwrap()
        .iter()
        .skip_while(|s| s["arguments"] != format!("{{\"id\": \"{reference_url}\"}}"))
        .take(3)
        .collect();
    let expected: Vec<String> = steps
        .iter()
        .map(|s| s["output"].as_str().unwrap().replace(reference_url, &url))
        .collect();
    assert_eq!(
        steps
            .iter()
            .map(|s| s["recipient"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["browser.open", "browser.open", "browser.find"]
    );

    let home = tempfile::tempdir().unwrap();
    let open = format!("{{\"id\": \"{url}\"}}");
    let out = ossa_tool_ok(
        home.path(),
        &[
            "--allow-private-addresses",
            "browser.open",
            &open,
            "browser.open",
            "{}",
            "browser.find",
            "{\"pattern\": \"needle\"}",
        ],
        None,
    );
    assert_eq!(stdout(&out), expected.join("\n"));

    // Loopback is refused without the flag: the model is told, the call itself ran.
    let out = ossa_tool_ok(home.path(), &["browser.open", &open], None);
    let text = stdout(&out);
    assert!(
        text.starts_with(&format!("Error fetching URL `{url}`: refusing to open")),
        "{text}"
    );
}

#[test]
fn bad_arguments_fail_with_a_clear_error_before_anything_runs() {
    let home = tempfile::tempdir().unwrap();
    let out = ossa_tool(home.path(), &["browser.search", "{query: gpt-oss}"], None);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    let err = stderr(&out);
    assert!(
        err.contains("the ARGS of browser.search are not valid JSON"),
        "{err}"
    );

    let out = ossa_tool(home.path(), &["shell", "ls"], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown tool `shell`"),
        "{}",
        stderr(&out)
    );

    let out = ossa_tool(home.path(), &["python"], None);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("`python` has no ARGS"),
        "{}",
        stderr(&out)
    );

    // A function that is not configured.
    let out = ossa_tool(home.path(), &["functions.apply_patch", "x"], None);
    assert!(!out.status.success());
    let err = stderr(&out);
    ossa_test_support::assert_contains_all(&err, &["no function `apply_patch`", "--workspace"]);
}

#[test]
fn apply_patch_edits_the_workspace() {
    let home = tempfile::tempdir().unwrap();
    let workspace = tempfile::tempdir().unwrap();
    let patch = "*** Begin Patch\n*** Add File: notes/hello.txt\n+hello\n+world\n*** End Patch\n";
    let out = ossa_tool_ok(
        home.path(),
        &[
            "--workspace",
            workspace.path().to_str().unwrap(),
            "functions.apply_patch",
            "-",
        ],
        Some(patch),
    );
    assert_eq!(stdout(&out), "Done!\nA notes/hello.txt");
    assert_eq!(
        file_text(&workspace.path().join("notes/hello.txt")),
        "hello\nworld\n"
    );
}

/// MCP servers from the config file become `functions.*`; their JSON arguments are checked first.
#[test]
fn mcp_tools_from_the_config_file() {
    let home = tempfile::tempdir().unwrap();
    let server = ossa_test_support::workspace_root().join("tools/tests/mcp_echo_server.py");
    let config = home.path().join("ossa.toml");
    std::fs::write(
        &config,
        format!(
            "[[mcp_servers]]\nname = \"echo\"\ncommand = \"python3\"\nargs = ['{}']\n",
            server.display()
        ),
    )
    .unwrap();
    let config = config.to_str().unwrap();
    let out = ossa_tool_ok(
        home.path(),
        &["--config", config, "functions.echo", "{\"text\": \"hi\"}"],
        None,
    );
    assert_eq!(stdout(&out), "echo: hi");

    let out = ossa_tool(
        home.path(),
        &["--config", config, "functions.echo", "text=hi"],
        None,
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("the ARGS of functions.echo are not valid JSON"),
        "{err}"
    );
}

/// A proxy on loopback that answers every request with its own page and records the request
/// lines it was sent.
fn recording_proxy() -> (String, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let recorded = seen.clone();
    let url = serve_http(move |request_line| {
        recorded.lock().unwrap().push(request_line.to_string());
        let body = "<title>Proxy</title><p>served by the proxy</p>";
        ("200 OK", body.to_string())
    });
    (url, seen)
}

/// The proxy variables of the environment never carry page fetches (they would skip the
/// private-address check); `[browser] proxy` does, and then loopback targets stay refused.
#[test]
fn the_environment_proxy_is_never_used_for_pages() {
    let base = serve(vec![(
        "/page.html".into(),
        "<title>Direct</title><p>served directly</p>".into(),
    )]);
    let (proxy, seen) = recording_proxy();
    let url = format!("{base}/page.html");
    let open = format!("{{\"id\": \"{url}\"}}");
    let home = tempfile::tempdir().unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_ossa"));
    command
        .args(["tool", "--allow-private-addresses", "browser.open", &open])
        .env("XDG_CONFIG_HOME", home.path())
        .env_remove("OSSA_CONFIG")
        .env_remove("OSSA_SEARCH_BACKEND")
        .env_remove("NO_PROXY")
        .env_remove("no_proxy");
    for var in [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ] {
        command.env(var, &proxy);
    }
    let out = command.output().expect("ossa ran");
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("served directly"), "{text}");
    assert!(
        seen.lock().unwrap().is_empty(),
        "the environment's proxy was used"
    );

    // Configured for the browser, the proxy is used...
    let config = home.path().join("ossa");
    std::fs::create_dir_all(&config).unwrap();
    std::fs::write(
        config.join("config.toml"),
        format!("[browser]\nproxy = \"{proxy}\"\n"),
    )
    .unwrap();
    let out = ossa_tool_ok(
        home.path(),
        &["--allow-private-addresses", "browser.open", &open],
        None,
    );
    assert!(
        stdout(&out).contains("served by the proxy"),
        "{}",
        stdout(&out)
    );
    assert_eq!(*seen.lock().unwrap(), [format!("GET {url} HTTP/1.1")]);
    // ...and the target is still checked before the proxy is asked.
    let out = ossa_tool_ok(home.path(), &["browser.open", &open], None);
    assert!(
        stdout(&out)
            .ends_with("refusing to open `127.0.0.1`: it is a local or private network address"),
        "{}",
        stdout(&out)
    );
    assert_eq!(seen.lock().unwrap().len(), 1);
}

/// Escape sequences from a page, a program's output or its file names are not printed: the
/// terminal gets the text without its control characters, as the model does.
#[test]
fn control_characters_from_tools_never_reach_the_terminal() {
    const HOSTILE: &str = "clip\x1b]52;c;cm0gLXJmIH4=\x07 clear\x1b[2J csi\u{9b}2J osc\u{9d}0;title\u{9c} bs\x08\x08 end";
    let clean = |text: &str| !text.contains(|c: char| c.is_control() && c != '\n' && c != '\t');
    let base = serve(vec![(
        "/hostile.html".into(),
        format!("<title>T\x1b[2J</title><p>{HOSTILE}</p>"),
    )]);
    let home = tempfile::tempdir().unwrap();
    let open = format!("{{\"id\": \"{base}/hostile.html\"}}");
    let out = ossa_tool_ok(
        home.path(),
        &["--allow-private-addresses", "browser.open", &open],
        None,
    );
    let text = stdout(&out);
    assert!(clean(&text), "{text:?}");
    assert!(
        text.contains("clip]52;c;cm0gLXJmIH4= clear[2J csi2J osc0;title bs end"),
        "{text:?}"
    );

    let code = "print('a\\x1b]52;c;aGk=\\x07b\\x1b[2Jc\\x9b2Jd\\re')\n\
                n = open('/mnt/data/x\\x1b[2J.txt', 'w').write('x')";
    let out = ossa_tool_ok(home.path(), &["python", code], None);
    assert_eq!(stdout(&out), "a]52;c;aGk=b[2Jc2Jde\n");
    let err = stderr(&out);
    assert!(clean(&err), "{err:?}");
    assert!(err.contains("wrote /mnt/data/x[2J.txt"), "{err}");
}
