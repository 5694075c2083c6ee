//! Wire messages of the SWIM protocol and their worst-case encoded sizes.
//!
//! [`Message`] is what the kernel serializes (postcard, inside the transport envelope);
//! [`Update`] is one piggybacked membership fact (SWIM §4.4 "infection-style
//! dissemination"). Sizes are bounded from the postcard format: a varint `u64` takes at
//! most 10 bytes, a `u32` 5, an enum tag or a short length 1-2. The state machine packs
//! piggybacks against [`Update::max_encoded_len`] so every message stays under
//! `Config::max_message_bytes` whatever the values are.

use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

use super::config::MAX_META_BYTES;
use crate::NodeId;

/// Incarnation number: only the node itself increments its own (SWIM §4.2).
pub type Incarnation = u64;

/// Worst-case postcard bytes of a varint u64.
const VARINT_U64_MAX: usize = 10;
/// Worst-case postcard bytes of a varint u32.
const VARINT_U32_MAX: usize = 5;
/// Worst-case bytes of an enum tag or a sequence length below 16384.
const TAG_MAX: usize = 2;

/// Worst-case bytes of a message without its update list (tag, seq, target, list length).
pub const HEADER_MAX_BYTES: usize = TAG_MAX + VARINT_U32_MAX + VARINT_U64_MAX + TAG_MAX + 8;

/// One membership fact, ordered per member by (incarnation, kind): see `member::overrides`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Update {
    /// `id` is alive at `incarnation`, with its metadata blob.
    Alive {
        id: NodeId,
        incarnation: Incarnation,
        meta: Vec<u8>,
    },
    /// `from` suspects `id` at `incarnation`.
    Suspect {
        id: NodeId,
        incarnation: Incarnation,
        from: NodeId,
    },
    /// `from` declared `id` down at `incarnation` (SWIM's "Confirm").
    Dead {
        id: NodeId,
        incarnation: Incarnation,
        from: NodeId,
    },
    /// `id` left gracefully at `incarnation`.
    Left {
        id: NodeId,
        incarnation: Incarnation,
    },
}

impl Update {
    /// The member this fact is about.
    pub fn id(&self) -> NodeId {
        match self {
            Update::Alive { id, .. }
            | Update::Suspect { id, .. }
            | Update::Dead { id, .. }
            | Update::Left { id, .. } => *id,
        }
    }

    /// The incarnation this fact is about.
    pub fn incarnation(&self) -> Incarnation {
        match self {
            Update::Alive { incarnation, .. }
            | Update::Suspect { incarnation, .. }
            | Update::Dead { incarnation, .. }
            | Update::Left { incarnation, .. } => *incarnation,
        }
    }

    /// Upper bound of this update's postcard encoding.
    pub fn max_encoded_len(&self) -> usize {
        let base = TAG_MAX + VARINT_U64_MAX + VARINT_U64_MAX;
        match self {
            Update::Alive { meta, .. } => {
                debug_assert!(meta.len() <= MAX_META_BYTES);
                base + TAG_MAX + meta.len()
            }
            Update::Suspect { .. } | Update::Dead { .. } => base + VARINT_U64_MAX,
            Update::Left { .. } => base,
        }
    }
}

/// Every message a SWIM node sends. `from` travels in the transport envelope.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Direct probe of `target` (SWIM §4.1); answered by `Ack` with the same `seq`.
    Ping {
        seq: u32,
        target: NodeId,
        updates: Vec<Update>,
    },
    /// Answer to a ping; `target` is the node that was probed.
    Ack {
        seq: u32,
        target: NodeId,
        updates: Vec<Update>,
    },
    /// Ask the receiver to probe `target` on the sender's behalf (SWIM §4.1 ping-req).
    PingReq {
        seq: u32,
        target: NodeId,
        updates: Vec<Update>,
    },
    /// Lifeguard nack: the relay for ping-req `seq` heard nothing from `target` in time,
    /// which proves the requester can still reach the relay (its own health is fine).
    Nack { seq: u32, target: NodeId },
    /// Dissemination only (memberlist-style gossip round).
    Gossip { updates: Vec<Update> },
    /// A new node announces itself to a seed; answered with the first `SyncPage`.
    Join {
        incarnation: Incarnation,
        meta: Vec<u8>,
    },
    /// Ask for the member table entries with id greater than `after` (paged state sync).
    SyncReq { after: Option<NodeId> },
    /// One page of the sender's member table, ascending by id; `more` if it was cut.
    SyncPage {
        after: Option<NodeId>,
        entries: Vec<Update>,
        more: bool,
    },
}

impl Message {
    /// The piggybacked updates, if this kind carries any.
    pub fn updates(&self) -> &[Update] {
        match self {
            Message::Ping { updates, .. }
            | Message::Ack { updates, .. }
            | Message::PingReq { updates, .. }
            | Message::Gossip { updates } => updates,
            Message::SyncPage { entries, .. } => entries,
            Message::Join { .. } | Message::SyncReq { .. } | Message::Nack { .. } => &[],
        }
    }

    /// Upper bound of this message's postcard encoding.
    pub fn max_encoded_len(&self) -> usize {
        let list: usize = self.updates().iter().map(Update::max_encoded_len).sum();
        match self {
            Message::Join { meta, .. } => HEADER_MAX_BYTES + TAG_MAX + meta.len(),
            _ => HEADER_MAX_BYTES + list,
        }
    }
}
