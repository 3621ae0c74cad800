//! The `read_file`, `write_file` and `list_files` tools, all confined to the workspace.
//!
//! Each tool checks its arguments, then does all its file work in one
//! `spawn_blocking` task, because opening, reading and listing are blocking calls.

use std::collections::BinaryHeap;
use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

use nix::fcntl::{AtFlags, readlinkat};
use nix::sys::stat::{SFlag, fstatat};
use serde_json::Value;

use super::workspace::WorkspaceError;
use super::{
    Args, CappedBuffer, OUTPUT_CAP_BYTES, ToolContext, ToolOutcome, Workspace, cap_output,
};

/// The most directory entries `list_files` shows, so huge directories stay readable.
pub const MAX_LIST_ENTRIES: usize = 1000;

/// Size of each read from a file, big enough to keep syscalls few.
const READ_CHUNK: usize = 64 * 1024;

/// Runs `work` on the blocking pool with the workspace; a panic there becomes a failed outcome.
async fn blocking(
    tool: &'static str,
    workspace: &Arc<Workspace>,
    work: impl FnOnce(&Workspace) -> ToolOutcome + Send + 'static,
) -> ToolOutcome {
    let workspace = Arc::clone(workspace);
    match tokio::task::spawn_blocking(move || work(&workspace)).await {
        Ok(outcome) => outcome,
        Err(e) => {
            tracing::error!(tool, error = %e, "file tool task failed");
            ToolOutcome::failure(format!("{tool}: internal error: {e}"))
        }
    }
}

/// The `read_file` tool: a text file's content, capped to head and tail.
pub async fn read_file(args: &Value, ctx: &ToolContext) -> ToolOutcome {
    let path = match Args::parse("read_file", args, &["path"]).and_then(|a| a.string("path")) {
        Ok(path) => path.to_owned(),
        Err(e) => return ToolOutcome::failure(e.to_string()),
    };
    blocking("read_file", &ctx.workspace, move |ws| {
        match read_capped(ws, &path) {
            Ok(text) => ToolOutcome::success(text),
            Err(message) => ToolOutcome::failure(format!("read_file: {message}")),
        }
    })
    .await
}

/// Reads `rel` keeping at most its first and last [`OUTPUT_CAP_BYTES`] in memory.
fn read_capped(ws: &Workspace, rel: &str) -> Result<String, String> {
    let mut file = ws.open_file_read(rel).map_err(|e| e.to_string())?;
    let io_err = |e: std::io::Error| format!("could not read path `{rel}`: {e}");
    let size = file.metadata().map_err(io_err)?.len();
    let mut buffer = CappedBuffer::new(OUTPUT_CAP_BYTES);
    let window = OUTPUT_CAP_BYTES as u64;
    if size > 2 * window {
        // Seek past the middle instead of reading gigabytes only to throw them away.
        copy_into(&mut (&mut file).take(window), &mut buffer).map_err(io_err)?;
        file.seek(SeekFrom::End(-(window as i64))).map_err(io_err)?;
        buffer.skip(size - 2 * window);
    }
    // Reading to the end (not to `size`) also picks up whatever was appended meanwhile.
    copy_into(&mut file, &mut buffer).map_err(io_err)?;
    Ok(buffer.into_excerpt().fit(OUTPUT_CAP_BYTES))
}

/// Feeds everything `reader` yields into `buffer`.
fn copy_into(reader: &mut impl Read, buffer: &mut CappedBuffer) -> std::io::Result<()> {
    let mut chunk = vec![0; READ_CHUNK];
    loop {
        match reader.read(&mut chunk) {
            Ok(0) => return Ok(()),
            Ok(n) => buffer.push(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// The `write_file` tool: creates or replaces a file with the given content.
pub async fn write_file(args: &Value, ctx: &ToolContext) -> ToolOutcome {
    let parsed = Args::parse("write_file", args, &["path", "content"])
        .and_then(|a| Ok((a.string("path")?, a.string("content")?)));
    let (path, content) = match parsed {
        Ok((path, content)) => (path.to_owned(), content.to_owned()),
        Err(e) => return ToolOutcome::failure(e.to_string()),
    };
    blocking("write_file", &ctx.workspace, move |ws| {
        let result = ws
            .create_file_write(&path)
            .map_err(|e| e.to_string())
            .and_then(|mut file| {
                file.write_all(content.as_bytes())
                    .map_err(|e| format!("could not write path `{path}`: {e}"))
            });
        match result {
            Ok(()) => ToolOutcome::success(format!("wrote {} bytes to {path}", content.len())),
            Err(message) => ToolOutcome::failure(format!("write_file: {message}")),
        }
    })
    .await
}

/// The `list_files` tool: one sorted line per directory entry.
pub async fn list_files(args: &Value, ctx: &ToolContext) -> ToolOutcome {
    let path = match Args::parse("list_files", args, &["path"]).and_then(|a| a.opt_string("path")) {
        Ok(path) => path.unwrap_or(".").to_owned(),
        Err(e) => return ToolOutcome::failure(e.to_string()),
    };
    blocking("list_files", &ctx.workspace, move |ws| {
        match list_dir(ws, &path) {
            Ok(listing) => ToolOutcome::success(cap_output(&listing)),
            Err(message) => ToolOutcome::failure(format!("list_files: {message}")),
        }
    })
    .await
}

/// Lists directory `rel`: the first [`MAX_LIST_ENTRIES`] names in byte order, plus a count of the rest.
fn list_dir(ws: &Workspace, rel: &str) -> Result<String, String> {
    let dir = ws
        .open_dir(rel)
        .map_err(|e: WorkspaceError| e.to_string())?;
    let io_err = |e: std::io::Error| format!("could not list path `{rel}`: {e}");
    // std cannot read a directory from a descriptor, but the descriptor's /proc entry
    // reopens exactly the directory already opened beneath the root, whatever its path is now.
    let entries =
        std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd())).map_err(io_err)?;

    // A max-heap holding the smallest names seen keeps memory bounded in huge directories.
    let mut smallest: BinaryHeap<Vec<u8>> = BinaryHeap::with_capacity(MAX_LIST_ENTRIES + 1);
    let mut total = 0usize;
    for entry in entries {
        let name = entry.map_err(io_err)?.file_name().into_vec();
        total += 1;
        smallest.push(name);
        if smallest.len() > MAX_LIST_ENTRIES {
            smallest.pop();
        }
    }
    if total == 0 {
        return Ok("(empty directory)\n".to_owned());
    }

    let mut out = String::new();
    for name in smallest.into_sorted_vec() {
        out.push_str(&describe_entry(&dir, OsString::from_vec(name)));
        out.push('\n');
    }
    if total > MAX_LIST_ENTRIES {
        out.push_str(&format!(
            "[... {} more entries not shown; list a subdirectory or filter with the shell tool]\n",
            total - MAX_LIST_ENTRIES
        ));
    }
    Ok(out)
}

/// One listing line: `name/` for directories, `name -> target` for symlinks, else `name`.
fn describe_entry(dir: &OwnedFd, name: OsString) -> String {
    let shown = String::from_utf8_lossy(name.as_bytes()).into_owned();
    // The entry may vanish between reading the directory and this call; then just show its name.
    let Ok(stat) = fstatat(dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
        return shown;
    };
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFDIR {
        format!("{shown}/")
    } else if kind == SFlag::S_IFLNK {
        match readlinkat(dir, name.as_os_str()) {
            Ok(target) => format!("{shown} -> {}", target.to_string_lossy()),
            Err(_) => shown,
        }
    } else {
        shown
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::execute;
    use serde_json::json;
    use std::os::unix::fs::symlink;
    use tempfile::TempDir;

    fn context() -> (TempDir, ToolContext) {
        let dir = TempDir::new().expect("tempdir");
        let workspace = Arc::new(Workspace::open(dir.path()).expect("open workspace"));
        (
            dir,
            ToolContext {
                workspace,
                loki: None,
                sandbox: Arc::new(crate::tools::sandbox::Sandbox::unconfined()),
                mcp: Default::default(),
            },
        )
    }

    #[tokio::test]
    async fn write_then_read_round_trip() {
        let (_d, ctx) = context();
        let out = execute(
            "write_file",
            &json!({"path": "notes/a.txt", "content": "héllo\n"}),
            &ctx,
        )
        .await;
        assert_eq!(out, ToolOutcome::success("wrote 7 bytes to notes/a.txt"));
        let out = execute("read_file", &json!({"path": "notes/a.txt"}), &ctx).await;
        assert_eq!(out, ToolOutcome::success("héllo\n"));
        // Overwriting truncates.
        execute(
            "write_file",
            &json!({"path": "notes/a.txt", "content": "x"}),
            &ctx,
        )
        .await;
        let out = execute("read_file", &json!({"path": "notes/a.txt"}), &ctx).await;
        assert_eq!(out.output, "x");
    }

    #[tokio::test]
    async fn read_errors_are_messages() {
        let (_d, ctx) = context();
        std::fs::create_dir(ctx.workspace.root().join("dir")).unwrap();
        let cases = [
            (
                json!({"path": "missing.txt"}),
                "read_file: path `missing.txt` does not exist",
            ),
            (
                json!({"path": "dir"}),
                "read_file: path `dir` is a directory, not a file",
            ),
            (
                json!({"path": "../x"}),
                "read_file: path `../x` leaves the workspace",
            ),
            (
                json!({"path": "/etc/passwd"}),
                "read_file: path `/etc/passwd` is absolute; give a path relative to the workspace root",
            ),
            (json!({}), "read_file: missing string field `path`"),
            (
                json!({"path": 3}),
                "read_file: field `path` must be a string, got a number",
            ),
            (
                json!({"path": "a", "mode": "r"}),
                "read_file: unknown field `mode`; allowed fields are `path`",
            ),
            (
                json!("a.txt"),
                "read_file: arguments must be a JSON object, got a string",
            ),
        ];
        for (args, message) in cases {
            let out = execute("read_file", &args, &ctx).await;
            assert_eq!(out, ToolOutcome::failure(message), "{args}");
        }
    }

    #[tokio::test]
    async fn read_is_lossy_for_invalid_utf8() {
        let (_d, ctx) = context();
        std::fs::write(ctx.workspace.root().join("bin"), b"ok\xff\xfe!").unwrap();
        let out = execute("read_file", &json!({"path": "bin"}), &ctx).await;
        assert!(out.ok);
        assert_eq!(out.output, "ok\u{FFFD}\u{FFFD}!");
    }

    #[tokio::test]
    async fn read_caps_large_files_keeping_head_and_tail() {
        let (_d, ctx) = context();
        for size in [OUTPUT_CAP_BYTES + 1000, 5 * OUTPUT_CAP_BYTES] {
            let mut content = String::from("BEGIN");
            while content.len() < size - 3 {
                content.push_str("é€");
            }
            content.truncate(floor(&content, size - 3));
            content.push_str("END");
            std::fs::write(ctx.workspace.root().join("big"), &content).unwrap();
            let out = execute("read_file", &json!({"path": "big"}), &ctx).await;
            assert!(out.ok);
            assert!(out.output.len() <= OUTPUT_CAP_BYTES);
            assert!(out.output.starts_with("BEGIN"));
            assert!(out.output.ends_with("END"));
            assert!(!out.output.contains('\u{FFFD}'));
            let cut = crate::tools::tests::cut_count(&out.output);
            let marker = crate::tools::cut_marker(cut).len();
            assert_eq!(out.output.len() - marker + cut as usize, content.len());
        }
    }

    fn floor(s: &str, mut i: usize) -> usize {
        while !s.is_char_boundary(i) {
            i -= 1;
        }
        i
    }

    #[tokio::test]
    async fn write_errors_are_messages() {
        let (_d, ctx) = context();
        std::fs::create_dir(ctx.workspace.root().join("dir")).unwrap();
        let outside = TempDir::new().unwrap();
        symlink(outside.path(), ctx.workspace.root().join("out")).unwrap();
        let cases = [
            (
                json!({"path": "dir", "content": ""}),
                "write_file: path `dir` is a directory, not a file",
            ),
            (
                json!({"path": "out/x", "content": ""}),
                "write_file: path `out/x` leaves the workspace",
            ),
            (
                json!({"path": "x"}),
                "write_file: missing string field `content`",
            ),
            (
                json!({"path": "x", "content": null}),
                "write_file: missing string field `content`",
            ),
            (
                json!({"path": "x", "content": ["a"]}),
                "write_file: field `content` must be a string, got an array",
            ),
        ];
        for (args, message) in cases {
            let out = execute("write_file", &args, &ctx).await;
            assert_eq!(out, ToolOutcome::failure(message), "{args}");
        }
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[tokio::test]
    async fn list_sorts_and_marks_kinds() {
        let (_d, ctx) = context();
        let root = ctx.workspace.root();
        std::fs::create_dir(root.join("b_dir")).unwrap();
        std::fs::write(root.join("a.txt"), "").unwrap();
        std::fs::write(root.join("C.txt"), "").unwrap();
        std::fs::write(root.join("b_dir/inner"), "").unwrap();
        symlink("a.txt", root.join("link")).unwrap();
        let out = execute("list_files", &json!({}), &ctx).await;
        assert_eq!(
            out,
            ToolOutcome::success("C.txt\na.txt\nb_dir/\nlink -> a.txt\n")
        );
        let out = execute("list_files", &json!({"path": "b_dir"}), &ctx).await;
        assert_eq!(out.output, "inner\n");
        let out = execute("list_files", &json!({"path": "b_dir/.."}), &ctx).await;
        assert!(out.output.starts_with("C.txt\n"));
    }

    #[tokio::test]
    async fn list_errors_and_empty() {
        let (_d, ctx) = context();
        std::fs::write(ctx.workspace.root().join("f"), "").unwrap();
        std::fs::create_dir(ctx.workspace.root().join("empty")).unwrap();
        symlink("/etc", ctx.workspace.root().join("etc")).unwrap();
        let out = execute("list_files", &json!({"path": "empty"}), &ctx).await;
        assert_eq!(out, ToolOutcome::success("(empty directory)\n"));
        let cases = [
            (
                json!({"path": "f"}),
                "list_files: path `f` is not a directory",
            ),
            (
                json!({"path": "nope"}),
                "list_files: path `nope` does not exist",
            ),
            (
                json!({"path": ".."}),
                "list_files: path `..` leaves the workspace",
            ),
            (
                json!({"path": "etc"}),
                "list_files: path `etc` leaves the workspace",
            ),
            (
                json!({"path": "/"}),
                "list_files: path `/` is absolute; give a path relative to the workspace root",
            ),
            (
                json!({"path": false}),
                "list_files: field `path` must be a string, got a boolean",
            ),
        ];
        for (args, message) in cases {
            let out = execute("list_files", &args, &ctx).await;
            assert_eq!(out, ToolOutcome::failure(message), "{args}");
        }
    }

    #[tokio::test]
    async fn list_caps_entries() {
        let (_d, ctx) = context();
        for i in 0..MAX_LIST_ENTRIES + 5 {
            std::fs::write(ctx.workspace.root().join(format!("f{i:05}")), "").unwrap();
        }
        let out = execute("list_files", &json!({"path": "."}), &ctx).await;
        assert!(out.ok);
        let lines: Vec<&str> = out.output.lines().collect();
        assert_eq!(lines.len(), MAX_LIST_ENTRIES + 1);
        assert_eq!(lines[0], "f00000");
        assert_eq!(
            lines[MAX_LIST_ENTRIES - 1],
            format!("f{:05}", MAX_LIST_ENTRIES - 1)
        );
        assert!(lines[MAX_LIST_ENTRIES].contains("5 more entries not shown"));
    }
}
