//! The sandbox user's share of the workspace: who owns what is in it when the server runs as root.
//!
//! A root server runs `shell` commands as an unprivileged user (the sandbox user), who
//! must be able to change the workspace. So at start everything in the workspace that
//! root owns is handed to that user, and whatever the file tools create later (as root)
//! is given to it as it is made. Only what root owns changes hands: files of other users
//! stay theirs.
//!
//! The walk never follows a symbolic link and never leaves the workspace's file system.
//! It leaves to root what could be a second name of something outside the workspace: a
//! regular file with more than one hard link (say, a link to a root-owned file elsewhere,
//! which a chown would hand over too) and device nodes.

use std::io;
use std::os::fd::{AsFd, AsRawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat2};
use nix::sys::stat::{FileStat, Mode, SFlag, fstat, fstatat};
use nix::unistd::{Gid, Uid, fchownat};

/// The user and group that own the workspace's contents for sandboxed commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SandboxOwner {
    /// The sandbox user.
    uid: Uid,
    /// Its group; the same number as the user, as for nobody/nogroup.
    gid: Gid,
}

/// What [`SandboxOwner::hand_over`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct HandOver {
    /// Entries that root owned and now belong to the sandbox user.
    pub changed: u64,
    /// Root-owned entries left to root: hard-linked files and special files.
    pub kept: u64,
}

impl SandboxOwner {
    /// The user `id` with the group of the same number.
    pub fn new(id: u32) -> Self {
        Self {
            uid: Uid::from_raw(id),
            gid: Gid::from_raw(id),
        }
    }

    /// The sandbox user's id.
    pub fn uid(&self) -> u32 {
        self.uid.as_raw()
    }

    /// The sandbox group's id.
    pub fn gid(&self) -> u32 {
        self.gid.as_raw()
    }

    /// Hands the directory `root` and what root owns beneath it to the sandbox user.
    ///
    /// Blocking; it visits every entry of the workspace once.
    pub fn hand_over(&self, root: &Path) -> io::Result<HandOver> {
        let root_fd = nix::fcntl::open(
            root,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
        let root_stat = fstat(&root_fd)?;
        let mut tally = HandOver::default();
        if root_stat.st_uid == 0 {
            self.give(&root_fd, "", AtFlags::AT_EMPTY_PATH)?;
            tally.changed += 1;
        }
        // Paths relative to the root rather than open descriptors, so that a wide tree
        // does not hold thousands of descriptors at once.
        let mut pending = vec![PathBuf::from(".")];
        while let Some(relative) = pending.pop() {
            let how = OpenHow::new()
                .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC)
                .resolve(
                    ResolveFlag::RESOLVE_BENEATH
                        | ResolveFlag::RESOLVE_NO_SYMLINKS
                        | ResolveFlag::RESOLVE_NO_XDEV,
                );
            let dir = match openat2(&root_fd, &relative, how) {
                Ok(dir) => dir,
                // Gone, or turned into a symlink or a mount since it was listed.
                Err(Errno::ENOENT | Errno::ENOTDIR | Errno::ELOOP | Errno::EXDEV) => continue,
                Err(e) => return Err(e.into()),
            };
            // std cannot list a directory descriptor, but its /proc entry is that very directory.
            for entry in std::fs::read_dir(format!("/proc/self/fd/{}", dir.as_raw_fd()))? {
                let name = entry?.file_name();
                let Ok(stat) = fstatat(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW) else {
                    continue;
                };
                if stat.st_dev != root_stat.st_dev {
                    continue;
                }
                if kind(&stat) == SFlag::S_IFDIR {
                    pending.push(relative.join(&name));
                }
                if stat.st_uid != 0 {
                    continue;
                }
                if !may_change_hands(&stat) {
                    tally.kept += 1;
                    continue;
                }
                self.give(&dir, name.as_os_str(), AtFlags::AT_SYMLINK_NOFOLLOW)?;
                tally.changed += 1;
            }
        }
        Ok(tally)
    }

    /// Gives the file or directory open as `fd`, which the file tools just made or
    /// opened, to the sandbox user if root owns it.
    pub fn claim(&self, fd: impl AsFd) -> nix::Result<()> {
        let stat = fstat(&fd)?;
        if stat.st_uid != 0 || !may_change_hands(&stat) {
            return Ok(());
        }
        // AT_EMPTY_PATH acts on the descriptor itself, which may be an O_PATH one.
        self.give(fd, "", AtFlags::AT_EMPTY_PATH)
    }

    fn give(
        &self,
        dir: impl AsFd,
        name: &(impl nix::NixPath + ?Sized),
        flags: AtFlags,
    ) -> nix::Result<()> {
        fchownat(dir, name, Some(self.uid), Some(self.gid), flags)
    }
}

/// The file type bits of `stat`.
fn kind(stat: &FileStat) -> SFlag {
    SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT
}

/// Whether giving this entry away gives away nothing but itself.
fn may_change_hands(stat: &FileStat) -> bool {
    let kind = kind(stat);
    kind == SFlag::S_IFDIR
        || kind == SFlag::S_IFLNK
        || (kind == SFlag::S_IFREG && stat.st_nlink == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, symlink};
    use tempfile::TempDir;

    const SANDBOX_ID: u32 = 65_534;

    fn owner_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().uid()
    }

    /// Changing owners needs root; as anyone else these tests have nothing to check.
    fn root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    #[test]
    fn what_root_owns_in_the_workspace_is_handed_over_and_nothing_else() {
        if !root() {
            return;
        }
        let workspace = TempDir::new().unwrap();
        let outside = TempDir::new().unwrap();
        let ws = workspace.path();
        std::fs::create_dir_all(ws.join("src/deep")).unwrap();
        std::fs::write(ws.join("src/deep/main.rs"), "fn main() {}").unwrap();
        std::fs::write(ws.join("theirs.txt"), "x").unwrap();
        std::os::unix::fs::chown(ws.join("theirs.txt"), Some(1234), Some(1234)).unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        symlink(outside.path(), ws.join("link-to-outside")).unwrap();
        std::fs::hard_link(outside.path().join("secret"), ws.join("hard-link")).unwrap();

        let tally = SandboxOwner::new(SANDBOX_ID).hand_over(ws).unwrap();

        for path in ["", "src", "src/deep", "src/deep/main.rs", "link-to-outside"] {
            assert_eq!(owner_of(&ws.join(path)), SANDBOX_ID, "{path}");
        }
        assert_eq!(owner_of(&ws.join("theirs.txt")), 1234);
        assert_eq!(owner_of(outside.path()), 0, "the symlink was not followed");
        assert_eq!(
            owner_of(&outside.path().join("secret")),
            0,
            "nor the hard link"
        );
        assert_eq!(
            tally,
            HandOver {
                changed: 5,
                kept: 1
            }
        );
    }

    #[test]
    fn a_claimed_file_belongs_to_the_sandbox_user_unless_another_user_owns_it() {
        if !root() {
            return;
        }
        let dir = TempDir::new().unwrap();
        let owner = SandboxOwner::new(SANDBOX_ID);
        let mine = std::fs::File::create(dir.path().join("new")).unwrap();
        owner.claim(&mine).unwrap();
        assert_eq!(owner_of(&dir.path().join("new")), SANDBOX_ID);

        let theirs = std::fs::File::create(dir.path().join("theirs")).unwrap();
        std::os::unix::fs::chown(dir.path().join("theirs"), Some(1234), None).unwrap();
        owner.claim(&theirs).unwrap();
        assert_eq!(owner_of(&dir.path().join("theirs")), 1234);
    }
}
