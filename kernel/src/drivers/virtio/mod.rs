//! VirtIO devices over PCI, built on the `virtio-drivers` crate (VIRTIO 1.1, section 4.1
//! "Virtio Over PCI Bus"). [`hal`] gives the crate DMA memory and address translation;
//! [`net`] finds and drives the network card.

pub mod blk;
pub mod hal;
pub mod net;

/// The virtio device type of a PCI function, if it is a virtio device.
pub fn device_type(
    d: &crate::drivers::pci::PciDevice,
) -> Option<virtio_drivers::transport::DeviceType> {
    let info = virtio_drivers::transport::pci::bus::DeviceFunctionInfo {
        vendor_id: d.vendor_id,
        device_id: d.device_id,
        class: d.class.0,
        subclass: d.class.1,
        prog_if: d.class.2,
        revision: 0,
        header_type: virtio_drivers::transport::pci::bus::HeaderType::Standard,
    };
    virtio_drivers::transport::pci::virtio_device_type(&info)
}
