"""The Python half of scripts/ci-inject: takes a hand-written sidecar out of a rendered example,
validates what `secret-reloader-inject` wrote with kubernetes-validate, checks the injected sidecar
field by field against the pod spec it was derived from, compares documents, and has the daemon
accept the injected command lines. Input documents are kubectl's JSON output (`kubectl patch
--local -o json`): what kubectl parsed, not what this script's own parser would read.

    check.py strip IN.json OUT.json|OUT.yaml the example with its sidecar taken out, annotated
    check.py validate OUT.json VERSION       kubernetes-validate --strict (custom resources: scripts/ci_crds.py)
    check.py fields IN.json OUT.json LAYOUT  the sidecar of every injected template, field by field
    check.py same A.json B.json              the same documents (as JSON values)
    check.py args OUT.json DIR CASE          each sidecar's arguments, one file per sidecar, in DIR
    check.py starts BIN ARGS...              the daemon accepts those arguments (it listens), or exit 1
"""
import base64
import json
import os
import posixpath
import re
import select
import subprocess
import sys
import time

SIDECAR = 'secret-reloader'
PREFIX = 'secret-reloader.io/'
SA_TOKEN = '/var/run/secrets/kubernetes.io/serviceaccount'
ENV_MOUNTS = '/var/run/secret-reloader/env/'
WORKLOADS = {'Deployment', 'StatefulSet', 'DaemonSet', 'ReplicaSet', 'ReplicationController', 'Job'}


def fail(msg):
    print(f'\nFAILED: {msg}', file=sys.stderr)
    sys.exit(1)


def load(path):
    """The documents of kubectl's JSON output: one object after another."""
    text, docs, at = open(path).read(), [], 0
    dec = json.JSONDecoder()
    while True:
        while at < len(text) and text[at].isspace():
            at += 1
        if at == len(text):
            return docs
        doc, at = dec.raw_decode(text, at)
        docs.append(doc)


def flat(docs):
    """Every object, the items of a List included (the List too)."""
    for d in docs:
        yield d
        if d.get('kind') == 'List':
            yield from flat(d.get('items') or [])


def name(d):
    m = d.get('metadata') or {}
    return '/'.join(x for x in (d.get('kind'), m.get('namespace'), m.get('name')) if x)


def templates(d):
    """(where, pod template) of an object: a Pod is its own."""
    kind, spec = d.get('kind'), d.get('spec') or {}
    if kind == 'Pod':
        yield name(d), d
    elif kind == 'PodTemplate':
        yield name(d), d.get('template')
    elif kind in WORKLOADS:
        yield f'{name(d)} spec.template', spec.get('template')
    elif kind == 'CronJob':
        yield f'{name(d)} spec.jobTemplate.spec.template', spec['jobTemplate']['spec']['template']


def annotations(t):
    return (t.get('metadata') or {}).get('annotations') or {}


# --- strip: the example as it would be without its hand-written sidecar ---------------------
# What a user who adopts injection writes: the pod template without the sidecar, its state
# volume and shareProcessNamespace, annotated; the hand-written flags that the spec cannot say
# become the annotations of the same name.
FLAG_ANNOTATIONS = {'--process-name': 'process-name', '--reload-url': 'reload-url', '--signal': 'signal'}


def strip(src, dst):
    docs, stripped = load(src), []
    for d in flat(docs):
        for where, t in templates(d):
            spec = t['spec']
            found = [(f, c) for f in ('initContainers', 'containers') for c in spec.get(f, []) if c['name'] == SIDECAR]
            if not found:
                continue
            (field, sc), = found
            spec[field].remove(sc)
            if not spec[field]:
                del spec[field]
            others = {m['name'] for f in ('initContainers', 'containers') for c in spec.get(f, []) for m in c.get('volumeMounts', [])}
            own = {m['name'] for m in sc.get('volumeMounts', [])} - others
            spec['volumes'] = [v for v in spec.get('volumes', []) if v['name'] not in own]
            spec.pop('shareProcessNamespace', None)
            ann = t.setdefault('metadata', {}).setdefault('annotations', {})
            ann[PREFIX + 'inject'] = 'true'
            kept = []
            for a in sc.get('args', []):
                flag, _, value = a.partition('=')
                if flag in FLAG_ANNOTATIONS:
                    ann[PREFIX + FLAG_ANNOTATIONS[flag]] = value
                    kept.append(f'{PREFIX}{FLAG_ANNOTATIONS[flag]}: {value}')
            stripped.append(f'{where}: sidecar ({field}) and volume(s) {", ".join(sorted(own)) or "none"} taken out; '
                            f'annotated {PREFIX}inject: "true"' + ''.join(f', {k}' for k in kept))
    if not stripped:
        fail(f'{src}: no hand-written sidecar to take out')
    # DST.yaml: a YAML stream (each document a line of JSON, which is YAML), as kustomize reads one.
    with open(dst, 'w') as f:
        f.write(('---\n' if dst.endswith('.yaml') else '').join(json.dumps(d) + '\n' for d in docs))
    for s in stripped:
        print(f'    {s}')


# --- validate -----------------------------------------------------------------------------
def validate(path, version):
    """kubernetes-validate --strict on every object kubectl read, a List's items one by one: the
    kubernetes-validate command itself has no schema for `v1 List` and lets one pass with a
    warning, without looking at its items."""
    import jsonschema
    import kubernetes_validate
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), '..'))
    from ci_crds import CRD_SCHEMAS  # the fields of the custom resources deploy/ uses
    done, crds = [], []
    for d in flat(load(path)):
        if d.get('apiVersion', '').startswith('monitoring.coreos.com/'):
            # No schema bundled: against their CRD fields, as scripts/ci-packaging does.
            errors = sorted(jsonschema.Draft202012Validator(CRD_SCHEMAS[d['kind']]).iter_errors(d), key=str)
            if errors:
                fail(f'{path}: {name(d)}: ' + '; '.join(f'{"/".join(map(str, e.absolute_path))}: {e.message}' for e in errors))
            crds.append(d['kind'])
            continue
        try:
            kubernetes_validate.validate(d, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            fail(f'{path}: {name(d)}: {e.message} at {"/".join(map(str, e.absolute_path))} (Kubernetes {version}, strict)')
        except kubernetes_validate.SchemaNotFoundError as e:
            fail(f'{path}: {name(d)}: no schema: {e}')
        done.append(d['kind'])
    print(f'{len(done)} objects valid ({", ".join(sorted(set(done)))})' +
          (f'; {", ".join(sorted(set(crds)))} against their CRD fields (scripts/ci_crds.py)' if crds else ''))


# --- fields: the injected sidecar against the pod spec --------------------------------------
def check_template(where, t, flag_layout):
    """Fails on the first field that does not follow from the pod spec; returns a summary."""
    def need(cond, what):
        if not cond:
            fail(f'{where}: {what}\n{json.dumps(t, indent=1)}')

    ann = annotations(t)
    spec = t['spec']
    layout = ann.get(PREFIX + 'layout', flag_layout)
    inits = [c for c in spec.get('initContainers', []) if c['name'] == SIDECAR]
    plain = [c for c in spec.get('containers', []) if c['name'] == SIDECAR]
    if layout == 'native':
        need(len(inits) == 1 and not plain, 'native layout: one secret-reloader init container, none in containers')
        need(spec['initContainers'][0]['name'] == SIDECAR, 'native layout: the sidecar is the first init container')
        sc = inits[0]
        need(sc.get('restartPolicy') == 'Always', 'native layout: restartPolicy Always')
    else:
        need(len(plain) == 1 and not inits, 'classic layout: one secret-reloader container, no init container of that name')
        sc = plain[0]
        need('restartPolicy' not in sc, 'classic layout: no restartPolicy on the container')

    apps = [c for c in spec['containers'] if c['name'] != SIDECAR]
    app = [c for c in apps if c['name'] == ann.get(PREFIX + 'container')] if len(apps) > 1 else apps
    need(len(app) == 1, 'the app container')
    app = app[0]

    # Identity: container level over pod level, the annotation where undeclared.
    def declared(field, annotation):
        v = (app.get('securityContext') or {}).get(field, (spec.get('securityContext') or {}).get(field))
        return v if v is not None else (int(ann[PREFIX + annotation]) if PREFIX + annotation in ann else None)
    uid, gid = declared('runAsUser', 'app-uid'), declared('runAsGroup', 'app-gid')
    psc = spec.get('securityContext') or {}
    groups = sorted(set(psc.get('supplementalGroups', []) + ([psc['fsGroup']] if 'fsGroup' in psc else [])))
    s = sc['securityContext']
    need(s.get('runAsUser') == uid, f'runAsUser {s.get("runAsUser")}, the app runs as {uid}')
    need(s.get('runAsGroup') == gid, f'runAsGroup {s.get("runAsGroup")}, the app runs with {gid}')
    need(s.get('runAsNonRoot') is True and s.get('readOnlyRootFilesystem') is True
         and s.get('allowPrivilegeEscalation') is False and s.get('capabilities', {}).get('drop') == ['ALL'],
         'hardened securityContext (non-root, read-only root, no escalation, capabilities dropped)')
    args = sc['args']
    need(args[0].startswith('--config-json='), 'first argument --config-json=')
    flags = {}
    for a in args[1:]:
        k, _, v = a.partition('=')
        need(k not in flags, f'{k} given once')
        flags[k] = v
    # The daemon takes a declared identity whole: with the gid undeclared, none of the three is
    # given (it learns the identity from the app's process).
    whole = gid is not None
    need(flags.get('--app-uid') == (str(uid) if whole else None), f'--app-uid={flags.get("--app-uid")}, the app runs as {uid}, gid {gid}')
    need(flags.get('--app-gid') == (str(gid) if whole else None), f'--app-gid={flags.get("--app-gid")}, the app runs with {gid}')
    need(flags.get('--app-groups') == (','.join(map(str, groups)) if groups and whole else None),
         f'--app-groups={flags.get("--app-groups")}, the pod gives {groups}, gid {gid}')
    config = json.loads(args[0].partition('=')[2])
    watched = {p: g for g in config['groups'] for p in g['watch']}

    mounts = {m['mountPath']: m for m in sc.get('volumeMounts', [])}
    volumes = {v['name']: v for v in spec.get('volumes', [])}
    unwatched = ann.get(PREFIX + 'unwatched', '')
    app_vols = {m['name'] for m in app.get('volumeMounts', [])}
    files = 0
    for m in app.get('volumeMounts', []):
        v = volumes.get(m['name'], {})  # none: a StatefulSet's volumeClaimTemplates
        if not any(k in v for k in ('secret', 'configMap', 'projected')):
            need(m['mountPath'] not in mounts, f'{m["name"]} (not a Secret, ConfigMap or projected volume) is not mounted in the sidecar')
            continue
        if m.get('subPath') or m.get('subPathExpr'):
            need(m['mountPath'] in unwatched and m['mountPath'] not in mounts,
                 f'the subPath mount {m["mountPath"]} is not watched, and the annotation unwatched says so')
            continue
        if m['mountPath'] == SA_TOKEN and m['name'].startswith('kube-api-access-'):
            need(m['mountPath'] not in mounts, 'the service account token volume is left out')
            continue
        got = mounts.get(m['mountPath'])
        need(got == {'name': m['name'], 'mountPath': m['mountPath'], 'readOnly': True},
             f'{m["name"]} mounted read-only at {m["mountPath"]} in the sidecar (got {got})')
        g = watched.get(m['mountPath'])
        need(g is not None and 'consumed_as' not in g, f'{m["mountPath"]} in a file watch group of --config-json')
        files += 1

    # What the app takes as environment variables: a volume of the sidecar only, a group consumed as env.
    refs = []
    for e in app.get('envFrom', []):
        for field, kind in (('secretRef', 'secret'), ('configMapRef', 'configMap')):
            if field in e:
                if e.get('prefix'):
                    need(e[field]['name'] in unwatched, f'envFrom {e[field]["name"]} with a prefix: said unwatched')
                else:
                    refs.append((kind, e[field]['name'], None))
    for e in app.get('env', []):
        for field, kind in (('secretKeyRef', 'secret'), ('configMapKeyRef', 'configMap')):
            ref = (e.get('valueFrom') or {}).get(field)
            if ref:
                refs.append((kind, ref['name'], {'key': ref['key'], 'path': e['name']}))
    restart = ann.get(PREFIX + 'restart-on-env-change') == 'true'
    env_paths = set()
    for kind, src, item in refs:
        key = 'secretName' if kind == 'secret' else 'name'
        vs = [v for v in volumes.values() if (v.get(kind) or {}).get(key) == src and v['name'] not in app_vols
              and (item is None) == ('items' not in v[kind])]
        need(len(vs) == 1, f'one volume of the sidecar for the {kind} {src} taken as environment variables')
        v = vs[0]
        if item:
            need(item in v[kind]['items'], f'{item} in the items of volume {v["name"]}')
        m = [m for m in mounts.values() if m['name'] == v['name']]
        need(len(m) == 1 and m[0].get('readOnly') is True and m[0]['mountPath'].startswith(ENV_MOUNTS),
             f'volume {v["name"]} mounted read-only in the sidecar')
        g = watched.get(m[0]['mountPath'])
        need(g is not None and g.get('consumed_as') == 'env', f'{m[0]["mountPath"]} in a group consumed_as env')
        need(all(x.get('signal') == ('TERM' if restart else 'none') for x in g['targets']),
             f'group {g["name"]}: signal {"TERM" if restart else "none"} (restart-on-env-change {restart})')
        env_paths.add(m[0]['mountPath'])
    for p in watched:
        need(p in mounts, f'the watched {p} is mounted in the sidecar')

    # The action.
    process = ann.get(PREFIX + 'process-name') or (posixpath.basename(app['command'][0])[:15] if app.get('command') else None)
    signals = False
    for g in config['groups']:
        for x in g['targets']:
            if x['type'] == 'signal':
                signals = True
                need(x['process_name'] == process, f'group {g["name"]} signals {x["process_name"]}, the app is {process}')
                if 'consumed_as' not in g:
                    need(x.get('signal') == ann.get(PREFIX + 'signal'), f'group {g["name"]}: the signal of the annotation')
            else:
                need(x['type'] == 'http' and x['url'] == ann.get(PREFIX + 'reload-url'), f'group {g["name"]}: the reload-url')
    if signals:
        need(spec.get('shareProcessNamespace') is True, 'shareProcessNamespace: true (a process is signalled)')

    # Probes on the named port, the state volume, the PodMonitor's label.
    need({p.get('name'): p.get('containerPort') for p in sc.get('ports', [])}.get('reloader') == 9533, 'port reloader 9533')
    for probe, path in (('startupProbe', '/startupz'), ('livenessProbe', '/healthz'), ('readinessProbe', '/readyz')):
        need((sc.get(probe) or {}).get('httpGet') == {'path': path, 'port': 'reloader'}, f'{probe} on {path}')
    state = posixpath.dirname(flags.get('--state-file', ''))
    need(state in mounts and volumes[mounts[state]['name']].get('emptyDir', {}).get('medium') == 'Memory',
         f'--state-file on a memory emptyDir ({state})')
    need(((t.get('metadata') or {}).get('labels') or {}).get('secret-reloader/sidecar') == 'true', 'the PodMonitor label')
    need(set(mounts) - {state} - env_paths <= {m['mountPath'] for m in app.get('volumeMounts', [])},
         'the sidecar mounts nothing else')
    return (f'{where}: {layout}, uid {uid} gid {"undeclared" if gid is None else gid} groups {groups or "none"}, {files} mount(s) watched, '
            f'{len(env_paths)} env source(s), {"signals " + process if signals else "calls " + str(ann.get(PREFIX + "reload-url"))}')


def fields(src, dst, layout):
    before, after = list(flat(load(src))), list(flat(load(dst)))
    if [name(d) for d in before] != [name(d) for d in after]:
        fail(f'{dst}: the objects {[name(d) for d in after]} are not the input\'s {[name(d) for d in before]}')
    injected = 0
    for a, b in zip(before, after):
        if b.get('kind') == 'List':
            continue
        ts = list(templates(b))
        for (where, t), (_, t0) in zip(ts, templates(a)):
            asked = annotations(t0).get(PREFIX + 'inject') == 'true'
            if asked:
                print(f'    {check_template(where, t, layout)}')
                injected += 1
            elif t != t0:
                fail(f'{where}: not annotated, but changed')
        if not ts and a != b:
            fail(f'{name(b)}: not a pod or workload, but changed')
    if not injected:
        fail(f'{dst}: nothing injected')
    print(f'    {injected} template(s) checked; {len(after) - injected} other object(s) equal to the input')


def same(x, y):
    a, b = load(x), load(y)
    if a != b:
        import difflib
        for i, (p, q) in enumerate(zip(a, b)):
            if p != q:
                print('\n'.join(difflib.unified_diff(json.dumps(p, indent=1, sort_keys=True).splitlines(),
                                                     json.dumps(q, indent=1, sort_keys=True).splitlines(), x, y, lineterm='')))
        fail(f'{y} is not {x} ({len(b)} documents, {len(a)} expected)')


def args(src, outdir, case):
    """Each sidecar's arguments, a line each, in a file of OUTDIR named after the case and the object."""
    for d in flat(load(src)):
        for where, t in templates(d):
            for c in t['spec'].get('initContainers', []) + t['spec'].get('containers', []):
                if c['name'] == SIDECAR:
                    with open(f'{outdir}/{case} {where.replace("/", "_")}', 'w') as f:
                        f.write(''.join(a + '\n' for a in c['args']))


def starts(binary, argv):
    """As scripts/ci-packaging: the daemon in its own PID namespace (a --process-name reaches no
    process of this machine) listens on 127.0.0.1, or exits because it refused its arguments
    (said on stdout, exit 1)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith('SECRET_RELOADER_')}
    env['SECRET_RELOADER_LISTEN'] = '127.0.0.1:0'
    p = subprocess.Popen(['unshare', '--pid', '--fork', '--kill-child', '--mount-proc', binary] + argv, env=env,
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    fd, log, deadline = p.stderr.fileno(), b'', time.time() + 30
    try:
        while time.time() < deadline:
            if select.select([fd], [], [], 0.2)[0]:
                chunk = os.read(fd, 65536)
                if not chunk:
                    print(f'the daemon refused {" ".join(argv)}:')
                    print(''.join(f'  | {line}\n' for line in log.decode(errors='replace').splitlines()), end='')
                    sys.exit(1)
                log += chunk
                if re.search(rb'listening:[^\n]* addr=\S+', log):
                    return
        fail(f'the daemon neither listened nor exited within 30 s: {argv}\n{log.decode(errors="replace")}')
    finally:
        p.kill()
        p.wait()


def pods(src, outdir):
    """Each annotated pod template of SRC (kubectl's JSON) as the Pod the API server would admit
    from it (what a controller creates: generateName, the namespace), one file each in OUTDIR."""
    n = 0
    for d in flat(load(src)):
        for where, t in templates(d):
            if annotations(t).get(PREFIX + 'inject') != 'true':
                continue
            meta = dict(t.get('metadata') or {})
            meta.setdefault('generateName', 'ci-')
            meta.setdefault('namespace', d.get('metadata', {}).get('namespace', 'default'))
            pod = {'apiVersion': 'v1', 'kind': 'Pod', 'metadata': meta, 'spec': t['spec']}
            n += 1
            with open(f'{outdir}/{n:02d}.json', 'w') as f:
                json.dump(pod, f)
    print(n)


def review(pod_file, out):
    """The AdmissionReview (admission.k8s.io/v1) the API server sends for a Pod CREATE of POD."""
    pod = load(pod_file)[0]
    uid = f'ci-{os.path.basename(pod_file)}'
    json.dump({'apiVersion': 'admission.k8s.io/v1', 'kind': 'AdmissionReview', 'request': {
        'uid': uid, 'kind': {'group': '', 'version': 'v1', 'kind': 'Pod'},
        'resource': {'group': '', 'version': 'v1', 'resource': 'pods'},
        'requestKind': {'group': '', 'version': 'v1', 'kind': 'Pod'},
        'namespace': pod['metadata'].get('namespace', 'default'), 'operation': 'CREATE',
        'userInfo': {'username': 'system:serviceaccount:kube-system:replicaset-controller'},
        'object': pod, 'oldObject': None, 'dryRun': False,
        'options': {'apiVersion': 'meta.k8s.io/v1', 'kind': 'CreateOptions'}}}, open(out, 'w'))


def patch_of(answer_file, review_file, out):
    """The JSONPatch of the webhook's answer to REVIEW, into OUT; fails unless the answer is
    allowed, for this review's uid, with a JSONPatch."""
    answer, uid = json.load(open(answer_file)), json.load(open(review_file))['request']['uid']
    r = answer.get('response') or {}
    if answer.get('apiVersion') != 'admission.k8s.io/v1' or answer.get('kind') != 'AdmissionReview':
        fail(f'{answer_file}: not an admission.k8s.io/v1 AdmissionReview')
    if r.get('uid') != uid or r.get('allowed') is not True:
        fail(f'{answer_file}: want allowed, uid {uid}: {r}')
    if r.get('patchType') != 'JSONPatch' or 'patch' not in r:
        fail(f'{answer_file}: no JSONPatch (warnings: {r.get("warnings")})')
    ops = json.loads(base64.b64decode(r['patch']))
    json.dump(ops, open(out, 'w'))
    print(len(ops))


if __name__ == '__main__':
    cmd, rest = sys.argv[1], sys.argv[2:]
    {'strip': strip, 'validate': validate, 'fields': fields, 'same': same, 'args': args,
     'starts': lambda b, *a: starts(b, list(a)), 'pods': pods, 'review': review, 'patch': patch_of}[cmd](*rest)
