//! The cluster's peer table, parsed from the node config key `peers`.
//!
//! Format: `peers=1:worker-1;2:worker-2;3:witness:witness` — `;`-separated `id:name` pairs,
//! each optionally followed by `:role` (`worker` or `witness`; the node config splits on
//! commas and whitespace, so neither may appear inside). The table maps names to node ids for
//! `ping <node-name>` and the transport's peer list, and gives every node the same roles for
//! every member (the control plane never guesses a role from a missing report). Ids are
//! non-zero and below 255 because a node's fabric address is 169.254.77.<id>; names follow
//! the node-name rule (`[a-z0-9-]`, at most [`crate::node_config::NAME_MAX_BYTES`]).

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::fmt;

use crate::node_config::{is_valid_name, Role, NAME_MAX_BYTES};

/// Most peers a table holds (a bound, like every table in the kernel).
pub const PEERS_MAX: usize = 64;
/// Highest node id that has a fabric address (169.254.77.<id>; .255 is broadcast).
pub const PEER_ID_MAX: u64 = 254;

/// One peer: id, name, and its role when the configuration gives one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Peer {
    pub id: u64,
    pub name: String,
    pub role: Option<Role>,
}

/// Why a `peers` value was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeersError {
    /// An entry is not `id:name`.
    Malformed(String),
    /// An id is not a number in 1..=254.
    BadId(String),
    /// A name is empty, too long, or has a character outside `[a-z0-9-]`.
    BadName(String),
    /// A role is neither `worker` nor `witness`.
    BadRole(String),
    /// The same id or name appears twice.
    Duplicate(String),
    /// More than [`PEERS_MAX`] entries.
    TooMany,
}

impl fmt::Display for PeersError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeersError::Malformed(e) => write!(f, "entry '{e}' is not id:name"),
            PeersError::BadId(e) => write!(f, "id '{e}' is not a number in 1..={PEER_ID_MAX}"),
            PeersError::BadName(e) => {
                write!(f, "name '{e}' is not [a-z0-9-]{{1,{NAME_MAX_BYTES}}}")
            }
            PeersError::BadRole(e) => write!(f, "role '{e}' is not worker or witness"),
            PeersError::Duplicate(e) => write!(f, "'{e}' appears twice"),
            PeersError::TooMany => write!(f, "more than {PEERS_MAX} peers"),
        }
    }
}

/// The peer table, in the order given.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Peers {
    peers: Vec<Peer>,
}

impl Peers {
    /// Parses a `peers` value. The empty string is an empty table.
    pub fn parse(text: &str) -> Result<Peers, PeersError> {
        let mut peers: Vec<Peer> = Vec::new();
        for entry in text.split(';').map(str::trim).filter(|e| !e.is_empty()) {
            let (id_text, rest) = entry
                .split_once(':')
                .ok_or_else(|| PeersError::Malformed(entry.to_string()))?;
            let (name, role) = match rest.split_once(':') {
                None => (rest, None),
                Some((name, "worker")) => (name, Some(Role::Worker)),
                Some((name, "witness")) => (name, Some(Role::Witness)),
                Some((_, role)) => return Err(PeersError::BadRole(role.to_string())),
            };
            let id = parse_id(id_text)?;
            if !is_valid_name(name) {
                return Err(PeersError::BadName(name.to_string()));
            }
            if peers.iter().any(|p| p.id == id) {
                return Err(PeersError::Duplicate(id_text.to_string()));
            }
            if peers.iter().any(|p| p.name == name) {
                return Err(PeersError::Duplicate(name.to_string()));
            }
            if peers.len() == PEERS_MAX {
                return Err(PeersError::TooMany);
            }
            peers.push(Peer {
                id,
                name: name.to_string(),
                role,
            });
        }
        debug_assert!(peers.len() <= PEERS_MAX);
        Ok(Peers { peers })
    }

    /// The id of the peer called `name`.
    pub fn id_of(&self, name: &str) -> Option<u64> {
        self.peers.iter().find(|p| p.name == name).map(|p| p.id)
    }

    /// The name of peer `id`.
    pub fn name_of(&self, id: u64) -> Option<&str> {
        self.peers
            .iter()
            .find(|p| p.id == id)
            .map(|p| p.name.as_str())
    }

    /// The configured role of peer `id` (`None` when absent or not given).
    pub fn role_of(&self, id: u64) -> Option<Role> {
        self.peers.iter().find(|p| p.id == id).and_then(|p| p.role)
    }

    /// Every peer, in the order given.
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        self.peers.iter()
    }

    /// How many peers.
    pub fn len(&self) -> usize {
        self.peers.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.peers.is_empty()
    }
}

fn parse_id(text: &str) -> Result<u64, PeersError> {
    match text.parse::<u64>() {
        Ok(id) if (1..=PEER_ID_MAX).contains(&id) => Ok(id),
        _ => Err(PeersError::BadId(text.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let peers = Peers::parse("1:worker-1;2:worker-2;3:witness").unwrap();
        assert_eq!(peers.len(), 3);
        assert_eq!(peers.id_of("worker-2"), Some(2));
        assert_eq!(peers.id_of("witness"), Some(3));
        assert_eq!(peers.name_of(1), Some("worker-1"));
        assert_eq!(peers.id_of("worker-9"), None);
        assert_eq!(peers.name_of(9), None);
        let ids: Vec<u64> = peers.iter().map(|p| p.id).collect();
        assert_eq!(ids, [1, 2, 3]);
    }

    #[test]
    fn roles_are_optional_and_checked() {
        let peers = Peers::parse("1:worker-1:worker;2:worker-2;3:witness:witness").unwrap();
        assert_eq!(peers.role_of(1), Some(Role::Worker));
        assert_eq!(peers.role_of(2), None);
        assert_eq!(peers.role_of(3), Some(Role::Witness));
        assert_eq!(peers.name_of(3), Some("witness"));
        assert_eq!(
            Peers::parse("1:a:boss"),
            Err(PeersError::BadRole("boss".into()))
        );
        assert_eq!(
            Peers::parse("1:a:witness:x"),
            Err(PeersError::BadRole("witness:x".into()))
        );
    }

    #[test]
    fn empty_and_stray_separators_are_fine() {
        assert!(Peers::parse("").unwrap().is_empty());
        assert_eq!(Peers::parse(";1:a;;2:b;").unwrap().len(), 2);
    }

    #[test]
    fn rejects_each_kind_of_mistake() {
        assert_eq!(
            Peers::parse("1worker"),
            Err(PeersError::Malformed("1worker".into()))
        );
        assert_eq!(Peers::parse("0:a"), Err(PeersError::BadId("0".into())));
        assert_eq!(Peers::parse("255:a"), Err(PeersError::BadId("255".into())));
        assert_eq!(Peers::parse("x:a"), Err(PeersError::BadId("x".into())));
        assert_eq!(Peers::parse("1:"), Err(PeersError::BadName("".into())));
        assert_eq!(
            Peers::parse("1:Worker"),
            Err(PeersError::BadName("Worker".into()))
        );
        assert_eq!(
            Peers::parse("1:a;1:b"),
            Err(PeersError::Duplicate("1".into()))
        );
        assert_eq!(
            Peers::parse("1:a;2:a"),
            Err(PeersError::Duplicate("a".into()))
        );
        let long = "a".repeat(NAME_MAX_BYTES + 1);
        assert_eq!(
            Peers::parse(&alloc::format!("1:{long}")),
            Err(PeersError::BadName(long))
        );
    }

    #[test]
    fn bounds_the_table() {
        let text: Vec<String> = (1..=PEERS_MAX as u64 + 1)
            .map(|i| alloc::format!("{i}:n{i}"))
            .collect();
        assert_eq!(Peers::parse(&text.join(";")), Err(PeersError::TooMany));
        let ok: Vec<String> = (1..=PEERS_MAX as u64)
            .map(|i| alloc::format!("{i}:n{i}"))
            .collect();
        assert_eq!(Peers::parse(&ok.join(";")).unwrap().len(), PEERS_MAX);
    }
}
