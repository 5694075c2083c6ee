//! The physical-frame allocator: an intrusive free list threaded through the free frames
//! themselves (each free frame's first word holds the next one's address), so it needs no
//! memory of its own and both allocation and free are O(1).
//!
//! Two lists: frames as they were freed, and frames the idle task already zeroed
//! ([`prezero_one`], at most [`prezeroed_target`]). [`alloc_zeroed`] takes a pre-zeroed frame
//! when there is one (clearing only its link word), so starting a cell does not pay for
//! zeroing its data, bss and stack pages; it zeroes a frame itself otherwise. Zeroing at idle
//! also moves TCG's translation flushes (zeroing a frame that held code) off the spawn path.
//!
//! The free-frame count is an atomic that any context — including interrupt handlers and
//! the shell — can read without taking the lock (a "ground truth" signal for the control
//! plane). Interrupts are masked while the lock is held, so an interrupt handler that frees
//! a frame cannot deadlock against the code it interrupted.

use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::events::{self, EventKind};
use spin::Mutex;

use super::{phys_to_virt, PAGE_BYTES};
use crate::arch::cpu::without_interrupts;

struct FreeList {
    /// Freed frames, contents unknown.
    head: u64,
    /// Zeroed frames (all but their first word, the link).
    zeroed_head: u64,
    /// Frames on the zeroed list.
    zeroed: u64,
}

static FREE_LIST: Mutex<FreeList> = Mutex::new(FreeList {
    head: 0,
    zeroed_head: 0,
    zeroed: 0,
});
static FREE_FRAMES: AtomicU64 = AtomicU64::new(0);
static TOTAL_FRAMES: AtomicU64 = AtomicU64::new(0);
static BOOT_DONE: AtomicBool = AtomicBool::new(false);
/// Set while free frames are below the low watermark (so each crossing is one event).
static PRESSURE: AtomicBool = AtomicBool::new(false);

/// A 4 KiB physical frame, by its start address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Frame(u64);

impl Frame {
    /// The frame's physical start address.
    pub fn addr(self) -> u64 {
        self.0
    }

    /// The frame at `addr` (page-aligned), for code that found it in a page table it owns.
    pub(super) fn from_addr(addr: u64) -> Frame {
        assert!(
            addr != 0 && addr.is_multiple_of(PAGE_BYTES),
            "bad frame address {addr:#x}"
        );
        Frame(addr)
    }
}

/// Adds a usable frame at boot.
pub(super) fn add_free(addr: u64) {
    assert!(
        !BOOT_DONE.load(Ordering::Relaxed),
        "frames are added only while booting"
    );
    push(addr);
    TOTAL_FRAMES.fetch_add(1, Ordering::Relaxed);
}

pub(super) fn mark_boot_complete() {
    BOOT_DONE.store(true, Ordering::Relaxed);
}

fn push(addr: u64) {
    assert!(
        addr != 0 && addr.is_multiple_of(PAGE_BYTES),
        "bad frame address {addr:#x}"
    );
    without_interrupts(|| {
        let mut list = FREE_LIST.lock();
        // SAFETY: `addr` is a free frame owned by the allocator, mapped through the
        // physical window; its first word is ours to use as the link.
        unsafe { core::ptr::write(phys_to_virt(addr) as *mut u64, list.head) };
        list.head = addr;
        FREE_FRAMES.fetch_add(1, Ordering::Relaxed);
    });
}

/// Allocates one zeroed frame, or `None` when memory is exhausted.
pub fn alloc_zeroed() -> Option<Frame> {
    let (addr, prezeroed) = without_interrupts(|| {
        let mut list = FREE_LIST.lock();
        if list.zeroed_head != 0 {
            let addr = list.zeroed_head;
            // SAFETY: the zeroed list's head is a free frame whose first word is the next
            // link and whose other words are zero; clearing the link makes all of it zero.
            unsafe {
                list.zeroed_head = core::ptr::read(phys_to_virt(addr) as *const u64);
                core::ptr::write(phys_to_virt(addr) as *mut u64, 0);
            }
            list.zeroed -= 1;
            FREE_FRAMES.fetch_sub(1, Ordering::Relaxed);
            return Some((addr, true));
        }
        let addr = list.head;
        if addr == 0 {
            return None;
        }
        // SAFETY: the head is a free frame whose first word is the next link.
        list.head = unsafe { core::ptr::read(phys_to_virt(addr) as *const u64) };
        FREE_FRAMES.fetch_sub(1, Ordering::Relaxed);
        Some((addr, false))
    })?;
    if !prezeroed {
        zero_frame(addr);
    }
    check_pressure();
    Some(Frame(addr))
}

/// Most frames kept zeroed ahead of use: an eighth of all frames, at most 1,024 (4 MiB),
/// enough for several cells' starts.
pub fn prezeroed_target() -> u64 {
    (total_frames() / 8).min(1024)
}

/// Zeroes one freed frame for later [`alloc_zeroed`] calls, if fewer than
/// [`prezeroed_target`] are ready; returns whether it did. The idle task calls it before
/// halting, one frame at a time (interrupts are masked for the one frame, ~2 µs under TCG).
pub fn prezero_one() -> bool {
    let target = prezeroed_target();
    without_interrupts(|| {
        let mut list = FREE_LIST.lock();
        let addr = list.head;
        if addr == 0 || list.zeroed >= target {
            return false;
        }
        // SAFETY: the head is a free frame whose first word is the next link; it is off
        // both lists while it is zeroed (the lock is held throughout), then linked into the
        // zeroed list through its first word.
        unsafe {
            list.head = core::ptr::read(phys_to_virt(addr) as *const u64);
            zero_frame(addr);
            core::ptr::write(phys_to_virt(addr) as *mut u64, list.zeroed_head);
        }
        list.zeroed_head = addr;
        list.zeroed += 1;
        true
    })
}

/// Frames zeroed ahead of use right now (for tests).
#[cfg(feature = "ktest")]
pub fn prezeroed() -> u64 {
    without_interrupts(|| FREE_LIST.lock().zeroed)
}

/// A frame that is never freed and never written after it was filled: what address spaces
/// may map shared (the image cache's text). Only [`alloc_static`] makes one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaticFrame(Frame);

impl StaticFrame {
    /// The frame's physical address.
    pub fn addr(self) -> u64 {
        self.0.addr()
    }
}

/// Allocates a frame holding `bytes` at `offset` (zeroes elsewhere), for the kernel's
/// lifetime. `None` when memory is exhausted or the bytes do not fit the frame.
pub fn alloc_static(offset: usize, bytes: &[u8]) -> Option<StaticFrame> {
    alloc_filled(offset, bytes).map(StaticFrame)
}

/// Allocates a zeroed frame and copies `bytes` into it at `offset`. `None` when memory is
/// exhausted or the bytes do not fit the frame.
fn alloc_filled(offset: usize, bytes: &[u8]) -> Option<Frame> {
    if offset.checked_add(bytes.len())? > PAGE_BYTES as usize {
        return None;
    }
    let frame = alloc_zeroed()?;
    // SAFETY: the frame was just allocated, so nothing else references it, and
    // `offset + bytes.len()` lies within it (checked above).
    unsafe {
        core::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (phys_to_virt(frame.addr()) as *mut u8).add(offset),
            bytes.len(),
        )
    };
    Some(frame)
}

/// Zeroes one frame with `rep stosq`: 512 eight-byte stores. `write_bytes` compiles to
/// `rep stosb` (4096 one-byte steps), which TCG emulates step by step; measured in
/// `bench-cells`, eight-byte stores make zeroing several times faster there, and zeroing is
/// most of mapping a page.
fn zero_frame(addr: u64) {
    let words = PAGE_BYTES / 8;
    // SAFETY: the frame was just taken off the free list, so nothing else references it; it
    // is mapped writable through the physical window and page-aligned, so the 512 aligned
    // eight-byte stores stay inside it. DF is clear (the ABI guarantees it in Rust code).
    unsafe {
        core::arch::asm!(
            "rep stosq",
            inout("rdi") phys_to_virt(addr) => _,
            inout("rcx") words => _,
            in("rax") 0u64,
            options(nostack, preserves_flags)
        );
    }
}

/// Below this many free frames (5 % of all, at least 64) memory is low.
fn low_watermark() -> u64 {
    (total_frames() / 20).max(64)
}

/// Memory is fine again above this (10 %): the gap keeps a workload hovering at the
/// line from producing an event storm.
fn high_watermark() -> u64 {
    (total_frames() / 10).max(128)
}

/// Emits `memory_low` / `memory_ok` when free frames cross the watermarks.
fn check_pressure() {
    let free = free_frames();
    if !PRESSURE.load(Ordering::Relaxed) && free < low_watermark() {
        if !PRESSURE.swap(true, Ordering::Relaxed) {
            events::push(EventKind::MemoryLow { free_frames: free });
        }
    } else if PRESSURE.load(Ordering::Relaxed)
        && free > high_watermark()
        && PRESSURE.swap(false, Ordering::Relaxed)
    {
        events::push(EventKind::MemoryOk { free_frames: free });
    }
}

/// Returns a frame to the allocator.
///
/// # Safety
/// The frame must have come from [`alloc_zeroed`], must not be freed twice, and nothing may
/// use it afterwards.
pub unsafe fn free(frame: Frame) {
    push(frame.0);
    check_pressure();
}

/// A frame owned by its holder and returned to the allocator when dropped.
#[cfg(feature = "ktest")]
pub struct OwnedFrame(Frame);

#[cfg(feature = "ktest")]
impl OwnedFrame {
    /// Allocates one zeroed frame.
    pub fn alloc() -> Option<OwnedFrame> {
        alloc_zeroed().map(OwnedFrame)
    }

    /// The frame's physical address.
    pub fn addr(&self) -> u64 {
        self.0.addr()
    }

    /// Fills the frame with `byte` (to dirty it for tests).
    pub fn fill(&mut self, byte: u8) {
        // SAFETY: this value owns the frame; it is mapped writable through the physical
        // window and 4 KiB long.
        unsafe { core::ptr::write_bytes(phys_to_virt(self.0.addr()) as *mut u8, byte, 4096) };
    }

    /// Whether every byte of the frame is zero.
    pub fn is_zero(&self) -> bool {
        // SAFETY: this value owns the frame; it is mapped through the physical window and
        // 4 KiB long, and nothing else writes it while it is borrowed here.
        let bytes =
            unsafe { core::slice::from_raw_parts(phys_to_virt(self.0.addr()) as *const u8, 4096) };
        bytes.iter().all(|&b| b == 0)
    }
}

#[cfg(feature = "ktest")]
impl Drop for OwnedFrame {
    fn drop(&mut self) {
        // SAFETY: the frame came from `alloc_zeroed`, is owned only by this value (it cannot
        // be cloned), and is freed exactly once, here.
        unsafe { free(self.0) };
    }
}

/// Frames currently free. Lock-free; safe from any context.
pub fn free_frames() -> u64 {
    FREE_FRAMES.load(Ordering::Relaxed)
}

/// Frames the allocator manages (everything usable except the heap).
pub fn total_frames() -> u64 {
    TOTAL_FRAMES.load(Ordering::Relaxed)
}
