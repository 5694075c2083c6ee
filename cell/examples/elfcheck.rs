//! `cargo run -p cell --example elfcheck -- FILE...`: runs each file through the cell ELF
//! validator and prints its load plan or the refusal. Exits 1 if any file is refused.

use cell::elf;

fn main() {
    let mut refused = 0;
    for path in std::env::args().skip(1) {
        let image = match std::fs::read(&path) {
            Ok(image) => image,
            Err(error) => {
                println!("{path}: cannot read: {error}");
                refused += 1;
                continue;
            }
        };
        match elf::parse(&image) {
            Ok(plan) => {
                println!(
                    "{path}: OK entry={:#x} pages={}",
                    plan.entry,
                    plan.total_pages()
                );
                for segment in &plan.segments {
                    let flags = segment.flags;
                    println!(
                        "  vaddr={:#x} memsz={:#x} file_offset={:#x} file_len={:#x} {}{}{}",
                        segment.vaddr,
                        segment.memsz,
                        segment.file_offset,
                        segment.file_len,
                        if flags.read { 'R' } else { '-' },
                        if flags.write { 'W' } else { '-' },
                        if flags.execute { 'X' } else { '-' },
                    );
                }
            }
            Err(error) => {
                println!("{path}: REFUSED {error:?}");
                refused += 1;
            }
        }
    }
    std::process::exit(if refused == 0 { 0 } else { 1 });
}
