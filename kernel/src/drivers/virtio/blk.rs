//! The virtio-blk disk (VIRTIO 1.1 section 5.2) that holds the Raft store: discovery on PCI
//! and a polled, synchronous [`BlockDevice`] over `virtio_drivers::device::blk::VirtIOBlk`.
//!
//! Raft persists before it sends (see `cluster::consensus`), so every request waits for its
//! completion by polling the used ring. Durability: [`BlockDevice::flush`] issues
//! `VIRTIO_BLK_T_FLUSH` when the device offers `VIRTIO_BLK_F_FLUSH` (QEMU does whenever its
//! cache mode keeps a volatile write cache, e.g. `cache=writeback`, and then the host
//! `fdatasync`s); a device without the feature is write-through (section 5.2.6.2: each
//! completed write is already durable). [`flush_mode`] says which, for `raft`.
//!
//! Interrupts: the device's INTx line may be shared with the network card. We ask for no
//! interrupts (`VIRTQ_AVAIL_F_NO_INTERRUPT`), and so that the device honours that, we do
//! not negotiate `VIRTIO_F_EVENT_IDX` (with it, the flag is ignored and only the used-event
//! index counts, which virtio-drivers never moves out of the way): [`BlkTransport`] hides
//! the feature. In case a device interrupts anyway, every request ends by reading our own
//! ISR status (section 4.1.4.5), which deasserts the line; we never rely on the NIC's
//! handler to do it. Data moves through one page of the DMA pool ([`Bounce`]) so a caller's
//! buffer never has to be physically contiguous. Every device failure becomes a typed
//! [`DeviceError`]; no I/O path panics.

use ::consensus::disk::{BlockDevice, DeviceError, SECTOR_BYTES};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use virtio_drivers::device::blk::{VirtIOBlk, SECTOR_SIZE};
use virtio_drivers::transport::pci::bus::{Command, DeviceFunction};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{PhysAddr, Result as VirtioResult};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::hal::KernelHal;
use crate::drivers::pci::{self, PortCam};
use crate::mm::dma;

const _: () = assert!(
    SECTOR_SIZE == SECTOR_BYTES,
    "virtio-blk and the Raft store agree on sectors"
);

type Disk = VirtIOBlk<KernelHal, BlkTransport>;

/// `VIRTIO_F_EVENT_IDX` (VIRTIO 1.1 section 6): never negotiated, see the module docs.
const F_EVENT_IDX: u64 = 1 << 29;
/// `VIRTIO_BLK_F_FLUSH` (section 5.2.3).
const F_FLUSH: u64 = 1 << 9;

/// Whether the device offered (and virtio-drivers therefore negotiated) FLUSH.
static FLUSH_NEGOTIATED: AtomicBool = AtomicBool::new(false);

/// How this node's disk makes writes durable, for `raft`.
pub fn flush_mode() -> &'static str {
    if FLUSH_NEGOTIATED.load(Ordering::Relaxed) {
        "flush: VIRTIO_BLK_T_FLUSH after each batch"
    } else {
        "flush: none offered (write-through device)"
    }
}

/// The PCI transport with `VIRTIO_F_EVENT_IDX` hidden from the feature negotiation, so the
/// device honours our "no interrupts" flag (the module docs say why). Everything else is
/// passed through.
pub struct BlkTransport(PciTransport);

impl Transport for BlkTransport {
    fn device_type(&self) -> DeviceType {
        self.0.device_type()
    }
    fn read_device_features(&mut self) -> u64 {
        let features = self.0.read_device_features();
        FLUSH_NEGOTIATED.store(features & F_FLUSH != 0, Ordering::Relaxed);
        features & !F_EVENT_IDX
    }
    fn write_driver_features(&mut self, driver_features: u64) {
        debug_assert_eq!(driver_features & F_EVENT_IDX, 0);
        self.0.write_driver_features(driver_features);
    }
    fn max_queue_size(&mut self, queue: u16) -> u32 {
        self.0.max_queue_size(queue)
    }
    fn notify(&mut self, queue: u16) {
        self.0.notify(queue);
    }
    fn get_status(&self) -> DeviceStatus {
        self.0.get_status()
    }
    fn set_status(&mut self, status: DeviceStatus) {
        self.0.set_status(status);
    }
    fn set_guest_page_size(&mut self, guest_page_size: u32) {
        self.0.set_guest_page_size(guest_page_size);
    }
    fn requires_legacy_layout(&self) -> bool {
        self.0.requires_legacy_layout()
    }
    fn queue_set(
        &mut self,
        queue: u16,
        size: u32,
        descriptors: PhysAddr,
        driver_area: PhysAddr,
        device_area: PhysAddr,
    ) {
        self.0
            .queue_set(queue, size, descriptors, driver_area, device_area);
    }
    fn queue_unset(&mut self, queue: u16) {
        self.0.queue_unset(queue);
    }
    fn queue_used(&mut self, queue: u16) -> bool {
        self.0.queue_used(queue)
    }
    fn ack_interrupt(&mut self) -> InterruptStatus {
        self.0.ack_interrupt()
    }
    fn read_config_generation(&self) -> u32 {
        self.0.read_config_generation()
    }
    fn read_config_space<T: FromBytes + IntoBytes>(&self, offset: usize) -> VirtioResult<T> {
        self.0.read_config_space(offset)
    }
    fn write_config_space<T: IntoBytes + Immutable>(
        &mut self,
        offset: usize,
        value: T,
    ) -> VirtioResult<()> {
        self.0.write_config_space(offset, value)
    }
}

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

/// Runs one request on `disk`, reads our ISR (deasserting the line should the device have
/// raised it anyway), and counts it.
fn timed<T>(disk: &mut Disk, request: impl FnOnce(&mut Disk) -> T) -> T {
    let start_us = crate::time::now_us();
    let result = request(disk);
    let _ = disk.ack_interrupt();
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
    let mut disk = Disk::new(BlkTransport(transport)).map_err(ProbeError::Device)?;
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
        timed(&mut self.disk, |disk| disk.read_blocks(block, bounce))
            .map_err(|_| DeviceError::Io { lba })?;
        buf.copy_from_slice(bounce);
        Ok(())
    }

    fn write_block(&mut self, lba: u64, buf: &[u8; SECTOR_BYTES]) -> Result<(), DeviceError> {
        let block = self.check(lba)?;
        let bounce = self.bounce.sector();
        bounce.copy_from_slice(buf);
        timed(&mut self.disk, |disk| disk.write_blocks(block, bounce))
            .map_err(|_| DeviceError::Io { lba })
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        // A flush names no sector; u64::MAX marks "the flush itself" in the error.
        timed(&mut self.disk, |disk| disk.flush()).map_err(|_| DeviceError::Io { lba: u64::MAX })
    }
}
