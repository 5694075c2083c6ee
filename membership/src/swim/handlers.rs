//! Receiving: [`Swim::step`] dispatches each [`Message`] kind to one handler.
//!
//! Every handler first merges the piggybacked updates (SWIM §4.4), then does its own
//! part: answer pings, relay ping-reqs (§4.1), count acks and Lifeguard nacks for the
//! current probe, serve and follow paged state syncs for join and anti-entropy.

use alloc::vec::Vec;

use super::member::MemberState;
use super::message::{Incarnation, Message, Update, HEADER_MAX_BYTES};
use super::{Relay, Swim, SyncSession, MAX_META_BYTES};
use crate::NodeId;
use core::ops::Bound;

/// A sync page being filled against its byte and count budget.
struct Page {
    entries: Vec<Update>,
    used: usize,
    budget: usize,
    max_entries: usize,
}

impl Page {
    /// Adds `update` if it fits; false if the page is full.
    fn push(&mut self, update: Update) -> bool {
        let len = update.max_encoded_len();
        if self.used + len > self.budget || self.entries.len() >= self.max_entries {
            return false;
        }
        self.used += len;
        self.entries.push(update);
        true
    }
}

impl Swim {
    /// Handles one message `msg` that arrived from node `from` at `now_ms`.
    pub fn step(&mut self, from: NodeId, msg: Message, now_ms: u64) {
        self.on_call(now_ms, 0);
        let now_ms = self.last_call_ms;
        self.dispatch(from, msg, now_ms);
        self.after_call();
    }

    fn dispatch(&mut self, from: NodeId, msg: Message, now_ms: u64) {
        if from == self.self_id {
            self.stats.misrouted += 1;
            return;
        }
        if let Some(m) = self.members.get_mut(&from) {
            m.last_heard_ms = now_ms;
        }
        if self.leaving {
            self.on_message_while_leaving(from, &msg);
            return;
        }
        if !self.members.contains_key(&from)
            && !matches!(msg, Message::Join { .. } | Message::SyncPage { .. })
        {
            self.pull_from_stranger(from, now_ms);
        }
        match msg {
            Message::Ping {
                seq,
                target,
                updates,
            } => self.on_ping(from, seq, target, updates, now_ms),
            Message::Ack {
                seq,
                target,
                updates,
            } => self.on_ack(seq, target, updates, now_ms),
            Message::PingReq {
                seq,
                target,
                updates,
            } => self.on_ping_req(from, seq, target, updates, now_ms),
            Message::Nack { seq, target } => self.on_nack(seq, target),
            Message::Gossip { updates } => self.apply_all(updates, now_ms),
            Message::Join { incarnation, meta } => self.on_join(from, incarnation, meta, now_ms),
            Message::SyncReq { after } => self.send_page(from, after),
            Message::SyncPage {
                after,
                entries,
                more,
            } => self.on_sync_page(from, after, entries, more, now_ms),
        }
        assert!(self.outputs.len() <= self.config.max_outputs);
        debug_assert!(self.probe_index <= self.probe_list.len());
    }

    /// A node we do not know talks to us (we restarted and joined through a seed that
    /// knew little): pull its whole table, which also introduces the node itself.
    fn pull_from_stranger(&mut self, from: NodeId, now_ms: u64) {
        if self.sync.is_some() {
            return;
        }
        self.sync = Some(SyncSession {
            peer: from,
            after: None,
            sent_ms: now_ms,
            retries: 0,
        });
        self.send(from, Message::SyncReq { after: None });
    }

    fn apply_all(&mut self, updates: Vec<Update>, now_ms: u64) {
        if updates.len() > self.config.max_piggyback.max(64) {
            self.stats.malformed += 1;
            return;
        }
        for update in updates {
            self.apply_update(update, now_ms);
        }
    }

    /// A leaving node only tells whoever still talks to it that it left.
    fn on_message_while_leaving(&mut self, from: NodeId, msg: &Message) {
        if matches!(
            msg,
            Message::Ping { .. } | Message::PingReq { .. } | Message::Join { .. }
        ) {
            let left = Update::Left {
                id: self.self_id,
                incarnation: self.incarnation,
            };
            self.send(
                from,
                Message::Gossip {
                    updates: alloc::vec![left],
                },
            );
        }
    }

    fn on_ping(
        &mut self,
        from: NodeId,
        seq: u32,
        target: NodeId,
        updates: Vec<Update>,
        now_ms: u64,
    ) {
        self.apply_all(updates, now_ms);
        if target != self.self_id {
            // Meant for another identity at this address (e.g. before a re-number).
            self.stats.misrouted += 1;
            return;
        }
        let updates = self.piggyback(from);
        self.send(
            from,
            Message::Ack {
                seq,
                target,
                updates,
            },
        );
    }

    fn on_ack(&mut self, seq: u32, target: NodeId, updates: Vec<Update>, now_ms: u64) {
        self.apply_all(updates, now_ms);
        if let Some(probe) = &self.probe {
            if probe.seq == seq && probe.target == target {
                // Direct or relayed, the target is alive: the probe succeeded.
                self.probe = None;
                self.adjust_health(-1);
                return;
            }
        }
        if let Some(pos) = self
            .relays
            .iter()
            .position(|r| r.seq == seq && r.target == target)
        {
            let relay = self.relays.swap_remove(pos);
            debug_assert!(relay.target != self.self_id);
            let updates = self.piggyback(relay.requester);
            let ack = Message::Ack {
                seq: relay.requester_seq,
                target,
                updates,
            };
            self.send(relay.requester, ack);
        }
    }

    fn on_ping_req(
        &mut self,
        from: NodeId,
        seq: u32,
        target: NodeId,
        updates: Vec<Update>,
        now_ms: u64,
    ) {
        self.apply_all(updates, now_ms);
        if target == self.self_id || target == from {
            self.stats.misrouted += 1;
            return;
        }
        if self.relays.len() >= self.config.max_relays {
            // Bounded: the oldest relay is the least likely to still matter.
            self.relays.remove(0);
            self.stats.relays_dropped += 1;
        }
        let relay_seq = self.next_seq();
        // Lifeguard: nack before the requester's period ends, at the probe timeout.
        let expires_ms = now_ms + self.config.probe_timeout_ms;
        self.relays.push(Relay {
            seq: relay_seq,
            requester: from,
            requester_seq: seq,
            target,
            expires_ms,
        });
        let updates = self.piggyback(target);
        self.send(
            target,
            Message::Ping {
                seq: relay_seq,
                target,
                updates,
            },
        );
        assert!(self.relays.len() <= self.config.max_relays);
    }

    fn on_nack(&mut self, seq: u32, target: NodeId) {
        if let Some(probe) = &mut self.probe {
            if probe.seq == seq && probe.target == target {
                probe.nacks += 1;
                self.stats.nacks_received += 1;
                debug_assert!(probe.nacks <= probe.indirect_sent);
            }
        }
    }

    fn on_join(&mut self, from: NodeId, incarnation: Incarnation, meta: Vec<u8>, now_ms: u64) {
        if meta.len() > MAX_META_BYTES {
            self.stats.malformed += 1;
            return;
        }
        self.apply_update(
            Update::Alive {
                id: from,
                incarnation,
                meta,
            },
            now_ms,
        );
        self.send_page(from, None);
    }

    /// Sends the entries (ourselves included) with id > `after`, ascending, as many as
    /// fit one message.
    pub(super) fn send_page(&mut self, to: NodeId, after: Option<NodeId>) {
        let budget = self.config.max_message_bytes - HEADER_MAX_BYTES - 16;
        let max_entries = self.config.max_piggyback * 2;
        let mut page = Page {
            entries: Vec::new(),
            used: 0,
            budget,
            max_entries,
        };
        let mut more = false;
        let mut self_pending = after.is_none_or(|a| self.self_id > a);
        let lower = after.map_or(Bound::Unbounded, Bound::Excluded);
        for (&id, member) in self.members.range((lower, Bound::Unbounded)) {
            // Interleave ourselves at our place in id order.
            if self_pending && self.self_id < id {
                self_pending = false;
                if !page.push(self.self_alive()) {
                    more = true;
                    break;
                }
            }
            if !page.push(member.to_update()) {
                more = true;
                break;
            }
        }
        if !more && self_pending && !page.push(self.self_alive()) {
            more = true;
        }
        assert!(page.used <= budget && page.entries.len() <= max_entries);
        self.send(
            to,
            Message::SyncPage {
                after,
                entries: page.entries,
                more,
            },
        );
    }

    fn on_sync_page(
        &mut self,
        from: NodeId,
        after: Option<NodeId>,
        entries: Vec<Update>,
        more: bool,
        now_ms: u64,
    ) {
        let last = entries.last().map(Update::id);
        let ascending = entries.windows(2).all(|w| w[0].id() < w[1].id());
        let in_range = entries
            .first()
            .is_none_or(|e| after.is_none_or(|a| e.id() > a));
        if entries.len() > self.config.max_piggyback * 2 || !ascending || !in_range {
            // A page that could make the cursor go backwards would loop forever.
            self.stats.malformed += 1;
            return;
        }
        for update in entries {
            self.apply_update(update, now_ms);
        }
        if after.is_none() && self.seeds.contains(&from) {
            self.joined = true;
        }
        let ours = self
            .sync
            .map_or(after.is_none(), |s| s.peer == from && s.after == after);
        if !ours {
            return;
        }
        match (more, last) {
            (true, Some(last)) => {
                self.sync = Some(SyncSession {
                    peer: from,
                    after: Some(last),
                    sent_ms: now_ms,
                    retries: 0,
                });
                self.send(from, Message::SyncReq { after: Some(last) });
            }
            _ => self.sync = None,
        }
    }

    /// Our view of `id` if it is not Alive (used in tests and by the shell).
    pub fn state_of(&self, id: NodeId) -> Option<MemberState> {
        if id == self.self_id {
            return Some(if self.leaving {
                MemberState::Left
            } else {
                MemberState::Alive
            });
        }
        self.members.get(&id).map(|m| m.state)
    }
}
