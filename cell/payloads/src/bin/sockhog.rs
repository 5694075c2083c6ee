//! `sockhog <count> [base_port]`: opens `count` sockets and holds them forever, to check that
//! killing a cell frees every socket. Even-numbered ones are TCP listeners (backlog 1) on
//! `base_port + i` (default base 20000), odd ones UDP sockets bound there. Prints
//! `sockhog: holding <n> sockets` (or the first error) and sleeps.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use xylem_rt::abi::SockAddrV4;
use xylem_rt::net::{TcpListener, UdpSocket};
use xylem_rt::{println, Args};

xylem_rt::entry!(main);

fn main(args: &Args) -> i32 {
    let count = payloads::arg_u64(args, 0, 64);
    let base = payloads::arg_u64(args, 1, 20_000);
    let mut listeners = Vec::new();
    let mut udp = Vec::new();
    for i in 0..count {
        let Ok(port) = u16::try_from(base + i) else {
            println!("sockhog: port {} out of range", base + i);
            return 2;
        };
        let opened = if i % 2 == 0 {
            TcpListener::bind(SockAddrV4::any(port), 1).map(|l| listeners.push(l))
        } else {
            UdpSocket::bind(SockAddrV4::any(port)).map(|u| udp.push(u))
        };
        if let Err(errno) = opened {
            println!("sockhog: socket {i} failed: {}", errno.name());
            break;
        }
    }
    println!("sockhog: holding {} sockets", listeners.len() + udp.len());
    loop {
        payloads::sleep_ms(3_600_000);
    }
}
