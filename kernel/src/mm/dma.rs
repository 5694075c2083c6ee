//! A small pool of physically contiguous pages for device DMA (virtqueues).
//!
//! The frame allocator is a free list, so two frames taken in a row are rarely adjacent,
//! but a virtqueue needs several contiguous pages. The heap, on the other hand, is one
//! contiguous block of physical memory seen through the physical window, so at boot
//! [`init`] takes [`POOL_PAGES`] page-aligned pages out of it, once, and hands them out
//! here by a first-fit bitmap. The pool never grows; running out is an error the caller
//! sees (`None`), never a silent fallback to non-contiguous memory.
//!
//! Key functions: [`alloc_zeroed`] / [`free`] for DMA memory, and [`virt_to_phys`] for the
//! buffers a driver shares with a device (heap or stack), checked to be contiguous.

use alloc::alloc::{alloc_zeroed as heap_alloc_zeroed, Layout};
use spin::Mutex;
use x86_64::structures::paging::Translate;
use x86_64::VirtAddr;

use super::{phys_to_virt, PAGE_BYTES, PHYS_OFFSET};
use crate::arch::cpu::without_interrupts;

/// Pages in the pool: 512 KiB, enough for a few virtqueues of 256 entries.
pub const POOL_PAGES: usize = 128;
const BITMAP_WORDS: usize = POOL_PAGES / 64;

struct Pool {
    /// Physical address of the first page.
    base_phys: u64,
    /// Bit `i` set = page `i` in use.
    used: [u64; BITMAP_WORDS],
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);

/// Reserves the pool from the (physically contiguous) heap. Call once, after the heap.
pub(super) fn init() {
    let layout = Layout::from_size_align(POOL_PAGES * PAGE_BYTES as usize, PAGE_BYTES as usize)
        .expect("valid DMA layout");
    // SAFETY: the layout has a non-zero size; the block is never freed, so it stays valid
    // (and owned by the pool) for the life of the kernel.
    let virt = unsafe { heap_alloc_zeroed(layout) } as u64;
    assert!(virt != 0, "no heap left for the DMA pool");
    let offset = PHYS_OFFSET.load(core::sync::atomic::Ordering::Relaxed);
    assert!(
        virt >= offset && virt.is_multiple_of(PAGE_BYTES),
        "DMA pool is outside the physical window"
    );
    let pool = Pool {
        base_phys: virt - offset,
        used: [0; BITMAP_WORDS],
    };
    without_interrupts(|| *POOL.lock() = Some(pool));
}

/// Allocates `pages` zeroed, physically contiguous pages. Returns (physical, virtual).
pub fn alloc_zeroed(pages: usize) -> Option<(u64, u64)> {
    assert!(
        pages > 0 && pages <= POOL_PAGES,
        "bad DMA request of {pages} pages"
    );
    let phys = without_interrupts(|| {
        let mut guard = POOL.lock();
        let pool = guard.as_mut().expect("DMA pool used before mm::init");
        let first = (0..=POOL_PAGES - pages)
            .find(|&start| (start..start + pages).all(|p| !is_used(pool, p)))?;
        for page in first..first + pages {
            set_used(pool, page, true);
        }
        Some(pool.base_phys + first as u64 * PAGE_BYTES)
    })?;
    let virt = phys_to_virt(phys);
    // SAFETY: the pages were just taken from the pool, which owns them exclusively; they
    // are mapped read-write through the physical window.
    unsafe { core::ptr::write_bytes(virt as *mut u8, 0, pages * PAGE_BYTES as usize) };
    Some((phys, virt))
}

/// Returns pages taken with [`alloc_zeroed`].
pub fn free(phys: u64, pages: usize) {
    without_interrupts(|| {
        let mut guard = POOL.lock();
        let pool = guard.as_mut().expect("DMA pool used before mm::init");
        assert!(
            phys >= pool.base_phys && (phys - pool.base_phys).is_multiple_of(PAGE_BYTES),
            "foreign DMA address {phys:#x}"
        );
        let first = ((phys - pool.base_phys) / PAGE_BYTES) as usize;
        assert!(first + pages <= POOL_PAGES, "DMA free beyond the pool");
        for page in first..first + pages {
            assert!(is_used(pool, page), "double free of DMA page {page}");
            set_used(pool, page, false);
        }
    });
}

/// Pages in use and in total.
pub fn usage() -> (usize, usize) {
    without_interrupts(|| {
        let guard = POOL.lock();
        let used = guard
            .as_ref()
            .map_or(0, |p| p.used.iter().map(|w| w.count_ones() as usize).sum());
        (used, POOL_PAGES)
    })
}

/// The physical address of a kernel buffer of `len` bytes at `virt`, if it is mapped and
/// physically contiguous (so a device can read or write it in one piece).
pub fn virt_to_phys(virt: u64, len: usize) -> Option<u64> {
    assert!(len > 0, "empty DMA buffer");
    // SAFETY: a read-only view used for translations only; nothing edits the kernel half
    // of the page tables while a driver runs.
    let table = unsafe { super::active_page_table() };
    let start = table
        .translate_addr(VirtAddr::try_new(virt).ok()?)?
        .as_u64();
    // Every page boundary inside the buffer must continue the physical run.
    let mut page = (virt & !(PAGE_BYTES - 1)) + PAGE_BYTES;
    let end = virt + len as u64;
    while page < end {
        let phys = table
            .translate_addr(VirtAddr::try_new(page).ok()?)?
            .as_u64();
        if phys != start + (page - virt) {
            return None;
        }
        page += PAGE_BYTES;
    }
    Some(start)
}

fn is_used(pool: &Pool, page: usize) -> bool {
    pool.used[page / 64] & (1 << (page % 64)) != 0
}

fn set_used(pool: &mut Pool, page: usize, used: bool) {
    if used {
        pool.used[page / 64] |= 1 << (page % 64);
    } else {
        pool.used[page / 64] &= !(1 << (page % 64));
    }
}
