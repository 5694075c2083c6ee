//! Checks the real payload binaries against the ELF validator and the layout promises of
//! `cell/payloads/link.ld`. The binaries are built for x86_64-unknown-none by xtask, which then
//! sets `XYLEM_PAYLOAD_DIR` to their directory; without it this test says it skipped.

use cell::abi;
use cell::elf::{self, LoadPlan};

/// Every payload program the kernel embeds.
const PAYLOADS: [&str; 9] = [
    "hello", "crasher", "spinner", "counter", "http", "echo", "memhog", "sockhog", "nettest",
];
/// The first bytes of the runtime's `_start`: `xor ebp, ebp`.
const START_PROLOGUE: [u8; 2] = [0x31, 0xed];

fn check_plan(name: &str, image: &[u8], plan: &LoadPlan) {
    assert!(
        plan.upholds_invariants(image.len()),
        "{name}: plan breaks invariants"
    );
    assert_eq!(
        plan.segments[0].vaddr,
        abi::USER_CODE_BASE,
        "{name}: text not at the code base"
    );
    let executable: Vec<_> = plan
        .segments
        .iter()
        .filter(|segment| segment.flags.execute)
        .collect();
    assert_eq!(
        executable.len(),
        1,
        "{name}: expected exactly one executable segment"
    );
    for segment in &plan.segments {
        assert_eq!(
            segment.vaddr % abi::PAGE_SIZE,
            0,
            "{name}: segment {} not page aligned",
            segment.index
        );
        assert!(
            segment.flags.read,
            "{name}: segment {} not readable",
            segment.index
        );
        assert!(
            !(segment.flags.write && segment.flags.execute),
            "{name}: W+X"
        );
    }
    // The entry point is the runtime's `_start`, recognisable by its first instruction.
    let text = executable[0];
    let entry_offset = text.file_offset + (plan.entry - text.vaddr);
    let entry_bytes = image.get(entry_offset as usize..entry_offset as usize + 2);
    assert_eq!(
        entry_bytes,
        Some(&START_PROLOGUE[..]),
        "{name}: entry is not xylem-rt's _start"
    );
    // Small programs: a handful of pages, far below the image limit.
    assert!(
        plan.total_pages() <= 64,
        "{name}: {} pages is suspiciously large",
        plan.total_pages()
    );
}

#[test]
fn built_payloads_pass_the_validator() {
    let Some(dir) = std::env::var_os("XYLEM_PAYLOAD_DIR") else {
        println!(
            "skipped: XYLEM_PAYLOAD_DIR is not set (xtask sets it after building cell/payloads)"
        );
        return;
    };
    let dir = std::path::PathBuf::from(dir);
    for name in PAYLOADS {
        let path = dir.join(name);
        let image =
            std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()));
        let plan = elf::parse(&image).unwrap_or_else(|error| panic!("{name}: refused: {error:?}"));
        check_plan(name, &image, &plan);
        println!(
            "{name}: entry={:#x} segments={} pages={}",
            plan.entry,
            plan.segments.len(),
            plan.total_pages()
        );
    }
}
