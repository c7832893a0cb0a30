//! `ossa serve`: the OpenAI API (Responses, Chat Completions, Completions) on the local model.

use std::process::ExitCode;

use anyhow::Context;
use ossa::app::TurnLimits;
use ossa::config::ConfigArgs;
use ossa::sandbox::Progress;
use ossa::serve::ServeOptions;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (0.0.0.0 for every interface).
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Port to listen on (0: any free port, printed at start).
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// The model name clients see and send [default: the --model setting, a local folder by
    /// its name].
    #[arg(long, value_name = "NAME")]
    served_model_name: Option<String>,
    /// Where stored responses (`store: true`) are kept [default: `responses` in ossa's data
    /// folder, $OSSA_DATA_DIR or ~/.local/share/ossa].
    #[arg(long, value_name = "DIR")]
    store_dir: Option<std::path::PathBuf>,
    /// Most built-in tool calls one request may make.
    #[arg(long, value_name = "N", default_value_t = 32)]
    max_tool_calls: usize,
    /// The model, tools and conversation defaults; a request's own settings win.
    #[command(flatten)]
    config: ConfigArgs,
    /// No progress bars on stderr while the model and tools load.
    #[arg(short, long)]
    quiet: bool,
}

pub fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let settings = args.config.clone().resolve()?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let progress = if args.quiet {
            Progress::Quiet
        } else {
            Progress::Stderr
        };
        let limits = TurnLimits {
            max_tool_calls: args.max_tool_calls,
            wall_time: None,
        };
        let app = ossa::app::start_with(settings, progress, limits).await?;
        for warning in &app.toolset.warnings {
            eprintln!("warning: {warning}");
        }
        let options = ServeOptions {
            host: args.host.clone(),
            port: args.port,
            served_model_name: args.served_model_name.clone(),
            store_dir: args.store_dir.clone(),
        };
        let shutdown = async {
            let _ = tokio::signal::ctrl_c().await;
            eprintln!("ossa serve: shutting down");
        };
        ossa::serve::serve(app, &options, shutdown).await?;
        Ok(ExitCode::SUCCESS)
    })
}
