//! The virtio-blk disk (VIRTIO 1.1 section 5.2) that holds the Raft store: discovery on PCI
//! and a polled, synchronous [`BlockDevice`] over `virtio_drivers::device::blk::VirtIOBlk`.
//!
//! Raft persists before it sends (see `cluster::consensus`), so every request waits for its
//! completion by polling the used ring; the device's interrupts are switched off (its INTx
//! line may be shared with the network card, whose handler would not acknowledge ours).
//! Data moves through one page of the DMA pool ([`Bounce`]) so a caller's buffer never has
//! to be physically contiguous. Every device failure becomes a typed [`DeviceError`]; no
//! I/O path panics.
//!
//! The device lives in one static slot ([`DISK`]) and every request takes it with interrupts
//! masked, so a request is never interrupted half-way and the slot is free whenever no
//! request runs. That is what lets the panic handler write a crash record with
//! [`panic_write`]: it takes the slot without waiting (if a request was under way, the panic
//! struck inside it and nothing is written), and issues polled, allocation-free writes.
//!
//! The disk is split in two views: the Raft store sees every sector but the last
//! [`CRASH_AREA_SECTORS`] (its [`BlockDevice::sector_count`] is smaller), which hold crash
//! records (`kcore::crash_record`, docs/observability.md).

use ::consensus::disk::{BlockDevice, DeviceError, SECTOR_BYTES};
use core::sync::atomic::{AtomicU64, Ordering};
use spin::Mutex;
use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::pci::bus::{Command, DeviceFunction};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceType, Transport};

use super::hal::KernelHal;
use crate::arch::cpu::without_interrupts;
use crate::drivers::pci::{self, PortCam};
use crate::mm::dma;

/// Sectors at the end of the disk kept for crash records, out of the Raft store's view.
pub const CRASH_AREA_SECTORS: u64 = kcore::crash_record::AREA_SECTORS;

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

/// The probed disk: the device and its bounce page, taken one request at a time.
struct Inner {
    disk: Disk,
    bounce: Bounce,
    sectors: u64,
    location: DeviceFunction,
}

/// The one disk, once probed.
static DISK: Mutex<Option<Inner>> = Mutex::new(None);

/// A handle to the probed disk, as the Raft store sees it: every sector before the crash
/// area. Requests go through the shared slot, one at a time.
pub struct BlkDevice {
    /// Sectors of the store's view.
    sectors: u64,
    /// The whole disk.
    total_sectors: u64,
    /// Where the disk sits on the bus.
    pub location: DeviceFunction,
}

/// Finds the first virtio-blk function, enables it and sets up its queue (interrupts off);
/// on later calls, returns another handle to the disk already probed.
pub fn probe() -> Result<BlkDevice, ProbeError> {
    let known = without_interrupts(|| {
        DISK.lock()
            .as_ref()
            .map(|inner| (inner.sectors, inner.location))
    });
    if let Some((total, location)) = known {
        return Ok(BlkDevice::new(total, location));
    }
    let inner = probe_device()?;
    let (total, location) = (inner.sectors, inner.location);
    without_interrupts(|| *DISK.lock() = Some(inner));
    Ok(BlkDevice::new(total, location))
}

fn probe_device() -> Result<Inner, ProbeError> {
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
    Ok(Inner {
        disk,
        bounce: Bounce { phys, virt },
        sectors,
        location: df,
    })
}

/// Runs one request on the disk with interrupts masked.
fn with_disk<T>(
    request: impl FnOnce(&mut Inner) -> Result<T, DeviceError>,
) -> Result<T, DeviceError> {
    without_interrupts(|| match DISK.lock().as_mut() {
        Some(inner) => request(inner),
        // Handles exist only after a successful probe, which filled the slot for good.
        None => unreachable!("a BlkDevice handle without a probed disk"),
    })
}

impl Inner {
    fn read(&mut self, lba: u64, buf: &mut [u8; SECTOR_BYTES]) -> Result<(), DeviceError> {
        let block = usize::try_from(lba).map_err(|_| DeviceError::OutOfRange { lba })?;
        let bounce = self.bounce.sector();
        let disk = &mut self.disk;
        timed(|| disk.read_blocks(block, bounce)).map_err(|_| DeviceError::Io { lba })?;
        buf.copy_from_slice(bounce);
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8; SECTOR_BYTES]) -> Result<(), DeviceError> {
        let block = usize::try_from(lba).map_err(|_| DeviceError::OutOfRange { lba })?;
        let bounce = self.bounce.sector();
        bounce.copy_from_slice(buf);
        let disk = &mut self.disk;
        timed(|| disk.write_blocks(block, bounce)).map_err(|_| DeviceError::Io { lba })
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        // A flush names no sector; u64::MAX marks "the flush itself" in the error.
        timed(|| self.disk.flush()).map_err(|_| DeviceError::Io { lba: u64::MAX })
    }

    /// The first sector of the crash area.
    fn crash_area_start(&self) -> Option<u64> {
        self.sectors.checked_sub(CRASH_AREA_SECTORS)
    }
}

impl BlkDevice {
    fn new(total_sectors: u64, location: DeviceFunction) -> BlkDevice {
        BlkDevice {
            sectors: total_sectors.saturating_sub(CRASH_AREA_SECTORS),
            total_sectors,
            location,
        }
    }

    /// Capacity of the whole disk in KiB (for `describe`).
    pub fn size_kib(&self) -> u64 {
        self.total_sectors / 2
    }

    fn check(&self, lba: u64) -> Result<u64, DeviceError> {
        if lba >= self.sectors {
            return Err(DeviceError::OutOfRange { lba });
        }
        Ok(lba)
    }
}

impl BlockDevice for BlkDevice {
    fn sector_count(&self) -> u64 {
        self.sectors
    }

    fn read_block(&mut self, lba: u64, buf: &mut [u8; SECTOR_BYTES]) -> Result<(), DeviceError> {
        let lba = self.check(lba)?;
        with_disk(|d| d.read(lba, buf))
    }

    fn write_block(&mut self, lba: u64, buf: &[u8; SECTOR_BYTES]) -> Result<(), DeviceError> {
        let lba = self.check(lba)?;
        with_disk(|d| d.write(lba, buf))
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        with_disk(Inner::flush)
    }
}

/// Why the crash area could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashAreaError {
    /// No disk was probed (or it is smaller than the area).
    NoDisk,
    /// The panic struck while a disk request was under way; the device is mid-request.
    Busy,
    /// The device failed.
    Device(DeviceError),
}

impl core::fmt::Display for CrashAreaError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            CrashAreaError::NoDisk => write!(f, "no virtio-blk disk"),
            CrashAreaError::Busy => write!(f, "the panic struck inside a disk request"),
            CrashAreaError::Device(e) => write!(f, "disk error {e:?}"),
        }
    }
}

/// Reads sector `index` of the crash area (normal context: waits for the disk).
pub fn crash_area_read(index: u64, buf: &mut [u8; SECTOR_BYTES]) -> Result<(), CrashAreaError> {
    assert!(
        index < CRASH_AREA_SECTORS,
        "sector {index} is outside the crash area"
    );
    without_interrupts(|| {
        let mut slot = DISK.lock();
        let inner = slot.as_mut().ok_or(CrashAreaError::NoDisk)?;
        let start = inner.crash_area_start().ok_or(CrashAreaError::NoDisk)?;
        inner
            .read(start + index, buf)
            .map_err(CrashAreaError::Device)
    })
}

/// Writes `sectors` at the start of the crash area and flushes (normal context).
pub fn crash_area_write(sectors: &[[u8; SECTOR_BYTES]]) -> Result<(), CrashAreaError> {
    without_interrupts(|| {
        let mut slot = DISK.lock();
        write_area(slot.as_mut().ok_or(CrashAreaError::NoDisk)?, sectors)
    })
}

/// The panic path's write: like [`crash_area_write`], but never waits for the slot (the
/// interrupted code may hold it) and allocates nothing: the sectors go through the bounce
/// page, the request header lives on this stack, completion is polled.
pub fn panic_write(sectors: &[[u8; SECTOR_BYTES]]) -> Result<(), CrashAreaError> {
    let mut slot = DISK.try_lock().ok_or(CrashAreaError::Busy)?;
    write_area(slot.as_mut().ok_or(CrashAreaError::NoDisk)?, sectors)
}

fn write_area(inner: &mut Inner, sectors: &[[u8; SECTOR_BYTES]]) -> Result<(), CrashAreaError> {
    assert!(
        sectors.len() as u64 <= CRASH_AREA_SECTORS,
        "{} sectors do not fit the crash area",
        sectors.len()
    );
    let start = inner.crash_area_start().ok_or(CrashAreaError::NoDisk)?;
    for (i, sector) in sectors.iter().enumerate() {
        inner
            .write(start + i as u64, sector)
            .map_err(CrashAreaError::Device)?;
    }
    inner.flush().map_err(CrashAreaError::Device)
}
