//! ELF64 validation for cell payloads: bytes in, a checked load plan out.
//!
//! The kernel never interprets payload bytes itself: it calls [`parse`], which checks every
//! field it reads and returns a [`LoadPlan`] (the `PT_LOAD` segments sorted by address, plus the
//! entry point) or a typed [`ElfError`]. The kernel then allocates frames for each segment's
//! pages, zeroes them, copies `file_len` bytes from `file_offset` to `vaddr`, and maps them with
//! the segment's [`SegmentFlags`]. The parser is total: it never panics and never indexes out of
//! bounds, whatever the input (a random-bytes test checks that).
//!
//! Accepted: little-endian ELF64, `ET_EXEC`, `EM_X86_64`, statically linked (no `PT_INTERP`,
//! `PT_DYNAMIC`, `PT_TLS`), 1..=[`abi::MAX_LOAD_SEGMENTS`] non-empty `PT_LOAD` segments inside
//! `[USER_CODE_BASE, USER_IMAGE_END)`, W^X per segment, no two segments sharing a page, entry
//! inside an executable segment. Format reference: System V ABI, "Object Files" (ELF header,
//! program header) and its AMD64 supplement. The rules are restated in `docs/cells.md`.

use alloc::vec::Vec;

use crate::abi;

/// Size of the ELF64 file header.
const EHDR_SIZE: usize = 64;
/// Size of one ELF64 program header.
const PHDR_SIZE: usize = 56;

const ELF_MAGIC: [u8; 4] = [0x7f, b'E', b'L', b'F'];
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EV_CURRENT: u8 = 1;
const ET_EXEC: u16 = 2;
const EM_X86_64: u16 = 62;

const PT_LOAD: u32 = 1;
const PT_DYNAMIC: u32 = 2;
const PT_INTERP: u32 = 3;
const PT_TLS: u32 = 7;

const PF_X: u32 = 1;
const PF_W: u32 = 2;
const PF_R: u32 = 4;

/// Why a payload image was refused. `index` is the program-header index of the culprit.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ElfError {
    /// Shorter than the 64-byte ELF header.
    TruncatedHeader,
    /// Does not start with `\x7fELF`.
    BadMagic,
    /// Not ELFCLASS64.
    WrongClass(u8),
    /// Not little-endian.
    WrongEndianness(u8),
    /// `e_ident[EI_VERSION]` or `e_version` is not 1.
    BadVersion,
    /// Not `ET_EXEC` (relocatable, shared object and PIE are refused).
    WrongType(u16),
    /// Not `EM_X86_64`.
    WrongMachine(u16),
    /// `e_ehsize` smaller than the ELF64 header.
    BadHeaderSize(u16),
    /// `e_phentsize` is not 56.
    BadProgramHeaderSize(u16),
    /// More than [`abi::MAX_PROGRAM_HEADERS`] program headers.
    TooManyProgramHeaders(u16),
    /// The program header table runs past the end of the file.
    TruncatedProgramHeaders,
    /// Dynamically linked (`PT_INTERP` or `PT_DYNAMIC` present).
    Dynamic,
    /// A segment type the kernel cannot honour (`PT_TLS`).
    UnsupportedSegment { index: usize, p_type: u32 },
    /// A segment's file bytes lie (partly) outside the file.
    SegmentOutsideFile { index: usize },
    /// `p_filesz > p_memsz`.
    FileszExceedsMemsz { index: usize },
    /// `p_align` is not zero or a power of two.
    BadAlignment { index: usize },
    /// `p_vaddr + p_memsz` overflows.
    AddressOverflow { index: usize },
    /// A segment reaches into the kernel (upper) half.
    SegmentInKernelHalf { index: usize },
    /// A segment lies outside `[USER_CODE_BASE, USER_IMAGE_END)`.
    SegmentOutsideUserRange { index: usize },
    /// `p_memsz` above [`abi::MAX_SEGMENT_BYTES`].
    SegmentTooLarge { index: usize },
    /// A segment is both writable and executable.
    WriteAndExecute { index: usize },
    /// Two segments share at least one page.
    OverlappingSegments { first: usize, second: usize },
    /// More than [`abi::MAX_LOAD_SEGMENTS`] loadable segments.
    TooManySegments,
    /// The page-rounded image exceeds [`abi::MAX_IMAGE_BYTES`].
    ImageTooLarge,
    /// No non-empty `PT_LOAD` segment.
    NoLoadableSegments,
    /// `e_entry` is not inside an executable segment.
    EntryNotExecutable { entry: u64 },
}

/// Access rights of one segment (x86 cannot map write-only or execute-only pages; the kernel
/// maps every segment readable and honours `write` and `execute` via W and NX).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentFlags {
    /// `PF_R`.
    pub read: bool,
    /// `PF_W`.
    pub write: bool,
    /// `PF_X`.
    pub execute: bool,
}

impl SegmentFlags {
    fn from_p_flags(p_flags: u32) -> Self {
        SegmentFlags {
            read: p_flags & PF_R != 0,
            write: p_flags & PF_W != 0,
            execute: p_flags & PF_X != 0,
        }
    }
}

/// One loadable segment, validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    /// Program-header index, for error messages.
    pub index: usize,
    /// First virtual address (not necessarily page aligned).
    pub vaddr: u64,
    /// Bytes in memory; the part past `file_len` is zero-filled (`.bss`).
    pub memsz: u64,
    /// Offset of the initialised bytes in the file.
    pub file_offset: u64,
    /// Number of initialised bytes (`<= memsz`).
    pub file_len: u64,
    /// Access rights.
    pub flags: SegmentFlags,
}

impl Segment {
    /// First page the segment touches.
    pub fn page_start(&self) -> u64 {
        self.vaddr & !(abi::PAGE_SIZE - 1)
    }

    /// Exclusive end of the last page the segment touches. Cannot overflow for a validated
    /// segment, which ends at or below `USER_IMAGE_END`.
    pub fn page_end(&self) -> u64 {
        let end = self.vaddr + self.memsz;
        (end + abi::PAGE_SIZE - 1) & !(abi::PAGE_SIZE - 1)
    }

    /// Number of 4 KiB pages (frames) the segment needs.
    pub fn pages(&self) -> u64 {
        (self.page_end() - self.page_start()) / abi::PAGE_SIZE
    }

    /// The initialised bytes within `image` (the same slice that was validated).
    pub fn file_bytes<'a>(&self, image: &'a [u8]) -> Option<&'a [u8]> {
        let start = usize::try_from(self.file_offset).ok()?;
        let len = usize::try_from(self.file_len).ok()?;
        image.get(start..start.checked_add(len)?)
    }

    fn contains(&self, addr: u64) -> bool {
        addr >= self.vaddr && addr - self.vaddr < self.memsz
    }
}

/// What the kernel needs to build a cell's address space from an image.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadPlan {
    /// Initial `rip`.
    pub entry: u64,
    /// Loadable segments sorted by `vaddr`, pairwise disjoint at page granularity.
    pub segments: Vec<Segment>,
}

impl LoadPlan {
    /// Total frames the image needs (stack and args page not included).
    pub fn total_pages(&self) -> u64 {
        self.segments.iter().map(Segment::pages).sum()
    }

    /// Re-checks every promise of [`parse`] against the image length. Used as a postcondition
    /// assertion and by tests; returns `false` instead of panicking so tests can report.
    pub fn upholds_invariants(&self, image_len: usize) -> bool {
        let entry_ok = self
            .segments
            .iter()
            .any(|segment| segment.flags.execute && segment.contains(self.entry));
        let sorted_disjoint = self
            .segments
            .windows(2)
            .all(|pair| pair[0].page_end() <= pair[1].page_start());
        let each_ok = self.segments.iter().all(|segment| {
            let file_end = segment.file_offset.checked_add(segment.file_len);
            let mem_end = segment.vaddr.checked_add(segment.memsz);
            file_end.is_some_and(|end| end <= image_len as u64)
                && mem_end.is_some_and(|end| end <= abi::USER_IMAGE_END)
                && segment.vaddr >= abi::USER_CODE_BASE
                && segment.memsz > 0
                && segment.file_len <= segment.memsz
                && segment.memsz <= abi::MAX_SEGMENT_BYTES
                && !(segment.flags.write && segment.flags.execute)
        });
        entry_ok
            && sorted_disjoint
            && each_ok
            && !self.segments.is_empty()
            && self.segments.len() <= abi::MAX_LOAD_SEGMENTS
            && self.total_pages() * abi::PAGE_SIZE <= abi::MAX_IMAGE_BYTES
    }
}

/// The header fields the loader uses, after the identity checks.
struct Header {
    entry: u64,
    phoff: u64,
    phnum: u16,
}

/// Validates `image` and returns its load plan.
pub fn parse(image: &[u8]) -> Result<LoadPlan, ElfError> {
    let header = parse_header(image)?;
    let table = program_header_table(image, &header)?;
    let mut segments = Vec::new();
    let (headers, _) = table.as_chunks::<PHDR_SIZE>();
    for (index, raw) in headers.iter().enumerate() {
        if let Some(segment) = parse_program_header(image, index, raw)? {
            if segments.len() == abi::MAX_LOAD_SEGMENTS {
                return Err(ElfError::TooManySegments);
            }
            segments.push(segment);
        }
    }
    let plan = finish_plan(header.entry, segments)?;
    debug_assert!(
        plan.upholds_invariants(image.len()),
        "ELF plan broke its own promises"
    );
    Ok(plan)
}

fn parse_header(image: &[u8]) -> Result<Header, ElfError> {
    let ident = image.get(..EHDR_SIZE).ok_or(ElfError::TruncatedHeader)?;
    if ident[..4] != ELF_MAGIC {
        return Err(ElfError::BadMagic);
    }
    if ident[4] != ELFCLASS64 {
        return Err(ElfError::WrongClass(ident[4]));
    }
    if ident[5] != ELFDATA2LSB {
        return Err(ElfError::WrongEndianness(ident[5]));
    }
    if ident[6] != EV_CURRENT || read_u32(image, 20) != Some(u32::from(EV_CURRENT)) {
        return Err(ElfError::BadVersion);
    }
    // The 64 header bytes are present, so every fixed-offset read below succeeds; the
    // `ok_or` keeps the code total anyway.
    let e_type = read_u16(image, 16).ok_or(ElfError::TruncatedHeader)?;
    if e_type != ET_EXEC {
        return Err(ElfError::WrongType(e_type));
    }
    let machine = read_u16(image, 18).ok_or(ElfError::TruncatedHeader)?;
    if machine != EM_X86_64 {
        return Err(ElfError::WrongMachine(machine));
    }
    let ehsize = read_u16(image, 52).ok_or(ElfError::TruncatedHeader)?;
    if usize::from(ehsize) < EHDR_SIZE {
        return Err(ElfError::BadHeaderSize(ehsize));
    }
    let phentsize = read_u16(image, 54).ok_or(ElfError::TruncatedHeader)?;
    if usize::from(phentsize) != PHDR_SIZE {
        return Err(ElfError::BadProgramHeaderSize(phentsize));
    }
    let phnum = read_u16(image, 56).ok_or(ElfError::TruncatedHeader)?;
    if usize::from(phnum) > abi::MAX_PROGRAM_HEADERS {
        return Err(ElfError::TooManyProgramHeaders(phnum));
    }
    let entry = read_u64(image, 24).ok_or(ElfError::TruncatedHeader)?;
    let phoff = read_u64(image, 32).ok_or(ElfError::TruncatedHeader)?;
    Ok(Header {
        entry,
        phoff,
        phnum,
    })
}

fn program_header_table<'a>(image: &'a [u8], header: &Header) -> Result<&'a [u8], ElfError> {
    let start = usize::try_from(header.phoff).map_err(|_| ElfError::TruncatedProgramHeaders)?;
    let len = usize::from(header.phnum) * PHDR_SIZE; // <= 64 * 56, cannot overflow.
    let end = start
        .checked_add(len)
        .ok_or(ElfError::TruncatedProgramHeaders)?;
    let table = image
        .get(start..end)
        .ok_or(ElfError::TruncatedProgramHeaders)?;
    debug_assert_eq!(table.len() % PHDR_SIZE, 0);
    Ok(table)
}

/// Checks one program header; `Ok(None)` for headers the loader ignores (notes, GNU_STACK,
/// empty PT_LOAD).
fn parse_program_header(
    image: &[u8],
    index: usize,
    raw: &[u8],
) -> Result<Option<Segment>, ElfError> {
    let field = |offset| read_u64(raw, offset).ok_or(ElfError::TruncatedProgramHeaders);
    let p_type = read_u32(raw, 0).ok_or(ElfError::TruncatedProgramHeaders)?;
    match p_type {
        PT_LOAD => {}
        PT_INTERP | PT_DYNAMIC => return Err(ElfError::Dynamic),
        PT_TLS => return Err(ElfError::UnsupportedSegment { index, p_type }),
        _ => return Ok(None),
    }
    let p_flags = read_u32(raw, 4).ok_or(ElfError::TruncatedProgramHeaders)?;
    let segment = Segment {
        index,
        file_offset: field(8)?,
        vaddr: field(16)?,
        file_len: field(32)?,
        memsz: field(40)?,
        flags: SegmentFlags::from_p_flags(p_flags),
    };
    let align = field(48)?;
    if segment.memsz == 0 && segment.file_len == 0 {
        return Ok(None);
    }
    check_segment(image, &segment, align)?;
    Ok(Some(segment))
}

fn check_segment(image: &[u8], segment: &Segment, align: u64) -> Result<(), ElfError> {
    let index = segment.index;
    if segment.file_len > segment.memsz {
        return Err(ElfError::FileszExceedsMemsz { index });
    }
    let file_end = segment.file_offset.checked_add(segment.file_len);
    if !file_end.is_some_and(|end| end <= image.len() as u64) {
        return Err(ElfError::SegmentOutsideFile { index });
    }
    if align != 0 && !align.is_power_of_two() {
        return Err(ElfError::BadAlignment { index });
    }
    let mem_end = segment
        .vaddr
        .checked_add(segment.memsz)
        .ok_or(ElfError::AddressOverflow { index })?;
    if segment.vaddr >= abi::KERNEL_HALF_START || mem_end > abi::KERNEL_HALF_START {
        return Err(ElfError::SegmentInKernelHalf { index });
    }
    if segment.vaddr < abi::USER_CODE_BASE || mem_end > abi::USER_IMAGE_END {
        return Err(ElfError::SegmentOutsideUserRange { index });
    }
    if segment.memsz > abi::MAX_SEGMENT_BYTES {
        return Err(ElfError::SegmentTooLarge { index });
    }
    if segment.flags.write && segment.flags.execute {
        return Err(ElfError::WriteAndExecute { index });
    }
    Ok(())
}

/// Whole-image checks: count, overlap, total size, entry point.
fn finish_plan(entry: u64, mut segments: Vec<Segment>) -> Result<LoadPlan, ElfError> {
    if segments.is_empty() {
        return Err(ElfError::NoLoadableSegments);
    }
    segments.sort_by_key(|segment| segment.vaddr);
    for pair in segments.windows(2) {
        // Page granularity: one page cannot carry two sets of access rights.
        if pair[0].page_end() > pair[1].page_start() {
            let (first, second) = (
                pair[0].index.min(pair[1].index),
                pair[0].index.max(pair[1].index),
            );
            return Err(ElfError::OverlappingSegments { first, second });
        }
    }
    // Each segment is at most 16 MiB and there are at most 16, so the sum cannot overflow.
    let image_bytes: u64 = segments
        .iter()
        .map(|segment| segment.pages() * abi::PAGE_SIZE)
        .sum();
    if image_bytes > abi::MAX_IMAGE_BYTES {
        return Err(ElfError::ImageTooLarge);
    }
    if !segments
        .iter()
        .any(|segment| segment.flags.execute && segment.contains(entry))
    {
        return Err(ElfError::EntryNotExecutable { entry });
    }
    Ok(LoadPlan { entry, segments })
}

fn read_u16(bytes: &[u8], offset: usize) -> Option<u16> {
    let raw = bytes.get(offset..offset.checked_add(2)?)?;
    Some(u16::from_le_bytes(raw.try_into().ok()?))
}

fn read_u32(bytes: &[u8], offset: usize) -> Option<u32> {
    let raw = bytes.get(offset..offset.checked_add(4)?)?;
    Some(u32::from_le_bytes(raw.try_into().ok()?))
}

fn read_u64(bytes: &[u8], offset: usize) -> Option<u64> {
    let raw = bytes.get(offset..offset.checked_add(8)?)?;
    Some(u64::from_le_bytes(raw.try_into().ok()?))
}

#[cfg(test)]
mod tests;
