//! What docker's create options mean, worked out once for every face: the
//! CLI's flags and the API's `HostConfig` both arrive here as docker's own
//! strings (`seccomp=unconfined`, `max-size=10m`, `net.ipv4.ip_forward=1`,
//! network names) and leave as the parts of a [`ContainerSpec`], with the
//! same checks and the same messages.
//!
//! What is the client's stays with the client: a seccomp profile *file* is
//! read by the CLI and arrives here as its JSON, as docker's CLI sends it.

use std::collections::BTreeMap;

use crate::error::{Error, Result};
use crate::spec::{
    self, HealthSpec, LogOptions, NetworkAttachment, NetworkMode, RestartPolicy, SeccompChoice,
};

/// `--security-opt` / `HostConfig.SecurityOpt`: the seccomp choice and
/// no-new-privileges. `seccomp=` takes `unconfined`, `builtin` or a
/// profile's JSON; `apparmor=` and `label=` are accepted and ignored (keel
/// has neither).
pub fn security_options(options: &[String]) -> Result<(SeccompChoice, bool)> {
    let mut seccomp = SeccompChoice::Default;
    let mut no_new_privileges = false;
    for option in options {
        let (key, value) = option
            .split_once(['=', ':'])
            .map(|(k, v)| (k, Some(v)))
            .unwrap_or((option, None));
        match (key, value) {
            ("seccomp", Some("unconfined")) => seccomp = SeccompChoice::Unconfined,
            ("seccomp", Some("builtin")) => seccomp = SeccompChoice::Default,
            ("seccomp", Some(text)) if text.trim_start().starts_with('{') => {
                seccomp = SeccompChoice::Profile(text.to_string())
            }
            ("seccomp", Some(_)) => {
                return Err(Error::invalid(
                    "seccomp= takes unconfined, builtin or a profile's JSON",
                ));
            }
            ("no-new-privileges", None | Some("true")) => no_new_privileges = true,
            ("no-new-privileges", Some("false")) => no_new_privileges = false,
            ("apparmor" | "label", _) => {}
            _ => {
                return Err(Error::invalid(format!(
                    "invalid --security-opt: {option:?}"
                )));
            }
        }
    }
    Ok((seccomp, no_new_privileges))
}

/// `--log-driver`/`--log-opt` / `HostConfig.LogConfig`: keel writes
/// json-file logs (docker's default); `max-size` and `max-file` rotate them.
/// An empty driver is the default.
pub fn log_options<'a>(
    driver: &str,
    options: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<LogOptions> {
    if !driver.is_empty() && driver != "json-file" {
        return Err(Error::invalid(format!(
            "log driver {driver:?} is not supported: keel writes json-file logs"
        )));
    }
    let mut log = LogOptions::default();
    for (key, value) in options {
        match key {
            "max-size" if value == "-1" => log.max_size = Some(0),
            "max-size" => log.max_size = Some(spec::parse_size(value)?),
            "max-file" => {
                log.max_file = Some(
                    value
                        .parse()
                        .map_err(|_| Error::invalid(format!("invalid max-file: {value}")))?,
                )
            }
            _ => {
                return Err(Error::invalid(format!(
                    "unknown log opt '{key}' for json-file log driver"
                )));
            }
        }
    }
    Ok(log)
}

/// `--sysctl KEY=VALUE`, several.
pub fn sysctls(entries: &[String]) -> Result<BTreeMap<String, String>> {
    let mut sysctls = BTreeMap::new();
    for s in entries {
        let (k, v) = s
            .split_once('=')
            .ok_or_else(|| Error::invalid(format!("invalid sysctl: {s:?} (KEY=VALUE)")))?;
        sysctls.insert(k.to_string(), v.to_string());
    }
    Ok(sysctls)
}

/// `--label KEY[=VALUE]`, several.
pub fn labels(entries: &[String]) -> BTreeMap<String, String> {
    entries
        .iter()
        .map(|label| {
            let (key, value) = label.split_once('=').unwrap_or((label, ""));
            (key.to_string(), value.to_string())
        })
        .collect()
}

/// The health flags: `--no-healthcheck`, or any of `--health-*` (durations
/// as docker writes them: `30s`, `1m30s`); none of them: the image's.
#[derive(Debug, Clone, Default)]
pub struct HealthFlags {
    pub none: bool,
    pub cmd: Option<String>,
    pub interval: Option<String>,
    pub timeout: Option<String>,
    pub start_period: Option<String>,
    pub retries: Option<u32>,
}

impl HealthFlags {
    pub fn to_spec(&self) -> Result<Option<HealthSpec>> {
        if self.none {
            return Ok(Some(HealthSpec {
                test: vec!["NONE".into()],
                interval_ms: None,
                timeout_ms: None,
                start_period_ms: None,
                retries: None,
            }));
        }
        if self.cmd.is_none()
            && self.interval.is_none()
            && self.timeout.is_none()
            && self.start_period.is_none()
            && self.retries.is_none()
        {
            return Ok(None);
        }
        let duration = |d: &Option<String>| d.as_deref().map(spec::parse_duration_ms).transpose();
        Ok(Some(HealthSpec {
            test: self
                .cmd
                .as_ref()
                .map(|c| vec!["CMD-SHELL".to_string(), c.clone()])
                .unwrap_or_default(),
            interval_ms: duration(&self.interval)?,
            timeout_ms: duration(&self.timeout)?,
            start_period_ms: duration(&self.start_period)?,
            retries: self.retries,
        }))
    }
}

/// The network a container asks for, as `--network` names it (several for
/// several networks; `host`, `none`, `container:NAME` alone), with
/// `--network-alias`, `--ip` and `--ip6` for the first.
#[derive(Debug, Clone, Default)]
pub struct NetworkChoice {
    pub names: Vec<String>,
    pub aliases: Vec<String>,
    pub ipv4: Option<String>,
    pub ipv6: Option<String>,
}

/// What [`NetworkChoice::resolve`] makes: the mode, the bridge networks,
/// and whether published ports are being dropped (docker warns).
#[derive(Debug, Clone)]
pub struct Networks {
    pub mode: NetworkMode,
    pub attachments: Vec<NetworkAttachment>,
    pub ports_discarded: bool,
}

/// docker's warning when a container publishes ports on a network mode that
/// has none of its own.
pub const PORTS_DISCARDED: &str =
    "Published ports are discarded when using host, none or container network mode";

impl NetworkChoice {
    /// `publishes`: whether the request publishes ports (`-p` or `-P`).
    pub fn resolve(&self, publishes: bool) -> Result<Networks> {
        let names: Vec<&str> = if self.names.is_empty() {
            vec!["bridge"]
        } else {
            self.names.iter().map(String::as_str).collect()
        };
        let special = |n: &str| n == "host" || n == "none" || n.starts_with("container:");
        if names.len() > 1 && names.iter().any(|n| special(n)) {
            return Err(Error::invalid(
                "conflicting options: cannot attach both user-defined and non-user-defined network-modes",
            ));
        }
        let mode = match names[0] {
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            other => match other.strip_prefix("container:") {
                Some("") => {
                    return Err(Error::invalid(
                        "--network container: needs a container's name or id",
                    ));
                }
                Some(id) => NetworkMode::Container(id.to_string()),
                None => NetworkMode::Bridge,
            },
        };
        if mode != NetworkMode::Bridge {
            if !self.aliases.is_empty() || self.ipv4.is_some() || self.ipv6.is_some() {
                return Err(Error::invalid(
                    "--network-alias, --ip and --ip6 need a bridge network",
                ));
            }
            return Ok(Networks {
                mode,
                attachments: Vec::new(),
                ports_discarded: publishes,
            });
        }
        let mut attachments: Vec<NetworkAttachment> = names
            .iter()
            .map(|n| NetworkAttachment {
                name: if *n == "default" {
                    "bridge".into()
                } else {
                    n.to_string()
                },
                ..Default::default()
            })
            .collect();
        let first = &mut attachments[0];
        first.aliases = self.aliases.clone();
        first.ipv4 = self
            .ipv4
            .as_deref()
            .map(|ip| parse_ip(ip, true))
            .transpose()?;
        first.ipv6 = self
            .ipv6
            .as_deref()
            .map(|ip| parse_ip(ip, false))
            .transpose()?;
        Ok(Networks {
            mode,
            attachments,
            ports_discarded: false,
        })
    }
}

/// An address of the family asked for (`--ip`, `--ip6`, `--gateway`).
pub fn parse_ip(text: &str, v4: bool) -> Result<std::net::IpAddr> {
    let ip: std::net::IpAddr = text
        .parse()
        .map_err(|_| Error::invalid(format!("invalid IP address: {text}")))?;
    if ip.is_ipv4() != v4 {
        return Err(Error::invalid(format!(
            "invalid IP{} address: {text}",
            if v4 { "v4" } else { "v6" }
        )));
    }
    Ok(ip)
}

/// `--pull` / the API's pull on create: when the image is fetched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PullPolicy {
    #[default]
    Missing,
    Always,
    Never,
}

impl PullPolicy {
    pub fn parse(text: &str) -> Result<PullPolicy> {
        match text {
            "missing" | "" => Ok(PullPolicy::Missing),
            "always" => Ok(PullPolicy::Always),
            "never" => Ok(PullPolicy::Never),
            other => Err(Error::invalid(format!(
                "invalid pull option: '{other}': must be one of \"always\", \"missing\" or \"never\""
            ))),
        }
    }

    /// Whether to pull `image`, `present` or not in the store; an error if
    /// it is needed and the policy forbids fetching it.
    pub fn needs_pull(self, image: &str, present: bool) -> Result<bool> {
        match self {
            PullPolicy::Missing => Ok(!present),
            PullPolicy::Always => Ok(true),
            PullPolicy::Never if present => Ok(false),
            PullPolicy::Never => Err(Error::NotFound {
                kind: "image",
                name: image.to_string(),
            }),
        }
    }
}

/// Checks a request as a whole, for what no single option can see.
pub fn check(spec: &spec::ContainerSpec) -> Result<()> {
    if spec.auto_remove && spec.restart != RestartPolicy::No {
        return Err(Error::invalid("Conflicting options: --restart and --rm"));
    }
    if spec.isolation == spec::Isolation::Vm {
        // What a micro-VM cannot share with the host.
        if spec.network == spec::NetworkMode::Host {
            return Err(Error::invalid(
                "--isolation vm: a micro-VM has a network of its own (not --network host)",
            ));
        }
        if let spec::NetworkMode::Container(_) = spec.network {
            return Err(Error::invalid(
                "--isolation vm: a micro-VM cannot join another container's network",
            ));
        }
        if !spec.devices.is_empty() {
            return Err(Error::invalid(
                "--isolation vm: host devices (--device) cannot be passed to a micro-VM",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn security_options_as_docker_reads_them() {
        let (seccomp, nnp) =
            security_options(&["seccomp=unconfined".into(), "no-new-privileges".into()]).unwrap();
        assert_eq!(seccomp, SeccompChoice::Unconfined);
        assert!(nnp);
        let (seccomp, _) = security_options(&["seccomp={\"defaultAction\":1}".into()]).unwrap();
        assert!(matches!(seccomp, SeccompChoice::Profile(_)));
        assert!(security_options(&["seccomp=/a/path.json".into()]).is_err());
        let err = security_options(&["colour=blue".into()]).unwrap_err();
        assert_eq!(err.to_string(), "invalid --security-opt: \"colour=blue\"");
    }

    #[test]
    fn log_options_and_their_errors() {
        let log = log_options("", [("max-size", "1k"), ("max-file", "3")]).unwrap();
        assert_eq!((log.max_size, log.max_file), (Some(1024), Some(3)));
        assert_eq!(
            log_options("json-file", [("max-size", "-1")])
                .unwrap()
                .max_size,
            Some(0)
        );
        assert!(
            log_options("syslog", [])
                .unwrap_err()
                .to_string()
                .contains("not supported")
        );
        assert_eq!(
            log_options("json-file", [("colour", "x")])
                .unwrap_err()
                .to_string(),
            "unknown log opt 'colour' for json-file log driver"
        );
    }

    #[test]
    fn network_choices() {
        let n = NetworkChoice::default().resolve(false).unwrap();
        assert_eq!(n.mode, NetworkMode::Bridge);
        assert_eq!(n.attachments[0].name, "bridge");
        let n = NetworkChoice {
            names: vec!["host".into()],
            ..Default::default()
        }
        .resolve(true)
        .unwrap();
        assert_eq!(n.mode, NetworkMode::Host);
        assert!(n.ports_discarded);
        assert!(
            NetworkChoice {
                names: vec!["host".into(), "net1".into()],
                ..Default::default()
            }
            .resolve(false)
            .is_err()
        );
        assert!(
            NetworkChoice {
                names: vec!["net1".into()],
                ipv4: Some("fd00::1".into()),
                ..Default::default()
            }
            .resolve(false)
            .is_err()
        );
    }

    #[test]
    fn pull_policies() {
        assert!(PullPolicy::parse("sometimes").is_err());
        assert!(!PullPolicy::Missing.needs_pull("a", true).unwrap());
        assert!(PullPolicy::Always.needs_pull("a", true).unwrap());
        assert_eq!(
            PullPolicy::Never
                .needs_pull("a", false)
                .unwrap_err()
                .to_string(),
            "No such image: a"
        );
    }
}
