//! The container the monitor holds: its root filesystem, config and
//! network made, and undone.

use super::*;

impl Monitor {
    /// Mounts the root filesystem, writes the config, creates the
    /// container with its stdio.
    pub(super) fn create(&mut self, container: &Container) -> Result<Running> {
        let run: RunConfig = read_run_config(&self.layout, &self.id)?;
        let rootfs = self.layout.rootfs(&self.id);
        if !crate::paths::is_mount_point(&rootfs) {
            crate::rootfs::mount_overlay(
                &run.layers,
                &self.layout.diff(&self.id),
                &self.layout.work(&self.id),
                &rootfs,
            )?;
        }
        match self.create_on_rootfs(container, &run) {
            Ok(running) => Ok(running),
            Err(e) => {
                self.teardown();
                Err(e)
            }
        }
    }

    pub(super) fn create_on_rootfs(
        &mut self,
        container: &Container,
        run: &RunConfig,
    ) -> Result<Running> {
        let rootfs = self.layout.rootfs(&self.id);
        self.copy_up_volumes(container)?;
        let user = engine::resolve_user_in_rootfs(&rootfs, &container.spec, &run.image_config)?;
        let mounts: Vec<_> = container
            .mounts
            .iter()
            .map(engine::resolved_mount)
            .collect();
        let devices = engine::host_devices(&container.spec)?;
        let publish = ports_to_publish(container, run);
        let layout = self.layout.clone();
        let sandbox = crate::network::sandbox::setup(&layout, self.db()?, container, &publish)?;
        let namespace = sandbox.path.clone();
        self.sandbox = Some(sandbox);
        engine::write_network_files(
            &self.layout,
            container,
            self.sandbox.as_ref().expect("set above"),
        )?;
        let config = engine::build_config(
            &self.layout,
            &self.id,
            &container.spec,
            run,
            &user,
            &mounts,
            &devices,
            namespace.as_deref(),
        )?;
        let bundle = self.layout.bundle(&self.id);
        let config_path = bundle.join("config.json");
        keel_runtime::util::write_atomic(
            &config_path,
            &serde_json::to_vec_pretty(&config).expect("configs serialize"),
        )
        .map_err(|e| Error::runtime("write the container's config", e))?;
        let options = CreateOptions {
            id: self.id.clone(),
            bundle,
            ..CreateOptions::default()
        };
        let (max_size, max_file) = logs::limits(&container.spec.log);
        let log = logs::Writer::open(&self.layout.log(&self.id), max_size, max_file)?;
        let runtime_root = self.runtime_root();
        // A previous run's state, if the monitor before us was killed.
        let _ = keel_runtime::container::delete(&runtime_root, &self.id, true);
        let mut running = Running {
            pid: 0,
            stdout: None,
            stderr: None,
            pty: None,
            stdin: None,
            stdin_buffer: Vec::new(),
            stdin_closing: false,
            log,
            oom_before: 0,
            started: Instant::now(),
            exit_status: None,
            exited_at: None,
            health: None,
        };
        if container.spec.tty {
            let (proxy, end) = keel_runtime::console::Proxy::pair()
                .map_err(|e| Error::runtime("make the console socket", e))?;
            running.pid =
                keel_runtime::container::create_with_console_end(&runtime_root, &options, end)
                    .map_err(|e| Error::runtime("create the container", e))?;
            let master = proxy
                .receive_master()
                .map_err(|e| Error::runtime("receive the container's terminal", e))?;
            set_nonblocking(master.as_raw_fd());
            running.pty = Some(master);
        } else {
            let (stdout_read, stdout_write) = pipe()?;
            let (stderr_read, stderr_write) = pipe()?;
            let (stdin_read, stdin_write) = if container.spec.interactive {
                let (r, w) = pipe()?;
                (Some(r), Some(w))
            } else {
                (None, None)
            };
            let stdin_fd = match &stdin_read {
                Some(fd) => fd.as_raw_fd(),
                None => open_dev_null()?.into_raw(),
            };
            let created = with_stdio(
                stdin_fd,
                stdout_write.as_raw_fd(),
                stderr_write.as_raw_fd(),
                || keel_runtime::container::create(&runtime_root, &options),
            );
            if stdin_read.is_none() {
                // SAFETY: the /dev/null fd opened above, ours to close.
                unsafe { libc::close(stdin_fd) };
            }
            running.pid = created.map_err(|e| Error::runtime("create the container", e))?;
            drop(stdout_write);
            drop(stderr_write);
            drop(stdin_read);
            set_nonblocking(stdout_read.as_raw_fd());
            set_nonblocking(stderr_read.as_raw_fd());
            running.stdout = Some(stdout_read);
            running.stderr = Some(stderr_read);
            if let Some(w) = &stdin_write {
                set_nonblocking(w.as_raw_fd());
            }
            running.stdin = stdin_write;
        }
        running.oom_before = self.oom_count();
        Ok(running)
    }

    /// A new volume gets what the image has at its target, once.
    pub(super) fn copy_up_volumes(&mut self, container: &Container) -> Result<()> {
        let rootfs = self.layout.rootfs(&self.id);
        let pending: Vec<_> = container
            .mounts
            .iter()
            .filter(|m| m.kind == MountKind::Volume && m.copy_up)
            .cloned()
            .collect();
        if pending.is_empty() {
            return Ok(());
        }
        for mount in &pending {
            let Some(data) = &mount.source else { continue };
            let empty = std::fs::read_dir(data)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if !empty {
                continue;
            }
            // The image's directory, found without leaving the rootfs.
            if let Some(dir) = crate::rootfs::open_dir_in_root(&rootfs, &mount.target)? {
                let from = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
                crate::copy::copy_tree(&from, data)?;
            }
        }
        let id = self.id.clone();
        self.db()?.update_state(&id, |c| {
            for m in c.mounts.iter_mut() {
                m.copy_up = false;
            }
            Ok(())
        })
    }

    pub(super) fn oom_count(&self) -> u64 {
        keel_runtime::state::ContainerDir::new(&self.runtime_root(), &self.id)
            .and_then(|dir| dir.load())
            .map(|state| state.cgroup.oom_kill_count())
            .unwrap_or(0)
    }

    /// Removes the runtime's state and cgroup, the container's network,
    /// and unmounts the rootfs.
    pub(super) fn teardown(&mut self) {
        self.release_container();
        self.sync_network();
    }

    /// [`Monitor::teardown`] but the firewall, which
    /// [`Monitor::sync_network`] makes once the exit is reported.
    pub(super) fn release_container(&mut self) {
        let _ = keel_runtime::container::delete(&self.runtime_root(), &self.id, true);
        if let Some(sandbox) = self.sandbox.take() {
            let id = self.id.clone();
            match self.db() {
                Ok(db) => {
                    self.network_dirty |= crate::network::sandbox::release(db, &id, sandbox);
                }
                Err(e) => tracing::warn!("tear down the network: {e}"),
            }
        }
        let _ = crate::rootfs::unmount(&self.layout.rootfs(&self.id));
    }

    /// Makes the firewall again after the container's endpoints went.
    pub(super) fn sync_network(&mut self) {
        if !std::mem::take(&mut self.network_dirty) {
            return;
        }
        let layout = self.layout.clone();
        if let Err(e) = self.db().and_then(|db| crate::network::sync(&layout, db)) {
            tracing::warn!("render the firewall: {e}");
        }
    }
}
