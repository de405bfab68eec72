//! `/deadletters`: messages a consumer could not handle, with why.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Utc};
use outpost_schemas::subjects;

use crate::contract::{DeadLetter, DeadLetters};
use crate::ServiceError;

use super::error::ApiResult;
use super::AppState;

/// `GET /deadletters`: how many messages each consumer could not read, and
/// the newest of them with why.
#[utoipa::path(get, path = "/api/v1/deadletters", tag = "audit",
    responses((status = 200, body = DeadLetters)))]
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
