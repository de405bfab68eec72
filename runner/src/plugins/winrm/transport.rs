//! One HTTP/1.1 connection to a WinRM listener, authenticated with Basic
//! or NTLM. NTLM authenticates the connection, not the request, so every
//! request of a shell goes on the connection that did the handshake (not
//! through a pool), sealed over HTTP as pywinrm seals it (MS-WSMV 2.2.9.1).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};

use super::ntlm;

pub const SOAP_TYPE: &str = "application/soap+xml;charset=UTF-8";
pub const SEALED_TYPE: &str = r#"multipart/encrypted;protocol="application/HTTP-SPNEGO-session-encrypted";boundary="Encrypted Boundary""#;
const BOUNDARY: &[u8] = b"--Encrypted Boundary\r\n";
const END: &[u8] = b"--Encrypted Boundary--\r\n";
const OCTETS: &[u8] = b"\tContent-Type: application/octet-stream\r\n";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthKind {
    Basic,
    Ntlm,
}

#[derive(Debug, Clone)]
pub enum Tls {
    /// `winrm-nossl`: the certificate is not checked.
    NoVerify,
    /// The public roots, or the CA bundle of `winrm-certpath`.
    Verify(Option<PathBuf>),
}

/// Where and as whom to connect.
#[derive(Clone)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub tls: Option<Tls>,
    pub auth: AuthKind,
    pub user: String,
    pub password: String,
    /// How long one request may take, beyond its OperationTimeout.
    pub read_timeout: Duration,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("url", &self.url())
            .field("auth", &self.auth)
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        format!("{scheme}://{host}:{}/wsman", self.port)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("cannot connect to {0}: {1}")]
    Connect(String, std::io::Error),
    #[error("TLS with {0}: {1}")]
    Tls(String, String),
    #[error("HTTP: {0}")]
    Http(#[from] hyper::Error),
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not connect and log in within {0:?}")]
    ConnectTimeout(Duration),
    #[error("the specified credentials were rejected by the server")]
    Rejected,
    #[error("NTLM: {0}")]
    Ntlm(#[from] ntlm::NtlmError),
    #[error("the server's NTLM answer is missing or not base64")]
    NoChallenge,
    #[error("a sealed body that does not read: {0}")]
    Sealed(&'static str),
    #[error("the server answered HTTP {0}")]
    Status(u16),
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// An authenticated connection.
pub struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    basic: Option<String>,
    session: Option<ntlm::Session>,
    timeout: Duration,
    /// The `Host` header: host and port, an IPv6 address in brackets.
    host: String,
}

impl Connection {
    /// Connects and authenticates, all within the read timeout, as
    /// pywinrm's covers connecting.
    pub async fn open(ep: &Endpoint) -> Result<Connection, TransportError> {
        tokio::time::timeout(ep.read_timeout, Self::connect(ep))
            .await
            .map_err(|_| TransportError::ConnectTimeout(ep.read_timeout))?
    }

    async fn connect(ep: &Endpoint) -> Result<Connection, TransportError> {
        let at = format!("{}:{}", ep.host, ep.port);
        let tcp = tokio::net::TcpStream::connect((ep.host.as_str(), ep.port))
            .await
            .map_err(|e| TransportError::Connect(at.clone(), e))?;
        let _ = tcp.set_nodelay(true);
        let (stream, certificate): (Box<dyn Stream>, Option<Vec<u8>>) = match &ep.tls {
            None => (Box::new(tcp), None),
            Some(tls) => {
                let config = tls_config(tls).map_err(|e| TransportError::Tls(at.clone(), e))?;
                let name = rustls::pki_types::ServerName::try_from(ep.host.clone())
                    .map_err(|e| TransportError::Tls(at.clone(), e.to_string()))?;
                let s = tokio_rustls::TlsConnector::from(Arc::new(config))
                    .connect(name, tcp)
                    .await
                    .map_err(|e| TransportError::Tls(at.clone(), e.to_string()))?;
                let cert = s
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                    .map(|c| c.to_vec());
                (Box::new(s), cert)
            }
        };
        let (sender, driver) = http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(async move {
            let _ = driver.await;
        });
        let mut conn = Connection {
            sender,
            basic: None,
            session: None,
            timeout: ep.read_timeout,
            host: match ep.host.contains(':') {
                true => format!("[{}]:{}", ep.host, ep.port),
                false => format!("{}:{}", ep.host, ep.port),
            },
        };
        match ep.auth {
            AuthKind::Basic => {
                let pair = format!("{}:{}", ep.user, ep.password);
                conn.basic = Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ));
            }
            AuthKind::Ntlm => conn.ntlm(ep, certificate.as_deref()).await?,
        }
        Ok(conn)
    }

    /// The three-leg handshake on empty POSTs, as pywinrm does before its
    /// first sealed message. Over HTTPS the session is not used to seal
    /// (TLS protects the body), and the channel bindings tie it to TLS.
    async fn ntlm(&mut self, ep: &Endpoint, cert: Option<&[u8]>) -> Result<(), TransportError> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let negotiate = ntlm::negotiate();
        let res = self
            .send(
                Some(format!("Negotiate {}", b64.encode(&negotiate))),
                None,
                Bytes::new(),
            )
            .await?;
        let challenge = res
            .headers()
            .get_all(hyper::header::WWW_AUTHENTICATE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(|v| {
                v.strip_prefix("Negotiate ")
                    .or_else(|| v.strip_prefix("NTLM "))
            })
            .and_then(|t| b64.decode(t.trim()).ok())
            .ok_or(TransportError::NoChallenge)?;
        let _ = res.into_body().collect().await?;
        let (domain, user) = ntlm::split_user(&ep.user);
        // The client challenge and the session key: from the OS's RNG.
        let mut random = [0u8; 24];
        rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut random);
        let workstation = hostname::get()
            .ok()
            .and_then(|h| h.into_string().ok())
            .unwrap_or_default()
            .to_uppercase();
        let target = format!("HTTP/{}", ep.host);
        let (authenticate, key) = ntlm::authenticate(
            &ntlm::Credentials {
                user,
                domain,
                password: &ep.password,
                workstation: &workstation,
                target: &target,
                channel_bindings: cert.map(ntlm::channel_bindings),
            },
            &negotiate,
            &challenge,
            random,
            filetime_now(),
        )?;
        let res = self
            .send(
                Some(format!("Negotiate {}", b64.encode(&authenticate))),
                None,
                Bytes::new(),
            )
            .await?;
        let status = res.status();
        let _ = res.into_body().collect().await?;
        match status.as_u16() {
            200..=299 => {}
            401 => return Err(TransportError::Rejected),
            other => return Err(TransportError::Status(other)),
        }
        if ep.tls.is_none() {
            self.session = Some(ntlm::Session::client(key));
        }
        Ok(())
    }

    async fn send(
        &mut self,
        auth: Option<String>,
        content_type: Option<&str>,
        body: Bytes,
    ) -> Result<hyper::Response<hyper::body::Incoming>, TransportError> {
        let mut req = hyper::Request::post("/wsman")
            .header(hyper::header::HOST, self.host.as_str())
            .header(hyper::header::USER_AGENT, "Outpost WinRM client")
            .header(hyper::header::CONNECTION, "Keep-Alive");
        if let Some(a) = auth {
            req = req.header(hyper::header::AUTHORIZATION, a);
        }
        if let Some(t) = content_type {
            req = req.header(hyper::header::CONTENT_TYPE, t);
        }
        let req = req.body(Full::new(body)).expect("a valid request");
        let timeout = self.timeout;
        tokio::time::timeout(timeout, async {
            self.sender.ready().await?;
            self.sender.send_request(req).await
        })
        .await
        .map_err(|_| TransportError::Timeout(timeout))?
        .map_err(TransportError::Http)
    }

    /// Posts one SOAP message; the status and the (unsealed) text.
    pub async fn post(&mut self, xml: &str) -> Result<(u16, String), TransportError> {
        let (content_type, body) = match self.session.as_mut() {
            Some(s) => (SEALED_TYPE, seal_body(s, xml.as_bytes())),
            None => (SOAP_TYPE, xml.as_bytes().to_vec()),
        };
        let res = self
            .send(self.basic.clone(), Some(content_type), body.into())
            .await?;
        let status = res.status().as_u16();
        let sealed = res
            .headers()
            .get(hyper::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("HTTP-SPNEGO-session-encrypted"));
        let timeout = self.timeout;
        let bytes = tokio::time::timeout(timeout, res.into_body().collect())
            .await
            .map_err(|_| TransportError::Timeout(timeout))??
            .to_bytes();
        if status == 401 {
            return Err(TransportError::Rejected);
        }
        let text = match (sealed, self.session.as_mut()) {
            (true, Some(s)) => unseal_body(s, &bytes)?,
            (true, None) => return Err(TransportError::Sealed("sealed without a session")),
            (false, _) => bytes.to_vec(),
        };
        Ok((status, String::from_utf8_lossy(&text).into_owned()))
    }
}

/// Now as a FILETIME, NTLM's clock: 100 ns ticks since 1601.
pub fn filetime_now() -> u64 {
    let unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (unix.as_nanos() / 100) as u64 + 116_444_736_000_000_000
}

/// `plain` sealed, in the multipart body Windows and pywinrm exchange.
pub fn seal_body(session: &mut ntlm::Session, plain: &[u8]) -> Vec<u8> {
    let (sig, sealed) = session.seal(plain);
    let mut body = Vec::with_capacity(plain.len() + 256);
    body.extend(BOUNDARY);
    body.extend(b"\tContent-Type: application/HTTP-SPNEGO-session-encrypted\r\n");
    body.extend(
        format!(
            "\tOriginalContent: type={SOAP_TYPE};Length={}\r\n",
            plain.len()
        )
        .as_bytes(),
    );
    body.extend(BOUNDARY);
    body.extend(OCTETS);
    body.extend(16u32.to_le_bytes());
    body.extend(sig);
    body.extend(sealed);
    body.extend(END);
    body
}

/// The plain text of a sealed multipart body, its signature and length checked.
pub fn unseal_body(session: &mut ntlm::Session, body: &[u8]) -> Result<Vec<u8>, TransportError> {
    let find = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).position(|w| w == needle);
    let len_at = find(body, b"Length=").ok_or(TransportError::Sealed("no Length"))? + 7;
    let len_end = find(&body[len_at..], b"\r\n").ok_or(TransportError::Sealed("no Length"))?;
    let length: usize = std::str::from_utf8(&body[len_at..len_at + len_end])
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or(TransportError::Sealed("a Length that is not a number"))?;
    let start =
        find(body, OCTETS).ok_or(TransportError::Sealed("no octet-stream part"))? + OCTETS.len();
    let rest = body[start..]
        .strip_suffix(END)
        .ok_or(TransportError::Sealed("no closing boundary"))?;
    if rest.len() < 4 + 16 || u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) != 16 {
        return Err(TransportError::Sealed("no signature"));
    }
    let (sig, sealed) = rest[4..].split_at(16);
    if sealed.len() != length {
        return Err(TransportError::Sealed("a length other than its Length"));
    }
    Ok(session.unseal(sig, sealed)?)
}

fn tls_config(tls: &Tls) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    Ok(match tls {
        Tls::NoVerify => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
            .with_no_client_auth(),
        Tls::Verify(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            match ca {
                Some(path) => {
                    use rustls::pki_types::pem::PemObject;
                    let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                        .map_err(|e| format!("winrm-certpath {}: {e}", path.display()))?;
                    for c in certs {
                        let c = c.map_err(|e| format!("winrm-certpath {}: {e}", path.display()))?;
                        roots.add(c).map_err(|e| e.to_string())?;
                    }
                }
                None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    })
}

/// `winrm-nossl=true`, as pywinrm's `server_cert_validation=ignore`:
/// signatures are still checked, the chain and the name are not.
#[derive(Debug)]
struct NoVerify(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_body_reads_back_and_a_cut_one_does_not() {
        let key = [9; 16];
        let (mut client, mut server) = (ntlm::Session::client(key), ntlm::Session::server(key));
        let body = seal_body(&mut client, b"<s:Envelope/>");
        assert!(body.starts_with(BOUNDARY));
        assert_eq!(unseal_body(&mut server, &body).unwrap(), b"<s:Envelope/>");
        let body = seal_body(&mut client, b"second");
        assert!(matches!(
            unseal_body(&mut server, &body[..body.len() - 3]),
            Err(TransportError::Sealed("no closing boundary"))
        ));
    }
}
