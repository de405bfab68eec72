//! NTLMv2 (MS-NLMP) as WinRM speaks it over HTTP: the three messages,
//! the keys, and message sealing. Both directions of the codec are here
//! (a server reads what a client writes), so the test server's acceptor
//! checks this module's client with this module's parser, while pyspnego
//! (pywinrm's and pypsrp's NTLM) checks the parser and the keys from the
//! other side.
//!
//! Only what WinRM clients negotiate is built: extended session security,
//! 128-bit keys, key exchange, signing and sealing. No LM, no NTLMv1.

use hmac::{Hmac, Mac};
use md5::{Digest, Md5};
use rc4::{KeyInit, Rc4, StreamCipher};

const SIGNATURE: &[u8; 8] = b"NTLMSSP\0";

pub const UNICODE: u32 = 0x0000_0001;
pub const OEM: u32 = 0x0000_0002;
pub const REQUEST_TARGET: u32 = 0x0000_0004;
pub const SIGN: u32 = 0x0000_0010;
pub const SEAL: u32 = 0x0000_0020;
pub const NTLM: u32 = 0x0000_0200;
pub const ALWAYS_SIGN: u32 = 0x0000_8000;
pub const TARGET_TYPE_SERVER: u32 = 0x0002_0000;
pub const EXTENDED_SESSIONSECURITY: u32 = 0x0008_0000;
pub const TARGET_INFO: u32 = 0x0080_0000;
pub const VERSION: u32 = 0x0200_0000;
pub const NEGOTIATE_128: u32 = 0x2000_0000;
pub const KEY_EXCH: u32 = 0x4000_0000;
pub const NEGOTIATE_56: u32 = 0x8000_0000;

/// The flags a client asks for: pyspnego's, which Windows accepts
/// (`0xE2088237`).
pub const CLIENT_FLAGS: u32 = NEGOTIATE_56
    | KEY_EXCH
    | NEGOTIATE_128
    | VERSION
    | EXTENDED_SESSIONSECURITY
    | ALWAYS_SIGN
    | NTLM
    | SEAL
    | SIGN
    | REQUEST_TARGET
    | OEM
    | UNICODE;

/// A Version field: Windows 10, NTLM revision 15.
const OUR_VERSION: [u8; 8] = [10, 0, 0x61, 0x4a, 0, 0, 0, 0x0f];

pub mod av {
    pub const EOL: u16 = 0;
    pub const NB_COMPUTER_NAME: u16 = 1;
    pub const NB_DOMAIN_NAME: u16 = 2;
    pub const DNS_COMPUTER_NAME: u16 = 3;
    pub const FLAGS: u16 = 6;
    pub const TIMESTAMP: u16 = 7;
    pub const TARGET_NAME: u16 = 9;
    pub const CHANNEL_BINDINGS: u16 = 10;
    /// `MsvAvFlags`: the AUTHENTICATE message carries a MIC.
    pub const FLAG_MIC: u32 = 0x2;
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NtlmError {
    #[error("not an NTLM {0} message")]
    NotMessage(&'static str),
    #[error("the NTLM {0} message is cut short")]
    Short(&'static str),
    #[error("the server does not offer {0}, which WinRM's message encryption needs")]
    Lacks(&'static str),
    #[error("the NTLMv2 response does not match: wrong user name or password")]
    BadResponse,
    #[error("the AUTHENTICATE message's MIC does not match")]
    BadMic,
    #[error("a sealed message's signature does not match (sequence {0})")]
    BadSignature(u32),
}

type HmacMd5 = Hmac<Md5>;

pub fn hmac_md5(key: &[u8], parts: &[&[u8]]) -> [u8; 16] {
    let mut mac = <HmacMd5 as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

fn md5(parts: &[&[u8]]) -> [u8; 16] {
    let mut h = Md5::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

fn utf16le(s: &str) -> Vec<u8> {
    s.encode_utf16().flat_map(u16::to_le_bytes).collect()
}

fn from_utf16le(b: &[u8]) -> String {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    String::from_utf16_lossy(&units)
}

/// `NTOWFv2`: the user is upper-cased, the domain is not (MS-NLMP 3.3.2).
pub fn nt_owf_v2(password: &str, user: &str, domain: &str) -> [u8; 16] {
    use md4::Md4;
    let mut h = Md4::new();
    h.update(utf16le(password));
    let v1: [u8; 16] = h.finalize().into();
    hmac_md5(&v1, &[&utf16le(&(user.to_uppercase() + domain))])
}

fn rc4_once(key: &[u8; 16], data: &[u8]) -> Vec<u8> {
    let mut out = data.to_vec();
    Rc4::<rc4::consts::U16>::new(key.into()).apply_keystream(&mut out);
    out
}

/// `DOMAIN\user` splits; `user@domain` and a bare name keep an empty
/// domain, as pyspnego (and so pywinrm) sends them.
pub fn split_user(name: &str) -> (&str, &str) {
    match name.split_once('\\') {
        Some((domain, user)) => (domain, user),
        None => ("", name),
    }
}

/// An attribute-value pair of a CHALLENGE's target information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AvPair {
    pub id: u16,
    pub value: Vec<u8>,
}

pub fn encode_av(pairs: &[AvPair]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in pairs.iter().filter(|p| p.id != av::EOL) {
        out.extend(p.id.to_le_bytes());
        out.extend((p.value.len() as u16).to_le_bytes());
        out.extend(&p.value);
    }
    out.extend([0; 4]);
    out
}

pub fn decode_av(mut b: &[u8]) -> Vec<AvPair> {
    let mut pairs = Vec::new();
    while b.len() >= 4 {
        let id = u16::from_le_bytes([b[0], b[1]]);
        let len = u16::from_le_bytes([b[2], b[3]]) as usize;
        if id == av::EOL || b.len() < 4 + len {
            break;
        }
        pairs.push(AvPair {
            id,
            value: b[4..4 + len].to_vec(),
        });
        b = &b[4 + len..];
    }
    pairs
}

/// The av pair `value` as UTF-16 text, as names are sent.
pub fn av_text(value: &str) -> Vec<u8> {
    utf16le(value)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// The bytes a security buffer (len, max len, offset) at `at` points to.
fn field<'a>(msg: &'a [u8], at: usize, what: &'static str) -> Result<&'a [u8], NtlmError> {
    if msg.len() < at + 8 {
        return Err(NtlmError::Short(what));
    }
    let (len, offset) = (u16_at(msg, at) as usize, u32_at(msg, at + 4) as usize);
    msg.get(offset..offset + len).ok_or(NtlmError::Short(what))
}

fn check_header(msg: &[u8], kind: u32, what: &'static str, min: usize) -> Result<(), NtlmError> {
    if msg.len() < 12 || &msg[..8] != SIGNATURE || u32_at(msg, 8) != kind {
        return Err(NtlmError::NotMessage(what));
    }
    if msg.len() < min {
        return Err(NtlmError::Short(what));
    }
    Ok(())
}

/// Lays out a message: its fixed part, then each payload behind it, with
/// a security buffer for each at the offsets given.
struct Layout {
    fixed: Vec<u8>,
    payload: Vec<u8>,
}

impl Layout {
    fn new(kind: u32, fixed_len: usize) -> Layout {
        let mut fixed = vec![0; fixed_len];
        fixed[..8].copy_from_slice(SIGNATURE);
        fixed[8..12].copy_from_slice(&kind.to_le_bytes());
        Layout {
            fixed,
            payload: Vec::new(),
        }
    }

    fn put(&mut self, at: usize, value: &[u8]) {
        let offset = (self.fixed.len() + self.payload.len()) as u32;
        let len = value.len() as u16;
        self.fixed[at..at + 2].copy_from_slice(&len.to_le_bytes());
        self.fixed[at + 2..at + 4].copy_from_slice(&len.to_le_bytes());
        self.fixed[at + 4..at + 8].copy_from_slice(&offset.to_le_bytes());
        self.payload.extend(value);
    }

    fn set(&mut self, at: usize, value: &[u8]) {
        self.fixed[at..at + value.len()].copy_from_slice(value);
    }

    fn bytes(self) -> Vec<u8> {
        [self.fixed, self.payload].concat()
    }
}

/// The NEGOTIATE message a client opens with.
pub fn negotiate() -> Vec<u8> {
    let mut m = Layout::new(1, 40);
    m.set(12, &CLIENT_FLAGS.to_le_bytes());
    m.put(16, &[]);
    m.put(24, &[]);
    m.set(32, &OUR_VERSION);
    m.bytes()
}

/// The flags a NEGOTIATE message asks for.
pub fn negotiate_flags(msg: &[u8]) -> Result<u32, NtlmError> {
    check_header(msg, 1, "NEGOTIATE", 16)?;
    Ok(u32_at(msg, 12))
}

/// A CHALLENGE message: the server's flags, its nonce, and its target
/// information.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Challenge {
    pub flags: u32,
    pub target_name: String,
    pub server_challenge: [u8; 8],
    pub target_info: Vec<AvPair>,
}

impl Challenge {
    pub fn parse(msg: &[u8]) -> Result<Challenge, NtlmError> {
        const WHAT: &str = "CHALLENGE";
        check_header(msg, 2, WHAT, 48)?;
        let flags = u32_at(msg, 20);
        let mut server_challenge = [0; 8];
        server_challenge.copy_from_slice(&msg[24..32]);
        Ok(Challenge {
            flags,
            target_name: from_utf16le(field(msg, 12, WHAT)?),
            server_challenge,
            target_info: decode_av(field(msg, 40, WHAT)?),
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut m = Layout::new(2, 56);
        m.put(12, &utf16le(&self.target_name));
        m.set(20, &self.flags.to_le_bytes());
        m.set(24, &self.server_challenge);
        m.put(40, &encode_av(&self.target_info));
        m.set(48, &OUR_VERSION);
        m.bytes()
    }

    fn timestamp(&self) -> Option<[u8; 8]> {
        self.target_info
            .iter()
            .find(|p| p.id == av::TIMESTAMP && p.value.len() == 8)
            .map(|p| p.value.clone().try_into().expect("length checked"))
    }
}

/// An AUTHENTICATE message, as read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authenticate {
    pub flags: u32,
    pub domain: String,
    pub user: String,
    pub workstation: String,
    pub nt_response: Vec<u8>,
    pub encrypted_session_key: Vec<u8>,
    pub mic: Option<[u8; 16]>,
    /// The message with its MIC zeroed, over which the MIC is computed.
    pub without_mic: Vec<u8>,
}

const MIC_AT: usize = 72;

impl Authenticate {
    pub fn parse(msg: &[u8]) -> Result<Authenticate, NtlmError> {
        const WHAT: &str = "AUTHENTICATE";
        check_header(msg, 3, WHAT, 64)?;
        let text = |at| field(msg, at, WHAT).map(from_utf16le);
        let nt_response = field(msg, 20, WHAT)?.to_vec();
        // The blob's pairs say whether a MIC follows the Version field.
        let has_mic = nt_response.len() > 44
            && decode_av(&nt_response[44..]).iter().any(|p| {
                p.id == av::FLAGS && p.value.len() == 4 && u32_at(&p.value, 0) & av::FLAG_MIC != 0
            });
        let mut without_mic = msg.to_vec();
        let mic = if has_mic && msg.len() >= MIC_AT + 16 {
            let mut m = [0; 16];
            m.copy_from_slice(&msg[MIC_AT..MIC_AT + 16]);
            without_mic[MIC_AT..MIC_AT + 16].fill(0);
            Some(m)
        } else {
            None
        };
        Ok(Authenticate {
            flags: u32_at(msg, 60),
            domain: text(28)?,
            user: text(36)?,
            workstation: text(44)?,
            nt_response,
            encrypted_session_key: field(msg, 52, WHAT)?.to_vec(),
            mic,
            without_mic,
        })
    }

    /// What the acceptor does with the user's password: checks the
    /// NTLMv2 response and the MIC, and gives the session's keys.
    pub fn accept(
        &self,
        password: &str,
        negotiate: &[u8],
        challenge: &Challenge,
        challenge_bytes: &[u8],
    ) -> Result<[u8; 16], NtlmError> {
        if self.nt_response.len() < 16 + 28 {
            return Err(NtlmError::BadResponse);
        }
        let owf = nt_owf_v2(password, &self.user, &self.domain);
        let (proof, blob) = self.nt_response.split_at(16);
        let expected = hmac_md5(&owf, &[&challenge.server_challenge, blob]);
        if proof != expected {
            return Err(NtlmError::BadResponse);
        }
        let base = hmac_md5(&owf, &[proof]);
        let exported = if self.flags & KEY_EXCH != 0 && self.encrypted_session_key.len() == 16 {
            rc4_once(&base, &self.encrypted_session_key)
                .try_into()
                .expect("16 bytes in, 16 out")
        } else {
            base
        };
        if let Some(mic) = self.mic {
            let want = hmac_md5(&exported, &[negotiate, challenge_bytes, &self.without_mic]);
            if mic != want {
                return Err(NtlmError::BadMic);
            }
        }
        Ok(exported)
    }
}

/// What a client is given to answer a challenge with.
pub struct Credentials<'a> {
    pub user: &'a str,
    pub domain: &'a str,
    pub password: &'a str,
    pub workstation: &'a str,
    /// `MsvAvTargetName`, as `HTTP/host`.
    pub target: &'a str,
    /// The MD5 of the TLS channel bindings, over HTTPS.
    pub channel_bindings: Option<[u8; 16]>,
}

/// A client's answer to `challenge`: the AUTHENTICATE message and the
/// session key. `random` gives the client challenge and the exported
/// session key; a FILETIME `now` is used when the server sends none.
pub fn authenticate(
    creds: &Credentials<'_>,
    negotiate: &[u8],
    challenge_bytes: &[u8],
    random: [u8; 24],
    now: u64,
) -> Result<(Vec<u8>, [u8; 16]), NtlmError> {
    let challenge = Challenge::parse(challenge_bytes)?;
    for (flag, what) in [
        (EXTENDED_SESSIONSECURITY, "extended session security"),
        (SEAL, "sealing"),
        (NEGOTIATE_128, "128-bit keys"),
        (KEY_EXCH, "key exchange"),
    ] {
        if challenge.flags & flag == 0 {
            return Err(NtlmError::Lacks(what));
        }
    }
    let flags = challenge.flags & (CLIENT_FLAGS | TARGET_INFO) & !OEM;
    let (client_challenge, session_key) = random.split_at(8);
    let timestamp = challenge.timestamp();
    let mut pairs: Vec<AvPair> = challenge
        .target_info
        .iter()
        .filter(|p| ![av::FLAGS, av::TARGET_NAME, av::CHANNEL_BINDINGS].contains(&p.id))
        .cloned()
        .collect();
    if timestamp.is_some() {
        pairs.push(AvPair {
            id: av::FLAGS,
            value: av::FLAG_MIC.to_le_bytes().to_vec(),
        });
    }
    pairs.push(AvPair {
        id: av::CHANNEL_BINDINGS,
        value: creds.channel_bindings.unwrap_or_default().to_vec(),
    });
    pairs.push(AvPair {
        id: av::TARGET_NAME,
        value: utf16le(creds.target),
    });
    let mut blob = vec![1, 1, 0, 0, 0, 0, 0, 0];
    blob.extend(timestamp.unwrap_or(now.to_le_bytes()));
    blob.extend(client_challenge);
    blob.extend([0; 4]);
    blob.extend(encode_av(&pairs));
    blob.extend([0; 4]);

    let owf = nt_owf_v2(creds.password, creds.user, creds.domain);
    let proof = hmac_md5(&owf, &[&challenge.server_challenge, &blob]);
    let base = hmac_md5(&owf, &[&proof]);
    let exported: [u8; 16] = session_key.try_into().expect("16 bytes");
    let encrypted = rc4_once(&base, &exported);
    let lm = match timestamp {
        // With a MIC the LM response is zeros (MS-NLMP 3.1.5.1.2).
        Some(_) => vec![0; 24],
        None => {
            let owf_lm = owf;
            [
                &hmac_md5(&owf_lm, &[&challenge.server_challenge, client_challenge])[..],
                client_challenge,
            ]
            .concat()
        }
    };
    let mut m = Layout::new(3, 88);
    m.put(12, &lm);
    m.put(20, &[&proof[..], &blob].concat());
    m.put(28, &utf16le(creds.domain));
    m.put(36, &utf16le(creds.user));
    m.put(44, &utf16le(creds.workstation));
    m.put(52, &encrypted);
    m.set(60, &flags.to_le_bytes());
    m.set(64, &OUR_VERSION);
    let mut msg = m.bytes();
    if timestamp.is_some() {
        let mic = hmac_md5(&exported, &[negotiate, challenge_bytes, &msg]);
        msg[MIC_AT..MIC_AT + 16].copy_from_slice(&mic);
    }
    Ok((msg, exported))
}

/// The MD5 of the channel bindings of a TLS server certificate
/// (`tls-server-end-point`, RFC 5929 §4.1), for `MsvAvChannelBindings`:
/// the certificate hashed with its signature's hash, SHA-256 for one
/// signed with MD5 or SHA-1.
pub fn channel_bindings(certificate_der: &[u8]) -> [u8; 16] {
    use sha2::Digest as _;
    let hash = match signature_hash(certificate_der) {
        Hash::Sha384 => sha2::Sha384::digest(certificate_der).to_vec(),
        Hash::Sha512 => sha2::Sha512::digest(certificate_der).to_vec(),
        Hash::Sha256 => sha2::Sha256::digest(certificate_der).to_vec(),
    };
    let app = [b"tls-server-end-point:".as_slice(), &hash].concat();
    let mut gss = vec![0; 16];
    gss.extend((app.len() as u32).to_le_bytes());
    gss.extend(app);
    md5(&[&gss])
}

enum Hash {
    Sha256,
    Sha384,
    Sha512,
}

/// The hash of a certificate's signature algorithm, by its OID (RSA
/// PKCS#1 and ECDSA), found in the DER. The algorithm is named twice in
/// a certificate, and no other field holds these OIDs.
fn signature_hash(der: &[u8]) -> Hash {
    const RSA: [u8; 8] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01];
    const ECDSA: [u8; 7] = [0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03];
    let oid = |prefix: &[u8], last: u8| {
        let mut v = vec![0x06, prefix.len() as u8 + 1];
        v.extend(prefix);
        v.push(last);
        v
    };
    let has = |needle: Vec<u8>| der.windows(needle.len()).any(|w| w == needle.as_slice());
    if has(oid(&RSA, 12)) || has(oid(&ECDSA, 3)) {
        Hash::Sha384
    } else if has(oid(&RSA, 13)) || has(oid(&ECDSA, 4)) {
        Hash::Sha512
    } else {
        Hash::Sha256
    }
}

/// One direction of a sealed session: its RC4 stream, signing key and
/// sequence number.
struct Direction {
    rc4: Rc4<rc4::consts::U16>,
    sign_key: [u8; 16],
    seq: u32,
}

impl Direction {
    fn new(exported: &[u8; 16], name: &str) -> Direction {
        let magic = |what: &str| format!("session key to {name} {what} key magic constant\0");
        let seal_key = md5(&[exported, magic("sealing").as_bytes()]);
        Direction {
            rc4: Rc4::new((&seal_key).into()),
            sign_key: md5(&[exported, magic("signing").as_bytes()]),
            seq: 0,
        }
    }

    fn checksum(&mut self, seq: u32, plain: &[u8]) -> [u8; 8] {
        let mut cks: [u8; 8] = hmac_md5(&self.sign_key, &[&seq.to_le_bytes(), plain])[..8]
            .try_into()
            .expect("8 bytes");
        self.rc4.apply_keystream(&mut cks);
        cks
    }
}

/// Sealing and unsealing for one side of an authenticated connection.
pub struct Session {
    out: Direction,
    inn: Direction,
}

const CLIENT_TO_SERVER: &str = "client-to-server";
const SERVER_TO_CLIENT: &str = "server-to-client";

impl Session {
    pub fn client(exported: [u8; 16]) -> Session {
        Session {
            out: Direction::new(&exported, CLIENT_TO_SERVER),
            inn: Direction::new(&exported, SERVER_TO_CLIENT),
        }
    }

    pub fn server(exported: [u8; 16]) -> Session {
        Session {
            out: Direction::new(&exported, SERVER_TO_CLIENT),
            inn: Direction::new(&exported, CLIENT_TO_SERVER),
        }
    }

    /// `(signature, ciphertext)` for `plain`.
    pub fn seal(&mut self, plain: &[u8]) -> ([u8; 16], Vec<u8>) {
        let mut sealed = plain.to_vec();
        self.out.rc4.apply_keystream(&mut sealed);
        let seq = self.out.seq;
        self.out.seq += 1;
        let cks = self.out.checksum(seq, plain);
        let mut sig = [0; 16];
        sig[0] = 1;
        sig[4..12].copy_from_slice(&cks);
        sig[12..].copy_from_slice(&seq.to_le_bytes());
        (sig, sealed)
    }

    pub fn unseal(&mut self, signature: &[u8], sealed: &[u8]) -> Result<Vec<u8>, NtlmError> {
        let mut plain = sealed.to_vec();
        self.inn.rc4.apply_keystream(&mut plain);
        let seq = self.inn.seq;
        self.inn.seq += 1;
        let cks = self.inn.checksum(seq, &plain);
        if signature.len() != 16
            || signature[..4] != [1, 0, 0, 0]
            || signature[4..12] != cks
            || u32_at(signature, 12) != seq
        {
            return Err(NtlmError::BadSignature(seq));
        }
        Ok(plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// MS-NLMP 4.2.4.1.1: NTOWFv2("Password", "User", "Domain").
    #[test]
    fn nt_owf_v2_matches_the_specification() {
        assert_eq!(
            nt_owf_v2("Password", "User", "Domain"),
            [
                0x0c, 0x86, 0x8a, 0x40, 0x3b, 0xfd, 0x7a, 0x93, 0xa3, 0x00, 0x1e, 0xf2, 0x2e, 0xf0,
                0x2e, 0x3f
            ]
        );
    }

    /// MS-NLMP 4.2.4.4: the sealing key and signature of "Plaintext"
    /// with the example's exported session key (`55` × 16) and seq 0.
    #[test]
    fn sealing_matches_the_specification() {
        let mut client = Session::client([0x55; 16]);
        let plain = utf16le("Plaintext");
        let (sig, sealed) = client.seal(&plain);
        assert_eq!(
            sealed,
            [
                0x54, 0xe5, 0x01, 0x65, 0xbf, 0x19, 0x36, 0xdc, 0x99, 0x60, 0x20, 0xc1, 0x81, 0x1b,
                0x0f, 0x06, 0xfb, 0x5f
            ]
        );
        assert_eq!(
            sig,
            [
                0x01, 0x00, 0x00, 0x00, 0x7f, 0xb3, 0x8e, 0xc5, 0xc5, 0x5d, 0x49, 0x76, 0x00, 0x00,
                0x00, 0x00
            ]
        );
    }

    fn challenge() -> Challenge {
        Challenge {
            flags: CLIENT_FLAGS | TARGET_INFO | TARGET_TYPE_SERVER,
            target_name: "WINHOST".into(),
            server_challenge: [1, 2, 3, 4, 5, 6, 7, 8],
            target_info: vec![
                AvPair {
                    id: av::NB_COMPUTER_NAME,
                    value: av_text("WINHOST"),
                },
                AvPair {
                    id: av::TIMESTAMP,
                    value: 133_000_000_000_000_000u64.to_le_bytes().to_vec(),
                },
            ],
        }
    }

    /// A client's AUTHENTICATE is accepted with the right password and
    /// not with another, and both sides then seal for each other.
    #[test]
    fn an_acceptor_checks_the_password_and_both_sides_seal_for_each_other() {
        let neg = negotiate();
        assert_eq!(negotiate_flags(&neg), Ok(CLIENT_FLAGS));
        let ch = challenge();
        let ch_bytes = ch.to_bytes();
        assert_eq!(Challenge::parse(&ch_bytes).unwrap(), ch);
        let creds = Credentials {
            user: "Administrator",
            domain: "",
            password: "s3cret!",
            workstation: "RUNNER",
            target: "HTTP/winhost",
            channel_bindings: None,
        };
        let (auth, key) = authenticate(&creds, &neg, &ch_bytes, [7; 24], 0).unwrap();
        let read = Authenticate::parse(&auth).unwrap();
        assert_eq!(read.user, "Administrator");
        assert!(read.mic.is_some());
        assert_eq!(read.accept("s3cret!", &neg, &ch, &ch_bytes), Ok(key));
        assert_eq!(
            read.accept("wrong", &neg, &ch, &ch_bytes),
            Err(NtlmError::BadResponse)
        );
        // A MIC over another negotiate fails.
        assert_eq!(
            read.accept("s3cret!", b"other", &ch, &ch_bytes),
            Err(NtlmError::BadMic)
        );

        let (mut client, mut server) = (Session::client(key), Session::server(key));
        for text in [&b"<Envelope/>"[..], b"second", b""] {
            let (sig, sealed) = client.seal(text);
            assert_eq!(server.unseal(&sig, &sealed).unwrap(), text);
            let (sig, sealed) = server.seal(text);
            assert_eq!(client.unseal(&sig, &sealed).unwrap(), text);
        }
        // A tampered message is refused.
        let (sig, mut sealed) = client.seal(b"tamper");
        sealed[0] ^= 1;
        assert_eq!(
            server.unseal(&sig, &sealed),
            Err(NtlmError::BadSignature(3))
        );
    }

    #[test]
    fn a_challenge_without_sealing_is_refused() {
        let mut ch = challenge();
        ch.flags &= !SEAL;
        let creds = Credentials {
            user: "u",
            domain: "",
            password: "p",
            workstation: "",
            target: "HTTP/h",
            channel_bindings: None,
        };
        assert_eq!(
            authenticate(&creds, &negotiate(), &ch.to_bytes(), [0; 24], 0).err(),
            Some(NtlmError::Lacks("sealing"))
        );
        assert_eq!(split_user(r"CORP\alice"), ("CORP", "alice"));
        assert_eq!(split_user("alice@corp"), ("", "alice@corp"));
    }
}
