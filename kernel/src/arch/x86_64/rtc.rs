//! The CMOS real-time clock (MC146818 registers, ports 0x70/0x71): wall-clock time for
//! certificate validity checks (`crate::trust`). QEMU's RTC runs on the host's UTC clock.
//!
//! Reading follows the OSDev recipe: wait until no update is in progress (status A bit 7),
//! read every register, and read again until two passes agree, so a read never straddles the
//! once-a-second update. Status B says whether values are BCD (bit 2 clear) and whether hours
//! are 12-hour (bit 1 clear, PM flag in bit 7 of the hour). The century register is not
//! standard (the ACPI FADT may name one); years are taken as 2000–2099.

use super::port::{inb, outb};

const ADDRESS: u16 = 0x70;
const DATA: u16 = 0x71;
/// Bit 7 of the address port disables NMIs; keep it clear.
const REG_SECONDS: u8 = 0x00;
const REG_MINUTES: u8 = 0x02;
const REG_HOURS: u8 = 0x04;
const REG_DAY: u8 = 0x07;
const REG_MONTH: u8 = 0x08;
const REG_YEAR: u8 = 0x09;
const REG_STATUS_A: u8 = 0x0A;
const REG_STATUS_B: u8 = 0x0B;
/// Passes before giving up on two identical reads.
const READ_TRIES: u32 = 10;
/// Polls of the update-in-progress flag (it is set for at most ~2 ms a second).
const UIP_POLLS: u32 = 100_000;

fn read(register: u8) -> u8 {
    // SAFETY: ports 0x70/0x71 are the PC's CMOS/RTC; selecting a register and reading it has
    // no effect beyond this read. Only this module touches them (with interrupts on, an
    // interleaved select could only come from here).
    unsafe {
        outb(ADDRESS, register);
        inb(DATA)
    }
}

/// The broken-down time one pass read, raw (as the RTC encodes it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Raw {
    second: u8,
    minute: u8,
    hour: u8,
    day: u8,
    month: u8,
    year: u8,
}

fn read_raw() -> Raw {
    for _ in 0..UIP_POLLS {
        if read(REG_STATUS_A) & 0x80 == 0 {
            break;
        }
        core::hint::spin_loop();
    }
    Raw {
        second: read(REG_SECONDS),
        minute: read(REG_MINUTES),
        hour: read(REG_HOURS),
        day: read(REG_DAY),
        month: read(REG_MONTH),
        year: read(REG_YEAR),
    }
}

/// Seconds since the Unix epoch, or `None` when the RTC gives no stable, sane reading.
pub fn unix_seconds() -> Option<u64> {
    let mut last = read_raw();
    for _ in 0..READ_TRIES {
        let again = read_raw();
        if again == last {
            let status_b = read(REG_STATUS_B);
            return kcore::rtc::to_unix(
                kcore::rtc::RtcFields {
                    second: again.second,
                    minute: again.minute,
                    hour: again.hour,
                    day: again.day,
                    month: again.month,
                    year: again.year,
                },
                status_b & 0x04 != 0,
                status_b & 0x02 != 0,
            );
        }
        last = again;
    }
    None
}
