//! The Xylem kernel.
//!
//! Boot path (see docs/architecture.md): the bootloader enters [`kmain`] in long mode with
//! all physical memory mapped; we bring up serial and logging, the GDT/TSS and IDT, memory
//! (frames + heap), the platform (ACPI, APIC, calibrated clock and tick), read the node's
//! identity from fw_cfg, enable interrupts, log a `boot` event on COM2, and hand COM1 to the
//! shell (or, in a `ktest` build, to the in-kernel test runner).
//!
//! Architecture invariant: `unsafe` is allowed only in `arch`, `mm` and `drivers`.
#![no_std]
#![no_main]
#![feature(abi_x86_interrupt)]
#![deny(unsafe_code)]
// The test kernel runs the test runner instead of the shell, so the shell is unreachable there.
#![cfg_attr(feature = "ktest", allow(dead_code))]

extern crate alloc;

#[allow(unsafe_code)]
mod arch;
#[allow(unsafe_code)]
mod drivers;
#[allow(unsafe_code)]
mod mm;

mod cells;
mod cluster;
mod console;
mod crash;
mod events;
mod identity;
mod klog;
#[cfg(feature = "ktest")]
mod ktest;
mod netstack;
mod node;
mod panic;
mod platform;
mod reactor;
// The scheduler is mechanism like `arch`: it owns kernel stacks, saved contexts and each
// task's CR3, and its switch keeps the invariants `arch::switch` and `mm` ask for.
#[allow(unsafe_code)]
mod sched;
mod shell;
mod time;

use bootloader_api::config::{BootloaderConfig, Mapping};
use bootloader_api::BootInfo;

/// Where the kernel is loaded: the top 2 GiB, the conventional kernel code model area.
const KERNEL_BASE: u64 = 0xffff_ffff_8000_0000;
/// Everything the bootloader maps dynamically (physical window, boot info, stack) goes in
/// the upper half, so the lower half is free for cells' private address spaces.
const DYNAMIC_RANGE_START: u64 = 0xffff_8000_0000_0000;

const BOOT_CONFIG: BootloaderConfig = {
    let mut config = BootloaderConfig::new_default();
    config.mappings.physical_memory = Some(Mapping::Dynamic);
    config.mappings.kernel_base = Mapping::FixedAddress(KERNEL_BASE);
    config.mappings.dynamic_range_start = Some(DYNAMIC_RANGE_START);
    config.kernel_stack_size = 256 * 1024;
    config
};

bootloader_api::entry_point!(kmain, config = &BOOT_CONFIG);

fn kmain(boot_info: &'static mut BootInfo) -> ! {
    arch::serial::init();
    klog::init(log::LevelFilter::Info);
    arch::gdt::init();
    arch::idt::init();
    let heap_bytes = match mm::init(
        boot_info.physical_memory_offset.into_option(),
        &boot_info.memory_regions,
    ) {
        Ok(bytes) => bytes,
        // Too little (or too fragmented) RAM is a fact about the machine, not a kernel bug:
        // say what is missing and stop, without a panic's backtrace and crash record.
        Err(err) => {
            log::error!("boot stopped: {err}");
            arch::qemu::exit(arch::qemu::ExitCode::BootFailed)
        }
    };
    // The scheduler exists before the first timer tick, which it accounts.
    sched::init();
    cells::init();
    let calibration = platform::init(boot_info.rsdp_addr.into_option());
    let node = node::init();
    let boot_id = crash::init_boot_id();
    arch::cpu::enable_interrupts();
    // Bytes typed before the COM1 route existed raised no interrupt; collect them now.
    console::on_receive_interrupt();
    let total_kib = mm::frames::total_frames() * mm::PAGE_BYTES / 1024;
    log::info!(
        "Xylem {} on node {} (id {}, {}): {} KiB in frames, {} KiB heap",
        env!("CARGO_PKG_VERSION"),
        node.name,
        node.id,
        node.role.as_str(),
        total_kib,
        heap_bytes / 1024
    );
    events::push(events::EventKind::Boot {
        id: node.id,
        role: node.role.as_str(),
        frames_kib: total_kib,
        heap_kib: heap_bytes / 1024,
        tsc_mhz: calibration.tsc_hz / 1_000_000,
        tsc_err_ppm: time::calibration_error_ppm(),
        boot_id,
    });
    start_tasks();
    sched::run_idle()
}

#[cfg(not(feature = "ktest"))]
fn start_tasks() {
    use kcore::run_queue::Priority;
    // The network first: probing must finish before other tasks run and measure things.
    // Identity before the network: the transport seals or refuses by its verdict.
    identity::init();
    netstack::start();
    // Before the cluster: what the previous boot's panic left is reported first, and the
    // node's status reports carry it from the start.
    crash::check_previous_boot();
    // The cluster drivers log as they start (voters, disk recovery): do it before the shell
    // prints its first prompt, so nothing lands in the middle of a command's output. A node
    // whose identity was refused starts none of them (docs/security.md).
    if identity::cluster_allowed() {
        cluster::membership::init();
        cluster::consensus::init();
        cluster::control::init();
    }
    let spawned = sched::spawn("shell", Priority::HIGH, || shell::run())
        .and_then(|_| sched::spawn("reactor", Priority::NORMAL, reactor::run))
        .and_then(|_| events::start_writer());
    if let Err(err) = spawned {
        panic!("cannot start the core tasks: {err:?}");
    }
    sched::fill_stack_pool();
}

#[cfg(feature = "ktest")]
fn start_tasks() {
    use kcore::run_queue::Priority;
    // The network first: probing must finish before other tasks run and measure things.
    netstack::start();
    let spawned = sched::spawn("ktest", Priority::NORMAL, || ktest::run())
        .and_then(|_| sched::spawn("reactor", Priority::NORMAL, reactor::run))
        .and_then(|_| events::start_writer());
    if let Err(err) = spawned {
        panic!("cannot start the test runner: {err:?}");
    }
    sched::fill_stack_pool();
}

/// The timer interrupt: advance the clock and let the scheduler account the tick.
fn on_timer_tick() {
    time::on_tick();
    sched::on_tick();
}
