//! A seccomp-BPF filter for sandbox workers: the interpreter may use threads but cannot create
//! processes, open sockets, signal any process but itself, trace or read other processes'
//! memory, or reach the kernel interfaces a Python program never needs (mounts, namespaces,
//! modules, BPF, io_uring, keyrings, …). Anything else is allowed. The program is built in the
//! parent; the child writes its own pid into the slots that compare with it and installs it
//! between `fork` and `exec`.

use libc::sock_filter;

// BPF opcodes (linux/bpf_common.h).
const LD_W_ABS: u16 = 0x20; // BPF_LD (0) | BPF_W (0) | BPF_ABS (0x20)
const JEQ_K: u16 = 0x05 | 0x10; // BPF_JMP | BPF_JEQ | BPF_K
const JGE_K: u16 = 0x05 | 0x30; // BPF_JMP | BPF_JGE | BPF_K
const JSET_K: u16 = 0x05 | 0x40; // BPF_JMP | BPF_JSET | BPF_K
const RET_K: u16 = 0x06;

// Return values (linux/seccomp.h).
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const RET_ALLOW: u32 = 0x7fff_0000;

// fcntl and ioctl commands (asm-generic/fcntl.h, asm-generic/sockios.h).
const F_SETSIG: u32 = 10;
const F_SETOWN_EX: u32 = 15;
const FIOSETOWN: u32 = 0x8901;
const SIOCSPGRP: u32 = 0x8902;

// Offsets into `struct seccomp_data`.
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0: u32 = 16;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// System calls refused outright, with the errno the caller sees.
fn denied() -> Vec<(libc::c_long, i32)> {
    use libc::*;
    let mut v = vec![
        (SYS_clone3, ENOSYS), // glibc falls back to clone(2), whose flags are checked below
        (SYS_socket, EACCES),
        (SYS_ptrace, EPERM),
        (SYS_process_vm_readv, EPERM),
        (SYS_process_vm_writev, EPERM),
        (SYS_mount, EPERM),
        (SYS_umount2, EPERM),
        (SYS_pivot_root, EPERM),
        (SYS_chroot, EPERM),
        (SYS_unshare, EPERM),
        (SYS_setns, EPERM),
        (SYS_reboot, EPERM),
        (SYS_kexec_load, EPERM),
        (SYS_init_module, EPERM),
        (SYS_finit_module, EPERM),
        (SYS_delete_module, EPERM),
        (SYS_bpf, EPERM),
        (SYS_perf_event_open, EPERM),
        (SYS_keyctl, EPERM),
        (SYS_add_key, EPERM),
        (SYS_request_key, EPERM),
        (SYS_userfaultfd, EPERM),
        (SYS_io_uring_setup, EPERM),
        (SYS_io_uring_enter, EPERM),
        (SYS_io_uring_register, EPERM),
        (SYS_swapon, EPERM),
        (SYS_swapoff, EPERM),
        (SYS_acct, EPERM),
        (SYS_tkill, EPERM),
        (SYS_pidfd_open, EPERM),
        (SYS_pidfd_send_signal, EPERM),
        (SYS_pidfd_getfd, EPERM),
        (SYS_rt_sigqueueinfo, EPERM),
        (SYS_rt_tgsigqueueinfo, EPERM),
        (SYS_name_to_handle_at, EPERM),
        (SYS_open_by_handle_at, EPERM),
        // Scheduling and priorities of other processes (or of the whole uid).
        (SYS_setpriority, EPERM),
        (SYS_ioprio_set, EPERM),
        (SYS_sched_setscheduler, EPERM),
        (SYS_sched_setparam, EPERM),
        (SYS_sched_setattr, EPERM),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        (SYS_fork, EPERM),
        (SYS_vfork, EPERM),
        (SYS_kexec_file_load, EPERM),
    ]);
    v
}

/// The filter and the instruction slots that hold the worker's own pid.
pub struct Filter {
    pub program: Vec<sock_filter>,
    pid_slots: Vec<usize>,
}

impl Filter {
    pub fn new() -> Self {
        let mut p = vec![
            stmt(LD_W_ABS, ARCH),
            jump(JEQ_K, AUDIT_ARCH, 1, 0),
            stmt(RET_K, RET_KILL_PROCESS),
            stmt(LD_W_ABS, NR),
        ];
        #[cfg(target_arch = "x86_64")]
        {
            // The x32 ABI's numbers (bit 30) bypass the table below: refuse them all.
            p.push(jump(JGE_K, 0x4000_0000, 0, 1));
            p.push(stmt(RET_K, RET_ERRNO | libc::EPERM as u32));
        }
        for (nr, errno) in denied() {
            p.push(jump(JEQ_K, nr as u32, 0, 1));
            p.push(stmt(RET_K, RET_ERRNO | errno as u32));
        }
        // clone(2): threads only (CLONE_THREAD set), no new processes.
        p.push(jump(JEQ_K, libc::SYS_clone as u32, 0, 4));
        p.push(stmt(LD_W_ABS, ARG0));
        p.push(jump(JSET_K, libc::CLONE_THREAD as u32, 1, 0));
        p.push(stmt(RET_K, RET_ERRNO | libc::EPERM as u32));
        p.push(stmt(RET_K, RET_ALLOW));
        // kill(2): the worker itself, its own process group (0 or −pid) only. tgkill(2): its
        // own threads only.
        let mut pid_slots = Vec::new();
        p.push(stmt(LD_W_ABS, NR));
        p.push(jump(JEQ_K, libc::SYS_kill as u32, 0, 6));
        p.push(stmt(LD_W_ABS, ARG0));
        p.push(jump(JEQ_K, 0, 3, 0));
        pid_slots.push(p.len());
        p.push(jump(JEQ_K, 0, 2, 0)); // pid
        pid_slots.push(p.len());
        p.push(jump(JEQ_K, 0, 1, 0)); // −pid
        p.push(stmt(RET_K, RET_ERRNO | libc::EPERM as u32));
        p.push(stmt(RET_K, RET_ALLOW));
        p.push(jump(JEQ_K, libc::SYS_tgkill as u32, 0, 4));
        p.push(stmt(LD_W_ABS, ARG0));
        pid_slots.push(p.len());
        p.push(jump(JEQ_K, 0, 1, 0)); // pid
        p.push(stmt(RET_K, RET_ERRNO | libc::EPERM as u32));
        p.push(stmt(RET_K, RET_ALLOW));
        // prlimit64 and sched_setaffinity: itself only (0 or its pid) — another process's
        // limits could kill it (a CPU limit of 1 s).
        for nr in [libc::SYS_prlimit64, libc::SYS_sched_setaffinity] {
            p.push(stmt(LD_W_ABS, NR));
            p.push(jump(JEQ_K, nr as u32, 0, 5));
            p.push(stmt(LD_W_ABS, ARG0));
            p.push(jump(JEQ_K, 0, 2, 0));
            pid_slots.push(p.len());
            p.push(jump(JEQ_K, 0, 1, 0)); // pid
            p.push(stmt(RET_K, RET_ERRNO | libc::EPERM as u32));
            p.push(stmt(RET_K, RET_ALLOW));
        }
        // fcntl / ioctl commands that send signals to another process (SIGIO ownership) or
        // shrink a pipe under the parent's writes.
        const ARG1: u32 = ARG0 + 8;
        for (nr, cmds) in [
            (
                libc::SYS_fcntl,
                &[
                    libc::F_SETOWN as u32,
                    F_SETOWN_EX,
                    F_SETSIG,
                    libc::F_SETPIPE_SZ as u32,
                ][..],
            ),
            (libc::SYS_ioctl, &[FIOSETOWN, SIOCSPGRP][..]),
        ] {
            p.push(stmt(LD_W_ABS, NR));
            p.push(jump(JEQ_K, nr as u32, 0, cmds.len() as u8 + 3));
            p.push(stmt(LD_W_ABS, ARG1));
            for (k, &cmd) in cmds.iter().enumerate() {
                // Equal: jump to the EPERM after the remaining comparisons.
                p.push(jump(JEQ_K, cmd, (cmds.len() - k - 1) as u8 + 1, 0));
            }
            p.push(stmt(RET_K, RET_ALLOW));
            p.push(stmt(RET_K, RET_ERRNO | libc::EPERM as u32));
        }
        p.push(stmt(RET_K, RET_ALLOW)); // everything else
        Self {
            program: p,
            pid_slots,
        }
    }

    /// Write `pid` into the comparisons and install the filter on the calling thread (with
    /// `no_new_privs`). Async-signal-safe: no allocation, three system calls.
    pub fn install(&mut self, pid: i32) -> std::io::Result<()> {
        // The slots, in order: kill's pid and −pid, then every "itself only" pid.
        for (n, &i) in self.pid_slots.iter().enumerate() {
            self.program[i].k = if n == 1 {
                pid.wrapping_neg() as u32
            } else {
                pid as u32
            };
        }
        let prog = libc::sock_fprog {
            len: self.program.len() as u16,
            filter: self.program.as_mut_ptr(),
        };
        // SAFETY: `prog` points at the live program for the duration of the call; the kernel
        // copies it.
        unsafe {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            ) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
        }
        Ok(())
    }
}

impl Default for Filter {
    fn default() -> Self {
        Self::new()
    }
}

/// Whether the kernel offers seccomp filters.
pub fn available() -> bool {
    // SAFETY: a query with no pointers.
    unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) >= 0 }
}
