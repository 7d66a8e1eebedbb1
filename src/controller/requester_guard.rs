//! Reads the admission binding that guards `signalman.dev/requested-by` for the decision in
//! [`crate::requester`]: read again whenever the last reading is older than the signal being
//! judged (creation times are whole seconds, so a burst of signals costs one reading a
//! second), one reading at a time.
use std::collections::BTreeMap;

use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject};
use kube::ResourceExt;
use tracing::warn;

use crate::requester::{self, Guard, Requester, RequesterSource};

pub struct RequesterGuard {
    source: RequesterSource,
    client: kube::Client,
    last: tokio::sync::Mutex<Option<Guard>>,
}

impl RequesterGuard {
    pub fn new(client: kube::Client, source: RequesterSource) -> Self {
        Self {
            source,
            client,
            last: tokio::sync::Mutex::new(None),
        }
    }

    /// The requester of `obj`, a signal in a namespace labelled `namespace_labels`.
    pub async fn requester<'a>(
        &self,
        obj: &'a DynamicObject,
        namespace_labels: &'a BTreeMap<String, String>,
    ) -> Requester<'a> {
        let signal = requester::Signal {
            namespace: obj.metadata.namespace.as_deref().unwrap_or_default(),
            annotation: obj
                .annotations()
                .get(crate::api::REQUESTED_BY_ANNOTATION)
                .map(String::as_str),
            created: obj.metadata.creation_timestamp.as_ref().map(|t| t.0),
            namespace_labels,
        };
        let RequesterSource::Binding(name) = &self.source else {
            return requester::requester(&self.source, &signal, None);
        };
        if signal.annotation.is_none() {
            return Requester::None;
        }
        let mut last = self.last.lock().await;
        let recent = last
            .as_ref()
            .is_some_and(|g| requester::guard_is_recent_enough(g, signal.created));
        if !recent {
            *last = match self.read(name).await {
                Ok(guard) => Some(guard),
                Err(e) => {
                    warn!(binding = %name, error = %e, "the admission binding guarding requested-by could not be read");
                    None
                }
            };
        }
        requester::requester(&self.source, &signal, last.as_ref())
    }

    async fn read(&self, name: &str) -> Result<Guard, kube::Error> {
        let read_at = Timestamp::now();
        let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(self.client.clone());
        let Some(binding) = bindings.get_opt(name).await? else {
            return Ok(Guard::Missing { read_at });
        };
        let policy = match binding.spec.as_ref().and_then(|s| s.policy_name.as_deref()) {
            Some(policy) => {
                Api::<ValidatingAdmissionPolicy>::all(self.client.clone())
                    .get_opt(policy)
                    .await?
            }
            None => None,
        };
        Ok(Guard::Read {
            binding: Box::new(binding),
            policy: policy.map(Box::new),
            read_at,
        })
    }
}
