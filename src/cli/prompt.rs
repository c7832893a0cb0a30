//! The line editor both interactive commands use (`ossa chat`, `ossa python`): rustyline with a
//! history file (in ossa's data folder unless one is named) read at start and appended to after
//! each entry, so two sessions open at once both keep their lines.

use std::path::PathBuf;

use anyhow::Context as _;
use rustyline::config::ColorMode;
use rustyline::history::FileHistory;
use rustyline::{Editor, Helper};

/// An editor whose history holds entries (added by [`History::remember`], not every line read),
/// leaving out lines that start with a space and repeats, up to 10 000.
pub(super) fn editor<H: Helper>(color: bool) -> anyhow::Result<Editor<H, FileHistory>> {
    let config = rustyline::Config::builder()
        .auto_add_history(false)
        .history_ignore_space(true)
        .history_ignore_dups(true)?
        .max_history_size(10_000)?
        .color_mode(if color {
            ColorMode::Enabled
        } else {
            ColorMode::Disabled
        })
        .build();
    Editor::with_config(config).context("setting up the prompt")
}

/// Where an editor's entries are kept; `None`: nowhere (no data folder, or the file could not
/// be written once already).
pub(super) struct History {
    path: Option<PathBuf>,
}

impl History {
    /// `path`, else `default_name` in ossa's data folder, read into `editor` when it exists.
    pub(super) fn open<H: Helper>(
        editor: &mut Editor<H, FileHistory>,
        path: Option<PathBuf>,
        default_name: &str,
    ) -> Self {
        let path = match path {
            Some(path) => Some(path),
            None => match ossa::sandbox::default_data_dir() {
                Ok(dir) => Some(dir.join(default_name)),
                Err(e) => {
                    eprintln!("warning: no history is kept: {e}");
                    None
                }
            },
        };
        if let Some(path) = &path
            && path.exists()
            && let Err(e) = editor.load_history(path)
        {
            eprintln!("warning: cannot read the history {}: {e}", path.display());
        }
        Self { path }
    }

    /// No file: input from a pipe is not history.
    pub(super) fn none() -> Self {
        Self { path: None }
    }

    /// Adds `line` to `editor`'s history and appends it to the file; a file that cannot be
    /// written is reported once and no longer used.
    pub(super) fn remember<H: Helper>(&mut self, editor: &mut Editor<H, FileHistory>, line: &str) {
        if line.trim().is_empty() || !matches!(editor.add_history_entry(line), Ok(true)) {
            return;
        }
        let Some(path) = &self.path else { return };
        if let Some(parent) = path.parent()
            && !parent.as_os_str().is_empty()
        {
            let _ = std::fs::create_dir_all(parent);
        }
        if let Err(e) = editor.append_history(path) {
            eprintln!("warning: cannot write the history {}: {e}", path.display());
            self.path = None;
        }
    }
}
