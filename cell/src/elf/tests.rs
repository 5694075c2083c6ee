//! Host tests for the ELF validator: one valid image built here, a table with one row per
//! refusal (every `ElfError` variant produced at least once), and a seeded mutation fuzzer that checks the parser is total and its plans keep their promises.

use alloc::borrow::ToOwned;
use alloc::vec;
use alloc::vec::Vec;

use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

use super::*;

/// A program header as the test builder writes it.
#[derive(Clone, Copy)]
struct Ph {
    p_type: u32,
    flags: u32,
    offset: u64,
    vaddr: u64,
    filesz: u64,
    memsz: u64,
    align: u64,
}

const TEXT: Ph = Ph {
    p_type: PT_LOAD,
    flags: PF_R | PF_X,
    offset: 0x1000,
    vaddr: 0x40_0000,
    filesz: 0x20,
    memsz: 0x20,
    align: 0x1000,
};
const DATA: Ph = Ph {
    p_type: PT_LOAD,
    flags: PF_R | PF_W,
    offset: 0x1020,
    vaddr: 0x40_1020,
    filesz: 0x10,
    memsz: 0x2000,
    align: 0x1000,
};
const STACK_NOTE: Ph = Ph {
    p_type: 0x6474_e551, // PT_GNU_STACK: ignored by the loader.
    flags: PF_R | PF_W,
    offset: 0,
    vaddr: 0,
    filesz: 0,
    memsz: 0,
    align: 16,
};
const ENTRY: u64 = 0x40_0010;
const FILE_LEN: usize = 0x1030;

/// Writes an ELF64 header followed by the program headers, padded to `file_len`.
fn build(entry: u64, phdrs: &[Ph], file_len: usize) -> Vec<u8> {
    let mut image = vec![0u8; file_len.max(EHDR_SIZE + phdrs.len() * PHDR_SIZE)];
    image[..4].copy_from_slice(&ELF_MAGIC);
    image[4] = ELFCLASS64;
    image[5] = ELFDATA2LSB;
    image[6] = EV_CURRENT;
    put(&mut image, 16, &ET_EXEC.to_le_bytes());
    put(&mut image, 18, &EM_X86_64.to_le_bytes());
    put(&mut image, 20, &1u32.to_le_bytes());
    put(&mut image, 24, &entry.to_le_bytes());
    put(&mut image, 32, &(EHDR_SIZE as u64).to_le_bytes());
    put(&mut image, 52, &(EHDR_SIZE as u16).to_le_bytes());
    put(&mut image, 54, &(PHDR_SIZE as u16).to_le_bytes());
    put(&mut image, 56, &(phdrs.len() as u16).to_le_bytes());
    for (index, ph) in phdrs.iter().enumerate() {
        let base = EHDR_SIZE + index * PHDR_SIZE;
        put(&mut image, base, &ph.p_type.to_le_bytes());
        put(&mut image, base + 4, &ph.flags.to_le_bytes());
        put(&mut image, base + 8, &ph.offset.to_le_bytes());
        put(&mut image, base + 16, &ph.vaddr.to_le_bytes());
        put(&mut image, base + 24, &ph.vaddr.to_le_bytes());
        put(&mut image, base + 32, &ph.filesz.to_le_bytes());
        put(&mut image, base + 40, &ph.memsz.to_le_bytes());
        put(&mut image, base + 48, &ph.align.to_le_bytes());
    }
    image
}

fn put(image: &mut [u8], offset: usize, bytes: &[u8]) {
    image[offset..offset + bytes.len()].copy_from_slice(bytes);
}

fn valid() -> Vec<u8> {
    build(ENTRY, &[TEXT, DATA, STACK_NOTE], FILE_LEN)
}

/// The valid image with one program header replaced.
fn with_segment(index: usize, ph: Ph) -> Vec<u8> {
    let mut phdrs = [TEXT, DATA, STACK_NOTE];
    phdrs[index] = ph;
    build(ENTRY, &phdrs, FILE_LEN)
}

#[test]
fn valid_minimal_image_gives_the_expected_plan() {
    let image = valid();
    let plan = parse(&image).expect("valid image");
    assert_eq!(plan.entry, ENTRY);
    assert_eq!(plan.segments.len(), 2);
    let text = plan.segments[0];
    assert_eq!(
        (text.vaddr, text.memsz, text.file_offset, text.file_len),
        (0x40_0000, 0x20, 0x1000, 0x20)
    );
    assert_eq!(
        text.flags,
        SegmentFlags {
            read: true,
            write: false,
            execute: true
        }
    );
    let data = plan.segments[1];
    assert_eq!(
        (data.vaddr, data.memsz, data.file_len),
        (0x40_1020, 0x2000, 0x10)
    );
    assert_eq!(
        data.flags,
        SegmentFlags {
            read: true,
            write: true,
            execute: false
        }
    );
    // 0x401020..0x403020 touches pages 0x401000, 0x402000 and 0x403000.
    assert_eq!(
        (data.page_start(), data.page_end(), data.pages()),
        (0x40_1000, 0x40_4000, 3)
    );
    assert_eq!(plan.total_pages(), 4);
    assert_eq!(data.file_bytes(&image).map(<[u8]>::len), Some(0x10));
    assert!(plan.upholds_invariants(image.len()));
}

#[test]
fn segments_come_back_sorted_by_address() {
    let image = build(ENTRY, &[DATA, TEXT], FILE_LEN);
    let plan = parse(&image).unwrap();
    assert_eq!(plan.segments[0].index, 1);
    assert_eq!(plan.segments[1].index, 0);
}

/// The valid image with `bytes` written at `offset`.
fn patched(offset: usize, bytes: &[u8]) -> Vec<u8> {
    let mut image = valid();
    put(&mut image, offset, bytes);
    image
}

/// One refusal: a name for the failure message, the image, the error it must give.
struct Refusal {
    name: &'static str,
    image: Vec<u8>,
    want: ElfError,
}

fn refusal(name: &'static str, image: Vec<u8>, want: ElfError) -> Refusal {
    Refusal { name, image, want }
}

/// Every way an image is refused, one row each. Adding an [`ElfError`] variant makes
/// `variant` below stop compiling until it is named, and the table test then fails
/// until a row produces it.
fn refusals() -> Vec<Refusal> {
    use ElfError::*;
    let seg = |index, ph| with_segment(index, ph);
    let many_loads = |count: u64| {
        let mut phdrs = vec![TEXT];
        for slot in 0..count {
            phdrs.push(Ph {
                vaddr: 0x50_0000 + slot * 0x1000,
                memsz: 0x10,
                filesz: 0,
                ..DATA
            });
        }
        build(ENTRY, &phdrs, FILE_LEN)
    };
    // Five 16 MiB segments (80 MiB), each fine alone, too big together.
    let mut huge = vec![TEXT];
    for slot in 0..5u64 {
        huge.push(Ph {
            vaddr: 0x100_0000 + slot * abi::MAX_SEGMENT_BYTES,
            memsz: abi::MAX_SEGMENT_BYTES,
            filesz: 0,
            ..DATA
        });
    }
    let mut rows = vec![
        refusal("empty file", Vec::new(), TruncatedHeader),
        refusal("63 header bytes", valid()[..63].to_owned(), TruncatedHeader),
        refusal("bad magic", patched(1, b"X"), BadMagic),
        refusal("ELFCLASS32", patched(4, &[1]), WrongClass(1)),
        refusal("big-endian", patched(5, &[2]), WrongEndianness(2)),
        refusal("ident version 0", patched(6, &[0]), BadVersion),
        refusal("e_version 2", patched(20, &2u32.to_le_bytes()), BadVersion),
        refusal(
            "EM_AARCH64",
            patched(18, &183u16.to_le_bytes()),
            WrongMachine(183),
        ),
        refusal(
            "e_ehsize 32",
            patched(52, &32u16.to_le_bytes()),
            BadHeaderSize(32),
        ),
        refusal(
            "e_phentsize 32",
            patched(54, &32u16.to_le_bytes()),
            BadProgramHeaderSize(32),
        ),
        refusal(
            "65 program headers",
            patched(56, &(abi::MAX_PROGRAM_HEADERS as u16 + 1).to_le_bytes()),
            TooManyProgramHeaders(65),
        ),
        // The table spans 64..232; cut inside it.
        refusal(
            "cut inside the program headers",
            valid()[..200].to_owned(),
            TruncatedProgramHeaders,
        ),
        refusal(
            "e_phoff wraps",
            patched(32, &(u64::MAX - 8).to_le_bytes()),
            TruncatedProgramHeaders,
        ),
        refusal(
            "e_phoff near the end",
            patched(32, &(FILE_LEN as u64 - 100).to_le_bytes()),
            TruncatedProgramHeaders,
        ),
        refusal(
            "PT_INTERP",
            seg(
                2,
                Ph {
                    p_type: PT_INTERP,
                    ..STACK_NOTE
                },
            ),
            Dynamic,
        ),
        refusal(
            "PT_DYNAMIC",
            seg(
                2,
                Ph {
                    p_type: PT_DYNAMIC,
                    ..STACK_NOTE
                },
            ),
            Dynamic,
        ),
        refusal(
            "PT_TLS",
            seg(
                2,
                Ph {
                    p_type: PT_TLS,
                    ..STACK_NOTE
                },
            ),
            UnsupportedSegment {
                index: 2,
                p_type: PT_TLS,
            },
        ),
        refusal(
            "segment past the end of the file",
            seg(
                1,
                Ph {
                    offset: FILE_LEN as u64 - 0x8,
                    ..DATA
                },
            ),
            SegmentOutsideFile { index: 1 },
        ),
        refusal(
            "segment offset wraps",
            seg(
                1,
                Ph {
                    offset: u64::MAX - 4,
                    ..DATA
                },
            ),
            SegmentOutsideFile { index: 1 },
        ),
        refusal(
            "filesz above memsz",
            seg(
                0,
                Ph {
                    filesz: 0x30,
                    memsz: 0x20,
                    ..TEXT
                },
            ),
            FileszExceedsMemsz { index: 0 },
        ),
        refusal(
            "alignment not a power of two",
            seg(
                1,
                Ph {
                    align: 0x1001,
                    ..DATA
                },
            ),
            BadAlignment { index: 1 },
        ),
        refusal(
            "data shares text's page",
            seg(
                1,
                Ph {
                    vaddr: 0x40_0800,
                    ..DATA
                },
            ),
            OverlappingSegments {
                first: 0,
                second: 1,
            },
        ),
        refusal(
            "data nested in text",
            seg(
                1,
                Ph {
                    vaddr: 0x40_0000,
                    flags: PF_R,
                    ..DATA
                },
            ),
            OverlappingSegments {
                first: 0,
                second: 1,
            },
        ),
        refusal(
            "segment over 16 MiB",
            seg(
                1,
                Ph {
                    memsz: abi::MAX_SEGMENT_BYTES + 1,
                    ..DATA
                },
            ),
            SegmentTooLarge { index: 1 },
        ),
        refusal("80 MiB image", build(ENTRY, &huge, FILE_LEN), ImageTooLarge),
        refusal(
            "one load segment too many",
            many_loads(abi::MAX_LOAD_SEGMENTS as u64),
            TooManySegments,
        ),
        refusal(
            "below the user image range",
            seg(
                1,
                Ph {
                    vaddr: 0x1000,
                    ..DATA
                },
            ),
            SegmentOutsideUserRange { index: 1 },
        ),
        refusal(
            "the null page",
            seg(1, Ph { vaddr: 0, ..DATA }),
            SegmentOutsideUserRange { index: 1 },
        ),
        refusal(
            "past the user image range",
            seg(
                1,
                Ph {
                    vaddr: abi::USER_IMAGE_END - 0x1000,
                    ..DATA
                },
            ),
            SegmentOutsideUserRange { index: 1 },
        ),
        refusal(
            "in the stack area",
            seg(
                1,
                Ph {
                    vaddr: abi::USER_STACK_TOP - 0x1000,
                    ..DATA
                },
            ),
            SegmentOutsideUserRange { index: 1 },
        ),
        refusal(
            "in the kernel half",
            seg(
                1,
                Ph {
                    vaddr: abi::KERNEL_HALF_START,
                    ..DATA
                },
            ),
            SegmentInKernelHalf { index: 1 },
        ),
        refusal(
            "straddling the kernel half",
            seg(
                1,
                Ph {
                    vaddr: abi::KERNEL_HALF_START - 0x1000,
                    ..DATA
                },
            ),
            SegmentInKernelHalf { index: 1 },
        ),
        refusal(
            "address overflow",
            seg(
                1,
                Ph {
                    vaddr: u64::MAX - 0x100,
                    ..DATA
                },
            ),
            AddressOverflow { index: 1 },
        ),
        refusal(
            "writable and executable",
            seg(
                0,
                Ph {
                    flags: PF_R | PF_W | PF_X,
                    ..TEXT
                },
            ),
            WriteAndExecute { index: 0 },
        ),
        refusal(
            "entry in data",
            build(0x40_1030, &[TEXT, DATA], FILE_LEN),
            EntryNotExecutable { entry: 0x40_1030 },
        ),
        refusal(
            "entry one past text",
            build(0x40_0020, &[TEXT, DATA], FILE_LEN),
            EntryNotExecutable { entry: 0x40_0020 },
        ),
        refusal(
            "entry 0",
            build(0, &[TEXT, DATA], FILE_LEN),
            EntryNotExecutable { entry: 0 },
        ),
        refusal(
            "no program headers",
            build(ENTRY, &[], FILE_LEN),
            NoLoadableSegments,
        ),
        refusal(
            "only PT_GNU_STACK",
            build(ENTRY, &[STACK_NOTE], FILE_LEN),
            NoLoadableSegments,
        ),
        refusal(
            "an empty load segment",
            build(
                ENTRY,
                &[Ph {
                    filesz: 0,
                    memsz: 0,
                    ..TEXT
                }],
                FILE_LEN,
            ),
            NoLoadableSegments,
        ),
    ];
    for e_type in [0u16, 1, 3, 4] {
        rows.push(refusal(
            "not ET_EXEC",
            patched(16, &e_type.to_le_bytes()),
            WrongType(e_type),
        ));
    }
    rows
}

/// The variant's name, with no wildcard arm: a new variant must be named here.
fn variant(error: &ElfError) -> &'static str {
    use ElfError::*;
    match error {
        TruncatedHeader => "TruncatedHeader",
        BadMagic => "BadMagic",
        WrongClass(_) => "WrongClass",
        WrongEndianness(_) => "WrongEndianness",
        BadVersion => "BadVersion",
        WrongType(_) => "WrongType",
        WrongMachine(_) => "WrongMachine",
        BadHeaderSize(_) => "BadHeaderSize",
        BadProgramHeaderSize(_) => "BadProgramHeaderSize",
        TooManyProgramHeaders(_) => "TooManyProgramHeaders",
        TruncatedProgramHeaders => "TruncatedProgramHeaders",
        Dynamic => "Dynamic",
        UnsupportedSegment { .. } => "UnsupportedSegment",
        SegmentOutsideFile { .. } => "SegmentOutsideFile",
        FileszExceedsMemsz { .. } => "FileszExceedsMemsz",
        BadAlignment { .. } => "BadAlignment",
        AddressOverflow { .. } => "AddressOverflow",
        SegmentInKernelHalf { .. } => "SegmentInKernelHalf",
        SegmentOutsideUserRange { .. } => "SegmentOutsideUserRange",
        SegmentTooLarge { .. } => "SegmentTooLarge",
        WriteAndExecute { .. } => "WriteAndExecute",
        OverlappingSegments { .. } => "OverlappingSegments",
        TooManySegments => "TooManySegments",
        ImageTooLarge => "ImageTooLarge",
        NoLoadableSegments => "NoLoadableSegments",
        EntryNotExecutable { .. } => "EntryNotExecutable",
    }
}

/// Every variant the table must produce, in declaration order.
const ALL_VARIANTS: [&str; 26] = [
    "TruncatedHeader",
    "BadMagic",
    "WrongClass",
    "WrongEndianness",
    "BadVersion",
    "WrongType",
    "WrongMachine",
    "BadHeaderSize",
    "BadProgramHeaderSize",
    "TooManyProgramHeaders",
    "TruncatedProgramHeaders",
    "Dynamic",
    "UnsupportedSegment",
    "SegmentOutsideFile",
    "FileszExceedsMemsz",
    "BadAlignment",
    "AddressOverflow",
    "SegmentInKernelHalf",
    "SegmentOutsideUserRange",
    "SegmentTooLarge",
    "WriteAndExecute",
    "OverlappingSegments",
    "TooManySegments",
    "ImageTooLarge",
    "NoLoadableSegments",
    "EntryNotExecutable",
];

#[test]
fn every_refusal_gives_its_error() {
    let rows = refusals();
    let mut wrong = Vec::new();
    for row in &rows {
        let got = parse(&row.image);
        if got.as_ref().err() != Some(&row.want) {
            wrong.push(alloc::format!(
                "{}: want {:?}, got {:?}",
                row.name,
                row.want,
                got.err()
            ));
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of {} rows wrong:\n{}",
        wrong.len(),
        rows.len(),
        wrong.join("\n")
    );
    for name in ALL_VARIANTS {
        assert!(
            rows.iter().any(|r| variant(&r.want) == name),
            "no row produces ElfError::{name}"
        );
    }
    for row in &rows {
        assert!(ALL_VARIANTS.contains(&variant(&row.want)));
    }
}

#[test]
fn edge_cases_that_are_accepted() {
    // Zero and one mean "no alignment".
    assert!(parse(&with_segment(1, Ph { align: 0, ..DATA })).is_ok());
    assert!(parse(&with_segment(1, Ph { align: 1, ..DATA })).is_ok());
    // Exactly the maximum number of load segments.
    let mut phdrs = vec![TEXT];
    for slot in 0..abi::MAX_LOAD_SEGMENTS as u64 - 1 {
        phdrs.push(Ph {
            vaddr: 0x50_0000 + slot * 0x1000,
            memsz: 0x10,
            filesz: 0,
            ..DATA
        });
    }
    assert!(parse(&build(ENTRY, &phdrs, FILE_LEN)).is_ok());
}

/// Number of fuzz cases; `XYLEM_ELF_FUZZ_CASES` raises it for a soak.
fn fuzz_cases() -> u64 {
    std::env::var("XYLEM_ELF_FUZZ_CASES")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(100_000)
}

/// Applies 1..=8 random edits (byte flips, field overwrites with edge values, truncation) to a
/// valid image. Edits aim at the header and program headers, where the decisions are made.
fn mutate(rng: &mut Xoshiro256PlusPlus, mut image: Vec<u8>) -> Vec<u8> {
    const EDGES: [u64; 8] = [
        0,
        1,
        0x1000,
        0x40_0000,
        u64::MAX,
        u64::MAX - 0xfff,
        1 << 47,
        0xffff_8000_0000_0000,
    ];
    let edits = 1 + rng.next_u32() % 8;
    for _ in 0..edits {
        // Earlier truncations shrink the image, so every position is taken modulo its length.
        let hot = (EHDR_SIZE + 3 * PHDR_SIZE).min(image.len());
        match rng.next_u32() % 4 {
            0 => {
                let at = rng.next_u32() as usize % hot;
                image[at] ^= 1 << (rng.next_u32() % 8);
            }
            1 => {
                if hot >= 8 {
                    let at = (rng.next_u32() as usize % (hot / 8)) * 8;
                    let value = EDGES[rng.next_u32() as usize % EDGES.len()];
                    image[at..at + 8].copy_from_slice(&value.to_le_bytes());
                }
            }
            2 => {
                let at = rng.next_u32() as usize % image.len();
                image[at] = rng.next_u32() as u8;
            }
            _ => {
                let keep = rng.next_u32() as usize % (image.len() + 1);
                image.truncate(keep.max(1));
            }
        }
    }
    image
}

#[test]
fn fuzz_parser_is_total_and_plans_keep_their_promises() {
    let mut accepted = 0u64;
    let mut kinds = std::collections::BTreeSet::new();
    for seed in 0..fuzz_cases() {
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
        let image = if seed % 8 == 0 {
            // Pure noise, sometimes with a correct identity so it reaches deeper checks.
            let mut noise = vec![0u8; (rng.next_u32() % 512) as usize];
            rng.fill_bytes(&mut noise);
            if seed % 16 == 0 && noise.len() >= 8 {
                noise[..8].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1, 1, 0]);
            }
            noise
        } else {
            mutate(&mut rng, valid())
        };
        // A panic here fails the test; the message names the seed.
        let result = std::panic::catch_unwind(|| parse(&image));
        let result =
            result.unwrap_or_else(|_| panic!("parser panicked; reproduce with seed={seed}"));
        if let Ok(plan) = result {
            accepted += 1;
            assert!(
                plan.upholds_invariants(image.len()),
                "bad plan {plan:?}; reproduce with seed={seed}"
            );
        } else if let Err(error) = result {
            // Record the variant name only, to see how many distinct checks the fuzzer reached.
            let name = std::format!("{error:?}");
            kinds.insert(name.split([' ', '(']).next().unwrap_or("").to_owned());
        }
    }
    // Some mutations are harmless (padding bytes), so the fuzzer must see both outcomes.
    assert!(accepted > 0, "the fuzzer never produced an accepted image");
    std::println!(
        "fuzz: {accepted} accepted, {} distinct refusals: {kinds:?}",
        kinds.len()
    );
    assert!(
        kinds.len() >= 15,
        "the fuzzer reached too few checks: {kinds:?}"
    );
}
