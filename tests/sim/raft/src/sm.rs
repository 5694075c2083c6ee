//! The simulated application state machine: a hash chain over applied entries.
//!
//! Snapshots encode (index, hash) plus deterministic padding, so they are larger than one
//! chunk and exercise the chunked InstallSnapshot.

/// Bytes of a snapshot (forces 3 chunks of 1000 bytes).
pub const SNAPSHOT_BYTES: usize = 2500;

/// FNV-1a style mixing, deterministic across runs and platforms.
pub fn mix(hash: u64, term: u64, data: &[u8]) -> u64 {
    let mut h = hash ^ 0xcbf2_9ce4_8422_2325;
    for b in term.to_le_bytes().iter().chain(data) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// One node's applied state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sm {
    pub index: u64,
    pub hash: u64,
}

impl Sm {
    /// Snapshot bytes of the current state.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(SNAPSHOT_BYTES);
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.hash.to_le_bytes());
        let mut filler = self.hash;
        while out.len() < SNAPSHOT_BYTES {
            filler = filler
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            out.push((filler >> 56) as u8);
        }
        out
    }

    /// State from snapshot bytes; `None` if they are not a snapshot of ours.
    pub fn decode(data: &[u8]) -> Option<Sm> {
        if data.len() != SNAPSHOT_BYTES {
            return None;
        }
        let sm = Sm {
            index: u64::from_le_bytes(data[0..8].try_into().ok()?),
            hash: u64::from_le_bytes(data[8..16].try_into().ok()?),
        };
        (sm.encode() == data).then_some(sm)
    }
}
