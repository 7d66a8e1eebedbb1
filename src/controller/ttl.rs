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

/// The TTL of `obj`: its `spec.ttlSecondsAfterFinished`, else the operator's default.
pub fn ttl_of(obj: &DynamicObject, default: Option<Duration>) -> Option<Duration> {
    obj.data
        .get("spec")
        .and_then(|s| s.get("ttlSecondsAfterFinished"))
        .and_then(|v| v.as_u64())
        .map(Duration::from_secs)
        .or(default)
}

/// When the signal finished: the last transition of its terminal condition.
pub fn finished_at(status: &SignalStatus) -> Option<Timestamp> {
    status
        .conditions
        .iter()
        .find(|c| (c.type_ == READY || c.type_ == STALLED) && c.status == "True")
        .map(|c| c.last_transition_time.0)
}

/// What to do with a finished signal: nothing, look again when its TTL runs out, or delete it.
pub async fn after_finished<T: SignalTarget>(
    obj: &DynamicObject,
    status: Option<&SignalStatus>,
    now: Timestamp,
    ctx: &Context,
) -> Result<Action, Error> {
    let Some(ttl) = ttl_of(obj, ctx.settings.default_ttl) else {
        return Ok(Action::await_change());
    };
    let Some(finished) = status.and_then(finished_at) else {
        return Ok(Action::await_change());
    };
    if managed_by_others(obj) {
        debug!("finished, but managed by a GitOps tool or an owner: not deleted by TTL");
        return Ok(Action::await_change());
    }
    let due = finished + k8s_openapi::jiff::SignedDuration::try_from(ttl).unwrap_or_default();
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
    fn ttl_from_the_spec_or_the_default() {
        let mut o = object(&[], &[]);
        assert_eq!(ttl_of(&o, None), None);
        assert_eq!(
            ttl_of(&o, Some(Duration::from_secs(60))),
            Some(Duration::from_secs(60))
        );
        o.data = serde_json::json!({"spec": {"ttlSecondsAfterFinished": 5}});
        assert_eq!(
            ttl_of(&o, Some(Duration::from_secs(60))),
            Some(Duration::from_secs(5))
        );
    }
}
