//! Hardware randomness: RDRAND, with RDSEED as the fallback (Intel SDM vol. 1 §7.3.17; AMD
//! APM vol. 3). Used for TLS key exchange secrets and nonces (`crate::trust`).
//!
//! Both instructions may fail transiently (carry flag clear) when the entropy source is
//! drained; Intel's DRNG guide recommends 10 retries for RDRAND, RDSEED needs more patience.
//! A CPU with neither is a clear error ([`RngError::Unsupported`]): the node then runs no
//! mutual TLS (and so no cluster stack) rather than make keys from a weak source. QEMU's TCG
//! implements RDRAND for `-cpu max` (the harness's CPU model, docs/security.md).

use core::arch::x86_64::{__cpuid, __cpuid_count};
use spin::Once;

/// Which instruction the node uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    Rdrand,
    Rdseed,
}

/// Why no random bytes could be had.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RngError {
    /// The CPU has neither RDRAND nor RDSEED.
    Unsupported,
    /// The instruction kept failing (entropy exhausted or a broken source).
    Exhausted,
}

const RDRAND_RETRIES: u32 = 10;
const RDSEED_RETRIES: u32 = 1000;

static SOURCE: Once<Option<Source>> = Once::new();

/// The source this CPU offers (CPUID.1:ECX[30] RDRAND, CPUID.7.0:EBX[18] RDSEED).
pub fn source() -> Option<Source> {
    *SOURCE.call_once(|| {
        // CPUID is safe on x86_64 (every CPU has it, no side effects).
        let leaf1 = __cpuid(1);
        if leaf1.ecx & (1 << 30) != 0 {
            return Some(Source::Rdrand);
        }
        // Leaf 7 exists when the maximum leaf (leaf 0 EAX) is at least 7.
        let max = __cpuid(0).eax;
        if max >= 7 && __cpuid_count(7, 0).ebx & (1 << 18) != 0 {
            return Some(Source::Rdseed);
        }
        None
    })
}

fn rdrand64() -> Option<u64> {
    let mut value = 0u64;
    for _ in 0..RDRAND_RETRIES {
        // SAFETY: only called when CPUID reports RDRAND; the intrinsic writes `value`.
        if unsafe { core::arch::x86_64::_rdrand64_step(&mut value) } == 1 {
            return Some(value);
        }
    }
    None
}

fn rdseed64() -> Option<u64> {
    let mut value = 0u64;
    for _ in 0..RDSEED_RETRIES {
        // SAFETY: only called when CPUID reports RDSEED; the intrinsic writes `value`.
        if unsafe { core::arch::x86_64::_rdseed64_step(&mut value) } == 1 {
            return Some(value);
        }
        core::hint::spin_loop();
    }
    None
}

/// Fills `buf` with hardware random bytes.
pub fn fill(buf: &mut [u8]) -> Result<(), RngError> {
    let next = match source().ok_or(RngError::Unsupported)? {
        Source::Rdrand => rdrand64,
        Source::Rdseed => rdseed64,
    };
    for chunk in buf.chunks_mut(8) {
        let word = next().ok_or(RngError::Exhausted)?;
        chunk.copy_from_slice(&word.to_le_bytes()[..chunk.len()]);
    }
    Ok(())
}
