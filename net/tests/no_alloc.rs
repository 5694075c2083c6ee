//! Receiving and encoding never touch the heap: a counting global allocator watches this
//! thread while `Endpoint::receive`, `parse` and `Endpoint::encode` run over valid, corrupted
//! and garbage datagrams. (The `Endpoint` itself allocates its bounded tables once, in `new`.)

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use net::{parse, Endpoint, Kind, TransportConfig, BROADCAST, MAX_DATAGRAM_LEN};

struct CountingAlloc;

thread_local! {
    static WATCHING: Cell<bool> = const { Cell::new(false) };
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so
// `System`'s guarantees carry over; the counting touches only const-initialised thread-locals,
// which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if WATCHING.with(Cell::get) {
            ALLOCATIONS.with(|n| n.set(n.get() + 1));
        }
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this `layout` (we forward every alloc).
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

fn watched<T>(f: impl FnOnce() -> T) -> (T, u64) {
    ALLOCATIONS.with(|n| n.set(0));
    WATCHING.with(|w| w.set(true));
    let out = f();
    WATCHING.with(|w| w.set(false));
    (out, ALLOCATIONS.with(Cell::get))
}

#[test]
fn receive_parse_and_encode_do_not_allocate() {
    let mut sender = Endpoint::new(TransportConfig::new(5, 1), 0);
    let mut receiver = Endpoint::new(TransportConfig::new(5, 2), 0);
    let mut frames: Vec<Vec<u8>> = Vec::new();
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    for (i, kind) in Kind::ALL.iter().enumerate() {
        let len = sender
            .encode(
                *kind,
                if i % 2 == 0 { 2 } else { BROADCAST },
                &[i as u8; 300],
                &mut buf,
            )
            .unwrap();
        frames.push(buf[..len].to_vec());
        let mut corrupted = buf[..len].to_vec();
        corrupted[len / 2] ^= 0x10;
        frames.push(corrupted);
        frames.push(buf[..len / 2].to_vec());
    }
    frames.push(vec![0xFF; 2000]);
    frames.push(Vec::new());
    frames.push(b"XYLM\x01".repeat(10));

    // The watcher itself works: a real allocation is seen.
    let (probe, seen) = watched(|| Vec::<u8>::with_capacity(8));
    assert!(seen >= 1 && probe.capacity() >= 8);

    let ((), allocations) = watched(|| {
        for frame in &frames {
            let _ = parse(frame);
            let _ = receiver.receive(frame);
            let _ = receiver.receive(frame); // the duplicate path too
        }
        let mut out = [0u8; MAX_DATAGRAM_LEN];
        for kind in Kind::ALL {
            sender.encode(kind, 2, &[7u8; 1000], &mut out).unwrap();
            sender
                .encode_postcard(kind, 2, &(1u64, 2u32, [3u8; 16]), &mut out)
                .unwrap();
        }
    });
    assert_eq!(allocations, 0, "the receive and encode paths allocated");
    assert!(receiver.drops().total() > 0 && receiver.received(Kind::Swim) == 1);
}
