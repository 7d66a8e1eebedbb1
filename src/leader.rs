//! Leader election on a `coordination.k8s.io/v1` Lease in the operator's namespace.
//!
//! Only the leader claims and sends; the others watch, keep their caches warm and take over
//! when the leader goes away. The decision (create / acquire / renew / wait) is the pure
//! [`decide`]; [`Elector`] is the thin adapter that reads and writes the Lease.
//!
//! ## Why it is safe
//! - Every write of the Lease is a `replace` conditional on the `resourceVersion` just read (or
//!   a `create`), so of two candidates only one can take a free or expired lease.
//! - A standby judges expiry on **its own monotonic clock**: a lease held by another is expired
//!   only once its record (its `resourceVersion`) has not changed for the record's
//!   `leaseDurationSeconds` since this process first saw it (client-go's rule). No wall clocks
//!   are compared across machines.
//! - The leader acts as leader only until `renew_started + lease_duration - safety_margin`
//!   ([`may_lead`]), where `renew_started` is the instant *before* its last successful write.
//!   Any standby saw that write after it started, so it cannot take over before
//!   `renew_started + lease_duration`: the leader stops claiming at least `safety_margin`
//!   earlier, even while the API server is unreachable (the fence is a timer, not a write).
//! - A send already under way when leadership ends finishes under its claim. Its claim was
//!   written before its deadline minus the claim time-to-live, and the send's hard timeout is
//!   less than half that time-to-live (`--send-timeout-seconds`), so a new leader sees a live
//!   claim and leaves the object alone until the outcome is recorded or the claim is abandoned
//!   (docs/design.md, "Exactly once"). Leadership is the second fence; the conditional claim is the first.
//! - On graceful shutdown the leader first stops leading, waits for its in-flight reconciles
//!   (the caller does), then releases the lease (empty holder), so a standby takes over at once.
//!
//! Two processes with the same identity are one replica restarted: the holder named in the
//! lease takes it back at once, as a restarted pod does with its own claims.
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use tracing::{debug, info, warn};

use crate::health::Health;
use crate::metrics::Metrics;

/// Whether this replica may claim and send; followers verify nothing and write nothing.
/// Set by [`Elector`]; a watch channel so the controllers can look at every object again the
/// moment leadership is won.
#[derive(Clone, Debug)]
pub struct Leadership(Arc<tokio::sync::watch::Sender<bool>>);

impl Leadership {
    pub fn new(leading: bool) -> Self {
        Self(Arc::new(tokio::sync::watch::Sender::new(leading)))
    }
    pub fn is_leader(&self) -> bool {
        *self.0.borrow()
    }
    pub fn set(&self, leading: bool) {
        self.0
            .send_if_modified(|now| std::mem::replace(now, leading) != leading);
    }
    /// Yields each time this replica becomes the leader.
    pub fn won(&self) -> impl futures::Stream<Item = ()> + Send + 'static {
        futures::stream::unfold(self.0.subscribe(), |mut rx| async move {
            loop {
                rx.changed().await.ok()?;
                if *rx.borrow_and_update() {
                    return Some(((), rx));
                }
            }
        })
    }
}

/// The timing of the election.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timing {
    /// How long a lease lasts without renewal (written into the Lease).
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How often a standby looks, and how soon a failed call is tried again.
    pub retry_every: Duration,
    /// How long before its lease could be taken the leader stops acting as leader.
    pub safety_margin: Duration,
}

/// Default lease duration in seconds. A standby takes over at most one look
/// ([`DEFAULT_RETRY_SECONDS`]) plus this long after a leader that died without releasing (an
/// OOM kill, a lost node): 9 s, inside the 10 s within which a new signal must be delivered
/// again. client-go's 15 s would take up to 17 s.
pub const DEFAULT_LEASE_SECONDS: u64 = 8;
/// Default seconds between renewals: two renewals and a retry fit in the 5.3 s the leader may
/// act after a renewal starts, so one slow or failed renewal does not make it step down.
pub const DEFAULT_RENEW_SECONDS: u64 = 2;
/// Default seconds between a standby's looks (and before a failed Lease call is retried).
pub const DEFAULT_RETRY_SECONDS: u64 = 1;

impl Default for Timing {
    fn default() -> Self {
        Self::from_seconds(
            DEFAULT_LEASE_SECONDS,
            DEFAULT_RENEW_SECONDS,
            DEFAULT_RETRY_SECONDS,
        )
    }
}

impl Timing {
    /// Duration, renew and retry in seconds; the safety margin is a third of the duration.
    pub fn from_seconds(lease_duration: u64, renew_every: u64, retry_every: u64) -> Self {
        let lease_duration = Duration::from_secs(lease_duration);
        Self {
            lease_duration,
            renew_every: Duration::from_secs(renew_every),
            retry_every: Duration::from_secs(retry_every),
            safety_margin: lease_duration / 3,
        }
    }

    /// How long after a renewal started its holder may act as leader.
    pub fn leading_for(&self) -> Duration {
        self.lease_duration.saturating_sub(self.safety_margin)
    }

    /// The leader must get at least one retry in after a failed renewal before it steps down.
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_every.is_zero() || self.renew_every.is_zero() {
            return Err("lease renew and retry periods must be positive".into());
        }
        if self.safety_margin.is_zero() || self.safety_margin >= self.lease_duration {
            return Err("the lease duration must be longer than its safety margin".into());
        }
        if self.renew_every + self.retry_every > self.leading_for() {
            return Err(format!(
                "renew ({:?}) plus retry ({:?}) must fit in the lease duration less its safety margin ({:?})",
                self.renew_every,
                self.retry_every,
                self.leading_for()
            ));
        }
        Ok(())
    }
}

/// The Lease as this process last read it, and since when (its own clock) it has looked so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Observed {
    /// `spec.holderIdentity`; `None` or empty: released.
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds` as the holder wrote it.
    pub lease_duration: Option<Duration>,
    /// `metadata.resourceVersion`: changes on every write, renewals included.
    pub version: String,
    /// When this process first read this version.
    pub since: Instant,
}

/// Folds a fresh read into what was observed: the clock restarts only when the record changed.
pub fn observe(
    previous: Option<&Observed>,
    holder: Option<String>,
    lease_duration: Option<Duration>,
    version: String,
    now: Instant,
) -> Observed {
    let since = match previous {
        Some(p) if p.version == version => p.since,
        _ => now,
    };
    Observed {
        holder,
        lease_duration,
        version,
        since,
    }
}

/// What to do with the Lease now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// There is no Lease: create one naming me.
    Create,
    /// Released or expired: take it (conditional on the version read).
    Acquire,
    /// It names me: renew it (conditional on the version read).
    Renew,
    /// Another holder's lease is live: read again after this long.
    Wait(Duration),
}

/// The election's rule, for the Lease as observed (`None`: absent), my identity and the time.
pub fn decide(lease: Option<&Observed>, me: &str, now: Instant, timing: &Timing) -> Decision {
    let Some(lease) = lease else {
        return Decision::Create;
    };
    match lease.holder.as_deref() {
        None | Some("") => Decision::Acquire,
        Some(holder) if holder == me => Decision::Renew,
        Some(_) => {
            let duration = lease
                .lease_duration
                .unwrap_or(timing.lease_duration)
                .max(Duration::from_secs(1));
            let expires = lease.since + duration;
            if now >= expires {
                Decision::Acquire
            } else {
                Decision::Wait((expires - now).min(timing.retry_every))
            }
        }
    }
}

/// Whether a replica whose last successful renewal started at `renewed` may still act as leader
/// at `now`: strictly before `renewed + lease_duration - safety_margin`.
pub fn may_lead(renewed: Option<Instant>, now: Instant, timing: &Timing) -> bool {
    renewed.is_some_and(|r| now < r + timing.leading_for())
}

/// Where the Lease lives and who this replica is.
#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub namespace: String,
    pub name: String,
    pub identity: String,
    pub timing: Timing,
}

/// The adapter: runs the election loop against the API server and sets [`Leadership`].
pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    leadership: Leadership,
    metrics: Metrics,
    health: Health,
    observed: Option<Observed>,
    /// When the last successful write of the Lease (naming me) started.
    renewed: Option<Instant>,
}

/// One Lease call may take this long before it counts as failed.
fn io_timeout(timing: &Timing) -> Duration {
    timing.renew_every.max(Duration::from_secs(1))
}

impl Elector {
    pub fn new(
        client: kube::Client,
        config: LeaseConfig,
        leadership: Leadership,
        metrics: Metrics,
        health: Health,
    ) -> Self {
        leadership.set(false);
        metrics.set_leader(false);
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            leadership,
            metrics,
            health,
            observed: None,
            renewed: None,
        }
    }

    /// Runs the election until `stop` resolves, then releases the lease if held. The caller
    /// resolves `stop` only once in-flight reconciles have finished.
    pub async fn run(mut self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        info!(
            namespace = %self.config.namespace,
            lease = %self.config.name,
            identity = %self.config.identity,
            "leader election started"
        );
        loop {
            let wait = self.round().await;
            let mut wake = Instant::now() + wait;
            if let Some(fence) = self.fence() {
                wake = wake.min(fence);
            }
            tokio::select! {
                _ = &mut stop => break,
                _ = tokio::time::sleep_until(wake.into()) => {}
            }
        }
        self.release().await;
    }

    /// The instant this replica must stop leading, while it leads.
    fn fence(&self) -> Option<Instant> {
        if !self.leadership.is_leader() {
            return None;
        }
        self.renewed.map(|r| r + self.config.timing.leading_for())
    }

    fn step_down(&self, why: &str) {
        if self.leadership.is_leader() {
            self.leadership.set(false);
            self.metrics.set_leader(false);
            warn!(identity = %self.config.identity, why, "no longer the leader: not claiming or sending");
        }
    }

    fn enforce_fence(&self) {
        if self.leadership.is_leader()
            && !may_lead(self.renewed, Instant::now(), &self.config.timing)
        {
            self.step_down("the lease was not renewed in time");
        }
    }

    /// Awaits one Lease call with a timeout; while leading, the fence fires even if the call
    /// hangs.
    async fn bounded<T>(&self, call: impl Future<Output = T>) -> Option<T> {
        let call = tokio::time::timeout(io_timeout(&self.config.timing), call);
        tokio::pin!(call);
        if let Some(fence) = self.fence() {
            tokio::select! {
                result = &mut call => return result.ok(),
                _ = tokio::time::sleep_until(fence.into()) => self.enforce_fence(),
            }
        }
        call.await.ok()
    }

    /// One read and, if the rule says so, one write. Returns how long to wait before the next.
    async fn round(&mut self) -> Duration {
        self.health.beat();
        self.enforce_fence();
        let timing = self.config.timing;
        let lease = match self.bounded(self.api.get_opt(&self.config.name)).await {
            Some(Ok(lease)) => lease,
            Some(Err(e)) => {
                warn!(error = %e, "reading the leader lease failed");
                return timing.retry_every;
            }
            None => {
                warn!("reading the leader lease timed out");
                return timing.retry_every;
            }
        };
        self.enforce_fence();
        let now = Instant::now();
        self.observed = lease.as_ref().map(|l| self.observe(l, now));
        let holder = self.observed.as_ref().and_then(|o| o.holder.clone());
        if holder.as_deref() != Some(self.config.identity.as_str()) {
            self.step_down("another replica holds the lease");
        }
        match decide(self.observed.as_ref(), &self.config.identity, now, &timing) {
            Decision::Wait(wait) => {
                debug!(holder = ?holder, "another replica leads");
                wait
            }
            decision => self.write(lease, decision).await,
        }
    }

    fn observe(&self, lease: &Lease, now: Instant) -> Observed {
        let spec = lease.spec.clone().unwrap_or_default();
        observe(
            self.observed.as_ref(),
            spec.holder_identity,
            spec.lease_duration_seconds
                .map(|s| Duration::from_secs(u64::try_from(s).unwrap_or(0))),
            lease.metadata.resource_version.clone().unwrap_or_default(),
            now,
        )
    }

    /// Creates, takes or renews the Lease naming this replica.
    async fn write(&mut self, current: Option<Lease>, decision: Decision) -> Duration {
        let timing = self.config.timing;
        let started = Instant::now();
        let now = MicroTime(Timestamp::now());
        let mut lease = current.clone().unwrap_or_else(|| Lease {
            metadata: ObjectMeta {
                name: Some(self.config.name.clone()),
                namespace: Some(self.config.namespace.clone()),
                ..Default::default()
            },
            spec: None,
        });
        let old = lease.spec.take().unwrap_or_default();
        let taking = decision != Decision::Renew;
        let changes_hands = taking
            && old
                .holder_identity
                .as_deref()
                .is_some_and(|h| !h.is_empty() && h != self.config.identity);
        lease.spec = Some(LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(timing.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: if taking {
                Some(now.clone())
            } else {
                old.acquire_time.clone()
            },
            renew_time: Some(now),
            lease_transitions: Some(old.lease_transitions.unwrap_or(0) + i32::from(changes_hands)),
            ..old
        });
        let pp = PostParams::default();
        let result = match decision {
            Decision::Create => self.bounded(self.api.create(&pp, &lease)).await,
            _ => {
                self.bounded(self.api.replace(&self.config.name, &pp, &lease))
                    .await
            }
        };
        match result {
            Some(Ok(written)) => {
                self.renewed = Some(started);
                self.observed = Some(self.observe(&written, Instant::now()));
                if !self.leadership.is_leader() {
                    info!(identity = %self.config.identity, ?decision, "became the leader");
                }
                // Set even when already leading: a renewal that started before the fence but
                // finished after it proves nobody took the lease in between.
                if may_lead(self.renewed, Instant::now(), &timing) {
                    self.leadership.set(true);
                    self.metrics.set_leader(true);
                }
                timing.renew_every
            }
            Some(Err(kube::Error::Api(ae))) if ae.code == 409 => {
                debug!(?decision, "the lease changed under us; reading it again");
                self.step_down("the lease changed under us");
                Duration::from_millis(100)
            }
            Some(Err(e)) => {
                warn!(error = %e, ?decision, "writing the leader lease failed");
                timing.retry_every
            }
            None => {
                warn!(?decision, "writing the leader lease timed out");
                timing.retry_every
            }
        }
    }

    /// Stops leading and, if the Lease still names this replica, empties its holder so that a
    /// standby takes over at once. Call only after in-flight reconciles have finished.
    async fn release(&mut self) {
        self.step_down("shutting down");
        let lease = match self.bounded(self.api.get_opt(&self.config.name)).await {
            Some(Ok(Some(lease))) => lease,
            Some(Ok(None)) => return,
            Some(Err(e)) => {
                warn!(error = %e, "reading the lease to release it failed");
                return;
            }
            None => {
                warn!("reading the lease to release it timed out");
                return;
            }
        };
        let mut lease = lease;
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        match self
            .bounded(
                self.api
                    .replace(&self.config.name, &PostParams::default(), &lease),
            )
            .await
        {
            Some(Ok(_)) => info!(lease = %self.config.name, "leader lease released"),
            Some(Err(e)) => warn!(error = %e, "releasing the leader lease failed"),
            None => warn!("releasing the leader lease timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rules below are checked with client-go's familiar 15/5/2 timing, whose numbers
    /// read easily; the defaults have a test of their own.
    fn t() -> Timing {
        Timing::from_seconds(15, 5, 2)
    }

    fn held(holder: Option<&str>, version: &str, since: Instant) -> Observed {
        Observed {
            holder: holder.map(str::to_string),
            lease_duration: Some(Duration::from_secs(15)),
            version: version.into(),
            since,
        }
    }

    #[test]
    fn default_timing_is_the_documented_one_and_valid() {
        let timing = Timing::default();
        assert_eq!(timing.lease_duration, Duration::from_secs(8));
        assert_eq!(timing.renew_every, Duration::from_secs(2));
        assert_eq!(timing.retry_every, Duration::from_secs(1));
        assert_eq!(timing.safety_margin, Duration::from_secs(8) / 3);
        assert!(timing.leading_for() > timing.renew_every * 2 + timing.retry_every);
        assert_eq!(timing.validate(), Ok(()));
    }

    #[test]
    fn timing_that_cannot_renew_before_the_fence_is_refused() {
        assert!(Timing::from_seconds(15, 9, 2).validate().is_err());
        assert!(Timing::from_seconds(15, 5, 0).validate().is_err());
        assert!(Timing::from_seconds(0, 5, 2).validate().is_err());
        assert!(Timing::from_seconds(30, 10, 5).validate().is_ok());
    }

    #[test]
    fn no_lease_is_created() {
        assert_eq!(decide(None, "a", Instant::now(), &t()), Decision::Create);
    }

    #[test]
    fn released_lease_is_taken_at_once() {
        let now = Instant::now();
        for holder in [None, Some("")] {
            let lease = held(holder, "7", now);
            assert_eq!(decide(Some(&lease), "b", now, &t()), Decision::Acquire);
        }
    }

    #[test]
    fn my_lease_is_renewed_even_by_a_restarted_me() {
        let t0 = Instant::now();
        let lease = held(Some("a"), "7", t0);
        assert_eq!(decide(Some(&lease), "a", t0, &t()), Decision::Renew);
        // Long expired: still mine to take back without waiting.
        let later = t0 + Duration::from_secs(600);
        assert_eq!(decide(Some(&lease), "a", later, &t()), Decision::Renew);
    }

    #[test]
    fn a_live_lease_of_another_is_waited_on_no_longer_than_the_retry_period() {
        let t0 = Instant::now();
        let lease = held(Some("a"), "7", t0);
        assert_eq!(
            decide(Some(&lease), "b", t0, &t()),
            Decision::Wait(Duration::from_secs(2))
        );
        assert_eq!(
            decide(Some(&lease), "b", t0 + Duration::from_secs(14), &t()),
            Decision::Wait(Duration::from_secs(1))
        );
    }

    #[test]
    fn an_unchanged_lease_expires_a_lease_duration_after_it_was_first_seen() {
        let t0 = Instant::now();
        let first = observe(None, Some("a".into()), None, "7".into(), t0);
        let same = observe(
            Some(&first),
            Some("a".into()),
            Some(Duration::from_secs(15)),
            "7".into(),
            t0 + Duration::from_secs(10),
        );
        assert_eq!(
            same.since, t0,
            "an unchanged record keeps its first sighting"
        );
        assert_eq!(
            decide(Some(&same), "b", t0 + Duration::from_millis(14_999), &t()),
            Decision::Wait(Duration::from_millis(1))
        );
        assert_eq!(
            decide(Some(&same), "b", t0 + Duration::from_secs(15), &t()),
            Decision::Acquire
        );
    }

    #[test]
    fn a_renewal_restarts_the_standbys_clock() {
        let t0 = Instant::now();
        let first = observe(None, Some("a".into()), None, "7".into(), t0);
        let renewed_at = t0 + Duration::from_secs(12);
        let renewed = observe(
            Some(&first),
            Some("a".into()),
            Some(Duration::from_secs(15)),
            "8".into(),
            renewed_at,
        );
        assert_eq!(renewed.since, renewed_at);
        assert!(matches!(
            decide(Some(&renewed), "b", t0 + Duration::from_secs(20), &t()),
            Decision::Wait(_)
        ));
    }

    #[test]
    fn the_holders_own_duration_counts() {
        let t0 = Instant::now();
        let mut lease = held(Some("a"), "7", t0);
        lease.lease_duration = Some(Duration::from_secs(60));
        assert!(matches!(
            decide(Some(&lease), "b", t0 + Duration::from_secs(30), &t()),
            Decision::Wait(_)
        ));
        lease.lease_duration = Some(Duration::ZERO);
        assert!(matches!(
            decide(Some(&lease), "b", t0, &t()),
            Decision::Wait(_)
        ));
        assert_eq!(
            decide(Some(&lease), "b", t0 + Duration::from_secs(1), &t()),
            Decision::Acquire
        );
    }

    #[test]
    fn the_leader_stops_a_safety_margin_before_its_lease_can_be_taken() {
        let timing = t();
        let r = Instant::now();
        assert!(!may_lead(None, r, &timing), "never renewed: not leading");
        assert!(may_lead(Some(r), r, &timing));
        assert!(may_lead(Some(r), r + Duration::from_millis(9_999), &timing));
        assert!(!may_lead(Some(r), r + Duration::from_secs(10), &timing));
        assert!(!may_lead(Some(r), r + Duration::from_secs(100), &timing));
    }

    #[test]
    fn no_instant_has_two_leaders() {
        // The leader's renewal starts at r; a standby reads the renewed record at some o >= r
        // (it cannot see it earlier) and may take over at o + duration at the earliest. At every
        // instant up to then, at most one of the two acts as leader, with the margin to spare.
        let timing = t();
        let r = Instant::now();
        for seen_after_ms in [0u64, 1, 500, 2_000, 4_999] {
            let o = r + Duration::from_millis(seen_after_ms);
            let observed = held(Some("a"), "8", o);
            for step_ms in (0..30_000u64).step_by(250) {
                let now = r + Duration::from_millis(step_ms);
                let leader = may_lead(Some(r), now, &timing);
                let standby_takes =
                    now >= o && decide(Some(&observed), "b", now, &timing) == Decision::Acquire;
                assert!(
                    !(leader && standby_takes),
                    "two leaders at +{step_ms}ms (seen +{seen_after_ms}ms)"
                );
                if standby_takes {
                    assert!(
                        !may_lead(Some(r), now - timing.safety_margin, &timing),
                        "the margin is kept"
                    );
                }
            }
        }
    }
}
