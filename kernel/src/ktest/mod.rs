//! The in-kernel test runner (built with `--features ktest`).
//!
//! The harness picks tests through fw_cfg (`opt/xylem/ktest`: comma-separated names, or
//! `all` for every non-fatal test). Results print on COM1 as `ktest NAME ... ok|FAILED: why`
//! and a summary line; QEMU then exits with status 33 (all passed) or 35 (some failed).
//! Fatal tests (names starting with `fatal-`) deliberately crash the kernel and are run one
//! per boot; the harness expects the panic status 99 and the fault report. Benchmarks
//! (`bench-*`) print `METRIC` lines and run only when named.

use alloc::string::String;
use alloc::vec::Vec;

use crate::arch::qemu::{self, ExitCode};
use crate::drivers::fw_cfg;
use crate::mm::{frames, heap};
use crate::time;

mod cell_tests;
mod sched_tests;

type TestResult = Result<(), String>;

struct Test {
    name: &'static str,
    run: fn() -> TestResult,
}

const TESTS: &[Test] = &[
    Test {
        name: "heap-alloc-free",
        run: heap_alloc_free,
    },
    Test {
        name: "frames-alloc-free",
        run: frames_alloc_free,
    },
    Test {
        name: "frames-prezeroed",
        run: frames_prezeroed,
    },
    Test {
        name: "clock-monotonic",
        run: clock_monotonic,
    },
    Test {
        name: "tick-rate",
        run: tick_rate,
    },
    Test {
        name: "sched-preemption",
        run: sched_tests::preemption,
    },
    Test {
        name: "sched-sleep-accuracy",
        run: sched_tests::sleep_accuracy,
    },
    Test {
        name: "sched-kill-returns-resources",
        run: sched_tests::kill_returns_resources,
    },
    Test {
        name: "sched-spawn-exit-no-leak",
        run: sched_tests::spawn_exit_no_leak,
    },
    Test {
        name: "sched-stack-pool",
        run: sched_tests::stack_pool,
    },
    Test {
        name: "cells-fault-returns-frames",
        run: cell_tests::fault_returns_frames,
    },
    Test {
        name: "cells-run-stop-no-leak",
        run: cell_tests::run_stop_no_leak,
    },
    Test {
        name: "cells-exit-survives-event-flood",
        run: cell_tests::exit_survives_event_flood,
    },
    Test {
        name: "bench-sched",
        run: sched_tests::bench,
    },
    Test {
        name: "bench-cells",
        run: cell_tests::bench,
    },
    Test {
        name: "fatal-pagefault",
        run: fatal_pagefault,
    },
    Test {
        name: "fatal-panic",
        run: fatal_panic,
    },
];

/// Runs the selected tests and exits QEMU.
pub fn run() -> ! {
    let selection = fw_cfg::read_text("opt/xylem/ktest").unwrap_or_else(|_| String::from("all"));
    let wanted: Vec<&str> = selection
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    let chosen: Vec<&Test> = TESTS
        .iter()
        .filter(|t| {
            wanted.contains(&t.name)
                || (wanted.contains(&"all")
                    && !t.name.starts_with("fatal-")
                    && !t.name.starts_with("bench-"))
        })
        .collect();
    let unknown: Vec<&&str> = wanted
        .iter()
        .filter(|w| **w != "all" && !TESTS.iter().any(|t| t.name == **w))
        .collect();
    let (mut passed, mut failed) = (0, unknown.len());
    for name in unknown {
        crate::println!("ktest {name} ... FAILED: no such test");
    }
    for test in chosen {
        match (test.run)() {
            Ok(()) => {
                passed += 1;
                crate::println!("ktest {} ... ok", test.name);
            }
            Err(why) => {
                failed += 1;
                crate::println!("ktest {} ... FAILED: {why}", test.name);
            }
        }
    }
    crate::println!("ktest: {passed} passed, {failed} failed");
    qemu::exit(if failed == 0 {
        ExitCode::TestsPassed
    } else {
        ExitCode::TestsFailed
    })
}

/// Heap bytes in use once transient allocations of other tasks (the reactor handling a
/// tick, say) are out of the way: the minimum over 20 samples 1 ms apart. A real leak
/// persists across samples; a transient does not.
pub(crate) fn settled_heap_used() -> u64 {
    (0..20)
        .map(|_| {
            crate::sched::sleep_ms(1);
            heap::usage().0
        })
        .min()
        .expect("20 samples")
}

pub(crate) fn check(condition: bool, why: impl FnOnce() -> String) -> TestResult {
    if condition {
        Ok(())
    } else {
        Err(why())
    }
}

fn heap_alloc_free() -> TestResult {
    let (before, _) = heap::usage();
    {
        let mut blocks: Vec<Vec<u8>> = Vec::new();
        for i in 0..256usize {
            blocks.push(alloc::vec![i as u8; 64 + i * 16]);
        }
        for (i, block) in blocks.iter().enumerate() {
            check(block.iter().all(|&b| b == i as u8), || {
                alloc::format!("block {i} corrupted")
            })?;
        }
    }
    let (after, _) = heap::usage();
    check(after == before, || {
        alloc::format!("heap use {before} -> {after} bytes")
    })
}

fn frames_alloc_free() -> TestResult {
    let before = frames::free_frames();
    let mut taken = Vec::new();
    for _ in 0..512 {
        taken.push(frames::OwnedFrame::alloc().ok_or_else(|| String::from("out of frames"))?);
    }
    check(frames::free_frames() == before - 512, || {
        String::from("free count did not drop by 512")
    })?;
    let mut addrs: Vec<u64> = taken.iter().map(frames::OwnedFrame::addr).collect();
    addrs.sort_unstable();
    addrs.dedup();
    check(addrs.len() == taken.len(), || {
        String::from("a frame was handed out twice")
    })?;
    drop(taken);
    check(frames::free_frames() == before, || {
        alloc::format!("free {before} -> {}", frames::free_frames())
    })
}

/// Idle time zeroes freed frames ahead of use, and every frame handed out is all zero
/// whether it came pre-zeroed (only its link word cleared) or was zeroed on the spot.
fn frames_prezeroed() -> TestResult {
    const N: usize = 64;
    let mut dirty = Vec::new();
    for _ in 0..N {
        let mut frame = frames::OwnedFrame::alloc().ok_or_else(|| String::from("out of frames"))?;
        frame.fill(0xa5);
        dirty.push(frame);
    }
    let before = frames::free_frames();
    drop(dirty);
    check(frames::free_frames() == before + N as u64, || {
        String::from("freeing did not count")
    })?;
    // Idle runs while this task sleeps.
    crate::sched::sleep_ms(50);
    let ready = frames::prezeroed();
    check(ready >= frames::prezeroed_target().min(N as u64), || {
        alloc::format!("{ready} frames pre-zeroed after 50 ms of idle")
    })?;
    let mut taken = Vec::new();
    for _ in 0..2 * N {
        taken.push(frames::OwnedFrame::alloc().ok_or_else(|| String::from("out of frames"))?);
    }
    let dirty = taken.iter().filter(|f| !f.is_zero()).count();
    check(dirty == 0, || {
        alloc::format!("{dirty} of {} frames handed out not zero", 2 * N)
    })?;
    check(frames::prezeroed() < ready, || {
        String::from("allocation did not use the pre-zeroed frames")
    })
}

fn clock_monotonic() -> TestResult {
    let mut last = time::now_us();
    for _ in 0..10_000 {
        let now = time::now_us();
        check(now >= last, || {
            alloc::format!("clock went back {last} -> {now}")
        })?;
        last = now;
    }
    Ok(())
}

fn tick_rate() -> TestResult {
    let (t0, k0) = (time::now_us(), time::ticks());
    time::wait_until_us(t0 + 200_000);
    let (t1, k1) = (time::now_us(), time::ticks());
    let expected = (t1 - t0) * time::TICK_HZ / 1_000_000;
    let got = k1 - k0;
    // Under TCG a busy host makes QEMU drop APIC timer ticks (it does not queue them), so
    // only a dead, crawling or double-speed timer fails here; time itself comes from the TSC.
    check(
        got * 10 >= expected * 5 && got * 10 <= expected * 12,
        || alloc::format!("{got} ticks in {} us, expected ~{expected}", t1 - t0),
    )
}

fn fatal_pagefault() -> TestResult {
    crate::println!("ktest fatal-pagefault: writing to unmapped address 0xdeadbeef");
    crate::arch::cpu::fault_on_write(0xdead_beef);
    Err(String::from(
        "the write to an unmapped address did not fault",
    ))
}

fn fatal_panic() -> TestResult {
    panic!("ktest fatal-panic: deliberate panic");
}
