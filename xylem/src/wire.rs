//! The control plane's messages between nodes (the transport's `Control` kind).
//!
//! One format-version byte ([`WIRE_FORMAT_V1`]) and the postcard encoding of [`ControlMsg`].
//! Decoding is total: garbage from a peer is a typed [`WireError`], never a panic, and every
//! variable-size field is bounded (a report by its own bounds, a forwarded command by
//! [`crate::command::COMMAND_BYTES_MAX`]).

use crate::command::COMMAND_BYTES_MAX;
use crate::report::REPORT_BYTES_MAX;
use crate::write::WriteError;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// The first byte of every control message.
pub const WIRE_FORMAT_V1: u8 = 1;
/// Largest encoded control message (a report or a forwarded command plus framing; well
/// inside the transport's 1360-byte payload for every valid command).
pub const MESSAGE_BYTES_MAX: usize = COMMAND_BYTES_MAX + 64;

/// A control-plane message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControlMsg {
    /// A node's status report (`NodeReport::encode`), sent to every other node.
    Report(Vec<u8>),
    /// An operator write a follower forwards to the leader (`Command::encode`), with the
    /// follower's request id.
    Forward { req: u64, command: Vec<u8> },
    /// The leader's answer to a forwarded write: the committed index, or why not.
    Reply {
        req: u64,
        result: Result<u64, WriteError>,
    },
    /// A lease request (fenced services), numbered by the requester.
    LeaseRequest { seq: u64 },
    /// The leader's grant of request `seq`, sent after a ReadIndex round confirmed it leads;
    /// `index` is the leader's applied index then (the holder must catch up to it first).
    LeaseGrant { seq: u64, index: u64 },
}

/// Why bytes are not a control message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    Empty,
    TooLarge { len: usize },
    UnknownFormat { version: u8 },
    Malformed,
}

impl ControlMsg {
    /// Encodes the message; `None` only if it would exceed [`MESSAGE_BYTES_MAX`].
    pub fn encode(&self) -> Option<Vec<u8>> {
        let bytes = postcard::to_extend(self, alloc::vec![WIRE_FORMAT_V1]).ok()?;
        (bytes.len() <= MESSAGE_BYTES_MAX).then_some(bytes)
    }

    /// Decodes a received message.
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        let (&version, body) = bytes.split_first().ok_or(WireError::Empty)?;
        if bytes.len() > MESSAGE_BYTES_MAX {
            return Err(WireError::TooLarge { len: bytes.len() });
        }
        if version != WIRE_FORMAT_V1 {
            return Err(WireError::UnknownFormat { version });
        }
        let (msg, rest) =
            postcard::take_from_bytes::<ControlMsg>(body).map_err(|_| WireError::Malformed)?;
        if !rest.is_empty() {
            return Err(WireError::Malformed);
        }
        let within = match &msg {
            ControlMsg::Report(r) => r.len() <= REPORT_BYTES_MAX,
            ControlMsg::Forward { command, .. } => command.len() <= COMMAND_BYTES_MAX,
            _ => true,
        };
        within.then_some(msg).ok_or(WireError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_core::{RngCore, SeedableRng};
    use rand_xoshiro::Xoshiro256PlusPlus;

    #[test]
    fn messages_round_trip_and_garbage_is_typed() {
        let msgs = [
            ControlMsg::Report(alloc::vec![2, 1, 2]),
            ControlMsg::Forward {
                req: u64::MAX,
                command: alloc::vec![2; 600],
            },
            ControlMsg::Reply {
                req: 7,
                result: Err(WriteError::TimedOut { after_ms: 2_000 }),
            },
            ControlMsg::Reply {
                req: 7,
                result: Ok(42),
            },
            ControlMsg::LeaseRequest { seq: 1 },
            ControlMsg::LeaseGrant { seq: 1, index: 9 },
        ];
        for m in msgs {
            let bytes = m.encode().unwrap();
            assert!(bytes.len() <= 1360, "fits one transport payload");
            assert_eq!(ControlMsg::decode(&bytes), Ok(m));
        }
        assert_eq!(ControlMsg::decode(&[]), Err(WireError::Empty));
        assert_eq!(
            ControlMsg::decode(&[9, 0]),
            Err(WireError::UnknownFormat { version: 9 })
        );
        assert_eq!(ControlMsg::decode(&[1, 99]), Err(WireError::Malformed));
        let mut rng = Xoshiro256PlusPlus::seed_from_u64(3);
        for _ in 0..20_000 {
            let mut b = alloc::vec![0u8; (rng.next_u32() % 64) as usize];
            rng.fill_bytes(&mut b);
            if let Some(first) = b.first_mut() {
                *first = WIRE_FORMAT_V1;
            }
            let _ = ControlMsg::decode(&b);
        }
    }
}
