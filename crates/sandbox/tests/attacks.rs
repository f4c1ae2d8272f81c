//! Every attack must fail closed, leave the host unchanged and keep the pool working.
//!
//! These tests need `python3` on the PATH and a kernel with Landlock and seccomp; without them
//! they fail with a message saying so (they are never skipped).

use std::path::Path;
use std::time::{Duration, Instant};

use reasonlab_sandbox::{Isolation, Limits, RunOutput, Sandbox, Stopped};

fn limits() -> Limits {
    Limits {
        timeout: Duration::from_secs(3),
        cpu: Duration::from_secs(2),
        memory_mb: 512,
        max_output: 4096,
        preload: vec![],
        ..Limits::default()
    }
}

fn sandbox() -> Sandbox {
    Sandbox::new(Path::new("python3"), limits(), Isolation::Required, 1).unwrap_or_else(|e| {
        panic!(
            "THE SANDBOX TESTS CANNOT RUN ON THIS MACHINE: {e}. They need python3 on the PATH and \
             a Linux kernel with Landlock (≥ 5.13, enabled) and seccomp filters."
        )
    })
}

/// The pool still answers, on a fresh namespace.
fn still_works(sb: &Sandbox) {
    let out = sb.run("print(6 * 7)").unwrap();
    assert_eq!(out.stdout, "42\n", "{out:?}");
    assert!(out.ok());
}

fn failed_with(out: &RunOutput, needle: &str) {
    assert!(!out.ok(), "the attack ran: {out:?}");
    assert!(
        out.stderr.contains(needle),
        "expected {needle:?} in {out:?}"
    );
}

#[test]
fn code_blocks_of_a_session_share_variables_and_sessions_do_not() {
    let sb = sandbox();
    let mut s = sb.notebook().unwrap();
    assert!(s.run("x = 21").ok());
    assert_eq!(s.run("print(x * 2)").stdout, "42\n");
    assert_eq!(s.run_cell("x + 1").stdout, "22\n");
    let err = s.run("1 / 0");
    assert_eq!(err.exit_code, Some(1));
    assert!(err.stderr.contains("ZeroDivisionError"), "{err:?}");
    assert!(
        err.stderr.contains("<cell>"),
        "traceback names the cell: {err:?}"
    );
    assert!(
        !err.stderr.contains("driver"),
        "driver frames are hidden: {err:?}"
    );
    assert_eq!(s.run("import sys\nsys.exit(3)").exit_code, Some(3));
    assert_eq!(
        s.run("print(x)").stdout,
        "21\n",
        "the notebook survives errors"
    );
    assert!(s.run("open('left.txt', 'w').write('x')").ok());
    drop(s);
    let out = sb.run("print(x)").unwrap();
    failed_with(&out, "NameError");
    let out = sb.run("import os\nprint(os.listdir('.'))").unwrap();
    assert_eq!(
        out.stdout, "[]\n",
        "the next notebook starts in an empty directory"
    );
}

#[test]
fn a_fork_bomb_starts_no_process() {
    let sb = sandbox();
    let out = sb.run("import os\nwhile True:\n    os.fork()").unwrap();
    failed_with(&out, "PermissionError");
    let out = sb
        .run("import subprocess\nsubprocess.run(['/bin/true'])")
        .unwrap();
    failed_with(&out, "Error");
    still_works(&sb);
}

#[test]
fn an_infinite_loop_is_killed_at_the_wall_clock_limit() {
    let l = Limits {
        cpu: Duration::from_secs(30),
        ..limits()
    };
    let sb = Sandbox::new(Path::new("python3"), l, Isolation::Required, 1).unwrap();
    let t = Instant::now();
    let out = sb.run("while True:\n    pass").unwrap();
    assert!(out.timed_out, "{out:?}");
    assert_eq!(out.stopped, Some(Stopped::Timeout));
    assert!(t.elapsed() < Duration::from_secs(6), "{:?}", t.elapsed());
    still_works(&sb);
}

#[test]
fn ignoring_sigterm_does_not_help() {
    let sb = sandbox();
    let out = sb
        .run("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)")
        .unwrap();
    assert!(out.timed_out, "{out:?}");
    still_works(&sb);
}

#[test]
fn the_cpu_limit_stops_a_busy_block() {
    let l = Limits {
        timeout: Duration::from_secs(20),
        cpu: Duration::from_secs(1),
        ..limits()
    };
    let sb = Sandbox::new(Path::new("python3"), l, Isolation::Required, 0).unwrap();
    let t = Instant::now();
    let out = sb.run("while True:\n    pass").unwrap();
    assert_eq!(out.stopped, Some(Stopped::Cpu), "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    still_works(&sb);
}

#[test]
fn a_memory_bomb_hits_the_limit() {
    let sb = sandbox();
    let out = sb.run("x = bytearray(4 * 1024**3)").unwrap();
    assert_eq!(out.stopped, Some(Stopped::Memory), "{out:?}");
    let out = sb
        .run("x = []\nwhile True:\n    x.append(' ' * 10**6)")
        .unwrap();
    assert_eq!(out.stopped, Some(Stopped::Memory), "{out:?}");
    still_works(&sb);
}

#[test]
fn gigabytes_of_output_are_cut_at_the_cap() {
    let sb = sandbox();
    let t = Instant::now();
    let out = sb
        .run("import os, sys\nchunk = 'x' * (100 * 1024 * 1024)\nfor _ in range(20):\n    sys.stdout.write(chunk)\n    os.write(1, b'y' * 10**6)\nprint('done', file=sys.stderr)")
        .unwrap();
    assert!(out.truncated, "{out:?}");
    assert_eq!(out.stdout.len(), 4096);
    assert!(out.stdout.bytes().all(|b| b == b'x'));
    assert_eq!(out.stderr, "done\n");
    assert_eq!(out.stopped, Some(Stopped::Output));
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    still_works(&sb);
}

#[test]
fn no_connection_reaches_a_loopback_listener() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let sb = sandbox();
    let out = sb
        .run(&format!(
            "import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)"
        ))
        .unwrap();
    failed_with(&out, "PermissionError");
    std::thread::sleep(Duration::from_millis(100));
    match listener.accept() {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        other => panic!("the listener saw a connection: {other:?}"),
    }
    still_works(&sb);
}

#[test]
fn dns_lookups_fail() {
    let sb = sandbox();
    let out = sb
        .run("import socket\nprint(socket.getaddrinfo('example.com', 80))")
        .unwrap();
    assert!(!out.ok(), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    still_works(&sb);
}

#[test]
fn the_parents_environment_is_not_readable() {
    // Cargo gives every test process CARGO_* variables: none may reach the sandbox.
    assert!(std::env::vars().any(|(k, _)| k.starts_with("CARGO")));
    let sb = sandbox();
    let out = sb
        .run("import os\nprint(sorted(k for k in os.environ if k.startswith('CARGO')))")
        .unwrap();
    assert_eq!(out.stdout, "[]\n", "{out:?}");
    let out = sb
        .run("import os\nprint(open('/proc/%d/environ' % os.getppid(), 'rb').read()[:20])")
        .unwrap();
    failed_with(&out, "PermissionError");
    let out = sb
        .run(&format!(
            "print(open('/proc/{}/environ', 'rb').read()[:20])",
            std::process::id()
        ))
        .unwrap();
    failed_with(&out, "PermissionError");
    still_works(&sb);
}

#[test]
fn nothing_is_written_outside_the_working_directory() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("sandbox-escape.txt");
    let tmp = std::env::temp_dir().join(format!("reasonlab-escape-{}", std::process::id()));
    let sb = sandbox();
    for target in [&repo, &tmp] {
        let out = sb
            .run(&format!(
                "open({:?}, 'w').write('pwned')",
                target.display().to_string()
            ))
            .unwrap();
        failed_with(&out, "PermissionError");
        assert!(!target.exists(), "{} was written", target.display());
    }
    let out = sb
        .run("import os\nos.makedirs('/tmp/reasonlab-escape-dir', exist_ok=True)")
        .unwrap();
    failed_with(&out, "PermissionError");
    assert!(!Path::new("/tmp/reasonlab-escape-dir").exists());
    // Its own directory is writable.
    let out = sb
        .run("open('notes.txt', 'w').write('ok')\nprint(open('notes.txt').read())")
        .unwrap();
    assert_eq!(out.stdout, "ok\n", "{out:?}");
    still_works(&sb);
}

#[test]
fn nothing_is_deleted_or_renamed_outside_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let victim = dir.path().join("precious.txt");
    std::fs::write(&victim, "keep me").unwrap();
    let sb = sandbox();
    let v = victim.display().to_string();
    for code in [
        format!("import os\nos.remove({v:?})"),
        format!("import os\nos.rename({v:?}, {v:?} + '.moved')"),
        format!(
            "import shutil\nshutil.rmtree({:?})",
            dir.path().display().to_string()
        ),
        format!("open({v:?}, 'w')"),
    ] {
        let out = sb.run(&code).unwrap();
        assert!(!out.ok(), "{code}: {out:?}");
    }
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep me");
    still_works(&sb);
}

#[test]
fn the_parent_cannot_be_signalled() {
    let sb = sandbox();
    for code in [
        "import os, signal\nos.kill(os.getppid(), signal.SIGCONT)",
        "import os, signal\nos.kill(os.getppid(), 0)",
    ] {
        let out = sb.run(code).unwrap();
        failed_with(&out, "PermissionError");
    }
    let out = sb
        .run(&format!(
            "import os, signal\nos.kill({}, signal.SIGCONT)",
            std::process::id()
        ))
        .unwrap();
    failed_with(&out, "PermissionError");
    still_works(&sb);
}

#[test]
fn a_crashed_interpreter_is_replaced() {
    let sb = sandbox();
    for code in [
        "import os\nos.abort()",
        "import ctypes\nctypes.string_at(0)",
        "import os\nos._exit(3)",
    ] {
        let out = sb.run(code).unwrap();
        assert_eq!(out.stopped, Some(Stopped::Crashed), "{code}: {out:?}");
        assert_eq!(out.exit_code, None);
        still_works(&sb);
    }
    // Within a notebook, the next block gets a fresh interpreter.
    let mut s = sb.notebook().unwrap();
    s.run("x = 1");
    assert_eq!(
        s.run("import os\nos.abort()").stopped,
        Some(Stopped::Crashed)
    );
    let out = s.run("print(x)");
    failed_with(&out, "NameError");
}

#[test]
fn a_thread_left_running_retires_its_interpreter() {
    let sb = sandbox();
    let out = sb
        .run("import threading, time\nthreading.Thread(target=lambda: time.sleep(60), daemon=True).start()")
        .unwrap();
    assert!(out.ok(), "{out:?}");
    let out = sb
        .run("import threading\nprint(threading.active_count())")
        .unwrap();
    assert_eq!(out.stdout, "1\n", "{out:?}");
}

#[test]
fn a_batch_comes_back_in_order_through_crashes_and_timeouts() {
    let sb = sandbox();
    let codes: Vec<String> = (0..40)
        .map(|i| match i {
            7 => "import os\nos.abort()".to_string(),
            13 => "while True:\n    pass".to_string(),
            21 => "import threading, time\nthreading.Thread(target=lambda: time.sleep(60), daemon=True).start()".to_string(),
            22 => "import threading\nprint(threading.active_count())".to_string(),
            30 => "print(x)".to_string(),
            _ => format!("x = {i}\nprint(x * 2)"),
        })
        .collect();
    let refs: Vec<&str> = codes.iter().map(String::as_str).collect();
    let outs = sb.run_batch(&refs);
    assert_eq!(outs.len(), 40);
    for (i, out) in outs.iter().enumerate() {
        match i {
            7 => assert_eq!(out.stopped, Some(Stopped::Crashed), "{out:?}"),
            // The CPU-time and wall-clock limits are close: either may stop it first.
            13 => assert!(
                matches!(out.stopped, Some(Stopped::Timeout | Stopped::Cpu)),
                "{out:?}"
            ),
            21 => assert!(out.ok(), "{out:?}"),
            22 => assert_eq!(out.stdout, "1\n", "no thread of another program: {out:?}"),
            30 => failed_with(out, "NameError"),
            _ => assert_eq!(out.stdout, format!("{}\n", i * 2), "{i}: {out:?}"),
        }
    }
    still_works(&sb);
}

#[test]
fn other_processes_limits_priorities_and_signal_ownership_are_out_of_reach() {
    let sb = sandbox();
    for code in [
        "import os, resource\nresource.prlimit(os.getppid(), resource.RLIMIT_CPU, (1, 1))",
        "import os\nos.sched_setaffinity(os.getppid(), {0})",
        "import os\nos.setpriority(os.PRIO_PROCESS, os.getppid(), 19)",
        "import fcntl, os\nr, w = os.pipe()\nfcntl.fcntl(r, fcntl.F_SETOWN, os.getppid())",
        "import fcntl, os\nr, w = os.pipe()\nfcntl.fcntl(r, fcntl.F_SETPIPE_SZ, 4096)",
    ] {
        let out = sb.run(code).unwrap();
        failed_with(&out, "PermissionError");
    }
    // Its own limits it may still set.
    let out = sb
        .run("import resource\nresource.prlimit(0, resource.RLIMIT_NOFILE, (64, 64))\nprint('ok')")
        .unwrap();
    assert_eq!(out.stdout, "ok\n", "{out:?}");
    still_works(&sb);
}

#[test]
fn closing_the_protocol_pipes_does_not_hang_the_parent() {
    let sb = sandbox();
    let t = Instant::now();
    let out = sb
        .run("import __main__, time\n__main__._OUT.close()\ntime.sleep(60)")
        .unwrap();
    assert_eq!(out.stopped, Some(Stopped::Crashed), "{out:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    still_works(&sb);
}
