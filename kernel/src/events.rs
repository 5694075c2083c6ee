//! The machine-readable event log on COM2: one line per event,
//! `t_us=<µs since boot> node=<name> kind=<kind> key=value…`.
//!
//! xtask parses these lines to build timelines and metrics, so the format is an interface:
//! keys are lowercase, values have no spaces, `t_us` comes first.

use core::fmt;

use crate::arch::serial::{self, Line};
use crate::{node, time};

/// Writes one event line.
pub fn emit(kind: &str, fields: fmt::Arguments) {
    serial::write_fmt(
        Line::EventLog,
        format_args!("t_us={} node={} kind={} {}\n", time::now_us(), node::name(), kind, fields),
    );
}
