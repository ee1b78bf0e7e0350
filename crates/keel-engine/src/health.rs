//! Health checks, as docker runs them: the image's HEALTHCHECK or the
//! `--health-*` flags; a probe (`CMD-SHELL cmd` through `/bin/sh -c`, or
//! `CMD arg...`) is exec'd in the container every interval; the status is
//! `starting` until the first success, `healthy` after one, `unhealthy`
//! after `retries` failures in a row (failures in the start period do not
//! count); a probe that outlives its timeout is killed and fails. The last
//! five probes are kept with their output (at most 4 KiB each).

use keel_image::manifest::ImageConfig;

use crate::db::{Health, HealthProbe};
use crate::spec::ContainerSpec;

/// docker's defaults.
pub const DEFAULT_INTERVAL_MS: u64 = 30_000;
pub const DEFAULT_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_RETRIES: u32 = 3;
/// Probes kept in the log.
pub const KEPT_PROBES: usize = 5;
/// Output kept per probe.
pub const MAX_OUTPUT: usize = 4096;

/// A container's health check, the request's settings over the image's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The process to run in the container.
    pub args: Vec<String>,
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub start_period_ms: u64,
    pub retries: u32,
}

/// The check a container has, if any (`NONE` or no test: none).
pub fn check_of(image: &ImageConfig, spec: &ContainerSpec) -> Option<Check> {
    let image_check = image
        .config
        .as_ref()
        .and_then(|c| c.healthcheck.clone())
        .unwrap_or_default();
    let flags = spec.health.clone();
    let test = match &flags {
        Some(h) if !h.test.is_empty() => h.test.clone(),
        _ => image_check.test.clone().unwrap_or_default(),
    };
    let args = match test.split_first() {
        Some((kind, rest)) if kind == "CMD" && !rest.is_empty() => rest.to_vec(),
        Some((kind, rest)) if kind == "CMD-SHELL" && !rest.is_empty() => {
            vec!["/bin/sh".to_string(), "-c".to_string(), rest.join(" ")]
        }
        _ => return None,
    };
    let nanos_to_ms = |n: Option<i64>| n.filter(|n| *n > 0).map(|n| (n / 1_000_000) as u64);
    let pick = |flag: Option<u64>, image: Option<i64>, default: u64| {
        flag.filter(|v| *v > 0)
            .or(nanos_to_ms(image))
            .unwrap_or(default)
    };
    let flags = flags.unwrap_or(crate::spec::HealthSpec {
        test: Vec::new(),
        interval_ms: None,
        timeout_ms: None,
        start_period_ms: None,
        retries: None,
    });
    Some(Check {
        args,
        interval_ms: pick(flags.interval_ms, image_check.interval, DEFAULT_INTERVAL_MS),
        timeout_ms: pick(flags.timeout_ms, image_check.timeout, DEFAULT_TIMEOUT_MS),
        start_period_ms: pick(flags.start_period_ms, image_check.start_period, 0),
        retries: flags
            .retries
            .filter(|r| *r > 0)
            .or(image_check.retries.filter(|r| *r > 0).map(|r| r as u32))
            .unwrap_or(DEFAULT_RETRIES),
    })
}

/// The container's `Config.Healthcheck` as docker's inspect shows it: the
/// flags' test and settings, each unset one taken from the image's.
pub fn config_of(
    image: &ImageConfig,
    spec: &ContainerSpec,
) -> Option<keel_image::manifest::Healthcheck> {
    let image_check = image.config.as_ref().and_then(|c| c.healthcheck.clone());
    let Some(flags) = &spec.health else {
        return image_check;
    };
    let image_check = image_check.unwrap_or_default();
    let nanos = |ms: Option<u64>| ms.filter(|v| *v > 0).map(|v| v as i64 * 1_000_000);
    Some(keel_image::manifest::Healthcheck {
        test: if flags.test.is_empty() {
            image_check.test
        } else {
            Some(flags.test.clone())
        },
        interval: nanos(flags.interval_ms).or(image_check.interval),
        timeout: nanos(flags.timeout_ms).or(image_check.timeout),
        start_period: nanos(flags.start_period_ms).or(image_check.start_period),
        start_interval: image_check.start_interval,
        retries: flags
            .retries
            .filter(|r| *r > 0)
            .map(i64::from)
            .or(image_check.retries),
        extra: Default::default(),
    })
}

/// A fresh container's health: starting, no probes yet.
pub fn starting() -> Health {
    Health {
        status: "starting".into(),
        failing_streak: 0,
        log: Vec::new(),
    }
}

/// Records one probe's result. `in_start_period`: a failure then leaves
/// the status as it is.
pub fn record(health: &mut Health, check: &Check, probe: HealthProbe, in_start_period: bool) {
    let passed = probe.exit_code == 0;
    health.log.push(probe);
    if health.log.len() > KEPT_PROBES {
        let extra = health.log.len() - KEPT_PROBES;
        health.log.drain(..extra);
    }
    if passed {
        health.failing_streak = 0;
        health.status = "healthy".into();
    } else if !in_start_period {
        health.failing_streak += 1;
        if health.failing_streak >= check.retries {
            health.status = "unhealthy".into();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_image::manifest::{ContainerConfig, Healthcheck};

    fn probe(code: i32) -> HealthProbe {
        HealthProbe {
            start: "s".into(),
            end: "e".into(),
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn checks_from_the_image_and_the_flags() {
        let image = ImageConfig {
            config: Some(ContainerConfig {
                healthcheck: Some(Healthcheck {
                    test: Some(vec!["CMD-SHELL".into(), "curl -f localhost".into()]),
                    interval: Some(5_000_000_000),
                    retries: Some(2),
                    ..Healthcheck::default()
                }),
                ..ContainerConfig::default()
            }),
            ..ImageConfig::default()
        };
        let check = check_of(&image, &ContainerSpec::default()).unwrap();
        assert_eq!(check.args, ["/bin/sh", "-c", "curl -f localhost"]);
        assert_eq!(
            (check.interval_ms, check.timeout_ms, check.retries),
            (5_000, 30_000, 2)
        );
        let spec = ContainerSpec {
            health: Some(crate::spec::HealthSpec {
                test: vec!["CMD".into(), "true".into()],
                interval_ms: Some(100),
                timeout_ms: None,
                start_period_ms: Some(1000),
                retries: None,
            }),
            ..ContainerSpec::default()
        };
        let check = check_of(&image, &spec).unwrap();
        assert_eq!(check.args, ["true"]);
        // inspect's Config.Healthcheck: the flags over the image's, in ns.
        assert_eq!(
            config_of(&image, &ContainerSpec::default()),
            image.config.as_ref().unwrap().healthcheck
        );
        let merged = config_of(&image, &spec).unwrap();
        assert_eq!(
            merged.test.as_deref(),
            Some(&["CMD".to_string(), "true".into()][..])
        );
        assert_eq!(merged.interval, Some(100_000_000));
        assert_eq!(merged.start_period, Some(1_000_000_000));
        assert_eq!((merged.timeout, merged.retries), (None, Some(2)));
        assert_eq!(
            config_of(&ImageConfig::default(), &ContainerSpec::default()),
            None
        );
        assert_eq!(
            (check.interval_ms, check.start_period_ms, check.retries),
            (100, 1000, 2)
        );
        let none = ContainerSpec {
            health: Some(crate::spec::HealthSpec {
                test: vec!["NONE".into()],
                interval_ms: None,
                timeout_ms: None,
                start_period_ms: None,
                retries: None,
            }),
            ..ContainerSpec::default()
        };
        assert_eq!(check_of(&image, &none), None);
        assert_eq!(
            check_of(&ImageConfig::default(), &ContainerSpec::default()),
            None
        );
    }

    #[test]
    fn status_follows_docker() {
        let check = Check {
            args: vec!["true".into()],
            interval_ms: 1,
            timeout_ms: 1,
            start_period_ms: 0,
            retries: 2,
        };
        let mut health = starting();
        record(&mut health, &check, probe(1), true);
        assert_eq!(
            (health.status.as_str(), health.failing_streak),
            ("starting", 0)
        );
        record(&mut health, &check, probe(1), false);
        assert_eq!(
            (health.status.as_str(), health.failing_streak),
            ("starting", 1)
        );
        record(&mut health, &check, probe(1), false);
        assert_eq!(health.status, "unhealthy");
        record(&mut health, &check, probe(0), false);
        assert_eq!(
            (health.status.as_str(), health.failing_streak),
            ("healthy", 0)
        );
        for _ in 0..10 {
            record(&mut health, &check, probe(0), false);
        }
        assert_eq!(health.log.len(), KEPT_PROBES);
    }
}
