//! What one cell holds besides its address space, and the limit all of it counts against.
//!
//! - [`Limits`]: per cell, from the spec (`cell run … --memory-mib N`, the control plane's
//!   `ServiceSpec::memory_mib`); default [`abi::DEFAULT_MEMORY_LIMIT_MIB`].
//! - [`CellIo`]: the incarnation's descriptor table (`kcore::fd_table::FdTable` of
//!   [`CellSocket`]s) and its `mem_map` regions (`kcore::map_regions::Regions`). It lives
//!   in the cell's record and is emptied when the incarnation ends, so every socket is
//!   released (`CellSocket`'s `Drop`) however the cell ended.
//! - [`used_bytes`]: what the limit is checked against: every frame of the address space
//!   (image, stack, page tables, maps) plus the cell's socket buffers.
//! - [`run_blocking`]: the one way a syscall waits: try with everything locked and
//!   interrupts masked; if it would block, park the task's waker and block, all inside that
//!   same masked section (no lost wake-ups), holding no heap memory (a cell killed while it
//!   waits leaks nothing; see docs/architecture.md on killed tasks).
//!
//! Neighbours: `syscalls` (the dispatcher), `sys_net`, `sys_mem`; `netstack::cell_sockets`.

use ::cell::abi::{self, Errno};
use kcore::fd_table::{FdError, FdTable};
use kcore::map_regions::Regions;

use super::table::{self, CellRecord};
use crate::arch::cpu::without_interrupts;
use crate::mm::address_space::AddressSpace;
use crate::mm::PAGE_BYTES;
use crate::netstack::cell_sockets::CellSocket;
use crate::netstack::{self, Stack};
use crate::sched::waker;
use crate::time;

/// Per-cell resource limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Memory the cell may hold (pages and socket buffers), in MiB.
    pub memory_mib: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_mib: abi::DEFAULT_MEMORY_LIMIT_MIB,
        }
    }
}

/// Why a limit was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitError {
    /// Zero, or above [`abi::MAX_MEMORY_LIMIT_MIB`].
    MemoryOutOfRange(u32),
}

impl core::fmt::Display for LimitError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            LimitError::MemoryOutOfRange(mib) => write!(
                f,
                "memory limit {mib} MiB is outside 1..={} MiB",
                abi::MAX_MEMORY_LIMIT_MIB
            ),
        }
    }
}

impl Limits {
    /// Limits with a memory cap of `memory_mib`, checked.
    pub fn with_memory_mib(memory_mib: u32) -> Result<Limits, LimitError> {
        if memory_mib == 0 || memory_mib > abi::MAX_MEMORY_LIMIT_MIB {
            return Err(LimitError::MemoryOutOfRange(memory_mib));
        }
        Ok(Limits { memory_mib })
    }

    /// The memory cap in bytes.
    pub fn memory_bytes(&self) -> u64 {
        u64::from(self.memory_mib) << 20
    }
}

/// An incarnation's descriptors and mappings. See the module docs.
pub struct CellIo {
    pub fds: FdTable<CellSocket>,
    pub maps: Regions,
}

impl Default for CellIo {
    fn default() -> Self {
        Self::new()
    }
}

impl CellIo {
    /// Empty (allocates nothing until used).
    pub fn new() -> CellIo {
        CellIo {
            fds: FdTable::new(abi::FIRST_SOCKET_FD, abi::MAX_FDS),
            maps: Regions::new(
                abi::USER_MAP_BASE,
                abi::USER_MAP_END,
                PAGE_BYTES,
                abi::MAX_MAPPINGS,
            ),
        }
    }

    /// Heap bytes the cell's sockets hold.
    pub fn socket_bytes(&self) -> u64 {
        self.fds.iter().map(|(_, s)| s.bytes() as u64).sum()
    }

    /// Drops every socket (they release themselves) and forgets the mappings (their
    /// frames belong to the address space, which the caller drops).
    pub fn clear(&mut self) {
        self.fds.clear();
        *self = CellIo::new();
    }
}

/// What counts against the cell's memory limit now.
pub fn used_bytes(space: &AddressSpace, io: &CellIo) -> u64 {
    space.frames_held() * PAGE_BYTES + io.socket_bytes()
}

/// `ENOMEM` unless `extra` more bytes fit the cell's limit.
pub fn check_room(
    record_limit: Limits,
    space: &AddressSpace,
    io: &CellIo,
    extra: u64,
) -> Result<(), Errno> {
    let used = used_bytes(space, io);
    if used.saturating_add(extra) > record_limit.memory_bytes() {
        return Err(Errno::ENOMEM);
    }
    Ok(())
}

/// The errno of a descriptor-table error.
pub fn fd_errno(error: FdError) -> Errno {
    match error {
        FdError::BadFd => Errno::EBADF,
        FdError::TableFull => Errno::EMFILE,
        FdError::NoMemory => Errno::ENOMEM,
    }
}

/// The calling cell's parts, locked: its limits, address space, descriptors and mappings.
pub struct CellParts<'a> {
    pub limits: Limits,
    pub space: &'a mut AddressSpace,
    pub io: &'a mut CellIo,
    /// The lifecycle object, for frame accounting when mappings change.
    pub cell: &'a mut ::cell::lifecycle::Cell,
}

/// Runs `f` on the calling cell's parts (interrupts masked, the table locked).
pub fn with_cell<R>(f: impl FnOnce(CellParts<'_>) -> Result<R, Errno>) -> Result<R, Errno> {
    table::with_current(|record: &mut CellRecord| f(record.parts()?))
}

/// Runs `f` on the calling cell's parts and the network stack (both locked, interrupts
/// masked). `ENETUNREACH` on a node without a network.
pub fn with_cell_net<R>(
    f: impl FnOnce(CellParts<'_>, &mut Stack) -> Result<R, Errno>,
) -> Result<R, Errno> {
    with_cell(|parts| {
        netstack::with_stack(|stack| f(parts, stack)).unwrap_or(Err(Errno::ENETUNREACH))
    })
}

/// One try of a blocking call.
pub enum Step<T> {
    /// Finished, with this result.
    Done(Result<T, Errno>),
    /// Would block: the try parked the task's waker where the event will come from; wake
    /// at the latest at this deadline (monotonic µs), if any.
    Wait(Option<u64>),
}

/// Tries `attempt` (with the cell and the stack locked) until it is done, blocking the task
/// between tries. See the module docs for why this cannot lose a wake-up or leak.
pub fn run_blocking<T>(
    mut attempt: impl FnMut(CellParts<'_>, &mut Stack, u64) -> Step<T>,
) -> Result<T, Errno> {
    loop {
        let outcome = without_interrupts(|| {
            let step = with_cell_net(|parts, stack| Ok(attempt(parts, stack, time::now_us())));
            match step {
                Ok(Step::Wait(deadline)) => {
                    waker::block_current_until(deadline);
                    None
                }
                Ok(Step::Done(result)) => Some(result),
                Err(errno) => Some(Err(errno)),
            }
        });
        if let Some(result) = outcome {
            return result;
        }
    }
}
