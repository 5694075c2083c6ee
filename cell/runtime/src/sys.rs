//! Safe wrappers for every syscall of the ABI (`abi::Syscall`).
//!
//! Convention (see `docs/syscalls.md`): `rax` = number, `rdi`/`rsi`/`rdx` = arguments, result
//! in `rax` (`-4095..=-1` = `-errno`); the `syscall` instruction clobbers `rcx` and `r11`.
//! The asm blocks do not say `nomem`, so the compiler assumes the kernel may read and write
//! memory reachable from the arguments, which is exactly what `write` and `args` do.

use core::arch::asm;

use crate::abi::{self, nr, CellInfo, Errno, PollFd, SockAddrV4, POLL_FD_BYTES};

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

/// Issues a four-argument syscall (the fourth in `r10`, as on Linux) and returns `rax`.
///
/// # Safety
/// As [`syscall3`].
#[inline(always)]
unsafe fn syscall4(number: u64, arg0: u64, arg1: u64, arg2: u64, arg3: u64) -> u64 {
    let rax: u64;
    // SAFETY: as in `syscall3`; `r10` is an input the kernel preserves.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") number => rax,
            in("rdi") arg0,
            in("rsi") arg1,
            in("rdx") arg2,
            in("r10") arg3,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    rax
}

/// A call whose arguments are plain numbers (no pointers).
fn plain(number: u64, arg0: u64, arg1: u64, arg2: u64) -> Result<u64, Errno> {
    // SAFETY: no argument is a pointer the kernel dereferences for this call.
    abi::decode_result(unsafe { syscall3(number, arg0, arg1, arg2) })
}

/// Writes up to `abi::MAX_WRITE_LEN` bytes (the log, fds 1 and 2) or `abi::MAX_IO_LEN`
/// bytes (a TCP stream) of `bytes` to `fd`; returns how many were taken.
pub fn write(fd: u64, bytes: &[u8]) -> Result<usize, Errno> {
    let cap = if fd < abi::FIRST_SOCKET_FD {
        abi::MAX_WRITE_LEN
    } else {
        abi::MAX_IO_LEN
    };
    let len = bytes.len().min(cap as usize);
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

/// This cell's names, node and memory figures.
pub fn cell_info() -> Result<CellInfo, Errno> {
    let mut record = [0u8; abi::CELL_INFO_BYTES];
    // SAFETY: `record` is a live, exclusively borrowed buffer of exactly the size passed.
    let rax = unsafe {
        syscall3(
            nr::CELL_INFO,
            record.as_mut_ptr() as u64,
            record.len() as u64,
            0,
        )
    };
    abi::decode_result(rax)?;
    CellInfo::decode(&record).map_err(|_| Errno::EINVAL)
}

/// Maps `len` bytes (rounded up to pages) of zeroed read-write memory; returns the address.
pub fn mem_map(len: u64) -> Result<u64, Errno> {
    plain(nr::MEM_MAP, len, 0, 0)
}

/// Unmaps a range `mem_map` returned.
///
/// # Safety
/// Nothing may use `[addr, addr + len)` afterwards (the pages are gone: a later access
/// faults and ends the cell).
pub unsafe fn mem_unmap(addr: u64, len: u64) -> Result<(), Errno> {
    plain(nr::MEM_UNMAP, addr, len, 0).map(|_| ())
}

/// Creates a socket (`abi::SocketKind` as a number, flags such as `abi::SOCK_NONBLOCK`).
pub fn socket(kind: abi::SocketKind, flags: u64) -> Result<u64, Errno> {
    plain(nr::SOCKET, kind.to_u64(), flags, 0)
}

/// Binds a socket to a local address.
pub fn bind(fd: u64, addr: SockAddrV4) -> Result<(), Errno> {
    plain(nr::BIND, fd, addr.to_u64(), 0).map(|_| ())
}

/// Makes a bound TCP socket listen.
pub fn listen(fd: u64, backlog: u64) -> Result<(), Errno> {
    plain(nr::LISTEN, fd, backlog, 0).map(|_| ())
}

/// Takes one connection from a listener; returns its descriptor.
pub fn accept(fd: u64) -> Result<u64, Errno> {
    plain(nr::ACCEPT, fd, 0, 0)
}

/// Connects a TCP socket (blocks unless the socket is non-blocking: `EINPROGRESS`).
pub fn connect(fd: u64, addr: SockAddrV4) -> Result<(), Errno> {
    plain(nr::CONNECT, fd, addr.to_u64(), 0).map(|_| ())
}

/// Reads from a TCP stream into `buf`; 0 means the peer closed its side.
pub fn read(fd: u64, buf: &mut [u8]) -> Result<usize, Errno> {
    // SAFETY: `buf` is a live, exclusively borrowed, writable slice; the kernel writes at
    // most `buf.len()` bytes into it.
    let rax = unsafe { syscall3(nr::READ, fd, buf.as_mut_ptr() as u64, buf.len() as u64) };
    let read = abi::decode_result(rax)? as usize;
    if read > buf.len() {
        return Err(Errno::EINVAL);
    }
    Ok(read)
}

/// Shuts down one or both directions of a stream.
pub fn shutdown(fd: u64, how: abi::Shutdown) -> Result<(), Errno> {
    plain(nr::SHUTDOWN, fd, how.to_u64(), 0).map(|_| ())
}

/// Closes a descriptor.
pub fn close(fd: u64) -> Result<(), Errno> {
    plain(nr::CLOSE, fd, 0, 0).map(|_| ())
}

/// Sends one datagram.
pub fn send_to(fd: u64, data: &[u8], to: SockAddrV4) -> Result<usize, Errno> {
    // SAFETY: `data` is a live slice the kernel only reads.
    let rax = unsafe {
        syscall4(
            nr::SEND_TO,
            fd,
            data.as_ptr() as u64,
            data.len() as u64,
            to.to_u64(),
        )
    };
    abi::decode_result(rax).map(|n| n as usize)
}

/// Receives one datagram into `buf`; returns its length (cut to `buf`) and the sender.
pub fn recv_from(fd: u64, buf: &mut [u8]) -> Result<(usize, SockAddrV4), Errno> {
    let mut from = 0u64;
    // SAFETY: `buf` and `from` are live, exclusively borrowed, writable; the kernel writes at
    // most `buf.len()` bytes and one u64.
    let rax = unsafe {
        syscall4(
            nr::RECV_FROM,
            fd,
            buf.as_mut_ptr() as u64,
            buf.len() as u64,
            &mut from as *mut u64 as u64,
        )
    };
    let len = abi::decode_result(rax)? as usize;
    let from = SockAddrV4::from_u64(from).ok_or(Errno::EINVAL)?;
    Ok((len.min(buf.len()), from))
}

/// Waits until an entry is ready or `timeout_ms` passes (`abi::POLL_FOREVER`: no timeout);
/// fills each entry's `revents` and returns how many are ready.
pub fn poll(entries: &mut [PollFd], timeout_ms: u64) -> Result<usize, Errno> {
    let count = entries.len().min(abi::MAX_POLL_FDS as usize);
    let mut raw = [0u8; abi::MAX_POLL_FDS as usize * POLL_FD_BYTES];
    let (records, _) = raw.as_chunks_mut::<POLL_FD_BYTES>();
    for (entry, record) in entries.iter().zip(records.iter_mut()) {
        *record = entry.encode();
    }
    // SAFETY: `raw` is a live, exclusively borrowed buffer of `count` records that the
    // kernel reads and rewrites in place.
    let rax = unsafe { syscall3(nr::POLL, raw.as_mut_ptr() as u64, count as u64, timeout_ms) };
    let ready = abi::decode_result(rax)? as usize;
    let (records, _) = raw.as_chunks::<POLL_FD_BYTES>();
    for (entry, record) in entries.iter_mut().zip(records) {
        entry.revents = PollFd::decode(*record).revents;
    }
    Ok(ready)
}

/// A socket's local or peer address.
pub fn sock_addr(fd: u64, which: abi::AddrWhich) -> Result<SockAddrV4, Errno> {
    let packed = plain(nr::SOCK_ADDR, fd, which.to_u64(), 0)?;
    SockAddrV4::from_u64(packed).ok_or(Errno::EINVAL)
}

/// Sets a socket option (`true` = 1).
pub fn set_option(fd: u64, option: abi::SockOpt, on: bool) -> Result<(), Errno> {
    plain(nr::SET_OPTION, fd, option.to_u64(), u64::from(on)).map(|_| ())
}

/// A raw call for tests that pass values the typed wrappers never would (bad flags, bad
/// packing, kernel pointers). Safe because it refuses (`EPERM`, without calling the kernel)
/// any argument that could be an address of this cell's memory: every argument must lie
/// below `abi::USER_CODE_BASE` (never mapped) or at or above `abi::USER_MAX_ADDR` (not user
/// memory at all), so the kernel cannot read or write the cell's memory through it.
pub fn call_without_memory(number: u64, arg0: u64, arg1: u64, arg2: u64) -> Result<u64, Errno> {
    let harmless = |value: u64| !(abi::USER_CODE_BASE..abi::USER_MAX_ADDR).contains(&value);
    if !(harmless(arg0) && harmless(arg1) && harmless(arg2)) {
        return Err(Errno::EPERM);
    }
    // SAFETY: no argument is an address of this cell's memory (checked above), so whatever
    // the call does with its arguments, it cannot touch memory Rust knows about.
    abi::decode_result(unsafe { syscall3(number, arg0, arg1, arg2) })
}
