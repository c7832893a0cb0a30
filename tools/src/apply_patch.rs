//! `apply_patch`: an opt-in function tool for code assistants that edits files in one workspace
//! folder with the `*** Begin Patch` format of OpenAI's gpt-oss reference.
//!
//! The format, context matching and error texts follow the reference's `apply_patch.py`:
//! `*** Add File:` (every line `+`), `*** Delete File:`, `*** Update File:` with an optional
//! `*** Move to:` and hunks of ` ` / `-` / `+` lines, each hunk optionally introduced by
//! `@@ <a line to find first>`, `*** End of File` anchoring a hunk at the end. Context is
//! matched exactly, then ignoring trailing whitespace, then ignoring surrounding whitespace.
//!
//! Confinement: every path is relative to the workspace; absolute paths outside it, `..` and
//! symlinks that lead out (or have absolute targets) are refused. File access goes through a
//! capability handle on the workspace folder (`cap-std`), so even a symlink swapped in between
//! check and write cannot lead out. A file with more than one hard link is not edited: its other
//! name may be outside the workspace.
//!
//! Writes are atomic: new content goes to a temporary file in the same folder
//! (`.ossa-patch-*.tmp`), which is synced and renamed over the old name (then the folder is
//! synced), keeping the old file's permissions. A crash leaves each file either old or new, never
//! truncated (at worst a temporary file is left behind), and nothing is ever written into an
//! existing file, so no link swapped in after the checks can redirect a write.
//!
//! Deliberate differences from the reference: a patch is checked completely (every file read,
//! every hunk located, every target checked) before anything is written; added files end with
//! a newline; CRLF files keep CRLF line endings; `*** Move to:` onto an existing file and text
//! after `*** End Patch` are errors; a `@@ ` header with nothing after it is a bare `@@` (the
//! reference rejects the next line); the answer lists what changed after the reference's `Done!`.
//! Checked against the reference on 1,600 generated update patches: identical results and
//! error texts apart from that `@@ ` case.

use std::hash::BuildHasher;
use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use cap_std::ambient_authority;
#[cfg(unix)]
use cap_std::fs::OpenOptionsExt;
use cap_std::fs::{Dir, File, OpenOptions, Permissions};
use serde_json::{Value, json};

use crate::function::{Function, FunctionError};
use crate::spec::ToolDescription;

/// The function name the model calls: `functions.apply_patch`.
pub const FUNCTION_NAME: &str = "apply_patch";

/// What to put in the developer message beside the function (instructions for the model).
pub const INSTRUCTIONS: &str = "\
Use `apply_patch` to create, edit, move and delete files in the workspace. Send the patch itself \
as the message, in this format:

*** Begin Patch
*** Add File: path/to/new.txt
+first line of the new file
+second line
*** Update File: path/to/existing.py
*** Move to: path/to/renamed.py
@@ def greet():
-    print(\"Hi\")
+    print(\"Hello, world!\")
*** Delete File: path/to/obsolete.txt
*** End Patch

Paths are relative to the workspace. In an update, each hunk starts with `@@` (optionally \
followed by a line that comes before the change, such as a function or class header) and lists \
lines with a one-character prefix: a space for unchanged context, `-` for a removed line, `+` for \
an added line. Give about three lines of context before and after each change so it can be \
found. End a hunk that must match the end of the file with `*** End of File`. Every line of an \
added file starts with `+`.";

/// Why a patch was not applied (the model reads `Error: {self}`).
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// The workspace folder itself cannot be opened.
    #[error("cannot open the workspace folder {path}: {source}")]
    Workspace {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The patch text is malformed or does not fit the files.
    #[error("{0}")]
    Invalid(String),
    /// A path in the patch leaves the workspace or is not a file path.
    #[error("{path}: {reason}")]
    Path { path: String, reason: String },
    /// Reading or writing a file failed.
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: io::Error,
    },
}

fn invalid(message: impl Into<String>) -> PatchError {
    PatchError::Invalid(message.into())
}

/// The `apply_patch` function, confined to one workspace folder.
#[derive(Clone)]
pub struct ApplyPatch {
    workspace: Arc<Workspace>,
    description: ToolDescription,
}

struct Workspace {
    root: PathBuf,
    dir: Dir,
}

impl ApplyPatch {
    /// Confine patches to `workspace` (an existing folder).
    pub fn new(workspace: impl AsRef<Path>) -> Result<Self, PatchError> {
        let given = workspace.as_ref();
        let workspace_error = |source| PatchError::Workspace {
            path: given.to_path_buf(),
            source,
        };
        let root = given.canonicalize().map_err(workspace_error)?;
        let dir = Dir::open_ambient_dir(&root, ambient_authority()).map_err(workspace_error)?;
        // The parameter schema and description the reference declares for this function.
        let description = ToolDescription::new(
            FUNCTION_NAME,
            "Patch a file",
            Some(json!({
                "type": "string",
                "description": "Formatted patch code",
                "default": "*** Begin Patch\n*** End Patch\n",
            })),
        );
        Ok(Self {
            workspace: Arc::new(Workspace { root, dir }),
            description,
        })
    }

    /// The workspace folder (canonical).
    pub fn workspace(&self) -> &Path {
        &self.workspace.root
    }

    /// Apply `patch` (the message text, or a JSON string or one-field object holding it).
    /// Returns the text the model reads.
    pub fn apply(&self, patch: &str) -> Result<String, PatchError> {
        let patch = patch_text(patch)?;
        let changes = parse(&patch, &self.workspace)?;
        self.workspace.commit(&changes)
    }
}

#[async_trait]
impl Function for ApplyPatch {
    fn description(&self) -> &ToolDescription {
        &self.description
    }

    async fn call(&self, arguments: &str) -> Result<String, FunctionError> {
        let this = self.clone();
        let arguments = arguments.to_string();
        match tokio::task::spawn_blocking(move || this.apply(&arguments)).await {
            Ok(result) => result.map_err(|error| FunctionError::Failed(error.to_string())),
            Err(error) => Err(FunctionError::Failed(format!(
                "applying the patch failed: {error}"
            ))),
        }
    }
}

/// The patch text out of the message: raw text, or (as the reference accepts) JSON holding it.
fn patch_text(message: &str) -> Result<String, PatchError> {
    let trimmed = message.trim();
    if trimmed.starts_with('{') || trimmed.starts_with('"') {
        let value: Value = serde_json::from_str(trimmed).map_err(|error| {
            invalid(format!(
                "the message looks like JSON but does not parse: {error}"
            ))
        })?;
        return match value {
            Value::String(text) => Ok(text),
            Value::Object(fields) => {
                let mut strings = fields.into_iter().filter_map(|(_, v)| match v {
                    Value::String(s) => Some(s),
                    _ => None,
                });
                match (strings.next(), strings.next()) {
                    (Some(text), None) => Ok(text),
                    _ => Err(invalid(
                        "send the patch text itself (or a JSON object with one string field holding it)",
                    )),
                }
            }
            _ => Err(invalid(
                "send the patch text itself, starting with *** Begin Patch",
            )),
        };
    }
    Ok(message.to_string())
}

/// A workspace-relative path that has been checked not to leave the workspace lexically.
#[derive(Clone, Debug, PartialEq, Eq)]
struct RelPath {
    /// As the patch wrote it (for messages).
    shown: String,
    path: PathBuf,
}

impl Workspace {
    fn resolve(&self, written: &str) -> Result<RelPath, PatchError> {
        let shown = written.trim().to_string();
        let refuse = |reason: &str| PatchError::Path {
            path: shown.clone(),
            reason: reason.to_string(),
        };
        if shown.is_empty() {
            return Err(invalid("a file operation is missing its path"));
        }
        let given = Path::new(&shown);
        let relative = if given.is_absolute() {
            given.strip_prefix(&self.root).map_err(|_| {
                refuse(&format!(
                    "absolute paths outside the workspace ({}) are not allowed",
                    self.root.display()
                ))
            })?
        } else {
            given
        };
        let mut path = PathBuf::new();
        for component in relative.components() {
            match component {
                Component::Normal(part) => path.push(part),
                Component::CurDir => {}
                Component::ParentDir => {
                    return Err(refuse(
                        "`..` is not allowed: paths stay inside the workspace",
                    ));
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(refuse(
                        "absolute paths are not allowed: use a path relative to the workspace",
                    ));
                }
            }
        }
        if path.as_os_str().is_empty() {
            return Err(refuse("this is the workspace folder itself, not a file"));
        }
        Ok(RelPath { shown, path })
    }

    fn io_error(&self, path: &RelPath, source: io::Error) -> PatchError {
        // cap-std refuses paths that lead out (through symlinks) with PermissionDenied.
        if source.kind() == io::ErrorKind::PermissionDenied
            && let Some(reason) = self.escapes(&path.path)
        {
            return PatchError::Path {
                path: path.shown.clone(),
                reason,
            };
        }
        PatchError::Io {
            path: path.shown.clone(),
            source,
        }
    }

    /// Why `path` leads outside the workspace through a symlink, if it does.
    fn escapes(&self, path: &Path) -> Option<String> {
        let mut prefix = PathBuf::new();
        for component in path.components() {
            prefix.push(component);
            let metadata = self.dir.symlink_metadata(&prefix).ok()?;
            if metadata.file_type().is_symlink() {
                let on_disk = self.root.join(&prefix);
                // cap-std never follows absolute link targets, even ones that point inside.
                if std::fs::read_link(&on_disk).is_ok_and(|target| target.is_absolute()) {
                    return Some(format!(
                        "`{}` is a symbolic link with an absolute target; only relative links that stay inside the workspace are followed",
                        prefix.display()
                    ));
                }
                let inside = on_disk
                    .canonicalize()
                    .is_ok_and(|target| target.starts_with(&self.root));
                if !inside {
                    return Some(format!(
                        "`{}` is a symbolic link that leads outside the workspace",
                        prefix.display()
                    ));
                }
            }
        }
        None
    }

    fn exists(&self, path: &RelPath) -> Result<bool, PatchError> {
        match self.dir.symlink_metadata(&path.path) {
            Ok(_) => Ok(true),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(self.io_error(path, error)),
        }
    }

    fn is_folder(&self, path: &RelPath) -> bool {
        self.dir
            .symlink_metadata(&path.path)
            .is_ok_and(|m| m.is_dir())
    }

    /// Refuse to edit what is not a regular file of its own that the user may write: a file
    /// with other hard links (one may be outside the workspace, and it would keep the old
    /// content or, edited in place, get the new one), a FIFO or device (reading could block),
    /// or a file without write permission (as writing it in place would have been refused).
    /// Returns its permissions, for the new content.
    fn check_editable(&self, path: &RelPath) -> Result<Permissions, PatchError> {
        if let Some(reason) = self.escapes(&path.path) {
            return Err(PatchError::Path {
                path: path.shown.clone(),
                reason,
            });
        }
        let refuse = |reason: String| PatchError::Path {
            path: path.shown.clone(),
            reason,
        };
        let metadata = self
            .dir
            .metadata(&path.path)
            .map_err(|error| self.io_error(path, error))?;
        if !metadata.is_file() {
            return Err(refuse(
                "is not a regular file; apply_patch edits text files only".into(),
            ));
        }
        #[cfg(unix)]
        {
            use cap_std::fs::MetadataExt;
            let links = metadata.nlink();
            if links > 1 {
                return Err(refuse(format!(
                    "has {links} hard links (names for the same file, which may be outside the workspace); apply_patch does not edit hard-linked files"
                )));
            }
        }
        self.dir
            .open_with(&path.path, OpenOptions::new().write(true))
            .map_err(|error| self.io_error(path, error))?;
        Ok(metadata.permissions())
    }

    fn read(&self, path: &RelPath) -> Result<String, PatchError> {
        let bytes = self
            .dir
            .read(&path.path)
            .map_err(|error| self.io_error(path, error))?;
        String::from_utf8(bytes).map_err(|_| PatchError::Path {
            path: path.shown.clone(),
            reason: "not UTF-8 text; apply_patch edits text files only".into(),
        })
    }

    /// Where the content of `path` lives: the file a symlink inside the workspace points to
    /// (so an edit keeps the link a link), else `path` itself. The write that follows goes
    /// through the capability handle, so a link that changed since cannot lead it out.
    fn real_path(&self, path: &RelPath) -> RelPath {
        let is_link = self
            .dir
            .symlink_metadata(&path.path)
            .is_ok_and(|metadata| metadata.file_type().is_symlink());
        if !is_link {
            return path.clone();
        }
        match self.root.join(&path.path).canonicalize() {
            Ok(target) => match target.strip_prefix(&self.root) {
                Ok(inside) if !inside.as_os_str().is_empty() => RelPath {
                    shown: path.shown.clone(),
                    path: inside.to_path_buf(),
                },
                _ => path.clone(),
            },
            Err(_) => path.clone(),
        }
    }

    /// The folder holding `path`, created if missing, as a capability handle.
    fn parent_dir(&self, path: &RelPath) -> Result<Dir, PatchError> {
        let io_error = |error| self.io_error(path, error);
        match path.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => {
                // Checked again at write time: a folder may have become a link since the
                // patch was checked (cap-std would refuse to follow it out, with a less
                // helpful error).
                if let Some(reason) = self.escapes(parent) {
                    return Err(PatchError::Path {
                        path: path.shown.clone(),
                        reason,
                    });
                }
                self.dir.create_dir_all(parent).map_err(io_error)?;
                self.dir.open_dir(parent).map_err(io_error)
            }
            _ => self.dir.try_clone().map_err(io_error),
        }
    }

    /// Replace `path` atomically with `content`: a temporary file in the same folder, given
    /// `permissions` (else the default for new files), written, synced and renamed over `path`;
    /// then the folder is synced so the rename survives a crash.
    fn write(
        &self,
        path: &RelPath,
        content: &str,
        permissions: Option<&Permissions>,
    ) -> Result<(), PatchError> {
        let io_error = |error| self.io_error(path, error);
        let Some(name) = path.path.file_name() else {
            return Err(PatchError::Path {
                path: path.shown.clone(),
                reason: "is not a file path".into(),
            });
        };
        let dir = self.parent_dir(path)?;
        let (temp_name, mut temp) =
            create_temp_file(&dir, permissions.is_some()).map_err(io_error)?;
        let written = (|| {
            if let Some(permissions) = permissions {
                temp.set_permissions(permissions.clone())?;
            }
            temp.write_all(content.as_bytes())?;
            temp.sync_all()?;
            dir.rename(&temp_name, &dir, name)
        })();
        if let Err(error) = written {
            let _ = dir.remove_file(&temp_name);
            return Err(io_error(error));
        }
        sync_dir(&dir).map_err(io_error)
    }

    fn remove(&self, path: &RelPath) -> Result<(), PatchError> {
        let io_error = |error| self.io_error(path, error);
        self.dir.remove_file(&path.path).map_err(io_error)?;
        sync_dir(&self.parent_dir(path)?).map_err(io_error)
    }

    /// Write every change; the patch has been fully checked before this runs.
    fn commit(&self, changes: &[Change]) -> Result<String, PatchError> {
        let mut summary = vec!["Done!".to_string()];
        for change in changes {
            match change {
                Change::Add { path, content } => {
                    self.write(path, content, None)?;
                    summary.push(format!("A {}", path.shown));
                }
                Change::Delete { path } => {
                    self.remove(path)?;
                    summary.push(format!("D {}", path.shown));
                }
                Change::Update {
                    path,
                    move_to,
                    content,
                    permissions,
                } => match move_to {
                    Some(target) if target.path != path.path => {
                        self.write(target, content, Some(permissions))?;
                        self.remove(path)?;
                        summary.push(format!("M {} -> {}", path.shown, target.shown));
                    }
                    _ => {
                        self.write(&self.real_path(path), content, Some(permissions))?;
                        summary.push(format!("M {}", path.shown));
                    }
                },
            }
        }
        Ok(summary.join("\n"))
    }
}

#[derive(Debug)]
enum Change {
    Add {
        path: RelPath,
        content: String,
    },
    Delete {
        path: RelPath,
    },
    Update {
        path: RelPath,
        move_to: Option<RelPath>,
        content: String,
        /// The original file's, kept for the new content.
        permissions: Permissions,
    },
}

impl Change {
    fn source(&self) -> &RelPath {
        match self {
            Change::Add { path, .. } | Change::Delete { path } | Change::Update { path, .. } => {
                path
            }
        }
    }
}

const BEGIN: &str = "*** Begin Patch";
const END: &str = "*** End Patch";
const ADD: &str = "*** Add File: ";
const DELETE: &str = "*** Delete File: ";
const UPDATE: &str = "*** Update File: ";
const MOVE_TO: &str = "*** Move to: ";
const END_OF_FILE: &str = "*** End of File";
const SECTION_ENDS: [&str; 5] = [
    END,
    "*** Update File:",
    "*** Delete File:",
    "*** Add File:",
    END_OF_FILE,
];

/// Read the patch and work out every file's new content (nothing is written here).
fn parse(text: &str, workspace: &Workspace) -> Result<Vec<Change>, PatchError> {
    let text = strip_code_fence(text.trim());
    let lines: Vec<&str> = text.lines().collect();
    if lines.len() < 2 || !lines[0].starts_with(BEGIN) || lines[lines.len() - 1].trim_end() != END {
        return Err(invalid(
            "Invalid patch text - missing sentinels: the patch must start with `*** Begin Patch` and end with `*** End Patch`",
        ));
    }
    let mut parser = Parser {
        lines: &lines,
        index: 1,
    };
    let mut changes: Vec<Change> = Vec::new();
    while !parser.at_any(&[END]) {
        let line = parser.current();
        if let Some(written) = line.strip_prefix(UPDATE) {
            parser.index += 1;
            let path = workspace.resolve(written)?;
            ensure_first_mention(&changes, &path, "update")?;
            let move_to = match parser
                .lines
                .get(parser.index)
                .and_then(|l| l.strip_prefix(MOVE_TO))
            {
                Some(target) => {
                    parser.index += 1;
                    Some(workspace.resolve(target)?)
                }
                None => None,
            };
            if !workspace.exists(&path)? {
                return Err(invalid(format!(
                    "Update File Error - missing file: {}",
                    path.shown
                )));
            }
            let permissions = workspace.check_editable(&path)?;
            let original = workspace.read(&path)?;
            let content = parser.update_file(&original, &path)?;
            changes.push(Change::Update {
                path,
                move_to,
                content,
                permissions,
            });
        } else if let Some(written) = line.strip_prefix(DELETE) {
            parser.index += 1;
            let path = workspace.resolve(written)?;
            ensure_first_mention(&changes, &path, "delete")?;
            if !workspace.exists(&path)? {
                return Err(invalid(format!(
                    "Delete File Error - missing file: {}",
                    path.shown
                )));
            }
            if workspace.is_folder(&path) {
                return Err(PatchError::Path {
                    path: path.shown.clone(),
                    reason: "is a folder; apply_patch deletes files only".into(),
                });
            }
            changes.push(Change::Delete { path });
        } else if let Some(written) = line.strip_prefix(ADD) {
            parser.index += 1;
            let path = workspace.resolve(written)?;
            ensure_first_mention(&changes, &path, "add")?;
            if workspace.exists(&path)? {
                return Err(invalid(format!(
                    "Add File Error - file already exists: {}",
                    path.shown
                )));
            }
            let content = parser.add_file()?;
            changes.push(Change::Add { path, content });
        } else {
            return Err(invalid(format!("Unknown line while parsing: {line}")));
        }
    }
    if parser.index + 1 != lines.len() {
        return Err(invalid(format!(
            "text after `{END}` (line {}); send one patch per call",
            parser.index + 1
        )));
    }
    check_targets(&changes, workspace)?;
    Ok(changes)
}

/// A new file in `dir` under a fresh name, for content that will replace another file. With
/// `private`, only its owner may read it until its permissions are set (the file it replaces
/// may be private). Written here rather than with the `cap-tempfile` crate: that crate needs
/// `uuid`'s `v4` feature, and a new feature on `uuid` rebuilds wasmtime (through `debugid`).
fn create_temp_file(dir: &Dir, private: bool) -> io::Result<(String, File)> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if private {
        options.mode(0o600);
    }
    #[cfg(not(unix))]
    let _ = private;
    let mut attempts = 0;
    loop {
        let unique = std::collections::hash_map::RandomState::new()
            .hash_one((std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
        let name = format!(".ossa-patch-{unique:016x}.tmp");
        match dir.open_with(&name, &options) {
            Ok(file) => return Ok((name, file)),
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists && attempts < 16 => {
                attempts += 1;
            }
            Err(error) => return Err(error),
        }
    }
}

/// Make the folder's entries (a rename, a removal) durable: fsync on the folder itself.
/// cap-std holds folders as `O_PATH` handles, which cannot be synced: the folder is opened
/// again for reading through the handle.
fn sync_dir(dir: &Dir) -> io::Result<()> {
    dir.open(".")?.sync_all()
}

fn ensure_first_mention(changes: &[Change], path: &RelPath, what: &str) -> Result<(), PatchError> {
    if changes.iter().any(|c| c.source().path == path.path) {
        return Err(invalid(format!(
            "Duplicate {what} for file: {}",
            path.shown
        )));
    }
    Ok(())
}

/// Refuse a `Move to` onto a file that exists (and is not deleted or moved away by this patch)
/// or that another operation of the patch also writes.
fn check_targets(changes: &[Change], workspace: &Workspace) -> Result<(), PatchError> {
    let freed = |target: &RelPath| {
        changes.iter().any(|c| match c {
            Change::Delete { path } => path.path == target.path,
            Change::Update {
                path,
                move_to: Some(_),
                ..
            } => path.path == target.path,
            _ => false,
        })
    };
    for (index, change) in changes.iter().enumerate() {
        let Change::Update {
            move_to: Some(target),
            path,
            ..
        } = change
        else {
            continue;
        };
        if target.path == path.path {
            continue;
        }
        let written_elsewhere = changes.iter().enumerate().any(|(other, c)| {
            other != index
                && match c {
                    Change::Add { path, .. } => path.path == target.path,
                    Change::Update { path, move_to, .. } => {
                        move_to.as_ref().unwrap_or(path).path == target.path
                    }
                    Change::Delete { .. } => false,
                }
        });
        if written_elsewhere || (workspace.exists(target)? && !freed(target)) {
            return Err(invalid(format!(
                "Move to: {} already exists; delete it first if it should be replaced",
                target.shown
            )));
        }
    }
    Ok(())
}

fn strip_code_fence(text: &str) -> &str {
    let Some(rest) = text.strip_prefix("```") else {
        return text;
    };
    let Some(body_start) = rest.find('\n') else {
        return text;
    };
    match rest[body_start + 1..].trim_end().strip_suffix("```") {
        Some(body) => body.trim(),
        None => text,
    }
}

struct Parser<'a> {
    lines: &'a [&'a str],
    index: usize,
}

/// One replacement inside a file: at `orig_index`, `deleted` lines become `inserted` lines.
#[derive(Debug, Default)]
struct Chunk {
    orig_index: usize,
    deleted: Vec<String>,
    inserted: Vec<String>,
}

impl<'a> Parser<'a> {
    fn current(&self) -> &'a str {
        self.lines.get(self.index).copied().unwrap_or_default()
    }

    fn done(&self) -> bool {
        self.index >= self.lines.len()
    }

    fn at_any(&self, prefixes: &[&str]) -> bool {
        self.done() || prefixes.iter().any(|p| self.current().starts_with(p))
    }

    fn add_file(&mut self) -> Result<String, PatchError> {
        let mut content = String::new();
        while !self.at_any(&[END, "*** Update File:", "*** Delete File:", "*** Add File:"]) {
            let line = self.current();
            let Some(text) = line.strip_prefix('+') else {
                return Err(invalid(format!(
                    "Invalid Add File line (missing '+'): {line}"
                )));
            };
            content.push_str(text);
            content.push('\n');
            self.index += 1;
        }
        Ok(content)
    }

    /// The new content of `original` after the hunks that follow.
    fn update_file(&mut self, original: &str, path: &RelPath) -> Result<String, PatchError> {
        let crlf = original.contains("\r\n");
        let normalized;
        let original = if crlf {
            normalized = original.replace("\r\n", "\n");
            normalized.as_str()
        } else {
            original
        };
        let lines: Vec<&str> = original.split('\n').collect();
        let mut chunks: Vec<Chunk> = Vec::new();
        let mut index = 0usize;
        while !self.at_any(&SECTION_ENDS) {
            let line = self.current();
            let anchor = line.strip_prefix("@@ ");
            let bare = anchor.is_none() && line.trim_end() == "@@";
            if anchor.is_some() || bare {
                self.index += 1;
            } else if index != 0 {
                return Err(invalid(format!(
                    "Invalid line in update section of {}:\n{line}",
                    path.shown
                )));
            }
            if let Some(anchor) = anchor
                && !anchor.trim().is_empty()
            {
                index = find_anchor(&lines, anchor, index);
            }
            let section = self.section()?;
            let (found, _fuzz) = find_context(&lines, &section.context, index, section.end_of_file);
            let Some(start) = found else {
                return Err(invalid(format!(
                    "Invalid {}context at {index} in {}:\n{}",
                    if section.end_of_file { "EOF " } else { "" },
                    path.shown,
                    section.context.join("\n")
                )));
            };
            for mut chunk in section.chunks {
                chunk.orig_index += start;
                chunks.push(chunk);
            }
            index = start + section.context.len();
        }
        let updated = apply_chunks(&lines, &chunks, path)?;
        Ok(if crlf {
            updated.replace('\n', "\r\n")
        } else {
            updated
        })
    }

    /// The lines of one hunk, up to the next `@@` or file operation.
    fn section(&mut self) -> Result<Section, PatchError> {
        let start = self.index;
        let mut context: Vec<String> = Vec::new();
        let mut chunks = Vec::new();
        let mut current = Chunk::default();
        let mut mode = Mode::Keep;
        while !self.done() {
            let line = self.current();
            if line.starts_with("@@")
                || SECTION_ENDS.iter().any(|end| line.starts_with(end))
                || line == "***"
            {
                break;
            }
            if line.starts_with("***") {
                return Err(invalid(format!("Invalid Line: {line}")));
            }
            self.index += 1;
            let last_mode = mode;
            let (kind, text) = match line.chars().next() {
                None => (Mode::Keep, ""),
                Some('+') => (Mode::Add, &line[1..]),
                Some('-') => (Mode::Delete, &line[1..]),
                Some(' ') => (Mode::Keep, &line[1..]),
                Some(_) => return Err(invalid(format!("Invalid Line: {line}"))),
            };
            mode = kind;
            if mode == Mode::Keep && last_mode != Mode::Keep {
                let orig_index = context.len() - current.deleted.len();
                chunks.push(Chunk {
                    orig_index,
                    ..std::mem::take(&mut current)
                });
            }
            match mode {
                Mode::Delete => {
                    current.deleted.push(text.to_string());
                    context.push(text.to_string());
                }
                Mode::Add => current.inserted.push(text.to_string()),
                Mode::Keep => context.push(text.to_string()),
            }
        }
        if !current.deleted.is_empty() || !current.inserted.is_empty() {
            let orig_index = context.len() - current.deleted.len();
            chunks.push(Chunk {
                orig_index,
                ..current
            });
        }
        let end_of_file = self.current() == END_OF_FILE && !self.done();
        if end_of_file {
            self.index += 1;
        } else if self.index == start {
            return Err(invalid("Nothing in this section"));
        }
        Ok(Section {
            context,
            chunks,
            end_of_file,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Keep,
    Add,
    Delete,
}

struct Section {
    /// The lines the hunk expects in the file (context and deleted lines, in order).
    context: Vec<String>,
    chunks: Vec<Chunk>,
    end_of_file: bool,
}

/// Move past the first line equal to `anchor` (then equal ignoring surrounding whitespace) at or
/// after `index`, unless the anchor already occurred before `index`, as the reference does.
fn find_anchor(lines: &[&str], anchor: &str, index: usize) -> usize {
    let start = index.min(lines.len());
    let before = &lines[..start];
    if !before.contains(&anchor)
        && let Some(found) = lines[start..].iter().position(|l| *l == anchor)
    {
        return start + found + 1;
    }
    let trimmed = anchor.trim();
    if !before.iter().any(|l| l.trim() == trimmed)
        && let Some(found) = lines[start..].iter().position(|l| l.trim() == trimmed)
    {
        return start + found + 1;
    }
    index
}

/// Where `context` occurs at or after `start`: exact, then ignoring trailing whitespace, then
/// ignoring surrounding whitespace; an end-of-file hunk is tried at the very end first.
fn find_context(
    lines: &[&str],
    context: &[String],
    start: usize,
    end_of_file: bool,
) -> (Option<usize>, u32) {
    if end_of_file {
        let at_end = lines.len().saturating_sub(context.len());
        if let (Some(found), fuzz) = find_context_from(lines, context, at_end) {
            return (Some(found), fuzz);
        }
        let (found, fuzz) = find_context_from(lines, context, start);
        return (found, fuzz + 10_000);
    }
    find_context_from(lines, context, start)
}

fn find_context_from(lines: &[&str], context: &[String], start: usize) -> (Option<usize>, u32) {
    if context.is_empty() {
        return (Some(start), 0);
    }
    let matches = |normalize: fn(&str) -> &str| {
        (start..lines.len()).find(|&i| {
            i + context.len() <= lines.len()
                && lines[i..i + context.len()]
                    .iter()
                    .zip(context)
                    .all(|(a, b)| normalize(a) == normalize(b))
        })
    };
    if let Some(found) = matches(|s| s) {
        return (Some(found), 0);
    }
    if let Some(found) = matches(str::trim_end) {
        return (Some(found), 1);
    }
    if let Some(found) = matches(str::trim) {
        return (Some(found), 100);
    }
    (None, 0)
}

fn apply_chunks(lines: &[&str], chunks: &[Chunk], path: &RelPath) -> Result<String, PatchError> {
    let mut out: Vec<&str> = Vec::with_capacity(lines.len());
    let mut index = 0usize;
    for chunk in chunks {
        if chunk.orig_index > lines.len() {
            return Err(invalid(format!(
                "{}: chunk.orig_index {} exceeds file length",
                path.shown, chunk.orig_index
            )));
        }
        if index > chunk.orig_index {
            return Err(invalid(format!(
                "{}: overlapping chunks at {index} > {}",
                path.shown, chunk.orig_index
            )));
        }
        out.extend_from_slice(&lines[index..chunk.orig_index]);
        out.extend(chunk.inserted.iter().map(String::as_str));
        index = (chunk.orig_index + chunk.deleted.len()).min(lines.len());
    }
    out.extend_from_slice(&lines[index..]);
    Ok(out.join("\n"))
}

#[cfg(test)]
mod tests {
    //! Races: what changes on disk between the checks (`parse`) and the writes (`commit`),
    //! done deterministically by changing it in between.

    use std::fs;

    use super::*;

    struct Setup {
        _outer: tempfile::TempDir,
        root: PathBuf,
        outside: PathBuf,
        tool: ApplyPatch,
    }

    /// A workspace with `sub/file.txt`, next to a folder `outside/` with its own `file.txt`.
    fn setup() -> Setup {
        let outer = tempfile::tempdir().expect("temp dir");
        let root = outer.path().join("workspace");
        let outside = outer.path().join("outside");
        fs::create_dir_all(root.join("sub")).expect("mkdir");
        fs::create_dir(&outside).expect("mkdir");
        fs::write(root.join("sub/file.txt"), "one\n").expect("write");
        fs::write(outside.join("file.txt"), "secret\n").expect("write");
        let tool = ApplyPatch::new(&root).expect("opens");
        Setup {
            _outer: outer,
            root,
            outside,
            tool,
        }
    }

    const UPDATE: &str =
        "*** Begin Patch\n*** Update File: sub/file.txt\n-one\n+two\n*** End Patch";

    fn outside_untouched(setup: &Setup) {
        let names: Vec<_> = fs::read_dir(&setup.outside)
            .expect("list")
            .map(|entry| entry.expect("entry").file_name())
            .collect();
        assert_eq!(names, ["file.txt"], "nothing was created outside");
        assert_eq!(
            fs::read_to_string(setup.outside.join("file.txt")).expect("read"),
            "secret\n"
        );
    }

    #[test]
    fn a_folder_swapped_for_a_symlink_out_after_the_checks_is_not_followed() {
        for target in ["ABSOLUTE", "../outside"] {
            let setup = setup();
            let changes = parse(UPDATE, &setup.tool.workspace).expect("checks pass");
            fs::rename(setup.root.join("sub"), setup.root.join("sub-old")).expect("rename");
            let target = if target == "ABSOLUTE" {
                setup.outside.clone()
            } else {
                PathBuf::from(target)
            };
            std::os::unix::fs::symlink(&target, setup.root.join("sub")).expect("symlink");

            let error = setup
                .tool
                .workspace
                .commit(&changes)
                .expect_err("refused")
                .to_string();
            assert!(
                error.starts_with("sub/file.txt: `sub` is a symbolic link"),
                "{error}"
            );
            outside_untouched(&setup);
        }
    }

    #[test]
    fn a_file_swapped_for_a_hard_link_out_after_the_checks_is_replaced_not_written_through() {
        let setup = setup();
        let changes = parse(UPDATE, &setup.tool.workspace).expect("checks pass");
        fs::remove_file(setup.root.join("sub/file.txt")).expect("rm");
        fs::hard_link(
            setup.outside.join("file.txt"),
            setup.root.join("sub/file.txt"),
        )
        .expect("hard link");

        setup.tool.workspace.commit(&changes).expect("applies");
        outside_untouched(&setup);
        assert_eq!(
            fs::read_to_string(setup.root.join("sub/file.txt")).expect("read"),
            "two\n"
        );
    }

    #[test]
    fn a_file_swapped_for_a_symlink_out_after_the_checks_is_replaced_not_followed() {
        let setup = setup();
        let changes = parse(UPDATE, &setup.tool.workspace).expect("checks pass");
        fs::remove_file(setup.root.join("sub/file.txt")).expect("rm");
        std::os::unix::fs::symlink(
            setup.outside.join("file.txt"),
            setup.root.join("sub/file.txt"),
        )
        .expect("symlink");

        // The name gets the new content; the link (pointing out) is what is replaced.
        setup.tool.workspace.commit(&changes).expect("applies");
        outside_untouched(&setup);
        let path = setup.root.join("sub/file.txt");
        assert!(fs::symlink_metadata(&path).expect("stat").is_file());
        assert_eq!(fs::read_to_string(&path).expect("read"), "two\n");
    }
}
