//! Memory management: the physical-frame allocator, the kernel heap, and the bootloader's
//! window onto all of physical memory (`phys_to_virt`).
//!
//! Boot order: [`init`] reads the bootloader's memory map, carves the heap out of the
//! largest usable region (contiguous, so the heap needs no page-table work), and threads
//! every other usable frame onto the free list.

pub mod address_space;
pub mod dma;
pub mod frames;
pub mod heap;

use bootloader_api::info::{MemoryRegionKind, MemoryRegions};
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::heap_plan::{self, NoRoomForHeap};
use x86_64::registers::control::Cr3;
use x86_64::structures::paging::{OffsetPageTable, PageTable, Translate};
use x86_64::VirtAddr;

/// Page and frame size.
pub const PAGE_BYTES: u64 = 4096;

static PHYS_OFFSET: AtomicU64 = AtomicU64::new(0);

/// Why memory could not be set up.
#[derive(Debug)]
pub enum MmError {
    /// The bootloader did not map physical memory (a boot-config bug).
    NoPhysicalMapping,
    /// No usable region holds even the smallest heap (a machine-size fact: too little RAM,
    /// or the firmware fragmented it).
    NoRoomForHeap(NoRoomForHeap),
}

impl core::fmt::Display for MmError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            MmError::NoPhysicalMapping => {
                write!(f, "the bootloader did not map physical memory")
            }
            MmError::NoRoomForHeap(NoRoomForHeap {
                min_bytes,
                largest_usable_bytes,
                usable_bytes,
            }) => write!(
                f,
                "no room for the kernel heap: it needs {} KiB of contiguous RAM, the largest \
                 usable run in the memory map is {} KiB ({} KiB usable in all); give the \
                 machine more memory",
                min_bytes / 1024,
                largest_usable_bytes / 1024,
                usable_bytes / 1024
            ),
        }
    }
}

/// The virtual address at which physical address `phys` is mapped.
pub fn phys_to_virt(phys: u64) -> u64 {
    let offset = PHYS_OFFSET.load(Ordering::Relaxed);
    debug_assert!(offset != 0, "phys_to_virt before mm::init");
    offset + phys
}

/// Sets up frames and heap. Returns the heap size chosen, in bytes.
pub fn init(phys_offset: Option<u64>, regions: &'static MemoryRegions) -> Result<u64, MmError> {
    let offset = phys_offset.ok_or(MmError::NoPhysicalMapping)?;
    PHYS_OFFSET.store(offset, Ordering::Relaxed);
    address_space::record_kernel_cr3();
    // The heap shrinks to fit the largest usable run rather than refusing to boot (OVMF at
    // 64 MiB offers ~12 MiB of a ~14 MiB wish); kcore::heap_plan has the rule and its tests.
    let usable = regions
        .iter()
        .filter(|r| r.kind == MemoryRegionKind::Usable)
        .map(|r| (r.start, r.end));
    let plan = heap_plan::plan(usable).map_err(MmError::NoRoomForHeap)?;
    if plan.bytes < plan.wanted_bytes {
        log::info!(
            "mm: heap {} KiB (wanted {} KiB): the largest usable run is {} KiB",
            plan.bytes / 1024,
            plan.wanted_bytes / 1024,
            plan.largest_run_bytes / 1024
        );
    }
    let (heap_start, heap_bytes) = (plan.start, plan.bytes);
    heap::init(phys_to_virt(heap_start), heap_bytes);
    let heap_range = heap_start..heap_start + heap_bytes;
    for region in regions
        .iter()
        .filter(|r| r.kind == MemoryRegionKind::Usable)
    {
        let mut frame = align_up(region.start, PAGE_BYTES).max(PAGE_BYTES);
        while frame + PAGE_BYTES <= region.end {
            if !heap_range.contains(&frame) {
                frames::add_free(frame);
            }
            frame += PAGE_BYTES;
        }
    }
    frames::mark_boot_complete();
    dma::init();
    crate::arch::backtrace::set_readable_probe(is_mapped);
    Ok(heap_bytes)
}

fn align_up(value: u64, align: u64) -> u64 {
    debug_assert!(align.is_power_of_two());
    (value + align - 1) & !(align - 1)
}

/// The active page tables, as an `OffsetPageTable` over the physical window.
///
/// # Safety
/// The caller must not create a second live mutable view of the same tables.
pub unsafe fn active_page_table() -> OffsetPageTable<'static> {
    let (frame, _) = Cr3::read();
    let table = phys_to_virt(frame.start_address().as_u64()) as *mut PageTable;
    let offset = VirtAddr::new(PHYS_OFFSET.load(Ordering::Relaxed));
    // SAFETY: CR3 names the live top-level table, reachable through the physical window;
    // exclusivity is the caller's obligation.
    unsafe { OffsetPageTable::new(&mut *table, offset) }
}

/// Whether a kernel virtual address is currently mapped (for the fault backtrace).
pub fn is_mapped(addr: u64) -> bool {
    let Ok(virt) = VirtAddr::try_new(addr) else {
        return false;
    };
    // SAFETY: the view is used read-only for one translation, inside a fault or panic path
    // where nothing else is editing page tables.
    let table = unsafe { active_page_table() };
    table.translate_addr(virt).is_some()
}
