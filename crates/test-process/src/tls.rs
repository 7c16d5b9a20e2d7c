//! A throwaway CA and server certificate for a TLS-only test server
//! (feature `tls`, generated with rcgen).

use std::path::PathBuf;

/// The certificate files of a TLS test server, all inside its directory.
///
/// The server certificate is valid for `127.0.0.1` and `localhost` and is
/// signed by a CA generated for this server alone: trust
/// [`ca_cert_pem`](Self::ca_cert_pem) in the client. The server asks
/// clients for no certificate, so none is generated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// Path of the CA certificate (PEM) that signed the server certificate
    /// (a PostgreSQL client's `sslrootcert`).
    pub ca_cert: PathBuf,
    /// The CA certificate, PEM-encoded: the root a client must trust.
    pub ca_cert_pem: Vec<u8>,
    /// Path of the server certificate (PEM).
    pub server_cert: PathBuf,
    /// Path of the server's private key (PKCS#8 PEM, mode 0600: PostgreSQL
    /// refuses a key others can read).
    pub server_key: PathBuf,
    /// Path of a second CA certificate (PEM) that signed nothing this server
    /// presents: for tests that a client trusting only it is refused.
    pub other_ca_cert: PathBuf,
    /// The second, untrusted CA certificate, PEM-encoded.
    pub other_ca_cert_pem: Vec<u8>,
}

#[cfg(feature = "tls")]
pub use certs::generate;

/// Without feature `tls` no harness asks for certificates; this only keeps
/// the harnesses' builders free of `cfg`s.
///
/// # Errors
///
/// Always: the crate was built without `tls`.
#[cfg(not(feature = "tls"))]
pub fn generate(_dir: &std::path::Path, harness: &str) -> std::io::Result<TlsFiles> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        format!("{harness} was built without its `tls` feature"),
    ))
}

#[cfg(feature = "tls")]
mod certs {
    use std::fs;
    use std::io;
    use std::os::unix::fs::PermissionsExt;
    use std::path::Path;

    use rcgen::{
        BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
        Issuer, KeyPair, KeyUsagePurpose,
    };

    use super::TlsFiles;

    fn tls_error(err: rcgen::Error) -> io::Error {
        io::Error::other(format!("generating a test certificate: {err}"))
    }

    fn new_ca(name: &str) -> io::Result<(Certificate, Issuer<'static, KeyPair>)> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(tls_error)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, name);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let key = KeyPair::generate().map_err(tls_error)?;
        let cert = params.self_signed(&key).map_err(tls_error)?;
        Ok((cert, Issuer::new(params, key)))
    }

    /// Generates a CA, a server certificate it signs, and an unrelated CA,
    /// named for `harness`, and writes them to `dir` (the key with mode
    /// 0600).
    ///
    /// # Errors
    ///
    /// When a certificate cannot be made or a file written.
    pub fn generate(dir: &Path, harness: &str) -> io::Result<TlsFiles> {
        let (ca, issuer) = new_ca(&format!("{harness} CA"))?;
        let (other_ca, _) = new_ca(&format!("{harness} untrusted CA"))?;

        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                .map_err(tls_error)?;
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{harness} server"));
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().map_err(tls_error)?;
        let server = params.signed_by(&key, &issuer).map_err(tls_error)?;

        let files = TlsFiles {
            ca_cert: dir.join("ca.crt"),
            ca_cert_pem: ca.pem().into_bytes(),
            server_cert: dir.join("server.crt"),
            server_key: dir.join("server.key"),
            other_ca_cert: dir.join("other-ca.crt"),
            other_ca_cert_pem: other_ca.pem().into_bytes(),
        };
        fs::write(&files.ca_cert, &files.ca_cert_pem)?;
        fs::write(&files.server_cert, server.pem())?;
        fs::write(&files.server_key, key.serialize_pem())?;
        fs::set_permissions(&files.server_key, fs::Permissions::from_mode(0o600))?;
        fs::write(&files.other_ca_cert, &files.other_ca_cert_pem)?;
        Ok(files)
    }
}
