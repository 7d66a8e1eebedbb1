//! `kubectl signalman retry NAME`: asks the operator for the next attempt now, by writing the
//! annotation [`RETRY_NOW_ANNOTATION`] with the current time. The operator decides
//! ([`crate::delivery::hasten`]): the claim, the policy check and verification all still apply.
use std::io::Write;

use anyhow::Context as _;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};

use super::status::{find, reason_of, Found};
use super::{Kind, KubeOptions};
use crate::api::{AutomationSignal, Phase, SignalStatus, WorkflowSignal, RETRY_NOW_ANNOTATION};

#[derive(clap::Args)]
pub struct Args {
    /// Name of the WorkflowSignal or AutomationSignal.
    pub name: String,
    /// Namespace of the signal (else the kubeconfig context's).
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// The kind, when both kinds have an object of that name.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
}

/// What a retry request does to a signal with `status`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Finished: nothing is ever sent again; no annotation is written.
    Finished(String),
    /// The annotation is written; what the operator will do, in words.
    Request(String),
}

/// What asking for a retry now would do, from the status alone.
pub fn plan(status: Option<&SignalStatus>, now: Timestamp) -> Plan {
    let Some(s) = status else {
        return Plan::Request(
            "the operator has not seen the signal yet; it attempts it as soon as it does"
                .to_string(),
        );
    };
    let next = s
        .next_attempt_time
        .as_ref()
        .map(|t| t.0)
        .filter(|t| *t > now);
    match (s.phase.unwrap_or(Phase::Pending), next) {
        (Phase::Succeeded | Phase::Failed, _) => Plan::Finished(format!(
            "the signal is {:?} ({}): a finished signal is never attempted again, so retry does nothing; create a new signal to send another",
            s.phase.unwrap_or(Phase::Pending),
            reason_of(s).unwrap_or("no reason recorded")
        )),
        (Phase::Pending, Some(t)) => Plan::Request(format!(
            "the next attempt is made now instead of at {t} (still claimed, checked against the SignalPolicies and verified as usual)"
        )),
        (Phase::Verifying, Some(t)) => Plan::Request(format!(
            "the check with AWS whether attempt {} landed is made as soon as the settle time allows instead of at {t}; nothing is sent before it says absent",
            s.attempts
        )),
        (Phase::Sending, _) => Plan::Request(
            "an attempt is in flight now: the request applies only if it ends waiting for a retry".to_string(),
        ),
        (_, None) => Plan::Request(
            "nothing is waiting: the operator is acting on the signal already".to_string(),
        ),
    }
}

/// The time to write into the request: now in whole seconds (what the status keeps), and
/// after the last attempt and the request last honoured, as the operator requires.
pub fn request_time(status: Option<&SignalStatus>, now: Timestamp) -> Timestamp {
    let now = crate::delivery::floor_second(now);
    status
        .into_iter()
        .flat_map(|s| [&s.last_attempt_time, &s.retry_request_honoured])
        .flatten()
        .filter_map(|t| {
            t.0.checked_add(k8s_openapi::jiff::SignedDuration::from_secs(1))
                .ok()
        })
        .fold(now, Timestamp::max)
}

pub async fn run(kube: &KubeOptions, args: Args, out: &mut impl Write) -> anyhow::Result<i32> {
    let client = kube.client().await?;
    let namespace = super::namespace_or_default(&client, args.namespace.clone());
    let found = find(&client, &namespace, &args.name, args.kind).await?;
    let now = Timestamp::now();
    let kind = found.kind().as_str();
    match plan(found.status(), now) {
        Plan::Finished(why) => {
            writeln!(out, "{namespace}/{kind} {}: {why}", args.name)?;
            Ok(0)
        }
        Plan::Request(what) => {
            let at = request_time(found.status(), now);
            // A request in the same second as the last attempt would not be newer than it:
            // wait for the next second (what the operator's clock also reads by then).
            if let Ok(wait) = std::time::Duration::try_from(at.duration_since(now)) {
                tokio::time::sleep(wait.min(std::time::Duration::from_secs(2))).await;
            }
            let patch = serde_json::json!({
                "metadata": {"annotations": {(RETRY_NOW_ANNOTATION): at.to_string()}}
            });
            let params = PatchParams::default();
            let patched = match found {
                Found::Workflow(_) => Api::<WorkflowSignal>::namespaced(client.clone(), &namespace)
                    .patch(&args.name, &params, &Patch::Merge(&patch))
                    .await
                    .map(drop),
                Found::Automation(_) => {
                    Api::<AutomationSignal>::namespaced(client.clone(), &namespace)
                        .patch(&args.name, &params, &Patch::Merge(&patch))
                        .await
                        .map(drop)
                }
            };
            match patched {
                Err(kube::Error::Api(ae)) if ae.code == 403 => anyhow::bail!(
                    "not allowed to patch {kind} {} in {namespace}: retry writes an annotation, which needs the verb patch on workflowsignals and automationsignals (the chart's signal-author role grants none; see docs/plugin.md)",
                    args.name
                ),
                other => other.with_context(|| format!("annotating {kind} {}", args.name))?,
            }
            writeln!(
                out,
                "{namespace}/{kind} {}: retry requested at {at} ({RETRY_NOW_ANNOTATION}); {what}",
                args.name
            )?;
            Ok(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }

    #[test]
    fn finished_signals_are_left_alone_and_waiting_ones_asked_to_retry() {
        let now = t(1_700_000_000);
        for phase in [Phase::Succeeded, Phase::Failed] {
            let s = SignalStatus {
                phase: Some(phase),
                ..Default::default()
            };
            assert!(matches!(plan(Some(&s), now), Plan::Finished(w) if w.contains("does nothing")));
        }
        let waiting = SignalStatus {
            phase: Some(Phase::Pending),
            next_attempt_time: Some(Time(t(1_700_003_600))),
            ..Default::default()
        };
        assert!(matches!(plan(Some(&waiting), now), Plan::Request(w) if w.contains("made now")));
        let verifying = SignalStatus {
            phase: Some(Phase::Verifying),
            ..waiting.clone()
        };
        assert!(matches!(plan(Some(&verifying), now), Plan::Request(w) if w.contains("settle")));
        assert!(matches!(plan(None, now), Plan::Request(_)));
    }

    #[test]
    fn a_request_is_in_whole_seconds_and_after_the_last_attempt() {
        let now = Timestamp::from_millisecond(1_700_000_000_400).unwrap();
        assert_eq!(request_time(None, now), t(1_700_000_000));
        let attempted = |at: i64| SignalStatus {
            last_attempt_time: Some(Time(t(at))),
            ..Default::default()
        };
        assert_eq!(
            request_time(Some(&attempted(1_699_999_000)), now),
            t(1_700_000_000)
        );
        assert_eq!(
            request_time(Some(&attempted(1_700_000_000)), now),
            t(1_700_000_001)
        );
    }
}
