//! Optional frame capture in the classic libpcap format (LINKTYPE_ETHERNET), readable by
//! tcpdump and Wireshark. Off by default; bounded by a byte budget.
//!
//! The fabric records each frame once, where it enters: frames received from nodes and
//! garbage frames as they are injected. Fault decisions are not in the file; `Stats` has them.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

const PCAP_MAGIC: u32 = 0xa1b2_c3d4;
const LINKTYPE_ETHERNET: u32 = 1;
/// Frames longer than this are cut in the capture (the record keeps the original length).
pub const SNAPLEN_BYTES: u32 = 65_535;
const GLOBAL_HEADER_BYTES: u64 = 24;
const RECORD_HEADER_BYTES: u64 = 16;

pub struct PcapWriter {
    out: BufWriter<File>,
    written_bytes: u64,
    budget_bytes: u64,
    /// Frames left out because the budget was spent.
    pub skipped_frames: u64,
}

impl PcapWriter {
    /// Create (truncate) `path` and write the global header.
    pub fn create(path: &Path, budget_bytes: u64) -> io::Result<PcapWriter> {
        assert!(budget_bytes >= GLOBAL_HEADER_BYTES);
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(&PCAP_MAGIC.to_le_bytes())?;
        out.write_all(&2u16.to_le_bytes())?; // version 2.4
        out.write_all(&4u16.to_le_bytes())?;
        out.write_all(&0i32.to_le_bytes())?; // timezone offset
        out.write_all(&0u32.to_le_bytes())?; // timestamp accuracy
        out.write_all(&SNAPLEN_BYTES.to_le_bytes())?;
        out.write_all(&LINKTYPE_ETHERNET.to_le_bytes())?;
        Ok(PcapWriter {
            out,
            written_bytes: GLOBAL_HEADER_BYTES,
            budget_bytes,
            skipped_frames: 0,
        })
    }

    pub fn written_bytes(&self) -> u64 {
        self.written_bytes
    }

    /// Append one frame stamped with the wall clock; past the budget, count and skip it.
    pub fn record(&mut self, frame: &[u8]) -> io::Result<()> {
        let incl = frame.len().min(SNAPLEN_BYTES as usize);
        let record_bytes = RECORD_HEADER_BYTES + incl as u64;
        if self.written_bytes + record_bytes > self.budget_bytes {
            self.skipped_frames += 1;
            return Ok(());
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let secs = u32::try_from(now.as_secs()).unwrap_or(u32::MAX);
        self.out.write_all(&secs.to_le_bytes())?;
        self.out.write_all(&now.subsec_micros().to_le_bytes())?;
        self.out.write_all(&(incl as u32).to_le_bytes())?;
        self.out
            .write_all(&u32::try_from(frame.len()).unwrap_or(u32::MAX).to_le_bytes())?;
        self.out.write_all(&frame[..incl])?;
        self.written_bytes += record_bytes;
        assert!(self.written_bytes <= self.budget_bytes);
        Ok(())
    }

    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Parse a capture back into frames (tests and debugging tools).
pub fn read_frames(bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    if bytes.len() < GLOBAL_HEADER_BYTES as usize || bytes[0..4] != PCAP_MAGIC.to_le_bytes() {
        return None;
    }
    let mut frames = Vec::new();
    let mut off = GLOBAL_HEADER_BYTES as usize;
    while off < bytes.len() {
        let header = bytes.get(off..off + RECORD_HEADER_BYTES as usize)?;
        let incl = u32::from_le_bytes(header[8..12].try_into().ok()?) as usize;
        off += RECORD_HEADER_BYTES as usize;
        frames.push(bytes.get(off..off + incl)?.to_vec());
        off += incl;
    }
    Some(frames)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_budget() {
        let dir = super::super::tests::temp_dir("pcap");
        let path = dir.join("cap.pcap");
        let mut w = PcapWriter::create(&path, 24 + 16 + 60 + 16 + 10).unwrap();
        w.record(&[1u8; 60]).unwrap();
        w.record(&[2u8; 10]).unwrap();
        w.record(&[3u8; 1]).unwrap(); // over budget
        w.flush().unwrap();
        assert_eq!(w.skipped_frames, 1);
        let frames = read_frames(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(frames, vec![vec![1u8; 60], vec![2u8; 10]]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
