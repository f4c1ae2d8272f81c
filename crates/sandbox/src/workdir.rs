//! The interpreters' working directories, and the sweep of those a killed process left behind.
//!
//! A directory `reasonlab-sandbox-XXXXXX` in the temporary directory comes with a lock file
//! `reasonlab-sandbox-XXXXXX.lock` beside it, which the process that owns the directory holds
//! (`flock`) for as long as the directory is in use. A process killed outright (SIGKILL, the
//! OOM killer, a preempted job) runs no destructor, but the kernel releases its locks: a lock
//! that can be taken marks a directory nobody owns, and [`sweep`] removes it. The lock lies
//! outside the directory, where the interpreter, whose writes Landlock confines to its own
//! directory, cannot remove it; `flock` holds across PID namespaces, so containers sharing a
//! temporary directory do not take each other's for dead.

use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

const PREFIX: &str = "reasonlab-sandbox-";
const LOCK_SUFFIX: &str = ".lock";

/// A lock file younger than this is never swept: its owner may have created it and not yet
/// taken the lock.
pub(crate) const SWEEP_MIN_AGE: Duration = Duration::from_secs(60);

/// A working directory and the lock that marks it as in use; dropping it removes both.
pub(crate) struct WorkDir {
    path: PathBuf,
    lock_path: PathBuf,
    /// Held until drop (the lock goes with the descriptor).
    _lock: File,
}

impl WorkDir {
    /// A fresh directory in `parent`, its lock taken before the directory exists. On a file
    /// system without `flock` the directory goes unlocked: no sweep can take its lock there
    /// either, so none removes it while in use.
    pub fn create(parent: &Path) -> io::Result<Self> {
        let in_parent =
            |e: io::Error| io::Error::new(e.kind(), format!("{}: {e}", parent.display()));
        let (lock, lock_path) = tempfile::Builder::new()
            .prefix(PREFIX)
            .suffix(LOCK_SUFFIX)
            .tempfile_in(parent)
            .and_then(|f| f.keep().map_err(|e| e.error))
            .map_err(in_parent)?;
        let cleanup = |e: io::Error| {
            let _ = fs::remove_file(&lock_path);
            io::Error::new(e.kind(), format!("{}: {e}", lock_path.display()))
        };
        match try_lock(&lock) {
            Err(e) if !no_flock_here(&e) => return Err(cleanup(e)),
            _ => {}
        }
        let path = dir_of(&lock_path);
        fs::create_dir(&path).map_err(cleanup)?;
        Ok(Self {
            path,
            lock_path,
            _lock: lock,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
        let _ = fs::remove_file(&self.lock_path);
    }
}

/// `reasonlab-sandbox-XXXXXX.lock` → `reasonlab-sandbox-XXXXXX`.
fn dir_of(lock_path: &Path) -> PathBuf {
    let name = lock_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default();
    lock_path.with_file_name(name.strip_suffix(LOCK_SUFFIX).unwrap_or(name))
}

/// Whether `e` says that the file system takes no `flock` (rather than that the lock is held).
fn no_flock_here(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOLCK | libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
    )
}

/// Take `file`'s exclusive lock without waiting (`flock` on Linux); a lock held elsewhere is
/// an error of kind `WouldBlock`.
fn try_lock(file: &File) -> io::Result<()> {
    file.try_lock().map_err(io::Error::from)
}

/// Remove the working directories in `parent` whose owner is gone: each whose lock file is at
/// least `min_age` old and can be locked. Returns how many were removed. Anything that cannot
/// be read, locked or removed (another user's, a file system without `flock`) is left alone.
pub(crate) fn sweep(parent: &Path, min_age: Duration) -> usize {
    let Ok(entries) = fs::read_dir(parent) else {
        return 0;
    };
    let mut removed = 0;
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !(name.starts_with(PREFIX) && name.ends_with(LOCK_SUFFIX)) {
            continue;
        }
        let old = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age >= min_age);
        if !old {
            continue;
        }
        let lock_path = entry.path();
        let Ok(lock) = File::open(&lock_path) else {
            continue;
        };
        if try_lock(&lock).is_err() {
            continue; // in use, or no flock here
        }
        let dir = dir_of(&lock_path);
        match fs::remove_dir_all(&dir) {
            Ok(()) => removed += 1,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {} // only the lock was left
            Err(_) => continue, // keep the lock file: the directory is still there
        }
        let _ = fs::remove_file(&lock_path);
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::CommandExt;

    /// Poll `done` for up to 10 s, failing with `what` if it never holds.
    fn wait_until(done: impl Fn() -> bool, what: &str) {
        let start = std::time::Instant::now();
        while !done() {
            assert!(start.elapsed() < Duration::from_secs(10), "{what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A lock file's age, set back by `by`.
    fn age(path: &Path, by: Duration) {
        let f = File::options().write(true).open(path).unwrap();
        f.set_modified(std::time::SystemTime::now() - by).unwrap();
    }

    #[test]
    fn a_directory_lives_while_its_owner_holds_it_and_goes_on_drop() {
        let parent = tempfile::tempdir().unwrap();
        let dir = WorkDir::create(parent.path()).unwrap();
        fs::write(dir.path().join("f.txt"), "x").unwrap();
        let lock = dir_of(&dir.lock_path);
        assert_eq!(lock, dir.path());
        age(&dir.lock_path, Duration::from_secs(3600));
        // Held: an old lock file is not enough to sweep it.
        assert_eq!(sweep(parent.path(), SWEEP_MIN_AGE), 0);
        assert!(dir.path().join("f.txt").exists());
        let (path, lock_path) = (dir.path().to_path_buf(), dir.lock_path.clone());
        drop(dir);
        assert!(!path.exists() && !lock_path.exists());
    }

    #[test]
    fn what_a_killed_owner_left_is_swept_once_its_lock_is_old() {
        let parent = tempfile::tempdir().unwrap();
        // Another process owns a directory: util-linux's flock(1) holds its lock file and
        // sleeps (Debian and Ubuntu install it with util-linux, an essential package).
        let dir = parent.path().join("reasonlab-sandbox-abc123");
        let lock_path = parent.path().join("reasonlab-sandbox-abc123.lock");
        fs::create_dir_all(dir.join("sub")).unwrap();
        fs::write(dir.join("sub/out.txt"), "x").unwrap();
        fs::write(&lock_path, "").unwrap();
        // `-o`: only flock itself holds the lock, not the command it runs, so that the lock is
        // free once flock is reaped.
        let mut owner = std::process::Command::new("flock")
            .arg("-o")
            .arg(&lock_path)
            .args(["sleep", "60"])
            .process_group(0)
            .spawn()
            .expect("flock(1) from util-linux runs this test");
        let held = || {
            File::open(&lock_path)
                .map(|f| try_lock(&f).is_err())
                .unwrap()
        };
        wait_until(held, "flock(1) never took the lock");
        age(&lock_path, Duration::from_secs(3600));
        assert_eq!(sweep(parent.path(), SWEEP_MIN_AGE), 0, "its owner lives");
        assert!(dir.join("sub/out.txt").exists());
        // Killed outright: no destructor runs, and the kernel releases the lock.
        let group = -(owner.id() as i32);
        // SAFETY: SIGKILL to the process group of the child spawned above (flock and sleep).
        let killed = unsafe { libc::kill(group, libc::SIGKILL) };
        assert_eq!(killed, 0);
        owner.wait().unwrap();
        // flock may have forked its command and not yet closed the lock's descriptor there:
        // the lock is free once that child has exited too.
        wait_until(|| !held(), "the lock outlived its owner");
        age(&lock_path, Duration::from_secs(10));
        assert_eq!(sweep(parent.path(), SWEEP_MIN_AGE), 0, "too young to tell");
        assert!(dir.exists());
        age(&lock_path, SWEEP_MIN_AGE + Duration::from_secs(1));
        assert_eq!(sweep(parent.path(), SWEEP_MIN_AGE), 1);
        assert!(!dir.exists() && !lock_path.exists());
        // A lock file alone (its owner killed between removing the two) goes too, and is not
        // counted as a directory.
        let lone = parent.path().join("reasonlab-sandbox-lone.lock");
        fs::write(&lone, "").unwrap();
        age(&lone, Duration::from_secs(3600));
        assert_eq!(sweep(parent.path(), SWEEP_MIN_AGE), 0);
        assert!(!lone.exists());
        // Other names are never touched: a directory without a lock (an older build's), and
        // other lock files.
        fs::create_dir(parent.path().join("reasonlab-sandbox-old")).unwrap();
        fs::write(parent.path().join("other.lock"), "").unwrap();
        age(&parent.path().join("other.lock"), Duration::from_secs(3600));
        assert_eq!(sweep(parent.path(), SWEEP_MIN_AGE), 0);
        assert_eq!(fs::read_dir(parent.path()).unwrap().count(), 2);
    }
}
