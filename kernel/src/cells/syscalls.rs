//! The system-call dispatcher: decodes the number, validates every argument, and copies
//! user memory only through the calling cell's address space. Numbers and errors follow
//! `cell::abi` (docs/syscalls.md). Unknown numbers return ENOSYS; bad pointers EFAULT.

use ::cell::abi::{self, Errno, Syscall};

use super::table;
use crate::arch::cpu;
use crate::arch::syscall::SyscallFrame;
use crate::events::ExitReason;
use crate::{sched, time};

/// Entry from arch::syscall, on the cell task's kernel stack.
pub fn on_syscall(frame: &mut SyscallFrame) {
    // The stub entered with interrupts off; a syscall may sleep or run long, so let the
    // timer in. The arch layer masks them again before `sysret`.
    cpu::enable_interrupts();
    let result = match Syscall::from_number(frame.rax) {
        None => Err(Errno::ENOSYS),
        Some(Syscall::Write) => write(frame.rdi, frame.rsi, frame.rdx),
        Some(Syscall::SleepMs) => sleep_ms(frame.rdi),
        Some(Syscall::Yield) => {
            sched::yield_now();
            Ok(0)
        }
        Some(Syscall::Exit) => sched::exit(ExitReason::Exited(frame.rdi as i64)),
        Some(Syscall::ClockUs) => Ok(time::now_us()),
        Some(Syscall::CellId) => table::current_cell_id().ok_or(Errno::EPERM),
        Some(Syscall::Args) => args(frame.rdi, frame.rsi),
    };
    frame.rax = abi::encode_result(result);
}

fn write(fd: u64, addr: u64, len: u64) -> Result<u64, Errno> {
    if fd != abi::FD_STDOUT && fd != abi::FD_STDERR {
        return Err(Errno::EBADF);
    }
    if len > abi::MAX_WRITE_LEN {
        return Err(Errno::EINVAL);
    }
    abi::user_range(addr, len)?;
    table::with_current(|cell| {
        let bytes = cell
            .space()?
            .copy_from_user(addr, len)
            .map_err(|_| Errno::EFAULT)?;
        cell.log.push(&bytes);
        Ok(len)
    })
}

fn sleep_ms(ms: u64) -> Result<u64, Errno> {
    if ms > abi::MAX_SLEEP_MS {
        return Err(Errno::EINVAL);
    }
    sched::sleep_ms(ms);
    Ok(0)
}

fn args(addr: u64, cap: u64) -> Result<u64, Errno> {
    table::with_current(|cell| {
        let blob = cell.args_blob.clone();
        if cap < blob.len() as u64 {
            return Err(Errno::ERANGE);
        }
        abi::user_range(addr, blob.len() as u64)?;
        cell.space_mut()?
            .copy_to_user(addr, &blob)
            .map_err(|_| Errno::EFAULT)?;
        Ok(blob.len() as u64)
    })
}
