//! `ossa setup`: fetch and prepare what ossa needs ahead of first use: the Python runtime
//! (fetched with pip, verified, unpacked) and its compiled native code. It also says where the
//! prompt cache lives and how full it is.

use std::process::ExitCode;
use std::time::Instant;

use ossa::config::{Config, process_env, prompt_cache_dir};
use ossa_sandbox::{Sandbox, SandboxConfig, Status};

#[derive(Debug, clap::Args)]
pub struct SetupArgs {
    /// Also compile the fuel-metered interpreter (needed only for fuel limits; another 1-5 min).
    #[arg(long)]
    metered: bool,
}

pub fn run(args: SetupArgs) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let config = SandboxConfig::from_env()?;
    let data_dir = config.runtime.data_dir.clone();
    let sandbox = Sandbox::open(config.clone())?;
    if args.metered {
        Sandbox::open(SandboxConfig {
            metered: true,
            ..config
        })?;
    }
    // A real call proves the install: the interpreter starts and the scientific stack imports.
    let check = "import sys, numpy, pandas, matplotlib\n\
                 print(sys.version.split()[0], 'numpy', numpy.__version__, 'pandas', pandas.__version__, \
                 'matplotlib', matplotlib.__version__)";
    let out = sandbox.run_fresh(check, None, None)?;
    if out.status != Status::Ok {
        anyhow::bail!(
            "the Python runtime is installed but a test call failed ({:?}):\n{}{}",
            out.status,
            out.stdout,
            out.stderr
        );
    }
    let runtime = sandbox.runtime();
    println!("Python runtime ready: {}", out.stdout.trim());
    println!("  module:   {}", runtime.wasm.display());
    println!(
        "  stdlib:   {}",
        runtime.lib_dir.join(&runtime.zip_name).display()
    );
    println!("  data dir: {}", data_dir.display());
    println!("Prompt cache: {}", prompt_cache_line());
    println!("  took {:.1} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

/// Where the prompt cache is, how full, and whether the config file turns it off.
fn prompt_cache_line() -> String {
    let Some(dir) = prompt_cache_dir(&process_env) else {
        return "off: ossa has no data folder (set OSSA_DATA_DIR)".into();
    };
    let config = Config::load(None).unwrap_or_default();
    let section = &config.prompt_cache;
    let bound = section.bound_mb();
    let (files, bytes) = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().ends_with(".kv"))
                .filter_map(|e| e.metadata().ok())
                .fold((0u64, 0u64), |(n, b), m| (n + 1, b + m.len()))
        })
        .unwrap_or((0, 0));
    let state = if section.enabled == Some(false) {
        " (off: [prompt_cache] enabled = false)"
    } else {
        ""
    };
    format!(
        "{}{state}\n  {:.1} MiB in {files} files, bound {bound} MiB ([prompt_cache] max_mb); \
         --no-prompt-cache turns it off for one run",
        dir.display(),
        bytes as f64 / (1u64 << 20) as f64,
    )
}
