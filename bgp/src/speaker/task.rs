//! Structured concurrency: every task the speaker spawns is owned by a [`TaskHandle`] that
//! aborts it when dropped, so no task outlives its owner.

use std::future::Future;
use std::time::Duration;
use tokio::task::JoinHandle;

/// Owns a spawned task; dropping the handle aborts the task.
#[derive(Debug)]
pub(crate) struct TaskHandle(JoinHandle<()>);

impl TaskHandle {
    /// Spawns `future` on the current runtime.
    pub(crate) fn spawn(future: impl Future<Output = ()> + Send + 'static) -> TaskHandle {
        TaskHandle(tokio::spawn(future))
    }

    /// True once the task has ended.
    pub(crate) fn is_finished(&self) -> bool {
        self.0.is_finished()
    }

    /// Waits up to `limit` for the task to end on its own; aborts it after that.
    pub(crate) async fn join(mut self, limit: Duration) {
        let _ = tokio::time::timeout(limit, &mut self.0).await;
    }
}

impl Drop for TaskHandle {
    fn drop(&mut self) {
        self.0.abort();
    }
}
