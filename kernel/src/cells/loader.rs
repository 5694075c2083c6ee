//! Loading a payload into a fresh address space.
//!
//! Every payload is validated once (`cell::elf`, which rejects anything malformed with a
//! typed error) and its read-only segments (text, rodata) are built once into frames the
//! **image cache** keeps for the kernel's lifetime ([`prepare`], at boot). A cell then maps
//! those frames shared and read-only (W^X: they are never writable), and gets private
//! zeroed frames only for its writable segments (data, bss) and its stack. This is what
//! makes a spawn cheap:
//! - no ELF parse, no zeroing or copying of text per spawn;
//! - under TCG, no code frames are ever freed and reused: zeroing a frame that held code
//!   QEMU had translated forces it to invalidate those translations, which `bench cells`
//!   showed costing 200–1,800 µs per page when a dead cell's text frames were recycled into
//!   the next cell's stack; and translated code survives across cells of one payload.
//!
//! Shared frames are not charged to the cell (`AddressSpace::frames_held` counts only what
//! the space owns), like a shared library's text on Linux.

use ::cell::abi;
use ::cell::elf::{self, ElfError, LoadPlan};
use alloc::vec::Vec;
use spin::Mutex;

use super::SpawnStage;
use crate::arch::cpu::without_interrupts;
use crate::mm::address_space::{AddressSpace, PagePerm, SpaceError};
use crate::mm::frames::{self, StaticFrame};
use crate::mm::PAGE_BYTES;

/// A loaded program, ready to enter.
pub struct Loaded {
    pub space: AddressSpace,
    pub entry: u64,
    pub stack_top: u64,
}

/// Why a payload could not be loaded.
#[derive(Debug)]
pub enum LoadError {
    #[allow(dead_code, reason = "read through Debug in the error message")]
    Elf(ElfError),
    #[allow(dead_code, reason = "read through Debug in the error message")]
    Memory(SpaceError),
    /// The image cache could not get frames for the shared text.
    NoFramesForImage,
}

impl From<SpaceError> for LoadError {
    fn from(e: SpaceError) -> Self {
        LoadError::Memory(e)
    }
}

/// One payload, validated, with its read-only pages built.
struct CachedImage {
    name: &'static str,
    plan: LoadPlan,
    /// `(vaddr, frame, perm)` of every read-only page, in address order.
    shared: Vec<(u64, StaticFrame, PagePerm)>,
}

/// Payloads prepared so far. Entries are never removed (their frames are mapped by cells).
static CACHE: Mutex<Vec<CachedImage>> = Mutex::new(Vec::new());

fn perm_of(segment: &elf::Segment) -> PagePerm {
    match (segment.flags.write, segment.flags.execute) {
        (true, _) => PagePerm::ReadWrite,
        (false, true) => PagePerm::ReadExecute,
        (false, false) => PagePerm::ReadOnly,
    }
}

/// The bytes of page `page` (a page-aligned address) of `segment`: the part of the file
/// range that falls in it, and its offset in the page.
fn page_bytes<'a>(segment: &elf::Segment, file: &'a [u8], page: u64) -> (usize, &'a [u8]) {
    let start = segment.vaddr.max(page);
    let end = (segment.vaddr + file.len() as u64).min(page + PAGE_BYTES);
    if start >= end {
        return (0, &[]);
    }
    let from = (start - segment.vaddr) as usize;
    let to = (end - segment.vaddr) as usize;
    ((start - page) as usize, &file[from..to])
}

/// Validates `image` and builds its read-only pages into the cache (once per payload; a
/// later call for the same name does nothing). Called at boot for every payload.
pub fn prepare(name: &'static str, image: &[u8]) -> Result<(), LoadError> {
    if without_interrupts(|| CACHE.lock().iter().any(|c| c.name == name)) {
        return Ok(());
    }
    let plan = elf::parse(image).map_err(LoadError::Elf)?;
    let mut shared = Vec::new();
    for (index, segment) in plan.segments.iter().enumerate() {
        let perm = perm_of(segment);
        if perm == PagePerm::ReadWrite {
            continue;
        }
        // parse() already checked the file range; a None here would be a validator bug.
        let file = segment
            .file_bytes(image)
            .ok_or(LoadError::Elf(ElfError::SegmentOutsideFile { index }))?;
        let mut page = segment.page_start();
        while page < segment.page_end() {
            let (offset, bytes) = page_bytes(segment, file, page);
            let frame = frames::alloc_static(offset, bytes).ok_or(LoadError::NoFramesForImage)?;
            shared.push((page, frame, perm));
            page += PAGE_BYTES;
        }
    }
    without_interrupts(|| CACHE.lock().push(CachedImage { name, plan, shared }));
    Ok(())
}

/// Builds an address space running payload `name` (prepared with [`prepare`]).
pub fn load(name: &str, image: &[u8]) -> Result<Loaded, LoadError> {
    // Map the shared pages and copy out what the rest needs (the entry and the writable
    // segments, plain values) under the cache's lock: no heap copy of the plan per spawn.
    let mut writable = [None; abi::MAX_LOAD_SEGMENTS];
    let (mut space, entry) = without_interrupts(|| {
        let cache = CACHE.lock();
        let cached = cache
            .iter()
            .find(|c| c.name == name)
            .ok_or(LoadError::NoFramesForImage)?;
        super::stamp(SpawnStage::Parsed);
        let mut space = AddressSpace::new()?;
        super::stamp(SpawnStage::SpaceReady);
        for &(vaddr, frame, perm) in &cached.shared {
            space.map_shared(vaddr, frame, perm)?;
        }
        let segments = cached.plan.segments.iter().enumerate();
        for (slot, (index, segment)) in writable.iter_mut().zip(segments) {
            if perm_of(segment) == PagePerm::ReadWrite {
                *slot = Some((index, *segment));
            }
        }
        Ok::<_, LoadError>((space, cached.plan.entry))
    })?;
    for &(index, segment) in writable.iter().flatten() {
        let mut page = segment.page_start();
        while page < segment.page_end() {
            space.map_zeroed(page, PagePerm::ReadWrite)?;
            page += PAGE_BYTES;
        }
        let bytes = segment
            .file_bytes(image)
            .ok_or(LoadError::Elf(ElfError::SegmentOutsideFile { index }))?;
        space.fill(segment.vaddr, bytes)?;
    }
    super::stamp(SpawnStage::SegmentsMapped);
    let stack_bottom = abi::USER_STACK_TOP - abi::USER_STACK_BYTES;
    let mut page = stack_bottom;
    while page < abi::USER_STACK_TOP {
        space.map_zeroed(page, PagePerm::ReadWrite)?;
        page += PAGE_BYTES;
    }
    super::stamp(SpawnStage::StackMapped);
    Ok(Loaded {
        space,
        entry,
        stack_top: abi::USER_STACK_TOP,
    })
}
