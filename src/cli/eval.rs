//! `ossa eval kl`: how far a fast dtype's next-token distributions are from the reference
//! dtype's (f32) on a text, teacher-forced, as `llama-perplexity --kl-divergence` reports for
//! llama.cpp's quantizations: KL divergence, top-1 agreement, max |Δlogit|, and the MoE routing
//! decisions that differ. The figures come from `ossa_engine::eval`, which the engine's
//! accuracy test uses too.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, bail};
use ossa_engine::eval::{Comparison, Pinning, teacher_forced};
use ossa_engine::{DType, Engine, Isa, LoadOptions};
use serde_json::{Value, json};

#[derive(Debug, clap::Subcommand)]
pub enum EvalCommand {
    /// KL divergence, top-1 agreement and routing differences of a dtype against f32.
    Kl(KlArgs),
}

#[derive(Debug, clap::Args)]
pub struct KlArgs {
    /// A model name (gpt-oss:20b), a Hugging Face id, or a model directory.
    #[arg(long, default_value = ossa::config::DEFAULT_MODEL)]
    model: String,
    /// The dtype measured: q8 or bf16.
    #[arg(long, default_value = "q8")]
    dtype: DType,
    /// The dtype it is measured against.
    #[arg(long, default_value = "f32")]
    reference: DType,
    /// A UTF-8 text file, tokenized as plain text. Without it, the built-in text: the
    /// harmony conversations of the tiny trained agent's scenarios (o200k_harmony ids).
    #[arg(long)]
    text: Option<PathBuf>,
    /// Instruction set of the int8 kernels (scalar, avx2, avxvnni, avx512vnni...), or `all`
    /// for one measurement per instruction set this CPU has. Default: the best one.
    #[arg(long)]
    isa: Option<String>,
    /// Tokens per chunk; each chunk starts from an empty KV cache.
    #[arg(long, default_value_t = 512)]
    context: usize,
    /// Tokens of each chunk run in one forward call (default: half the chunk); the rest go
    /// one token at a time through the KV cache, as in generation.
    #[arg(long)]
    prefill: Option<usize>,
    /// Stop after this many chunks.
    #[arg(long)]
    chunks: Option<usize>,
    /// Route the measured dtype with the reference's experts: rounding alone, without the
    /// knock-on effect of router near-ties that flip.
    #[arg(long)]
    pin_routing: bool,
    /// Compute threads per engine (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Also print every position.
    #[arg(long)]
    per_position: bool,
    /// Print one JSON object per instruction set instead of text.
    #[arg(long)]
    json: bool,
}

/// The built-in text: the tiny agent's scenarios, each a prompt and its first reply.
const AGENT_SCENARIOS: &str =
    include_str!("../../tests/fixtures/gpt-oss-tiny-agent/scenarios.json");

pub fn run(command: EvalCommand) -> anyhow::Result<ExitCode> {
    match command {
        EvalCommand::Kl(args) => run_kl(args),
    }
}

/// Each scenario's prompt followed by the tokens of its first generation call.
fn builtin_sequences() -> anyhow::Result<Vec<Vec<u32>>> {
    let cases: Vec<Value> = serde_json::from_str(AGENT_SCENARIOS).context("built-in scenarios")?;
    cases
        .iter()
        .map(|case| {
            let ids = |v: &Value| -> Option<Vec<u32>> {
                v.as_array()?
                    .iter()
                    .map(|id| id.as_u64().and_then(|id| u32::try_from(id).ok()))
                    .collect()
            };
            let mut tokens = ids(&case["prompt_tokens"]).context("scenario prompt_tokens")?;
            tokens.extend(ids(&case["generated_tokens"][0]).context("scenario generated_tokens")?);
            Ok(tokens)
        })
        .collect()
}

fn text_sequence(engine: &Engine, path: &Path) -> anyhow::Result<Vec<u32>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the text file {}", path.display()))?;
    let tokenizer = engine.tokenizer().with_context(|| {
        format!(
            "{} has no tokenizer for its {}-id vocabulary: --text needs one",
            engine.model_dir().display(),
            engine.config().vocab_size
        )
    })?;
    let tokens = tokenizer
        .encode_ordinary(&text)
        .with_context(|| format!("tokenizing {}", path.display()))?;
    if tokens.is_empty() {
        bail!("{} is empty: nothing to compare", path.display());
    }
    Ok(tokens)
}

/// The instruction sets `--isa` asks for: the detected one (`None`), one by name, or `all`
/// that this CPU runs (AMX among them when the CPU and the kernel allow it).
fn isas(wanted: Option<&str>) -> anyhow::Result<Vec<Option<Isa>>> {
    Ok(match wanted {
        None => vec![None],
        Some("all") => Isa::available().into_iter().map(Some).collect(),
        Some(name) => {
            vec![Some(Isa::named(name).map_err(|e| {
                anyhow::anyhow!("--isa {name}: {e} (or all)")
            })?)]
        }
    })
}

fn run_kl(args: KlArgs) -> anyhow::Result<ExitCode> {
    if args.dtype == args.reference {
        bail!(
            "--dtype and --reference are both {:?}: nothing to compare",
            args.dtype
        );
    }
    if args.context == 0 {
        bail!("--context must be at least 1");
    }
    let isas = isas(args.isa.as_deref())?;
    let progress: std::sync::Arc<dyn ossa_engine::hub::DownloadProgress> =
        std::sync::Arc::new(ossa::app::DownloadBars::default());
    let dir = ossa_engine::hub::resolve_model(&args.model, Some(progress))?;
    let load = |dtype: DType| -> anyhow::Result<Engine> {
        Engine::load(
            &dir,
            &LoadOptions {
                dtype,
                threads: args.threads,
            },
        )
        .with_context(|| format!("loading {} in {dtype:?}", dir.display()))
    };
    let mut reference = load(args.reference)?;
    let mut fast = load(args.dtype)?;
    let sequences = match &args.text {
        Some(path) => vec![text_sequence(&reference, path)?],
        None => {
            let vocab = reference.config().vocab_size;
            let sequences = builtin_sequences()?;
            if let Some(bad) = sequences.iter().flatten().find(|&&id| id as usize >= vocab) {
                bail!(
                    "the built-in text is o200k_harmony token ids (up to {bad}), beyond this model's {vocab}-id vocabulary: give --text"
                );
            }
            sequences
        }
    };
    let mut chunks: Vec<&[u32]> = sequences
        .iter()
        .flat_map(|s| s.chunks(args.context))
        .collect();
    if let Some(n) = args.chunks {
        chunks.truncate(n);
    }
    if chunks.is_empty() {
        bail!("--chunks 0: nothing to compare");
    }
    let pinning = if args.pin_routing {
        Pinning::Reference
    } else {
        Pinning::Own
    };
    let mut stdout = std::io::stdout().lock();
    for isa in isas {
        if let Some(isa) = isa {
            fast.set_isa(isa);
        }
        let isa_name = fast.model().isa().name();
        let mut total = Comparison::default();
        for (i, chunk) in chunks.iter().enumerate() {
            let prefill = args.prefill.unwrap_or(chunk.len() / 2).max(1);
            let c = teacher_forced(&mut reference, &mut fast, chunk, prefill, pinning)
                .with_context(|| format!("chunk {i}"))?;
            if !args.json {
                eprintln!(
                    "chunk {}/{}: {} positions, mean KL {:.3e}",
                    i + 1,
                    chunks.len(),
                    c.positions.len(),
                    c.summary().mean_kl
                );
            }
            total.extend(c);
        }
        if args.json {
            writeln!(stdout, "{}", report_json(&args, &dir, isa_name, &total))?;
        } else {
            write!(stdout, "{}", report_text(&args, &dir, isa_name, &total))?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn report_json(args: &KlArgs, dir: &Path, isa: &str, c: &Comparison) -> Value {
    let s = c.summary();
    let mut report = json!({
        "model": dir.display().to_string(),
        "dtype": format!("{:?}", args.dtype).to_lowercase(),
        "isa": isa,
        "reference": format!("{:?}", args.reference).to_lowercase(),
        "pinned_routing": args.pin_routing,
        "positions": s.positions,
        "cached_positions": s.cached_positions,
        "kl": {"mean": s.mean_kl, "median": s.median_kl, "p99": s.p99_kl, "max": s.max_kl},
        "top1_agreement": s.top1_agreement,
        "max_abs_dlogit": s.max_abs_diff,
        "routing_decisions": s.routing_decisions,
        "routing_differ": s.flips,
        "flips": c.flips.iter().map(|f| json!({
            "layer": f.layer,
            "position": f.position,
            "reference_margin": f.reference_margin,
            "knock_on": f.knock_on,
        })).collect::<Vec<_>>(),
        // A layer with no clean position has no rounding-only figure: null, not 0.
        "router_input_error": c.layers.iter().map(|l| (l.clean_positions > 0).then_some(l.router_input_error_rms)).collect::<Vec<_>>(),
    });
    if args.per_position {
        report["per_position"] = c
            .positions
            .iter()
            .map(|p| {
                json!({
                    "position": p.position,
                    "cached": p.cached,
                    "kl": p.kl,
                    "top1_equal": p.top1_equal,
                    "max_abs_dlogit": p.max_abs_diff,
                })
            })
            .collect();
    }
    report
}

fn report_text(args: &KlArgs, dir: &Path, isa: &str, c: &Comparison) -> String {
    let s = c.summary();
    let mut out = String::new();
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!(
        "{}: {:?} ({isa}) against {:?}{}, {} positions ({} one-token cached steps)",
        dir.display(),
        args.dtype,
        args.reference,
        if args.pin_routing {
            ", routing pinned to the reference's"
        } else {
            ""
        },
        s.positions,
        s.cached_positions
    ));
    line(format!(
        "  KL divergence (nats): mean {:.4e}, median {:.4e}, p99 {:.4e}, max {:.4e}",
        s.mean_kl, s.median_kl, s.p99_kl, s.max_kl
    ));
    line(format!(
        "  top-1 agreement: {:.2} %",
        100.0 * s.top1_agreement
    ));
    line(format!("  max |Δlogit|: {:.4}", s.max_abs_diff));
    let mut first: Vec<f32> = c
        .flips
        .iter()
        .filter(|f| !f.knock_on)
        .map(|f| f.reference_margin)
        .collect();
    first.sort_by(f32::total_cmp);
    line(format!(
        "  routing: {} of {} (layer, token) decisions differ ({:.3} %); {} knock-on; {:?} margins of the others: [{}]",
        s.flips,
        s.routing_decisions,
        100.0 * s.flips as f64 / s.routing_decisions.max(1) as f64,
        s.flips - s.first_flips,
        args.reference,
        first
            .iter()
            .map(|m| format!("{m:.3}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    line(format!(
        "  router input relative error per layer (RMS): [{}]",
        c.layers
            .iter()
            .map(|l| if l.clean_positions > 0 {
                format!("{:.1e}", l.router_input_error_rms)
            } else {
                "–".to_string()
            })
            .collect::<Vec<_>>()
            .join(" ")
    ));
    if args.per_position {
        for p in &c.positions {
            line(format!(
                "  position {:>6}{} KL {:.3e} top-1 {} max|Δlogit| {:.4}",
                p.position,
                if p.cached { " (cached)" } else { "" },
                p.kl,
                if p.top1_equal { "equal" } else { "DIFFERS" },
                p.max_abs_diff
            ));
        }
    }
    out
}
