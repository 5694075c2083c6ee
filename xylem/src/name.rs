//! The cluster-wide name of a cell: `service/slot@epoch`, for example `web/1@7`.
//!
//! A cell's kernel id is node-local (two nodes both have a cell `1`), but the triple
//! `(service, slot, epoch)` is unique in the whole cluster for as long as the cluster lives:
//! every `Assign` carries a fresh epoch (see [`crate::desired`]), and a node starts at most one
//! cell per binding. `xylem status`, the COM2 events of cells that serve a slot, and the `cell
//! stop|logs` shell commands all use this name. [`CellName::parse`] is the exact inverse of its
//! `Display`, and refuses anything else with a typed [`NameError`].

use crate::service::{validate_name, SpecError, REPLICAS_CAP};
use crate::{Epoch, Slot};
use alloc::string::String;
use core::fmt;

/// `service/slot@epoch`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CellName {
    /// The service the cell serves.
    pub service: String,
    /// Its slot (replica index).
    pub slot: Slot,
    /// The epoch of the binding it was started for.
    pub epoch: Epoch,
}

/// Why text is not a cell name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NameError {
    /// No `/` between service and slot.
    MissingSlot,
    /// No `@` between slot and epoch.
    MissingEpoch,
    /// The service part is not a valid service name.
    Service(SpecError),
    /// The slot is not a number below [`REPLICAS_CAP`].
    BadSlot,
    /// The epoch is not a positive number.
    BadEpoch,
}

impl CellName {
    /// A name from its parts.
    pub fn new(service: &str, slot: Slot, epoch: Epoch) -> Self {
        Self {
            service: String::from(service),
            slot,
            epoch,
        }
    }

    /// Parses `service/slot@epoch` (the inverse of `Display`).
    pub fn parse(text: &str) -> Result<Self, NameError> {
        let (service, rest) = text.split_once('/').ok_or(NameError::MissingSlot)?;
        let (slot, epoch) = rest.split_once('@').ok_or(NameError::MissingEpoch)?;
        validate_name(service).map_err(NameError::Service)?;
        let slot = parse_number(slot)
            .and_then(|s| Slot::try_from(s).ok())
            .filter(|s| *s < REPLICAS_CAP)
            .ok_or(NameError::BadSlot)?;
        let epoch = parse_number(epoch)
            .filter(|e| *e > 0)
            .ok_or(NameError::BadEpoch)?;
        Ok(Self::new(service, slot, epoch))
    }
}

/// A decimal number without sign, spaces or leading zeros (so each name has one spelling).
fn parse_number(text: &str) -> Option<u64> {
    let canonical = !text.is_empty()
        && text.bytes().all(|b| b.is_ascii_digit())
        && (text == "0" || !text.starts_with('0'));
    canonical.then(|| text.parse().ok()).flatten()
}

impl fmt::Display for CellName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.service, self.slot, self.epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::string::ToString;

    #[test]
    fn display_and_parse_are_inverse() {
        for name in [
            CellName::new("web", 1, 7),
            CellName::new("a", 0, 1),
            CellName::new(&"x".repeat(32), 63, u64::MAX),
        ] {
            let text = name.to_string();
            assert_eq!(CellName::parse(&text), Ok(name));
        }
        assert_eq!(CellName::new("web", 1, 7).to_string(), "web/1@7");
    }

    #[test]
    fn malformed_names_are_typed_errors() {
        assert_eq!(CellName::parse("7"), Err(NameError::MissingSlot));
        assert_eq!(CellName::parse("web/1"), Err(NameError::MissingEpoch));
        assert_eq!(
            CellName::parse("Web/1@7"),
            Err(NameError::Service(SpecError::NameBadChar { byte: b'W' }))
        );
        assert_eq!(
            CellName::parse("/1@7"),
            Err(NameError::Service(SpecError::NameEmpty))
        );
        for bad in ["web/x@7", "web/64@7", "web/-1@7", "web/01@7", "web/@7"] {
            assert_eq!(CellName::parse(bad), Err(NameError::BadSlot), "{bad}");
        }
        for bad in [
            "web/1@0",
            "web/1@",
            "web/1@x",
            "web/1@+3",
            "web/1@99999999999999999999",
        ] {
            assert_eq!(CellName::parse(bad), Err(NameError::BadEpoch), "{bad}");
        }
    }
}
