//! The cluster's static peer list, from the node config key
//! `peers=1:worker-1;2:worker-2;3:witness` (parsed by `kcore::peers`).

use kcore::peers::Peers;
use spin::Once;

use crate::node;

static PEERS: Once<Peers> = Once::new();

/// The peers this node was configured with (empty when the key is absent or malformed; the
/// malformed case is logged once).
pub fn get() -> &'static Peers {
    PEERS.call_once(
        || match node::extra("peers").map(|text| Peers::parse(text)) {
            None => Peers::default(),
            Some(Ok(peers)) => peers,
            Some(Err(err)) => {
                log::error!("config key peers is malformed ({err}); running without peers");
                Peers::default()
            }
        },
    )
}

/// A node's name: this node's own from its config, a peer's from the list, or
/// `node-<id>` when it is in neither.
pub fn name_of(id: u64) -> alloc::string::String {
    let me = node::config();
    if id == me.id {
        return alloc::string::String::from(me.name.as_str());
    }
    get()
        .name_of(id)
        .map_or_else(|| alloc::format!("node-{id}"), alloc::string::String::from)
}
