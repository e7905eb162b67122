//! Structured concurrency for the managers: every task a manager spawns is owned by its
//! handle and stops with it.

use tokio::task::JoinHandle;

/// Tasks aborted together when dropped.
#[derive(Debug)]
pub(crate) struct AbortOnDrop(pub(crate) Vec<JoinHandle<()>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn dropping_the_handle_aborts_every_task() {
        let (a, b) = (
            tokio::spawn(std::future::pending::<()>()),
            tokio::spawn(std::future::pending::<()>()),
        );
        let (ra, rb) = (a.abort_handle(), b.abort_handle());
        drop(AbortOnDrop(vec![a, b]));
        tokio::task::yield_now().await;
        assert!(ra.is_finished() && rb.is_finished());
    }
}
