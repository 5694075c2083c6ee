//! [`Mapping`]: anonymous memory from `mem_map`, owned, seen as a byte slice, unmapped on
//! drop. For payloads that manage memory themselves (the heap uses `mem_map` directly).

use crate::abi::Errno;
use crate::sys;

/// `len` bytes of zeroed read-write memory mapped for this cell alone.
#[derive(Debug)]
pub struct Mapping {
    addr: u64,
    len: usize,
}

impl Mapping {
    /// Maps `len` bytes (rounded up to whole pages by the kernel). `ENOMEM` beyond the
    /// cell's memory limit or the node's free frames.
    pub fn new(len: usize) -> Result<Mapping, Errno> {
        if len == 0 {
            return Err(Errno::EINVAL);
        }
        let addr = sys::mem_map(len as u64)?;
        Ok(Mapping { addr, len })
    }

    /// The start address.
    pub fn addr(&self) -> u64 {
        self.addr
    }

    /// The length asked for.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the mapping is empty (never: `new` refuses 0).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memory, readable.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the kernel mapped `len` bytes read-write at `addr` for this cell only; the
        // mapping lives until `self` drops, and the borrow of `self` bounds the slice.
        unsafe { core::slice::from_raw_parts(self.addr as *const u8, self.len) }
    }

    /// The memory, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; `&mut self` makes this the only view.
        unsafe { core::slice::from_raw_parts_mut(self.addr as *mut u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: no slice outlives `self`, so nothing uses the range after this.
        let _ = unsafe { sys::mem_unmap(self.addr, self.len as u64) };
    }
}
