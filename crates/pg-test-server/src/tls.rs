//! The certificate files of a TLS test server (feature `tls`): made by
//! the shared `test-process` crate.

pub use test_process::TlsFiles;

/// Generates the CA and server certificate in `dir`.
pub(crate) fn generate(dir: &std::path::Path) -> std::io::Result<TlsFiles> {
    test_process::tls::generate(dir, "pg-test-server")
}
