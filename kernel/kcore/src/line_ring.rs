//! A fixed-capacity FIFO of whole text lines, for output written later than it is produced.
//!
//! The COM2 event log uses it: [`LineRing::push_fmt`] formats a line straight into the ring
//! (no allocation, safe in interrupt context), and a writer drains it with
//! [`LineRing::pop_chunk`] at its own pace. A line is kept whole or not at all: one that does
//! not fit in the free space is rolled back and counted in [`LineRing::dropped_lines`], so a
//! reader never sees half a line. Bytes come out in the order they went in. `\n` is stored as
//! `\r\n` (the serial line's convention), so what is popped goes to the wire as is.

use core::fmt;

/// A FIFO of at most `N` bytes of whole lines.
#[derive(Debug)]
pub struct LineRing<const N: usize> {
    buf: [u8; N],
    head: usize,
    len: usize,
    dropped_lines: u64,
    pushed_lines: u64,
}

impl<const N: usize> LineRing<N> {
    /// An empty ring.
    pub const fn new() -> Self {
        assert!(N > 0, "a zero-capacity ring can hold nothing");
        LineRing {
            buf: [0; N],
            head: 0,
            len: 0,
            dropped_lines: 0,
            pushed_lines: 0,
        }
    }

    /// Formats `args` into the ring as one unit (with `\n` → `\r\n`). Returns false, changes
    /// nothing and counts a dropped line when it does not fit.
    pub fn push_fmt(&mut self, args: fmt::Arguments) -> bool {
        let start = self.len;
        let mut w = Appender { ring: self };
        if fmt::Write::write_fmt(&mut w, args).is_err() {
            self.len = start;
            self.dropped_lines += 1;
            return false;
        }
        self.pushed_lines += 1;
        true
    }

    /// Moves up to `out.len()` of the oldest bytes into `out`; returns how many.
    pub fn pop_chunk(&mut self, out: &mut [u8]) -> usize {
        let n = out.len().min(self.len);
        for slot in out.iter_mut().take(n) {
            *slot = self.buf[self.head];
            self.head = (self.head + 1) % N;
        }
        self.len -= n;
        n
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Lines refused because the ring was full.
    pub fn dropped_lines(&self) -> u64 {
        self.dropped_lines
    }

    /// Lines accepted.
    pub fn pushed_lines(&self) -> u64 {
        self.pushed_lines
    }

    fn put(&mut self, byte: u8) -> fmt::Result {
        if self.len == N {
            return Err(fmt::Error);
        }
        self.buf[(self.head + self.len) % N] = byte;
        self.len += 1;
        Ok(())
    }
}

impl<const N: usize> Default for LineRing<N> {
    fn default() -> Self {
        Self::new()
    }
}

struct Appender<'a, const N: usize> {
    ring: &'a mut LineRing<N>,
}

impl<const N: usize> fmt::Write for Appender<'_, N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            if b == b'\n' {
                self.ring.put(b'\r')?;
            }
            self.ring.put(b)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn drain<const N: usize>(ring: &mut LineRing<N>, chunk: usize) -> Vec<u8> {
        let mut out = Vec::new();
        let mut buf = alloc::vec![0u8; chunk];
        loop {
            let n = ring.pop_chunk(&mut buf);
            if n == 0 {
                return out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    }

    #[test]
    fn lines_come_out_in_order_with_crlf() {
        let mut ring = LineRing::<64>::new();
        assert!(ring.push_fmt(format_args!("a={}\n", 1)));
        assert!(ring.push_fmt(format_args!("b={}\n", 22)));
        assert_eq!(ring.len(), 11);
        assert_eq!(drain(&mut ring, 3), b"a=1\r\nb=22\r\n");
        assert!(ring.is_empty());
        assert_eq!((ring.pushed_lines(), ring.dropped_lines()), (2, 0));
    }

    #[test]
    fn a_line_that_does_not_fit_is_dropped_whole() {
        let mut ring = LineRing::<10>::new();
        assert!(ring.push_fmt(format_args!("12345\n")));
        // 7 bytes with CRLF; 3 free: nothing of it may stay.
        assert!(!ring.push_fmt(format_args!("abcde\n")));
        assert_eq!(ring.len(), 7);
        assert_eq!(ring.dropped_lines(), 1);
        // Something that fits still goes in, after the first line.
        assert!(ring.push_fmt(format_args!("x\n")));
        assert_eq!(drain(&mut ring, 4), b"12345\r\nx\r\n");
        // A line longer than the whole ring is dropped too.
        assert!(!ring.push_fmt(format_args!("{}\n", "z".repeat(20))));
        assert!(ring.is_empty());
        assert_eq!(ring.dropped_lines(), 2);
    }

    /// Random line lengths and chunk sizes across many wraparounds: what comes out is exactly
    /// the accepted lines, in order, each whole.
    #[test]
    fn wraparound_keeps_every_accepted_line_whole_and_in_order() {
        let mut ring = LineRing::<97>::new();
        let mut expected = Vec::new();
        let mut got = Vec::new();
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for i in 0..5_000u64 {
            let width = (next() % 40) as usize;
            let line = alloc::format!("{i}:{}\n", "x".repeat(width));
            let room = 97 - ring.len();
            let needed = line.len() + 1;
            let accepted = ring.push_fmt(format_args!("{line}"));
            assert_eq!(accepted, needed <= room, "line {i}");
            if accepted {
                expected.extend_from_slice(line.trim_end().as_bytes());
                expected.extend_from_slice(b"\r\n");
            }
            let mut buf = [0u8; 64];
            let n = ring.pop_chunk(&mut buf[..(next() % 64) as usize]);
            got.extend_from_slice(&buf[..n]);
        }
        got.extend(drain(&mut ring, 5));
        assert_eq!(got, expected);
        assert!(ring.dropped_lines() > 0, "the test must exercise drops");
        assert_eq!(
            ring.pushed_lines() + ring.dropped_lines(),
            5_000,
            "every line is either kept or counted"
        );
    }
}
