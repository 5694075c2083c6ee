//! x86_64: one file per hardware unit (GDT, IDT, APIC, PIT, serial, …), as in hermit.

pub mod acpi;
pub mod apic;
pub mod backtrace;
pub mod cpu;
pub mod gdt;
pub mod idt;
pub mod pic;
pub mod pit;
pub mod port;
pub mod qemu;
pub mod rng;
pub mod rtc;
pub mod serial;
pub mod switch;
pub mod syscall;
