//! The JSON documents of images: manifests, indexes (manifest lists) and
//! image configs, OCI and Docker schema2, and platform selection.
//!
//! A document pulled from a registry is parsed for reading only: its digest
//! is over the bytes the registry sent, so callers keep those bytes and
//! never store or push a re-serialization. The types serialize for
//! documents keel builds itself (`import`, `build`, `save`).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::digest::Digest;
use crate::error::{Error, Result};

pub const MEDIA_TYPE_OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_OCI_EMPTY: &str = "application/vnd.oci.empty.v1+json";
pub const MEDIA_TYPE_OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
pub const MEDIA_TYPE_OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
pub const MEDIA_TYPE_OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
pub const MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar";
pub const MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_GZIP: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
pub const MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_ZSTD: &str =
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd";

pub const MEDIA_TYPE_DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const MEDIA_TYPE_DOCKER_MANIFEST_LIST: &str =
    "application/vnd.docker.distribution.manifest.list.v2+json";
pub const MEDIA_TYPE_DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
pub const MEDIA_TYPE_DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
pub const MEDIA_TYPE_DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
pub const MEDIA_TYPE_DOCKER_LAYER_ZSTD: &str = "application/vnd.docker.image.rootfs.diff.tar.zstd";
pub const MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP: &str =
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";
/// Docker schema1, recognized only to refuse it clearly.
pub const MEDIA_TYPE_DOCKER_SCHEMA1: &str = "application/vnd.docker.distribution.manifest.v1+json";
pub const MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED: &str =
    "application/vnd.docker.distribution.manifest.v1+prettyjws";

/// The manifest media types keel reads, for the `Accept` header of a
/// manifest request (indexes first, so a registry offers the list).
pub const MANIFEST_MEDIA_TYPES: &[&str] = &[
    MEDIA_TYPE_OCI_INDEX,
    MEDIA_TYPE_DOCKER_MANIFEST_LIST,
    MEDIA_TYPE_OCI_MANIFEST,
    MEDIA_TYPE_DOCKER_MANIFEST,
];

/// The annotation docker (buildx) puts on the attestation entries of an index.
pub const ANNOTATION_DOCKER_REFERENCE_TYPE: &str = "vnd.docker.reference.type";
pub const ATTESTATION_MANIFEST: &str = "attestation-manifest";

/// A reference to content: what it is, its digest and size.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub urls: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
}

/// How a layer blob is compressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Zstd,
}

impl Descriptor {
    /// The compression of a layer, from its media type (OCI `+gzip`/`+zstd`,
    /// Docker `.tar.gzip`/`.tar.zstd`; a plain `tar` is uncompressed).
    pub fn compression(&self) -> Compression {
        let media_type = self.media_type.as_str();
        if media_type.ends_with("+gzip") || media_type.ends_with(".gzip") {
            Compression::Gzip
        } else if media_type.ends_with("+zstd") || media_type.ends_with(".zstd") {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The same as [`Descriptor::compression`], by the name the images issue
    /// gives it.
    pub fn is_layer_compressed(&self) -> Compression {
        self.compression()
    }

    /// A layer the registry may not serve (Docker "foreign" layers, OCI
    /// "nondistributable" ones): it is fetched from its `urls` if it is
    /// fetched at all, and never pushed.
    pub fn is_non_distributable(&self) -> bool {
        self.media_type.contains(".foreign.") || self.media_type.contains(".nondistributable.")
    }

    /// An attestation (provenance, SBOM) entry of an index rather than an
    /// image for some platform.
    pub fn is_attestation(&self) -> bool {
        let annotated = self
            .annotations
            .get(ANNOTATION_DOCKER_REFERENCE_TYPE)
            .is_some_and(|kind| kind == ATTESTATION_MANIFEST);
        let unknown = self
            .platform
            .as_ref()
            .is_some_and(|platform| platform.os == "unknown" && platform.architecture == "unknown");
        annotated || unknown
    }
}

/// The platform an image runs on, in OCI's (Go's) names.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, rename = "os.features", skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            architecture: architecture.to_string(),
            os: os.to_string(),
            variant: variant.map(str::to_string),
            ..Platform::default()
        }
    }

    /// The platform keel runs on, as Go names it (GOOS/GOARCH and the
    /// variant containerd reports by default).
    pub fn current() -> Platform {
        let os = match std::env::consts::OS {
            "macos" => "darwin",
            other => other,
        };
        let little = cfg!(target_endian = "little");
        let (architecture, variant) = match std::env::consts::ARCH {
            "x86_64" => ("amd64", None),
            "x86" => ("386", None),
            "aarch64" => ("arm64", Some("v8")),
            "arm" => ("arm", Some("v7")),
            "powerpc64" if little => ("ppc64le", None),
            "powerpc64" => ("ppc64", None),
            "powerpc" => ("ppc", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            "mips64" if little => ("mips64le", None),
            "mips64" => ("mips64", None),
            "mips" if little => ("mipsle", None),
            "mips" => ("mips", None),
            "sparc64" => ("sparc64", None),
            other => (other, None),
        };
        Platform::new(os, architecture, variant)
    }

    /// Parses a `--platform` value, `os[/arch[/variant]]` (or a bare
    /// architecture), the way containerd's `platforms.Parse` does:
    /// "linux/aarch64" → linux/arm64/v8, "linux/arm" → linux/arm/v7,
    /// "linux/armhf" → linux/arm/v7, "linux/x86_64" → linux/amd64.
    pub fn parse(specifier: &str) -> Result<Platform> {
        let invalid = |why: &str| Error::msg(format!("invalid platform {specifier:?}: {why}"));
        if specifier.contains('*') {
            return Err(invalid("wildcards are not supported"));
        }
        let parts: Vec<&str> = specifier.split('/').collect();
        if parts.len() > 3 {
            return Err(invalid("expected os[/arch[/variant]]"));
        }
        for part in &parts {
            let valid = !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
            if !valid {
                return Err(invalid(&format!(
                    "{part:?} must be letters, digits, '_' or '-'"
                )));
            }
        }
        let current = Platform::current();
        let mut platform = match parts[..] {
            [single] => {
                let os = normalize_os(single);
                if is_known_os(&os) {
                    Platform { os, ..current }
                } else {
                    let (architecture, variant) = normalize_arch(single, "");
                    if !is_known_arch(&architecture) {
                        return Err(invalid("unknown operating system or architecture"));
                    }
                    Platform::new(&current.os, &architecture, none_if_empty(&variant))
                }
            }
            [os, architecture] | [os, architecture, _] => {
                let variant = parts.get(2).copied().unwrap_or("");
                let (architecture, variant) = normalize_arch(architecture, variant);
                Platform::new(&normalize_os(os), &architecture, none_if_empty(&variant))
            }
            _ => return Err(invalid("expected os[/arch[/variant]]")),
        };
        if platform.architecture == "arm64" && platform.variant.is_none() {
            platform.variant = Some("v8".to_string());
        }
        Ok(platform)
    }

    /// Whether an image for `other` runs here, with containerd's
    /// `platforms.Only` semantics: names are normalized (arm64 with or
    /// without "v8", amd64 "v1" or none), an arm/v7 host also takes v6 and
    /// v5, arm64 also takes 32-bit arm, amd64/v3 also takes v2 and v1. Unlike
    /// containerd, amd64 does not take 386.
    pub fn matches(&self, other: &Platform) -> bool {
        self.rank(other).is_some()
    }

    /// How well `other` fits this platform: 0 is the best; `None` if it does
    /// not run here.
    fn rank(&self, other: &Platform) -> Option<usize> {
        let other = other.normalized();
        self.normalized().compatible().iter().position(|candidate| {
            candidate.os == other.os
                && candidate.architecture == other.architecture
                && candidate.variant == other.variant
        })
    }

    /// containerd's `Normalize`: lowercase names, Go's architecture names,
    /// default variants dropped (arm64 "v8", amd64 "v1") or added (arm "v7").
    fn normalized(&self) -> Platform {
        let variant = self.variant.as_deref().unwrap_or("");
        let (architecture, variant) = normalize_arch(&self.architecture, variant);
        Platform {
            architecture,
            os: normalize_os(&self.os),
            variant: none_if_empty(&variant).map(str::to_string),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
        }
    }

    /// containerd's `platformVector` of a normalized platform, best first,
    /// without amd64 → 386.
    fn compatible(&self) -> Vec<Platform> {
        let with = |architecture: &str, variant: Option<String>| Platform {
            architecture: architecture.to_string(),
            variant,
            ..self.clone()
        };
        let version = |variant: &str| {
            variant
                .strip_prefix('v')
                .and_then(|v| v.parse::<u32>().ok())
        };
        let variant = self.variant.clone().unwrap_or_default();
        let mut vector = vec![self.clone()];
        match self.architecture.as_str() {
            "amd64" => {
                if let Some(level) = version(&variant).filter(|&level| level > 1) {
                    for lower in (2..level).rev() {
                        vector.push(with("amd64", Some(format!("v{lower}"))));
                    }
                    vector.push(with("amd64", None));
                }
            }
            "arm" => {
                if let Some(level) = version(&variant).filter(|&level| level > 5) {
                    for lower in (5..level).rev() {
                        vector.push(with("arm", Some(format!("v{lower}"))));
                    }
                }
            }
            "arm64" => {
                vector.clear();
                let variant = if variant.is_empty() {
                    "v8".to_string()
                } else {
                    variant
                };
                for arm64_variant in arm64_variants(&variant) {
                    let (_, normalized) = normalize_arch("arm64", &arm64_variant);
                    vector.push(with(
                        "arm64",
                        none_if_empty(&normalized).map(str::to_string),
                    ));
                }
                if vector.is_empty() {
                    vector.push(self.clone());
                }
                // Every arm64 runs 32-bit arm/v8 and below.
                let arm = with("arm", Some("v8".to_string()));
                vector.extend(arm.compatible());
            }
            _ => {}
        }
        vector
    }
}

/// arm64 variants a CPU of `variant` runs, best first (containerd's table:
/// v8.x runs v8.x..v8; v9.x runs v9.x..v9, then v8.(x+5)..v8).
fn arm64_variants(variant: &str) -> Vec<String> {
    let Some(version) = variant.strip_prefix('v') else {
        return Vec::new();
    };
    let (major, minor) = match version.split_once('.') {
        Some((major, minor)) => (major.parse::<u32>(), minor.parse::<u32>()),
        None => (version.parse::<u32>(), Ok(0)),
    };
    let (Ok(major), Ok(minor)) = (major, minor) else {
        return Vec::new();
    };
    let name = |major: u32, minor: u32| {
        if minor == 0 {
            format!("v{major}")
        } else {
            format!("v{major}.{minor}")
        }
    };
    match (major, minor) {
        (8, 0..=9) => (0..=minor).rev().map(|m| name(8, m)).collect(),
        (9, 0..=7) => {
            let mut list: Vec<String> = (0..=minor).rev().map(|m| name(9, m)).collect();
            list.extend((0..=(minor + 5).min(9)).rev().map(|m| name(8, m)));
            list
        }
        _ => Vec::new(),
    }
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = self.variant.as_deref().filter(|v| !v.is_empty()) {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

fn none_if_empty(text: &str) -> Option<&str> {
    (!text.is_empty()).then_some(text)
}

fn normalize_os(os: &str) -> String {
    match os.to_lowercase().as_str() {
        "macos" => "darwin".to_string(),
        other => other.to_string(),
    }
}

/// containerd's `normalizeArch`.
fn normalize_arch(architecture: &str, variant: &str) -> (String, String) {
    let architecture = architecture.to_lowercase();
    let variant = variant.to_lowercase();
    match architecture.as_str() {
        "i386" => ("386".to_string(), String::new()),
        "x86_64" | "x86-64" | "amd64" => {
            let variant = if variant == "v1" {
                String::new()
            } else {
                variant
            };
            ("amd64".to_string(), variant)
        }
        "aarch64" | "arm64" => {
            let variant = match variant.as_str() {
                "8" | "v8" | "v8.0" => String::new(),
                "9" | "9.0" | "v9.0" => "v9".to_string(),
                _ => variant,
            };
            ("arm64".to_string(), variant)
        }
        "armhf" => ("arm".to_string(), "v7".to_string()),
        "armel" => ("arm".to_string(), "v6".to_string()),
        "arm" => {
            let variant = match variant.as_str() {
                "" | "7" => "v7".to_string(),
                "5" | "6" | "8" => format!("v{variant}"),
                _ => variant,
            };
            ("arm".to_string(), variant)
        }
        _ => (architecture, variant),
    }
}

fn is_known_os(os: &str) -> bool {
    matches!(
        os,
        "aix"
            | "android"
            | "darwin"
            | "dragonfly"
            | "freebsd"
            | "hurd"
            | "illumos"
            | "ios"
            | "js"
            | "linux"
            | "nacl"
            | "netbsd"
            | "openbsd"
            | "plan9"
            | "solaris"
            | "windows"
            | "zos"
    )
}

fn is_known_arch(architecture: &str) -> bool {
    matches!(
        architecture,
        "386"
            | "amd64"
            | "amd64p32"
            | "arm"
            | "armbe"
            | "arm64"
            | "arm64be"
            | "ppc64"
            | "ppc64le"
            | "loong64"
            | "mips"
            | "mipsle"
            | "mips64"
            | "mips64le"
            | "mips64p32"
            | "mips64p32le"
            | "ppc"
            | "riscv"
            | "riscv64"
            | "s390"
            | "s390x"
            | "sparc"
            | "sparc64"
            | "wasm"
    )
}

/// An image manifest (OCI or Docker schema2): a config and layers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    pub config: Descriptor,
    #[serde(default)]
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subject: Option<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// An index (OCI) or manifest list (Docker): one manifest per platform.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Index {
    pub schema_version: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

impl Index {
    /// The manifest for `want`: the best-ranked compatible platform (an
    /// exact variant before an equivalent spelling, e.g. arm64 "v8" before
    /// none), the first listed among equals. Attestation entries are
    /// skipped; entries without a platform are taken only when nothing
    /// else fits.
    pub fn select(&self, want: &Platform) -> Result<&Descriptor> {
        let usable = |descriptor: &&Descriptor| {
            !descriptor.is_attestation()
                && matches!(
                    kind_of(&descriptor.media_type),
                    Some(Kind::Manifest | Kind::Index)
                )
        };
        let best = self
            .manifests
            .iter()
            .filter(usable)
            .filter_map(|descriptor| {
                let platform = descriptor.platform.as_ref()?;
                let rank = want.rank(platform)?;
                let inexact = platform.variant != want.variant;
                Some(((rank, inexact), descriptor))
            })
            .min_by_key(|(key, _)| *key)
            .map(|(_, descriptor)| descriptor);
        if let Some(descriptor) = best {
            return Ok(descriptor);
        }
        if let Some(descriptor) = self
            .manifests
            .iter()
            .filter(usable)
            .find(|descriptor| descriptor.platform.is_none())
        {
            return Ok(descriptor);
        }
        Err(Error::msg(format!(
            "no matching manifest for {want} in the manifest list entries (available: {})",
            self.available().join(", ")
        )))
    }

    /// The platforms the index offers (attestations left out), in order.
    pub fn available(&self) -> Vec<String> {
        let mut platforms: Vec<String> = Vec::new();
        for descriptor in &self.manifests {
            if descriptor.is_attestation() {
                continue;
            }
            if let Some(platform) = &descriptor.platform {
                let name = platform.to_string();
                if !platforms.contains(&name) {
                    platforms.push(name);
                }
            }
        }
        if platforms.is_empty() {
            platforms.push("none".to_string());
        }
        platforms
    }
}

/// A manifest or an index, as a registry answers a manifest request.
// One short-lived value per manifest request; boxing would only make
// matching on it clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Document {
    Manifest(Manifest),
    Index(Index),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Manifest,
    Index,
    Schema1,
}

fn kind_of(media_type: &str) -> Option<Kind> {
    match media_type {
        MEDIA_TYPE_OCI_MANIFEST | MEDIA_TYPE_DOCKER_MANIFEST => Some(Kind::Manifest),
        MEDIA_TYPE_OCI_INDEX | MEDIA_TYPE_DOCKER_MANIFEST_LIST => Some(Kind::Index),
        MEDIA_TYPE_DOCKER_SCHEMA1 | MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED => Some(Kind::Schema1),
        _ => None,
    }
}

/// Content types that say nothing about the document (some registries and
/// static file servers send these).
fn is_generic_content_type(media_type: &str) -> bool {
    matches!(
        media_type,
        "" | "application/json" | "text/plain" | "application/octet-stream"
    )
}

/// Only the fields that tell what a document is.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    schema_version: Option<i64>,
    media_type: Option<String>,
    manifests: Option<Value>,
    layers: Option<Value>,
    config: Option<Value>,
    fs_layers: Option<Value>,
}

impl Document {
    /// Parses a manifest response. What it is comes from the Content-Type
    /// the registry sent, else from the JSON's `mediaType`, else from its
    /// shape ("manifests" → index, "config"/"layers" → manifest). The
    /// resolved media type is filled into `media_type` when the JSON had
    /// none; the caller keeps `bytes` for storing and digesting.
    pub fn parse(media_type_header: Option<&str>, bytes: &[u8]) -> Result<Document> {
        let header = media_type_header
            .map(|value| value.split(';').next().unwrap_or_default().trim())
            .unwrap_or_default();
        let probe: Probe = serde_json::from_slice(bytes)
            .map_err(|err| Error::msg(format!("manifest is not a JSON object: {err}")))?;
        let body = probe.media_type.as_deref().unwrap_or_default();
        let schema1 = || {
            Error::msg(
                "Docker Image Format v1 and Docker Image manifest version 2, schema 1 \
                 (schema1) is not supported; the image must be pushed again with a \
                 current client",
            )
        };
        if kind_of(header) == Some(Kind::Schema1)
            || kind_of(body) == Some(Kind::Schema1)
            || probe.schema_version == Some(1)
            || probe.fs_layers.is_some()
        {
            return Err(schema1());
        }
        // A mediaType field must name a manifest or an index, whatever the
        // header says: the document is stored under what it names.
        if !body.is_empty() && kind_of(body).is_none() {
            return Err(Error::msg(format!(
                "unsupported manifest media type {body:?}"
            )));
        }
        let (media_type, kind) = if let Some(kind) = kind_of(header) {
            (header.to_string(), kind)
        } else if let Some(kind) = kind_of(body) {
            (body.to_string(), kind)
        } else if !is_generic_content_type(header) {
            return Err(Error::msg(format!(
                "unsupported manifest media type {header:?}"
            )));
        } else if probe.manifests.is_some() {
            (MEDIA_TYPE_OCI_INDEX.to_string(), Kind::Index)
        } else if probe.layers.is_some() || probe.config.is_some() {
            (MEDIA_TYPE_OCI_MANIFEST.to_string(), Kind::Manifest)
        } else {
            return Err(Error::msg(
                "unrecognized manifest: no media type, and neither \"manifests\" nor \"layers\"",
            ));
        };
        // The body's mediaType must not contradict the header: a document
        // that reads as an index to one party and a manifest to another is
        // how content confusion starts.
        if let Some(body_kind) = kind_of(body)
            && body_kind != kind
        {
            return Err(Error::msg(format!(
                "manifest media type {media_type:?} does not match its mediaType field {body:?}"
            )));
        }
        if probe.schema_version != Some(2) {
            return Err(Error::msg(format!(
                "unsupported manifest schemaVersion {:?} (expected 2)",
                probe.schema_version
            )));
        }
        let invalid = |err: serde_json::Error| Error::msg(format!("invalid {media_type}: {err}"));
        match kind {
            Kind::Index => {
                let mut index: Index = serde_json::from_slice(bytes).map_err(invalid)?;
                // An empty mediaType field counts as none.
                if index.media_type.as_deref().is_none_or(str::is_empty) {
                    index.media_type = Some(media_type.clone());
                }
                Ok(Document::Index(index))
            }
            _ => {
                let mut manifest: Manifest = serde_json::from_slice(bytes).map_err(invalid)?;
                if manifest.media_type.as_deref().is_none_or(str::is_empty) {
                    manifest.media_type = Some(media_type.clone());
                }
                Ok(Document::Manifest(manifest))
            }
        }
    }

    /// The resolved media type of the document.
    pub fn media_type(&self) -> &str {
        let media_type = match self {
            Document::Manifest(manifest) => &manifest.media_type,
            Document::Index(index) => &index.media_type,
        };
        media_type.as_deref().unwrap_or_default()
    }
}

/// An image config (OCI, with Docker's additions). Unknown fields are kept
/// in `extra` so that a config keel rewrites loses nothing.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(
        default,
        rename = "os.version",
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(default, rename = "os.features", skip_serializing_if = "Vec::is_empty")]
    pub os_features: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    #[serde(default)]
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    /// Docker's extra fields (container, container_config, docker_version,
    /// ...) and anything newer.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ImageConfig {
    /// The image's platform as the config states it.
    pub fn platform(&self) -> Platform {
        Platform {
            architecture: self.architecture.clone(),
            os: self.os.clone(),
            variant: self.variant.clone(),
            os_version: self.os_version.clone(),
            os_features: self.os_features.clone(),
        }
    }
}

/// The defaults for a container of the image (the config's "config").
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ContainerConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exposed_ports: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub volumes: Option<BTreeMap<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args_escaped: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub healthcheck: Option<Healthcheck>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_build: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    /// Docker's other container fields (Hostname, Tty, Image, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Docker's HEALTHCHECK, durations in nanoseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Healthcheck {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_period: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_interval: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retries: Option<i64>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> RootFs {
        RootFs {
            kind: "layers".to_string(),
            diff_ids: Vec::new(),
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub empty_layer: bool,
}

/// The OCI chain IDs of a stack of layers, the keys of their snapshots:
/// ChainID(L0) = DiffID(L0), ChainID(Ln) = sha256(ChainID(Ln-1) + " " + DiffID(Ln)).
pub fn chain_ids(diff_ids: &[Digest]) -> Vec<Digest> {
    let mut chain: Vec<Digest> = Vec::with_capacity(diff_ids.len());
    for diff_id in diff_ids {
        let next = match chain.last() {
            None => diff_id.clone(),
            Some(parent) => Digest::of(format!("{parent} {diff_id}").as_bytes()),
        };
        chain.push(next);
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    const BUSYBOX_LIST: &[u8] = include_bytes!("../tests/data/manifest/busybox-manifest-list.json");
    const OCI_INDEX: &[u8] = include_bytes!("../tests/data/manifest/oci-index-attestations.json");
    const SCHEMA2: &[u8] = include_bytes!("../tests/data/manifest/docker-schema2-manifest.json");
    const OCI_ZSTD: &[u8] = include_bytes!("../tests/data/manifest/oci-manifest-zstd.json");
    const CONFIG: &[u8] = include_bytes!("../tests/data/manifest/image-config.json");

    fn index(bytes: &[u8]) -> Index {
        match Document::parse(None, bytes).unwrap() {
            Document::Index(index) => index,
            other => panic!("expected an index, got {other:?}"),
        }
    }

    fn manifest(header: Option<&str>, bytes: &[u8]) -> Manifest {
        match Document::parse(header, bytes).unwrap() {
            Document::Manifest(manifest) => manifest,
            other => panic!("expected a manifest, got {other:?}"),
        }
    }

    fn platform(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    fn selected(index: &Index, want: &str) -> String {
        let descriptor = index.select(&platform(want)).unwrap();
        descriptor.platform.as_ref().unwrap().to_string()
    }

    #[test]
    fn parses_by_header_body_and_shape() {
        let list = Document::parse(
            Some("application/vnd.docker.distribution.manifest.list.v2+json; charset=utf-8"),
            BUSYBOX_LIST,
        )
        .unwrap();
        assert_eq!(list.media_type(), MEDIA_TYPE_DOCKER_MANIFEST_LIST);
        let Document::Index(list) = list else {
            panic!("not an index")
        };
        assert_eq!(list.manifests.len(), 9);
        assert_eq!(list.manifests[0].size, 528);

        // Generic content type: the body's mediaType decides.
        let oci = Document::parse(Some("application/json"), OCI_INDEX).unwrap();
        assert_eq!(oci.media_type(), MEDIA_TYPE_OCI_INDEX);

        let schema2 = manifest(Some(MEDIA_TYPE_DOCKER_MANIFEST), SCHEMA2);
        assert_eq!(schema2.config.media_type, MEDIA_TYPE_DOCKER_CONFIG);
        assert_eq!(schema2.layers.len(), 2);
        assert_eq!(schema2.layers[0].compression(), Compression::Gzip);
        assert!(!schema2.layers[0].is_non_distributable());
        assert!(schema2.layers[1].is_non_distributable());
        assert_eq!(schema2.layers[1].urls.len(), 1);

        // Shape only: no header, no mediaType.
        let bare = br#"{"schemaVersion":2,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855","size":0},"layers":[]}"#;
        let bare = Document::parse(None, bare).unwrap();
        assert_eq!(bare.media_type(), MEDIA_TYPE_OCI_MANIFEST);
        let bare_index = br#"{"schemaVersion":2,"manifests":[]}"#;
        assert_eq!(
            Document::parse(Some("text/plain"), bare_index)
                .unwrap()
                .media_type(),
            MEDIA_TYPE_OCI_INDEX
        );
    }

    #[test]
    fn oci_manifest_layers_and_compression() {
        let oci = manifest(None, OCI_ZSTD);
        assert_eq!(oci.media_type.as_deref(), Some(MEDIA_TYPE_OCI_MANIFEST));
        let kinds: Vec<Compression> = oci
            .layers
            .iter()
            .map(Descriptor::is_layer_compressed)
            .collect();
        assert_eq!(
            kinds,
            [Compression::Gzip, Compression::Zstd, Compression::None]
        );
        assert_eq!(
            oci.annotations["org.opencontainers.image.base.name"],
            "docker.io/library/alpine:3.20"
        );
        let descriptor = |media_type: &str| Descriptor {
            media_type: media_type.to_string(),
            ..oci.config.clone()
        };
        for (media_type, compression, foreign) in [
            (
                MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE,
                Compression::None,
                true,
            ),
            (
                MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_GZIP,
                Compression::Gzip,
                true,
            ),
            (
                MEDIA_TYPE_OCI_LAYER_NONDISTRIBUTABLE_ZSTD,
                Compression::Zstd,
                true,
            ),
            (MEDIA_TYPE_DOCKER_LAYER, Compression::None, false),
            (MEDIA_TYPE_DOCKER_LAYER_ZSTD, Compression::Zstd, false),
            (
                MEDIA_TYPE_DOCKER_LAYER_FOREIGN_GZIP,
                Compression::Gzip,
                true,
            ),
        ] {
            let d = descriptor(media_type);
            assert_eq!(d.compression(), compression, "{media_type}");
            assert_eq!(d.is_non_distributable(), foreign, "{media_type}");
        }
    }

    #[test]
    fn refuses_schema1_unknown_and_contradictions() {
        let schema1 = br#"{"schemaVersion":1,"name":"library/busybox","tag":"latest","architecture":"amd64","fsLayers":[],"history":[]}"#;
        for header in [
            None,
            Some(MEDIA_TYPE_DOCKER_SCHEMA1_SIGNED),
            Some(MEDIA_TYPE_DOCKER_SCHEMA1),
        ] {
            let err = Document::parse(header, schema1).unwrap_err().to_string();
            assert!(
                err.contains("schema 1") && err.contains("not supported"),
                "{err}"
            );
        }
        let helm = br#"{"schemaVersion":2,"mediaType":"application/vnd.cncf.helm.chart.v1+json","layers":[]}"#;
        let err = Document::parse(None, helm).unwrap_err().to_string();
        assert!(
            err.contains("application/vnd.cncf.helm.chart.v1+json"),
            "{err}"
        );
        let err = Document::parse(
            Some("application/x-weird"),
            br#"{"schemaVersion":2,"layers":[]}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("application/x-weird"), "{err}");
        let err = Document::parse(Some(MEDIA_TYPE_OCI_INDEX), OCI_ZSTD)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not match"), "{err}");
        let err = Document::parse(None, b"[1,2]").unwrap_err().to_string();
        assert!(err.contains("not a JSON object"), "{err}");
        let err = Document::parse(None, b"{}").unwrap_err().to_string();
        assert!(err.contains("unrecognized manifest"), "{err}");
        let bad_digest = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:../../etc","size":1}]}"#;
        assert!(Document::parse(None, bad_digest).is_err());
    }

    #[test]
    fn selects_from_a_manifest_list() {
        let list = index(BUSYBOX_LIST);
        assert_eq!(selected(&list, "linux/amd64"), "linux/amd64");
        assert_eq!(selected(&list, "linux/x86_64"), "linux/amd64");
        assert_eq!(selected(&list, "linux/arm64"), "linux/arm64/v8");
        assert_eq!(selected(&list, "linux/aarch64"), "linux/arm64/v8");
        assert_eq!(selected(&list, "linux/arm"), "linux/arm/v7");
        assert_eq!(selected(&list, "linux/armhf"), "linux/arm/v7");
        assert_eq!(selected(&list, "linux/armel"), "linux/arm/v6");
        assert_eq!(selected(&list, "linux/arm/v5"), "linux/arm/v5");
        assert_eq!(selected(&list, "linux/ppc64le"), "linux/ppc64le");
        assert_eq!(selected(&list, "linux/s390x"), "linux/s390x");
        assert_eq!(selected(&list, "linux/386"), "linux/386");
        let err = list
            .select(&platform("windows/amd64"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no matching manifest for windows/amd64 in the manifest list entries (available: \
             linux/amd64, linux/arm/v5, linux/arm/v6, linux/arm/v7, linux/arm64/v8, linux/386, \
             linux/ppc64le, linux/riscv64, linux/s390x)"
        );
    }

    #[test]
    fn selects_from_an_index_with_attestations() {
        let oci = index(OCI_INDEX);
        // arm64 without a variant in the index still fits an arm64/v8 host.
        let arm64 = oci.select(&platform("linux/arm64/v8")).unwrap();
        assert_eq!(arm64.digest, Digest::of(b"app-arm64"));
        let amd64 = oci.select(&platform("linux/amd64")).unwrap();
        assert_eq!(amd64.digest, Digest::of(b"app-amd64"));
        let err = oci
            .select(&platform("linux/s390x"))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "no matching manifest for linux/s390x in the manifest list entries \
             (available: linux/amd64, linux/arm64)"
        );
        assert!(oci.manifests[2].is_attestation() && oci.manifests[3].is_attestation());
        // amd64 does not fall back to 386 (unlike containerd).
        let only_386 = Index {
            manifests: vec![Descriptor {
                platform: Some(Platform::new("linux", "386", None)),
                ..oci.manifests[0].clone()
            }],
            ..oci.clone()
        };
        let err = only_386
            .select(&platform("linux/amd64"))
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("(available: linux/386)"), "{err}");
    }

    #[test]
    fn prefers_exact_variant_and_better_rank() {
        let entry = |os: &str, arch: &str, variant: Option<&str>, name: &str| Descriptor {
            media_type: MEDIA_TYPE_OCI_MANIFEST.to_string(),
            digest: Digest::of(name.as_bytes()),
            size: 1,
            urls: Vec::new(),
            annotations: BTreeMap::new(),
            platform: Some(Platform::new(os, arch, variant)),
            artifact_type: None,
        };
        let index = Index {
            schema_version: 2,
            media_type: Some(MEDIA_TYPE_OCI_INDEX.to_string()),
            manifests: vec![
                entry("linux", "arm", Some("v6"), "arm6"),
                entry("linux", "arm64", None, "bare"),
                entry("linux", "arm64", Some("v8"), "v8"),
                entry("linux", "amd64", Some("v3"), "amd64v3"),
                entry("linux", "amd64", Some("v1"), "amd64v1"),
            ],
            annotations: BTreeMap::new(),
        };
        let pick = |want: &str| index.select(&platform(want)).unwrap().digest.clone();
        assert_eq!(pick("linux/arm64/v8"), Digest::of(b"v8"));
        assert_eq!(pick("linux/arm/v7"), Digest::of(b"arm6"));
        // amd64 (v1) takes a "v1" image but not a "v3" one; amd64/v3 prefers v3.
        assert_eq!(pick("linux/amd64"), Digest::of(b"amd64v1"));
        assert_eq!(pick("linux/amd64/v3"), Digest::of(b"amd64v3"));
        assert_eq!(pick("linux/amd64/v2"), Digest::of(b"amd64v1"));
        // Only 32-bit arm left: an arm64 host takes it.
        let arm_only = Index {
            manifests: index.manifests[..1].to_vec(),
            ..index.clone()
        };
        assert_eq!(
            arm_only.select(&platform("linux/arm64")).unwrap().digest,
            Digest::of(b"arm6")
        );
        assert!(arm_only.select(&platform("linux/arm/v5")).is_err());
    }

    #[test]
    fn parses_and_matches_platforms() {
        for (text, expected) in [
            ("linux/arm64/v8", "linux/arm64/v8"),
            ("linux/arm64", "linux/arm64/v8"),
            ("linux/aarch64", "linux/arm64/v8"),
            ("linux/arm64/8", "linux/arm64/v8"),
            ("linux/x86_64", "linux/amd64"),
            ("linux/x86-64", "linux/amd64"),
            ("Linux/AMD64", "linux/amd64"),
            ("linux/amd64/v1", "linux/amd64"),
            ("linux/amd64/v3", "linux/amd64/v3"),
            ("linux/arm", "linux/arm/v7"),
            ("linux/arm/7", "linux/arm/v7"),
            ("linux/arm/v6", "linux/arm/v6"),
            ("linux/armhf", "linux/arm/v7"),
            ("linux/armel", "linux/arm/v6"),
            ("linux/i386", "linux/386"),
            ("linux/riscv64", "linux/riscv64"),
            ("macos/arm64", "darwin/arm64/v8"),
            ("arm64", "linux/arm64/v8"),
            ("s390x", "linux/s390x"),
        ] {
            assert_eq!(platform(text).to_string(), expected, "{text}");
        }
        assert_eq!(platform("linux"), Platform::current());
        assert_eq!(platform("arm").to_string(), "linux/arm/v7");
        for bad in [
            "",
            "linux/",
            "linux/amd64/v2/x",
            "linux/*",
            "linux/am d64",
            "nonsense",
        ] {
            assert!(Platform::parse(bad).is_err(), "{bad:?}");
        }

        let host = platform("linux/arm64/v8");
        assert!(host.matches(&Platform::new("linux", "arm64", None)));
        assert!(host.matches(&Platform::new("linux", "aarch64", Some("8"))));
        assert!(host.matches(&Platform::new("linux", "arm", Some("v7"))));
        assert!(!host.matches(&Platform::new("linux", "arm64", Some("v9"))));
        assert!(!host.matches(&Platform::new("linux", "amd64", None)));
        assert!(!host.matches(&Platform::new("windows", "arm64", None)));
        let amd64 = platform("linux/amd64");
        assert!(amd64.matches(&Platform::new("linux", "amd64", None)));
        assert!(amd64.matches(&Platform::new("linux", "amd64", Some("v1"))));
        assert!(!amd64.matches(&Platform::new("linux", "amd64", Some("v2"))));
        assert!(!amd64.matches(&Platform::new("linux", "386", None)));
        let v9 = Platform::new("linux", "arm64", Some("v9.2"));
        assert!(v9.matches(&Platform::new("linux", "arm64", Some("v8.7"))));
        assert!(!v9.matches(&Platform::new("linux", "arm64", Some("v8.8"))));
        assert!(v9.matches(&Platform::new("linux", "arm64", Some("v9.1"))));
        let current = Platform::current();
        assert!(current.matches(&current));
        if cfg!(target_arch = "x86_64") {
            assert_eq!(current.to_string(), "linux/amd64");
        }
    }

    #[test]
    fn image_config_round_trips_with_unknown_fields() {
        let config: ImageConfig = serde_json::from_slice(CONFIG).unwrap();
        assert_eq!(config.platform().to_string(), "linux/amd64");
        let container = config.config.as_ref().unwrap();
        assert_eq!(
            container.cmd.as_deref().unwrap(),
            ["nginx", "-g", "daemon off;"]
        );
        assert_eq!(
            container.entrypoint.as_deref().unwrap(),
            ["/docker-entrypoint.sh"]
        );
        assert_eq!(container.working_dir.as_deref(), Some("/"));
        assert_eq!(container.stop_signal.as_deref(), Some("SIGQUIT"));
        assert!(
            container
                .exposed_ports
                .as_ref()
                .unwrap()
                .contains_key("80/tcp")
        );
        assert_eq!(container.healthcheck.as_ref().unwrap().retries, Some(3));
        assert_eq!(container.extra["Tty"], Value::Bool(false));
        assert_eq!(config.rootfs.diff_ids.len(), 2);
        assert_eq!(config.history.len(), 3);
        assert!(config.history[1].empty_layer);
        assert_eq!(
            config.history[2].comment.as_deref(),
            Some("buildkit.dockerfile.v0")
        );
        assert_eq!(config.extra["docker_version"], "20.10.23");

        let written = serde_json::to_vec(&config).unwrap();
        let again: ImageConfig = serde_json::from_slice(&written).unwrap();
        assert_eq!(again, config);
        // Every field of the original survives, except nulls (OnBuild).
        let mut original: Value = serde_json::from_slice(CONFIG).unwrap();
        original["config"]
            .as_object_mut()
            .unwrap()
            .remove("OnBuild");
        let written: Value = serde_json::from_slice(&written).unwrap();
        assert_eq!(written, original);
        assert_eq!(written["moby.future-field"]["nested"][2], 3);
    }

    #[test]
    fn chain_ids_match_sha256sum() {
        let diff_ids: Vec<Digest> = [
            "sha256:5d6b639e8b6bcc01151b2df6c0ba4ee5cfdcbe7b6ed2b64fa1e79dbc5ad5b3ac",
            "sha256:7a9b2c5b4bd9c8af9d6b04b0d8d3a04ad9d7c1dbb4c6a3e2f1d0c9b8a7f6e5d4",
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        ]
        .iter()
        .map(|text| text.parse().unwrap())
        .collect();
        let chain = chain_ids(&diff_ids);
        // Computed with `printf 'sha256:5d6b... sha256:7a9b...' | sha256sum`,
        // then the same with that result and the third diff id.
        let expected = [
            diff_ids[0].to_string(),
            "sha256:be37819c4c94c15106f70a822ee9b87e5d02ae18adbc07afd0ec8b0c7f90358b".to_string(),
            "sha256:27ea798e1007969d0d8a4c003c453c7bad3be7b17398a3c747e8cd81763f069e".to_string(),
        ];
        let chain: Vec<String> = chain.iter().map(Digest::to_string).collect();
        assert_eq!(chain, expected);
        assert!(chain_ids(&[]).is_empty());
    }

    #[test]
    fn descriptors_serialize_as_the_specs() {
        let oci = manifest(None, OCI_ZSTD);
        let value = serde_json::to_value(&oci).unwrap();
        let original: Value = serde_json::from_slice(OCI_ZSTD).unwrap();
        assert_eq!(value, original);
        let list = index(BUSYBOX_LIST);
        let value = serde_json::to_value(&list.manifests[3]).unwrap();
        assert_eq!(value["platform"]["variant"], "v7");
        assert_eq!(value["mediaType"], MEDIA_TYPE_DOCKER_MANIFEST);
        let windows = Platform {
            os_version: Some("10.0.20348.2527".to_string()),
            ..Platform::new("windows", "amd64", None)
        };
        let value = serde_json::to_value(&windows).unwrap();
        assert_eq!(value["os.version"], "10.0.20348.2527");
    }
}
