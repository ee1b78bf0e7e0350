//! Registry authentication: `WWW-Authenticate` challenges, token responses,
//! and credentials from docker's `config.json` (so `docker login` and
//! `keel login` share them).
//!
//! Everything here is pure parsing; the requests themselves are made by
//! [`crate::client::Client`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde::Deserialize;

use crate::error::{Error, Result};

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    /// The token flow: GET `realm?service=..&scope=..` for a bearer token.
    Bearer {
        realm: String,
        service: Option<String>,
        scope: Option<String>,
    },
    /// Credentials on every request.
    Basic { realm: Option<String> },
}

/// Parses a `WWW-Authenticate` header value. Several challenges may share
/// one header (`Bearer realm="a", Basic realm="b"`); unknown schemes and
/// a Bearer challenge without a realm are skipped.
pub fn parse_www_authenticate(header: &str) -> Vec<Challenge> {
    let mut challenges = Vec::new();
    let mut rest = header.trim();
    while !rest.is_empty() {
        // The scheme: a token up to whitespace or a comma.
        let end = rest
            .find(|c: char| c.is_whitespace() || c == ',')
            .unwrap_or(rest.len());
        let scheme = rest[..end].to_ascii_lowercase();
        rest = rest[end..].trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        let (params, remaining) = parse_params(rest);
        rest = remaining;
        let get = |name: &str| {
            params
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
        };
        match scheme.as_str() {
            "bearer" => {
                if let Some(realm) = get("realm") {
                    challenges.push(Challenge::Bearer {
                        realm,
                        service: get("service"),
                        scope: get("scope"),
                    });
                }
            }
            "basic" => challenges.push(Challenge::Basic {
                realm: get("realm"),
            }),
            _ => {}
        }
    }
    challenges
}

/// Reads `key=value` or `key="quoted value"` pairs separated by commas,
/// stopping at the next challenge's scheme (a token not followed by `=`).
fn parse_params(mut text: &str) -> (Vec<(String, String)>, &str) {
    let mut params = Vec::new();
    loop {
        text = text.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        let Some(eq) = text.find('=') else {
            return (params, text);
        };
        let key = &text[..eq];
        if key.is_empty() || key.contains(|c: char| c.is_whitespace() || c == ',') {
            // A new scheme starts here.
            return (params, text);
        }
        let after = text[eq + 1..].trim_start();
        let (value, rest) = if let Some(quoted) = after.strip_prefix('"') {
            let mut value = String::new();
            let mut chars = quoted.char_indices();
            let mut end = quoted.len();
            while let Some((index, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, escaped)) = chars.next() {
                            value.push(escaped);
                        }
                    }
                    '"' => {
                        end = index + 1;
                        break;
                    }
                    _ => value.push(c),
                }
            }
            (value, &quoted[end.min(quoted.len())..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (after[..end].trim().to_string(), &after[end..])
        };
        params.push((key.trim().to_string(), value));
        text = rest;
    }
}

/// The scope string of a repository for the token server.
pub fn repository_scope(repository: &str, push: bool) -> String {
    let actions = if push { "pull,push" } else { "pull" };
    format!("repository:{repository}:{actions}")
}

/// A token server's answer: docker's `token` or OAuth2's `access_token`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Token {
    pub token: String,
    /// Seconds it stays valid (60 when the server does not say, as the
    /// distribution spec prescribes).
    pub expires_in: u64,
}

pub fn parse_token_response(body: &[u8]) -> Result<Token> {
    #[derive(Deserialize)]
    struct Response {
        token: Option<String>,
        access_token: Option<String>,
        expires_in: Option<u64>,
    }
    let response: Response = serde_json::from_slice(body)
        .map_err(|e| Error::msg(format!("token server answered invalid JSON: {e}")))?;
    let token = response
        .token
        .filter(|t| !t.is_empty())
        .or(response.access_token.filter(|t| !t.is_empty()))
        .ok_or_else(|| Error::msg("token server answered no token"))?;
    Ok(Token {
        token,
        expires_in: response.expires_in.unwrap_or(60).max(1),
    })
}

/// Credentials for one registry.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Basic {
        username: String,
        password: String,
    },
    /// An OAuth2 refresh token (`identitytoken` in config.json).
    IdentityToken(String),
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print a secret.
        match self {
            Credentials::Basic { username, .. } => write!(f, "Basic({username}, ***)"),
            Credentials::IdentityToken(_) => write!(f, "IdentityToken(***)"),
        }
    }
}

impl Credentials {
    /// The `Authorization` header value for basic auth, if these are basic.
    pub fn basic_header(&self) -> Option<String> {
        match self {
            Credentials::Basic { username, password } => Some(format!(
                "Basic {}",
                STANDARD.encode(format!("{username}:{password}"))
            )),
            Credentials::IdentityToken(_) => None,
        }
    }
}

/// Docker's `config.json`: the part that holds registry logins.
#[derive(Debug, Clone, Default)]
pub struct DockerConfig {
    /// Keyed by the normalized registry host (see [`normalize_registry_key`]).
    auths: HashMap<String, Credentials>,
    path: Option<PathBuf>,
}

/// `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`.
pub fn default_docker_config_path() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("DOCKER_CONFIG").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir).join("config.json"));
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|home| PathBuf::from(home).join(".docker").join("config.json"))
}

/// The registry host a config.json key names: `https://index.docker.io/v1/`
/// and friends become `docker.io`; a scheme and a path are dropped.
pub fn normalize_registry_key(key: &str) -> String {
    let key = key.trim();
    let key = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"))
        .unwrap_or(key);
    let host = key.split('/').next().unwrap_or(key).to_ascii_lowercase();
    match host.as_str() {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        _ => host,
    }
}

impl DockerConfig {
    /// Reads `path`; a missing file is an empty config.
    pub fn load(path: &Path) -> Result<DockerConfig> {
        let text = match std::fs::read(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(DockerConfig {
                    path: Some(path.to_path_buf()),
                    ..DockerConfig::default()
                });
            }
            Err(e) => return Err(Error::io(format!("read {}", path.display()), e)),
        };
        let mut config = DockerConfig::parse(&text)
            .map_err(|e| Error::msg(format!("{}: {e}", path.display())))?;
        config.path = Some(path.to_path_buf());
        Ok(config)
    }

    /// The default file ([`default_docker_config_path`]), or an empty config.
    pub fn load_default() -> Result<DockerConfig> {
        match default_docker_config_path() {
            Some(path) => DockerConfig::load(&path),
            None => Ok(DockerConfig::default()),
        }
    }

    pub fn parse(text: &[u8]) -> Result<DockerConfig> {
        #[derive(Deserialize)]
        struct File {
            #[serde(default)]
            auths: HashMap<String, Entry>,
        }
        #[derive(Deserialize)]
        struct Entry {
            auth: Option<String>,
            username: Option<String>,
            password: Option<String>,
            identitytoken: Option<String>,
        }
        let file: File = serde_json::from_slice(text)
            .map_err(|e| Error::msg(format!("invalid docker config JSON: {e}")))?;
        let mut auths = HashMap::new();
        for (key, entry) in file.auths {
            let host = normalize_registry_key(&key);
            let credentials = if let Some(token) = entry.identitytoken.filter(|t| !t.is_empty()) {
                Credentials::IdentityToken(token)
            } else if let Some(auth) = entry.auth.filter(|a| !a.is_empty()) {
                let decoded = STANDARD.decode(auth.trim()).map_err(|e| {
                    Error::msg(format!("auths.{key:?}.auth is not valid base64: {e}"))
                })?;
                let decoded = String::from_utf8(decoded)
                    .map_err(|_| Error::msg(format!("auths.{key:?}.auth is not UTF-8")))?;
                let (username, password) = decoded.split_once(':').ok_or_else(|| {
                    Error::msg(format!("auths.{key:?}.auth is not base64 of user:password"))
                })?;
                Credentials::Basic {
                    username: username.to_string(),
                    password: password.to_string(),
                }
            } else if let (Some(username), Some(password)) = (entry.username, entry.password) {
                Credentials::Basic { username, password }
            } else {
                continue;
            };
            // An exact key ("myreg:5000") wins over a URL form of the same host.
            auths.entry(host).or_insert(credentials);
        }
        Ok(DockerConfig { auths, path: None })
    }

    /// The file this config came from, if any.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Credentials for a registry host (`docker.io`, `myreg:5000`).
    pub fn credentials(&self, registry: &str) -> Option<&Credentials> {
        self.auths.get(&normalize_registry_key(registry))
    }

    /// Sets credentials (for callers that take them from flags).
    pub fn insert(&mut self, registry: &str, credentials: Credentials) {
        self.auths
            .insert(normalize_registry_key(registry), credentials);
    }

    /// `keel login`: stores `auths.<key>.auth` = base64(user:password) in
    /// the config.json at `path`, keeping every other key of the file (and
    /// dropping other entries naming the same host, which would shadow
    /// it). Written to a temp name with mode 0600, fsynced and renamed.
    pub fn save_login(path: &Path, key: &str, username: &str, password: &str) -> Result<()> {
        let mut file = read_config_value(path)?;
        let auths = auths_object(&mut file, path)?;
        let host = normalize_registry_key(key);
        auths.retain(|k, _| k == key || normalize_registry_key(k) != host);
        let entry = auths
            .entry(key.to_string())
            .or_insert_with(|| serde_json::json!({}));
        if !entry.is_object() {
            *entry = serde_json::json!({});
        }
        if let Some(entry) = entry.as_object_mut() {
            for stale in ["username", "password", "identitytoken", "registrytoken"] {
                entry.remove(stale);
            }
            entry.insert(
                "auth".to_string(),
                STANDARD.encode(format!("{username}:{password}")).into(),
            );
        }
        write_config_value(path, &file)
    }

    /// `keel logout`: removes every `auths` entry naming `registry`'s host
    /// from the config.json at `path`; returns whether there was one.
    pub fn remove_login(path: &Path, registry: &str) -> Result<bool> {
        if !path.exists() {
            return Ok(false);
        }
        let mut file = read_config_value(path)?;
        let auths = auths_object(&mut file, path)?;
        let host = normalize_registry_key(registry);
        let before = auths.len();
        auths.retain(|k, _| normalize_registry_key(k) != host);
        if auths.len() == before {
            return Ok(false);
        }
        write_config_value(path, &file)?;
        Ok(true)
    }
}

/// The whole config.json as JSON (`{}` when missing), so that saving keeps
/// what keel does not know (`credsStore`, `HttpHeaders`, `proxies`, ...).
fn read_config_value(path: &Path) -> Result<serde_json::Value> {
    match std::fs::read(path) {
        Ok(text) if text.iter().all(u8::is_ascii_whitespace) => Ok(serde_json::json!({})),
        Ok(text) => serde_json::from_slice(&text).map_err(|e| {
            Error::msg(format!(
                "{}: invalid docker config JSON: {e}",
                path.display()
            ))
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(serde_json::json!({})),
        Err(e) => Err(Error::io(format!("read {}", path.display()), e)),
    }
}

fn auths_object<'a>(
    file: &'a mut serde_json::Value,
    path: &Path,
) -> Result<&'a mut serde_json::Map<String, serde_json::Value>> {
    let top = file
        .as_object_mut()
        .ok_or_else(|| Error::msg(format!("{}: not a JSON object", path.display())))?;
    let auths = top.entry("auths").or_insert_with(|| serde_json::json!({}));
    if auths.is_null() {
        *auths = serde_json::json!({});
    }
    auths
        .as_object_mut()
        .ok_or_else(|| Error::msg(format!("{}: \"auths\" is not an object", path.display())))
}

/// Atomically replaces `path` (through a symlink, its target) with `value`,
/// mode 0600; the directory is made (0700) if missing.
fn write_config_value(path: &Path, value: &serde_json::Value) -> Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _};
    let target = match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_symlink() => {
            std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf())
        }
        _ => path.to_path_buf(),
    };
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    let mut text = serde_json::to_vec_pretty(value)
        .map_err(|e| Error::msg(format!("serialize docker config: {e}")))?;
    text.push(b'\n');
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "config.json".into());
    let temp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        file.write_all(&text)?;
        file.sync_all()?;
        std::fs::rename(&temp, &target)?;
        if let Ok(dir) = std::fs::File::open(dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    })();
    result.map_err(|e: std::io::Error| {
        let _ = std::fs::remove_file(&temp);
        Error::io(format!("write {}", target.display()), e)
    })
}

/// Percent-encodes a query component (RFC 3986 unreserved kept).
pub(crate) fn url_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// The token request URL: `realm?service=S&scope=A&scope=B`.
pub fn token_url(realm: &str, service: Option<&str>, scopes: &[String]) -> String {
    let mut url = realm.to_string();
    let mut separator = if realm.contains('?') { '&' } else { '?' };
    if let Some(service) = service {
        url.push(separator);
        url.push_str("service=");
        url.push_str(&url_encode(service));
        separator = '&';
    }
    for scope in scopes {
        url.push(separator);
        url.push_str("scope=");
        url.push_str(&url_encode(scope));
        separator = '&';
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_bearer_challenges() {
        let header = r#"Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/busybox:pull""#;
        assert_eq!(
            parse_www_authenticate(header),
            vec![Challenge::Bearer {
                realm: "https://auth.docker.io/token".into(),
                service: Some("registry.docker.io".into()),
                scope: Some("repository:library/busybox:pull".into()),
            }]
        );
        // Spaces, unquoted values, a comma inside quotes, escapes.
        let header =
            r#"bearer  realm=https://r/t , scope="repository:a:pull,push", service="s\"x""#;
        assert_eq!(
            parse_www_authenticate(header),
            vec![Challenge::Bearer {
                realm: "https://r/t".into(),
                service: Some("s\"x".into()),
                scope: Some("repository:a:pull,push".into()),
            }]
        );
    }

    #[test]
    fn parses_basic_and_several_challenges() {
        assert_eq!(
            parse_www_authenticate(r#"Basic realm="Registry Realm""#),
            vec![Challenge::Basic {
                realm: Some("Registry Realm".into())
            }]
        );
        assert_eq!(
            parse_www_authenticate(r#"Basic realm="x", Bearer realm="https://t",service="s""#),
            vec![
                Challenge::Basic {
                    realm: Some("x".into())
                },
                Challenge::Bearer {
                    realm: "https://t".into(),
                    service: Some("s".into()),
                    scope: None
                }
            ]
        );
        assert_eq!(
            parse_www_authenticate("Basic"),
            vec![Challenge::Basic { realm: None }]
        );
        // No realm: nothing to ask; unknown schemes and garbage are skipped.
        assert!(parse_www_authenticate(r#"Bearer service="s""#).is_empty());
        assert!(parse_www_authenticate(r#"Negotiate abc, ="#).is_empty());
        assert!(parse_www_authenticate(r#"Bearer realm="unterminated"#).len() == 1);
    }

    #[test]
    fn parses_token_responses() {
        assert_eq!(
            parse_token_response(br#"{"token":"abc","expires_in":300}"#).unwrap(),
            Token {
                token: "abc".into(),
                expires_in: 300
            }
        );
        assert_eq!(
            parse_token_response(br#"{"access_token":"xyz"}"#).unwrap(),
            Token {
                token: "xyz".into(),
                expires_in: 60
            }
        );
        assert_eq!(
            parse_token_response(br#"{"token":"","access_token":"xyz"}"#)
                .unwrap()
                .token,
            "xyz"
        );
        assert!(
            parse_token_response(br#"{}"#)
                .unwrap_err()
                .to_string()
                .contains("no token")
        );
        assert!(parse_token_response(b"<html>").is_err());
    }

    #[test]
    fn builds_token_urls_and_scopes() {
        assert_eq!(
            repository_scope("library/busybox", false),
            "repository:library/busybox:pull"
        );
        assert_eq!(repository_scope("a/b", true), "repository:a/b:pull,push");
        assert_eq!(
            token_url(
                "https://auth.docker.io/token",
                Some("registry.docker.io"),
                &[
                    "repository:library/busybox:pull".into(),
                    "repository:x/y:pull".into()
                ]
            ),
            "https://auth.docker.io/token?service=registry.docker.io&scope=repository%3Alibrary%2Fbusybox%3Apull&scope=repository%3Ax%2Fy%3Apull"
        );
        assert_eq!(token_url("https://t/?a=b", None, &[]), "https://t/?a=b");
        assert_eq!(
            token_url("https://t/?a=b", Some("s"), &[]),
            "https://t/?a=b&service=s"
        );
    }

    #[test]
    fn reads_docker_config() {
        let config = DockerConfig::parse(
            br#"{
                "auths": {
                    "https://index.docker.io/v1/": {"auth": "dXNlcjpwYTpzcw=="},
                    "myreg:5000": {"auth": "YTpi"},
                    "http://other.example.com/v2/": {"identitytoken": "refresh"},
                    "empty.example.com": {},
                    "split.example.com": {"username": "u", "password": "p"}
                },
                "credsStore": "desktop"
            }"#,
        )
        .unwrap();
        assert_eq!(
            config.credentials("docker.io"),
            Some(&Credentials::Basic {
                username: "user".into(),
                password: "pa:ss".into()
            })
        );
        assert_eq!(
            config.credentials("registry-1.docker.io"),
            config.credentials("docker.io")
        );
        assert_eq!(
            config
                .credentials("myreg:5000")
                .unwrap()
                .basic_header()
                .unwrap(),
            "Basic YTpi"
        );
        assert_eq!(
            config.credentials("other.example.com"),
            Some(&Credentials::IdentityToken("refresh".into()))
        );
        assert_eq!(config.credentials("empty.example.com"), None);
        assert_eq!(
            config.credentials("split.example.com"),
            Some(&Credentials::Basic {
                username: "u".into(),
                password: "p".into()
            })
        );
        assert_eq!(config.credentials("myreg"), None);
        // Secrets never show in Debug.
        assert!(!format!("{config:?}").contains("pa:ss"));
    }

    #[test]
    fn refuses_bad_docker_config() {
        assert!(DockerConfig::parse(b"nope").is_err());
        let err = DockerConfig::parse(br#"{"auths":{"r":{"auth":"!!!"}}}"#).unwrap_err();
        assert!(err.to_string().contains("not valid base64"), "{err}");
        let err = DockerConfig::parse(br#"{"auths":{"r":{"auth":"bm9jb2xvbg=="}}}"#).unwrap_err();
        assert!(err.to_string().contains("user:password"), "{err}");
        assert!(
            DockerConfig::parse(b"{}")
                .unwrap()
                .credentials("r")
                .is_none()
        );
    }

    #[test]
    fn normalizes_registry_keys() {
        for (key, host) in [
            ("https://index.docker.io/v1/", "docker.io"),
            ("index.docker.io", "docker.io"),
            ("docker.io", "docker.io"),
            ("http://LocalHost:5000/", "localhost:5000"),
            ("quay.io", "quay.io"),
        ] {
            assert_eq!(normalize_registry_key(key), host, "{key}");
        }
    }

    #[test]
    fn missing_config_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let config = DockerConfig::load(&dir.path().join("config.json")).unwrap();
        assert!(config.credentials("docker.io").is_none());
    }

    #[test]
    fn saves_and_removes_logins_keeping_other_keys() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("docker").join("config.json");
        // A missing file and directory are made.
        DockerConfig::save_login(&path, "https://index.docker.io/v1/", "u", "p:w").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(
            &path,
            br#"{"auths":{"http://myreg:5000/v2/":{"auth":"YTpi"},"other":{"auth":"YTpi"}},"HttpHeaders":{"X":"y"}}"#,
        )
        .unwrap();
        DockerConfig::save_login(&path, "myreg:5000", "keel", "secret").unwrap();
        let value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(value["HttpHeaders"]["X"], "y");
        assert_eq!(value["auths"]["other"]["auth"], "YTpi");
        assert!(value["auths"].get("http://myreg:5000/v2/").is_none());
        assert_eq!(value["auths"]["myreg:5000"]["auth"], "a2VlbDpzZWNyZXQ=");
        let config = DockerConfig::load(&path).unwrap();
        assert_eq!(
            config.credentials("myreg:5000"),
            Some(&Credentials::Basic {
                username: "keel".into(),
                password: "secret".into()
            })
        );
        assert!(DockerConfig::remove_login(&path, "myreg:5000").unwrap());
        assert!(!DockerConfig::remove_login(&path, "myreg:5000").unwrap());
        let value: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(value["HttpHeaders"]["X"], "y");
        assert!(value["auths"].get("myreg:5000").is_none());
        assert!(!DockerConfig::remove_login(&dir.path().join("none.json"), "myreg:5000").unwrap());
    }
}
