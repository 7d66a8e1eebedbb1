//! A watch on one kind in one namespace that timestamps what the operator writes: when each
//! object's claim (`Sending`) and its `Ready=True` are first seen, and how many versions of it
//! the API server produced (every status write is one new `resourceVersion`).
use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use futures::StreamExt;
use kube::api::Api;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use signalman::api::{AutomationSignal, Phase, SignalStatus, WorkflowSignal};
use tokio::sync::Notify;

/// What the watch saw of one object.
#[derive(Clone, Debug)]
pub struct Seen {
    /// Distinct resourceVersions seen, its creation included.
    pub versions: u32,
    last_rv: String,
    pub sending_at: Option<Instant>,
    pub ready_at: Option<Instant>,
    pub terminal_at: Option<Instant>,
    pub phase: Option<Phase>,
    pub attempts: u32,
    pub throttled_retries: u32,
    /// The Stalled reason of a failed signal.
    pub failure: Option<String>,
}

impl Seen {
    /// Status writes after creation (each one a new version).
    pub fn status_writes(&self) -> u32 {
        self.versions.saturating_sub(1)
    }
}

/// The two kinds, as far as the tracker cares.
pub trait Signal:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync
{
    fn signal_status(&self) -> Option<&SignalStatus>;
}
impl Signal for WorkflowSignal {
    fn signal_status(&self) -> Option<&SignalStatus> {
        self.status.as_ref()
    }
}
impl Signal for AutomationSignal {
    fn signal_status(&self) -> Option<&SignalStatus> {
        self.status.as_ref()
    }
}

#[derive(Default)]
struct State {
    objects: HashMap<String, Seen>,
    synced: bool,
}

/// The watch and what it saw so far.
pub struct Tracker {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

fn condition_true(status: &SignalStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

impl Tracker {
    /// Starts watching and returns once the initial list is in.
    pub async fn start<K: Signal + 'static>(api: Api<K>) -> anyhow::Result<Tracker> {
        Self::start_with(api, watcher::Config::default()).await
    }

    /// As [`Tracker::start`], watching only the objects `config` selects (a namespace of
    /// 100,000 finished signals need not be listed to time one new signal).
    pub async fn start_with<K: Signal + 'static>(
        api: Api<K>,
        config: watcher::Config,
    ) -> anyhow::Result<Tracker> {
        let state = Arc::new(Mutex::new(State::default()));
        let changed = Arc::new(Notify::new());
        let (st, ch) = (state.clone(), changed.clone());
        let task = tokio::spawn(async move {
            let mut stream = watcher(api, config).boxed();
            while let Some(event) = stream.next().await {
                let now = Instant::now();
                let mut s = st.lock().expect("tracker state");
                match event {
                    Ok(watcher::Event::Apply(obj)) | Ok(watcher::Event::InitApply(obj)) => {
                        observe(&mut s, &obj, now);
                    }
                    Ok(watcher::Event::InitDone) => s.synced = true,
                    // The watcher retries errors itself (with a re-list).
                    Ok(_) | Err(_) => {}
                }
                drop(s);
                ch.notify_waiters();
            }
        });
        let tracker = Tracker {
            state,
            changed,
            task,
        };
        tracker
            .wait_until(Duration::from_secs(120), "the watch's initial list", |s| {
                s.synced
            })
            .await?;
        Ok(tracker)
    }

    async fn wait_until(
        &self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&State) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if done(&self.state.lock().expect("tracker state")) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                bail!("timed out after {timeout:?} waiting for {what}");
            }
        }
    }

    /// Waits until `name` is Succeeded (Ready=True) and returns what was seen of it. A signal
    /// that fails for good is an error.
    pub async fn wait_ready(&self, name: &str, timeout: Duration) -> anyhow::Result<Seen> {
        let mut failed = None;
        self.wait_until(timeout, &format!("{name} to be Ready"), |s| {
            match s.objects.get(name) {
                Some(seen) if seen.ready_at.is_some() => true,
                Some(seen) if seen.phase == Some(Phase::Failed) => {
                    failed = seen.failure.clone();
                    true
                }
                _ => false,
            }
        })
        .await?;
        if let Some(why) = failed {
            bail!("{name} failed: {why}");
        }
        Ok(self.get(name).expect("seen"))
    }

    /// Waits until `n` objects are Succeeded or Failed.
    pub async fn wait_terminal(&self, n: usize, timeout: Duration) -> anyhow::Result<()> {
        let waited = self
            .wait_until(timeout, &format!("{n} signals to finish"), |s| {
                s.objects
                    .values()
                    .filter(|o| o.terminal_at.is_some())
                    .count()
                    >= n
            })
            .await;
        waited.map_err(|e| e.context(format!("{} of {n} finished", self.terminal_count())))
    }

    pub fn get(&self, name: &str) -> Option<Seen> {
        self.state
            .lock()
            .expect("tracker state")
            .objects
            .get(name)
            .cloned()
    }

    pub fn all(&self) -> Vec<(String, Seen)> {
        self.state
            .lock()
            .expect("tracker state")
            .objects
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    pub fn terminal_count(&self) -> usize {
        self.state
            .lock()
            .expect("tracker state")
            .objects
            .values()
            .filter(|o| o.terminal_at.is_some())
            .count()
    }
}

impl Drop for Tracker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn observe<K: Signal>(s: &mut State, obj: &K, now: Instant) {
    let name = obj.name_any();
    let rv = obj.resource_version().unwrap_or_default();
    let seen = s.objects.entry(name).or_insert_with(|| Seen {
        versions: 0,
        last_rv: String::new(),
        sending_at: None,
        ready_at: None,
        terminal_at: None,
        phase: None,
        attempts: 0,
        throttled_retries: 0,
        failure: None,
    });
    if seen.last_rv == rv {
        return;
    }
    seen.last_rv = rv;
    seen.versions += 1;
    let Some(status) = obj.signal_status() else {
        return;
    };
    seen.phase = status.phase;
    seen.attempts = status.attempts;
    seen.throttled_retries = status.throttled_retries;
    if status.phase == Some(Phase::Sending) && seen.sending_at.is_none() {
        seen.sending_at = Some(now);
    }
    if condition_true(status, "Ready") && seen.ready_at.is_none() {
        seen.ready_at = Some(now);
    }
    if matches!(status.phase, Some(Phase::Succeeded | Phase::Failed)) && seen.terminal_at.is_none()
    {
        seen.terminal_at = Some(now);
        if status.phase == Some(Phase::Failed) {
            seen.failure = Some(
                status
                    .conditions
                    .iter()
                    .find(|c| c.type_ == "Stalled")
                    .map(|c| format!("{}: {}", c.reason, c.message))
                    .unwrap_or_else(|| status.message.clone().unwrap_or_default()),
            );
        }
    }
}
