//! The JSON Patch (RFC 6902) that turns the pod the API server sent into the pod
//! [`crate::inject::pod`] made of it. The API server applies it; its result must be exactly the
//! injected pod, so the diff is small and plain rather than minimal:
//!
//! - objects are compared key by key, in the order of their keys (`serde_json` keeps it): a key
//!   only in the old one is removed, a key only in the new one added, one in both compared;
//! - arrays of the same length are compared element by element (an index stays an index: no
//!   operation shifts another's elements); arrays of different lengths are replaced whole;
//! - anything else that differs is replaced.
//!
//! Keys are written as JSON Pointer tokens (RFC 6901): `~` as `~0`, `/` as `~1` (annotation
//! keys such as `secret-reloader.io/inject` hold a `/`).

use serde_json::{Map, Value, json};

/// The operations that turn `from` into `to`, in document order (none when they are equal).
pub(crate) fn diff(from: &Value, to: &Value) -> Vec<Value> {
    let mut ops = Vec::new();
    let mut path = String::new();
    walk(from, to, &mut path, &mut ops);
    ops
}

/// Appends to `ops` what turns `from` into `to`, both at `path`.
fn walk(from: &Value, to: &Value, path: &mut String, ops: &mut Vec<Value>) {
    match (from, to) {
        (Value::Object(a), Value::Object(b)) => objects(a, b, path, ops),
        (Value::Array(a), Value::Array(b)) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                let len = path.len();
                path.push('/');
                path.push_str(&i.to_string());
                walk(x, y, path, ops);
                path.truncate(len);
            }
        }
        _ if from == to => {}
        _ => ops.push(json!({"op": "replace", "path": path.as_str(), "value": to})),
    }
}

fn objects(
    a: &Map<String, Value>,
    b: &Map<String, Value>,
    path: &mut String,
    ops: &mut Vec<Value>,
) {
    for (key, old) in a {
        let len = path.len();
        push_token(path, key);
        match b.get(key) {
            Some(new) => walk(old, new, path, ops),
            None => ops.push(json!({"op": "remove", "path": path.as_str()})),
        }
        path.truncate(len);
    }
    for (key, new) in b.iter().filter(|(k, _)| !a.contains_key(*k)) {
        let len = path.len();
        push_token(path, key);
        ops.push(json!({"op": "add", "path": path.as_str(), "value": new}));
        path.truncate(len);
    }
}

/// Appends `/` and `key` as a JSON Pointer token.
fn push_token(path: &mut String, key: &str) {
    path.push('/');
    for c in key.chars() {
        match c {
            '~' => path.push_str("~0"),
            '/' => path.push_str("~1"),
            c => path.push(c),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Applies `ops` (add, remove, replace: what [`diff`] writes) to `doc`, as RFC 6902 says.
    fn apply(mut doc: Value, ops: &[Value]) -> Result<Value, String> {
        for op in ops {
            let path = op["path"].as_str().ok_or("no path")?;
            if path.is_empty() {
                match op["op"].as_str() {
                    Some("replace") | Some("add") => doc = op["value"].clone(),
                    _ => return Err("cannot remove the root".into()),
                }
                continue;
            }
            let tokens: Vec<String> = path
                .strip_prefix('/')
                .ok_or("a path starts with /")?
                .split('/')
                .map(|t| t.replace("~1", "/").replace("~0", "~"))
                .collect();
            let (last, parents) = tokens.split_last().ok_or("empty path")?;
            let mut at = &mut doc;
            for t in parents {
                at = match at {
                    Value::Object(m) => m.get_mut(t).ok_or(format!("no {t}"))?,
                    Value::Array(v) => {
                        let i: usize = t.parse().map_err(|_| format!("bad index {t}"))?;
                        v.get_mut(i).ok_or(format!("no index {i}"))?
                    }
                    _ => return Err(format!("{t} under a scalar")),
                };
            }
            let value = op.get("value").cloned();
            match (op["op"].as_str(), at) {
                (Some("add"), Value::Object(m)) => {
                    m.insert(last.clone(), value.ok_or("add without value")?);
                }
                (Some("replace"), Value::Object(m)) if m.contains_key(last) => {
                    m.insert(last.clone(), value.ok_or("replace without value")?);
                }
                (Some("remove"), Value::Object(m)) => {
                    m.shift_remove(last).ok_or(format!("remove of no {last}"))?;
                }
                (Some("replace"), Value::Array(v)) => {
                    let i: usize = last.parse().map_err(|_| "bad index")?;
                    *v.get_mut(i).ok_or("no index")? = value.ok_or("replace without value")?;
                }
                (op, _) => return Err(format!("{op:?} at {path} not applicable")),
            }
        }
        Ok(doc)
    }

    #[test]
    fn a_pod_gets_what_was_added_and_keys_are_escaped() {
        let a = json!({
            "metadata": {"name": "p", "annotations": {"secret-reloader.io/inject": "true"}},
            "spec": {"containers": [{"name": "app", "image": "a"}], "volumes": []}
        });
        let b = json!({
            "metadata": {"name": "p", "annotations": {"secret-reloader.io/inject": "true",
                                                      "a~b/c": "x"}},
            "spec": {"containers": [{"name": "app", "image": "a", "env": []}],
                     "volumes": [{"name": "v"}],
                     "initContainers": [{"name": "secret-reloader"}]}
        });
        let ops = diff(&a, &b);
        assert_eq!(
            ops,
            vec![
                json!({"op": "add", "path": "/metadata/annotations/a~0b~1c", "value": "x"}),
                json!({"op": "add", "path": "/spec/containers/0/env", "value": []}),
                json!({"op": "replace", "path": "/spec/volumes", "value": [{"name": "v"}]}),
                json!({"op": "add", "path": "/spec/initContainers",
                       "value": [{"name": "secret-reloader"}]}),
            ]
        );
        assert_eq!(apply(a.clone(), &ops), Ok(b));
        assert!(diff(&a, &a).is_empty());
    }

    #[test]
    fn removed_keys_and_a_replaced_root() {
        let (a, b) = (json!({"x": 1, "y/": {"z": 2}}), json!({"x": 1}));
        let ops = diff(&a, &b);
        assert_eq!(ops, vec![json!({"op": "remove", "path": "/y~1"})]);
        assert_eq!(apply(a, &ops), Ok(b));
        let ops = diff(&json!([1]), &json!({"a": 1}));
        assert_eq!(
            ops,
            vec![json!({"op": "replace", "path": "", "value": {"a": 1}})]
        );
    }

    /// Small JSON values over few keys (`~` and `/` among them) and few scalars, so that two of
    /// them often share structure.
    fn value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (0..3i64).prop_map(|n| json!(n)),
            prop::sample::select(vec!["", "a", "~1"]).prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
                prop::collection::vec(
                    (
                        prop::sample::select(vec!["a", "b", "~", "/", "a~1/", ""]),
                        inner
                    ),
                    0..4
                )
                .prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
                )),
            ]
        })
    }

    proptest! {
        #[test]
        fn applying_the_patch_to_a_gives_b(a in value(), b in value()) {
            let ops = diff(&a, &b);
            prop_assert_eq!(apply(a.clone(), &ops), Ok(b.clone()));
            prop_assert!(diff(&b, &b).is_empty());
        }

        #[test]
        fn a_changed_copy_is_patched_in_place(a in value(), b in value(), at in 0usize..8) {
            // b put somewhere inside a: the patch touches that place only.
            let mut changed = a.clone();
            if let Value::Object(m) = &mut changed {
                let key = m.keys().nth(at % m.len().max(1)).cloned().unwrap_or_default();
                m.insert(key, b);
            }
            let ops = diff(&a, &changed);
            prop_assert_eq!(apply(a, &ops), Ok(changed));
        }
    }
}
