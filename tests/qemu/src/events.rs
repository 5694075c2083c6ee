//! The COM2 event log: parsing `t_us=… node=… kind=… key=value…` lines.

use std::collections::BTreeMap;

/// One event line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub t_us: u64,
    pub node: String,
    pub kind: String,
    pub fields: BTreeMap<String, String>,
}

impl Event {
    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }
}

/// Parses one line; `None` for anything that is not a well-formed event.
pub fn parse_line(line: &str) -> Option<Event> {
    let mut fields = BTreeMap::new();
    for token in line.split_whitespace() {
        let (key, value) = token.split_once('=')?;
        fields.insert(key.to_string(), value.to_string());
    }
    let t_us = fields.remove("t_us")?.parse().ok()?;
    let node = fields.remove("node")?;
    let kind = fields.remove("kind")?;
    Some(Event {
        t_us,
        node,
        kind,
        fields,
    })
}

/// Parses a whole log, skipping malformed lines (a torn last line while QEMU writes).
pub fn parse_log(text: &str) -> Vec<Event> {
    // A last line without its newline is still being written (COM2 is slow under TCG):
    // reading it now would see an event with half its fields.
    let complete = match text.rfind('\n') {
        Some(end) => &text[..=end],
        None => "",
    };
    complete.lines().filter_map(parse_line).collect()
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
    fn rejects_malformed_lines() {
        assert_eq!(parse_line("t_us=12 node=a"), None);
        assert_eq!(parse_line("t_us=x node=a kind=b"), None);
        assert_eq!(parse_line("garbage"), None);
        assert_eq!(parse_log("t_us=1 node=a kind=b\nt_us=2 node=a ki").len(), 1);
    }
}
