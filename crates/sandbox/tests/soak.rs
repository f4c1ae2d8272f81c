//! Ten thousand runs in a row leak no file descriptor, process or temporary directory.
//! (Its own test binary: the counts below are of this process alone.)

use std::path::Path;
use std::time::Duration;

use reasonlab_sandbox::{Isolation, Limits, Sandbox};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Live processes whose parent is this process.
fn children() -> Vec<u32> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let pid: u32 = e.file_name().to_str()?.parse().ok()?;
            let status = std::fs::read_to_string(e.path().join("status")).ok()?;
            let ppid = status.lines().find_map(|l| l.strip_prefix("PPid:"))?.trim();
            (ppid == me).then_some(pid)
        })
        .collect()
}

/// The sandbox's working directories and their lock files in the temporary directory.
fn sandbox_dirs() -> std::collections::BTreeSet<std::ffi::OsString> {
    std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|name| name.to_string_lossy().starts_with("reasonlab-sandbox-"))
        .collect()
}

#[test]
fn ten_thousand_runs_leak_nothing() {
    let limits = Limits {
        timeout: Duration::from_secs(5),
        preload: vec![],
        recycle_after: 500,
        ..Limits::default()
    };
    let dirs_before = sandbox_dirs();
    let sb = Sandbox::new(Path::new("python3"), limits, Isolation::Required, 2)
        .unwrap_or_else(|e| panic!("THE SANDBOX TESTS CANNOT RUN ON THIS MACHINE: {e}"));
    // Let the warm pool settle before taking the baseline.
    sb.run("pass").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let fds = open_fds();
    for i in 0..10_000 {
        let code = if i % 1000 == 999 {
            "import os\nos.abort()".to_string() // a crash now and then: replaced, not leaked
        } else {
            format!("open('f.txt', 'w').write('{i}')\nprint({i} * 2)")
        };
        let out = sb.run(&code).unwrap();
        if i % 1000 != 999 {
            assert_eq!(out.stdout, format!("{}\n", i * 2), "run {i}: {out:?}");
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let live = children().len();
    assert!(live <= 2, "{live} interpreters alive for a pool of 2");
    let grown = open_fds().saturating_sub(fds);
    assert!(
        grown <= 4,
        "{grown} more file descriptors open after 10,000 runs"
    );
    drop(sb);
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        children().is_empty(),
        "interpreters left behind: {:?}",
        children()
    );
    // Starting the pool may sweep what killed processes left, so some may have gone.
    let left: Vec<_> = sandbox_dirs().difference(&dirs_before).cloned().collect();
    assert!(
        left.is_empty(),
        "temporary directories left behind: {left:?}"
    );
}
