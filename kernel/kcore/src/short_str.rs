//! A short string stored inline, so values that carry names (events, table rows) can be
//! copied and queued without touching the heap — which matters in interrupt context and
//! keeps the event queue's memory use constant.

use core::fmt;

/// At most `N` bytes of UTF-8, inline. Longer input is cut at a character boundary.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ShortStr<const N: usize> {
    bytes: [u8; N],
    len: u8,
}

impl<const N: usize> ShortStr<N> {
    /// Copies `text`, truncated to at most `N` bytes on a character boundary.
    pub fn new(text: &str) -> Self {
        assert!(
            N <= usize::from(u8::MAX),
            "ShortStr capacity must fit in a u8"
        );
        let mut end = text.len().min(N);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0u8; N];
        bytes[..end].copy_from_slice(&text.as_bytes()[..end]);
        ShortStr {
            bytes,
            len: end as u8,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..usize::from(self.len)])
            .expect("ShortStr holds UTF-8 by construction")
    }
}

impl<const N: usize> fmt::Display for ShortStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl<const N: usize> fmt::Debug for ShortStr<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_whole() {
        assert_eq!(ShortStr::<8>::new("shell").as_str(), "shell");
        assert_eq!(ShortStr::<8>::new("").as_str(), "");
    }

    #[test]
    fn long_text_is_cut_on_a_character_boundary() {
        assert_eq!(ShortStr::<4>::new("reactor").as_str(), "reac");
        // "é" is two bytes: cutting at 4 would split it.
        assert_eq!(ShortStr::<4>::new("abcé").as_str(), "abc");
    }
}
