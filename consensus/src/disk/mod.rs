//! Durable Raft storage: a small log-structured store over a 512-byte-sector block device.
//!
//! Key types: [`BlockDevice`] (the kernel implements it with virtio-blk; [`mem::MemDevice`]
//! is the in-memory one with crash/tear injection), [`DiskStore`], [`RecoveryReport`].
//!
//! Layout: sectors 0 and 1 hold two superblock copies; the rest is split into two equal
//! regions. Generation `g` lives in region `g % 2` and is described by superblock slot
//! `g % 2`. Each persist call appends one *batch* of records at a sector boundary (padded with
//! zeros to the next boundary), so a torn write can never damage an earlier, flushed batch.
//! A record is a 16-byte header (magic u16, kind u8, 0 u8, generation u32, payload length u32,
//! CRC32C u32 over the first 12 header bytes and the payload) followed by the payload.
//!
//! Compaction rewrites the whole durable state (snapshot, entries after it, hard state) as the
//! first batch of the *other* region under generation `g + 1`, flushes, then writes and flushes
//! the superblock for `g + 1`. That happens when a snapshot is persisted, when a batch does
//! not fit, and at every `open` (which seals whatever recovery found: later garbage in the old
//! region can never be replayed). A crash at any point leaves the previous generation intact.
//!
//! Recovery replays the records of the newest valid generation in order and stops at the
//! first record that is torn, corrupt or from an older generation; it keeps the prefix and
//! reports what it discarded. If a superblock slot is corrupt, the region of the generation
//! after the newest valid one is probed: a complete base batch there (it ends with a
//! hard-state record and is flushed before its superblock) is used, so bit rot in the newest
//! superblock does not roll the node back. Nothing here panics on disk contents.

pub mod codec;
pub mod mem;

use alloc::vec::Vec;

use self::codec::{crc32c, Record};
use crate::rawnode::DurableState;
use crate::types::{Entry, HardState, Snapshot};

/// Bytes per sector of the block device.
pub const SECTOR_BYTES: usize = 512;
/// Header bytes of each record.
pub const HEADER_BYTES: usize = 16;
/// Both bytes non-zero: a zero first byte marks padding.
const RECORD_MAGIC: u16 = 0x5852;
const SUPERBLOCK_MAGIC: u64 = u64::from_le_bytes(*b"XYRAFTSB");
const FORMAT_VERSION: u32 = 1;
/// Smallest device the store accepts (2 superblocks + 2 regions of 16 sectors).
pub const MIN_DEVICE_SECTORS: u64 = 34;
/// How far past the stop point recovery looks for discarded records (bounds boot time).
pub const SCAN_AHEAD_SECTORS: u64 = 256;

/// A block device of 512-byte sectors (virtio-blk in the kernel).
pub trait BlockDevice {
    /// Number of sectors.
    fn sector_count(&self) -> u64;
    /// Reads sector `lba`.
    fn read_block(&mut self, lba: u64, buf: &mut [u8; SECTOR_BYTES]) -> Result<(), DeviceError>;
    /// Writes sector `lba` (durable only after `flush`).
    fn write_block(&mut self, lba: u64, buf: &[u8; SECTOR_BYTES]) -> Result<(), DeviceError>;
    /// Makes every completed write durable.
    fn flush(&mut self) -> Result<(), DeviceError>;
}

/// A device-level failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeviceError {
    /// The sector is beyond the device.
    OutOfRange { lba: u64 },
    /// The device reported an I/O error.
    Io { lba: u64 },
}

/// Why the store failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DiskError {
    /// The device failed.
    Device(DeviceError),
    /// The device is smaller than [`MIN_DEVICE_SECTORS`].
    TooSmall { sectors: u64 },
    /// Neither superblock is valid and the device is not blank: refuse to format over data.
    NoValidSuperblock,
    /// The durable state does not fit one region even after compaction.
    Full {
        needed_sectors: u64,
        region_sectors: u64,
    },
}

impl From<DeviceError> for DiskError {
    fn from(e: DeviceError) -> DiskError {
        DiskError::Device(e)
    }
}

/// Where and why replay stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// The device was blank and has been formatted.
    Formatted,
    /// A zeroed sector where the next batch would start: the normal end.
    CleanEnd,
    /// A record of an older generation at a batch start: the normal end after a reuse.
    StaleGeneration { offset: u64 },
    /// The region is full up to its end.
    RegionEnd,
    /// Bytes that are not a record header (torn or garbage).
    BadHeader { offset: u64 },
    /// A length running past the region (torn header).
    BadLength { offset: u64 },
    /// Checksum mismatch (torn or flipped payload).
    BadChecksum { offset: u64 },
    /// Checksum fine but the payload does not decode or does not fit the log.
    Malformed { offset: u64 },
}

impl StopReason {
    /// Whether replay ended normally (nothing torn or corrupt at the stop point).
    pub fn is_clean(&self) -> bool {
        matches!(
            self,
            StopReason::Formatted
                | StopReason::CleanEnd
                | StopReason::StaleGeneration { .. }
                | StopReason::RegionEnd
        )
    }
}

/// What `open` found; the kernel logs it at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RecoveryReport {
    /// Generation replayed (0 when formatted).
    pub generation: u64,
    /// Superblock slots that held neither zeros nor a valid superblock.
    pub corrupt_superblocks: u8,
    /// Records applied.
    pub records_replayed: u64,
    /// Bytes of those records (headers included).
    pub bytes_replayed: u64,
    /// Records dropped: the bad one at the stop point plus valid ones found after it.
    pub records_discarded: u64,
    /// Bytes from the stop point to the end of the last discarded record.
    pub bytes_discarded: u64,
    /// Why replay stopped.
    pub stop: StopReason,
}

/// The durable store of one Raft node.
pub struct DiskStore<D: BlockDevice> {
    dev: D,
    generation: u64,
    region_sectors: u64,
    /// Next free sector, relative to the active region.
    tail_sector: u64,
    state: DurableState,
    rewrites: u64,
}

impl<D: BlockDevice> DiskStore<D> {
    /// Opens (or formats a blank) device, replays the newest generation, and seals it into a
    /// fresh generation. Returns the store and what recovery found.
    pub fn open(mut dev: D) -> Result<(DiskStore<D>, RecoveryReport), DiskError> {
        let sectors = dev.sector_count();
        if sectors < MIN_DEVICE_SECTORS {
            return Err(DiskError::TooSmall { sectors });
        }
        let region_sectors = (sectors - 2) / 2;
        let (mut best, corrupt_superblocks) = read_superblocks(&mut dev)?;
        if corrupt_superblocks > 0
            && base_complete(&mut dev, best.unwrap_or(0) + 1, region_sectors)?
        {
            // The newest superblock rotted (or was torn after its region was flushed), but the
            // region it describes holds a complete base: use it rather than older state.
            best = Some(best.unwrap_or(0) + 1);
        }
        let (state, mut report) = match best {
            Some(generation) => replay(&mut dev, generation, region_sectors)?,
            None if corrupt_superblocks == 0 => (DurableState::default(), formatted_report()),
            None => return Err(DiskError::NoValidSuperblock),
        };
        report.corrupt_superblocks = corrupt_superblocks;
        let mut store = DiskStore {
            dev,
            generation: best.unwrap_or(0),
            region_sectors,
            tail_sector: 0,
            state,
            rewrites: 0,
        };
        store.rewrite()?;
        Ok((store, report))
    }

    /// The durable state (what a restart would recover).
    pub fn state(&self) -> &DurableState {
        &self.state
    }

    /// Current generation.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Compaction rewrites done since open (the one at open included).
    pub fn rewrites(&self) -> u64 {
        self.rewrites
    }

    /// Sectors used in the active region.
    pub fn used_sectors(&self) -> u64 {
        self.tail_sector
    }

    /// Sectors of each of the two regions: the most one generation (the whole compacted
    /// state plus the batches appended after it) can use.
    pub fn region_sectors(&self) -> u64 {
        self.region_sectors
    }

    /// Rewrites the whole in-memory state as a new generation. After a failed `persist` the
    /// mirror already holds the batch that did not reach the disk; a successful `resync`
    /// makes all of it durable, so the caller may then keep the promises of that batch.
    pub fn resync(&mut self) -> Result<(), DiskError> {
        self.rewrite()
    }

    /// The device (the simulator crashes it).
    pub fn device_mut(&mut self) -> &mut D {
        &mut self.dev
    }

    /// Gives the device back.
    pub fn into_device(self) -> D {
        self.dev
    }

    /// Persists one `Ready`'s snapshot, entries and hard state (in that order) and flushes.
    pub fn persist(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), DiskError> {
        self.append_batch(snapshot, entries, hard_state)?;
        self.sync()
    }

    /// Writes a batch without flushing (`persist` = this + `sync`). A snapshot in the batch
    /// triggers a compaction rewrite, which flushes.
    pub fn append_batch(
        &mut self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), DiskError> {
        let mut records = Vec::new();
        if let Some(s) = snapshot {
            records.push(Record::Snapshot(s.clone()));
        }
        if !entries.is_empty() {
            records.push(Record::Entries(entries.to_vec()));
        }
        if let Some(hs) = hard_state {
            records.push(Record::HardState(*hs));
        }
        for record in &records {
            let applied = apply_record(&mut self.state, record);
            assert!(applied, "persisting entries that do not follow the log");
        }
        if snapshot.is_some() {
            return self.rewrite();
        }
        if records.is_empty() {
            return Ok(());
        }
        let batch = encode_batch(&records, self.generation);
        let batch_sectors = (batch.len() / SECTOR_BYTES) as u64;
        if self.tail_sector + batch_sectors > self.region_sectors {
            return self.rewrite(); // The mirror already holds the batch.
        }
        let base = region_base(self.generation, self.region_sectors) + self.tail_sector;
        write_sectors(&mut self.dev, base, &batch)?;
        self.tail_sector += batch_sectors;
        Ok(())
    }

    /// Flushes the device.
    pub fn sync(&mut self) -> Result<(), DiskError> {
        self.dev.flush()?;
        Ok(())
    }

    /// Persists a locally taken snapshot (log compaction) and rewrites the store around it.
    pub fn save_snapshot(&mut self, snapshot: &Snapshot) -> Result<(), DiskError> {
        let applied = apply_record(&mut self.state, &Record::Snapshot(snapshot.clone()));
        assert!(applied, "snapshot record always applies");
        self.rewrite()
    }

    /// Writes the whole state as generation + 1 in the other region, then its superblock.
    fn rewrite(&mut self) -> Result<(), DiskError> {
        let next = self.generation + 1;
        let mut records = Vec::new();
        let s = &self.state;
        if s.snapshot.meta.index > 0 || !s.snapshot.data.is_empty() {
            records.push(Record::Snapshot(s.snapshot.clone()));
        }
        if !s.entries.is_empty() {
            records.push(Record::Entries(s.entries.clone()));
        }
        records.push(Record::HardState(s.hard_state));
        let batch = encode_batch(&records, next);
        let batch_sectors = (batch.len() / SECTOR_BYTES) as u64;
        if batch_sectors > self.region_sectors {
            return Err(DiskError::Full {
                needed_sectors: batch_sectors,
                region_sectors: self.region_sectors,
            });
        }
        write_sectors(
            &mut self.dev,
            region_base(next, self.region_sectors),
            &batch,
        )?;
        // A zeroed sector after the base marks the clean end even if the region held more.
        if batch_sectors < self.region_sectors {
            let lba = region_base(next, self.region_sectors) + batch_sectors;
            self.dev.write_block(lba, &[0u8; SECTOR_BYTES])?;
        }
        self.dev.flush()?;
        self.dev
            .write_block(next % 2, &encode_superblock(next, self.region_sectors))?;
        self.dev.flush()?;
        self.generation = next;
        self.tail_sector = batch_sectors;
        self.rewrites += 1;
        Ok(())
    }
}

fn formatted_report() -> RecoveryReport {
    RecoveryReport {
        generation: 0,
        corrupt_superblocks: 0,
        records_replayed: 0,
        bytes_replayed: 0,
        records_discarded: 0,
        bytes_discarded: 0,
        stop: StopReason::Formatted,
    }
}

fn region_base(generation: u64, region_sectors: u64) -> u64 {
    2 + (generation % 2) * region_sectors
}

fn write_sectors<D: BlockDevice>(
    dev: &mut D,
    first_lba: u64,
    bytes: &[u8],
) -> Result<(), DeviceError> {
    assert_eq!(bytes.len() % SECTOR_BYTES, 0, "unaligned batch");
    for (i, sector) in bytes.as_chunks::<SECTOR_BYTES>().0.iter().enumerate() {
        dev.write_block(first_lba + i as u64, sector)?;
    }
    Ok(())
}

/// Encodes records as one batch padded with zeros to a sector boundary.
fn encode_batch(records: &[Record], generation: u64) -> Vec<u8> {
    let mut out = Vec::new();
    for record in records {
        let (kind, payload) = record.encode();
        let mut header = [0u8; HEADER_BYTES];
        header[0..2].copy_from_slice(&RECORD_MAGIC.to_le_bytes());
        header[2] = kind;
        header[4..8].copy_from_slice(&(generation as u32).to_le_bytes());
        header[8..12].copy_from_slice(&(payload.len() as u32).to_le_bytes());
        let crc = codec::crc32c_update(crc32c(&header[0..12]), &payload);
        header[12..16].copy_from_slice(&crc.to_le_bytes());
        out.extend_from_slice(&header);
        out.extend_from_slice(&payload);
        // Pair the assertion: what we write must read back as the same record.
        debug_assert_eq!(Record::decode(kind, &payload).as_ref(), Some(record));
    }
    let padded = out.len().div_ceil(SECTOR_BYTES) * SECTOR_BYTES;
    out.resize(padded, 0);
    out
}

fn encode_superblock(generation: u64, region_sectors: u64) -> [u8; SECTOR_BYTES] {
    let mut sector = [0u8; SECTOR_BYTES];
    sector[0..8].copy_from_slice(&SUPERBLOCK_MAGIC.to_le_bytes());
    sector[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    sector[12..20].copy_from_slice(&generation.to_le_bytes());
    sector[20..28].copy_from_slice(&region_sectors.to_le_bytes());
    let crc = crc32c(&sector[0..28]);
    sector[28..32].copy_from_slice(&crc.to_le_bytes());
    sector
}

/// Returns (newest valid generation, number of corrupt slots).
fn read_superblocks<D: BlockDevice>(dev: &mut D) -> Result<(Option<u64>, u8), DiskError> {
    let region_sectors = (dev.sector_count() - 2) / 2;
    let mut best: Option<u64> = None;
    let mut corrupt = 0;
    for slot in 0..2u64 {
        let mut sector = [0u8; SECTOR_BYTES];
        dev.read_block(slot, &mut sector)?;
        if sector.iter().all(|&b| b == 0) {
            continue;
        }
        let magic = u64::from_le_bytes(sector[0..8].try_into().expect("8 bytes"));
        let version = u32::from_le_bytes(sector[8..12].try_into().expect("4 bytes"));
        let generation = u64::from_le_bytes(sector[12..20].try_into().expect("8 bytes"));
        let regions = u64::from_le_bytes(sector[20..28].try_into().expect("8 bytes"));
        let crc = u32::from_le_bytes(sector[28..32].try_into().expect("4 bytes"));
        let valid = magic == SUPERBLOCK_MAGIC
            && version == FORMAT_VERSION
            && crc == crc32c(&sector[0..28])
            && regions == region_sectors
            && generation % 2 == slot
            && generation > 0;
        if !valid {
            corrupt += 1;
            continue;
        }
        best = Some(best.map_or(generation, |b: u64| b.max(generation)));
    }
    Ok((best, corrupt))
}

/// Applies a record to the durable state; false when it does not fit (malformed on disk).
fn apply_record(state: &mut DurableState, record: &Record) -> bool {
    match record {
        Record::HardState(hs) => state.hard_state = *hs,
        Record::Entries(entries) => {
            let Some(first) = entries.first() else {
                return true;
            };
            let contiguous = entries
                .windows(2)
                .all(|w| w[1].index == w[0].index + 1 && w[1].term >= w[0].term);
            let snap_index = state.snapshot.meta.index;
            let last = snap_index + state.entries.len() as u64;
            if !contiguous || first.index <= snap_index || first.index > last + 1 {
                return false;
            }
            state
                .entries
                .truncate((first.index - snap_index - 1) as usize);
            let prev_term = state
                .entries
                .last()
                .map_or(state.snapshot.meta.term, |e| e.term);
            if first.term < prev_term {
                return false;
            }
            state.entries.extend(entries.iter().cloned());
        }
        Record::Snapshot(snapshot) => {
            let meta = snapshot.meta;
            let snap_index = state.snapshot.meta.index;
            let keeps_suffix = meta.index > snap_index
                && state
                    .entries
                    .get((meta.index - snap_index - 1) as usize)
                    .is_some_and(|e| e.term == meta.term);
            if keeps_suffix {
                state.entries.drain(..(meta.index - snap_index) as usize);
            } else {
                state.entries.clear();
            }
            state.snapshot = snapshot.clone();
        }
    }
    true
}

/// Outcome of parsing at one offset of the region.
enum Parsed {
    Record { record: Record, next: u64 },
    Padding { next: u64 },
    End(StopReason),
}

/// Reads bytes of one region through a one-sector cache.
struct RegionReader {
    base_lba: u64,
    region_bytes: u64,
    cached: Option<(u64, [u8; SECTOR_BYTES])>,
}

impl RegionReader {
    fn read<D: BlockDevice>(
        &mut self,
        dev: &mut D,
        offset: u64,
        len: u64,
    ) -> Result<Option<Vec<u8>>, DiskError> {
        if offset
            .checked_add(len)
            .is_none_or(|end| end > self.region_bytes)
        {
            return Ok(None);
        }
        let mut out = Vec::with_capacity(len as usize);
        let mut pos = offset;
        while pos < offset + len {
            let sector = pos / SECTOR_BYTES as u64;
            if self.cached.as_ref().is_none_or(|(s, _)| *s != sector) {
                let mut buf = [0u8; SECTOR_BYTES];
                dev.read_block(self.base_lba + sector, &mut buf)?;
                self.cached = Some((sector, buf));
            }
            let (_, buf) = self.cached.as_ref().expect("cached sector");
            let from = (pos % SECTOR_BYTES as u64) as usize;
            let take = (SECTOR_BYTES - from).min((offset + len - pos) as usize);
            out.extend_from_slice(&buf[from..from + take]);
            pos += take as u64;
        }
        Ok(Some(out))
    }

    fn parse<D: BlockDevice>(
        &mut self,
        dev: &mut D,
        offset: u64,
        generation: u64,
    ) -> Result<Parsed, DiskError> {
        let aligned = offset.is_multiple_of(SECTOR_BYTES as u64);
        // The magic's first byte is never zero, so a zero byte is padding (or the clean end).
        let Some(first) = self.read(dev, offset, 1)? else {
            return Ok(Parsed::End(StopReason::RegionEnd));
        };
        if first[0] == 0 {
            if aligned {
                return Ok(Parsed::End(StopReason::CleanEnd));
            }
            return Ok(Parsed::Padding {
                next: offset.next_multiple_of(SECTOR_BYTES as u64),
            });
        }
        let Some(header) = self.read(dev, offset, HEADER_BYTES as u64)? else {
            return Ok(Parsed::End(StopReason::BadLength { offset }));
        };
        let field = |a: usize| u32::from_le_bytes(header[a..a + 4].try_into().expect("4 bytes"));
        if u16::from_le_bytes([header[0], header[1]]) != RECORD_MAGIC || header[3] != 0 {
            return Ok(Parsed::End(StopReason::BadHeader { offset }));
        }
        if field(4) != generation as u32 {
            return Ok(Parsed::End(StopReason::StaleGeneration { offset }));
        }
        let len = u64::from(field(8));
        let Some(payload) = self.read(dev, offset + HEADER_BYTES as u64, len)? else {
            return Ok(Parsed::End(StopReason::BadLength { offset }));
        };
        if codec::crc32c_update(crc32c(&header[0..12]), &payload) != field(12) {
            return Ok(Parsed::End(StopReason::BadChecksum { offset }));
        }
        match Record::decode(header[2], &payload) {
            Some(record) => Ok(Parsed::Record {
                record,
                next: offset + HEADER_BYTES as u64 + len,
            }),
            None => Ok(Parsed::End(StopReason::Malformed { offset })),
        }
    }
}

/// Whether the region of `generation` starts with a complete base batch of that generation
/// (a rewrite always ends its base with a hard-state record, written before the superblock).
fn base_complete<D: BlockDevice>(
    dev: &mut D,
    generation: u64,
    region_sectors: u64,
) -> Result<bool, DiskError> {
    let mut reader = RegionReader {
        base_lba: region_base(generation, region_sectors),
        region_bytes: region_sectors * SECTOR_BYTES as u64,
        cached: None,
    };
    let mut offset = 0;
    // A base holds at most three records: snapshot, entries, hard state.
    for _ in 0..3 {
        match reader.parse(dev, offset, generation)? {
            Parsed::Record {
                record: Record::HardState(_),
                ..
            } => return Ok(true),
            Parsed::Record { next, .. } => offset = next,
            Parsed::Padding { .. } | Parsed::End(_) => return Ok(false),
        }
    }
    Ok(false)
}

/// Replays generation `generation`; returns the recovered state and the report.
fn replay<D: BlockDevice>(
    dev: &mut D,
    generation: u64,
    region_sectors: u64,
) -> Result<(DurableState, RecoveryReport), DiskError> {
    let mut reader = RegionReader {
        base_lba: region_base(generation, region_sectors),
        region_bytes: region_sectors * SECTOR_BYTES as u64,
        cached: None,
    };
    let mut state = DurableState::default();
    let mut report = formatted_report();
    report.generation = generation;
    let mut offset = 0;
    let stop = loop {
        match reader.parse(dev, offset, generation)? {
            Parsed::Padding { next } => offset = next,
            Parsed::Record { record, next } => {
                if !apply_record(&mut state, &record) {
                    break StopReason::Malformed { offset };
                }
                report.records_replayed += 1;
                report.bytes_replayed += next - offset;
                offset = next;
            }
            Parsed::End(reason) => break reason,
        }
    };
    report.stop = stop;
    let (records, end) = scan_discarded(dev, &mut reader, offset, generation)?;
    report.records_discarded = records + u64::from(!stop.is_clean());
    report.bytes_discarded = end.saturating_sub(offset);
    Ok((state, report))
}

/// Counts records of `generation` after the stop point (they were never acknowledged, or
/// follow a corrupt record): returns (count, end offset of the last one).
fn scan_discarded<D: BlockDevice>(
    dev: &mut D,
    reader: &mut RegionReader,
    stop: u64,
    generation: u64,
) -> Result<(u64, u64), DiskError> {
    let sector = SECTOR_BYTES as u64;
    let mut count = 0;
    let mut end = stop;
    let mut next_sector = stop / sector + 1;
    let limit = (next_sector + SCAN_AHEAD_SECTORS).min(reader.region_bytes / sector);
    while next_sector < limit {
        let mut offset = next_sector * sector;
        loop {
            match reader.parse(dev, offset, generation)? {
                Parsed::Record { next, .. } => {
                    count += 1;
                    end = end.max(next);
                    offset = next;
                }
                Parsed::Padding { next } => offset = next,
                Parsed::End(_) => break,
            }
        }
        next_sector = (offset / sector + 1).max(next_sector + 1);
    }
    Ok((count, end))
}
