//! Self-signed server certificates for TLS tests.

use rcgen::{CertificateParams, DistinguishedName, DnType, KeyPair};

use crate::config::TlsIdentity;
use crate::error::SinkError;

/// Generates a self-signed certificate for `hostname`, also valid for
/// `localhost` and `127.0.0.1`.
///
/// The returned `cert_pem` is what a client uses as its CA certificate.
pub fn self_signed(hostname: &str) -> Result<TlsIdentity, SinkError> {
    let mut names = vec![hostname.to_string()];
    for extra in ["localhost", "127.0.0.1"] {
        if !names.iter().any(|n| n == extra) {
            names.push(extra.to_string());
        }
    }
    // rcgen turns names that parse as IP addresses into IP SANs.
    let mut params = CertificateParams::new(names)?;
    params.distinguished_name = DistinguishedName::new();
    params.distinguished_name.push(DnType::CommonName, hostname);
    let key = KeyPair::generate()?;
    let cert = params.self_signed(&key)?;
    Ok(TlsIdentity {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    })
}
