//! libFuzzer target: the input describes a header, a payload and a corruption.
//!
//! Layout of the input: byte 0 kind selector, bytes 1..33 cluster/sender/receiver (u64 each),
//! bytes 33..37 seq, bytes 37..39 a bit index to flip, byte 39 a header byte index and
//! byte 40 a value to tamper with (checksum recomputed), the rest the payload.
//! Asserts: encode then parse is the identity; a flipped bit is always rejected; a tampered
//! and resealed datagram decodes or is rejected without panicking, and if it decodes it is
//! canonical.
#![no_main]

use libfuzzer_sys::fuzz_target;
use net::crc32c::Crc32c;
use net::envelope::CHECKSUM_OFFSET;
use net::{
    encode, parse, EncodeError, Header, Kind, BROADCAST, HEADER_LEN, MAX_DATAGRAM_LEN,
    MAX_PAYLOAD_LEN,
};

fn u64_at(data: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(data[at..at + 8].try_into().unwrap())
}

fn reseal(bytes: &mut [u8]) {
    let mut crc = Crc32c::new();
    crc.update(&bytes[..CHECKSUM_OFFSET]);
    crc.update(&bytes[HEADER_LEN..]);
    bytes[CHECKSUM_OFFSET..HEADER_LEN].copy_from_slice(&crc.finish().to_be_bytes());
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 41 {
        return;
    }
    let header = Header {
        kind: Kind::ALL[usize::from(data[0]) % Kind::COUNT],
        cluster_id: u64_at(data, 1),
        sender: u64_at(data, 9),
        receiver: u64_at(data, 17),
        seq: u32::from_le_bytes(data[33..37].try_into().unwrap()),
    };
    let payload = &data[41..];
    let mut buf = [0u8; MAX_DATAGRAM_LEN];
    let len = match encode(&header, payload, &mut buf) {
        Ok(len) => len,
        Err(EncodeError::PayloadTooLarge { .. }) => {
            return assert!(payload.len() > MAX_PAYLOAD_LEN)
        }
        Err(EncodeError::InvalidSender) => return assert_eq!(header.sender, BROADCAST),
        Err(e) => panic!("unexpected encode error {e:?}"),
    };
    let envelope = parse(&buf[..len]).expect("encoded => parses");
    assert_eq!(envelope.header, header);
    assert_eq!(envelope.payload, payload);

    let bit = usize::from(u16::from_le_bytes([data[37], data[38]])) % (len * 8);
    let mut flipped = buf;
    flipped[bit / 8] ^= 1 << (bit % 8);
    assert!(parse(&flipped[..len]).is_err(), "bit {bit} flip accepted");

    let mut tampered = buf;
    tampered[usize::from(data[39]) % CHECKSUM_OFFSET] = data[40];
    reseal(&mut tampered[..len]);
    if let Ok(envelope) = parse(&tampered[..len]) {
        let mut again = [0u8; MAX_DATAGRAM_LEN];
        let n =
            encode(&envelope.header, envelope.payload, &mut again).expect("parsed => encodable");
        assert_eq!(&again[..n], &tampered[..len]);
    }
});
