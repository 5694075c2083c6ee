//! Where the kernel heap goes and how big it is, decided from the boot memory map.
//!
//! The heap is one contiguous run of physical memory (reached through the physical window,
//! so it needs no page-table work). It wants a quarter of usable RAM within
//! [`HEAP_MIN_BYTES`, `HEAP_MAX_BYTES`], and lives in the largest usable region. When that
//! region is smaller than the wish — OVMF at 64 MiB splits low memory so the largest run is
//! ~12 MiB, a fifth of RAM — the heap shrinks to fit it; only a run below the minimum is
//! [`NoRoomForHeap`], a fact about the machine that the kernel reports and stops on (never
//! a panic). `mm::init` drives this with the bootloader's map.

/// The smallest heap the kernel boots with.
pub const HEAP_MIN_BYTES: u64 = 4 << 20;
/// The largest heap (beyond it, frames serve cells better).
pub const HEAP_MAX_BYTES: u64 = 32 << 20;

const PAGE_BYTES: u64 = 4096;

/// The chosen heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeapPlan {
    /// Page-aligned physical start.
    pub start: u64,
    /// Size, a multiple of the page size.
    pub bytes: u64,
    /// What the quarter-of-RAM rule asked for (more than `bytes` when the run was short).
    pub wanted_bytes: u64,
    /// The largest usable run of the map, page-aligned.
    pub largest_run_bytes: u64,
}

/// No usable region holds even the minimum heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NoRoomForHeap {
    /// The smallest heap the kernel runs with.
    pub min_bytes: u64,
    /// The largest contiguous usable run the memory map offered.
    pub largest_usable_bytes: u64,
    /// All usable memory in the map.
    pub usable_bytes: u64,
}

/// The heap's wish: a quarter of usable memory, within [4 MiB, 32 MiB], page-aligned.
pub fn wanted_bytes(usable_bytes: u64) -> u64 {
    (usable_bytes / 4).clamp(HEAP_MIN_BYTES, HEAP_MAX_BYTES) & !(PAGE_BYTES - 1)
}

/// Plans the heap over the usable regions `(start, end)` of the memory map (any order,
/// any alignment). Ties between equally large runs go to the last.
pub fn plan(usable: impl Iterator<Item = (u64, u64)> + Clone) -> Result<HeapPlan, NoRoomForHeap> {
    let usable_bytes = usable.clone().fold(0u64, |sum, (start, end)| {
        sum.saturating_add(end.saturating_sub(start))
    });
    let mut best: Option<(u64, u64)> = None;
    for (start, end) in usable {
        let Some(aligned) = start.checked_next_multiple_of(PAGE_BYTES) else {
            continue;
        };
        let run = end.saturating_sub(aligned) & !(PAGE_BYTES - 1);
        if best.is_none_or(|(_, b)| run >= b) {
            best = Some((aligned, run));
        }
    }
    let (start, largest_run_bytes) = best.unwrap_or((0, 0));
    let wanted = wanted_bytes(usable_bytes);
    let bytes = wanted.min(largest_run_bytes);
    if bytes < HEAP_MIN_BYTES {
        return Err(NoRoomForHeap {
            min_bytes: HEAP_MIN_BYTES,
            largest_usable_bytes: largest_run_bytes,
            usable_bytes,
        });
    }
    Ok(HeapPlan {
        start,
        bytes,
        wanted_bytes: wanted,
        largest_run_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn one_large_region_gives_a_quarter() {
        // SeaBIOS at 64 MiB: low 640 KiB, then one run from 1 MiB (minus the kernel).
        let map = [(0x1000, 0x9f000), (4 * MIB, 64 * MIB)];
        let p = plan(map.iter().copied()).unwrap();
        assert_eq!(p.start, 4 * MIB);
        assert_eq!(p.bytes, wanted_bytes(map.iter().map(|(s, e)| e - s).sum()));
        assert_eq!(p.bytes, p.wanted_bytes);
        assert!(p.bytes > 14 * MIB && p.bytes < 16 * MIB);
    }

    #[test]
    fn a_fragmented_map_shrinks_the_heap_to_its_largest_run() {
        // OVMF at 64 MiB (as measured): no run holds the 13.8 MiB wish; 12 MiB is the best.
        let map = [
            (0x1000, 0xa0000),
            (MIB, 8 * MIB),
            (9 * MIB, 21 * MIB),
            (22 * MIB, 34 * MIB + 0x800),
            (40 * MIB + 1, 50 * MIB),
            (51 * MIB, 62 * MIB),
        ];
        let p = plan(map.iter().copied()).unwrap();
        assert_eq!(
            (p.start, p.bytes),
            (22 * MIB, 12 * MIB),
            "last of the equal runs"
        );
        assert_eq!(p.largest_run_bytes, 12 * MIB);
        assert!(p.wanted_bytes > p.bytes);
        assert_eq!(p.bytes % PAGE_BYTES, 0);
    }

    #[test]
    fn unaligned_regions_are_trimmed_to_whole_pages() {
        let p = plan([(0x1001, 0x1001 + 5 * MIB + 0x1fff)].into_iter()).unwrap();
        assert_eq!(p.start, 0x2000);
        assert_eq!(p.bytes, HEAP_MIN_BYTES);
        assert!(p.start + p.bytes <= 0x1001 + 5 * MIB + 0x1fff);
    }

    #[test]
    fn large_machines_stop_at_the_maximum() {
        let p = plan([(MIB, 4096 * MIB)].into_iter()).unwrap();
        assert_eq!(p.bytes, HEAP_MAX_BYTES);
    }

    #[test]
    fn no_run_of_the_minimum_is_an_error_with_the_facts() {
        let map = [(MIB, 4 * MIB), (5 * MIB, 8 * MIB), (9 * MIB, 12 * MIB)];
        assert_eq!(
            plan(map.iter().copied()),
            Err(NoRoomForHeap {
                min_bytes: HEAP_MIN_BYTES,
                largest_usable_bytes: 3 * MIB,
                usable_bytes: 9 * MIB,
            })
        );
        assert_eq!(
            plan(core::iter::empty()),
            Err(NoRoomForHeap {
                min_bytes: HEAP_MIN_BYTES,
                largest_usable_bytes: 0,
                usable_bytes: 0,
            })
        );
    }

    #[test]
    fn regions_at_the_top_of_the_address_space_do_not_overflow() {
        let top = u64::MAX - 100;
        let p = plan([(top, u64::MAX), (MIB, 9 * MIB)].into_iter()).unwrap();
        assert_eq!(p.start, MIB);
        // An inverted region counts for nothing.
        assert!(plan([(9 * MIB, MIB)].into_iter()).is_err());
    }
}
