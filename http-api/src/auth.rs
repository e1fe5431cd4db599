//! Client authentication and authorisation, in the style of Riak security:
//! users with `read`, `write` and `admin` grants, HTTP Basic credentials,
//! password hashes in PHC form (argon2id recommended).
//!
//! What each request needs ([`required`]):
//! - `GET /ping`: nothing (load balancers probe it);
//! - `GET /`, `/stats`, `/metrics`: any authenticated user;
//! - reads of objects, listings, bucket properties and preflists: `read`;
//! - object writes and deletes (`PUT`/`POST`/`DELETE`): `write`, plus `read`
//!   with `returnbody=true` (the answer shows stored values);
//! - bucket property writes and resets, `/admin/...`: `admin`.
//!
//! Grants are independent: `admin` does not imply `read` or `write`. They
//! are cluster-wide (no per-bucket grants).
//!
//! Refusals: no or bad credentials are `401` with a `WWW-Authenticate`
//! challenge (the message does not say whether the user exists); a missing
//! grant is `403`; a request that needs credentials over plain HTTP is `426`
//! (Riak's answer) unless plain HTTP was explicitly allowed, because Basic
//! credentials in clear text are as good as published.
//!
//! Cost: verifying an argon2 hash takes tens of milliseconds of CPU on
//! purpose. At most [`Auth::verifications_max`] run at once on the blocking
//! pool (more wait, up to [`VERIFY_WAIT`], then get `503`), so a flood of bad
//! passwords cannot take every core. A password that verified is remembered
//! for [`CACHE_TTL`] as a keyed BLAKE3 hash (the key is random per process),
//! so a client's next requests cost a hash, not an argon2 run. A failed
//! verification is never cached. Changing a user's password in the users
//! file takes effect on restart.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use http::header::{AUTHORIZATION, HeaderMap, WWW_AUTHENTICATE};
use http::{Method, StatusCode};
use parking_lot::Mutex;
use tokio::sync::Semaphore;

use crate::error::ApiError;
use crate::query::Query;
use crate::routes::Resource;

/// What a user may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Grant {
    /// Read objects, listings, bucket properties and preflists.
    Read,
    /// Write and delete objects.
    Write,
    /// Change bucket properties; everything under `/admin/`.
    Admin,
}

impl Grant {
    /// The grant's name in the users file and in messages.
    pub fn name(self) -> &'static str {
        match self {
            Grant::Read => "read",
            Grant::Write => "write",
            Grant::Admin => "admin",
        }
    }

    /// Parses `read`, `write` or `admin`.
    pub fn parse(text: &str) -> Option<Grant> {
        match text {
            "read" => Some(Grant::Read),
            "write" => Some(Grant::Write),
            "admin" => Some(Grant::Admin),
            _ => None,
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// What a request needs before it is served.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Needed {
    /// Nothing: served to anyone.
    Nothing,
    /// Any authenticated user.
    User,
    /// A user holding every one of these grants.
    Grants(Vec<Grant>),
}

/// Why a user definition was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UserError {
    /// The name is empty, too long, or contains `:` or control characters
    /// (Basic credentials split on the first `:`).
    #[error("user name {0:?} must be 1 to 255 characters without ':' or control characters")]
    Name(String),
    /// The password hash is not a PHC string of a supported algorithm.
    #[error("the password hash of user {0:?} is not an argon2 PHC string ($argon2id$...)")]
    Hash(String),
    /// The same name appears twice.
    #[error("user {0:?} is defined twice")]
    Duplicate(String),
}

/// One user: a name, a password hash and grants.
#[derive(Clone)]
pub struct User {
    name: String,
    password_hash: String,
    grants: BTreeSet<Grant>,
}

impl fmt::Debug for User {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("grants", &self.grants)
            .finish_non_exhaustive()
    }
}

impl User {
    /// A user; `password_hash` must be an argon2 PHC string (see
    /// [`hash_password`]).
    pub fn new(
        name: &str,
        password_hash: &str,
        grants: impl IntoIterator<Item = Grant>,
    ) -> Result<User, UserError> {
        if name.is_empty() || name.len() > 255 || name.chars().any(|c| c == ':' || c.is_control()) {
            return Err(UserError::Name(name.to_owned()));
        }
        let parsed =
            PasswordHash::new(password_hash).map_err(|_| UserError::Hash(name.to_owned()))?;
        if !parsed.algorithm.as_str().starts_with("argon2") {
            return Err(UserError::Hash(name.to_owned()));
        }
        Ok(User {
            name: name.to_owned(),
            password_hash: password_hash.to_owned(),
            grants: grants.into_iter().collect(),
        })
    }

    /// The user's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether the user holds `grant`.
    pub fn has(&self, grant: Grant) -> bool {
        self.grants.contains(&grant)
    }
}

/// Hashes a password for the users file: argon2id with the crate's default
/// cost (19 MiB, 2 passes) and a random salt, as a PHC string.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .expect("16 bytes are a valid salt length");
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

/// How long a verified password is remembered.
pub const CACHE_TTL: Duration = Duration::from_secs(300);
/// How long a request waits for a free verification slot before `503`.
pub const VERIFY_WAIT: Duration = Duration::from_secs(5);

/// The authentication settings of a server.
pub struct Auth {
    users: HashMap<String, Arc<User>>,
    allow_plain_http: bool,
    cache_key: [u8; 32],
    /// user name -> (keyed hash of the password that verified, when).
    cache: Mutex<HashMap<String, ([u8; 32], Instant)>>,
    verifications: Arc<Semaphore>,
    verifications_max: usize,
    /// The hash of a random password, verified for unknown user names.
    dummy_hash: String,
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Auth")
            .field("users", &self.users.len())
            .field("allow_plain_http", &self.allow_plain_http)
            .finish_non_exhaustive()
    }
}

impl Auth {
    /// Authentication for `users`. With `allow_plain_http`, credentials are
    /// accepted on connections without TLS (for a TLS-terminating proxy in
    /// front of the node); otherwise such requests are refused with `426`.
    pub fn new(users: Vec<User>, allow_plain_http: bool) -> Result<Auth, UserError> {
        let mut map = HashMap::new();
        for user in users {
            let name = user.name.clone();
            if map.insert(name.clone(), Arc::new(user)).is_some() {
                return Err(UserError::Duplicate(name));
            }
        }
        let verifications_max = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Auth {
            users: map,
            allow_plain_http,
            cache_key: rand::random(),
            cache: Mutex::new(HashMap::new()),
            verifications: Arc::new(Semaphore::new(verifications_max)),
            verifications_max,
            dummy_hash: hash_password(&STANDARD.encode(rand::random::<[u8; 16]>())),
        })
    }

    /// Most password verifications that run at once.
    pub fn verifications_max(&self) -> usize {
        self.verifications_max
    }

    /// Whether credentials are accepted without TLS.
    pub fn allows_plain_http(&self) -> bool {
        self.allow_plain_http
    }

    /// Checks the request's credentials against what it needs.
    pub async fn check(
        &self,
        needed: &Needed,
        headers: &HeaderMap,
        is_tls: bool,
    ) -> Result<(), ApiError> {
        if *needed == Needed::Nothing {
            return Ok(());
        }
        if !is_tls && !self.allow_plain_http {
            return Err(ApiError::new(
                StatusCode::UPGRADE_REQUIRED,
                "Security is enabled and Starling does not accept credentials over HTTP. \
                 Try HTTPS instead.",
            ));
        }
        let (name, password) = basic_credentials(headers).ok_or_else(unauthorized)?;
        let user = self.verify(&name, &password).await?;
        if let Needed::Grants(grants) = needed
            && let Some(missing) = grants.iter().find(|g| !user.has(**g))
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("Permission denied: user {name:?} does not hold the {missing} grant"),
            ));
        }
        Ok(())
    }

    async fn verify(&self, name: &str, password: &str) -> Result<Arc<User>, ApiError> {
        let presented = blake3::keyed_hash(&self.cache_key, password.as_bytes());
        let Some(user) = self.users.get(name).cloned() else {
            // Spend the same effort as for a real user, so timing does not
            // tell which names exist.
            self.run_verification(self.dummy_hash.clone(), password.to_owned())
                .await?;
            return Err(unauthorized());
        };
        if let Some((cached, at)) = self.cache.lock().get(name).copied()
            && at.elapsed() < CACHE_TTL
            && blake3::Hash::from(cached) == presented
        {
            return Ok(user);
        }
        if self
            .run_verification(user.password_hash.clone(), password.to_owned())
            .await?
        {
            self.cache
                .lock()
                .insert(name.to_owned(), (*presented.as_bytes(), Instant::now()));
            Ok(user)
        } else {
            Err(unauthorized())
        }
    }

    /// Runs one argon2 verification on the blocking pool, bounded by the
    /// verification slots.
    async fn run_verification(&self, hash: String, password: String) -> Result<bool, ApiError> {
        let busy = || {
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too many logins are being verified; retry later",
            )
            .with_header(http::header::RETRY_AFTER, "1")
        };
        let permit =
            match tokio::time::timeout(VERIFY_WAIT, self.verifications.clone().acquire_owned())
                .await
            {
                Ok(Ok(permit)) => permit,
                _ => return Err(busy()),
            };
        let verified = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                argon2::Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .map_err(|_| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "verification failed"))?;
        Ok(verified)
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "Authentication required: send HTTP Basic credentials of a Starling user",
    )
    .with_header(
        WWW_AUTHENTICATE,
        "Basic realm=\"Starling\", charset=\"UTF-8\"",
    )
}

/// `Authorization: Basic base64(name:password)`, if well formed.
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = STANDARD.decode(encoded.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (name, password) = text.split_once(':')?;
    Some((name.to_owned(), password.to_owned()))
}

/// What a request for `resource` with `method` needs (see the module
/// documentation). `path` tells `/metrics` from `/admin/...`.
pub fn required(resource: Resource, method: &Method, path: &str, query: &Query) -> Needed {
    let is_read = method == Method::GET || method == Method::HEAD;
    let write = || {
        if query.is_true("returnbody") {
            Needed::Grants(vec![Grant::Write, Grant::Read])
        } else {
            Needed::Grants(vec![Grant::Write])
        }
    };
    match resource {
        Resource::Ping => Needed::Nothing,
        Resource::Root | Resource::Stats => Needed::User,
        Resource::Admin if path == "/metrics" => Needed::User,
        Resource::Admin => Needed::Grants(vec![Grant::Admin]),
        Resource::Buckets | Resource::Preflist => Needed::Grants(vec![Grant::Read]),
        Resource::Props | Resource::LegacyBucket if is_read => Needed::Grants(vec![Grant::Read]),
        Resource::LegacyBucket if method == Method::POST => write(),
        Resource::Props | Resource::LegacyBucket => Needed::Grants(vec![Grant::Admin]),
        Resource::Keys | Resource::Object if is_read => Needed::Grants(vec![Grant::Read]),
        Resource::Keys | Resource::Object => write(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use http::HeaderValue;

    fn basic(name: &str, password: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        let value = format!("Basic {}", STANDARD.encode(format!("{name}:{password}")));
        headers.insert(AUTHORIZATION, HeaderValue::from_str(&value).unwrap());
        headers
    }

    #[test]
    fn users_need_valid_names_and_argon2_hashes() {
        let hash = hash_password("pw");
        assert!(User::new("alice", &hash, [Grant::Read]).is_ok());
        assert!(matches!(
            User::new("a:b", &hash, []),
            Err(UserError::Name(_))
        ));
        assert!(matches!(User::new("", &hash, []), Err(UserError::Name(_))));
        assert!(matches!(
            User::new("bob", "plain text", []),
            Err(UserError::Hash(_))
        ));
        let twice = vec![
            User::new("a", &hash, []).unwrap(),
            User::new("a", &hash, []).unwrap(),
        ];
        assert!(matches!(
            Auth::new(twice, false),
            Err(UserError::Duplicate(_))
        ));
    }

    #[tokio::test]
    async fn credentials_and_grants_are_checked() {
        let hash = hash_password("secret");
        let auth = Auth::new(
            vec![
                User::new("reader", &hash, [Grant::Read]).unwrap(),
                User::new("writer", &hash, [Grant::Write]).unwrap(),
            ],
            false,
        )
        .unwrap();
        let read = Needed::Grants(vec![Grant::Read]);
        assert!(
            auth.check(&read, &basic("reader", "secret"), true)
                .await
                .is_ok()
        );
        // The cached path gives the same answers.
        assert!(
            auth.check(&read, &basic("reader", "secret"), true)
                .await
                .is_ok()
        );
        let status = |r: Result<(), ApiError>| r.unwrap_err().status.as_u16();
        assert_eq!(
            status(auth.check(&read, &basic("reader", "wrong"), true).await),
            401
        );
        assert_eq!(
            status(auth.check(&read, &basic("nobody", "secret"), true).await),
            401
        );
        assert_eq!(
            status(auth.check(&read, &HeaderMap::new(), true).await),
            401
        );
        assert_eq!(
            status(auth.check(&read, &basic("writer", "secret"), true).await),
            403
        );
        assert_eq!(
            status(auth.check(&read, &basic("reader", "secret"), false).await),
            426
        );
        assert!(
            auth.check(&Needed::Nothing, &HeaderMap::new(), false)
                .await
                .is_ok()
        );
        assert!(
            auth.check(&Needed::User, &basic("writer", "secret"), true)
                .await
                .is_ok()
        );
    }

    #[test]
    fn requirements_follow_the_resource_and_method() {
        let q = Query::parse(None).unwrap();
        let rb = Query::parse(Some("returnbody=true")).unwrap();
        let g = |v: &[Grant]| Needed::Grants(v.to_vec());
        assert_eq!(
            required(Resource::Ping, &Method::GET, "/ping", &q),
            Needed::Nothing
        );
        assert_eq!(
            required(Resource::Stats, &Method::GET, "/stats", &q),
            Needed::User
        );
        assert_eq!(
            required(Resource::Admin, &Method::GET, "/metrics", &q),
            Needed::User
        );
        assert_eq!(
            required(Resource::Admin, &Method::GET, "/admin/ring", &q),
            g(&[Grant::Admin])
        );
        assert_eq!(
            required(Resource::Object, &Method::GET, "/", &q),
            g(&[Grant::Read])
        );
        assert_eq!(
            required(Resource::Object, &Method::PUT, "/", &q),
            g(&[Grant::Write])
        );
        assert_eq!(
            required(Resource::Object, &Method::PUT, "/", &rb),
            g(&[Grant::Write, Grant::Read])
        );
        assert_eq!(
            required(Resource::Object, &Method::DELETE, "/", &q),
            g(&[Grant::Write])
        );
        assert_eq!(
            required(Resource::Keys, &Method::POST, "/", &q),
            g(&[Grant::Write])
        );
        assert_eq!(
            required(Resource::Props, &Method::GET, "/", &q),
            g(&[Grant::Read])
        );
        assert_eq!(
            required(Resource::Props, &Method::PUT, "/", &q),
            g(&[Grant::Admin])
        );
        assert_eq!(
            required(Resource::Props, &Method::DELETE, "/", &q),
            g(&[Grant::Admin])
        );
        assert_eq!(
            required(Resource::LegacyBucket, &Method::PUT, "/", &q),
            g(&[Grant::Admin])
        );
        assert_eq!(
            required(Resource::LegacyBucket, &Method::POST, "/", &q),
            g(&[Grant::Write])
        );
    }
}
