//! Reading and writing manifests: YAML (multi-document streams) or JSON (one object or a stream of
//! objects), into `serde_json::Value`s whose key order is kept, and back in the format they came in.
//! YAML is read with serde-saphyr: panic-free, no unsafe code, and a budget that bounds documents,
//! nodes, depth and aliases (an alias bomb is an error, not a hang). Integers with a leading zero are
//! octal, as Kubernetes' own YAML reader takes them (`defaultMode: 0440` is 288). Comments go.

use serde_json::Value;

/// The most a manifest stream may hold: more is an error, not a machine out of memory.
pub(crate) const MAX_INPUT: usize = 256 * 1024 * 1024;

/// The format a stream came in, and goes out in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// YAML, documents separated by `---`.
    Yaml,
    /// JSON, one object after another.
    Json,
}

/// Parses a stream: its format and its documents (empty YAML documents left out). Every document
/// must be an object.
pub fn parse(text: &str) -> Result<(Format, Vec<Value>), String> {
    let first = text.trim_start_matches(['\u{feff}', ' ', '\t', '\r', '\n']);
    // JSON is YAML, but read as JSON it keeps every number exactly; a stream that starts like
    // JSON but is not (YAML documents written in flow style) is read as YAML.
    let json = first
        .starts_with('{')
        .then(|| {
            serde_json::Deserializer::from_str(text)
                .into_iter::<Value>()
                .collect::<Result<Vec<_>, _>>()
                .ok()
        })
        .flatten();
    let (format, docs) = match json {
        Some(docs) => (Format::Json, docs),
        None => {
            let options = serde_saphyr::options! {
                budget: serde_saphyr::budget! {
                    max_documents: 100_000,
                    max_nodes: 20_000_000,
                    max_events: 40_000_000,
                },
                legacy_octal_numbers: true,
            };
            let docs: Vec<Value> = serde_saphyr::from_multiple_with_options(text, options)
                .map_err(|e| format!("not YAML or JSON: {}", one_line(&e.to_string())))?;
            (
                Format::Yaml,
                docs.into_iter().filter(|d| !d.is_null()).collect(),
            )
        }
    };
    for (i, d) in docs.iter().enumerate() {
        if !d.is_object() {
            return Err(format!(
                "document {} is not a Kubernetes object (a mapping with apiVersion and kind)",
                i + 1
            ));
        }
    }
    Ok((format, docs))
}

/// Writes documents in `format`.
pub fn write(format: Format, docs: &[Value]) -> Result<String, String> {
    let mut out = String::new();
    for (i, d) in docs.iter().enumerate() {
        match format {
            Format::Yaml => {
                if i > 0 {
                    out.push_str("---\n");
                }
                let text =
                    serde_saphyr::to_string(d).map_err(|e| format!("cannot write YAML: {e}"))?;
                out.push_str(&text);
                if !out.ends_with('\n') {
                    out.push('\n');
                }
            }
            Format::Json => {
                let text = serde_json::to_string_pretty(d)
                    .map_err(|e| format!("cannot write JSON: {e}"))?;
                out.push_str(&text);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// A parser's message on one line, bounded (it may quote the input).
fn one_line(s: &str) -> String {
    let line = crate::text::value(&s.lines().map(str::trim).collect::<Vec<_>>().join(" "));
    match line.char_indices().nth(400) {
        Some((at, _)) => format!("{}…", &line[..at]),
        None => line,
    }
}
