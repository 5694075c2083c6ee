//! Loading a payload into a fresh address space: validate the ELF (`cell::elf`, which
//! rejects anything malformed with a typed error), map each segment with its permissions
//! (W^X: writable pages are never executable), copy the file bytes, and map the stack.

use ::cell::abi;
use ::cell::elf::{self, ElfError};

use crate::mm::address_space::{AddressSpace, PagePerm, SpaceError};
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
}

impl From<SpaceError> for LoadError {
    fn from(e: SpaceError) -> Self {
        LoadError::Memory(e)
    }
}

/// Builds an address space holding `image`.
pub fn load(image: &[u8]) -> Result<Loaded, LoadError> {
    let plan = elf::parse(image).map_err(LoadError::Elf)?;
    let mut space = AddressSpace::new()?;
    for (index, segment) in plan.segments.iter().enumerate() {
        let perm = match (segment.flags.write, segment.flags.execute) {
            (true, _) => PagePerm::ReadWrite,
            (false, true) => PagePerm::ReadExecute,
            (false, false) => PagePerm::ReadOnly,
        };
        let mut page = segment.page_start();
        while page < segment.page_end() {
            space.map_zeroed(page, perm)?;
            page += PAGE_BYTES;
        }
        // parse() already checked the file range; a None here would be a validator bug.
        let bytes = segment
            .file_bytes(image)
            .ok_or(LoadError::Elf(ElfError::SegmentOutsideFile { index }))?;
        space.fill(segment.vaddr, bytes)?;
    }
    let stack_bottom = abi::USER_STACK_TOP - abi::USER_STACK_BYTES;
    let mut page = stack_bottom;
    while page < abi::USER_STACK_TOP {
        space.map_zeroed(page, PagePerm::ReadWrite)?;
        page += PAGE_BYTES;
    }
    Ok(Loaded {
        space,
        entry: plan.entry,
        stack_top: abi::USER_STACK_TOP,
    })
}
