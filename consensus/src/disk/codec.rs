//! Byte encoding of the disk records: little-endian fixed-width fields and CRC32C.
//!
//! Hand-rolled rather than postcard so the format is fully specified in `docs/raft.md` and
//! never changes with a library version. Decoding never panics: short or inconsistent input
//! yields `None`, which recovery reports as a malformed record.

use alloc::vec::Vec;

use crate::types::{Entry, HardState, Snapshot, SnapshotMeta};

/// CRC32C (Castagnoli, reflected polynomial 0x82F63B78), the checksum iSCSI and ext4 use:
/// the `crc` crate's `CRC_32_ISCSI`, sliced by 16 (it replaced a bytewise table of ours
/// that ran 5-7x slower; see net/src/crc32c.rs for the figures).
static CASTAGNOLI: crc::Crc<u32, crc::Table<16>> =
    crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);

/// CRC32C of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    CASTAGNOLI.checksum(bytes)
}

/// Continues a CRC32C over more bytes (`crc` is a previous result, 0 to start):
/// `crc32c_update(crc32c(a), b) == crc32c(a ++ b)`.
pub fn crc32c_update(crc: u32, bytes: &[u8]) -> u32 {
    // The register holds the un-inverted value; the crate takes the initial register in
    // the algorithm's (unreflected) bit order.
    let mut digest = CASTAGNOLI.digest_with_initial((!crc).reverse_bits());
    digest.update(bytes);
    digest.finalize()
}

#[cfg(test)]
mod crc_tests {
    use super::*;

    #[test]
    fn crc32c_check_value_and_continuation() {
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c_update(0, b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
        let data: Vec<u8> = (0..200u32).map(|i| (i * 37 + 11) as u8).collect();
        for split in [0, 1, 7, 8, 12, 63, 199, 200] {
            let (a, b) = data.split_at(split);
            assert_eq!(crc32c_update(crc32c(a), b), crc32c(&data), "split {split}");
        }
    }
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
