//! Client authentication and permissions on the client ports (RESP, HTTP,
//! native protocol).
//!
//! Users come from the config file (`[[users]]`, parsed in
//! [`crate::config`]): each has an argon2 password hash (made by
//! `cassio hash-password`), optionally an argon2 hash of a bearer token
//! (for HTTP `Authorization: Bearer USER:TOKEN`), an access level for every
//! keyspace (`read-write`, `read-only` or `none`) with per-keyspace
//! overrides, and whether it may use the admin routes (`admin = true`).
//!
//! Secrets are never kept: a hash is checked with argon2 (on a blocking
//! thread, at most [`MAX_CONCURRENT_VERIFIES`] at a time, so a flood of
//! guesses costs the node bounded CPU). A secret that verified is
//! remembered as its SHA-256 digest per user, so a client sending the same
//! password on every HTTP request pays argon2 once, not per request.
//!
//! A failed login never says whether the user exists: an unknown user is
//! checked against a dummy hash (same cost) and gets the same error as a
//! wrong password. Failures are counted in
//! `cassio_auth_failures_total{protocol}` and logged at `warn` at most
//! once per [`FAILURE_LOG_INTERVAL`] with their count since the last line.

use argon2::password_hash::{rand_core::OsRng, SaltString};
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use parking_lot::Mutex;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// What a user may do in a keyspace.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    /// Nothing: reads and writes are refused.
    None,
    /// Reads only.
    ReadOnly,
    /// Reads and writes.
    ReadWrite,
}

impl Access {
    /// Parses `read-write`, `read-only` or `none` (also with `_`).
    pub fn parse(text: &str) -> Option<Access> {
        match text.to_ascii_lowercase().replace('_', "-").as_str() {
            "read-write" | "rw" => Some(Access::ReadWrite),
            "read-only" | "ro" => Some(Access::ReadOnly),
            "none" => Some(Access::None),
            _ => None,
        }
    }

    /// The name as the config file spells it.
    pub fn name(self) -> &'static str {
        match self {
            Access::None => "none",
            Access::ReadOnly => "read-only",
            Access::ReadWrite => "read-write",
        }
    }
}

/// One user, as configured (hashes only, never a secret).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct User {
    /// The user name (no `:`, no whitespace).
    pub name: String,
    /// argon2 PHC string of the password (`None`: no password login).
    pub password_hash: Option<String>,
    /// argon2 PHC string of the bearer token (`None`: no token).
    pub token_hash: Option<String>,
    /// Access to keyspaces not listed in `keyspaces`.
    pub access: Access,
    /// Per-keyspace access, overriding `access`.
    pub keyspaces: BTreeMap<String, Access>,
    /// May use the HTTP admin routes (`/admin/*`).
    pub admin: bool,
}

impl User {
    /// This user's access to `keyspace`.
    pub fn access_to(&self, keyspace: &str) -> Access {
        self.keyspaces.get(keyspace).copied().unwrap_or(self.access)
    }
}

/// Which secret a client presents.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Secret {
    /// The password (RESP `AUTH`, HTTP Basic, the native handshake).
    Password,
    /// The bearer token (HTTP `Authorization: Bearer USER:TOKEN`).
    Token,
}

/// Why a request was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials were given on a port that needs them.
    #[error("authentication required")]
    Required,
    /// The user name and secret do not match a user (which of the two is
    /// wrong is deliberately not said).
    #[error("invalid username-password pair or user is disabled")]
    Invalid,
    /// The user is known but may not do this.
    #[error("user '{user}' may not {action} keyspace '{keyspace}' (its access there is {access})")]
    Forbidden {
        /// The user.
        user: String,
        /// `read` or `write`.
        action: &'static str,
        /// The keyspace.
        keyspace: String,
        /// The user's access level there.
        access: &'static str,
    },
    /// The user is known but is not an admin.
    #[error("user '{user}' may not use admin routes (needs admin = true)")]
    NotAdmin {
        /// The user.
        user: String,
    },
}

/// Password checks running at once; past it callers wait (bounds the CPU a
/// flood of guesses can take).
pub const MAX_CONCURRENT_VERIFIES: usize = 2;

/// Shortest interval between two `warn` lines about failed logins.
pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Hashes `secret` with argon2id and a random salt, as a PHC string for the
/// config file (what `cassio hash-password` prints).
pub fn hash_secret(secret: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(secret.as_bytes(), &salt)?
        .to_string())
}

/// Whether `hash` is a PHC string of an argon2 variant, with a reason when
/// it is not.
pub fn check_hash(hash: &str) -> Result<(), String> {
    let parsed = PasswordHash::new(hash)
        .map_err(|e| format!("not a password hash ({e}); make one with `cassio hash-password`"))?;
    match parsed.algorithm.as_str() {
        "argon2id" | "argon2i" | "argon2d" => Ok(()),
        other => Err(format!(
            "hash algorithm {other} is not argon2; make one with `cassio hash-password`"
        )),
    }
}

fn verify(hash: &str, secret: &str) -> bool {
    match PasswordHash::new(hash) {
        Ok(parsed) => Argon2::default()
            .verify_password(secret.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

fn digest(secret: &str) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, secret.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Counts failures and logs them at a bounded rate.
#[derive(Debug)]
struct FailureLog {
    /// Failures since the last log line, and when that was.
    state: Mutex<(u64, Option<Instant>)>,
}

impl FailureLog {
    fn record(&self, protocol: &'static str, peer: &str, user: &str) {
        metrics::counter!("cassio_auth_failures_total", "protocol" => protocol).increment(1);
        let mut st = self.state.lock();
        st.0 += 1;
        let due = st.1.is_none_or(|at| at.elapsed() >= FAILURE_LOG_INTERVAL);
        if due {
            let since = st.1.map(|at| at.elapsed().as_secs());
            tracing::warn!(
                failures = st.0,
                since_secs = since,
                protocol,
                peer,
                last_user = ?user.chars().take(64).collect::<String>(),
                "client authentication failures"
            );
            *st = (0, Some(Instant::now()));
        }
    }
}

/// Checks credentials and permissions; one per node, shared by every
/// client port.
#[derive(Debug)]
pub struct Authenticator {
    users: HashMap<String, Arc<User>>,
    /// The digest of the last secret that verified, per user and kind.
    verified: Mutex<HashMap<(String, Secret), [u8; 32]>>,
    /// A hash of nothing anyone knows, checked for unknown users so they
    /// cost as much as known ones.
    dummy: String,
    verifies: Semaphore,
    failures: FailureLog,
}

impl Authenticator {
    /// An authenticator for `users` (validated by the config already).
    pub fn new(users: Vec<User>) -> Arc<Authenticator> {
        let dummy = hash_secret(&format!("{:x}", rand::random::<u128>())).unwrap_or_default();
        Arc::new(Authenticator {
            users: users
                .into_iter()
                .map(|u| (u.name.clone(), Arc::new(u)))
                .collect(),
            verified: Mutex::new(HashMap::new()),
            dummy,
            verifies: Semaphore::new(MAX_CONCURRENT_VERIFIES),
            failures: FailureLog {
                state: Mutex::new((0, None)),
            },
        })
    }

    /// How many users are configured.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The user named `name` if `secret` is its password (or token); the
    /// same [`AuthError::Invalid`] for an unknown user and a wrong secret.
    /// `protocol` and `peer` only label the failure metric and log.
    pub async fn login(
        &self,
        name: &str,
        secret: &str,
        kind: Secret,
        protocol: &'static str,
        peer: &str,
    ) -> Result<Arc<User>, AuthError> {
        let user = self.users.get(name).cloned();
        let hash = user.as_ref().and_then(|u| match kind {
            Secret::Password => u.password_hash.clone(),
            Secret::Token => u.token_hash.clone(),
        });
        let key = (name.to_owned(), kind);
        let d = digest(secret);
        if hash.is_some() {
            if let Some(known) = self.verified.lock().get(&key) {
                if bool::from(subtle::ConstantTimeEq::ct_eq(&known[..], &d[..])) {
                    return user.ok_or(AuthError::Invalid);
                }
            }
        }
        let ok = {
            let Ok(_permit) = self.verifies.acquire().await else {
                return Err(AuthError::Invalid);
            };
            let (check, secret) = (
                hash.clone().unwrap_or_else(|| self.dummy.clone()),
                secret.to_owned(),
            );
            let good = tokio::task::spawn_blocking(move || verify(&check, &secret))
                .await
                .unwrap_or(false);
            good && hash.is_some()
        };
        match user {
            Some(u) if ok => {
                self.verified.lock().insert(key, d);
                Ok(u)
            }
            _ => {
                self.failures.record(protocol, peer, name);
                Err(AuthError::Invalid)
            }
        }
    }

    /// Whether `user` may read (or write, when `write`) `keyspace`.
    pub fn check(user: &User, keyspace: &str, write: bool) -> Result<(), AuthError> {
        let access = user.access_to(keyspace);
        let ok = match access {
            Access::ReadWrite => true,
            Access::ReadOnly => !write,
            Access::None => false,
        };
        if ok {
            return Ok(());
        }
        metrics::counter!("cassio_auth_refusals_total", "action" => if write { "write" } else { "read" })
            .increment(1);
        Err(AuthError::Forbidden {
            user: user.name.clone(),
            action: if write { "write" } else { "read" },
            keyspace: keyspace.to_owned(),
            access: access.name(),
        })
    }

    /// Whether `user` may use the admin routes.
    pub fn check_admin(user: &User) -> Result<(), AuthError> {
        if user.admin {
            Ok(())
        } else {
            metrics::counter!("cassio_auth_refusals_total", "action" => "admin").increment(1);
            Err(AuthError::NotAdmin {
                user: user.name.clone(),
            })
        }
    }
}

/// What a client port checks: who may connect (`auth`, `None`: anyone)
/// and whether it speaks TLS (`tls`).
#[derive(Clone, Default)]
pub struct ClientSecurity {
    /// Users and permissions; `None` leaves the port open.
    pub auth: Option<Arc<Authenticator>>,
    /// TLS for the port; `None` is plaintext.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for ClientSecurity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientSecurity")
            .field("users", &self.auth.as_ref().map(|a| a.user_count()))
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Why the client ports' TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ClientTlsError {
    /// The certificate or key file could not be read.
    #[error(transparent)]
    Files(#[from] cassio_transport_tcp::tls::TlsError),
    /// rustls refused them (e.g. the key does not match the certificate).
    #[error("client TLS certificate {cert}: {detail}")]
    Rustls {
        /// The certificate file.
        cert: String,
        /// rustls' reason.
        detail: String,
    },
}

/// A TLS acceptor for the client ports from PEM files; HTTP's ALPN name is
/// offered so HTTP clients agree on HTTP/1.1.
pub fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
) -> Result<tokio_rustls::TlsAcceptor, ClientTlsError> {
    use cassio_transport_tcp::tls::{provider, read_certs, read_key};
    let certs = read_certs(cert)?;
    let key = read_key(key)?;
    let rustls_err = |e: rustls::Error| ClientTlsError::Rustls {
        cert: cert.display().to_string(),
        detail: e.to_string(),
    };
    let mut config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(rustls_err)?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(rustls_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// How long a client has to finish its TLS handshake.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, password: &str, access: Access) -> User {
        User {
            name: name.into(),
            password_hash: hash_secret(password).ok(),
            token_hash: None,
            access,
            keyspaces: BTreeMap::new(),
            admin: false,
        }
    }

    #[tokio::test]
    async fn right_password_logs_in_and_wrong_or_unknown_fail_alike() {
        let a = Authenticator::new(vec![user("alice", "s3cret", Access::ReadWrite)]);
        let ok = a
            .login("alice", "s3cret", Secret::Password, "test", "-")
            .await;
        assert_eq!(ok.map(|u| u.name.clone()), Ok("alice".to_string()));
        // Again, through the digest of the verified secret.
        assert!(a
            .login("alice", "s3cret", Secret::Password, "test", "-")
            .await
            .is_ok());
        let wrong = a
            .login("alice", "nope", Secret::Password, "test", "-")
            .await;
        let unknown = a
            .login("bob", "s3cret", Secret::Password, "test", "-")
            .await;
        assert_eq!(wrong, Err(AuthError::Invalid));
        assert_eq!(unknown, Err(AuthError::Invalid));
        // No token configured: a token login fails even with the password.
        let token = a.login("alice", "s3cret", Secret::Token, "test", "-").await;
        assert_eq!(token, Err(AuthError::Invalid));
    }

    #[test]
    fn access_levels_and_keyspace_overrides() {
        let mut u = user("ro", "x", Access::ReadOnly);
        u.keyspaces.insert("logs".into(), Access::ReadWrite);
        u.keyspaces.insert("secret".into(), Access::None);
        assert!(Authenticator::check(&u, "default", false).is_ok());
        assert!(matches!(
            Authenticator::check(&u, "default", true),
            Err(AuthError::Forbidden { .. })
        ));
        assert!(Authenticator::check(&u, "logs", true).is_ok());
        assert!(Authenticator::check(&u, "secret", false).is_err());
        assert!(Authenticator::check_admin(&u).is_err());
    }

    #[test]
    fn hashes_are_checked_for_shape() {
        let h = hash_secret("pw").unwrap_or_default();
        assert!(check_hash(&h).is_ok(), "{h}");
        assert!(check_hash("pw").is_err());
        assert!(check_hash("$5$rounds=5000$salt$hash").is_err());
    }
}
