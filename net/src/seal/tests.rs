//! Sealing and the replay window: round trips, every drop reason, re-key grace, replays.

use super::*;
use crate::envelope::Kind;
use crate::MAX_DATAGRAM_LEN;
use alloc::vec;
use alloc::vec::Vec;

const CLUSTER: u64 = 7;

fn keys(id: u32, a: u8, b: u8) -> SessionKeys {
    SessionKeys {
        key_id: id,
        send: [a; KEY_BYTES],
        receive: [b; KEY_BYTES],
    }
}

/// Node 1 and node 2 with one session: 1 sends with key A, 2 with key B.
fn pair() -> (Keyring, Keyring) {
    let mut one = Keyring::new(1, KeyringConfig::default());
    let mut two = Keyring::new(2, KeyringConfig::default());
    one.install(2, &keys(9, 0xA, 0xB), 0).unwrap();
    two.install(1, &keys(9, 0xB, 0xA), 0).unwrap();
    (one, two)
}

fn header(from: NodeId, to: NodeId, seq: u32) -> Header {
    Header {
        kind: Kind::Raft,
        cluster_id: CLUSTER,
        sender: from,
        receiver: to,
        seq,
    }
}

fn local(id: NodeId) -> LocalIdentity {
    LocalIdentity {
        cluster_id: CLUSTER,
        node_id: id,
    }
}

fn seal(ring: &mut Keyring, from: NodeId, to: NodeId, payload: &[u8]) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
    let n = ring.seal(&header(from, to, 1), payload, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn open(ring: &mut Keyring, me: NodeId, bytes: &[u8], now_ms: u64) -> Result<Vec<u8>, OpenError> {
    let mut out = vec![0u8; MAX_DATAGRAM_LEN];
    ring.open(bytes, &local(me), now_ms, &mut out)
        .map(|e| e.payload.to_vec())
}

#[test]
fn round_trip_and_ciphertext_hides_the_payload() {
    let (mut one, mut two) = pair();
    let payload = b"append entries at index 42";
    let bytes = seal(&mut one, 1, 2, payload);
    assert_eq!(
        bytes.len(),
        HEADER_LEN + SEAL_OVERHEAD_BYTES + payload.len()
    );
    assert!(!bytes.windows(payload.len()).any(|w| w == payload));
    assert_eq!(open(&mut two, 2, &bytes, 0).unwrap(), payload);
    assert_eq!(two.counters().opened, 1);
    assert_eq!(one.counters().sealed, 1);
    // And the other way, with the other key.
    let back = seal(&mut two, 2, 1, b"ack");
    assert_eq!(open(&mut one, 1, &back, 0).unwrap(), b"ack");
}

#[test]
fn every_byte_is_authenticated() {
    let (mut one, _) = pair();
    let bytes = seal(&mut one, 1, 2, b"sixteen bytes!!!");
    for at in 0..bytes.len() {
        for bit in [0u8, 7] {
            let (_, mut two) = pair();
            let mut evil = bytes.clone();
            evil[at] ^= 1 << bit;
            let result = open(&mut two, 2, &evil, 0);
            assert!(result.is_err(), "flip at {at} bit {bit} accepted");
            assert_eq!(two.counters().opened, 0);
        }
    }
}

/// A forger who recomputes the CRC (the envelope's only defence before) still fails.
#[test]
fn forged_fields_with_a_valid_checksum_fail_the_tag() {
    let (mut one, mut two) = pair();
    let bytes = seal(&mut one, 1, 2, b"assign web/0 epoch 7");
    for at in [5usize, 9, 27, 33, 60] {
        let mut evil = bytes.clone();
        evil[at] ^= 0x01;
        let len = evil.len();
        let (head, body) = evil.split_at_mut(HEADER_LEN);
        let crc = crate::envelope::envelope_checksum(head, &body[..len - HEADER_LEN]);
        head[CHECKSUM_OFFSET..HEADER_LEN].copy_from_slice(&crc.to_be_bytes());
        let result = open(&mut two, 2, &evil, 0);
        assert!(
            matches!(
                result,
                Err(OpenError::BadTag | OpenError::NoKey | OpenError::Decode(_))
            ),
            "{at}: {result:?}"
        );
    }
    assert_eq!(
        open(&mut two, 2, &bytes, 0).unwrap(),
        b"assign web/0 epoch 7"
    );
}

#[test]
fn a_third_node_cannot_speak_for_a_member() {
    let (_, mut two) = pair();
    // Node 3 has its own session with node 2 and claims to be node 1.
    let mut three = Keyring::new(3, KeyringConfig::default());
    three.install(2, &keys(9, 0xC, 0xD), 0).unwrap();
    three.install(1, &keys(9, 0xC, 0xD), 0).unwrap();
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
    let n = three.seal(&header(1, 2, 1), b"hi", &mut buf).unwrap();
    assert_eq!(open(&mut two, 2, &buf[..n], 0), Err(OpenError::BadTag));
    // Claiming a sender with no session at all is `no_key`.
    let n = three.seal(&header(5, 2, 1), b"hi", &mut buf).unwrap();
    assert_eq!(open(&mut two, 2, &buf[..n], 0), Err(OpenError::NoKey));
    assert_eq!(two.counters().dropped(OpenError::BadTag), 1);
    assert_eq!(two.counters().dropped(OpenError::NoKey), 1);
}

#[test]
fn replays_are_dropped_and_reordering_within_the_window_is_not() {
    let (mut one, mut two) = pair();
    let sealed: Vec<Vec<u8>> = (0..2000u32)
        .map(|i| seal(&mut one, 1, 2, &i.to_be_bytes()))
        .collect();
    // Deliver in a shuffled order inside windows of 500: every one opens once.
    for chunk in sealed.chunks(500) {
        for d in chunk.iter().rev() {
            assert!(open(&mut two, 2, d, 0).is_ok());
        }
        for d in chunk {
            assert_eq!(open(&mut two, 2, d, 0), Err(OpenError::Replayed));
        }
    }
    // Everything older than the window is refused even though never seen twice.
    let (mut one, mut two) = pair();
    let first = seal(&mut one, 1, 2, b"0");
    for _ in 0..WINDOW_BITS + 1 {
        let d = seal(&mut one, 1, 2, b"x");
        open(&mut two, 2, &d, 0).unwrap();
    }
    assert_eq!(open(&mut two, 2, &first, 0), Err(OpenError::Replayed));
    assert_eq!(two.counters().dropped(OpenError::Replayed), 1);
}

#[test]
fn replay_window_edges() {
    let mut w = ReplayWindow::default();
    assert!(w.check(0).is_ok());
    w.accept(0);
    assert_eq!(w.check(0), Err(OpenError::Replayed));
    w.accept(WINDOW_BITS);
    // 0 is now exactly WINDOW_BITS behind the top: too old.
    assert_eq!(w.check(0), Err(OpenError::Replayed));
    assert!(w.check(1).is_ok());
    w.accept(1);
    assert_eq!(w.check(1), Err(OpenError::Replayed));
    // A jump far ahead clears everything behind.
    w.accept(10 * WINDOW_BITS);
    assert!(w.check(10 * WINDOW_BITS - 1).is_ok());
    assert_eq!(w.check(10 * WINDOW_BITS), Err(OpenError::Replayed));
    assert_eq!(w.check(WINDOW_BITS), Err(OpenError::Replayed));
    w.accept(u64::MAX - 1);
    assert!(w.check(u64::MAX - 2).is_ok());
}

#[test]
fn rekey_keeps_the_old_key_for_the_grace_period_only() {
    let (mut one, mut two) = pair();
    let old = seal(&mut one, 1, 2, b"old");
    one.install(2, &keys(10, 0x1, 0x2), 100).unwrap();
    two.install(1, &keys(10, 0x2, 0x1), 100).unwrap();
    let new = seal(&mut one, 1, 2, b"new");
    assert_eq!(open(&mut two, 2, &new, 200).unwrap(), b"new");
    assert_eq!(
        open(&mut two, 2, &old, 200).unwrap(),
        b"old",
        "within the grace"
    );
    let older = {
        let (mut one_again, _) = pair();
        let _ = seal(&mut one_again, 1, 2, b"0");
        seal(&mut one_again, 1, 2, b"late")
    };
    let grace = KeyringConfig::default().grace_ms;
    assert_eq!(
        open(&mut two, 2, &older, 100 + grace),
        Err(OpenError::NoKey)
    );
    assert_eq!(two.counters().rekeys, 1);
}

#[test]
fn sending_needs_a_session_and_a_unicast_receiver() {
    let mut ring = Keyring::new(1, KeyringConfig::default());
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
    assert_eq!(
        ring.seal(&header(1, 2, 1), b"x", &mut buf),
        Err(SealError::NoSession { peer: 2 })
    );
    assert_eq!(ring.counters().no_session, 1);
    assert_eq!(
        ring.seal(&header(1, BROADCAST, 1), b"x", &mut buf),
        Err(SealError::Broadcast)
    );
    ring.install(2, &keys(1, 1, 2), 0).unwrap();
    let big = vec![0u8; MAX_SEALED_PAYLOAD_LEN + 1];
    assert!(matches!(
        ring.seal(&header(1, 2, 1), &big, &mut buf),
        Err(SealError::PayloadTooLarge { .. })
    ));
    let max = vec![0u8; MAX_SEALED_PAYLOAD_LEN];
    assert_eq!(
        ring.seal(&header(1, 2, 1), &max, &mut buf),
        Ok(MAX_DATAGRAM_LEN)
    );
    assert_eq!(
        ring.install(1, &keys(1, 1, 2), 0),
        Err(InstallError::BadPeer)
    );
}

#[test]
fn the_keyring_is_bounded() {
    let config = KeyringConfig {
        peers_max: 3,
        grace_ms: 10,
    };
    let mut ring = Keyring::new(1, config);
    for peer in 2..5 {
        ring.install(peer, &keys(1, 1, 2), 0).unwrap();
    }
    assert_eq!(ring.install(9, &keys(1, 1, 2), 0), Err(InstallError::Full));
    // A re-key of a known peer always fits.
    assert!(ring.install(3, &keys(2, 1, 2), 0).is_ok());
    ring.forget(3);
    assert!(!ring.has_session(3));
    assert!(ring.install(9, &keys(1, 1, 2), 0).is_ok());
}

#[test]
fn plain_and_garbage_input_is_refused_without_panicking() {
    let (_, mut two) = pair();
    let mut rng = 0x1234_5678_u64;
    for len in 0..200usize {
        let mut bytes = vec![0u8; len];
        for b in bytes.iter_mut() {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            *b = rng as u8;
        }
        if len >= 6 {
            bytes[..4].copy_from_slice(b"XYLM");
            bytes[4] = VERSION_SEALED;
        }
        assert!(open(&mut two, 2, &bytes, 0).is_err());
    }
    let mut small = [0u8; 4];
    let (mut one, _) = pair();
    let bytes = seal(&mut one, 1, 2, b"too big for out");
    assert_eq!(
        two.open(&bytes, &local(2), 0, &mut small).map(|_| ()),
        Err(OpenError::Short)
    );
}

#[test]
fn endpoints_exchange_sealed_datagrams_and_refuse_plain_ones() {
    use crate::transport::{Endpoint, TransportConfig};
    let (mut ring1, mut ring2) = pair();
    let mut e1 = Endpoint::new(TransportConfig::new(CLUSTER, 1), 5);
    let mut e2 = Endpoint::new(TransportConfig::new(CLUSTER, 2), 9);
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
    let mut out = vec![0u8; MAX_DATAGRAM_LEN];
    let n = e1
        .encode_sealed(Kind::Swim, 2, b"ping", &mut ring1, &mut buf)
        .unwrap();
    let got = e2
        .receive_sealed(&buf[..n], &mut ring2, 0, &mut out)
        .unwrap();
    assert_eq!((got.header.sender, got.payload), (1, &b"ping"[..]));
    assert_eq!(e2.received(Kind::Swim), 1);
    // A plain datagram is refused before anything reads it.
    let n = e1.encode(Kind::Swim, 2, b"ping", &mut buf).unwrap();
    assert_eq!(
        e2.receive_sealed(&buf[..n], &mut ring2, 0, &mut out)
            .map(|_| ()),
        Err(OpenError::Unsealed)
    );
    assert_eq!(ring2.counters().dropped(OpenError::Unsealed), 1);
    // Envelope-level errors are counted by the endpoint.
    let n = e1
        .encode_sealed(Kind::Swim, 2, b"ping", &mut ring1, &mut buf)
        .unwrap();
    let mut wrong = Endpoint::new(TransportConfig::new(CLUSTER + 1, 2), 0);
    assert!(matches!(
        wrong.receive_sealed(&buf[..n], &mut ring2, 0, &mut out),
        Err(OpenError::Decode(DecodeError::WrongCluster { .. }))
    ));
    assert_eq!(wrong.drops().total(), 1);
}
