//! This node's identity and whether it may join the cluster (issue #15, docs/security.md).
//!
//! At boot, [`init`] reads the node's certificate, private key and the cluster CA from fw_cfg
//! file items ([`FW_CFG_CERT`], [`FW_CFG_KEY`], [`FW_CFG_CA`]), reads the wall clock from the
//! CMOS RTC, checks that hardware randomness exists, and runs `trust::Identity::self_check`.
//! The outcome is a [`Mode`]:
//!
//! - [`Mode::Sealed`]: every datagram to a peer is sealed with the keys of that pair's TLS
//!   session (`netstack::tls`); unsealed datagrams are refused.
//! - [`Mode::Plain`]: the unauthenticated transport, only when the node config says
//!   `trust=off` (kept for measuring what authentication costs, and to play a rogue node
//!   without identity in tests), or for a node without peers and without an identity (a
//!   single node talks to nobody).
//! - [`Mode::Refused`]: the identity is missing or wrong; the cluster stack (membership,
//!   Raft, control plane) is not started and the reason is printed.
//!
//! Neighbours: `netstack::tls` drives the handshakes with [`configs`]; `netstack::transport`
//! seals and opens datagrams according to [`mode`].

use ::trust::identity::{Identity, PeerName};
use ::trust::session::TlsConfigs;
use alloc::string::{String, ToString};
use pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use rustls::crypto::{GetRandomFailed, SecureRandom};
use spin::Once;

use crate::arch::{rng, rtc};
use crate::drivers::fw_cfg::{self, FwCfgError};
use crate::{node, time};

/// fw_cfg file with this node's certificate (DER).
pub const FW_CFG_CERT: &str = "opt/xylem/cert";
/// fw_cfg file with this node's private key (PKCS#8 DER).
pub const FW_CFG_KEY: &str = "opt/xylem/key";
/// fw_cfg file with the cluster CA certificate (DER).
pub const FW_CFG_CA: &str = "opt/xylem/ca";

/// How this node treats its peers (module docs).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    Sealed,
    Plain { why: &'static str },
    Refused { why: String },
}

struct State {
    mode: Mode,
    configs: Option<TlsConfigs>,
    /// RTC seconds at boot minus uptime then: wall clock = base + uptime.
    wall_base_s: Option<u64>,
}

static STATE: Once<State> = Once::new();

/// RDRAND/RDSEED for rustls.
#[derive(Debug)]
struct HardwareRandom;

impl SecureRandom for HardwareRandom {
    fn fill(&self, buf: &mut [u8]) -> Result<(), GetRandomFailed> {
        rng::fill(buf).map_err(|_| GetRandomFailed)
    }
}

static RANDOM: HardwareRandom = HardwareRandom;

fn read(name: &str) -> Result<Option<alloc::vec::Vec<u8>>, String> {
    match fw_cfg::read_file(name) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(FwCfgError::NotFound) | Err(FwCfgError::NotPresent) => Ok(None),
        Err(err) => Err(alloc::format!("cannot read fw_cfg {name}: {err:?}")),
    }
}

/// Decides the mode (module docs) and builds the TLS configurations; logs the outcome.
pub fn init() {
    let state = STATE.call_once(decide);
    match &state.mode {
        Mode::Sealed => log::info!(
            "trust: identity {} verified against the cluster CA; datagrams sealed",
            me().dns_name()
        ),
        Mode::Plain { why } => log::warn!("trust: OFF ({why}); datagrams are not authenticated"),
        Mode::Refused { why } => {
            log::error!("trust: REFUSED: {why}; the cluster stack is not started")
        }
    }
}

fn me() -> PeerName {
    let config = node::config();
    PeerName::new(config.id, &config.name)
}

fn decide() -> State {
    let wall_base_s = rtc::unix_seconds().map(|s| s.saturating_sub(time::now_us() / 1_000_000));
    let refused = |why: String| State {
        mode: Mode::Refused { why },
        configs: None,
        wall_base_s,
    };
    if node::extra("trust").is_some_and(|v| v == "off") {
        return State {
            mode: Mode::Plain {
                why: "node config says trust=off",
            },
            configs: None,
            wall_base_s,
        };
    }
    let files = (read(FW_CFG_CERT), read(FW_CFG_KEY), read(FW_CFG_CA));
    let (cert, key, ca) = match files {
        (Ok(Some(cert)), Ok(Some(key)), Ok(Some(ca))) => (cert, key, ca),
        (Ok(None), Ok(None), Ok(None)) if crate::cluster::peers::get().is_empty() => {
            return State {
                mode: Mode::Plain {
                    why: "single node without identity",
                },
                configs: None,
                wall_base_s,
            };
        }
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return refused(e),
        _ => {
            return refused(alloc::format!(
                "no identity: fw_cfg needs {FW_CFG_CERT}, {FW_CFG_KEY} and {FW_CFG_CA}"
            ))
        }
    };
    let identity = Identity {
        me: me(),
        cert: CertificateDer::from(cert),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key)),
        ca: CertificateDer::from(ca),
    };
    if let Err(err) = rng::fill(&mut [0u8; 8]) {
        return refused(alloc::format!("no hardware randomness for keys: {err:?}"));
    }
    let Some(base) = wall_base_s else {
        return refused("the CMOS RTC gives no valid time to check certificates".to_string());
    };
    let now = base + time::now_us() / 1_000_000;
    if let Err(err) = identity.self_check(now) {
        return refused(alloc::format!(
            "certificate does not match this node: {err}"
        ));
    }
    match TlsConfigs::new(&identity, &RANDOM) {
        Ok(configs) => State {
            mode: Mode::Sealed,
            configs: Some(configs),
            wall_base_s,
        },
        Err(err) => refused(alloc::format!("TLS configuration: {err}")),
    }
}

/// The mode decided at boot (`Refused` before [`init`]).
pub fn mode() -> Mode {
    STATE.get().map_or(
        Mode::Refused {
            why: "not initialised".to_string(),
        },
        |s| s.mode.clone(),
    )
}

/// Whether datagrams are sealed.
pub fn sealed() -> bool {
    matches!(STATE.get().map(|s| &s.mode), Some(Mode::Sealed))
}

/// Whether the cluster stack may start.
pub fn cluster_allowed() -> bool {
    !matches!(
        STATE.get().map(|s| &s.mode),
        Some(Mode::Refused { .. }) | None
    )
}

/// The TLS configurations with the clock set to now (only in `Sealed` mode).
pub fn configs() -> Option<&'static TlsConfigs> {
    let state = STATE.get()?;
    let configs = state.configs.as_ref()?;
    if let Some(now) = wall_clock_s() {
        configs.set_time(now);
    }
    Some(configs)
}

/// Wall-clock seconds (RTC at boot + uptime).
pub fn wall_clock_s() -> Option<u64> {
    let base = STATE.get()?.wall_base_s?;
    Some(base + time::now_us() / 1_000_000)
}
