//! `ossa generate` (raw tokens in, raw tokens out: a look inside the engine) and `ossa bench`
//! (load time, prefill and decode speed, peak memory).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ossa_engine::hub::DownloadProgress;
use ossa_engine::{DType, Engine, FinishReason, GenerateParams, LoadOptions, SamplingParams};

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    /// Model directory, or a Hugging Face id such as openai/gpt-oss-20b (downloaded once into
    /// the Hugging Face cache).
    #[arg(long)]
    model: String,
    /// Prompt as comma-separated token ids.
    #[arg(
        long,
        value_delimiter = ',',
        required_unless_present = "prompt",
        conflicts_with = "prompt"
    )]
    prompt_tokens: Option<Vec<u32>>,
    /// Prompt text, tokenized as is (needs --raw: no chat format is applied).
    #[arg(long, requires = "raw")]
    prompt: Option<String>,
    /// Use --prompt verbatim, without rendering a conversation.
    #[arg(long)]
    raw: bool,
    #[arg(long, default_value_t = 64)]
    max_tokens: usize,
    /// 0 = greedy.
    #[arg(long, default_value_t = 0.0)]
    temperature: f32,
    #[arg(long, default_value_t = 1.0)]
    top_p: f32,
    /// 0 = off.
    #[arg(long, default_value_t = 0)]
    top_k: usize,
    #[arg(long)]
    seed: Option<u64>,
    /// Extra stop token ids (the config's EOS ids are always included unless --ignore-eos).
    #[arg(long, value_delimiter = ',')]
    stop_tokens: Vec<u32>,
    #[arg(long)]
    ignore_eos: bool,
    /// Compute threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// f32 or bf16 activations.
    #[arg(long, default_value = "f32")]
    dtype: DType,
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Model directory or Hugging Face id.
    #[arg(long)]
    model: String,
    /// Compute threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Length of the (random) prompt.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens to generate after it.
    #[arg(long, default_value_t = 128)]
    gen_tokens: usize,
    #[arg(long, default_value = "f32")]
    dtype: DType,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn load(model: &str, dtype: DType, threads: Option<usize>) -> anyhow::Result<(Engine, Duration)> {
    let dir = resolve_model(model)?;
    let started = Instant::now();
    let engine = Engine::load(&dir, &LoadOptions { dtype, threads })
        .with_context(|| format!("loading {}", dir.display()))?;
    Ok((engine, started.elapsed()))
}

/// A local directory as is; a Hugging Face id is downloaded once into the HF cache, with a
/// progress bar per file.
fn resolve_model(model: &str) -> anyhow::Result<PathBuf> {
    let progress: Arc<dyn DownloadProgress> = Arc::new(ossa::app::DownloadBars::default());
    Ok(ossa_engine::hub::resolve_model(model, Some(progress))?)
}

pub fn run_generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let (mut engine, load_time) = load(&args.model, args.dtype, args.threads)?;
    let tokenizer = engine.tokenizer().cloned();
    let prompt: Vec<u32> = match (&args.prompt_tokens, &args.prompt) {
        (Some(ids), _) => ids.clone(),
        (None, Some(text)) => {
            let tokenizer = tokenizer
                .as_ref()
                .context("this model has no tokenizer: use --prompt-tokens")?;
            tokenizer
                .encode(text, true)
                .context("tokenizing --prompt")?
        }
        (None, None) => bail!("give --prompt-tokens or --prompt"),
    };
    let mut stop_tokens = args.stop_tokens.clone();
    if !args.ignore_eos {
        stop_tokens.extend(engine.config().eos_token_ids());
    }
    let params = GenerateParams {
        sampling: SamplingParams {
            temperature: args.temperature,
            top_p: args.top_p,
            top_k: args.top_k,
            seed: args.seed,
        },
        max_tokens: args.max_tokens,
        stop_tokens,
        cancel: None,
    };
    eprintln!(
        "loaded {} in {:.2}s ({} threads)",
        engine.model_dir().display(),
        load_time.as_secs_f64(),
        engine.threads()
    );
    let mut decoder = tokenizer.as_ref().map(|t| t.stream_decoder());
    let mut generation = engine.generate(&prompt, &params)?;
    let mut stdout = std::io::stdout().lock();
    let mut decode_time = Duration::ZERO;
    let mut count = 0usize;
    for item in generation.by_ref() {
        let token = item?;
        if token.index > 0 {
            decode_time += token.elapsed;
        }
        count += 1;
        match decoder.as_mut() {
            Some(d) => {
                let piece = d.push(token.token).unwrap_or_default();
                writeln!(stdout, "{}\t{}\t{:?}", token.index, token.token, piece)?;
            }
            None => writeln!(stdout, "{}\t{}", token.index, token.token)?,
        }
        stdout.flush()?;
    }
    let finish = generation.finish_reason();
    let prefill = generation.prefill_stats();
    drop(generation);
    if let Some(p) = prefill {
        eprintln!(
            "prompt: {} tokens ({} reused from cache), prefill {:.2} tok/s",
            p.cache.prompt_tokens,
            p.cache.reused_tokens,
            p.cache.computed_tokens as f64 / p.duration.as_secs_f64().max(1e-9)
        );
    }
    if count > 1 {
        eprintln!(
            "generated {count} tokens, decode {:.2} tok/s",
            (count - 1) as f64 / decode_time.as_secs_f64().max(1e-9)
        );
    }
    eprintln!(
        "finish: {}",
        match finish {
            Some(FinishReason::Stop(id)) => format!("stop token {id}"),
            Some(FinishReason::MaxTokens) => "max tokens".into(),
            Some(FinishReason::Cancelled) => "cancelled".into(),
            Some(FinishReason::Error) | None => "error".into(),
        }
    );
    Ok(ExitCode::SUCCESS)
}

/// Peak resident set size of this process (VmHWM), in bytes.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn loadavg() -> Option<String> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

pub fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.prompt_tokens == 0 || args.gen_tokens < 2 {
        bail!("--prompt-tokens must be at least 1 and --gen-tokens at least 2");
    }
    let load_avg_before = loadavg();
    let (mut engine, load_time) = load(&args.model, args.dtype, args.threads)?;
    let vocab = engine.config().vocab_size as u64;
    // A fixed pseudo-random prompt: speed does not depend on the ids, repeatability does.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let prompt: Vec<u32> = (0..args.prompt_tokens)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % vocab.min(199_998)) as u32
        })
        .collect();
    let params = GenerateParams {
        max_tokens: args.gen_tokens,
        ..GenerateParams::default()
    };
    let mut generation = engine.generate(&prompt, &params)?;
    let mut decode_time = Duration::ZERO;
    let mut decoded = 0usize;
    for item in generation.by_ref() {
        let token = item?;
        if token.index > 0 {
            decode_time += token.elapsed;
            decoded += 1;
        }
    }
    let prefill = generation.prefill_stats().context("no prefill happened")?;
    drop(generation);
    let prefill_tok_s = args.prompt_tokens as f64 / prefill.duration.as_secs_f64();
    let decode_tok_s = decoded as f64 / decode_time.as_secs_f64();
    let peak = peak_rss_bytes();
    let report = serde_json::json!({
        "model": engine.model_dir().display().to_string(),
        "threads": engine.threads(),
        "dtype": format!("{:?}", args.dtype).to_lowercase(),
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "load_s": load_time.as_secs_f64(),
        "prefill_s": prefill.duration.as_secs_f64(),
        "prefill_tok_s": prefill_tok_s,
        "decode_s": decode_time.as_secs_f64(),
        "decode_tok_s": decode_tok_s,
        "peak_rss_bytes": peak,
        "kv_cache_bytes": engine.cache_memory_bytes(),
        "loadavg_before": load_avg_before,
        "loadavg_after": loadavg(),
    });
    if args.json {
        println!("{report}");
    } else {
        println!("model       {}", engine.model_dir().display());
        println!("threads     {}", engine.threads());
        println!("load        {:.2} s", load_time.as_secs_f64());
        println!(
            "prefill     {:.2} tok/s ({} tokens in {:.2} s)",
            prefill_tok_s,
            args.prompt_tokens,
            prefill.duration.as_secs_f64()
        );
        println!(
            "decode      {:.2} tok/s ({} tokens in {:.2} s)",
            decode_tok_s,
            decoded,
            decode_time.as_secs_f64()
        );
        match peak {
            Some(p) => println!("peak RSS    {:.2} GiB", p as f64 / (1u64 << 30) as f64),
            None => println!("peak RSS    unknown (no /proc)"),
        }
    }
    Ok(ExitCode::SUCCESS)
}
