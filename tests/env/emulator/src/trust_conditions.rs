//! The `Condition` block of a role's trust policy, evaluated as IAM documents it ("IAM JSON
//! policy elements: Condition" and "Condition operators"): every operator in the block must
//! hold, every key under an operator must hold, and a key holds when the request's value
//! matches any of the listed values. Condition key names are case-insensitive, values are
//! compared case-sensitively (but for `…IgnoreCase`). A key absent from the request matches no
//! value, so a positive operator fails and a negated one (`StringNotEquals`, `StringNotLike`)
//! holds; `…IfExists` holds for an absent key; `Null` tests presence (`"true"`: absent).
//!
//! What AssumeRole's request context offers here: `aws:RequestTag/<key>` (the session tags),
//! `sts:SourceIdentity`, `sts:RoleSessionName` and `aws:PrincipalArn` (the caller). Operators
//! beyond the string ones and `Null`, and multivalued keys (`aws:TagKeys`, `ForAnyValue:`),
//! are not modelled: they never match, so a policy using them refuses (as a stricter IAM
//! would rather than a looser one).
use serde_json::Value;

/// The request's values for the condition keys.
#[derive(Debug, Default)]
pub(crate) struct RequestContext<'a> {
    pub principal_arn: &'a str,
    pub role_session_name: &'a str,
    pub source_identity: Option<&'a str>,
    pub tags: &'a [(String, String)],
}

impl RequestContext<'_> {
    fn value(&self, key: &str) -> Option<&str> {
        let lower = key.to_ascii_lowercase();
        if let Some(tag) = lower.strip_prefix("aws:requesttag/") {
            // Tag keys are case-insensitive in a request (two keys differing in case are refused).
            return self
                .tags
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(tag))
                .map(|(_, v)| v.as_str());
        }
        match lower.as_str() {
            "aws:principalarn" => Some(self.principal_arn),
            "sts:rolesessionname" => Some(self.role_session_name),
            "sts:sourceidentity" => self.source_identity,
            _ => None,
        }
    }
}

/// Whether the trust policy's `Condition` block holds for this request. `Null` (JSON) or an
/// empty object: no condition.
pub(crate) fn conditions_hold(block: &Value, request: &RequestContext) -> bool {
    let Some(operators) = block.as_object() else {
        return block.is_null();
    };
    operators.iter().all(|(operator, keys)| {
        keys.as_object().is_some_and(|keys| {
            keys.iter()
                .all(|(key, values)| operator_holds(operator, request.value(key), values))
        })
    })
}

fn values_of(values: &Value) -> Vec<&str> {
    match values {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        Value::Bool(true) => vec!["true"],
        Value::Bool(false) => vec!["false"],
        _ => Vec::new(),
    }
}

fn operator_holds(operator: &str, actual: Option<&str>, values: &Value) -> bool {
    let wanted = values_of(values);
    if operator == "Null" {
        // "true": the key must be absent; "false": present.
        return wanted.iter().any(|w| match *w {
            "true" => actual.is_none(),
            "false" => actual.is_some(),
            _ => false,
        });
    }
    let (base, if_exists) = match operator.strip_suffix("IfExists") {
        Some(base) => (base, true),
        None => (operator, false),
    };
    let Some(actual) = actual else {
        return if_exists || base.starts_with("StringNot");
    };
    let any = |f: &dyn Fn(&str) -> bool| wanted.iter().any(|w| f(w));
    match base {
        "StringEquals" => any(&|w| w == actual),
        "StringNotEquals" => !any(&|w| w == actual),
        "StringEqualsIgnoreCase" => any(&|w| w.eq_ignore_ascii_case(actual)),
        "StringNotEqualsIgnoreCase" => !any(&|w| w.eq_ignore_ascii_case(actual)),
        "StringLike" => any(&|w| like(w, actual)),
        "StringNotLike" => !any(&|w| like(w, actual)),
        _ => false,
    }
}

/// IAM's `StringLike`: `*` any run of characters, `?` any one character.
fn like(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // Greedy matching with one backtrack point for the last `*` seen.
    let (mut i, mut j) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while j < t.len() {
        if i < p.len() && (p[i] == '?' || p[i] == t[j]) {
            i += 1;
            j += 1;
        } else if i < p.len() && p[i] == '*' {
            star = Some((i, j));
            i += 1;
        } else if let Some((si, sj)) = star {
            i = si + 1;
            j = sj + 1;
            star = Some((si, sj + 1));
        } else {
            return false;
        }
    }
    p[i..].iter().all(|c| *c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request<'a>(tags: &'a [(String, String)], source: Option<&'a str>) -> RequestContext<'a> {
        RequestContext {
            principal_arn: "arn:aws:iam::123456789012:user/signalman-operator",
            role_session_name: "signalman-team-a",
            source_identity: source,
            tags,
        }
    }

    fn tag(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn a_namespace_tag_condition_admits_its_namespace_only() {
        let block = json!({
            "StringEquals": {"aws:RequestTag/signalman.dev/namespace": "team-a"},
            "Null": {"sts:SourceIdentity": "false"}
        });
        let a = [tag("signalman.dev/namespace", "team-a")];
        let b = [tag("signalman.dev/namespace", "team-b")];
        assert!(conditions_hold(&block, &request(&a, Some("alice"))));
        assert!(!conditions_hold(&block, &request(&b, Some("alice"))));
        assert!(
            !conditions_hold(&block, &request(&a, None)),
            "SourceIdentity required"
        );
        assert!(
            !conditions_hold(&block, &request(&[], Some("alice"))),
            "no tag"
        );
        // Key names are case-insensitive, the tag key too; values are not.
        let upper = json!({"StringEquals": {"AWS:RequestTag/Signalman.dev/Namespace": "team-a"}});
        assert!(conditions_hold(&upper, &request(&a, None)));
        let value_case =
            json!({"StringEquals": {"aws:RequestTag/signalman.dev/namespace": "Team-A"}});
        assert!(!conditions_hold(&value_case, &request(&a, None)));
    }

    #[test]
    fn values_are_alternatives_and_operators_all_hold() {
        let a = [tag("signalman.dev/namespace", "team-a")];
        let either = json!({"StringEquals": {"aws:RequestTag/signalman.dev/namespace": ["team-b", "team-a"]}});
        assert!(conditions_hold(&either, &request(&a, None)));
        let both = json!({
            "StringEquals": {"aws:RequestTag/signalman.dev/namespace": "team-a"},
            "StringLike": {"sts:RoleSessionName": "other-*"}
        });
        assert!(!conditions_hold(&both, &request(&a, None)));
        assert!(conditions_hold(&json!({}), &request(&a, None)));
        assert!(conditions_hold(&Value::Null, &request(&a, None)));
    }

    #[test]
    fn absent_keys_fail_positive_operators_and_pass_negated_ones() {
        let none: [(String, String); 0] = [];
        let r = request(&none, None);
        assert!(!conditions_hold(
            &json!({"StringLike": {"sts:SourceIdentity": "*"}}),
            &r
        ));
        assert!(conditions_hold(
            &json!({"StringNotEquals": {"sts:SourceIdentity": "x"}}),
            &r
        ));
        assert!(conditions_hold(
            &json!({"StringEqualsIfExists": {"sts:SourceIdentity": "x"}}),
            &r
        ));
        assert!(conditions_hold(
            &json!({"Null": {"sts:SourceIdentity": "true"}}),
            &r
        ));
        // Not modelled: never holds.
        assert!(!conditions_hold(
            &json!({"ForAnyValue:StringEquals": {"aws:TagKeys": "x"}}),
            &r
        ));
        assert!(!conditions_hold(
            &json!({"NumericLessThan": {"sts:RoleSessionName": "1"}}),
            &r
        ));
    }

    #[test]
    fn string_like_wildcards() {
        assert!(like(
            "system=3Aserviceaccount=3A*",
            "system=3Aserviceaccount=3Aargocd=3Aa"
        ));
        assert!(like("team-?", "team-a"));
        assert!(!like("team-?", "team-ab"));
        assert!(like("*a*b", "xxaybb"));
        assert!(!like("a*b", "ab-c"));
        assert!(like("*", ""));
    }
}
