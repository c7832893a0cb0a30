//! The config file and the flags over it: the shipped example and the README's examples parse,
//! mistakes are named (file, line, column, key), flags win over the file and the file over the
//! environment, search keys are checked with the fix in the message, and the file is found where
//! the XDG rules put it. The environment is passed in, never changed, so tests cannot race.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use ossa::agent::harmony::ReasoningEffort;
use ossa::config::{
    Config, ConfigArgs, ConfigError, ConfigSource, Count, Date, Env, Interpreters, Seconds,
    Settings, Temperature, TopP, default_config_path,
};
use ossa::engine::DType;
use ossa::sandbox::{Limits, SandboxConfig};
use ossa::tools::browser::{BrowserConfig, FetchConfig, ReferenceQuirks, SearchBackendKind};
use ossa::toolset::ToolChoice;

fn env_of(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    move |name: &str| map.get(name).cloned()
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: ConfigArgs,
}

fn flags(argv: &[&str]) -> Result<ConfigArgs, clap::Error> {
    Cli::try_parse_from(std::iter::once("ossa").chain(argv.iter().copied())).map(|cli| cli.args)
}

/// What `argv` (flags that parse) resolves to in `env`.
fn resolved(argv: &[&str], env: Env) -> Result<Settings, ConfigError> {
    flags(argv).unwrap().resolve_with(env)
}

/// `config.toml` holding `text`, in a temporary folder (removed when dropped).
fn config_toml(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = write(dir.path(), "config.toml", text);
    (dir, path)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn parse(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(
        text,
        Path::new("/home/me/.config/ossa/config.toml"),
        &env_of(&[("HOME", "/home/me")]),
    )
}

fn example_text() -> String {
    std::fs::read_to_string(ossa_test_support::workspace_root().join("config.example.toml"))
        .unwrap()
}

/// The example with every `#key = ...` setting turned on (prose comments start with `# `).
fn example_with_everything_on() -> String {
    example_text()
        .lines()
        .map(|line| match line.strip_prefix('#') {
            Some(rest) if rest.starts_with(|c: char| c.is_ascii_lowercase() || c == '[') => rest,
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_example_file_parses_and_its_values_are_the_defaults() {
    let config = parse(&example_text()).expect("config.example.toml parses");
    assert_eq!(config.model.as_deref(), Some("openai/gpt-oss-20b"));
    assert_eq!(config.dtype, Some(DType::Q8));
    assert_eq!(config.reasoning_effort, Some(ReasoningEffort::Low));
    assert_eq!(config.temperature.map(Temperature::get), Some(1.0));
    assert_eq!(config.top_p.map(TopP::get), Some(1.0));
    assert_eq!(config.threads, None);
    assert!(!config.tools.browser && !config.tools.python);
    assert!(config.mcp_servers.is_empty());
    assert_eq!(config.prompt_cache.enabled, Some(true));
    assert_eq!(
        config.prompt_cache.max_mb.map(|mb| mb.get() as u64),
        Some(ossa::config::DEFAULT_PROMPT_CACHE_MB)
    );
    // The file says its values are the defaults: check that against the crates' own.
    assert_eq!(config.browser_config(), BrowserConfig::default());
    assert_eq!(config.fetch_config(), FetchConfig::default());
    assert_eq!(config.sandbox_limits(), Limits::default());
    let sandbox = config.sandbox_config().unwrap();
    let defaults = SandboxConfig::from_env().unwrap();
    assert_eq!(sandbox.limits, Limits::default());
    assert_eq!(sandbox.max_interpreters, defaults.max_interpreters);
    assert_eq!(sandbox.memory_budget, defaults.memory_budget);
    assert_eq!(sandbox.evict_idle_after, defaults.evict_idle_after);
    let search = config.search_config(&env_of(&[])).unwrap();
    assert_eq!(search.kind, SearchBackendKind::DuckDuckGo);
    assert!(search.provider_reads_pages);
    assert_eq!(search.api_timeout, Duration::from_secs(30));
    assert_eq!(
        config.source,
        ConfigSource::File("/home/me/.config/ossa/config.toml".into())
    );

    // Resolved without flags, the example gives the same settings as no file at all.
    let dir = tempfile::tempdir().unwrap();
    let with_file = write(dir.path(), "example.toml", &example_text());
    let env = env_of(&[]);
    let from_example = resolved(
        &[
            "--config",
            with_file.to_str().unwrap(),
            "--date",
            "2025-08-05",
        ],
        &env,
    )
    .unwrap();
    let from_nothing = resolved(&["--date", "2025-08-05"], &env).unwrap();
    assert_eq!(
        format!("{:?}", from_example.sampling),
        format!("{:?}", from_nothing.sampling)
    );
    assert_eq!(from_example.model, from_nothing.model);
    assert_eq!(from_example.dtype, from_nothing.dtype);
    assert_eq!(from_example.reasoning_effort, from_nothing.reasoning_effort);
    assert_eq!(from_example.tools, from_nothing.tools);
    assert_eq!(from_example.max_tokens, from_nothing.max_tokens);
    assert_eq!(from_example.prompt_cache, from_nothing.prompt_cache);
}

#[test]
fn the_example_file_with_every_setting_turned_on_parses() {
    let text = example_with_everything_on();
    let config = parse(&text).unwrap_or_else(|e| panic!("{e}\n---\n{text}"));
    assert_eq!(config.threads.map(Count::get), Some(8));
    assert_eq!(
        config.developer_message.as_deref(),
        Some("Answer briefly. Use metric units.")
    );
    assert_eq!(config.max_tokens.map(Count::get), Some(4096));
    assert_eq!(config.seed, Some(42));
    assert_eq!(
        config.tools.apply_patch_workspace,
        Some(PathBuf::from("/home/me/projects/scratch"))
    );
    assert_eq!(config.search.backend, Some(SearchBackendKind::Exa));
    assert_eq!(config.search.api_key.as_deref(), Some("your-exa-api-key"));
    assert_eq!(
        config.search.base_url.as_deref(),
        Some("https://api.exa.ai")
    );
    assert_eq!(config.search.provider_reads_pages, Some(true));
    assert_eq!(config.search.timeout_s.map(Seconds::get), Some(30.0));
    assert_eq!(
        config.browser.user_agent.as_deref(),
        Some("Mozilla/5.0 (compatible; my-agent/1.0)")
    );
    assert_eq!(
        config.python.mount,
        Some(PathBuf::from("/home/me/ossa-data"))
    );

    let names: Vec<&str> = config.mcp_servers.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["files", "tracker"]);
    let files = &config.mcp_servers[0];
    assert_eq!(files.command.as_deref(), Some("npx"));
    assert_eq!(files.args.len(), 3);
    assert_eq!(files.env.get("LOG_LEVEL").map(String::as_str), Some("warn"));
    assert_eq!(files.cwd, Some(PathBuf::from("/home/me/notes")));
    assert_eq!(files.startup_timeout_secs, Some(30));
    assert_eq!(files.call_timeout_secs, Some(120));
    let tracker = &config.mcp_servers[1];
    assert_eq!(tracker.url.as_deref(), Some("https://mcp.example.com/mcp"));
    assert_eq!(
        tracker.headers.get("X-Team").map(String::as_str),
        Some("search")
    );
    assert_eq!(
        tracker.bearer_token_env_var.as_deref(),
        Some("TRACKER_TOKEN")
    );

    // The file's key beats the environment's.
    let search = config
        .search_config(&env_of(&[("EXA_API_KEY", "from-env")]))
        .unwrap();
    assert_eq!(search.api_key.as_deref(), Some("your-exa-api-key"));
    assert_eq!(search.base_url.as_deref(), Some("https://api.exa.ai"));
}

/// Every ```toml block of the README's Configuration section is a config file that parses.
#[test]
fn the_readme_configuration_examples_parse() {
    let readme =
        std::fs::read_to_string(ossa_test_support::workspace_root().join("README.md")).unwrap();
    let start = readme
        .find("\n## Configuration")
        .expect("README has a Configuration section");
    let section = &readme[start + 1..];
    let section = &section[..section.find("\n## ").unwrap_or(section.len())];
    let mut blocks = 0;
    let mut rest = section;
    while let Some(open) = rest.find("```toml\n") {
        let body = &rest[open + 8..];
        let close = body.find("```").expect("closed code block");
        parse(&body[..close]).unwrap_or_else(|e| panic!("README example: {e}\n{}", &body[..close]));
        blocks += 1;
        rest = &body[close + 3..];
    }
    assert!(blocks >= 2, "found {blocks} toml examples");
}

#[test]
fn an_unknown_key_is_named_with_file_line_and_column() {
    let (_dir, path) = config_toml(
        "model = \"openai/gpt-oss-20b\"\n\n[python]\ntimeout_s = 30\nmemroy_mb = 512\n",
    );
    let error = Config::load_with(Some(&path), &env_of(&[])).unwrap_err();
    match &error {
        ConfigError::Parse {
            path: at,
            line,
            column,
            key,
            message,
        } => {
            assert_eq!(at, &path);
            assert_eq!((*line, *column), (5, 1));
            assert_eq!(key.as_deref(), Some("python.memroy_mb"));
            assert!(message.contains("unknown field `memroy_mb`"), "{message}");
            // It lists what would have been right.
            assert!(message.contains("memory_mb"), "{message}");
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.starts_with(&format!("{}:5:1: `python.memroy_mb`: ", path.display())),
        "{text}"
    );

    // At the top level, in an unknown table, and inside an MCP server entry.
    let error = parse("modle = \"x\"\n").unwrap_err().to_string();
    assert!(
        error.contains(":1:1: `modle`: unknown field `modle`"),
        "{error}"
    );
    let error = parse("[pyhton]\ntimeout_s = 3\n").unwrap_err().to_string();
    assert!(error.contains(":1:2: unknown field `pyhton`"), "{error}");
    let error = parse("[[mcp_servers]]\nname = \"a\"\ncomand = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(":3:1: `mcp_servers.comand`: unknown field `comand`"),
        "{error}"
    );
}

#[test]
fn a_bad_reasoning_effort_is_named_with_the_accepted_values() {
    let error = parse("# comment\nreasoning_effort = \"extreme\"\n").unwrap_err();
    match &error {
        ConfigError::Parse {
            line, column, key, ..
        } => {
            assert_eq!((*line, *column), (2, 20));
            assert_eq!(key.as_deref(), Some("reasoning_effort"));
        }
        other => panic!("expected a parse error, got {other:?}"),
    }
    let text = error.to_string();
    assert!(
        text.contains("unknown reasoning effort `extreme` (expected low, medium or high)"),
        "{text}"
    );
    // Case does not matter.
    let config = parse("reasoning_effort = \"High\"").unwrap();
    assert_eq!(config.reasoning_effort, Some(ReasoningEffort::High));
    // On the command line, clap names the flag.
    let error = flags(&["-r", "extreme"]).unwrap_err().to_string();
    assert!(error.contains("--reasoning-effort"), "{error}");
    assert!(error.contains("expected low, medium or high"), "{error}");
}

#[test]
fn values_out_of_range_and_of_the_wrong_type_are_named() {
    let cases = [
        ("temperature = -0.5", "temperature", "0 (greedy) or more"),
        ("top_p = 1.5", "top_p", "at most 1"),
        ("threads = 0", "threads", "at least 1"),
        ("dtype = \"f16\"", "dtype", "use f32, bf16 or q8"),
        ("max_tokens = \"many\"", "max_tokens", "invalid type"),
        (
            "[python]\nmemory_mb = 16",
            "python.memory_mb",
            "at least 48",
        ),
        ("[python]\ntimeout_s = 0", "python.timeout_s", "above 0"),
        ("[python]\ntimeout_s = -3", "python.timeout_s", "above 0"),
        ("[python]\ndisk_mb = 0", "python.disk_mb", "at least 1"),
        (
            "[python]\nmax_interpreters = 0",
            "python.max_interpreters",
            "must be 1 to 1024, got 0",
        ),
        (
            "[python]\nmax_interpreters = 5000",
            "python.max_interpreters",
            "must be 1 to 1024, got 5000",
        ),
        (
            "[python]\nmemory_budget_mb = 16",
            "python.memory_budget_mb",
            "at least 48",
        ),
        (
            "[python]\nevict_idle_s = -1",
            "python.evict_idle_s",
            "invalid value",
        ),
        (
            "[search]\nbackend = \"bing\"",
            "search.backend",
            "unknown search backend `bing`",
        ),
        (
            "[search]\nbackend = \"searxng\"\nurl = \"localhost:8080\"",
            "search.url",
            "must start with http:// or https://",
        ),
        (
            "[tools]\nbrowser = \"yes\"",
            "tools.browser",
            "invalid type",
        ),
    ];
    for (text, key, needle) in cases {
        match parse(text) {
            Err(ConfigError::Parse {
                key: Some(found),
                message,
                ..
            }) => {
                assert_eq!(found, key, "{text}");
                assert!(message.contains(needle), "{text}: {message}");
            }
            other => panic!("{text}: expected a parse error naming {key}, got {other:?}"),
        }
    }
    // A flag for the interpreter budget (`ossa serve --max-interpreters`) is checked as the key
    // is.
    assert_eq!("8".parse::<Interpreters>().map(Interpreters::get), Ok(8));
    for bad in ["0", "1025", "eight", "-1"] {
        let error = bad.parse::<Interpreters>().unwrap_err();
        assert!(
            error.contains("1 to 1024") || error.contains("not a whole number"),
            "{bad}: {error}"
        );
    }
    // An integer where seconds are expected is fine.
    let config = parse("[python]\ntimeout_s = 30\nmemory_mb = 48").unwrap();
    assert_eq!(
        config.sandbox_limits().call.deadline,
        Duration::from_secs(30)
    );
    assert_eq!(config.sandbox_limits().call.memory_bytes, 48 << 20);
}

#[test]
fn inconsistent_sections_are_named() {
    let cases = [
        (
            "[search]\napi_key = \"k\"\n",
            "`search.api_key`: set `backend` in [search] too",
        ),
        (
            "[search]\nbackend = \"duckduckgo\"\napi_key = \"k\"\n",
            "the duckduckgo backend takes no API key",
        ),
        (
            "[[mcp_servers]]\nname = \"a\"\ncommand = \"x\"\nurl = \"http://h/mcp\"\n",
            "`mcp_servers[0] (a)`: give either `command` (stdio) or `url` (HTTP), not both",
        ),
        (
            "[[mcp_servers]]\nname = \"a\"\n",
            "`mcp_servers[0] (a)`: give `command`",
        ),
        (
            "[[mcp_servers]]\nname = \"a\"\ncommand = \"x\"\n[[mcp_servers]]\nname = \"a\"\nurl = \"http://h/mcp\"\n",
            "`mcp_servers[1] (a)`: another server is also named `a`",
        ),
        (
            "[[mcp_servers]]\nname = \" \"\ncommand = \"x\"\n",
            "`mcp_servers[0]`: `name` is empty",
        ),
    ];
    for (text, needle) in cases {
        let error = parse(text).unwrap_err().to_string();
        assert!(
            error.starts_with("/home/me/.config/ossa/config.toml: "),
            "{error}"
        );
        assert!(error.contains(needle), "{text}: {error}");
    }
}

#[test]
fn an_mcp_server_without_a_name_is_pointed_at() {
    let error = parse("model = \"m\"\n\n[[mcp_servers]]\ncommand = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(error.contains(":3:1: missing field `name`"), "{error}");
}

#[test]
fn relative_and_home_paths_in_the_file_are_anchored() {
    let config = parse(
        "model = \"./models/gpt-oss-20b\"\n[tools]\napply_patch_workspace = \"work\"\n\
         [python]\nmount = \"~/data\"\n[[mcp_servers]]\nname = \"s\"\ncommand = \"srv\"\n\
         cwd = \"/abs/dir\"\n",
    )
    .unwrap();
    assert_eq!(
        config.model.as_deref(),
        Some("/home/me/.config/ossa/models/gpt-oss-20b")
    );
    assert_eq!(
        config.tools.apply_patch_workspace,
        Some(PathBuf::from("/home/me/.config/ossa/work"))
    );
    assert_eq!(config.python.mount, Some(PathBuf::from("/home/me/data")));
    assert_eq!(config.mcp_servers[0].cwd, Some(PathBuf::from("/abs/dir")));
    // A hub id is not a path.
    let config = parse("model = \"openai/gpt-oss-120b\"").unwrap();
    assert_eq!(config.model.as_deref(), Some("openai/gpt-oss-120b"));
}

/// The settings a file and flags both choose, compared in one go so that a failure shows every
/// value that came out wrong.
#[derive(Debug, PartialEq)]
struct Chosen<'a> {
    model: &'a str,
    dtype: DType,
    threads: Option<usize>,
    reasoning_effort: ReasoningEffort,
    developer_message: Option<&'a str>,
    max_tokens: Option<usize>,
    temperature: f32,
    top_p: f32,
    seed: Option<u64>,
    tools: ToolChoice,
}

fn chosen(settings: &Settings) -> Chosen<'_> {
    Chosen {
        model: &settings.model,
        dtype: settings.dtype,
        threads: settings.threads,
        reasoning_effort: settings.reasoning_effort,
        developer_message: settings.developer_message.as_deref(),
        max_tokens: settings.max_tokens,
        temperature: settings.sampling.temperature,
        top_p: settings.sampling.top_p,
        seed: settings.sampling.seed,
        tools: settings.tools,
    }
}

#[test]
fn flags_override_the_file_and_the_file_fills_in_the_rest() {
    let (dir, path) = config_toml(
        r#"
model = "openai/gpt-oss-120b"
dtype = "bf16"
threads = 4
reasoning_effort = "high"
developer_message = "Be terse."
max_tokens = 1000
temperature = 0.7
top_p = 0.9
seed = 7

[tools]
browser = true
python = true

[search]
backend = "brave"
api_key = "file-brave-key"

[python]
mount = "data"
timeout_s = 10
"#,
    );
    let config = path.to_str().unwrap();
    let env = env_of(&[]);

    // The file alone.
    let settings = resolved(&["--config", config], &env).unwrap();
    assert_eq!(
        chosen(&settings),
        Chosen {
            model: "openai/gpt-oss-120b",
            dtype: DType::Bf16,
            threads: Some(4),
            reasoning_effort: ReasoningEffort::High,
            developer_message: Some("Be terse."),
            max_tokens: Some(1000),
            temperature: 0.7,
            top_p: 0.9,
            seed: Some(7),
            tools: ToolChoice {
                browser: true,
                python: true
            },
        }
    );
    assert_eq!(settings.config.python.mount, Some(dir.path().join("data")));
    let load = settings.load_options();
    assert_eq!((load.dtype, load.threads), (DType::Bf16, Some(4)));
    let sampling = &settings.sampling;
    assert_eq!(
        (
            sampling.temperature,
            sampling.top_p,
            sampling.top_k,
            sampling.seed
        ),
        (0.7, 0.9, 0, Some(7))
    );

    // Every flag over it.
    let settings = resolved(
        &[
            "--config",
            config,
            "--model",
            "/models/mine",
            "--dtype",
            "f32",
            "--threads",
            "2",
            "-r",
            "medium",
            "--developer-message",
            "Be thorough.",
            "--date",
            "2024-02-29",
            "--max-tokens",
            "50",
            "--temperature",
            "0",
            "--top-p",
            "0.5",
            "--seed",
            "99",
            "--no-browser",
            "--no-python",
            "--mount",
            "/tmp/elsewhere",
        ],
        &env,
    )
    .unwrap();
    assert_eq!(
        chosen(&settings),
        Chosen {
            model: "/models/mine",
            dtype: DType::F32,
            threads: Some(2),
            reasoning_effort: ReasoningEffort::Medium,
            developer_message: Some("Be thorough."),
            max_tokens: Some(50),
            temperature: 0.0,
            top_p: 0.5,
            seed: Some(99),
            tools: ToolChoice::default(),
        }
    );
    assert_eq!(settings.date, "2024-02-29");
    assert_eq!(
        settings.config.python.mount,
        Some(PathBuf::from("/tmp/elsewhere"))
    );
    // What the flags did not touch still comes from the file.
    assert_eq!(
        settings.config.python.timeout_s.map(Seconds::get),
        Some(10.0)
    );

    // The last of -b / --no-browser wins, as with any pair of switches.
    let settings = resolved(&["--config", config, "--no-browser", "-b"], &env).unwrap();
    assert!(settings.tools.browser);
}

#[test]
fn without_a_file_the_defaults_apply() {
    let settings = resolved(&[], &env_of(&[])).unwrap();
    assert_eq!(settings.model, "openai/gpt-oss-20b");
    assert_eq!(settings.reasoning_effort, ReasoningEffort::Low);
    assert_eq!(settings.tools, ToolChoice::default());
    assert_eq!(settings.sampling.temperature, 1.0);
    assert_eq!(settings.max_tokens, None);
    assert_eq!(settings.config.source, ConfigSource::Defaults);
    // Today's date, well formed.
    let date = &settings.date;
    assert_eq!(date.len(), 10, "{date}");
    assert!(ossa::config::parse_date(date).is_ok(), "{date}");
    assert_eq!(date, &ossa::config::today());
}

/// A checked value is refused with one message whichever way it came: the file, a flag, or
/// code building it.
#[test]
fn a_value_is_refused_with_the_same_message_from_the_file_a_flag_and_code() {
    let cases = [
        (
            "temperature = -0.5",
            &["--temperature", "-0.5"][..],
            Temperature::new(-0.5).map(drop),
        ),
        (
            "top_p = 1.5",
            &["--top-p", "1.5"][..],
            TopP::new(1.5).map(drop),
        ),
        (
            "threads = 0",
            &["--threads", "0"][..],
            Count::new(0).map(drop),
        ),
        (
            "context = 0",
            &["--context", "0"][..],
            Count::new(0).map(drop),
        ),
    ];
    for (text, argv, from_code) in cases {
        let from_code = from_code.unwrap_err();
        match parse(text) {
            Err(ConfigError::Parse { message, .. }) => {
                assert_eq!(message.trim_end(), from_code, "{text}")
            }
            other => panic!("{text}: expected a parse error, got {other:?}"),
        }
        let from_flag = flags(argv).map(drop).unwrap_err().to_string();
        assert!(from_flag.contains(&from_code), "{argv:?}: {from_flag}");
    }
    let from_file = match parse("[python]\nmax_interpreters = 5000") {
        Err(ConfigError::Parse { message, .. }) => message,
        other => panic!("expected a parse error, got {other:?}"),
    };
    assert_eq!(
        from_file.trim_end(),
        "5000".parse::<Interpreters>().unwrap_err()
    );
}

#[test]
fn bad_flag_values_are_refused_by_name() {
    for (argv, needle) in [
        (&["--date", "2025-02-30"][..], "--date"),
        (&["--date", "2025-8-5"][..], "YYYY-MM-DD"),
        (&["--date", "yesterday"][..], "YYYY-MM-DD"),
        (&["--threads", "0"][..], "at least 1"),
        (&["--temperature", "-1"][..], "0 (greedy) or more"),
        (&["--top-p", "0"][..], "--top-p"),
        (&["--dtype", "fp16"][..], "use f32, bf16 or q8"),
        (
            &["--search-backend", "bing"][..],
            "unknown search backend `bing`",
        ),
    ] {
        let error = flags(argv).map(drop).unwrap_err().to_string();
        assert!(error.contains(needle), "{argv:?}: {error}");
    }
    assert!(flags(&["--date", "2024-02-29"]).is_ok());

    // ConfigArgs built in code (the server) hold the same checked types, made through the same
    // checks with the same messages: an unchecked value cannot get in.
    let error = "2023-02-29".parse::<Date>().unwrap_err();
    assert!(error.contains("YYYY-MM-DD"), "{error}");
    for bad in [f32::NAN, f32::INFINITY, -0.5] {
        let error = Temperature::new(bad).unwrap_err();
        assert!(error.contains("0 (greedy) or more"), "{bad}: {error}");
    }
    assert!(TopP::try_from(0.0f32).is_err() && TopP::try_from(1.0f32).is_ok());
    assert_eq!(Count::new(0).unwrap_err(), "must be at least 1");
    let args = ConfigArgs {
        date: Some("2024-02-29".parse().unwrap()),
        temperature: Some(Temperature::new(0.0).unwrap()),
        threads: Some(Count::new(3).unwrap()),
        ..ConfigArgs::default()
    };
    let settings = args.resolve_with(&env_of(&[])).unwrap();
    assert_eq!(
        (
            settings.date.as_str(),
            settings.sampling.temperature,
            settings.threads
        ),
        ("2024-02-29", 0.0, Some(3))
    );
}

#[test]
fn a_search_backend_without_its_key_says_how_to_fix_it() {
    let (_dir, path) = config_toml("[search]\nbackend = \"exa\"\n");
    let config = path.to_str().unwrap();

    let error = resolved(&["--config", config, "-b"], &env_of(&[])).unwrap_err();
    assert!(matches!(
        error,
        ConfigError::MissingSearchKey {
            backend: "exa",
            var: "EXA_API_KEY",
            ..
        }
    ));
    assert_eq!(
        error.to_string(),
        format!(
            "the exa search backend needs an API key: set EXA_API_KEY or [search] api_key in {}",
            path.display()
        )
    );

    // Not checked when the browser is not used.
    assert!(resolved(&["--config", config], &env_of(&[])).is_ok());

    // The environment's key serves when the file has none.
    let env = env_of(&[("EXA_API_KEY", "env-exa-key")]);
    let settings = resolved(&["--config", config, "-b"], &env).unwrap();
    let search = settings.config.search_config(&env).unwrap();
    assert_eq!(search.kind, SearchBackendKind::Exa);
    assert_eq!(search.api_key.as_deref(), Some("env-exa-key"));

    // With no file, the hint names the default location.
    let home = tempfile::tempdir().unwrap();
    let env = env_of(&[
        ("HOME", home.path().to_str().unwrap()),
        ("OSSA_SEARCH_BACKEND", "tavily"),
    ]);
    let error = resolved(&["-b"], &env).unwrap_err().to_string();
    assert_eq!(
        error,
        format!(
            "the tavily search backend needs an API key: set TAVILY_API_KEY or [search] api_key \
             in {}",
            home.path().join(".config/ossa/config.toml").display()
        )
    );

    // SearXNG needs its URL instead.
    let error = resolved(&["-b", "--search-backend", "searxng"], &env_of(&[]))
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("needs the instance URL: set SEARXNG_URL or [search] url"),
        "{error}"
    );
    let env = env_of(&[("SEARXNG_URL", "http://127.0.0.1:8888")]);
    let settings = resolved(&["-b", "--search-backend", "searxng"], &env).unwrap();
    let search = settings.config.search_config(&env).unwrap();
    assert_eq!(search.base_url.as_deref(), Some("http://127.0.0.1:8888"));
}

#[test]
fn a_backend_chosen_by_flag_does_not_take_the_file_backends_key() {
    let (_dir, path) = config_toml(
        "[tools]\nbrowser = true\n[search]\nbackend = \"exa\"\napi_key = \"exa-key\"\nbase_url = \"https://exa.proxy.test\"\n",
    );
    let config = path.to_str().unwrap();
    // The file's backend with its key.
    let env = env_of(&[("OSSA_SEARCH_BACKEND", "brave")]);
    let settings = resolved(&["--config", config], &env).unwrap();
    let search = settings.config.search_config(&env).unwrap();
    assert_eq!(search.kind, SearchBackendKind::Exa);
    assert_eq!(search.api_key.as_deref(), Some("exa-key"));
    assert_eq!(search.base_url.as_deref(), Some("https://exa.proxy.test"));

    // Another backend by flag: the exa key and URL are not sent to Brave.
    let error = resolved(
        &["--config", config, "--search-backend", "brave"],
        &env_of(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(error.contains("set BRAVE_API_KEY"), "{error}");
    let env = env_of(&[("BRAVE_API_KEY", "brave-key")]);
    let settings = resolved(&["--config", config, "--search-backend", "brave"], &env).unwrap();
    let search = settings.config.search_config(&env).unwrap();
    assert_eq!(search.kind, SearchBackendKind::Brave);
    assert_eq!(search.api_key.as_deref(), Some("brave-key"));
    assert_eq!(search.base_url, None);

    // The same backend by flag keeps the file's key.
    let settings = resolved(
        &["--config", config, "--search-backend", "exa"],
        &env_of(&[]),
    )
    .unwrap();
    assert_eq!(settings.config.search.api_key.as_deref(), Some("exa-key"));

    // The environment's settings apply when the file has none.
    let config = parse("").unwrap();
    let search = config
        .search_config(&env_of(&[
            ("OSSA_SEARCH_BACKEND", "You"),
            ("YDC_API_KEY", "ydc"),
            ("OSSA_SEARCH_BASE_URL", "http://127.0.0.1:9/"),
            ("OSSA_BROWSER_FETCH", "direct"),
        ]))
        .unwrap();
    assert_eq!(search.kind, SearchBackendKind::You);
    assert_eq!(search.api_key.as_deref(), Some("ydc"));
    assert_eq!(search.base_url.as_deref(), Some("http://127.0.0.1:9/"));
    assert!(!search.provider_reads_pages);
    let error = config
        .search_config(&env_of(&[("OSSA_SEARCH_BACKEND", "altavista")]))
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("environment variable OSSA_SEARCH_BACKEND: unknown search backend"),
        "{error}"
    );
}

#[test]
fn an_explicit_config_file_must_exist() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.toml");
    let error = Config::load_with(Some(&missing), &env_of(&[])).unwrap_err();
    assert!(matches!(
        &error,
        ConfigError::NotFound { path, named_by: "--config" } if path == &missing
    ));
    assert_eq!(
        error.to_string(),
        format!(
            "config file {} (named by --config) does not exist",
            missing.display()
        )
    );
    let error = resolved(&["--config", missing.to_str().unwrap()], &env_of(&[])).unwrap_err();
    assert!(matches!(error, ConfigError::NotFound { .. }));

    let env = env_of(&[("OSSA_CONFIG", missing.to_str().unwrap())]);
    let error = Config::load_with(None, &env).unwrap_err().to_string();
    assert!(
        error.contains("(named by OSSA_CONFIG) does not exist"),
        "{error}"
    );

    // A folder is not a config file.
    let error = Config::load_with(Some(dir.path()), &env_of(&[]))
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("cannot read config file"), "{error}");
}

#[test]
fn the_default_file_is_found_by_the_xdg_rules() {
    let xdg = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let xdg_dir = xdg.path().to_str().unwrap();
    let home_dir = home.path().to_str().unwrap();
    let xdg_file = xdg.path().join("ossa/config.toml");
    let home_file = home.path().join(".config/ossa/config.toml");

    let env = env_of(&[("XDG_CONFIG_HOME", xdg_dir), ("HOME", home_dir)]);
    assert_eq!(default_config_path(&env), Some(xdg_file.clone()));
    // No file there yet: defaults, and the location is remembered for hints.
    let config = Config::load_with(None, &env).unwrap();
    assert_eq!(config.source, ConfigSource::Absent(xdg_file.clone()));
    assert_eq!(config.model, None);

    write(
        xdg.path(),
        "ossa/config.toml",
        "reasoning_effort = \"medium\"\n",
    );
    write(
        home.path(),
        ".config/ossa/config.toml",
        "reasoning_effort = \"high\"\n",
    );
    let config = Config::load_with(None, &env).unwrap();
    assert_eq!(config.source, ConfigSource::File(xdg_file.clone()));
    assert_eq!(config.reasoning_effort, Some(ReasoningEffort::Medium));

    // Without XDG_CONFIG_HOME, or with a relative one (which the XDG rules say to ignore):
    // ~/.config.
    for env in [
        env_of(&[("HOME", home_dir)]),
        env_of(&[("XDG_CONFIG_HOME", "relative/dir"), ("HOME", home_dir)]),
    ] {
        assert_eq!(default_config_path(&env), Some(home_file.clone()));
        let config = Config::load_with(None, &env).unwrap();
        assert_eq!(config.reasoning_effort, Some(ReasoningEffort::High));
    }

    // OSSA_CONFIG beats the default location, and --config beats OSSA_CONFIG.
    let other = write(home.path(), "other.toml", "reasoning_effort = \"low\"\n");
    let env = env_of(&[
        ("XDG_CONFIG_HOME", xdg_dir),
        ("HOME", home_dir),
        ("OSSA_CONFIG", other.to_str().unwrap()),
    ]);
    let config = Config::load_with(None, &env).unwrap();
    assert_eq!(config.source, ConfigSource::File(other.clone()));
    assert_eq!(config.reasoning_effort, Some(ReasoningEffort::Low));
    let config = Config::load_with(Some(&home_file), &env).unwrap();
    assert_eq!(config.reasoning_effort, Some(ReasoningEffort::High));

    // No home at all: defaults.
    assert_eq!(default_config_path(&env_of(&[])), None);
    let config = Config::load_with(None, &env_of(&[])).unwrap();
    assert_eq!(config.source, ConfigSource::Defaults);

    // A broken default file is an error, not silently ignored.
    write(xdg.path(), "ossa/config.toml", "reasoning_effort = \n");
    let env = env_of(&[("XDG_CONFIG_HOME", xdg_dir)]);
    let error = Config::load_with(None, &env).unwrap_err().to_string();
    assert!(
        error.starts_with(&format!("{}:1:", xdg_file.display())),
        "{error}"
    );
}

#[test]
fn reference_quirks_and_limits_map_onto_the_crates_settings() {
    let config = parse(
        "[browser]\nreference_quirks = true\nview_tokens = 2048\nallow_private_addresses = true\n\
         max_page_bytes = 1000\nfetch_timeout_s = 2.5\n\
         [python]\ntimeout_s = 1.5\nmemory_mb = 256\noutput_bytes = 4096\nidle_timeout_s = 0\n\
         lifetime_s = 60\nmax_open_files = 32\ndisk_mb = 100\nmax_interpreters = 3\n\
         memory_budget_mb = 512\nevict_idle_s = 0\n[search]\ntimeout_s = 5\n",
    )
    .unwrap();
    let browser = config.browser_config();
    assert_eq!(browser.quirks, ReferenceQuirks::all());
    assert_eq!(browser.view_tokens, 2048);
    let fetch = config.fetch_config();
    assert!(fetch.allow_private_addresses);
    assert_eq!(fetch.max_bytes, 1000);
    assert_eq!(fetch.timeout, Duration::from_millis(2500));
    let limits = config.sandbox_limits();
    assert_eq!(limits.call.deadline, Duration::from_millis(1500));
    assert_eq!(limits.call.memory_bytes, 256 << 20);
    assert_eq!(limits.call.output_bytes, 4096);
    assert_eq!(limits.idle_timeout, None);
    assert_eq!(limits.lifetime, Some(Duration::from_secs(60)));
    assert_eq!(limits.max_open_files, 32);
    assert_eq!(limits.disk_bytes, 100 << 20);
    let sandbox = config.sandbox_config().unwrap();
    assert_eq!(sandbox.limits, limits);
    assert_eq!(sandbox.max_interpreters, 3);
    assert_eq!(sandbox.memory_budget, 512 << 20);
    assert_eq!(sandbox.evict_idle_after, None);
    let sandbox = parse("[python]\nevict_idle_s = 5")
        .unwrap()
        .sandbox_config()
        .unwrap();
    assert_eq!(sandbox.evict_idle_after, Some(Duration::from_secs(5)));
    let search = config.search_config(&env_of(&[])).unwrap();
    assert_eq!(search.api_timeout, Duration::from_secs(5));
    assert_eq!(config.python_session_options().mount, None);
}

#[test]
fn api_keys_do_not_show_in_debug_output() {
    let config = parse("[search]\nbackend = \"exa\"\napi_key = \"secret-123\"\n").unwrap();
    let debug = format!("{config:?}");
    assert!(!debug.contains("secret-123"), "{debug}");
    let search = config.search_config(&env_of(&[])).unwrap();
    assert!(!format!("{search:?}").contains("secret-123"));
}

/// The prompt cache is on by default in its folder with the default bound; the file's
/// `[prompt_cache]` sets the bound or turns it off, `--no-prompt-cache` turns it off for one run.
#[test]
fn the_prompt_cache_follows_its_key_and_flag() {
    let dir = tempfile::tempdir().unwrap();
    let env = env_of(&[("OSSA_PROMPT_CACHE_DIR", "/srv/kv")]);
    let resolve = |file: Option<&str>, extra: &[&str]| {
        let mut argv: Vec<String> = Vec::new();
        if let Some(text) = file {
            let path = write(dir.path(), "prompt-cache.toml", text);
            argv.extend(["--config".to_string(), path.display().to_string()]);
        }
        argv.extend(extra.iter().map(|s| s.to_string()));
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        resolved(&argv, &env).unwrap().prompt_cache
    };
    let on = resolve(None, &[]).expect("on by default");
    assert_eq!(on.dir, PathBuf::from("/srv/kv"));
    assert_eq!(on.max_bytes, 4096 << 20);
    let bounded = resolve(Some("[prompt_cache]\nmax_mb = 10"), &[]).expect("on");
    assert_eq!(bounded.max_bytes, 10 << 20);
    assert_eq!(resolve(Some("[prompt_cache]\nenabled = false"), &[]), None);
    assert_eq!(resolve(None, &["--no-prompt-cache"]), None);
    assert_eq!(
        resolve(
            Some("[prompt_cache]\nenabled = true"),
            &["--no-prompt-cache"]
        ),
        None
    );

    let error = parse("[prompt_cache]\nmax_mb = 0").unwrap_err().to_string();
    ossa_test_support::assert_contains_all(&error, &["prompt_cache.max_mb", "at least 1"]);
    let error = parse("[prompt_cache]\nsize = 3").unwrap_err().to_string();
    assert!(error.contains("size"), "{error}");
}
