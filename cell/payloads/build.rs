//! Links every payload binary as a static, non-PIE executable at the ABI code base with the
//! layout of `link.ld`. Done here (not in `.cargo/config.toml`) because cargo reads config files
//! from the working directory, and xtask builds this crate from the repository root.

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
    let target_os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    println!("cargo:rerun-if-changed=link.ld");
    println!("cargo:rerun-if-changed=build.rs");
    if target_os != "none" {
        // Only the bare-metal target is meaningful; leave host builds (e.g. `cargo check`)
        // with their default linking so they fail in the compiler, not in the linker script.
        return;
    }
    println!("cargo:rustc-link-arg-bins=-T{manifest_dir}/link.ld");
    // The target defaults to static-PIE (ET_DYN); the kernel loads only ET_EXEC.
    println!("cargo:rustc-link-arg-bins=--no-pie");
    println!("cargo:rustc-link-arg-bins=--no-dynamic-linker");
    println!("cargo:rustc-link-arg-bins=-z");
    println!("cargo:rustc-link-arg-bins=max-page-size=4096");
}
