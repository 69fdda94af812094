//! The daemon's tasks, each with a name and a tracing span, all watched: a vital task that ends
//! before shutdown (returns, or panics in a build that unwinds) is an error naming it, never
//! silence.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::{Id, JoinSet};
use tracing::Instrument;

/// A set of named tasks.
#[derive(Default)]
pub(crate) struct Tasks {
    set: JoinSet<()>,
    /// Name of each task, and whether its end is a failure.
    names: HashMap<Id, (String, bool)>,
}

impl Tasks {
    /// Spawns a task that must run until shutdown, in `span`.
    pub(crate) fn vital(
        &mut self,
        name: String,
        span: tracing::Span,
        fut: impl Future<Output = ()> + Send + 'static,
    ) {
        let h = self.set.spawn(fut.instrument(span));
        self.names.insert(h.id(), (name, true));
    }

    /// Spawns a task that may end by itself (only a panic is a failure).
    pub(crate) fn helper(&mut self, name: String, fut: impl Future<Output = ()> + Send + 'static) {
        let h = self.set.spawn(fut);
        self.names.insert(h.id(), (name, false));
    }

    /// Waits until a task fails (a vital one ends, or any one panics): what failed. Pending
    /// forever when none does.
    pub(crate) async fn failure(&mut self) -> String {
        loop {
            match self.set.join_next_with_id().await {
                Some(Ok((id, ()))) => {
                    if let Some((name, true)) = self.names.remove(&id) {
                        return format!("{name} ended unexpectedly");
                    }
                }
                Some(Err(e)) => {
                    let name = self
                        .names
                        .remove(&e.id())
                        .map(|(n, _)| n)
                        .unwrap_or_else(|| "a task".into());
                    return if e.is_panic() {
                        format!("{name} crashed (panic)")
                    } else {
                        format!("{name} was cancelled")
                    };
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Waits for every task to end.
    pub(crate) async fn join_all(&mut self) {
        while self.set.join_next().await.is_some() {}
    }

    /// Ends every task now.
    pub(crate) fn abort_all(&mut self) {
        self.set.abort_all();
    }
}
