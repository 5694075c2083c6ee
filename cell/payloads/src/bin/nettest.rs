//! `nettest [peer_ip]`: the socket calls' error paths, from inside a cell. Each check prints
//! `nettest: <name> ok` or `nettest: <name> FAIL: …`; the last line is `nettest: N passed,
//! M failed` and the exit code is 0 only if all passed. With `peer_ip` (a fabric address
//! where nothing listens on port 1, e.g. the harness's host endpoint) it also checks
//! `ECONNREFUSED`.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::format;
use xylem_rt::abi::{self, Errno, PollFd, Shutdown, SockAddrV4, SocketKind, POLLIN, POLLNVAL};
use xylem_rt::net::{poll, TcpListener, TcpStream, UdpSocket};
use xylem_rt::{println, sys, Args};

xylem_rt::entry!(main);

struct Tally {
    passed: u32,
    failed: u32,
}

impl Tally {
    fn expect<T: core::fmt::Debug>(&mut self, name: &str, got: Result<T, Errno>, want: Errno) {
        match got {
            Err(errno) if errno == want => {
                self.passed += 1;
                println!("nettest: {name} ok");
            }
            other => {
                self.failed += 1;
                println!("nettest: {name} FAIL: got {other:?}, want {}", want.name());
            }
        }
    }

    fn check(&mut self, name: &str, holds: bool, detail: &str) {
        if holds {
            self.passed += 1;
            println!("nettest: {name} ok");
        } else {
            self.failed += 1;
            println!("nettest: {name} FAIL: {detail}");
        }
    }
}

fn main(args: &Args) -> i32 {
    let mut t = Tally {
        passed: 0,
        failed: 0,
    };
    let mut buf = [0u8; 64];
    // Descriptors this cell does not hold: 40 is open in another cell when the harness runs
    // `sockhog` beside this one (descriptor tables are per cell), 1 is the log.
    t.expect("read-other-cells-fd", sys::read(40, &mut buf), Errno::EBADF);
    t.expect("close-other-cells-fd", sys::close(40), Errno::EBADF);
    t.expect("read-log-fd", sys::read(1, &mut buf), Errno::EBADF);
    t.expect("close-unknown-fd", sys::close(99), Errno::EBADF);
    t.expect("write-fd0", sys::write(0, b"x"), Errno::EBADF);
    t.expect(
        "bind-unknown-fd",
        sys::bind(1000, SockAddrV4::any(1)),
        Errno::EBADF,
    );
    // Bad arguments.
    t.expect(
        "socket-bad-kind",
        raw(abi::nr::SOCKET, 9, 0, 0),
        Errno::EINVAL,
    );
    t.expect(
        "socket-bad-flags",
        raw(abi::nr::SOCKET, 1, 0x80, 0),
        Errno::EINVAL,
    );
    let tcp = sys::socket(SocketKind::Tcp, 0).unwrap_or(0);
    t.expect("listen-unbound", sys::listen(tcp, 4), Errno::EINVAL);
    t.expect(
        "read-unconnected",
        sys::read(tcp, &mut buf),
        Errno::ENOTCONN,
    );
    t.expect("write-unconnected", sys::write(tcp, b"x"), Errno::ENOTCONN);
    t.expect(
        "bind-foreign-ip",
        sys::bind(tcp, SockAddrV4::new([10, 0, 0, 1], 80)),
        Errno::EADDRNOTAVAIL,
    );
    t.expect(
        "bind-bad-packing",
        raw(abi::nr::BIND, tcp, 1 << 60, 0),
        Errno::EINVAL,
    );
    t.expect(
        "connect-off-fabric",
        sys::connect(tcp, SockAddrV4::new([8, 8, 8, 8], 80)),
        Errno::ENETUNREACH,
    );
    let _ = sys::close(tcp);
    let listener = TcpListener::bind(SockAddrV4::any(5555), 2);
    t.check("listen", listener.is_ok(), "bind+listen on 5555 failed");
    t.expect(
        "listen-port-in-use",
        TcpListener::bind(SockAddrV4::any(5555), 2),
        Errno::EADDRINUSE,
    );
    t.expect(
        "backlog-too-big",
        TcpListener::bind(SockAddrV4::any(5556), abi::MAX_BACKLOG + 1),
        Errno::EINVAL,
    );
    if let Ok(listener) = &listener {
        listener.set_nonblocking(true).ok();
        t.expect(
            "accept-nothing-nonblocking",
            listener.accept(),
            Errno::EAGAIN,
        );
    }
    let udp = UdpSocket::bind(SockAddrV4::any(0));
    t.check(
        "udp-ephemeral",
        udp.as_ref()
            .is_ok_and(|u| u.local_addr().is_ok_and(|a| a.port >= 49152)),
        "no ephemeral port",
    );
    if let Ok(udp) = &udp {
        t.expect(
            "udp-listen",
            sys::listen(udp.fd() as u64, 1),
            Errno::EOPNOTSUPP,
        );
        let big = [0u8; 2000];
        t.expect(
            "udp-too-big",
            udp.send_to(&big, SockAddrV4::new([169, 254, 77, 1], 9)),
            Errno::EMSGSIZE,
        );
        udp.set_nonblocking(true).ok();
        t.expect("udp-recv-nothing", udp.recv_from(&mut buf), Errno::EAGAIN);
    }
    // Bad pointers are EFAULT, never a crash.
    t.expect(
        "poll-kernel-pointer",
        raw(abi::nr::POLL, 0xffff_8000_0000_0000, 1, 0),
        Errno::EFAULT,
    );
    if let Ok(udp) = &udp {
        let fd = u64::from(udp.fd());
        t.expect(
            "recv-kernel-pointer",
            raw(abi::nr::RECV_FROM, fd, 0xffff_8000_0000_0000, 16),
            Errno::EFAULT,
        );
        t.expect(
            "cell-info-kernel-pointer",
            raw(abi::nr::CELL_INFO, 0xffff_8000_0000_0000, 4096, 0),
            Errno::EFAULT,
        );
    }
    t.expect(
        "mem-unmap-unmapped",
        raw(abi::nr::MEM_UNMAP, 0x1000, 4096, 0),
        Errno::EINVAL,
    );
    t.expect("mem-map-zero", sys::mem_map(0), Errno::EINVAL);
    t.expect(
        "poll-too-many",
        raw(abi::nr::POLL, 0x1000, abi::MAX_POLL_FDS + 1, 0),
        Errno::EINVAL,
    );
    t.expect("unknown-syscall", raw(999, 0, 0, 0), Errno::ENOSYS);
    t.expect(
        "mem-map-bad-flags",
        raw(abi::nr::MEM_MAP, 4096, 1, 0),
        Errno::EINVAL,
    );
    // poll: an unknown descriptor is POLLNVAL; a timeout returns 0 after about that long.
    let mut entries = [PollFd::new(123, POLLIN)];
    let ready = poll(&mut entries, Some(0));
    t.check(
        "poll-nval",
        ready == Ok(1) && entries[0].revents == POLLNVAL,
        "unknown fd not POLLNVAL",
    );
    if let Ok(listener) = &listener {
        let start = sys::clock_us();
        let mut entries = [PollFd::new(listener.fd(), POLLIN)];
        let ready = poll(&mut entries, Some(50));
        let waited_ms = (sys::clock_us() - start) / 1000;
        t.check(
            "poll-timeout",
            ready == Ok(0) && (40..2000).contains(&waited_ms),
            "poll(50 ms) did not time out",
        );
    }
    // Descriptor limit: EMFILE at MAX_FDS, and closing makes room again.
    let mut opened = 0;
    let mut fds = [0u64; abi::MAX_FDS + 1];
    let limit = loop {
        match sys::socket(SocketKind::Tcp, 0) {
            Ok(fd) if opened < fds.len() => {
                fds[opened] = fd;
                opened += 1;
            }
            Ok(_) => break Ok(()),
            Err(errno) => break Err::<(), Errno>(errno),
        }
    };
    t.expect("fd-limit", limit, Errno::EMFILE);
    for fd in &fds[..opened] {
        let _ = sys::close(*fd);
    }
    t.check(
        "fd-reuse",
        sys::socket(SocketKind::Tcp, 0).is_ok_and(|fd| sys::close(fd).is_ok()),
        "no fd after closing",
    );
    if let Some(peer) = args
        .get(0)
        .and_then(|ip| SockAddrV4::parse(&format!("{ip}:1")))
    {
        t.expect(
            "connect-refused",
            TcpStream::connect(peer),
            Errno::ECONNREFUSED,
        );
    }
    if listener.is_ok() {
        let stream = sys::socket(SocketKind::Tcp, 0).unwrap_or(0);
        t.expect(
            "shutdown-unconnected",
            sys::shutdown(stream, Shutdown::Write),
            Errno::ENOTCONN,
        );
        let _ = sys::close(stream);
    }
    drop(listener);
    println!("nettest: {} passed, {} failed", t.passed, t.failed);
    i32::from(t.failed != 0)
}

/// A raw syscall with plain numbers, to pass values the typed wrappers would not.
fn raw(number: u64, a: u64, b: u64, c: u64) -> Result<u64, Errno> {
    sys::call_without_memory(number, a, b, c)
}
