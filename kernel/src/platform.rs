//! Bringing the machine up: ACPI discovery, interrupt controllers, the tick, and the
//! ways down (power-off).

use spin::Once;

use crate::arch::acpi::{self, Platform};
use crate::arch::{apic, idt, pic, qemu};
use crate::mm::phys_to_virt;
use crate::{events, time};

static PLATFORM: Once<Platform> = Once::new();

/// ISA IRQ of COM1.
const COM1_IRQ: u8 = 4;

/// Discovers the platform, brings up the local APIC and tick, and routes COM1.
/// Interrupts stay disabled; the caller enables them.
pub fn init(rsdp_phys: Option<u64>) -> time::Calibration {
    let platform = match acpi::discover(rsdp_phys) {
        Ok(p) => p,
        Err(err) => panic!("ACPI discovery failed: {err:?}; Xylem needs an APIC platform"),
    };
    pic::disable();
    apic::init_local(phys_to_virt(platform.local_apic_phys));
    idt::set_timer_handler(crate::on_timer_tick);
    idt::set_irq_exit_hook(crate::sched::reschedule_if_needed);
    let calibration = time::init();
    let com1 = platform.isa_route(COM1_IRQ);
    match platform.io_apic_for(com1.gsi) {
        Some((base, gsi_base)) => {
            idt::register_irq(idt::COM1_VECTOR, crate::console::on_receive_interrupt);
            apic::ioapic_route(
                base,
                gsi_base,
                com1.gsi,
                idt::COM1_VECTOR,
                apic::id(),
                com1.level_triggered,
                com1.active_low,
            );
        }
        None => log::error!(
            "no I/O APIC serves GSI {}: console input disabled",
            com1.gsi
        ),
    }
    log::info!(
        "platform: {} I/O APIC(s), TSC {} MHz, tick {} Hz ({} APIC counts)",
        platform.io_apics.len(),
        calibration.tsc_hz / 1_000_000,
        time::TICK_HZ,
        calibration.apic_counts_per_tick
    );
    PLATFORM.call_once(|| platform);
    calibration
}

/// The platform found at boot (drivers use it to route their interrupts).
pub fn get() -> &'static Platform {
    PLATFORM.get().expect("platform::get before platform::init")
}

/// Powers the machine off: ACPI S5, falling back to QEMU's debug-exit device.
pub fn poweroff() -> ! {
    events::push(events::EventKind::Poweroff);
    if let Some(port) = PLATFORM.get().and_then(|p| p.pm1a_control_port) {
        qemu::acpi_poweroff(port);
        log::warn!("ACPI power-off did not take effect");
    }
    qemu::exit(qemu::ExitCode::TestsPassed)
}
