//! `ttlSecondsAfterFinished`: deleting finished signals that nobody else keeps, like Jobs.
//!
//! An object a GitOps tool manages is never deleted: the tool would create it again from git
//! (and its receipt would then keep it from being sent twice, but the churn helps nobody).
//! Managed means: an owner reference, Argo CD's tracking annotation or instance label, or a
//! Flux kustomize/helm controller label. Receipts are separate objects and are never touched.
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Preconditions};
use kube::ResourceExt;
use tracing::{debug, info, warn};

use super::Context;
use crate::api::SignalStatus;
use crate::aws::target::SignalTarget;
use crate::delivery::{READY, STALLED};

/// Labels and annotations by which GitOps tools mark what they manage.
const ARGO_TRACKING_ANNOTATION: &str = "argocd.argoproj.io/tracking-id";
const ARGO_INSTANCE_LABEL: &str = "app.kubernetes.io/instance";
const FLUX_LABEL_PREFIXES: [&str; 2] = ["kustomize.toolkit.fluxcd.io/", "helm.toolkit.fluxcd.io/"];

/// Whether a GitOps tool (or another object) keeps this object: then TTL never deletes it.
pub fn managed_by_others(obj: &DynamicObject) -> bool {
    let labels = obj.labels();
    !obj.owner_references().is_empty()
        || obj.annotations().contains_key(ARGO_TRACKING_ANNOTATION)
        || labels.contains_key(ARGO_INSTANCE_LABEL)
        || labels
            .keys()
            .any(|k| FLUX_LABEL_PREFIXES.iter().any(|p| k.starts_with(p)))
}

/// When the signal finished: the last transition of its terminal condition.
pub fn finished_at(status: &SignalStatus) -> Option<Timestamp> {
    status
        .conditions
        .iter()
        .find(|c| (c.type_ == READY || c.type_ == STALLED) && c.status == "True")
        .map(|c| c.last_transition_time.0)
}

/// What TTL needs of a finished signal.
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    /// When its terminal condition last changed.
    pub at: Option<Timestamp>,
    /// `spec.ttlSecondsAfterFinished`.
    pub ttl_seconds: Option<u64>,
    /// A GitOps tool or an owner keeps it.
    pub managed: bool,
}

impl Finished {
    pub fn of(obj: &DynamicObject, status: Option<&SignalStatus>) -> Self {
        Finished {
            at: status.and_then(finished_at),
            ttl_seconds: obj
                .data
                .get("spec")
                .and_then(|s| s.get("ttlSecondsAfterFinished"))
                .and_then(|v| v.as_u64()),
            managed: managed_by_others(obj),
        }
    }
}

impl Finished {
    /// When the signal is to be deleted: `default_ttl` applies when the spec sets none; never
    /// for a signal someone else keeps, or one whose finish time is unknown.
    pub fn due(&self, default_ttl: Option<Duration>) -> Option<Timestamp> {
        if self.managed {
            return None;
        }
        let ttl = self.ttl_seconds.map(Duration::from_secs).or(default_ttl)?;
        let ttl = k8s_openapi::jiff::SignedDuration::try_from(ttl).ok()?;
        self.at?.checked_add(ttl).ok()
    }
}

/// The field selector of the signals still to be delivered: the controllers watch only these,
/// so a finished signal leaves their caches (and costs nothing there) the moment it finishes.
/// `status.phase` is a selectable field of both CRDs.
pub const UNFINISHED: &str = "status.phase!=Succeeded,status.phase!=Failed";
/// The field selectors of the finished signals, watched by [`delete_when_due`].
const FINISHED: [&str; 2] = ["status.phase=Succeeded", "status.phase=Failed"];

/// A finished signal waiting for its TTL.
#[derive(Clone, Debug, PartialEq)]
struct Due {
    at: Timestamp,
    namespace: String,
    name: String,
}

/// Watches the finished signals of kind `T` in `api`'s scope and deletes each whose TTL has run
/// out, while this replica leads. It keeps only the signals a TTL applies to (when, namespace,
/// name, by uid), not the objects: 100,000 finished signals without a TTL cost nothing.
pub async fn delete_when_due<T: SignalTarget>(
    api: Api<DynamicObject>,
    label_selector: Option<String>,
    ctx: std::sync::Arc<Context>,
) {
    use futures::StreamExt;
    use kube::runtime::{watcher, WatchStreamExt};
    let streams = FINISHED.map(|fields| {
        let mut config = watcher::Config::default().any_semantic().fields(fields);
        if let Some(labels) = label_selector.as_deref().filter(|l| !l.is_empty()) {
            config = config.labels(labels);
        }
        watcher(api.clone(), config).default_backoff().boxed()
    });
    let mut events = futures::stream::select_all(streams);
    let mut waiting: std::collections::HashMap<String, Due> = Default::default();
    loop {
        let next = waiting.values().map(|d| d.at).min();
        let sleep = next
            .map(|at| {
                Duration::try_from(at.duration_since(Timestamp::now())).unwrap_or(Duration::ZERO)
            })
            .unwrap_or(IDLE_LOOK)
            .min(IDLE_LOOK);
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj))) => {
                    note(&mut waiting, &obj, ctx.settings.default_ttl);
                }
                Some(Ok(watcher::Event::Delete(obj))) => {
                    waiting.remove(&obj.uid().unwrap_or_default());
                }
                Some(Ok(watcher::Event::Init | watcher::Event::InitDone)) => {}
                Some(Err(e)) => debug!(error = %e, "watching finished signals failed; retrying with backoff"),
                None => return,
            },
            _ = tokio::time::sleep(sleep) => {
                if ctx.leadership.is_leader() {
                    let now = Timestamp::now();
                    let due: Vec<(String, Due)> = waiting
                        .iter()
                        .filter(|(_, d)| d.at <= now)
                        .map(|(uid, d)| (uid.clone(), d.clone()))
                        .collect();
                    for (uid, d) in due {
                        match delete::<T>(&ctx, &d, &uid).await {
                            Ok(()) => { waiting.remove(&uid); }
                            Err(e) => warn!(error = %e, namespace = %d.namespace, name = %d.name, "finished signal not deleted after its TTL; retrying"),
                        }
                    }
                }
            }
        }
    }
}

/// Longest wait between looks at the due signals (leadership may change meanwhile).
const IDLE_LOOK: Duration = Duration::from_secs(5);

/// Records or forgets a finished signal as its TTL says.
fn note(
    waiting: &mut std::collections::HashMap<String, Due>,
    obj: &DynamicObject,
    default_ttl: Option<Duration>,
) {
    let uid = obj.uid().unwrap_or_default();
    let status = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value::<SignalStatus>(s.clone()).ok());
    match Finished::of(obj, status.as_ref()).due(default_ttl) {
        Some(at) if obj.metadata.deletion_timestamp.is_none() => {
            waiting.insert(
                uid,
                Due {
                    at,
                    namespace: obj.namespace().unwrap_or_default(),
                    name: obj.name_any(),
                },
            );
        }
        _ => {
            waiting.remove(&uid);
        }
    }
}

/// Deletes one finished signal, on the condition that it is still the object `uid` (a signal
/// created again under the same name is another object).
async fn delete<T: SignalTarget>(ctx: &Context, due: &Due, uid: &str) -> Result<(), kube::Error> {
    let ar = ApiResource::erase::<T::Resource>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &due.namespace, &ar);
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&due.name, &params).await {
        Ok(_) => {
            info!(kind = T::KIND, namespace = %due.namespace, name = %due.name, "finished signal deleted after its TTL");
            Ok(())
        }
        Err(kube::Error::Api(ae)) if ae.code == 404 || ae.code == 409 => Ok(()),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn object(labels: &[(&str, &str)], annotations: &[(&str, &str)]) -> DynamicObject {
        let mut o = DynamicObject::new("s", &ApiResource::erase::<crate::api::WorkflowSignal>(&()));
        o.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        o.metadata.annotations = Some(
            annotations
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        );
        o
    }

    #[test]
    fn gitops_managed_objects_are_recognised() {
        assert!(!managed_by_others(&object(&[("team", "a")], &[])));
        assert!(managed_by_others(&object(
            &[],
            &[(ARGO_TRACKING_ANNOTATION, "app:x/y")]
        )));
        assert!(managed_by_others(&object(
            &[(ARGO_INSTANCE_LABEL, "app")],
            &[]
        )));
        assert!(managed_by_others(&object(
            &[("kustomize.toolkit.fluxcd.io/name", "signals")],
            &[]
        )));
        assert!(managed_by_others(&object(
            &[("helm.toolkit.fluxcd.io/name", "x")],
            &[]
        )));
    }

    fn finished(ttl: Option<u64>, managed: bool) -> DynamicObject {
        use crate::delivery::{self, Ctx};
        let c = Ctx {
            now: Timestamp::from_second(1_700_000_000).unwrap(),
            holder: "me",
            claim_ttl: Duration::from_secs(60),
            verify_settle: Duration::from_secs(1),
            retry: Default::default(),
            generation: Some(1),
            jitter: 0.5,
            not_after: None,
            verify_recheck: Duration::ZERO,
            requested_by: None,
            retry_requested: None,
        };
        let done = delivery::already_delivered(None, "test", &c).status;
        let labels: &[(&str, &str)] = if managed {
            &[("kustomize.toolkit.fluxcd.io/name", "x")]
        } else {
            &[]
        };
        let mut o = object(labels, &[]);
        o.metadata.uid = Some("u-1".into());
        o.metadata.namespace = Some("team".into());
        o.data = serde_json::json!({
            "spec": {"domain": "d", "ttlSecondsAfterFinished": ttl},
            "status": done,
        });
        o
    }

    /// Only signals a TTL applies to are kept, by when they are due; nothing else.
    #[test]
    fn a_finished_signal_is_due_after_its_ttl_unless_someone_keeps_it() {
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let mut waiting = std::collections::HashMap::new();
        note(&mut waiting, &finished(Some(5), false), None);
        assert_eq!(
            waiting.get("u-1").map(|d| d.at),
            Some(t0 + k8s_openapi::jiff::SignedDuration::from_secs(5))
        );
        // The operator's default when the spec sets none; nothing without either.
        note(&mut waiting, &finished(None, false), None);
        assert!(waiting.is_empty());
        note(
            &mut waiting,
            &finished(None, false),
            Some(Duration::from_secs(60)),
        );
        assert_eq!(
            waiting
                .get("u-1")
                .map(|d| (d.at, d.name.as_str(), d.namespace.as_str())),
            Some((
                t0 + k8s_openapi::jiff::SignedDuration::from_secs(60),
                "s",
                "team"
            ))
        );
        // A GitOps tool keeps it: never due, and forgotten if it was.
        note(
            &mut waiting,
            &finished(Some(5), true),
            Some(Duration::from_secs(60)),
        );
        assert!(waiting.is_empty());
        // No finish time known: never due.
        let mut unknown = finished(Some(5), false);
        unknown.data["status"] = serde_json::json!({"phase": "Succeeded"});
        note(&mut waiting, &unknown, None);
        assert!(waiting.is_empty());
    }
}
