//! Runs the real payload binaries on the Linux host under a ptrace "mini kernel" that
//! implements the Xylem syscall ABI (`cell::abi`), to check the runtime and the payloads end
//! to end before the real kernel exists: `_start`, argument passing, print macros, exit codes,
//! the panic handler and each crasher mode.
//!
//! How: the static ET_EXEC payload is exec'd as a Linux process (its segments sit at 0x400000,
//! a valid Linux user address). At every syscall-entry stop the tracer reads the registers,
//! emulates the Xylem call (reading/writing the tracee's memory with process_vm_readv/writev),
//! turns the real syscall into a harmless `getpid`, and writes the result into `rax` at the exit
//! stop. `exit` becomes Linux `exit`. Time is virtual: `sleep_ms` advances a counter, so the
//! tests are fast and deterministic. CPU faults arrive as signals (SIGSEGV, SIGILL, SIGFPE).
//!
//! Needs the payloads built (xtask sets `XYLEM_PAYLOAD_DIR`; without it, the directory
//! `cargo xtask build` fills); missing payloads fail the tests. Linux x86_64 only.
#![cfg(all(target_os = "linux", target_arch = "x86_64"))]

use std::ffi::CString;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cell::abi::{self, nr, Errno};

const CELL_ID: u64 = 42;
/// Linux syscall numbers the tracer substitutes.
const LINUX_GETPID: u64 = 39;
const LINUX_EXIT: u64 = 60;

#[derive(Debug, PartialEq, Eq)]
enum End {
    Exited(i32),
    /// Signal number, fault address (si_addr) and rip.
    Signal {
        signal: i32,
        addr: u64,
        rip: u64,
    },
    /// Killed by the harness: deadline passed or output limit reached.
    Stopped,
}

struct Run {
    end: End,
    stdout: String,
    stderr: String,
    clock_us: u64,
}

struct Limits {
    deadline: Duration,
    max_writes: usize,
}

const DEFAULT_LIMITS: Limits = Limits {
    deadline: Duration::from_secs(10),
    max_writes: 1_000,
};

/// The built payloads: `XYLEM_PAYLOAD_DIR` (xtask sets it) or where `cargo xtask build` puts
/// them. Missing payloads fail the test (it used to pass silently without them).
fn payload_dir() -> PathBuf {
    let dir = std::env::var_os("XYLEM_PAYLOAD_DIR").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../target/payloads/x86_64-unknown-none/release")
        },
        PathBuf::from,
    );
    assert!(
        dir.is_dir(),
        "no built payloads in {} (run `cargo xtask build` or set XYLEM_PAYLOAD_DIR)",
        dir.display()
    );
    dir
}

/// The emulated kernel state of one traced cell.
struct Tracee {
    pid: libc::pid_t,
    args_blob: Vec<u8>,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    writes: usize,
    clock_us: u64,
}

impl Tracee {
    fn read_user(&self, addr: u64, len: u64) -> Result<Vec<u8>, Errno> {
        abi::user_range(addr, len)?;
        let mut buf = vec![0u8; len as usize];
        let local = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: len as usize,
        };
        // SAFETY: `local` describes our own live buffer of exactly `len` bytes.
        let got = unsafe { libc::process_vm_readv(self.pid, &local, 1, &remote, 1, 0) };
        if got != len as isize {
            return Err(Errno::EFAULT);
        }
        Ok(buf)
    }

    fn write_user(&self, addr: u64, data: &[u8]) -> Result<(), Errno> {
        abi::user_range(addr, data.len() as u64)?;
        let local = libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        let remote = libc::iovec {
            iov_base: addr as *mut libc::c_void,
            iov_len: data.len(),
        };
        // SAFETY: `local` describes our own live buffer; the kernel only reads it.
        let put = unsafe { libc::process_vm_writev(self.pid, &local, 1, &remote, 1, 0) };
        if put != data.len() as isize {
            return Err(Errno::EFAULT);
        }
        Ok(())
    }

    /// The Xylem syscall semantics of docs/syscalls.md.
    fn emulate(&mut self, number: u64, arg0: u64, arg1: u64, arg2: u64) -> Result<u64, Errno> {
        match number {
            nr::WRITE => {
                if arg0 != abi::FD_STDOUT && arg0 != abi::FD_STDERR {
                    return Err(Errno::EBADF);
                }
                if arg2 > abi::MAX_WRITE_LEN {
                    return Err(Errno::EINVAL);
                }
                let bytes = self.read_user(arg1, arg2)?;
                let sink = if arg0 == abi::FD_STDOUT {
                    &mut self.stdout
                } else {
                    &mut self.stderr
                };
                sink.extend_from_slice(&bytes);
                self.writes += 1;
                Ok(arg2)
            }
            nr::SLEEP_MS => {
                if arg0 > abi::MAX_SLEEP_MS {
                    return Err(Errno::EINVAL);
                }
                self.clock_us += arg0 * 1_000;
                Ok(0)
            }
            nr::YIELD => Ok(0),
            nr::CLOCK_US => {
                self.clock_us += 1;
                Ok(self.clock_us)
            }
            nr::CELL_ID => Ok(CELL_ID),
            nr::ARGS => {
                if (arg1 as usize) < self.args_blob.len() {
                    return Err(Errno::ERANGE);
                }
                self.write_user(arg0, &self.args_blob)?;
                Ok(self.args_blob.len() as u64)
            }
            _ => Err(Errno::ENOSYS),
        }
    }
}

fn ptrace(request: libc::c_uint, pid: libc::pid_t, data: usize) -> i64 {
    // SAFETY: the requests used here take no pointer (data is a signal or option value) or a
    // pointer to a live, correctly sized struct supplied by the caller.
    unsafe {
        libc::ptrace(
            request,
            pid,
            std::ptr::null_mut::<libc::c_void>(),
            data as *mut libc::c_void,
        )
    }
}

fn get_regs(pid: libc::pid_t) -> libc::user_regs_struct {
    // SAFETY: all-zero is a valid user_regs_struct (plain integers).
    let mut regs: libc::user_regs_struct = unsafe { std::mem::zeroed() };
    // SAFETY: PTRACE_GETREGS writes exactly one user_regs_struct to the pointer.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGS,
            pid,
            0,
            &mut regs as *mut _ as *mut libc::c_void,
        )
    };
    assert_eq!(rc, 0, "PTRACE_GETREGS");
    regs
}

fn set_regs(pid: libc::pid_t, regs: &libc::user_regs_struct) {
    // SAFETY: PTRACE_SETREGS reads exactly one user_regs_struct from the pointer.
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_SETREGS,
            pid,
            0,
            regs as *const _ as *mut libc::c_void,
        )
    };
    assert_eq!(rc, 0, "PTRACE_SETREGS");
}

/// Waits for the tracee, polling so the deadline can be enforced on a payload that spins.
fn wait(pid: libc::pid_t, deadline: Instant) -> Option<i32> {
    loop {
        let mut status = 0;
        // SAFETY: `status` is a live i32.
        let got = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG | libc::__WALL) };
        assert!(got >= 0, "waitpid failed");
        if got == pid {
            return Some(status);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: plain syscalls on our own child.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        let mut status = 0;
        libc::waitpid(pid, &mut status, libc::__WALL);
    }
}

fn spawn_traced(path: &std::path::Path) -> libc::pid_t {
    let program = CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    let argv = [program.as_ptr(), std::ptr::null()];
    // SAFETY: between fork and exec the child only calls async-signal-safe functions (ptrace,
    // execv, _exit) on memory prepared before the fork.
    unsafe {
        let pid = libc::fork();
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            libc::execv(program.as_ptr(), argv.as_ptr());
            libc::_exit(127);
        }
        pid
    }
}

fn run_payload(name: &str, args: &[&str], limits: Limits) -> Run {
    let path = payload_dir().join(name);
    assert!(path.exists(), "{} not built", path.display());
    let mut blob = vec![0u8; abi::MAX_ARGS_BYTES];
    let len = abi::encode_args(args.iter().copied(), &mut blob).unwrap();
    blob.truncate(len);
    let pid = spawn_traced(&path);
    let deadline = Instant::now() + limits.deadline;
    let status = wait(pid, deadline).expect("exec stop");
    assert!(
        libc::WIFSTOPPED(status) && libc::WSTOPSIG(status) == libc::SIGTRAP,
        "no exec stop: {status:#x}"
    );
    ptrace(
        libc::PTRACE_SETOPTIONS,
        pid,
        (libc::PTRACE_O_TRACESYSGOOD | libc::PTRACE_O_EXITKILL) as usize,
    );
    let mut tracee = Tracee {
        pid,
        args_blob: blob,
        stdout: Vec::new(),
        stderr: Vec::new(),
        writes: 0,
        clock_us: 0,
    };
    let end = trace(&mut tracee, deadline, limits.max_writes);
    Run {
        end,
        stdout: String::from_utf8_lossy(&tracee.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&tracee.stderr).into_owned(),
        clock_us: tracee.clock_us,
    }
}

/// The tracing loop: syscall stops are emulated, signal stops end the run as a fault.
fn trace(tracee: &mut Tracee, deadline: Instant, max_writes: usize) -> End {
    let pid = tracee.pid;
    let mut pending_result: Option<u64> = None;
    loop {
        ptrace(libc::PTRACE_SYSCALL, pid, 0);
        let Some(status) = wait(pid, deadline) else {
            kill_and_reap(pid);
            return End::Stopped;
        };
        if libc::WIFEXITED(status) {
            return End::Exited(libc::WEXITSTATUS(status) as i8 as i32);
        }
        if libc::WIFSIGNALED(status) {
            return End::Signal {
                signal: libc::WTERMSIG(status),
                addr: 0,
                rip: 0,
            };
        }
        let signal = libc::WSTOPSIG(status);
        if signal != (libc::SIGTRAP | 0x80) {
            return fault_end(pid, signal);
        }
        let mut regs = get_regs(pid);
        match pending_result.take() {
            Some(result) => {
                regs.rax = result;
                set_regs(pid, &regs);
                if tracee.writes >= max_writes {
                    kill_and_reap(pid);
                    return End::Stopped;
                }
            }
            None if regs.orig_rax == nr::EXIT => {
                regs.orig_rax = LINUX_EXIT;
                set_regs(pid, &regs);
                pending_result = Some(0); // the exit stop never comes; the process ends.
            }
            None => {
                let result = tracee.emulate(regs.orig_rax, regs.rdi, regs.rsi, regs.rdx);
                pending_result = Some(abi::encode_result(result));
                regs.orig_rax = LINUX_GETPID;
                set_regs(pid, &regs);
            }
        }
    }
}

fn fault_end(pid: libc::pid_t, signal: i32) -> End {
    let regs = get_regs(pid);
    // SAFETY: all-zero is a valid siginfo_t; PTRACE_GETSIGINFO writes one siginfo_t.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above, the pointer is to a live siginfo_t.
    unsafe {
        libc::ptrace(
            libc::PTRACE_GETSIGINFO,
            pid,
            0,
            &mut info as *mut _ as *mut libc::c_void,
        )
    };
    // SAFETY: si_addr is valid to read for the fault signals this is called for.
    let addr = unsafe { info.si_addr() } as u64;
    kill_and_reap(pid);
    End::Signal {
        signal,
        addr,
        rip: regs.rip,
    }
}

fn lines(text: &str) -> Vec<&str> {
    text.lines().collect()
}

#[test]
fn hello_greets_with_its_cell_id_and_sleeps_a_second() {
    let run = run_payload("hello", &["3"], DEFAULT_LIMITS);
    assert_eq!(run.end, End::Exited(0));
    assert_eq!(lines(&run.stdout), ["hello from cell 42"; 3]);
    assert_eq!(
        run.clock_us, 2_000_000,
        "two 1 s sleeps between three greetings"
    );
}

#[test]
fn counter_counts_up_each_interval() {
    let limits = Limits {
        max_writes: 4,
        ..DEFAULT_LIMITS
    };
    let run = run_payload("counter", &[], limits);
    assert_eq!(run.end, End::Stopped);
    assert_eq!(
        lines(&run.stdout),
        ["count=1", "count=2", "count=3", "count=4"]
    );
    assert_eq!(run.clock_us, 3_000_000);
}

#[test]
fn spinner_beats_and_exits() {
    let run = run_payload("spinner", &["1000", "3"], DEFAULT_LIMITS);
    assert_eq!(run.end, End::Exited(0));
    let beats = lines(&run.stdout);
    assert_eq!(beats.len(), 3);
    assert!(
        beats[2].starts_with("spinner heartbeat=3 t_us="),
        "{beats:?}"
    );
}

#[test]
fn crasher_faults_become_signals_at_the_expected_place() {
    let cases = [
        ("pagefault", libc::SIGSEGV, Some(0x1000)),
        ("gpfault", libc::SIGSEGV, Some(0)),
        ("invalid-opcode", libc::SIGILL, None),
        ("divide-by-zero", libc::SIGFPE, None),
    ];
    for (mode, expected_signal, expected_addr) in cases {
        let run = run_payload("crasher", &[mode, "250"], DEFAULT_LIMITS);
        let End::Signal { signal, addr, rip } = run.end else {
            panic!("{mode}: {:?}", run.end)
        };
        assert_eq!(signal, expected_signal, "{mode}");
        if let Some(expected_addr) = expected_addr {
            assert_eq!(addr, expected_addr, "{mode}");
        }
        assert!(
            (abi::USER_CODE_BASE..abi::USER_CODE_BASE + 0x10_0000).contains(&rip),
            "{mode}: rip {rip:#x}"
        );
        assert_eq!(run.clock_us, 250_000, "{mode}: waited after_ms first");
        assert!(
            run.stdout
                .starts_with(&format!("crasher cell=42 mode={mode} after_ms=250\n")),
            "{}",
            run.stdout
        );
    }
}

#[test]
fn crasher_wild_pointer_gets_efault_and_exits_14() {
    let run = run_payload("crasher", &["wild-pointer"], DEFAULT_LIMITS);
    assert_eq!(run.end, End::Exited(14));
    assert!(run.stdout.contains("EFAULT (14)"), "{}", run.stdout);
}

#[test]
fn crasher_exit_code_panic_usage_and_spin() {
    let run = run_payload("crasher", &["exit", "7", "100"], DEFAULT_LIMITS);
    assert_eq!((run.end, run.clock_us), (End::Exited(7), 100_000));
    let run = run_payload("crasher", &["exit", "-3"], DEFAULT_LIMITS);
    assert_eq!(run.end, End::Exited(-3));
    let run = run_payload("crasher", &["panic"], DEFAULT_LIMITS);
    assert_eq!(run.end, End::Exited(101));
    assert!(
        run.stderr.starts_with("panic at ") && run.stderr.contains("crasher asked to panic"),
        "{}",
        run.stderr
    );
    let run = run_payload("crasher", &[], DEFAULT_LIMITS);
    assert_eq!(run.end, End::Exited(2));
    assert!(run.stdout.starts_with("usage: crasher"));
    let run = run_payload("crasher", &["bogus"], DEFAULT_LIMITS);
    assert_eq!(run.end, End::Exited(2));
    let run = run_payload("hello", &["x"], DEFAULT_LIMITS);
    assert_eq!(run.end, End::Exited(2), "malformed number is a usage error");
    let limits = Limits {
        deadline: Duration::from_millis(300),
        ..DEFAULT_LIMITS
    };
    let run = run_payload("crasher", &["spin-forever"], limits);
    assert_eq!(run.end, End::Stopped);
    assert!(
        run.stdout
            .ends_with("crasher: spinning forever without syscalls\n"),
        "{}",
        run.stdout
    );
}
