//! The two 16550 UARTs: COM1 is the interactive console, COM2 the machine-readable event log.
//!
//! Writers take a spin lock with interrupts masked, so an interrupt handler that logs can
//! never deadlock against the code it interrupted. Panic and fault paths use
//! [`emergency_writer`], which bypasses the lock: output may interleave, but it always gets
//! out.

use core::fmt;
use spin::Mutex;
use uart_16550::SerialPort;

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
