//! Who is calling: the access key of the SigV4 `Authorization` header, mapped to an ARN.
//! The signature itself is not checked.
use hyper::HeaderMap;

/// The access key id in `Authorization: AWS4-HMAC-SHA256 Credential=<KEY>/<date>/...`.
pub(crate) fn access_key(headers: &HeaderMap) -> Option<String> {
    let auth = headers.get(hyper::header::AUTHORIZATION)?.to_str().ok()?;
    let start = auth.find("Credential=")? + "Credential=".len();
    let key = auth[start..].split('/').next()?.trim();
    (!key.is_empty()).then(|| key.to_string())
}

/// The ARN of an access key with no explicit mapping: the IAM user of that name.
pub fn default_arn(account_id: &str, access_key: &str) -> String {
    format!("arn:aws:iam::{account_id}:user/{access_key}")
}

/// Whether the approver entry `entry` of an aws:approve step names `principal`.
/// Entries may be an IAM user name, a user ARN, a role ARN (matching the caller's
/// assumed-role sessions of that role) or an exact (assumed-role) ARN.
pub(crate) fn approver_matches(entry: &str, principal: &str) -> bool {
    let entry = entry.trim();
    if entry == principal {
        return true;
    }
    let Some((account, resource)) = split_arn(principal) else {
        return false;
    };
    if let Some(user_path) = resource.strip_prefix("user/") {
        let name = user_path.rsplit('/').next().unwrap_or(user_path);
        return !entry.starts_with("arn:") && entry == name;
    }
    if let Some(rest) = resource.strip_prefix("assumed-role/") {
        let role = rest.split('/').next().unwrap_or(rest);
        if let Some((entry_account, entry_resource)) = split_arn(entry) {
            if entry_account != account {
                return false;
            }
            if let Some(role_path) = entry_resource.strip_prefix("role/") {
                return role_path.rsplit('/').next() == Some(role);
            }
            if let Some(entry_rest) = entry_resource.strip_prefix("assumed-role/") {
                return entry_rest == role;
            }
        }
    }
    false
}

/// The principal behind a caller ARN, as aws:approve counts decisions: an assumed-role
/// session `arn:<partition>:sts::<acct>:assumed-role/<R>/<session>` is the role
/// `arn:<partition>:iam::<acct>:role/<R>` whatever the session (a role ARN with a path is
/// that role too: role names are unique in an account, and session ARNs carry no path);
/// any other ARN (an IAM user's) is its own principal.
pub(crate) fn principal_of(arn: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    if let ["arn", partition, service, _region, account, resource] = parts.as_slice() {
        let role = match (*service, resource.split_once('/')) {
            ("sts", Some(("assumed-role", rest))) => rest.split_once('/').map(|(role, _)| role),
            ("iam", Some(("role", path))) => path.rsplit('/').next(),
            _ => None,
        };
        if let Some(role) = role.filter(|r| !r.is_empty()) {
            return format!("arn:{partition}:iam::{account}:role/{role}");
        }
    }
    arn.to_string()
}

/// (account, resource) of `arn:aws:<svc>::<account>:<resource>`.
fn split_arn(arn: &str) -> Option<(&str, &str)> {
    let mut parts = arn.splitn(6, ':');
    if parts.next()? != "arn" {
        return None;
    }
    let _partition = parts.next()?;
    let _service = parts.next()?;
    let _region = parts.next()?;
    let account = parts.next()?;
    let resource = parts.next()?;
    Some((account, resource))
}

/// The account of an ARN, when it has one.
pub(crate) fn account_of(arn: &str) -> Option<&str> {
    split_arn(arn).map(|(a, _)| a).filter(|a| !a.is_empty())
}

/// A stable, made-up unique id in the shape GetCallerIdentity gives: `AIDA…` for users,
/// `AROA…:<session>` for assumed roles, `AROA…` for roles.
pub(crate) fn user_id(arn: &str) -> String {
    let mut hash: u64 = 0xcbf29ce484222325;
    for b in arn.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x100000001b3);
    }
    let id = format!("{hash:016X}");
    match split_arn(arn).map(|(_, r)| r) {
        Some(r) if r.starts_with("assumed-role/") => {
            let session = r.rsplit('/').next().unwrap_or("session");
            format!("AROA{id}:{session}")
        }
        Some(r) if r.starts_with("role/") => format!("AROA{id}"),
        _ => format!("AIDA{id}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_access_key() {
        let mut h = HeaderMap::new();
        h.insert(
            hyper::header::AUTHORIZATION,
            "AWS4-HMAC-SHA256 Credential=alice/20240101/us-east-1/ssm/aws4_request, SignedHeaders=host, Signature=abc"
                .parse()
                .unwrap(),
        );
        assert_eq!(access_key(&h).as_deref(), Some("alice"));
        assert_eq!(access_key(&HeaderMap::new()), None);
    }

    #[test]
    fn approvers_match_by_name_arn_and_role() {
        let user = "arn:aws:iam::123456789012:user/alice";
        assert!(approver_matches("alice", user));
        assert!(approver_matches(user, user));
        assert!(!approver_matches("bob", user));
        assert!(!approver_matches(
            "arn:aws:iam::123456789012:user/bob",
            user
        ));
        let pathed = "arn:aws:iam::123456789012:user/team/alice";
        assert!(approver_matches("alice", pathed));
        let session = "arn:aws:sts::123456789012:assumed-role/Deployer/op-1";
        assert!(approver_matches(
            "arn:aws:iam::123456789012:role/Deployer",
            session
        ));
        assert!(approver_matches(
            "arn:aws:iam::123456789012:role/ci/Deployer",
            session
        ));
        assert!(approver_matches(session, session));
        assert!(!approver_matches(
            "arn:aws:iam::999999999999:role/Deployer",
            session
        ));
        assert!(!approver_matches("Deployer", session));
        assert!(!approver_matches(
            "arn:aws:iam::123456789012:role/Other",
            session
        ));
    }

    #[test]
    fn a_role_session_is_its_role_whatever_the_session() {
        let role = "arn:aws:iam::123456789012:role/Deployer";
        for arn in [
            "arn:aws:sts::123456789012:assumed-role/Deployer/s1",
            "arn:aws:sts::123456789012:assumed-role/Deployer/eks-c-p-0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9",
            "arn:aws:iam::123456789012:role/Deployer",
            "arn:aws:iam::123456789012:role/ci/Deployer",
        ] {
            assert_eq!(principal_of(arn), role, "{arn}");
        }
        assert_eq!(
            principal_of("arn:aws-us-gov:sts::123456789012:assumed-role/Deployer/s"),
            "arn:aws-us-gov:iam::123456789012:role/Deployer"
        );
        assert_ne!(
            principal_of("arn:aws:sts::999999999999:assumed-role/Deployer/s1"),
            role
        );
        let user = "arn:aws:iam::123456789012:user/team/alice";
        assert_eq!(principal_of(user), user);
        assert_eq!(principal_of("not an arn"), "not an arn");
        assert_eq!(
            principal_of("arn:aws:sts::1:assumed-role/no-session"),
            "arn:aws:sts::1:assumed-role/no-session"
        );
    }

    #[test]
    fn user_ids_have_the_right_prefix() {
        assert!(user_id("arn:aws:iam::1:user/a").starts_with("AIDA"));
        assert!(user_id("arn:aws:sts::1:assumed-role/R/s").ends_with(":s"));
        assert_eq!(
            user_id("arn:aws:iam::1:user/a"),
            user_id("arn:aws:iam::1:user/a")
        );
    }
}
