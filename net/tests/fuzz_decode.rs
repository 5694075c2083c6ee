//! Time-bounded fuzzing of the envelope decoder that needs no cargo-fuzz (CI runs it).
//!
//! `cargo test -p net --release --test fuzz_decode` loops for `NET_FUZZ_SECS` seconds
//! (default 5) over inputs drawn from a seeded xoshiro generator (`NET_FUZZ_SEED`, default
//! below): random bytes, valid envelopes, valid envelopes with random mutations, and valid
//! envelopes with tampered header fields whose checksum is recomputed so the checks after the
//! checksum are reached too; now and then the last accepted input is replayed. Each input goes
//! through `Endpoint::receive`. It asserts:
//!
//! 1. nothing panics (a panic prints the seed, case number and input, and how to replay it);
//! 2. every rejection is counted: accepted + counted drops == cases, per reason too;
//! 3. whatever is accepted re-encodes to exactly the input bytes (the encoding is canonical);
//! 4. unmutated valid envelopes are accepted; single-bit flips are always rejected; replays
//!    are suppressed as duplicates;
//! 5. over a long enough run, every drop reason is reached.
//!
//! Input `i` depends only on the seed and `i`, so `NET_FUZZ_ITERS=n` replays the first `n`
//! cases exactly, whatever the machine's speed.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use net::{
    encode, parse, DecodeError, Endpoint, Header, Kind, ReceiveError, TransportConfig, BROADCAST,
    HEADER_LEN, MAX_DATAGRAM_LEN, MAX_PAYLOAD_LEN,
};
use rand_core::{RngCore, SeedableRng};
use rand_xoshiro::Xoshiro256PlusPlus;

const CLUSTER: u64 = 0x0C1A_5E7E;
const LOCAL_NODE: u64 = 3;
const DEFAULT_SEED: u64 = 0x5EED_F00D;
const OFF_CRC: usize = net::envelope::CHECKSUM_OFFSET;

/// How an input was made; decides which extra assertions apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Origin {
    Random,
    Valid,
    BitFlip,
    Mutated,
    Tampered,
    /// The last accepted input again: must be suppressed as a duplicate.
    Replay,
}

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name} must be an integer"))
    })
}

fn pick<T: Copy>(rng: &mut Xoshiro256PlusPlus, items: &[T]) -> T {
    items[(rng.next_u64() % items.len() as u64) as usize]
}

fn below(rng: &mut Xoshiro256PlusPlus, n: usize) -> usize {
    (rng.next_u64() % n as u64) as usize
}

/// A plausible node id: mostly ours or a neighbour's, sometimes broadcast or anything.
fn node_id(rng: &mut Xoshiro256PlusPlus) -> u64 {
    match below(rng, 8) {
        0 => BROADCAST,
        1 => rng.next_u64(),
        _ => below(rng, 6) as u64,
    }
}

fn valid(rng: &mut Xoshiro256PlusPlus) -> Vec<u8> {
    let mut sender = node_id(rng);
    if sender == BROADCAST || sender == LOCAL_NODE {
        sender = LOCAL_NODE + 1;
    }
    let header = Header {
        kind: pick(rng, &Kind::ALL),
        cluster_id: CLUSTER,
        sender,
        receiver: pick(rng, &[LOCAL_NODE, BROADCAST]),
        seq: rng.next_u32(),
    };
    let payload_len = match below(rng, 4) {
        0 => 0,
        1 => MAX_PAYLOAD_LEN - below(rng, 4),
        _ => below(rng, 200),
    };
    let mut payload = vec![0u8; payload_len];
    rng.fill_bytes(&mut payload);
    let mut buf = vec![0u8; MAX_DATAGRAM_LEN];
    let len = encode(&header, &payload, &mut buf).expect("generated header is valid");
    buf.truncate(len);
    buf
}

fn random_bytes(rng: &mut Xoshiro256PlusPlus) -> Vec<u8> {
    let len = match below(rng, 4) {
        0 => below(rng, HEADER_LEN + 8),
        1 => MAX_DATAGRAM_LEN - 8 + below(rng, 16),
        _ => below(rng, 1600),
    };
    let mut bytes = vec![0u8; len];
    rng.fill_bytes(&mut bytes);
    if len >= 4 && below(rng, 2) == 0 {
        // Half the random inputs get our magic, to get past the first check.
        bytes[..4].copy_from_slice(b"XYLM");
    }
    bytes
}

/// Recomputes the checksum so tampered fields reach the checks after it.
fn reseal(bytes: &mut [u8]) {
    if bytes.len() < HEADER_LEN {
        return;
    }
    let mut crc = net::crc32c::Crc32c::new();
    crc.update(&bytes[..OFF_CRC]);
    crc.update(&bytes[HEADER_LEN..]);
    let sum = crc.finish();
    bytes[OFF_CRC..HEADER_LEN].copy_from_slice(&sum.to_be_bytes());
}

fn mutate(rng: &mut Xoshiro256PlusPlus, bytes: &mut Vec<u8>) {
    for _ in 0..1 + below(rng, 8) {
        let len = bytes.len();
        match below(rng, 6) {
            0 if len > 0 => bytes[below(rng, len)] ^= 1 << below(rng, 8),
            1 if len > 0 => bytes[below(rng, len)] = rng.next_u32() as u8,
            2 if len > 0 => bytes.truncate(below(rng, len)),
            3 => bytes.extend((0..1 + below(rng, 64)).map(|_| rng.next_u32() as u8)),
            4 if len > 0 => {
                bytes.remove(below(rng, len));
            }
            _ => bytes.insert(below(rng, len + 1), rng.next_u32() as u8),
        }
    }
}

/// Overwrites one header field with an interesting value, then reseals.
fn tamper(rng: &mut Xoshiro256PlusPlus, bytes: &mut [u8]) {
    let field = below(rng, 7);
    match field {
        0 => bytes[4] = pick(rng, &[0, 2, 255]),
        1 => bytes[5] = pick(rng, &[0, 6, 7, 128, 255]),
        2 => bytes[6..8].copy_from_slice(&(rng.next_u32() as u16).to_be_bytes()),
        3 => bytes[8..16].copy_from_slice(&pick(rng, &[0, CLUSTER + 1, u64::MAX]).to_be_bytes()),
        4 => bytes[16..24].copy_from_slice(&pick(rng, &[BROADCAST, LOCAL_NODE, 0]).to_be_bytes()),
        5 => bytes[24..32]
            .copy_from_slice(&pick(rng, &[0, 1, 2, 4, LOCAL_NODE + 1000]).to_be_bytes()),
        _ => bytes[32..36].copy_from_slice(&rng.next_u32().to_be_bytes()),
    }
    reseal(bytes);
}

fn generate(rng: &mut Xoshiro256PlusPlus, last_accepted: &Option<Vec<u8>>) -> (Origin, Vec<u8>) {
    if let Some(last) = last_accepted {
        if below(rng, 64) == 0 {
            return (Origin::Replay, last.clone());
        }
    }
    match below(rng, 10) {
        0..=2 => (Origin::Random, random_bytes(rng)),
        3 => (Origin::Valid, valid(rng)),
        4 => {
            let mut bytes = valid(rng);
            let bit = below(rng, bytes.len() * 8);
            bytes[bit / 8] ^= 1 << (bit % 8);
            (Origin::BitFlip, bytes)
        }
        5..=7 => {
            let mut bytes = valid(rng);
            mutate(rng, &mut bytes);
            if below(rng, 2) == 0 {
                reseal(&mut bytes);
            }
            (Origin::Mutated, bytes)
        }
        _ => {
            let mut bytes = valid(rng);
            tamper(rng, &mut bytes);
            (Origin::Tampered, bytes)
        }
    }
}

/// Checks one input; returns whether the endpoint accepted it.
fn check_case(endpoint: &mut Endpoint, origin: Origin, input: &[u8]) -> bool {
    let result = endpoint.receive(input);
    match (&result, origin) {
        (Err(ReceiveError::Decode(e)), Origin::Valid) => panic!("valid envelope rejected: {e}"),
        (Ok(_), Origin::BitFlip) => panic!("a single-bit flip was accepted"),
        (Ok(_), Origin::Replay) => panic!("a replayed datagram was delivered twice"),
        (Err(ReceiveError::Decode(e)), Origin::Replay) => {
            panic!("replay rejected as {e}, not a duplicate")
        }
        _ => {}
    }
    let Ok(envelope) = result else { return false };
    assert_eq!(envelope.wire_len(), input.len());
    assert_eq!(envelope.payload, &input[HEADER_LEN..]);
    let mut again = vec![0u8; MAX_DATAGRAM_LEN];
    let len =
        encode(&envelope.header, envelope.payload, &mut again).expect("accepted means encodable");
    assert_eq!(
        &again[..len],
        input,
        "accepted input must re-encode to the same bytes"
    );
    assert_eq!(parse(input).map(|e| e.header), Ok(envelope.header));
    true
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn fuzz_decode_time_bounded() {
    let seed = env_u64("NET_FUZZ_SEED").unwrap_or(DEFAULT_SEED);
    let budget = Duration::from_secs(env_u64("NET_FUZZ_SECS").unwrap_or(5));
    let iters_max = env_u64("NET_FUZZ_ITERS").unwrap_or(u64::MAX);
    let mut rng = Xoshiro256PlusPlus::seed_from_u64(seed);
    let mut endpoint = Endpoint::new(TransportConfig::new(CLUSTER, LOCAL_NODE), 0);
    let (mut cases, mut accepted) = (0u64, 0u64);
    let mut by_origin = [0u64; 6];
    let mut last_accepted: Option<Vec<u8>> = None;
    let started = Instant::now();
    while cases < iters_max && (cases % 1024 != 0 || started.elapsed() < budget) {
        let (origin, input) = generate(&mut rng, &last_accepted);
        let outcome = catch_unwind(AssertUnwindSafe(|| {
            check_case(&mut endpoint, origin, &input)
        }));
        match outcome {
            Ok(was_accepted) => {
                accepted += u64::from(was_accepted);
                if was_accepted {
                    last_accepted = Some(input);
                }
            }
            Err(_) => panic!(
                "case {cases} ({origin:?}) failed on input {}\nreproduce with seed={seed}: \
                 NET_FUZZ_SEED={seed} NET_FUZZ_ITERS={} cargo test -p net --release --test fuzz_decode",
                hex(&input),
                cases + 1
            ),
        }
        by_origin[origin as usize] += 1;
        cases += 1;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let drops = endpoint.drops();
    assert_eq!(
        accepted + drops.total(),
        cases,
        "every rejected input is counted exactly once"
    );
    println!("fuzz_decode: seed={seed} cases={cases} accepted={accepted} in {elapsed:.1}s ({:.0} cases/s)", cases as f64 / elapsed);
    println!("  origins random/valid/bitflip/mutated/tampered/replay = {by_origin:?}");
    for (reason, count) in drops.iter() {
        println!("  drop {reason:<20} {count}");
    }
    // Every replay is a duplicate; a fresh input can collide with the last seq of its sender
    // (probability 2^-32 per input), so allow a handful more.
    let replays = by_origin[Origin::Replay as usize];
    assert!(drops.duplicate >= replays && drops.duplicate - replays <= 1 + cases / 100_000_000);
    if cases >= 100_000 {
        assert!(drops.duplicate > 0, "the duplicate path was never reached");
        for name in DecodeError::NAMES {
            let hit = drops.iter().any(|(reason, n)| reason == name && n > 0);
            assert!(
                hit,
                "drop reason {name} never reached in {cases} cases (seed={seed})"
            );
        }
    }
}
