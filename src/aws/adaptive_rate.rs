//! A client-side rate that adapts to throttling, one per (account, region, operation).
//!
//! It starts as a plain token bucket at the configured rate and burst (so a quota that the
//! configuration already matches behaves as before), with one token in it rather than the
//! whole burst: the first calls are paced, the burst builds up while idle. The first throttling answer switches it
//! to adaptive mode, which works like a TCP sender whose quota is unknown:
//!
//! - **Cut.** A throttle sets the rate to [`BETA`] times the lowest of: the fill rate, the
//!   rate actually being sent (cutting a fill rate the sender does not use would change
//!   nothing), and the rate the service admitted since the last cut (calls accepted ÷ time:
//!   the quota as the service itself enforced it, bucket and all). The bucket shrinks to one
//!   second of the new rate and is emptied, so the next call waits one interval: the service's
//!   own bucket is empty at that moment, and a call sent at once would bounce again.
//! - **One cut per congestion epoch.** Every token carries the instant it was taken (its
//!   [`Permit`]). A throttle of a request sent before the last cut belongs to the congestion
//!   that cut already answered and changes nothing: sixteen requests in flight that all bounce
//!   cut the rate once, not sixteen times (0.85¹⁶ would be a collapse).
//! - **Probe.** Successes raise the rate along a cubic curve centred on the rate of the last
//!   cut: quickly at first, flat near that rate (where the quota was), then faster again to
//!   find out whether the quota has grown. The curve regains the old rate after
//!   [`PROBE_CALLS`] calls' worth of time (at most [`PROBE_MAX_SECS`]), so that at a few calls
//!   per second a cycle of cut and probe spans enough calls that its one throttle stays a
//!   small share of them; at high rates the classic CUBIC constant ([`CUBIC_C`]) makes it
//!   slower still.
//! - **Bounds.** Never above the configured ceiling, never below the floor (a quota that
//!   throttles everything still sees calls at the floor rate, which is how the limiter
//!   notices the quota coming back).
//! - **App-limited.** The probe never lifts the rate above twice what is being sent, so a
//!   quiet period does not grow a rate that was never tried.
//!
//! [`AdaptiveRate`] is the pure core (no clock of its own: every call takes `now`), unit-tested
//! against a simulated server bucket with a hidden rate. [`AdaptiveLimiter`] is the thin async
//! wrapper the AWS callers share: a `std` mutex held for a few arithmetic operations.
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Share of the rate kept by a cut. CUBIC keeps 0.7 of a window that overshot; the rate cut
/// here is already no more than what the service admitted, so a smaller cut leaves enough
/// room for the service's bucket to refill (0.7 lost 10 % of a 2/s quota in simulation).
pub const BETA: f64 = 0.85;
/// CUBIC's scaling constant, rate units per second³.
pub const CUBIC_C: f64 = 0.4;
/// The probe regains the rate of the last cut after at least this many calls' worth of time.
pub const PROBE_CALLS: f64 = 40.0;
/// ...but no more than this many seconds, so that a rate far down (at the floor after a
/// quota that refused everything) does not take many minutes to climb back.
pub const PROBE_MAX_SECS: f64 = 30.0;
/// The floor when none is configured (calls per second); lower if the configured rate is.
pub const DEFAULT_FLOOR: f64 = 0.5;
/// Time constant of the measured sending rate.
const SEND_RATE_WINDOW: Duration = Duration::from_secs(2);
/// In adaptive mode the bucket holds this much time at the current rate (at least one token).
const ADAPTIVE_BURST: Duration = Duration::from_secs(1);

/// The limits of one limiter.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdaptiveConfig {
    /// Calls per second at start, until the first throttle.
    pub initial_rate: f64,
    /// Bucket size at start; in adaptive mode the bucket never exceeds it either.
    pub burst: f64,
    /// Tokens in the bucket when the limiter is made. One by default: the first calls are
    /// paced at the configured rate and the burst builds up while the sender is idle, so a
    /// backlog at start-up does not land on a quota it does not know all at once (in
    /// simulation a full bucket of 25 cost 11 throttles among the first 16 calls).
    pub start_tokens: f64,
    /// The rate never goes above this.
    pub ceiling: f64,
    /// The rate never goes below this.
    pub floor: f64,
}

impl AdaptiveConfig {
    /// Refills at `rate` up to `burst` tokens, starting with one; ceiling = `rate`, floor =
    /// min(0.5/s, `rate`).
    pub fn new(rate: f64, burst: u32) -> Self {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            DEFAULT_FLOOR
        };
        Self {
            initial_rate: rate,
            burst: f64::from(burst.max(1)),
            start_tokens: 1.0,
            ceiling: rate,
            floor: DEFAULT_FLOOR.min(rate),
        }
    }

    pub fn with_ceiling(mut self, ceiling: f64) -> Self {
        self.ceiling = ceiling;
        self
    }

    pub fn with_floor(mut self, floor: f64) -> Self {
        self.floor = floor;
        self
    }

    /// Tokens at start (at most the burst): the burst for a quota known to allow it.
    pub fn with_start_tokens(mut self, tokens: f64) -> Self {
        self.start_tokens = tokens;
        self
    }

    /// Bounds made consistent: 0 < floor ≤ initial ≤ ceiling, burst ≥ 1, start ≤ burst.
    fn normalized(self) -> Self {
        let floor = if self.floor.is_finite() && self.floor > 0.0 {
            self.floor
        } else {
            DEFAULT_FLOOR
        };
        let ceiling = if self.ceiling.is_finite() {
            self.ceiling.max(floor)
        } else {
            f64::MAX
        };
        let burst = if self.burst.is_finite() {
            self.burst.max(1.0)
        } else {
            1.0
        };
        Self {
            initial_rate: self.initial_rate.clamp(floor, ceiling),
            burst,
            start_tokens: if self.start_tokens.is_finite() {
                self.start_tokens.clamp(0.0, burst)
            } else {
                1.0
            },
            ceiling,
            floor,
        }
    }
}

/// What one call that took a token came to, as far as the rate is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The service accepted the call (its answer may still be an error of the call's own, such
    /// as an unknown execution: the quota let it through).
    Accepted,
    /// ThrottlingException or any other throttling answer.
    Throttled,
    /// No answer worth learning from (timeout, connection error, the call was not made).
    Unknown,
}

/// A token taken: when, so that a throttle can be placed in its congestion epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Permit {
    taken_at: Instant,
}

impl Permit {
    /// The instant the token was taken (just before the send).
    pub fn taken_at(&self) -> Instant {
        self.taken_at
    }
}

/// The cubic probe after a cut.
#[derive(Clone, Copy, Debug)]
struct Probe {
    /// When the cut happened; throttles of calls sent before it are of the same epoch.
    cut_at: Instant,
    /// The rate at the cut, where the quota was last found.
    w_max: f64,
    /// Seconds after the cut at which the curve is back at `w_max`.
    k: f64,
    /// The curve's constant, so that it starts at `BETA * w_max` (then held up by the floor).
    c: f64,
}

impl Probe {
    fn rate_at(&self, now: Instant) -> f64 {
        let t = now.saturating_duration_since(self.cut_at).as_secs_f64() - self.k;
        self.c * t * t * t + self.w_max
    }
}

/// The pure limiter: a token bucket whose rate follows throttling. Every method takes `now`.
#[derive(Clone, Debug)]
pub struct AdaptiveRate {
    cfg: AdaptiveConfig,
    rate: f64,
    capacity: f64,
    tokens: f64,
    refilled_at: Instant,
    probe: Option<Probe>,
    /// Exponentially weighted count of tokens taken (÷ window = calls per second).
    sent_weight: f64,
    sent_at: Option<Instant>,
    first_sent: Option<Instant>,
    /// Since the last cut (or the start): when, and how many calls were accepted.
    epoch_start: Instant,
    epoch_accepted: u64,
    throttles: u64,
    cuts: u64,
}

impl AdaptiveRate {
    pub fn new(cfg: AdaptiveConfig, now: Instant) -> Self {
        let cfg = cfg.normalized();
        Self {
            cfg,
            rate: cfg.initial_rate,
            capacity: cfg.burst,
            tokens: cfg.start_tokens,
            refilled_at: now,
            probe: None,
            sent_weight: 0.0,
            sent_at: None,
            first_sent: None,
            epoch_start: now,
            epoch_accepted: 0,
            throttles: 0,
            cuts: 0,
        }
    }

    pub fn config(&self) -> AdaptiveConfig {
        self.cfg
    }

    /// Calls per second the bucket refills at now.
    pub fn current_rate(&self) -> f64 {
        self.rate
    }

    /// Throttling answers recorded (every one, also those of an epoch already cut).
    pub fn throttles(&self) -> u64 {
        self.throttles
    }

    /// Times the rate was cut (at most one per congestion epoch).
    pub fn cuts(&self) -> u64 {
        self.cuts
    }

    /// True once a throttle has switched the limiter to adaptive mode.
    pub fn is_adaptive(&self) -> bool {
        self.probe.is_some()
    }

    fn refill(&mut self, now: Instant) {
        let dt = now
            .saturating_duration_since(self.refilled_at)
            .as_secs_f64();
        self.tokens = (self.tokens + dt * self.rate).min(self.capacity);
        if now > self.refilled_at {
            self.refilled_at = now;
        }
    }

    /// How long until a token is there at today's rate (zero if one is), rounded up so
    /// that asking again after it finds the token.
    fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        if self.tokens >= 1.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64((1.0 - self.tokens) / self.rate) + Duration::from_micros(1)
        }
    }

    /// Takes a token if one is there; otherwise how long until one will be (at today's rate:
    /// ask again then, the rate may have moved).
    pub fn try_acquire(&mut self, now: Instant) -> Result<Permit, Duration> {
        let wait = self.wait(now);
        if !wait.is_zero() {
            return Err(wait);
        }
        self.tokens -= 1.0;
        self.note_sent(now);
        Ok(Permit { taken_at: now })
    }

    /// The instant the next token will be there at today's rate (`now` if one is).
    pub fn next_token_at(&mut self, now: Instant) -> Instant {
        now + self.wait(now)
    }

    fn note_sent(&mut self, now: Instant) {
        self.sent_weight = self.sent_weight_at(now) + 1.0;
        self.sent_at = Some(now);
        self.first_sent.get_or_insert(now);
    }

    fn sent_weight_at(&self, now: Instant) -> f64 {
        match self.sent_at {
            Some(at) => {
                let dt = now.saturating_duration_since(at).as_secs_f64();
                self.sent_weight * (-dt / SEND_RATE_WINDOW.as_secs_f64()).exp()
            }
            None => 0.0,
        }
    }

    /// Calls per second actually sent lately (tokens taken, exponentially weighted over a
    /// couple of seconds, corrected for a history shorter than that).
    pub fn send_rate(&self, now: Instant) -> f64 {
        let Some(first) = self.first_sent else {
            return 0.0;
        };
        let tau = SEND_RATE_WINDOW.as_secs_f64();
        let age = now.saturating_duration_since(first).as_secs_f64();
        // A history of `age` seconds can have gathered only this share of the full weight.
        let seen = 1.0 - (-age / tau).exp();
        if seen < 1e-3 {
            return self.rate;
        }
        self.sent_weight_at(now) / tau / seen
    }

    fn set_rate(&mut self, rate: f64, now: Instant) {
        self.refill(now);
        self.rate = rate.clamp(self.cfg.floor, self.cfg.ceiling);
        if self.probe.is_some() {
            self.capacity = (self.rate * ADAPTIVE_BURST.as_secs_f64()).clamp(1.0, self.cfg.burst);
            self.tokens = self.tokens.min(self.capacity);
        }
    }

    /// A call sent with a token was accepted: probe up (only once adaptive).
    pub fn on_success(&mut self, now: Instant) {
        self.epoch_accepted += 1;
        let Some(probe) = self.probe else {
            return;
        };
        let target = probe.rate_at(now);
        if target > self.rate {
            let room = (2.0 * self.send_rate(now)).max(self.rate);
            self.set_rate(target.min(room), now);
        }
    }

    /// A call whose token was taken at `sent_at` was throttled. Cuts the rate unless the call
    /// left before the last cut (same congestion epoch). Returns whether it cut.
    pub fn on_throttle(&mut self, sent_at: Instant, now: Instant) -> bool {
        self.throttles += 1;
        if let Some(p) = self.probe {
            if sent_at < p.cut_at {
                return false;
            }
        }
        // The rate to cut from: the fill rate, unless less was sent or admitted. Admitted =
        // calls accepted since the last cut over the time since, one more than seen so that a
        // short epoch does not read as a quota of nothing; half of one when none was accepted
        // at all (a rate far above the quota, coming down after a burst, halves at once
        // instead of stepping down by BETA with a throttle each step).
        let sending = self.send_rate(now);
        let epoch = now
            .saturating_duration_since(self.epoch_start)
            .as_secs_f64();
        let admitted = if epoch > 0.0 {
            let unseen = if self.epoch_accepted == 0 { 0.5 } else { 1.0 };
            (self.epoch_accepted as f64 + unseen) / epoch
        } else {
            f64::INFINITY
        };
        let base = self
            .rate
            .min(if sending > 0.0 {
                sending
            } else {
                f64::INFINITY
            })
            .min(admitted)
            .max(self.cfg.floor);
        let cut_to = (base * BETA).max(self.cfg.floor);
        let w_max = base;
        // The curve's depth is that of an ordinary cut even when the floor holds the rate up,
        // so that a rate cut at the floor still probes upward afterwards.
        let depth = w_max * (1.0 - BETA);
        let k = (depth / CUBIC_C)
            .cbrt()
            .max((PROBE_CALLS / w_max).min(PROBE_MAX_SECS));
        let probe = Probe {
            cut_at: now,
            w_max,
            k,
            c: depth / (k * k * k),
        };
        self.probe = Some(probe);
        self.epoch_start = now;
        self.epoch_accepted = 0;
        self.cuts += 1;
        self.set_rate(cut_to, now);
        // The service's bucket is empty now; a call sent before it has had one interval at
        // the new rate to refill would bounce too, and count as a new epoch.
        self.tokens = self.tokens.min(0.0);
        true
    }

    /// [`Self::on_success`] or [`Self::on_throttle`] by outcome.
    pub fn record(&mut self, permit: Permit, outcome: Outcome, now: Instant) {
        match outcome {
            Outcome::Accepted => self.on_success(now),
            Outcome::Throttled => {
                self.on_throttle(permit.taken_at, now);
            }
            Outcome::Unknown => {}
        }
    }
}

/// The shared, async face of [`AdaptiveRate`]: `acquire` right before the send, `record`
/// with the answer.
#[derive(Debug)]
pub struct AdaptiveLimiter {
    core: Mutex<AdaptiveRate>,
}

impl AdaptiveLimiter {
    pub fn new(cfg: AdaptiveConfig) -> Self {
        Self {
            core: Mutex::new(AdaptiveRate::new(cfg, Instant::now())),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AdaptiveRate> {
        // The core is left consistent between statements, so a panic elsewhere while holding
        // the lock cannot leave it half-updated; keep limiting rather than propagate.
        self.core.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Waits until a token is there and takes it. Cancel-safe: a dropped wait takes nothing.
    /// Waiters look again after each sleep, so a cut made meanwhile applies to them.
    pub async fn acquire(&self) -> Permit {
        loop {
            let wait = match self.lock().try_acquire(Instant::now()) {
                Ok(permit) => return permit,
                Err(wait) => wait,
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// A token now, or `None` without waiting.
    pub fn try_acquire(&self) -> Option<Permit> {
        self.lock().try_acquire(Instant::now()).ok()
    }

    /// The answer to the call sent with `permit`.
    pub fn record(&self, permit: Permit, outcome: Outcome) {
        self.lock().record(permit, outcome, Instant::now());
    }

    /// Calls per second now (for a gauge).
    pub fn current_rate(&self) -> f64 {
        self.lock().current_rate()
    }

    /// Throttling answers recorded so far (for a counter).
    pub fn throttles(&self) -> u64 {
        self.lock().throttles()
    }

    /// Rate cuts so far (at most one per congestion epoch).
    pub fn cuts(&self) -> u64 {
        self.lock().cuts()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use super::*;

    /// The service's side: a token bucket whose size and rate the client does not know.
    struct Server {
        bucket: f64,
        rate: f64,
        tokens: f64,
        at: Duration,
    }

    impl Server {
        fn new(bucket: f64, rate: f64) -> Self {
            Self {
                bucket,
                rate,
                tokens: bucket,
                at: Duration::ZERO,
            }
        }

        fn refill(&mut self, at: Duration) {
            let dt = at.saturating_sub(self.at).as_secs_f64();
            self.tokens = (self.tokens + dt * self.rate).min(self.bucket);
            self.at = self.at.max(at);
        }

        fn admit(&mut self, at: Duration) -> bool {
            self.refill(at);
            if self.tokens >= 1.0 {
                self.tokens -= 1.0;
                true
            } else {
                false
            }
        }

        fn change(&mut self, at: Duration, bucket: f64, rate: f64) {
            self.refill(at);
            self.bucket = bucket;
            self.rate = rate;
        }
    }

    struct Call {
        sent: Duration,
        admitted: bool,
    }

    /// A client with a backlog that never runs dry: `concurrency` calls at most in flight,
    /// each answered `rtt` after it left, every call taking a token right before it leaves.
    struct Sim {
        t0: Instant,
        now: Duration,
        lim: AdaptiveRate,
        server: Server,
        rtt: Duration,
        concurrency: usize,
        in_flight: VecDeque<(Duration, Permit, bool)>,
        calls: Vec<Call>,
        rates: Vec<(Duration, f64)>,
    }

    impl Sim {
        fn new(cfg: AdaptiveConfig, server: Server) -> Self {
            let t0 = Instant::now();
            Self {
                t0,
                now: Duration::ZERO,
                lim: AdaptiveRate::new(cfg, t0),
                server,
                rtt: Duration::from_millis(20),
                concurrency: 16,
                in_flight: VecDeque::new(),
                calls: Vec::new(),
                rates: Vec::new(),
            }
        }

        fn run_until(&mut self, end: Duration) {
            let mut next_sample = self
                .rates
                .last()
                .map_or(Duration::ZERO, |(t, _)| *t + Duration::from_secs(1));
            loop {
                while next_sample <= self.now {
                    self.rates.push((next_sample, self.lim.current_rate()));
                    next_sample += Duration::from_secs(1);
                }
                let mut next_send = None;
                if self.in_flight.len() < self.concurrency {
                    match self.lim.try_acquire(self.t0 + self.now) {
                        Ok(permit) => {
                            // The server decides when the call arrives, half a round trip on.
                            let admitted = self.server.admit(self.now + self.rtt / 2);
                            self.calls.push(Call {
                                sent: self.now,
                                admitted,
                            });
                            self.in_flight
                                .push_back((self.now + self.rtt, permit, admitted));
                            continue;
                        }
                        Err(wait) => next_send = Some(self.now + wait),
                    }
                }
                let next_answer = self.in_flight.front().map(|a| a.0);
                let next = match (next_send, next_answer) {
                    (Some(a), Some(b)) => a.min(b),
                    (a, b) => a.or(b).expect("something is always due"),
                };
                if next > end {
                    self.now = end;
                    return;
                }
                self.now = next;
                if next_answer == Some(next) {
                    let (_, permit, admitted) = self.in_flight.pop_front().expect("an answer");
                    let outcome = if admitted {
                        Outcome::Accepted
                    } else {
                        Outcome::Throttled
                    };
                    self.lim.record(permit, outcome, self.t0 + self.now);
                }
            }
        }

        /// (calls sent, throttled, admitted) among calls sent in [from, to).
        fn counts(&self, from: Duration, to: Duration) -> (usize, usize, usize) {
            let window: Vec<&Call> = self
                .calls
                .iter()
                .filter(|c| c.sent >= from && c.sent < to)
                .collect();
            let admitted = window.iter().filter(|c| c.admitted).count();
            (window.len(), window.len() - admitted, admitted)
        }

        /// Admitted calls in [from, to) ÷ what a rate of `rate` admits in that time.
        fn share(&self, from: Duration, to: Duration, rate: f64) -> f64 {
            self.counts(from, to).2 as f64 / (rate * (to - from).as_secs_f64())
        }

        fn throttled_share(&self, from: Duration, to: Duration) -> f64 {
            let (sent, throttled, _) = self.counts(from, to);
            throttled as f64 / sent.max(1) as f64
        }

        fn min_rate_after(&self, from: Duration) -> f64 {
            self.rates
                .iter()
                .filter(|(t, _)| *t >= from)
                .map(|(_, r)| *r)
                .fold(f64::INFINITY, f64::min)
        }
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    /// A backlogged client at `initial`/s (bucket `burst`) against a hidden quota of `hidden`
    /// calls per second with a bucket of as many, for `seconds`. Returns (share of what the
    /// quota admits over the whole run, throttled share of all calls, share over the second
    /// half) and prints the figures (`--nocapture` shows them).
    fn converge(initial: f64, burst: u32, hidden: f64, seconds: u64) -> (f64, f64, f64, Sim) {
        let mut sim = Sim::new(
            AdaptiveConfig::new(initial, burst),
            Server::new(hidden, hidden),
        );
        let end = secs(seconds);
        sim.run_until(end);
        let (_, _, admitted) = sim.counts(Duration::ZERO, end);
        let whole = admitted as f64 / (hidden + hidden * end.as_secs_f64());
        let throttled = sim.throttled_share(Duration::ZERO, end);
        let late = sim.share(end / 2, end, hidden);
        // The first 100 calls: what a benchmark of 100 signals sees.
        let first: Vec<&Call> = sim.calls.iter().take(100).collect();
        let first_throttled = first.iter().filter(|c| !c.admitted).count();
        let first_end = first.last().map_or(Duration::ZERO, |c| c.sent);
        eprintln!(
            "initial {initial}/s burst {burst}, hidden {hidden}/s (bucket {hidden}): \
             {:.1} % of the quota over {seconds} s, {:.2} % of {} calls throttled ({} cuts), \
             second half {:.1} %; first 100 calls: {first_throttled} throttled, {:.1} s; \
             rate at the end {:.2}/s",
            whole * 100.0,
            throttled * 100.0,
            sim.calls.len(),
            sim.lim.cuts(),
            late * 100.0,
            first_end.as_secs_f64(),
            sim.lim.current_rate()
        );
        (whole, throttled, late, sim)
    }

    #[test]
    fn converges_to_a_hidden_quota_below_the_configured_rate() {
        // SWF's default of 25/s against an unknown 5/s quota (bucket 5).
        let (whole, throttled, late, sim) = converge(25.0, 25, 5.0, 300);
        assert!(whole >= 0.9, "{whole}");
        assert!(throttled <= 0.05, "{throttled}");
        assert!(late >= 0.9, "{late}");
        let rate = sim.lim.current_rate();
        assert!((3.0..=8.0).contains(&rate), "{rate}");
    }

    #[test]
    fn converges_at_a_few_calls_per_second() {
        // SSM's default of 2.5/s against a 3/s quota that others use a third of.
        let (whole, throttled, late, _) = converge(2.5, 3, 2.0, 600);
        assert!(whole >= 0.9, "{whole}");
        assert!(throttled <= 0.05, "{throttled}");
        assert!(late >= 0.9, "{late}");
        let (whole, throttled, late, _) = converge(2.5, 3, 1.5, 600);
        assert!(whole >= 0.9, "{whole}");
        assert!(throttled <= 0.05, "{throttled}");
        assert!(late >= 0.9, "{late}");
    }

    #[test]
    fn a_quota_of_one_call_with_a_bucket_of_one_is_the_hard_case() {
        // A bucket of one call absorbs none of the probe's slow climb back, so part of the
        // quota goes unused: a known limit, pinned here so that it cannot get worse unseen.
        let (whole, throttled, _, _) = converge(2.5, 3, 1.0, 600);
        assert!(whole >= 0.85, "{whole}");
        assert!(throttled <= 0.05, "{throttled}");
    }

    #[test]
    fn converges_at_hundreds_of_calls_per_second() {
        let (whole, throttled, late, _) = converge(1000.0, 1000, 200.0, 120);
        assert!(whole >= 0.9, "{whole}");
        assert!(throttled <= 0.05, "{throttled}");
        assert!(late >= 0.9, "{late}");
    }

    #[test]
    fn recovers_when_the_hidden_quota_rises() {
        let cfg = AdaptiveConfig::new(5.0, 5).with_ceiling(25.0);
        let mut sim = Sim::new(cfg, Server::new(2.0, 2.0));
        sim.run_until(secs(200));
        let before = sim.share(secs(100), secs(200), 2.0);
        sim.server.change(secs(200), 10.0, 10.0);
        sim.run_until(secs(400));
        // Time until the rate first reached 90 % of the new quota.
        let reached = sim
            .rates
            .iter()
            .find(|(t, r)| *t >= secs(200) && *r >= 9.0)
            .map(|(t, _)| (*t - secs(200)).as_secs_f64());
        let after = sim.share(secs(300), secs(400), 10.0);
        let throttled = sim.throttled_share(secs(200), secs(400));
        eprintln!(
            "quota 2/s then 10/s: {:.1} % of 2/s before, 90 % of 10/s reached after {reached:?} s, \
             {:.1} % of 10/s in the last 100 s, {:.2} % throttled since the rise",
            before * 100.0,
            after * 100.0,
            throttled * 100.0
        );
        assert!(before >= 0.9, "{before}");
        assert!(reached.is_some_and(|s| s <= 60.0), "{reached:?}");
        assert!(after >= 0.9, "{after}");
        assert!(throttled <= 0.05, "{throttled}");
        assert!(sim.rates.iter().all(|(_, r)| *r <= 25.0));
    }

    #[test]
    fn never_collapses_under_persistent_throttling() {
        let cfg = AdaptiveConfig::new(25.0, 25).with_floor(0.5);
        let mut sim = Sim::new(cfg, Server::new(0.0, 0.0));
        sim.run_until(secs(300));
        let lowest = sim.min_rate_after(Duration::ZERO);
        let (sent, throttled, _) = sim.counts(secs(200), secs(300));
        eprintln!(
            "everything throttled: lowest rate {lowest}/s, {sent} calls in the last 100 s, {} cuts",
            sim.lim.cuts()
        );
        assert!(lowest >= 0.5, "{lowest}");
        assert_eq!(sim.lim.current_rate(), 0.5);
        // Still calling at the floor: that is how a quota coming back would be noticed.
        assert!((45..=55).contains(&sent), "{sent}");
        assert_eq!(throttled, sent);
        // And it does notice: the quota returns and the rate climbs off the floor, without a
        // throttle (slowly: the probe spends up to 30 s near each rate it found).
        sim.server.change(secs(300), 5.0, 5.0);
        sim.run_until(secs(900));
        let at = |s: u64| {
            sim.rates
                .iter()
                .find(|(t, _)| *t >= secs(s))
                .map_or(f64::NAN, |(_, r)| *r)
        };
        eprintln!(
            "quota back at 5/s after 300 s: rate {:.2}/s at 400 s, {:.2}/s at 600 s, {:.2}/s at 900 s, {} throttled since",
            at(400),
            at(600),
            at(899),
            sim.counts(secs(301), secs(900)).1
        );
        assert!(at(400) > 1.0, "{}", at(400));
        assert!(at(899) >= 4.5, "{}", at(899));
    }

    #[test]
    fn a_burst_of_simultaneous_throttles_cuts_once() {
        let t0 = Instant::now();
        let cfg = AdaptiveConfig::new(20.0, 20).with_start_tokens(20.0);
        let mut lim = AdaptiveRate::new(cfg, t0);
        let permits: Vec<Permit> = (0..16)
            .map(|_| lim.try_acquire(t0).expect("a token from the burst"))
            .collect();
        let answered = t0 + Duration::from_millis(30);
        let cuts: Vec<bool> = permits
            .iter()
            .map(|p| lim.on_throttle(p.taken_at(), answered))
            .collect();
        assert_eq!(cuts.iter().filter(|c| **c).count(), 1, "{cuts:?}");
        assert!(cuts[0]);
        assert_eq!(lim.cuts(), 1);
        assert_eq!(lim.throttles(), 16);
        // Cut once, from what the service admitted in the 30 ms since the start: nothing (half
        // a call counted), below the 20/s that was configured.
        let rate = lim.current_rate();
        let expected = (0.5 / 0.030_f64).min(20.0) * BETA;
        assert!((rate - expected).abs() < 1e-6, "{rate} vs {expected}");
        // The next call waits one interval at the new rate, then a throttle of a call sent
        // after the cut is a new epoch and cuts again.
        let wait = lim
            .try_acquire(answered)
            .expect_err("the cut empties the bucket");
        assert!(
            (wait.as_secs_f64() - 1.0 / rate).abs() < 1e-3,
            "{wait:?} for {rate}/s"
        );
        let later = answered + wait;
        let p = lim.try_acquire(later).expect("a token after one interval");
        assert!(lim.on_throttle(p.taken_at(), later + Duration::from_millis(30)));
        assert_eq!(lim.cuts(), 2);
        assert!(lim.current_rate() < rate);
    }

    #[test]
    fn is_a_plain_bucket_at_the_configured_rate_until_throttled() {
        let t0 = Instant::now();
        let mut lim = AdaptiveRate::new(AdaptiveConfig::new(10.0, 3), t0);
        // One token at start, then the bucket fills at the rate up to the burst.
        lim.try_acquire(t0).expect("the first token");
        assert!(lim.try_acquire(t0).is_err());
        let t0 = t0 + Duration::from_secs(1);
        for _ in 0..3 {
            lim.try_acquire(t0)
                .expect("the burst, built up in a second");
        }
        let wait = lim.try_acquire(t0).expect_err("the burst is spent");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-3, "{wait:?}");
        assert_eq!(lim.next_token_at(t0), t0 + wait);
        // Successes before any throttle change nothing: the configured rate is the ceiling.
        let mut now = t0;
        for _ in 0..1000 {
            now += Duration::from_millis(100);
            let p = lim.try_acquire(now).expect("one token per interval");
            lim.record(p, Outcome::Accepted, now);
            lim.record(p, Outcome::Unknown, now);
        }
        assert_eq!(lim.current_rate(), 10.0);
        assert!(!lim.is_adaptive());
        assert_eq!((lim.throttles(), lim.cuts()), (0, 0));
    }

    #[test]
    fn never_rises_above_the_ceiling() {
        // One early throttle, then a quota far above the ceiling.
        let cfg = AdaptiveConfig::new(10.0, 10).with_ceiling(40.0);
        let mut sim = Sim::new(cfg, Server::new(0.0, 0.0));
        sim.run_until(secs(1));
        sim.server.change(secs(1), 1000.0, 1000.0);
        sim.run_until(secs(300));
        assert!(sim.lim.cuts() >= 1);
        let top = sim.rates.iter().map(|(_, r)| *r).fold(0.0, f64::max);
        assert!(top <= 40.0, "{top}");
        assert_eq!(sim.lim.current_rate(), 40.0);
    }

    #[test]
    fn an_idle_sender_does_not_grow_its_rate() {
        let t0 = Instant::now();
        let cfg = AdaptiveConfig::new(10.0, 10).with_ceiling(100.0);
        let mut lim = AdaptiveRate::new(cfg, t0);
        let p = lim.try_acquire(t0).expect("a token");
        lim.on_throttle(p.taken_at(), t0 + Duration::from_millis(20));
        let cut = lim.current_rate();
        assert!((cut - 10.0 * BETA).abs() < 1e-9, "{cut}");
        // One call a second for ten minutes, all accepted: the cubic curve alone would be at
        // the ceiling by then; the rate does not grow past what is sent (twice it, at most).
        let mut now = t0;
        for _ in 0..600 {
            now += secs(1);
            let p = lim.try_acquire(now).expect("a token");
            lim.record(p, Outcome::Accepted, now + Duration::from_millis(20));
        }
        assert_eq!(lim.current_rate(), cut);
    }

    #[test]
    fn odd_configurations_are_made_safe() {
        let t0 = Instant::now();
        let lim = AdaptiveRate::new(AdaptiveConfig::new(f64::NAN, 0), t0);
        assert!(lim.current_rate() > 0.0);
        let cfg = AdaptiveConfig::new(5.0, 5)
            .with_floor(10.0)
            .with_ceiling(2.0);
        let lim = AdaptiveRate::new(cfg, t0);
        let c = lim.config();
        assert!(
            c.floor <= c.initial_rate && c.initial_rate <= c.ceiling,
            "{c:?}"
        );
        assert!(c.burst >= 1.0);
    }

    #[tokio::test]
    async fn the_async_limiter_spaces_calls_and_learns_from_answers() {
        let lim = std::sync::Arc::new(AdaptiveLimiter::new(AdaptiveConfig::new(50.0, 1)));
        let started = Instant::now();
        let tasks: Vec<_> = (0..4)
            .map(|_| {
                let lim = lim.clone();
                tokio::spawn(async move { lim.acquire().await })
            })
            .collect();
        let mut permits = Vec::new();
        for t in tasks {
            permits.push(t.await.expect("the task"));
        }
        // One token at once, then one per 20 ms.
        assert!(
            started.elapsed() >= Duration::from_millis(55),
            "{:?}",
            started.elapsed()
        );
        for p in &permits {
            lim.record(*p, Outcome::Throttled);
        }
        assert_eq!(lim.throttles(), 4);
        assert_eq!(lim.cuts(), 1);
        assert!(lim.current_rate() < 50.0);
        assert!(lim.try_acquire().is_none(), "the cut empties the bucket");
    }
}
