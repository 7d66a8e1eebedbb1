//! Fair turns at a rate limit: namespaces take turns, so one namespace's flood of signals
//! cannot starve another's. Pure: the caller passes the time.
//!
//! Every signal waiting to send is in its namespace's line. Each round of the limiter serves
//! one signal of every namespace that has one waiting, so the `p`-th signal of a namespace
//! (counting from 0) gets its turn after about `p * namespaces / rate` seconds, however long
//! the other namespaces' lines are. A signal asks again when its turn comes; one that stops
//! asking (deleted, or gone to another replica) leaves the line after [`FairTurns::STALE`].
use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

#[derive(Debug, Default)]
pub struct FairTurns {
    /// Per namespace, the names waiting, in the order they first asked, with when each last asked.
    lines: BTreeMap<String, VecDeque<(String, Instant)>>,
}

impl FairTurns {
    /// A waiting signal that has not asked for this long is taken out of its line.
    pub const STALE: Duration = Duration::from_secs(600);

    /// How long `name` in `namespace` should wait before its turn at `rate` calls per second.
    /// Zero: its turn is now (it is at the head of its line).
    pub fn wait(&mut self, namespace: &str, name: &str, rate: f64, now: Instant) -> Duration {
        self.forget_stale(now);
        let line = self.lines.entry(namespace.to_string()).or_default();
        let position = match line.iter().position(|(n, _)| n == name) {
            Some(p) => {
                line[p].1 = now;
                p
            }
            None => {
                line.push_back((name.to_string(), now));
                line.len() - 1
            }
        };
        if position == 0 {
            return Duration::ZERO;
        }
        let namespaces = self.lines.values().filter(|l| !l.is_empty()).count().max(1);
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            1.0
        };
        Duration::from_secs_f64(position as f64 * namespaces as f64 / rate)
    }

    /// `name` sent (or will never send): it leaves its line.
    pub fn done(&mut self, namespace: &str, name: &str) {
        if let Some(line) = self.lines.get_mut(namespace) {
            line.retain(|(n, _)| n != name);
            if line.is_empty() {
                self.lines.remove(namespace);
            }
        }
    }

    fn forget_stale(&mut self, now: Instant) {
        self.lines.retain(|_, line| {
            line.retain(|(_, asked)| now.saturating_duration_since(*asked) < Self::STALE);
            !line.is_empty()
        });
    }

    /// Signals waiting in all lines.
    pub fn waiting(&self) -> usize {
        self.lines.values().map(VecDeque::len).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_in_one_namespace_does_not_delay_another() {
        let now = Instant::now();
        let mut turns = FairTurns::default();
        for i in 0..500 {
            turns.wait("flood", &format!("s-{i}"), 2.5, now);
        }
        // The 500th of the flood waits long; the first of another namespace does not.
        assert!(turns.wait("flood", "s-499", 2.5, now) > Duration::from_secs(150));
        assert_eq!(turns.wait("quiet", "y", 2.5, now), Duration::ZERO);
        // Its second waits one round of two namespaces.
        assert_eq!(
            turns.wait("quiet", "y2", 2.5, now),
            Duration::from_secs_f64(2.0 / 2.5)
        );
        assert_eq!(turns.waiting(), 502);
    }

    #[test]
    fn the_line_moves_as_signals_send() {
        let now = Instant::now();
        let mut turns = FairTurns::default();
        for n in ["a", "b", "c"] {
            turns.wait("ns", n, 1.0, now);
        }
        assert_eq!(turns.wait("ns", "c", 1.0, now), Duration::from_secs(2));
        turns.done("ns", "a");
        assert_eq!(turns.wait("ns", "b", 1.0, now), Duration::ZERO);
        assert_eq!(turns.wait("ns", "c", 1.0, now), Duration::from_secs(1));
        turns.done("ns", "b");
        turns.done("ns", "c");
        assert_eq!(turns.waiting(), 0);
    }

    #[test]
    fn signals_that_stop_asking_leave_the_line() {
        let now = Instant::now();
        let mut turns = FairTurns::default();
        turns.wait("ns", "gone", 1.0, now);
        turns.wait("ns", "stays", 1.0, now);
        let later = now + FairTurns::STALE - Duration::from_secs(1);
        assert_eq!(
            turns.wait("ns", "stays", 1.0, later),
            Duration::from_secs(1)
        );
        let much_later = now + FairTurns::STALE + Duration::from_secs(1);
        assert_eq!(turns.wait("ns", "stays", 1.0, much_later), Duration::ZERO);
    }
}
