//! Mutual TLS set-up shared by the TCP and QUIC transports.
//!
//! A cluster has one certificate authority (CA). Every node holds a
//! certificate signed by it; servers require and verify the client's
//! certificate against the CA, and clients verify the server's certificate
//! against the CA and the cluster-wide server name. Anyone without a
//! certificate from that CA cannot talk to a node as a peer.
//!
//! Only TLS 1.3 with the `ring` provider is offered: QUIC requires 1.3, and
//! one configuration for both transports keeps their security identical.
//!
//! For development, [`generate_dev_ca`] and [`generate_node_cert`] write a CA
//! and node certificates with `rcgen`; production users bring their own
//! files in PEM form.

use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use serde::{Deserialize, Serialize};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// The DNS name every node certificate carries and every client verifies,
/// unless configured otherwise. Peers are dialled by address, and any holder
/// of a certificate from the cluster's CA is a member, so one shared name is
/// the identity being checked.
pub const DEFAULT_SERVER_NAME: &str = "cassio-node";

/// The ALPN protocol both transports announce; a peer speaking something
/// else fails the TLS handshake instead of our own.
pub const ALPN: &[u8] = b"cassio/1";

/// File name of the CA certificate written by [`generate_dev_ca`].
pub const CA_CERT_FILE: &str = "ca.pem";
/// File name of the CA private key written by [`generate_dev_ca`].
pub const CA_KEY_FILE: &str = "ca.key";

/// Why TLS material could not be loaded or generated.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A file did not hold what it should (no certificate, no key, bad PEM).
    #[error("{path}: {detail}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
    /// rustls refused the material (e.g. the key does not match the certificate).
    #[error("rustls: {0}")]
    Rustls(String),
    /// Certificate generation failed.
    #[error("certificate generation: {0}")]
    Generate(String),
}

impl From<TlsError> for cassio_core::TransportError {
    fn from(e: TlsError) -> Self {
        cassio_core::TransportError::Tls(e.to_string())
    }
}

/// Where a node finds its TLS material: the same type configures TCP+TLS and
/// QUIC.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TlsConfig {
    /// PEM file with the cluster CA certificate(s) peers must be signed by.
    pub ca_cert: PathBuf,
    /// PEM file with this node's certificate chain (leaf first).
    pub cert: PathBuf,
    /// PEM file with this node's private key (PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// The name servers' certificates are checked against.
    #[serde(default = "default_server_name")]
    pub server_name: String,
}

fn default_server_name() -> String {
    DEFAULT_SERVER_NAME.to_owned()
}

impl TlsConfig {
    /// A configuration from three PEM files, with the default server name.
    pub fn new(
        ca_cert: impl Into<PathBuf>,
        cert: impl Into<PathBuf>,
        key: impl Into<PathBuf>,
    ) -> Self {
        TlsConfig {
            ca_cert: ca_cert.into(),
            cert: cert.into(),
            key: key.into(),
            server_name: default_server_name(),
        }
    }

    /// The files [`generate_dev_ca`] and [`generate_node_cert`] wrote into
    /// `dir` for node `node`.
    pub fn from_dev_dir(dir: &Path, node: &str) -> Self {
        TlsConfig::new(
            dir.join(CA_CERT_FILE),
            dir.join(format!("{node}.pem")),
            dir.join(format!("{node}.key")),
        )
    }

    /// Reads the files and builds the rustls server and client configurations.
    pub fn load(&self) -> Result<TlsMaterial, TlsError> {
        let roots = read_certs(&self.ca_cert)?;
        let chain = read_certs(&self.cert)?;
        let key = read_key(&self.key)?;
        TlsMaterial::from_parts(roots, chain, key, &self.server_name)
    }
}

/// Ready-to-use rustls configurations for one node.
#[derive(Clone, Debug)]
pub struct TlsMaterial {
    /// Accepts peers whose certificate the cluster CA signed.
    pub server: Arc<ServerConfig>,
    /// Presents our certificate and verifies the server against the CA.
    pub client: Arc<ClientConfig>,
    /// The name servers are verified against.
    pub server_name: ServerName<'static>,
}

/// The crypto provider both transports use: `ring`, never `aws-lc-rs`.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    /// Builds mutual-TLS configurations from DER material.
    pub fn from_parts(
        ca_certs: Vec<CertificateDer<'static>>,
        chain: Vec<CertificateDer<'static>>,
        key: PrivateKeyDer<'static>,
        server_name: &str,
    ) -> Result<Self, TlsError> {
        let provider = provider();
        let mut roots = RootCertStore::empty();
        for ca in ca_certs {
            roots
                .add(ca)
                .map_err(|e| TlsError::Rustls(format!("CA certificate: {e}")))?;
        }
        let roots = Arc::new(roots);
        let verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
            .build()
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_client_cert_verifier(verifier)
            .with_single_cert(chain.clone(), key.clone_key())
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        server.alpn_protocols = vec![ALPN.to_vec()];
        let mut client = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| TlsError::Rustls(e.to_string()))?
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .map_err(|e| TlsError::Rustls(e.to_string()))?;
        client.alpn_protocols = vec![ALPN.to_vec()];
        let server_name = ServerName::try_from(server_name.to_owned())
            .map_err(|e| TlsError::Rustls(format!("server name {server_name:?}: {e}")))?;
        Ok(TlsMaterial {
            server: Arc::new(server),
            client: Arc::new(client),
            server_name,
        })
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    fs::read(path).map_err(|source| TlsError::Io {
        path: path.to_owned(),
        source,
    })
}

/// Reads every certificate in a PEM file; an empty file is an error.
pub fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let bytes = read_file(path)?;
    let certs = rustls_pemfile::certs(&mut bytes.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            detail: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Pem {
            path: path.to_owned(),
            detail: "no certificate found".into(),
        });
    }
    Ok(certs)
}

/// Reads the first private key in a PEM file.
pub fn read_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let bytes = read_file(path)?;
    rustls_pemfile::private_key(&mut bytes.as_slice())
        .map_err(|e| TlsError::Pem {
            path: path.to_owned(),
            detail: e.to_string(),
        })?
        .ok_or_else(|| TlsError::Pem {
            path: path.to_owned(),
            detail: "no private key found".into(),
        })
}

/// Paths of a generated CA.
#[derive(Clone, Debug)]
pub struct DevCa {
    /// The CA certificate (world-readable).
    pub cert: PathBuf,
    /// The CA private key (owner-only).
    pub key: PathBuf,
}

fn gen_err(e: rcgen::Error) -> TlsError {
    TlsError::Generate(e.to_string())
}

/// Generates a development CA in `dir` (`ca.pem`, `ca.key`); refuses to
/// overwrite existing files so a CA key is never lost by accident.
pub fn generate_dev_ca(dir: &Path, cluster: &str) -> Result<DevCa, TlsError> {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    create_dir(dir)?;
    let mut params = CertificateParams::new(Vec::<String>::new()).map_err(gen_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("cassio dev CA for {cluster}"));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = params.self_signed(&key).map_err(gen_err)?;
    let out = DevCa {
        cert: dir.join(CA_CERT_FILE),
        key: dir.join(CA_KEY_FILE),
    };
    write_new(&out.key, key.serialize_pem().as_bytes(), true)?;
    write_new(&out.cert, cert.pem().as_bytes(), false)?;
    Ok(out)
}

/// Issues a certificate for node `node`, signed by the CA in `ca`, into
/// `dir` as `<node>.pem` and `<node>.key`. The certificate names
/// [`DEFAULT_SERVER_NAME`] plus `extra_names` (DNS names or IP addresses)
/// and is valid for both server and client authentication.
pub fn generate_node_cert(
    ca: &DevCa,
    dir: &Path,
    node: &str,
    extra_names: &[String],
) -> Result<TlsConfig, TlsError> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    };
    if node.is_empty()
        || !node
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(TlsError::Generate(format!(
            "node name {node:?} must be non-empty ASCII letters, digits, '-' or '_'"
        )));
    }
    create_dir(dir)?;
    let ca_cert_pem = String::from_utf8(read_file(&ca.cert)?).map_err(|e| TlsError::Pem {
        path: ca.cert.clone(),
        detail: e.to_string(),
    })?;
    let ca_key_pem = String::from_utf8(read_file(&ca.key)?).map_err(|e| TlsError::Pem {
        path: ca.key.clone(),
        detail: e.to_string(),
    })?;
    let ca_key = KeyPair::from_pem(&ca_key_pem).map_err(|e| TlsError::Pem {
        path: ca.key.clone(),
        detail: e.to_string(),
    })?;
    // Re-signing the parsed CA parameters with its own key yields an issuer
    // with the CA's exact subject and key, which is all the chain needs.
    let issuer = CertificateParams::from_ca_cert_pem(&ca_cert_pem)
        .map_err(|e| TlsError::Pem {
            path: ca.cert.clone(),
            detail: e.to_string(),
        })?
        .self_signed(&ca_key)
        .map_err(gen_err)?;

    let mut names = vec![DEFAULT_SERVER_NAME.to_owned()];
    names.extend(extra_names.iter().cloned());
    let mut params = CertificateParams::new(names).map_err(gen_err)?;
    params
        .distinguished_name
        .push(DnType::CommonName, format!("cassio node {node}"));
    params.is_ca = IsCa::NoCa;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let key = KeyPair::generate().map_err(gen_err)?;
    let cert = params.signed_by(&key, &issuer, &ca_key).map_err(gen_err)?;
    let config = TlsConfig::new(
        ca.cert.clone(),
        dir.join(format!("{node}.pem")),
        dir.join(format!("{node}.key")),
    );
    write_new(&config.key, key.serialize_pem().as_bytes(), true)?;
    write_new(&config.cert, cert.pem().as_bytes(), false)?;
    Ok(config)
}

fn create_dir(dir: &Path) -> Result<(), TlsError> {
    fs::create_dir_all(dir).map_err(|source| TlsError::Io {
        path: dir.to_owned(),
        source,
    })
}

/// Writes a new file; private keys are created owner-read/write only (0600)
/// from the start, so they are never briefly readable by others.
fn write_new(path: &Path, bytes: &[u8], private: bool) -> Result<(), TlsError> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(if private { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = private;
    let io = |source| TlsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut file = opts.open(path).map_err(io)?;
    file.write_all(bytes).map_err(io)?;
    file.sync_all().map_err(io)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;

    #[test]
    fn dev_ca_and_node_certs_load_into_rustls() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_dev_ca(dir.path(), "test").unwrap();
        let cfg = generate_node_cert(&ca, dir.path(), "n1", &["127.0.0.1".into()]).unwrap();
        assert_eq!(cfg, TlsConfig::from_dev_dir(dir.path(), "n1"));
        let material = cfg.load().unwrap();
        assert_eq!(material.server.alpn_protocols, vec![ALPN.to_vec()]);
        assert_eq!(
            material.server_name,
            ServerName::try_from(DEFAULT_SERVER_NAME).unwrap()
        );
    }

    #[cfg(unix)]
    #[test]
    fn keys_are_owner_only_and_certs_are_readable() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_dev_ca(dir.path(), "test").unwrap();
        let cfg = generate_node_cert(&ca, dir.path(), "n1", &[]).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&ca.key), 0o600);
        assert_eq!(mode(&cfg.key), 0o600);
        assert_eq!(mode(&ca.cert), 0o644);
        assert_eq!(mode(&cfg.cert), 0o644);
    }

    #[test]
    fn existing_ca_is_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        generate_dev_ca(dir.path(), "test").unwrap();
        let before = fs::read(dir.path().join(CA_KEY_FILE)).unwrap();
        let err = generate_dev_ca(dir.path(), "test").unwrap_err();
        assert!(matches!(err, TlsError::Io { .. }), "{err}");
        assert_eq!(fs::read(dir.path().join(CA_KEY_FILE)).unwrap(), before);
    }

    #[test]
    fn bad_files_give_typed_errors() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        fs::write(&junk, b"not a pem file").unwrap();
        assert!(matches!(read_certs(&junk), Err(TlsError::Pem { .. })));
        assert!(matches!(read_key(&junk), Err(TlsError::Pem { .. })));
        let missing = dir.path().join("missing.pem");
        assert!(matches!(read_certs(&missing), Err(TlsError::Io { .. })));
        let bad_name = generate_node_cert(
            &DevCa {
                cert: missing.clone(),
                key: missing,
            },
            dir.path(),
            "../evil",
            &[],
        );
        assert!(matches!(bad_name, Err(TlsError::Generate(_))));
    }

    #[test]
    fn key_must_match_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_dev_ca(dir.path(), "test").unwrap();
        let a = generate_node_cert(&ca, dir.path(), "a", &[]).unwrap();
        let b = generate_node_cert(&ca, dir.path(), "b", &[]).unwrap();
        let mixed = TlsConfig::new(a.ca_cert, a.cert, b.key);
        assert!(matches!(mixed.load(), Err(TlsError::Rustls(_))));
    }
}
