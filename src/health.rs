//! Liveness and readiness of the process, as `/healthz` and `/readyz` report them.
//!
//! Liveness: the process's loops (the leader election's, or a ticker's) keep beating.
//! Readiness: every controller cache has been listed once, and the process is not shutting down.
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::info;

/// Liveness fails when the loops have not beaten for this long.
pub const LIVENESS_STALE_AFTER: Duration = Duration::from_secs(60);

struct HealthInner {
    started: Instant,
    /// Milliseconds after `started` of the last beat.
    last_beat_ms: AtomicU64,
    /// Caches (controller reflectors) that must be listed before the process is ready.
    caches: AtomicUsize,
    /// Caches listed at least once.
    synced: AtomicUsize,
    stopping: AtomicBool,
    /// A controller stopped while the process was not shutting down.
    controller_died: AtomicBool,
}

/// What `/healthz` and `/readyz` report. Cheap to clone.
#[derive(Clone)]
pub struct Health(Arc<HealthInner>);

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Health")
            .field("caches", &self.0.caches.load(Ordering::SeqCst))
            .field("synced", &self.0.synced.load(Ordering::SeqCst))
            .field("stopping", &self.0.stopping.load(Ordering::SeqCst))
            .finish()
    }
}

impl Health {
    pub fn new() -> Self {
        Health(Arc::new(HealthInner {
            started: Instant::now(),
            last_beat_ms: AtomicU64::new(0),
            caches: AtomicUsize::new(0),
            synced: AtomicUsize::new(0),
            stopping: AtomicBool::new(false),
            controller_died: AtomicBool::new(false),
        }))
    }

    /// A loop of the process is still turning (the leader election's, or a ticker's).
    pub fn beat(&self) {
        let ms = u64::try_from(self.0.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.0.last_beat_ms.store(ms, Ordering::SeqCst);
    }

    /// Ready only once `n` caches have each reported [`CacheSync::synced`]. Call before any
    /// cache can report.
    pub fn expect_caches(&self, n: usize) {
        self.0.caches.store(n, Ordering::SeqCst);
    }

    /// The handle one cache reports its first complete list through.
    pub fn cache(&self) -> CacheSync {
        CacheSync {
            health: self.clone(),
            done: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Shutting down: no longer ready.
    pub fn set_stopping(&self) {
        self.0.stopping.store(true, Ordering::SeqCst);
    }

    /// A controller ended although nobody asked it to: the process is no longer live, so the
    /// kubelet restarts it.
    pub fn controller_died(&self) {
        self.0.controller_died.store(true, Ordering::SeqCst);
    }

    pub fn is_stopping(&self) -> bool {
        self.0.stopping.load(Ordering::SeqCst)
    }

    pub fn is_live(&self) -> bool {
        if self.0.controller_died.load(Ordering::SeqCst) {
            return false;
        }
        let last = Duration::from_millis(self.0.last_beat_ms.load(Ordering::SeqCst));
        self.0.started.elapsed().saturating_sub(last) < LIVENESS_STALE_AFTER
    }

    pub fn is_ready(&self) -> bool {
        let caches = self.0.caches.load(Ordering::SeqCst);
        caches > 0
            && self.0.synced.load(Ordering::SeqCst) >= caches
            && !self.0.stopping.load(Ordering::SeqCst)
    }
}

/// One cache's readiness: counts once, however often it relists.
#[derive(Clone)]
pub struct CacheSync {
    health: Health,
    done: Arc<AtomicBool>,
}

impl CacheSync {
    pub fn synced(&self) {
        if !self.done.swap(true, Ordering::SeqCst) {
            let synced = self.health.0.synced.fetch_add(1, Ordering::SeqCst) + 1;
            if synced == self.health.0.caches.load(Ordering::SeqCst) {
                info!("caches synced: ready");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_synced_and_not_stopping() {
        let h = Health::new();
        assert!(!h.is_ready());
        h.expect_caches(2);
        let (a, b) = (h.cache(), h.cache());
        a.synced();
        a.synced();
        assert!(!h.is_ready(), "one cache twice is not two caches");
        b.synced();
        assert!(h.is_ready());
        h.set_stopping();
        assert!(!h.is_ready());
    }

    #[test]
    fn live_while_beating() {
        let h = Health::new();
        h.beat();
        assert!(h.is_live());
    }
}
