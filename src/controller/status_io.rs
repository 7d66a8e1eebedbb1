//! Reading and writing a signal's status, and the Events that tell its story.
use kube::api::{Api, ApiResource, DynamicObject, PostParams};
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use tracing::{debug, info};

use super::{Context, Error};
use crate::api::SignalStatus;
use crate::aws::target::SignalTarget;
use crate::delivery::{EventNote, Transition};

/// Reads the status the operator wrote. `Err` when it is present but unreadable.
pub fn read_status(obj: &DynamicObject) -> Result<Option<SignalStatus>, String> {
    match obj.data.get("status") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => serde_path_to_error::deserialize(v)
            .map(Some)
            .map_err(|e| format!("status could not be read at {}", e.path())),
    }
}

/// Writes `status` with a PUT to the status subresource carrying the object's resourceVersion,
/// so the write fails with 409 if anyone wrote since this object was read.
pub async fn write_status<T: SignalTarget>(
    obj: &DynamicObject,
    status: &SignalStatus,
    ctx: &Context,
) -> Result<DynamicObject, Error> {
    let ar = ApiResource::erase::<T::Resource>(&());
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
    let mut next = obj.clone();
    next.data["status"] = serde_json::to_value(status)?;
    Ok(api
        .replace_status(&obj.name_any(), &PostParams::default(), &next)
        .await?)
}

/// Reads the object again from the API server (not the cache).
pub async fn read_object<T: SignalTarget>(
    obj: &DynamicObject,
    ctx: &Context,
) -> Result<DynamicObject, Error> {
    let ar = ApiResource::erase::<T::Resource>(&());
    let ns = obj.namespace().unwrap_or_default();
    let api: Api<DynamicObject> = Api::namespaced_with(ctx.client.clone(), &ns, &ar);
    Ok(api.get(&obj.name_any()).await?)
}

/// Writes the transition's status, counts it, and publishes its Event.
pub async fn write_and_tell<T: SignalTarget>(
    obj: &DynamicObject,
    tr: Transition,
    ctx: &Context,
) -> Result<DynamicObject, Error> {
    let written = write_status::<T>(obj, &tr.status, ctx).await?;
    ctx.metrics.status_written(
        T::KIND,
        read_status(obj).ok().flatten().as_ref(),
        &tr.status,
    );
    info!(phase = ?tr.status.phase, attempts = tr.status.attempts, "status written");
    tell::<T>(obj, tr.event.as_ref(), ctx).await;
    Ok(written)
}

/// Publishes an Event on the object; failures are logged, never fatal.
pub async fn tell<T: SignalTarget>(obj: &DynamicObject, note: Option<&EventNote>, ctx: &Context) {
    let Some(note) = note else { return };
    let ar = ApiResource::erase::<T::Resource>(&());
    let mut reference = obj.object_ref(&ar);
    reference.api_version = Some(ar.api_version);
    let event = Event {
        type_: if note.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: note.reason.to_string(),
        note: Some(note.note.clone()),
        action: "Signal".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &reference).await {
        debug!(error = %e, "event not recorded");
    }
}
