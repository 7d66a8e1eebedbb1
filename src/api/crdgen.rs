//! CRD YAML generated from the Rust types; what `signalman crds` prints and `crds/` holds.
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use super::{AutomationSignal, SignalPolicy, SignalReceipt, WorkflowSignal};

/// Every CRD, in a fixed order (by CRD name).
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        AutomationSignal::crd(),
        SignalPolicy::crd(),
        SignalReceipt::crd(),
        WorkflowSignal::crd(),
    ]
}

/// One `(file name, YAML)` per CRD, as committed under `crds/` (`<crd name>.yaml`).
pub fn crd_files() -> Vec<(String, String)> {
    crds()
        .iter()
        .map(|crd| {
            let name = crd.metadata.name.clone().unwrap_or_default();
            (format!("{name}.yaml"), to_yaml(crd))
        })
        .collect()
}

/// Every CRD as one multi-document YAML stream (what `signalman crds` prints).
pub fn crd_yaml() -> String {
    crd_files()
        .into_iter()
        .map(|(_, yaml)| yaml)
        .collect::<Vec<_>>()
        .join("")
}

/// One YAML document, starting with `---`, keys sorted at every level so the text does not
/// depend on serde_json's `preserve_order` feature being on somewhere in the build.
fn to_yaml(crd: &CustomResourceDefinition) -> String {
    let value = serde_json::to_value(crd).expect("CRDs serialize");
    let body = serde_norway::to_string(&sorted(value)).expect("YAML serializes");
    format!("---\n{body}")
}

fn sorted(value: serde_json::Value) -> serde_norway::Value {
    use serde_json::Value as J;
    use serde_norway::Value as Y;
    match value {
        J::Null => Y::Null,
        J::Bool(b) => Y::Bool(b),
        J::Number(n) => {
            if let Some(u) = n.as_u64() {
                Y::Number(u.into())
            } else if let Some(i) = n.as_i64() {
                Y::Number(i.into())
            } else {
                Y::Number(n.as_f64().unwrap_or_default().into())
            }
        }
        J::String(s) => Y::String(s),
        J::Array(items) => Y::Sequence(items.into_iter().map(sorted).collect()),
        J::Object(map) => {
            let mut entries: Vec<_> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Y::Mapping(
                entries
                    .into_iter()
                    .map(|(k, v)| (Y::String(k), sorted(v)))
                    .collect(),
            )
        }
    }
}
