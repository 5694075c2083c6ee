//! PCI configuration space through the legacy I/O ports (configuration mechanism #1).
//!
//! On QEMU's `pc` machine (i440FX) every device sits on bus 0 and SeaBIOS has already
//! assigned BARs and interrupt lines, so the kernel only reads: it enumerates bus 0, finds
//! the devices it drives, and enables memory decoding and bus mastering for them.
//! Reference: PCI Local Bus Specification 3.0, section 3.2.2.3.2 (CONFIG_ADDRESS at 0xCF8,
//! CONFIG_DATA at 0xCFC) and section 6.1 (the configuration header).
//!
//! Key types: [`PortCam`] (the `ConfigurationAccess` virtio-drivers' `PciRoot` uses) and
//! [`PciDevice`] (what enumeration reports, including the INTx line for interrupt routing).

use alloc::vec::Vec;
use spin::Mutex;
use virtio_drivers::transport::pci::bus::{ConfigurationAccess, DeviceFunction, PciRoot};

use crate::arch::cpu::without_interrupts;
use crate::arch::port;

const CONFIG_ADDRESS: u16 = 0xcf8;
const CONFIG_DATA: u16 = 0xcfc;
const ENABLE_BIT: u32 = 1 << 31;
/// Offset of the interrupt line (byte 0) and pin (byte 1) register.
const INTERRUPT_OFFSET: u8 = 0x3c;

/// The address/data port pair is one shared latch: a select and its data access must not
/// interleave with another's.
static PORTS: Mutex<()> = Mutex::new(());

/// Configuration access through ports 0xCF8/0xCFC.
#[derive(Debug)]
pub struct PortCam;

fn address(df: DeviceFunction, offset: u8) -> u32 {
    assert!(
        offset.is_multiple_of(4),
        "unaligned config access at {offset:#x}"
    );
    assert!(
        df.device < 32 && df.function < 8,
        "bad device/function {df}"
    );
    ENABLE_BIT
        | u32::from(df.bus) << 16
        | u32::from(df.device) << 11
        | u32::from(df.function) << 8
        | u32::from(offset)
}

impl ConfigurationAccess for PortCam {
    fn read_word(&self, device_function: DeviceFunction, register_offset: u8) -> u32 {
        let addr = address(device_function, register_offset);
        without_interrupts(|| {
            let _latch = PORTS.lock();
            // SAFETY: 0xCF8/0xCFC are the PC's PCI configuration ports, owned by this module
            // and serialised by `PORTS`; config reads have no side effects on the devices
            // we read.
            unsafe {
                port::outl(CONFIG_ADDRESS, addr);
                port::inl(CONFIG_DATA)
            }
        })
    }

    fn write_word(&mut self, device_function: DeviceFunction, register_offset: u8, data: u32) {
        let addr = address(device_function, register_offset);
        without_interrupts(|| {
            let _latch = PORTS.lock();
            // SAFETY: as for `read_word`; the callers (virtio-drivers' PciRoot and this
            // module) only write the command register and BARs of devices we own.
            unsafe {
                port::outl(CONFIG_ADDRESS, addr);
                port::outl(CONFIG_DATA, data);
            }
        });
    }

    unsafe fn unsafe_clone(&self) -> Self {
        PortCam
    }
}

/// One function found on the bus.
#[derive(Clone, Copy, Debug)]
pub struct PciDevice {
    pub function: DeviceFunction,
    pub vendor_id: u16,
    pub device_id: u16,
    /// Class, subclass, programming interface.
    pub class: (u8, u8, u8),
    /// The ISA IRQ the firmware routed INTx to (0xff: none).
    pub interrupt_line: u8,
    /// INTA..INTD = 1..4, 0 = no interrupt pin.
    pub interrupt_pin: u8,
}

/// The root complex, for virtio-drivers' transport constructor.
pub fn root() -> PciRoot<PortCam> {
    PciRoot::new(PortCam)
}

/// Every function on bus 0 (all of QEMU `pc`'s devices live there).
pub fn enumerate() -> Vec<PciDevice> {
    let root = root();
    let cam = PortCam;
    root.enumerate_bus(0)
        .map(|(function, info)| {
            let interrupt = cam.read_word(function, INTERRUPT_OFFSET);
            PciDevice {
                function,
                vendor_id: info.vendor_id,
                device_id: info.device_id,
                class: (info.class, info.subclass, info.prog_if),
                interrupt_line: interrupt as u8,
                interrupt_pin: (interrupt >> 8) as u8,
            }
        })
        .collect()
}
