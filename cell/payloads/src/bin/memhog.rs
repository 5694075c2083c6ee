//! `memhog [chunk_kib] [hold_ms]`: takes memory until the kernel says no, to test limits.
//!
//! Maps chunks of `chunk_kib` (default 256) with `mem_map`, writing every page, until a map
//! fails; prints `memhog: mapped <KiB> KiB then <ERRNO> (used <KiB>/<limit KiB> KiB)`. Then
//! checks that the heap (`Vec::try_reserve`) also fails cleanly, unmaps one chunk and maps it
//! again (the address is reused), holds everything for `hold_ms` (default 0), and exits 0
//! if every step behaved (`ENOMEM` at the end, memory intact), 1 otherwise.
#![no_std]
#![no_main]
#![forbid(unsafe_code)]

extern crate alloc;

use alloc::vec::Vec;
use xylem_rt::abi::Errno;
use xylem_rt::mem::Mapping;
use xylem_rt::{println, sys, Args};

xylem_rt::entry!(main);

/// Stop after this many chunks even if the kernel never says no (a broken limit).
const CHUNKS_MAX: usize = 100_000;
const PAGE: usize = 4096;

fn main(args: &Args) -> i32 {
    let chunk = (payloads::arg_u64(args, 0, 256).max(4) * 1024) as usize;
    let hold_ms = payloads::arg_u64(args, 1, 0);
    let mut chunks: Vec<Mapping> = Vec::new();
    if chunks.try_reserve(1024).is_err() {
        println!("memhog: no heap for the chunk list");
        return 1;
    }
    let refusal = loop {
        if chunks.len() >= CHUNKS_MAX {
            println!("memhog: FAIL: {CHUNKS_MAX} chunks and no ENOMEM");
            return 1;
        }
        // The list itself lives on the heap: stop growing when it cannot.
        if chunks.len() == chunks.capacity() && chunks.try_reserve(1024).is_err() {
            break Errno::ENOMEM;
        }
        match Mapping::new(chunk) {
            Ok(mut mapping) => {
                let mark = (chunks.len() + 1) as u8;
                for page in mapping.as_mut_slice().chunks_mut(PAGE) {
                    page[0] = mark;
                }
                chunks.push(mapping);
            }
            Err(errno) => break errno,
        }
    };
    let info = sys::cell_info();
    let (used_kib, limit_kib) = info.map_or((0, 0), |i| {
        (i.memory_used_bytes / 1024, i.memory_limit_bytes / 1024)
    });
    println!(
        "memhog: mapped {} KiB then {} (used {used_kib}/{limit_kib} KiB)",
        chunks.len() * chunk / 1024,
        refusal.name()
    );
    let mut ok = refusal == Errno::ENOMEM && !chunks.is_empty();
    for (index, mapping) in chunks.iter().enumerate() {
        let mark = (index + 1) as u8;
        if mapping.as_slice().chunks(PAGE).any(|page| page[0] != mark) {
            println!("memhog: FAIL: chunk {index} lost its contents");
            ok = false;
        }
    }
    // The heap fails as a value, not a crash.
    let mut big: Vec<u8> = Vec::new();
    if big.try_reserve(64 << 20).is_ok() {
        println!("memhog: FAIL: heap took 64 MiB past the limit");
        ok = false;
    } else {
        println!("memhog: heap try_reserve of 64 MiB refused");
    }
    drop(big);
    // Unmapping gives the room back and the same address is used again.
    if let Some(last) = chunks.pop() {
        let addr = last.addr();
        drop(last);
        match Mapping::new(chunk) {
            Ok(again) if again.addr() == addr => {
                println!("memhog: remapped at the same address");
                chunks.push(again);
            }
            Ok(again) => {
                println!(
                    "memhog: FAIL: remapped at {:#x}, not {addr:#x}",
                    again.addr()
                );
                ok = false;
            }
            Err(errno) => {
                println!("memhog: FAIL: remap after unmap: {}", errno.name());
                ok = false;
            }
        }
    }
    if hold_ms > 0 {
        println!("memhog: holding for {hold_ms} ms");
        payloads::sleep_ms(hold_ms);
    }
    println!("memhog: {}", if ok { "ok" } else { "FAILED" });
    i32::from(!ok)
}
