//! Image references normalized exactly as docker does: the rules of
//! distribution/reference's `ParseNormalizedNamed` followed by `TagNameOnly`
//! (`busybox` → `docker.io/library/busybox:latest`), with docker's error
//! texts, so a user sees the same message from keel as from docker.
//!
//! Go's regular expressions are replaced by small hand-written matchers for
//! each production of the grammar (domain, path component, tag, digest);
//! the grammar leaves no ambiguity about where the name, tag and digest
//! split, so the captures are the same as the regexp's.

use std::fmt;
use std::str::FromStr;

use crate::digest::Digest;
use crate::error::{Error, Result};

/// Docker Hub's canonical domain, as references name it.
const DEFAULT_DOMAIN: &str = "docker.io";
/// The old name of Docker Hub, normalized to [`DEFAULT_DOMAIN`].
const LEGACY_DEFAULT_DOMAIN: &str = "index.docker.io";
/// The host that actually serves Docker Hub's registry API.
const DEFAULT_API_HOST: &str = "registry-1.docker.io";
/// The namespace of Docker Hub's official images.
const OFFICIAL_REPO_PREFIX: &str = "library/";
const DEFAULT_TAG: &str = "latest";
/// The longest repository path (without the domain), as distribution/reference
/// v0.6 checks it.
const REPOSITORY_NAME_MAX: usize = 255;

// distribution/reference's error texts.
const ERR_INVALID_FORMAT: &str = "invalid reference format";
const ERR_TAG_INVALID_FORMAT: &str = "invalid tag format";
const ERR_NAME_EMPTY: &str = "repository name must have at least one component";
const ERR_NAME_UPPERCASE: &str = "repository name must be lowercase";
const ERR_NAME_TOO_LONG: &str = "repository name must not be more than 255 characters";
// go-digest's error texts.
const ERR_DIGEST_FORMAT: &str = "invalid checksum digest format";
const ERR_DIGEST_LENGTH: &str = "invalid checksum digest length";
const ERR_DIGEST_UNSUPPORTED: &str = "unsupported digest algorithm";

/// A normalized image reference: registry, repository path, and a tag
/// and/or a digest (a tag, "latest" by default, when no digest was given).
#[derive(Clone, PartialEq, Eq, Hash, Debug)]
pub struct Reference {
    registry: String,
    repository: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

impl Reference {
    /// Parses what a user typed, the way `docker pull` does:
    /// "busybox" → docker.io/library/busybox:latest;
    /// "localhost:5000/a/b@sha256:..." keeps the digest and gets no tag;
    /// a reference docker refuses gets docker's error text.
    pub fn parse(text: &str) -> Result<Reference> {
        parse_normalized(text).map_err(|message| Error::InvalidReference(message.to_string()))
    }

    /// The registry's domain as references name it: "docker.io",
    /// "localhost:5000", "[::1]:5000".
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The repository path inside the registry: "library/busybox".
    pub fn repository(&self) -> &str {
        &self.repository
    }

    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn digest(&self) -> Option<&Digest> {
        self.digest.as_ref()
    }

    /// What the registry API takes as the manifest reference: the digest if
    /// there is one, else the tag ("latest" by default).
    pub fn api_reference(&self) -> String {
        match (&self.digest, &self.tag) {
            (Some(digest), _) => digest.to_string(),
            (None, Some(tag)) => tag.clone(),
            (None, None) => DEFAULT_TAG.to_string(),
        }
    }

    /// The full name without tag or digest: "docker.io/library/busybox".
    pub fn name(&self) -> String {
        format!("{}/{}", self.registry, self.repository)
    }

    /// "docker.io/library/busybox:latest", "...@sha256:...", or both
    /// "...:tag@sha256:..." when both were given.
    pub fn full(&self) -> String {
        let mut text = self.name();
        if let Some(tag) = &self.tag {
            text.push(':');
            text.push_str(tag);
        }
        if let Some(digest) = &self.digest {
            text.push('@');
            text.push_str(&digest.to_string());
        }
        text
    }

    /// Docker's short form, as `docker images` shows the REPOSITORY column:
    /// "busybox" for docker.io/library/busybox, "user/app" for
    /// docker.io/user/app, "localhost:5000/a" otherwise. No tag.
    pub fn familiar_name(&self) -> String {
        if self.registry != DEFAULT_DOMAIN {
            return self.name();
        }
        match self.repository.strip_prefix(OFFICIAL_REPO_PREFIX) {
            Some(rest) if !rest.contains('/') => rest.to_string(),
            _ => self.repository.clone(),
        }
    }

    /// The host (and port) to talk to for this registry: docker.io's API is
    /// served by "registry-1.docker.io".
    pub fn api_host(&self) -> &str {
        if self.registry == DEFAULT_DOMAIN {
            DEFAULT_API_HOST
        } else {
            &self.registry
        }
    }

    /// The same repository with `tag`; a digest, if any, is kept (as
    /// distribution/reference's `WithTag` does).
    pub fn with_tag(&self, tag: &str) -> Result<Reference> {
        if !is_tag(tag) {
            return Err(Error::InvalidReference(ERR_TAG_INVALID_FORMAT.to_string()));
        }
        Ok(Reference {
            tag: Some(tag.to_string()),
            ..self.clone()
        })
    }
}

impl fmt::Display for Reference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.full())
    }
}

impl FromStr for Reference {
    type Err = Error;

    fn from_str(text: &str) -> Result<Reference> {
        Reference::parse(text)
    }
}

/// `ParseNormalizedNamed` + `TagNameOnly`; the error is docker's text.
fn parse_normalized(text: &str) -> std::result::Result<Reference, String> {
    if is_identifier(text) {
        return Err(format!(
            "invalid repository name ({text}), cannot specify 64-byte hexadecimal strings"
        ));
    }
    let (domain, remainder) = split_docker_domain(text);
    let remote = remainder.split(':').next().unwrap_or_default();
    if remote.to_lowercase() != remote {
        return Err(format!(
            "invalid reference format: repository name ({remote}) must be lowercase"
        ));
    }
    let parsed = parse(&format!("{domain}/{remainder}"))?;
    // Docker accepts a first component that looked like a domain to
    // splitDockerDomain but is not one by the grammar ("foo_bar.com/x"),
    // and ends up with a name that has no domain at all, which no registry
    // can serve; keel refuses it up front.
    if parsed.domain.is_empty() {
        return Err(ERR_INVALID_FORMAT.to_string());
    }
    let tag = match (&parsed.tag, &parsed.digest) {
        (None, None) => Some(DEFAULT_TAG.to_string()),
        (tag, _) => tag.clone(),
    };
    Ok(Reference {
        registry: parsed.domain,
        repository: parsed.path,
        tag,
        digest: parsed.digest,
    })
}

/// `splitDockerDomain`: the first component is a domain if it is
/// "localhost", contains '.' or ':', or has uppercase letters (uppercase is
/// never valid in a path); otherwise the reference is on Docker Hub, where
/// single-component names are official images under "library/".
fn split_docker_domain(name: &str) -> (&str, String) {
    let Some((maybe_domain, maybe_remote)) = name.split_once('/') else {
        return (DEFAULT_DOMAIN, format!("{OFFICIAL_REPO_PREFIX}{name}"));
    };
    let (domain, remote) = if maybe_domain == "localhost" {
        (maybe_domain, maybe_remote)
    } else if maybe_domain == LEGACY_DEFAULT_DOMAIN {
        (DEFAULT_DOMAIN, maybe_remote)
    } else if maybe_domain.contains(['.', ':']) || maybe_domain.to_lowercase() != maybe_domain {
        (maybe_domain, maybe_remote)
    } else {
        (DEFAULT_DOMAIN, name)
    };
    if domain == DEFAULT_DOMAIN && !remote.contains('/') {
        return (domain, format!("{OFFICIAL_REPO_PREFIX}{remote}"));
    }
    (domain, remote.to_string())
}

/// What distribution/reference's `Parse` finds in a reference.
struct Parsed {
    domain: String,
    path: String,
    tag: Option<String>,
    digest: Option<Digest>,
}

/// distribution/reference's `Parse`, with its errors in their order.
fn parse(text: &str) -> std::result::Result<Parsed, String> {
    if text.is_empty() {
        return Err(ERR_NAME_EMPTY.to_string());
    }
    let Some(captures) = match_reference(text) else {
        let lower = text.to_lowercase();
        if lower != text && match_reference(&lower).is_some() {
            return Err(ERR_NAME_UPPERCASE.to_string());
        }
        return Err(ERR_INVALID_FORMAT.to_string());
    };
    let (domain, path) = split_name(captures.name).ok_or(ERR_INVALID_FORMAT)?;
    if path.len() > REPOSITORY_NAME_MAX {
        return Err(ERR_NAME_TOO_LONG.to_string());
    }
    let digest = match captures.digest {
        Some(digest) => Some(parse_digest(digest)?),
        None => None,
    };
    Ok(Parsed {
        domain: domain.to_string(),
        path: path.to_string(),
        tag: captures.tag.map(str::to_string),
        digest,
    })
}

/// The captures of `^(name)(?::(tag))?(?:@(digest))?$`.
struct Captures<'a> {
    name: &'a str,
    tag: Option<&'a str>,
    digest: Option<&'a str>,
}

/// Matches the whole reference grammar. '@' appears only before the
/// digest, and a ':' after the last '/' can only start the tag (a name has
/// ':' only in its domain, which is always followed by a '/'), so the split
/// is unique.
fn match_reference(text: &str) -> Option<Captures<'_>> {
    let (before, digest) = match text.split_once('@') {
        Some((before, digest)) => (before, Some(digest)),
        None => (text, None),
    };
    if let Some(digest) = digest
        && !is_reference_digest(digest)
    {
        return None;
    }
    let last_start = before.rfind('/').map_or(0, |slash| slash + 1);
    let (name, tag) = match before[last_start..].find(':') {
        Some(colon) => {
            let colon = last_start + colon;
            (&before[..colon], Some(&before[colon + 1..]))
        }
        None => (before, None),
    };
    if let Some(tag) = tag
        && !is_tag(tag)
    {
        return None;
    }
    split_name(name)?;
    Some(Captures { name, tag, digest })
}

/// `^(?:(domain-and-port)/)?(remote-name)$`: the domain, if the first
/// component is one (the regexp's optional group is greedy), and the path.
fn split_name(name: &str) -> Option<(&str, &str)> {
    if let Some((first, rest)) = name.split_once('/')
        && is_domain_and_port(first)
        && is_remote_name(rest)
    {
        return Some((first, rest));
    }
    is_remote_name(name).then_some(("", name))
}

/// `path-component ['/' path-component]*`
fn is_remote_name(text: &str) -> bool {
    text.split('/').all(is_path_component)
}

/// `[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*`
fn is_path_component(text: &str) -> bool {
    let bytes = text.as_bytes();
    let alphanumeric = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let mut i = 0;
    loop {
        let start = i;
        while i < bytes.len() && alphanumeric(bytes[i]) {
            i += 1;
        }
        if i == start {
            return false;
        }
        if i == bytes.len() {
            return true;
        }
        let start = i;
        while i < bytes.len() && !alphanumeric(bytes[i]) {
            i += 1;
        }
        match &bytes[start..i] {
            b"." | b"_" | b"__" => {}
            separator if separator.iter().all(|&b| b == b'-') => {}
            _ => return false,
        }
    }
}

/// `host (':' [0-9]+)?` where host is a domain name or `[ipv6]`.
fn is_domain_and_port(text: &str) -> bool {
    let (host_ok, rest) = if let Some(inner) = text.strip_prefix('[') {
        let Some(end) = inner.find(']') else {
            return false;
        };
        let address = &inner[..end];
        let valid =
            !address.is_empty() && address.bytes().all(|b| b.is_ascii_hexdigit() || b == b':');
        (valid, &inner[end + 1..])
    } else {
        let end = text.find(':').unwrap_or(text.len());
        (
            text[..end].split('.').all(is_domain_component),
            &text[end..],
        )
    };
    let port_ok = rest.is_empty()
        || rest
            .strip_prefix(':')
            .is_some_and(|port| !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()));
    host_ok && port_ok
}

/// `[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9]`
fn is_domain_component(text: &str) -> bool {
    let bytes = text.as_bytes();
    match (bytes.first(), bytes.last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || *b == b'-')
        }
        _ => false,
    }
}

/// `[\w][\w.-]{0,127}`
fn is_tag(text: &str) -> bool {
    let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let bytes = text.as_bytes();
    match bytes.split_first() {
        Some((&first, rest)) => {
            word(first)
                && rest.len() <= 127
                && rest.iter().all(|&b| word(b) || b == b'.' || b == b'-')
        }
        None => false,
    }
}

/// The reference grammar's digest:
/// `[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*[:][[:xdigit:]]{32,}`
fn is_reference_digest(text: &str) -> bool {
    let Some((algorithm, hex)) = text.split_once(':') else {
        return false;
    };
    let component = |part: &str| {
        let mut bytes = part.bytes();
        bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric())
    };
    algorithm.split(['-', '_', '+', '.']).all(component)
        && hex.len() >= 32
        && hex.bytes().all(|b| b.is_ascii_hexdigit())
}

/// go-digest's `Parse` of a digest that matched the reference grammar,
/// with its errors. sha384, which go-digest knows, is not supported by
/// keel's [`Digest`].
fn parse_digest(text: &str) -> std::result::Result<Digest, String> {
    let (algorithm, encoded) = text.split_once(':').ok_or(ERR_DIGEST_FORMAT)?;
    let hex_len = match algorithm {
        "sha256" => 64,
        "sha512" => 128,
        _ if is_go_digest(text) => return Err(ERR_DIGEST_UNSUPPORTED.to_string()),
        _ => return Err(ERR_DIGEST_FORMAT.to_string()),
    };
    if encoded.len() != hex_len {
        return Err(ERR_DIGEST_LENGTH.to_string());
    }
    text.parse().map_err(|_| ERR_DIGEST_FORMAT.to_string())
}

/// go-digest's `DigestRegexpAnchored`:
/// `^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+$`
fn is_go_digest(text: &str) -> bool {
    let Some((algorithm, encoded)) = text.split_once(':') else {
        return false;
    };
    let component = |part: &str| {
        !part.is_empty()
            && part
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
    };
    algorithm.split(['.', '+', '_', '-']).all(component)
        && !encoded.is_empty()
        && encoded
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'=' || b == b'_' || b == b'-')
}

/// `^[a-f0-9]{64}$`: an image id, which docker refuses as a name.
fn is_identifier(text: &str) -> bool {
    text.len() == 64
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHA256_F: &str =
        "sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff";
    const SHA256_DBCC: &str =
        "sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c";

    fn full(text: &str) -> String {
        match Reference::parse(text) {
            Ok(reference) => reference.full(),
            Err(err) => panic!("{text:?} should parse: {err}"),
        }
    }

    fn error(text: &str) -> String {
        match Reference::parse(text) {
            Ok(reference) => panic!("{text:?} should fail, got {reference}"),
            Err(Error::InvalidReference(message)) => message,
            Err(other) => panic!("{text:?}: wrong error kind {other:?}"),
        }
    }

    /// Valid references and their normalized full form, from
    /// distribution/reference's normalize_test.go and reference_test.go.
    #[test]
    fn normalizes_like_docker() {
        let long_ok = format!("{}a:tag-puts-this-over-max", "a/".repeat(127));
        let long_ok_full = format!("docker.io/{long_ok}");
        let sha512 = format!("sha512:{}", "f".repeat(128));
        let with_sha512 = format!("xn--7o8h.com/myimage:xn--7o8h.com@{sha512}");
        let cases: Vec<(&str, &str)> = vec![
            ("docker/docker", "docker.io/docker/docker:latest"),
            ("library/debian", "docker.io/library/debian:latest"),
            ("debian", "docker.io/library/debian:latest"),
            ("busybox", "docker.io/library/busybox:latest"),
            ("docker.io/docker/docker", "docker.io/docker/docker:latest"),
            (
                "docker.io/library/debian",
                "docker.io/library/debian:latest",
            ),
            ("docker.io/debian", "docker.io/library/debian:latest"),
            (
                "index.docker.io/docker/docker",
                "docker.io/docker/docker:latest",
            ),
            (
                "index.docker.io/library/debian",
                "docker.io/library/debian:latest",
            ),
            ("index.docker.io/debian", "docker.io/library/debian:latest"),
            (
                "127.0.0.1:5000/docker/docker",
                "127.0.0.1:5000/docker/docker:latest",
            ),
            (
                "127.0.0.1:5000/library/debian",
                "127.0.0.1:5000/library/debian:latest",
            ),
            ("127.0.0.1:5000/debian", "127.0.0.1:5000/debian:latest"),
            ("192.168.0.1", "docker.io/library/192.168.0.1:latest"),
            ("192.168.0.1:80", "docker.io/library/192.168.0.1:80"),
            ("192.168.0.1:8/debian", "192.168.0.1:8/debian:latest"),
            (
                "192.168.0.2:25000/debian",
                "192.168.0.2:25000/debian:latest",
            ),
            (
                "thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev",
                "docker.io/library/thisisthesongthatneverendsitgoesonandonandonthisisthesongthatnev:latest",
            ),
            ("[fc00::1]:5000/docker", "[fc00::1]:5000/docker:latest"),
            (
                "[fc00::1]:5000/docker/docker",
                "[fc00::1]:5000/docker/docker:latest",
            ),
            (
                "[fc00:1:2:3:4:5:6:7]:5000/library/debian",
                "[fc00:1:2:3:4:5:6:7]:5000/library/debian:latest",
            ),
            (
                "docker.io/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a",
                "docker.io/library/1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a:latest",
            ),
            ("Docker/docker", "Docker/docker:latest"),
            ("DOCKER/docker", "DOCKER/docker:latest"),
            (
                "docker-rules/docker",
                "docker.io/docker-rules/docker:latest",
            ),
            (
                "docker---rules/docker",
                "docker.io/docker---rules/docker:latest",
            ),
            ("doc/docker", "docker.io/doc/docker:latest"),
            ("d/docker", "docker.io/d/docker:latest"),
            ("jess/t", "docker.io/jess/t:latest"),
            ("dock__er/docker", "docker.io/dock__er/docker:latest"),
            ("library/foo/bar", "docker.io/library/foo/bar:latest"),
            ("store/foo/bar", "docker.io/store/foo/bar:latest"),
            (
                "example.com:8000/privatebasee",
                "example.com:8000/privatebasee:latest",
            ),
            ("test_com/foo", "docker.io/test_com/foo:latest"),
            ("test.com:8080/foo", "test.com:8080/foo:latest"),
            ("test-com:8080/foo", "test-com:8080/foo:latest"),
            ("xn--n3h.com:18080/foo", "xn--n3h.com:18080/foo:latest"),
            ("test.com:5000", "docker.io/library/test.com:5000"),
            ("test.com:tag", "docker.io/library/test.com:tag"),
            (
                "lowercase:Uppercase",
                "docker.io/library/lowercase:Uppercase",
            ),
            ("foo_bar.com:8080", "docker.io/library/foo_bar.com:8080"),
            ("foo/foo_bar.com:8080", "docker.io/foo/foo_bar.com:8080"),
            (
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
                "sub-dom1.foo.com/bar/baz/quux:some-long-tag",
            ),
            (
                "b.gcr.io/test.example.com/my-app:test.example.com",
                "b.gcr.io/test.example.com/my-app:test.example.com",
            ),
            (&with_sha512, &with_sha512),
            ("[2001:db8::1]/repo", "[2001:db8::1]/repo:latest"),
            ("[2001:db8::]:5000/repo", "[2001:db8::]:5000/repo:latest"),
            ("[::1]:5000/repo", "[::1]:5000/repo:latest"),
            (
                "[2001:db8::1]:5000/repo:tag@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                "[2001:db8::1]:5000/repo:tag@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
            ),
            (
                "busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa",
                "docker.io/library/busybox:latest@sha256:86e0e091d0da6bde2456dbb48306f3956bbeb2eae1b5b9a43045843f69fe4aaa",
            ),
            (
                "redis@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c",
                "docker.io/library/redis@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c",
            ),
            (
                "dmcgowan/myapp@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c",
                "docker.io/dmcgowan/myapp@sha256:dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9c",
            ),
            (
                "docker.io/mcgowan/myapp:latest",
                "docker.io/mcgowan/myapp:latest",
            ),
            (
                "dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9",
                "docker.io/library/dbcc1c35ac38df41fd2f5e4130b32ffdb93ebae8b3dbe638c23575912276fc9:latest",
            ),
            ("dbcc1", "docker.io/library/dbcc1:latest"),
            ("localhost", "docker.io/library/localhost:latest"),
            ("localhost:5000", "docker.io/library/localhost:5000"),
            ("localhost/foo", "localhost/foo:latest"),
            ("localhost:5000/a/b:v1", "localhost:5000/a/b:v1"),
            (&long_ok, &long_ok_full),
        ];
        assert!(cases.len() >= 40);
        for (input, expected) in cases {
            assert_eq!(full(input), expected, "{input}");
        }
    }

    /// Invalid references and docker's exact message for each.
    #[test]
    fn refuses_with_dockers_text() {
        let too_long_namespace = "this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255_this_is_not_a_valid_namespace_because_its_lenth_is_greater_than_255/docker";
        let too_long_path = format!("{}a:tag", "a/".repeat(128));
        let long_tag = format!("busybox:{}", "t".repeat(129));
        let uppercase_digest = format!("busybox@sha256:{}", "F".repeat(64));
        let id = "1a3f5e7d9c1b3a5f7e9d1c3b5a7f9e1d3c5b7a9f1e3d5d7c9b1a3f5e7d9c1b3a";
        let id_message =
            format!("invalid repository name ({id}), cannot specify 64-byte hexadecimal strings");
        let format = ERR_INVALID_FORMAT;
        let cases: Vec<(&str, &str)> = vec![
            ("", format),
            ("https://github.com/docker/docker", format),
            ("-docker", format),
            ("-docker/docker", format),
            ("-docker.io/docker/docker", format),
            ("docker///docker", format),
            ("docker.io/docker///docker", format),
            ("[fc00::1]", format),
            ("[fc00::1]:5000", format),
            ("fc00::1:5000/debian", format),
            ("[fe80::1%eth0]:5000/debian", format),
            ("[2001:db8:3:4::192.0.2.33]:5000/debian", format),
            ("[fe80::1%@invalidzone]:5000/repo", format),
            ("[2001:db8::1]:tag", format),
            ("docker-/docker", format),
            ("-docker-/docker", format),
            ("____/____", format),
            ("_docker/_docker", format),
            ("dock..er/docker", format),
            ("dock_.er/docker", format),
            ("dock-.er/docker", format),
            ("docker/", format),
            (":justtag", format),
            (
                "@sha256:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                format,
            ),
            ("aa/asdf$$^/aa", format),
            ("a:b:c", format),
            ("busybox:-tag", format),
            (&long_tag, format),
            ("foo_bar.com/x", format),
            (
                "Foo",
                "invalid reference format: repository name (library/Foo) must be lowercase",
            ),
            (
                "Uppercase:tag",
                "invalid reference format: repository name (library/Uppercase) must be lowercase",
            ),
            (
                "docker/Docker",
                "invalid reference format: repository name (docker/Docker) must be lowercase",
            ),
            (
                "docker.io/docker/Docker",
                "invalid reference format: repository name (docker/Docker) must be lowercase",
            ),
            (
                "test:5000/Uppercase/lowercase:tag",
                "invalid reference format: repository name (Uppercase/lowercase) must be lowercase",
            ),
            ("Foo_Bar/x", ERR_NAME_UPPERCASE),
            (too_long_namespace, ERR_NAME_TOO_LONG),
            (&too_long_path, ERR_NAME_TOO_LONG),
            (
                "repo@sha256:ffffffffffffffffffffffffffffffffff",
                ERR_DIGEST_LENGTH,
            ),
            (
                "validname@invaliddigest:ffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff",
                ERR_DIGEST_UNSUPPORTED,
            ),
            (&uppercase_digest, ERR_DIGEST_FORMAT),
            (id, &id_message),
        ];
        assert!(cases.len() >= 40);
        for (input, expected) in cases {
            assert_eq!(error(input), expected, "{input:?}");
        }
    }

    /// normalize_test.go's TestParseRepositoryInfo: domain, path and
    /// familiar name.
    #[test]
    fn parts_and_familiar_names() {
        let cases = [
            ("fooo/bar", "docker.io", "fooo/bar", "fooo/bar"),
            (
                "index.docker.io/fooo/bar",
                "docker.io",
                "fooo/bar",
                "fooo/bar",
            ),
            ("ubuntu", "docker.io", "library/ubuntu", "ubuntu"),
            ("library/ubuntu", "docker.io", "library/ubuntu", "ubuntu"),
            (
                "nonlibrary/ubuntu",
                "docker.io",
                "nonlibrary/ubuntu",
                "nonlibrary/ubuntu",
            ),
            (
                "other/library",
                "docker.io",
                "other/library",
                "other/library",
            ),
            (
                "127.0.0.1:8000/private/moonbase",
                "127.0.0.1:8000",
                "private/moonbase",
                "127.0.0.1:8000/private/moonbase",
            ),
            (
                "example.com/privatebase",
                "example.com",
                "privatebase",
                "example.com/privatebase",
            ),
            (
                "ubuntu-12.04-base",
                "docker.io",
                "library/ubuntu-12.04-base",
                "ubuntu-12.04-base",
            ),
            ("docker.io/foo", "docker.io", "library/foo", "foo"),
            (
                "library/foo/bar",
                "docker.io",
                "library/foo/bar",
                "library/foo/bar",
            ),
            ("Foo/bar", "Foo", "bar", "Foo/bar"),
            (
                "localhost:5000/a",
                "localhost:5000",
                "a",
                "localhost:5000/a",
            ),
        ];
        for (input, registry, repository, familiar) in cases {
            let reference = Reference::parse(input).unwrap();
            assert_eq!(reference.registry(), registry, "{input}");
            assert_eq!(reference.repository(), repository, "{input}");
            assert_eq!(reference.familiar_name(), familiar, "{input}");
        }
    }

    #[test]
    fn tags_digests_and_api() {
        let busybox = Reference::parse("busybox").unwrap();
        assert_eq!(busybox.tag(), Some("latest"));
        assert_eq!(busybox.digest(), None);
        assert_eq!(busybox.api_reference(), "latest");
        assert_eq!(busybox.api_host(), "registry-1.docker.io");
        assert_eq!(busybox.name(), "docker.io/library/busybox");
        assert_eq!(busybox.to_string(), "docker.io/library/busybox:latest");

        let pinned = Reference::parse(&format!("localhost:5000/a/b@{SHA256_F}")).unwrap();
        assert_eq!(pinned.tag(), None);
        assert_eq!(pinned.digest().unwrap().to_string(), SHA256_F);
        assert_eq!(pinned.api_reference(), SHA256_F);
        assert_eq!(pinned.api_host(), "localhost:5000");
        assert_eq!(pinned.full(), format!("localhost:5000/a/b@{SHA256_F}"));

        let both = Reference::parse(&format!("redis:7@{SHA256_DBCC}")).unwrap();
        assert_eq!(both.tag(), Some("7"));
        assert_eq!(both.api_reference(), SHA256_DBCC);

        let retagged = busybox.with_tag("1.36").unwrap();
        assert_eq!(retagged.full(), "docker.io/library/busybox:1.36");
        assert_eq!(
            pinned.with_tag("TAG5").unwrap().full(),
            format!("localhost:5000/a/b:TAG5@{SHA256_F}")
        );
        for bad in ["", "-foo", ".x", "a:b", &"t".repeat(129)] {
            let err = busybox.with_tag(bad).unwrap_err().to_string();
            assert_eq!(err, "invalid tag format", "{bad:?}");
        }
        assert!(busybox.with_tag(&"t".repeat(128)).is_ok());

        let parsed: Reference = "docker.io/library/busybox:latest".parse().unwrap();
        assert_eq!(parsed, busybox);
    }

    #[test]
    fn grammar_pieces() {
        for good in ["a", "a.b", "a_b", "a__b", "a---b", "0", "a.b-c_d"] {
            assert!(is_path_component(good), "{good}");
        }
        for bad in [
            "", "A", "a.", ".a", "a..b", "a___b", "a_-b", "a-", "a/b", "é",
        ] {
            assert!(!is_path_component(bad), "{bad}");
        }
        for good in [
            "a",
            "a.b",
            "A-b.c",
            "a:1",
            "[::1]",
            "[::1]:5000",
            "1.2.3.4:80",
        ] {
            assert!(is_domain_and_port(good), "{good}");
        }
        for bad in [
            "", "-a", "a-", "a..b", "a:", "a:x", "[]", "[::1", "[::1]x", "[g::1]", "a_b",
        ] {
            assert!(!is_domain_and_port(bad), "{bad}");
        }
    }
}
