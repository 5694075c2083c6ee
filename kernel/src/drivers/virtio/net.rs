//! The virtio-net card (VIRTIO 1.1 section 5.1): discovery on PCI, the driver object, and
//! the interrupt acknowledgement.
//!
//! The device is used by one task (the network task) through [`NetDevice`]; the interrupt
//! handler never touches it. Instead, at probe time we find the ISR status register (the
//! `VIRTIO_PCI_CAP_ISR_CFG` capability, section 4.1.4.5) and [`ack_interrupt`] reads it
//! directly: on a level-triggered INTx line that read is what deasserts the interrupt, and
//! it needs no lock the task might hold.

use core::sync::atomic::{AtomicU64, Ordering};
use virtio_drivers::device::net::{RxBuffer, VirtIONet};
use virtio_drivers::transport::pci::bus::{Command, DeviceFunction, PciRoot};
use virtio_drivers::transport::pci::PciTransport;
use virtio_drivers::transport::{DeviceType, Transport};

use super::hal::KernelHal;
use crate::drivers::pci::{self, PortCam};
use crate::mm::phys_to_virt;

/// Descriptors per virtqueue (receive buffers posted at once; sends in flight).
pub const QUEUE_SIZE: usize = 64;
/// Receive buffer size: a 1514-byte frame plus the virtio-net header, rounded up.
pub const RX_BUFFER_BYTES: usize = 2048;

const PCI_CAP_ID_VNDR: u8 = 0x09;
const VIRTIO_PCI_CAP_ISR_CFG: u8 = 3;
const CAP_BAR_OFFSET: u8 = 4;
const CAP_BAR_OFFSET_OFFSET: u8 = 8;

type Nic = VirtIONet<KernelHal, PciTransport, QUEUE_SIZE>;

/// Virtual address of the ISR status byte (0 until a device is probed).
static ISR_VIRT: AtomicU64 = AtomicU64::new(0);
/// Most other virtio functions whose ISR we clear because they share our INTx line.
const SHARED_MAX: usize = 4;
/// ISR status bytes of other virtio functions on our line (0 = unused slot).
///
/// On QEMU `pc` the virtio-blk disk lands on the same ISA IRQ as the card. Its driver polls
/// and never reads its ISR, and with `VIRTIO_F_EVENT_IDX` negotiated virtio-drivers cannot
/// suppress its interrupts, so its level-triggered line would stay high and storm this
/// vector (measured: 15.7 million interrupts in 40 s, transport RTT 10-20 ms instead of
/// 0.4 ms). Reading its ISR in our handler lowers the line; a polling driver loses nothing.
static SHARED_ISRS: [AtomicU64; SHARED_MAX] = [const { AtomicU64::new(0) }; SHARED_MAX];
const BAR0_OFFSET: u8 = 0x10;

/// Why no card came up.
#[derive(Debug)]
pub enum ProbeError {
    /// No virtio-net function on bus 0.
    NotFound,
    /// The card has no interrupt line (INTx) assigned by the firmware.
    NoInterruptLine,
    /// The ISR capability or its BAR is missing.
    NoIsr,
    /// virtio-drivers refused the transport.
    Transport(virtio_drivers::transport::pci::VirtioPciError),
    /// virtio-drivers refused the device.
    Device(virtio_drivers::Error),
}

impl core::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ProbeError::NotFound => write!(f, "no virtio-net card on PCI bus 0"),
            ProbeError::NoInterruptLine => write!(f, "the card has no INTx line"),
            ProbeError::NoIsr => write!(f, "the card has no ISR capability in a memory BAR"),
            ProbeError::Transport(err) => write!(f, "virtio PCI transport: {err}"),
            ProbeError::Device(err) => write!(f, "virtio-net: {err}"),
        }
    }
}

/// A probed and initialised card.
pub struct NetDevice {
    nic: Nic,
    /// The ISA IRQ the firmware assigned (interrupt-line register).
    pub irq_line: u8,
    /// Where the card sits on the bus.
    pub location: DeviceFunction,
}

/// Finds the first virtio-net function, enables it and sets up its queues.
pub fn probe() -> Result<NetDevice, ProbeError> {
    let found = pci::enumerate()
        .into_iter()
        .find(|d| d.vendor_id == 0x1af4 && super::device_type(d) == Some(DeviceType::Network))
        .ok_or(ProbeError::NotFound)?;
    if found.interrupt_pin == 0 || found.interrupt_line == 0 || found.interrupt_line == 0xff {
        return Err(ProbeError::NoInterruptLine);
    }
    let df = found.function;
    let mut root = pci::root();
    let (_, command) = root.get_status_command(df);
    root.set_command(df, command | Command::MEMORY_SPACE | Command::BUS_MASTER);
    let isr_phys = isr_address(&mut root, df).ok_or(ProbeError::NoIsr)?;
    note_shared_line(&found);
    let transport =
        PciTransport::new::<KernelHal, PortCam>(&mut root, df).map_err(ProbeError::Transport)?;
    assert_eq!(transport.device_type(), DeviceType::Network);
    let nic = Nic::new(transport, RX_BUFFER_BYTES).map_err(ProbeError::Device)?;
    ISR_VIRT.store(phys_to_virt(isr_phys), Ordering::Release);
    Ok(NetDevice {
        nic,
        irq_line: found.interrupt_line,
        location: df,
    })
}

/// Which BAR holds a virtio function's ISR status byte, and at what offset (its ISR_CFG
/// vendor capability).
fn isr_cap(root: &PciRoot<PortCam>, df: DeviceFunction) -> Option<(u8, u64)> {
    use virtio_drivers::transport::pci::bus::ConfigurationAccess;
    let cam = PortCam;
    let cap = root
        .capabilities(df)
        .filter(|c| c.id == PCI_CAP_ID_VNDR)
        .find(|c| (c.private_header >> 8) as u8 == VIRTIO_PCI_CAP_ISR_CFG)?;
    let bar = cam.read_word(df, cap.offset + CAP_BAR_OFFSET) as u8;
    let offset = u64::from(cam.read_word(df, cap.offset + CAP_BAR_OFFSET_OFFSET));
    Some((bar, offset))
}

/// The physical address of the ISR status byte, from the vendor capability list.
fn isr_address(root: &mut PciRoot<PortCam>, df: DeviceFunction) -> Option<u64> {
    let (bar, offset) = isr_cap(root, df)?;
    let (bar_phys, bar_bytes) = root.bar_info(df, bar).ok()??.memory_address_size()?;
    (bar_phys != 0 && offset < bar_bytes).then_some(bar_phys + offset)
}

/// The ISR address of another virtio function, read from its BAR register without
/// sizing it (sizing rewrites the BAR, which is not ours to touch).
fn foreign_isr_address(root: &PciRoot<PortCam>, df: DeviceFunction) -> Option<u64> {
    use virtio_drivers::transport::pci::bus::ConfigurationAccess;
    let cam = PortCam;
    let (bar, offset) = isr_cap(root, df)?;
    if bar > 5 {
        return None;
    }
    let low = cam.read_word(df, BAR0_OFFSET + 4 * bar);
    if low & 1 != 0 {
        return None; // an I/O BAR: not the modern layout
    }
    let high = if (low >> 1) & 0b11 == 0b10 && bar < 5 {
        cam.read_word(df, BAR0_OFFSET + 4 * (bar + 1))
    } else {
        0
    };
    let base = (u64::from(high) << 32) | u64::from(low & !0xf);
    (base != 0).then_some(base + offset)
}

/// Records the ISRs of the other virtio functions on the card's interrupt line.
fn note_shared_line(card: &pci::PciDevice) {
    let root = pci::root();
    let sharing = pci::enumerate().into_iter().filter(|d| {
        d.vendor_id == 0x1af4
            && d.function != card.function
            && d.interrupt_pin != 0
            && d.interrupt_line == card.interrupt_line
    });
    for (slot, other) in SHARED_ISRS.iter().zip(sharing) {
        if let Some(isr) = foreign_isr_address(&root, other.function) {
            slot.store(phys_to_virt(isr), Ordering::Release);
            log::info!(
                "net: IRQ {} is shared with virtio function {}; clearing its ISR too",
                card.interrupt_line,
                other.function
            );
        }
    }
}

/// Reads (and so clears) the ISR status: true if the card had raised its interrupt.
/// Also clears the ISRs of the other virtio functions on the same line. Safe from interrupt
/// context; false before a card is probed.
pub fn ack_interrupt() -> bool {
    for shared in &SHARED_ISRS {
        let isr = shared.load(Ordering::Acquire);
        if isr != 0 {
            // SAFETY: `isr` is the physical window's mapping of another virtio function's
            // ISR byte (from its capability and BAR register at probe time); reading it
            // only acknowledges that function's interrupt, which its polling driver ignores.
            let _ = unsafe { core::ptr::read_volatile(isr as *const u8) };
        }
    }
    let isr = ISR_VIRT.load(Ordering::Acquire);
    if isr == 0 {
        return false;
    }
    // SAFETY: `isr` is the physical window's mapping of the ISR status byte inside the
    // card's memory BAR (checked against the BAR size at probe); a read is the documented
    // way to acknowledge and has no other effect.
    let status = unsafe { core::ptr::read_volatile(isr as *const u8) };
    status != 0
}

impl NetDevice {
    /// The card's own MAC address (from its config space).
    pub fn mac(&self) -> [u8; 6] {
        self.nic.mac_address()
    }

    /// Whether the link is up (we do not negotiate link status changes: always up once
    /// the device accepted the driver).
    pub fn link_up(&self) -> bool {
        true
    }

    /// Takes the next received frame, if any; give it back with [`NetDevice::recycle`].
    pub fn receive(&mut self) -> Option<RxBuffer> {
        self.nic.receive().ok()
    }

    /// Returns a receive buffer to the card.
    pub fn recycle(&mut self, buffer: RxBuffer) {
        if let Err(err) = self.nic.recycle_rx_buffer(buffer) {
            panic!("virtio-net refused a receive buffer back: {err:?}");
        }
    }

    /// Whether a send would find a free descriptor.
    pub fn can_send(&self) -> bool {
        self.nic.can_send()
    }

    /// Sends one frame (the card completes it before this returns).
    pub fn send(&mut self, frame: &[u8]) -> Result<(), virtio_drivers::Error> {
        let mut tx = self.nic.new_tx_buffer(frame.len());
        tx.packet_mut().copy_from_slice(frame);
        self.nic.send(tx)
    }

    /// Enables the card's used-buffer notifications (interrupts).
    pub fn enable_interrupts(&mut self) {
        self.nic.enable_interrupts();
    }
}
