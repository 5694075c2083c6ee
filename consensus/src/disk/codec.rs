//! Byte encoding of the disk records: little-endian fixed-width fields and CRC32C.
//!
//! Hand-rolled rather than postcard so the format is fully specified in `docs/raft.md` and
//! never changes with a library version. Decoding never panics: short or inconsistent input
//! yields `None`, which recovery reports as a malformed record.

use alloc::vec::Vec;

use crate::types::{Entry, HardState, Snapshot, SnapshotMeta};

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum iSCSI and ext4 use.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc32c_update(0, bytes)
}

/// Continues a CRC32C over more bytes (`crc` is a previous result, 0 to start).
pub fn crc32c_update(crc: u32, bytes: &[u8]) -> u32 {
    let mut c = !crc;
    for &b in bytes {
        c = CRC_TABLE[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8);
    }
    !c
}

const CRC_TABLE: [u32; 256] = crc_table();

const fn crc_table() -> [u32; 256] {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0x82F6_3B78 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        table[i] = c;
        i += 1;
    }
    table
}

/// Appends little-endian fields to a buffer.
pub struct Writer<'a>(pub &'a mut Vec<u8>);

impl Writer<'_> {
    pub fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.u32(v.len() as u32);
        self.0.extend_from_slice(v);
    }
}

/// Reads little-endian fields; every accessor returns `None` past the end.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Reader<'a> {
        Reader { bytes, pos: 0 }
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let slice = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(slice)
    }
    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    pub fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
    pub fn bytes(&mut self) -> Option<Vec<u8>> {
        let len = self.u32()? as usize;
        Some(self.take(len)?.to_vec())
    }
    pub fn is_done(&self) -> bool {
        self.pos == self.bytes.len()
    }
}

/// Record payload kinds.
pub const KIND_HARD_STATE: u8 = 1;
pub const KIND_ENTRIES: u8 = 2;
pub const KIND_SNAPSHOT: u8 = 3;

/// A decoded record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Record {
    /// Term, vote, commit.
    HardState(HardState),
    /// Entries replacing the log from their first index on.
    Entries(Vec<Entry>),
    /// A snapshot replacing the log prefix.
    Snapshot(Snapshot),
}

impl Record {
    /// (kind, payload bytes).
    pub fn encode(&self) -> (u8, Vec<u8>) {
        let mut buf = Vec::new();
        let mut w = Writer(&mut buf);
        let kind = match self {
            Record::HardState(hs) => {
                w.u64(hs.term);
                w.u8(u8::from(hs.vote.is_some()));
                w.u64(hs.vote.unwrap_or(0));
                w.u64(hs.commit);
                KIND_HARD_STATE
            }
            Record::Entries(entries) => {
                w.u32(entries.len() as u32);
                for e in entries {
                    w.u64(e.term);
                    w.u64(e.index);
                    w.bytes(&e.data);
                }
                KIND_ENTRIES
            }
            Record::Snapshot(s) => {
                w.u64(s.meta.index);
                w.u64(s.meta.term);
                w.bytes(&s.data);
                KIND_SNAPSHOT
            }
        };
        (kind, buf)
    }

    /// Decodes a payload; `None` when malformed.
    pub fn decode(kind: u8, payload: &[u8]) -> Option<Record> {
        let mut r = Reader::new(payload);
        let record = match kind {
            KIND_HARD_STATE => {
                let term = r.u64()?;
                let has_vote = r.u8()?;
                let vote = r.u64()?;
                let commit = r.u64()?;
                let vote = match has_vote {
                    0 => None,
                    1 => Some(vote),
                    _ => return None,
                };
                Record::HardState(HardState { term, vote, commit })
            }
            KIND_ENTRIES => {
                let count = r.u32()? as usize;
                // Each entry takes at least 20 bytes: refuse counts the payload cannot hold.
                if count > payload.len() / 20 {
                    return None;
                }
                let mut entries = Vec::with_capacity(count);
                for _ in 0..count {
                    entries.push(Entry {
                        term: r.u64()?,
                        index: r.u64()?,
                        data: r.bytes()?,
                    });
                }
                Record::Entries(entries)
            }
            KIND_SNAPSHOT => {
                let index = r.u64()?;
                let term = r.u64()?;
                Record::Snapshot(Snapshot {
                    meta: SnapshotMeta { index, term },
                    data: r.bytes()?,
                })
            }
            _ => return None,
        };
        if !r.is_done() {
            return None;
        }
        Some(record)
    }
}
