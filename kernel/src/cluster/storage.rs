//! Where Raft keeps its log: a block device under `consensus::disk::DiskStore`.
//!
//! A node started with a virtio-blk disk (the harness gives each node `disk-<id>.img`) keeps
//! its term, vote and log across restarts. A node without one falls back to a RAM device:
//! the same format and code path, durable only for the life of the node. [`open`] picks one
//! and [`Device::describe`] says which (shown by `raft` and the boot log).

use ::consensus::disk::mem::MemDevice;
use ::consensus::disk::{BlockDevice, DeviceError, SECTOR_BYTES};
use alloc::format;
use alloc::string::String;

use crate::drivers::virtio::blk::{self, BlkDevice, ProbeError};

/// Sectors of the RAM fallback (512 KiB; the store compacts within it).
const RAM_SECTORS: u64 = 1024;

/// The device behind the Raft store. One lives per node, so the size gap between the variants
/// costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub enum Device {
    /// The node's virtio-blk disk: survives restarts.
    Disk(BlkDevice),
    /// No disk: RAM, lost at power-off.
    Ram(MemDevice),
}

impl Device {
    /// A human description for `raft` and the boot log (leaked once at boot: a `'static`
    /// string lets `raft` show it without locking the device).
    pub fn describe(&self) -> &'static str {
        let text: String = match self {
            Device::Disk(d) => format!("virtio-blk {} KiB", d.size_kib()),
            Device::Ram(_) => String::from("ram (not durable: no virtio-blk disk)"),
        };
        text.leak()
    }
}

impl BlockDevice for Device {
    fn sector_count(&self) -> u64 {
        match self {
            Device::Disk(d) => d.sector_count(),
            Device::Ram(d) => d.sector_count(),
        }
    }

    fn read_block(&mut self, lba: u64, buf: &mut [u8; SECTOR_BYTES]) -> Result<(), DeviceError> {
        match self {
            Device::Disk(d) => d.read_block(lba, buf),
            Device::Ram(d) => d.read_block(lba, buf),
        }
    }

    fn write_block(&mut self, lba: u64, buf: &[u8; SECTOR_BYTES]) -> Result<(), DeviceError> {
        match self {
            Device::Disk(d) => d.write_block(lba, buf),
            Device::Ram(d) => d.write_block(lba, buf),
        }
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        match self {
            Device::Disk(d) => d.flush(),
            Device::Ram(d) => d.flush(),
        }
    }
}

/// The device Raft should use on this node: its virtio-blk disk if it has one, else RAM.
pub fn open() -> Device {
    match blk::probe() {
        Ok(disk) => {
            log::info!(
                "raft: virtio-blk disk at {:?}, {} KiB",
                disk.location,
                disk.size_kib()
            );
            Device::Disk(disk)
        }
        Err(ProbeError::NotFound) => Device::Ram(MemDevice::new(RAM_SECTORS)),
        Err(err) => {
            log::warn!("raft: virtio-blk disk unusable ({err}); falling back to RAM");
            Device::Ram(MemDevice::new(RAM_SECTORS))
        }
    }
}
