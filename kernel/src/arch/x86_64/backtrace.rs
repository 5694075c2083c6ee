//! Frame-pointer backtraces for fault reports and panics.
//!
//! The kernel is built with frame pointers, so each frame starts with the caller's RBP and
//! the return address above it. Every address is checked against the page tables before it
//! is read (through the probe `mm` installs), so a corrupt chain ends the trace instead of
//! faulting inside the fault handler. Each address is printed with its offset in the
//! kernel ELF, which `llvm-addr2line -f -C -e target/xylem/kernel-release.elf 0xOFFSET`
//! resolves to a function and line. Slots that do not point into kernel text (the words an
//! interrupt frame puts where a return address would be) are skipped.

use core::fmt::Write;
use spin::Once;

use super::cpu;

const MAX_FRAMES: usize = 24;

/// Where the kernel image is loaded (see `KERNEL_BASE` in main.rs); all kernel text lies
/// above it.
const KERNEL_TEXT_START: u64 = 0xffff_ffff_8000_0000;

static READABLE: Once<fn(u64) -> bool> = Once::new();

/// Installs the probe that says whether a kernel virtual address is mapped.
pub fn set_readable_probe(probe: fn(u64) -> bool) {
    READABLE.call_once(|| probe);
}

/// Prints the faulting RIP and then the chain of callers above the current frame.
pub fn print_from_interrupt(w: &mut impl Write, rip: u64) {
    let _ = writeln!(
        w,
        "    backtrace (innermost first; ELF offsets for llvm-addr2line):"
    );
    print_frame(w, 0, rip);
    walk(w, cpu::frame_pointer(), 1);
}

/// Prints the chain of callers above the frame at `rbp` (the panic handler passes its own,
/// so the printout and the crash record list the same frames).
pub fn print_from(w: &mut impl Write, rbp: u64) {
    let _ = writeln!(
        w,
        "    backtrace (innermost first; ELF offsets for llvm-addr2line):"
    );
    walk(w, rbp, 0);
}

/// Calls `keep` with each return address into kernel text above the frame at `rbp`,
/// innermost first, until it returns false (no allocation: the crash record uses it).
pub fn for_each_return_address(mut rbp: u64, mut keep: impl FnMut(u64) -> bool) {
    let Some(readable) = READABLE.get() else {
        return;
    };
    for _ in 0..MAX_FRAMES {
        if rbp == 0 || !rbp.is_multiple_of(8) || !readable(rbp) || !readable(rbp + 8) {
            return;
        }
        // SAFETY: both words were just checked to be mapped; read as plain integers.
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if ret == 0 {
            return;
        }
        if ret >= KERNEL_TEXT_START && !keep(ret) {
            return;
        }
        if next <= rbp {
            return;
        }
        rbp = next;
    }
}

fn print_frame(w: &mut impl Write, index: usize, addr: u64) {
    let _ = writeln!(
        w,
        "      #{index:<2} {addr:#018x}  (elf +{:#x})",
        addr.wrapping_sub(KERNEL_TEXT_START)
    );
}

fn walk(w: &mut impl Write, mut rbp: u64, first_index: usize) {
    let Some(readable) = READABLE.get() else {
        let _ = writeln!(w, "      (no backtrace: memory not initialised)");
        return;
    };
    let mut index = first_index;
    for _ in 0..MAX_FRAMES {
        if rbp == 0 || !rbp.is_multiple_of(8) || !readable(rbp) || !readable(rbp + 8) {
            return;
        }
        // SAFETY: both words were just checked to be mapped; they are read as plain
        // integers, so whatever they hold cannot cause undefined behaviour.
        let (next, ret) = unsafe { (*(rbp as *const u64), *((rbp + 8) as *const u64)) };
        if ret == 0 {
            return;
        }
        if ret >= KERNEL_TEXT_START {
            print_frame(w, index, ret);
            index += 1;
        }
        if next <= rbp {
            // Stacks grow down, so callers' frames sit at higher addresses; anything else
            // is a corrupt or cyclic chain.
            return;
        }
        rbp = next;
    }
}
