//! `http [port] [greeting]`: an HTTP/1.1 server (default port 80).
//!
//! `GET /` answers `node=<node> cell=<cluster-wide name> requests=<n>` (n counts the
//! requests this cell has served, this one included), then ` greeting=<greeting>` when one
//! was given (`xylem apply web --payload http --args 80 v2`: a version a rolling update can
//! tell apart); `GET /healthz` answers `ok`. Other
//! paths are 404, other methods 405, a malformed request 400 (and the connection closes), a
//! request whose head exceeds [`payloads::http::HEAD_BYTES_MAX`] or whose body exceeds
//! [`payloads::http::BODY_BYTES_MAX`] 413. Keep-alive is the HTTP/1.1 default; `Connection:
//! close` (or HTTP/1.0 without keep-alive) closes after the answer. Requests are parsed with
//! `httparse` (`payloads::http`).
//!
//! One thread, one `poll` over the listener and up to [`MAX_CONNS`] connections, all
//! non-blocking: a client that does not read its answers only stalls itself (its output is
//! kept and written when the socket has room; its further requests wait meanwhile).
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::string::String;
use alloc::vec::Vec;
use payloads::http::{self, Conn, Outcome};
use xylem_rt::abi::{Errno, PollFd, SockAddrV4, POLLERR, POLLHUP, POLLIN, POLLOUT};
use xylem_rt::net::{poll, TcpListener, TcpStream};
use xylem_rt::{eprintln, println, sys, Args};

xylem_rt::entry!(main);

/// Connections served at once; more wait in the listen backlog.
const MAX_CONNS: usize = 48;
/// Listen backlog.
const BACKLOG: u64 = 32;
/// A connection idle this long is closed.
const IDLE_MS: u64 = 30_000;
/// `poll` wakes at least this often to close idle connections.
const TICK_MS: u64 = 1_000;

struct Client {
    stream: TcpStream,
    conn: Conn,
    last_active_ms: u64,
}

fn main(args: &Args) -> i32 {
    let port = payloads::arg_u64(args, 0, 80);
    let Ok(port) = u16::try_from(port) else {
        println!("http: port {port} out of range");
        return 2;
    };
    let info = match sys::cell_info() {
        Ok(info) => info,
        Err(errno) => {
            eprintln!("http: cell_info failed: {}", errno.name());
            return 1;
        }
    };
    let listener = match TcpListener::bind(SockAddrV4::any(port), BACKLOG) {
        Ok(listener) => listener,
        Err(errno) => {
            eprintln!("http: cannot listen on port {port}: {}", errno.name());
            return 1;
        }
    };
    if let Err(errno) = listener.set_nonblocking(true) {
        eprintln!("http: set_nonblocking: {}", errno.name());
        return 1;
    }
    let identity = http::Identity {
        node: String::from(info.node_name.as_str()),
        cell: String::from(info.name.as_str()),
        greeting: args.get(1).map(String::from),
    };
    println!(
        "http: serving {} on port {port} as {}",
        identity.node, identity.cell
    );
    serve(&listener, &identity)
}

fn serve(listener: &TcpListener, identity: &http::Identity) -> i32 {
    let mut clients: Vec<Client> = Vec::new();
    let mut served = 0u64;
    let mut entries: Vec<PollFd> = Vec::with_capacity(MAX_CONNS + 1);
    loop {
        entries.clear();
        // Stop accepting while full: new connections wait in the backlog.
        let listening = clients.len() < MAX_CONNS;
        entries.push(PollFd::new(
            listener.fd(),
            if listening { POLLIN } else { 0 },
        ));
        for client in &clients {
            let events = if client.conn.has_output() {
                POLLOUT
            } else {
                POLLIN
            };
            entries.push(PollFd::new(client.stream.fd(), events));
        }
        if let Err(errno) = poll(&mut entries, Some(TICK_MS)) {
            eprintln!("http: poll failed: {}", errno.name());
            return 1;
        }
        let now_ms = sys::clock_us() / 1000;
        if entries[0].revents & POLLIN != 0 {
            accept_all(listener, &mut clients, now_ms);
        }
        // Serve clients; iterate by index over the entries polled (new ones wait a round).
        let polled = entries.len() - 1;
        let mut closed = Vec::new();
        for (index, client) in clients.iter_mut().enumerate().take(polled) {
            let revents = entries[index + 1].revents;
            let keep = if revents == 0 {
                now_ms.saturating_sub(client.last_active_ms) < IDLE_MS
            } else {
                client.last_active_ms = now_ms;
                service(client, revents, identity, &mut served)
            };
            if !keep {
                closed.push(index);
            }
        }
        for index in closed.into_iter().rev() {
            // Dropping the stream closes it.
            clients.swap_remove(index);
        }
    }
}

fn accept_all(listener: &TcpListener, clients: &mut Vec<Client>, now_ms: u64) {
    while clients.len() < MAX_CONNS {
        match listener.accept() {
            Ok((stream, _peer)) => {
                if stream.set_nonblocking(true).is_err() {
                    continue;
                }
                clients.push(Client {
                    stream,
                    conn: Conn::new(),
                    last_active_ms: now_ms,
                });
            }
            Err(Errno::EAGAIN) => return,
            // A connection that went away before we took it, or no memory for another:
            // try again on the next round.
            Err(_) => return,
        }
    }
}

/// Reads, answers and writes for one ready client. Returns whether to keep it.
fn service(client: &mut Client, revents: u16, identity: &http::Identity, served: &mut u64) -> bool {
    if revents & POLLIN != 0 {
        let mut buf = [0u8; 2048];
        match client.stream.read(&mut buf) {
            Ok(0) => client.conn.peer_closed(),
            Ok(n) => client.conn.received(&buf[..n]),
            Err(Errno::EAGAIN) => {}
            Err(_) => return false,
        }
        loop {
            match client.conn.next_request(identity, *served + 1) {
                Outcome::Answered => *served += 1,
                Outcome::NeedMore => break,
                Outcome::Close => break,
            }
        }
    } else if revents & (POLLERR | POLLHUP) != 0 && !client.conn.has_output() {
        return false;
    }
    if !flush(client) {
        return false;
    }
    !(client.conn.wants_close() && !client.conn.has_output())
}

/// Writes pending output until it is out or the socket is full. False on a dead socket.
fn flush(client: &mut Client) -> bool {
    while client.conn.has_output() {
        match client.stream.write(client.conn.output()) {
            Ok(n) => client.conn.consumed(n),
            Err(Errno::EAGAIN) => return true,
            Err(_) => return false,
        }
    }
    true
}
