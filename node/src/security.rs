//! Client security of the HTTP API: loading the TLS certificate and key,
//! and the users file.
//!
//! The users file is TOML, one `[[user]]` table per user:
//!
//! ```toml
//! [[user]]
//! name = "alice"
//! password_hash = "$argon2id$v=19$m=19456,t=2,p=1$..."   # starling hash-password
//! grants = ["read", "write"]                                # and/or "admin"
//! ```
//!
//! Only hashes are stored; `starling hash-password` makes one. The file is
//! read once at start (a change needs a restart); a file that others may
//! read is loaded with a warning, since hashes can be attacked offline.
//!
//! Boundary: this module reads files and builds configurations; the HTTP
//! server (`http_api::auth`, `http_api::server`) applies them.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use http_api::auth::{Auth, Grant, User};
use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use serde::Deserialize;
use tracing::warn;

use crate::config::{AuthConfig, TlsFiles};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    name: String,
    password_hash: String,
    #[serde(default)]
    grants: Vec<String>,
}

/// Parses a users file's text.
pub fn parse_users(text: &str) -> anyhow::Result<Vec<User>> {
    let file: UsersFile = toml::from_str(text)?;
    if file.user.is_empty() {
        bail!("the users file defines no [[user]]: nobody could use the API");
    }
    file.user
        .into_iter()
        .map(|entry| {
            let grants = entry
                .grants
                .iter()
                .map(|g| {
                    Grant::parse(g).with_context(|| {
                        format!(
                            "user {:?}: unknown grant {g:?} (read, write or admin)",
                            entry.name
                        )
                    })
                })
                .collect::<anyhow::Result<Vec<Grant>>>()?;
            Ok(User::new(&entry.name, &entry.password_hash, grants)?)
        })
        .collect()
}

/// Loads the users file and builds the server's authentication.
pub fn load_auth(config: &AuthConfig) -> anyhow::Result<Arc<Auth>> {
    let path = &config.users_file;
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the users file {}", path.display()))?;
    warn_if_readable_by_others(path);
    let users =
        parse_users(&text).with_context(|| format!("in the users file {}", path.display()))?;
    Ok(Arc::new(Auth::new(users, config.allow_plain_http)?))
}

fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(meta) = std::fs::metadata(path)
        && meta.permissions().mode() & 0o004 != 0
    {
        warn!(
            path = %path.display(),
            "the users file is readable by every user of this machine; chmod o-r it"
        );
    }
}

/// Loads the certificate chain and key and builds the HTTPS configuration:
/// TLS 1.2 and 1.3 with rustls' safe defaults, ALPN `http/1.1`.
pub fn load_tls(files: &TlsFiles) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let certs = CertificateDer::pem_file_iter(&files.cert)
        .with_context(|| format!("reading {}", files.cert.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("parsing the certificates in {}", files.cert.display()))?;
    if certs.is_empty() {
        bail!("{} holds no certificate", files.cert.display());
    }
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .with_context(|| format!("reading the private key in {}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the certificate and private key do not form a usable pair")?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// Raises this process's soft limit on open files to its hard limit, so
/// the HTTP connection limit is not cut short by the default soft limit
/// (often 1024). Warns when the limit is still below what the node may use.
pub fn raise_open_files_limit(connections_max: usize) {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(hard)) = (limit.current, limit.maximum)
        && current < hard
    {
        limit.current = Some(hard);
        if let Err(err) = setrlimit(Resource::Nofile, limit) {
            warn!(%err, "could not raise the open files limit");
        }
    }
    let current = getrlimit(Resource::Nofile).current;
    // Room for the store's files and cluster sockets besides connections.
    let needed = connections_max as u64 + 1024;
    if let Some(current) = current
        && current < needed
    {
        warn!(
            open_files_max = current,
            http_connections_max = connections_max,
            "the open files limit is below http_connections_max + 1024: connections may be \
             refused by the kernel before the node's limit; raise it (ulimit -n)"
        );
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn users_files_are_parsed_and_checked() {
        let hash = http_api::auth::hash_password("pw");
        let text = format!(
            "[[user]]\nname = \"alice\"\npassword_hash = \"{hash}\"\ngrants = [\"read\", \"admin\"]\n\
             [[user]]\nname = \"bob\"\npassword_hash = \"{hash}\"\n"
        );
        let users = parse_users(&text).unwrap();
        assert_eq!(users.len(), 2);
        assert!(users[0].has(Grant::Read) && users[0].has(Grant::Admin));
        assert!(!users[0].has(Grant::Write));
        assert!(!users[1].has(Grant::Read));
        for bad in [
            String::new(),
            format!("[[user]]\nname = \"a\"\npassword_hash = \"{hash}\"\ngrants = [\"all\"]\n"),
            "[[user]]\nname = \"a\"\npassword_hash = \"plaintext\"\n".to_owned(),
            format!("[[user]]\nname = \"a\"\npassword = \"x\"\npassword_hash = \"{hash}\"\n"),
        ] {
            assert!(parse_users(&bad).is_err(), "{bad}");
        }
    }
}
