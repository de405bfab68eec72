//! What the in-memory views share (the tag-set index, the execution index,
//! the heartbeat view): a watch that starts again when it ends, as it does
//! when NATS restarts, and a flag that says the view has read everything
//! that existed when its watch started.

use std::future::Future;
use std::time::Duration;

use async_nats::jetstream::kv;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::store::bucket::Bucket;

/// Whether a view has caught up with what it follows.
#[derive(Clone)]
pub struct Ready(watch::Sender<bool>);

impl Default for Ready {
    fn default() -> Self {
        Ready(watch::channel(false).0)
    }
}

impl Ready {
    pub fn set(&self) {
        self.0.send_replace(true);
    }

    pub fn is_set(&self) -> bool {
        *self.0.borrow()
    }

    /// Waits until the view has caught up, for at most `within`.
    pub async fn wait(&self, within: Duration) -> bool {
        let mut ready = self.0.subscribe();
        let caught_up = matches!(
            tokio::time::timeout(within, ready.wait_for(|r| *r)).await,
            Ok(Ok(_))
        );
        caught_up
    }
}

/// Runs `follow` until `shutdown`, starting it again half a second after it
/// ends or fails.
pub async fn keep_following<F, Fut>(what: &'static str, shutdown: CancellationToken, mut follow: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<(), String>>,
{
    while !shutdown.is_cancelled() {
        if let Err(err) = follow().await {
            tracing::warn!(error = %err, view = what, "watch failed; starting it again");
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// A watch of every key of `bucket`, from its history. An empty bucket
/// delivers nothing that would say "caught up", so `ready` is set at once;
/// otherwise the caller sets it at the entry whose `delta` is 0.
pub async fn watch_all(bucket: &Bucket, ready: &Ready) -> Result<kv::Watch, String> {
    let existing = bucket
        .raw()
        .status()
        .await
        .map_err(|e| e.to_string())?
        .values();
    let watch = bucket
        .raw()
        .watch_with_history(">")
        .await
        .map_err(|e| e.to_string())?;
    if existing == 0 {
        ready.set();
    }
    Ok(watch)
}
