//! The HTTP endpoints: `/metrics` (OpenMetrics text), `/healthz` (liveness) and `/readyz`
//! (readiness). Plain hyper 1: it is already in the dependency tree (kube and the AWS SDK use
//! it), and three fixed routes need no router.
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::CONTENT_TYPE;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tracing::{debug, info};

use crate::metrics::{self, Metrics};

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

    pub fn is_live(&self) -> bool {
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

/// Binds the endpoints' listener (so a bad address fails at start-up).
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let listener = TcpListener::bind(addr).await?;
    info!(address = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    Ok(listener)
}

/// Serves until `stop` resolves.
pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    health: Health,
    stop: impl Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let metrics = metrics.clone();
        let health = health.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req| {
                let response = route(&req, &metrics, &health);
                async move { Ok::<_, Infallible>(response) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(10))
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = conn.await {
                debug!(error = %e, "metrics connection ended");
            }
        });
    }
}

fn route(req: &Request<Incoming>, metrics: &Metrics, health: &Health) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, "GET only\n");
    }
    match req.uri().path() {
        "/metrics" => Response::builder()
            .status(StatusCode::OK)
            .header(CONTENT_TYPE, metrics::CONTENT_TYPE)
            .body(Full::new(Bytes::from(metrics.encode())))
            .expect("a valid response"),
        "/healthz" | "/livez" => {
            if health.is_live() {
                text(StatusCode::OK, "ok\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "loops stalled\n")
            }
        }
        "/readyz" => {
            if health.is_ready() {
                text(StatusCode::OK, "ok\n")
            } else {
                text(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not ready: caches not synced or shutting down\n",
                )
            }
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid response")
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

    #[tokio::test]
    async fn serves_the_three_endpoints() {
        let listener = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let metrics = Metrics::new();
        let health = Health::new();
        health.beat();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, metrics, health.clone(), async {
            let _ = rx.await;
        }));
        let get = |path: &'static str| async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        assert!(get("/healthz").await.starts_with("HTTP/1.1 200"));
        assert!(get("/readyz").await.starts_with("HTTP/1.1 503"));
        health.expect_caches(1);
        health.cache().synced();
        assert!(get("/readyz").await.starts_with("HTTP/1.1 200"));
        let m = get("/metrics").await;
        assert!(m.starts_with("HTTP/1.1 200"));
        assert!(m.contains("application/openmetrics-text"));
        assert!(m.contains("signalman_leader 0"));
        assert!(get("/nope").await.starts_with("HTTP/1.1 404"));
        tx.send(()).unwrap();
        server.await.unwrap();
    }
}
