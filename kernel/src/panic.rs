//! The panic handler: report, backtrace, crash record, and exit QEMU with a status
//! harnesses recognise (99, see `arch::qemu::ExitCode::Panic`).
//!
//! Order, each step safe to run whatever state the kernel is in: interrupts off; the report
//! on COM1 (lock-free writer); the COM2 event lines still queued, then a last `kind=panic`
//! line on COM2 (lock-free too); the crash
//! record to disk (`crash::persist`: polled, allocation-free, skipped if the panic struck
//! inside a disk request); exit. A panic during any of this exits at once.

use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::serial::{self, Line};
use crate::arch::{backtrace, cpu, qemu};
use crate::{crash, node};

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    x86_64::instructions::interrupts::disable();
    let rbp = cpu::frame_pointer();
    let mut w = serial::emergency_writer();
    if PANICKING.swap(true, Ordering::SeqCst) {
        let _ = writeln!(w, "\n!!! nested panic: {}", info.message());
        qemu::exit(qemu::ExitCode::Panic);
    }
    let _ = write!(w, "\n!!! KERNEL PANIC");
    if let Some(location) = info.location() {
        let _ = write!(w, " at {}:{}", location.file(), location.line());
    }
    let _ = writeln!(w, ": {}", info.message());
    backtrace::print_from(&mut w, rbp);
    let record = crash::record_panic(info, rbp);
    // Events queued for COM2 happened before the panic: out first, in order.
    serial::flush_event_log();
    let mut events = serial::emergency_writer_to(Line::EventLog);
    let _ = writeln!(
        events,
        "t_us={} node={} kind=panic {}",
        record.uptime_us,
        node::name(),
        crash::EventFields(&record)
    );
    match crash::persist(&record) {
        Ok(()) => {
            let _ = writeln!(
                w,
                "!!! crash record written to disk (boot {:016x})",
                record.boot_id
            );
        }
        Err(why) => {
            let _ = writeln!(w, "!!! crash record not written: {why}");
        }
    }
    let _ = writeln!(w, "!!! node halted (QEMU exit status 99)");
    qemu::exit(qemu::ExitCode::Panic);
    #[allow(unreachable_code)]
    cpu::halt_forever()
}
