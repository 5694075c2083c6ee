//! Property tests of the envelope: round trip, totality of decoding, corruption detection.
//!
//! Case count: `NET_FUZZ_CASES` (default 20 000 per property; set 1000000 for the on-demand
//! soak). Seed: `NET_FUZZ_SEED` (default fixed), so a run is reproducible; proptest prints the
//! shrunk failing input and the seed is printed at the start of each property.

use net::{
    decode, encode, parse, DecodeError, EncodeError, Endpoint, Header, Kind, LocalIdentity,
    TransportConfig, BROADCAST, HEADER_LEN, MAX_DATAGRAM_LEN, MAX_PAYLOAD_LEN,
};
use proptest::prelude::*;
use proptest::test_runner::{Config, RngSeed};

const DEFAULT_CASES: u32 = 20_000;
const DEFAULT_SEED: u64 = 0x0E4E_10E5;

fn config() -> Config {
    let cases = std::env::var("NET_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_CASES);
    let seed = std::env::var("NET_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_SEED);
    eprintln!("proptest: cases={cases} seed={seed} (reproduce with seed={seed} via NET_FUZZ_SEED)");
    Config {
        cases,
        failure_persistence: None,
        rng_seed: RngSeed::Fixed(seed),
        ..Config::default()
    }
}

fn kind() -> impl Strategy<Value = Kind> {
    prop::sample::select(Kind::ALL.to_vec())
}

fn header() -> impl Strategy<Value = Header> {
    (
        kind(),
        any::<u64>(),
        0..u64::MAX,
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(kind, cluster_id, sender, receiver, seq)| Header {
            kind,
            cluster_id,
            sender,
            receiver,
            seq,
        })
}

fn payload() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..64),
        1 => prop::collection::vec(any::<u8>(), MAX_PAYLOAD_LEN - 8..=MAX_PAYLOAD_LEN),
    ]
}

fn encoded(header: &Header, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
    let len = encode(header, payload, &mut buf).expect("valid envelope encodes");
    buf.truncate(len);
    buf
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn round_trip(h in header(), p in payload()) {
        let bytes = encoded(&h, &p);
        prop_assert_eq!(bytes.len(), HEADER_LEN + p.len());
        let envelope = parse(&bytes).unwrap();
        prop_assert_eq!(envelope.header, h);
        prop_assert_eq!(envelope.payload, &p[..]);
        // Acceptance follows the documented rules exactly.
        let local = LocalIdentity { cluster_id: h.cluster_id, node_id: h.receiver.min(BROADCAST - 1) };
        let accepted = decode(&bytes, &local);
        let expect_ok = h.sender != local.node_id;
        prop_assert_eq!(accepted.is_ok(), expect_ok, "{:?}", accepted);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_accepted_is_canonical(
        bytes in prop::collection::vec(any::<u8>(), 0..1600),
        with_magic in any::<bool>(),
    ) {
        let mut bytes = bytes;
        if with_magic && bytes.len() >= 5 {
            bytes[..4].copy_from_slice(b"XYLM");
            bytes[4] = 1;
        }
        if let Ok(envelope) = parse(&bytes) {
            prop_assert_eq!(&encoded(&envelope.header, envelope.payload), &bytes);
        }
        let mut endpoint = Endpoint::new(TransportConfig::new(0, 0), 0);
        let result = endpoint.receive(&bytes);
        prop_assert_eq!(endpoint.drops().total(), u64::from(result.is_err()));
    }

    #[test]
    fn any_single_bit_flip_is_rejected(h in header(), p in payload(), bit in any::<prop::sample::Index>()) {
        let mut bytes = encoded(&h, &p);
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(parse(&bytes).is_err());
    }

    #[test]
    fn any_truncation_is_rejected_as_truncated(h in header(), p in payload(), cut in any::<prop::sample::Index>()) {
        let bytes = encoded(&h, &p);
        let len = cut.index(bytes.len());
        let is_truncated = matches!(parse(&bytes[..len]), Err(DecodeError::Truncated { .. }));
        prop_assert!(is_truncated);
    }

    #[test]
    fn oversized_payload_is_an_error(h in header(), extra in 1usize..200) {
        let payload = vec![0u8; MAX_PAYLOAD_LEN + extra];
        let mut buf = vec![0u8; 2 * MAX_DATAGRAM_LEN];
        prop_assert_eq!(
            encode(&h, &payload, &mut buf),
            Err(EncodeError::PayloadTooLarge { len: MAX_PAYLOAD_LEN + extra, max: MAX_PAYLOAD_LEN })
        );
    }
}
