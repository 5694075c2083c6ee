//! Cell address spaces: a private lower half over a shared kernel half.
//!
//! An [`AddressSpace`] owns its top-level table, every page-table frame under its lower
//! half and every data frame mapped there; dropping it returns all of them (Theseus'
//! `MappedPages` idea). It cannot be cloned. The kernel half (PML4 entries 256..512) is
//! copied from the kernel's own table at creation and never freed here. The page tables
//! themselves are the record of what the space owns: drop walks the lower half and frees
//! every present entry, so mapping a page costs no bookkeeping memory, and
//! [`AddressSpace::unmap`] can give single pages back (`mem_unmap`).
//!
//! User memory is reached only through [`AddressSpace::copy_from_user`] and
//! [`AddressSpace::copy_to_user`], which walk this space's page tables in software and
//! check present/user/writable at every level. The kernel therefore never touches a user
//! pointer directly, never faults on one, and a bad pointer is just `Err(BadUserAccess)`
//! (EFAULT at the syscall boundary).

use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use x86_64::registers::control::{Cr3, Cr3Flags};
use x86_64::structures::paging::{
    FrameAllocator, Mapper, OffsetPageTable, Page, PageTable, PageTableFlags, PhysFrame, Size4KiB,
};
use x86_64::{PhysAddr, VirtAddr};

use super::frames::{self, Frame, StaticFrame};
use super::{phys_to_virt, PAGE_BYTES};

/// First address of the kernel half.
const KERNEL_HALF: u64 = 0xffff_8000_0000_0000;
/// A page-table entry bit the CPU ignores (one of bits 9..11, "available to software"):
/// set on leaf entries that map a frame this space does not own ([`AddressSpace::map_shared`]),
/// so dropping the space leaves that frame alone.
const SHARED: PageTableFlags = PageTableFlags::BIT_9;
const USER_TOP: u64 = 0x0000_8000_0000_0000;

/// The kernel's own top-level table (the bootloader's), loaded for kernel tasks.
static KERNEL_CR3: AtomicU64 = AtomicU64::new(0);

/// Records the boot page table as the kernel's. Called once by mm::init.
pub(super) fn record_kernel_cr3() {
    KERNEL_CR3.store(Cr3::read().0.start_address().as_u64(), Ordering::Relaxed);
}

/// The kernel's top-level table (physical address).
pub fn kernel_cr3() -> u64 {
    KERNEL_CR3.load(Ordering::Relaxed)
}

/// Loads `cr3` (a top-level table's physical address) if it is not already loaded.
///
/// # Safety
///
/// `cr3` must be [`kernel_cr3`] or the [`AddressSpace::cr3`] of a space that stays alive for
/// as long as it may be loaded (its owner frees it only once no task can run on it again).
/// Every such table maps the kernel half identically, so the caller's code and stack stay
/// mapped across the write.
pub unsafe fn activate(cr3: u64) {
    assert!(
        cr3 != 0 && cr3.is_multiple_of(PAGE_BYTES),
        "bad CR3 {cr3:#x}"
    );
    let (current, flags) = Cr3::read();
    if current.start_address().as_u64() != cr3 {
        let frame = PhysFrame::containing_address(PhysAddr::new(cr3));
        // SAFETY: the caller guarantees `cr3` is the kernel's table or a live AddressSpace's
        // (this function's contract), and every such table maps the kernel half identically,
        // so the code doing this write (and its stack) stays mapped across it.
        unsafe { Cr3::write(frame, flags | Cr3Flags::empty()) };
    }
}

/// Why a mapping or a user-memory access failed.
#[derive(Debug, PartialEq, Eq)]
pub enum SpaceError {
    /// No free frames.
    OutOfFrames,
    /// The address is not page-aligned, or not in the user half.
    BadAddress(u64),
    /// The page is already mapped.
    AlreadyMapped(u64),
    /// A user pointer that is unmapped, not user-accessible, not writable when written,
    /// or overflows.
    BadUserAccess { addr: u64, len: u64 },
}

/// Permissions of a user page. Writable and executable never both (W^X). The shared `Read`
/// prefix is the point: every user page is readable.
#[allow(clippy::enum_variant_names)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PagePerm {
    ReadOnly,
    ReadWrite,
    ReadExecute,
}

/// A cell's address space. See the module docs.
pub struct AddressSpace {
    pml4: Frame,
    /// Page-table frames below the PML4 (PDPTs, PDs, PTs).
    table_frames: u64,
    /// Data frames mapped in the lower half.
    data_frames: u64,
}

/// Hands the mapper fresh zeroed frames for new page tables and counts them; the space
/// frees them on drop by walking its tables.
struct Counting<'a>(&'a mut u64);

// SAFETY: hands out frames freshly taken from the frame allocator (zeroed, owned by nobody
// else); the mapper links each into this space's tables, which the drop walk frees.
unsafe impl FrameAllocator<Size4KiB> for Counting<'_> {
    fn allocate_frame(&mut self) -> Option<PhysFrame> {
        let frame = frames::alloc_zeroed()?;
        *self.0 += 1;
        Some(PhysFrame::containing_address(PhysAddr::new(frame.addr())))
    }
}

impl AddressSpace {
    /// An empty user half over the kernel half.
    pub fn new() -> Result<AddressSpace, SpaceError> {
        let pml4 = frames::alloc_zeroed().ok_or(SpaceError::OutOfFrames)?;
        let kernel = phys_to_virt(kernel_cr3()) as *const PageTable;
        let new = phys_to_virt(pml4.addr()) as *mut PageTable;
        // SAFETY: both point at whole page tables through the physical window; the new one
        // was just allocated and is referenced by nothing else; the kernel's is only read.
        unsafe {
            let (new, kernel) = (&mut *new, &*kernel);
            for i in 256..512 {
                new[i] = kernel[i].clone();
            }
        }
        Ok(AddressSpace {
            pml4,
            table_frames: 0,
            data_frames: 0,
        })
    }

    /// The physical address to load into CR3.
    pub fn cr3(&self) -> u64 {
        self.pml4.addr()
    }

    /// Frames this space holds (tables and data, plus the PML4).
    pub fn frames_held(&self) -> u64 {
        self.table_frames + self.data_frames + 1
    }

    fn mapper(&mut self) -> OffsetPageTable<'_> {
        let table = phys_to_virt(self.pml4.addr()) as *mut PageTable;
        // SAFETY: the PML4 is owned by this space and reached through the physical window;
        // `&mut self` makes this the only live view of it.
        unsafe { OffsetPageTable::new(&mut *table, VirtAddr::new(phys_to_virt(0))) }
    }

    /// Maps a fresh zeroed page at user address `vaddr` with `perm`.
    pub fn map_zeroed(&mut self, vaddr: u64, perm: PagePerm) -> Result<(), SpaceError> {
        let data = frames::alloc_zeroed().ok_or(SpaceError::OutOfFrames)?;
        self.map_frame(vaddr, data, perm).inspect_err(|_| {
            // SAFETY: the frame was just allocated and was not linked into any table.
            unsafe { frames::free(data) }
        })
    }

    /// Links `data` (a frame from `frames::alloc_zeroed`, now owned by this space) at
    /// `vaddr`. On error the frame is not linked and stays the caller's.
    fn map_frame(&mut self, vaddr: u64, data: Frame, perm: PagePerm) -> Result<(), SpaceError> {
        if !vaddr.is_multiple_of(PAGE_BYTES) || vaddr >= USER_TOP {
            return Err(SpaceError::BadAddress(vaddr));
        }
        let mut flags = PageTableFlags::PRESENT | PageTableFlags::USER_ACCESSIBLE;
        match perm {
            PagePerm::ReadOnly => flags |= PageTableFlags::NO_EXECUTE,
            PagePerm::ReadWrite => flags |= PageTableFlags::WRITABLE | PageTableFlags::NO_EXECUTE,
            PagePerm::ReadExecute => {}
        }
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(vaddr));
        let frame = PhysFrame::containing_address(PhysAddr::new(data.addr()));
        let mut table_frames = self.table_frames;
        let result = {
            let mut mapper = self.mapper();
            // SAFETY: the frame is fresh and owned by this space; the page is in the user
            // half of a table no CPU may be using for kernel memory.
            unsafe { mapper.map_to(page, frame, flags, &mut Counting(&mut table_frames)) }
        };
        self.table_frames = table_frames;
        match result {
            // Not the active table (or, if it is, the page was unmapped): nothing to flush.
            Ok(flush) => {
                flush.ignore();
                self.data_frames += 1;
                Ok(())
            }
            Err(x86_64::structures::paging::mapper::MapToError::PageAlreadyMapped(_)) => {
                Err(SpaceError::AlreadyMapped(vaddr))
            }
            Err(_) => Err(SpaceError::OutOfFrames),
        }
    }

    /// Maps `frame`, which this space does not own, read-only or read-execute at `vaddr`
    /// (the image cache's shared text, `cells::loader`). The entry is marked [`SHARED`], so
    /// drop and `unmap` never free the frame, and no write through a space reaches it; it is
    /// not counted in [`Self::frames_held`]. A [`StaticFrame`] lives as long as the kernel.
    pub fn map_shared(
        &mut self,
        vaddr: u64,
        frame: StaticFrame,
        perm: PagePerm,
    ) -> Result<(), SpaceError> {
        if !vaddr.is_multiple_of(PAGE_BYTES) || vaddr >= USER_TOP || perm == PagePerm::ReadWrite {
            return Err(SpaceError::BadAddress(vaddr));
        }
        let mut flags = PageTableFlags::PRESENT | PageTableFlags::USER_ACCESSIBLE | SHARED;
        if perm == PagePerm::ReadOnly {
            flags |= PageTableFlags::NO_EXECUTE;
        }
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(vaddr));
        let phys = PhysFrame::containing_address(PhysAddr::new(frame.addr()));
        let mut table_frames = self.table_frames;
        let result = {
            let mut mapper = self.mapper();
            // SAFETY: a StaticFrame is never freed, so it outlives the mapping, and it is
            // mapped without write access, so no cell can change what other cells see.
            unsafe { mapper.map_to(page, phys, flags, &mut Counting(&mut table_frames)) }
        };
        self.table_frames = table_frames;
        match result {
            Ok(flush) => {
                flush.ignore();
                Ok(())
            }
            Err(x86_64::structures::paging::mapper::MapToError::PageAlreadyMapped(_)) => {
                Err(SpaceError::AlreadyMapped(vaddr))
            }
            Err(_) => Err(SpaceError::OutOfFrames),
        }
    }

    /// Unmaps the user page at `vaddr` and frees its frame. Page tables stay (they are
    /// reused by later maps and freed with the space). Flushes the TLB entry when this
    /// space is the active one.
    pub fn unmap(&mut self, vaddr: u64) -> Result<(), SpaceError> {
        if !vaddr.is_multiple_of(PAGE_BYTES) || vaddr >= USER_TOP {
            return Err(SpaceError::BadAddress(vaddr));
        }
        if self.is_shared(vaddr) {
            return Err(SpaceError::BadAddress(vaddr));
        }
        let active = Cr3::read().0.start_address().as_u64() == self.pml4.addr();
        let page = Page::<Size4KiB>::containing_address(VirtAddr::new(vaddr));
        let (frame, flush) = self
            .mapper()
            .unmap(page)
            .map_err(|_| SpaceError::BadAddress(vaddr))?;
        if active {
            flush.flush();
        } else {
            flush.ignore();
        }
        // SAFETY: the frame was mapped only here (every data frame of a space is its own),
        // and its entry is gone, so nothing refers to it any more.
        unsafe { frames::free(Frame::from_addr(frame.start_address().as_u64())) };
        self.data_frames -= 1;
        Ok(())
    }

    /// Whether `vaddr` is mapped by a [`SHARED`] entry.
    fn is_shared(&self, vaddr: u64) -> bool {
        let mut table_phys = self.pml4.addr();
        for level in (0..4).rev() {
            let index = ((vaddr >> (12 + 9 * level)) & 0x1ff) as usize;
            let table = phys_to_virt(table_phys) as *const PageTable;
            // SAFETY: as in `translate_user`: a table of this space through the window.
            let entry = unsafe { &(&*table)[index] };
            if !entry.flags().contains(PageTableFlags::PRESENT) {
                return false;
            }
            if level == 0 {
                return entry.flags().contains(SHARED);
            }
            table_phys = entry.addr().as_u64();
        }
        false
    }

    /// Finds the physical address behind a user virtual address, checking that every level
    /// is present and user-accessible (and writable, if `write`).
    fn translate_user(&self, vaddr: u64, write: bool) -> Option<u64> {
        if vaddr >= USER_TOP {
            return None;
        }
        let mut table_phys = self.pml4.addr();
        for level in (0..4).rev() {
            let index = ((vaddr >> (12 + 9 * level)) & 0x1ff) as usize;
            let table = phys_to_virt(table_phys) as *const PageTable;
            // SAFETY: `table_phys` is a page table of this space (the PML4 or a frame a
            // present entry points to), read through the physical window.
            let entry = unsafe { &(&*table)[index] };
            let flags = entry.flags();
            let required = PageTableFlags::PRESENT | PageTableFlags::USER_ACCESSIBLE;
            if !flags.contains(required) || (write && !flags.contains(PageTableFlags::WRITABLE)) {
                return None;
            }
            if flags.contains(PageTableFlags::HUGE_PAGE) {
                return None; // cells never get huge pages
            }
            table_phys = entry.addr().as_u64();
        }
        Some(table_phys + (vaddr & 0xfff))
    }

    /// Copies `len` bytes from user memory.
    pub fn copy_from_user(&self, addr: u64, len: u64) -> Result<Vec<u8>, SpaceError> {
        let mut out = Vec::new();
        out.try_reserve_exact(len as usize)
            .map_err(|_| SpaceError::BadUserAccess { addr, len })?;
        out.resize(len as usize, 0);
        self.read_user(addr, &mut out)?;
        Ok(out)
    }

    /// Fills `out` from user memory at `addr` (readable user pages only).
    pub fn read_user(&self, addr: u64, out: &mut [u8]) -> Result<(), SpaceError> {
        let len = out.len() as u64;
        let bad = SpaceError::BadUserAccess { addr, len };
        let end = addr
            .checked_add(len)
            .ok_or(SpaceError::BadUserAccess { addr, len })?;
        if end > USER_TOP || addr >= KERNEL_HALF {
            return Err(bad);
        }
        let mut done = 0u64;
        while done < len {
            let cursor = addr + done;
            let chunk = (PAGE_BYTES - cursor % PAGE_BYTES).min(len - done);
            let phys = self
                .translate_user(cursor, false)
                .ok_or(SpaceError::BadUserAccess { addr, len })?;
            // SAFETY: `phys..phys+chunk` lies within one mapped user frame of this space,
            // reached through the physical window.
            let bytes = unsafe {
                core::slice::from_raw_parts(phys_to_virt(phys) as *const u8, chunk as usize)
            };
            out[done as usize..(done + chunk) as usize].copy_from_slice(bytes);
            done += chunk;
        }
        Ok(())
    }

    /// Whether every page of `[addr, addr + len)` is mapped for the user (writable, if
    /// `write`): checked before a call consumes data it then has to copy out.
    pub fn user_accessible(&self, addr: u64, len: u64, write: bool) -> bool {
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        if end > USER_TOP {
            return false;
        }
        let mut page = addr & !(PAGE_BYTES - 1);
        while page < end {
            if self.translate_user(page, write).is_none() {
                return false;
            }
            page += PAGE_BYTES;
        }
        true
    }

    /// Copies bytes into user memory that is mapped writable for the user.
    pub fn copy_to_user(&mut self, addr: u64, data: &[u8]) -> Result<(), SpaceError> {
        self.write(addr, data, true)
    }

    /// Copies bytes into this space regardless of the user's write permission (for the
    /// loader filling read-only and executable segments).
    pub fn fill(&mut self, addr: u64, data: &[u8]) -> Result<(), SpaceError> {
        self.write(addr, data, false)
    }

    fn write(&mut self, addr: u64, data: &[u8], user_write: bool) -> Result<(), SpaceError> {
        let len = data.len() as u64;
        // Shared frames (other cells' text too) are never written through a space.
        let mut page = addr & !(PAGE_BYTES - 1);
        while page < addr.saturating_add(len) {
            if self.is_shared(page) {
                return Err(SpaceError::BadUserAccess { addr, len });
            }
            page += PAGE_BYTES;
        }
        let end = addr
            .checked_add(len)
            .ok_or(SpaceError::BadUserAccess { addr, len })?;
        if end > USER_TOP {
            return Err(SpaceError::BadUserAccess { addr, len });
        }
        let mut done = 0u64;
        while done < len {
            let cursor = addr + done;
            let chunk = (PAGE_BYTES - cursor % PAGE_BYTES).min(len - done);
            let phys = self
                .translate_user(cursor, user_write)
                .ok_or(SpaceError::BadUserAccess { addr, len })?;
            let src = &data[done as usize..(done + chunk) as usize];
            // SAFETY: the destination lies within one mapped user frame owned by this
            // space; `&mut self` means no other kernel path writes it concurrently.
            unsafe {
                core::ptr::copy_nonoverlapping(
                    src.as_ptr(),
                    phys_to_virt(phys) as *mut u8,
                    chunk as usize,
                )
            };
            done += chunk;
        }
        Ok(())
    }
}

impl Drop for AddressSpace {
    fn drop(&mut self) {
        // This space must not be the one the CPU is using (the scheduler switches CR3 away
        // from a task before anyone can drop its space).
        assert_ne!(
            Cr3::read().0.start_address().as_u64(),
            self.pml4.addr(),
            "dropping the active address space"
        );
        let freed = free_lower_half(self.pml4.addr());
        assert_eq!(
            freed,
            self.table_frames + self.data_frames,
            "address space frame count out of step with its tables"
        );
        // SAFETY: the top-level table was allocated for this space, and its lower half was
        // just emptied; its upper half only points at kernel tables, which stay.
        unsafe { frames::free(self.pml4) };
    }
}

/// Frees every frame the lower half of the top-level table at `pml4` reaches (tables and
/// data, bottom up) and returns how many. Entries 256..512 (the kernel half) are untouched.
fn free_lower_half(pml4: u64) -> u64 {
    // Levels: 3 = PML4 entries point at PDPTs, 2 = PDs, 1 = PTs, 0 = PT entries (data).
    fn walk(table_phys: u64, level: u8, entries: core::ops::Range<usize>) -> u64 {
        let table = phys_to_virt(table_phys) as *const PageTable;
        let mut freed = 0;
        for index in entries {
            // SAFETY: `table_phys` is a page table of the space being dropped, read through
            // the physical window; nothing else uses the space any more.
            let entry = unsafe { &(&*table)[index] };
            if !entry.flags().contains(PageTableFlags::PRESENT) {
                continue;
            }
            let child = entry.addr().as_u64();
            if level > 0 {
                freed += walk(child, level - 1, 0..512);
            } else if entry.flags().contains(SHARED) {
                // Shared text: the image cache owns it.
                continue;
            }
            // SAFETY: each present lower-half entry that is not shared names a frame this
            // space allocated (a table or a data page) and only it refers to; it is freed
            // once, bottom up.
            unsafe { frames::free(Frame::from_addr(child)) };
            freed += 1;
        }
        freed
    }
    walk(pml4, 3, 0..256)
}
