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
//! * The user address-space layout (`USER_*`, [`ARGS_PAGE_ADDR`], the map region) and the
//!   limits ([`MAX_WRITE_LEN`], [`MAX_IO_LEN`], [`MAX_FDS`], [`MAX_ARGS_BYTES`], the ELF limits).
//! * The typed values that cross the boundary as numbers or fixed-size records: socket
//!   addresses packed in one register ([`SockAddrV4`]), [`SocketKind`], [`Shutdown`],
//!   [`SockOpt`], poll entries ([`PollFd`], 8 bytes each) and [`CellInfo`] (a fixed record),
//!   each with a total encoder and decoder.
//! * [`user_range`]: the pure part of pointer validation the kernel does once, at entry.
//! * [`encode_args`] / [`ArgsIter`]: the argument blob format (each argument followed by a NUL).
//!
//! Register convention (x86_64 `syscall` instruction, like Linux):
//! `rax` = syscall number, `rdi`, `rsi`, `rdx`, `r10` = arguments 0..3, result in `rax`.
//! A result in `-4095..=-1` is `-errno`; anything else is success. `rcx` and `r11` are clobbered
//! by the instruction itself; every other register is preserved by the kernel.

/// Size of one page; every segment and region below is laid out in these units.
pub const PAGE_SIZE: u64 = 4096;

/// Raw syscall numbers, the value placed in `rax`.
pub mod nr {
    /// `write(fd, buf, len) -> bytes written` (the log on fds 1 and 2, a TCP stream otherwise).
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
    /// `cell_info(buf, cap) -> CELL_INFO_BYTES`.
    pub const CELL_INFO: u64 = 7;
    /// `mem_map(len, flags) -> address`.
    pub const MEM_MAP: u64 = 8;
    /// `mem_unmap(addr, len) -> 0`.
    pub const MEM_UNMAP: u64 = 9;
    /// `socket(kind, flags) -> fd`.
    pub const SOCKET: u64 = 10;
    /// `bind(fd, addr) -> 0`.
    pub const BIND: u64 = 11;
    /// `listen(fd, backlog) -> 0`.
    pub const LISTEN: u64 = 12;
    /// `accept(fd) -> new fd`.
    pub const ACCEPT: u64 = 13;
    /// `connect(fd, addr) -> 0`.
    pub const CONNECT: u64 = 14;
    /// `read(fd, buf, len) -> bytes read (0 = end of stream)`.
    pub const READ: u64 = 15;
    /// `shutdown(fd, how) -> 0`.
    pub const SHUTDOWN: u64 = 16;
    /// `close(fd) -> 0`.
    pub const CLOSE: u64 = 17;
    /// `send_to(fd, buf, len, addr) -> bytes sent`.
    pub const SEND_TO: u64 = 18;
    /// `recv_from(fd, buf, len, addr_out) -> bytes received`.
    pub const RECV_FROM: u64 = 19;
    /// `poll(entries, count, timeout_ms) -> entries ready`.
    pub const POLL: u64 = 20;
    /// `sock_addr(fd, which) -> packed address`.
    pub const SOCK_ADDR: u64 = 21;
    /// `set_option(fd, option, value) -> 0`.
    pub const SET_OPTION: u64 = 22;
}

/// Every system call a cell can make.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Syscall {
    /// Write bytes to a file descriptor: [`FD_STDOUT`] or [`FD_STDERR`] (captured in the
    /// cell's log, at most [`MAX_WRITE_LEN`]), or a connected TCP socket (at most
    /// [`MAX_IO_LEN`]; returns how many bytes the send buffer took).
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
    /// Copy the cell's [`CellInfo`] record (names, node, memory) to a user buffer.
    CellInfo,
    /// Map anonymous zeroed read-write pages. Args: length (rounded up to pages), flags (0).
    MemMap,
    /// Unmap pages an earlier `mem_map` returned. Args: address, length.
    MemUnmap,
    /// Create a socket. Args: [`SocketKind`], flags ([`SOCK_NONBLOCK`]).
    Socket,
    /// Bind a socket to a local [`SockAddrV4`] (packed). Port 0 picks an ephemeral port.
    Bind,
    /// Make a bound TCP socket listen. Args: fd, backlog (1..=[`MAX_BACKLOG`]).
    Listen,
    /// Take one established connection from a listening socket; returns its new fd.
    Accept,
    /// Connect a TCP socket to a peer [`SockAddrV4`] (packed).
    Connect,
    /// Read from a TCP stream; 0 means the peer closed its side.
    Read,
    /// Close one or both directions of a TCP stream ([`Shutdown`]).
    Shutdown,
    /// Release a descriptor.
    Close,
    /// Send one UDP datagram. Args: fd, buffer, length, destination (packed).
    SendTo,
    /// Receive one UDP datagram. Args: fd, buffer, capacity, address of a `u64` that gets the
    /// sender (packed) or 0 for none.
    RecvFrom,
    /// Wait until one of several descriptors is ready, or a timeout. Args: array of
    /// [`PollFd`] records, count (at most [`MAX_POLL_FDS`]), timeout in ms ([`POLL_FOREVER`]).
    Poll,
    /// A socket's local or peer address ([`AddrWhich`]), packed.
    SockAddr,
    /// Set a socket option ([`SockOpt`]).
    SetOption,
}

impl Syscall {
    /// All calls, in number order.
    pub const ALL: [Syscall; 23] = [
        Syscall::Write,
        Syscall::SleepMs,
        Syscall::Yield,
        Syscall::Exit,
        Syscall::ClockUs,
        Syscall::CellId,
        Syscall::Args,
        Syscall::CellInfo,
        Syscall::MemMap,
        Syscall::MemUnmap,
        Syscall::Socket,
        Syscall::Bind,
        Syscall::Listen,
        Syscall::Accept,
        Syscall::Connect,
        Syscall::Read,
        Syscall::Shutdown,
        Syscall::Close,
        Syscall::SendTo,
        Syscall::RecvFrom,
        Syscall::Poll,
        Syscall::SockAddr,
        Syscall::SetOption,
    ];

    /// Decodes `rax`; an unknown number is `None` and the kernel returns `-ENOSYS`.
    pub fn from_number(number: u64) -> Option<Syscall> {
        Syscall::ALL
            .iter()
            .copied()
            .find(|call| call.number() == number)
    }

    /// The raw number, the inverse of [`Syscall::from_number`].
    pub const fn number(self) -> u64 {
        match self {
            Syscall::Write => nr::WRITE,
            Syscall::SleepMs => nr::SLEEP_MS,
            Syscall::Yield => nr::YIELD,
            Syscall::Exit => nr::EXIT,
            Syscall::ClockUs => nr::CLOCK_US,
            Syscall::CellId => nr::CELL_ID,
            Syscall::Args => nr::ARGS,
            Syscall::CellInfo => nr::CELL_INFO,
            Syscall::MemMap => nr::MEM_MAP,
            Syscall::MemUnmap => nr::MEM_UNMAP,
            Syscall::Socket => nr::SOCKET,
            Syscall::Bind => nr::BIND,
            Syscall::Listen => nr::LISTEN,
            Syscall::Accept => nr::ACCEPT,
            Syscall::Connect => nr::CONNECT,
            Syscall::Read => nr::READ,
            Syscall::Shutdown => nr::SHUTDOWN,
            Syscall::Close => nr::CLOSE,
            Syscall::SendTo => nr::SEND_TO,
            Syscall::RecvFrom => nr::RECV_FROM,
            Syscall::Poll => nr::POLL,
            Syscall::SockAddr => nr::SOCK_ADDR,
            Syscall::SetOption => nr::SET_OPTION,
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
            Syscall::CellInfo => "cell_info",
            Syscall::MemMap => "mem_map",
            Syscall::MemUnmap => "mem_unmap",
            Syscall::Socket => "socket",
            Syscall::Bind => "bind",
            Syscall::Listen => "listen",
            Syscall::Accept => "accept",
            Syscall::Connect => "connect",
            Syscall::Read => "read",
            Syscall::Shutdown => "shutdown",
            Syscall::Close => "close",
            Syscall::SendTo => "send_to",
            Syscall::RecvFrom => "recv_from",
            Syscall::Poll => "poll",
            Syscall::SockAddr => "sock_addr",
            Syscall::SetOption => "set_option",
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
    /// Bad file descriptor: not open in this cell, or the wrong kind for the call.
    EBADF = 9,
    /// Try again: a non-blocking call would block, or the log is momentarily full.
    EAGAIN = 11,
    /// Out of memory: the cell's limit or the node's free frames.
    ENOMEM = 12,
    /// A pointer argument is not a mapped user address of the right access.
    EFAULT = 14,
    /// An argument is out of range (length above a limit, sleep too long, bad flags).
    EINVAL = 22,
    /// The cell has [`MAX_FDS`] descriptors open.
    EMFILE = 24,
    /// Writing to a stream whose sending side is shut down.
    EPIPE = 32,
    /// The result does not fit the buffer given (e.g. `args` with a small buffer).
    ERANGE = 34,
    /// Unknown syscall number.
    ENOSYS = 38,
    /// The descriptor is not a socket (fds 1 and 2 are the log).
    ENOTSOCK = 88,
    /// A datagram larger than [`MAX_DATAGRAM_LEN`] or the socket's buffer.
    EMSGSIZE = 90,
    /// The operation does not apply to this kind of socket (e.g. `listen` on UDP).
    EOPNOTSUPP = 95,
    /// The local address is already in use.
    EADDRINUSE = 98,
    /// The address is not this node's, or no ephemeral port is free.
    EADDRNOTAVAIL = 99,
    /// No route to the destination (not on the fabric).
    ENETUNREACH = 101,
    /// The peer reset the connection.
    ECONNRESET = 104,
    /// No socket buffer memory left on the node.
    ENOBUFS = 105,
    /// The socket is already connected (or listening).
    EISCONN = 106,
    /// The socket is not connected.
    ENOTCONN = 107,
    /// The connection attempt timed out.
    ETIMEDOUT = 110,
    /// The peer refused the connection (nothing listens there).
    ECONNREFUSED = 111,
    /// A non-blocking connect is already in progress.
    EALREADY = 114,
    /// A non-blocking connect has started; poll for [`POLLOUT`].
    EINPROGRESS = 115,
}

impl Errno {
    /// Every errno, for tables and exhaustive tests.
    pub const ALL: [Errno; 25] = [
        Errno::EPERM,
        Errno::E2BIG,
        Errno::EBADF,
        Errno::EAGAIN,
        Errno::ENOMEM,
        Errno::EFAULT,
        Errno::EINVAL,
        Errno::EMFILE,
        Errno::EPIPE,
        Errno::ERANGE,
        Errno::ENOSYS,
        Errno::ENOTSOCK,
        Errno::EMSGSIZE,
        Errno::EOPNOTSUPP,
        Errno::EADDRINUSE,
        Errno::EADDRNOTAVAIL,
        Errno::ENETUNREACH,
        Errno::ECONNRESET,
        Errno::ENOBUFS,
        Errno::EISCONN,
        Errno::ENOTCONN,
        Errno::ETIMEDOUT,
        Errno::ECONNREFUSED,
        Errno::EALREADY,
        Errno::EINPROGRESS,
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
            Errno::EMFILE => "EMFILE",
            Errno::EPIPE => "EPIPE",
            Errno::ERANGE => "ERANGE",
            Errno::ENOSYS => "ENOSYS",
            Errno::ENOTSOCK => "ENOTSOCK",
            Errno::EMSGSIZE => "EMSGSIZE",
            Errno::EOPNOTSUPP => "EOPNOTSUPP",
            Errno::EADDRINUSE => "EADDRINUSE",
            Errno::EADDRNOTAVAIL => "EADDRNOTAVAIL",
            Errno::ENETUNREACH => "ENETUNREACH",
            Errno::ECONNRESET => "ECONNRESET",
            Errno::ENOBUFS => "ENOBUFS",
            Errno::EISCONN => "EISCONN",
            Errno::ENOTCONN => "ENOTCONN",
            Errno::ETIMEDOUT => "ETIMEDOUT",
            Errno::ECONNREFUSED => "ECONNREFUSED",
            Errno::EALREADY => "EALREADY",
            Errno::EINPROGRESS => "EINPROGRESS",
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
//   USER_MAP_END    0x0000_7000_0000_0000  end of the region `mem_map` hands out
//   USER_MAP_BASE   0x0000_0010_0000_0000  start of that region (64 GiB)
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
/// Lowest address `mem_map` returns (64 GiB, well above any payload image).
pub const USER_MAP_BASE: u64 = 0x0000_0010_0000_0000;
/// Exclusive end of the region `mem_map` returns from (far below the stack).
pub const USER_MAP_END: u64 = 0x0000_7000_0000_0000;
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
/// Largest `len` one socket `write`, `read`, `send_to` or `recv_from` handles; a longer
/// buffer is not an error, the call simply moves at most this many bytes.
pub const MAX_IO_LEN: u64 = 64 * 1024;
/// Largest UDP payload: one Ethernet frame (1500) minus the IPv4 (20) and UDP (8) headers;
/// the node does not fragment.
pub const MAX_DATAGRAM_LEN: u64 = 1472;
/// Most socket descriptors one cell holds at once (fds 1 and 2, the log, are not counted).
pub const MAX_FDS: usize = 128;
/// First descriptor number a socket gets (0 is unused, 1 and 2 are the log).
pub const FIRST_SOCKET_FD: u64 = 3;
/// Largest listen backlog: connections the kernel completes before `accept` takes them.
pub const MAX_BACKLOG: u64 = 32;
/// Most entries one `poll` call takes.
pub const MAX_POLL_FDS: u64 = 128;
/// `poll` timeout meaning "no timeout" (`-1` as Linux spells it).
pub const POLL_FOREVER: u64 = u64::MAX;
/// Longest finite `poll` timeout (one hour); longer ones fail with `EINVAL`.
pub const MAX_POLL_TIMEOUT_MS: u64 = MAX_SLEEP_MS;
/// Largest single `mem_map` (the per-cell limit usually ends a cell's growth first).
pub const MAX_MAP_BYTES: u64 = 256 * 1024 * 1024;
/// Most separate mappings one cell may hold (adjacent maps are not merged).
pub const MAX_MAPPINGS: usize = 4096;
/// A cell's memory limit when its spec names none, in MiB. It counts every page of the cell
/// (image, stack, page tables, `mem_map`) and its socket buffers.
pub const DEFAULT_MEMORY_LIMIT_MIB: u32 = 16;
/// The largest per-cell memory limit a spec may ask for, in MiB.
pub const MAX_MEMORY_LIMIT_MIB: u32 = 4096;

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
    assert!(USER_IMAGE_END <= USER_MAP_BASE && USER_MAP_BASE < USER_MAP_END);
    assert!(USER_MAP_BASE.is_multiple_of(PAGE_SIZE) && USER_MAP_END.is_multiple_of(PAGE_SIZE));
    assert!(USER_MAP_END < USER_STACK_TOP - USER_STACK_BYTES - PAGE_SIZE);
    assert!(MAX_MAP_BYTES.is_multiple_of(PAGE_SIZE));
    assert!(FIRST_SOCKET_FD > FD_STDERR);
    assert!(MAX_IO_LEN <= i64::MAX as u64 && MAX_POLL_FDS as usize >= MAX_FDS);
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

// ---------------------------------------------------------------------------------------------
// Memory.
// ---------------------------------------------------------------------------------------------

/// Rounds a `mem_map`/`mem_unmap` length up to whole pages; `None` for 0 or on overflow.
pub fn map_len_pages(len: u64) -> Option<u64> {
    if len == 0 {
        return None;
    }
    Some(len.checked_add(PAGE_SIZE - 1)? / PAGE_SIZE)
}

// ---------------------------------------------------------------------------------------------
// Sockets.
// ---------------------------------------------------------------------------------------------

/// `socket` flag: calls that would block return `EAGAIN` (or `EINPROGRESS` for `connect`).
pub const SOCK_NONBLOCK: u64 = 1;

/// What kind of socket `socket` creates.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SocketKind {
    /// A TCP stream (or, after `listen`, a listener).
    Tcp,
    /// A UDP datagram socket.
    Udp,
}

impl SocketKind {
    /// The register value.
    pub fn to_u64(self) -> u64 {
        match self {
            SocketKind::Tcp => 1,
            SocketKind::Udp => 2,
        }
    }

    /// Decodes the register value; anything else is `None` (`EINVAL`).
    pub fn from_u64(value: u64) -> Option<SocketKind> {
        match value {
            1 => Some(SocketKind::Tcp),
            2 => Some(SocketKind::Udp),
            _ => None,
        }
    }
}

/// An IPv4 address and port, packed into one register for `bind`, `connect`, `send_to`,
/// `recv_from` and `sock_addr`: bits 47..16 are the address (big-endian order, so
/// `169.254.77.1` is `0xa9fe4d01`), bits 15..0 the port, bits 63..48 zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SockAddrV4 {
    /// The address octets, most significant first.
    pub ip: [u8; 4],
    /// The port.
    pub port: u16,
}

impl SockAddrV4 {
    /// `0.0.0.0:port`: for `bind`, any local address.
    pub const fn any(port: u16) -> SockAddrV4 {
        SockAddrV4 { ip: [0; 4], port }
    }

    /// An address from its octets and a port.
    pub const fn new(ip: [u8; 4], port: u16) -> SockAddrV4 {
        SockAddrV4 { ip, port }
    }

    /// Whether the address part is `0.0.0.0`.
    pub fn is_unspecified(&self) -> bool {
        self.ip == [0; 4]
    }

    /// The packed register value.
    pub fn to_u64(self) -> u64 {
        (u64::from(u32::from_be_bytes(self.ip)) << 16) | u64::from(self.port)
    }

    /// Decodes a packed value; set bits above bit 47 are `None` (`EINVAL`).
    pub fn from_u64(value: u64) -> Option<SockAddrV4> {
        if value >> 48 != 0 {
            return None;
        }
        Some(SockAddrV4 {
            ip: ((value >> 16) as u32).to_be_bytes(),
            port: value as u16,
        })
    }

    /// Parses `a.b.c.d:port` (decimal, no spaces).
    pub fn parse(text: &str) -> Option<SockAddrV4> {
        let (ip_text, port_text) = text.rsplit_once(':')?;
        let port = port_text.parse::<u16>().ok()?;
        let mut ip = [0u8; 4];
        let mut parts = ip_text.split('.');
        for octet in &mut ip {
            let part = parts.next()?;
            if part.is_empty() || part.len() > 3 || !part.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            *octet = part.parse().ok()?;
        }
        if parts.next().is_some() {
            return None;
        }
        Some(SockAddrV4 { ip, port })
    }
}

impl core::fmt::Display for SockAddrV4 {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let [a, b, c, d] = self.ip;
        write!(f, "{a}.{b}.{c}.{d}:{}", self.port)
    }
}

/// Which direction `shutdown` closes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shutdown {
    /// Stop reading: later reads return 0, data that arrives is discarded.
    Read,
    /// Stop writing: the peer sees the end of the stream (a FIN) once sent data is out.
    Write,
    /// Both.
    Both,
}

impl Shutdown {
    /// The register value (Linux's `SHUT_RD`, `SHUT_WR`, `SHUT_RDWR`).
    pub fn to_u64(self) -> u64 {
        match self {
            Shutdown::Read => 0,
            Shutdown::Write => 1,
            Shutdown::Both => 2,
        }
    }

    /// Decodes the register value.
    pub fn from_u64(value: u64) -> Option<Shutdown> {
        match value {
            0 => Some(Shutdown::Read),
            1 => Some(Shutdown::Write),
            2 => Some(Shutdown::Both),
            _ => None,
        }
    }
}

/// Which address `sock_addr` returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrWhich {
    /// The local (bound) address.
    Local,
    /// The connected peer's address (`ENOTCONN` without one).
    Peer,
}

impl AddrWhich {
    /// The register value.
    pub fn to_u64(self) -> u64 {
        match self {
            AddrWhich::Local => 0,
            AddrWhich::Peer => 1,
        }
    }

    /// Decodes the register value.
    pub fn from_u64(value: u64) -> Option<AddrWhich> {
        match value {
            0 => Some(AddrWhich::Local),
            1 => Some(AddrWhich::Peer),
            _ => None,
        }
    }
}

/// A socket option for `set_option(fd, option, value)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockOpt {
    /// value 1: calls that would block return `EAGAIN`; 0: they block (the default).
    NonBlocking,
    /// value 1: send small segments at once (Nagle off, the default for cells); 0: Nagle on.
    NoDelay,
}

impl SockOpt {
    /// The register value.
    pub fn to_u64(self) -> u64 {
        match self {
            SockOpt::NonBlocking => 1,
            SockOpt::NoDelay => 2,
        }
    }

    /// Decodes the register value.
    pub fn from_u64(value: u64) -> Option<SockOpt> {
        match value {
            1 => Some(SockOpt::NonBlocking),
            2 => Some(SockOpt::NoDelay),
            _ => None,
        }
    }
}

/// `poll` event: data (or a connection to accept, or the end of the stream) can be read.
pub const POLLIN: u16 = 0x1;
/// `poll` event: a write would take at least one byte (or a connect completed).
pub const POLLOUT: u16 = 0x4;
/// `poll` result: the socket has an error (connection refused, reset, timed out).
pub const POLLERR: u16 = 0x8;
/// `poll` result: the connection is closed in both directions.
pub const POLLHUP: u16 = 0x10;
/// `poll` result: the descriptor is not open.
pub const POLLNVAL: u16 = 0x20;
/// Bytes of one [`PollFd`] record in user memory.
pub const POLL_FD_BYTES: usize = 8;

/// One entry of the array `poll` reads and updates: `fd` (u32), `events` (u16, what the
/// caller waits for: [`POLLIN`], [`POLLOUT`]) and `revents` (u16, written by the kernel: the
/// subset of `events` that holds plus [`POLLERR`], [`POLLHUP`], [`POLLNVAL`] whatever was
/// asked). Little-endian, 8 bytes, like Linux's `struct pollfd` with a u32 fd.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollFd {
    /// The descriptor.
    pub fd: u32,
    /// Events the caller waits for.
    pub events: u16,
    /// Events that hold (kernel output).
    pub revents: u16,
}

impl PollFd {
    /// An entry waiting for `events` on `fd`.
    pub const fn new(fd: u32, events: u16) -> PollFd {
        PollFd {
            fd,
            events,
            revents: 0,
        }
    }

    /// The 8-byte record.
    pub fn encode(&self) -> [u8; POLL_FD_BYTES] {
        let mut out = [0u8; POLL_FD_BYTES];
        out[..4].copy_from_slice(&self.fd.to_le_bytes());
        out[4..6].copy_from_slice(&self.events.to_le_bytes());
        out[6..].copy_from_slice(&self.revents.to_le_bytes());
        out
    }

    /// Decodes an 8-byte record (every bit pattern is a valid record).
    pub fn decode(bytes: [u8; POLL_FD_BYTES]) -> PollFd {
        PollFd {
            fd: u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]),
            events: u16::from_le_bytes([bytes[4], bytes[5]]),
            revents: u16::from_le_bytes([bytes[6], bytes[7]]),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Cell information.
// ---------------------------------------------------------------------------------------------

/// Longest name in a [`CellInfo`] (cell or node), in bytes.
pub const CELL_INFO_NAME_MAX: usize = 63;
/// Bytes of an encoded [`CellInfo`] record.
pub const CELL_INFO_BYTES: usize = 8 * 5 + 4 + 4 + 2 * (1 + CELL_INFO_NAME_MAX);

/// A short name stored inline (at most [`CELL_INFO_NAME_MAX`] bytes of UTF-8).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ShortName {
    bytes: [u8; CELL_INFO_NAME_MAX],
    len: u8,
}

impl ShortName {
    /// The empty name.
    pub const EMPTY: ShortName = ShortName {
        bytes: [0; CELL_INFO_NAME_MAX],
        len: 0,
    };

    /// A name from text, cut at [`CELL_INFO_NAME_MAX`] bytes on a character boundary.
    pub fn new(text: &str) -> ShortName {
        let mut end = text.len().min(CELL_INFO_NAME_MAX);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut name = ShortName::EMPTY;
        name.bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
        name.len = end as u8;
        name
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Built only from `&str` prefixes cut on boundaries, or checked in `decode`.
        core::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or("")
    }
}

impl core::fmt::Debug for ShortName {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

/// What `cell_info` tells a cell about itself. Encoded as a fixed little-endian record of
/// [`CELL_INFO_BYTES`]: cell id, node id, memory limit, memory used, map bytes (u64 each),
/// node IPv4 (4 octets), reserved (4 zero bytes), then the cell name and the node name, each
/// as a length byte and [`CELL_INFO_NAME_MAX`] bytes (zero-padded).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CellInfo {
    /// The node-local cell id (as `cell_id` returns).
    pub cell_id: u64,
    /// The node's id.
    pub node_id: u64,
    /// The cell's memory limit, in bytes.
    pub memory_limit_bytes: u64,
    /// What the cell uses now (pages, page tables, socket buffers), in bytes.
    pub memory_used_bytes: u64,
    /// Of that, bytes mapped with `mem_map`.
    pub map_bytes: u64,
    /// The node's fabric address (`0.0.0.0` without a network).
    pub node_ip: [u8; 4],
    /// The cell's cluster-wide name (`web/1@7`: service/slot@epoch) or, for a cell started
    /// from the shell, `cell-<id>`.
    pub name: ShortName,
    /// The node's name (`worker-1`).
    pub node_name: ShortName,
}

/// Why a [`CellInfo`] record did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellInfoError {
    /// Fewer than [`CELL_INFO_BYTES`] bytes.
    Short,
    /// A name length above [`CELL_INFO_NAME_MAX`], or a name that is not UTF-8.
    BadName,
}

impl CellInfo {
    /// The fixed record.
    pub fn encode(&self) -> [u8; CELL_INFO_BYTES] {
        let mut out = [0u8; CELL_INFO_BYTES];
        let numbers = [
            self.cell_id,
            self.node_id,
            self.memory_limit_bytes,
            self.memory_used_bytes,
            self.map_bytes,
        ];
        for (index, value) in numbers.iter().enumerate() {
            out[index * 8..index * 8 + 8].copy_from_slice(&value.to_le_bytes());
        }
        out[40..44].copy_from_slice(&self.node_ip);
        let mut at = 48;
        for name in [&self.name, &self.node_name] {
            out[at] = name.len;
            out[at + 1..at + 1 + CELL_INFO_NAME_MAX].copy_from_slice(&name.bytes);
            at += 1 + CELL_INFO_NAME_MAX;
        }
        debug_assert_eq!(at, CELL_INFO_BYTES);
        out
    }

    /// Decodes a record; total (never panics on any input).
    pub fn decode(bytes: &[u8]) -> Result<CellInfo, CellInfoError> {
        if bytes.len() < CELL_INFO_BYTES {
            return Err(CellInfoError::Short);
        }
        let number = |index: usize| {
            let mut word = [0u8; 8];
            word.copy_from_slice(&bytes[index * 8..index * 8 + 8]);
            u64::from_le_bytes(word)
        };
        let name = |at: usize| -> Result<ShortName, CellInfoError> {
            let len = usize::from(bytes[at]);
            if len > CELL_INFO_NAME_MAX {
                return Err(CellInfoError::BadName);
            }
            let text = core::str::from_utf8(&bytes[at + 1..at + 1 + len])
                .map_err(|_| CellInfoError::BadName)?;
            Ok(ShortName::new(text))
        };
        Ok(CellInfo {
            cell_id: number(0),
            node_id: number(1),
            memory_limit_bytes: number(2),
            memory_used_bytes: number(3),
            map_bytes: number(4),
            node_ip: [bytes[40], bytes[41], bytes[42], bytes[43]],
            name: name(48)?,
            node_name: name(48 + 1 + CELL_INFO_NAME_MAX)?,
        })
    }
}

// The path keeps working when the runtime includes this file from elsewhere.
#[cfg(test)]
#[path = "abi/tests.rs"]
mod tests;
