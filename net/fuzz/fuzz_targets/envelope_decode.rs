//! libFuzzer target: the fuzzer's input is one received datagram.
//!
//! Asserts that decoding never panics, that every rejection is counted under exactly one
//! reason, and that an accepted datagram re-encodes to exactly its own bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use net::{encode, parse, Endpoint, TransportConfig, MAX_DATAGRAM_LEN};

fuzz_target!(|data: &[u8]| {
    let parsed = parse(data);
    // Node 1 of cluster 0: ids that random and zero-filled inputs hit often.
    let mut endpoint = Endpoint::new(TransportConfig::new(0, 1), 0);
    let received = endpoint.receive(data);
    assert_eq!(endpoint.drops().total(), u64::from(received.is_err()));
    if let Ok(envelope) = parsed {
        let mut buf = [0u8; MAX_DATAGRAM_LEN];
        let len =
            encode(&envelope.header, envelope.payload, &mut buf).expect("parsed => encodable");
        assert_eq!(&buf[..len], data, "the encoding is canonical");
    }
    if let Ok(envelope) = received {
        assert_eq!(Ok(envelope), parsed);
    }
});
