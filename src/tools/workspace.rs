//! The workspace directory tools are confined to, and race-free opening of paths beneath it.
//!
//! Every path from the model is resolved by the kernel with `openat2` relative to an
//! open descriptor of the workspace root and `RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS`.
//! The kernel refuses any resolution step that would leave the root, whether through
//! `..`, an absolute path or a symlink, so there is no window between checking a path
//! and opening it. Symlinks that stay inside the workspace work, but only relative
//! ones: an absolute symlink is refused even when it points into the workspace.
//!
//! All methods make blocking system calls; async callers run them in
//! `tokio::task::spawn_blocking`.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};

use super::sandbox::SandboxOwner;

/// How often an `openat2` that the kernel asks to retry (`EAGAIN`) is attempted before giving up.
const OPEN_ATTEMPTS: usize = 8;

/// Permissions for files created by tools, before the umask: readable by all, writable by the owner.
const FILE_MODE: u32 = 0o644;

/// Permissions for directories created by tools, before the umask.
const DIR_MODE: u32 = 0o755;

/// Why a path could not be used; every message is a plain sentence the model can act on.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// The model sent an empty path where a file is needed.
    #[error("the path is empty; give a path relative to the workspace root")]
    Empty,
    /// The path contains a NUL byte, which no file name can hold.
    #[error("path `{0}` contains a NUL byte")]
    Nul(String),
    /// The path is absolute although only workspace-relative paths are accepted.
    #[error("path `{0}` is absolute; give a path relative to the workspace root")]
    Absolute(String),
    /// Resolving the path would leave the workspace (via `..` or a symlink).
    #[error("path `{0}` leaves the workspace")]
    Escapes(String),
    /// Nothing exists at the path.
    #[error("path `{0}` does not exist")]
    NotFound(String),
    /// A file was expected but the path names a directory.
    #[error("path `{0}` is a directory, not a file")]
    IsDirectory(String),
    /// A directory was expected but the path names something else.
    #[error("path `{0}` is not a directory")]
    NotDirectory(String),
    /// Some component before the last one is a file, so the path cannot be followed.
    #[error("path `{0}` goes through something that is not a directory")]
    ParentNotDirectory(String),
    /// The path names a FIFO, socket or device, which the file tools do not touch.
    #[error("path `{0}` is not a regular file")]
    NotRegular(String),
    /// The operating system refused access.
    #[error("permission denied for path `{0}`")]
    PermissionDenied(String),
    /// Too many symlinks were followed, or one led into `/proc`-style magic links.
    #[error("path `{0}` has too many levels of symbolic links or uses a magic link")]
    Loop(String),
    /// The path or one of its components is longer than the system allows.
    #[error("path `{0}` is too long")]
    TooLong(String),
    /// The kernel kept reporting that the path changed while being resolved.
    #[error("path `{0}` kept changing while being opened; try again")]
    Busy(String),
    /// The kernel lacks `openat2` (Linux 5.6+), without which confinement is impossible.
    #[error(
        "this server's kernel does not support openat2, so workspace files cannot be opened safely"
    )]
    Unsupported,
    /// Any other operating system error.
    #[error("could not access path `{path}`: {source}")]
    Io {
        /// The path as the model gave it.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
}

impl WorkspaceError {
    /// Translates an errno from opening `path` into an error the model understands.
    fn from_errno(path: &str, errno: Errno) -> Self {
        let path = path.to_owned();
        match errno {
            Errno::EXDEV => Self::Escapes(path),
            Errno::ENOENT => Self::NotFound(path),
            Errno::EISDIR => Self::IsDirectory(path),
            Errno::ENOTDIR => Self::ParentNotDirectory(path),
            Errno::EACCES | Errno::EPERM => Self::PermissionDenied(path),
            Errno::ELOOP => Self::Loop(path),
            Errno::ENAMETOOLONG => Self::TooLong(path),
            Errno::EAGAIN => Self::Busy(path),
            Errno::ENOSYS => Self::Unsupported,
            // ENXIO comes from opening a FIFO without a reader with O_NONBLOCK.
            Errno::ENXIO => Self::NotRegular(path),
            other => Self::Io {
                path,
                source: io::Error::from(other),
            },
        }
    }
}

/// The directory an agent's tools work in.
#[derive(Debug)]
pub struct Workspace {
    /// Canonical path of the root, used as the working directory of shell commands.
    root: PathBuf,
    /// Open descriptor of the root, the anchor for every `openat2`, so renames of the path cannot redirect us.
    dir: OwnedFd,
    /// Who must own the files and directories made here, when not the server: the
    /// sandbox user of a root server, so that commands can change what the tools wrote.
    owner: Option<SandboxOwner>,
}

impl Workspace {
    /// Opens (creating it if missing) the workspace rooted at `root`.
    ///
    /// Fails if the kernel lacks `openat2`, because then paths cannot be confined.
    pub fn open(root: &Path) -> io::Result<Workspace> {
        Workspace::open_with_owner(root, None)
    }

    /// Like [`Workspace::open`], giving what the tools make here to `owner`, if any.
    pub fn open_with_owner(root: &Path, owner: Option<SandboxOwner>) -> io::Result<Workspace> {
        std::fs::create_dir_all(root)?;
        let root = root.canonicalize()?;
        let dir = nix::fcntl::open(
            &root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let workspace = Workspace { root, dir, owner };
        // Probe once so a kernel without openat2 is reported at startup, not on the first call.
        workspace
            .open_beneath(".", OFlag::O_PATH | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|errno| match errno {
                Errno::ENOSYS => io::Error::new(
                    io::ErrorKind::Unsupported,
                    "openat2 is not available (Linux 5.6 or newer is required to confine tool paths)",
                ),
                other => io::Error::from(other),
            })?;
        Ok(workspace)
    }

    /// The canonical path of the workspace root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The open descriptor of the workspace root.
    pub fn dir_fd(&self) -> BorrowedFd<'_> {
        self.dir.as_fd()
    }

    /// Opens an existing regular file for reading.
    pub fn open_file_read(&self, rel: &str) -> Result<File, WorkspaceError> {
        let path = check_relative(rel)?;
        // O_NONBLOCK keeps a FIFO from blocking the open; it changes nothing for regular files.
        let fd = self
            .open_beneath(
                path,
                OFlag::O_RDONLY | OFlag::O_NOCTTY | OFlag::O_NONBLOCK,
                Mode::empty(),
            )
            .map_err(|e| WorkspaceError::from_errno(rel, e))?;
        ensure_regular(rel, &fd)?;
        Ok(File::from(fd))
    }

    /// Creates or truncates a regular file for writing, creating missing parent directories.
    pub fn create_file_write(&self, rel: &str) -> Result<File, WorkspaceError> {
        let path = check_relative(rel)?;
        if !matches!(path.components().next_back(), Some(Component::Normal(_))) {
            return Err(WorkspaceError::IsDirectory(rel.to_owned()));
        }
        let flags =
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_TRUNC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
        let mode = Mode::from_bits_truncate(FILE_MODE);
        let fd = match self.open_beneath(path, flags, mode) {
            Err(Errno::ENOENT) => {
                if let Some(parent) = path.parent() {
                    self.create_dirs(rel, parent)?;
                }
                self.open_beneath(path, flags, mode)
            }
            other => other,
        }
        .map_err(|e| WorkspaceError::from_errno(rel, e))?;
        ensure_regular(rel, &fd)?;
        self.claim(rel, &fd)?;
        Ok(File::from(fd))
    }

    /// Gives what `fd` refers to, just made or opened at `rel`, to the workspace's owner.
    fn claim(&self, rel: &str, fd: &OwnedFd) -> Result<(), WorkspaceError> {
        match &self.owner {
            Some(owner) => owner
                .claim(fd)
                .map_err(|e| WorkspaceError::from_errno(rel, e)),
            None => Ok(()),
        }
    }

    /// Opens an existing directory for listing; an empty `rel` means the root.
    pub fn open_dir(&self, rel: &str) -> Result<OwnedFd, WorkspaceError> {
        let path = if rel.is_empty() {
            Path::new(".")
        } else {
            check_relative(rel)?
        };
        self.open_beneath(path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty())
            .map_err(|e| match e {
                Errno::ENOTDIR => WorkspaceError::NotDirectory(rel.to_owned()),
                other => WorkspaceError::from_errno(rel, other),
            })
    }

    /// Creates directory `rel` and any missing parents, returning a descriptor of it.
    pub fn create_dir_all(&self, rel: &str) -> Result<OwnedFd, WorkspaceError> {
        let path = check_relative(rel)?;
        self.create_dirs(rel, path)
    }

    /// Walks `dirs` one component at a time, creating what is missing with `mkdirat`.
    ///
    /// Each prefix is resolved from the root with `openat2`, so `..` and symlinks are
    /// confined, and each new directory is made inside the descriptor of its already
    /// confined parent. `rel` is the path named in error messages.
    fn create_dirs(&self, rel: &str, dirs: &Path) -> Result<OwnedFd, WorkspaceError> {
        let dir_flags = OFlag::O_PATH | OFlag::O_DIRECTORY;
        let map = |e: Errno| match e {
            Errno::ENOTDIR => WorkspaceError::ParentNotDirectory(rel.to_owned()),
            other => WorkspaceError::from_errno(rel, other),
        };
        let mut current = self
            .open_beneath(".", dir_flags, Mode::empty())
            .map_err(map)?;
        let mut prefix = PathBuf::new();
        for component in dirs.components() {
            match component {
                Component::CurDir => {}
                Component::ParentDir => {
                    prefix.push("..");
                    current = self
                        .open_beneath(&prefix, dir_flags, Mode::empty())
                        .map_err(map)?;
                }
                Component::Normal(name) => {
                    prefix.push(name);
                    current = match self.open_beneath(&prefix, dir_flags, Mode::empty()) {
                        Err(Errno::ENOENT) => {
                            let made =
                                match mkdirat(&current, name, Mode::from_bits_truncate(DIR_MODE)) {
                                    Ok(()) => true,
                                    // Someone else may have created it meanwhile; opening it decides.
                                    Err(Errno::EEXIST) => false,
                                    Err(e) => return Err(map(e)),
                                };
                            let dir = self
                                .open_beneath(&prefix, dir_flags, Mode::empty())
                                .map_err(map)?;
                            if made {
                                self.claim(rel, &dir)?;
                            }
                            dir
                        }
                        other => other.map_err(map)?,
                    };
                }
                Component::RootDir | Component::Prefix(_) => {
                    return Err(WorkspaceError::Absolute(rel.to_owned()));
                }
            }
        }
        Ok(current)
    }

    /// `openat2` relative to the root, never resolving outside it or through magic links.
    fn open_beneath<P: ?Sized + nix::NixPath>(
        &self,
        path: &P,
        flags: OFlag,
        mode: Mode,
    ) -> Result<OwnedFd, Errno> {
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_BENEATH | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let mut attempt = 1;
        loop {
            match openat2(self.dir.as_fd(), path, how) {
                // EAGAIN means a concurrent rename made the `..` check unsure; the kernel asks for a retry.
                Err(Errno::EAGAIN | Errno::EINTR) if attempt < OPEN_ATTEMPTS => attempt += 1,
                result => return result,
            }
        }
    }
}

/// Checks the lexical form of a model-supplied path before the kernel resolves it.
fn check_relative(rel: &str) -> Result<&Path, WorkspaceError> {
    if rel.is_empty() {
        return Err(WorkspaceError::Empty);
    }
    if rel.contains('\0') {
        return Err(WorkspaceError::Nul(rel.to_owned()));
    }
    let path = Path::new(rel);
    if path.is_absolute() {
        return Err(WorkspaceError::Absolute(rel.to_owned()));
    }
    Ok(path)
}

/// Refuses anything but a regular file, so reads and writes never hang on FIFOs or devices.
fn ensure_regular(rel: &str, fd: &OwnedFd) -> Result<(), WorkspaceError> {
    let stat = fstat(fd).map_err(|e| WorkspaceError::from_errno(rel, e))?;
    let kind = SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFREG {
        Ok(())
    } else if kind == SFlag::S_IFDIR {
        Err(WorkspaceError::IsDirectory(rel.to_owned()))
    } else {
        Err(WorkspaceError::NotRegular(rel.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::fs::symlink;
    use tempfile::TempDir;

    fn workspace() -> (TempDir, Workspace) {
        let dir = TempDir::new().expect("tempdir");
        let ws = Workspace::open(dir.path()).expect("open workspace");
        (dir, ws)
    }

    #[test]
    fn open_creates_missing_root_and_canonicalizes() {
        let dir = TempDir::new().unwrap();
        let root = dir.path().join("a/b/../c");
        std::fs::create_dir_all(dir.path().join("a/b")).unwrap();
        let ws = Workspace::open(&root).unwrap();
        assert!(ws.root().is_dir());
        assert_eq!(ws.root(), dir.path().canonicalize().unwrap().join("a/c"));
    }

    #[test]
    fn refuses_empty_absolute_and_nul() {
        let (_d, ws) = workspace();
        assert!(matches!(ws.open_file_read(""), Err(WorkspaceError::Empty)));
        let err = ws.open_file_read("/etc/passwd").unwrap_err();
        assert!(matches!(err, WorkspaceError::Absolute(_)));
        assert_eq!(
            err.to_string(),
            "path `/etc/passwd` is absolute; give a path relative to the workspace root"
        );
        assert!(matches!(
            ws.open_file_read("a\0b"),
            Err(WorkspaceError::Nul(_))
        ));
        assert!(matches!(
            ws.create_file_write("/tmp/x"),
            Err(WorkspaceError::Absolute(_))
        ));
        assert!(matches!(ws.open_dir("/"), Err(WorkspaceError::Absolute(_))));
    }

    #[test]
    fn refuses_dotdot_escape() {
        let (_d, ws) = workspace();
        let err = ws.open_file_read("../etc/passwd").unwrap_err();
        assert_eq!(err.to_string(), "path `../etc/passwd` leaves the workspace");
        std::fs::create_dir(ws.root().join("sub")).unwrap();
        assert!(matches!(
            ws.open_file_read("sub/../../x"),
            Err(WorkspaceError::Escapes(_))
        ));
        assert!(matches!(
            ws.create_file_write("../escaped.txt"),
            Err(WorkspaceError::Escapes(_))
        ));
        assert!(matches!(
            ws.create_file_write("new/../../escaped.txt"),
            Err(WorkspaceError::Escapes(_))
        ));
        assert!(matches!(ws.open_dir(".."), Err(WorkspaceError::Escapes(_))));
    }

    #[test]
    fn dotdot_that_stays_inside_is_allowed() {
        let (_d, ws) = workspace();
        std::fs::create_dir(ws.root().join("sub")).unwrap();
        std::fs::write(ws.root().join("a.txt"), "hi").unwrap();
        let mut s = String::new();
        ws.open_file_read("sub/../a.txt")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hi");
    }

    #[test]
    fn refuses_symlinks_leading_outside() {
        let (_d, ws) = workspace();
        symlink("/etc", ws.root().join("etc_abs")).unwrap();
        symlink("../../../../../../../../etc", ws.root().join("etc_rel")).unwrap();
        for path in ["etc_abs/passwd", "etc_rel/passwd"] {
            let err = ws.open_file_read(path).unwrap_err();
            assert!(matches!(err, WorkspaceError::Escapes(_)), "{path}: {err}");
        }
        assert!(matches!(
            ws.open_dir("etc_abs"),
            Err(WorkspaceError::Escapes(_))
        ));

        let outside = TempDir::new().unwrap();
        symlink(outside.path(), ws.root().join("out")).unwrap();
        assert!(matches!(
            ws.create_file_write("out/pwned.txt"),
            Err(WorkspaceError::Escapes(_))
        ));
        assert!(matches!(
            ws.create_file_write("out/deeper/pwned.txt"),
            Err(WorkspaceError::Escapes(_))
        ));
        // A dangling symlink as the final component must not create its outside target either.
        symlink(outside.path().join("made.txt"), ws.root().join("dangling")).unwrap();
        assert!(matches!(
            ws.create_file_write("dangling"),
            Err(WorkspaceError::Escapes(_))
        ));
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
    }

    #[test]
    fn symlinks_inside_are_followed() {
        let (_d, ws) = workspace();
        std::fs::create_dir(ws.root().join("sub")).unwrap();
        std::fs::write(ws.root().join("sub/a.txt"), "inside").unwrap();
        symlink("sub", ws.root().join("dirlink")).unwrap();
        symlink("sub/a.txt", ws.root().join("filelink")).unwrap();
        symlink("../sub/a.txt", ws.root().join("sub/up")).unwrap();
        for path in ["dirlink/a.txt", "filelink", "sub/up"] {
            let mut s = String::new();
            ws.open_file_read(path)
                .unwrap()
                .read_to_string(&mut s)
                .unwrap();
            assert_eq!(s, "inside", "{path}");
        }
        ws.create_file_write("dirlink/b.txt")
            .unwrap()
            .write_all(b"via link")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(ws.root().join("sub/b.txt")).unwrap(),
            "via link"
        );
        ws.open_dir("dirlink").unwrap();
    }

    #[test]
    fn create_file_write_makes_parents_and_truncates() {
        let (_d, ws) = workspace();
        ws.create_file_write("a/b/c.txt")
            .unwrap()
            .write_all(b"long content")
            .unwrap();
        ws.create_file_write("./a/./b/../b/c.txt")
            .unwrap()
            .write_all(b"short")
            .unwrap();
        assert_eq!(
            std::fs::read_to_string(ws.root().join("a/b/c.txt")).unwrap(),
            "short"
        );
        ws.create_dir_all("x/y/z").unwrap();
        assert!(ws.root().join("x/y/z").is_dir());
    }

    #[test]
    fn what_the_tools_make_belongs_to_the_workspace_owner() {
        use std::os::unix::fs::MetadataExt;
        // Only root can give files away, and only a root server has an owner to give to.
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let dir = TempDir::new().unwrap();
        let owner = SandboxOwner::new(65_534);
        let ws = Workspace::open_with_owner(dir.path(), Some(owner)).unwrap();
        std::fs::create_dir(ws.root().join("old")).unwrap();

        ws.create_file_write("old/new/deeper/file.txt").unwrap();

        let uid = |rel: &str| std::fs::metadata(ws.root().join(rel)).unwrap().uid();
        for rel in ["old/new", "old/new/deeper", "old/new/deeper/file.txt"] {
            assert_eq!(uid(rel), owner.uid(), "{rel}");
        }
        assert_eq!(uid("old"), 0, "only what the tool made");
    }

    #[test]
    fn type_errors_are_reported() {
        let (_d, ws) = workspace();
        std::fs::create_dir(ws.root().join("dir")).unwrap();
        std::fs::write(ws.root().join("file"), "x").unwrap();
        assert!(matches!(
            ws.open_file_read("dir"),
            Err(WorkspaceError::IsDirectory(_))
        ));
        assert!(matches!(
            ws.create_file_write("dir"),
            Err(WorkspaceError::IsDirectory(_))
        ));
        assert!(matches!(
            ws.create_file_write("."),
            Err(WorkspaceError::IsDirectory(_))
        ));
        assert!(matches!(
            ws.open_file_read("missing"),
            Err(WorkspaceError::NotFound(_))
        ));
        assert!(matches!(
            ws.open_dir("file"),
            Err(WorkspaceError::NotDirectory(_))
        ));
        assert!(matches!(
            ws.open_file_read("file/x"),
            Err(WorkspaceError::ParentNotDirectory(_))
        ));
        assert!(matches!(
            ws.create_file_write("file/x/y.txt"),
            Err(WorkspaceError::ParentNotDirectory(_))
        ));
    }

    #[test]
    fn fifo_is_refused_without_blocking() {
        let (_d, ws) = workspace();
        nix::unistd::mkfifo(&ws.root().join("pipe"), Mode::from_bits_truncate(0o644)).unwrap();
        assert!(matches!(
            ws.open_file_read("pipe"),
            Err(WorkspaceError::NotRegular(_))
        ));
        assert!(matches!(
            ws.create_file_write("pipe"),
            Err(WorkspaceError::NotRegular(_))
        ));
    }
}
