//! Merging membership facts into the table: the incarnation rules of SWIM §4.2, member
//! state transitions with their events, refutation of facts about ourselves, and the
//! round-robin probe list of §4.3.

use alloc::vec::Vec;

use super::member::{overrides, update_state, Member, MemberState};
use super::message::{Incarnation, Update};
use super::suspicion::{suspicion_min_ms, Suspicion};
use super::{DownReason, Event, Swim, MAX_META_BYTES};
use crate::NodeId;

impl Swim {
    /// Merges one piggybacked or paged fact.
    pub(super) fn apply_update(&mut self, update: Update, now_ms: u64) {
        if let Update::Alive { meta, .. } = &update {
            if meta.len() > MAX_META_BYTES {
                self.stats.malformed += 1;
                return;
            }
        }
        let id = update.id();
        if id == self.self_id {
            self.apply_about_self(&update);
            return;
        }
        let Some(member) = self.members.get(&id) else {
            self.apply_about_stranger(update, now_ms);
            return;
        };
        let new = (update.incarnation(), update_state(&update));
        let current = (member.incarnation, member.state);
        if !overrides(new, current) {
            self.maybe_confirm(&update, current);
            return;
        }
        self.apply_newer(update, current.1, now_ms);
    }

    /// A fact about a member we never heard of (we joined late, or forgot it). An Alive
    /// introduces it; a Suspect or Dead does too (with no metadata yet), because if we
    /// ignored it we would never probe or reconnect-ping it, and a live node that others
    /// wrongly hold Down would stay invisible to us. A Left stranger is simply ignored.
    fn apply_about_stranger(&mut self, update: Update, now_ms: u64) {
        let id = update.id();
        let incarnation = update.incarnation();
        let meta = match &update {
            Update::Alive { meta, .. } => meta.clone(),
            Update::Left { .. } => return,
            Update::Suspect { .. } => Vec::new(),
            Update::Dead { from, .. } => {
                // Never seen up, so no NodeUp/NodeDown pair: just remember it to ping.
                self.insert_down_member(id, incarnation, *from, now_ms);
                return;
            }
        };
        if !self.insert_member(id, incarnation, meta, now_ms) {
            return;
        }
        match update {
            Update::Alive { .. } => {
                let fresh = self.members[&id].to_update();
                self.broadcasts.push(fresh);
            }
            Update::Suspect { from, .. } => {
                self.transition(id, MemberState::Suspect, incarnation, from, None, now_ms);
            }
            Update::Dead { .. } | Update::Left { .. } => unreachable!("returned above"),
        }
    }

    /// A Suspect equal to the one we hold, from another reporter, is a Lifeguard
    /// confirmation: it shortens the suspicion timeout.
    fn maybe_confirm(&mut self, update: &Update, current: (Incarnation, MemberState)) {
        if let Update::Suspect {
            id,
            incarnation,
            from,
        } = update
        {
            if current == (*incarnation, MemberState::Suspect) {
                self.confirm_suspicion(*id, *from);
            }
        }
    }

    /// Counts `reporter`'s independent suspicion of `id`; a new confirmation is gossiped
    /// on so the other observers' timers shrink too (memberlist does the same).
    pub(super) fn confirm_suspicion(&mut self, id: NodeId, reporter: NodeId) {
        let Some(s) = self.suspicions.get_mut(&id) else {
            return;
        };
        if s.confirm(reporter) {
            let incarnation = s.incarnation;
            debug_assert_eq!(self.members[&id].state, MemberState::Suspect);
            self.broadcasts.push(Update::Suspect {
                id,
                incarnation,
                from: reporter,
            });
        }
    }

    fn apply_newer(&mut self, update: Update, old: MemberState, now_ms: u64) {
        let id = update.id();
        match update {
            Update::Alive {
                incarnation, meta, ..
            } => {
                self.transition(id, MemberState::Alive, incarnation, id, Some(meta), now_ms);
            }
            Update::Suspect {
                incarnation, from, ..
            } => {
                // memberlist: suspicion only applies to live members; a Down member comes
                // back through an Alive with a newer incarnation.
                if old.is_active() {
                    self.transition(id, MemberState::Suspect, incarnation, from, None, now_ms);
                }
            }
            Update::Dead {
                incarnation, from, ..
            } => {
                // A death we have direct evidence against is only a suspicion: we heard
                // the member itself more recently than any true death could have been
                // confirmed (`heard_too_recently_to_be_dead`). This is a node back from
                // a partition gossiping its stale verdicts; the accused refutes within
                // the suspicion timeout, and a member that really died still goes Down
                // when that timeout runs out.
                // Retransmitted copies of the same Dead keep it a suspicion too.
                if old.is_active() && self.heard_too_recently_to_be_dead(id, now_ms) {
                    self.stats.deaths_doubted += 1;
                    let m = &self.members[&id];
                    let suspect = (incarnation, MemberState::Suspect);
                    if overrides(suspect, (m.incarnation, m.state)) {
                        self.transition(id, MemberState::Suspect, incarnation, from, None, now_ms);
                    }
                    return;
                }
                self.transition(id, MemberState::Down, incarnation, from, None, now_ms);
            }
            Update::Left { incarnation, .. } => {
                self.transition(id, MemberState::Left, incarnation, id, None, now_ms);
            }
        }
    }

    /// True when `id` itself spoke to us within the shortest time in which another node
    /// could have confirmed its death: the accuser's probe timeout plus the suspicion
    /// minimum, both counted from a probe sent after the death. A crashed member is
    /// always older than that by the time its Dead arrives, so a real failure is never
    /// slowed by this.
    fn heard_too_recently_to_be_dead(&self, id: NodeId, now_ms: u64) -> bool {
        let Some(member) = self.members.get(&id) else {
            return false;
        };
        // 0 = never heard directly.
        if member.last_heard_ms == 0 {
            return false;
        }
        let n = self.active_count() as u64;
        let window_ms =
            self.config.probe_timeout_ms + suspicion_min_ms(self.config.suspicion_base_ms, n);
        now_ms.saturating_sub(member.last_heard_ms) < window_ms
    }

    /// Facts about ourselves: refute anything that says we are not alive at an
    /// incarnation we still hold (SWIM §4.2), and outrun stale Alives of a past life.
    fn apply_about_self(&mut self, update: &Update) {
        if self.leaving {
            return;
        }
        let incarnation = update.incarnation();
        let refute = match update {
            Update::Alive { meta, .. } => {
                incarnation > self.incarnation
                    || (incarnation == self.incarnation && *meta != self.meta)
            }
            Update::Suspect { .. } | Update::Dead { .. } | Update::Left { .. } => {
                incarnation >= self.incarnation
            }
        };
        if refute {
            self.refute(incarnation);
        } else if !matches!(update, Update::Alive { .. }) && incarnation < self.incarnation {
            // Someone still holds a stale bad fact about us (it missed our refutation,
            // e.g. across a partition): re-gossip our current Alive so it catches up.
            let me = self.self_alive();
            self.broadcasts.push(me);
        }
    }

    fn refute(&mut self, seen: Incarnation) {
        let next = seen.max(self.incarnation) + 1;
        assert!(
            next > self.incarnation,
            "refutation must raise the incarnation"
        );
        self.incarnation = next;
        self.stats.refutations += 1;
        // Lifeguard: being suspected hints that we are the slow one.
        self.adjust_health(1);
        let me = self.self_alive();
        self.broadcasts.push(me);
    }

    /// Adds a new Alive member; false if the table is full.
    pub(super) fn insert_member(
        &mut self,
        id: NodeId,
        incarnation: Incarnation,
        meta: Vec<u8>,
        now_ms: u64,
    ) -> bool {
        assert!(id != self.self_id, "self is not a member");
        assert!(!self.members.contains_key(&id), "member inserted twice");
        if self.members.len() >= self.config.max_members && !self.reclaim_one() {
            self.stats.members_dropped += 1;
            return false;
        }
        let member = Member {
            id,
            state: MemberState::Alive,
            incarnation,
            reporter: id,
            meta,
            last_heard_ms: 0,
            state_changed_ms: now_ms,
        };
        self.members.insert(id, member);
        self.probe_list_insert(id);
        self.emit(Event::NodeUp { id });
        true
    }

    /// Remembers a member first heard of as Down (silently: the kernel never saw it up).
    fn insert_down_member(
        &mut self,
        id: NodeId,
        incarnation: Incarnation,
        reporter: NodeId,
        now_ms: u64,
    ) {
        assert!(id != self.self_id && !self.members.contains_key(&id));
        if self.members.len() >= self.config.max_members && !self.reclaim_one() {
            self.stats.members_dropped += 1;
            return;
        }
        let member = Member {
            id,
            state: MemberState::Down,
            incarnation,
            reporter,
            meta: Vec::new(),
            last_heard_ms: 0,
            state_changed_ms: now_ms,
        };
        self.members.insert(id, member);
        debug_assert!(!self.probe_list.contains(&id));
    }

    /// Forgets the longest-Down (or Left) member to make room.
    fn reclaim_one(&mut self) -> bool {
        let victim = self
            .members
            .values()
            .filter(|m| !m.state.is_active())
            .min_by_key(|m| m.state_changed_ms)
            .map(|m| m.id);
        match victim {
            Some(id) => {
                self.members.remove(&id);
                true
            }
            None => false,
        }
    }

    /// Moves a known member to `state`, keeping the probe list, the suspicion timers,
    /// the broadcast queue and the event stream in step with it.
    pub(super) fn transition(
        &mut self,
        id: NodeId,
        state: MemberState,
        incarnation: Incarnation,
        reporter: NodeId,
        meta: Option<Vec<u8>>,
        now_ms: u64,
    ) {
        let member = self
            .members
            .get_mut(&id)
            .expect("transition of unknown member");
        assert!(
            overrides((incarnation, state), (member.incarnation, member.state)),
            "stale transition"
        );
        let old = member.state;
        member.state = state;
        member.incarnation = incarnation;
        member.reporter = reporter;
        if let Some(meta) = meta {
            member.meta = meta;
        }
        if old != state {
            member.state_changed_ms = now_ms;
        }
        let fact = member.to_update();
        match (old.is_active(), state.is_active()) {
            (false, true) => self.probe_list_insert(id),
            (true, false) => self.probe_list_remove(id),
            _ => {}
        }
        if state == MemberState::Suspect {
            self.start_suspicion(id, incarnation, reporter, now_ms);
        } else {
            self.suspicions.remove(&id);
        }
        self.broadcasts.push(fact);
        self.emit_transition(id, old, state, incarnation, reporter);
    }

    fn emit_transition(
        &mut self,
        id: NodeId,
        old: MemberState,
        new: MemberState,
        inc: Incarnation,
        reporter: NodeId,
    ) {
        use MemberState::{Alive, Down, Left, Suspect};
        let event = match (old, new) {
            (Suspect, Alive) => Event::NodeAlive {
                id,
                incarnation: inc,
            },
            (Down | Left, Alive) => Event::NodeUp { id },
            (_, Suspect) => Event::NodeSuspect {
                id,
                incarnation: inc,
            },
            (Alive | Suspect, Down) => {
                let reason = if reporter == self.self_id {
                    DownReason::SuspicionTimeout
                } else {
                    DownReason::ReportedBy { reporter }
                };
                Event::NodeDown { id, reason }
            }
            (Alive | Suspect, Left) => Event::NodeLeft { id },
            // Alive -> Alive (newer incarnation) and Down <-> Left are not transitions the
            // kernel acts on.
            (Alive, Alive) | (Down | Left, Down | Left) => return,
        };
        self.emit(event);
    }

    fn start_suspicion(
        &mut self,
        id: NodeId,
        incarnation: Incarnation,
        reporter: NodeId,
        now_ms: u64,
    ) {
        let n = self.active_count() as u64;
        // Our own recent scheduling delay is the host's: the suspect, likely on the same
        // loaded host, may be just as late, so it gets that much more time to refute.
        let min_ms =
            suspicion_min_ms(self.config.suspicion_base_ms, n) + self.late_recent_ms(now_ms);
        let max_ms = min_ms * self.config.suspicion_max_mult;
        // Only n - 2 other nodes can independently confirm (not us, not the suspect).
        let k = self
            .config
            .suspicion_confirmations
            .min(self.active_count().saturating_sub(2));
        let suspicion = Suspicion::new(incarnation, now_ms, min_ms, max_ms, k, reporter);
        self.suspicions.insert(id, suspicion);
        debug_assert!(self.suspicions.len() <= self.members.len());
    }

    /// SWIM §4.3: a new member goes to a uniformly random position of the probe order.
    fn probe_list_insert(&mut self, id: NodeId) {
        debug_assert!(!self.probe_list.contains(&id));
        let pos = self.rand_below(self.probe_list.len() + 1);
        self.probe_list.insert(pos, id);
        if pos < self.probe_index {
            self.probe_index += 1;
        }
        assert!(self.probe_index <= self.probe_list.len());
    }

    fn probe_list_remove(&mut self, id: NodeId) {
        let Some(pos) = self.probe_list.iter().position(|&x| x == id) else {
            panic!("active member missing from probe list");
        };
        self.probe_list.remove(pos);
        if pos < self.probe_index {
            self.probe_index -= 1;
        }
        assert!(self.probe_index <= self.probe_list.len());
    }

    /// The next probe target in round-robin order, reshuffling after each full pass.
    pub(super) fn next_probe_target(&mut self) -> Option<NodeId> {
        if self.probe_list.is_empty() {
            return None;
        }
        if self.probe_index >= self.probe_list.len() {
            self.shuffle_probe_list();
            self.probe_index = 0;
        }
        let target = self.probe_list[self.probe_index];
        self.probe_index += 1;
        Some(target)
    }

    fn shuffle_probe_list(&mut self) {
        // Fisher-Yates with our own generator.
        for i in (1..self.probe_list.len()).rev() {
            let j = self.rand_below(i + 1);
            self.probe_list.swap(i, j);
        }
    }
}
