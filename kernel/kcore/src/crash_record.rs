//! The crash record: what a panicking kernel leaves on its disk for the next boot.
//!
//! The panic handler fills a [`CrashRecord`] (message, location, RIP, CR2, vector, error
//! code, backtrace return addresses, uptime, boot id) without allocating, [`encode`]s it
//! into [`RECORD_BYTES`] and writes them with a polled virtio-blk request to the first
//! sectors of the disk's crash area: the last [`AREA_SECTORS`] sectors, which the Raft
//! store never sees (docs/observability.md has the disk map). The next boot [`decode`]s the
//! area: [`Slot::Blank`] (never written, or cleared), [`Slot::Valid`], or
//! [`Slot::Corrupt`] with the reason: a record torn by a crash in mid-write, or flipped on
//! disk, fails its CRC32C and is reported as corrupt, never trusted. Decoding is total:
//! every byte pattern gives one of the three.
//!
//! Layout (little-endian, 1024 bytes = 2 sectors):
//!
//! | bytes | field |
//! |---|---|
//! | 0..8 | magic `XYCRASH1` |
//! | 8..10 | format version (1) |
//! | 10..12 | flags (bit 0: a later boot reported it) |
//! | 12..20 | boot id of the boot that panicked |
//! | 20..28 | boot id of the boot that reported it (0 until then) |
//! | 28..36 | uptime at the panic, µs |
//! | 36..44 | RIP (faulting instruction, or the panic's caller) |
//! | 44..52 | CR2 |
//! | 52..60 | error code (`u64::MAX`: none) |
//! | 60..62 | CPU exception vector (`0xffff`: not an exception) |
//! | 62..64 | backtrace frames used (≤ [`FRAMES_MAX`]) |
//! | 64..66 | location length (≤ [`LOCATION_BYTES`]) |
//! | 66..68 | message length (≤ [`MESSAGE_BYTES`]) |
//! | 68..196 | backtrace return addresses, innermost first |
//! | 196..324 | location (`file:line`), UTF-8 |
//! | 324..1020 | message, UTF-8 |
//! | 1020..1024 | CRC32C of bytes 0..1020 |

use core::fmt;

/// Sectors reserved at the end of the disk for crash records.
pub const AREA_SECTORS: u64 = 8;
/// Bytes of one record.
pub const RECORD_BYTES: usize = 1024;
/// Sectors of one record.
pub const RECORD_SECTORS: usize = RECORD_BYTES / SECTOR_BYTES;
/// Sector size the layout assumes.
pub const SECTOR_BYTES: usize = 512;
/// Backtrace frames kept.
pub const FRAMES_MAX: usize = 16;
/// Longest location kept.
pub const LOCATION_BYTES: usize = 128;
/// Longest message kept (longer ones are cut on a character boundary).
pub const MESSAGE_BYTES: usize = 696;
/// The record's first bytes.
pub const MAGIC: [u8; 8] = *b"XYCRASH1";
/// The format this code writes.
pub const VERSION: u16 = 1;
/// `vector` of a panic that was not a CPU exception.
const NO_VECTOR: u16 = 0xffff;
const NO_ERROR_CODE: u64 = u64::MAX;
const FLAG_REPORTED: u16 = 1;

const OFF_FRAMES: usize = 68;
const OFF_LOCATION: usize = OFF_FRAMES + FRAMES_MAX * 8;
const OFF_MESSAGE: usize = OFF_LOCATION + LOCATION_BYTES;
const OFF_CRC: usize = OFF_MESSAGE + MESSAGE_BYTES;
const _: () = assert!(OFF_CRC + 4 == RECORD_BYTES, "the layout fills the record");
const _: () = assert!(RECORD_BYTES.is_multiple_of(SECTOR_BYTES));
const _: () = assert!(RECORD_SECTORS as u64 <= AREA_SECTORS);

/// CRC32C (Castagnoli), the checksum the Raft store also uses.
const CRC32C: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// At most `N` bytes of UTF-8 inline, filled through `fmt::Write`; what does not fit is
/// cut on a character boundary (writing never fails, so a panic message always fits in
/// part).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FixedText<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> FixedText<N> {
    pub const fn new() -> Self {
        FixedText {
            bytes: [0; N],
            len: 0,
        }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        core::str::from_utf8(&self.bytes[..self.len]).expect("FixedText holds UTF-8")
    }

    /// Whether something was cut.
    pub fn is_full(&self) -> bool {
        self.len == N
    }

    fn from_bytes(bytes: &[u8]) -> Option<Self> {
        let text = core::str::from_utf8(bytes).ok()?;
        let mut out = Self::new();
        fmt::Write::write_str(&mut out, text).ok()?;
        (out.len == bytes.len()).then_some(out)
    }
}

impl<const N: usize> Default for FixedText<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> fmt::Write for FixedText<N> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let mut take = s.len().min(N - self.len);
        while !s.is_char_boundary(take) {
            take -= 1;
        }
        self.bytes[self.len..self.len + take].copy_from_slice(&s.as_bytes()[..take]);
        self.len += take;
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for FixedText<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl<const N: usize> fmt::Display for FixedText<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The CPU exception behind a panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exception {
    pub vector: u8,
    pub error_code: Option<u64>,
}

/// One panic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashRecord {
    /// The boot that panicked (random per boot, also in its `boot` event).
    pub boot_id: u64,
    /// The boot that reported the record, once one has.
    pub reported_by: Option<u64>,
    pub uptime_us: u64,
    /// The faulting instruction for an exception, else the panic's caller.
    pub rip: u64,
    pub cr2: u64,
    pub exception: Option<Exception>,
    frames: [u64; FRAMES_MAX],
    frame_count: usize,
    pub location: FixedText<LOCATION_BYTES>,
    pub message: FixedText<MESSAGE_BYTES>,
}

/// Why a crash area does not hold a trustworthy record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Corruption {
    /// Not blank, but not a record either.
    BadMagic,
    /// A format this code does not know.
    UnknownVersion(u16),
    /// Torn or flipped: the checksum does not match.
    BadChecksum { stored: u32, computed: u32 },
    /// Checksum fine but a length is out of range or text is not UTF-8 (a writer bug).
    Malformed,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Corruption::BadMagic => write!(f, "not a crash record (bad magic)"),
            Corruption::UnknownVersion(v) => write!(f, "unknown crash record version {v}"),
            Corruption::BadChecksum { stored, computed } => write!(
                f,
                "checksum mismatch (stored {stored:#010x}, computed {computed:#010x}): torn or corrupt"
            ),
            Corruption::Malformed => write!(f, "malformed fields under a valid checksum"),
        }
    }
}

/// What a crash area holds. Decoded once per boot on the stack; boxing the record would
/// need the heap, which the crash path avoids.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// All zeros: no record.
    Blank,
    Valid(CrashRecord),
    Corrupt(Corruption),
}

impl CrashRecord {
    /// A record of a panic in boot `boot_id` after `uptime_us`; fill the rest in place.
    pub const fn new(boot_id: u64, uptime_us: u64) -> Self {
        CrashRecord {
            boot_id,
            reported_by: None,
            uptime_us,
            rip: 0,
            cr2: 0,
            exception: None,
            frames: [0; FRAMES_MAX],
            frame_count: 0,
            location: FixedText::new(),
            message: FixedText::new(),
        }
    }

    /// Appends a backtrace return address; false once [`FRAMES_MAX`] are kept.
    pub fn push_frame(&mut self, addr: u64) -> bool {
        if self.frame_count == FRAMES_MAX {
            return false;
        }
        self.frames[self.frame_count] = addr;
        self.frame_count += 1;
        true
    }

    /// The backtrace, innermost first.
    pub fn frames(&self) -> &[u64] {
        &self.frames[..self.frame_count]
    }

    /// The record as the disk holds it.
    pub fn encode(&self, out: &mut [u8; RECORD_BYTES]) {
        out.fill(0);
        out[0..8].copy_from_slice(&MAGIC);
        put16(out, 8, VERSION);
        put16(
            out,
            10,
            if self.reported_by.is_some() {
                FLAG_REPORTED
            } else {
                0
            },
        );
        put64(out, 12, self.boot_id);
        put64(out, 20, self.reported_by.unwrap_or(0));
        put64(out, 28, self.uptime_us);
        put64(out, 36, self.rip);
        put64(out, 44, self.cr2);
        let (vector, code) = match self.exception {
            Some(e) => (u16::from(e.vector), e.error_code.unwrap_or(NO_ERROR_CODE)),
            None => (NO_VECTOR, NO_ERROR_CODE),
        };
        put64(out, 52, code);
        put16(out, 60, vector);
        put16(out, 62, self.frame_count as u16);
        let location = self.location.as_str().as_bytes();
        let message = self.message.as_str().as_bytes();
        put16(out, 64, location.len() as u16);
        put16(out, 66, message.len() as u16);
        for (i, frame) in self.frames().iter().enumerate() {
            put64(out, OFF_FRAMES + i * 8, *frame);
        }
        out[OFF_LOCATION..OFF_LOCATION + location.len()].copy_from_slice(location);
        out[OFF_MESSAGE..OFF_MESSAGE + message.len()].copy_from_slice(message);
        let crc = CRC32C.checksum(&out[..OFF_CRC]);
        out[OFF_CRC..].copy_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(
            decode(out),
            Slot::Valid(*self),
            "a record decodes as written"
        );
    }

    /// The same record, marked as reported by boot `by`.
    pub fn reported(mut self, by: u64) -> Self {
        self.reported_by = Some(by);
        self
    }
}

/// Reads a crash area's record bytes.
pub fn decode(bytes: &[u8; RECORD_BYTES]) -> Slot {
    if bytes.iter().all(|&b| b == 0) {
        return Slot::Blank;
    }
    if bytes[0..8] != MAGIC {
        return Slot::Corrupt(Corruption::BadMagic);
    }
    let stored = u32::from_le_bytes([
        bytes[OFF_CRC],
        bytes[OFF_CRC + 1],
        bytes[OFF_CRC + 2],
        bytes[OFF_CRC + 3],
    ]);
    let computed = CRC32C.checksum(&bytes[..OFF_CRC]);
    if stored != computed {
        return Slot::Corrupt(Corruption::BadChecksum { stored, computed });
    }
    let version = get16(bytes, 8);
    if version != VERSION {
        return Slot::Corrupt(Corruption::UnknownVersion(version));
    }
    match decode_fields(bytes) {
        Some(record) => Slot::Valid(record),
        None => Slot::Corrupt(Corruption::Malformed),
    }
}

fn decode_fields(bytes: &[u8; RECORD_BYTES]) -> Option<CrashRecord> {
    let flags = get16(bytes, 10);
    let reported_by = get64(bytes, 20);
    let reported = match (flags, reported_by) {
        (0, 0) => None,
        (FLAG_REPORTED, by) if by != 0 => Some(by),
        _ => return None,
    };
    let mut record = CrashRecord::new(get64(bytes, 12), get64(bytes, 28));
    record.reported_by = reported;
    record.rip = get64(bytes, 36);
    record.cr2 = get64(bytes, 44);
    let code = get64(bytes, 52);
    record.exception = match get16(bytes, 60) {
        NO_VECTOR => (code == NO_ERROR_CODE).then_some(None)?,
        v => Some(Exception {
            vector: u8::try_from(v).ok()?,
            error_code: (code != NO_ERROR_CODE).then_some(code),
        }),
    };
    let frames = usize::from(get16(bytes, 62));
    let location_len = usize::from(get16(bytes, 64));
    let message_len = usize::from(get16(bytes, 66));
    if frames > FRAMES_MAX || location_len > LOCATION_BYTES || message_len > MESSAGE_BYTES {
        return None;
    }
    for i in 0..frames {
        record.push_frame(get64(bytes, OFF_FRAMES + i * 8));
    }
    record.location = FixedText::from_bytes(&bytes[OFF_LOCATION..OFF_LOCATION + location_len])?;
    record.message = FixedText::from_bytes(&bytes[OFF_MESSAGE..OFF_MESSAGE + message_len])?;
    Some(record)
}

fn put16(out: &mut [u8], at: usize, v: u16) {
    out[at..at + 2].copy_from_slice(&v.to_le_bytes());
}

fn put64(out: &mut [u8], at: usize, v: u64) {
    out[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get16(bytes: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([bytes[at], bytes[at + 1]])
}

fn get64(bytes: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&bytes[at..at + 8]);
    u64::from_le_bytes(b)
}

/// A CPU exception's name, for summaries.
pub fn vector_name(vector: u8) -> &'static str {
    match vector {
        0 => "divide error",
        1 => "debug",
        2 => "NMI",
        3 => "breakpoint",
        4 => "overflow",
        5 => "bound range exceeded",
        6 => "invalid opcode",
        7 => "device not available",
        8 => "double fault",
        10 => "invalid TSS",
        11 => "segment not present",
        12 => "stack-segment fault",
        13 => "general protection fault",
        14 => "page fault",
        16 => "x87 floating point",
        17 => "alignment check",
        18 => "machine check",
        19 => "SIMD floating point",
        _ => "CPU exception",
    }
}

/// Where kernel text starts, for ELF offsets (`llvm-addr2line -e kernel.elf 0xOFFSET`).
pub const KERNEL_TEXT_START: u64 = 0xffff_ffff_8000_0000;

impl fmt::Display for CrashRecord {
    /// One line: `boot 0123456789abcdef up 12.345 s: page fault (vector 14, error 0x2) cr2
    /// 0x10 at rip elf+0x1234: <message> [at <location>]`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "boot {:016x} up {}.{:03} s: ",
            self.boot_id,
            self.uptime_us / 1_000_000,
            self.uptime_us / 1000 % 1000
        )?;
        if let Some(e) = self.exception {
            write!(f, "{} (vector {}", vector_name(e.vector), e.vector)?;
            if let Some(code) = e.error_code {
                write!(f, ", error {code:#x}")?;
            }
            write!(f, ")")?;
            if e.vector == 14 {
                write!(f, " cr2 {:#x}", self.cr2)?;
            }
            write!(f, " ")?;
        } else {
            write!(f, "panic ")?;
        }
        write!(
            f,
            "at rip elf+{:#x}: {}",
            self.rip.wrapping_sub(KERNEL_TEXT_START),
            self.message
        )?;
        if !self.location.as_str().is_empty() {
            write!(f, " [at {}]", self.location)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write;

    fn sample() -> CrashRecord {
        let mut r = CrashRecord::new(0x0123_4567_89ab_cdef, 12_345_678);
        r.rip = KERNEL_TEXT_START + 0x1234;
        r.cr2 = 0x10;
        r.exception = Some(Exception {
            vector: 14,
            error_code: Some(2),
        });
        for i in 0..3 {
            assert!(r.push_frame(KERNEL_TEXT_START + 0x100 * i));
        }
        write!(r.location, "kernel/src/shell/basic.rs:{}", 42).unwrap();
        write!(r.message, "page fault (vector 14) in kernel mode").unwrap();
        r
    }

    fn encoded(r: &CrashRecord) -> [u8; RECORD_BYTES] {
        let mut out = [0xAAu8; RECORD_BYTES];
        r.encode(&mut out);
        out
    }

    #[test]
    fn a_record_round_trips() {
        let r = sample();
        assert_eq!(decode(&encoded(&r)), Slot::Valid(r));
        assert_eq!(r.frames().len(), 3);
        let acked = r.reported(7);
        assert_eq!(decode(&encoded(&acked)), Slot::Valid(acked));
        assert_ne!(encoded(&acked), encoded(&r));
        let plain = CrashRecord::new(1, 2);
        assert_eq!(decode(&encoded(&plain)), Slot::Valid(plain));
    }

    #[test]
    fn zeros_are_blank() {
        assert_eq!(decode(&[0; RECORD_BYTES]), Slot::Blank);
    }

    #[test]
    fn a_torn_write_is_corrupt_never_valid() {
        // The panic wrote the first sector of a new record over an older one.
        let old = encoded(&CrashRecord::new(9, 9));
        let new = encoded(&sample());
        let mut torn = old;
        torn[..SECTOR_BYTES].copy_from_slice(&new[..SECTOR_BYTES]);
        assert!(matches!(
            decode(&torn),
            Slot::Corrupt(Corruption::BadChecksum { .. })
        ));
        // Or only the first sector over a blank area.
        let mut torn = [0u8; RECORD_BYTES];
        torn[..SECTOR_BYTES].copy_from_slice(&new[..SECTOR_BYTES]);
        assert!(matches!(
            decode(&torn),
            Slot::Corrupt(Corruption::BadChecksum { .. })
        ));
    }

    #[test]
    fn every_single_bit_flip_is_detected() {
        let good = encoded(&sample());
        for byte in 0..RECORD_BYTES {
            for bit in 0..8 {
                let mut bad = good;
                bad[byte] ^= 1 << bit;
                assert!(
                    matches!(decode(&bad), Slot::Corrupt(_)),
                    "flip of bit {bit} in byte {byte} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn garbage_and_forged_fields_are_typed_errors() {
        assert_eq!(
            decode(&[0x5a; RECORD_BYTES]),
            Slot::Corrupt(Corruption::BadMagic)
        );
        // A valid checksum over nonsense lengths (a writer bug) is still not trusted.
        let mut forged = encoded(&sample());
        put16(&mut forged, 66, 60_000);
        let crc = CRC32C.checksum(&forged[..OFF_CRC]);
        forged[OFF_CRC..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode(&forged), Slot::Corrupt(Corruption::Malformed));
        let mut future = encoded(&sample());
        put16(&mut future, 8, 2);
        let crc = CRC32C.checksum(&future[..OFF_CRC]);
        future[OFF_CRC..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(
            decode(&future),
            Slot::Corrupt(Corruption::UnknownVersion(2))
        );
        // Random patterns never panic and are never valid by accident.
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..2000 {
            let mut bytes = [0u8; RECORD_BYTES];
            for b in bytes.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            bytes[..8].copy_from_slice(&MAGIC);
            assert!(matches!(decode(&bytes), Slot::Corrupt(_)));
        }
    }

    #[test]
    fn long_text_is_cut_on_a_char_boundary() {
        let mut r = CrashRecord::new(1, 1);
        for _ in 0..MESSAGE_BYTES {
            write!(r.message, "é").unwrap();
        }
        assert!(r.message.is_full() || r.message.as_str().len() == MESSAGE_BYTES - 1);
        assert!(r.message.as_str().chars().all(|c| c == 'é'));
        for _ in 0..FRAMES_MAX + 3 {
            r.push_frame(1);
        }
        assert_eq!(r.frames().len(), FRAMES_MAX);
        assert_eq!(decode(&encoded(&r)), Slot::Valid(r));
    }

    #[test]
    fn the_summary_names_the_fault() {
        let mut text = FixedText::<512>::new();
        write!(text, "{}", sample()).unwrap();
        assert_eq!(
            text.as_str(),
            "boot 0123456789abcdef up 12.345 s: page fault (vector 14, error 0x2) cr2 0x10 \
             at rip elf+0x1234: page fault (vector 14) in kernel mode \
             [at kernel/src/shell/basic.rs:42]"
        );
        let mut text = FixedText::<512>::new();
        let mut plain = CrashRecord::new(2, 1_500);
        plain.rip = KERNEL_TEXT_START + 0x99;
        write!(plain.message, "boom").unwrap();
        write!(text, "{plain}").unwrap();
        assert_eq!(
            text.as_str(),
            "boot 0000000000000002 up 0.001 s: panic at rip elf+0x99: boom"
        );
    }
}
