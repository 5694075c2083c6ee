//! QEMU's firmware configuration device (fw_cfg), legacy I/O-port interface.
//!
//! One kernel image boots every node; QEMU passes each node's identity as a named file
//! (`-fw_cfg name=opt/xylem/node,string=…`). Selector port 0x510, data port 0x511; the file
//! directory is item 0x19: a big-endian count, then 64-byte entries (size, select, name).
//! See QEMU's docs/specs/fw_cfg.rst.

use alloc::string::String;
use alloc::vec::Vec;

use crate::arch::port::{inb, outw};

const SELECTOR_PORT: u16 = 0x510;
const DATA_PORT: u16 = 0x511;
const ITEM_SIGNATURE: u16 = 0x0000;
const ITEM_FILE_DIR: u16 = 0x0019;
/// Longest file we are willing to read: node configs are tiny, and a hostile or broken
/// value must not make the kernel allocate without bound.
pub const FILE_MAX_BYTES: usize = 4096;
const MAX_DIR_ENTRIES: u32 = 4096;

/// Why a file could not be read.
#[derive(Debug, PartialEq, Eq)]
pub enum FwCfgError {
    /// No fw_cfg device (not QEMU, or disabled).
    NotPresent,
    /// No file by that name.
    NotFound,
    /// The file is larger than [`FILE_MAX_BYTES`].
    TooLarge(u32),
    /// The file is not UTF-8.
    NotText,
}

fn select(item: u16) {
    // SAFETY: 0x510 is fw_cfg's selector port on QEMU's PC machines; selecting an item has
    // no effect beyond resetting the data offset.
    unsafe { outw(SELECTOR_PORT, item) };
}

fn read_bytes(buf: &mut [u8]) {
    for byte in buf {
        // SAFETY: 0x511 is fw_cfg's data port; reads return the selected item's next byte
        // (or 0 past its end).
        *byte = unsafe { inb(DATA_PORT) };
    }
}

fn read_be_u32() -> u32 {
    let mut b = [0u8; 4];
    read_bytes(&mut b);
    u32::from_be_bytes(b)
}

fn present() -> bool {
    select(ITEM_SIGNATURE);
    let mut sig = [0u8; 4];
    read_bytes(&mut sig);
    &sig == b"QEMU"
}

/// Reads a named fw_cfg file as text.
pub fn read_text(name: &str) -> Result<String, FwCfgError> {
    let bytes = read_file(name)?;
    String::from_utf8(bytes).map_err(|_| FwCfgError::NotText)
}

/// Reads a named fw_cfg file.
pub fn read_file(name: &str) -> Result<Vec<u8>, FwCfgError> {
    if !present() {
        return Err(FwCfgError::NotPresent);
    }
    select(ITEM_FILE_DIR);
    let count = read_be_u32().min(MAX_DIR_ENTRIES);
    for _ in 0..count {
        let size = read_be_u32();
        let mut sel = [0u8; 2];
        read_bytes(&mut sel);
        let mut reserved = [0u8; 2];
        read_bytes(&mut reserved);
        let mut raw_name = [0u8; 56];
        read_bytes(&mut raw_name);
        let len = raw_name
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(raw_name.len());
        if &raw_name[..len] != name.as_bytes() {
            continue;
        }
        if size as usize > FILE_MAX_BYTES {
            return Err(FwCfgError::TooLarge(size));
        }
        let mut data = alloc::vec![0u8; size as usize];
        select(u16::from_be_bytes(sel));
        read_bytes(&mut data);
        return Ok(data);
    }
    Err(FwCfgError::NotFound)
}
