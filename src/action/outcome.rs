//! What an attempt of any kind of action came to: done or skipped, or why not.

/// What a successful attempt did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The action ran; the text says what was done.
    Done(String),
    /// Nothing had to be done (the process started after the content appeared).
    Skipped(String),
}

/// Why an attempt did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ActionError {
    /// Nothing was sent: the target is not ready (no process yet, no signal handler yet). Does not
    /// count against `--reload-retries`.
    Waiting(String),
    /// The action was tried and failed (refused, timed out, wrong status, not permitted).
    Failed(String),
    /// Several unrelated processes match the selector: nothing was sent. Counts as a failure.
    Ambiguous(String),
}

impl ActionError {
    /// What went wrong, whatever the kind.
    pub(crate) fn into_message(self) -> String {
        match self {
            ActionError::Waiting(m) | ActionError::Failed(m) | ActionError::Ambiguous(m) => m,
        }
    }
}
