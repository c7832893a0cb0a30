//! `ossa pull`, `ossa list`, `ossa rm`, `ossa show`: the downloaded models, by name
//! (`gpt-oss:20b`), Hugging Face id or directory, as Ollama users manage theirs. Downloads go
//! to the Hugging Face cache (`ossa_engine::hub`), where every other command finds them.

use std::io::{BufRead, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, bail};
use indicatif::HumanBytes;
use ossa_engine::hub::{self, CachedModel, DownloadProgress, ModelSpec};

#[derive(Debug, clap::Args)]
pub struct PullArgs {
    /// gpt-oss:20b, gpt-oss:120b, or a Hugging Face id (owner/name[@revision]).
    #[arg(default_value = "gpt-oss:20b")]
    model: String,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {}

#[derive(Debug, clap::Args)]
pub struct RmArgs {
    /// The downloaded model: gpt-oss:20b, gpt-oss:120b, or a Hugging Face id.
    model: String,
    /// Remove without asking.
    #[arg(short, long)]
    yes: bool,
}

#[derive(Debug, clap::Args)]
pub struct ShowArgs {
    /// gpt-oss:20b, gpt-oss:120b, a Hugging Face id, or a model directory.
    #[arg(default_value = "gpt-oss:20b")]
    model: String,
}

/// How a hub id is shown: its short name when it has one.
fn display_name(id: &str) -> String {
    hub::name_of_id(id).map_or_else(|| id.to_string(), str::to_string)
}

/// Downloads (or completes, resuming partial files) a model into the cache.
pub fn pull(args: PullArgs) -> anyhow::Result<ExitCode> {
    let (id, revision) = match hub::parse_model(&args.model)? {
        ModelSpec::Dir(dir) => bail!(
            "{} is a local directory: nothing to pull (every command takes it as --model {})",
            dir.display(),
            dir.display()
        ),
        ModelSpec::Hub { id, revision } => (id, revision),
    };
    let progress: Arc<dyn DownloadProgress> = Arc::new(ossa::app::DownloadBars::default());
    let dir = hub::download_model(&id, revision.as_deref(), Some(progress))?;
    let bytes = hub::cached_model(&id)?.map_or(0, |m| m.bytes);
    println!(
        "{}: ready, {} in {}",
        display_name(&id),
        HumanBytes(bytes),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints the models in the cache: name, size on disk, location.
pub fn list(_args: ListArgs) -> anyhow::Result<ExitCode> {
    let models = hub::cached_models()?;
    if models.is_empty() {
        println!(
            "No models downloaded yet (cache: {}). `ossa pull gpt-oss:20b` fetches one.",
            hub::cache_dir().display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<[String; 3]> = models
        .iter()
        .map(|m| {
            let location = match &m.snapshot {
                Some(dir) => dir.display().to_string(),
                None => format!(
                    "{} (incomplete: `ossa pull {}` resumes it)",
                    m.repo_dir.display(),
                    display_name(&m.id)
                ),
            };
            [
                display_name(&m.id),
                HumanBytes(m.bytes).to_string(),
                location,
            ]
        })
        .collect();
    let width = |i: usize| rows.iter().map(|r| r[i].len()).max().unwrap_or(0).max(4);
    let (name_width, size_width) = (width(0), width(1));
    println!("{:name_width$}  {:>size_width$}  LOCATION", "NAME", "SIZE");
    for [name, size, location] in &rows {
        println!("{name:name_width$}  {size:>size_width$}  {location}");
    }
    Ok(ExitCode::SUCCESS)
}

/// The cached model a name or id stands for, or an error saying how to get it.
fn downloaded(spec: &str) -> anyhow::Result<CachedModel> {
    match hub::parse_model(spec)? {
        ModelSpec::Dir(dir) => bail!(
            "{} is a local directory, not a downloaded model (`ossa list` shows those); \
             delete it yourself if you mean to",
            dir.display()
        ),
        ModelSpec::Hub { id, .. } => hub::cached_model(&id)?.ok_or_else(|| {
            anyhow::anyhow!(
                "{} is not downloaded (`ossa list` shows what is; `ossa pull {}` fetches it)",
                display_name(&id),
                display_name(&id)
            )
        }),
    }
}

/// Deletes a downloaded model's files, after asking unless `--yes`.
pub fn rm(args: RmArgs) -> anyhow::Result<ExitCode> {
    let model = downloaded(&args.model)?;
    let name = display_name(&model.id);
    if !args.yes {
        eprint!(
            "Remove {name} ({}, {})? [y/N] ",
            HumanBytes(model.bytes),
            model.repo_dir.display()
        );
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if !matches!(answer.trim().to_ascii_lowercase().as_str(), "y" | "yes") {
            eprintln!("Nothing removed.");
            return Ok(ExitCode::FAILURE);
        }
    }
    let freed = hub::remove_cached(&model)?;
    println!("Removed {name}: {} freed.", HumanBytes(freed));
    Ok(ExitCode::SUCCESS)
}

/// Prints a model's configuration, size and location.
pub fn show(args: ShowArgs) -> anyhow::Result<ExitCode> {
    let (name, dir, bytes) = match hub::parse_model(&args.model)? {
        ModelSpec::Dir(dir) => {
            let bytes = files_size(&dir);
            (dir.display().to_string(), dir, bytes)
        }
        ModelSpec::Hub { .. } => {
            let model = downloaded(&args.model)?;
            let Some(snapshot) = model.snapshot.clone() else {
                bail!(
                    "{} is only partly downloaded; `ossa pull {}` completes it",
                    display_name(&model.id),
                    display_name(&model.id)
                );
            };
            let name = match hub::name_of_id(&model.id) {
                Some(short) => format!("{short} ({})", model.id),
                None => model.id.clone(),
            };
            (name, snapshot, model.bytes)
        }
    };
    let config_path = dir.join("config.json");
    let text = std::fs::read_to_string(&config_path)
        .with_context(|| format!("reading {}", config_path.display()))?;
    let config: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", config_path.display()))?;
    let int = |key: &str| config.get(key).and_then(serde_json::Value::as_u64);
    let shown = |value: Option<u64>| value.map_or_else(|| "?".to_string(), |v| v.to_string());
    let quantization = config
        .get("quantization_config")
        .and_then(|q| q.get("quant_method"))
        .and_then(serde_json::Value::as_str)
        .map_or_else(
            || "none (bf16 weights)".to_string(),
            |method| format!("{method} (experts), bf16 elsewhere"),
        );
    let mut out = std::io::stdout().lock();
    writeln!(out, "model         {name}")?;
    writeln!(out, "location      {}", dir.display())?;
    writeln!(out, "size          {}", HumanBytes(bytes))?;
    writeln!(
        out,
        "layers        {} (hidden size {})",
        shown(int("num_hidden_layers")),
        shown(int("hidden_size"))
    )?;
    writeln!(
        out,
        "attention     {} query heads, {} key-value heads, sliding window {}",
        shown(int("num_attention_heads")),
        shown(int("num_key_value_heads")),
        shown(int("sliding_window"))
    )?;
    writeln!(
        out,
        "experts       {}, {} active per token",
        shown(int("num_local_experts")),
        shown(int("num_experts_per_tok").or_else(|| int("experts_per_token")))
    )?;
    writeln!(
        out,
        "context       {} tokens",
        shown(int("max_position_embeddings"))
    )?;
    writeln!(out, "quantization  {quantization}")?;
    writeln!(out, "vocabulary    {} tokens", shown(int("vocab_size")))?;
    if let Some(license) = license(&dir) {
        writeln!(out, "license       {license}")?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The `license:` of a model card's front matter, when the directory has one.
fn license(dir: &Path) -> Option<String> {
    let card = std::fs::read_to_string(dir.join("README.md")).ok()?;
    let front = card.strip_prefix("---")?.split("\n---").next()?;
    front.lines().find_map(|line| {
        line.trim()
            .strip_prefix("license:")
            .map(|l| l.trim().to_string())
    })
}

/// Bytes of the files in a model directory, following links (a snapshot's files are links
/// to the cache's blobs).
fn files_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries
            .flatten()
            .filter_map(|entry| std::fs::metadata(entry.path()).ok())
            .filter(|meta| meta.is_file())
            .map(|meta| meta.len())
            .sum()
    })
}
