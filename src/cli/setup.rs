//! `ossa setup`: fetch and prepare what ossa needs ahead of first use: the Python runtime
//! (fetched with pip, verified, unpacked) and its compiled native code.

use std::process::ExitCode;
use std::time::Instant;

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
    println!("  took {:.1} s", started.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}
