//! Who a caller is, as AWS judges "the same approver": the principal, never the session.
//!
//! IRSA and EKS Pod Identity sign with role sessions whose names change with every process,
//! pod and credential refresh (`web-identity-token-<millis>`, `eks-<cluster>-<pod>-<uuid>`).
//! The operator's own earlier decisions must be recognised whatever session made them, so
//! callers are compared as the principal behind the session: the role of an assumed-role
//! session, the IAM user itself.

/// The principal behind `arn`: `arn:<partition>:sts::<account>:assumed-role/<role>/<session>`
/// is the role `arn:<partition>:iam::<account>:role/<role>` (the session ARN carries no role
/// path, so none is kept); any other ARN is its own principal.
pub fn principal_of(arn: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if let [_, partition, "sts", _, account, resource] = parts.as_slice() {
        if let Some(rest) = resource.strip_prefix("assumed-role/") {
            if let Some((role, _session)) = rest.split_once('/') {
                return format!("arn:{partition}:iam::{account}:role/{role}");
            }
        }
    }
    arn.to_string()
}

/// Whether two caller ARNs are the same principal (see [`principal_of`]). A role ARN with a
/// path names the same role as a session of it.
pub fn same_principal(a: &str, b: &str) -> bool {
    without_role_path(&principal_of(a)) == without_role_path(&principal_of(b))
}

/// `arn:…:iam::<account>:role/<path>/<name>` as `arn:…:iam::<account>:role/<name>`.
fn without_role_path(arn: &str) -> String {
    match arn.split_once(":role/") {
        Some((head, path)) => format!("{head}:role/{}", path.rsplit('/').next().unwrap_or(path)),
        None => arn.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_role_session_is_its_role_whatever_the_session_name() {
        let irsa =
            "arn:aws:sts::123456789012:assumed-role/Approver/web-identity-token-1733300000000";
        let pod = "arn:aws:sts::123456789012:assumed-role/Approver/eks-prod-signalman-7d9f-1b2c";
        assert_eq!(
            principal_of(irsa),
            "arn:aws:iam::123456789012:role/Approver"
        );
        assert!(same_principal(irsa, pod));
        assert!(same_principal(
            irsa,
            "arn:aws:iam::123456789012:role/teams/Approver"
        ));
    }

    #[test]
    fn other_roles_accounts_partitions_and_users_differ() {
        let s = "arn:aws:sts::123456789012:assumed-role/Approver/s1";
        for other in [
            "arn:aws:sts::123456789012:assumed-role/Other/s1",
            "arn:aws:sts::210987654321:assumed-role/Approver/s1",
            "arn:aws-us-gov:sts::123456789012:assumed-role/Approver/s1",
            "arn:aws:iam::123456789012:user/Approver",
        ] {
            assert!(!same_principal(s, other), "{other}");
        }
    }

    #[test]
    fn users_and_odd_strings_are_their_own_principal() {
        let user = "arn:aws:iam::123456789012:user/release-manager";
        assert_eq!(principal_of(user), user);
        assert!(same_principal(user, user));
        assert_eq!(principal_of("not an arn"), "not an arn");
        assert_eq!(
            principal_of("arn:aws:sts::1:assumed-role/no-session"),
            "arn:aws:sts::1:assumed-role/no-session"
        );
    }
}
