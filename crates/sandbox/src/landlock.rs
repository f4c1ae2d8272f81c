//! Landlock (Linux ≥ 5.13): the kernel's unprivileged access control, through its three system
//! calls. A ruleset is built in the parent (it needs allocations and path lookups); the child
//! only calls `landlock_restrict_self` between `fork` and `exec`.
//!
//! What a worker gets: read and execute beneath the interpreter's and the system's directories,
//! everything beneath its working directory, `/dev/null` for writing — and nothing else: no
//! writes, deletions or renames anywhere else; with ABI ≥ 4 no TCP bind or connect; with ABI ≥ 6
//! no signals to processes outside the sandbox and no abstract Unix sockets outside it.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

// Filesystem access rights (include/uapi/linux/landlock.h).
const EXECUTE: u64 = 1 << 0;
const WRITE_FILE: u64 = 1 << 1;
const READ_FILE: u64 = 1 << 2;
const READ_DIR: u64 = 1 << 3;
const TRUNCATE: u64 = 1 << 14;
const IOCTL_DEV: u64 = 1 << 15;
// Network access rights (ABI 4).
const BIND_TCP: u64 = 1 << 0;
const CONNECT_TCP: u64 = 1 << 1;
// Scopes (ABI 6).
const SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1 << 0;
const SCOPE_SIGNAL: u64 = 1 << 1;

const RULE_PATH_BENEATH: libc::c_int = 1;
const CREATE_RULESET_VERSION: u32 = 1 << 0;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

#[repr(C, packed)]
struct PathBeneathAttr {
    allowed_access: u64,
    parent_fd: i32,
}

/// The Landlock ABI version the running kernel offers (0: none).
pub fn abi() -> u32 {
    // SAFETY: with a null attribute, size 0 and the VERSION flag the call only returns the ABI
    // version (or an error); it reads and writes no memory.
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            CREATE_RULESET_VERSION,
        )
    };
    if v < 0 { 0 } else { v as u32 }
}

/// Every filesystem right the ABI knows.
fn fs_rights(abi: u32) -> u64 {
    let mut all = (1u64 << 13) - 1; // ABI 1: EXECUTE … MAKE_SYM
    if abi >= 2 {
        all |= 1 << 13; // REFER
    }
    if abi >= 3 {
        all |= TRUNCATE;
    }
    if abi >= 5 {
        all |= IOCTL_DEV;
    }
    all
}

/// A ruleset ready for [`restrict_self`].
pub struct Ruleset {
    fd: OwnedFd,
}

impl Ruleset {
    /// `read` paths (directories or files) get read and execute; `write` directories get every
    /// right; `write_files` get read and write. Paths that do not exist are left out.
    pub fn build(
        abi: u32,
        read: &[&Path],
        write: &[&Path],
        write_files: &[&Path],
    ) -> std::io::Result<Self> {
        let handled = fs_rights(abi);
        let attr = RulesetAttr {
            handled_access_fs: handled,
            handled_access_net: if abi >= 4 { BIND_TCP | CONNECT_TCP } else { 0 },
            scoped: if abi >= 6 {
                SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
            } else {
                0
            },
        };
        // The attribute grew with the ABI; the kernel takes the prefix it knows.
        let size = match abi {
            0..=3 => 8,
            4 | 5 => 16,
            _ => std::mem::size_of::<RulesetAttr>(),
        };
        // SAFETY: `attr` is a live, initialised struct of at least `size` bytes.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_landlock_create_ruleset,
                &attr as *const RulesetAttr,
                size,
                0u32,
            )
        };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: the kernel returned a new file descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as i32) };
        let ruleset = Self { fd };
        let file_rights = EXECUTE | WRITE_FILE | READ_FILE | (handled & (TRUNCATE | IOCTL_DEV));
        for p in read {
            ruleset.allow(p, EXECUTE | READ_FILE | READ_DIR, file_rights)?;
        }
        for p in write {
            ruleset.allow(p, handled, file_rights)?;
        }
        for p in write_files {
            ruleset.allow(
                p,
                READ_FILE | WRITE_FILE | (handled & TRUNCATE),
                file_rights,
            )?;
        }
        Ok(ruleset)
    }

    fn allow(&self, path: &Path, rights: u64, file_rights: u64) -> std::io::Result<()> {
        let Ok(c) = CString::new(path.as_os_str().as_bytes()) else {
            return Ok(());
        };
        // SAFETY: `c` is a valid NUL-terminated path; O_PATH opens nothing for reading.
        let raw = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
        if raw < 0 {
            return Ok(()); // absent on this machine: nothing to allow
        }
        // SAFETY: `open` returned a new descriptor owned here.
        let pfd = unsafe { OwnedFd::from_raw_fd(raw) };
        let rights = if path.is_dir() {
            rights
        } else {
            rights & file_rights
        };
        let attr = PathBeneathAttr {
            allowed_access: rights,
            parent_fd: pfd.as_raw_fd(),
        };
        // SAFETY: `attr` is a live packed struct as the kernel expects; both fds are open.
        let r = unsafe {
            libc::syscall(
                libc::SYS_landlock_add_rule,
                self.fd.as_raw_fd(),
                RULE_PATH_BENEATH,
                &attr as *const PathBeneathAttr,
                0u32,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// Enforce the ruleset on the calling process and its future children. Async-signal-safe (two
/// system calls): for use between `fork` and `exec`.
pub fn restrict_self(ruleset_fd: i32) -> std::io::Result<()> {
    // SAFETY: plain system calls on integers; no memory is passed.
    unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::syscall(libc::SYS_landlock_restrict_self, ruleset_fd, 0u32) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
