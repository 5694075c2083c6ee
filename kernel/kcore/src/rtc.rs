//! Converting CMOS RTC register values to Unix time (the hardware-free half of
//! `kernel/src/arch/x86_64/rtc.rs`), host-tested.
//!
//! The RTC reports BCD or binary (status register B bit 2) and 12- or 24-hour clocks (bit 1;
//! in 12-hour mode bit 7 of the hour marks PM). Years are two digits, taken as 2000–2099.
//! Any value out of range is `None`: a bad reading must not become a plausible date.

/// Raw register values of one reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RtcFields {
    pub second: u8,
    pub minute: u8,
    pub hour: u8,
    pub day: u8,
    pub month: u8,
    pub year: u8,
}

fn from_bcd(value: u8) -> Option<u8> {
    let (hi, lo) = (value >> 4, value & 0x0f);
    (hi <= 9 && lo <= 9).then_some(hi * 10 + lo)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
pub fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = i64::from((month + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn days_in_month(year: i64, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (year % 4 == 0 && year % 100 != 0) || year % 400 == 0 => 29,
        _ => 28,
    }
}

/// Unix seconds of a reading; `binary` and `hours_24` come from status register B.
pub fn to_unix(raw: RtcFields, binary: bool, hours_24: bool) -> Option<u64> {
    let pm = !hours_24 && raw.hour & 0x80 != 0;
    let hour_raw = if hours_24 { raw.hour } else { raw.hour & 0x7f };
    let decode = |v: u8| if binary { Some(v) } else { from_bcd(v) };
    let (second, minute, mut hour) = (decode(raw.second)?, decode(raw.minute)?, decode(hour_raw)?);
    let (day, month, year) = (decode(raw.day)?, decode(raw.month)?, decode(raw.year)?);
    if !hours_24 {
        if !(1..=12).contains(&hour) {
            return None;
        }
        hour = match (hour, pm) {
            (12, false) => 0,
            (12, true) => 12,
            (h, true) => h + 12,
            (h, false) => h,
        };
    }
    let year = 2000 + i64::from(year);
    let month = u32::from(month);
    if second > 59 || minute > 59 || hour > 23 || year > 2099 || !(1..=12).contains(&month) {
        return None;
    }
    if day == 0 || u32::from(day) > days_in_month(year, month) {
        return None;
    }
    let days = days_from_civil(year, month, u32::from(day));
    let seconds =
        days * 86_400 + i64::from(hour) * 3600 + i64::from(minute) * 60 + i64::from(second);
    u64::try_from(seconds).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(s: u8, mi: u8, h: u8, d: u8, mo: u8, y: u8) -> RtcFields {
        RtcFields {
            second: s,
            minute: mi,
            hour: h,
            day: d,
            month: mo,
            year: y,
        }
    }

    #[test]
    fn known_dates() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        // 2026-11-29 23:34:02 UTC, BCD and 24-hour (QEMU's default).
        let bcd = fields(0x02, 0x34, 0x23, 0x29, 0x11, 0x26);
        assert_eq!(to_unix(bcd, false, true), Some(1_795_995_242));
        // The same time in binary, and in 12-hour BCD (11 PM).
        assert_eq!(
            to_unix(fields(2, 34, 23, 29, 11, 26), true, true),
            Some(1_795_995_242)
        );
        assert_eq!(
            to_unix(fields(0x02, 0x34, 0x91, 0x29, 0x11, 0x26), false, false),
            Some(1_795_995_242)
        );
        // Midnight and noon in 12-hour mode.
        let midnight = to_unix(fields(0, 0, 0x12, 0x01, 0x01, 0x24), false, false).unwrap();
        let noon = to_unix(fields(0, 0, 0x92, 0x01, 0x01, 0x24), false, false).unwrap();
        assert_eq!(noon - midnight, 12 * 3600);
        // Leap day.
        assert!(to_unix(fields(0, 0, 0, 0x29, 0x02, 0x24), false, true).is_some());
        assert_eq!(
            to_unix(fields(0, 0, 0, 0x29, 0x02, 0x25), false, true),
            None
        );
    }

    #[test]
    fn nonsense_is_refused() {
        assert_eq!(to_unix(fields(0x60, 0, 0, 1, 1, 0), false, true), None);
        assert_eq!(to_unix(fields(0x1a, 0, 0, 1, 1, 0), false, true), None);
        assert_eq!(to_unix(fields(0, 0, 0x24, 1, 1, 0), false, true), None);
        assert_eq!(to_unix(fields(0, 0, 0, 0, 1, 0), false, true), None);
        assert_eq!(to_unix(fields(0, 0, 0, 1, 0x13, 0), false, true), None);
        assert_eq!(to_unix(fields(0, 0, 0x13, 1, 1, 0), false, false), None);
        for raw in 0..=255u8 {
            let _ = to_unix(fields(raw, raw, raw, raw, raw, raw), false, false);
            let _ = to_unix(fields(raw, raw, raw, raw, raw, raw), true, true);
        }
    }
}
