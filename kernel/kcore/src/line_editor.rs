//! The serial console's line editor.
//!
//! Bytes arrive one at a time from the COM1 interrupt. The editor keeps the current line,
//! tells the console what to echo, and hands back a finished line on Enter. It understands
//! what a plain serial terminal sends: printable ASCII, Backspace (0x08) and Delete (0x7f),
//! Ctrl-C (clear the line), Ctrl-U (clear the line), and CR, LF or CRLF as Enter. Anything
//! else (escape sequences, other control bytes, non-ASCII) is ignored rather than stored,
//! so a line only ever holds printable ASCII.

use alloc::string::String;

/// Longest line the editor accepts; further bytes are refused with a bell.
pub const LINE_MAX_BYTES: usize = 256;

/// What the console must do after feeding one byte.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Nothing to echo.
    None,
    /// Echo this printable byte.
    Echo(u8),
    /// Erase one character on the terminal (`\x08 \x08`).
    Erase,
    /// The line was discarded (Ctrl-C / Ctrl-U): print `^C`, a newline and a fresh prompt.
    Cancel,
    /// The line is full; ring the bell.
    Bell,
    /// Enter: the finished line, without its terminator.
    Line(String),
}

/// A single-line editor with escape-sequence filtering.
#[derive(Debug, Default)]
pub struct LineEditor {
    line: String,
    /// Set after CR so that the LF of a CRLF pair is not taken as a second, empty Enter.
    after_cr: bool,
    /// Bytes left to swallow of an ANSI escape sequence (arrow keys and the like).
    escape: EscapeState,
}

#[derive(Debug, Default, PartialEq, Eq, Clone, Copy)]
enum EscapeState {
    #[default]
    Idle,
    /// Saw ESC.
    Esc,
    /// Saw ESC '[': swallow parameter bytes until a final byte in 0x40..=0x7e.
    Csi,
}

const BACKSPACE: u8 = 0x08;
const DELETE: u8 = 0x7f;
const CTRL_C: u8 = 0x03;
const CTRL_U: u8 = 0x15;
const ESC: u8 = 0x1b;

impl LineEditor {
    /// An empty editor.
    pub fn new() -> Self {
        Self::default()
    }

    /// The line typed so far.
    pub fn current(&self) -> &str {
        &self.line
    }

    /// Feeds one byte from the terminal.
    pub fn feed(&mut self, byte: u8) -> Action {
        let after_cr = core::mem::replace(&mut self.after_cr, false);
        if self.escape != EscapeState::Idle {
            self.escape = next_escape_state(self.escape, byte);
            return Action::None;
        }
        match byte {
            b'\r' => {
                self.after_cr = true;
                self.finish()
            }
            b'\n' if after_cr => Action::None,
            b'\n' => self.finish(),
            BACKSPACE | DELETE => {
                if self.line.pop().is_some() {
                    Action::Erase
                } else {
                    Action::None
                }
            }
            CTRL_C | CTRL_U => {
                self.line.clear();
                Action::Cancel
            }
            ESC => {
                self.escape = EscapeState::Esc;
                Action::None
            }
            0x20..=0x7e => {
                if self.line.len() >= LINE_MAX_BYTES {
                    return Action::Bell;
                }
                self.line.push(byte as char);
                Action::Echo(byte)
            }
            _ => Action::None,
        }
    }

    fn finish(&mut self) -> Action {
        let line = core::mem::take(&mut self.line);
        debug_assert!(line.bytes().all(|b| (0x20..=0x7e).contains(&b)));
        Action::Line(line)
    }
}

fn next_escape_state(state: EscapeState, byte: u8) -> EscapeState {
    match (state, byte) {
        (EscapeState::Esc, b'[') => EscapeState::Csi,
        (EscapeState::Csi, 0x40..=0x7e) => EscapeState::Idle,
        (EscapeState::Csi, _) => EscapeState::Csi,
        // ESC followed by anything but '[' is a two-byte sequence (e.g. Alt-x); drop it.
        _ => EscapeState::Idle,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;

    fn feed_all(editor: &mut LineEditor, bytes: &[u8]) -> Vec<Action> {
        bytes.iter().map(|&b| editor.feed(b)).collect()
    }

    fn lines(actions: Vec<Action>) -> Vec<String> {
        actions
            .into_iter()
            .filter_map(|a| match a {
                Action::Line(l) => Some(l),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn typed_line_is_echoed_and_returned_on_enter() {
        let mut editor = LineEditor::new();
        let actions = feed_all(&mut editor, b"help\r");
        assert_eq!(actions[0], Action::Echo(b'h'));
        assert_eq!(actions[4], Action::Line("help".into()));
    }

    #[test]
    fn crlf_is_one_enter_but_two_lfs_are_two() {
        let mut editor = LineEditor::new();
        assert_eq!(lines(feed_all(&mut editor, b"a\r\nb\n\n")), ["a", "b", ""]);
    }

    #[test]
    fn backspace_and_delete_erase_one_character() {
        let mut editor = LineEditor::new();
        let actions = feed_all(&mut editor, b"mex\x08m\x7f\x7fem\r");
        assert!(actions.contains(&Action::Erase));
        assert_eq!(lines(actions), ["mem"]);
    }

    #[test]
    fn backspace_on_empty_line_does_nothing() {
        let mut editor = LineEditor::new();
        assert_eq!(editor.feed(BACKSPACE), Action::None);
        assert_eq!(editor.current(), "");
    }

    #[test]
    fn ctrl_c_clears_the_line() {
        let mut editor = LineEditor::new();
        let actions = feed_all(&mut editor, b"poweroff\x03mem\r");
        assert!(actions.contains(&Action::Cancel));
        assert_eq!(lines(actions), ["mem"]);
    }

    #[test]
    fn arrow_keys_and_control_bytes_are_ignored() {
        let mut editor = LineEditor::new();
        let actions = feed_all(&mut editor, b"up\x1b[A\x1b[1;5C\x00\x07\xff\r");
        assert_eq!(lines(actions), ["up"]);
    }

    #[test]
    fn overlong_line_rings_the_bell_and_keeps_the_prefix() {
        let mut editor = LineEditor::new();
        for _ in 0..LINE_MAX_BYTES {
            assert!(matches!(editor.feed(b'x'), Action::Echo(_)));
        }
        assert_eq!(editor.feed(b'y'), Action::Bell);
        let line = lines(feed_all(&mut editor, b"\r")).remove(0);
        assert_eq!(line.len(), LINE_MAX_BYTES);
        assert!(line.bytes().all(|b| b == b'x'));
    }
}
