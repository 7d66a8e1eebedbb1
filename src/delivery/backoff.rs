//! Backoff arithmetic and the whole-second time rounding the status needs.
use std::time::Duration;

use k8s_openapi::jiff::{RoundMode, Timestamp, TimestampRound, Unit};

/// The delay before retry number `n` (1-based): exponential with "equal jitter".
///
/// `base = min(max, initial * 2^(n-1))`, `delay = base/2 + jitter * base/2`, so the delay lies
/// in `[base/2, base)`: never shorter than half the exponential step (a storm of retries still
/// spreads out and backs off), never longer than the cap. `n = 0` counts as 1. The doubling
/// saturates at `max` instead of overflowing, however large `n` is. `jitter` is clamped to
/// `[0, 1]`; a NaN or infinite jitter counts as 0.
pub fn backoff(n: u32, initial: Duration, max: Duration, jitter: f64) -> Duration {
    let exp = n.max(1) - 1;
    let base = if exp >= 32 {
        max
    } else {
        initial.checked_mul(1u32 << exp).map_or(max, |d| d.min(max))
    };
    let jitter = if jitter.is_finite() {
        jitter.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let half = base / 2;
    let upper = base - half;
    let extra = Duration::try_from_secs_f64(upper.as_secs_f64() * jitter)
        .unwrap_or(upper)
        .min(upper);
    half + extra
}

fn round(t: Timestamp, mode: RoundMode) -> Timestamp {
    t.round(TimestampRound::new().smallest(Unit::Second).mode(mode))
        .unwrap_or(t)
}

/// `t` rounded down to a whole second: how a past instant is recorded. The status's `Time`
/// serialises whole seconds only, so rounding here makes the status we compute equal to the
/// status we read back.
pub fn floor_second(t: Timestamp) -> Timestamp {
    round(t, RoundMode::Floor)
}

/// `t` rounded up to a whole second: how a future instant that gates an action (the next
/// attempt, a claim's deadline) is recorded, so rounding never makes it come earlier.
pub fn ceil_second(t: Timestamp) -> Timestamp {
    round(t, RoundMode::Ceil)
}

/// `t + d`, saturating at the end of time.
pub fn add(t: Timestamp, d: Duration) -> Timestamp {
    t.saturating_add(d).unwrap_or(Timestamp::MAX)
}
