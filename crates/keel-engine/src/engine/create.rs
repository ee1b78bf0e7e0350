//! Creating a container: the request checked whole, the record, its
//! directory, files and volumes.

use super::*;

impl Engine {
    // ------------------------------------------------------------------
    // create

    /// Creates a container of an image already in `images`: checks the
    /// whole request first (nothing is made if any of it is wrong), then
    /// records it, makes its directory, files and volumes.
    pub fn create(&mut self, images: &ImageStore, spec: ContainerSpec) -> Result<Container> {
        let record = images.resolve(&spec.image)?;
        let image_config = images.config(&record)?;
        let layers = images.snapshots.lower_dirs(&record.chain_ids)?;
        self.create_on_layers(&record.id.to_string(), image_config, layers, spec)
    }

    /// `create` on layers that need not be an image of the store (a build
    /// step's state: `image_config` and the snapshot directories `layers`,
    /// topmost first); `image_id` is what the container records as its image.
    pub fn create_on_layers(
        &mut self,
        image_id: &str,
        image_config: keel_image::manifest::ImageConfig,
        layers: Vec<PathBuf>,
        mut spec: ContainerSpec,
    ) -> Result<Container> {
        crate::options::check(&spec)?;
        self.resolve_network(&mut spec)?;
        // docker: a container's labels are the image's, the request's over them.
        if let Some(labels) = image_config.config.as_ref().and_then(|c| c.labels.as_ref()) {
            for (key, value) in labels {
                spec.labels
                    .entry(key.clone())
                    .or_insert_with(|| value.clone());
            }
        }
        if let Some(name) = &spec.name {
            crate::spec::validate_container_name(name)?;
        }
        let args = oci::command(&image_config, &spec)?;
        // The user must be there in the image (the files may change in the
        // container later; the monitor resolves again at each start).
        let user = resolve_user_in_layers(&layers, &spec, &image_config)?;
        let mounts = self.plan_mounts(&spec, &image_config)?;
        let id = random_id()?;
        // Build the config once now: a bad request fails here, before
        // anything exists.
        let run = RunConfig {
            image_config: image_config.clone(),
            layers: layers.clone(),
            cgroup_parent: self.options.cgroup_parent.clone(),
            init_binary: self.options.init_binary.clone(),
            vm_shim: self.options.vm_shim.clone(),
            guest_agent: self.options.guest_agent.clone(),
        };
        let resolved: Vec<ResolvedMount> = mounts.iter().map(resolved_mount).collect();
        let devices = host_devices(&spec)?;
        build_config(
            &self.layout,
            &id,
            &spec,
            &run,
            &user,
            &resolved,
            &devices,
            None,
        )?;

        let created = crate::logs::now_nanos();
        let mut container = Container {
            id: id.clone(),
            name: String::new(),
            image: spec.image.clone(),
            image_id: image_id.to_string(),
            created,
            spec,
            args,
            mounts,
            state: ContainerState::default(),
        };
        self.insert_with_name(&mut container)?;
        match self.make_files(&container, &run) {
            Ok(()) => {
                self.event(&container, "create", &[]);
                Ok(container)
            }
            Err(e) => {
                let _ = std::fs::remove_dir_all(self.layout.container(&id));
                self.remove_anonymous_volumes(&container);
                let _ = self.db.delete(&id);
                Err(e)
            }
        }
    }

    /// The networks named in the request, found (the default network
    /// recorded on first use); `container:NAME` resolved to its id.
    pub(super) fn resolve_network(&mut self, spec: &mut ContainerSpec) -> Result<()> {
        if let NetworkMode::Container(other) = &spec.network {
            let other = self
                .db
                .find(other)
                .map_err(|_| Error::invalid(format!("No such container: {other}")))?;
            if spec.hostname.is_some() {
                return Err(Error::invalid(
                    "conflicting options: hostname and the network mode",
                ));
            }
            spec.network = NetworkMode::Container(other.id);
        }
        if spec.network != NetworkMode::Bridge {
            // docker ignores published ports without a network of its own.
            spec.publish.clear();
            spec.publish_all = false;
        }
        crate::network::resolve_attachments(&mut self.db, spec)
    }

    pub(super) fn insert_with_name(&mut self, container: &mut Container) -> Result<()> {
        if let Some(name) = &container.spec.name {
            container.name = crate::spec::validate_container_name(name)?;
            return self.db.insert(container);
        }
        for attempt in 0..20 {
            container.name = crate::names::generate(random_u64()?, attempt);
            match self.db.insert(container) {
                Err(Error::Conflict(_)) => continue,
                other => return other,
            }
        }
        Err(Error::msg("no free container name found"))
    }

    /// Binds must exist; named volumes are made on first use; anonymous
    /// ones for `-v /path` and the image's VOLUMEs.
    pub(super) fn plan_mounts(
        &mut self,
        spec: &ContainerSpec,
        image: &ImageConfig,
    ) -> Result<Vec<ContainerMount>> {
        let mut mounts = Vec::new();
        let mut targets = std::collections::BTreeSet::new();
        for m in &spec.mounts {
            if !targets.insert(m.target.clone()) {
                return Err(Error::invalid(format!(
                    "Duplicate mount point: {}",
                    m.target
                )));
            }
            let mut mount = ContainerMount {
                kind: m.kind,
                name: None,
                source: None,
                target: m.target.clone(),
                read_only: m.read_only,
                tmpfs_size: m.tmpfs_size,
                tmpfs_mode: m.tmpfs_mode,
                propagation: m.propagation.clone(),
                copy_up: false,
            };
            match m.kind {
                MountKind::Bind => {
                    let source = std::fs::canonicalize(&m.source).map_err(|_| {
                        Error::invalid(format!(
                            "invalid mount config for type \"bind\": bind source path does not exist: {}",
                            m.source
                        ))
                    })?;
                    mount.source = Some(source);
                }
                MountKind::Volume => {
                    // Named now; made (with its copy-up decided) after the
                    // container is recorded.
                    mount.name = Some(if m.source.is_empty() {
                        random_id()?
                    } else {
                        m.source.clone()
                    });
                    mount.copy_up = !m.no_copy;
                }
                MountKind::Tmpfs => {}
            }
            mounts.push(mount);
        }
        let image_volumes = image
            .config
            .as_ref()
            .and_then(|c| c.volumes.clone())
            .unwrap_or_default();
        for target in image_volumes.keys() {
            let target = crate::spec::clean_path(target);
            if targets.insert(target.clone()) {
                mounts.push(ContainerMount {
                    kind: MountKind::Volume,
                    name: Some(random_id()?),
                    source: None,
                    target,
                    read_only: false,
                    tmpfs_size: None,
                    tmpfs_mode: None,
                    propagation: None,
                    copy_up: true,
                });
            }
        }
        Ok(mounts)
    }

    pub(super) fn make_files(&mut self, container: &Container, run: &RunConfig) -> Result<()> {
        let id = &container.id;
        let dir = self.layout.container(id);
        for sub in [
            dir.clone(),
            self.layout.diff(id),
            self.layout.work(id),
            self.layout.rootfs(id),
        ] {
            std::fs::create_dir_all(&sub)
                .map_err(|e| Error::io(format!("create {}", sub.display()), e))?;
        }
        let hostname = oci::hostname(&container.spec, id);
        write_file(
            &self.layout.file(id, "hostname"),
            format!("{hostname}\n").as_bytes(),
        )?;
        write_file(
            &self.layout.file(id, "hosts"),
            hosts_file(&container.spec, &hostname, &[]).as_bytes(),
        )?;
        write_file(
            &self.layout.file(id, "resolv.conf"),
            resolv_conf(&container.spec, false).as_bytes(),
        )?;
        write_file(
            &self.layout.file(id, "run.json"),
            &serde_json::to_vec_pretty(run).expect("run config serializes"),
        )?;
        // Volumes: made now if they are not there. The copy-up (unless
        // `nocopy`) happens at the first start, into any volume that is empty
        // then, however it was made (docker copies into an empty volume too).
        let mut mounts = container.mounts.clone();
        for mount in mounts.iter_mut().filter(|m| m.kind == MountKind::Volume) {
            let name = mount.name.clone().expect("volume mounts are named");
            let anonymous = container
                .spec
                .mounts
                .iter()
                .all(|m| m.kind != MountKind::Volume || m.source != name);
            self.ensure_volume(&name, anonymous)?;
            mount.source = Some(self.layout.volume_data(&name));
        }
        self.db.update_state(id, |c| {
            c.mounts = mounts;
            Ok(())
        })
    }

    /// Makes the volume unless it exists; returns whether it is new.
    pub fn ensure_volume(&mut self, name: &str, anonymous: bool) -> Result<bool> {
        crate::spec::validate_volume_name(name)?;
        let data = self.layout.volume_data(name);
        std::fs::create_dir_all(&data)
            .map_err(|e| Error::io(format!("create {}", data.display()), e))?;
        self.db.insert_volume(&Volume {
            name: name.to_string(),
            created: jiff::Timestamp::now().to_string(),
            labels: BTreeMap::new(),
            anonymous,
        })
    }

    pub(super) fn remove_anonymous_volumes(&mut self, container: &Container) {
        for mount in &container.mounts {
            if let Some(name) = &mount.name
                && let Ok(Some(volume)) = self.db.volume(name)
                && volume.anonymous
            {
                let _ = std::fs::remove_dir_all(self.layout.volume(name));
                let _ = self.db.delete_volume(name);
            }
        }
    }
}
