//! Where a cell's anonymous mappings go: a first-fit allocator of page ranges inside the
//! `mem_map` window (`cell::abi::USER_MAP_BASE .. USER_MAP_END`).
//!
//! [`Regions`] only decides addresses and remembers what is mapped; the kernel maps the
//! pages. Rules:
//!
//! 1. [`Regions::reserve`] returns the lowest address where the range fits (first fit), so
//!    a map/unmap loop reuses the same addresses and the cell's page tables stop growing.
//! 2. [`Regions::release`] accepts exactly a range an earlier `reserve` returned (start and
//!    length); anything else is [`RegionError::NotMapped`] and changes nothing. (Partial
//!    unmaps are not supported: the runtime's allocator unmaps what it mapped.)
//! 3. At most `max_regions` ranges are held ([`RegionError::TooMany`]): the bookkeeping is
//!    bounded, and it grows with fallible allocation only ([`RegionError::NoMemory`]).
//!
//! The ranges live sorted by start in a `Vec`: a cell holds few large mappings, and a sorted
//! vector is both the smallest structure and the simplest to check.

use alloc::vec::Vec;

/// Why a reservation or release failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RegionError {
    /// No gap in the window is large enough (`ENOMEM`).
    NoSpace,
    /// `max_regions` ranges are held already (`ENOMEM`).
    TooMany,
    /// The bookkeeping could not grow (`ENOMEM`).
    NoMemory,
    /// Zero pages, or a length that overflows the window (`EINVAL`).
    BadLength,
    /// The range is not exactly one reserved range (`EINVAL`).
    NotMapped,
}

/// The reserved ranges of one window. See the module docs.
pub struct Regions {
    base: u64,
    end: u64,
    page_bytes: u64,
    max_regions: usize,
    /// `(start, pages)`, sorted by start, never overlapping.
    ranges: Vec<(u64, u64)>,
    pages: u64,
}

impl Regions {
    /// An empty window `[base, end)` of pages of `page_bytes`.
    pub fn new(base: u64, end: u64, page_bytes: u64, max_regions: usize) -> Regions {
        assert!(page_bytes.is_power_of_two(), "page size {page_bytes}");
        assert!(
            base < end && base.is_multiple_of(page_bytes) && end.is_multiple_of(page_bytes),
            "window {base:#x}..{end:#x}"
        );
        Regions {
            base,
            end,
            page_bytes,
            max_regions,
            ranges: Vec::new(),
            pages: 0,
        }
    }

    /// Pages reserved in total.
    pub fn pages(&self) -> u64 {
        self.pages
    }

    /// Ranges held.
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    /// Whether nothing is reserved.
    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }

    /// Reserves `pages` pages at the lowest address where they fit; returns that address.
    pub fn reserve(&mut self, pages: u64) -> Result<u64, RegionError> {
        let bytes = pages
            .checked_mul(self.page_bytes)
            .filter(|&b| b > 0 && b <= self.end - self.base)
            .ok_or(RegionError::BadLength)?;
        if self.ranges.len() >= self.max_regions {
            return Err(RegionError::TooMany);
        }
        let mut cursor = self.base;
        let mut slot = self.ranges.len();
        for (index, &(start, len)) in self.ranges.iter().enumerate() {
            if start - cursor >= bytes {
                slot = index;
                break;
            }
            cursor = start + len * self.page_bytes;
        }
        if slot == self.ranges.len() && self.end - cursor < bytes {
            return Err(RegionError::NoSpace);
        }
        self.ranges
            .try_reserve(1)
            .map_err(|_| RegionError::NoMemory)?;
        self.ranges.insert(slot, (cursor, pages));
        self.pages += pages;
        debug_assert!(self.is_consistent());
        Ok(cursor)
    }

    /// Releases exactly the range `[addr, addr + pages)` that `reserve` returned.
    pub fn release(&mut self, addr: u64, pages: u64) -> Result<(), RegionError> {
        let index = self
            .ranges
            .binary_search_by_key(&addr, |&(start, _)| start)
            .map_err(|_| RegionError::NotMapped)?;
        if self.ranges[index].1 != pages {
            return Err(RegionError::NotMapped);
        }
        self.ranges.remove(index);
        self.pages -= pages;
        debug_assert!(self.is_consistent());
        Ok(())
    }

    /// Whether `addr` lies in a reserved range.
    pub fn contains(&self, addr: u64) -> bool {
        self.ranges
            .iter()
            .any(|&(start, len)| addr >= start && addr < start + len * self.page_bytes)
    }

    /// Sorted, inside the window, not overlapping, and the page total matches.
    fn is_consistent(&self) -> bool {
        let mut cursor = self.base;
        let mut total = 0u64;
        for &(start, len) in &self.ranges {
            if start < cursor || len == 0 {
                return false;
            }
            cursor = start + len * self.page_bytes;
            total += len;
        }
        cursor <= self.end && total == self.pages
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: u64 = 4096;
    const BASE: u64 = 0x10_0000_0000;

    fn window(pages: u64, max: usize) -> Regions {
        Regions::new(BASE, BASE + pages * PAGE, PAGE, max)
    }

    #[test]
    fn first_fit_from_the_bottom_and_reuse_after_release() {
        let mut r = window(100, 16);
        let a = r.reserve(10).unwrap();
        let b = r.reserve(5).unwrap();
        let c = r.reserve(20).unwrap();
        assert_eq!((a, b, c), (BASE, BASE + 10 * PAGE, BASE + 15 * PAGE));
        assert_eq!(r.pages(), 35);
        r.release(b, 5).unwrap();
        // A smaller range takes the hole; a larger one goes after the last range.
        assert_eq!(r.reserve(3).unwrap(), BASE + 10 * PAGE);
        assert_eq!(r.reserve(4).unwrap(), BASE + 35 * PAGE);
        assert_eq!(r.reserve(2).unwrap(), BASE + 13 * PAGE);
        assert_eq!(r.len(), 5);
        assert!(r.contains(BASE + 14 * PAGE) && !r.contains(BASE + 39 * PAGE));
    }

    #[test]
    fn map_unmap_loops_reuse_one_address() {
        let mut r = window(1 << 20, 4096);
        let first = r.reserve(1).unwrap();
        r.release(first, 1).unwrap();
        for _ in 0..10_000 {
            let addr = r.reserve(1).unwrap();
            assert_eq!(addr, first);
            r.release(addr, 1).unwrap();
        }
        assert!(r.is_empty() && r.pages() == 0);
    }

    #[test]
    fn release_must_match_a_reserved_range_exactly() {
        let mut r = window(100, 16);
        let a = r.reserve(10).unwrap();
        for (addr, pages) in [(a, 9), (a, 11), (a + PAGE, 9), (a + 10 * PAGE, 1), (0, 1)] {
            assert_eq!(r.release(addr, pages), Err(RegionError::NotMapped));
        }
        assert_eq!(r.pages(), 10, "a refused release changes nothing");
        r.release(a, 10).unwrap();
        assert_eq!(r.release(a, 10), Err(RegionError::NotMapped), "twice");
    }

    #[test]
    fn the_window_the_count_and_the_lengths_are_bounded() {
        let mut r = window(10, 3);
        assert_eq!(r.reserve(0), Err(RegionError::BadLength));
        assert_eq!(r.reserve(11), Err(RegionError::BadLength));
        assert_eq!(r.reserve(u64::MAX), Err(RegionError::BadLength));
        assert_eq!(r.reserve(u64::MAX / PAGE + 1), Err(RegionError::BadLength));
        r.reserve(4).unwrap();
        r.reserve(4).unwrap();
        assert_eq!(r.reserve(3), Err(RegionError::NoSpace));
        r.reserve(2).unwrap();
        assert_eq!(r.reserve(1), Err(RegionError::TooMany));
        assert_eq!(r.pages(), 10);
    }

    #[test]
    fn seeded_random_operations_keep_the_invariants() {
        let mut r = window(4096, 256);
        let mut held: alloc::vec::Vec<(u64, u64)> = alloc::vec::Vec::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            if held.is_empty() || next() % 3 != 0 {
                let pages = 1 + next() % 64;
                match r.reserve(pages) {
                    Ok(addr) => {
                        // Never overlaps anything held.
                        for &(start, len) in &held {
                            assert!(addr + pages * PAGE <= start || addr >= start + len * PAGE);
                        }
                        held.push((addr, pages));
                    }
                    Err(e) => assert!(matches!(e, RegionError::NoSpace | RegionError::TooMany)),
                }
            } else {
                let (addr, pages) = held.swap_remove((next() % held.len() as u64) as usize);
                r.release(addr, pages).unwrap();
            }
            assert!(r.is_consistent());
            assert_eq!(r.pages(), held.iter().map(|h| h.1).sum::<u64>());
        }
    }
}
