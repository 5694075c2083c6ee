//! Host tests for the ELF validator: one valid image built here, one test per refusal, and a
//! seeded mutation fuzzer that checks the parser is total and its plans keep their promises.

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

#[test]
fn refuses_truncated_header() {
    assert_eq!(parse(&[]), Err(ElfError::TruncatedHeader));
    assert_eq!(parse(&valid()[..63]), Err(ElfError::TruncatedHeader));
}

#[test]
fn refuses_bad_magic() {
    let mut image = valid();
    image[1] = b'X';
    assert_eq!(parse(&image), Err(ElfError::BadMagic));
}

#[test]
fn refuses_wrong_class_and_endianness() {
    let mut image = valid();
    image[4] = 1; // ELFCLASS32
    assert_eq!(parse(&image), Err(ElfError::WrongClass(1)));
    let mut image = valid();
    image[5] = 2; // big-endian
    assert_eq!(parse(&image), Err(ElfError::WrongEndianness(2)));
}

#[test]
fn refuses_bad_version() {
    let mut image = valid();
    image[6] = 0;
    assert_eq!(parse(&image), Err(ElfError::BadVersion));
    let mut image = valid();
    put(&mut image, 20, &2u32.to_le_bytes());
    assert_eq!(parse(&image), Err(ElfError::BadVersion));
}

#[test]
fn refuses_non_exec_types() {
    for e_type in [0u16, 1, 3, 4] {
        let mut image = valid();
        put(&mut image, 16, &e_type.to_le_bytes());
        assert_eq!(parse(&image), Err(ElfError::WrongType(e_type)));
    }
}

#[test]
fn refuses_wrong_machine() {
    let mut image = valid();
    put(&mut image, 18, &183u16.to_le_bytes()); // EM_AARCH64
    assert_eq!(parse(&image), Err(ElfError::WrongMachine(183)));
}

#[test]
fn refuses_bad_header_sizes() {
    let mut image = valid();
    put(&mut image, 52, &32u16.to_le_bytes());
    assert_eq!(parse(&image), Err(ElfError::BadHeaderSize(32)));
    let mut image = valid();
    put(&mut image, 54, &32u16.to_le_bytes());
    assert_eq!(parse(&image), Err(ElfError::BadProgramHeaderSize(32)));
}

#[test]
fn refuses_too_many_program_headers() {
    let mut image = valid();
    put(
        &mut image,
        56,
        &(abi::MAX_PROGRAM_HEADERS as u16 + 1).to_le_bytes(),
    );
    assert_eq!(parse(&image), Err(ElfError::TooManyProgramHeaders(65)));
}

#[test]
fn refuses_truncated_program_headers() {
    let image = valid();
    // The table spans 64..232; cut inside it.
    assert_eq!(parse(&image[..200]), Err(ElfError::TruncatedProgramHeaders));
    let mut image = valid();
    put(&mut image, 32, &(u64::MAX - 8).to_le_bytes());
    assert_eq!(parse(&image), Err(ElfError::TruncatedProgramHeaders));
    let mut image = valid();
    put(&mut image, 32, &(FILE_LEN as u64 - 100).to_le_bytes());
    assert_eq!(parse(&image), Err(ElfError::TruncatedProgramHeaders));
}

#[test]
fn refuses_dynamic_and_tls_images() {
    let interp = Ph {
        p_type: PT_INTERP,
        ..STACK_NOTE
    };
    assert_eq!(parse(&with_segment(2, interp)), Err(ElfError::Dynamic));
    let dynamic = Ph {
        p_type: PT_DYNAMIC,
        ..STACK_NOTE
    };
    assert_eq!(parse(&with_segment(2, dynamic)), Err(ElfError::Dynamic));
    let tls = Ph {
        p_type: PT_TLS,
        ..STACK_NOTE
    };
    assert_eq!(
        parse(&with_segment(2, tls)),
        Err(ElfError::UnsupportedSegment {
            index: 2,
            p_type: PT_TLS
        })
    );
}

#[test]
fn refuses_segment_file_range_outside_the_file() {
    let past_end = Ph {
        offset: FILE_LEN as u64 - 0x8,
        ..DATA
    };
    assert_eq!(
        parse(&with_segment(1, past_end)),
        Err(ElfError::SegmentOutsideFile { index: 1 })
    );
    let wrapping = Ph {
        offset: u64::MAX - 4,
        ..DATA
    };
    assert_eq!(
        parse(&with_segment(1, wrapping)),
        Err(ElfError::SegmentOutsideFile { index: 1 })
    );
}

#[test]
fn refuses_filesz_above_memsz() {
    let ph = Ph {
        filesz: 0x30,
        memsz: 0x20,
        ..TEXT
    };
    assert_eq!(
        parse(&with_segment(0, ph)),
        Err(ElfError::FileszExceedsMemsz { index: 0 })
    );
}

#[test]
fn refuses_bad_alignment() {
    let ph = Ph {
        align: 0x1001,
        ..DATA
    };
    assert_eq!(
        parse(&with_segment(1, ph)),
        Err(ElfError::BadAlignment { index: 1 })
    );
    // Zero and one mean "no alignment" and are fine.
    assert!(parse(&with_segment(1, Ph { align: 0, ..DATA })).is_ok());
    assert!(parse(&with_segment(1, Ph { align: 1, ..DATA })).is_ok());
}

#[test]
fn refuses_overlapping_segments() {
    // Same page as the text segment, different rights.
    let ph = Ph {
        vaddr: 0x40_0800,
        ..DATA
    };
    assert_eq!(
        parse(&with_segment(1, ph)),
        Err(ElfError::OverlappingSegments {
            first: 0,
            second: 1
        })
    );
    // Fully nested.
    let ph = Ph {
        vaddr: 0x40_0000,
        flags: PF_R,
        ..DATA
    };
    assert_eq!(
        parse(&with_segment(1, ph)),
        Err(ElfError::OverlappingSegments {
            first: 0,
            second: 1
        })
    );
}

#[test]
fn refuses_oversized_segment_and_image() {
    let ph = Ph {
        memsz: abi::MAX_SEGMENT_BYTES + 1,
        ..DATA
    };
    assert_eq!(
        parse(&with_segment(1, ph)),
        Err(ElfError::SegmentTooLarge { index: 1 })
    );
    // Five 16 MiB segments (80 MiB) each fine alone, too big together.
    let mut phdrs = vec![TEXT];
    for slot in 0..5u64 {
        let vaddr = 0x100_0000 + slot * abi::MAX_SEGMENT_BYTES;
        phdrs.push(Ph {
            vaddr,
            memsz: abi::MAX_SEGMENT_BYTES,
            filesz: 0,
            ..DATA
        });
    }
    assert_eq!(
        parse(&build(ENTRY, &phdrs, FILE_LEN)),
        Err(ElfError::ImageTooLarge)
    );
}

#[test]
fn refuses_too_many_segments() {
    let mut phdrs = vec![TEXT];
    for slot in 0..abi::MAX_LOAD_SEGMENTS as u64 {
        phdrs.push(Ph {
            vaddr: 0x50_0000 + slot * 0x1000,
            memsz: 0x10,
            filesz: 0,
            ..DATA
        });
    }
    assert_eq!(
        parse(&build(ENTRY, &phdrs, FILE_LEN)),
        Err(ElfError::TooManySegments)
    );
    phdrs.pop();
    assert!(parse(&build(ENTRY, &phdrs, FILE_LEN)).is_ok());
}

#[test]
fn refuses_segments_outside_the_user_image_range() {
    let low = Ph {
        vaddr: 0x1000,
        ..DATA
    };
    assert_eq!(
        parse(&with_segment(1, low)),
        Err(ElfError::SegmentOutsideUserRange { index: 1 })
    );
    let null_page = Ph { vaddr: 0, ..DATA };
    assert_eq!(
        parse(&with_segment(1, null_page)),
        Err(ElfError::SegmentOutsideUserRange { index: 1 })
    );
    let high = Ph {
        vaddr: abi::USER_IMAGE_END - 0x1000,
        ..DATA
    };
    assert_eq!(
        parse(&with_segment(1, high)),
        Err(ElfError::SegmentOutsideUserRange { index: 1 })
    );
    let stack_area = Ph {
        vaddr: abi::USER_STACK_TOP - 0x1000,
        ..DATA
    };
    assert_eq!(
        parse(&with_segment(1, stack_area)),
        Err(ElfError::SegmentOutsideUserRange { index: 1 })
    );
}

#[test]
fn refuses_segments_in_the_kernel_half() {
    let kernel = Ph {
        vaddr: abi::KERNEL_HALF_START,
        ..DATA
    };
    assert_eq!(
        parse(&with_segment(1, kernel)),
        Err(ElfError::SegmentInKernelHalf { index: 1 })
    );
    let straddling = Ph {
        vaddr: abi::KERNEL_HALF_START - 0x1000,
        ..DATA
    };
    assert_eq!(
        parse(&with_segment(1, straddling)),
        Err(ElfError::SegmentInKernelHalf { index: 1 })
    );
}

#[test]
fn refuses_address_overflow() {
    let ph = Ph {
        vaddr: u64::MAX - 0x100,
        ..DATA
    };
    assert_eq!(
        parse(&with_segment(1, ph)),
        Err(ElfError::AddressOverflow { index: 1 })
    );
}

#[test]
fn refuses_writable_executable_segment() {
    let ph = Ph {
        flags: PF_R | PF_W | PF_X,
        ..TEXT
    };
    assert_eq!(
        parse(&with_segment(0, ph)),
        Err(ElfError::WriteAndExecute { index: 0 })
    );
}

#[test]
fn refuses_entry_outside_executable_segments() {
    let in_data = 0x40_1030;
    assert_eq!(
        parse(&build(in_data, &[TEXT, DATA], FILE_LEN)),
        Err(ElfError::EntryNotExecutable { entry: in_data })
    );
    let past_text = 0x40_0020; // one past the end of text
    assert_eq!(
        parse(&build(past_text, &[TEXT, DATA], FILE_LEN)),
        Err(ElfError::EntryNotExecutable { entry: past_text })
    );
    assert_eq!(
        parse(&build(0, &[TEXT, DATA], FILE_LEN)),
        Err(ElfError::EntryNotExecutable { entry: 0 })
    );
}

#[test]
fn refuses_images_without_loadable_segments() {
    assert_eq!(
        parse(&build(ENTRY, &[], FILE_LEN)),
        Err(ElfError::NoLoadableSegments)
    );
    assert_eq!(
        parse(&build(ENTRY, &[STACK_NOTE], FILE_LEN)),
        Err(ElfError::NoLoadableSegments)
    );
    let empty_load = Ph {
        filesz: 0,
        memsz: 0,
        ..TEXT
    };
    assert_eq!(
        parse(&build(ENTRY, &[empty_load], FILE_LEN)),
        Err(ElfError::NoLoadableSegments)
    );
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
