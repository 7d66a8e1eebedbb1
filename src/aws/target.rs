//! What differs between the kinds of signal, behind one trait.
//!
//! The controller runs one pipeline for every kind (read → validate → decide → claim → send →
//! record, or verify → record) and never asks which kind it holds. Everything that depends on
//! the kind is here: the custom resource it reads, the AWS service and operations (metric
//! labels), the token bucket its calls draw from, what must be resolved and pinned in the claim
//! before sending (SWF: the run), the send, and the verification.
//!
//! Adding a kind: a CRD type in `src/api/`, a file here implementing [`SignalTarget`], and one
//! line in [`crate::controller::run`], where the kinds are listed.
use std::future::Future;
use std::sync::Arc;

use k8s_openapi::jiff::Timestamp;
use kube::CustomResourceExt;
use serde::de::DeserializeOwned;

use super::clients::{Gate, RegionClients};
use crate::api::{Signal, SignalStatus};
use crate::delivery::{AwsFailure, SendOutcome, VerifyOutcome};
use crate::metrics::Metrics;

/// What [`SignalTarget::prepare`] found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Prepared {
    /// Claim and send.
    Send,
    /// The AWS side already shows this very signal: nothing to send. Says how, in words.
    AlreadyDelivered(String),
}

/// One kind of signal and the AWS call it becomes.
pub trait SignalTarget: Send + Sync + 'static {
    /// The custom resource that asks for the signal.
    type Resource: Signal
        + CustomResourceExt
        + kube::Resource<DynamicType = ()>
        + DeserializeOwned
        + Send
        + Sync
        + 'static;

    /// The resource's kind, as a log field and a metric label.
    const KIND: &'static str;
    /// The AWS service, as a metric label (`swf`, `ssm`).
    const SERVICE: &'static str;
    /// The operation that sends the signal.
    const SEND_OPERATION: &'static str;
    /// The read that verifies delivery: namespaces take turns at its limiter too.
    const VERIFY_OPERATION: &'static str;

    /// The `spec` part of the resource's CRD schema, checked on the raw object before it is
    /// parsed, so an object written around the schema is refused with the field named.
    fn spec_schema() -> &'static serde_json::Value;

    /// The gate (token bucket and circuit breaker) this kind's calls pass, out of one
    /// region's clients.
    fn gate(clients: &RegionClients) -> &Arc<Gate>;

    /// What the signal sends, as JSON: its target, the signal and its input or payload. Two
    /// signals with the same identity have the same effect; receipts are keyed by its hash.
    fn identity(signal: &Self::Resource) -> serde_json::Value;

    /// What the signal asks for, as the SignalPolicies judge it.
    fn policy_target(signal: &Self::Resource) -> crate::policy::Target<'_>;

    /// The name of the Automation document the target runs, when the policies need it and
    /// only AWS knows it (SSM); `None` for kinds that have none.
    fn document(
        signal: &Self::Resource,
        clients: &RegionClients,
        metrics: &Metrics,
    ) -> impl Future<Output = Result<Option<String>, AwsFailure>> + Send;

    /// Where a delivered signal went, for its receipt (SWF: the run; SSM: the execution).
    fn target_of(signal: &Self::Resource, status: &SignalStatus) -> Option<String>;

    /// Puts back into `status` what an earlier object's receipt says its attempt went to
    /// (`target`, as [`SignalTarget::target_of`] wrote it), so verification reads the same
    /// place. Nothing for kinds whose spec is the whole address.
    fn restore_target(_signal: &Self::Resource, _status: &mut SignalStatus, _target: &str) {}

    /// Resolves, before the claim, what the send needs and what verification must later read,
    /// and pins it in the claim (SWF: the open run when the spec names none). An error is this
    /// attempt's outcome: nothing was sent.
    ///
    /// `reference`: this signal's short reference (the same for an object created again with
    /// the same manifest), which the send leaves in AWS where the kind can (SSM: the Comment).
    ///
    /// `deliveries_unrecorded_before`: set before the first attempt of a signal that has no
    /// receipt. A delivery before that instant may have left no receipt (a rebuilt cluster), so
    /// when the target is older, the AWS side is asked whether this signal is already there.
    fn prepare(
        signal: &Self::Resource,
        claim: &mut SignalStatus,
        reference: &str,
        deliveries_unrecorded_before: Option<Timestamp>,
        clients: &RegionClients,
        metrics: &Metrics,
    ) -> impl Future<Output = Result<Prepared, AwsFailure>> + Send;

    /// The one call that sends the signal, on the send client (no SDK retries). `claimed` is
    /// the status as claimed, with what [`SignalTarget::prepare`] pinned.
    ///
    /// `approved_by`: who approved the change elsewhere, as asserted by a ServiceAccount a
    /// SignalPolicy lets assert it (recorded as asserted, where the kind keeps a note).
    fn send(
        signal: &Self::Resource,
        claimed: &SignalStatus,
        reference: &str,
        approved_by: Option<&str>,
        clients: &RegionClients,
    ) -> impl Future<Output = SendOutcome> + Send;

    /// Asks AWS whether the signal landed since `since` (the claim of the earliest attempt
    /// whose outcome is unknown): only evidence that is provably this signal's counts, and
    /// when the evidence cannot tell, the answer is a failed (retried) verification, never
    /// "delivered". Records its own AWS calls in `metrics`.
    fn verify(
        signal: &Self::Resource,
        status: &SignalStatus,
        reference: &str,
        since: Timestamp,
        clients: &RegionClients,
        metrics: &Metrics,
    ) -> impl Future<Output = VerifyOutcome> + Send;
}
