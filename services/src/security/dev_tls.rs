//! A development certificate authority for `outpost up`: one CA and one
//! server certificate for `localhost`/`127.0.0.1`, used by the NATS
//! WebSocket and leaf listeners and by the API. Made once, kept in the data
//! dir (keys mode 0600). Production deployments bring their own.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};

use crate::security::write_private;

/// Where the files are.
#[derive(Debug, Clone)]
pub struct DevTls {
    /// The CA certificate clients trust (not secret).
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum DevTlsError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Loads the dev CA and server certificate from `dir`, making them if any
/// file is missing.
pub fn ensure(dir: &Path) -> Result<DevTls, DevTlsError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DevTlsError::Io { path, source }
    };
    let files = DevTls {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    if files.ca.exists() && files.cert.exists() && files.key.exists() {
        return Ok(files);
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Outpost development CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;
    let mut params = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    params
        .distinguished_name
        .push(DnType::CommonName, "Outpost development server");
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let key = KeyPair::generate()?;
    let cert = params.signed_by(&key, &ca)?;
    write_private(&files.key, key.serialize_pem().as_bytes()).map_err(io(&files.key))?;
    std::fs::write(&files.cert, cert.pem()).map_err(io(&files.cert))?;
    std::fs::write(&files.ca, ca.pem()).map_err(io(&files.ca))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_a_ca_and_a_server_certificate_once() {
        let dir = tempfile::tempdir().unwrap();
        let a = ensure(dir.path()).unwrap();
        let ca = std::fs::read_to_string(&a.ca).unwrap();
        assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"));
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&a.key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let b = ensure(dir.path()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&b.ca).unwrap(),
            ca,
            "kept, not remade"
        );
    }
}
