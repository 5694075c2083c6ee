use super::*;
use alloc::vec;

fn cand(id: NodeId, liveness: Liveness) -> Candidate {
    Candidate {
        id,
        role: NodeRole::Worker,
        liveness,
        draining: false,
    }
}

fn witness(id: NodeId, liveness: Liveness) -> Candidate {
    Candidate {
        role: NodeRole::Witness,
        ..cand(id, liveness)
    }
}

fn table(services: &[(&str, u16)]) -> Addresses {
    let mut t = Addresses::new();
    for (s, p) in services {
        t.allocate(s, *p).unwrap();
    }
    t
}

#[test]
fn allocation_takes_the_lowest_free_address_and_reuses_freed_ones() {
    let mut t = table(&[("web", 80), ("api", 8080)]);
    assert_eq!(t.get("web").unwrap().ip(), [169, 254, 77, 200]);
    assert_eq!(t.get("api").unwrap().ip(), [169, 254, 77, 201]);
    // Idempotent, and the port follows the latest spec.
    assert_eq!(t.allocate("web", 81), Ok(0));
    assert_eq!(t.get("web").unwrap().port, 81);
    t.release("web");
    assert_eq!(t.allocate("db", 5432), Ok(0));
    assert_eq!(t.allocate("x", 0), Err(AddressError::BadPort));
    assert_eq!(t.allocate("x", 5432), Err(AddressError::PortTaken));
    assert_eq!(t.allocate("db", 5432), Ok(0), "its own port again");
    for i in 0..VIPS_MAX as usize {
        let _ = t.allocate(&alloc::format!("s{i}"), 1000 + i as u16);
    }
    assert_eq!(t.len(), VIPS_MAX as usize);
    assert_eq!(t.allocate("one-more", 1), Err(AddressError::Exhausted));
    assert_eq!(
        t.check_allocate("one-more", 1),
        Err(AddressError::Exhausted)
    );
    assert_eq!(t.check_allocate("db", 1), Ok(()));
}

#[test]
fn vip_index_round_trips_and_rejects_node_addresses() {
    for i in 0..VIPS_MAX {
        assert_eq!(vip_index(vip_addr(i)), Some(i));
    }
    assert_eq!(vip_index([169, 254, 77, 1]), None);
    assert_eq!(vip_index([169, 254, 77, 240]), None);
    assert_eq!(vip_index([10, 254, 77, 200]), None);
}

#[test]
fn owner_changes_are_fenced_by_epoch() {
    let mut t = table(&[("web", 80)]);
    assert_eq!(t.set_owner("web", 1, 5), Ok(()));
    // A stale or duplicate decision (same plan proposed twice) is refused.
    assert_eq!(
        t.set_owner("web", 2, 5),
        Err(AddressError::StaleEpoch { current: 5 })
    );
    assert_eq!(
        t.set_owner("web", 2, 3),
        Err(AddressError::StaleEpoch { current: 5 })
    );
    assert_eq!(t.set_owner("web", 2, 6), Ok(()));
    assert_eq!(
        t.get("web").unwrap().owner,
        Some(Owner { node: 2, epoch: 6 })
    );
    assert_eq!(t.set_owner("nope", 2, 9), Err(AddressError::NoAddress));
}

#[test]
fn a_new_address_goes_to_the_witness_then_a_replica_host_then_a_worker() {
    let t = table(&[("web", 80)]);
    let all = [
        cand(1, Liveness::Alive),
        cand(2, Liveness::Alive),
        witness(3, Liveness::Alive),
    ];
    let plan = plan_owners(&t, &all, |_| vec![2], 10);
    assert_eq!(
        plan,
        vec![OwnerChange {
            service: "web".into(),
            node: 3,
            epoch: 10
        }]
    );
    // Without a live witness: the replica host, else the lowest worker.
    let workers = [
        cand(1, Liveness::Alive),
        cand(2, Liveness::Alive),
        witness(3, Liveness::Suspect),
    ];
    assert_eq!(plan_owners(&t, &workers, |_| vec![2], 10)[0].node, 2);
    assert_eq!(plan_owners(&t, &workers, |_| vec![], 10)[0].node, 1);
}

#[test]
fn an_owner_keeps_its_address_while_alive_or_suspected() {
    let mut t = table(&[("web", 80)]);
    t.set_owner("web", 1, 4).unwrap();
    for l in [Liveness::Alive, Liveness::Suspect] {
        let c = [cand(1, l), cand(2, Liveness::Alive)];
        assert!(plan_owners(&t, &c, |_| vec![2], 10).is_empty(), "{l:?}");
    }
}

#[test]
fn a_down_owner_loses_its_address_to_a_live_node_with_a_fresh_epoch() {
    let mut t = table(&[("web", 80), ("api", 81)]);
    t.set_owner("web", 1, 4).unwrap();
    t.set_owner("api", 1, 5).unwrap();
    let c = [
        cand(1, Liveness::Down),
        cand(2, Liveness::Alive),
        cand(3, Liveness::Alive),
    ];
    let plan = plan_owners(&t, &c, |_| vec![], 7);
    // Spread: the two addresses land on different nodes; epochs are consecutive.
    assert_eq!(plan.len(), 2);
    assert_ne!(plan[0].node, plan[1].node);
    assert_eq!((plan[0].epoch, plan[1].epoch), (7, 8));
    // Applied, the next round moves nothing: a returning node gets nothing back.
    for ch in &plan {
        t.set_owner(&ch.service, ch.node, ch.epoch).unwrap();
    }
    let back = [
        cand(1, Liveness::Alive),
        cand(2, Liveness::Alive),
        cand(3, Liveness::Alive),
    ];
    assert!(plan_owners(&t, &back, |_| vec![1], 9).is_empty());
}

#[test]
fn a_draining_owner_hands_over_and_an_unknown_owner_is_replaced() {
    let mut t = table(&[("web", 80)]);
    t.set_owner("web", 1, 4).unwrap();
    let mut c = [cand(1, Liveness::Alive), cand(2, Liveness::Alive)];
    c[0].draining = true;
    assert_eq!(plan_owners(&t, &c, |_| vec![], 5)[0].node, 2);
    t.set_owner("web", 9, 6).unwrap();
    let c = [cand(1, Liveness::Alive), cand(2, Liveness::Alive)];
    assert_eq!(plan_owners(&t, &c, |_| vec![2], 7)[0].node, 2);
}

#[test]
fn nobody_to_take_it_leaves_the_address_alone() {
    let mut t = table(&[("web", 80)]);
    t.set_owner("web", 1, 4).unwrap();
    let c = [cand(1, Liveness::Down), cand(2, Liveness::Suspect)];
    assert!(plan_owners(&t, &c, |_| vec![2], 5).is_empty());
}

#[test]
fn only_the_owner_with_quorum_answers() {
    let mut t = table(&[("web", 80), ("api", 81)]);
    t.set_owner("web", 1, 4).unwrap();
    t.set_owner("api", 2, 5).unwrap();
    assert_eq!(
        answering(1, true, &t),
        vec![Answer {
            ip: [169, 254, 77, 200],
            port: 80,
            epoch: 4
        }]
    );
    assert!(answering(1, false, &t).is_empty());
    assert!(answering(3, true, &t).is_empty());
}

/// A scripted partition: the owner is cut off into the minority, the majority moves the
/// address, the old owner wakes with its stale table. It answers nothing while it lacks
/// quorum, and once it has caught up (quorum again) its table says the address moved.
#[test]
fn a_stale_owner_never_answers_beside_the_new_one() {
    let mut majority = table(&[("web", 80)]);
    majority.set_owner("web", 1, 4).unwrap();
    let mut stale = majority.clone();
    let c = [
        cand(1, Liveness::Down),
        cand(2, Liveness::Alive),
        witness(3, Liveness::Alive),
    ];
    for ch in plan_owners(&majority, &c, |_| vec![2], 5) {
        majority.set_owner(&ch.service, ch.node, ch.epoch).unwrap();
    }
    assert_eq!(
        answering(3, true, &majority).len(),
        1,
        "the witness took it"
    );
    // Node 1, partitioned: no quorum, answers nothing despite its stale table.
    assert!(answering(1, false, &stale).is_empty());
    // Caught up (quorum means applied to the leader's index): the move is in its table.
    stale = majority.clone();
    assert!(answering(1, true, &stale).is_empty());
}

/// Seeded random schedules of liveness, quorum and lagging tables: at every step no two
/// nodes answer for one address at the same epoch, and a node without quorum answers
/// nothing.
#[test]
fn random_schedules_keep_one_answer_per_address_and_epoch() {
    let mut seed: u64 = 0x5eed_f00d;
    let mut rand = move |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for _round in 0..200 {
        let mut log: Vec<OwnerChange> = Vec::new();
        let mut committed = table(&[("web", 80), ("api", 81), ("db", 82)]);
        // Each node's applied prefix of the owner log.
        let mut applied = [0usize; 4];
        let mut live = [Liveness::Alive; 4];
        for _step in 0..60 {
            let n = rand(4) as usize;
            live[n] = match rand(3) {
                0 => Liveness::Alive,
                1 => Liveness::Suspect,
                _ => Liveness::Down,
            };
            let cands: Vec<Candidate> = (0..4).map(|i| cand(i as NodeId + 1, live[i])).collect();
            let next = log.last().map_or(1, |c| c.epoch + 1);
            for ch in plan_owners(&committed, &cands, |_| vec![1, 2], next) {
                committed.set_owner(&ch.service, ch.node, ch.epoch).unwrap();
                log.push(ch);
            }
            let mut seen: BTreeMap<([u8; 4], Epoch), NodeId> = BTreeMap::new();
            for i in 0..4 {
                if rand(2) == 0 {
                    applied[i] = log.len();
                }
                let mut view = table(&[("web", 80), ("api", 81), ("db", 82)]);
                for ch in &log[..applied[i]] {
                    view.set_owner(&ch.service, ch.node, ch.epoch).unwrap();
                }
                // Quorum only for a live node that has applied everything.
                let quorum = live[i] == Liveness::Alive && applied[i] == log.len();
                let me = i as NodeId + 1;
                let answers = answering(me, quorum, &view);
                if !quorum {
                    assert!(answers.is_empty());
                }
                for a in answers {
                    if let Some(other) = seen.insert((a.ip, a.epoch), me) {
                        panic!("{other} and {me} both answer {:?} at {}", a.ip, a.epoch);
                    }
                }
            }
        }
    }
}

#[test]
fn announcements_go_out_on_schedule_and_a_flapping_address_is_rate_limited() {
    let ip = [169, 254, 77, 200];
    let mut a = Announcer::new();
    a.started(ip, 1000);
    assert_eq!(a.deadline_ms(), Some(1000));
    assert_eq!(a.take_due(1000), vec![ip]);
    assert!(a.take_due(1010).is_empty());
    assert_eq!(a.deadline_ms(), Some(1050));
    assert_eq!(a.take_due(1300), vec![ip], "two due at once go out once");
    assert_eq!(a.deadline_ms(), None);
    a.started(ip, 2000);
    a.stopped(ip);
    assert!(a.take_due(3000).is_empty());
    // Flapping: 100 takeovers within the window send at most the cap.
    let mut sent = 0;
    let mut b = Announcer::new();
    for i in 0..100u64 {
        b.started(ip, 10_000 + i * 20);
        sent += b.take_due(10_000 + i * 20).len();
    }
    assert_eq!(sent, ANNOUNCE_PER_WINDOW_MAX as usize);
    assert!(b.suppressed > 0);
    // After the window, announcements flow again.
    b.started(ip, 30_000);
    assert_eq!(b.take_due(30_000), vec![ip]);
}

#[test]
fn backends_rotate_skip_the_tried_and_the_penalised() {
    let mut b = Backends::new();
    let nodes = [1, 2, 3];
    let picks: Vec<_> = (0..6)
        .map(|_| b.pick("web", &nodes, &[], 0).unwrap())
        .collect();
    assert_eq!(picks, vec![1, 2, 3, 1, 2, 3]);
    // Node 2 refused: it is skipped for the penalty, then comes back.
    b.failed(2, 100);
    for _ in 0..10 {
        assert_ne!(b.pick("web", &nodes, &[], 200), Some(2));
    }
    assert!((0..3).any(|_| b.pick("web", &nodes, &[], 100 + BACKEND_PENALTY_MS) == Some(2)));
    // This connection already tried 1 and 3: only 2 is left, even in penalty.
    b.failed(2, 5000);
    assert_eq!(b.pick("web", &nodes, &[1, 3], 5001), Some(2));
    assert_eq!(b.pick("web", &nodes, &[1, 2, 3], 5001), None);
    assert_eq!(b.pick("web", &[], &[], 5001), None);
    b.succeeded(2);
    assert!((0..3).any(|_| b.pick("web", &nodes, &[], 5002) == Some(2)));
}

#[test]
fn backend_penalties_are_bounded() {
    let mut b = Backends::new();
    for n in 0..1000 {
        b.failed(n, n);
    }
    assert!(b.penalty_until_ms.len() <= PENALTIES_MAX);
}

mod in_desired_state {
    use crate::command::Command;
    use crate::desired::{Applied, ApplyError, DesiredState};
    use crate::frontdoor::{AddressError, Owner};
    use crate::service::{PayloadCatalog, ServiceSpec};

    fn state() -> DesiredState {
        let mut d = DesiredState::new(PayloadCatalog::new(&["http"]));
        d.apply(
            1,
            &Command::ApplyService(ServiceSpec::new("web", "http", 2)),
        )
        .unwrap();
        d
    }

    fn owner(node: u64, epoch: u64) -> Command {
        Command::SetOwner {
            service: "web".into(),
            node,
            epoch,
        }
    }

    #[test]
    fn expose_needs_the_service_and_keeps_its_address() {
        let mut d = state();
        let expose = |port| Command::Expose {
            service: "web".into(),
            port,
        };
        assert_eq!(d.apply(2, &expose(80)), Ok(Applied::Exposed { index: 0 }));
        assert_eq!(d.apply(3, &expose(8080)), Ok(Applied::Exposed { index: 0 }));
        assert_eq!(d.addresses().get("web").unwrap().port, 8080);
        let ghost = Command::Expose {
            service: "nope".into(),
            port: 80,
        };
        assert_eq!(d.apply(4, &ghost), Err(ApplyError::UnknownService));
        assert_eq!(
            d.apply(5, &expose(0)),
            Err(ApplyError::Address(AddressError::BadPort))
        );
    }

    /// Owner epochs share the fencing counter with `Assign`: a plan proposed twice, or a
    /// stale leader's decision, is refused on every node alike.
    #[test]
    fn owners_are_fenced_with_the_assignment_epochs() {
        let mut d = state();
        assert_eq!(
            d.apply(2, &owner(1, 1)),
            Err(ApplyError::Address(AddressError::NoAddress))
        );
        d.apply(
            3,
            &Command::Expose {
                service: "web".into(),
                port: 80,
            },
        )
        .unwrap();
        assert_eq!(
            d.apply(4, &owner(1, 1)),
            Ok(Applied::OwnerSet { previous: None })
        );
        d.apply(
            5,
            &Command::Assign {
                service: "web".into(),
                slot: 0,
                node: 2,
                epoch: 2,
                reason: crate::command::Reason::Place,
            },
        )
        .unwrap();
        assert!(matches!(
            d.apply(6, &owner(2, 2)),
            Err(ApplyError::StaleEpoch { .. })
        ));
        assert_eq!(
            d.apply(7, &owner(2, 3)),
            Ok(Applied::OwnerSet {
                previous: Some(Owner { node: 1, epoch: 1 })
            })
        );
        // Snapshots carry the table.
        let restored =
            DesiredState::restore(&d.snapshot(), PayloadCatalog::new(&["http"])).unwrap();
        assert_eq!(restored.addresses(), d.addresses());
        // Delete frees the address; a new service reuses it with a fresh owner history.
        d.apply(8, &Command::Delete { name: "web".into() }).unwrap();
        assert!(d.addresses().is_empty());
    }
}
