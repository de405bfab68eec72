//! Typed access to a JetStream key-value bucket: reads that ride out a
//! transient JetStream error, JSON values, and the one compare-and-set loop
//! every read-modify-write in the control plane goes through.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use backon::{ExponentialBuilder, Retryable};
use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::ServiceError;

/// A bucket and its name (for error messages).
#[derive(Clone)]
pub struct Bucket {
    store: kv::Store,
    name: Arc<str>,
}

/// What a compare-and-set step decides: write `T` and return `R`, or leave
/// the value as it is and return `R`.
pub enum Cas<T, R> {
    Write(T, R),
    Keep(R),
}

impl Bucket {
    pub async fn open(js: &jetstream::Context, name: &str) -> Result<Self, ServiceError> {
        let store = js
            .get_key_value(name)
            .await
            .map_err(|e| ServiceError::Nats(format!("bucket {name}: {e}")))?;
        Ok(Bucket {
            store,
            name: name.into(),
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The underlying store, for writes and watches.
    pub fn raw(&self) -> &kv::Store {
        &self.store
    }

    /// The live entry under `key` (a delete or purge marker reads as none).
    /// A transient JetStream error (no responders for a moment, a timeout)
    /// is retried for a few seconds: the caller is usually an API request or
    /// a runner's RPC, which should not fail because the server was busy.
    pub async fn entry(&self, key: &str) -> Result<Option<kv::Entry>, ServiceError> {
        let entry = (|| async { self.store.entry(key).await })
            .retry(read_backoff())
            .when(|e: &kv::EntryError| is_transient(e.kind() == kv::EntryErrorKind::TimedOut, e))
            .notify(|e, wait| {
                tracing::debug!(error = %e, bucket = %self.name, key, ?wait, "transient read error; retrying")
            })
            .await
            .map_err(|e| ServiceError::Nats(format!("{} {key}: {e}", self.name)))?;
        Ok(entry.filter(|e| e.operation == kv::Operation::Put))
    }

    /// The value under `key`, if any.
    pub async fn get_bytes(&self, key: &str) -> Result<Option<Bytes>, ServiceError> {
        Ok(self.entry(key).await?.map(|e| e.value))
    }

    /// The JSON value under `key` and its revision.
    pub async fn get<T: DeserializeOwned>(
        &self,
        key: &str,
    ) -> Result<Option<(T, u64)>, ServiceError> {
        match self.entry(key).await? {
            Some(e) => Ok(Some((self.decode(key, &e.value)?, e.revision))),
            None => Ok(None),
        }
    }

    fn decode<T: DeserializeOwned>(&self, key: &str, value: &[u8]) -> Result<T, ServiceError> {
        serde_json::from_slice(value)
            .map_err(|e| ServiceError::Corrupt(format!("{} {key}: {e}", self.name)))
    }

    /// Read-modify-write with compare-and-set: `change` sees the current
    /// value (or none) and decides; a write that loses the race to another
    /// writer reads again and asks again, so `change` must be a pure
    /// function of what it is shown.
    pub async fn modify<T, R, E>(
        &self,
        key: &str,
        mut change: impl FnMut(Option<T>) -> Result<Cas<T, R>, E>,
    ) -> Result<R, E>
    where
        T: Serialize + DeserializeOwned,
        E: From<ServiceError>,
    {
        loop {
            let entry = self.entry(key).await?;
            let current = match &entry {
                Some(e) => Some(self.decode::<T>(key, &e.value)?),
                None => None,
            };
            let (next, out) = match change(current)? {
                Cas::Keep(out) => return Ok(out),
                Cas::Write(next, out) => (next, out),
            };
            let value: Bytes = serde_json::to_vec(&next).expect("value serialises").into();
            let lost_race = match &entry {
                Some(e) => match self.store.update(key, value, e.revision).await {
                    Ok(_) => false,
                    Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => true,
                    Err(err) => return Err(self.write_err(key, err).into()),
                },
                None => match self.store.create(key, value).await {
                    Ok(_) => false,
                    Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => true,
                    Err(err) => return Err(self.write_err(key, err).into()),
                },
            };
            if !lost_race {
                return Ok(out);
            }
        }
    }

    fn write_err(&self, key: &str, err: impl std::fmt::Display) -> ServiceError {
        ServiceError::Nats(format!("{} {key}: {err}", self.name))
    }
}

/// Short and bounded: about 5 s in all, so that a read outlives a server's
/// hiccup but a real outage still surfaces as an error.
pub(crate) fn read_backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(20))
        .with_max_delay(Duration::from_secs(1))
        .with_max_times(8)
        .with_jitter()
}

/// Whether a JetStream error is one a retry can cure. async-nats reports a
/// "503 no responders" status inside its catch-all kinds, so the text is
/// the only place it shows.
pub(crate) fn is_transient(timed_out: bool, err: &impl std::fmt::Display) -> bool {
    if timed_out {
        return true;
    }
    let text = err.to_string().to_lowercase();
    text.contains("no responders") || text.contains("timed out") || text.contains("timeout")
}
