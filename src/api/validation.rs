//! Client-side validation against the very schema the CRDs carry.
//!
//! The API server enforces two kinds of rules from a CRD: the OpenAPI keywords (types, required
//! fields, lengths, enums, bounds) and the CEL rules (`x-kubernetes-validations`). kube 5's
//! derive evaluates the CEL rules client-side (`validate_cel`); this module evaluates the
//! OpenAPI keywords, reading them from the generated schema so that the server and the operator
//! can never disagree about a limit.
//!
//! Only the keywords the generated schemas use are understood; a unit test fails when a schema
//! grows a keyword this module would silently ignore ([`UNDERSTOOD_KEYWORDS`]).
//!
//! Every message names the field and the rule, never the value: inputs and payloads may carry
//! secrets and end up in status messages, events and logs.

use kube::core::cel::{compile_schema, CompiledSchema, ErrorKind, ValidationErrors, Validator};
use kube::CustomResourceExt;
use serde_json::{json, Value};

/// Schema keywords [`check_schema`] evaluates or may safely ignore (descriptions, formats,
/// merge strategies, CEL rules which `validate_cel` evaluates).
pub const UNDERSTOOD_KEYWORDS: &[&str] = &[
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
    "minProperties",
    "maxProperties",
    "minimum",
    "maximum",
    "nullable",
    // no effect on validity:
    "description",
    "title",
    "format",
    "default",
    "x-kubernetes-validations",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
];

/// Check `value` against an OpenAPI v3 (structural) schema; returns one message per violation,
/// each prefixed with the field's path (`prefix` is the path of `value` itself, e.g. `spec`).
pub fn check_schema(schema: &Value, value: &Value, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    walk(schema, value, prefix, &mut out);
    out
}

fn walk(schema: &Value, value: &Value, path: &str, out: &mut Vec<String>) {
    let here = if path.is_empty() { "(root)" } else { path };
    if value.is_null() {
        if !flag(schema, "nullable") {
            out.push(format!("{here}: must not be null"));
        }
        return;
    }
    if let Some(ty) = schema.get("type").and_then(Value::as_str) {
        let ok = match ty {
            "object" => value.is_object(),
            "array" => value.is_array(),
            "string" => value.is_string(),
            "boolean" => value.is_boolean(),
            "integer" => value.is_i64() || value.is_u64(),
            "number" => value.is_number(),
            _ => true,
        };
        if !ok {
            out.push(format!("{here}: must be of type {ty}"));
            return;
        }
    }
    if let Some(allowed) = schema.get("enum").and_then(Value::as_array) {
        if !allowed.contains(value) {
            let names: Vec<String> = allowed
                .iter()
                .map(|v| v.as_str().map_or_else(|| v.to_string(), str::to_owned))
                .collect();
            out.push(format!("{here}: must be one of {}", names.join(", ")));
        }
    }
    match value {
        Value::String(s) => {
            let len = s.chars().count() as u64;
            if let Some(min) = uint(schema, "minLength").filter(|m| len < *m) {
                if min == 1 {
                    out.push(format!("{here}: must not be empty"));
                } else {
                    out.push(format!("{here}: must be at least {min} characters long"));
                }
            }
            if let Some(max) = uint(schema, "maxLength").filter(|m| len > *m) {
                out.push(format!("{here}: must be at most {max} characters long"));
            }
        }
        Value::Number(n) => {
            if let (Some(min), Some(v)) =
                (schema.get("minimum").and_then(Value::as_f64), n.as_f64())
            {
                if v < min {
                    out.push(format!("{here}: must be at least {min}"));
                }
            }
            if let (Some(max), Some(v)) =
                (schema.get("maximum").and_then(Value::as_f64), n.as_f64())
            {
                if v > max {
                    out.push(format!("{here}: must be at most {max}"));
                }
            }
        }
        Value::Array(items) => {
            let len = items.len() as u64;
            if let Some(min) = uint(schema, "minItems").filter(|m| len < *m) {
                out.push(format!("{here}: must have at least {min} items"));
            }
            if let Some(max) = uint(schema, "maxItems").filter(|m| len > *m) {
                out.push(format!("{here}: must have at most {max} items"));
            }
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    walk(item_schema, item, &format!("{path}[{i}]"), out);
                }
            }
        }
        Value::Object(map) => {
            let len = map.len() as u64;
            if let Some(min) = uint(schema, "minProperties").filter(|m| len < *m) {
                out.push(format!("{here}: must have at least {min} entries"));
            }
            if let Some(max) = uint(schema, "maxProperties").filter(|m| len > *m) {
                out.push(format!("{here}: must have at most {max} entries"));
            }
            if let Some(required) = schema.get("required").and_then(Value::as_array) {
                for name in required.iter().filter_map(Value::as_str) {
                    if !map.contains_key(name) {
                        out.push(format!("{}: is required", join(path, name)));
                    }
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let additional = schema.get("additionalProperties");
            for (key, child) in map {
                if let Some(child_schema) = properties.and_then(|p| p.get(key)) {
                    walk(child_schema, child, &join(path, key), out);
                } else if let Some(additional) = additional.filter(|a| a.is_object()) {
                    walk(additional, child, &format!("{path}[{:?}]", short(key)), out);
                } else if properties.is_some()
                    && !flag(schema, "x-kubernetes-preserve-unknown-fields")
                {
                    // The API server prunes unknown fields (kubectl refuses them with
                    // strict field validation); either way they are not what the user meant.
                    out.push(format!("{}: unknown field", join(path, short(key))));
                }
            }
        }
        _ => {}
    }
}

/// A map key or field name as shown in a path; a key too long to be a name (payload keys are
/// at most 50 characters) is replaced, so a message stays short and quotes no user data.
fn short(key: &str) -> &str {
    if key.chars().count() <= 64 {
        key
    } else {
        "(key longer than 64 characters)"
    }
}

fn flag(schema: &Value, name: &str) -> bool {
    schema.get(name).and_then(Value::as_bool) == Some(true)
}

fn uint(schema: &Value, name: &str) -> Option<u64> {
    schema.get(name).and_then(Value::as_u64)
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// Keywords used anywhere in `schema` that [`check_schema`] does not know. Empty for the
/// schemas this crate generates (a unit test keeps it that way).
pub fn unknown_keywords(schema: &Value) -> Vec<String> {
    let mut found = Vec::new();
    collect_unknown(schema, &mut found);
    found.sort();
    found.dedup();
    found
}

fn collect_unknown(schema: &Value, found: &mut Vec<String>) {
    let Some(obj) = schema.as_object() else {
        return;
    };
    for (key, child) in obj {
        match key.as_str() {
            "properties" => {
                if let Some(props) = child.as_object() {
                    props.values().for_each(|p| collect_unknown(p, found));
                }
            }
            "items" | "additionalProperties" => collect_unknown(child, found),
            k if UNDERSTOOD_KEYWORDS.contains(&k) => {}
            k => found.push(k.to_owned()),
        }
    }
}

/// One kind's CEL rules, compiled once.
///
/// kube's derived `validate_cel` regenerates the whole CRD, serializes its schema and compiles
/// every rule on each call; in a burst that was close to half of the operator's CPU. This holds
/// the compiled rules and the function registry for the life of the process and evaluates the
/// same rules against the same (root) schema, so its verdicts are those of `validate_cel`.
pub struct CelRules {
    validator: Validator,
    schema: CompiledSchema,
}

impl CelRules {
    /// Compiles the rules of `K`'s generated CRD schema (call once, keep the result).
    pub fn of<K: CustomResourceExt>() -> CelRules {
        let crd = K::crd();
        let schema = crd
            .spec
            .versions
            .first()
            .and_then(|v| v.schema.as_ref())
            .and_then(|s| s.open_api_v3_schema.as_ref())
            .expect("derived CRDs carry a schema");
        let schema = serde_json::to_value(schema).expect("schemas serialize");
        CelRules {
            validator: Validator::new(),
            schema: compile_schema(&schema),
        }
    }

    /// Runs every rule on an object whose spec is `spec`. Only the spec is handed over: every
    /// rule of these kinds sits at or below `spec`, and the field paths in errors are the same
    /// as for the whole object (`spec.region`, ...).
    ///
    /// Errors come in schema order, as `validate_cel` gives them: a node's own rules before its
    /// fields', fields by name. (The compiled tree keeps fields in a hash map, whose order
    /// would change from one process to the next; the sort is stable, so rules at one path keep
    /// their order.)
    pub fn check_spec(&self, spec: &Value) -> Result<(), ValidationErrors> {
        let object = json!({ "spec": spec });
        self.validator
            .validate_compiled(&self.schema, &object, None)
            .map_err(|errors| {
                let mut errors = errors.into_vec();
                errors.sort_by(|a, b| a.field_path.cmp(&b.field_path));
                errors.into()
            })
    }
}

/// Turn CEL failures into messages that name the field and the rule's message, never a value.
pub fn describe_cel_errors(errors: &ValidationErrors) -> Vec<String> {
    errors
        .iter()
        .map(|e| {
            let path = if e.field_path.is_empty() {
                "(root)"
            } else {
                e.field_path.as_str()
            };
            match e.kind {
                // The rule's own message (or "failed rule: <rule>"): written by us, value-free.
                ErrorKind::ValidationFailure => format!("{path}: {}", e.message),
                // Evaluation errors may quote operands; say which rule instead.
                _ => format!("{path}: rule could not be evaluated: {}", e.rule),
            }
        })
        .collect()
}

/// `Ok` when there are no problems, else one sentence listing them all.
pub fn into_result(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_each_keyword_without_quoting_values() {
        let schema = json!({
            "type": "object",
            "required": ["a"],
            "properties": {
                "a": {"type": "string", "minLength": 1, "maxLength": 3},
                "e": {"type": "string", "enum": ["X", "Y"]},
                "n": {"type": "integer", "minimum": 1, "maximum": 5},
                "l": {"type": "array", "maxItems": 1, "items": {"type": "string", "maxLength": 2}},
                "m": {"type": "object", "minProperties": 1, "maxProperties": 1,
                      "additionalProperties": {"type": "string"}}
            }
        });
        let ok = json!({"a": "abc", "e": "X", "n": 3, "l": ["ab"], "m": {"k": "v"}});
        assert!(check_schema(&schema, &ok, "spec").is_empty());

        let bad = json!({"e": "secret-z", "n": 9, "l": ["secret", "b"], "m": {}, "zz": 1});
        let problems = check_schema(&schema, &bad, "spec");
        let text = problems.join("\n");
        assert!(text.contains("spec.a: is required"), "{text}");
        assert!(text.contains("spec.e: must be one of X, Y"), "{text}");
        assert!(text.contains("spec.n: must be at most 5"), "{text}");
        assert!(text.contains("spec.l: must have at most 1 items"), "{text}");
        assert!(
            text.contains("spec.l[0]: must be at most 2 characters long"),
            "{text}"
        );
        assert!(
            text.contains("spec.m: must have at least 1 entries"),
            "{text}"
        );
        assert!(text.contains("spec.zz: unknown field"), "{text}");
        assert!(!text.contains("secret"), "values leaked: {text}");

        let empty = json!({"a": ""});
        assert_eq!(
            check_schema(&schema, &empty, "spec"),
            vec!["spec.a: must not be empty"]
        );
        let wrong_type = json!({"a": 5});
        assert_eq!(
            check_schema(&schema, &wrong_type, "spec"),
            vec!["spec.a: must be of type string"]
        );
    }

    #[test]
    fn long_keys_are_not_quoted() {
        let schema =
            json!({"type": "object", "additionalProperties": {"type": "string", "maxLength": 1}});
        let key = "K".repeat(65);
        let problems = check_schema(&schema, &json!({ key: "vv" }), "spec.payload");
        assert_eq!(
            problems,
            vec!["spec.payload[\"(key longer than 64 characters)\"]: must be at most 1 characters long"]
        );
    }

    #[test]
    fn lengths_count_characters_like_the_api_server() {
        let schema = json!({"type": "string", "maxLength": 2});
        assert!(check_schema(&schema, &json!("éé"), "x").is_empty());
        assert_eq!(check_schema(&schema, &json!("ééé"), "x").len(), 1);
    }

    #[test]
    fn reports_unknown_keywords() {
        let schema =
            json!({"type": "object", "properties": {"a": {"type": "string", "pattern": "^a$"}}});
        assert_eq!(unknown_keywords(&schema), vec!["pattern".to_owned()]);
    }
}
