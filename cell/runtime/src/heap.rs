//! The global allocator: `talc` over memory from the `mem_map` syscall, so payloads use
//! `alloc` (`Vec`, `String`, `Box`).
//!
//! The heap starts empty. When `talc` runs out, [`MapOnOom`] maps a new chunk of at least
//! [`CHUNK_BYTES`] (more for a large allocation) and hands it to `talc` as one more arena;
//! chunks are never unmapped (the cell's memory returns when it ends). When the kernel
//! refuses (`ENOMEM`: the cell's memory limit or the node's free frames), the allocation
//! fails: `try_reserve` and friends see the error; an infallible allocation ends the cell
//! through the panic handler (exit code 101).
//!
//! Locking: cells are single-threaded and have no signal handlers, but a spin mutex costs
//! next to nothing uncontended and keeps this sound if that ever changes.

use core::alloc::Layout;

use talc::{OomHandler, Span, Talc, Talck};

use crate::abi;
use crate::sys;

/// Smallest chunk mapped at a time.
pub const CHUNK_BYTES: usize = 64 * 1024;
/// Room `talc` needs around an allocation in a fresh arena (its tags and metadata, ~1 KiB
/// in the first arena), rounded up generously.
const ARENA_OVERHEAD_BYTES: usize = 4096;

/// How big a chunk must be to satisfy `layout` in a fresh arena.
pub fn chunk_for(layout: Layout) -> Option<usize> {
    let wanted = layout
        .size()
        .checked_add(layout.align())?
        .checked_add(ARENA_OVERHEAD_BYTES)?
        .max(CHUNK_BYTES);
    let page = abi::PAGE_SIZE as usize;
    wanted
        .checked_add(page - 1)
        .map(|bytes| bytes / page * page)
}

/// Maps a new arena for `talc` when it runs out.
pub struct MapOnOom {
    /// Bytes mapped so far (for `heap_bytes`).
    mapped: usize,
}

impl OomHandler for MapOnOom {
    fn handle_oom(talc: &mut Talc<Self>, layout: Layout) -> Result<(), ()> {
        let bytes = chunk_for(layout).ok_or(())?;
        let base = sys::mem_map(bytes as u64).map_err(|_| ())?;
        // SAFETY: the kernel just mapped `bytes` of fresh zeroed read-write memory at `base`
        // for this cell alone; nothing else refers to it, and it is never unmapped, so it
        // stays valid for as long as the allocator uses it.
        unsafe { talc.claim(Span::from_base_size(base as *mut u8, bytes)) }?;
        talc.oom_handler.mapped += bytes;
        Ok(())
    }
}

/// The allocator.
#[cfg_attr(target_os = "none", global_allocator)]
static ALLOCATOR: Talck<spin::Mutex<()>, MapOnOom> = Talc::new(MapOnOom { mapped: 0 }).lock();

/// Bytes the heap has mapped from the kernel so far.
pub fn heap_bytes() -> usize {
    ALLOCATOR.lock().oom_handler.mapped
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_whole_pages_and_cover_the_allocation() {
        let small = Layout::from_size_align(16, 8).unwrap();
        assert_eq!(chunk_for(small), Some(CHUNK_BYTES));
        for size in [CHUNK_BYTES, CHUNK_BYTES + 1, 1 << 20, (1 << 20) + 12345] {
            for align in [1, 8, 4096] {
                let layout = Layout::from_size_align(size, align).unwrap();
                let chunk = chunk_for(layout).unwrap();
                assert_eq!(chunk % 4096, 0);
                assert!(chunk >= size + align + ARENA_OVERHEAD_BYTES);
                assert!(chunk < size + align + ARENA_OVERHEAD_BYTES + 4096 || chunk == CHUNK_BYTES);
            }
        }
        // The largest layout Rust allows still gets a (huge) chunk, never a wrapped one:
        // the kernel refuses it with ENOMEM and the allocation fails.
        let huge = Layout::from_size_align(isize::MAX as usize - 8192, 1).unwrap();
        assert!(chunk_for(huge).unwrap() >= huge.size());
    }

    /// The allocator logic over ordinary host memory: a talc with arenas claimed by hand
    /// serves, frees and reuses allocations across several arenas.
    #[test]
    fn talc_serves_allocations_across_claimed_arenas() {
        extern crate std;
        use std::vec::Vec;
        let mut arenas: Vec<Vec<u8>> = (0..3).map(|_| std::vec![0u8; CHUNK_BYTES]).collect();
        let mut talc = Talc::new(talc::ErrOnOom);
        for arena in &mut arenas {
            // SAFETY: each arena is a live host buffer used only by this talc in this test.
            unsafe { talc.claim(Span::from_base_size(arena.as_mut_ptr(), arena.len())) }.unwrap();
        }
        let layout = Layout::from_size_align(20_000, 16).unwrap();
        let mut blocks = Vec::new();
        // Three arenas of 64 KiB hold at least six 20 KB blocks, and not forty.
        // SAFETY: every pointer is freed exactly once below with its layout.
        while let Ok(ptr) = unsafe { talc.malloc(layout) } {
            assert_eq!(ptr.as_ptr() as usize % 16, 0);
            blocks.push(ptr);
            assert!(
                blocks.len() < 40,
                "talc handed out more memory than it was given"
            );
        }
        assert!(blocks.len() >= 6, "only {} blocks", blocks.len());
        for ptr in blocks.drain(..) {
            // SAFETY: allocated above with this layout, freed once.
            unsafe { talc.free(ptr, layout) };
        }
        // SAFETY: as above.
        let again = unsafe { talc.malloc(layout) }.expect("freed memory is reused");
        // SAFETY: as above.
        unsafe { talc.free(again, layout) };
    }
}
