//! A circuit breaker per AWS service and region: while AWS is failing (5xx, connection errors,
//! timeouts), pending signals do not each keep calling it; one probe at a time finds out
//! when it is back. Pure: the caller passes the time.
//!
//! Closed → (`open_after` failures in a row) → Open until `now + cooldown` → HalfOpen: one
//! probe may call; its success closes the circuit, its failure opens it again with the
//! cooldown doubled (up to `max_cooldown`). Throttling is neither: AWS answered.
use std::time::{Duration, Instant};

/// What a caller may do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Permit {
    /// Call AWS.
    Call,
    /// Call AWS as the one probe; report its outcome with [`Circuit::record`].
    Probe,
    /// Do not call before this instant.
    WaitUntil(Instant),
}

/// How a call ended, as far as the circuit cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallResult {
    /// AWS answered (success, or an error that is an answer: not found, invalid, throttled…).
    Answered,
    /// AWS did not answer usefully: 5xx, connection refused or reset, timeout.
    Failed,
}

/// A state change worth telling people about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    Opened,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is out since this instant.
    HalfOpen {
        probe_since: Instant,
    },
}

#[derive(Clone, Debug)]
pub struct Circuit {
    state: State,
    cooldown: Duration,
    open_after: u32,
    min_cooldown: Duration,
    max_cooldown: Duration,
}

impl Default for Circuit {
    fn default() -> Self {
        Self::new(5, Duration::from_secs(5), Duration::from_secs(60))
    }
}

impl Circuit {
    pub fn new(open_after: u32, min_cooldown: Duration, max_cooldown: Duration) -> Self {
        Self {
            state: State::Closed { failures: 0 },
            cooldown: min_cooldown,
            open_after: open_after.max(1),
            min_cooldown,
            max_cooldown: max_cooldown.max(min_cooldown),
        }
    }

    /// Whether a call may be made now.
    pub fn permit(&mut self, now: Instant) -> Permit {
        match self.state {
            State::Closed { .. } => Permit::Call,
            State::Open { until } if now < until => Permit::WaitUntil(until),
            State::Open { .. } => {
                self.state = State::HalfOpen { probe_since: now };
                Permit::Probe
            }
            // A probe whose outcome never came back (its task died) is given up after a
            // cooldown, so the circuit cannot stay half-open for ever.
            State::HalfOpen { probe_since } if now >= probe_since + self.max_cooldown => {
                self.state = State::HalfOpen { probe_since: now };
                Permit::Probe
            }
            State::HalfOpen { .. } => Permit::WaitUntil(now + self.cooldown),
        }
    }

    /// The outcome of a call made with a permit.
    pub fn record(&mut self, now: Instant, result: CallResult) -> Option<Change> {
        match (self.state, result) {
            (State::Closed { .. }, CallResult::Answered) => {
                self.state = State::Closed { failures: 0 };
                None
            }
            (State::Closed { failures }, CallResult::Failed) => {
                let failures = failures + 1;
                if failures >= self.open_after {
                    self.cooldown = self.min_cooldown;
                    self.state = State::Open {
                        until: now + self.cooldown,
                    };
                    Some(Change::Opened)
                } else {
                    self.state = State::Closed { failures };
                    None
                }
            }
            (State::HalfOpen { .. } | State::Open { .. }, CallResult::Answered) => {
                self.state = State::Closed { failures: 0 };
                self.cooldown = self.min_cooldown;
                Some(Change::Closed)
            }
            (State::HalfOpen { .. }, CallResult::Failed) => {
                self.cooldown = (self.cooldown * 2).min(self.max_cooldown);
                self.state = State::Open {
                    until: now + self.cooldown,
                };
                None
            }
            // A call let through before the circuit opened, failing late: it stays open.
            (State::Open { .. }, CallResult::Failed) => None,
        }
    }

    pub fn is_open(&self) -> bool {
        !matches!(self.state, State::Closed { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn opens_after_failures_in_a_row_and_lets_one_probe_through() {
        let t0 = Instant::now();
        let mut c = Circuit::new(3, S(5), S(60));
        for _ in 0..2 {
            assert_eq!(c.permit(t0), Permit::Call);
            assert_eq!(c.record(t0, CallResult::Failed), None);
        }
        // An answer in between starts the count again.
        assert_eq!(c.record(t0, CallResult::Answered), None);
        for _ in 0..2 {
            c.record(t0, CallResult::Failed);
        }
        assert_eq!(c.record(t0, CallResult::Failed), Some(Change::Opened));
        assert!(c.is_open());
        assert_eq!(c.permit(t0 + S(1)), Permit::WaitUntil(t0 + S(5)));
        assert_eq!(c.permit(t0 + S(5)), Permit::Probe);
        // Only one probe at a time.
        assert!(matches!(c.permit(t0 + S(5)), Permit::WaitUntil(_)));
        // The probe fails: open again, twice as long.
        assert_eq!(c.record(t0 + S(6), CallResult::Failed), None);
        assert_eq!(c.permit(t0 + S(7)), Permit::WaitUntil(t0 + S(16)));
        assert_eq!(c.permit(t0 + S(16)), Permit::Probe);
        assert_eq!(
            c.record(t0 + S(16), CallResult::Answered),
            Some(Change::Closed)
        );
        assert_eq!(c.permit(t0 + S(16)), Permit::Call);
    }

    #[test]
    fn the_cooldown_is_bounded_and_a_lost_probe_is_replaced() {
        let t0 = Instant::now();
        let mut c = Circuit::new(1, S(5), S(20));
        c.record(t0, CallResult::Failed);
        let mut now = t0;
        for _ in 0..10 {
            let Permit::WaitUntil(until) = c.permit(now) else {
                panic!("open")
            };
            assert!(until - now <= S(20));
            now = until;
            assert_eq!(c.permit(now), Permit::Probe);
            c.record(now, CallResult::Failed);
        }
        // A probe that never reports does not block for ever.
        let Permit::WaitUntil(until) = c.permit(now) else {
            panic!("open")
        };
        assert_eq!(c.permit(until), Permit::Probe);
        assert!(matches!(c.permit(until + S(1)), Permit::WaitUntil(_)));
        assert_eq!(c.permit(until + S(20)), Permit::Probe);
    }

    /// Across many waiting callers, calls while open are one per cooldown.
    #[test]
    fn many_callers_make_one_call_per_cooldown_while_failing() {
        let t0 = Instant::now();
        let mut c = Circuit::default();
        let mut calls = 0;
        let mut now = t0;
        while now < t0 + S(150) {
            for _ in 0..50 {
                match c.permit(now) {
                    Permit::Call | Permit::Probe => {
                        calls += 1;
                        c.record(now, CallResult::Failed);
                    }
                    Permit::WaitUntil(_) => {}
                }
            }
            now += Duration::from_millis(500);
        }
        // 5 to open, then probes at 5, 10, 20, 40, 60, 60… s apart.
        assert!(calls <= 5 + 8, "{calls} calls");
    }
}
