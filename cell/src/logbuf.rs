//! Bounded per-cell log capture.
//!
//! Everything a cell writes to fd 1 or 2 lands in its [`LogBuf`]: a byte ring with a fixed
//! capacity. When full, the oldest bytes are dropped (the newest output is the useful part when
//! a cell crash-loops) and counted in [`LogBuf::dropped_bytes`], so the console can say how much
//! was lost. [`LogBuf::last_lines`] serves `xylem logs <cell> [n]`. Bytes need not be UTF-8;
//! lines are decoded lossily when read.
//!
//! Memory grows with use (a quiet cell holds a few bytes, never the whole capacity up
//! front) and every growth is fallible: when the allocator says no, the new bytes are
//! dropped and counted like overflow, so logging can never panic a node that is out of heap.

use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec::Vec;

/// Default capacity of one cell's log (16 KiB).
pub const DEFAULT_LOG_CAP_BYTES: usize = 16 * 1024;

/// A bounded ring of log bytes.
#[derive(Clone, Debug)]
pub struct LogBuf {
    bytes: VecDeque<u8>,
    cap_bytes: usize,
    dropped_bytes: u64,
    total_bytes: u64,
}

impl LogBuf {
    /// An empty log holding at most `cap_bytes` bytes.
    pub fn new(cap_bytes: usize) -> Self {
        assert!(cap_bytes > 0, "a log must hold at least one byte");
        LogBuf {
            bytes: VecDeque::new(),
            cap_bytes,
            dropped_bytes: 0,
            total_bytes: 0,
        }
    }

    /// Appends `data`, dropping the oldest bytes beyond the capacity.
    pub fn push(&mut self, data: &[u8]) {
        self.total_bytes = self.total_bytes.saturating_add(data.len() as u64);
        // Only the last `cap_bytes` of `data` can survive; skip the rest without copying it.
        let skip = data.len().saturating_sub(self.cap_bytes);
        let kept = &data[skip..];
        let overflow = (self.bytes.len() + kept.len()).saturating_sub(self.cap_bytes);
        self.bytes.drain(..overflow);
        if !self.grow_for(kept.len()) {
            // Out of memory: keep what we have, count the new bytes as lost.
            self.dropped_bytes = self
                .dropped_bytes
                .saturating_add((skip + overflow + kept.len()) as u64);
            return;
        }
        self.bytes.extend(kept.iter().copied());
        self.dropped_bytes = self.dropped_bytes.saturating_add((skip + overflow) as u64);
        assert!(self.bytes.len() <= self.cap_bytes, "log above its cap");
        debug_assert_eq!(
            self.dropped_bytes + self.bytes.len() as u64,
            self.total_bytes
        );
    }

    /// Makes room for `extra` more bytes (doubling, never beyond the cap); false when the
    /// allocator refuses.
    fn grow_for(&mut self, extra: usize) -> bool {
        let needed = self.bytes.len() + extra;
        debug_assert!(needed <= self.cap_bytes);
        if needed <= self.bytes.capacity() {
            return true;
        }
        let target = needed
            .max(self.bytes.capacity() * 2)
            .max(64)
            .min(self.cap_bytes);
        self.bytes
            .try_reserve_exact(target - self.bytes.len())
            .is_ok()
    }

    /// Bytes of heap the log holds now.
    pub fn heap_bytes(&self) -> usize {
        self.bytes.capacity()
    }

    /// The last `count` lines, oldest first. A trailing newline does not start an empty line;
    /// an unterminated last line is included as it is.
    pub fn last_lines(&self, count: usize) -> Vec<String> {
        let mut lines = Vec::new();
        if self.bytes.is_empty() || count == 0 {
            return lines;
        }
        let mut end = self.bytes.len();
        if self.bytes[end - 1] == b'\n' {
            end -= 1;
        }
        loop {
            let start = (0..end)
                .rev()
                .find(|&index| self.bytes[index] == b'\n')
                .map_or(0, |nl| nl + 1);
            let line: Vec<u8> = self.bytes.range(start..end).copied().collect();
            lines.push(String::from_utf8_lossy(&line).into_owned());
            if lines.len() == count || start == 0 {
                break;
            }
            end = start - 1; // skip the newline that ends the previous line
        }
        lines.reverse();
        debug_assert!(lines.len() <= count);
        lines
    }

    /// Bytes currently held.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Capacity in bytes.
    pub fn cap_bytes(&self) -> usize {
        self.cap_bytes
    }

    /// Bytes dropped because the log was full, since creation.
    pub fn dropped_bytes(&self) -> u64 {
        self.dropped_bytes
    }

    /// Bytes ever pushed.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// The held bytes, oldest first (e.g. to dump the whole log).
    pub fn contents(&self) -> Vec<u8> {
        self.bytes.iter().copied().collect()
    }
}

impl Default for LogBuf {
    fn default() -> Self {
        LogBuf::new(DEFAULT_LOG_CAP_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use alloc::vec;

    use super::*;

    #[test]
    fn memory_grows_with_use_and_never_beyond_the_cap() {
        let mut log = LogBuf::new(16 * 1024);
        assert_eq!(log.heap_bytes(), 0, "an empty log allocates nothing");
        log.push(b"hello\n");
        assert!(
            log.heap_bytes() < 1024,
            "{} bytes for one line",
            log.heap_bytes()
        );
        for _ in 0..10_000 {
            log.push(b"0123456789abcdef");
        }
        assert!(log.heap_bytes() <= 16 * 1024, "{} bytes", log.heap_bytes());
        assert_eq!(
            log.last_lines(1)[0].len(),
            16 * 1024,
            "the newest bytes are kept"
        );
    }

    #[test]
    fn keeps_lines_in_order() {
        let mut log = LogBuf::new(64);
        log.push(b"one\ntwo\n");
        log.push(b"thr");
        log.push(b"ee\nfour");
        assert_eq!(log.last_lines(2), vec!["three", "four"]);
        assert_eq!(log.last_lines(10), vec!["one", "two", "three", "four"]);
        assert_eq!(log.last_lines(0), Vec::<String>::new());
        assert_eq!((log.dropped_bytes(), log.total_bytes()), (0, 18));
    }

    #[test]
    fn trailing_newline_and_empty_lines() {
        let mut log = LogBuf::new(64);
        assert!(log.last_lines(3).is_empty());
        log.push(b"\n");
        assert_eq!(log.last_lines(3), vec![""]);
        log.push(b"a\n\nb\n");
        assert_eq!(log.last_lines(3), vec!["a", "", "b"]);
        assert_eq!(log.last_lines(10), vec!["", "a", "", "b"]);
    }

    #[test]
    fn drops_oldest_bytes_and_counts_them() {
        let mut log = LogBuf::new(8);
        log.push(b"12345");
        log.push(b"6789");
        assert_eq!(log.contents(), b"23456789");
        assert_eq!(
            (log.len(), log.dropped_bytes(), log.total_bytes()),
            (8, 1, 9)
        );
        // A single write larger than the cap keeps only its tail.
        log.push(b"abcdefghijkl");
        assert_eq!(log.contents(), b"efghijkl");
        assert_eq!((log.dropped_bytes(), log.total_bytes()), (13, 21));
    }

    #[test]
    fn lossy_utf8_and_bounded_under_a_flood() {
        let mut log = LogBuf::new(100);
        log.push(b"bad \xff byte\n");
        assert_eq!(log.last_lines(1), vec!["bad \u{fffd} byte"]);
        for round in 0..10_000u32 {
            log.push(alloc::format!("line {round}\n").as_bytes());
            assert!(log.len() <= log.cap_bytes());
        }
        assert_eq!(log.last_lines(2), vec!["line 9998", "line 9999"]);
        assert_eq!(log.dropped_bytes() + log.len() as u64, log.total_bytes());
    }
}
