//! What deploy/ promises about the program: the example config file parses into the groups and
//! targets it describes, the JSON schema of the config file names exactly the fields the parser
//! accepts (and requires what the parser requires), and configmap-reload's flags work as its
//! users write them in their pod specs.

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use secret_reloader::Config;
use secret_reloader::action::ActionConfig as Action;
use secret_reloader::config::{AccessPolicy, ReloadOnStart, TargetConfig};
use secret_reloader::process::Selector;
use serde_json::{Value, json};

use crate::support::sink::Sink;
use crate::support::{
    AtomicWriter, Daemon, bin, credential, eventually, free_port, http_get, now_ns, tempdir,
};

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(rel)
}

fn parse_file(path: &Path) -> Result<Config, String> {
    Config::from_argv(["secret-reloader", "--config", path.to_str().unwrap()])
        .map_err(|e| e.to_string())
}

/// Parses `doc` as a `--config` file.
fn parse(doc: &Value) -> Result<Config, String> {
    let dir = tempdir();
    let path = dir.path().join("config.json");
    std::fs::write(&path, serde_json::to_vec_pretty(doc).unwrap()).unwrap();
    parse_file(&path)
}

fn target<'a>(c: &'a Config, group: &str, name: &str) -> &'a TargetConfig {
    let g = c.groups.iter().find(|g| g.name == group).expect(group);
    g.targets.iter().find(|t| t.name == name).expect(name)
}

#[test]
fn the_example_config_parses_into_its_groups_and_targets() {
    let c = parse_file(&deploy("examples/config.json")).expect("deploy/examples/config.json");
    let names: Vec<&str> = c.groups.iter().map(|g| g.name.as_str()).collect();
    assert_eq!(names, ["tls", "pgbouncer", "prometheus"]);

    let tls = &c.groups[0];
    assert_eq!(tls.paths, [PathBuf::from("/etc/nginx/tls")]);
    let app = tls.app.as_ref().expect("declared app identity");
    assert_eq!(
        (app.uid, app.gid, app.groups.as_slice()),
        (101, 101, &[101][..])
    );
    assert_eq!(tls.access_policy, AccessPolicy::Block);
    assert!(tls.consistency_check);
    assert_eq!(tls.consistency_timeout, Duration::from_secs(120));
    let nginx = target(&c, "tls", "nginx");
    match &nginx.action {
        Action::Signal(s) => {
            assert_eq!(s.signal, Some(nix::sys::signal::Signal::SIGHUP));
            assert!(matches!(&s.selector, Selector::Name(n) if n == "nginx"));
            assert!(!s.all);
        }
        other => panic!("nginx: expected a signal target, got {other:?}"),
    }
    let verify = nginx.verify.as_ref().expect("nginx is verified");
    assert_eq!(verify.endpoint.label(), "http://127.0.0.1:8080/healthz");
    assert_eq!(verify.contains.as_deref(), Some("ok"));

    let pgb = &c.groups[1];
    assert_eq!(
        pgb.paths,
        [
            PathBuf::from("/etc/pgbouncer/userlist"),
            PathBuf::from("/etc/pgbouncer/config")
        ]
    );
    assert_eq!(pgb.debounce, Duration::from_millis(200));
    assert_eq!(pgb.debounce_max, Duration::from_secs(5));
    match &target(&c, "pgbouncer", "pgbouncer").action {
        Action::Signal(s) => {
            assert_eq!(
                s.signal,
                Some(nix::sys::signal::Signal::SIGHUP),
                "the default"
            );
            assert!(
                matches!(&s.selector, Selector::PidFile(p, None) if p == Path::new("/run/pgbouncer/pgbouncer.pid"))
            );
        }
        other => panic!("pgbouncer: expected a signal target, got {other:?}"),
    }

    let prom = target(&c, "prometheus", "prometheus");
    assert_eq!(prom.min_reload_interval, Duration::from_secs(5));
    assert_eq!(prom.reload_on_start, ReloadOnStart::Never);
    assert_eq!(prom.retries, Some(10));
    match &prom.action {
        Action::Http(h) => {
            assert_eq!(h.endpoint.label(), "http://127.0.0.1:9090/-/reload");
            assert_eq!(h.method, "POST");
            assert_eq!(h.expected_status, 200);
            assert_eq!(h.timeout, Duration::from_secs(5));
            let headers: Vec<&str> = h.headers.iter().map(|(n, _)| n.as_str()).collect();
            assert_eq!(headers, ["x-reloaded-by"]);
        }
        other => panic!("prometheus: expected an HTTP target, got {other:?}"),
    }
    let audit = target(&c, "prometheus", "audit");
    assert_eq!(
        audit.retries,
        Some(10),
        "group settings apply to every target"
    );
    match &audit.action {
        Action::Exec(e) => {
            assert_eq!(
                e.argv,
                ["/usr/local/bin/notify-rotation", "--source", "prometheus"]
            );
            assert_eq!(e.timeout, Duration::from_secs(10));
        }
        other => panic!("audit: expected an exec target, got {other:?}"),
    }
}

/// The fields serde lists for an unknown one: "unknown field `x`, expected one of `a`, `b`" or
/// "expected `a`".
fn fields_named_in(err: &str) -> BTreeSet<String> {
    let expected = err
        .split("expected ")
        .nth(1)
        .unwrap_or_else(|| panic!("no field list in: {err}"));
    let list = expected.strip_prefix("one of ").unwrap_or(expected);
    let list = list.split(" at line").next().unwrap();
    list.split(", ")
        .map(|f| f.trim_matches('`').to_string())
        .collect()
}

/// One level of the config file: where it sits in the schema, and a minimal valid document with
/// a placeholder object that `build` fills at that level.
struct Level {
    what: &'static str,
    schema: Value,
    minimal: Value,
    build: fn(Value) -> Value,
}

fn levels(schema: &Value) -> Vec<Level> {
    let defs = &schema["$defs"];
    // A signal target: it tells the daemon who the app is, which access_policy block needs.
    let group = json!({"name": "g", "watch": ["/srv/watched"],
                       "targets": [{"type": "signal", "process_name": "app"}]});
    vec![
        Level {
            what: "the file",
            schema: schema.clone(),
            minimal: json!({"groups": [group.clone()]}),
            build: |doc| doc,
        },
        Level {
            what: "a group",
            schema: defs["group"].clone(),
            minimal: group,
            build: |g| json!({"groups": [g]}),
        },
        Level {
            what: "an http target",
            schema: defs["http_target"].clone(),
            minimal: json!({"type": "http", "url": "http://127.0.0.1:9090/-/reload"}),
            build: in_group,
        },
        Level {
            what: "a signal target",
            schema: defs["signal_target"].clone(),
            minimal: json!({"type": "signal", "process_name": "app"}),
            build: in_group,
        },
        Level {
            what: "an exec target",
            schema: defs["exec_target"].clone(),
            minimal: json!({"type": "exec", "command": ["true"]}),
            build: in_group,
        },
    ]
}

/// The fields of a signal target that select the process: exactly one is given.
const SELECTORS: [&str; 3] = ["process_name", "process_cmdline", "pid_file"];

fn in_group(t: Value) -> Value {
    json!({"groups": [{"name": "g", "watch": ["/srv/watched"], "targets": [t]}]})
}

fn schema() -> Value {
    let text = std::fs::read_to_string(deploy("config.schema.json")).unwrap();
    serde_json::from_str(&text).expect("config.schema.json is JSON")
}

#[test]
fn the_config_schema_holds_each_action_kinds_own_fragment() {
    use secret_reloader::action::Kind;
    let schema = schema();
    let refs: Vec<Value> = Kind::ALL
        .iter()
        .map(|k| json!({ "$ref": format!("#/$defs/{}_target", k.as_str()) }))
        .collect();
    assert_eq!(
        schema["$defs"]["target"]["oneOf"],
        Value::Array(refs),
        "a target is one of the kinds, each by its own definition"
    );
    for kind in Kind::ALL {
        let own: Value = serde_json::from_str(kind.schema()).expect("the kind's schema.json");
        let name = format!("{}_target", kind.as_str());
        assert_eq!(
            schema["$defs"][&name], own,
            "deploy/config.schema.json's $defs.{name} must be src/action/{kind}/schema.json as it is"
        );
    }
}

#[test]
fn each_action_kinds_docs_table_is_in_the_reference_and_names_its_flags_and_fields() {
    use secret_reloader::action::Kind;
    let reference =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/reference.md"))
            .unwrap();
    let help = Command::new(crate::support::bin())
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let common = [
        "type",
        "name",
        "verify_url",
        "verify_contains",
        "verify_json",
        "verify_served_cert",
        "tls",
    ];
    for kind in Kind::ALL {
        let doc = kind.doc();
        assert!(
            reference.contains(doc),
            "docs/reference.md must hold src/action/{kind}/doc.md as it is"
        );
        let rows: Vec<Vec<&str>> = doc
            .lines()
            .skip(2)
            .map(|l| l.trim_matches('|').split(" | ").collect())
            .collect();
        let first_code = |cell: &str| cell.split('`').nth(1).unwrap_or("").to_string();
        // The fields: exactly the kind's own in its schema.
        let fields: BTreeSet<String> = rows.iter().map(|r| first_code(r[1])).collect();
        let own: Value = serde_json::from_str(kind.schema()).unwrap();
        let schema: BTreeSet<String> = own["properties"]
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !common.contains(&k.as_str()))
            .cloned()
            .collect();
        assert_eq!(
            fields, schema,
            "{kind}: the table's fields against its schema"
        );
        // The flags: each one the binary has.
        for row in &rows {
            let flag = first_code(row[0]);
            let flag = flag.split([' ', '=']).next().unwrap();
            assert!(help.contains(flag), "{kind}: {flag} is not in --help");
        }
    }
}

#[test]
fn the_config_schema_names_exactly_the_fields_the_parser_accepts() {
    let schema = schema();
    assert_eq!(
        schema["$schema"],
        "https://json-schema.org/draft/2020-12/schema"
    );
    for level in levels(&schema) {
        let what = level.what;
        let props = level.schema["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("{what}: no properties in the schema"));
        assert_eq!(
            level.schema["additionalProperties"], false,
            "{what}: the parser rejects unknown fields, so must the schema"
        );
        parse(&(level.build)(level.minimal.clone()))
            .unwrap_or_else(|e| panic!("{what}: the minimal document is rejected: {e}"));

        // The parser's own list of fields, from its answer to an unknown one.
        let mut doc = level.minimal.clone();
        doc["no_such_field"] = json!(1);
        let err = parse(&(level.build)(doc)).expect_err("an unknown field is an error");
        assert!(err.contains("no_such_field"), "{what}: {err}");
        let mut accepted = fields_named_in(&err);
        if props.contains_key("type") {
            accepted.insert("type".into()); // the tag, consumed before the fields are matched
        }
        let named: BTreeSet<String> = props.keys().cloned().collect();
        assert_eq!(
            named, accepted,
            "{what}: the schema's properties (left) differ from the fields the parser accepts (right)"
        );

        // Every field, set to each of the schema's examples, is accepted; with the fields it
        // depends on (dependentRequired), and not without them.
        for (field, sub) in props {
            let examples = match (sub["examples"].as_array(), sub.get("const")) {
                (Some(e), _) if !e.is_empty() => e.clone(),
                (_, Some(c)) => vec![c.clone()],
                _ => panic!("{what}.{field}: the schema gives no example"),
            };
            let needs: Vec<&str> = level.schema["dependentRequired"][field]
                .as_array()
                .into_iter()
                .flatten()
                .map(|f| f.as_str().unwrap())
                .collect();
            for example in examples {
                let mut doc = level.minimal.clone();
                if SELECTORS.contains(&field.as_str()) {
                    // Alternatives: the example replaces the minimal document's selector.
                    for s in SELECTORS {
                        doc.as_object_mut().unwrap().remove(s);
                    }
                }
                doc[field] = example.clone();
                if !needs.is_empty() {
                    let err = parse(&(level.build)(doc.clone())).expect_err(&format!(
                        "{what}.{field} without {needs:?} (dependentRequired)"
                    ));
                    assert!(err.contains(field), "{what}.{field}: {err}");
                }
                for n in &needs {
                    doc[*n] = props[*n]["examples"][0].clone();
                }
                parse(&(level.build)(doc)).unwrap_or_else(|e| {
                    panic!("{what}.{field} = {example} (the schema's example) is rejected: {e}")
                });
            }
        }

        // What the schema requires, the parser requires.
        for field in level.schema["required"].as_array().into_iter().flatten() {
            let field = field.as_str().unwrap();
            let mut doc = level.minimal.clone();
            doc.as_object_mut().unwrap().remove(field);
            let err = parse(&(level.build)(doc))
                .expect_err(&format!("{what} without the required {field}"));
            assert!(
                err.contains(field),
                "{what} without {field}: the error does not name it: {err}"
            );
        }
    }
}

#[test]
fn the_config_schema_and_the_parser_agree_on_the_rules_between_fields() {
    let schema = schema();
    let signal = &schema["$defs"]["signal_target"];
    assert_eq!(
        signal["anyOf"],
        json!([{"required": ["process_name"]}, {"required": ["process_cmdline"]},
               {"required": ["pid_file"]}]),
        "the schema asks for a selector"
    );
    assert_eq!(
        signal["not"],
        json!({"required": ["process_name", "process_cmdline"]}),
        "the schema refuses a name and a command line together"
    );
    let err = parse(&in_group(json!({"type": "signal"}))).expect_err("no selector");
    assert!(err.contains("process_name"), "{err}");
    let err = parse(&in_group(
        json!({"type": "signal", "process_name": "a", "process_cmdline": "^a"}),
    ))
    .expect_err("two selectors");
    assert!(err.contains("give only one"), "{err}");
    // Beside a pid file, a name is the check its process must pass.
    let ok = parse(&in_group(
        json!({"type": "signal", "process_name": "a", "pid_file": "/run/a.pid"}),
    ))
    .expect("a pid file with a name");
    let Action::Signal(s) = &ok.groups[0].targets[0].action else {
        panic!("a signal target")
    };
    assert!(
        matches!(&s.selector, Selector::PidFile(p, Some(n)) if p == Path::new("/run/a.pid")
            && matches!(n.as_ref(), Selector::Name(n) if n == "a")),
        "{:?}",
        s.selector
    );

    // access_policy block: the app's identity must be declared, or read from a signal target.
    let group = &schema["$defs"]["group"];
    assert_eq!(
        group["allOf"][0]["if"]["properties"]["access_policy"]["const"],
        "block"
    );
    assert_eq!(
        group["allOf"][0]["then"]["anyOf"],
        json!([{"required": ["app_uid", "app_gid"]},
               {"required": ["targets"],
                "properties": {"targets": {"contains": {"$ref": "#/$defs/signal_target"}}}}])
    );
    let exec = json!({"type": "exec", "command": "true"});
    let block = |extra: Value, target: &Value| {
        let mut g = json!({"name": "g", "watch": ["/srv/watched"], "targets": [target],
                           "access_policy": "block"});
        for (k, v) in extra.as_object().unwrap() {
            g[k] = v.clone();
        }
        parse(&json!({"groups": [g]}))
    };
    let err = block(json!({}), &exec).expect_err("block without the app's identity");
    assert!(err.contains("access policy block"), "{err}");
    block(json!({"app_uid": 101, "app_gid": 101}), &exec).expect("declared identity");
    block(json!({}), &json!({"type": "signal", "process_name": "app"})).expect("signal target");

    // consumed_as env: signal targets only (a restart is all that applies an environment).
    assert_eq!(
        group["allOf"][1]["if"]["properties"]["consumed_as"]["const"],
        "env"
    );
    assert_eq!(
        group["allOf"][1]["then"],
        json!({"properties": {"targets": {"items": {"$ref": "#/$defs/signal_target"}}}})
    );
    let env = |target: &Value| {
        parse(
            &json!({"groups": [{"name": "g", "watch": ["/srv/watched"], "targets": [target],
                                  "consumed_as": "env"}]}),
        )
    };
    let err = env(&exec).expect_err("an exec target of an env group");
    assert!(
        err.contains("only a restart applies an environment"),
        "{err}"
    );
    env(&json!({"type": "signal", "process_name": "app", "signal": "TERM"})).expect("a restart");
}

#[test]
fn configmap_reload_listen_address_with_an_empty_host() {
    let dir = tempdir();
    let vol = dir.path().join("vol");
    let writer = AtomicWriter::new(&vol);
    writer.write(&[("token", credential("1"))]).unwrap();
    let sink = Sink::start_with_probe(Some(vol.join("token")));
    let port = free_port();
    // Written exactly as in configmap-reload pod specs: `--flag=value`, `:PORT`.
    let mut cmd = Command::new(bin());
    cmd.arg(format!("--volume-dir={}", vol.display()))
        .arg(format!("--webhook-url={}", sink.url("/-/reload")))
        .arg(format!("--web.listen-address=:{port}"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let d = Daemon::spawn(cmd);
    assert_eq!(
        d.addr,
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        "`:PORT` listens on every interface, as in configmap-reload"
    );
    let local = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    eventually(
        "/readyz on 127.0.0.1",
        || http_get(local, "/readyz").map(|r| r.0).unwrap_or(0),
        |c| *c == 200,
    );
    writer.write(&[("token", credential("2"))]).unwrap();
    let calls = eventually("the webhook", || sink.delivered(), |c| c.len() == 1);
    assert_eq!(calls[0].version.as_deref(), Some("2"));
    assert_eq!(calls[0].method, "POST", "configmap-reload's default method");
    let (code, metrics) = http_get(local, "/metrics").unwrap();
    assert_eq!(code, 200);
    assert!(
        metrics.contains("secret_reloader_reloads_total{result=\"success\""),
        "{metrics}"
    );
}

#[test]
fn configmap_reload_volume_dir_and_webhook_url_repeated() {
    let dir = tempdir();
    let vol_a = dir.path().join("config");
    let vol_b = dir.path().join("secret");
    let a = AtomicWriter::new(&vol_a);
    let b = AtomicWriter::new(&vol_b);
    a.write(&[("token", credential("a1"))]).unwrap();
    b.write(&[("token", credential("b1"))]).unwrap();
    let sink_a = Sink::start_with_probe(Some(vol_a.join("token")));
    let sink_b = Sink::start_with_probe(Some(vol_b.join("token")));
    let (url_a, url_b) = (sink_a.url("/-/reload"), sink_b.url("/reload"));
    let d = Daemon::start(&[
        "--volume-dir",
        vol_a.to_str().unwrap(),
        "--volume-dir",
        vol_b.to_str().unwrap(),
        "--webhook-url",
        &url_a,
        "--webhook-url",
        &url_b,
        "--min-reload-interval",
        "0",
        // A swap is scanned at once, maybe before the test reads the clock: the resyncs make a
        // scan after it certain. They find the same content; every call succeeds.
        "--resync-interval",
        "1s",
    ]);
    d.wait_ready();

    // As in configmap-reload, a change in any volume calls every webhook, once.
    b.write(&[("token", credential("b2"))]).unwrap();
    eventually("a call to A", || sink_a.delivered(), |c| c.len() == 1);
    let calls = eventually("a call to B", || sink_b.delivered(), |c| c.len() == 1);
    assert_eq!(calls[0].version.as_deref(), Some("b2"));
    a.write(&[("token", credential("a2"))]).unwrap();
    let t = now_ns();
    let calls = eventually(
        "a second call to A",
        || sink_a.delivered(),
        |c| c.len() == 2,
    );
    assert_eq!(calls[1].version.as_deref(), Some("a2"));
    eventually(
        "a second call to B",
        || sink_b.delivered(),
        |c| c.len() == 2,
    );
    d.passed(t);
    assert_eq!(sink_a.calls().len(), 2, "{:#?}", sink_a.calls());
    assert_eq!(sink_b.calls().len(), 2, "{:#?}", sink_b.calls());

    let status = d.status();
    let watched = status["config"]["groups"][0]["watch"].clone();
    assert_eq!(
        watched,
        json!([vol_a.to_str().unwrap(), vol_b.to_str().unwrap()]),
        "both volumes form one group: {status}"
    );
    assert_eq!(
        d.metric("changes_total", &[("watch", "default")]),
        Some(2.0)
    );
}
