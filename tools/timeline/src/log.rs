//! The event line format shared by COM2 logs and the harness journal:
//! `t_us=… node=… kind=… key=value…`, one event per line, values without spaces.
//!
//! [`parse_line`] is total: anything that is not a well-formed event is a typed
//! [`LineError`], never a panic. [`parse_log`] keeps the good lines and counts the rest (a
//! torn last line while QEMU writes, a line interleaved with panic output, plain garbage), so
//! a timeline can say how much it skipped.

use std::collections::BTreeMap;
use std::fmt;

/// One event line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// Microseconds on the writer's clock (a node's boot clock, or the harness journal's).
    pub t_us: u64,
    /// The writer (`worker-1`, …, or `harness` for the journal).
    pub node: String,
    /// What happened (`boot`, `node_down`, `cell_start`, …).
    pub kind: String,
    /// Every other `key=value`.
    pub fields: BTreeMap<String, String>,
    /// The line as written (shown when hovering over the event in a timeline).
    pub raw: String,
}

impl Event {
    /// A field's value.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// A field parsed as an unsigned number.
    pub fn get_u64(&self, key: &str) -> Option<u64> {
        self.get(key)?.parse().ok()
    }
}

/// Why a line is not an event.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineError {
    /// Nothing but whitespace.
    Blank,
    /// A token without `=`.
    NotKeyValue { token: String },
    /// One of `t_us`, `node`, `kind` is missing.
    Missing { key: &'static str },
    /// `t_us` is not a number.
    BadTime { value: String },
    /// The same key twice (a line spliced from two writes).
    Duplicate { key: String },
}

impl fmt::Display for LineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LineError::Blank => write!(f, "blank line"),
            LineError::NotKeyValue { token } => write!(f, "token {token:?} is not key=value"),
            LineError::Missing { key } => write!(f, "no {key}="),
            LineError::BadTime { value } => write!(f, "t_us={value:?} is not a number"),
            LineError::Duplicate { key } => write!(f, "{key}= appears twice"),
        }
    }
}

/// Parses one line.
pub fn parse_line(line: &str) -> Result<Event, LineError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Err(LineError::Blank);
    }
    let mut fields = BTreeMap::new();
    for token in line.split_whitespace() {
        let (key, value) = token
            .split_once('=')
            .filter(|(k, _)| !k.is_empty())
            .ok_or_else(|| LineError::NotKeyValue {
                token: token.chars().take(40).collect(),
            })?;
        if fields.insert(key.to_string(), value.to_string()).is_some() {
            return Err(LineError::Duplicate {
                key: key.to_string(),
            });
        }
    }
    let t_us = fields
        .remove("t_us")
        .ok_or(LineError::Missing { key: "t_us" })?;
    let t_us = t_us
        .parse()
        .map_err(|_| LineError::BadTime { value: t_us })?;
    let node = fields
        .remove("node")
        .ok_or(LineError::Missing { key: "node" })?;
    let kind = fields
        .remove("kind")
        .ok_or(LineError::Missing { key: "kind" })?;
    Ok(Event {
        t_us,
        node,
        kind,
        fields,
        raw: line.trim().to_string(),
    })
}

/// Garbage lines remembered per log, at most (the count goes on).
pub const GARBAGE_EXAMPLES_MAX: usize = 5;

/// A parsed log: its events in file order, and what was skipped.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParsedLog {
    pub events: Vec<Event>,
    /// Non-blank lines that were not events.
    pub garbage: usize,
    /// The first few of them: (1-based line number, why).
    pub garbage_examples: Vec<(usize, LineError)>,
}

/// Parses a whole log. Blank lines are ignored; every other bad line is counted.
pub fn parse_log(text: &str) -> ParsedLog {
    let mut log = ParsedLog::default();
    for (index, line) in text.lines().enumerate() {
        match parse_line(line) {
            Ok(event) => log.events.push(event),
            Err(LineError::Blank) => {}
            Err(why) => {
                log.garbage += 1;
                if log.garbage_examples.len() < GARBAGE_EXAMPLES_MAX {
                    log.garbage_examples.push((index + 1, why));
                }
            }
        }
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_event_line_and_keeps_it_raw() {
        let e = parse_line("t_us=1234 node=worker-1 kind=boot id=1 role=worker\r\n").unwrap();
        assert_eq!(
            (e.t_us, e.node.as_str(), e.kind.as_str()),
            (1234, "worker-1", "boot")
        );
        assert_eq!(e.get("role"), Some("worker"));
        assert_eq!(e.get_u64("id"), Some(1));
        assert_eq!(e.raw, "t_us=1234 node=worker-1 kind=boot id=1 role=worker");
    }

    #[test]
    fn every_malformed_line_is_a_typed_error() {
        assert_eq!(parse_line("  "), Err(LineError::Blank));
        assert_eq!(
            parse_line("t_us=12 node=a"),
            Err(LineError::Missing { key: "kind" })
        );
        assert!(matches!(
            parse_line("t_us=x node=a kind=b"),
            Err(LineError::BadTime { .. })
        ));
        assert!(matches!(
            parse_line("garbage"),
            Err(LineError::NotKeyValue { .. })
        ));
        assert!(matches!(
            parse_line("=1 t_us=1 node=a kind=b"),
            Err(LineError::NotKeyValue { .. })
        ));
        assert!(matches!(
            parse_line("t_us=1 node=a kind=b t_us=2 node=a kind=c"),
            Err(LineError::Duplicate { .. })
        ));
    }

    #[test]
    fn garbage_is_skipped_and_counted() {
        let mut text = String::from("t_us=1 node=a kind=b\n\n\u{0}\u{7f}binary\n");
        for i in 0..10 {
            text.push_str(&format!("noise {i}\n"));
        }
        text.push_str("t_us=2 node=a kind=c\nt_us=3 node=a ki");
        let log = parse_log(&text);
        assert_eq!(log.events.len(), 2);
        assert_eq!(log.garbage, 12, "{:?}", log.garbage_examples);
        assert_eq!(log.garbage_examples.len(), GARBAGE_EXAMPLES_MAX);
        assert_eq!(log.garbage_examples[0].0, 3, "line numbers are 1-based");
    }
}
