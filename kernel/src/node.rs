//! This node's identity, read once at boot from fw_cfg (`opt/xylem/node`).

use alloc::string::String;
use kcore::node_config::NodeConfig;
use spin::Once;

use crate::drivers::fw_cfg::{self, FwCfgError};

/// fw_cfg file carrying the node config.
pub const FW_CFG_NODE_FILE: &str = "opt/xylem/node";

static CONFIG: Once<NodeConfig> = Once::new();

/// Reads the node config; on a missing or malformed file, logs why and uses the default.
pub fn init() -> &'static NodeConfig {
    CONFIG.call_once(|| match fw_cfg::read_text(FW_CFG_NODE_FILE) {
        Ok(text) => NodeConfig::parse(&text).unwrap_or_else(|err| {
            log::error!(
                "node config '{}' rejected: {err}; using defaults",
                text.trim()
            );
            NodeConfig::default()
        }),
        Err(FwCfgError::NotFound) | Err(FwCfgError::NotPresent) => NodeConfig::default(),
        Err(err) => {
            log::error!("cannot read {FW_CFG_NODE_FILE}: {err:?}; using defaults");
            NodeConfig::default()
        }
    })
}

/// The node config (the default before [`init`]).
pub fn config() -> &'static NodeConfig {
    static DEFAULT: Once<NodeConfig> = Once::new();
    CONFIG
        .get()
        .unwrap_or_else(|| DEFAULT.call_once(NodeConfig::default))
}

/// The node's name.
pub fn name() -> &'static str {
    &config().name
}

/// An extra key from the node config, e.g. `peers`.
pub fn extra(key: &str) -> Option<&'static String> {
    config().extra.get(key)
}
