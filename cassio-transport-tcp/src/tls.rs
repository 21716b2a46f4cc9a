//! Mutual TLS set-up shared by the TCP and QUIC transports.
//!
//! A cluster has one certificate authority (CA). Every node holds a
//! certificate signed by it; servers require and verify the client's
//! certificate against the CA, and clients verify the server's certificate
//! against the CA and the cluster-wide server name. Anyone without a
//! certificate from that CA cannot talk to a node as a peer.
//!
//! Every node certificate also names the node's id, as one subject
//! alternative name URI `cassio://node/<id>` (decimal, from 1; see
//! [`NODE_ID_URI_PREFIX`]). Both sides of every handshake require it (a
//! certificate from the right CA that names no id, or several, is refused),
//! and the transports hand the id to the host with every frame, so a peer
//! can speak only for the node its certificate names.
//!
//! Only TLS 1.3 with the `ring` provider is offered: QUIC requires 1.3, and
//! one configuration for both transports keeps their security identical.
//!
//! For development, [`generate_dev_ca`] and [`generate_node_cert`] write a CA
//! and node certificates with `rcgen`; production users bring their own
//! files in PEM form, issued with the node-id URI.

use cassio_core::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::WebPkiClientVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, DistinguishedName, OtherError,
    RootCertStore, ServerConfig, SignatureScheme,
};
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

/// The start of the subject alternative name URI that names a node's id in
/// its certificate: `cassio://node/42` names node 42. The id is written in
/// decimal without leading zeros or sign, and is never 0.
pub const NODE_ID_URI_PREFIX: &str = "cassio://node/";

/// The subject alternative name URI naming node `id`.
pub fn node_id_uri(id: NodeId) -> String {
    format!("{NODE_ID_URI_PREFIX}{}", id.0)
}

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

/// Why a peer certificate does not establish a node id; the handshake is
/// refused with it.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PeerIdError {
    /// The connection carried no certificate at all.
    #[error("the peer presented no certificate")]
    NoCertificate,
    /// The certificate names no node id.
    #[error("the certificate names no node id (expected a subject alternative name URI {NODE_ID_URI_PREFIX}<id>); reissue it with `cassio gen-certs` or your CA")]
    Missing,
    /// The certificate names more than one node id: it could speak for
    /// either, so it speaks for none.
    #[error("the certificate names more than one node id ({first} and {second})")]
    Ambiguous {
        /// One id.
        first: u64,
        /// Another.
        second: u64,
    },
    /// A node-id URI that is not `cassio://node/<decimal id from 1>`.
    #[error("the certificate's node-id URI {0:?} is not {NODE_ID_URI_PREFIX}<id> with a decimal id from 1")]
    Malformed(String),
    /// The certificate itself could not be parsed.
    #[error("the certificate cannot be parsed: {0}")]
    Unparsable(String),
}

/// rustls and quinn print a verifier's error with `Debug` inside their own
/// messages; printing the sentence there makes the refusal readable in logs.
impl std::fmt::Debug for PeerIdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// The node id a DER certificate names (see [`NODE_ID_URI_PREFIX`]).
pub fn node_id_of(cert: &CertificateDer<'_>) -> Result<NodeId, PeerIdError> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref())
        .map_err(|e| PeerIdError::Unparsable(e.to_string()))?;
    let san = parsed
        .subject_alternative_name()
        .map_err(|e| PeerIdError::Unparsable(e.to_string()))?;
    let mut found: Option<u64> = None;
    for name in san.iter().flat_map(|s| s.value.general_names.iter()) {
        let GeneralName::URI(uri) = name else {
            continue;
        };
        // Other URIs (SPIFFE ids, say) may share the certificate.
        let Some(digits) = uri.strip_prefix(NODE_ID_URI_PREFIX) else {
            continue;
        };
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0');
        let id = canonical
            .then(|| digits.parse::<u64>().ok())
            .flatten()
            .ok_or_else(|| PeerIdError::Malformed((*uri).to_owned()))?;
        match found {
            Some(first) if first != id => return Err(PeerIdError::Ambiguous { first, second: id }),
            _ => found = Some(id),
        }
    }
    found.map(NodeId).ok_or(PeerIdError::Missing)
}

/// The node id of an authenticated peer, from the certificate chain its
/// TLS session presented (leaf first).
pub fn peer_node_id(chain: Option<&[CertificateDer<'_>]>) -> Result<NodeId, PeerIdError> {
    let leaf = chain
        .and_then(|c| c.first())
        .ok_or(PeerIdError::NoCertificate)?;
    node_id_of(leaf)
}

fn refuse(e: PeerIdError) -> rustls::Error {
    rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
}

/// The CA's client verification, plus: the client certificate names a node id.
#[derive(Debug)]
struct NodeIdClientVerifier(Arc<dyn ClientCertVerifier>);

impl ClientCertVerifier for NodeIdClientVerifier {
    fn offer_client_auth(&self) -> bool {
        self.0.offer_client_auth()
    }

    fn client_auth_mandatory(&self) -> bool {
        self.0.client_auth_mandatory()
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.0.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        // The chain first: a foreign certificate is refused as foreign.
        let verified = self.0.verify_client_cert(end_entity, intermediates, now)?;
        node_id_of(end_entity).map_err(refuse)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// The CA's server verification, plus: the server certificate names a node id.
#[derive(Debug)]
struct NodeIdServerVerifier(Arc<dyn ServerCertVerifier>);

impl ServerCertVerifier for NodeIdServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verified = self.0.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )?;
        node_id_of(end_entity).map_err(refuse)?;
        Ok(verified)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }

    fn root_hint_subjects(&self) -> Option<&[DistinguishedName]> {
        self.0.root_hint_subjects()
    }
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
    /// `dir` for node `node_id` (`ca.pem`, `node<id>.pem`, `node<id>.key`).
    pub fn from_dev_dir(dir: &Path, node_id: NodeId) -> Self {
        let stem = dev_file_stem(node_id);
        TlsConfig::new(
            dir.join(CA_CERT_FILE),
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        )
    }

    /// The node id this node's own certificate names: the id the node must
    /// run with, since peers will hold it to that id.
    pub fn node_id(&self) -> Result<NodeId, TlsError> {
        let chain = read_certs(&self.cert)?;
        peer_node_id(Some(&chain)).map_err(|e| TlsError::Pem {
            path: self.cert.clone(),
            detail: e.to_string(),
        })
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
    /// Accepts peers whose certificate the cluster CA signed and names a
    /// node id.
    pub server: Arc<ServerConfig>,
    /// Presents our certificate and verifies the server against the CA
    /// (and that its certificate names a node id).
    pub client: Arc<ClientConfig>,
    /// The name servers are verified against.
    pub server_name: ServerName<'static>,
}

/// The crypto provider both transports use: `ring`, never `aws-lc-rs`.
pub fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

impl TlsMaterial {
    /// Builds mutual-TLS configurations from DER material. Both directions
    /// verify the peer's chain against `ca_certs` and require the peer
    /// certificate to name a node id.
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
        let verifier = Arc::new(NodeIdClientVerifier(verifier));
        let server_verifier =
            WebPkiServerVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| TlsError::Rustls(e.to_string()))?;
        let server_verifier = Arc::new(NodeIdServerVerifier(server_verifier));
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
            .dangerous()
            .with_custom_certificate_verifier(server_verifier)
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

/// The file name (without extension) of node `id`'s dev certificate and key.
fn dev_file_stem(id: NodeId) -> String {
    format!("node{}", id.0)
}

impl DevCa {
    /// The CA [`generate_dev_ca`] wrote into `dir`, if both of its files
    /// are there: more node certificates can be issued from it later.
    pub fn existing(dir: &Path) -> Option<DevCa> {
        let ca = DevCa {
            cert: dir.join(CA_CERT_FILE),
            key: dir.join(CA_KEY_FILE),
        };
        (ca.cert.is_file() && ca.key.is_file()).then_some(ca)
    }
}

/// Issues a certificate for node `node_id`, signed by the CA in `ca`, into
/// `dir` as `node<id>.pem` and `node<id>.key`. The certificate names the
/// node id (the URI [`node_id_uri`]), [`DEFAULT_SERVER_NAME`] and
/// `extra_names` (DNS names or IP addresses), and is valid for both server
/// and client authentication. Existing files are never overwritten.
pub fn generate_node_cert(
    ca: &DevCa,
    dir: &Path,
    node_id: NodeId,
    extra_names: &[String],
) -> Result<TlsConfig, TlsError> {
    if node_id.0 == 0 {
        return Err(TlsError::Generate(
            "node id 0 is not a valid node id".into(),
        ));
    }
    issue(ca, dir, &dev_file_stem(node_id), Some(node_id), extra_names)
}

/// Issues a certificate from `ca` that names no node id, into
/// `dir/<name>.pem` and `<name>.key`. Cassio's transports refuse it (a peer
/// must name its id); it exists so tests can show that, and it is what a
/// certificate issued for an older Cassio looks like.
pub fn generate_cert_without_node_id(
    ca: &DevCa,
    dir: &Path,
    name: &str,
    extra_names: &[String],
) -> Result<TlsConfig, TlsError> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(TlsError::Generate(format!(
            "certificate name {name:?} must be non-empty ASCII letters, digits, '-' or '_'"
        )));
    }
    issue(ca, dir, name, None, extra_names)
}

/// The certificate without a node id at `dir/<name>.pem`: issued by `ca`
/// the first time, reused after (tests bind many transports with it).
pub fn cert_without_node_id(ca: &DevCa, dir: &Path, name: &str) -> Result<TlsConfig, TlsError> {
    let cert = dir.join(format!("{name}.pem"));
    let key = dir.join(format!("{name}.key"));
    if cert.exists() && key.exists() {
        return Ok(TlsConfig::new(ca.cert.clone(), cert, key));
    }
    generate_cert_without_node_id(ca, dir, name, &[])
}

fn issue(
    ca: &DevCa,
    dir: &Path,
    stem: &str,
    node_id: Option<NodeId>,
    extra_names: &[String],
) -> Result<TlsConfig, TlsError> {
    use rcgen::{
        CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, SanType,
    };
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
    let common_name = match node_id {
        Some(id) => {
            let uri = node_id_uri(id).try_into().map_err(gen_err)?;
            params.subject_alt_names.push(SanType::URI(uri));
            format!("cassio node {id}")
        }
        None => format!("cassio {stem} (no node id)"),
    };
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
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
        dir.join(format!("{stem}.pem")),
        dir.join(format!("{stem}.key")),
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
        let cfg = generate_node_cert(&ca, dir.path(), NodeId(1), &["127.0.0.1".into()]).unwrap();
        assert_eq!(cfg, TlsConfig::from_dev_dir(dir.path(), NodeId(1)));
        assert_eq!(cfg.node_id().unwrap(), NodeId(1));
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
        let cfg = generate_node_cert(&ca, dir.path(), NodeId(1), &[]).unwrap();
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
        let nowhere = DevCa {
            cert: missing.clone(),
            key: missing,
        };
        let bad_name = generate_cert_without_node_id(&nowhere, dir.path(), "../evil", &[]);
        assert!(matches!(bad_name, Err(TlsError::Generate(_))));
        let zero = generate_node_cert(&nowhere, dir.path(), NodeId(0), &[]);
        assert!(matches!(zero, Err(TlsError::Generate(_))));
    }

    #[test]
    fn key_must_match_certificate() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_dev_ca(dir.path(), "test").unwrap();
        let a = generate_node_cert(&ca, dir.path(), NodeId(1), &[]).unwrap();
        let b = generate_node_cert(&ca, dir.path(), NodeId(2), &[]).unwrap();
        let mixed = TlsConfig::new(a.ca_cert, a.cert, b.key);
        assert!(matches!(mixed.load(), Err(TlsError::Rustls(_))));
    }

    /// A self-signed certificate with the given SAN URIs, to feed the parser.
    fn cert_with_uris(uris: &[&str]) -> CertificateDer<'static> {
        let mut params = rcgen::CertificateParams::new(vec!["cassio-node".to_owned()]).unwrap();
        for u in uris {
            params
                .subject_alt_names
                .push(rcgen::SanType::URI((*u).try_into().unwrap()));
        }
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn node_id_uri_is_parsed_strictly() {
        assert_eq!(node_id_uri(NodeId(42)), "cassio://node/42");
        let ok = cert_with_uris(&["spiffe://example/x", "cassio://node/42"]);
        assert_eq!(node_id_of(&ok), Ok(NodeId(42)));
        let max = format!("cassio://node/{}", u64::MAX);
        assert_eq!(node_id_of(&cert_with_uris(&[&max])), Ok(NodeId(u64::MAX)));
        // The same id twice is not ambiguous.
        let twice = cert_with_uris(&["cassio://node/7", "cassio://node/7"]);
        assert_eq!(node_id_of(&twice), Ok(NodeId(7)));
        assert_eq!(
            node_id_of(&cert_with_uris(&["https://cassio/node/1"])),
            Err(PeerIdError::Missing)
        );
        assert_eq!(node_id_of(&cert_with_uris(&[])), Err(PeerIdError::Missing));
        for bad in [
            "cassio://node/",
            "cassio://node/0",
            "cassio://node/007",
            "cassio://node/+7",
            "cassio://node/7/x",
            "cassio://node/18446744073709551616",
        ] {
            assert_eq!(
                node_id_of(&cert_with_uris(&[bad])),
                Err(PeerIdError::Malformed(bad.to_owned())),
                "{bad}"
            );
        }
        assert_eq!(
            node_id_of(&cert_with_uris(&["cassio://node/1", "cassio://node/2"])),
            Err(PeerIdError::Ambiguous {
                first: 1,
                second: 2
            })
        );
        assert!(matches!(
            node_id_of(&CertificateDer::from(vec![0x30, 0x03, 0x01])),
            Err(PeerIdError::Unparsable(_))
        ));
        assert_eq!(peer_node_id(None), Err(PeerIdError::NoCertificate));
        assert_eq!(peer_node_id(Some(&[])), Err(PeerIdError::NoCertificate));
    }

    #[test]
    fn issued_certificates_name_their_node_and_more_can_be_issued_later() {
        let dir = tempfile::tempdir().unwrap();
        assert!(DevCa::existing(dir.path()).is_none());
        generate_dev_ca(dir.path(), "test").unwrap();
        let ca = DevCa::existing(dir.path()).unwrap();
        let a = generate_node_cert(&ca, dir.path(), NodeId(3), &[]).unwrap();
        let b = generate_node_cert(&ca, dir.path(), NodeId(1 << 40), &[]).unwrap();
        assert_eq!(a.node_id().unwrap(), NodeId(3));
        assert_eq!(b.node_id().unwrap(), NodeId(1 << 40));
        // An existing certificate is never overwritten.
        let again = generate_node_cert(&ca, dir.path(), NodeId(3), &[]);
        assert!(matches!(again, Err(TlsError::Io { .. })));
        let anon = generate_cert_without_node_id(&ca, dir.path(), "anon", &[]).unwrap();
        match anon.node_id() {
            Err(TlsError::Pem { detail, .. }) => assert!(detail.contains("no node id"), "{detail}"),
            other => panic!("expected a refusal, got {other:?}"),
        }
        // Both load: whether a peer is accepted is decided in the handshake.
        anon.load().unwrap();
    }

    /// Runs a TLS handshake in memory; returns the first error each side
    /// hit (`None` if it completed).
    fn handshake(
        client: &TlsMaterial,
        server: &TlsMaterial,
    ) -> (Option<rustls::Error>, Option<rustls::Error>) {
        let mut c =
            rustls::ClientConnection::new(client.client.clone(), client.server_name.clone())
                .unwrap();
        let mut s = rustls::ServerConnection::new(server.server.clone()).unwrap();
        let (mut c_err, mut s_err) = (None, None);
        for _ in 0..10 {
            let mut buf = Vec::new();
            c.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                s.read_tls(&mut buf.as_slice()).unwrap();
                if let Err(e) = s.process_new_packets() {
                    s_err.get_or_insert(e);
                }
            }
            let mut buf = Vec::new();
            s.write_tls(&mut buf).unwrap();
            if !buf.is_empty() {
                c.read_tls(&mut buf.as_slice()).unwrap();
                if let Err(e) = c.process_new_packets() {
                    c_err.get_or_insert(e);
                }
            }
            if c_err.is_some() || s_err.is_some() {
                break;
            }
        }
        (c_err, s_err)
    }

    fn peer_id_error(e: &rustls::Error) -> Option<PeerIdError> {
        match e {
            rustls::Error::InvalidCertificate(CertificateError::Other(o)) => {
                o.0.downcast_ref::<PeerIdError>().cloned()
            }
            _ => None,
        }
    }

    #[test]
    fn the_handshake_refuses_a_certificate_without_node_id_with_a_typed_error() {
        let dir = tempfile::tempdir().unwrap();
        let ca = generate_dev_ca(dir.path(), "test").unwrap();
        let good = generate_node_cert(&ca, dir.path(), NodeId(1), &[])
            .unwrap()
            .load()
            .unwrap();
        let other = generate_node_cert(&ca, dir.path(), NodeId(2), &[])
            .unwrap()
            .load()
            .unwrap();
        let anon = generate_cert_without_node_id(&ca, dir.path(), "anon", &[])
            .unwrap()
            .load()
            .unwrap();
        let (c, s) = handshake(&other, &good);
        assert!(c.is_none() && s.is_none(), "{c:?} {s:?}");
        // As a client: the server refuses it.
        let (_, s) = handshake(&anon, &good);
        let s = s.expect("server accepted a client certificate without node id");
        assert_eq!(peer_id_error(&s), Some(PeerIdError::Missing), "{s}");
        assert!(s.to_string().contains("names no node id"), "{s}");
        // As a server: the client refuses it.
        let (c, _) = handshake(&good, &anon);
        let c = c.expect("client accepted a server certificate without node id");
        assert_eq!(peer_id_error(&c), Some(PeerIdError::Missing), "{c}");
    }
}
