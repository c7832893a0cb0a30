//! `ossa generate` (raw tokens in, raw tokens out: a look inside the engine) and `ossa bench`
//! (load time, prefill and decode speed, peak memory).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use ossa_engine::hub::DownloadProgress;
use ossa_engine::kernels::bandwidth::Bandwidth;
use ossa_engine::{DType, Engine, FinishReason, GenerateParams, LoadOptions, SamplingParams};

/// The engine `generate` and `bench` load: which model, at what precision, on how many
/// threads.
#[derive(Debug, clap::Args)]
struct EngineArgs {
    /// Model directory, a name (gpt-oss:20b, gpt-oss:120b) or a Hugging Face id (downloaded
    /// once into the Hugging Face cache).
    #[arg(long, default_value = ossa::config::DEFAULT_MODEL)]
    model: String,
    /// Compute threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// q8 (int8 kernels, the fast mode), bf16, or f32 (the reference's numbers).
    #[arg(long, default_value = "q8")]
    dtype: DType,
}

#[derive(Debug, clap::Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    engine: EngineArgs,
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
}

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    #[command(flatten)]
    engine: EngineArgs,
    /// Length of the (random) prompt.
    #[arg(long, default_value_t = 512)]
    prompt_tokens: usize,
    /// Tokens to generate after it.
    #[arg(long, default_value_t = 32)]
    gen_tokens: usize,
    /// Runs of prefill + decode after an untimed warm-up run; figures are medians over runs.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Also decode at this context depth (the cache filled to it first); 0 skips it.
    #[arg(long, default_value_t = 2048)]
    depth: usize,
    /// Also prefill a prompt of this many tokens from an empty cache, then --prompt-tokens
    /// more after it (prefill at depth), once each; 0 skips both.
    #[arg(long, default_value_t = 4096)]
    long_prompt: usize,
    /// GiB read per pass when measuring the machine's read bandwidth (median of
    /// --bandwidth-passes passes, all threads, before the model loads), which gives the decode
    /// floor; 0 skips it.
    #[arg(long, default_value_t = 1.0)]
    bandwidth_gib: f64,
    /// Passes of the bandwidth measurement (the median is the yardstick, min and max show
    /// how much the machine moved).
    #[arg(long, default_value_t = 15)]
    bandwidth_passes: usize,
    /// Print per-op times of one decode step and of the prefill.
    #[arg(long)]
    profile: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
    /// Skip the first-token measurement (two fresh processes, each loading the model): the
    /// ttft_* and prompt_cache_* keys are left out.
    #[arg(long)]
    no_ttft: bool,
    /// Internal: run as the child process `ossa bench` times the first token of (prompt
    /// cache in this folder).
    #[arg(long, hide = true)]
    ttft_child: Option<PathBuf>,
}

impl EngineArgs {
    /// The engine, and how long loading it took.
    fn load(&self) -> anyhow::Result<(Engine, Duration)> {
        let dir = resolve_model(&self.model)?;
        let started = Instant::now();
        let options = LoadOptions {
            dtype: self.dtype,
            threads: self.threads,
        };
        let engine =
            Engine::load(&dir, &options).with_context(|| format!("loading {}", dir.display()))?;
        Ok((engine, started.elapsed()))
    }
}

/// A local directory as is; a Hugging Face id is downloaded once into the HF cache, with a
/// progress bar per file.
fn resolve_model(model: &str) -> anyhow::Result<PathBuf> {
    let progress: Arc<dyn DownloadProgress> = Arc::new(ossa::app::DownloadBars::default());
    Ok(ossa_engine::hub::resolve_model(model, Some(progress))?)
}

pub fn run_generate(args: GenerateArgs) -> anyhow::Result<ExitCode> {
    let (mut engine, load_time) = args.engine.load()?;
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
        mask: None,
        logprobs: None,
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

/// One prefill + decode run: prefill seconds, decode tokens and seconds.
struct RunFigures {
    prefill_s: f64,
    decoded: usize,
    decode_s: f64,
    /// Each decoded token's time, in order.
    token_s: Vec<f64>,
}

impl RunFigures {
    /// Decode tok/s over each quarter of the decoded tokens, in order: shows whether the
    /// speed drifts as the context grows or the run goes on.
    fn quarter_rates(&self) -> Vec<f64> {
        let n = self.token_s.len();
        (0..4)
            .map(|q| {
                let part = &self.token_s[q * n / 4..(q + 1) * n / 4];
                part.len() as f64 / part.iter().sum::<f64>()
            })
            .collect()
    }
}

fn bench_run(engine: &mut Engine, prompt: &[u32], gen_tokens: usize) -> anyhow::Result<RunFigures> {
    let params = GenerateParams {
        max_tokens: gen_tokens,
        ..GenerateParams::default()
    };
    let mut generation = engine.generate(prompt, &params)?;
    let mut token_s = Vec::with_capacity(gen_tokens);
    for item in generation.by_ref() {
        let token = item?;
        if token.index > 0 {
            token_s.push(token.elapsed.as_secs_f64());
        }
    }
    let prefill = generation.prefill_stats().context("no prefill happened")?;
    Ok(RunFigures {
        prefill_s: prefill.duration.as_secs_f64(),
        decoded: token_s.len(),
        decode_s: token_s.iter().sum(),
        token_s,
    })
}

/// Bandwidth passes before each depth-0 decode run (see `run_bench`).
const PASSES_BEFORE_EACH_DECODE_RUN: usize = 3;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// KV cache bytes one decode step reads at `depth` (sliding layers read only their window).
fn kv_read_bytes(engine: &Engine, depth: usize, dtype: DType) -> u64 {
    let c = engine.config();
    let elem = if dtype == DType::F32 { 4 } else { 2 };
    let per_position = (2 * c.num_key_value_heads * c.head_dim * elem) as u64;
    c.layer_types()
        .iter()
        .map(|kind| {
            let positions = match kind {
                ossa_engine::config::LayerType::SlidingAttention => depth.min(c.sliding_window),
                _ => depth,
            };
            positions as u64 * per_position
        })
        .sum()
}

/// `args.runs` timed runs of `prompt`, each from an empty cache and after `before_each`; with
/// `--profile` the first one is profiled, and its profile printed under `label` (unless
/// `--json`).
fn timed_runs(
    engine: &mut Engine,
    prompt: &[u32],
    args: &BenchArgs,
    label: impl Fn(&RunFigures) -> String,
    mut before_each: impl FnMut(&Engine),
) -> anyhow::Result<Vec<RunFigures>> {
    (0..args.runs)
        .map(|run| {
            before_each(engine);
            engine.clear_cache();
            let profiled = args.profile && run == 0;
            if profiled {
                engine.set_profiling(true);
            }
            let r = bench_run(engine, prompt, args.gen_tokens)?;
            if profiled && !args.json {
                print_profile(&label(&r), engine);
                engine.set_profiling(false);
            }
            Ok(r)
        })
        .collect()
}

fn print_profile(label: &str, engine: &Engine) {
    let Some(profile) = engine.model().take_profile() else {
        return;
    };
    let total: f64 = profile.ops.iter().map(|(_, d)| d.as_secs_f64()).sum();
    println!(
        "profile     {label}: {} forward call(s), {} token(s), {:.3} s",
        profile.forward_calls, profile.tokens, total
    );
    let mut ops = profile.ops.clone();
    ops.sort_by_key(|op| std::cmp::Reverse(op.1));
    for (name, d) in ops {
        println!(
            "              {:<12} {:>9.2} ms {:>5.1} %",
            name,
            d.as_secs_f64() * 1e3 / profile.forward_calls.max(1) as f64,
            100.0 * d.as_secs_f64() / total.max(1e-12)
        );
    }
}

pub fn run_bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    if let Some(cache_dir) = &args.ttft_child {
        return ttft_child(&args, cache_dir);
    }
    if args.prompt_tokens == 0 || args.gen_tokens < 2 || args.runs == 0 {
        bail!("--prompt-tokens and --runs must be at least 1 and --gen-tokens at least 2");
    }
    // A mistyped --model is reported now, not after the bandwidth passes.
    ossa_engine::hub::parse_model(&args.engine.model)?;
    let load_avg_before = loadavg();
    // Before the model loads, so the buffer neither competes with it for memory nor counts
    // in its peak RSS.
    let read_bandwidth = (args.bandwidth_gib > 0.0).then(|| {
        let threads = args
            .engine
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let bytes = (args.bandwidth_gib * (1u64 << 30) as f64) as usize;
        ossa_engine::kernels::bandwidth::read_bandwidth(bytes, threads, args.bandwidth_passes)
    });
    let (mut engine, load_time) = args.engine.load()?;
    let vocab = engine.config().vocab_size as u64;
    // A fixed pseudo-random prompt: speed does not depend on the ids, repeatability does.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut random_tokens = |n: usize| -> Vec<u32> {
        (0..n)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state % vocab.min(199_998)) as u32
            })
            .collect()
    };
    let prompt = random_tokens(args.prompt_tokens);
    let isa = engine.model().isa();
    let available: Vec<&str> = ossa_engine::Isa::available()
        .iter()
        .map(|i| i.name())
        .collect();

    // A warm-up run first, untimed, as llama-bench does (the whole prompt, then one token):
    // the first pass over the weights faults in every page of the mapping (read from disk
    // if another program's files pushed them out of the page cache) and lets the allocator
    // reach its working set, which says nothing about the engine's speed.
    engine.clear_cache();
    bench_run(&mut engine, &prompt, 2)?;
    // Prefill of the prompt, then decode right after it.
    let mut prefill = Vec::new();
    let mut decode = Vec::new();
    for r in timed_runs(
        &mut engine,
        &prompt,
        &args,
        |_| "prefill + decode".into(),
        |_| (),
    )? {
        prefill.push(args.prompt_tokens as f64 / r.prefill_s);
        decode.push(r.decoded as f64 / r.decode_s);
    }
    // Decode at depth ~0: a one-token prompt.
    let mut decode0 = Vec::new();
    let mut decode0_quarters: Vec<Vec<f64>> = vec![Vec::new(); 4];
    let first = [prompt[0]];
    // The read bandwidth of the same minutes as these runs, the floor that judges them: on a
    // shared or virtual machine it moves by a fifth within minutes, so the passes before the
    // model loads (above) and those right after the runs (below) can disagree. A few passes
    // before each run and the ones after, pooled. A quarter of the buffer (at most), so the
    // model's resident pages stay.
    let pass_bytes = (args.bandwidth_gib.min(0.25) * (1u64 << 30) as f64) as usize;
    let mut rates_during = Vec::new();
    let runs = timed_runs(
        &mut engine,
        &first,
        &args,
        |r| format!("decode at depth 0 ({} steps + 1-token prefill)", r.decoded),
        |engine| {
            if args.bandwidth_gib > 0.0 {
                rates_during.extend(ossa_engine::kernels::bandwidth::read_rates(
                    pass_bytes,
                    engine.threads(),
                    PASSES_BEFORE_EACH_DECODE_RUN,
                ));
            }
        },
    )?;
    for r in runs {
        decode0.push(r.decoded as f64 / r.decode_s);
        for (runs, rate) in decode0_quarters.iter_mut().zip(r.quarter_rates()) {
            runs.push(rate);
        }
    }
    // The read bandwidth again, right after the decode runs.
    let read_bandwidth_after = (args.bandwidth_gib > 0.0)
        .then(|| {
            let rates =
                ossa_engine::kernels::bandwidth::read_rates(pass_bytes, engine.threads(), 5);
            rates_during.extend(&rates);
            Bandwidth::of_rates(rates)
        })
        .flatten();
    let read_bandwidth_during = Bandwidth::of_rates(rates_during);
    // Decode at depth: the prompt extended to `depth` tokens (the first prompt is reused
    // from the cache where it still matches).
    let mut decode_deep = None;
    if args.depth > 0 {
        engine.clear_cache();
        let mut deep = prompt.clone();
        deep.truncate(args.depth);
        let more = args.depth - deep.len();
        deep.extend(random_tokens(more));
        let r = bench_run(&mut engine, &deep, args.gen_tokens)?;
        decode_deep = Some(r.decoded as f64 / r.decode_s);
    }
    // A long prompt from an empty cache, then --prompt-tokens more after it.
    let mut prefill_long = None;
    let mut prefill_after_depth = None;
    if args.long_prompt > 0 {
        engine.clear_cache();
        let long = random_tokens(args.long_prompt);
        if args.profile {
            engine.set_profiling(true);
        }
        let r = bench_run(&mut engine, &long, 1)?;
        if args.profile && !args.json {
            print_profile(&format!("prefill of {} tokens", long.len()), &engine);
        }
        prefill_long = Some(long.len() as f64 / r.prefill_s);
        let mut after = long.clone();
        after.extend(random_tokens(args.prompt_tokens));
        let r = bench_run(&mut engine, &after, 1)?;
        if args.profile && !args.json {
            print_profile(
                &format!(
                    "prefill of {} tokens after {}",
                    args.prompt_tokens,
                    long.len()
                ),
                &engine,
            );
            engine.set_profiling(false);
        }
        let stats = engine.cache_stats().context("no prefill happened")?;
        if stats.reused_tokens != long.len() {
            bail!(
                "the prompt at depth reused {} cached tokens, not {}",
                stats.reused_tokens,
                long.len()
            );
        }
        prefill_after_depth = Some(stats.computed_tokens as f64 / r.prefill_s);
    }
    let peak = peak_rss_bytes();
    let weight_bytes = engine.model().decode_weight_bytes();
    let bytes_at = |depth: usize| weight_bytes + kv_read_bytes(&engine, depth, args.engine.dtype);
    let prefill_tok_s = median(prefill.clone());
    let decode_tok_s = median(decode.clone());
    let decode0_tok_s = median(decode0.clone());
    let decode0_quarters: Vec<f64> = decode0_quarters.into_iter().map(median).collect();
    let bytes0 = bytes_at(args.gen_tokens / 2);
    let bytes_deep = bytes_at(args.depth + args.gen_tokens / 2);
    // Every weight a token needs read once at the measured bandwidth.
    let decode_floor = read_bandwidth.map(|b| b.median / bytes0 as f64);
    let decode_floor_after = read_bandwidth_after.map(|b| b.median / bytes0 as f64);
    let decode_floor_during = read_bandwidth_during.map(|b| b.median / bytes0 as f64);
    let report = serde_json::json!({
        "model": engine.model_dir().display().to_string(),
        "threads": engine.threads(),
        "dtype": format!("{:?}", args.engine.dtype).to_lowercase(),
        "isa": isa.name(),
        "isa_available": available,
        "prompt_tokens": args.prompt_tokens,
        "gen_tokens": args.gen_tokens,
        "runs": args.runs,
        "load_s": load_time.as_secs_f64(),
        "prefill_tok_s": prefill_tok_s,
        "prefill_tok_s_runs": prefill,
        "decode_after_prompt_tok_s": decode_tok_s,
        "decode_after_prompt_tok_s_runs": decode,
        "decode_depth0_tok_s": decode0_tok_s,
        "decode_depth0_tok_s_runs": decode0,
        "decode_depth0_tok_s_by_quarter": decode0_quarters,
        "decode_depth": args.depth,
        "decode_at_depth_tok_s": decode_deep,
        "decode_bytes_per_token_depth0": bytes0,
        "decode_gb_s_depth0": bytes0 as f64 * decode0_tok_s / 1e9,
        "decode_bytes_per_token_at_depth": (args.depth > 0).then_some(bytes_deep),
        "decode_gb_s_at_depth": decode_deep.map(|d| bytes_deep as f64 * d / 1e9),
        "prefill_long_tokens": args.long_prompt,
        "prefill_long_tok_s": prefill_long,
        "prefill_after_depth_tok_s": prefill_after_depth,
        "read_bandwidth_gb_s": read_bandwidth.map(|b| b.median / 1e9),
        "read_bandwidth_gb_s_min": read_bandwidth.map(|b| b.min / 1e9),
        "read_bandwidth_gb_s_max": read_bandwidth.map(|b| b.max / 1e9),
        "read_bandwidth_passes": read_bandwidth.map(|b| b.passes),
        "decode_floor_tok_s_at_max_bandwidth": read_bandwidth.map(|b| b.max / bytes0 as f64),
        "decode_floor_tok_s": decode_floor,
        "decode_floor_fraction": decode_floor.map(|f| decode0_tok_s / f),
        "read_bandwidth_after_decode_gb_s": read_bandwidth_after.map(|b| b.median / 1e9),
        "decode_floor_after_decode_tok_s": decode_floor_after,
        "decode_floor_fraction_after_decode": decode_floor_after.map(|f| decode0_tok_s / f),
        "peak_rss_bytes": peak,
        "kv_cache_bytes": engine.cache_memory_bytes(),
        "loadavg_before": load_avg_before,
        "loadavg_after": loadavg(),
    });
    let mut report = report;
    // Past `json!`'s recursion limit in one literal.
    for (key, value) in [
        (
            "read_bandwidth_during_decode_gb_s",
            serde_json::json!(read_bandwidth_during.map(|b| b.median / 1e9)),
        ),
        (
            "read_bandwidth_during_decode_gb_s_min",
            serde_json::json!(read_bandwidth_during.map(|b| b.min / 1e9)),
        ),
        (
            "read_bandwidth_during_decode_gb_s_max",
            serde_json::json!(read_bandwidth_during.map(|b| b.max / 1e9)),
        ),
        (
            "read_bandwidth_during_decode_passes",
            serde_json::json!(read_bandwidth_during.map(|b| b.passes)),
        ),
        (
            "decode_floor_during_decode_tok_s",
            serde_json::json!(decode_floor_during),
        ),
        (
            "decode_floor_fraction_during_decode",
            serde_json::json!(decode_floor_during.map(|f| decode0_tok_s / f)),
        ),
    ] {
        report[key] = value;
    }
    // The children load the model themselves: this process's copy goes first.
    let (model_dir, threads) = (engine.model_dir().to_path_buf(), engine.threads());
    let vocab_size = engine.config().vocab_size;
    drop(engine);
    let first_token = (!args.no_ttft)
        .then(|| {
            first_token_times(&model_dir, args.engine.dtype, args.engine.threads)
                .inspect_err(|e| eprintln!("warning: time to first token not measured: {e:#}"))
                .ok()
        })
        .flatten();
    if let Some(first_token) = &first_token {
        first_token.add_to(&mut report);
    }
    // Structured outputs: what the JSON mask adds to each constrained token (vocabulary-sized).
    match ossa::agent::harmony::HarmonyEncoding::gpt_oss()
        .map_err(|e| e.to_string())
        .and_then(|encoding| {
            ossa::agent::structured::mask_cost_us(&encoding, vocab_size).map_err(|e| e.to_string())
        }) {
        Ok(us) => report["structured_mask_us_per_token"] = serde_json::json!(us),
        Err(e) => eprintln!("warning: structured output mask not measured: {e}"),
    }
    if args.json {
        println!("{report}");
    } else {
        let samples = |v: &[f64]| {
            v.iter()
                .map(|x| format!("{x:.2}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        println!("model       {}", model_dir.display());
        println!(
            "threads     {}   dtype {:?}   kernels {} (cpu has: {})",
            threads,
            args.engine.dtype,
            isa.name(),
            available.join(", ")
        );
        println!("load        {:.2} s", load_time.as_secs_f64());
        println!(
            "prefill     {:.2} tok/s ({} tokens; runs: {})",
            prefill_tok_s,
            args.prompt_tokens,
            samples(&prefill)
        );
        println!(
            "decode      {:.2} tok/s at depth 0 (runs: {}), {:.2} GB/token, {:.1} GB/s",
            decode0_tok_s,
            samples(&decode0),
            bytes0 as f64 / 1e9,
            bytes0 as f64 * decode0_tok_s / 1e9
        );
        println!(
            "            by quarter of the {} tokens: {}",
            args.gen_tokens - 1,
            samples(&decode0_quarters)
        );
        println!(
            "decode      {:.2} tok/s after the {}-token prompt (runs: {})",
            decode_tok_s,
            args.prompt_tokens,
            samples(&decode)
        );
        if let Some(d) = decode_deep {
            println!(
                "decode      {:.2} tok/s at depth {}, {:.2} GB/token, {:.1} GB/s",
                d,
                args.depth,
                bytes_deep as f64 / 1e9,
                bytes_deep as f64 * d / 1e9
            );
        }
        if let (Some(long), Some(deep)) = (prefill_long, prefill_after_depth) {
            println!(
                "prefill     {:.2} tok/s ({} tokens), {:.2} tok/s ({} tokens after {})",
                long, args.long_prompt, deep, args.prompt_tokens, args.long_prompt
            );
        }
        // The three yardsticks, one line each: the floor each implies and decode's share of it.
        for (b, head, when) in [
            (
                read_bandwidth,
                "bandwidth  ",
                "read before the model loaded",
            ),
            (
                read_bandwidth_after,
                "           ",
                "right after the decode runs",
            ),
            (
                read_bandwidth_during,
                "           ",
                "during the decode runs, passes before each and after them",
            ),
        ] {
            if let Some(b) = b {
                let floor = b.median / bytes0 as f64;
                println!(
                    "{head} {:.1} GB/s {when} (median of {}; {:.1} to {:.1}): decode floor \
                     {:.2} tok/s at depth 0, reached {:.0} %",
                    b.median / 1e9,
                    b.passes,
                    b.min / 1e9,
                    b.max / 1e9,
                    floor,
                    100.0 * decode0_tok_s / floor
                );
            }
        }
        match peak {
            Some(p) => println!("peak RSS    {:.2} GiB", p as f64 / (1u64 << 30) as f64),
            None => println!("peak RSS    unknown (no /proc)"),
        }
        if let Some(first_token) = &first_token {
            first_token.print();
        }
        println!(
            "loadavg     before {}   after {}",
            load_avg_before.as_deref().unwrap_or("?"),
            loadavg().as_deref().unwrap_or("?")
        );
    }
    Ok(ExitCode::SUCCESS)
}

// --- Time to the first token, cold and from the prompt cache on disk (ttft_* keys). ---

/// Time from a process's start to the first token of the `ossa chat --python --browser`
/// prompt, without and with the prompt cache on disk, and what the disk read cost.
struct FirstTokenTimes {
    prompt_tokens: usize,
    cold_s: f64,
    cached_s: f64,
    /// The same two from the start of the model load (what earlier reports measured).
    cold_from_load_s: f64,
    cached_from_load_s: f64,
    /// Positions read from disk by the cached run, the bytes and the time.
    read_tokens: u64,
    read_bytes: u64,
    read_s: f64,
    /// Writing the cold run's positions (after its first token).
    write_s: f64,
}

impl FirstTokenTimes {
    fn read_gb_s(&self) -> f64 {
        self.read_bytes as f64 / self.read_s.max(1e-9) / 1e9
    }

    fn add_to(&self, report: &mut serde_json::Value) {
        let keys = serde_json::json!({
            "ttft_prompt_tokens": self.prompt_tokens,
            "ttft_from": "process start",
            "ttft_cold_s": self.cold_s,
            "ttft_cached_s": self.cached_s,
            "ttft_cold_from_load_s": self.cold_from_load_s,
            "ttft_cached_from_load_s": self.cached_from_load_s,
            "prompt_cache_read_tokens": self.read_tokens,
            "prompt_cache_read_bytes": self.read_bytes,
            "prompt_cache_read_s": self.read_s,
            "prompt_cache_read_gb_s": self.read_gb_s(),
            "prompt_cache_write_s": self.write_s,
        });
        if let (Some(report), serde_json::Value::Object(keys)) = (report.as_object_mut(), keys) {
            report.extend(keys);
        }
    }

    fn print(&self) {
        println!(
            "first token {:.2} s cold, {:.2} s from the prompt cache ({}-token tool prompt, from \
             the start of a new process; {:.2} s and {:.2} s from the start of its load; {} \
             positions, {:.1} MB read at {:.2} GB/s)",
            self.cold_s,
            self.cached_s,
            self.prompt_tokens,
            self.cold_from_load_s,
            self.cached_from_load_s,
            self.read_tokens,
            self.read_bytes as f64 / 1e6,
            self.read_gb_s()
        );
    }
}

/// The system message `ossa chat --python --browser` starts with, and a short question, as
/// tokens (the built-in o200k_harmony; ids folded into a smaller test vocabulary).
fn tool_prompt(vocab: usize) -> anyhow::Result<Vec<u32>> {
    use ossa_agent::harmony::{
        Conversation, HarmonyEncoding, Message, ReasoningEffort, Role, SystemContent,
    };
    use ossa_tools::ToolNamespaceConfig;
    let system = SystemContent::new()
        .with_reasoning_effort(ReasoningEffort::Low)
        .with_conversation_start_date("2026-01-01")
        .with_tools(ToolNamespaceConfig::browser())
        .with_tools(ToolNamespaceConfig::python());
    let conversation = Conversation::from_messages([
        Message::from_role_and_content(Role::System, system),
        Message::from_role_and_content(Role::User, "What is the capital of France?"),
    ]);
    let tokens = HarmonyEncoding::gpt_oss()?.render_conversation_for_completion(
        &conversation.messages,
        Role::Assistant,
        None,
    )?;
    Ok(tokens.into_iter().map(|t| t % vocab as u32).collect())
}

/// The line a ttft child prints as soon as it has its first token.
const FIRST_TOKEN_LINE: &str = "ttft-first-token";

/// What a ttft child reports after its first line: one JSON object.
#[derive(serde::Serialize, serde::Deserialize)]
struct ChildReport {
    prompt_tokens: usize,
    from_load_s: f64,
    read_tokens: u64,
    read_bytes: u64,
    read_s: f64,
    write_s: f64,
}

/// The child side: load, generate the tool prompt's first token with the prompt cache in
/// `cache_dir`, say so at once, then (after the cache is written) report the details.
fn ttft_child(args: &BenchArgs, cache_dir: &std::path::Path) -> anyhow::Result<ExitCode> {
    let load_started = Instant::now();
    let (mut engine, _) = args.engine.load()?;
    engine.set_prompt_cache(Some(&ossa_engine::PromptCacheOptions::new(cache_dir)))?;
    let prompt = tool_prompt(engine.config().vocab_size)?;
    let params = GenerateParams {
        max_tokens: 1,
        ..GenerateParams::default()
    };
    let mut generation = engine.generate(&prompt, &params)?;
    generation.next().context("no first token")??;
    let from_load_s = load_started.elapsed().as_secs_f64();
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{FIRST_TOKEN_LINE}")?;
    stdout.flush()?;
    drop(generation);
    let stats = engine.prompt_cache_stats().unwrap_or_default();
    let report = ChildReport {
        prompt_tokens: prompt.len(),
        from_load_s,
        read_tokens: stats.read_tokens,
        read_bytes: stats.read_bytes,
        read_s: stats.read_time.as_secs_f64(),
        write_s: stats.write_time.as_secs_f64(),
    };
    writeln!(stdout, "{}", serde_json::to_string(&report)?)?;
    Ok(ExitCode::SUCCESS)
}

/// Runs this binary again as a ttft child and times it from the spawn to its first-token
/// line: what a user waits from typing the command, less the shell.
fn time_child(
    model_dir: &std::path::Path,
    dtype: DType,
    threads: Option<usize>,
    cache_dir: &std::path::Path,
) -> anyhow::Result<(f64, ChildReport)> {
    use std::io::BufRead;
    use std::process::{Command, Stdio};
    let exe = std::env::current_exe().context("finding this executable")?;
    let mut command = Command::new(exe);
    command
        .arg("bench")
        .arg("--model")
        .arg(model_dir)
        .arg("--dtype")
        .arg(format!("{dtype:?}").to_lowercase())
        .arg("--ttft-child")
        .arg(cache_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if let Some(threads) = threads {
        command.arg("--threads").arg(threads.to_string());
    }
    let started = Instant::now();
    let mut child = command.spawn().context("starting the ttft child process")?;
    let stdout = child.stdout.take().context("the child's stdout")?;
    let mut lines = std::io::BufReader::new(stdout).lines();
    let first = lines.next().transpose()?;
    let seconds = started.elapsed().as_secs_f64();
    let report = lines.next().transpose()?;
    let status = child.wait()?;
    if !status.success() || first.as_deref() != Some(FIRST_TOKEN_LINE) {
        bail!("the ttft child process failed ({status})");
    }
    let report: ChildReport =
        serde_json::from_str(report.as_deref().unwrap_or("")).context("the child's report")?;
    Ok((seconds, report))
}

/// Starts two fresh processes of this binary, one after the other, with the prompt cache in a
/// fresh temporary folder: the first computes the tool prompt (and writes it), the second
/// reads it back. The weights' pages are warm by then, as they are for a user's second
/// process.
fn first_token_times(
    model_dir: &std::path::Path,
    dtype: DType,
    threads: Option<usize>,
) -> anyhow::Result<FirstTokenTimes> {
    let cache_dir =
        std::env::temp_dir().join(format!("ossa-bench-prompt-cache-{}", std::process::id()));
    let result = (|| {
        let (cold_s, cold) = time_child(model_dir, dtype, threads, &cache_dir)?;
        let (cached_s, cached) = time_child(model_dir, dtype, threads, &cache_dir)?;
        Ok(FirstTokenTimes {
            prompt_tokens: cold.prompt_tokens,
            cold_s,
            cached_s,
            cold_from_load_s: cold.from_load_s,
            cached_from_load_s: cached.from_load_s,
            read_tokens: cached.read_tokens,
            read_bytes: cached.read_bytes,
            read_s: cached.read_s,
            write_s: cold.write_s,
        })
    })();
    let _ = std::fs::remove_dir_all(&cache_dir);
    result
}
