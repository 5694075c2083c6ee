//! In-kernel tests and benchmarks of the scheduler.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicU64, Ordering};
use kcore::run_queue::Priority;

use super::{check, TestResult};
use crate::arch::cpu;
use crate::events::ExitReason;
use crate::mm::frames;
use crate::{sched, time};

fn spawn(
    name: &str,
    priority: Priority,
    f: impl FnOnce() + Send + 'static,
) -> Result<sched::TaskId, String> {
    sched::spawn(name, priority, f).map_err(|e| format!("spawn {name}: {e:?}"))
}

/// Two CPU-bound tasks of equal priority both make progress: the timer preempts them.
pub fn preemption() -> TestResult {
    let counters: Arc<[AtomicU64; 2]> = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
    let mut ids = Vec::new();
    for i in 0..2 {
        let c = counters.clone();
        ids.push(spawn("spin", Priority::CELL, move || loop {
            c[i].fetch_add(1, Ordering::Relaxed);
        })?);
    }
    sched::sleep_ms(300);
    let (a, b) = (
        counters[0].load(Ordering::Relaxed),
        counters[1].load(Ordering::Relaxed),
    );
    for id in ids {
        sched::kill(id).map_err(|e| format!("kill {id}: {e:?}"))?;
    }
    check(a > 0 && b > 0, || format!("a spinner starved: {a} vs {b}"))?;
    // Round-robin with 10 ms slices over 300 ms: neither should get more than ~4x the other.
    check(a.max(b) <= 4 * a.min(b), || {
        format!("unfair split between equal tasks: {a} vs {b}")
    })
}

/// Sleeps end on time: never early, and (median) at most one tick late.
pub fn sleep_accuracy() -> TestResult {
    let mut lateness_us = Vec::new();
    for round in 0..30u64 {
        let ms = [1, 2, 5, 10, 20][round as usize % 5];
        let start = time::now_us();
        let deadline = start + ms * 1000;
        sched::sleep_until_us(deadline);
        let woke = time::now_us();
        check(woke >= deadline, || {
            format!("woke {} us early from a {ms} ms sleep", deadline - woke)
        })?;
        lateness_us.push(woke - deadline);
    }
    lateness_us.sort_unstable();
    let median = lateness_us[lateness_us.len() / 2];
    crate::println!(
        "    sleep lateness: median {median} us, max {} us",
        lateness_us[lateness_us.len() - 1]
    );
    check(median <= time::TICK_US, || {
        format!("median lateness {median} us exceeds one tick")
    })
}

/// Killing a task returns its stack and bookkeeping.
pub fn kill_returns_resources() -> TestResult {
    // Warm up so one-time growth (queues, event ring) is not counted as a leak.
    for _ in 0..3 {
        let id = spawn("victim", Priority::CELL, || loop {
            sched::sleep_ms(1000);
        })?;
        sched::sleep_ms(5);
        sched::kill(id).map_err(|e| format!("{e:?}"))?;
    }
    let heap_before = super::settled_heap_used();
    let tasks_before = sched::tasks().len();
    let id = spawn("victim", Priority::CELL, || loop {
        sched::sleep_ms(1000);
    })?;
    sched::sleep_ms(5);
    check(sched::exists(id), || String::from("victim did not start"))?;
    sched::kill(id).map_err(|e| format!("{e:?}"))?;
    check(!sched::exists(id), || {
        String::from("killed task still listed")
    })?;
    check(sched::kill(id) == Err(sched::KillError::NoSuchTask), || {
        String::from("second kill did not fail")
    })?;
    let heap_after = super::settled_heap_used();
    check(sched::tasks().len() == tasks_before, || {
        String::from("task count changed")
    })?;
    check(heap_after == heap_before, || {
        format!("heap {heap_before} -> {heap_after} bytes")
    })
}

/// 10,000 spawn/exit cycles leave free frames and heap use exactly as they were.
pub fn spawn_exit_no_leak() -> TestResult {
    let cycle = || -> TestResult {
        let id = spawn("short", Priority::HIGH, || {
            sched::exit(ExitReason::Exited(0))
        })?;
        sched::yield_now();
        while sched::exists(id) {
            sched::yield_now();
        }
        Ok(())
    };
    // The event ring fills up to its caps during warm-up; after that it is steady.
    for _ in 0..1500 {
        cycle()?;
    }
    let (frames_before, heap_before) = (frames::free_frames(), super::settled_heap_used());
    let started = time::now_us();
    for _ in 0..10_000 {
        cycle()?;
    }
    let elapsed_ms = (time::now_us() - started) / 1000;
    let (frames_after, heap_after) = (frames::free_frames(), super::settled_heap_used());
    crate::println!("    10000 spawn/exit cycles in {elapsed_ms} ms");
    check(frames_after == frames_before, || {
        format!("free frames {frames_before} -> {frames_after}")
    })?;
    check(heap_after == heap_before, || {
        format!("heap {heap_before} -> {heap_after} bytes")
    })
}

/// Kernel stacks are recycled: more tasks than the pool holds at once draw from it and then
/// from the heap; once they are gone the pool is full again and the heap is back exactly
/// where it was (the extra stacks were freed, not kept).
pub fn stack_pool() -> TestResult {
    check(sched::pooled_stacks() == sched::STACK_POOL_MAX, || {
        format!(
            "pool holds {} stacks at rest, expected {}",
            sched::pooled_stacks(),
            sched::STACK_POOL_MAX
        )
    })?;
    let heap_before = super::settled_heap_used();
    let mut ids = Vec::new();
    for _ in 0..sched::STACK_POOL_MAX + 3 {
        ids.push(spawn("pooled", Priority::CELL, || loop {
            sched::sleep_ms(1000);
        })?);
    }
    sched::sleep_ms(5);
    check(sched::pooled_stacks() == 0, || {
        format!("{} stacks left in the pool", sched::pooled_stacks())
    })?;
    // Half end by kill, half by exit: both paths recycle.
    for (i, id) in ids.iter().enumerate() {
        if i % 2 == 0 {
            sched::kill(*id).map_err(|e| format!("{e:?}"))?;
        }
    }
    let exiting: Vec<_> = (0..3)
        .map(|_| {
            spawn("pooled-exit", Priority::HIGH, || {
                sched::exit(ExitReason::Exited(0))
            })
        })
        .collect::<Result<_, _>>()?;
    for id in ids
        .iter()
        .enumerate()
        .filter(|(i, _)| i % 2 == 1)
        .map(|(_, id)| *id)
    {
        sched::kill(id).map_err(|e| format!("{e:?}"))?;
    }
    while exiting.iter().any(|id| sched::exists(*id)) {
        sched::yield_now();
    }
    sched::yield_now();
    check(sched::pooled_stacks() == sched::STACK_POOL_MAX, || {
        format!("pool holds {} stacks after", sched::pooled_stacks())
    })?;
    // The test's own lists were allocated after the first measurement.
    drop((ids, exiting));
    let heap_after = super::settled_heap_used();
    check(heap_after == heap_before, || {
        format!("heap {heap_before} -> {heap_after} bytes")
    })
}

/// `METRIC context_switch_ns` and `METRIC task_spawn_us`, medians over 2000 samples.
pub fn bench() -> TestResult {
    const SAMPLES: usize = 2000;
    let partner = spawn("pingpong", Priority::NORMAL, || loop {
        sched::yield_now();
    })?;
    let mut switch_ns = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        let t0 = cpu::rdtsc();
        sched::yield_now(); // to the partner and back: two switches
        switch_ns.push(time::tsc_to_ns(cpu::rdtsc() - t0) / 2);
    }
    sched::kill(partner).map_err(|e| format!("{e:?}"))?;
    static FIRST_INSN_TSC: AtomicU64 = AtomicU64::new(0);
    let mut spawn_us = Vec::with_capacity(SAMPLES);
    for _ in 0..SAMPLES {
        FIRST_INSN_TSC.store(0, Ordering::Relaxed);
        let t0 = cpu::rdtsc();
        let id = spawn("first-insn", Priority::HIGH, || {
            FIRST_INSN_TSC.store(cpu::rdtsc(), Ordering::Relaxed)
        })?;
        sched::yield_now();
        let first = FIRST_INSN_TSC.load(Ordering::Relaxed);
        check(first != 0, || {
            String::from("spawned task did not run at its first chance")
        })?;
        spawn_us.push(time::tsc_to_ns(first - t0));
        while sched::exists(id) {
            sched::yield_now();
        }
    }
    switch_ns.sort_unstable();
    spawn_us.sort_unstable();
    crate::println!("METRIC context_switch_ns {} ns", switch_ns[SAMPLES / 2]);
    // Microseconds with one decimal: spawns are a few microseconds even under TCG.
    let median_ns = spawn_us[SAMPLES / 2];
    crate::println!(
        "METRIC task_spawn_us {}.{} us",
        median_ns / 1000,
        (median_ns % 1000) / 100
    );
    Ok(())
}
