//! The service object: what an operator asks for, and the rules it must satisfy.
//!
//! A [`ServiceSpec`] names a payload (a program built into the image), its arguments, a replica
//! count with bounds, the restart policy the node supervisor applies to each cell, and a spread
//! preference for placement. [`ServiceSpec::validate`] is called twice, with the same code:
//! before proposing (to give the operator a precise error) and again when a committed command is
//! applied (so nothing invalid ever enters [`crate::desired::DesiredState`], whoever proposed it).
//!
//! The limits below are constants, not configuration, on purpose: apply-time validation must give
//! the same verdict on every node, so it may only depend on replicated inputs and on constants
//! compiled into the one image every node runs. The payload catalog ([`PayloadCatalog`]) is the
//! same kind of input: the set of payload programs built into that image.

use alloc::string::String;
use alloc::vec::Vec;
use cell::spec::RestartPolicy;
use serde::{Deserialize, Serialize};

/// Longest service name, in bytes (names are `[a-z0-9-]`, so bytes = chars).
pub const NAME_LEN_MAX: usize = 32;
/// Longest payload name, in bytes.
pub const PAYLOAD_LEN_MAX: usize = 32;
/// Hard cap on replicas (and so on slots) of one service.
pub const REPLICAS_CAP: u16 = 64;
/// Most arguments a payload may be given.
pub const ARGS_COUNT_MAX: usize = 8;
/// Longest single argument, in bytes.
pub const ARG_LEN_MAX: usize = 64;
/// Memory limit of each cell when the operator names none (`xylem apply … --memory-mib N`).
pub const MEMORY_MIB_DEFAULT: u32 = cell::abi::DEFAULT_MEMORY_LIMIT_MIB;
/// Highest per-cell memory limit a spec may ask for (the kernel's own cap).
pub const MEMORY_MIB_MAX: u32 = cell::abi::MAX_MEMORY_LIMIT_MIB;

/// How placement spreads a service's replicas over nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Spread {
    /// Preference: never two replicas on one node while another eligible node has fewer, but
    /// co-locate rather than leave a slot pending.
    Soft,
    /// Requirement (anti-affinity): at most one replica per node; extra slots stay pending.
    Hard,
}

impl Spread {
    /// The shell spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Soft => "soft",
            Self::Hard => "hard",
        }
    }

    /// Parses the shell spelling, the inverse of [`Spread::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "soft" => Some(Self::Soft),
            "hard" => Some(Self::Hard),
            _ => None,
        }
    }
}

/// A service: a payload with a desired replica count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    /// Unique name, `[a-z0-9-]`, 1..=32 bytes.
    pub name: String,
    /// Name of a payload program in the image's [`PayloadCatalog`].
    pub payload: String,
    /// Arguments passed to the payload (at most [`ARGS_COUNT_MAX`], each ≤ [`ARG_LEN_MAX`]).
    pub args: Vec<String>,
    /// Desired number of cells, in `[min_replicas, max_replicas]`.
    pub replicas: u16,
    /// Lowest replica count `Scale` accepts.
    pub min_replicas: u16,
    /// Highest replica count `Scale` accepts (≤ [`REPLICAS_CAP`]).
    pub max_replicas: u16,
    /// What the node supervisor does when a cell exits.
    pub restart: RestartPolicy,
    /// How placement spreads the replicas.
    pub placement: Spread,
    /// A fenced service never runs two cells of one slot at once, even across a partition:
    /// its cells hold leases (see `crate::lease`) and a slot moves only once the previous
    /// holder surely stopped. Immutable after creation.
    pub fenced: bool,
    /// What each cell may hold (its pages and socket buffers), in MiB, `1..=`[`MEMORY_MIB_MAX`].
    /// Like `restart`, a change applies to cells started from then on (not a rolling update).
    pub memory_mib: u32,
}

/// Why a [`ServiceSpec`] (or a new replica count) is rejected. It travels in a forwarded
/// write's reply, hence serde.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SpecError {
    /// The name is empty.
    NameEmpty,
    /// The name is longer than [`NAME_LEN_MAX`].
    NameTooLong { len: usize },
    /// The name contains a byte outside `[a-z0-9-]`.
    NameBadChar { byte: u8 },
    /// The name starts or ends with `-` (it would read as a flag in the shell).
    NameEdgeHyphen,
    /// The payload is not in the image's catalog.
    UnknownPayload,
    /// `min_replicas > max_replicas`.
    MinAboveMax { min: u16, max: u16 },
    /// `max_replicas` is over [`REPLICAS_CAP`].
    MaxAboveCap { max: u16, cap: u16 },
    /// `replicas` is outside `[min_replicas, max_replicas]`.
    ReplicasOutOfRange { replicas: u16, min: u16, max: u16 },
    /// More than [`ARGS_COUNT_MAX`] arguments.
    TooManyArgs { count: usize },
    /// Argument `index` is longer than [`ARG_LEN_MAX`].
    ArgTooLong { index: usize, len: usize },
    /// `memory_mib` is zero or above [`MEMORY_MIB_MAX`].
    MemoryOutOfRange { mib: u32, max: u32 },
}

/// The payload programs built into the image. Every node runs the same image, so every node
/// holds the same catalog, which keeps apply-time validation deterministic across nodes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PayloadCatalog {
    names: Vec<String>,
}

impl PayloadCatalog {
    /// Builds a catalog from the payload names (duplicates are ignored; order does not matter).
    pub fn new(names: &[&str]) -> Self {
        let mut list: Vec<String> = names.iter().map(|n| String::from(*n)).collect();
        list.sort();
        list.dedup();
        Self { names: list }
    }

    /// Whether `payload` is a known program.
    pub fn contains(&self, payload: &str) -> bool {
        self.names
            .binary_search_by(|n| n.as_str().cmp(payload))
            .is_ok()
    }
}

/// Checks a service name: `[a-z0-9-]`, 1..=[`NAME_LEN_MAX`] bytes, no hyphen at either end.
pub fn validate_name(name: &str) -> Result<(), SpecError> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err(SpecError::NameEmpty);
    }
    if bytes.len() > NAME_LEN_MAX {
        return Err(SpecError::NameTooLong { len: bytes.len() });
    }
    if let Some(&byte) = bytes
        .iter()
        .find(|b| !matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'-'))
    {
        return Err(SpecError::NameBadChar { byte });
    }
    if bytes[0] == b'-' || bytes[bytes.len() - 1] == b'-' {
        return Err(SpecError::NameEdgeHyphen);
    }
    debug_assert!(name.is_ascii());
    Ok(())
}

/// Checks a replica count against bounds (used by `ApplyService` and by `Scale`).
pub fn validate_replicas(replicas: u16, min: u16, max: u16) -> Result<(), SpecError> {
    if min > max {
        return Err(SpecError::MinAboveMax { min, max });
    }
    if max > REPLICAS_CAP {
        return Err(SpecError::MaxAboveCap {
            max,
            cap: REPLICAS_CAP,
        });
    }
    if replicas < min || replicas > max {
        return Err(SpecError::ReplicasOutOfRange { replicas, min, max });
    }
    debug_assert!(replicas <= REPLICAS_CAP);
    Ok(())
}

impl ServiceSpec {
    /// A spec with the defaults the shell uses: no args, bounds `[0, REPLICAS_CAP]`,
    /// restart on failure, soft spread, not fenced, [`MEMORY_MIB_DEFAULT`] per cell. The result
    /// is not validated yet.
    pub fn new(name: &str, payload: &str, replicas: u16) -> Self {
        Self {
            name: String::from(name),
            payload: String::from(payload),
            args: Vec::new(),
            replicas,
            min_replicas: 0,
            max_replicas: REPLICAS_CAP,
            restart: RestartPolicy::OnFailure,
            placement: Spread::Soft,
            fenced: false,
            memory_mib: MEMORY_MIB_DEFAULT,
        }
    }

    /// Validates every field; the first problem found is returned.
    pub fn validate(&self, catalog: &PayloadCatalog) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        if self.payload.len() > PAYLOAD_LEN_MAX || !catalog.contains(&self.payload) {
            return Err(SpecError::UnknownPayload);
        }
        validate_replicas(self.replicas, self.min_replicas, self.max_replicas)?;
        if self.args.len() > ARGS_COUNT_MAX {
            return Err(SpecError::TooManyArgs {
                count: self.args.len(),
            });
        }
        for (index, arg) in self.args.iter().enumerate() {
            if arg.len() > ARG_LEN_MAX {
                return Err(SpecError::ArgTooLong {
                    index,
                    len: arg.len(),
                });
            }
        }
        validate_memory_mib(self.memory_mib)?;
        Ok(())
    }
}

/// Checks a per-cell memory limit: `1..=`[`MEMORY_MIB_MAX`] MiB.
pub fn validate_memory_mib(mib: u32) -> Result<(), SpecError> {
    if mib == 0 || mib > MEMORY_MIB_MAX {
        return Err(SpecError::MemoryOutOfRange {
            mib,
            max: MEMORY_MIB_MAX,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::vec;

    fn catalog() -> PayloadCatalog {
        PayloadCatalog::new(&["echo", "counter", "echo"])
    }

    #[test]
    fn default_spec_is_valid() {
        assert_eq!(
            ServiceSpec::new("web-1", "echo", 2).validate(&catalog()),
            Ok(())
        );
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(validate_name(""), Err(SpecError::NameEmpty));
        assert_eq!(validate_name("a"), Ok(()));
        let long = "a".repeat(NAME_LEN_MAX);
        assert_eq!(validate_name(&long), Ok(()));
        let too_long = "a".repeat(NAME_LEN_MAX + 1);
        assert_eq!(
            validate_name(&too_long),
            Err(SpecError::NameTooLong { len: 33 })
        );
        assert_eq!(
            validate_name("Web"),
            Err(SpecError::NameBadChar { byte: b'W' })
        );
        assert_eq!(
            validate_name("a_b"),
            Err(SpecError::NameBadChar { byte: b'_' })
        );
        assert_eq!(
            validate_name("a b"),
            Err(SpecError::NameBadChar { byte: b' ' })
        );
        assert_eq!(
            validate_name("é"),
            Err(SpecError::NameBadChar { byte: 0xc3 })
        );
        assert_eq!(validate_name("-a"), Err(SpecError::NameEdgeHyphen));
        assert_eq!(validate_name("a-"), Err(SpecError::NameEdgeHyphen));
        assert_eq!(validate_name("0-9"), Ok(()));
    }

    #[test]
    fn payload_must_be_known() {
        let mut spec = ServiceSpec::new("web", "nope", 1);
        assert_eq!(spec.validate(&catalog()), Err(SpecError::UnknownPayload));
        spec.payload = String::from("counter");
        assert_eq!(spec.validate(&catalog()), Ok(()));
        assert_eq!(
            spec.validate(&PayloadCatalog::default()),
            Err(SpecError::UnknownPayload)
        );
    }

    #[test]
    fn replicas_are_bounded() {
        let mut spec = ServiceSpec::new("web", "echo", 3);
        spec.min_replicas = 1;
        spec.max_replicas = 2;
        let err = SpecError::ReplicasOutOfRange {
            replicas: 3,
            min: 1,
            max: 2,
        };
        assert_eq!(spec.validate(&catalog()), Err(err));
        spec.replicas = 0;
        let err = SpecError::ReplicasOutOfRange {
            replicas: 0,
            min: 1,
            max: 2,
        };
        assert_eq!(spec.validate(&catalog()), Err(err));
        spec.min_replicas = 3;
        let err = SpecError::MinAboveMax { min: 3, max: 2 };
        assert_eq!(spec.validate(&catalog()), Err(err));
        spec.min_replicas = 0;
        spec.max_replicas = REPLICAS_CAP + 1;
        let err = SpecError::MaxAboveCap {
            max: 65,
            cap: REPLICAS_CAP,
        };
        assert_eq!(spec.validate(&catalog()), Err(err));
        spec.max_replicas = REPLICAS_CAP;
        spec.replicas = REPLICAS_CAP;
        assert_eq!(spec.validate(&catalog()), Ok(()));
    }

    #[test]
    fn args_are_bounded() {
        let mut spec = ServiceSpec::new("web", "echo", 1);
        spec.args = vec![String::from("x"); ARGS_COUNT_MAX];
        assert_eq!(spec.validate(&catalog()), Ok(()));
        spec.args.push(String::from("x"));
        let err = SpecError::TooManyArgs {
            count: ARGS_COUNT_MAX + 1,
        };
        assert_eq!(spec.validate(&catalog()), Err(err));
        spec.args = vec![String::from("ok"), "y".repeat(ARG_LEN_MAX + 1)];
        let err = SpecError::ArgTooLong {
            index: 1,
            len: ARG_LEN_MAX + 1,
        };
        assert_eq!(spec.validate(&catalog()), Err(err));
        spec.args = vec!["y".repeat(ARG_LEN_MAX)];
        assert_eq!(spec.validate(&catalog()), Ok(()));
    }

    #[test]
    fn memory_limit_is_bounded() {
        let mut spec = ServiceSpec::new("web", "echo", 1);
        assert_eq!(spec.memory_mib, 16);
        for ok in [1, 2, MEMORY_MIB_MAX] {
            spec.memory_mib = ok;
            assert_eq!(spec.validate(&catalog()), Ok(()));
        }
        for bad in [0, MEMORY_MIB_MAX + 1, u32::MAX] {
            spec.memory_mib = bad;
            let err = SpecError::MemoryOutOfRange {
                mib: bad,
                max: MEMORY_MIB_MAX,
            };
            assert_eq!(spec.validate(&catalog()), Err(err));
        }
    }

    #[test]
    fn spread_spelling_round_trips() {
        for spread in [Spread::Soft, Spread::Hard] {
            assert_eq!(Spread::parse(spread.as_str()), Some(spread));
        }
        assert_eq!(Spread::parse("x"), None);
        assert_eq!(format!("{:?}", Spread::Hard), "Hard");
    }
}
