//! The COM2 event log: `t_us=… node=… kind=… key=value…` lines. The format and its
//! parser live in the timeline crate (`timeline::log`), which also reads these logs.

pub use timeline::log::{parse_line, Event};

/// Parses a whole log, skipping malformed lines (a torn last line while QEMU writes).
pub fn parse_log(text: &str) -> Vec<Event> {
    // A last line without its newline is still being written (COM2 is slow under TCG):
    // reading it now would see an event with half its fields.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    timeline::log::parse_log(complete).events
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_still_being_written_is_not_parsed() {
        let log = "t_us=1 node=a kind=boot id=1\nt_us=2 node=a kind=cell_exit cell=3 ";
        let events = parse_log(log);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].kind, "boot");
        assert_eq!(parse_log("t_us=1 node=a kind=boot").len(), 0);
    }

    #[test]
    fn parses_an_event_line() {
        let e = parse_line("t_us=1234 node=worker-1 kind=boot id=1 role=worker").unwrap();
        assert_eq!(
            (e.t_us, e.node.as_str(), e.kind.as_str()),
            (1234, "worker-1", "boot")
        );
        assert_eq!(e.get("role"), Some("worker"));
    }

    #[test]
    fn skips_malformed_lines() {
        assert!(parse_line("t_us=12 node=a").is_err());
        assert_eq!(parse_log("t_us=1 node=a kind=b\nt_us=2 node=a ki").len(), 1);
    }
}
