//! The virtio-blk disk (VIRTIO 1.1 section 5.2) that holds the Raft store: discovery on PCI
//! and a polled, synchronous [`BlockDevice`] over `virtio_drivers::device::blk::VirtIOBlk`.
//!
//! Raft persists before it sends (see `cluster::consensus`), so every request waits for its
//! completion by polling the used ring; the device's interrupts are switched off (its INTx
//! line may be shared with the network card, whose handler would not acknowledge ours).
//! Data moves through one page of the DMA pool ([`Bounce`]) so a caller's buffer never has
//! to be physically contiguous. Every device failure becomes a typed [`DeviceError`]; no
//! I/O path panics.

use ::consensus::disk::{BlockDevice, DeviceError, SECTOR_BYTES};
use core::sync::atomic::{AtomicU64, Ordering};
use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::pci::bus::{Command, DeviceFunction};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceType, Transport};

use super::hal::KernelHal;
use crate::drivers::pci::{self, PortCam};
use crate::mm::dma;

const _: () = assert!(
    SECTOR_SIZE == SECTOR_BYTES,
    "virtio-blk and the Raft store agree on sectors"
);

type Disk = VirtIOBlk<KernelHal, PciTransport>;

/// Requests completed (reads, writes, flushes) and the µs spent waiting for them.
static REQUESTS: AtomicU64 = AtomicU64::new(0);
static BUSY_US: AtomicU64 = AtomicU64::new(0);

/// (requests, total µs waited): how much of a commit the disk costs (`raft` shows it).
pub fn stats() -> (u64, u64) {
    (
        REQUESTS.load(Ordering::Relaxed),
        BUSY_US.load(Ordering::Relaxed),
    )
}

/// Runs one request and counts it.
fn timed<T>(request: impl FnOnce() -> T) -> T {
    let start_us = crate::time::now_us();
    let result = request();
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    BUSY_US.fetch_add(
        crate::time::now_us().saturating_sub(start_us),
        Ordering::Relaxed,
    );
    result
}

/// Why no disk came up.
#[derive(Debug)]
pub enum ProbeError {
    /// No virtio-blk function on bus 0.
    NotFound,
    /// virtio-drivers refused the transport.
    Transport(virtio_drivers::transport::pci::VirtioPciError),
    /// virtio-drivers refused the device.
    Device(virtio_drivers::Error),
    /// The disk is read-only: the store cannot persist.
    ReadOnly,
    /// The DMA pool has no page for the bounce buffer.
    NoDmaPage,
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProbeError::NotFound => write!(f, "no virtio-blk disk on PCI bus 0"),
            ProbeError::Transport(err) => write!(f, "virtio PCI transport: {err}"),
            ProbeError::Device(err) => write!(f, "virtio-blk: {err}"),
            ProbeError::ReadOnly => write!(f, "the disk is read-only"),
            ProbeError::NoDmaPage => write!(f, "no DMA page for the sector buffer"),
        }
    }
}

/// One DMA-pool page used as the sector buffer of every request.
struct Bounce {
    phys: u64,
    virt: u64,
}

impl Bounce {
    fn sector(&mut self) -> &mut [u8; SECTOR_BYTES] {
        // SAFETY: `virt` maps a page of the DMA pool owned by this struct alone (allocated
        // in `probe`, freed in `drop`), and a page holds more than one sector.
        unsafe { &mut *(self.virt as *mut [u8; SECTOR_BYTES]) }
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        dma::free(self.phys, 1);
    }
}

/// A probed and initialised disk.
pub struct BlkDevice {
    disk: Disk,
    bounce: Bounce,
    sectors: u64,
    /// Where the disk sits on the bus.
    pub location: DeviceFunction,
}

/// Finds the first virtio-blk function, enables it and sets up its queue (interrupts off).
pub fn probe() -> Result<BlkDevice, ProbeError> {
    let found = pci::enumerate()
        .into_iter()
        .find(|d| d.vendor_id == 0x1af4 && super::device_type(d) == Some(DeviceType::Block))
        .ok_or(ProbeError::NotFound)?;
    let df = found.function;
    let mut root = pci::root();
    let (_, command) = root.get_status_command(df);
    root.set_command(df, command | Command::MEMORY_SPACE | Command::BUS_MASTER);
    let transport =
        PciTransport::new::<KernelHal, PortCam>(&mut root, df).map_err(ProbeError::Transport)?;
    assert_eq!(transport.device_type(), DeviceType::Block);
    let mut disk = Disk::new(transport).map_err(ProbeError::Device)?;
    if disk.readonly() {
        return Err(ProbeError::ReadOnly);
    }
    disk.disable_interrupts();
    let (phys, virt) = dma::alloc_zeroed(1).ok_or(ProbeError::NoDmaPage)?;
    let sectors = disk.capacity();
    Ok(BlkDevice {
        disk,
        bounce: Bounce { phys, virt },
        sectors,
        location: df,
    })
}

impl BlkDevice {
    /// Capacity in KiB (for `describe`).
    pub fn size_kib(&self) -> u64 {
        self.sectors / 2
    }

    fn check(&self, lba: u64) -> Result<usize, DeviceError> {
        if lba >= self.sectors {
            return Err(DeviceError::OutOfRange { lba });
        }
        usize::try_from(lba).map_err(|_| DeviceError::OutOfRange { lba })
    }
}

impl BlockDevice for BlkDevice {
    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn read_block(&mut self, lba: u64, buf: &mut [u8; SECTOR_BYTES]) -> Result<(), DeviceError> {
        let block = self.check(lba)?;
        let bounce = self.bounce.sector();
        let disk = &mut self.disk;
        timed(|| disk.read_blocks(block, bounce)).map_err(|_| DeviceError::Io { lba })?;
        buf.copy_from_slice(bounce);
        Ok(())
    }

    fn write_block(&mut self, lba: u64, buf: &[u8; SECTOR_BYTES]) -> Result<(), DeviceError> {
        let block = self.check(lba)?;
        let bounce = self.bounce.sector();
        bounce.copy_from_slice(buf);
        let disk = &mut self.disk;
        timed(|| disk.write_blocks(block, bounce)).map_err(|_| DeviceError::Io { lba })
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        // A flush names no sector; u64::MAX marks "the flush itself" in the error.
        timed(|| self.disk.flush()).map_err(|_| DeviceError::Io { lba: u64::MAX })
    }
}
