//! `echo [port]`: a TCP echo server (default port 7), for benchmarks and socket tests.
//! Everything a client sends comes back; one `poll` serves up to [`MAX_CONNS`] clients, all
//! non-blocking, so a client that does not read stalls only itself.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use xylem_rt::abi::{Errno, PollFd, SockAddrV4, POLLIN, POLLOUT};
use xylem_rt::net::{poll, TcpListener, TcpStream};
use xylem_rt::{eprintln, println, Args};

xylem_rt::entry!(main);

/// Clients served at once.
const MAX_CONNS: usize = 48;
/// Bytes held for a client that does not read what it sent; reading pauses beyond this.
const PENDING_MAX: usize = 16 * 1024;

struct Client {
    stream: TcpStream,
    pending: Vec<u8>,
}

fn main(args: &Args) -> i32 {
    let Ok(port) = u16::try_from(payloads::arg_u64(args, 0, 7)) else {
        println!("echo: port out of range");
        return 2;
    };
    let listener = match TcpListener::bind(SockAddrV4::any(port), 16) {
        Ok(listener) => listener,
        Err(errno) => {
            eprintln!("echo: cannot listen on port {port}: {}", errno.name());
            return 1;
        }
    };
    if listener.set_nonblocking(true).is_err() {
        return 1;
    }
    println!("echo: listening on port {port}");
    let mut clients: Vec<Client> = Vec::new();
    let mut entries: Vec<PollFd> = Vec::with_capacity(MAX_CONNS + 1);
    loop {
        entries.clear();
        let room = clients.len() < MAX_CONNS;
        entries.push(PollFd::new(listener.fd(), if room { POLLIN } else { 0 }));
        for client in &clients {
            let mut events = 0;
            if client.pending.len() < PENDING_MAX {
                events |= POLLIN;
            }
            if !client.pending.is_empty() {
                events |= POLLOUT;
            }
            entries.push(PollFd::new(client.stream.fd(), events));
        }
        if let Err(errno) = poll(&mut entries, None) {
            eprintln!("echo: poll failed: {}", errno.name());
            return 1;
        }
        if entries[0].revents & POLLIN != 0 {
            while clients.len() < MAX_CONNS {
                match listener.accept() {
                    Ok((stream, _)) if stream.set_nonblocking(true).is_ok() => {
                        clients.push(Client {
                            stream,
                            pending: Vec::new(),
                        })
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
        let polled = entries.len() - 1;
        let mut closed = Vec::new();
        for (index, client) in clients.iter_mut().enumerate().take(polled) {
            if entries[index + 1].revents != 0 && !serve(client) {
                closed.push(index);
            }
        }
        for index in closed.into_iter().rev() {
            clients.swap_remove(index);
        }
    }
}

/// Reads what arrived and writes back what fits. False when the client is gone.
fn serve(client: &mut Client) -> bool {
    let mut buf = [0u8; 4096];
    let room = PENDING_MAX
        .saturating_sub(client.pending.len())
        .min(buf.len());
    if room > 0 {
        match client.stream.read(&mut buf[..room]) {
            Ok(0) if client.pending.is_empty() => return false,
            Ok(n) => client.pending.extend_from_slice(&buf[..n]),
            Err(Errno::EAGAIN) => {}
            Err(_) => return false,
        }
    }
    while !client.pending.is_empty() {
        match client.stream.write(&client.pending) {
            Ok(n) => {
                client.pending.drain(..n);
            }
            Err(Errno::EAGAIN) => break,
            Err(_) => return false,
        }
    }
    true
}
