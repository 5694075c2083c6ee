//! Time-driven work: [`Swim::tick`] runs, in order, the protocol period (probe, ping-req,
//! suspect; SWIM §4.1), suspicion timeouts (Lifeguard §3.2), gossip rounds, reconnect
//! pings to Down members, join retries and anti-entropy syncs, and ping-req relay nacks.
//!
//! Local stall detection lives here too: if the driver calls us much later than our own
//! deadline (the node was paused, or its VM starved), the silence we observe is ours, so
//! the probe in flight is dropped instead of blamed and running suspicions get a grace
//! period to receive refutations we could not hear (Lifeguard's spirit, not its letter).

use super::member::MemberState;
use super::message::{Message, Update};
use super::{Probe, Swim, SyncSession, SYNC_MAX_RETRIES};
use crate::NodeId;

impl Swim {
    /// Advances timers to `now_ms` (monotonic milliseconds).
    pub fn tick(&mut self, now_ms: u64) {
        self.tick_late(now_ms, 0);
    }

    /// [`Swim::tick`] for a driver that measured its own lateness: its timer fired, or this
    /// tick waited in its queue, `late_ms` after it was due (e.g. the VM was not scheduled).
    /// Beyond [`Config::late_tolerance_ms`] the node suspects itself, exactly as when it
    /// notices on its own that it is called long after its deadline.
    pub fn tick_late(&mut self, now_ms: u64, late_ms: u64) {
        self.on_call(now_ms, late_ms);
        let now_ms = self.last_call_ms;
        if !self.leaving {
            self.tick_self_trust(now_ms);
            self.tick_probe(now_ms);
            self.tick_suspicions(now_ms);
            self.tick_reconnect(now_ms);
            self.tick_join_and_sync(now_ms);
            self.tick_relays(now_ms);
        }
        self.tick_gossip(now_ms);
        self.after_call();
        // Every periodic timer is strictly in the future once tick returns.
        assert!(self.leaving || (self.next_probe_ms > now_ms && self.next_reconnect_ms > now_ms));
        assert!(self.next_gossip_ms > now_ms || (self.leaving && self.broadcasts.is_empty()));
        assert!(self.outputs.len() <= self.config.max_outputs);
    }

    /// Bookkeeping common to `tick` and `step`: first-call timer setup, lateness detection.
    /// `reported_late_ms` is the driver's own measure (0 when it has none).
    pub(super) fn on_call(&mut self, now_ms: u64, reported_late_ms: u64) {
        // A clock that steps back is treated as standing still.
        let now_ms = now_ms.max(self.last_call_ms);
        if !self.started {
            self.started = true;
            // Random phase so nodes started together do not probe in lockstep.
            let phase_ms = self.rand_below(self.config.probe_interval_ms as usize) as u64;
            self.next_probe_ms = now_ms + phase_ms;
            self.next_gossip_ms = now_ms;
            self.next_reconnect_ms = now_ms + self.config.reconnect_interval_ms;
            self.next_sync_ms = now_ms + self.config.sync_interval_ms;
            self.next_join_ms = self.next_join_ms.max(now_ms);
        } else if !self.leaving && self.config.lateness_checks {
            // Measured from our own clock against the timer we asked for.
            let late_ms = now_ms.saturating_sub(self.armed_ms).max(reported_late_ms);
            if late_ms >= self.late_recent_ms(now_ms) {
                self.late_peak = (late_ms, now_ms);
            }
            if late_ms > self.config.late_tolerance_ms {
                self.on_late(now_ms, late_ms);
            } else if late_ms > 0 {
                self.defer_probe(now_ms, late_ms);
            }
        }
        debug_assert!(now_ms >= self.last_call_ms, "time is monotonic here");
        self.last_call_ms = now_ms;
    }

    /// Bookkeeping at the end of `tick` and `step`: the deadline we now ask the driver for.
    /// An input can move a deadline into the past (a confirmation shortens a suspicion):
    /// then we ask to be called now, and lateness counts from now.
    pub(super) fn after_call(&mut self) {
        self.armed_ms = self.next_deadline_ms().max(self.last_call_ms);
    }

    /// We ran `late_ms` late: the silence we observed during that time is ours, not our
    /// peers'. Lifeguard's local health, made explicit: the probe in flight is dropped, not
    /// blamed; the health multiplier rises (slower timers, gentler judgement); running
    /// suspicions get time to hear refutations we could not receive; and we suspect
    /// ourselves for `max(late_ms, 2 protocol periods)`: no suspicion, confirmation or
    /// Down verdict of ours until then. Others' verdicts (gossip) still apply.
    fn on_late(&mut self, now_ms: u64, late_ms: u64) {
        self.stats.stalls += 1;
        self.stats.late_max_ms = self.stats.late_max_ms.max(late_ms);
        if self.probe.take().is_some() {
            // Probe again at once: a fresh probe is judged on time we actually ran.
            self.next_probe_ms = now_ms;
        }
        // No health penalty: the self-suspicion window below says the same thing for
        // exactly as long as it is true; a raised multiplier would stretch every probe
        // period for seconds after (the slow first kill after a loaded boot).
        let n = self.active_count() as u64;
        let grace_ms = super::suspicion_min_ms(self.config.suspicion_base_ms, n);
        for s in self.suspicions.values_mut() {
            s.extend_to(now_ms + grace_ms);
        }
        for r in self.relays.iter_mut() {
            r.expires_ms = r.expires_ms.max(now_ms);
        }
        let until_ms = now_ms + late_ms.max(2 * self.probe_period_ms());
        match self.distrust_until_ms {
            Some(t) => self.distrust_until_ms = Some(t.max(until_ms)),
            None => {
                self.distrust_until_ms = Some(until_ms);
                self.emit(super::Event::SelfSuspect { late_ms });
            }
        }
        debug_assert!(self.distrust_until_ms.is_some_and(|t| t > now_ms));
    }

    /// A little late (within the tolerance): the probe in flight is not judged on time we
    /// did not run. Later than the direct-ack budget (`probe_timeout_ms`), its outcome
    /// says nothing about the target: it is dropped and a fresh one starts at once.
    /// Less late, it gets `late_ms` more, once, if a deadline passed while we were away,
    /// so acks that waited in our queue behind this call still count.
    fn defer_probe(&mut self, now_ms: u64, late_ms: u64) {
        let Some(probe) = self.probe.as_mut() else {
            return;
        };
        if late_ms > self.config.probe_timeout_ms {
            self.probe = None;
            self.next_probe_ms = now_ms;
            return;
        }
        if probe.deferred {
            return;
        }
        if probe.timeout_at_ms <= now_ms && probe.indirect_sent == 0 {
            probe.timeout_at_ms = now_ms + late_ms;
            probe.deferred = true;
        }
        if probe.period_end_ms <= now_ms {
            probe.period_end_ms = now_ms + late_ms;
            probe.deferred = true;
            self.next_probe_ms = self.next_probe_ms.max(probe.period_end_ms);
        }
    }

    /// Ends the self-suspicion window once it has passed without a new late call.
    fn tick_self_trust(&mut self, now_ms: u64) {
        if self.distrust_until_ms.is_some_and(|t| now_ms >= t) {
            self.distrust_until_ms = None;
            self.emit(super::Event::SelfTrusted);
        }
    }

    /// Our recent worst lateness, decayed to `now_ms`.
    pub(super) fn late_recent_ms(&self, now_ms: u64) -> u64 {
        let (peak_ms, at_ms) = self.late_peak;
        let decay_ms = now_ms.saturating_sub(at_ms) * super::LATE_DECAY_MS_PER_S / 1000;
        peak_ms
            .saturating_sub(decay_ms)
            .min(super::LATE_RECENT_CAP_MS)
    }

    /// True while our own verdicts are withheld (we ran late recently).
    pub(super) fn distrusting(&self) -> bool {
        self.distrust_until_ms.is_some()
    }

    fn tick_probe(&mut self, now_ms: u64) {
        if let Some(mut probe) = self.probe {
            if probe.indirect_sent == 0 && now_ms >= probe.timeout_at_ms {
                // With no peer to ask, count one phantom request that never nacks: the
                // failure then costs one health point, as Lifeguard prescribes.
                probe.indirect_sent = self.send_ping_reqs(&probe).max(1);
                self.probe = Some(probe);
            }
            if now_ms >= probe.period_end_ms {
                self.probe = None;
                self.probe_failed(&probe, now_ms);
            }
        }
        if now_ms >= self.next_probe_ms {
            self.next_probe_ms = now_ms + self.probe_period_ms();
            self.start_probe(now_ms);
        }
    }

    fn start_probe(&mut self, now_ms: u64) {
        // tick_probe closed the previous period (it ends exactly when this one starts).
        assert!(self.probe.is_none(), "two probes in flight");
        let Some(target) = self.next_probe_target() else {
            return;
        };
        let seq = self.next_seq();
        let lhm = u64::from(self.lhm + 1);
        self.probe = Some(Probe {
            target,
            seq,
            started_ms: now_ms,
            timeout_at_ms: now_ms + self.config.probe_timeout_ms * lhm,
            period_end_ms: now_ms + self.probe_period_ms(),
            indirect_sent: 0,
            nacks: 0,
            deferred: false,
        });
        let updates = self.piggyback(target);
        self.stats.probes_sent += 1;
        self.send(
            target,
            Message::Ping {
                seq,
                target,
                updates,
            },
        );
    }

    /// Asks k random peers to probe the target; returns how many were asked.
    fn send_ping_reqs(&mut self, probe: &Probe) -> u32 {
        let mut peers = self.sample_active(self.config.indirect_probes + 1, probe.target);
        peers.truncate(self.config.indirect_probes);
        for &peer in &peers {
            let updates = self.piggyback(peer);
            self.stats.ping_reqs_sent += 1;
            self.send(
                peer,
                Message::PingReq {
                    seq: probe.seq,
                    target: probe.target,
                    updates,
                },
            );
        }
        assert!(peers.len() <= self.config.indirect_probes);
        peers.len() as u32
    }

    fn probe_failed(&mut self, probe: &Probe, now_ms: u64) {
        self.stats.probe_failures += 1;
        let Some(member) = self.members.get(&probe.target) else {
            return;
        };
        // Lifeguard: missing nacks mean our own links are the likelier culprit. Not for a
        // static peer never heard from (incarnation 0: not booted yet): its silence says
        // nothing about us, and a multiplier raised at boot slowed the first detection.
        if member.incarnation > 0 || member.last_heard_ms > 0 {
            let missing_nacks = probe.indirect_sent.saturating_sub(probe.nacks);
            self.adjust_health(i64::from(
                missing_nacks.max(u32::from(probe.indirect_sent == 0)),
            ));
        }
        let Some(member) = self.members.get(&probe.target) else {
            return;
        };
        if self.distrusting() {
            // We ran late recently: the silence may be ours. Accuse nobody, confirm nothing.
            self.stats.verdicts_withheld += 1;
            return;
        }
        if member.last_heard_ms > probe.started_ms {
            // No ack, but the target did talk to us during this period (e.g. it refuted a
            // suspicion after a pause while our ping was lost): it is alive, do not accuse.
            return;
        }
        if member.state == MemberState::Suspect {
            // Already suspected by someone else: our failed probe is a confirmation.
            self.confirm_suspicion(probe.target, self.self_id);
            return;
        }
        if member.state != MemberState::Alive {
            return;
        }
        let incarnation = member.incarnation;
        self.transition(
            probe.target,
            MemberState::Suspect,
            incarnation,
            self.self_id,
            None,
            now_ms,
        );
        // Tell the suspect directly too: the sooner it hears, the sooner it refutes.
        let suspect = Update::Suspect {
            id: probe.target,
            incarnation,
            from: self.self_id,
        };
        self.send(
            probe.target,
            Message::Gossip {
                updates: alloc::vec![suspect],
            },
        );
    }

    fn tick_suspicions(&mut self, now_ms: u64) {
        let expired: alloc::vec::Vec<NodeId> = self
            .suspicions
            .iter()
            .filter(|(_, s)| s.deadline_ms() <= now_ms)
            .map(|(&id, _)| id)
            .collect();
        if let Some(until_ms) = self.distrust_until_ms {
            // Our clock says the suspects had their time, but we may not have been running
            // to hear their refutations: wait until we trust ourselves again. Their own
            // accusers, if healthy, declare them Down meanwhile and we learn it by gossip.
            for id in expired {
                self.stats.verdicts_withheld += 1;
                if let Some(s) = self.suspicions.get_mut(&id) {
                    s.extend_to(until_ms);
                }
            }
            return;
        }
        for id in expired {
            let incarnation = self.suspicions[&id].incarnation;
            let member = &self.members[&id];
            assert!(member.state == MemberState::Suspect && member.incarnation == incarnation);
            self.transition(
                id,
                MemberState::Down,
                incarnation,
                self.self_id,
                None,
                now_ms,
            );
        }
    }

    fn tick_gossip(&mut self, now_ms: u64) {
        if now_ms < self.next_gossip_ms {
            return;
        }
        self.next_gossip_ms = now_ms + self.config.gossip_interval_ms;
        if self.broadcasts.is_empty() {
            return;
        }
        let targets = self.sample_active(self.config.gossip_fanout, self.self_id);
        for to in targets {
            let updates = self.piggyback(to);
            if !updates.is_empty() {
                self.send(to, Message::Gossip { updates });
            }
        }
    }

    /// Pings one random Down member so that, once reachable again, it learns it was
    /// declared down and refutes; also forgets members Down for too long.
    fn tick_reconnect(&mut self, now_ms: u64) {
        if now_ms < self.next_reconnect_ms {
            return;
        }
        self.next_reconnect_ms = now_ms + self.config.reconnect_interval_ms;
        let retain_ms = self.config.down_retain_ms;
        self.members
            .retain(|_, m| m.state.is_active() || m.state_changed_ms + retain_ms > now_ms);
        let down = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Down)
            .count();
        if down == 0 {
            return;
        }
        let pick = self.rand_below(down);
        let target = self
            .members
            .values()
            .filter(|m| m.state == MemberState::Down)
            .nth(pick)
            .map(|m| m.id);
        let Some(target) = target else { return };
        let seq = self.next_seq();
        let updates = self.piggyback(target);
        debug_assert!(matches!(updates.first(), Some(Update::Dead { .. })));
        self.send(
            target,
            Message::Ping {
                seq,
                target,
                updates,
            },
        );
    }

    fn tick_join_and_sync(&mut self, now_ms: u64) {
        if !self.joined && !self.seeds.is_empty() && now_ms >= self.next_join_ms {
            self.next_join_ms = now_ms + self.config.join_retry_ms;
            let pick = self.rand_below(self.seeds.len());
            let seed = self.seeds[pick];
            self.send_join(seed);
        }
        if let Some(mut session) = self.sync {
            if now_ms >= session.sent_ms + self.config.join_retry_ms {
                session.retries += 1;
                session.sent_ms = now_ms;
                self.sync = (session.retries <= SYNC_MAX_RETRIES).then_some(session);
                if self.sync.is_some() {
                    self.send(
                        session.peer,
                        Message::SyncReq {
                            after: session.after,
                        },
                    );
                }
            }
        }
        if self.config.sync_interval_ms > 0 && now_ms >= self.next_sync_ms {
            self.next_sync_ms = now_ms + self.config.sync_interval_ms;
            if self.sync.is_none() {
                if let Some(&peer) = self.sample_active(1, self.self_id).first() {
                    self.sync = Some(SyncSession {
                        peer,
                        after: None,
                        sent_ms: now_ms,
                        retries: 0,
                    });
                    self.send(peer, Message::SyncReq { after: None });
                }
            }
        }
    }

    fn tick_relays(&mut self, now_ms: u64) {
        while let Some(pos) = self.relays.iter().position(|r| r.expires_ms <= now_ms) {
            let relay = self.relays.swap_remove(pos);
            self.send(
                relay.requester,
                Message::Nack {
                    seq: relay.requester_seq,
                    target: relay.target,
                },
            );
        }
        debug_assert!(self.relays.iter().all(|r| r.expires_ms > now_ms));
    }
}
