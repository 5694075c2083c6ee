//! Crash records: a panic's own account, kept on the node's disk for the next boot.
//!
//! At a panic, [`record_panic`] fills a `kcore::crash_record::CrashRecord` (message,
//! location, RIP, CR2, exception vector and error code, backtrace return addresses, uptime,
//! boot id) without allocating, and [`persist`] writes it with the virtio-blk driver's
//! polled, allocation-free [`blk::panic_write`] to the disk's crash area (its last sectors,
//! outside the Raft store). At the next boot, [`check_previous_boot`] reads the area before
//! the cluster starts and, if a record is there that no boot has reported yet, says so
//! three ways: a `last panic: …` line on the console, a `last_panic` COM2 event, and
//! [`last_panic_note`] for the node's status reports (so the leader's `xylem status` shows
//! the crash). It then marks the record as reported. A torn or corrupt record fails its
//! checksum and is reported as corrupt, never trusted, then cleared.
//!
//! Neighbours: `panic.rs` (the handler), `drivers::virtio::blk` (the disk and its crash
//! area), `cluster::control` (reports), docs/observability.md (formats and the disk map).

use core::fmt::{self, Write};
use core::panic::PanicInfo;
use core::sync::atomic::{AtomicU64, Ordering};

use kcore::crash_record::{
    self, CrashRecord, Exception, Slot, KERNEL_TEXT_START, RECORD_BYTES, RECORD_SECTORS,
    SECTOR_BYTES,
};
use spin::Mutex;
use xylem::report::PanicNote;

use crate::arch::cpu::{self, without_interrupts};
use crate::arch::{backtrace, idt};
use crate::drivers::virtio::blk::{self, CrashAreaError};
use crate::{events, time};

/// This boot's id (random, never 0).
static BOOT_ID: AtomicU64 = AtomicU64::new(0);
/// What the previous boot's crash area said, for status reports.
static LAST: Mutex<Option<PanicNote>> = Mutex::new(None);

/// Draws this boot's id from the TSC (which differs at every boot, down to the cycle).
pub fn init_boot_id() -> u64 {
    // splitmix64: spreads the TSC's low-entropy high bits over the whole word.
    let mut z = cpu::rdtsc().wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    let id = (z ^ (z >> 31)).max(1);
    BOOT_ID.store(id, Ordering::Relaxed);
    id
}

/// This boot's id (0 before [`init_boot_id`]).
pub fn boot_id() -> u64 {
    BOOT_ID.load(Ordering::Relaxed)
}

/// Writes `text` with every whitespace character as `_`, so it fits one `key=value` of
/// the COM2 event format.
pub struct Underscored<'a>(pub &'a str);

impl fmt::Display for Underscored<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for c in self.0.chars() {
            f.write_char(if c.is_whitespace() { '_' } else { c })?;
        }
        Ok(())
    }
}

/// The crash record of the panic in progress; `rbp` is the panic handler's frame pointer.
/// Allocates nothing.
pub fn record_panic(info: &PanicInfo, rbp: u64) -> CrashRecord {
    let mut record = CrashRecord::new(boot_id(), time::now_us());
    if let Some(location) = info.location() {
        let _ = write!(record.location, "{}:{}", location.file(), location.line());
    }
    let _ = write!(record.message, "{}", info.message());
    backtrace::for_each_return_address(rbp, |addr| record.push_frame(addr));
    match idt::last_kernel_fault() {
        Some(fault) => {
            record.rip = fault.rip;
            record.cr2 = fault.cr2;
            record.exception = Some(Exception {
                vector: fault.vector,
                error_code: fault.error_code,
            });
        }
        None => {
            // No exception. The handler was called by core's `panic_fmt` (frame 0); frame 1
            // is where `panic_fmt` was called from: the panicking code, or one of core's
            // helpers (`unwrap` and the like) whose caller is frame 2.
            let frames = record.frames();
            record.rip = frames.get(1).or(frames.first()).copied().unwrap_or(0);
            record.cr2 = x86_64::registers::control::Cr2::read_raw();
        }
    }
    record
}

/// Writes `record` to the crash area (polled, allocation-free; the panic path).
pub fn persist(record: &CrashRecord) -> Result<(), CrashAreaError> {
    let mut sectors = [[0u8; SECTOR_BYTES]; RECORD_SECTORS];
    encode_into(record, &mut sectors);
    blk::panic_write(&sectors)
}

fn encode_into(record: &CrashRecord, sectors: &mut [[u8; SECTOR_BYTES]; RECORD_SECTORS]) {
    let mut flat = [0u8; RECORD_BYTES];
    record.encode(&mut flat);
    for (i, sector) in sectors.iter_mut().enumerate() {
        sector.copy_from_slice(&flat[i * SECTOR_BYTES..(i + 1) * SECTOR_BYTES]);
    }
}

/// The record's fields as COM2 `key=value`s (shared by the panic line and `last_panic`).
pub struct EventFields<'a>(pub &'a CrashRecord);

impl fmt::Display for EventFields<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let r = self.0;
        write!(f, "boot_id={:016x} uptime_us={}", r.boot_id, r.uptime_us)?;
        match r.exception {
            Some(e) => {
                write!(f, " vector={}", e.vector)?;
                if let Some(code) = e.error_code {
                    write!(f, " error_code={code:#x}")?;
                }
            }
            None => write!(f, " vector=none")?,
        }
        write!(
            f,
            " rip={:#x} rip_elf={:#x} cr2={:#x} frames=",
            r.rip,
            r.rip.wrapping_sub(KERNEL_TEXT_START),
            r.cr2
        )?;
        for (i, frame) in r.frames().iter().enumerate() {
            let sep = if i == 0 { "" } else { "," };
            write!(f, "{sep}{:#x}", frame.wrapping_sub(KERNEL_TEXT_START))?;
        }
        write!(
            f,
            " location={} message={}",
            Underscored(r.location.as_str()),
            Underscored(r.message.as_str())
        )
    }
}

/// Reads the previous boot's crash area and reports what it holds (call once, before the
/// cluster starts). A node without a disk has no crash records and says so in its log.
pub fn check_previous_boot() {
    if let Err(err) = blk::probe() {
        log::info!("crash records: none kept ({err})");
        return;
    }
    let mut flat = [0u8; RECORD_BYTES];
    for (i, sector) in flat
        .as_chunks_mut::<SECTOR_BYTES>()
        .0
        .iter_mut()
        .enumerate()
    {
        if let Err(err) = blk::crash_area_read(i as u64, sector) {
            log::warn!("crash records: cannot read the crash area: {err}");
            return;
        }
    }
    match crash_record::decode(&flat) {
        Slot::Blank => {}
        Slot::Valid(record) if record.reported_by.is_some() => log::info!(
            "crash records: the panic of boot {:016x} was reported before",
            record.boot_id
        ),
        Slot::Valid(record) => report_valid(&record),
        Slot::Corrupt(why) => report_corrupt(why),
    }
}

fn report_valid(record: &CrashRecord) {
    log::warn!("last panic: {record}");
    events::log_only(
        "last_panic",
        format_args!("status=valid {}", EventFields(record)),
    );
    let note = PanicNote::panicked(
        record.boot_id,
        record.uptime_us / 1000,
        record.exception.map(|e| e.vector),
        record.rip.wrapping_sub(KERNEL_TEXT_START),
        record.message.as_str(),
    );
    without_interrupts(|| *LAST.lock() = Some(note));
    let mut sectors = [[0u8; SECTOR_BYTES]; RECORD_SECTORS];
    encode_into(&record.reported(boot_id()), &mut sectors);
    if let Err(err) = blk::crash_area_write(&sectors) {
        log::warn!("crash records: cannot mark the record reported: {err}");
    }
}

fn report_corrupt(why: crash_record::Corruption) {
    log::warn!("last panic: crash record corrupt: {why}; not trusted");
    events::log_only(
        "last_panic",
        format_args!(
            "status=corrupt reason={}",
            Underscored(&alloc::format!("{why}"))
        ),
    );
    without_interrupts(|| *LAST.lock() = Some(PanicNote::CorruptRecord));
    // Cleared, so the next boot does not report it again.
    if let Err(err) = blk::crash_area_write(&[[0u8; SECTOR_BYTES]; RECORD_SECTORS]) {
        log::warn!("crash records: cannot clear the corrupt record: {err}");
    }
}

/// How the previous boot ended, if in a panic (for this node's status reports).
pub fn last_panic_note() -> Option<PanicNote> {
    without_interrupts(|| LAST.lock().clone())
}
