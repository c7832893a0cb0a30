//! `apply_patch` on real files in temporary workspaces: every operation of the format, the
//! reference's context matching, clear errors, all-or-nothing checking, and escape attempts.

use std::fs;
use std::path::Path;

use ossa_tools::apply_patch::{ApplyPatch, FUNCTION_NAME};
use ossa_tools::{FunctionTools, Tool, ToolCall};
use tempfile::TempDir;

fn workspace() -> (TempDir, ApplyPatch) {
    let dir = tempfile::tempdir().expect("temp dir");
    let tool = ApplyPatch::new(dir.path()).expect("workspace opens");
    (dir, tool)
}

/// A workspace holding `files` (path and content each).
fn workspace_with(files: &[(&str, &str)]) -> (TempDir, ApplyPatch) {
    let (dir, tool) = workspace();
    for (path, content) in files {
        write(dir.path(), path, content);
    }
    (dir, tool)
}

fn write(root: &Path, path: &str, content: &str) {
    let path = root.join(path);
    fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
    fs::write(path, content).expect("write");
}

fn read(root: &Path, path: &str) -> String {
    fs::read_to_string(root.join(path)).expect("read")
}

fn error_of(tool: &ApplyPatch, patch: &str) -> String {
    match tool.apply(patch) {
        Ok(done) => panic!("expected an error, got {done:?}"),
        Err(error) => error.to_string(),
    }
}

/// What a refused patch's error says: all of it, or a part of it.
enum Refusal<'a> {
    Is(&'a str),
    Mentions(&'a str),
}

impl Refusal<'_> {
    /// Asserts that `error`, the refusal of `patch`, says this.
    fn check(&self, error: &str, patch: &str) {
        match self {
            Refusal::Is(expected) => assert_eq!(error, *expected, "patch:\n{patch}"),
            Refusal::Mentions(part) => assert!(error.contains(part), "patch:\n{patch}\n{error}"),
        }
    }
}

#[test]
fn add_update_move_and_delete_in_one_patch() {
    let (dir, tool) = workspace();
    let root = dir.path();
    write(
        root,
        "src/app.py",
        "import sys\n\ndef greet():\n    print(\"Hi\")\n\ngreet()\n",
    );
    write(root, "obsolete.txt", "old\n");
    let patch = "*** Begin Patch
*** Add File: docs/hello.txt
+Hello world
+second line
*** Update File: src/app.py
*** Move to: src/main.py
@@ def greet():
-    print(\"Hi\")
+    print(\"Hello, world!\")
*** Delete File: obsolete.txt
*** End Patch";
    let done = tool.apply(patch).expect("applies");
    assert_eq!(
        done,
        "Done!\nA docs/hello.txt\nM src/app.py -> src/main.py\nD obsolete.txt"
    );
    assert_eq!(read(root, "docs/hello.txt"), "Hello world\nsecond line\n");
    assert_eq!(
        read(root, "src/main.py"),
        "import sys\n\ndef greet():\n    print(\"Hello, world!\")\n\ngreet()\n"
    );
    assert!(!root.join("src/app.py").exists());
    assert!(!root.join("obsolete.txt").exists());
}

#[test]
fn hunks_find_their_place_by_context_and_anchor() {
    let (dir, tool) = workspace();
    let root = dir.path();
    let original = "fn a() {\n    let x = 1;\n    x\n}\n\nfn b() {\n    let x = 1;\n    x\n}\n";
    write(root, "lib.rs", original);
    // The same context occurs twice; the `@@ fn b() {` anchor selects the second one.
    let patch = "*** Begin Patch
*** Update File: lib.rs
@@ fn b() {
-    let x = 1;
+    let x = 2;
     x
*** End Patch";
    tool.apply(patch).expect("applies");
    assert_eq!(
        read(root, "lib.rs"),
        original.replacen("fn b() {\n    let x = 1;", "fn b() {\n    let x = 2;", 1)
    );

    // Two hunks, the first without a header, changing both functions.
    let patch = "*** Begin Patch
*** Update File: lib.rs
 fn a() {
-    let x = 1;
+    let x = 10;
@@
 fn b() {
-    let x = 2;
+    let x = 20;
*** End Patch";
    tool.apply(patch).expect("applies");
    assert_eq!(
        read(root, "lib.rs"),
        "fn a() {\n    let x = 10;\n    x\n}\n\nfn b() {\n    let x = 20;\n    x\n}\n"
    );
}

#[test]
fn single_file_updates_follow_the_format() {
    // (case, file, its content, patch, its content after)
    let cases = [
        (
            "context matches ignoring trailing, then surrounding whitespace",
            "notes.md",
            "title   \n  indented line\nlast\n",
            "*** Begin Patch\n*** Update File: notes.md\n title\n-indented line\n+replaced line\n last\n*** End Patch",
            "title   \nreplaced line\nlast\n",
        ),
        (
            "an end-of-file hunk appends at the end",
            "list.txt",
            "one\ntwo\nthree",
            "*** Begin Patch\n*** Update File: list.txt\n@@\n two\n three\n+four\n*** End of File\n*** End Patch",
            "one\ntwo\nthree\nfour",
        ),
        (
            "a blank line in a hunk is an empty context line",
            "a.py",
            "x = 1\n\ny = 2\n",
            "*** Begin Patch\n*** Update File: a.py\n x = 1\n\n-y = 2\n+y = 3\n*** End Patch",
            "x = 1\n\ny = 3\n",
        ),
        // Deliberate difference: the reference consumes `@@ ` (empty anchor), then rejects the
        // hunk's first line as an "Invalid line in update section"; an empty anchor simply
        // means no anchor.
        (
            "a hunk header of `@@ ` is a bare header",
            "a.txt",
            "one\ntwo\nthree\n",
            "*** Begin Patch\n*** Update File: a.txt\n@@ \n two\n-three\n+THREE\n*** End Patch",
            "one\ntwo\nTHREE\n",
        ),
        (
            "CRLF files keep their line endings",
            "win.txt",
            "alpha\r\nbeta\r\ngamma\r\n",
            "*** Begin Patch\n*** Update File: win.txt\n alpha\n-beta\n+BETA\n gamma\n*** End Patch\n",
            "alpha\r\nBETA\r\ngamma\r\n",
        ),
    ];
    for (case, file, before, patch, after) in cases {
        let (dir, tool) = workspace();
        write(dir.path(), file, before);
        tool.apply(patch).unwrap_or_else(|e| panic!("{case}: {e}"));
        assert_eq!(read(dir.path(), file), after, "{case}");
    }
}

#[test]
fn errors_name_the_problem_and_leave_files_untouched() {
    let (dir, tool) = workspace_with(&[("exists.txt", "content\n")]);
    let root = dir.path();
    let cases = [
        (
            "*** Update File: exists.txt\n-nope\n+yes",
            "Invalid context at 0 in exists.txt:\nnope",
        ),
        (
            "*** Update File: missing.txt\n-a\n+b",
            "Update File Error - missing file: missing.txt",
        ),
        (
            "*** Delete File: missing.txt",
            "Delete File Error - missing file: missing.txt",
        ),
        (
            "*** Add File: exists.txt\n+x",
            "Add File Error - file already exists: exists.txt",
        ),
        (
            "*** Add File: new.txt\nno plus",
            "Invalid Add File line (missing '+'): no plus",
        ),
        (
            "*** Frobnicate File: exists.txt",
            "Unknown line while parsing: *** Frobnicate File: exists.txt",
        ),
        (
            "*** Update File: exists.txt\n*content",
            "Invalid Line: *content",
        ),
        (
            "*** Update File: exists.txt\n***bogus",
            "Invalid Line: ***bogus",
        ),
        (
            "*** Delete File: exists.txt\n*** Delete File: exists.txt",
            "Duplicate delete for file: exists.txt",
        ),
        // A patch with one bad part writes nothing, not even its valid add.
        (
            "*** Add File: new.txt\n+new\n*** Delete File: exists.txt\n*** Update File: exists.txt\n-not there\n+x",
            "Duplicate update for file: exists.txt",
        ),
        (
            "*** Add File: new.txt\n+new\n*** Update File: exists.txt\n-not there\n+x",
            "Invalid context at 0 in exists.txt:\nnot there",
        ),
    ];
    for (body, expected) in cases {
        let patch = format!("*** Begin Patch\n{body}\n*** End Patch");
        assert_eq!(error_of(&tool, &patch), expected, "patch:\n{patch}");
        assert_eq!(read(root, "exists.txt"), "content\n");
        assert!(!root.join("new.txt").exists(), "patch:\n{patch}");
    }
    let missing_sentinel = error_of(&tool, "*** Update File: exists.txt\n-content\n+x");
    assert!(
        missing_sentinel.starts_with("Invalid patch text - missing sentinels"),
        "{missing_sentinel}"
    );
    let trailing = error_of(
        &tool,
        "*** Begin Patch\n*** Delete File: exists.txt\n*** End Patch\nmore\n*** End Patch",
    );
    assert_eq!(
        trailing,
        "text after `*** End Patch` (line 3); send one patch per call"
    );
    assert_eq!(read(root, "exists.txt"), "content\n");
}

#[test]
fn move_onto_an_existing_file_is_refused_unless_it_is_deleted_first() {
    let (dir, tool) = workspace_with(&[("a.txt", "a\n"), ("b.txt", "b\n")]);
    let root = dir.path();
    let error = error_of(
        &tool,
        "*** Begin Patch\n*** Update File: a.txt\n*** Move to: b.txt\n*** End Patch",
    );
    assert_eq!(
        error,
        "Move to: b.txt already exists; delete it first if it should be replaced"
    );
    assert_eq!(read(root, "b.txt"), "b\n");
    tool.apply("*** Begin Patch\n*** Delete File: b.txt\n*** Update File: a.txt\n*** Move to: b.txt\n*** End Patch")
        .expect("delete then move applies");
    assert_eq!(read(root, "b.txt"), "a\n");
    assert!(!root.join("a.txt").exists());
}

#[test]
fn paths_that_leave_the_workspace_are_refused() {
    let outer = tempfile::tempdir().expect("temp dir");
    let root = outer.path().join("workspace");
    fs::create_dir(&root).expect("mkdir");
    let outside = outer.path().join("secret.txt");
    fs::write(&outside, "secret\n").expect("write");
    let tool = ApplyPatch::new(&root).expect("opens");
    // A symlinked folder pointing out of the workspace, one leading up out of it, and a
    // symlinked file pointing out of it.
    std::os::unix::fs::symlink(outer.path(), root.join("link")).expect("symlink");
    std::os::unix::fs::symlink("..", root.join("up")).expect("symlink");
    std::os::unix::fs::symlink("../secret.txt", root.join("secret-link.txt")).expect("symlink");
    fs::write(root.join("inside.txt"), "inside\n").expect("write");

    let absolute = format!("*** Update File: {}\n-secret\n+stolen", outside.display());
    let cases = [
        (
            "*** Add File: ../escape.txt\n+x",
            Refusal::Is("../escape.txt: `..` is not allowed: paths stay inside the workspace"),
        ),
        (
            "*** Delete File: sub/../../secret.txt",
            Refusal::Mentions("`..` is not allowed"),
        ),
        (
            absolute.as_str(),
            Refusal::Mentions("absolute paths outside the workspace"),
        ),
        (
            "*** Add File: link/planted.txt\n+x",
            Refusal::Is(
                "link/planted.txt: `link` is a symbolic link with an absolute target; only relative links that stay inside the workspace are followed",
            ),
        ),
        (
            "*** Add File: up/planted.txt\n+x",
            Refusal::Is("up/planted.txt: `up` is a symbolic link that leads outside the workspace"),
        ),
        // A symlinked file pointing out of the workspace: neither read nor written.
        (
            "*** Update File: secret-link.txt\n-secret\n+stolen",
            Refusal::Is(
                "secret-link.txt: `secret-link.txt` is a symbolic link that leads outside the workspace",
            ),
        ),
        // Renaming a file out through a symlinked folder.
        (
            "*** Update File: inside.txt\n*** Move to: up/moved.txt",
            Refusal::Mentions("leads outside the workspace"),
        ),
    ];
    for (body, refusal) in cases {
        let patch = format!("*** Begin Patch\n{body}\n*** End Patch");
        refusal.check(&error_of(&tool, &patch), &patch);
        assert_eq!(fs::read_to_string(&outside).expect("read"), "secret\n");
        for planted in ["escape.txt", "planted.txt", "moved.txt"] {
            assert!(!outer.path().join(planted).exists(), "patch:\n{patch}");
        }
        assert!(root.join("inside.txt").exists());
    }
}

#[test]
fn paths_inside_the_workspace_may_be_absolute_or_go_through_inner_symlinks() {
    let (dir, tool) = workspace();
    let root = tool.workspace().to_path_buf();
    write(&root, "real/file.txt", "one\n");
    std::os::unix::fs::symlink("real", root.join("alias")).expect("symlink");
    let absolute = root.join("real/file.txt");
    let patch = format!(
        "*** Begin Patch\n*** Update File: {}\n-one\n+two\n*** End Patch",
        absolute.display()
    );
    tool.apply(&patch).expect("absolute path inside applies");
    assert_eq!(read(&root, "real/file.txt"), "two\n");
    tool.apply("*** Begin Patch\n*** Update File: alias/file.txt\n-two\n+three\n*** End Patch")
        .expect("inner symlink applies");
    assert_eq!(read(&root, "real/file.txt"), "three\n");
    drop(dir);
}

#[tokio::test]
async fn as_a_function_it_takes_raw_text_or_json_and_answers_errors_as_messages() {
    let (dir, tool) = workspace();
    let root = dir.path().to_path_buf();
    let mut functions = FunctionTools::new();
    functions.add(tool).expect("valid function");
    let namespace = functions.namespace();
    assert_eq!(namespace.tools[0].name, FUNCTION_NAME);
    assert_eq!(namespace.tools[0].description, "Patch a file");
    assert_eq!(
        namespace.tools[0].parameters,
        Some(serde_json::json!({
            "type": "string",
            "description": "Formatted patch code",
            "default": "*** Begin Patch\n*** End Patch\n"
        }))
    );

    let mut session = functions.open_session();
    let call = |content: &str, content_type: Option<&str>| ToolCall {
        recipient: "functions.apply_patch".into(),
        channel: Some("commentary".into()),
        content_type: content_type.map(String::from),
        content: content.into(),
    };
    let raw = "*** Begin Patch\n*** Add File: a.txt\n+raw\n*** End Patch\n";
    let out = session.call(&call(raw, None)).await;
    assert_eq!(out[0].author, "functions.apply_patch");
    assert_eq!(out[0].channel.as_deref(), Some("commentary"));
    assert_eq!(out[0].content, "Done!\nA a.txt");
    assert_eq!(read(&root, "a.txt"), "raw\n");

    let json_object =
        serde_json::json!({"patch": "*** Begin Patch\n*** Add File: b.txt\n+json\n*** End Patch"})
            .to_string();
    let out = session
        .call(&call(&json_object, Some("<|constrain|>json")))
        .await;
    assert_eq!(out[0].content, "Done!\nA b.txt");

    let json_string =
        serde_json::json!("*** Begin Patch\n*** Delete File: b.txt\n*** End Patch").to_string();
    let out = session.call(&call(&json_string, Some("json"))).await;
    assert_eq!(out[0].content, "Done!\nD b.txt");

    let out = session
        .call(&call(
            "*** Begin Patch\n*** Delete File: gone.txt\n*** End Patch",
            None,
        ))
        .await;
    assert_eq!(
        out[0].content,
        "Error: Delete File Error - missing file: gone.txt"
    );

    let out = session.call(&call("{\"patch\": ", Some("json"))).await;
    assert!(
        out[0]
            .content
            .starts_with("Error: the message looks like JSON but does not parse"),
        "{}",
        out[0].content
    );
}

#[test]
fn the_workspace_must_exist() {
    let dir = tempfile::tempdir().expect("temp dir");
    let missing = dir.path().join("nope");
    let error = ApplyPatch::new(&missing).err().expect("fails").to_string();
    assert!(
        error.starts_with(&format!(
            "cannot open the workspace folder {}",
            missing.display()
        )),
        "{error}"
    );
}

#[tokio::test]
async fn a_hard_link_to_a_file_outside_is_refused_and_the_outside_file_untouched() {
    let outer = tempfile::tempdir().expect("temp dir");
    let root = outer.path().join("workspace");
    fs::create_dir(&root).expect("mkdir");
    let outside = outer.path().join("outside.txt");
    fs::write(&outside, "outside\n").expect("write");
    fs::hard_link(&outside, root.join("link.txt")).expect("hard link");
    let tool = ApplyPatch::new(&root).expect("opens");

    let patch = "*** Begin Patch\n*** Update File: link.txt\n-outside\n+written through the link\n*** End Patch";
    let expected = "link.txt: has 2 hard links (names for the same file, which may be outside the workspace); apply_patch does not edit hard-linked files";
    assert_eq!(error_of(&tool, patch), expected);
    // Moving it is editing it too.
    let error = error_of(
        &tool,
        "*** Begin Patch\n*** Update File: link.txt\n*** Move to: moved.txt\n*** End Patch",
    );
    assert!(error.starts_with("link.txt: has 2 hard links"), "{error}");
    assert!(!root.join("moved.txt").exists());

    // The model reads the refusal as the function's answer.
    let mut functions = FunctionTools::new();
    functions.add(tool.clone()).expect("valid function");
    let mut session = functions.open_session();
    let out = session
        .call(&ToolCall {
            recipient: "functions.apply_patch".into(),
            channel: Some("commentary".into()),
            content_type: None,
            content: patch.into(),
        })
        .await;
    assert_eq!(out[0].content, format!("Error: {expected}"));
    assert_eq!(fs::read_to_string(&outside).expect("read"), "outside\n");

    // Deleting the workspace's name only removes that name.
    tool.apply("*** Begin Patch\n*** Delete File: link.txt\n*** End Patch")
        .expect("deletes");
    assert!(!root.join("link.txt").exists());
    assert_eq!(fs::read_to_string(&outside).expect("read"), "outside\n");
}

#[test]
fn an_update_replaces_the_file_and_never_writes_into_the_original() {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    let (dir, tool) = workspace();
    let root = dir.path();
    let original = "line one\nline two\n".repeat(1000);
    write(root, "src/big.txt", &original);
    fs::set_permissions(root.join("src/big.txt"), fs::Permissions::from_mode(0o750))
        .expect("chmod");
    let before = fs::metadata(root.join("src/big.txt")).expect("stat");
    // A reader holding the original open, as an editor or a crash-time observer would.
    let mut held = fs::File::open(root.join("src/big.txt")).expect("open");

    tool.apply("*** Begin Patch\n*** Update File: src/big.txt\n@@\n-line one\n+line 1\n line two\n*** End Patch")
        .expect("applies");

    let after = fs::metadata(root.join("src/big.txt")).expect("stat");
    assert_ne!(before.ino(), after.ino(), "a new file took the name");
    assert_eq!(after.mode() & 0o7777, 0o750, "permissions are kept");
    assert_eq!(after.nlink(), 1);
    let mut seen = String::new();
    held.read_to_string(&mut seen).expect("read");
    assert_eq!(seen, original, "the original file was never written to");
    assert_eq!(
        read(root, "src/big.txt"),
        original.replacen("line one", "line 1", 1)
    );
    // Nothing is left behind in the folder.
    let names: Vec<String> = fs::read_dir(root.join("src"))
        .expect("list")
        .map(|entry| {
            entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(names, ["big.txt"]);

    // A move keeps the permissions too; an added file gets the default for new files.
    tool.apply("*** Begin Patch\n*** Update File: src/big.txt\n*** Move to: moved/big.txt\n*** Add File: new.txt\n+new\n*** End Patch")
        .expect("applies");
    let moved = fs::metadata(root.join("moved/big.txt")).expect("stat");
    assert_eq!(moved.mode() & 0o7777, 0o750);
    let added = fs::metadata(root.join("new.txt")).expect("stat");
    let created = {
        let probe = root.join("probe");
        fs::write(&probe, "").expect("write");
        fs::metadata(&probe).expect("stat").mode() & 0o7777
    };
    assert_eq!(added.mode() & 0o7777, created);
}

#[test]
fn a_symlinked_file_inside_stays_a_link_and_its_target_is_edited() {
    let (dir, tool) = workspace_with(&[("real.txt", "one\n")]);
    let root = dir.path();
    std::os::unix::fs::symlink("real.txt", root.join("alias.txt")).expect("symlink");
    tool.apply("*** Begin Patch\n*** Update File: alias.txt\n-one\n+two\n*** End Patch")
        .expect("applies");
    assert!(
        fs::symlink_metadata(root.join("alias.txt"))
            .expect("stat")
            .file_type()
            .is_symlink()
    );
    assert_eq!(read(root, "real.txt"), "two\n");
}

#[test]
fn special_and_unwritable_files_are_not_edited() {
    use std::os::unix::fs::PermissionsExt;

    let (dir, tool) = workspace();
    let root = dir.path();
    let fifo = root.join("pipe");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo runs");
    assert!(made.success());
    // Reading a FIFO would block until someone writes to it: refused before any read.
    assert_eq!(
        error_of(
            &tool,
            "*** Begin Patch\n*** Update File: pipe\n-x\n+y\n*** End Patch"
        ),
        "pipe: is not a regular file; apply_patch edits text files only"
    );

    write(root, "locked.txt", "one\n");
    fs::set_permissions(root.join("locked.txt"), fs::Permissions::from_mode(0o444)).expect("chmod");
    let patch = "*** Begin Patch\n*** Update File: locked.txt\n-one\n+two\n*** End Patch";
    let writable_anyway = fs::OpenOptions::new()
        .write(true)
        .open(root.join("locked.txt"))
        .is_ok();
    if writable_anyway {
        // Root writes any file: the edit goes through and the file stays read-only.
        tool.apply(patch).expect("applies");
        assert_eq!(read(root, "locked.txt"), "two\n");
    } else {
        let error = error_of(&tool, patch);
        assert!(error.starts_with("locked.txt: "), "{error}");
        assert!(error.contains("Permission denied"), "{error}");
        assert_eq!(read(root, "locked.txt"), "one\n");
    }
    let mode = fs::metadata(root.join("locked.txt"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o444);
}
