//! VirtIO devices over PCI, built on the `virtio-drivers` crate (VIRTIO 1.1, section 4.1
//! "Virtio Over PCI Bus"). [`hal`] gives the crate DMA memory and address translation;
//! [`net`] finds and drives the network card.

pub mod blk;
pub mod hal;
pub mod net;
