//! `/deadletters`: messages a consumer could not handle, with why.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use outpost_schemas::subjects;
use serde::Serialize;

use crate::ServiceError;

use super::error::ApiResult;
use super::AppState;

#[derive(Serialize)]
pub(super) struct DeadLetters {
    /// Dead letters per `outpost.dlq.<source>.<consumer>` subject.
    counts: BTreeMap<String, u64>,
    /// The newest (at most 50), newest last.
    recent: Vec<DeadLetter>,
}

#[derive(Serialize)]
pub(super) struct DeadLetter {
    seq: u64,
    consumer: String,
    subject: String,
    error: String,
    time: DateTime<Utc>,
    /// The payload as text (lossy), at most 4 KiB.
    payload: String,
}

/// `GET /deadletters`: how many messages each consumer could not read, and
/// the newest of them with why.
pub(super) async fn list_dead_letters(State(s): State<AppState>) -> ApiResult<Json<DeadLetters>> {
    let (stream, state) = crate::stream_with_state(&s.js, subjects::DEADLETTER_STREAM).await?;
    let mut counts = BTreeMap::new();
    if state.messages > 0 {
        use futures::TryStreamExt;
        let by_subject: std::collections::HashMap<String, usize> = stream
            .info_with_subjects("outpost.dlq.>")
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?
            .try_collect()
            .await
            .map_err(|e| ServiceError::Nats(e.to_string()))?;
        counts = by_subject.into_iter().map(|(k, v)| (k, v as u64)).collect();
    }
    let mut recent = Vec::new();
    if state.messages > 0 {
        let from = state
            .last_sequence
            .saturating_sub(49)
            .max(state.first_sequence);
        for seq in from..=state.last_sequence {
            let Ok(m) = stream.direct_get(seq).await else {
                continue;
            };
            let header = |name: &str| {
                m.headers
                    .get(name)
                    .map(|v| v.to_string())
                    .unwrap_or_default()
            };
            let payload = &m.payload[..m.payload.len().min(4096)];
            recent.push(DeadLetter {
                seq,
                consumer: m.subject.to_string(),
                subject: header(subjects::DLQ_SUBJECT_HEADER),
                error: header(subjects::DLQ_ERROR_HEADER),
                time: DateTime::<Utc>::from_timestamp(m.time.unix_timestamp(), m.time.nanosecond())
                    .unwrap_or_default(),
                payload: String::from_utf8_lossy(payload).into_owned(),
            });
        }
    }
    Ok(Json(DeadLetters { counts, recent }))
}
