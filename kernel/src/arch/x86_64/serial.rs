//! The two 16550 UARTs: COM1 is the interactive console, COM2 the machine-readable event log.
//!
//! Writers take a spin lock with interrupts masked, so an interrupt handler that logs can
//! never deadlock against the code it interrupted. Panic and fault paths use
//! [`emergency_writer`], which bypasses the lock: output may interleave, but it always gets
//! out.
//!
//! COM2 lines can be deferred ([`queue_event_line`]): once the event-log writer task runs
//! (`events::start_writer`), a line is formatted into a bounded ring ([`EVENT_LOG_RING_BYTES`],
//! `kcore::line_ring`) and written to the port later by that task ([`drain_event_log`]), so
//! whoever logs an event (a cell starting, an interrupt handler) does not wait for an
//! emulated UART, one port write per byte. Lines keep their order (one FIFO, one writer); a
//! line that does not fit is dropped whole and counted. Leaving the machine (panic, exit,
//! poweroff) writes what is still queued first ([`flush_event_log`]).

use core::fmt;
use core::sync::atomic::{AtomicBool, Ordering};
use kcore::line_ring::LineRing;
use spin::Mutex;
use uart_16550::SerialPort;

/// COM2 bytes that may wait for the writer: about a hundred event lines.
pub const EVENT_LOG_RING_BYTES: usize = 16 * 1024;

/// COM2 lines queued for the writer task.
static COM2_PENDING: Mutex<LineRing<EVENT_LOG_RING_BYTES>> = Mutex::new(LineRing::new());
/// Whether COM2 lines are queued (a writer task runs) rather than written at once (boot).
static DEFERRED: AtomicBool = AtomicBool::new(false);

const COM1_BASE: u16 = 0x3f8;
const COM2_BASE: u16 = 0x2f8;

/// Which serial line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Line {
    Console,
    EventLog,
}

static COM1: Mutex<Option<SerialPort>> = Mutex::new(None);
static COM2: Mutex<Option<SerialPort>> = Mutex::new(None);

/// Initialises both UARTs (115200 8N1, receive interrupt enabled on COM1).
pub fn init() {
    // SAFETY: COM1 and COM2 are the PC's standard UART ports and nothing else drives them.
    let (mut com1, mut com2) = unsafe { (SerialPort::new(COM1_BASE), SerialPort::new(COM2_BASE)) };
    com1.init();
    com2.init();
    *COM1.lock() = Some(com1);
    *COM2.lock() = Some(com2);
}

fn port(line: Line) -> &'static Mutex<Option<SerialPort>> {
    match line {
        Line::Console => &COM1,
        Line::EventLog => &COM2,
    }
}

/// Writes raw bytes (no newline translation) to a line.
pub fn write_bytes(line: Line, bytes: &[u8]) {
    super::cpu::without_interrupts(|| {
        if let Some(port) = port(line).lock().as_mut() {
            for &b in bytes {
                port.send_raw(b);
            }
        }
    });
}

/// Writes formatted text to a line, translating `\n` to `\r\n` for terminals.
pub fn write_fmt(line: Line, args: fmt::Arguments) {
    super::cpu::without_interrupts(|| {
        if let Some(port) = port(line).lock().as_mut() {
            let _ = fmt::Write::write_fmt(&mut CrLf(port), args);
        }
    });
}

/// Writes one COM2 event line: queued for the writer task once it runs, written now before
/// (boot). Returns false when the queue was full and the line was dropped (counted).
pub fn queue_event_line(args: fmt::Arguments) -> bool {
    super::cpu::without_interrupts(|| {
        if DEFERRED.load(Ordering::Acquire) {
            COM2_PENDING.lock().push_fmt(args)
        } else {
            if let Some(port) = COM2.lock().as_mut() {
                let _ = fmt::Write::write_fmt(&mut CrLf(port), args);
            }
            true
        }
    })
}

/// From now on COM2 event lines are queued; a task must call [`drain_event_log`].
pub fn defer_event_log() {
    DEFERRED.store(true, Ordering::Release);
}

/// Writes up to `max_bytes` (at most 128) of the queued COM2 bytes to the port, oldest first,
/// with interrupts masked (a chunk is never interleaved with another writer's); returns how
/// many. Only the event-log writer calls it, so chunks go out in order.
pub fn drain_event_log(max_bytes: usize) -> usize {
    let mut chunk = [0u8; 128];
    let limit = max_bytes.min(chunk.len());
    super::cpu::without_interrupts(|| {
        let n = COM2_PENDING.lock().pop_chunk(&mut chunk[..limit]);
        if let Some(port) = COM2.lock().as_mut() {
            for &b in &chunk[..n] {
                port.send_raw(b);
            }
        }
        n
    })
}

/// (bytes queued for COM2, lines dropped because the queue was full, lines queued in all).
pub fn event_log_counters() -> (usize, u64, u64) {
    super::cpu::without_interrupts(|| {
        let ring = COM2_PENDING.lock();
        (ring.len(), ring.dropped_lines(), ring.pushed_lines())
    })
}

/// Writes everything still queued for COM2, now, without waiting for the writer: for the
/// way out (panic, exit, poweroff). Lock-free on the port; skipped if the panic struck while
/// the queue itself was locked (its state may be half-changed).
pub fn flush_event_log() {
    super::cpu::without_interrupts(|| {
        let Some(mut ring) = COM2_PENDING.try_lock() else {
            return;
        };
        // SAFETY: COM2 is the PC's standard second UART, initialised at boot; a second handle
        // only risks interleaving with a writer interrupted mid-chunk, and chunks are written
        // with interrupts masked, so on this one CPU none is.
        let mut port = unsafe { SerialPort::new(COM2_BASE) };
        let mut chunk = [0u8; 128];
        loop {
            let n = ring.pop_chunk(&mut chunk);
            if n == 0 {
                break;
            }
            for &b in &chunk[..n] {
                port.send_raw(b);
            }
        }
    });
}

/// Reads every byte the console UART has buffered. Called from the COM1 interrupt handler.
pub fn drain_console_input(mut sink: impl FnMut(u8)) {
    if let Some(port) = COM1.lock().as_mut() {
        while let Ok(byte) = port.try_receive() {
            sink(byte);
        }
    }
}

struct CrLf<'a>(&'a mut SerialPort);

impl fmt::Write for CrLf<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.0.send_raw(b'\r');
            }
            self.0.send_raw(b);
        }
        Ok(())
    }
}

/// A lock-free writer to COM1 for panics and fault reports.
pub fn emergency_writer() -> impl fmt::Write {
    emergency_writer_to(Line::Console)
}

/// A lock-free writer to either line (the panic handler's last COM2 event uses it).
pub fn emergency_writer_to(line: Line) -> impl fmt::Write {
    struct Emergency(SerialPort);
    impl fmt::Write for Emergency {
        fn write_str(&mut self, s: &str) -> fmt::Result {
            CrLf(&mut self.0).write_str(s)
        }
    }
    let base = match line {
        Line::Console => COM1_BASE,
        Line::EventLog => COM2_BASE,
    };
    // SAFETY: both UARTs are initialised early in boot; a second handle only risks
    // interleaved output, which is acceptable on the way down.
    Emergency(unsafe { SerialPort::new(base) })
}
