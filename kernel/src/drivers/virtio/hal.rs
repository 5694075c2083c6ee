//! The `virtio_drivers::Hal` implementation: DMA memory from the contiguous pool
//! (`mm::dma`), MMIO through the physical window, and buffer sharing by address
//! translation (no IOMMU and no bounce buffers: QEMU's devices see guest-physical memory).

use core::ptr::NonNull;
use virtio_drivers::{BufferDirection, Hal, PhysAddr};

use crate::mm::{self, dma};

/// The kernel's HAL for virtio-drivers.
pub struct KernelHal;

// SAFETY: dma_alloc returns zeroed, page-aligned, exclusively owned pages from the DMA pool
// (contiguous by construction); mmio_phys_to_virt returns the physical window's mapping of
// the BAR; share returns the physical address of a buffer checked to be contiguous.
unsafe impl Hal for KernelHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let Some((phys, virt)) = dma::alloc_zeroed(pages) else {
            panic!(
                "DMA pool exhausted ({pages} pages wanted, usage {:?})",
                dma::usage()
            );
        };
        (
            phys,
            NonNull::new(virt as *mut u8).expect("the physical window is never at 0"),
        )
    }

    unsafe fn dma_dealloc(paddr: PhysAddr, _vaddr: NonNull<u8>, pages: usize) -> i32 {
        dma::free(paddr, pages);
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(mm::phys_to_virt(paddr) as *mut u8).expect("the physical window is never at 0")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        let virt = buffer.as_ptr() as *mut u8 as u64;
        match dma::virt_to_phys(virt, buffer.len()) {
            Some(phys) => phys,
            None => panic!(
                "virtio buffer at {virt:#x} (+{}) is not contiguous physical memory",
                buffer.len()
            ),
        }
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {
        // Shared in place: nothing to copy back.
    }
}
