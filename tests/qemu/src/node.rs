//! One QEMU node under test: process, console socket, event log.
//!
//! QEMU is started with its console as a unix-socket server that waits for us
//! (`server=on,wait=on`), so not one byte of boot output is lost. A reader thread copies the
//! console into a shared buffer (and a log file); `expect` scans it from a cursor, so each
//! expectation consumes what it matched. Dropping a `Node` SIGKILLs its QEMU (by PID).
//!
//! A node that belongs to a cluster carries the run's journal (`timeline::journal`): every
//! signal the harness sends it and every reading of its clock is recorded there, so a
//! timeline can place its events on the host clock and mark the faults.

use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};

use std::thread;
use std::time::{Duration, Instant};
use timeline::align::{ClockMap, ClockSample};
use timeline::journal::{self, Journal};

use crate::events::{self, Event};
use crate::qemu::NodeSpec;
use crate::HarnessError;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
const TAIL_CHARS: usize = 600;

/// A running QEMU node.
pub struct Node {
    pub spec: NodeSpec,
    child: Child,
    pid: u32,
    console: UnixStream,
    output: Arc<Mutex<Vec<u8>>>,
    cursor: usize,
    events_path: PathBuf,
    /// When QEMU was spawned (for boot-time measurement).
    pub started: Instant,
    /// Set once the process has been reaped.
    exit: Option<ExitStatus>,
    /// The run's journal, if the node belongs to a cluster.
    journal: Option<Arc<Journal>>,
    /// Which boot of this node in the run (0 first, N for the N-th restart).
    incarnation: u32,
    /// Readings of the node's clock, host side relative to `started`.
    samples: Vec<ClockSample>,
    /// The last signal sent (SIGSTOP leaves the node unable to answer).
    last_signal: Option<i32>,
}

/// Timeout of the clock reading taken when a cluster is torn down.
pub const FINAL_SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGSTOP => "SIGSTOP".into(),
        libc::SIGCONT => "SIGCONT".into(),
        other => format!("signal{other}"),
    }
}

impl Node {
    /// Starts QEMU for `spec`, with its files under `dir/<name>`.
    pub fn start(spec: NodeSpec, dir: &Path) -> Result<Node, HarnessError> {
        let node_dir = dir.join(&spec.name);
        let _ = fs::remove_dir_all(&node_dir);
        fs::create_dir_all(&node_dir)
            .map_err(|e| HarnessError::Io(format!("creating {}", node_dir.display()), e))?;
        let socket = node_dir.join("console.sock");
        let events_path = node_dir.join("events.log");
        let _ = fs::remove_file(&socket);
        let _ = fs::remove_file(&events_path);
        let chardev = format!("socket,id=com1,path={},server=on,wait=on", socket.display());
        let qemu_log = File::create(node_dir.join("qemu.stderr"))
            .map_err(|e| HarnessError::Io("creating qemu.stderr".into(), e))?;
        let mut cmd = spec.command(&chardev, &events_path);
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(qemu_log);
        let started = Instant::now();
        let mut child = cmd
            .spawn()
            .map_err(|e| HarnessError::Io(format!("starting {}", crate::qemu::QEMU), e))?;
        let pid = child.id();
        let console = match connect(&socket, &mut child) {
            Ok(stream) => stream,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                let stderr = fs::read_to_string(node_dir.join("qemu.stderr")).unwrap_or_default();
                return Err(HarnessError::Check(format!(
                    "{e}; qemu stderr: {}",
                    stderr.trim()
                )));
            }
        };
        let output = Arc::new(Mutex::new(Vec::new()));
        spawn_reader(
            console
                .try_clone()
                .map_err(|e| HarnessError::Io("cloning socket".into(), e))?,
            output.clone(),
            node_dir.join("console.log"),
        );
        Ok(Node {
            spec,
            child,
            pid,
            console,
            output,
            cursor: 0,
            events_path,
            started,
            exit: None,
            journal: None,
            incarnation: 0,
            samples: Vec::new(),
            last_signal: None,
        })
    }

    /// Records this node's signals and clock readings in `journal` from now on, as boot
    /// number `incarnation` of the node.
    pub fn set_journal(&mut self, journal: Arc<Journal>, incarnation: u32) {
        self.journal = Some(journal);
        self.incarnation = incarnation;
    }

    /// Which boot of this node in the run this is.
    pub fn incarnation(&self) -> u32 {
        self.incarnation
    }

    /// Whether the node can answer a command: QEMU still runs and is not stopped.
    pub fn is_responsive(&mut self) -> bool {
        self.try_exit().is_none()
            && !matches!(self.last_signal, Some(libc::SIGSTOP | libc::SIGKILL))
    }

    /// QEMU's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Waits until `needle` appears after the cursor; returns the text up to and including
    /// it and moves the cursor past it.
    pub fn expect(&mut self, needle: &str, timeout: Duration) -> Result<String, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            {
                let out = self.output.lock().expect("console buffer poisoned");
                let hay = &out[self.cursor.min(out.len())..];
                if let Some(pos) = find(hay, needle.as_bytes()) {
                    let text = String::from_utf8_lossy(&hay[..pos + needle.len()]).into_owned();
                    self.cursor += pos + needle.len();
                    return Ok(text);
                }
            }
            if let Some(status) = self.try_exit() {
                return Err(HarnessError::Exited {
                    status: status.code(),
                    tail: self.tail(),
                });
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    waiting_for: needle.to_string(),
                    seconds: timeout.as_secs_f64(),
                    tail: self.tail(),
                });
            }
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// The node's prompt.
    pub fn prompt(&self) -> String {
        format!("xylem@{}> ", self.spec.name)
    }

    /// Waits for the first prompt after boot.
    pub fn wait_for_prompt(&mut self, timeout: Duration) -> Result<(), HarnessError> {
        let prompt = self.prompt();
        self.expect(&prompt, timeout).map(|_| ())
    }

    /// Types a line into the console.
    pub fn send_line(&mut self, line: &str) -> Result<(), HarnessError> {
        self.send_bytes(format!("{line}\r").as_bytes())
    }

    /// Sends raw bytes to the console.
    pub fn send_bytes(&mut self, bytes: &[u8]) -> Result<(), HarnessError> {
        self.console
            .write_all(bytes)
            .map_err(|e| HarnessError::Io("writing to console".into(), e))
    }

    /// Runs a shell command and returns its output (between the echoed line and the next
    /// prompt), with line endings normalised.
    pub fn command(&mut self, line: &str, timeout: Duration) -> Result<String, HarnessError> {
        self.send_line(line)?;
        let prompt = self.prompt();
        let text = self.expect(&prompt, timeout)?;
        let body = text.strip_suffix(&prompt).unwrap_or(&text);
        let body = body.replace("\r\n", "\n");
        // Drop the echoed command line itself.
        let body = match body.split_once('\n') {
            Some((_echo, rest)) => rest.to_string(),
            None => String::new(),
        };
        Ok(body)
    }

    /// Runs `uptime` and returns the node's clock in seconds.
    fn uptime_secs(&mut self) -> Result<f64, HarnessError> {
        self.uptime_secs_within(Duration::from_secs(10))
    }

    fn uptime_secs_within(&mut self, timeout: Duration) -> Result<f64, HarnessError> {
        let out = self.command("uptime", timeout)?;
        // Read the `up …` line wherever it is: right after a restart the echo can arrive
        // behind boot output, so the body may still start with the echoed command.
        out.lines()
            .find_map(|line| line.trim().strip_prefix("up "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| HarnessError::Check(format!("cannot read uptime from {out:?}")))
    }

    /// The node's clock now (µs since its boot), read with `uptime`. Events with a larger
    /// `t_us` happened after this call started.
    pub fn guest_now_us(&mut self) -> Result<u64, HarnessError> {
        Ok((self.uptime_secs()? * 1e6) as u64)
    }

    /// Reads the node's clock with `uptime`: the host instant of the reading (the round
    /// trip's midpoint, error about half the round trip, ~1 ms) and the guest µs it read.
    /// The reading is kept (see [`Node::clock_map`]) and journaled.
    pub fn clock_sample_within(
        &mut self,
        timeout: Duration,
    ) -> Result<(Instant, u64), HarnessError> {
        let before = Instant::now();
        let secs = self.uptime_secs_within(timeout)?;
        let after = Instant::now();
        let mid = before + (after - before) / 2;
        let guest_us = (secs * 1e6).round() as u64;
        let rtt_us = u64::try_from((after - before).as_micros()).unwrap_or(u64::MAX);
        self.samples.push(ClockSample {
            host_us: i64::try_from(mid.duration_since(self.started).as_micros())
                .unwrap_or(i64::MAX),
            guest_us,
            rtt_us,
        });
        if let Some(j) = &self.journal {
            j.record(
                mid,
                journal::kind::CLOCK,
                &[
                    ("target", &self.spec.name),
                    ("incarnation", &self.incarnation),
                    ("guest_us", &guest_us),
                    ("rtt_us", &rtt_us),
                ],
            );
        }
        Ok((mid, guest_us))
    }

    /// [`Node::clock_sample_within`] with the usual command timeout.
    pub fn clock_sample(&mut self) -> Result<(Instant, u64), HarnessError> {
        self.clock_sample_within(Duration::from_secs(10))
    }

    /// The host instant at which this node's clock read zero: COM2 `t_us` values plus this
    /// are host times, assuming the node's clock runs at the host's rate. Measured with
    /// `uptime` (see [`Node::clock_sample`]).
    pub fn clock_origin(&mut self) -> Result<Instant, HarnessError> {
        let (mid, guest_us) = self.clock_sample()?;
        mid.checked_sub(Duration::from_micros(guest_us))
            .ok_or_else(|| HarnessError::Check("clock origin before host epoch".into()))
    }

    /// The host instant of a COM2 time, fitted through every clock reading taken so far
    /// (offset, and the rate once readings span half a second); `None` before the first.
    /// Timelines use the same fit (`timeline::align`), so both agree.
    pub fn host_instant(&self, t_us: u64) -> Option<Instant> {
        let map = ClockMap::fit(&self.samples)?;
        let host_us = map.host_us(t_us);
        Some(if host_us >= 0 {
            self.started + Duration::from_micros(host_us as u64)
        } else {
            self.started - Duration::from_micros(host_us.unsigned_abs())
        })
    }

    /// The clock readings taken so far (host µs relative to QEMU's start).
    pub fn clock_samples(&self) -> &[ClockSample] {
        &self.samples
    }

    /// Everything on COM2 so far.
    pub fn events(&self) -> Vec<Event> {
        events::parse_log(&fs::read_to_string(&self.events_path).unwrap_or_default())
    }

    /// Waits for an event matching `pred`.
    pub fn wait_event(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&Event) -> bool,
    ) -> Result<Event, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(e) = self.events().into_iter().find(|e| pred(e)) {
                return Ok(e);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    waiting_for: what.into(),
                    seconds: timeout.as_secs_f64(),
                    tail: self.tail(),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends a signal to QEMU (SIGKILL, SIGSTOP, SIGCONT), journaling it first.
    pub fn signal(&mut self, signal: i32) -> Result<(), HarnessError> {
        let pid = libc::pid_t::try_from(self.pid)
            .map_err(|_| HarnessError::Check("pid out of range".into()))?;
        if let Some(j) = &self.journal {
            j.record(
                Instant::now(),
                journal::kind::SIGNAL,
                &[
                    ("target", &self.spec.name),
                    ("incarnation", &self.incarnation),
                    ("signal", &signal_name(signal)),
                    ("pid", &pid),
                ],
            );
        }
        self.last_signal = Some(signal);
        // SAFETY: kill(2) on the PID of a child this Node spawned and has not yet reaped, so
        // the PID cannot have been recycled for another process.
        let rc = unsafe { libc::kill(pid, signal) };
        if rc == 0 {
            Ok(())
        } else {
            Err(HarnessError::Io(
                format!("kill({pid}, {signal})"),
                std::io::Error::last_os_error(),
            ))
        }
    }

    /// Waits for QEMU to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<ExitStatus, HarnessError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_exit() {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                return Err(HarnessError::Timeout {
                    waiting_for: "QEMU to exit".into(),
                    seconds: timeout.as_secs_f64(),
                    tail: self.tail(),
                });
            }
            thread::sleep(Duration::from_millis(10));
        }
    }

    /// All console output so far.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().expect("console buffer poisoned")).into_owned()
    }

    fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = self.child.try_wait().ok().flatten();
        }
        self.exit
    }

    fn tail(&self) -> String {
        let out = self.output();
        let start = out
            .char_indices()
            .rev()
            .nth(TAIL_CHARS)
            .map_or(0, |(i, _)| i);
        out[start..].to_string()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if self.try_exit().is_none() {
            // The child is ours and not yet reaped; SIGCONT first so a stopped QEMU dies.
            // Not through `signal`: tearing down is not a fault worth a journal line.
            if let Ok(pid) = libc::pid_t::try_from(self.pid) {
                // SAFETY: kill(2) on our own unreaped child, as in `signal`.
                unsafe { libc::kill(pid, libc::SIGCONT) };
            }
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn connect(socket: &Path, child: &mut Child) -> Result<UnixStream, String> {
    let deadline = Instant::now() + CONNECT_TIMEOUT;
    loop {
        if let Ok(stream) = UnixStream::connect(socket) {
            return Ok(stream);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("QEMU exited before its console opened ({status})"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "console socket {} did not appear",
                socket.display()
            ));
        }
        thread::sleep(Duration::from_millis(5));
    }
}

fn spawn_reader(mut stream: UnixStream, output: Arc<Mutex<Vec<u8>>>, log_path: PathBuf) {
    thread::spawn(move || {
        let mut log = File::create(log_path).ok();
        let mut buf = [0u8; 4096];
        // Ends when QEMU closes the socket (exit or kill).
        while let Ok(n) = stream.read(&mut buf) {
            if n == 0 {
                break;
            }
            output
                .lock()
                .expect("console buffer poisoned")
                .extend_from_slice(&buf[..n]);
            if let Some(log) = log.as_mut() {
                let _ = log.write_all(&buf[..n]);
            }
        }
    });
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return Some(0);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}
