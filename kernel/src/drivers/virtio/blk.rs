//! The virtio-blk disk (VIRTIO 1.1 section 5.2) that holds the Raft store and the crash
//! records: discovery on PCI and a synchronous [`BlockDevice`] on a `virtio_drivers` queue,
//! one request at a time.
//!
//! Raft persists before it sends (see `cluster::consensus`), so every request waits for its
//! completion. It does not busy-wait for long: after [`SPIN_US`] of polling the used ring
//! the calling task sleeps a tick at a time. A host `fdatasync` behind a flush can take
//! hundreds of milliseconds on a busy machine; spinning through it would burn the CPU the
//! reactor and the cells need and keep the vCPU from ever idling (under TCG the emulator's
//! own I/O thread then waits for it). Durability: [`BlockDevice::flush`] issues
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
//!
//! The device lives in one static slot ([`DISK`]); a request holds it from submission to
//! completion, so the slot is free whenever no request runs. That is what lets the panic
//! handler write a crash record with [`panic_write`]: it takes the slot without waiting (if
//! a request was under way, the panic struck inside it and nothing is written), and issues
//! polled, allocation-free writes that never sleep.
//!
//! The disk is split in two views: the Raft store sees every sector but the last
//! [`CRASH_AREA_SECTORS`] (its [`BlockDevice::sector_count`] is smaller), which hold crash
//! records (`kcore::crash_record`, docs/observability.md).

use ::consensus::disk::{BlockDevice, DeviceError, SECTOR_BYTES};
use core::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use spin::{Mutex, MutexGuard};
use virtio_drivers::queue::VirtQueue;
use virtio_drivers::transport::pci::bus::{Command, DeviceFunction};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceStatus, DeviceType, InterruptStatus, Transport};
use virtio_drivers::{PhysAddr, Result as VirtioResult};
use zerocopy::{FromBytes, Immutable, IntoBytes};

use super::hal::KernelHal;
use crate::drivers::pci::{self, PortCam};
use crate::mm::dma;
use crate::{sched, time};

/// Sectors at the end of the disk kept for crash records, out of the Raft store's view.
pub const CRASH_AREA_SECTORS: u64 = kcore::crash_record::AREA_SECTORS;

/// Descriptors in the request queue (one request of three buffers at a time needs three).
const QUEUE_SIZE: usize = 4;
/// How long a request is polled before the task sleeps between polls.
pub const SPIN_US: u64 = 200;
/// Request types (section 5.2.6).
const T_IN: u32 = 0;
const T_OUT: u32 = 1;
const T_FLUSH: u32 = 4;
/// `VIRTIO_BLK_F_RO` (section 5.2.3).
const F_RO: u64 = 1 << 5;
/// `VIRTIO_F_VERSION_1` (section 6).
const F_VERSION_1: u64 = 1 << 32;
/// Where the request header and the status byte live in the bounce page, after the sector.
const HEADER_AT: usize = SECTOR_BYTES;
const STATUS_AT: usize = SECTOR_BYTES + 16;

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
static MAX_US: AtomicU64 = AtomicU64::new(0);

/// (requests, total µs waited, longest wait in µs): how much of a commit the disk costs
/// (`raft` shows it).
pub fn stats() -> (u64, u64, u64) {
    (
        REQUESTS.load(Ordering::Relaxed),
        BUSY_US.load(Ordering::Relaxed),
        MAX_US.load(Ordering::Relaxed),
    )
}

/// Why no disk came up.
#[derive(Debug)]
pub enum ProbeError {
    /// No virtio-blk function on bus 0.
    NotFound,
    /// virtio-drivers refused the transport.
    Transport(virtio_drivers::transport::pci::VirtioPciError),
    /// virtio-drivers refused the device's queue.
    Device(virtio_drivers::Error),
    /// The device does not speak VIRTIO 1.0 or later.
    Legacy,
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
            ProbeError::Legacy => write!(f, "virtio-blk: not a VIRTIO 1.0 device"),
            ProbeError::ReadOnly => write!(f, "the disk is read-only"),
            ProbeError::NoDmaPage => write!(f, "no DMA page for the sector buffer"),
        }
    }
}

/// One DMA-pool page holding every request's sector, header and status byte.
struct Bounce {
    phys: u64,
    virt: u64,
}

impl Bounce {
    fn page(&mut self) -> &mut [u8; 4096] {
        // SAFETY: `virt` maps a page of the DMA pool owned by this struct alone (allocated
        // in `probe`, freed in `drop`).
        unsafe { &mut *(self.virt as *mut [u8; 4096]) }
    }
}

impl Drop for Bounce {
    fn drop(&mut self) {
        dma::free(self.phys, 1);
    }
}

/// The probed disk: transport, queue and bounce page, taken one request at a time.
struct Inner {
    transport: BlkTransport,
    queue: VirtQueue<KernelHal, QUEUE_SIZE>,
    bounce: Bounce,
    /// Sectors of the whole disk.
    sectors: u64,
    location: DeviceFunction,
}

/// The one disk, once probed.
static DISK: Mutex<Option<Inner>> = Mutex::new(None);

/// How a request waits for the device.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Poll for [`SPIN_US`], then sleep a tick at a time (normal context).
    MaySleep,
    /// Poll only (the panic path: nothing may sleep there).
    Spin,
}

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

/// Finds the first virtio-blk function, negotiates (FLUSH and RO if offered, never
/// EVENT_IDX), sets up its queue with interrupts off, and reads its capacity; on later
/// calls, returns another handle to the disk already probed.
pub fn probe() -> Result<BlkDevice, ProbeError> {
    let known = lock_disk()
        .as_ref()
        .map(|inner| (inner.sectors, inner.location));
    if let Some((total, location)) = known {
        return Ok(BlkDevice::new(total, location));
    }
    let inner = probe_device()?;
    let (total, location) = (inner.sectors, inner.location);
    *lock_disk() = Some(inner);
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
    let mut transport = BlkTransport(transport);
    // VIRTIO 1.1 section 3.1.1, the steps `Transport::begin_init` takes.
    transport.set_status(DeviceStatus::empty());
    transport.set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER);
    let offered = transport.read_device_features();
    if offered & F_VERSION_1 == 0 {
        return Err(ProbeError::Legacy);
    }
    if offered & F_RO != 0 {
        return Err(ProbeError::ReadOnly);
    }
    transport.write_driver_features(offered & (F_FLUSH | F_VERSION_1));
    transport
        .set_status(DeviceStatus::ACKNOWLEDGE | DeviceStatus::DRIVER | DeviceStatus::FEATURES_OK);
    let low: u32 = transport.read_config_space(0).map_err(ProbeError::Device)?;
    let high: u32 = transport.read_config_space(4).map_err(ProbeError::Device)?;
    let sectors = u64::from(low) | (u64::from(high) << 32);
    let mut queue = VirtQueue::new(&mut transport, 0, false, false).map_err(ProbeError::Device)?;
    transport.finish_init();
    queue.set_dev_notify(false);
    let (phys, virt) = dma::alloc_zeroed(1).ok_or(ProbeError::NoDmaPage)?;
    Ok(Inner {
        transport,
        queue,
        bounce: Bounce { phys, virt },
        sectors,
        location: df,
    })
}

impl Inner {
    /// The first sector of the crash area.
    fn crash_area_start(&self) -> Option<u64> {
        self.sectors.checked_sub(CRASH_AREA_SECTORS)
    }

    fn read(
        &mut self,
        lba: u64,
        buf: &mut [u8; SECTOR_BYTES],
        wait: Wait,
    ) -> Result<(), DeviceError> {
        if !self.request(T_IN, lba, wait) {
            return Err(DeviceError::Io { lba });
        }
        buf.copy_from_slice(&self.bounce.page()[..SECTOR_BYTES]);
        Ok(())
    }

    fn write(&mut self, lba: u64, buf: &[u8; SECTOR_BYTES], wait: Wait) -> Result<(), DeviceError> {
        self.bounce.page()[..SECTOR_BYTES].copy_from_slice(buf);
        if !self.request(T_OUT, lba, wait) {
            return Err(DeviceError::Io { lba });
        }
        Ok(())
    }

    fn flush(&mut self, wait: Wait) -> Result<(), DeviceError> {
        // Without VIRTIO_BLK_F_FLUSH the device is write-through: nothing to do.
        if !FLUSH_NEGOTIATED.load(Ordering::Relaxed) {
            return Ok(());
        }
        // A flush names no sector; u64::MAX marks "the flush itself" in the error.
        if !self.request(T_FLUSH, 0, wait) {
            return Err(DeviceError::Io { lba: u64::MAX });
        }
        Ok(())
    }

    /// Runs one request (`kind` on `sector`, with the bounce page's sector as data for
    /// reads and writes) and waits for it; true when the device reports success.
    fn request(&mut self, kind: u32, sector: u64, wait: Wait) -> bool {
        let start_us = time::now_us();
        let page = self.bounce.page();
        page[HEADER_AT..HEADER_AT + 4].copy_from_slice(&kind.to_le_bytes());
        page[HEADER_AT + 4..HEADER_AT + 8].copy_from_slice(&0u32.to_le_bytes());
        page[HEADER_AT + 8..HEADER_AT + 16].copy_from_slice(&sector.to_le_bytes());
        page[STATUS_AT] = 0xff;
        let (data, rest) = page.split_at_mut(SECTOR_BYTES);
        let (header, rest) = rest.split_at_mut(16);
        let status = &mut rest[..1];
        let (queue, transport) = (&mut self.queue, &mut self.transport);
        let ok = match kind {
            T_IN => submit_wait(queue, transport, &[header], &mut [data, status], wait),
            T_OUT => submit_wait(queue, transport, &[header, data], &mut [status], wait),
            _ => submit_wait(queue, transport, &[header], &mut [status], wait),
        };
        // Should the device have raised its line anyway, reading our ISR lowers it.
        let _ = self.transport.ack_interrupt();
        let waited_us = time::now_us().saturating_sub(start_us);
        REQUESTS.fetch_add(1, Ordering::Relaxed);
        BUSY_US.fetch_add(waited_us, Ordering::Relaxed);
        MAX_US.fetch_max(waited_us, Ordering::Relaxed);
        ok && self.bounce.page()[STATUS_AT] == 0
    }
}

/// Adds the buffers, notifies, waits for the device to use them, and pops them.
fn submit_wait<'a>(
    queue: &mut VirtQueue<KernelHal, QUEUE_SIZE>,
    transport: &mut BlkTransport,
    inputs: &'a [&'a [u8]],
    outputs: &'a mut [&'a mut [u8]],
    wait: Wait,
) -> bool {
    // SAFETY: the buffers are borrowed until `pop_used` below returns, and this function
    // does not return before it does (or before `add` failed, when nothing was queued).
    let token = match unsafe { queue.add(inputs, outputs) } {
        Ok(token) => token,
        Err(_) => return false,
    };
    if queue.should_notify() {
        transport.notify(0);
    }
    wait_until(|| queue.can_pop(), wait);
    // SAFETY: the same buffers as were passed to `add` with this token, unaccessed since.
    unsafe { queue.pop_used(token, inputs, outputs) }.is_ok()
}

/// Polls `done` for [`SPIN_US`], then sleeps a tick at a time between polls — except on the
/// idle task (the boot path opens the store there) and on the panic path, which must never
/// sleep.
fn wait_until(mut done: impl FnMut() -> bool, wait: Wait) {
    let spin_until_us = time::now_us() + SPIN_US;
    while !done() {
        if wait == Wait::Spin
            || time::now_us() < spin_until_us
            || sched::current_id() == sched::IDLE_TASK
        {
            core::hint::spin_loop();
        } else {
            sched::sleep_until_us(time::now_us() + 1000);
        }
    }
}

/// Takes the disk slot for one request in normal context. The slot is held across the
/// request's sleeps, so a second caller waits for it by sleeping too, never by spinning
/// with interrupts masked (the holder must get the CPU back to finish).
fn lock_disk() -> MutexGuard<'static, Option<Inner>> {
    loop {
        if let Some(guard) = DISK.try_lock() {
            return guard;
        }
        if sched::current_id() == sched::IDLE_TASK {
            core::hint::spin_loop();
        } else {
            sched::sleep_until_us(time::now_us() + 1000);
        }
    }
}

/// Runs one request on the disk in normal context.
fn with_disk<T>(
    request: impl FnOnce(&mut Inner) -> Result<T, DeviceError>,
) -> Result<T, DeviceError> {
    match lock_disk().as_mut() {
        Some(inner) => request(inner),
        // Handles exist only after a successful probe, which filled the slot for good.
        None => unreachable!("a BlkDevice handle without a probed disk"),
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
        with_disk(|d| d.read(lba, buf, Wait::MaySleep))
    }

    fn write_block(&mut self, lba: u64, buf: &[u8; SECTOR_BYTES]) -> Result<(), DeviceError> {
        let lba = self.check(lba)?;
        with_disk(|d| d.write(lba, buf, Wait::MaySleep))
    }

    fn flush(&mut self) -> Result<(), DeviceError> {
        with_disk(|d| d.flush(Wait::MaySleep))
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
    let mut slot = lock_disk();
    let inner = slot.as_mut().ok_or(CrashAreaError::NoDisk)?;
    let start = inner.crash_area_start().ok_or(CrashAreaError::NoDisk)?;
    inner
        .read(start + index, buf, Wait::MaySleep)
        .map_err(CrashAreaError::Device)
}

/// Writes `sectors` at the start of the crash area and flushes (normal context).
pub fn crash_area_write(sectors: &[[u8; SECTOR_BYTES]]) -> Result<(), CrashAreaError> {
    let mut slot = lock_disk();
    write_area(
        slot.as_mut().ok_or(CrashAreaError::NoDisk)?,
        sectors,
        Wait::MaySleep,
    )
}

/// The panic path's write: like [`crash_area_write`], but never waits for the slot (the
/// interrupted code may hold it) and allocates nothing: the sectors go through the bounce
/// page, the request header lives on this stack, completion is polled.
pub fn panic_write(sectors: &[[u8; SECTOR_BYTES]]) -> Result<(), CrashAreaError> {
    let mut slot = DISK.try_lock().ok_or(CrashAreaError::Busy)?;
    write_area(
        slot.as_mut().ok_or(CrashAreaError::NoDisk)?,
        sectors,
        Wait::Spin,
    )
}

fn write_area(
    inner: &mut Inner,
    sectors: &[[u8; SECTOR_BYTES]],
    wait: Wait,
) -> Result<(), CrashAreaError> {
    assert!(
        sectors.len() as u64 <= CRASH_AREA_SECTORS,
        "{} sectors do not fit the crash area",
        sectors.len()
    );
    let start = inner.crash_area_start().ok_or(CrashAreaError::NoDisk)?;
    for (i, sector) in sectors.iter().enumerate() {
        inner
            .write(start + i as u64, sector, wait)
            .map_err(CrashAreaError::Device)?;
    }
    inner.flush(wait).map_err(CrashAreaError::Device)
}
