//! What the commands do to keel's state: bring a project up (networks,
//! volumes, images, containers in dependency order, recreating only what
//! changed), take it down, and start, stop, restart, kill, pause or remove
//! its services. Everything goes straight to keel's engine: no daemon.
//!
//! Progress goes through [`Progress`] as docker compose prints it without a
//! terminal (`Container app-web-1  Started`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use keel_engine::Engine;
use keel_engine::db::{Container, Status};
use keel_engine::network::CreateRequest;
use keel_image::store::ImageStore;

use crate::error::{Error, Result};
use crate::interpolate::Vars;
use crate::model::{Condition, Project, Service};
use crate::order;
use crate::spec::{self, Request};

/// What the face (the CLI) does for compose: fetch and build images, and
/// show progress.
pub trait Host {
    /// Pulls `image`.
    fn pull(&mut self, image: &str, platform: Option<&str>) -> Result<()>;
    /// Builds the service's image as `tag`.
    fn build(&mut self, project: &Project, service: &Service, tag: &str) -> Result<()>;
    /// One line of progress: `kind` (`Container`, `Network`, `Volume`,
    /// `Image`), the object's name, what happened.
    fn progress(&mut self, kind: &str, name: &str, what: &str);
    /// A warning (printed as docker compose's `WARN[0000]` lines are).
    fn warn(&mut self, message: &str);
}

/// keel's state and the project it acts on.
pub struct Compose<'a> {
    pub engine: Engine,
    pub images: ImageStore,
    pub project: &'a Project,
    pub vars: &'a Vars,
    pub runroot: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct UpOptions {
    /// Services named (and what they depend on, unless `no_deps`); empty:
    /// all.
    pub services: Vec<String>,
    pub build: bool,
    pub no_build: bool,
    pub force_recreate: bool,
    pub no_recreate: bool,
    pub no_deps: bool,
    pub remove_orphans: bool,
    /// `--scale SERVICE=N`.
    pub scale: BTreeMap<String, u64>,
    /// `--pull always|missing|never` (the services' `pull_policy` otherwise).
    pub pull: Option<String>,
    /// Create only (`create`): start nothing.
    pub no_start: bool,
    /// `--wait`: until every service runs (and is healthy where it has a
    /// healthcheck); the limit, if any.
    pub wait: bool,
    pub wait_timeout: Option<Duration>,
    /// Stop timeout for containers recreated or removed.
    pub timeout: Option<u32>,
}

/// How many containers are made, started or stopped at once.
const PARALLEL: usize = 8;

/// What `up` does with one replica.
enum Step {
    Keep(Container),
    Recreate(Container, Box<keel_engine::spec::ContainerSpec>),
    Create(Box<keel_engine::spec::ContainerSpec>),
}

/// The project's containers (one-offs too), by the compose labels.
pub fn project_containers(engine: &mut Engine, project: &str) -> Result<Vec<Container>> {
    let mut list: Vec<Container> = engine
        .list()?
        .into_iter()
        .filter(|c| c.spec.labels.get(spec::PROJECT).map(String::as_str) == Some(project))
        .collect();
    list.sort_by_key(|c| {
        (
            c.spec
                .labels
                .get(spec::SERVICE)
                .cloned()
                .unwrap_or_default(),
            number(c),
        )
    });
    Ok(list)
}

pub fn service_of(c: &Container) -> &str {
    c.spec
        .labels
        .get(spec::SERVICE)
        .map(String::as_str)
        .unwrap_or("")
}

pub fn number(c: &Container) -> u64 {
    c.spec
        .labels
        .get(spec::NUMBER)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

pub fn is_oneoff(c: &Container) -> bool {
    c.spec.labels.get(spec::ONEOFF).map(String::as_str) == Some("True")
}

impl Compose<'_> {
    fn containers(&mut self) -> Result<Vec<Container>> {
        project_containers(&mut self.engine, &self.project.name)
    }

    /// The service's (not one-off) containers, by number.
    pub fn service_containers(&mut self, service: &str) -> Result<Vec<Container>> {
        Ok(self
            .containers()?
            .into_iter()
            .filter(|c| service_of(c) == service && !is_oneoff(c))
            .collect())
    }

    /// The services `names` stand for (all when empty), checked.
    pub fn selected(&mut self, names: &[String]) -> Result<Vec<String>> {
        let mut known: Vec<String> = self.project.services.keys().cloned().collect();
        if self.project.config_files.is_empty() {
            // Known by name only (`-p NAME`, no file): its containers say
            // which services it has.
            for c in self.containers()? {
                let service = service_of(&c).to_string();
                if !known.contains(&service) {
                    known.push(service);
                }
            }
        }
        if names.is_empty() {
            return Ok(known);
        }
        for name in names {
            if !known.contains(name) {
                return Err(Error::project(format!("no such service: {name}")));
            }
        }
        Ok(names.to_vec())
    }

    /// Networks and volumes the project declares and its services use.
    pub fn ensure_resources(&mut self, host: &mut dyn Host) -> Result<()> {
        let project = self.project;
        let used_networks: BTreeSet<&String> = project
            .services
            .values()
            .flat_map(|s| s.networks.keys())
            .collect();
        for key in used_networks {
            let declared =
                project
                    .networks
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| crate::model::Network {
                        name: format!("{}_{key}", project.name),
                        ..Default::default()
                    });
            let existing = keel_engine::network::find(&mut self.engine.db, &declared.name).ok();
            if declared.external {
                if existing.is_none() {
                    return Err(Error::project(format!(
                        "network {} declared as external, but could not be found",
                        declared.name
                    )));
                }
                continue;
            }
            if let Some(existing) = existing {
                if existing.labels.get(spec::PROJECT) != Some(&project.name) {
                    host.warn(&format!(
                        "a network with name {} exists but was not created for project {:?}: it is used as it is",
                        declared.name, project.name
                    ));
                }
                continue;
            }
            let mut labels = declared.labels.clone();
            labels.extend(spec::project_labels(project));
            labels.insert(spec::NETWORK.into(), key.clone());
            host.progress("Network", &declared.name, "Creating");
            self.engine.create_network(CreateRequest {
                name: declared.name.clone(),
                driver: declared.driver.clone(),
                subnets: declared.subnets.clone(),
                gateways: declared.gateways.clone(),
                ip_ranges: declared.ip_ranges.clone(),
                internal: declared.internal,
                ipv6: declared.enable_ipv6,
                options: declared.driver_opts.clone(),
                labels,
            })?;
            host.progress("Network", &declared.name, "Created");
        }
        let used_volumes: BTreeSet<&String> = project
            .services
            .values()
            .flat_map(|s| s.volumes.iter())
            .filter(|v| v.kind == "volume" && !v.source.is_empty())
            .map(|v| &v.source)
            .collect();
        for key in used_volumes {
            let declared = &project.volumes[key];
            let existing = self.engine.db.volume(&declared.name)?;
            if declared.external {
                if existing.is_none() {
                    return Err(Error::project(format!(
                        "external volume {:?} not found",
                        declared.name
                    )));
                }
                continue;
            }
            if let Some(existing) = existing {
                if existing.labels.get(spec::PROJECT) != Some(&project.name) {
                    host.warn(&format!(
                        "volume {:?} already exists but was not created by keel compose: it is used as it is",
                        declared.name
                    ));
                }
                continue;
            }
            let mut labels = declared.labels.clone();
            labels.extend(spec::project_labels(project));
            labels.insert(spec::VOLUME.into(), key.clone());
            host.progress("Volume", &declared.name, "Creating");
            self.engine.create_volume(Some(&declared.name), labels)?;
            host.progress("Volume", &declared.name, "Created");
        }
        Ok(())
    }

    /// Makes the services' images present: built (a service with a build
    /// whose image is missing, or all of them with `build`), pulled as the
    /// pull policy says.
    pub fn ensure_images(
        &mut self,
        host: &mut dyn Host,
        services: &[String],
        build: bool,
        no_build: bool,
        pull: Option<&str>,
    ) -> Result<()> {
        let project = self.project;
        for name in services {
            let service = &project.services[name];
            let image = spec::image_name(&project.name, service);
            let present = self.images.resolve(&image).is_ok();
            let policy = pull
                .map(str::to_string)
                .or_else(|| service.pull_policy.clone())
                .unwrap_or_else(|| "missing".into());
            if service.build.is_some()
                && !no_build
                && (build || policy == "build" || (!present && policy != "always"))
            {
                host.build(project, service, &image)?;
                continue;
            }
            match policy.as_str() {
                "always" => host.pull(&image, service.platform.as_deref())?,
                "never" if !present => {
                    return Err(Error::project(format!(
                        "service {name:?}: image {image} is not present and pull_policy is never"
                    )));
                }
                _ if !present => {
                    if service.build.is_some() {
                        return Err(Error::project(format!(
                            "service {name:?}: image {image} is not built: run keel compose build, or up without --no-build"
                        )));
                    }
                    host.pull(&image, service.platform.as_deref())?;
                }
                _ => {}
            }
        }
        self.images = ImageStore::open(self.images.root())
            .map_err(|e| Error::project(format!("open the image store: {e}")))?;
        Ok(())
    }

    /// `up` / `create`: converges the project on its model; returns the
    /// containers of the services brought up.
    pub fn up(&mut self, host: &mut dyn Host, options: &UpOptions) -> Result<Vec<Container>> {
        let project = self.project;
        let wanted = self.selected(&options.services)?;
        let services = if options.no_deps {
            wanted.clone()
        } else {
            order::dependency_order(project, &wanted)?
        };
        let services: Vec<String> = order::dependency_order(project, &services)?
            .into_iter()
            .filter(|s| services.contains(s))
            .collect();
        // Orphans: containers of services the project no longer has.
        let orphans: Vec<Container> = self
            .containers()?
            .into_iter()
            .filter(|c| !is_oneoff(c) && !project.services.contains_key(service_of(c)))
            .collect();
        if !orphans.is_empty() {
            if options.remove_orphans {
                self.remove_all(host, orphans, options.timeout)?;
            } else {
                host.warn(&format!(
                    "Found orphan containers ({}) for this project. If you removed or renamed this service in your compose file, you can run this command with the --remove-orphans flag to clean it up.",
                    orphans.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ")
                ));
            }
        }
        self.ensure_resources(host)?;
        self.ensure_images(
            host,
            &services,
            options.build,
            options.no_build,
            options.pull.as_deref(),
        )?;

        let mut recreated: BTreeSet<String> = BTreeSet::new();
        let mut result = Vec::new();
        // Level by level: what a level needs is up (and as its conditions
        // say) before it starts; a level's containers are made and started
        // together.
        for level in order::levels(project, &services)? {
            if !options.no_start {
                for name in &level {
                    let service = &project.services[name];
                    for (dep, d) in &service.depends_on {
                        if !services.contains(dep) || !project.services.contains_key(dep) {
                            continue;
                        }
                        self.wait_condition(host, dep, d.condition, options.wait_timeout)?;
                    }
                }
            }
            let mut removals = Vec::new();
            let mut steps = Vec::new();
            for name in &level {
                let service = &project.services[name];
                let replicas = options.scale.get(name).copied().unwrap_or(service.replicas);
                let hash = spec::config_hash(service);
                let image = spec::image_name(&project.name, service);
                let image_id = self
                    .images
                    .resolve(&image)
                    .map(|r| r.id.to_string())
                    .unwrap_or_default();
                let dependency_recreated =
                    order::needs(service).iter().any(|d| recreated.contains(d));
                let existing = self.service_containers(name)?;
                for c in &existing {
                    if number(c) > replicas || number(c) == 0 {
                        removals.push(c.clone());
                    }
                }
                for n in 1..=replicas {
                    let step = match existing.iter().find(|c| number(c) == n).cloned() {
                        Some(c) => {
                            let changed = c.spec.labels.get(spec::CONFIG_HASH) != Some(&hash)
                                || (!image_id.is_empty()
                                    && c.spec
                                        .labels
                                        .get(spec::IMAGE)
                                        .is_some_and(|i| *i != image_id));
                            let recreate = !options.no_recreate
                                && (options.force_recreate || changed || dependency_recreated);
                            if recreate {
                                recreated.insert(name.clone());
                                host.progress("Container", &c.name, "Recreate");
                                let spec = self.spec_for(service, n, None, true, &image_id)?;
                                Step::Recreate(c, Box::new(spec))
                            } else {
                                Step::Keep(c)
                            }
                        }
                        None => {
                            let spec = self.spec_for(service, n, None, true, &image_id)?;
                            host.progress(
                                "Container",
                                spec.name.as_deref().unwrap_or(""),
                                "Creating",
                            );
                            Step::Create(Box::new(spec))
                        }
                    };
                    steps.push(step);
                }
            }
            self.remove_all(host, removals, options.timeout)?;
            let timeout = options.timeout;
            let start = !options.no_start;
            let done = self.in_parallel(steps, |engine, images, step| {
                let (container, made) = match step {
                    Step::Keep(c) => (c, None),
                    Step::Recreate(old, spec) => {
                        if old.state.status.is_active() {
                            let _ = engine.stop(&old.id, timeout);
                        }
                        engine.remove(&old.id, true, false)?;
                        (engine.create(images, *spec)?, Some("Recreated"))
                    }
                    Step::Create(spec) => (engine.create(images, *spec)?, Some("Created")),
                };
                if start && !container.state.status.is_active() {
                    let started = engine.start(&container.id)?;
                    return Ok((started, made, true));
                }
                Ok((container, made, false))
            });
            let mut failed = None;
            for outcome in done {
                match outcome {
                    Ok((container, made, started)) => {
                        if let Some(what) = made {
                            host.progress("Container", &container.name, what);
                        }
                        if started {
                            host.progress("Container", &container.name, "Started");
                        }
                        result.push(container);
                    }
                    Err(e) => {
                        failed.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        if options.wait && !options.no_start {
            for name in &services {
                // Healthy where there is a healthcheck (the service's or
                // its image's), else running.
                let checked = self
                    .service_containers(name)?
                    .first()
                    .is_some_and(|c| self.has_healthcheck(c));
                let condition = if checked {
                    Condition::ServiceHealthy
                } else {
                    Condition::ServiceStarted
                };
                self.wait_condition(host, name, condition, options.wait_timeout)?;
                for c in self.service_containers(name)? {
                    host.progress(
                        "Container",
                        &c.name,
                        if condition == Condition::ServiceHealthy {
                            "Healthy"
                        } else {
                            "Running"
                        },
                    );
                }
            }
        }
        Ok(result)
    }

    /// Whether the container has a healthcheck: its own, or its image's
    /// (and not turned off).
    fn has_healthcheck(&self, c: &Container) -> bool {
        self.engine
            .run_config(&c.id)
            .ok()
            .and_then(|run| keel_engine::health::check_of(&run.image_config, &c.spec))
            .is_some()
    }

    /// Runs `work` on each item, several at once (a pool of up to
    /// [`PARALLEL`] workers), each worker with an engine and an image store
    /// of its own (keel's state takes many writers); the outcomes in the
    /// items' order.
    pub fn in_parallel<T: Send, R: Send>(
        &self,
        items: Vec<T>,
        work: impl Fn(&mut Engine, &ImageStore, T) -> Result<R> + Sync,
    ) -> Vec<Result<R>> {
        let count = items.len();
        let queue = std::sync::Mutex::new(items.into_iter().enumerate());
        let outcomes: std::sync::Mutex<Vec<Option<Result<R>>>> =
            std::sync::Mutex::new(std::iter::repeat_with(|| None).take(count).collect());
        let layout = &self.engine.layout;
        let options = &self.engine.options;
        let root = self.images.root();
        std::thread::scope(|scope| {
            for _ in 0..count.min(PARALLEL) {
                scope.spawn(|| {
                    let opened = Engine::open(layout.clone(), options.clone())
                        .map_err(Error::from)
                        .and_then(|engine| {
                            ImageStore::open(root)
                                .map(|images| (engine, images))
                                .map_err(|e| Error::project(format!("open the image store: {e}")))
                        });
                    let mut opened = opened;
                    loop {
                        let next = queue.lock().expect("the queue").next();
                        let Some((at, item)) = next else {
                            break;
                        };
                        let outcome = match &mut opened {
                            Ok((engine, images)) => work(engine, images, item),
                            Err(e) => Err(Error::project(e.to_string())),
                        };
                        outcomes.lock().expect("the outcomes")[at] = Some(outcome);
                    }
                });
            }
        });
        outcomes
            .into_inner()
            .expect("the outcomes")
            .into_iter()
            .map(|o| o.unwrap_or_else(|| Err(Error::project("a worker thread panicked"))))
            .collect()
    }

    /// Stops `containers` together (one timeout for all), then removes them.
    fn remove_all(
        &mut self,
        host: &mut dyn Host,
        containers: Vec<Container>,
        timeout: Option<u32>,
    ) -> Result<()> {
        self.stop_together(host, &containers, timeout)?;
        let done = self.in_parallel(containers, |engine, _, c| {
            engine.remove(&c.id, true, false)?;
            Ok(c)
        });
        let mut failed = None;
        for outcome in done {
            match outcome {
                Ok(c) => host.progress("Container", &c.name, "Removed"),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Stops the running ones of `containers` at once.
    fn stop_together(
        &mut self,
        host: &mut dyn Host,
        containers: &[Container],
        timeout: Option<u32>,
    ) -> Result<()> {
        let running: Vec<&Container> = containers
            .iter()
            .filter(|c| c.state.status.is_active())
            .collect();
        for c in &running {
            host.progress("Container", &c.name, "Stopping");
        }
        let ids: Vec<&str> = running.iter().map(|c| c.id.as_str()).collect();
        let mut failed = None;
        for (c, outcome) in running.iter().zip(self.engine.stop_many(&ids, timeout)) {
            match outcome {
                Ok(_) => host.progress("Container", &c.name, "Stopped"),
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        failed.map_or(Ok(()), |e| Err(e.into()))
    }

    pub fn spec_for(
        &mut self,
        service: &Service,
        number: u64,
        oneoff: Option<String>,
        publish_ports: bool,
        image_id: &str,
    ) -> Result<keel_engine::spec::ContainerSpec> {
        let containers = self.containers()?;
        let container_of = |other: &str| -> Option<String> {
            containers
                .iter()
                .find(|c| service_of(c) == other && !is_oneoff(c))
                .map(|c| c.id.clone())
        };
        Request {
            project: self.project,
            vars: self.vars,
            service,
            number,
            oneoff,
            publish_ports,
            container_of: &container_of,
            runroot: &self.runroot,
            image_id: image_id.to_string(),
        }
        .spec()
    }

    /// Waits until `service` meets `condition`: running; healthy; or
    /// exited with 0. Fails as docker compose does when it cannot.
    pub fn wait_condition(
        &mut self,
        host: &mut dyn Host,
        service: &str,
        condition: Condition,
        timeout: Option<Duration>,
    ) -> Result<()> {
        let start = Instant::now();
        let mut said_waiting = false;
        loop {
            let containers = self.service_containers(service)?;
            if containers.is_empty() {
                return Ok(());
            }
            let mut all = true;
            for c in &containers {
                let ok = match condition {
                    Condition::ServiceStarted => {
                        c.state.status.is_active() || c.state.started_at.is_some()
                    }
                    Condition::ServiceHealthy => {
                        let health = c.state.health.as_ref().map(|h| h.status.as_str());
                        match health {
                            Some("healthy") => true,
                            Some("unhealthy") => {
                                return Err(Error::project(format!(
                                    "dependency failed to start: container {} is unhealthy",
                                    c.name
                                )));
                            }
                            None if c.state.status.is_active() && !self.has_healthcheck(c) => {
                                return Err(Error::project(format!(
                                    "container {} has no healthcheck configured",
                                    c.name
                                )));
                            }
                            _ => {
                                if !c.state.status.is_active() {
                                    return Err(Error::project(format!(
                                        "dependency failed to start: container {} exited ({})",
                                        c.name, c.state.exit_code
                                    )));
                                }
                                false
                            }
                        }
                    }
                    Condition::ServiceCompletedSuccessfully => {
                        if c.state.status.is_active() || c.state.status == Status::Created {
                            false
                        } else if c.state.exit_code != 0 {
                            return Err(Error::project(format!(
                                "service {service:?} didn't complete successfully: exit {}",
                                c.state.exit_code
                            )));
                        } else {
                            true
                        }
                    }
                };
                if !ok {
                    all = false;
                    if !said_waiting {
                        host.progress("Container", &c.name, "Waiting");
                        said_waiting = true;
                    }
                }
            }
            if all {
                if said_waiting {
                    for c in &containers {
                        host.progress(
                            "Container",
                            &c.name,
                            match condition {
                                Condition::ServiceHealthy => "Healthy",
                                Condition::ServiceCompletedSuccessfully => "Exited",
                                Condition::ServiceStarted => "Running",
                            },
                        );
                    }
                }
                return Ok(());
            }
            if let Some(limit) = timeout
                && start.elapsed() > limit
            {
                let last = containers
                    .first()
                    .and_then(|c| c.state.health.as_ref())
                    .and_then(|h| h.log.last())
                    .map(|l| l.output.trim().to_string())
                    .unwrap_or_default();
                return Err(Error::project(format!(
                    "timeout waiting for service {service:?} to be {}{}",
                    match condition {
                        Condition::ServiceHealthy => "healthy",
                        Condition::ServiceCompletedSuccessfully => "completed",
                        Condition::ServiceStarted => "running",
                    },
                    if last.is_empty() {
                        String::new()
                    } else {
                        format!(": its last health check said: {last}")
                    }
                )));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// `down`: the containers (dependents first), the networks, and with
    /// `volumes` the project's volumes; orphans with `remove_orphans`.
    pub fn down(
        &mut self,
        host: &mut dyn Host,
        volumes: bool,
        remove_orphans: bool,
        timeout: Option<u32>,
        rmi: Option<&str>,
    ) -> Result<()> {
        let project = self.project;
        let containers = self.containers()?;
        let all: Vec<String> = project.services.keys().cloned().collect();
        // Dependents first, each level's containers together.
        let mut levels = order::levels(project, &all)?;
        levels.reverse();
        let mut removed = BTreeSet::new();
        for level in &levels {
            let batch: Vec<Container> = containers
                .iter()
                .filter(|c| level.iter().any(|s| s == service_of(c)))
                .cloned()
                .collect();
            removed.extend(batch.iter().map(|c| c.id.clone()));
            self.remove_all(host, batch, timeout)?;
        }
        let mut rest = Vec::new();
        for c in containers.iter().filter(|c| !removed.contains(&c.id)) {
            let orphan = !project.config_files.is_empty()
                && !project.services.contains_key(service_of(c))
                && !project.disabled.contains_key(service_of(c));
            if orphan && !remove_orphans && !is_oneoff(c) {
                host.warn(&format!(
                    "Found orphan containers ({}) for this project. If you removed or renamed this service in your compose file, you can run this command with the --remove-orphans flag to clean it up.",
                    c.name
                ));
                continue;
            }
            rest.push(c.clone());
        }
        self.remove_all(host, rest, timeout)?;
        // Networks made for the project.
        for network in keel_engine::network::list(&mut self.engine.db)? {
            if network.labels.get(spec::PROJECT) != Some(&project.name) {
                continue;
            }
            let external = project
                .networks
                .values()
                .any(|n| n.external && n.name == network.name);
            if external {
                continue;
            }
            host.progress("Network", &network.name, "Removing");
            match self.engine.remove_network(&network.id) {
                Ok(_) => host.progress("Network", &network.name, "Removed"),
                Err(e) => host.warn(&format!("network {}: {e}", network.name)),
            }
        }
        if volumes {
            for volume in self.engine.db.volumes()? {
                if volume.labels.get(spec::PROJECT) != Some(&project.name) {
                    continue;
                }
                host.progress("Volume", &volume.name, "Removing");
                self.engine.remove_volume(&volume.name, false)?;
                host.progress("Volume", &volume.name, "Removed");
            }
        }
        if let Some(which) = rmi {
            for service in project.services.values() {
                let local = service.image.is_none();
                if which == "all" || local {
                    let image = spec::image_name(&project.name, service);
                    if self.images.resolve(&image).is_ok() {
                        host.progress("Image", &image, "Removing");
                        match keel_engine::images::remove(&mut self.images, &image, false) {
                            Ok(_) => host.progress("Image", &image, "Removed"),
                            Err(e) => host.warn(&format!("image {image}: {e}")),
                        }
                    }
                }
            }
        }
        let dir = spec::files_dir(&self.runroot, &project.name);
        let _ = std::fs::remove_dir_all(dir);
        Ok(())
    }

    /// The containers of `services` (all when empty), in dependency order
    /// (reversed for stopping).
    pub fn ordered_containers(
        &mut self,
        services: &[String],
        reverse: bool,
    ) -> Result<Vec<Container>> {
        Ok(self
            .container_levels(services, reverse)?
            .into_iter()
            .flatten()
            .collect())
    }

    pub fn stop(
        &mut self,
        host: &mut dyn Host,
        services: &[String],
        timeout: Option<u32>,
    ) -> Result<()> {
        for level in self.container_levels(services, true)? {
            self.stop_together(host, &level, timeout)?;
        }
        Ok(())
    }

    /// The containers of `services` (all when empty) by dependency level
    /// (dependents first with `reverse`).
    pub fn container_levels(
        &mut self,
        services: &[String],
        reverse: bool,
    ) -> Result<Vec<Vec<Container>>> {
        let selected = self.selected(services)?;
        let mut levels = order::levels(self.project, &selected)?;
        // Services the model does not have (a project known by name only).
        let unknown: Vec<String> = selected
            .iter()
            .filter(|s| !levels.iter().flatten().any(|l| l == *s))
            .cloned()
            .collect();
        if !unknown.is_empty() {
            levels.push(unknown);
        }
        if reverse {
            levels.reverse();
        }
        let containers = self.containers()?;
        Ok(levels
            .into_iter()
            .map(|level| {
                containers
                    .iter()
                    .filter(|c| !is_oneoff(c) && level.iter().any(|s| s == service_of(c)))
                    .cloned()
                    .collect()
            })
            .collect())
    }

    pub fn start(&mut self, host: &mut dyn Host, services: &[String]) -> Result<()> {
        let containers = self.ordered_containers(services, false)?;
        if containers.is_empty() {
            return Err(Error::project(
                "service has no container to start: use keel compose up",
            ));
        }
        for c in containers {
            if !c.state.status.is_active() {
                host.progress("Container", &c.name, "Starting");
                self.engine.start(&c.id)?;
                host.progress("Container", &c.name, "Started");
            }
        }
        Ok(())
    }

    pub fn restart(
        &mut self,
        host: &mut dyn Host,
        services: &[String],
        timeout: Option<u32>,
    ) -> Result<()> {
        // What depends on them with `restart: true` restarts with them.
        let mut all = self.selected(services)?;
        let mut grew = true;
        while grew {
            grew = false;
            for (name, service) in &self.project.services {
                let follows = service
                    .depends_on
                    .iter()
                    .any(|(dep, d)| d.restart && all.contains(dep));
                if follows && !all.contains(name) {
                    all.push(name.clone());
                    grew = true;
                }
            }
        }
        // A level stopped together (one timeout), then started.
        for level in self.container_levels(&all, false)? {
            for c in &level {
                host.progress("Container", &c.name, "Restarting");
            }
            self.stop_together(host, &level, timeout)?;
            for c in &level {
                self.engine.start(&c.id)?;
                host.progress("Container", &c.name, "Started");
            }
        }
        Ok(())
    }

    pub fn kill(&mut self, host: &mut dyn Host, services: &[String], signal: i32) -> Result<()> {
        for c in self.ordered_containers(services, true)? {
            if c.state.status.is_active() {
                host.progress("Container", &c.name, "Killing");
                self.engine.kill(&c.id, signal)?;
                host.progress("Container", &c.name, "Killed");
            }
        }
        Ok(())
    }

    pub fn pause(&mut self, host: &mut dyn Host, services: &[String], pause: bool) -> Result<()> {
        for c in self.ordered_containers(services, !pause)? {
            if pause && c.state.status == Status::Running {
                self.engine.pause(&c.id)?;
                host.progress("Container", &c.name, "Paused");
            } else if !pause && c.state.status == Status::Paused {
                self.engine.unpause(&c.id)?;
                host.progress("Container", &c.name, "Unpaused");
            }
        }
        Ok(())
    }

    /// `rm`: stopped containers (running ones too with `stop`).
    pub fn rm(
        &mut self,
        host: &mut dyn Host,
        services: &[String],
        stop: bool,
        volumes: bool,
    ) -> Result<usize> {
        let mut n = 0;
        for level in self.container_levels(services, true)? {
            // Running ones only with `stop`, stopped together.
            let level: Vec<Container> = level
                .into_iter()
                .filter(|c| stop || !c.state.status.is_active())
                .collect();
            self.stop_together(host, &level, None)?;
            for c in &level {
                host.progress("Container", &c.name, "Removing");
                self.engine.remove(&c.id, true, volumes)?;
                host.progress("Container", &c.name, "Removed");
                n += 1;
            }
        }
        Ok(n)
    }
}
