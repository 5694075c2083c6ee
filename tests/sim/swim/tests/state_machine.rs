//! Unit tests of the SWIM state machine through its public API, one message at a time.
//! Named after the paper sections they check (SWIM §4.x, Lifeguard §3.x).

use membership::swim::{
    ceil_log2, Config, ConfigError, DownReason, Error, Event, MemberState, Message, Output, Swim,
    Update, INITIAL_INCARNATION, MAX_META_BYTES,
};
use membership::NodeId;

/// The timing these tests were written against (the paper-sized one: 100 ms periods, 200
/// ms suspicion base, beta 3), whatever the shipped LAN defaults are tuned to.
fn timing() -> Config {
    Config {
        probe_interval_ms: 100,
        probe_timeout_ms: 40,
        suspicion_base_ms: 200,
        suspicion_max_mult: 3,
        ..Config::lan()
    }
}

fn node(id: NodeId, peers: &[NodeId]) -> Swim {
    let mut s = Swim::new(timing().with_seed(42), id, b"me").unwrap();
    for &p in peers {
        s.add_member(p, INITIAL_INCARNATION, b"peer").unwrap();
    }
    s.drain_outputs().for_each(drop);
    s
}

fn outputs(s: &mut Swim) -> (Vec<(NodeId, Message)>, Vec<Event>) {
    let mut sends = Vec::new();
    let mut events = Vec::new();
    for o in s.drain_outputs() {
        match o {
            Output::Send { to, msg } => sends.push((to, msg)),
            Output::Event(e) => events.push(e),
        }
    }
    (sends, events)
}

fn gossip(s: &mut Swim, from: NodeId, update: Update, now_ms: u64) -> Vec<Event> {
    s.step(
        from,
        Message::Gossip {
            updates: vec![update],
        },
        now_ms,
    );
    outputs(s).1
}

/// Ticks every 10 ms from `from_ms` to `to_ms` inclusive (no stall), collecting outputs.
fn tick_span(s: &mut Swim, from_ms: u64, to_ms: u64) -> (Vec<(NodeId, Message)>, Vec<Event>) {
    let (mut sends, mut events) = (Vec::new(), Vec::new());
    let mut t = from_ms;
    while t <= to_ms {
        s.tick(t);
        let (a, b) = outputs(s);
        sends.extend(a);
        events.extend(b);
        t += 10;
    }
    (sends, events)
}

#[test]
fn swim_4_2_incarnation_precedence() {
    let mut s = node(1, &[2, 3]);
    s.tick(0);
    outputs(&mut s);
    // A suspicion of an older incarnation is stale.
    assert!(gossip(
        &mut s,
        3,
        Update::Suspect {
            id: 2,
            incarnation: 0,
            from: 3
        },
        1
    )
    .is_empty());
    assert_eq!(s.state_of(2), Some(MemberState::Alive));
    // Same incarnation: Suspect beats Alive.
    let ev = gossip(
        &mut s,
        3,
        Update::Suspect {
            id: 2,
            incarnation: 1,
            from: 3,
        },
        2,
    );
    assert_eq!(
        ev,
        vec![Event::NodeSuspect {
            id: 2,
            incarnation: 1
        }]
    );
    // An Alive must carry a strictly higher incarnation to refute.
    assert!(gossip(
        &mut s,
        3,
        Update::Alive {
            id: 2,
            incarnation: 1,
            meta: vec![]
        },
        3
    )
    .is_empty());
    assert_eq!(s.state_of(2), Some(MemberState::Suspect));
    let ev = gossip(
        &mut s,
        3,
        Update::Alive {
            id: 2,
            incarnation: 2,
            meta: vec![],
        },
        4,
    );
    assert_eq!(
        ev,
        vec![Event::NodeAlive {
            id: 2,
            incarnation: 2
        }]
    );
    // Dead at the same incarnation beats Alive; the reporter is carried in the reason.
    let ev = gossip(
        &mut s,
        3,
        Update::Dead {
            id: 2,
            incarnation: 2,
            from: 3,
        },
        5,
    );
    assert_eq!(
        ev,
        vec![Event::NodeDown {
            id: 2,
            reason: DownReason::ReportedBy { reporter: 3 }
        }]
    );
    // Suspect or equal Alive cannot resurrect a Down member; a newer Alive can.
    assert!(gossip(
        &mut s,
        3,
        Update::Suspect {
            id: 2,
            incarnation: 2,
            from: 3
        },
        6
    )
    .is_empty());
    assert!(gossip(
        &mut s,
        3,
        Update::Alive {
            id: 2,
            incarnation: 2,
            meta: vec![]
        },
        7
    )
    .is_empty());
    let ev = gossip(
        &mut s,
        3,
        Update::Alive {
            id: 2,
            incarnation: 3,
            meta: b"v3".to_vec(),
        },
        8,
    );
    assert_eq!(ev, vec![Event::NodeUp { id: 2 }]);
    assert_eq!(s.member(2).unwrap().meta, b"v3".to_vec());
    // Graceful leave is final for its incarnation.
    assert_eq!(
        gossip(
            &mut s,
            3,
            Update::Left {
                id: 2,
                incarnation: 3
            },
            9
        ),
        vec![Event::NodeLeft { id: 2 }]
    );
    assert!(gossip(
        &mut s,
        3,
        Update::Dead {
            id: 2,
            incarnation: 3,
            from: 3
        },
        10
    )
    .is_empty());
    assert_eq!(s.state_of(2), Some(MemberState::Left));
}

#[test]
fn strangers_are_remembered_so_they_can_be_probed_or_pinged() {
    let mut s = node(1, &[2]);
    // Left strangers are ignored; Down strangers are remembered silently (never seen up).
    assert!(gossip(
        &mut s,
        2,
        Update::Left {
            id: 8,
            incarnation: 4
        },
        0
    )
    .is_empty());
    assert_eq!(s.state_of(8), None);
    assert!(gossip(
        &mut s,
        2,
        Update::Dead {
            id: 9,
            incarnation: 4,
            from: 2
        },
        0
    )
    .is_empty());
    assert_eq!(s.state_of(9), Some(MemberState::Down));
    let ev = gossip(
        &mut s,
        2,
        Update::Alive {
            id: 9,
            incarnation: 5,
            meta: vec![],
        },
        0,
    );
    assert_eq!(ev, vec![Event::NodeUp { id: 9 }]);
    // A suspected stranger is up-and-suspected: we will probe it ourselves.
    let ev = gossip(
        &mut s,
        2,
        Update::Suspect {
            id: 7,
            incarnation: 2,
            from: 2,
        },
        0,
    );
    assert_eq!(
        ev,
        vec![
            Event::NodeUp { id: 7 },
            Event::NodeSuspect {
                id: 7,
                incarnation: 2
            }
        ]
    );
}

#[test]
fn swim_4_2_live_node_refutes_suspicion_with_higher_incarnation() {
    let mut s = node(1, &[2, 3]);
    s.tick(0);
    outputs(&mut s);
    assert_eq!(s.incarnation(), INITIAL_INCARNATION);
    gossip(
        &mut s,
        2,
        Update::Suspect {
            id: 1,
            incarnation: 1,
            from: 2,
        },
        1,
    );
    assert_eq!(s.incarnation(), 2);
    assert_eq!(s.stats().refutations, 1);
    // The refutation goes out on the next gossip round.
    let (sends, _) = tick_span(&mut s, 20, 40);
    let refuted = sends.iter().any(|(_, m)| {
        m.updates().contains(&Update::Alive {
            id: 1,
            incarnation: 2,
            meta: b"me".to_vec(),
        })
    });
    assert!(refuted, "refuting Alive was not gossiped: {sends:?}");
    // Being declared dead at a later incarnation (e.g. a past life) is refuted too.
    gossip(
        &mut s,
        2,
        Update::Dead {
            id: 1,
            incarnation: 7,
            from: 2,
        },
        41,
    );
    assert_eq!(s.incarnation(), 8);
    // Stale news about ourselves changes nothing.
    gossip(
        &mut s,
        2,
        Update::Suspect {
            id: 1,
            incarnation: 3,
            from: 2,
        },
        42,
    );
    assert_eq!(s.incarnation(), 8);
    assert_eq!(s.stats().refutations, 2);
}

#[test]
fn swim_4_4_piggyback_retransmit_bound() {
    let peers: Vec<NodeId> = (2..=20).collect();
    let mut s = node(1, &peers);
    s.tick(0);
    outputs(&mut s);
    gossip(
        &mut s,
        2,
        Update::Alive {
            id: 99,
            incarnation: 3,
            meta: vec![],
        },
        1,
    );
    let n = s.active_count() as u64;
    let limit = (timing().retransmit_mult * ceil_log2(n + 1)) as usize;
    let (sends, _) = tick_span(&mut s, 10, 5_000);
    let carried = sends
        .iter()
        .filter(|(_, m)| m.updates().iter().any(|u| u.id() == 99))
        .count();
    assert_eq!(
        carried, limit,
        "update piggybacked {carried} times, limit {limit}"
    );
    assert_eq!(s.pending_updates(), 0);
}

#[test]
fn encoded_messages_stay_under_the_datagram_budget() {
    let mut s = Swim::new(timing().with_seed(1), u64::MAX, &[0xAB; MAX_META_BYTES]).unwrap();
    s.add_member(u64::MAX - 1, u64::MAX / 2, &[0xCD; MAX_META_BYTES])
        .unwrap();
    s.tick(0);
    // 300 worst-case Alive updates: maximal ids, incarnations and metadata.
    for i in 0..300u64 {
        let update = Update::Alive {
            id: u64::MAX - 2 - i,
            incarnation: u64::MAX / 2,
            meta: vec![0xEF; MAX_META_BYTES],
        };
        s.step(
            u64::MAX - 1,
            Message::Gossip {
                updates: vec![update],
            },
            1,
        );
    }
    s.step(u64::MAX - 1, Message::SyncReq { after: None }, 2);
    s.step(
        u64::MAX - 1,
        Message::SyncReq {
            after: Some(u64::MAX - 200),
        },
        2,
    );
    let (mut sends, _) = outputs(&mut s);
    sends.extend(tick_span(&mut s, 10, 1_000).0);
    let mut largest = 0;
    let mut kinds = std::collections::HashSet::new();
    for (_, msg) in &sends {
        let bytes = postcard::to_allocvec(msg).unwrap();
        assert!(
            bytes.len() <= msg.max_encoded_len(),
            "size bound is not an upper bound"
        );
        assert!(bytes.len() <= 1200, "{} bytes", bytes.len());
        let back: Message = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(&back, msg);
        largest = largest.max(bytes.len());
        kinds.insert(std::mem::discriminant(msg));
    }
    eprintln!("largest encoded message: {largest} bytes");
    assert!(
        largest > 900,
        "the test did not fill a message ({largest} bytes)"
    );
    assert!(kinds.len() >= 3, "expected pings, gossip and sync pages");
}

#[test]
fn swim_4_1_indirect_probe_then_suspect_then_lifeguard_penalty() {
    let mut s = node(1, &[2, 3, 4, 5]);
    // No answers at all for one and a half periods.
    let (sends, events) = tick_span(&mut s, 0, 150);
    let (target, seq) = sends
        .iter()
        .find_map(|(to, m)| match m {
            Message::Ping { seq, .. } => Some((*to, *seq)),
            _ => None,
        })
        .expect("a probe within one period");
    assert!(sends
        .iter()
        .all(|(to, m)| !matches!(m, Message::PingReq { .. }) || *to != target));
    let (more, later) = tick_span(&mut s, 160, 300);
    let sends: Vec<_> = sends.into_iter().chain(more).collect();
    let events: Vec<_> = events.into_iter().chain(later).collect();
    let reqs: Vec<_> = sends
        .iter()
        .filter(|(_, m)| matches!(m, Message::PingReq { seq: q, target: t, .. } if *q == seq && *t == target))
        .collect();
    assert_eq!(reqs.len(), 3, "k = 3 ping-reqs");
    assert!(events.contains(&Event::NodeSuspect {
        id: target,
        incarnation: INITIAL_INCARNATION
    }));
    assert!(
        s.local_health() >= 3,
        "three missing nacks raise the health multiplier"
    );
}

#[test]
fn acked_probe_keeps_member_alive_and_health_good() {
    let mut s = node(1, &[2, 3]);
    for round in 0..30u64 {
        let t = round * 10;
        s.tick(t);
        let (sends, events) = outputs(&mut s);
        assert!(events.is_empty(), "{events:?}");
        for (to, msg) in sends {
            if let Message::Ping { seq, target, .. } = msg {
                s.step(
                    to,
                    Message::Ack {
                        seq,
                        target,
                        updates: vec![],
                    },
                    t + 1,
                );
            }
        }
    }
    assert_eq!(s.local_health(), 0);
    assert_eq!(s.state_of(2), Some(MemberState::Alive));
}

#[test]
fn ping_req_relay_forwards_ack_or_nacks() {
    let mut s = node(1, &[2, 3]);
    s.tick(0);
    outputs(&mut s);
    s.step(
        2,
        Message::PingReq {
            seq: 7,
            target: 3,
            updates: vec![],
        },
        1,
    );
    let (sends, _) = outputs(&mut s);
    let relay_seq = sends
        .iter()
        .find_map(|(to, m)| match m {
            Message::Ping { seq, target: 3, .. } if *to == 3 => Some(*seq),
            _ => None,
        })
        .expect("relay ping to the target");
    s.step(
        3,
        Message::Ack {
            seq: relay_seq,
            target: 3,
            updates: vec![],
        },
        2,
    );
    let (sends, _) = outputs(&mut s);
    assert!(sends.iter().any(|(to, m)| *to == 2
        && matches!(
            m,
            Message::Ack {
                seq: 7,
                target: 3,
                ..
            }
        )));
    // A second request that the target never answers is nacked at the probe timeout.
    s.step(
        2,
        Message::PingReq {
            seq: 8,
            target: 3,
            updates: vec![],
        },
        10,
    );
    outputs(&mut s);
    s.tick(10 + timing().probe_timeout_ms);
    let (sends, _) = outputs(&mut s);
    assert!(sends
        .iter()
        .any(|(to, m)| *to == 2 && *m == Message::Nack { seq: 8, target: 3 }));
}

#[test]
fn lifeguard_3_2_suspicion_timeout_shrinks_with_confirmations() {
    for confirmed in [false, true] {
        let mut s = node(1, &[2, 3, 4, 5]);
        s.tick(0);
        outputs(&mut s);
        gossip(
            &mut s,
            3,
            Update::Suspect {
                id: 2,
                incarnation: 1,
                from: 3,
            },
            0,
        );
        if confirmed {
            gossip(
                &mut s,
                4,
                Update::Suspect {
                    id: 2,
                    incarnation: 1,
                    from: 4,
                },
                5,
            );
            gossip(
                &mut s,
                5,
                Update::Suspect {
                    id: 2,
                    incarnation: 1,
                    from: 5,
                },
                5,
            );
        }
        let mut down_at = None;
        let mut t = 10;
        while down_at.is_none() && t <= 2_000 {
            s.tick(t);
            let (_, events) = outputs(&mut s);
            if events.contains(&Event::NodeDown {
                id: 2,
                reason: DownReason::SuspicionTimeout,
            }) {
                down_at = Some(t);
            }
            t += 10;
        }
        let down_at = down_at.expect("suspicion must time out");
        // n = 5: min = 200 ms, max = 3 * min; two of k = 3 confirmations: ~283 ms.
        if confirmed {
            assert!(
                (250..=320).contains(&down_at),
                "confirmed: down at {down_at}"
            );
        } else {
            assert!(
                (600..=620).contains(&down_at),
                "unconfirmed: down at {down_at}"
            );
        }
    }
}

/// Delivers messages instantly among a few state machines until quiet.
fn shuttle(nodes: &mut [Swim], now_ms: u64) -> Vec<(NodeId, Event)> {
    let mut events = Vec::new();
    for _ in 0..1_000 {
        let mut inflight = Vec::new();
        for s in nodes.iter_mut() {
            let me = s.self_id();
            for o in s.drain_outputs() {
                match o {
                    Output::Send { to, msg } => inflight.push((me, to, msg)),
                    Output::Event(e) => events.push((me, e)),
                }
            }
        }
        if inflight.is_empty() {
            return events;
        }
        for (from, to, msg) in inflight {
            if let Some(s) = nodes.iter_mut().find(|s| s.self_id() == to) {
                s.step(from, msg, now_ms);
            }
        }
    }
    panic!("messages never quiesced");
}

#[test]
fn restarted_node_rejoins_by_refuting_its_old_death() {
    let seed = {
        // Node 30 (which then stays silent) declared 20 dead in its last life.
        let mut a = node(10, &[20, 30]);
        a.tick(0);
        gossip(
            &mut a,
            30,
            Update::Dead {
                id: 20,
                incarnation: 5,
                from: 10,
            },
            1,
        );
        a
    };
    // Node 20 restarts from scratch (incarnation 1) and joins through 10.
    let fresh = Swim::new(timing().with_seed(3), 20, b"again").unwrap();
    let mut nodes = vec![seed, fresh];
    nodes[1].join(10).unwrap();
    let mut events = shuttle(&mut nodes, 2);
    for t in (10..200).step_by(10) {
        for s in nodes.iter_mut() {
            s.tick(t);
        }
        events.extend(shuttle(&mut nodes, t));
    }
    assert!(
        nodes[1].incarnation() > 5,
        "restarted node must outrun its death"
    );
    assert_eq!(nodes[0].state_of(20), Some(MemberState::Alive));
    assert_eq!(nodes[0].member(20).unwrap().meta, b"again".to_vec());
    assert!(events.contains(&(10, Event::NodeUp { id: 20 })));
    assert_eq!(nodes[1].state_of(10), Some(MemberState::Alive));
}

#[test]
fn graceful_leave_is_announced_and_final() {
    let mut nodes = vec![node(1, &[2, 3]), node(2, &[1, 3]), node(3, &[1, 2])];
    nodes[2].leave().unwrap();
    assert_eq!(nodes[2].leave(), Err(Error::Leaving));
    let mut events = Vec::new();
    for t in (0..500).step_by(10) {
        for s in nodes.iter_mut() {
            s.tick(t);
        }
        events.extend(shuttle(&mut nodes, t));
    }
    assert!(nodes[2].has_left());
    assert_eq!(
        nodes[2].next_deadline_ms(),
        u64::MAX,
        "a node that left has nothing to do"
    );
    for observer in [1, 2] {
        assert!(events.contains(&(observer, Event::NodeLeft { id: 3 })));
        assert!(!events
            .iter()
            .any(|e| matches!(e, (o, Event::NodeDown { id: 3, .. }) if *o == observer)));
    }
}

#[test]
fn local_stall_does_not_blame_the_probe_target() {
    let mut s = node(1, &[2, 3, 4]);
    tick_span(&mut s, 0, 50);
    // The node was frozen for two seconds.
    s.tick(2_050);
    let (_, events) = outputs(&mut s);
    // Late by the time since its own next deadline (after 50 ms, before 150 ms).
    assert!(
        matches!(events[..], [Event::SelfSuspect { late_ms }] if (1_900..2_000).contains(&late_ms)),
        "{events:?}"
    );
    assert_eq!(s.stats().stalls, 1);
    assert!(s.suspects_self());
}

/// Lifeguard's local health, made explicit: a node that notices its own timers firing late
/// suspects itself first. Its peers here never answer, so every probe fails; while the node
/// distrusts itself none of those failures becomes an accusation, and once the window has
/// passed on time, the (real) silence of its peers is reported again.
#[test]
fn late_node_suspects_itself_before_accusing_others() {
    let mut s = node(1, &[2, 3, 4]);
    tick_span(&mut s, 0, 50);
    s.tick(450);
    let (_, events) = outputs(&mut s);
    let late = match events[..] {
        [Event::SelfSuspect { late_ms }] if (300..400).contains(&late_ms) => late_ms,
        _ => panic!("{events:?}"),
    };
    // Window: max(late, 2 protocol periods) = late.
    let until = 450 + late;
    let (_, events) = tick_span(&mut s, 460, until - 10);
    assert!(events.is_empty(), "accused while late: {events:?}");
    assert!(s.stats().verdicts_withheld >= 1, "{:?}", s.stats());
    assert!(s.suspects_self());
    let (_, events) = tick_span(&mut s, until, 1_500);
    assert_eq!(events.first(), Some(&Event::SelfTrusted), "{events:?}");
    assert!(!s.suspects_self());
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Event::NodeSuspect { .. })),
        "once on time again, real silence is suspected: {events:?}"
    );
}

#[test]
fn driver_reported_lateness_counts_like_our_own() {
    let mut s = node(1, &[2, 3]);
    tick_span(&mut s, 0, 50);
    // Called on time by its own deadlines, but the driver saw its timer fire 180 ms late.
    s.tick_late(60, 180);
    let (_, events) = outputs(&mut s);
    assert_eq!(events, vec![Event::SelfSuspect { late_ms: 180 }]);
    assert_eq!(s.stats().late_max_ms, 180);
    // Within the tolerance (the driver's timer granularity) nothing happens.
    let mut s = node(1, &[2, 3]);
    tick_span(&mut s, 0, 50);
    s.tick_late(60, timing().late_tolerance_ms);
    s.tick(60 + timing().late_tolerance_ms);
    assert!(outputs(&mut s).1.is_empty());
    assert_eq!(s.stats().stalls, 0);
    assert!(!s.suspects_self());
}

#[test]
fn late_node_holds_its_suspicion_timeouts_but_takes_others_verdicts() {
    let mut s = node(1, &[2, 3, 4]);
    tick_span(&mut s, 0, 50);
    // Node 3 suspects 2; node 1 starts its own suspicion timer for it.
    let suspect = Update::Suspect {
        id: 2,
        incarnation: INITIAL_INCARNATION,
        from: 3,
    };
    assert_eq!(
        gossip(&mut s, 3, suspect, 55),
        vec![Event::NodeSuspect {
            id: 2,
            incarnation: INITIAL_INCARNATION
        }]
    );
    // A long stall: the suspicion's deadline passes while the node is not running.
    s.tick(3_000);
    let (_, events) = outputs(&mut s);
    assert!(
        matches!(events[..], [Event::SelfSuspect { late_ms }] if late_ms > 2_800),
        "{events:?}"
    );
    let (_, events) = tick_span(&mut s, 3_010, 5_000);
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::NodeDown { id: 2, .. })),
        "declared down on a stale timer: {events:?}"
    );
    // Another node's verdict is not ours: it applies at once.
    let dead = Update::Dead {
        id: 2,
        incarnation: INITIAL_INCARNATION,
        from: 4,
    };
    assert!(s.suspects_self());
    assert_eq!(
        gossip(&mut s, 4, dead, 5_005),
        vec![Event::NodeDown {
            id: 2,
            reason: DownReason::ReportedBy { reporter: 4 }
        }]
    );
}

#[test]
fn config_and_meta_are_validated() {
    let bad = Config {
        probe_timeout_ms: 100,
        ..timing()
    };
    assert_eq!(
        Swim::new(bad, 1, b"").err(),
        Some(Error::InvalidConfig(
            ConfigError::ProbeTimeoutNotBelowInterval
        ))
    );
    assert_eq!(
        Swim::new(timing(), 1, &[0; 65]).err(),
        Some(Error::MetaTooLarge { len: 65 })
    );
    assert!(Config::wan().validate().is_ok());
    let mut s = node(1, &[]);
    assert_eq!(s.add_peer(1), Err(Error::SelfAsPeer));
    assert_eq!(s.join(1), Err(Error::SelfAsPeer));
}

#[test]
fn members_view_lists_self_first() {
    let s = node(5, &[7, 3]);
    let rows: Vec<_> = s.members().map(|m| (m.id, m.state, m.is_self)).collect();
    assert_eq!(
        rows,
        vec![
            (5, MemberState::Alive, true),
            (3, MemberState::Alive, false),
            (7, MemberState::Alive, false)
        ]
    );
}

/// A node that ran late recently gives a suspect that much more time (the suspect likely
/// shares its loaded host), decaying back to the plain timeout within seconds.
#[test]
fn recent_lateness_stretches_new_suspicions_then_fades() {
    // Ticks every ms; peers answer every ping at once, 2 only while not `silent`.
    fn run(s: &mut Swim, from_ms: u64, to_ms: u64, silent: bool) -> Option<u64> {
        for t in from_ms..=to_ms {
            s.tick(t);
            let (sends, events) = outputs(s);
            for (to, msg) in sends {
                if let (true, Message::Ping { seq, target, .. }) = (!silent || to != 2, msg) {
                    let ack = Message::Ack {
                        seq,
                        target,
                        updates: vec![],
                    };
                    s.step(to, ack, t);
                }
            }
            if events
                .iter()
                .any(|e| matches!(e, Event::NodeDown { id: 2, .. }))
            {
                return Some(t);
            }
        }
        None
    }
    let down_after = |late_ms: u64, quiet_ms: u64| {
        let mut s = node(1, &[2, 3, 4]);
        s.tick(0);
        s.tick_late(1, late_ms);
        let t0 = 2 + quiet_ms;
        assert_eq!(
            run(&mut s, 2, t0 - 1, false),
            None,
            "down before the suspicion"
        );
        let suspect = Update::Suspect {
            id: 2,
            incarnation: INITIAL_INCARNATION,
            from: 3,
        };
        gossip(&mut s, 3, suspect, t0);
        run(&mut s, t0 + 1, t0 + 5_000, true).expect("declared down") - t0
    };
    let plain = down_after(0, 1_000);
    let stretched = down_after(200, 1_000);
    let faded = down_after(200, 6_000);
    // 200 ms late, 1 s ago: 150 ms remembered, on the minimum and more on the maximum
    // (our own failed probe of the suspect confirms it early, so the minimum counts).
    assert!(
        stretched >= plain + 150,
        "plain {plain} stretched {stretched}"
    );
    assert_eq!(faded, down_after(0, 6_000), "stretched {stretched}");
}

/// A static peer that never answered (not booted yet) costs no local health: the slow
/// first detection after boot came from a multiplier raised by such probes.
#[test]
fn probing_a_static_peer_that_never_booted_costs_no_health() {
    let mut s = Swim::new(timing().with_seed(7), 1, b"me").unwrap();
    for p in [2, 3, 4] {
        s.add_peer(p).unwrap();
    }
    let (_, events) = tick_span(&mut s, 0, 3_000);
    assert!(s.stats().probe_failures >= 3, "{:?}", s.stats());
    assert_eq!(s.local_health(), 0, "{events:?}");
    // A member that did talk and then went silent still costs health (Lifeguard).
    let mut s = node(1, &[2, 3, 4]);
    tick_span(&mut s, 0, 3_000);
    assert!(s.local_health() > 0);
}

#[test]
fn stale_death_of_a_member_we_just_heard_is_only_a_suspicion() {
    // Node 3 comes back from a partition still holding 2 Down; node 2 has been talking to
    // us all along. Its death (and every retransmitted copy) is a suspicion, which 2
    // refutes; a member we have not heard from for longer goes Down as before.
    let mut s = node(1, &[2, 3, 4]);
    s.tick(0);
    s.step(2, Message::Gossip { updates: vec![] }, 100);
    outputs(&mut s);
    let dead_2 = Update::Dead {
        id: 2,
        incarnation: 1,
        from: 3,
    };
    let ev = gossip(&mut s, 3, dead_2.clone(), 150);
    assert!(
        !ev.iter().any(|e| matches!(e, Event::NodeDown { .. })),
        "{ev:?}"
    );
    assert_eq!(s.state_of(2), Some(MemberState::Suspect));
    gossip(&mut s, 3, dead_2, 160);
    assert_eq!(s.state_of(2), Some(MemberState::Suspect));
    assert_eq!(s.stats().deaths_doubted, 2);
    // 2 refutes: alive again.
    gossip(
        &mut s,
        2,
        Update::Alive {
            id: 2,
            incarnation: 2,
            meta: b"peer".to_vec(),
        },
        170,
    );
    assert_eq!(s.state_of(2), Some(MemberState::Alive));
    // 4 never spoke to us directly: its death is believed at once.
    let ev = gossip(
        &mut s,
        3,
        Update::Dead {
            id: 4,
            incarnation: 1,
            from: 3,
        },
        180,
    );
    assert!(ev.contains(&Event::NodeDown {
        id: 4,
        reason: DownReason::ReportedBy { reporter: 3 }
    }));
    // Long after 2 last spoke (past probe timeout + suspicion minimum), a death is believed.
    let ev = gossip(
        &mut s,
        3,
        Update::Dead {
            id: 2,
            incarnation: 2,
            from: 3,
        },
        170 + 40 + 200,
    );
    assert!(
        ev.contains(&Event::NodeDown {
            id: 2,
            reason: DownReason::ReportedBy { reporter: 3 }
        }),
        "{ev:?}"
    );
}
