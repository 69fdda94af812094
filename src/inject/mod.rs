//! `secret-reloader-inject`: adds the sidecar to the pods and pod templates of a YAML or JSON
//! stream, derived from the pod's own spec (which Secrets and ConfigMaps the app mounts or takes as
//! environment variables, the app's uid and groups), so the two can never disagree. The admission
//! webhook ([`crate::webhook`]) applies the same [`pod`] to each pod the API server admits.

pub mod annotations;
mod derive;
mod objects;
mod sidecar;
pub mod stream;

use std::path::PathBuf;

use serde_json::{Map, Value};

use stream::Format;

/// The flags that decide what gets injected, shared by `inject` and `webhook` (the webhook's
/// patch is exactly what `inject` does with the same flags).
#[derive(Debug, Clone, clap::Args)]
pub struct InjectFlags {
    /// The sidecar's image.
    #[arg(long, value_name = "IMAGE", default_value = concat!("secret-reloader:", env!("CARGO_PKG_VERSION")))]
    pub image: String,

    /// `native`: an init container with `restartPolicy: Always` (Kubernetes 1.29 and later);
    /// `classic`: a second entry of `containers`, for older clusters.
    #[arg(long, value_enum, default_value = "native")]
    pub layout: Layout,

    /// Inject every pod and pod template, not only those annotated
    /// `secret-reloader.io/inject: "true"`.
    #[arg(long)]
    pub all: bool,
}

/// Where the sidecar goes in the pod.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Layout {
    /// `initContainers` with `restartPolicy: Always`.
    Native,
    /// A second entry of `containers`.
    Classic,
}

/// `secret-reloader-inject`'s flags.
#[derive(Debug, clap::Args)]
pub struct InjectArgs {
    /// YAML or JSON files (`-` for stdin, the default): multi-document streams and `kind: List`.
    #[arg(value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// What gets injected.
    #[command(flatten)]
    pub flags: InjectFlags,

    /// Take the sidecar out and restore what injecting changed.
    #[arg(long)]
    pub remove: bool,

    /// Inject what can be injected, report the rest on stderr (exit 1 when anything failed).
    #[arg(long)]
    pub keep_going: bool,
}

/// Why a pod cannot be injected: the message names the field and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem(pub String);

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Pod object (`kind: Pod`, as the webhook receives it) with the sidecar injected: `Ok(None)`
/// when it is not to be injected (no annotation and not `--all`).
pub fn pod(pod: &Value, flags: &InjectFlags) -> Result<Option<Value>, Problem> {
    let mut out = pod.clone();
    match template(&mut out, None, flags, false) {
        Ok((Done::Injected, _)) => Ok(Some(out)),
        Ok(_) => Ok(None),
        Err(errors) => Err(Problem(errors.join("; "))),
    }
}

/// What became of one pod template.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Done {
    Injected,
    Removed,
    Untouched,
}

/// Injects the sidecar into `tpl` (an object with `metadata` and `spec`), or takes it out
/// (`remove`). `object` is the annotations of the object that holds the template, when that is
/// not the template itself. The warnings, or every error (the template may then be half changed:
/// a caller that keeps it keeps a copy).
fn template(
    tpl: &mut Value,
    object: Option<&Map<String, Value>>,
    flags: &InjectFlags,
    remove: bool,
) -> Result<(Done, Vec<String>), Vec<String>> {
    if remove {
        return match sidecar::take_out(tpl) {
            Ok(true) => Ok((Done::Removed, Vec::new())),
            Ok(false) => Ok((Done::Untouched, Vec::new())),
            Err(e) => Err(vec![e]),
        };
    }
    let annotations = tpl
        .pointer("/metadata/annotations")
        .and_then(Value::as_object);
    let asked = annotations::inject_asked(annotations).map_err(|e| vec![e])?;
    if asked.is_none() && object.is_some_and(|o| o.contains_key(annotations::INJECT)) {
        return Err(vec![format!(
            "the annotation {} is on the object's own metadata, but the sidecar is put into the pod \
             template, and the webhook sees only the pod's: move it to spec.template.metadata.annotations",
            annotations::INJECT
        )]);
    }
    if !(asked == Some(true) || flags.all && asked != Some(false)) {
        return Ok((Done::Untouched, Vec::new()));
    }
    let wishes = annotations::read(annotations)?;
    sidecar::take_out(tpl).map_err(|e| vec![e])?;
    let spec = tpl.get("spec").unwrap_or(&Value::Null);
    for field in ["initContainers", "containers"] {
        if derive::list(spec, field)
            .iter()
            .any(|c| derive::str_at(c, "/name") == Some(derive::SIDECAR))
        {
            return Err(vec![format!(
                "spec.{field} already has a container named {} that the injector did not put there \
                 (written by hand?): remove it, or remove the annotation",
                derive::SIDECAR
            )]);
        }
    }
    if derive::list(spec, "volumes")
        .iter()
        .any(|v| derive::str_at(v, "/name") == Some(sidecar::STATE_VOLUME))
    {
        return Err(vec![format!(
            "spec.volumes already has a volume named {} that the injector did not put there: \
             rename it, or remove the annotation",
            sidecar::STATE_VOLUME
        )]);
    }
    let plan = derive::plan(spec, &wishes)?;
    let layout = wishes.layout.unwrap_or(flags.layout);
    if sidecar::put(tpl, &plan, layout, &flags.image).is_none() {
        return Err(vec!["the pod template is not an object".into()]);
    }
    Ok((Done::Injected, plan.warnings))
}

/// `secret-reloader-inject`: the exit code (0; 1 when an input cannot be read or an object cannot
/// be injected; 2 usage, from clap).
pub fn run(args: InjectArgs) -> i32 {
    let files = if args.files.is_empty() {
        vec![PathBuf::from("-")]
    } else {
        args.files.clone()
    };
    let mut docs = Vec::new();
    let mut all_json = true;
    for f in &files {
        let parsed = read(f).and_then(|text| stream::parse(&text));
        match parsed {
            Ok((format, d)) => {
                all_json &= format == Format::Json;
                docs.extend(d);
            }
            Err(e) => {
                eprintln!("error: {}: {e}", crate::text::path(f));
                return 1;
            }
        }
    }
    let mut failed = 0;
    let mut count = [0usize; 3];
    for doc in &mut docs {
        for found in objects::templates(doc) {
            let object = (found.pointer != found.object)
                .then(|| doc.pointer(&format!("{}/metadata/annotations", found.object)))
                .flatten()
                .and_then(Value::as_object)
                .cloned();
            let Some(tpl) = doc.pointer_mut(&found.pointer) else {
                continue;
            };
            let before = tpl.clone();
            let done = template(tpl, object.as_ref(), &args.flags, args.remove);
            if done.is_err() {
                *tpl = before;
            }
            match done {
                Ok((done, warnings)) => {
                    for w in warnings {
                        eprintln!("warning: {}: {w}", found.shown);
                    }
                    count[done as usize] += 1;
                }
                Err(errors) => {
                    failed += 1;
                    for e in errors {
                        eprintln!("error: {}: {e}", found.shown);
                    }
                }
            }
        }
    }
    if failed > 0 && !args.keep_going {
        eprintln!(
            "secret-reloader-inject: {failed} pod template(s) could not be {}; nothing written \
             (--keep-going writes the rest)",
            if args.remove { "restored" } else { "injected" }
        );
        return 1;
    }
    let format = if all_json { Format::Json } else { Format::Yaml };
    match stream::write(format, &docs) {
        Ok(text) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
                eprintln!("error: cannot write to stdout: {e}");
                return 1;
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            return 1;
        }
    }
    let [injected, removed, untouched] = count;
    eprintln!(
        "secret-reloader-inject: {} pod template(s) {}, {untouched} left as they were{}",
        if args.remove { removed } else { injected },
        if args.remove { "restored" } else { "injected" },
        if failed > 0 {
            format!(", {failed} failed (left as they were)")
        } else {
            String::new()
        }
    );
    i32::from(failed > 0)
}

/// A file's text (`-`: stdin), at most [`stream::MAX_INPUT`] bytes.
fn read(path: &std::path::Path) -> Result<String, String> {
    use std::io::Read;
    let mut raw = Vec::new();
    let limit = stream::MAX_INPUT as u64 + 1;
    let result = if path.as_os_str() == "-" {
        std::io::stdin().lock().take(limit).read_to_end(&mut raw)
    } else {
        std::fs::File::open(path).and_then(|f| f.take(limit).read_to_end(&mut raw))
    };
    result.map_err(|e| format!("cannot read it: {e}"))?;
    if raw.len() > stream::MAX_INPUT {
        return Err(format!("larger than {} MiB", stream::MAX_INPUT >> 20));
    }
    String::from_utf8(raw).map_err(|_| "not UTF-8 text".to_string())
}
