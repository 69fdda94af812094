//! What is wrong with a configuration, and what is risky in it, collected while it is built:
//! every source (flags, environment, the config file, each action kind) adds to one list, so
//! that all problems are reported at once, each naming its flag or field.

/// Problems and warnings collected while building.
#[derive(Debug, Default)]
pub(crate) struct Findings {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

impl Findings {
    pub(crate) fn error(&mut self, e: impl Into<String>) {
        self.errors.push(e.into());
    }
    pub(crate) fn warn(&mut self, w: impl Into<String>) {
        self.warnings.push(w.into());
    }
}
