//! Safe wrappers for every syscall of the ABI (`abi::Syscall`).
//!
//! Convention (see `docs/syscalls.md`): `rax` = number, `rdi`/`rsi`/`rdx` = arguments, result
//! in `rax` (`-4095..=-1` = `-errno`); the `syscall` instruction clobbers `rcx` and `r11`.
//! The asm blocks do not say `nomem`, so the compiler assumes the kernel may read and write
//! memory reachable from the arguments, which is exactly what `write` and `args` do.

use core::arch::asm;

use crate::abi::{self, nr, Errno};

/// Issues a three-argument syscall and returns the raw `rax`.
///
/// # Safety
/// The arguments must be valid for the call: any address passed must point to memory the
/// kernel may access as the call's contract says (read for `write`, write for `args`), for the
/// length given, and that memory must not be aliased in a way the write would violate.
#[inline(always)]
unsafe fn syscall3(number: u64, arg0: u64, arg1: u64, arg2: u64) -> u64 {
    let rax: u64;
    // SAFETY: the `syscall` instruction transfers to the kernel, which preserves every register
    // but rax (result), rcx and r11 (declared clobbered); memory effects are covered by the
    // caller's contract above. `nostack` is not claimed, so the compiler keeps the stack
    // below rsp untouched across the call whatever the red-zone setting.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number => rax,
            in("rdi") arg0,
            in("rsi") arg1,
            in("rdx") arg2,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    rax
}

/// Writes up to `abi::MAX_WRITE_LEN` bytes of `bytes` to `fd`; returns how many were taken.
pub fn write(fd: u64, bytes: &[u8]) -> Result<usize, Errno> {
    let len = bytes.len().min(abi::MAX_WRITE_LEN as usize);
    // SAFETY: `bytes[..len]` is a live, readable slice for the duration of the call; the
    // kernel only reads it.
    let rax = unsafe { syscall3(nr::WRITE, fd, bytes.as_ptr() as u64, len as u64) };
    abi::decode_result(rax).map(|written| written as usize)
}

/// Writes all of `bytes`, in `abi::MAX_WRITE_LEN` pieces.
pub fn write_all(fd: u64, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        let written = write(fd, bytes)?;
        if written == 0 || written > bytes.len() {
            // A kernel that takes nothing (or claims too much) would loop us forever.
            return Err(Errno::EINVAL);
        }
        bytes = &bytes[written..];
    }
    Ok(())
}

/// `write` with a raw address, for payloads that test the kernel's pointer validation (e.g.
/// passing a kernel-half address must fail with `EFAULT`). Safe: the kernel, not this process,
/// dereferences the address, and it only reads.
pub fn write_raw(fd: u64, addr: u64, len: u64) -> Result<u64, Errno> {
    // SAFETY: `write` only reads user memory and validates the range itself; a bad address
    // yields EFAULT, never a write into this process's memory.
    let rax = unsafe { syscall3(nr::WRITE, fd, addr, len) };
    abi::decode_result(rax)
}

/// Sleeps at least `ms` milliseconds (at most `abi::MAX_SLEEP_MS`).
pub fn sleep_ms(ms: u64) -> Result<(), Errno> {
    // SAFETY: no pointer arguments.
    let rax = unsafe { syscall3(nr::SLEEP_MS, ms, 0, 0) };
    abi::decode_result(rax).map(|_| ())
}

/// Gives up the rest of the time slice.
pub fn yield_now() {
    // SAFETY: no arguments.
    let rax = unsafe { syscall3(nr::YIELD, 0, 0, 0) };
    // yield cannot fail; an error here would mean a kernel that does not implement it, and
    // there is nothing better to do than to carry on.
    let _ = abi::decode_result(rax);
}

/// Ends the cell with `code`. Never returns.
pub fn exit(code: i32) -> ! {
    // SAFETY: no pointer arguments; `exit` does not return. Should a broken kernel return
    // anyway, `ud2` faults, which also ends the cell, so `noreturn` holds.
    unsafe {
        asm!(
            "syscall",
            "ud2",
            in("rax") nr::EXIT,
            in("rdi") code as u32 as u64,
            options(noreturn),
        );
    }
}

/// Monotonic microseconds since the node booted.
pub fn clock_us() -> u64 {
    // SAFETY: no pointer arguments.
    let rax = unsafe { syscall3(nr::CLOCK_US, 0, 0, 0) };
    abi::decode_result(rax).unwrap_or(0)
}

/// The calling cell's id.
pub fn cell_id() -> u64 {
    // SAFETY: no pointer arguments.
    let rax = unsafe { syscall3(nr::CELL_ID, 0, 0, 0) };
    abi::decode_result(rax).unwrap_or(u64::MAX)
}

/// Copies the argument blob into `buf`; returns its length (`ERANGE` if `buf` is too small).
pub fn args(buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is a live, exclusively borrowed, writable slice of `buf.len()` bytes; the
    // kernel writes at most that many bytes into it.
    let rax = unsafe { syscall3(nr::ARGS, buf.as_mut_ptr() as u64, buf.len() as u64, 0) };
    let len = abi::decode_result(rax)? as usize;
    if len > buf.len() {
        return Err(Errno::ERANGE);
    }
    Ok(len)
}
