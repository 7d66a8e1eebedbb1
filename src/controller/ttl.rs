//! `ttlSecondsAfterFinished`: deleting finished signals that nobody else keeps, like Jobs.
//!
//! An object a GitOps tool manages is never deleted: the tool would create it again from git
//! (and its receipt would then keep it from being sent twice, but the churn helps nobody).
//! Managed means: an owner reference, Argo CD's tracking annotation or instance label, or a
//! Flux kustomize/helm controller label. Receipts are separate objects and are never touched.
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, Preconditions};
use kube::runtime::controller::Action;
use kube::ResourceExt;
use tracing::{debug, info};

use super::{Context, Error};
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

/// What TTL needs of a finished signal; all the cache keeps of one (see [`slim`]).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Finished {
    /// When its terminal condition last changed.
    pub at: Option<Timestamp>,
    /// `spec.ttlSecondsAfterFinished`.
    pub ttl_seconds: Option<u64>,
    /// A GitOps tool or an owner keeps it.
    pub managed: bool,
}

/// Where a slimmed object keeps its [`Finished`].
const FINISHED_KEY: &str = "signalmanFinished";

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

    /// The summary of a slimmed object, if it is one.
    pub fn of_slim(obj: &DynamicObject) -> Option<Self> {
        serde_json::from_value(obj.data.get(FINISHED_KEY)?.clone()).ok()
    }
}

/// Replaces a finished signal whose status is consistent (nothing left to do but TTL) by what
/// the operator still reads of it: name, namespace, uid, version, phase (for the pending
/// gauge) and its [`Finished`] summary. Most of the cache is finished signals; this is what
/// keeps 100,000 of them cheap. A status needing repair keeps the whole object.
pub fn slim(obj: &mut DynamicObject) {
    let Some(status) = obj
        .data
        .get("status")
        .and_then(|s| serde_json::from_value::<SignalStatus>(s.clone()).ok())
    else {
        return;
    };
    if !crate::delivery::is_finished(&status)
        || !crate::delivery::conditions_consistent(&status, obj.metadata.generation)
    {
        return;
    }
    let finished = Finished::of(obj, Some(&status));
    let m = &obj.metadata;
    obj.metadata = kube::api::ObjectMeta {
        name: m.name.clone(),
        namespace: m.namespace.clone(),
        uid: m.uid.clone(),
        resource_version: m.resource_version.clone(),
        generation: m.generation,
        deletion_timestamp: m.deletion_timestamp.clone(),
        ..Default::default()
    };
    obj.data = serde_json::json!({
        "status": {"phase": status.phase},
        FINISHED_KEY: finished,
    });
}

/// What to do with a finished signal: nothing, look again when its TTL runs out, or delete it.
pub async fn after_finished<T: SignalTarget>(
    obj: &DynamicObject,
    finished: &Finished,
    now: Timestamp,
    ctx: &Context,
) -> Result<Action, Error> {
    let Some(ttl) = finished
        .ttl_seconds
        .map(Duration::from_secs)
        .or(ctx.settings.default_ttl)
    else {
        return Ok(Action::await_change());
    };
    let Some(at) = finished.at else {
        return Ok(Action::await_change());
    };
    if finished.managed {
        debug!("finished, but managed by a GitOps tool or an owner: not deleted by TTL");
        return Ok(Action::await_change());
    }
    let due = at + k8s_openapi::jiff::SignedDuration::try_from(ttl).unwrap_or_default();
    if due > now {
        let wait = Duration::try_from(due.duration_since(now)).unwrap_or(Duration::from_secs(1));
        return Ok(Action::requeue(wait.max(Duration::from_secs(1))));
    }
    if !ctx.leadership.is_leader() {
        return Ok(Action::requeue(super::requeue::FOLLOWER));
    }
    let ar = ApiResource::erase::<T::Resource>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(
        ctx.client.clone(),
        &obj.namespace().unwrap_or_default(),
        &ar,
    );
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: obj.uid(),
            resource_version: None,
        }),
        ..Default::default()
    };
    match api.delete(&obj.name_any(), &params).await {
        Ok(_) => info!(
            ttl_seconds = ttl.as_secs(),
            "finished signal deleted after its TTL"
        ),
        Err(kube::Error::Api(ae)) if ae.code == 404 || ae.code == 409 => {}
        Err(e) => return Err(e.into()),
    }
    Ok(Action::await_change())
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

    #[test]
    fn a_finished_consistent_signal_is_slimmed_to_its_summary() {
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
        };
        let done = delivery::already_delivered(None, "test", &c).status;
        let mut o = object(
            &[("kustomize.toolkit.fluxcd.io/name", "x")],
            &[("big", "x")],
        );
        o.metadata.generation = Some(1);
        o.metadata.uid = Some("u-1".into());
        o.data = serde_json::json!({
            "spec": {"domain": "d", "input": "secret", "ttlSecondsAfterFinished": 5},
            "status": done,
        });
        slim(&mut o);
        assert_eq!(
            Finished::of_slim(&o),
            Some(Finished {
                at: Some(c.now),
                ttl_seconds: Some(5),
                managed: true
            })
        );
        assert_eq!(o.data["status"]["phase"], "Succeeded");
        assert!(o.data.get("spec").is_none() && o.metadata.labels.is_none());
        assert_eq!(o.metadata.uid.as_deref(), Some("u-1"));
        assert!(!o.data.to_string().contains("secret"));
        // Pending, or finished with conditions to repair: kept whole.
        let mut pending = object(&[], &[]);
        pending.data = serde_json::json!({"spec": {"domain": "d"}, "status": {"phase": "Pending"}});
        let before = pending.clone();
        slim(&mut pending);
        assert_eq!(pending, before);
        let mut odd = object(&[], &[]);
        odd.data = serde_json::json!({"spec": {}, "status": {"phase": "Succeeded"}});
        let before = odd.clone();
        slim(&mut odd);
        assert_eq!(odd, before);
    }
}
