//! `cargo xtask demo`: the main job. Until the cluster lands, it boots one node, drives its
//! shell and powers it off, showing each step.

use std::time::Duration;

use qemu_tests::node::Node;
use qemu_tests::qemu::NodeSpec;

use crate::image::{self, Profile};
use crate::setup;

/// Runs the demo.
pub fn cmd_demo(args: &[String]) -> Result<(), String> {
    crate::Flags::parse(args, &[], &[])?;
    setup::ensure_qemu()?;
    let image = image::build_image(Profile::Release, image::Flavor::Shell, boot::Firmware::Bios)?;
    let dir = image::fresh_dir(&image::xylem_dir().join("demo"))?;
    let mut spec = NodeSpec::worker(1, &image);
    spec.name = "worker-1".into();
    println!("==> booting {} (64 MiB, TCG)", spec.name);
    let mut node = Node::start(spec, &dir).map_err(|e| e.to_string())?;
    node.wait_for_prompt(Duration::from_secs(60)).map_err(|e| e.to_string())?;
    println!("    prompt after {} ms", node.started.elapsed().as_millis());
    for line in ["help", "uptime", "mem"] {
        let out = node.command(line, Duration::from_secs(10)).map_err(|e| e.to_string())?;
        println!("{}{line}\n{}", node.prompt(), out.trim_end());
    }
    for event in node.events() {
        println!("    COM2 event: t_us={} kind={} {:?}", event.t_us, event.kind, event.fields);
    }
    node.send_line("poweroff").map_err(|e| e.to_string())?;
    let status = node.wait_exit(Duration::from_secs(10)).map_err(|e| e.to_string())?;
    println!("==> node powered off (QEMU exit status {:?})", status.code());
    Ok(())
}
