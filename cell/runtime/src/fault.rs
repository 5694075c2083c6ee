//! Deliberate CPU exceptions, for the `crasher` payload that tests fault isolation: each
//! function raises one exception in ring 3, which the kernel must turn into a cell exit
//! (`ExitReason::Faulted`) without harming the node. None of them returns; if a broken kernel
//! resumes the cell anyway, a trailing `ud2` raises #UD.

use core::arch::asm;

/// An address in the user half that is never mapped (below `abi::USER_CODE_BASE`).
pub const UNMAPPED_USER_ADDR: u64 = 0x0000_0000_0000_1000;
/// A non-canonical address: any access raises #GP rather than #PF.
pub const NON_CANONICAL_ADDR: u64 = 0x8000_0000_0000_0000;

/// Reads an unmapped user address: #PF (vector 14), CR2 = [`UNMAPPED_USER_ADDR`].
pub fn page_fault() -> ! {
    // SAFETY: the load targets a never-mapped page, so it traps before reading anything; the
    // asm touches no memory Rust knows about and never falls through (`ud2`).
    unsafe {
        asm!("mov rax, qword ptr [{addr}]", "ud2", addr = in(reg) UNMAPPED_USER_ADDR, options(noreturn, nostack));
    }
}

/// Reads a non-canonical address: #GP (vector 13).
pub fn general_protection_fault() -> ! {
    // SAFETY: a non-canonical load traps before any access; never falls through (`ud2`).
    unsafe {
        asm!("mov rax, qword ptr [{addr}]", "ud2", addr = in(reg) NON_CANONICAL_ADDR, options(noreturn, nostack));
    }
}

/// Executes `ud2`: #UD (vector 6).
pub fn invalid_opcode() -> ! {
    // SAFETY: `ud2` always traps; no memory or register state Rust relies on is touched.
    unsafe {
        asm!("ud2", options(noreturn, nostack));
    }
}

/// Divides by zero with `div`: #DE (vector 0).
pub fn divide_by_zero() -> ! {
    // SAFETY: only registers are used; `div ecx` with ecx = 0 traps; never falls through.
    unsafe {
        asm!(
            "xor edx, edx",
            "mov eax, 1",
            "xor ecx, ecx",
            "div ecx",
            "ud2",
            options(noreturn, nostack),
        );
    }
}
