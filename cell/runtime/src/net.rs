//! Sockets that feel like `std::net`: [`TcpListener`], [`TcpStream`], [`UdpSocket`], and
//! [`poll`] over several of them.
//!
//! Each type owns its descriptor and closes it on drop. Errors are [`Errno`] values (Linux
//! numbering, `abi::Errno`): `ECONNREFUSED`, `ECONNRESET`, `EAGAIN` on a non-blocking socket,
//! and so on. Addresses are [`SockAddrV4`]; `SockAddrV4::any(port)` binds every local address.
//!
//! ```ignore
//! let listener = TcpListener::bind(SockAddrV4::any(80), 8)?;
//! let (mut stream, peer) = listener.accept()?;
//! let mut buf = [0u8; 512];
//! let n = stream.read(&mut buf)?;
//! stream.write_all(&buf[..n])?;
//! ```

use crate::abi::{self, AddrWhich, Errno, PollFd, Shutdown, SockAddrV4, SockOpt, SocketKind};
use crate::sys;

/// A descriptor that is closed when dropped.
#[derive(Debug)]
struct OwnedFd(u64);

impl Drop for OwnedFd {
    fn drop(&mut self) {
        // Nothing useful can be done about a failed close: the kernel frees it with the cell.
        let _ = sys::close(self.0);
    }
}

/// A TCP socket listening for connections.
#[derive(Debug)]
pub struct TcpListener {
    fd: OwnedFd,
}

impl TcpListener {
    /// Binds `addr` and listens with a backlog of `backlog` (1..=`abi::MAX_BACKLOG`)
    /// connections completed before `accept` takes them.
    pub fn bind(addr: SockAddrV4, backlog: u64) -> Result<TcpListener, Errno> {
        let fd = OwnedFd(sys::socket(SocketKind::Tcp, 0)?);
        sys::bind(fd.0, addr)?;
        sys::listen(fd.0, backlog)?;
        Ok(TcpListener { fd })
    }

    /// Waits for a connection (or `EAGAIN` if non-blocking and none is ready).
    pub fn accept(&self) -> Result<(TcpStream, SockAddrV4), Errno> {
        let stream = TcpStream {
            fd: OwnedFd(sys::accept(self.fd.0)?),
        };
        let peer = stream.peer_addr()?;
        Ok((stream, peer))
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SockAddrV4, Errno> {
        sys::sock_addr(self.fd.0, AddrWhich::Local)
    }

    /// Makes `accept` return `EAGAIN` instead of waiting.
    pub fn set_nonblocking(&self, on: bool) -> Result<(), Errno> {
        sys::set_option(self.fd.0, SockOpt::NonBlocking, on)
    }

    /// The descriptor, for [`poll`].
    pub fn fd(&self) -> u32 {
        self.fd.0 as u32
    }
}

/// A TCP connection.
#[derive(Debug)]
pub struct TcpStream {
    fd: OwnedFd,
}

impl TcpStream {
    /// Connects to `addr`, waiting until the connection is established, refused
    /// (`ECONNREFUSED`) or timed out (`ETIMEDOUT`).
    pub fn connect(addr: SockAddrV4) -> Result<TcpStream, Errno> {
        let fd = OwnedFd(sys::socket(SocketKind::Tcp, 0)?);
        sys::connect(fd.0, addr)?;
        Ok(TcpStream { fd })
    }

    /// Reads what has arrived into `buf` (waiting for at least one byte); 0 = end of stream.
    pub fn read(&mut self, buf: &mut [u8]) -> Result<usize, Errno> {
        sys::read(self.fd.0, buf)
    }

    /// Writes some of `buf` (waiting for buffer space); returns how much was taken.
    pub fn write(&mut self, buf: &[u8]) -> Result<usize, Errno> {
        sys::write(self.fd.0, buf)
    }

    /// Writes all of `buf`.
    pub fn write_all(&mut self, mut buf: &[u8]) -> Result<(), Errno> {
        while !buf.is_empty() {
            let written = self.write(buf)?;
            if written == 0 || written > buf.len() {
                return Err(Errno::EINVAL);
            }
            buf = &buf[written..];
        }
        Ok(())
    }

    /// Closes one or both directions.
    pub fn shutdown(&self, how: Shutdown) -> Result<(), Errno> {
        sys::shutdown(self.fd.0, how)
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> Result<SockAddrV4, Errno> {
        sys::sock_addr(self.fd.0, AddrWhich::Peer)
    }

    /// The local address.
    pub fn local_addr(&self) -> Result<SockAddrV4, Errno> {
        sys::sock_addr(self.fd.0, AddrWhich::Local)
    }

    /// Makes reads and writes return `EAGAIN` instead of waiting.
    pub fn set_nonblocking(&self, on: bool) -> Result<(), Errno> {
        sys::set_option(self.fd.0, SockOpt::NonBlocking, on)
    }

    /// Sends small writes at once (`true`, the default) or coalesces them (Nagle).
    pub fn set_nodelay(&self, on: bool) -> Result<(), Errno> {
        sys::set_option(self.fd.0, SockOpt::NoDelay, on)
    }

    /// The descriptor, for [`poll`].
    pub fn fd(&self) -> u32 {
        self.fd.0 as u32
    }
}

/// A UDP socket.
#[derive(Debug)]
pub struct UdpSocket {
    fd: OwnedFd,
}

impl UdpSocket {
    /// A socket bound to `addr` (port 0: an ephemeral port).
    pub fn bind(addr: SockAddrV4) -> Result<UdpSocket, Errno> {
        let fd = OwnedFd(sys::socket(SocketKind::Udp, 0)?);
        sys::bind(fd.0, addr)?;
        Ok(UdpSocket { fd })
    }

    /// Sends one datagram (at most `abi::MAX_DATAGRAM_LEN` bytes).
    pub fn send_to(&self, buf: &[u8], to: SockAddrV4) -> Result<usize, Errno> {
        sys::send_to(self.fd.0, buf, to)
    }

    /// Receives one datagram (waiting for it); a longer one is cut to `buf`.
    pub fn recv_from(&self, buf: &mut [u8]) -> Result<(usize, SockAddrV4), Errno> {
        sys::recv_from(self.fd.0, buf)
    }

    /// The bound address.
    pub fn local_addr(&self) -> Result<SockAddrV4, Errno> {
        sys::sock_addr(self.fd.0, AddrWhich::Local)
    }

    /// Makes sends and receives return `EAGAIN` instead of waiting.
    pub fn set_nonblocking(&self, on: bool) -> Result<(), Errno> {
        sys::set_option(self.fd.0, SockOpt::NonBlocking, on)
    }

    /// The descriptor, for [`poll`].
    pub fn fd(&self) -> u32 {
        self.fd.0 as u32
    }
}

/// Waits until one of `entries` is ready or `timeout_ms` passes (`None`: no timeout).
/// Returns how many entries have a non-zero `revents`.
pub fn poll(entries: &mut [PollFd], timeout_ms: Option<u64>) -> Result<usize, Errno> {
    sys::poll(entries, timeout_ms.unwrap_or(abi::POLL_FOREVER))
}
