//! NATS plumbing shared by the runner and the control plane: connecting
//! (credentials, TLS, WebSocket), JetStream publishes with dedup ids and
//! retries, request/reply, and dead letters.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use backon::{ExponentialBuilder, Retryable};
use outpost_schemas::Event;
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("publish to `{subject}` failed: {message}")]
    Publish { subject: String, message: String },
    #[error("request on `{subject}` failed: {message}")]
    Request { subject: String, message: String },
    #[error("cannot read credentials {path}: {message}")]
    Creds { path: String, message: String },
    #[error("cannot encode message for `{subject}`: {source}")]
    Encode {
        subject: String,
        #[source]
        source: serde_json::Error,
    },
}

/// How to reach NATS.
#[derive(Debug, Clone)]
pub struct NatsOptions {
    /// `nats://`, `ws://` or `wss://` URL(s), comma-separated.
    pub url: String,
    /// JetStream domain of the hub; set it so that the same client works
    /// directly and through a leaf node.
    pub domain: Option<String>,
    /// Connection name, shown by `nats-server` monitoring.
    pub name: String,
    /// Per-identity inbox prefix, so that permissions can confine replies.
    pub inbox_prefix: Option<String>,
    /// A private CA to trust for `wss://` and `tls://` servers, besides the
    /// system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// JetStream API prefix, instead of the domain's (`$JS.<domain>.API`):
    /// an enrolled runner reaches the consumers through an import.
    pub api_prefix: Option<String>,
    /// NATS credentials: a `.creds` file, or a runner bundle holding one.
    /// Read again at every (re)connect, so a rotated file takes effect at
    /// the next reconnect.
    pub creds_file: Option<std::path::PathBuf>,
}

/// The JWT and signing key of a `.creds` file, or of the `creds` a runner
/// bundle carries: both hold the same delimited blocks.
pub fn load_creds(path: &std::path::Path) -> Result<(String, nkeys::KeyPair), BusError> {
    let err = |message: String| BusError::Creds {
        path: path.display().to_string(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    parse_creds(&text).map_err(err)
}

pub fn parse_creds(text: &str) -> Result<(String, nkeys::KeyPair), String> {
    let block = |begin: &str| -> Result<String, String> {
        let start = text
            .find(begin)
            .ok_or_else(|| format!("no `{begin}` block"))?
            + begin.len();
        let end = text[start..]
            .find("------END")
            .ok_or_else(|| format!("unterminated `{begin}` block"))?;
        Ok(text[start..start + end].trim().to_string())
    };
    let jwt = block("-----BEGIN NATS USER JWT-----")?;
    let seed = block("-----BEGIN USER NKEY SEED-----")?;
    let kp = nkeys::KeyPair::from_seed(&seed).map_err(|e| format!("bad seed: {e}"))?;
    Ok((jwt, kp))
}

/// Connects, retrying with backoff until `give_up_after`: services and runners
/// may start before `nats-server` does. Once connected, async-nats reconnects
/// by itself for the life of the client.
pub async fn connect(
    opts: &NatsOptions,
    give_up_after: Duration,
) -> Result<(async_nats::Client, jetstream::Context), BusError> {
    let websocket = opts.url.trim_start().starts_with("ws");
    let attempt = || async {
        let mut co = match &opts.creds_file {
            Some(path) => {
                // Fail fast on an unreadable file; later reads happen at
                // each reconnect.
                load_creds(path).map_err(|e| {
                    async_nats::ConnectError::with_source(
                        async_nats::ConnectErrorKind::Authentication,
                        e,
                    )
                })?;
                let path = path.clone();
                async_nats::ConnectOptions::with_auth_callback(move |nonce| {
                    let path = path.clone();
                    async move {
                        let (jwt, kp) = load_creds(&path)
                            .map_err(|e| async_nats::AuthError::new(e.to_string()))?;
                        let mut auth = async_nats::Auth::new();
                        auth.jwt = Some(jwt);
                        auth.signature = Some(
                            kp.sign(&nonce)
                                .map_err(|e| async_nats::AuthError::new(e.to_string()))?,
                        );
                        Ok(auth)
                    }
                })
            }
            None => async_nats::ConnectOptions::new(),
        };
        co = co
            .name(&opts.name)
            .connection_timeout(Duration::from_secs(5))
            // A link that drops packets without closing is noticed once
            // pings go unanswered: 20 to 30 s rather than the default 2 to
            // 3 minutes, during which publishes wait on a dead socket.
            .ping_interval(Duration::from_secs(10))
            .max_reconnects(None)
            // Back in within about a second of a restarted server: the
            // default backoff grows to 4 s between tries, which is most of
            // a short outage spent waiting.
            .reconnect_delay_callback(|attempts| {
                Duration::from_millis((attempts as u64 * 100).min(1000))
            })
            .event_callback(move |event| async move {
                match event {
                    async_nats::Event::Disconnected => tracing::warn!("disconnected from NATS"),
                    async_nats::Event::Connected => {
                        if websocket {
                            disable_nagle();
                        }
                        tracing::info!("connected to NATS")
                    }
                    other => tracing::debug!(event = %other, "NATS event"),
                }
            });
        if let Some(prefix) = &opts.inbox_prefix {
            co = co.custom_inbox_prefix(prefix);
        }
        if let Some(ca) = &opts.ca_file {
            co = co.add_root_certificates(ca.clone());
        }
        let urls: Vec<&str> = opts.url.split(',').map(str::trim).collect();
        co.connect(urls).await
    };
    let client = attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(100))
                .with_max_delay(Duration::from_secs(2))
                .with_total_delay(Some(give_up_after))
                .without_max_times(),
        )
        .notify(|err, wait| tracing::warn!(error = %err, ?wait, "NATS not reachable yet; retrying"))
        .await
        .map_err(|source| BusError::Connect {
            url: opts.url.clone(),
            source,
        })?;
    if websocket {
        disable_nagle();
    }
    let js = match (&opts.api_prefix, &opts.domain) {
        (Some(prefix), _) => jetstream::with_prefix(client.clone(), prefix),
        (None, Some(domain)) => jetstream::with_domain(client.clone(), domain),
        (None, None) => jetstream::new(client.clone()),
    };
    Ok((client, js))
}

/// Publishes `payload` to a stream and waits for its acknowledgment, retrying
/// with the same `Nats-Msg-Id` so that a retried publish is stored once.
/// Returns whether the stream reported the message as a duplicate.
pub async fn publish_acked(
    js: &jetstream::Context,
    subject: &str,
    msg_id: &str,
    payload: bytes::Bytes,
) -> Result<bool, BusError> {
    publish_acked_within(js, subject, msg_id, payload, Duration::from_secs(120)).await
}

/// [`publish_acked`], giving up after `total` of retries.
pub async fn publish_acked_within(
    js: &jetstream::Context,
    subject: &str,
    msg_id: &str,
    payload: bytes::Bytes,
    total: Duration,
) -> Result<bool, BusError> {
    let attempt = || publish_once(js, subject, msg_id, payload.clone());
    attempt
        .retry(
            ExponentialBuilder::default()
                .with_min_delay(Duration::from_millis(50))
                .with_max_delay(Duration::from_secs(5).min(total))
                .with_total_delay(Some(total))
                .without_max_times(),
        )
        .when(|f| !f.permanent)
        .notify(
            |err, wait| tracing::warn!(error = %err.message, subject, ?wait, "publish failed; retrying"),
        )
        .await
        .map_err(|f| BusError::Publish {
            subject: subject.to_string(),
            message: f.message,
        })
}

/// Why a publish failed, and whether trying again can help.
#[derive(Debug)]
pub struct PublishFailure {
    pub message: String,
    /// The server can never take it (larger than its `max_payload`).
    pub permanent: bool,
}

/// One publish with a dedup id, waiting for the stream's acknowledgment.
pub async fn publish_once(
    js: &jetstream::Context,
    subject: &str,
    msg_id: &str,
    payload: bytes::Bytes,
) -> Result<bool, PublishFailure> {
    use async_nats::jetstream::context::PublishErrorKind;
    let fail = |e: async_nats::jetstream::context::PublishError| PublishFailure {
        permanent: e.kind() == PublishErrorKind::MaxPayloadExceeded,
        message: e.to_string(),
    };
    let ack = js
        .send_publish(
            subject.to_string(),
            PublishMessage::build().payload(payload).message_id(msg_id),
        )
        .await
        .map_err(fail)?;
    ack.await.map(|a| a.duplicate).map_err(fail)
}

/// A request to the control plane (core NATS request/reply) with a JSON
/// body and reply. A reply carrying only `{"error": …}` is an error.
pub async fn request_json<Req: Serialize, Rep: serde::de::DeserializeOwned>(
    client: &async_nats::Client,
    subject: &str,
    req: &Req,
    timeout: Duration,
) -> Result<Rep, BusError> {
    let fail = |message: String| BusError::Request {
        subject: subject.to_string(),
        message,
    };
    let payload = encode(subject, req)?;
    let reply = tokio::time::timeout(timeout, client.request(subject.to_string(), payload))
        .await
        .map_err(|_| fail(format!("no reply within {timeout:?}")))?
        .map_err(|e| fail(e.to_string()))?;
    match serde_json::from_slice::<Rep>(&reply.payload) {
        Ok(r) => Ok(r),
        Err(decode) => {
            match serde_json::from_slice::<outpost_schemas::rpc::RpcResult>(&reply.payload) {
                Ok(outpost_schemas::rpc::RpcResult { error: Some(e) }) => Err(fail(e)),
                _ => Err(fail(format!("unreadable reply: {decode}"))),
            }
        }
    }
}

/// Serialises and publishes any wire message.
pub async fn publish_json<T: Serialize>(
    js: &jetstream::Context,
    subject: &str,
    msg_id: &str,
    msg: &T,
) -> Result<bool, BusError> {
    publish_acked(js, subject, msg_id, encode(subject, msg)?).await
}

/// A wire message's JSON, for `subject`.
pub fn encode<T: Serialize>(subject: &str, msg: &T) -> Result<bytes::Bytes, BusError> {
    serde_json::to_vec(msg)
        .map(Into::into)
        .map_err(|source| BusError::Encode {
            subject: subject.to_string(),
            source,
        })
}

/// Publishes an event on its subject with its dedup id.
pub async fn publish_event(js: &jetstream::Context, event: &Event) -> Result<bool, BusError> {
    publish_json(js, &event.subject(), &event.dedup_id(), event).await
}

/// Publishes an event under another source token than its own, with an
/// explicit dedup id: the control plane reporting on a runner's step (say,
/// `runner-lost`) speaks as `_cp`, not as the runner.
pub async fn publish_event_as(
    js: &jetstream::Context,
    event: &Event,
    source: &str,
    msg_id: &str,
) -> Result<bool, BusError> {
    let subject = outpost_schemas::subjects::event(event.kind(), event.execution_id(), source);
    publish_json(js, &subject, msg_id, event).await
}

/// Copies a message that `consumer` could not read to the dead-letter
/// stream, with where it came from and why, then terminates it so that it
/// is never redelivered. The consumer goes on with the next message.
pub async fn dead_letter(
    js: &jetstream::Context,
    source: &str,
    consumer: &str,
    msg: &jetstream::Message,
    error: &str,
) {
    let seq = msg
        .info()
        .map(|i| i.stream_sequence.to_string())
        .unwrap_or_default();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        outpost_schemas::subjects::DLQ_SUBJECT_HEADER,
        msg.subject.as_str(),
    );
    // Header values are one line.
    let error: String = error
        .chars()
        .take(1000)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    headers.insert(outpost_schemas::subjects::DLQ_ERROR_HEADER, error.as_str());
    headers.insert(outpost_schemas::subjects::DLQ_SEQUENCE_HEADER, seq.as_str());
    let subject = outpost_schemas::subjects::dead_letter(source, consumer);
    let id = format!("dlq.{consumer}.{}.{seq}", msg.subject);
    let stored = async {
        js.send_publish(
            subject.clone(),
            PublishMessage::build()
                .payload(msg.payload.clone())
                .headers(headers)
                .message_id(id),
        )
        .await?
        .await
        .map_err(|e| e.to_string().into())
    };
    let res: Result<_, Box<dyn std::error::Error + Send + Sync>> = stored.await;
    match res {
        Ok(_) => {
            tracing::error!(consumer, subject = %msg.subject, error, "message dead-lettered");
            let _ = msg.ack_with(jetstream::AckKind::Term).await;
        }
        Err(err) => {
            // Keep it for redelivery rather than lose it.
            tracing::error!(error = %err, consumer, "cannot dead-letter a message; leaving it for redelivery");
            let _ = msg
                .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(5))))
                .await;
        }
    }
}

/// Sets TCP_NODELAY on every TCP socket of this process.
///
/// async-nats 0.51 sets it on plain TCP connections but not on WebSocket ones
/// (see its `connector.rs`). Without it, a write that follows one the server
/// does not answer at once (a long-poll pull request, an ack) sits in Nagle's
/// buffer until the server's delayed ACK, about 40 ms on Linux: that made
/// pickup over WebSocket 45 ms instead of 3 ms. We cannot reach the socket
/// through the client, so we find it among our file descriptors. Setting the
/// option on any other TCP socket only lowers its latency too.
pub fn disable_nagle() {
    let Ok(dir) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for entry in dir.flatten() {
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<libc::c_int>().ok())
        else {
            continue;
        };
        let mut ty: libc::c_int = 0;
        let mut domain: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        let one: libc::c_int = 1;
        // SAFETY: getsockopt/setsockopt write at most `len` bytes into the
        // c_int we pass; on a descriptor that is not a socket (or was closed
        // meanwhile) they fail with an error and touch nothing.
        unsafe {
            if libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_TYPE,
                (&mut ty as *mut libc::c_int).cast(),
                &mut len,
            ) != 0
                || ty != libc::SOCK_STREAM
            {
                continue;
            }
            len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            if libc::getsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_DOMAIN,
                (&mut domain as *mut libc::c_int).cast(),
                &mut len,
            ) != 0
                || (domain != libc::AF_INET && domain != libc::AF_INET6)
            {
                continue;
            }
            libc::setsockopt(
                fd,
                libc::IPPROTO_TCP,
                libc::TCP_NODELAY,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
    }
}
