//! Basic auth against an htpasswd file of bcrypt hashes (what distribution's
//! registry takes: `htpasswd -B`), with an optional anonymous-pull policy:
//! reads without credentials, writes only with them.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::errors::{ApiError, Code};

#[derive(Debug)]
pub struct Htpasswd {
    users: HashMap<String, String>,
    realm: String,
    anonymous_pull: bool,
    /// Users who may pull but not push (they get DENIED).
    pull_only: HashSet<String>,
    /// (user, sha256 of the password) that bcrypt already accepted, so a
    /// push of many blobs pays for bcrypt once.
    verified: Mutex<HashSet<(String, [u8; 32])>>,
}

/// Who made a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Anonymous,
    User(String),
}

impl Htpasswd {
    /// Reads `path`: `user:$2y$...` lines; blank lines and `#` comments are
    /// skipped; a hash other than bcrypt is refused, naming the line.
    pub fn load(
        path: &Path,
        realm: &str,
        anonymous_pull: bool,
        pull_only: &[String],
    ) -> Result<Htpasswd, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("read htpasswd file {}: {e}", path.display()))?;
        let mut users = HashMap::new();
        for (number, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let Some((user, hash)) = line.split_once(':') else {
                return Err(format!(
                    "{} line {}: expected user:bcrypt-hash",
                    path.display(),
                    number + 1
                ));
            };
            if !hash.starts_with("$2") {
                return Err(format!(
                    "{} line {}: the hash for {user} is not bcrypt (make it with htpasswd -B)",
                    path.display(),
                    number + 1
                ));
            }
            users.insert(user.to_string(), hash.to_string());
        }
        Ok(Htpasswd {
            users,
            realm: realm.to_string(),
            anonymous_pull,
            pull_only: pull_only.iter().cloned().collect(),
            verified: Mutex::new(HashSet::new()),
        })
    }

    pub fn challenge(&self) -> String {
        format!("Basic realm=\"{}\"", self.realm.replace('"', "'"))
    }

    fn unauthorized(&self, message: &str) -> ApiError {
        ApiError::new(Code::Unauthorized, message)
    }

    /// Checks the `Authorization` header of a request that reads (`write`
    /// false) or writes. bcrypt runs on a blocking thread.
    pub async fn check(
        self: &Arc<Self>,
        authorization: Option<&str>,
        write: bool,
        base: bool,
    ) -> Result<Identity, ApiError> {
        let Some(header) = authorization else {
            if self.anonymous_pull && !write && !base {
                return Ok(Identity::Anonymous);
            }
            return Err(self.unauthorized("authentication required"));
        };
        let Some((user, password)) = parse_basic(header) else {
            return Err(self.unauthorized("the Authorization header is not Basic credentials"));
        };
        let key = (user.clone(), sha256(&password));
        let known = self
            .verified
            .lock()
            .map(|set| set.contains(&key))
            .unwrap_or(false);
        if !known {
            let Some(hash) = self.users.get(&user).cloned() else {
                return Err(self.unauthorized("invalid username or password"));
            };
            let ok = tokio::task::spawn_blocking(move || bcrypt::verify(password, &hash))
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or(false);
            if !ok {
                return Err(self.unauthorized("invalid username or password"));
            }
            if let Ok(mut set) = self.verified.lock() {
                set.insert(key);
            }
        }
        if write && self.pull_only.contains(&user) {
            return Err(ApiError::new(
                Code::Denied,
                format!("user {user} may pull from this registry but not push to it"),
            ));
        }
        Ok(Identity::User(user))
    }
}

fn sha256(text: &str) -> [u8; 32] {
    Sha256::digest(text.as_bytes()).into()
}

/// `Basic base64(user:password)` → (user, password).
pub fn parse_basic(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_basic_credentials() {
        assert_eq!(
            parse_basic("Basic dXNlcjpwYTpzcw=="),
            Some(("user".to_string(), "pa:ss".to_string()))
        );
        assert_eq!(parse_basic("Bearer xyz"), None);
        assert_eq!(parse_basic("Basic !!!"), None);
    }

    #[tokio::test]
    async fn checks_bcrypt_and_the_anonymous_policy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        let hash = bcrypt::hash("secret", 4).unwrap();
        std::fs::write(&path, format!("# users\nalice:{hash}\nbob:{hash}\n")).unwrap();
        let auth = Arc::new(Htpasswd::load(&path, "r", true, &["bob".to_string()]).unwrap());
        let good = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:secret")
        );
        let bad = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("alice:wrong")
        );
        let bob = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode("bob:secret")
        );
        assert_eq!(
            auth.check(Some(&good), true, false).await.unwrap(),
            Identity::User("alice".into())
        );
        assert_eq!(
            auth.check(Some(&bad), false, false).await.unwrap_err().code,
            Code::Unauthorized
        );
        assert_eq!(
            auth.check(None, false, false).await.unwrap(),
            Identity::Anonymous
        );
        assert_eq!(
            auth.check(None, true, false).await.unwrap_err().code,
            Code::Unauthorized
        );
        assert_eq!(
            auth.check(Some(&bob), true, false).await.unwrap_err().code,
            Code::Denied
        );
        std::fs::write(&path, "carol:{SHA}abc\n").unwrap();
        assert!(Htpasswd::load(&path, "r", false, &[]).is_err());
    }
}
