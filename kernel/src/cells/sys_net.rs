//! Socket syscalls: one function per call, typed arguments in, `Result` out (STYLE.md §16).
//!
//! Each looks the descriptor up in the calling cell's table (`io::CellIo::fds`; a number
//! another cell holds is simply not in this table: `EBADF`), calls a method of the socket
//! object (`netstack::cell_sockets::CellSocket`), and copies user memory only through the
//! cell's address space. Blocking calls go through [`io::run_blocking`]; a descriptor with
//! `SOCK_NONBLOCK` (or the `NonBlocking` option) gets `EAGAIN` / `EINPROGRESS` instead.
//!
//! Invariant: a `CellSocket` never drops while the stack is locked (its `Drop` takes the
//! stack). Inside these closures a socket is either stored in the table or released
//! explicitly with `release(stack, now)`.

use ::cell::abi::{
    self, AddrWhich, Errno, PollFd, Shutdown, SockAddrV4, SockOpt, SocketKind, POLLERR, POLLHUP,
    POLLIN, POLLNVAL, POLLOUT, POLL_FD_BYTES,
};

use super::io::{self, fd_errno, run_blocking, with_cell_net, CellParts, Step};
use crate::netstack::cell_sockets::{CellSocket, TCP_SOCKET_BYTES, UDP_SOCKET_BYTES};
use crate::netstack::Stack;
use crate::sched::waker;
use crate::time;

/// A descriptor number as the cell passed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fd(pub u64);

/// A user buffer `[addr, addr + len)`, inside the user half (checked at construction).
#[derive(Clone, Copy, Debug)]
pub struct UserBuf {
    pub addr: u64,
    pub len: u64,
}

impl UserBuf {
    /// Checks the range (the pure part; mappings are checked before use).
    pub fn new(addr: u64, len: u64) -> Result<UserBuf, Errno> {
        abi::user_range(addr, len)?;
        Ok(UserBuf { addr, len })
    }

    /// The same buffer cut to at most `max` bytes.
    fn capped(self, max: u64) -> UserBuf {
        UserBuf {
            addr: self.addr,
            len: self.len.min(max),
        }
    }
}

fn socket_mut<'p>(parts: &'p mut CellParts<'_>, fd: Fd) -> Result<&'p mut CellSocket, Errno> {
    parts.io.fds.get_mut(fd.0).map_err(fd_errno)
}

/// Parks the caller's waker on `socket` for `events` and asks to wait (or `EAGAIN`).
fn wait_on<T>(
    socket: &CellSocket,
    stack: &mut Stack,
    events: u16,
    deadline: Option<u64>,
) -> Step<T> {
    if socket.nonblocking() {
        return Step::Done(Err(Errno::EAGAIN));
    }
    socket.register(stack, events, &waker::current_waker());
    Step::Wait(deadline)
}

/// `socket(kind, flags) -> fd`.
pub fn sys_socket(kind: u64, flags: u64) -> Result<u64, Errno> {
    let kind = SocketKind::from_u64(kind).ok_or(Errno::EINVAL)?;
    if flags & !abi::SOCK_NONBLOCK != 0 {
        return Err(Errno::EINVAL);
    }
    let nonblocking = flags & abi::SOCK_NONBLOCK != 0;
    with_cell_net(|parts, stack| {
        if parts.io.fds.len() >= parts.io.fds.capacity() {
            return Err(Errno::EMFILE);
        }
        let bytes = match kind {
            SocketKind::Tcp => 0,
            SocketKind::Udp => UDP_SOCKET_BYTES as u64,
        };
        io::check_room(parts.limits, parts.space, parts.io, bytes)?;
        let socket = CellSocket::open(stack, kind, nonblocking)?;
        parts.io.fds.insert(socket).map_err(|(error, socket)| {
            socket.release(stack, time::now_us());
            fd_errno(error)
        })
    })
}

/// `bind(fd, addr) -> 0`.
pub fn sys_bind(fd: Fd, addr: u64) -> Result<u64, Errno> {
    let addr = SockAddrV4::from_u64(addr).ok_or(Errno::EINVAL)?;
    with_cell_net(|mut parts, stack| socket_mut(&mut parts, fd)?.bind(stack, addr).map(|()| 0))
}

/// `listen(fd, backlog) -> 0`.
pub fn sys_listen(fd: Fd, backlog: u64) -> Result<u64, Errno> {
    with_cell_net(|mut parts, stack| {
        let bytes = CellSocket::listen_bytes(backlog.min(abi::MAX_BACKLOG)) as u64;
        io::check_room(parts.limits, parts.space, parts.io, bytes)?;
        socket_mut(&mut parts, fd)?
            .listen(stack, backlog)
            .map(|()| 0)
    })
}

/// `accept(fd) -> new fd`.
pub fn sys_accept(fd: Fd) -> Result<u64, Errno> {
    run_blocking(|mut parts, stack, _now| {
        if parts.io.fds.len() >= parts.io.fds.capacity() {
            return Step::Done(Err(Errno::EMFILE));
        }
        if let Err(errno) =
            io::check_room(parts.limits, parts.space, parts.io, TCP_SOCKET_BYTES as u64)
        {
            return Step::Done(Err(errno));
        }
        let listener = match socket_mut(&mut parts, fd) {
            Ok(listener) => listener,
            Err(errno) => return Step::Done(Err(errno)),
        };
        let stream = match listener.accept(stack) {
            Ok(stream) => stream,
            Err(Errno::EAGAIN) => return wait_on(listener, stack, POLLIN, None),
            Err(errno) => return Step::Done(Err(errno)),
        };
        Step::Done(parts.io.fds.insert(stream).map_err(|(error, stream)| {
            stream.release(stack, time::now_us());
            fd_errno(error)
        }))
    })
}

/// `connect(fd, addr) -> 0`: blocks until established, refused or timed out.
pub fn sys_connect(fd: Fd, addr: u64) -> Result<u64, Errno> {
    let peer = SockAddrV4::from_u64(addr).ok_or(Errno::EINVAL)?;
    let started = with_cell_net(|mut parts, stack| {
        io::check_room(parts.limits, parts.space, parts.io, TCP_SOCKET_BYTES as u64)?;
        let socket = socket_mut(&mut parts, fd)?;
        match socket.connect(stack, peer, time::now_us()) {
            Err(Errno::EINPROGRESS) if socket.nonblocking() => Err(Errno::EINPROGRESS),
            Err(Errno::EINPROGRESS) => Ok(()),
            Ok(()) => Ok(()),
            Err(errno) => Err(errno),
        }
    });
    started?;
    run_blocking(|mut parts, stack, now| {
        let socket = match socket_mut(&mut parts, fd) {
            Ok(socket) => socket,
            Err(errno) => return Step::Done(Err(errno)),
        };
        match socket.connect_result(stack, now) {
            Ok(()) => Step::Done(Ok(0)),
            Err(Errno::EAGAIN) => {
                let deadline = socket.connect_deadline_us();
                socket.register(stack, POLLOUT, &waker::current_waker());
                Step::Wait(deadline)
            }
            Err(errno) => Step::Done(Err(errno)),
        }
    })
}

/// `read(fd, buf, len) -> bytes` (0 = the peer closed its side).
pub fn sys_read(fd: Fd, buf: UserBuf) -> Result<u64, Errno> {
    if fd.0 < abi::FIRST_SOCKET_FD {
        return Err(Errno::EBADF);
    }
    let buf = buf.capped(abi::MAX_IO_LEN);
    if buf.len == 0 {
        return Ok(0);
    }
    run_blocking(|mut parts, stack, _now| {
        if !parts.space.user_accessible(buf.addr, buf.len, true) {
            return Step::Done(Err(Errno::EFAULT));
        }
        let CellParts { space, io, .. } = &mut parts;
        let socket = match io.fds.get_mut(fd.0) {
            Ok(socket) => socket,
            Err(error) => return Step::Done(Err(fd_errno(error))),
        };
        let mut copied = 0u64;
        let result = socket.read(stack, buf.len as usize, |bytes| {
            space
                .copy_to_user(buf.addr + copied, bytes)
                .map_err(|_| Errno::EFAULT)?;
            copied += bytes.len() as u64;
            Ok(bytes.len())
        });
        match result {
            Err(Errno::EAGAIN) => wait_on(socket, stack, POLLIN, None),
            other => Step::Done(other.map(|n| n as u64)),
        }
    })
}

/// `write(fd ≥ 3, buf, len) -> bytes` on a TCP stream (fds 1 and 2 are the log: `syscalls`).
pub fn sys_write_socket(fd: Fd, buf: UserBuf) -> Result<u64, Errno> {
    let buf = buf.capped(abi::MAX_IO_LEN);
    if buf.len == 0 {
        return Ok(0);
    }
    run_blocking(|mut parts, stack, _now| {
        if !parts.space.user_accessible(buf.addr, buf.len, false) {
            return Step::Done(Err(Errno::EFAULT));
        }
        let CellParts { space, io, .. } = &mut parts;
        let socket = match io.fds.get_mut(fd.0) {
            Ok(socket) => socket,
            Err(error) => return Step::Done(Err(fd_errno(error))),
        };
        let result = socket.write(stack, buf.len as usize, |room, offset| {
            space
                .read_user(buf.addr + offset as u64, room)
                .map_err(|_| Errno::EFAULT)?;
            Ok(room.len())
        });
        match result {
            Err(Errno::EAGAIN) => wait_on(socket, stack, POLLOUT, None),
            other => Step::Done(other.map(|n| n as u64)),
        }
    })
}

/// `shutdown(fd, how) -> 0`.
pub fn sys_shutdown(fd: Fd, how: u64) -> Result<u64, Errno> {
    let how = Shutdown::from_u64(how).ok_or(Errno::EINVAL)?;
    with_cell_net(|mut parts, stack| socket_mut(&mut parts, fd)?.shutdown(stack, how).map(|()| 0))
}

/// `close(fd) -> 0`.
pub fn sys_close(fd: Fd) -> Result<u64, Errno> {
    if fd.0 < abi::FIRST_SOCKET_FD {
        return Err(Errno::EBADF);
    }
    with_cell_net(|parts, stack| {
        let socket = parts.io.fds.remove(fd.0).map_err(fd_errno)?;
        socket.release(stack, time::now_us());
        Ok(0)
    })
}

/// `send_to(fd, buf, len, addr) -> bytes`: one datagram.
pub fn sys_send_to(fd: Fd, buf: UserBuf, addr: u64) -> Result<u64, Errno> {
    let peer = SockAddrV4::from_u64(addr).ok_or(Errno::EINVAL)?;
    if buf.len > abi::MAX_DATAGRAM_LEN {
        return Err(Errno::EMSGSIZE);
    }
    let mut datagram = [0u8; abi::MAX_DATAGRAM_LEN as usize];
    let data = &mut datagram[..buf.len as usize];
    run_blocking(|mut parts, stack, _now| {
        if parts.space.read_user(buf.addr, data).is_err() {
            return Step::Done(Err(Errno::EFAULT));
        }
        let socket = match socket_mut(&mut parts, fd) {
            Ok(socket) => socket,
            Err(errno) => return Step::Done(Err(errno)),
        };
        match socket.send_to(stack, data, peer) {
            Err(Errno::EAGAIN) => wait_on(socket, stack, POLLOUT, None),
            other => Step::Done(other.map(|n| n as u64)),
        }
    })
}

/// `recv_from(fd, buf, len, addr_out) -> bytes`: one datagram; the sender is written to
/// the `u64` at `addr_out` unless it is 0.
pub fn sys_recv_from(fd: Fd, buf: UserBuf, addr_out: u64) -> Result<u64, Errno> {
    let buf = buf.capped(abi::MAX_IO_LEN);
    if addr_out != 0 {
        abi::user_range(addr_out, 8)?;
    }
    run_blocking(|mut parts, stack, _now| {
        let writable = parts.space.user_accessible(buf.addr, buf.len, true)
            && (addr_out == 0 || parts.space.user_accessible(addr_out, 8, true));
        if !writable {
            return Step::Done(Err(Errno::EFAULT));
        }
        let CellParts { space, io, .. } = &mut parts;
        let socket = match io.fds.get_mut(fd.0) {
            Ok(socket) => socket,
            Err(error) => return Step::Done(Err(fd_errno(error))),
        };
        let result = socket.recv_from(stack, buf.len as usize, |bytes| {
            space
                .copy_to_user(buf.addr, bytes)
                .map_err(|_| Errno::EFAULT)
        });
        match result {
            Err(Errno::EAGAIN) => wait_on(socket, stack, POLLIN, None),
            Err(errno) => Step::Done(Err(errno)),
            Ok((len, from)) => {
                if addr_out != 0 {
                    let packed = from.to_u64().to_le_bytes();
                    if space.copy_to_user(addr_out, &packed).is_err() {
                        return Step::Done(Err(Errno::EFAULT));
                    }
                }
                Step::Done(Ok(len as u64))
            }
        }
    })
}

/// `sock_addr(fd, which) -> packed address`.
pub fn sys_sock_addr(fd: Fd, which: u64) -> Result<u64, Errno> {
    let which = AddrWhich::from_u64(which).ok_or(Errno::EINVAL)?;
    with_cell_net(|mut parts, stack| {
        let socket = socket_mut(&mut parts, fd)?;
        socket
            .address(stack, which == AddrWhich::Peer)
            .map(SockAddrV4::to_u64)
    })
}

/// `set_option(fd, option, value) -> 0`.
pub fn sys_set_option(fd: Fd, option: u64, value: u64) -> Result<u64, Errno> {
    let option = SockOpt::from_u64(option).ok_or(Errno::EINVAL)?;
    let on = match value {
        0 => false,
        1 => true,
        _ => return Err(Errno::EINVAL),
    };
    with_cell_net(|mut parts, stack| {
        let socket = socket_mut(&mut parts, fd)?;
        match option {
            SockOpt::NonBlocking => {
                socket.set_nonblocking(on);
                Ok(0)
            }
            SockOpt::NoDelay => socket.set_nodelay(stack, on).map(|()| 0),
        }
    })
}

/// `poll(entries, count, timeout_ms) -> ready entries`.
pub fn sys_poll(entries: u64, count: u64, timeout_ms: u64) -> Result<u64, Errno> {
    if count > abi::MAX_POLL_FDS {
        return Err(Errno::EINVAL);
    }
    if timeout_ms != abi::POLL_FOREVER && timeout_ms > abi::MAX_POLL_TIMEOUT_MS {
        return Err(Errno::EINVAL);
    }
    let buf = UserBuf::new(entries, count * POLL_FD_BYTES as u64)?;
    let deadline = (timeout_ms != abi::POLL_FOREVER).then(|| time::now_us() + timeout_ms * 1000);
    // The entries live on this kernel stack (1 KiB at most), never on the heap.
    let mut table = [PollFd::default(); abi::MAX_POLL_FDS as usize];
    let table = &mut table[..count as usize];
    let mut raw = [0u8; abi::MAX_POLL_FDS as usize * POLL_FD_BYTES];
    let raw = &mut raw[..count as usize * POLL_FD_BYTES];
    run_blocking(|mut parts, stack, now| {
        if parts.space.read_user(buf.addr, raw).is_err()
            || !parts.space.user_accessible(buf.addr, buf.len, true)
        {
            return Step::Done(Err(Errno::EFAULT));
        }
        let mut ready = 0u64;
        let (records, _) = raw.as_chunks::<POLL_FD_BYTES>();
        for (entry, record) in table.iter_mut().zip(records) {
            *entry = PollFd::decode(*record);
            entry.revents = match socket_mut(&mut parts, Fd(u64::from(entry.fd))) {
                Ok(socket) => socket.readiness(stack, now) & (entry.events | POLLERR | POLLHUP),
                Err(_) => POLLNVAL,
            };
            ready += u64::from(entry.revents != 0);
        }
        if ready == 0 && deadline.is_none_or(|d| now < d) {
            let waker = waker::current_waker();
            let mut wake_at = deadline;
            for entry in table.iter() {
                if let Ok(socket) = socket_mut(&mut parts, Fd(u64::from(entry.fd))) {
                    socket.register(stack, entry.events, &waker);
                    if let Some(at) = socket.connect_deadline_us() {
                        wake_at = Some(wake_at.map_or(at, |d| d.min(at)));
                    }
                }
            }
            return Step::Wait(wake_at);
        }
        let (records, _) = raw.as_chunks_mut::<POLL_FD_BYTES>();
        for (entry, record) in table.iter().zip(records) {
            *record = entry.encode();
        }
        match parts.space.copy_to_user(buf.addr, raw) {
            Ok(()) => Step::Done(Ok(ready)),
            Err(_) => Step::Done(Err(Errno::EFAULT)),
        }
    })
}
