//! Credentials of a role a SignalPolicy names: STS AssumeRole with the operator's own
//! identity, the session named and tagged after the signal's namespace, and SourceIdentity set
//! to who asked for the signal. The SDK's identity cache keeps the credentials until shortly
//! before they expire and asks again then.
use std::time::SystemTime;

use aws_credential_types::provider::{error::CredentialsError, future, ProvideCredentials};
use aws_credential_types::Credentials;
use aws_sdk_sts::types::Tag;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Tag key of the role session: the namespace whose signal it sends.
pub const NAMESPACE_TAG: &str = "signalman.dev/namespace";

/// A role session for one namespace (and requester).
#[derive(Debug)]
pub struct AssumedRole {
    pub sts: aws_sdk_sts::Client,
    pub role_arn: String,
    pub namespace: String,
    pub requested_by: Option<String>,
}

/// AssumeRole was refused or failed: the send must not go out with another identity.
#[derive(Debug, thiserror::Error)]
#[error("could not assume the SignalPolicy's role ({code})")]
pub struct AssumeRoleFailure {
    /// STS's error code, or what went wrong.
    pub code: String,
}

/// `signalman-<namespace>`, within RoleSessionName's 2..64 characters of `[\w+=,.@-]`.
pub fn session_name(namespace: &str) -> String {
    let name: String = format!("signalman-{namespace}")
        .chars()
        .map(|c| if allowed(c) { c } else { '-' })
        .take(64)
        .collect();
    name
}

/// SourceIdentity from a Kubernetes user name (`system:serviceaccount:ns:sa` has colons, which
/// STS does not take): 2..64 characters of `[\w+=,.@-]`, others replaced by `-`. `None` when
/// too short to be one.
pub fn source_identity(user: &str) -> Option<String> {
    let id: String = user
        .chars()
        .map(|c| if allowed(c) { c } else { '-' })
        .take(64)
        .collect();
    (id.len() >= 2).then_some(id)
}

fn allowed(c: char) -> bool {
    c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)
}

impl ProvideCredentials for AssumedRole {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let tag = Tag::builder()
                .key(NAMESPACE_TAG)
                .value(&self.namespace)
                .build()
                .map_err(|_| refused("the session tag could not be built".into()))?;
            let out = self
                .sts
                .assume_role()
                .role_arn(&self.role_arn)
                .role_session_name(session_name(&self.namespace))
                .tags(tag)
                .set_source_identity(self.requested_by.as_deref().and_then(source_identity))
                .send()
                .await
                .map_err(|e| refused(e.code().unwrap_or("no answer from STS").to_string()))?;
            let c = out
                .credentials()
                .ok_or_else(|| refused("STS returned no credentials".into()))?;
            let expires = SystemTime::try_from(*c.expiration()).ok();
            Ok(Credentials::new(
                c.access_key_id(),
                c.secret_access_key(),
                Some(c.session_token().to_string()),
                expires,
                "signalman-signal-policy-role",
            ))
        })
    }
}

fn refused(code: String) -> CredentialsError {
    CredentialsError::provider_error(AssumeRoleFailure { code })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_names_and_source_identities_are_what_sts_takes() {
        assert_eq!(session_name("payments"), "signalman-payments");
        assert_eq!(session_name(&"a".repeat(80)).len(), 64);
        assert_eq!(
            source_identity("system:serviceaccount:argocd:argocd-application-controller")
                .as_deref(),
            Some("system-serviceaccount-argocd-argocd-application-controller")
        );
        assert_eq!(
            source_identity("alice@example.com").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(source_identity("x"), None);
    }
}
