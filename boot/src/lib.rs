//! Disk images for the kernel, built with the `bootloader` crate's image builder.
//!
//! The bootloader's own log output is switched off (it would otherwise print on the serial
//! console the shell uses, and harnesses would have to skip it), except for errors.

use std::fmt;
use std::path::{Path, PathBuf};

use bootloader::{BootConfig, DiskImageBuilder};

/// Which firmware the image boots under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Firmware {
    /// Legacy BIOS (the default: it boots fastest under TCG).
    Bios,
    /// UEFI (needs OVMF).
    Uefi,
}

/// Why an image could not be written (the bootloader reports errors as text).
#[derive(Debug)]
pub struct ImageError {
    pub kernel: PathBuf,
    pub message: String,
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "building a disk image for {}: {}",
            self.kernel.display(),
            self.message
        )
    }
}

impl std::error::Error for ImageError {}

fn quiet_config() -> BootConfig {
    let mut config = BootConfig::default();
    config.serial_logging = false;
    config.frame_buffer_logging = false;
    config
}

/// Writes a bootable disk image for `kernel` (an x86_64 ELF) to `image`.
pub fn create_image(kernel: &Path, image: &Path, firmware: Firmware) -> Result<(), ImageError> {
    let mut builder = DiskImageBuilder::new(kernel.to_path_buf());
    builder.set_boot_config(&quiet_config());
    let result = match firmware {
        Firmware::Bios => builder.create_bios_image(image),
        Firmware::Uefi => builder.create_uefi_image(image),
    };
    result.map_err(|e| ImageError {
        kernel: kernel.to_path_buf(),
        message: format!("{e:#}"),
    })
}
