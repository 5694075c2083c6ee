//! The panic handler: report, backtrace, and exit QEMU with a status harnesses recognise
//! (99, see `arch::qemu::ExitCode::Panic`).

use core::fmt::Write;
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicBool, Ordering};

use crate::arch::{backtrace, cpu, qemu, serial};

static PANICKING: AtomicBool = AtomicBool::new(false);

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    x86_64::instructions::interrupts::disable();
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
    backtrace::print_here(&mut w);
    let _ = writeln!(w, "!!! node halted (QEMU exit status 99)");
    qemu::exit(qemu::ExitCode::Panic);
    #[allow(unreachable_code)]
    cpu::halt_forever()
}
