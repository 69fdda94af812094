//! The answers to reviews, from the bodies the API server sends (and others).

use super::*;

/// A review of `request` fields merged over a Pod CREATE's.
fn review(overrides: Value) -> Vec<u8> {
    let mut request = json!({
        "uid": "705ab4f5-6393-11e8-b7cc-42010a800002",
        "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"},
        "namespace": "shop",
        "operation": "CREATE",
        "dryRun": false,
        "object": {"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"generateName": "web-7d4b9-", "annotations": {"a/b": "c"}},
                   "spec": {"containers": [{"name": "app", "image": "app"}]}}
    });
    if let (Value::Object(r), Value::Object(o)) = (&mut request, overrides) {
        for (k, v) in o {
            r.insert(k, v);
        }
    }
    json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": request})
        .to_string()
        .into_bytes()
}

fn response(a: &Answer) -> Value {
    let v: Value = serde_json::from_str(&a.body).expect("a JSON answer");
    assert_eq!(v["kind"], "AdmissionReview");
    assert_eq!(v["response"]["uid"], "705ab4f5-6393-11e8-b7cc-42010a800002");
    assert_eq!(v["response"]["allowed"], true);
    v
}

fn untouched(_: &Value) -> Result<Option<Value>, Problem> {
    Ok(None)
}

#[test]
fn a_pod_not_to_inject_is_allowed_as_it_is() {
    let a = answer(&review(json!({})), untouched);
    assert_eq!(
        (a.status, a.result),
        (StatusCode::OK, ReviewResult::Unchanged)
    );
    let v = response(&a);
    assert_eq!(v["apiVersion"], API_VERSION);
    assert!(v["response"].get("patch").is_none() && v["response"].get("warnings").is_none());
    assert_eq!(
        a.about,
        About {
            kind: "Pod".into(),
            namespace: "shop".into(),
            name: "web-7d4b9-*".into(),
            dry_run: false
        }
    );
}

#[test]
fn an_injected_pod_gets_the_patch_to_the_injected_pod() {
    let inject = |pod: &Value| {
        let mut new = pod.clone();
        new["spec"]["initContainers"] = json!([{"name": "secret-reloader"}]);
        Ok(Some(new))
    };
    let a = answer(&review(json!({"dryRun": true})), inject);
    assert_eq!(a.result, ReviewResult::Injected);
    assert!(a.about.dry_run);
    let v = response(&a);
    assert_eq!(v["response"]["patchType"], "JSONPatch");
    let patch = base64ct::Base64::decode_vec(v["response"]["patch"].as_str().unwrap()).unwrap();
    let ops: Value = serde_json::from_slice(&patch).unwrap();
    assert_eq!(
        ops,
        json!([{"op": "add", "path": "/spec/initContainers", "value": [{"name": "secret-reloader"}]}])
    );
    // The same pod back: nothing to patch.
    let a = answer(&review(json!({})), |pod: &Value| Ok(Some(pod.clone())));
    assert_eq!(a.result, ReviewResult::Unchanged);
}

#[test]
fn a_pod_that_cannot_be_injected_is_allowed_with_a_bounded_escaped_warning() {
    let long = format!("spec.volumes[0]: \u{1b}[31m{}", "x".repeat(500));
    let a = answer(&review(json!({})), |_: &Value| Err(Problem(long.clone())));
    assert_eq!(a.result, ReviewResult::Error);
    let v = response(&a);
    let w = v["response"]["warnings"][0].as_str().unwrap();
    assert!(
        w.starts_with(
            "secret-reloader: the sidecar was not injected: spec.volumes[0]: \\u{1b}[31m"
        ),
        "{w}"
    );
    assert_eq!(w.chars().count(), WARNING_CHARS);
    assert!(w.ends_with('…'));
    assert!(v["response"].get("patch").is_none());
}

#[test]
fn what_is_not_a_pod_create_is_allowed_with_a_warning() {
    let deployment = json!({"kind": {"group": "apps", "version": "v1", "kind": "Deployment"},
                            "resource": {"group": "apps", "version": "v1", "resource": "deployments"}});
    for (overrides, shows) in [
        (deployment, "not CREATE Deployment"),
        (json!({"operation": "UPDATE"}), "not UPDATE Pod"),
        (
            json!({"subResource": "ephemeralcontainers"}),
            "(subresource ephemeralcontainers)",
        ),
    ] {
        let a = answer(&review(overrides), |_: &Value| {
            panic!("not a pod to inject")
        });
        assert_eq!(a.result, ReviewResult::NotPod);
        let v = response(&a);
        let w = v["response"]["warnings"][0].as_str().unwrap();
        assert!(w.contains(shows), "{w}");
    }
}

#[test]
fn another_review_version_is_answered_in_its_own() {
    let mut r: Value = serde_json::from_slice(&review(json!({}))).unwrap();
    r["apiVersion"] = json!("admission.k8s.io/v1beta1");
    let a = answer(r.to_string().as_bytes(), untouched);
    assert_eq!(a.result, ReviewResult::Unsupported);
    let v = response(&a);
    assert_eq!(v["apiVersion"], "admission.k8s.io/v1beta1");
    assert!(
        v["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("v1beta1")
    );
    r["apiVersion"] = json!("evil/v1\n");
    let v = response(&answer(r.to_string().as_bytes(), untouched));
    assert_eq!(v["apiVersion"], API_VERSION);
    assert!(
        v["response"]["warnings"][0]
            .as_str()
            .unwrap()
            .contains("evil/v1\\n")
    );
    // No object: nothing to inject.
    let a = answer(&review(json!({"object": null})), |_: &Value| {
        panic!("no pod")
    });
    assert_eq!(a.result, ReviewResult::Unsupported);
}

#[test]
fn a_body_without_a_readable_uid_is_a_400() {
    for body in [
        &b"{not json"[..],
        b"[]",
        br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":7}}"#,
        br#"{"request":{"uid":""}}"#,
    ] {
        let a = answer(body, untouched);
        assert_eq!(
            (a.status, a.result),
            (StatusCode::BAD_REQUEST, ReviewResult::Malformed)
        );
        assert!(
            a.body.starts_with("malformed AdmissionReview: "),
            "{}",
            a.body
        );
    }
    let long = review(json!({"uid": "u".repeat(MAX_UID + 1)}));
    assert_eq!(answer(&long, untouched).status, StatusCode::BAD_REQUEST);
}

#[test]
fn names_are_escaped_and_bounded() {
    let object =
        json!({"metadata": {"name": format!("a\nb{}", "n".repeat(400)), "namespace": "ns"}});
    let a = answer(&review(json!({"object": object})), untouched);
    assert!(a.about.name.starts_with("a\\nb"));
    assert_eq!(a.about.name.chars().count(), SHOWN_CHARS);
    assert_eq!(a.about.namespace, "ns");
}
