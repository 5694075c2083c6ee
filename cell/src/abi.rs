//! The fixed system-call ABI between the Xylem kernel and ring-3 cell payloads.
//!
//! This file is the single source of truth for both sides: the `cell` crate exports it as
//! `cell::abi`, and the payload runtime (`cell/runtime`, crate `xylem-rt`) includes the very same
//! file with `#[path]`, so the numbers can never drift apart. It therefore uses `core` only (no
//! `alloc`, no serde, no `unsafe`). `docs/syscalls.md` is the human-readable copy of this file.
//!
//! Key items:
//! * [`Syscall`] and the raw numbers in [`nr`]: what a cell can ask of the kernel.
//! * [`Errno`]: the one error enum at the syscall boundary; a failed call returns `-errno`.
//! * The user address-space layout (`USER_*`, [`ARGS_PAGE_ADDR`]) and the limits
//!   ([`MAX_WRITE_LEN`], [`MAX_ARGS_BYTES`], the ELF limits).
//! * [`user_range`]: the pure part of pointer validation the kernel does once, at entry.
//! * [`encode_args`] / [`ArgsIter`]: the argument blob format (each argument followed by a NUL).
//!
//! Register convention (x86_64 `syscall` instruction, like Linux):
//! `rax` = syscall number, `rdi`, `rsi`, `rdx` = arguments 0..2, result in `rax`.
//! A result in `-4095..=-1` is `-errno`; anything else is success. `rcx` and `r11` are clobbered
//! by the instruction itself; every other register is preserved by the kernel.

/// Size of one page; every segment and region below is laid out in these units.
pub const PAGE_SIZE: u64 = 4096;

/// Raw syscall numbers, the value placed in `rax`.
pub mod nr {
    /// `write(fd, buf, len) -> bytes written`.
    pub const WRITE: u64 = 0;
    /// `sleep_ms(ms) -> 0`.
    pub const SLEEP_MS: u64 = 1;
    /// `yield() -> 0`.
    pub const YIELD: u64 = 2;
    /// `exit(code) -> !`.
    pub const EXIT: u64 = 3;
    /// `clock_us() -> microseconds since boot`.
    pub const CLOCK_US: u64 = 4;
    /// `cell_id() -> id of the calling cell`.
    pub const CELL_ID: u64 = 5;
    /// `args(buf, cap) -> blob length`.
    pub const ARGS: u64 = 6;
}

/// Every system call a cell can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    /// Write bytes to a file descriptor ([`FD_STDOUT`] or [`FD_STDERR`]), captured in the
    /// cell's log. Args: fd, buffer address, length (at most [`MAX_WRITE_LEN`]).
    Write,
    /// Block the calling cell for at least the given milliseconds (at most [`MAX_SLEEP_MS`]).
    SleepMs,
    /// Give up the rest of the time slice.
    Yield,
    /// End the cell with an exit code (the low 32 bits of `rdi`, as `i32`). Never returns.
    Exit,
    /// Monotonic time since the node booted, in microseconds.
    ClockUs,
    /// The calling cell's id (the same number the console shows).
    CellId,
    /// Copy the argument blob (see [`encode_args`]) to a user buffer. Args: buffer, capacity.
    Args,
}

impl Syscall {
    /// All calls, in number order.
    pub const ALL: [Syscall; 7] = [
        Syscall::Write,
        Syscall::SleepMs,
        Syscall::Yield,
        Syscall::Exit,
        Syscall::ClockUs,
        Syscall::CellId,
        Syscall::Args,
    ];

    /// Decodes `rax`; an unknown number is `None` and the kernel returns `-ENOSYS`.
    pub fn from_number(number: u64) -> Option<Syscall> {
        match number {
            nr::WRITE => Some(Syscall::Write),
            nr::SLEEP_MS => Some(Syscall::SleepMs),
            nr::YIELD => Some(Syscall::Yield),
            nr::EXIT => Some(Syscall::Exit),
            nr::CLOCK_US => Some(Syscall::ClockUs),
            nr::CELL_ID => Some(Syscall::CellId),
            nr::ARGS => Some(Syscall::Args),
            _ => None,
        }
    }

    /// The raw number, the inverse of [`Syscall::from_number`].
    pub fn number(self) -> u64 {
        match self {
            Syscall::Write => nr::WRITE,
            Syscall::SleepMs => nr::SLEEP_MS,
            Syscall::Yield => nr::YIELD,
            Syscall::Exit => nr::EXIT,
            Syscall::ClockUs => nr::CLOCK_US,
            Syscall::CellId => nr::CELL_ID,
            Syscall::Args => nr::ARGS,
        }
    }

    /// Short lowercase name, for logs and the event stream.
    pub fn name(self) -> &'static str {
        match self {
            Syscall::Write => "write",
            Syscall::SleepMs => "sleep_ms",
            Syscall::Yield => "yield",
            Syscall::Exit => "exit",
            Syscall::ClockUs => "clock_us",
            Syscall::CellId => "cell_id",
            Syscall::Args => "args",
        }
    }
}

/// Errors a syscall can return, as `-value` in `rax`. Values follow Linux so that tools and
/// people recognise them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(i64)]
pub enum Errno {
    /// Operation not permitted.
    EPERM = 1,
    /// Argument list too long.
    E2BIG = 7,
    /// Bad file descriptor (only [`FD_STDOUT`] and [`FD_STDERR`] exist).
    EBADF = 9,
    /// Try again (e.g. the log is momentarily full).
    EAGAIN = 11,
    /// Out of memory.
    ENOMEM = 12,
    /// A pointer argument is not a mapped user address of the right access.
    EFAULT = 14,
    /// An argument is out of range (length above a limit, sleep too long).
    EINVAL = 22,
    /// The result does not fit the buffer given (e.g. `args` with a small buffer).
    ERANGE = 34,
    /// Unknown syscall number.
    ENOSYS = 38,
}

impl Errno {
    /// Every errno, for tables and exhaustive tests.
    pub const ALL: [Errno; 9] = [
        Errno::EPERM,
        Errno::E2BIG,
        Errno::EBADF,
        Errno::EAGAIN,
        Errno::ENOMEM,
        Errno::EFAULT,
        Errno::EINVAL,
        Errno::ERANGE,
        Errno::ENOSYS,
    ];

    /// The positive errno value.
    pub fn value(self) -> i64 {
        self as i64
    }

    /// Decodes a positive errno value.
    pub fn from_value(value: i64) -> Option<Errno> {
        Errno::ALL
            .iter()
            .copied()
            .find(|errno| errno.value() == value)
    }

    /// Upper-case symbolic name, e.g. `"EFAULT"`.
    pub fn name(self) -> &'static str {
        match self {
            Errno::EPERM => "EPERM",
            Errno::E2BIG => "E2BIG",
            Errno::EBADF => "EBADF",
            Errno::EAGAIN => "EAGAIN",
            Errno::ENOMEM => "ENOMEM",
            Errno::EFAULT => "EFAULT",
            Errno::EINVAL => "EINVAL",
            Errno::ERANGE => "ERANGE",
            Errno::ENOSYS => "ENOSYS",
        }
    }
}

/// Largest errno magnitude a return value may carry; `-4095..=-1` are errors (as on Linux).
pub const MAX_ERRNO: i64 = 4095;

/// Encodes a syscall result for `rax` (kernel side).
pub fn encode_result(result: Result<u64, Errno>) -> u64 {
    match result {
        Ok(value) => {
            // A success must not be mistaken for an error on the way back.
            debug_assert!(
                value <= i64::MAX as u64,
                "syscall success value in errno range"
            );
            value
        }
        Err(errno) => (-errno.value()) as u64,
    }
}

/// Decodes `rax` after a syscall (runtime side). An error value that is not a known errno
/// decodes as [`Errno::ENOSYS`], so a newer kernel cannot make an old runtime misbehave.
pub fn decode_result(rax: u64) -> Result<u64, Errno> {
    let signed = rax as i64;
    if (-MAX_ERRNO..=-1).contains(&signed) {
        Err(Errno::from_value(-signed).unwrap_or(Errno::ENOSYS))
    } else {
        Ok(rax)
    }
}

/// File descriptor of standard output (captured in the cell log).
pub const FD_STDOUT: u64 = 1;
/// File descriptor of standard error (captured in the same log).
pub const FD_STDERR: u64 = 2;

// ---------------------------------------------------------------------------------------------
// User address-space layout. Every cell has its own PML4; the upper (kernel) half is shared and
// never user-accessible. The lower half is laid out as follows (addresses grow downwards here):
//
//   USER_MAX_ADDR   0x0000_7fff_ffff_f000  end of user space (exclusive; last page never mapped)
//   ARGS_PAGE_ADDR  0x0000_7fff_fff0_0000  one read-only page holding the argument blob
//   USER_STACK_TOP  0x0000_7fff_ffe0_0000  initial rsp (16-byte aligned), stack grows down
//   stack bottom    USER_STACK_TOP - USER_STACK_BYTES, then one unmapped guard page
//   USER_IMAGE_END  0x0000_0001_0000_0000  ELF segments must end at or below this
//   USER_CODE_BASE  0x0000_0000_0040_0000  ELF segments must start at or above this
//   0 .. USER_CODE_BASE                    never mapped (null-pointer and small-offset guard)
// ---------------------------------------------------------------------------------------------

/// Lowest address a payload segment may occupy; the static payloads link their text here.
pub const USER_CODE_BASE: u64 = 0x0000_0000_0040_0000;
/// Exclusive upper bound of the region payload ELF segments may occupy (4 GiB).
pub const USER_IMAGE_END: u64 = 0x0000_0001_0000_0000;
/// Exclusive end of the user half. The last page below the canonical hole stays unmapped, so a
/// `sysret` can never return to a non-canonical `rip`.
pub const USER_MAX_ADDR: u64 = 0x0000_7fff_ffff_f000;
/// First address of the kernel (upper, shared) half.
pub const KERNEL_HALF_START: u64 = 0xffff_8000_0000_0000;
/// Initial stack pointer of a fresh cell (exclusive top of the stack mapping).
pub const USER_STACK_TOP: u64 = 0x0000_7fff_ffe0_0000;
/// Size of the user stack mapping.
pub const USER_STACK_BYTES: u64 = 64 * 1024;
/// Address of the read-only page where the kernel places the argument blob. The runtime reads
/// arguments with the `args` syscall instead, so a kernel may leave this page unmapped.
pub const ARGS_PAGE_ADDR: u64 = 0x0000_7fff_fff0_0000;

// ---------------------------------------------------------------------------------------------
// Limits.
// ---------------------------------------------------------------------------------------------

/// Largest `len` one `write` accepts; longer writes fail with `EINVAL` (the runtime splits).
pub const MAX_WRITE_LEN: u64 = 4096;
/// Longest single `sleep_ms` (one hour); longer ones fail with `EINVAL`.
pub const MAX_SLEEP_MS: u64 = 3_600_000;
/// Largest argument blob (fits the single args page).
pub const MAX_ARGS_BYTES: usize = 1024;
/// Most arguments one payload takes.
pub const MAX_ARGS: usize = 16;
/// Longest single argument, in bytes (without its NUL terminator).
pub const MAX_ARG_LEN: usize = 128;
/// Longest payload name.
pub const MAX_PAYLOAD_NAME_LEN: usize = 32;
/// Most `PT_LOAD` segments a payload ELF may have.
pub const MAX_LOAD_SEGMENTS: usize = 16;
/// Most program headers (of any type) a payload ELF may have.
pub const MAX_PROGRAM_HEADERS: usize = 64;
/// Largest single segment in memory (`p_memsz`).
pub const MAX_SEGMENT_BYTES: u64 = 16 * 1024 * 1024;
/// Largest total memory image (sum of page-rounded segments).
pub const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

// Layout sanity, checked at compile time: the regions are ordered and page aligned.
const _: () = {
    assert!(USER_CODE_BASE.is_multiple_of(PAGE_SIZE) && USER_IMAGE_END.is_multiple_of(PAGE_SIZE));
    assert!(USER_CODE_BASE < USER_IMAGE_END);
    assert!(USER_IMAGE_END < USER_STACK_TOP - USER_STACK_BYTES - PAGE_SIZE);
    assert!(USER_STACK_TOP.is_multiple_of(PAGE_SIZE) && USER_STACK_BYTES.is_multiple_of(PAGE_SIZE));
    assert!(USER_STACK_TOP < ARGS_PAGE_ADDR);
    assert!(ARGS_PAGE_ADDR + PAGE_SIZE <= USER_MAX_ADDR);
    assert!(USER_MAX_ADDR < KERNEL_HALF_START);
    assert!(MAX_ARGS_BYTES as u64 <= PAGE_SIZE);
    assert!(MAX_SEGMENT_BYTES <= MAX_IMAGE_BYTES);
};

/// Checks that `[addr, addr + len)` lies entirely inside the user half, without overflow. This is
/// the pure half of pointer validation; the kernel must also check that the pages are mapped
/// with the right access. A zero-length range is valid anywhere in the user half.
pub fn user_range(addr: u64, len: u64) -> Result<(), Errno> {
    let end = addr.checked_add(len).ok_or(Errno::EFAULT)?;
    if addr >= USER_MAX_ADDR || end > USER_MAX_ADDR {
        return Err(Errno::EFAULT);
    }
    Ok(())
}

/// Errors of the argument blob encoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ArgsError {
    /// More than [`MAX_ARGS`] arguments.
    TooMany,
    /// One argument longer than [`MAX_ARG_LEN`].
    TooLong,
    /// An argument contains a NUL byte, which is the separator.
    ContainsNul,
    /// The blob does not fit the output buffer (at most [`MAX_ARGS_BYTES`]).
    BlobTooLarge,
}

/// Encodes arguments as the blob the `args` syscall returns: each argument's bytes followed by
/// one NUL. Writes into `out` and returns the blob length.
pub fn encode_args<'a, I>(args: I, out: &mut [u8]) -> Result<usize, ArgsError>
where
    I: IntoIterator<Item = &'a str>,
{
    let mut len = 0usize;
    for (index, arg) in args.into_iter().enumerate() {
        if index >= MAX_ARGS {
            return Err(ArgsError::TooMany);
        }
        if arg.len() > MAX_ARG_LEN {
            return Err(ArgsError::TooLong);
        }
        if arg.as_bytes().contains(&0) {
            return Err(ArgsError::ContainsNul);
        }
        let end = len + arg.len() + 1;
        if end > out.len() || end > MAX_ARGS_BYTES {
            return Err(ArgsError::BlobTooLarge);
        }
        out[len..end - 1].copy_from_slice(arg.as_bytes());
        out[end - 1] = 0;
        len = end;
    }
    debug_assert!(len <= MAX_ARGS_BYTES);
    Ok(len)
}

/// Iterates over the arguments of a blob. Tolerant by design (the runtime trusts nothing): a
/// missing final NUL still yields the last argument, and bytes that are not UTF-8 yield `""`.
#[derive(Clone, Debug)]
pub struct ArgsIter<'a> {
    rest: &'a [u8],
}

impl<'a> ArgsIter<'a> {
    /// Starts iterating over `blob`.
    pub fn new(blob: &'a [u8]) -> Self {
        ArgsIter { rest: blob }
    }
}

impl<'a> Iterator for ArgsIter<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.rest.is_empty() {
            return None;
        }
        let (arg, rest) = match self.rest.iter().position(|&byte| byte == 0) {
            Some(nul) => (&self.rest[..nul], &self.rest[nul + 1..]),
            None => (self.rest, &self.rest[self.rest.len()..]),
        };
        self.rest = rest;
        Some(core::str::from_utf8(arg).unwrap_or(""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syscall_numbers_round_trip_and_are_dense() {
        for (index, call) in Syscall::ALL.iter().enumerate() {
            assert_eq!(call.number(), index as u64);
            assert_eq!(Syscall::from_number(call.number()), Some(*call));
        }
        assert_eq!(Syscall::from_number(Syscall::ALL.len() as u64), None);
        assert_eq!(Syscall::from_number(u64::MAX), None);
    }

    #[test]
    fn errno_values_match_linux_and_round_trip() {
        assert_eq!(Errno::EFAULT.value(), 14);
        assert_eq!(Errno::ENOSYS.value(), 38);
        assert_eq!(Errno::EINVAL.value(), 22);
        assert_eq!(Errno::EBADF.value(), 9);
        for errno in Errno::ALL {
            assert_eq!(Errno::from_value(errno.value()), Some(errno));
            assert_eq!(decode_result(encode_result(Err(errno))), Err(errno));
        }
        assert_eq!(Errno::from_value(0), None);
    }

    #[test]
    fn result_encoding_separates_values_from_errors() {
        assert_eq!(decode_result(encode_result(Ok(0))), Ok(0));
        assert_eq!(decode_result(encode_result(Ok(4096))), Ok(4096));
        assert_eq!(encode_result(Err(Errno::EFAULT)), (-14i64) as u64);
        // Unknown error values degrade to ENOSYS rather than being taken as successes.
        assert_eq!(decode_result((-4000i64) as u64), Err(Errno::ENOSYS));
        // Below the errno window counts as a (huge) value, as on Linux.
        assert_eq!(decode_result((-4096i64) as u64), Ok((-4096i64) as u64));
    }

    #[test]
    fn user_range_rejects_kernel_overflow_and_top_page() {
        assert_eq!(user_range(USER_CODE_BASE, 16), Ok(()));
        assert_eq!(user_range(0, 0), Ok(()));
        assert_eq!(user_range(USER_MAX_ADDR - 1, 1), Ok(()));
        assert_eq!(user_range(USER_MAX_ADDR - 1, 2), Err(Errno::EFAULT));
        assert_eq!(user_range(USER_MAX_ADDR, 0), Err(Errno::EFAULT));
        assert_eq!(user_range(KERNEL_HALF_START, 1), Err(Errno::EFAULT));
        assert_eq!(user_range(u64::MAX, 2), Err(Errno::EFAULT));
        assert_eq!(user_range(1, u64::MAX), Err(Errno::EFAULT));
    }

    #[test]
    fn args_blob_round_trips() {
        let mut blob = [0u8; MAX_ARGS_BYTES];
        let len = encode_args(["pagefault", "500", ""], &mut blob).unwrap();
        assert_eq!(&blob[..len], b"pagefault\x00500\x00\x00");
        let decoded: [&str; 3] = {
            let mut iter = ArgsIter::new(&blob[..len]);
            [
                iter.next().unwrap(),
                iter.next().unwrap(),
                iter.next().unwrap(),
            ]
        };
        assert_eq!(decoded, ["pagefault", "500", ""]);
        assert_eq!(ArgsIter::new(&blob[..len]).count(), 3);
        assert_eq!(ArgsIter::new(b"").count(), 0);
        assert_eq!(ArgsIter::new(b"tail").next(), Some("tail"));
        let mut invalid = ArgsIter::new(b"\xff\xfe\0ok\0");
        assert_eq!(
            (invalid.next(), invalid.next(), invalid.next()),
            (Some(""), Some("ok"), None)
        );
    }

    #[test]
    fn args_blob_limits_are_enforced() {
        let mut blob = [0u8; MAX_ARGS_BYTES];
        let many = ["a"; MAX_ARGS + 1];
        assert_eq!(encode_args(many, &mut blob), Err(ArgsError::TooMany));
        assert_eq!(encode_args(["a"; MAX_ARGS], &mut blob), Ok(2 * MAX_ARGS));
        let long = core::str::from_utf8(&[b'x'; MAX_ARG_LEN + 1]).unwrap();
        assert_eq!(encode_args([long], &mut blob), Err(ArgsError::TooLong));
        assert_eq!(
            encode_args(["a\0b"], &mut blob),
            Err(ArgsError::ContainsNul)
        );
        let mut small = [0u8; 3];
        assert_eq!(
            encode_args(["abc"], &mut small),
            Err(ArgsError::BlobTooLarge)
        );
    }
}
