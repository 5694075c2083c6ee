//! An in-memory [`BlockDevice`] that can lose or tear unflushed writes, for host tests and
//! the simulator. Randomness is an argument (`crash(rng)`), never ambient.

use alloc::vec;
use alloc::vec::Vec;

use rand_core::RngCore;

use super::{BlockDevice, DeviceError, SECTOR_BYTES};

/// Sectors in memory: `durable` survives a crash; `pending` holds writes since the last flush.
#[derive(Clone, Debug)]
pub struct MemDevice {
    durable: Vec<[u8; SECTOR_BYTES]>,
    pending: Vec<(u64, [u8; SECTOR_BYTES])>,
    /// Writes performed (for tests and statistics).
    pub writes: u64,
    /// Flushes performed.
    pub flushes: u64,
    /// Writes and flushes still to fail with `DeviceError::Io` (an injected transient fault:
    /// a failed write lands nothing, a failed flush makes nothing durable).
    failing_ops: u32,
}

/// What a crash did to the unflushed writes (for tests to assert on).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CrashDamage {
    /// Writes that landed whole.
    pub kept: u32,
    /// Writes that never landed.
    pub lost: u32,
    /// Writes that landed torn: a prefix only, a flipped byte, or zeros.
    pub torn: u32,
}

impl MemDevice {
    /// A zeroed device of `sectors` sectors.
    pub fn new(sectors: u64) -> MemDevice {
        MemDevice {
            durable: vec![[0u8; SECTOR_BYTES]; sectors as usize],
            pending: Vec::new(),
            writes: 0,
            flushes: 0,
            failing_ops: 0,
        }
    }

    /// Makes the next `ops` writes and flushes fail (a transient device fault).
    pub fn fail_next_ops(&mut self, ops: u32) {
        self.failing_ops = ops;
    }

    /// Injected failures not yet consumed.
    pub fn failing_ops(&self) -> u32 {
        self.failing_ops
    }

    fn injected_failure(&mut self, lba: u64) -> Result<(), DeviceError> {
        if self.failing_ops > 0 {
            self.failing_ops -= 1;
            return Err(DeviceError::Io { lba });
        }
        Ok(())
    }

    /// A copy holding only what is durable (the unflushed writes dropped): what a crash
    /// that lost every pending write would leave.
    pub fn durable_copy(&self) -> MemDevice {
        MemDevice {
            durable: self.durable.clone(),
            pending: Vec::new(),
            writes: self.writes,
            flushes: self.flushes,
            failing_ops: 0,
        }
    }

    /// Unflushed writes outstanding.
    pub fn pending_writes(&self) -> usize {
        self.pending.len()
    }

    /// Power loss: every unflushed write independently lands whole, is lost, or lands torn
    /// (first bytes only, one flipped byte, or a zeroed sector), in any order.
    pub fn crash(&mut self, rng: &mut impl RngCore) -> CrashDamage {
        let mut damage = CrashDamage::default();
        for (lba, data) in core::mem::take(&mut self.pending) {
            let old = self.durable[lba as usize];
            let sector = &mut self.durable[lba as usize];
            match rng.next_u32() % 6 {
                0 | 1 => {
                    *sector = data;
                    damage.kept += 1;
                }
                2 | 3 => damage.lost += 1,
                4 => {
                    let cut = (rng.next_u32() as usize) % SECTOR_BYTES;
                    sector[..cut].copy_from_slice(&data[..cut]);
                    sector[cut..].copy_from_slice(&old[cut..]);
                    damage.torn += 1;
                }
                _ => {
                    *sector = data;
                    if rng.next_u32().is_multiple_of(2) {
                        let at = (rng.next_u32() as usize) % SECTOR_BYTES;
                        sector[at] ^= 1 << (rng.next_u32() % 8);
                    } else {
                        *sector = [0u8; SECTOR_BYTES];
                    }
                    damage.torn += 1;
                }
            }
        }
        damage
    }

    /// Flips one bit of a durable sector (bit rot).
    pub fn flip_bit(&mut self, lba: u64, byte: usize, bit: u8) {
        self.durable[lba as usize][byte % SECTOR_BYTES] ^= 1 << (bit % 8);
    }

    /// Zeroes durable sectors from `lba` to the end.
    pub fn zero_from(&mut self, lba: u64) {
        for sector in self.durable.iter_mut().skip(lba as usize) {
            *sector = [0u8; SECTOR_BYTES];
        }
    }
}

impl BlockDevice for MemDevice {
    fn sector_count(&self) -> u64 {
        self.durable.len() as u64
    }

    fn read_block(&mut self, lba: u64, buf: &mut [u8; SECTOR_BYTES]) -> Result<(), DeviceError> {
        let Some(sector) = self.durable.get(lba as usize) else {
            return Err(DeviceError::OutOfRange { lba });
        };
        *buf = match self.pending.iter().rev().find(|(l, _)| *l == lba) {
            Some((_, data)) => *data,
            None => *sector,
        };
        Ok(())
    }

    fn write_block(&mut self, lba: u64, buf: &[u8; SECTOR_BYTES]) -> Result<(), DeviceError> {
        if lba >= self.durable.len() as u64 {
            return Err(DeviceError::OutOfRange { lba });
        }
        self.injected_failure(lba)?;
        self.writes += 1;
        self.pending.push((lba, *buf));
        Ok(())
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        self.injected_failure(u64::MAX)?;
        self.flushes += 1;
        for (lba, data) in core::mem::take(&mut self.pending) {
            self.durable[lba as usize] = data;
        }
        Ok(())
    }
}
