//! The system-call dispatcher: a table from number to handler (STYLE.md §16). Each entry
//! decodes the registers into typed arguments and calls one function per syscall, typed in,
//! `Result` out; numbers and errors are `cell::abi`'s (docs/syscalls.md). Unknown numbers
//! return `ENOSYS`; bad pointers `EFAULT`. User memory is copied only through the calling
//! cell's address space.
//!
//! Calls that block (sockets, `sleep_ms`) hold no heap memory while blocked, and any heap
//! buffer a call uses is taken and freed with interrupts masked, so a cell killed at any
//! moment leaks nothing (docs/architecture.md, "a killed task must not own heap memory").

use ::cell::abi::{self, Errno, Syscall};

use super::sys_mem::{sys_cell_info, sys_mem_map, sys_mem_unmap};
use super::sys_net::{
    sys_accept, sys_bind, sys_close, sys_connect, sys_listen, sys_poll, sys_read, sys_recv_from,
    sys_send_to, sys_set_option, sys_shutdown, sys_sock_addr, sys_socket, sys_write_socket, Fd,
    UserBuf,
};
use super::table;
use crate::arch::cpu;
use crate::arch::syscall::SyscallFrame;
use crate::events::ExitReason;
use crate::{sched, time};

/// The argument registers of one call: `rdi`, `rsi`, `rdx`, `r10`.
#[derive(Clone, Copy, Debug)]
pub struct Args([u64; 4]);

type Handler = fn(Args) -> Result<u64, Errno>;

/// One handler per syscall, at the index of its number.
const TABLE: [(Syscall, Handler); Syscall::ALL.len()] = [
    (Syscall::Write, |a| {
        sys_write(Fd(a.0[0]), UserBuf::new(a.0[1], a.0[2])?)
    }),
    (Syscall::SleepMs, |a| sys_sleep_ms(a.0[0])),
    (Syscall::Yield, |_| sys_yield()),
    (Syscall::Exit, |a| sys_exit(a.0[0])),
    (Syscall::ClockUs, |_| Ok(time::now_us())),
    (Syscall::CellId, |_| {
        table::current_cell_id().ok_or(Errno::EPERM)
    }),
    (Syscall::Args, |a| sys_args(a.0[0], a.0[1])),
    (Syscall::CellInfo, |a| sys_cell_info(a.0[0], a.0[1])),
    (Syscall::MemMap, |a| sys_mem_map(a.0[0], a.0[1])),
    (Syscall::MemUnmap, |a| sys_mem_unmap(a.0[0], a.0[1])),
    (Syscall::Socket, |a| sys_socket(a.0[0], a.0[1])),
    (Syscall::Bind, |a| sys_bind(Fd(a.0[0]), a.0[1])),
    (Syscall::Listen, |a| sys_listen(Fd(a.0[0]), a.0[1])),
    (Syscall::Accept, |a| sys_accept(Fd(a.0[0]))),
    (Syscall::Connect, |a| sys_connect(Fd(a.0[0]), a.0[1])),
    (Syscall::Read, |a| {
        sys_read(Fd(a.0[0]), UserBuf::new(a.0[1], a.0[2])?)
    }),
    (Syscall::Shutdown, |a| sys_shutdown(Fd(a.0[0]), a.0[1])),
    (Syscall::Close, |a| sys_close(Fd(a.0[0]))),
    (Syscall::SendTo, |a| {
        sys_send_to(Fd(a.0[0]), UserBuf::new(a.0[1], a.0[2])?, a.0[3])
    }),
    (Syscall::RecvFrom, |a| {
        sys_recv_from(Fd(a.0[0]), UserBuf::new(a.0[1], a.0[2])?, a.0[3])
    }),
    (Syscall::Poll, |a| sys_poll(a.0[0], a.0[1], a.0[2])),
    (Syscall::SockAddr, |a| sys_sock_addr(Fd(a.0[0]), a.0[1])),
    (Syscall::SetOption, |a| {
        sys_set_option(Fd(a.0[0]), a.0[1], a.0[2])
    }),
];

// Every entry sits at the index of its own number, and every call has one.
const _: () = {
    let mut index = 0;
    while index < TABLE.len() {
        assert!(TABLE[index].0.number() == index as u64);
        index += 1;
    }
};

/// Entry from arch::syscall, on the cell task's kernel stack.
pub fn on_syscall(frame: &mut SyscallFrame) {
    // The stub entered with interrupts off; a syscall may sleep or run long, so let the
    // timer in. The arch layer masks them again before `sysret`.
    cpu::enable_interrupts();
    let args = Args([frame.rdi, frame.rsi, frame.rdx, frame.r10]);
    let result = usize::try_from(frame.rax)
        .ok()
        .and_then(|number| TABLE.get(number))
        .map_or(Err(Errno::ENOSYS), |(_, handler)| handler(args));
    frame.rax = abi::encode_result(result);
    // A call that woke a more urgent task (the `net` task after a send) lets it run now,
    // rather than at the next timer tick after the cell is back in ring 3.
    sched::reschedule_if_needed();
}

/// `write(fd, buf, len)`: fds 1 and 2 append to the cell's log; others are sockets.
fn sys_write(fd: Fd, buf: UserBuf) -> Result<u64, Errno> {
    match fd.0 {
        abi::FD_STDOUT | abi::FD_STDERR => sys_write_log(buf),
        fd if fd >= abi::FIRST_SOCKET_FD => sys_write_socket(Fd(fd), buf),
        _ => Err(Errno::EBADF),
    }
}

fn sys_write_log(buf: UserBuf) -> Result<u64, Errno> {
    if buf.len > abi::MAX_WRITE_LEN {
        return Err(Errno::EINVAL);
    }
    table::with_current(|cell| {
        let bytes = cell
            .space()?
            .copy_from_user(buf.addr, buf.len)
            .map_err(|_| Errno::EFAULT)?;
        cell.log.push(&bytes);
        Ok(buf.len)
    })
}

fn sys_sleep_ms(ms: u64) -> Result<u64, Errno> {
    if ms > abi::MAX_SLEEP_MS {
        return Err(Errno::EINVAL);
    }
    sched::sleep_ms(ms);
    Ok(0)
}

fn sys_yield() -> Result<u64, Errno> {
    sched::yield_now();
    Ok(0)
}

fn sys_exit(code: u64) -> Result<u64, Errno> {
    // The low 32 bits, as `i32` (docs/syscalls.md).
    sched::exit(ExitReason::Exited(i64::from(code as u32 as i32)))
}

fn sys_args(addr: u64, cap: u64) -> Result<u64, Errno> {
    table::with_current(|cell| {
        let (space, blob) = cell.space_and_args()?;
        let len = blob.len() as u64;
        if cap < len {
            return Err(Errno::ERANGE);
        }
        abi::user_range(addr, len)?;
        space.copy_to_user(addr, blob).map_err(|_| Errno::EFAULT)?;
        Ok(len)
    })
}
