//! What a cell runs and how it is supervised.
//!
//! [`PayloadSpec`] names an embedded payload program and its arguments; validation applies the
//! limits of [`crate::abi`] so a spec that passes can always be encoded for the `args` syscall.
//! [`RestartPolicy`] is the user-facing choice that [`crate::supervise`] implements.

use alloc::string::{String, ToString};
use alloc::vec;
use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize};

use crate::abi;

/// When a cell that has ended is started again by its node's supervisor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Restart after every exit, clean or not.
    Always,
    /// Restart only after a failure (non-zero exit or fault).
    OnFailure,
    /// Never restart.
    Never,
}

impl RestartPolicy {
    /// Parses the shell spelling: `always`, `on-failure`, `never`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "always" => Some(Self::Always),
            "on-failure" => Some(Self::OnFailure),
            "never" => Some(Self::Never),
            _ => None,
        }
    }

    /// The shell spelling, the inverse of [`RestartPolicy::parse`].
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Always => "always",
            Self::OnFailure => "on-failure",
            Self::Never => "never",
        }
    }
}

/// What a cell runs: a payload program embedded in the kernel, by name, and its arguments.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PayloadSpec {
    /// Payload name, e.g. `hello` or `crasher` (see [`PayloadSpec::validate`] for the charset).
    pub payload: String,
    /// Arguments passed to the payload's `main` (the payload name is not among them).
    pub args: Vec<String>,
}

/// Why a [`PayloadSpec`] was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpecError {
    /// The payload name is empty.
    EmptyName,
    /// The payload name is longer than [`abi::MAX_PAYLOAD_NAME_LEN`].
    NameTooLong,
    /// The name has a byte outside `[a-z0-9_-]` or does not start with a letter.
    BadNameChar,
    /// More than [`abi::MAX_ARGS`] arguments.
    TooManyArgs,
    /// Argument `index` is longer than [`abi::MAX_ARG_LEN`] bytes.
    ArgTooLong { index: usize },
    /// Argument `index` contains a NUL or another control character.
    BadArgChar { index: usize },
    /// The encoded arguments exceed [`abi::MAX_ARGS_BYTES`].
    ArgsTooLarge,
}

impl PayloadSpec {
    /// A spec from a name and arguments (not validated; call [`PayloadSpec::validate`]).
    pub fn new(payload: &str, args: &[&str]) -> Self {
        PayloadSpec {
            payload: payload.to_string(),
            args: args.iter().map(|arg| arg.to_string()).collect(),
        }
    }

    /// Parses the shell form `name arg1 arg2 ...` (whitespace separated, no quoting) and
    /// validates it.
    pub fn parse(text: &str) -> Result<Self, SpecError> {
        let mut words = text.split_whitespace();
        let payload = words.next().ok_or(SpecError::EmptyName)?;
        let args: Vec<&str> = words.collect();
        if args.len() > abi::MAX_ARGS {
            return Err(SpecError::TooManyArgs);
        }
        let spec = PayloadSpec::new(payload, &args);
        spec.validate()?;
        Ok(spec)
    }

    /// Checks the name charset and the argument limits of the ABI, so that
    /// [`PayloadSpec::encode_args`] cannot fail afterwards.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name(&self.payload)?;
        if self.args.len() > abi::MAX_ARGS {
            return Err(SpecError::TooManyArgs);
        }
        let mut blob_len = 0usize;
        for (index, arg) in self.args.iter().enumerate() {
            if arg.len() > abi::MAX_ARG_LEN {
                return Err(SpecError::ArgTooLong { index });
            }
            if arg.chars().any(char::is_control) {
                return Err(SpecError::BadArgChar { index });
            }
            blob_len += arg.len() + 1;
        }
        if blob_len > abi::MAX_ARGS_BYTES {
            return Err(SpecError::ArgsTooLarge);
        }
        Ok(())
    }

    /// The argument blob the kernel hands to the cell (`abi::encode_args` format).
    pub fn encode_args(&self) -> Result<Vec<u8>, SpecError> {
        self.validate()?;
        let mut blob = vec![0u8; abi::MAX_ARGS_BYTES];
        let len = abi::encode_args(self.args.iter().map(String::as_str), &mut blob)
            .map_err(|_| SpecError::ArgsTooLarge)?;
        blob.truncate(len);
        Ok(blob)
    }
}

impl fmt::Display for PayloadSpec {
    /// The shell form, the inverse of [`PayloadSpec::parse`] for valid specs.
    fn fmt(&self, out: &mut fmt::Formatter<'_>) -> fmt::Result {
        out.write_str(&self.payload)?;
        for arg in &self.args {
            write!(out, " {arg}")?;
        }
        Ok(())
    }
}

fn validate_name(name: &str) -> Result<(), SpecError> {
    let first = *name.as_bytes().first().ok_or(SpecError::EmptyName)?;
    if name.len() > abi::MAX_PAYLOAD_NAME_LEN {
        return Err(SpecError::NameTooLong);
    }
    let allowed = |byte: u8| {
        byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-' || byte == b'_'
    };
    if !first.is_ascii_lowercase() || !name.bytes().all(allowed) {
        return Err(SpecError::BadNameChar);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restart_policy_spellings_round_trip() {
        for policy in [
            RestartPolicy::Always,
            RestartPolicy::OnFailure,
            RestartPolicy::Never,
        ] {
            assert_eq!(RestartPolicy::parse(policy.as_str()), Some(policy));
        }
        assert_eq!(RestartPolicy::parse("sometimes"), None);
    }

    #[test]
    fn shell_form_parses_validates_and_prints_back() {
        let spec = PayloadSpec::parse("crasher  pagefault 500").unwrap();
        assert_eq!(spec, PayloadSpec::new("crasher", &["pagefault", "500"]));
        assert_eq!(spec.to_string(), "crasher pagefault 500");
        assert_eq!(spec.encode_args().unwrap(), b"pagefault\x00500\x00");
        assert_eq!(
            PayloadSpec::parse("hello").unwrap().encode_args().unwrap(),
            b""
        );
        assert_eq!(PayloadSpec::parse("   "), Err(SpecError::EmptyName));
    }

    #[test]
    fn names_are_checked() {
        assert_eq!(
            PayloadSpec::new("", &[]).validate(),
            Err(SpecError::EmptyName)
        );
        assert_eq!(
            PayloadSpec::new("Hello", &[]).validate(),
            Err(SpecError::BadNameChar)
        );
        assert_eq!(
            PayloadSpec::new("9lives", &[]).validate(),
            Err(SpecError::BadNameChar)
        );
        assert_eq!(
            PayloadSpec::new("a/b", &[]).validate(),
            Err(SpecError::BadNameChar)
        );
        assert_eq!(PayloadSpec::new("spin-er_2", &[]).validate(), Ok(()));
        let long = "a".repeat(abi::MAX_PAYLOAD_NAME_LEN + 1);
        assert_eq!(
            PayloadSpec::new(&long, &[]).validate(),
            Err(SpecError::NameTooLong)
        );
        let longest = "a".repeat(abi::MAX_PAYLOAD_NAME_LEN);
        assert_eq!(PayloadSpec::new(&longest, &[]).validate(), Ok(()));
    }

    #[test]
    fn argument_limits_come_from_the_abi() {
        let many: Vec<&str> = core::iter::repeat_n("x", abi::MAX_ARGS + 1).collect();
        assert_eq!(
            PayloadSpec::new("hello", &many).validate(),
            Err(SpecError::TooManyArgs)
        );
        assert_eq!(PayloadSpec::new("hello", &many[1..]).validate(), Ok(()));
        let long = "x".repeat(abi::MAX_ARG_LEN + 1);
        assert_eq!(
            PayloadSpec::new("hello", &["ok", &long]).validate(),
            Err(SpecError::ArgTooLong { index: 1 })
        );
        assert_eq!(
            PayloadSpec::new("hello", &["a\0b"]).validate(),
            Err(SpecError::BadArgChar { index: 0 })
        );
        assert_eq!(
            PayloadSpec::new("hello", &["a\nb"]).validate(),
            Err(SpecError::BadArgChar { index: 0 })
        );
        // Sixteen arguments of 128 bytes need 2064 bytes: each fine, together too large.
        let big = "y".repeat(abi::MAX_ARG_LEN);
        let bigs: Vec<&str> = core::iter::repeat_n(big.as_str(), abi::MAX_ARGS).collect();
        assert_eq!(
            PayloadSpec::new("hello", &bigs).validate(),
            Err(SpecError::ArgsTooLarge)
        );
        assert_eq!(
            PayloadSpec::new("hello", &bigs).encode_args(),
            Err(SpecError::ArgsTooLarge)
        );
    }

    #[test]
    fn spec_survives_serde() {
        // postcard is the wire and log encoding of the rest of Xylem.
        let spec = PayloadSpec::new("counter", &["250", ""]);
        let bytes = postcard::to_allocvec(&spec).unwrap();
        assert_eq!(postcard::from_bytes::<PayloadSpec>(&bytes).unwrap(), spec);
        let policy = postcard::to_allocvec(&RestartPolicy::OnFailure).unwrap();
        assert_eq!(
            postcard::from_bytes::<RestartPolicy>(&policy).unwrap(),
            RestartPolicy::OnFailure
        );
    }
}
