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

/// `signalman-<namespace>` as a RoleSessionName ([`sts_name`]: two namespaces never share one).
pub fn session_name(namespace: &str) -> String {
    sts_name(&format!("signalman-{namespace}"))
}

/// SourceIdentity from a Kubernetes user name ([`sts_name`]: `system:serviceaccount:team:x-a`
/// and `system:serviceaccount:team-x:a` stay two identities). `None` when too short to be one.
pub fn source_identity(user: &str) -> Option<String> {
    let id = sts_name(user);
    (id.len() >= 2).then_some(id)
}

/// Longest RoleSessionName or SourceIdentity STS takes.
const STS_NAME_MAX: usize = 64;

/// `text` in the 64 characters of `[\w+=,.@-]` STS takes for a RoleSessionName or a
/// SourceIdentity, such that two different texts never give the same name: every character
/// outside `[A-Za-z0-9_+.@-]` (the escape `=` and `,` included) is written as `=XX` per UTF-8
/// byte (`:` is `=3A`); a result longer than 64 characters keeps its first 47 and ends with `,`
/// and 16 hex digits of the text's SHA-256 (`,` appears nowhere else).
pub fn sts_name(text: &str) -> String {
    use sha2::{Digest, Sha256};
    use std::fmt::Write as _;
    let mut out = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || "_+.@-".contains(c) {
            out.push(c);
        } else {
            let mut bytes = [0u8; 4];
            for b in c.encode_utf8(&mut bytes).bytes() {
                let _ = write!(out, "={b:02X}");
            }
        }
    }
    if out.len() <= STS_NAME_MAX {
        return out;
    }
    const KEEP: usize = STS_NAME_MAX - 17;
    // Whole escapes only: cut before an `=XX` that would be split.
    let mut cut = KEEP;
    if let Some(i) = out[..KEEP].rfind('=') {
        if i + 3 > KEEP {
            cut = i;
        }
    }
    let digest = Sha256::digest(text.as_bytes());
    let mut name = out[..cut].to_string();
    name.push(',');
    for b in &digest[..8] {
        let _ = write!(name, "{b:02x}");
    }
    name
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
            Some("system=3Aserviceaccount=3Aargocd=3Aargocd-application-controller")
        );
        assert_eq!(
            source_identity("alice@example.com").as_deref(),
            Some("alice@example.com")
        );
        assert_eq!(source_identity("x"), None);
        for name in [
            sts_name("system:serviceaccount:argocd:argocd-application-controller"),
            sts_name(&"ü:,=".repeat(40)),
            session_name(&"n".repeat(63)),
        ] {
            assert!(name.len() >= 2 && name.len() <= 64, "{name}");
            assert!(
                name.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c)),
                "{name}"
            );
        }
    }

    /// Two different requesters, or namespaces, never become one identity.
    #[test]
    fn different_names_never_collide() {
        assert_ne!(
            source_identity("system:serviceaccount:team:x-deployer"),
            source_identity("system:serviceaccount:team-x:deployer")
        );
        assert_ne!(sts_name("a:b"), sts_name("a-b"));
        assert_ne!(sts_name("a=3Ab"), sts_name("a:b"));
        assert_ne!(sts_name("a,b"), sts_name("a=2Cb"));
        let long = |tail: &str| format!("system:serviceaccount:{}:{tail}", "team".repeat(12));
        assert_ne!(sts_name(&long("a")), sts_name(&long("b")));
        assert_ne!(
            session_name(&format!("{}a", "n".repeat(62))),
            session_name(&format!("{}b", "n".repeat(62)))
        );
        // A long name's hashed form never equals a short name's plain one: only hashed
        // forms hold a comma.
        assert!(sts_name(&long("a")).contains(','));
        assert!(!sts_name("a,b").contains(','));
    }
}
