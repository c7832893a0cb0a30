//! `ossa serve`: the OpenAI API (Responses, Chat Completions, Completions) on the local model.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use ossa::app::TurnLimits;
use ossa::config::{ConfigArgs, Interpreters};
use ossa::serve::security::AccessPolicy;
use ossa::serve::store::StoreOptions;
use ossa::serve::{Limits, ServeError, ServeOptions};

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (0.0.0.0 for every interface: needs --api-key).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The key clients must send (`Authorization: Bearer KEY`, the `api_key` of OpenAI's
    /// clients). Without one, only loopback addresses may be listened on.
    #[arg(long, value_name = "KEY", env = "OSSA_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// A host name clients reach the server by (besides localhost and IP addresses, always
    /// accepted); requests naming other hosts are refused. Repeatable; `*` accepts any (needs
    /// --api-key).
    #[arg(long, value_name = "NAME")]
    allowed_host: Vec<String>,
    /// A web origin (`http://localhost:3000`) whose pages may call the server; requests from
    /// other pages are refused. Repeatable; `*` allows any (needs --api-key).
    #[arg(long, value_name = "ORIGIN")]
    cors_origin: Vec<String>,
    /// The model name clients see and send [default: the --model setting, a local folder by
    /// its name].
    #[arg(long, value_name = "NAME")]
    served_model_name: Option<String>,
    /// Where stored responses (`store: true`) are kept [default: `responses` in ossa's data
    /// folder, $OSSA_DATA_DIR or ~/.local/share/ossa].
    #[arg(long, value_name = "DIR")]
    store_dir: Option<std::path::PathBuf>,
    /// Keep no responses: `store` is always false and `previous_response_id` is refused.
    #[arg(long, conflicts_with_all = ["store_dir", "store_max_mb", "store_ttl"])]
    no_store: bool,
    /// Most MiB of stored responses; past it the least recently used go first.
    #[arg(long, value_name = "MB", default_value_t = StoreOptions::DEFAULT_MAX_BYTES >> 20,
          value_parser = clap::value_parser!(u64).range(1..))]
    store_max_mb: u64,
    /// Stored responses unused this long are deleted (`30d`, `12h`, `90m`, `3600s`; 0:
    /// never for their age).
    #[arg(long, value_name = "AGE", default_value = "30d", value_parser = parse_age)]
    store_ttl: Duration,
    /// Most built-in tool calls one request may make.
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_tool_calls: usize,
    /// Most tokens one request may ask the model for (`max_tokens`, `max_output_tokens`);
    /// larger asks are cut to it [default: what the context has room for].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    max_tokens_limit: Option<u64>,
    /// Requests that may wait while one runs; more are answered 429 with Retry-After.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_queue)]
    max_queue: usize,
    /// Connections open at once; more are answered 503 and closed.
    #[arg(long, value_name = "N", default_value_t = Limits::default().max_connections as u64,
          value_parser = clap::value_parser!(u64).range(1..))]
    max_connections: u64,
    /// Largest request body in MiB; larger ones are answered 413.
    #[arg(long, value_name = "MB", default_value_t = (Limits::default().max_body_bytes >> 20) as u64,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_body_mb: u64,
    /// Time a client has to send a request's headers (and an idle connection stays open).
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_timeout)]
    header_timeout: Duration,
    /// Time a client has to send a request's body.
    #[arg(long, value_name = "TIME", default_value = "60s", value_parser = parse_timeout)]
    body_timeout: Duration,
    /// Python interpreters alive at once, all clients together; a conversation past it waits,
    /// then gets an error [default: [python] max_interpreters, 16].
    #[arg(long, value_name = "N")]
    max_interpreters: Option<Interpreters>,
    /// How long Ctrl-C waits for open requests (cancelled first) before exiting; a second
    /// Ctrl-C exits at once.
    #[arg(long, value_name = "TIME", default_value = "10s", value_parser = parse_timeout)]
    shutdown_timeout: Duration,
    /// The model, tools and conversation defaults; a request's own settings win.
    #[command(flatten)]
    config: ConfigArgs,
    /// No progress bars on stderr while the model and tools load, and no line per request
    /// (like vLLM's and llama-server's request logs, one is printed by default).
    #[arg(short, long)]
    quiet: bool,
}

/// `30d`, `12h`, `90m`, `3600s` or seconds.
fn parse_age(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let seconds_per = match unit {
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        "d" => 86400.0,
        other => return Err(format!("unknown unit `{other}` (s, m, h or d)")),
    };
    let number: f64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not a time like 30d, 12h, 90m or 10s"))?;
    Duration::try_from_secs_f64(number * seconds_per).map_err(|e| format!("`{text}`: {e}"))
}

/// A time as [`parse_age`], more than zero.
fn parse_timeout(text: &str) -> Result<Duration, String> {
    let duration = parse_age(text)?;
    if duration.is_zero() {
        return Err("must be more than 0".into());
    }
    Ok(duration)
}

impl ServeArgs {
    /// The response store the flags ask for; `None`: `--no-store`.
    fn store_options(&self) -> Result<Option<StoreOptions>, ServeError> {
        if self.no_store {
            return Ok(None);
        }
        let dir = match &self.store_dir {
            Some(dir) => dir.clone(),
            None => ossa::serve::default_store_dir()?,
        };
        Ok(Some(StoreOptions {
            dir,
            max_bytes: self.store_max_mb.saturating_mul(1 << 20),
            ttl: (!self.store_ttl.is_zero()).then_some(self.store_ttl),
        }))
    }
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let mut settings = args.config.clone().resolve()?;
    if let Some(n) = args.max_interpreters {
        settings.config.python.max_interpreters = Some(n);
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let result = runtime.block_on(async move {
        let progress = ossa::app::load_progress(args.quiet);
        let limits = TurnLimits {
            max_tool_calls: args.max_tool_calls,
            wall_time: None,
        };
        let options = ServeOptions {
            host: args.host.clone(),
            port: args.port,
            served_model_name: args.served_model_name.clone(),
            store: args.store_options()?,
            log_requests: !args.quiet,
            access: AccessPolicy::new(
                args.api_key.clone(),
                args.allowed_host.clone(),
                args.cors_origin.clone(),
            ),
            limits: Limits {
                max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
                max_queue: args.max_queue,
                max_tokens: args
                    .max_tokens_limit
                    .map(|n| usize::try_from(n).unwrap_or(usize::MAX)),
                max_body_bytes: usize::try_from(args.max_body_mb << 20).unwrap_or(usize::MAX),
                header_timeout: args.header_timeout,
                body_timeout: args.body_timeout,
                shutdown_timeout: args.shutdown_timeout,
            },
        };
        // Refused before binding, when the address says so already.
        if let Ok(ip) = args
            .host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
        {
            options
                .access
                .check_exposure(std::net::SocketAddr::new(ip, args.port))?;
        }
        // Bound before the model loads: a port in use is reported before any download, and
        // clients are answered (503, `/health`: loading) while the model loads.
        let bound = ossa::serve::bind(&options).await?;
        eprintln!(
            "ossa serve: bound to http://{}/v1; loading the model (requests are answered 503 \
             until it is ready)",
            bound.local_addr()
        );
        let loader = bound.loader();
        let serving = tokio::spawn(bound.run(shutdown_signal()));
        let load = async {
            wait_for_load_gate().await;
            ossa::app::start_with(settings, progress, limits).await
        };
        tokio::pin!(serving);
        let app = tokio::select! {
            app = load => app?,
            // Stopped (Ctrl-C) while the model loads.
            served = &mut serving => {
                served.context("the server failed")?;
                return Ok(ExitCode::SUCCESS);
            }
        };
        for warning in &app.toolset.warnings {
            eprintln!("warning: {warning}");
        }
        loader.ready(app);
        serving.await.context("the server failed")?;
        Ok(ExitCode::SUCCESS)
    });
    // Generations were cancelled; a thread still busy is not waited for.
    runtime.shutdown_timeout(Duration::from_secs(1));
    result
}

/// Test support: with `OSSA_TEST_LOAD_GATE=PATH`, the model starts loading only once the file
/// PATH exists, so a test sees the server's loading answers for as long as it needs, without
/// timing anything.
async fn wait_for_load_gate() {
    let Some(gate) = std::env::var_os("OSSA_TEST_LOAD_GATE") else {
        return;
    };
    while !std::path::Path::new(&gate).exists() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Resolves on the first Ctrl-C (or SIGTERM); a second Ctrl-C exits at once.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let terminate = async {
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(mut signal) => {
                    signal.recv().await;
                }
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            () = terminate => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
    eprintln!("ossa serve: shutting down (Ctrl-C again to stop at once)");
    tokio::spawn(async {
        if tokio::signal::ctrl_c().await.is_ok() {
            eprintln!("ossa serve: stopped");
            std::process::exit(130);
        }
    });
}
