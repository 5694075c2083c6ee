//! Platform discovery from ACPI tables (MADT for the APICs, FADT for power-off), through
//! the `acpi` crate. Tables are read through the bootloader's physical-memory window, so
//! "mapping" a region is just an address computation.

use acpi::platform::interrupt::{InterruptModel, Polarity, TriggerMode};
use acpi::{AcpiHandler, AcpiTables, PhysicalMapping};
use alloc::vec::Vec;
use core::ptr::NonNull;

use crate::mm::phys_to_virt;

#[derive(Clone, Copy)]
struct WindowHandler;

impl AcpiHandler for WindowHandler {
    unsafe fn map_physical_region<T>(&self, phys: usize, size: usize) -> PhysicalMapping<Self, T> {
        let virt = phys_to_virt(phys as u64) as *mut T;
        // SAFETY: the physical window maps all of physical memory (at least the first
        // 4 GiB, where ACPI tables live), so `virt` is valid for `size` bytes; it is never
        // null because the window's offset is non-zero.
        unsafe { PhysicalMapping::new(phys, NonNull::new_unchecked(virt), size, size, *self) }
    }

    fn unmap_physical_region<T>(_region: &PhysicalMapping<Self, T>) {}
}

/// How an ISA IRQ reaches the I/O APIC.
#[derive(Clone, Copy, Debug)]
pub struct IsaRoute {
    pub gsi: u32,
    pub level_triggered: bool,
    pub active_low: bool,
}

/// What the kernel needs from ACPI.
#[derive(Debug)]
pub struct Platform {
    pub local_apic_phys: u64,
    /// (physical address, first GSI) of each I/O APIC.
    pub io_apics: Vec<(u64, u32)>,
    /// Interrupt source overrides: (ISA IRQ, route).
    pub overrides: Vec<(u8, IsaRoute)>,
    /// PM1a control port, for ACPI power-off.
    pub pm1a_control_port: Option<u16>,
}

impl Platform {
    /// Where ISA IRQ `irq` arrives: an override if the MADT has one, else identity-mapped,
    /// edge-triggered, active-high (the ISA defaults).
    pub fn isa_route(&self, irq: u8) -> IsaRoute {
        self.overrides
            .iter()
            .find(|(source, _)| *source == irq)
            .map(|(_, route)| *route)
            .unwrap_or(IsaRoute {
                gsi: u32::from(irq),
                level_triggered: false,
                active_low: false,
            })
    }

    /// The I/O APIC (virtual base, first GSI) that serves `gsi`.
    pub fn io_apic_for(&self, gsi: u32) -> Option<(u64, u32)> {
        self.io_apics
            .iter()
            .filter(|(_, base)| *base <= gsi)
            .max_by_key(|(_, base)| *base)
            .map(|(phys, base)| (phys_to_virt(*phys), *base))
    }
}

/// Why ACPI discovery failed.
#[derive(Debug)]
pub enum PlatformError {
    NoRsdp,
    #[allow(dead_code, reason = "read through Debug in the error message")]
    Tables(acpi::AcpiError),
    NotApic,
}

/// Reads the MADT and FADT starting from the RSDP the bootloader found.
pub fn discover(rsdp_phys: Option<u64>) -> Result<Platform, PlatformError> {
    let rsdp = rsdp_phys.ok_or(PlatformError::NoRsdp)?;
    // SAFETY: the bootloader reports the RSDP's physical address; the handler maps it.
    let tables = unsafe { AcpiTables::from_rsdp(WindowHandler, rsdp as usize) }
        .map_err(PlatformError::Tables)?;
    let info = tables.platform_info().map_err(PlatformError::Tables)?;
    let InterruptModel::Apic(apic) = info.interrupt_model else {
        return Err(PlatformError::NotApic);
    };
    let io_apics = apic
        .io_apics
        .iter()
        .map(|io| (u64::from(io.address), io.global_system_interrupt_base))
        .collect();
    let overrides = apic
        .interrupt_source_overrides
        .iter()
        .map(|o| {
            let route = IsaRoute {
                gsi: o.global_system_interrupt,
                level_triggered: matches!(o.trigger_mode, TriggerMode::Level),
                active_low: matches!(o.polarity, Polarity::ActiveLow),
            };
            (o.isa_source, route)
        })
        .collect();
    let pm1a_control_port = tables
        .find_table::<acpi::fadt::Fadt>()
        .ok()
        .and_then(|fadt| fadt.pm1a_control_block().ok())
        .and_then(|block| u16::try_from(block.address).ok());
    Ok(Platform {
        local_apic_phys: apic.local_apic_address,
        io_apics,
        overrides,
        pm1a_control_port,
    })
}
