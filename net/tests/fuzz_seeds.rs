//! The libFuzzer seed corpus (`net/fuzz/seeds/envelope_decode`) must stay valid: every seed is
//! a datagram that node 1 of cluster 0 (the fuzz target's identity) accepts. A layout change
//! that forgets to regenerate the seeds fails here.

use net::{decode, LocalIdentity};

#[test]
fn every_seed_is_accepted_by_the_decode_target_identity() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/envelope_decode");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("seed directory exists") {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let local = LocalIdentity {
            cluster_id: 0,
            node_id: 1,
        };
        if let Err(e) = decode(&bytes, &local) {
            panic!("seed {} rejected: {e}", path.display());
        }
        seen += 1;
    }
    assert!(seen >= 5, "expected the seed corpus, found {seen} files");
}
