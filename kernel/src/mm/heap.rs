//! The kernel heap: `linked_list_allocator` over one contiguous block of physical memory,
//! reached through the physical window. Interrupts are masked while it is locked, so
//! interrupt handlers may allocate (sparingly).

use core::alloc::{GlobalAlloc, Layout};
use core::sync::atomic::{AtomicU64, Ordering};
use linked_list_allocator::Heap;
use spin::Mutex;

use crate::arch::cpu::without_interrupts;

struct KernelHeap {
    heap: Mutex<Heap>,
}

#[global_allocator]
static ALLOCATOR: KernelHeap = KernelHeap {
    heap: Mutex::new(Heap::empty()),
};
static HEAP_BYTES: AtomicU64 = AtomicU64::new(0);

pub(super) fn init(virt_start: u64, bytes: u64) {
    without_interrupts(|| {
        // SAFETY: the block is usable RAM reserved for the heap alone by mm::init, mapped
        // through the physical window, and init runs once.
        unsafe {
            ALLOCATOR
                .heap
                .lock()
                .init(virt_start as *mut u8, bytes as usize)
        };
    });
    HEAP_BYTES.store(bytes, Ordering::Relaxed);
}

// SAFETY: allocation and deallocation are delegated to linked_list_allocator under a lock
// (with interrupts masked), which upholds GlobalAlloc's contract.
unsafe impl GlobalAlloc for KernelHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        without_interrupts(|| {
            self.heap
                .lock()
                .allocate_first_fit(layout)
                .map_or(core::ptr::null_mut(), |p| p.as_ptr())
        })
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        let Some(ptr) = core::ptr::NonNull::new(ptr) else {
            return;
        };
        // SAFETY: GlobalAlloc's contract: `ptr` came from `alloc` with this layout.
        without_interrupts(|| unsafe { self.heap.lock().deallocate(ptr, layout) });
    }
}

/// Heap bytes in use and in total.
pub fn usage() -> (u64, u64) {
    let used = without_interrupts(|| ALLOCATOR.heap.lock().used()) as u64;
    (used, HEAP_BYTES.load(Ordering::Relaxed))
}
