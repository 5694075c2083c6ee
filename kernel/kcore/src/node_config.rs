//! The node's identity, parsed from the `opt/xylem/node` fw_cfg string.
//!
//! One kernel image boots every node; what makes a node itself is a short text QEMU hands
//! it through fw_cfg: `id=2,name=worker-2,role=worker` plus optional keys that later
//! subsystems read (for example `peers=…`). Pairs are separated by commas or whitespace.
//! Missing file → [`NodeConfig::default`]; a malformed one is an error the kernel reports
//! on the console before falling back to the default, so a typo never stops a boot silently.

use alloc::collections::BTreeMap;
use alloc::string::{String, ToString};

/// Longest node name we accept (it appears in the prompt and in every event line).
pub const NAME_MAX_BYTES: usize = 32;

/// What the node does in the cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Hosts cells and votes in Raft.
    Worker,
    /// Votes in Raft and stores the log, hosts no cells.
    Witness,
}

impl Role {
    /// The spelling used in the config string and in status output.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Worker => "worker",
            Role::Witness => "witness",
        }
    }
}

/// A node's identity.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeConfig {
    /// Numeric id, unique in the cluster, never 0.
    pub id: u64,
    /// Human name, `[a-z0-9-]`, at most [`NAME_MAX_BYTES`].
    pub name: String,
    pub role: Role,
    /// Keys this parser does not interpret, for later subsystems.
    pub extra: BTreeMap<String, String>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            id: 1,
            name: "xylem-1".to_string(),
            role: Role::Worker,
            extra: BTreeMap::new(),
        }
    }
}

/// Why a node config string was rejected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// A token without `=`.
    NotKeyValue(String),
    /// The same key twice.
    DuplicateKey(String),
    /// `id` is not a positive integer.
    BadId(String),
    /// `name` is empty, too long, or has characters outside `[a-z0-9-]`.
    BadName(String),
    /// `role` is not `worker` or `witness`.
    BadRole(String),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigError::NotKeyValue(t) => write!(f, "'{t}' is not key=value"),
            ConfigError::DuplicateKey(k) => write!(f, "key '{k}' given twice"),
            ConfigError::BadId(v) => write!(f, "id '{v}' is not a positive integer"),
            ConfigError::BadName(v) => {
                write!(
                    f,
                    "name '{v}' must be 1-{NAME_MAX_BYTES} chars of [a-z0-9-]"
                )
            }
            ConfigError::BadRole(v) => write!(f, "role '{v}' is not worker or witness"),
        }
    }
}

impl NodeConfig {
    /// Parses `key=value` pairs. Unset keys keep their defaults, except that a config which
    /// sets `id` but not `name` is named `xylem-<id>`.
    pub fn parse(text: &str) -> Result<NodeConfig, ConfigError> {
        let mut pairs: BTreeMap<String, String> = BTreeMap::new();
        for token in text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|t| !t.is_empty())
        {
            let (key, value) = token
                .split_once('=')
                .ok_or_else(|| ConfigError::NotKeyValue(token.to_string()))?;
            if pairs.insert(key.to_string(), value.to_string()).is_some() {
                return Err(ConfigError::DuplicateKey(key.to_string()));
            }
        }
        let mut config = NodeConfig::default();
        if let Some(id) = pairs.remove("id") {
            config.id = match id.parse::<u64>() {
                Ok(n) if n > 0 => n,
                _ => return Err(ConfigError::BadId(id)),
            };
            config.name = alloc::format!("xylem-{}", config.id);
        }
        if let Some(name) = pairs.remove("name") {
            if !is_valid_name(&name) {
                return Err(ConfigError::BadName(name));
            }
            config.name = name;
        }
        if let Some(role) = pairs.remove("role") {
            config.role = match role.as_str() {
                "worker" => Role::Worker,
                "witness" => Role::Witness,
                _ => return Err(ConfigError::BadRole(role)),
            };
        }
        config.extra = pairs;
        Ok(config)
    }
}

/// The node-name rule: 1 to [`NAME_MAX_BYTES`] bytes of `[a-z0-9-]`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= NAME_MAX_BYTES
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_config_parses() {
        let c = NodeConfig::parse("id=2,name=worker-2,role=worker,peers=1;3").unwrap();
        assert_eq!(
            (c.id, c.name.as_str(), c.role),
            (2, "worker-2", Role::Worker)
        );
        assert_eq!(c.extra.get("peers").map(String::as_str), Some("1;3"));
    }

    #[test]
    fn empty_config_is_the_default() {
        assert_eq!(NodeConfig::parse("").unwrap(), NodeConfig::default());
        assert_eq!(NodeConfig::parse(" \n").unwrap(), NodeConfig::default());
    }

    #[test]
    fn id_without_name_names_the_node_after_the_id() {
        let c = NodeConfig::parse("id=7 role=witness").unwrap();
        assert_eq!((c.name.as_str(), c.role), ("xylem-7", Role::Witness));
    }

    #[test]
    fn malformed_configs_are_typed_errors() {
        assert_eq!(
            NodeConfig::parse("id"),
            Err(ConfigError::NotKeyValue("id".into()))
        );
        assert_eq!(
            NodeConfig::parse("id=0"),
            Err(ConfigError::BadId("0".into()))
        );
        assert_eq!(
            NodeConfig::parse("id=-1"),
            Err(ConfigError::BadId("-1".into()))
        );
        assert_eq!(
            NodeConfig::parse("id=1,id=2"),
            Err(ConfigError::DuplicateKey("id".into()))
        );
        assert_eq!(
            NodeConfig::parse("name=Bad_Name"),
            Err(ConfigError::BadName("Bad_Name".into()))
        );
        assert_eq!(
            NodeConfig::parse("name="),
            Err(ConfigError::BadName("".into()))
        );
        let long = alloc::format!("name={}", "a".repeat(NAME_MAX_BYTES + 1));
        assert!(matches!(
            NodeConfig::parse(&long),
            Err(ConfigError::BadName(_))
        ));
        assert_eq!(
            NodeConfig::parse("role=boss"),
            Err(ConfigError::BadRole("boss".into()))
        );
    }
}
