//! Cluster commands: `members`.

use super::{Command, CommandError};
use crate::cluster::membership;

pub const COMMANDS: &[Command] = &[Command {
    name: "members",
    usage: "members",
    help: "cluster membership (SWIM): id, name, state, incarnation, last heard",
    run: members,
}];

fn members(args: &[&str]) -> Result<(), CommandError> {
    super::basic::no_args(args)?;
    let Some(rows) = membership::members() else {
        return Err(CommandError::Failed(
            "membership is not running (no network?)".into(),
        ));
    };
    crate::println!(
        "{:>4}  {:<16} {:<8} {:>11} {:>14}",
        "ID",
        "NAME",
        "STATE",
        "INCARNATION",
        "LAST_HEARD_MS"
    );
    for m in rows {
        let heard = if m.is_self {
            alloc::string::String::from("(self)")
        } else {
            alloc::format!("{}", m.last_heard_ago_ms)
        };
        crate::println!(
            "{:>4}  {:<16} {:<8} {:>11} {:>14}",
            m.id,
            m.name,
            m.state.as_str(),
            m.incarnation,
            heard
        );
    }
    let malformed = membership::malformed();
    if malformed > 0 {
        crate::println!("({malformed} malformed SWIM messages dropped)");
    }
    if let Some(refused) = super::trust::refusal_summary() {
        crate::println!("{refused}");
    }
    Ok(())
}
