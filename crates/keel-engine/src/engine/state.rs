//! Reading and changing a container's state: find and reconcile, wait,
//! rename, pause, stats, update, exec's process.

use super::*;

impl Engine {
    // ------------------------------------------------------------------
    // reading state

    /// A container by name or id, its state checked against the machine.
    pub fn find(&mut self, name: &str) -> Result<Container> {
        let container = self.db.find(name)?;
        self.reconcile(container)
    }

    /// Removes every container that is not running: their ids and the
    /// bytes of their writable layers (`container prune`).
    pub fn prune_stopped(&mut self) -> Result<(Vec<String>, u64)> {
        let mut removed = Vec::new();
        let mut freed = 0;
        for c in self.list()? {
            if c.state.status.is_active() {
                continue;
            }
            let size = crate::copy::tree_size(&self.layout.diff(&c.id));
            if self.remove(&c.id, false, false).is_ok() {
                removed.push(c.id);
                freed += size;
            }
        }
        Ok((removed, freed))
    }

    /// Every container, newest first, each checked against the machine.
    pub fn list(&mut self) -> Result<Vec<Container>> {
        let containers = self.db.list()?;
        containers.into_iter().map(|c| self.reconcile(c)).collect()
    }

    pub(super) fn reconcile_id(&mut self, id: &str, exit_code: Option<i32>) -> Result<Container> {
        let container = self.db.find(id)?;
        self.reconcile_with(container, exit_code)
    }

    /// A state that claims a monitor holds the container while none runs
    /// is corrected: a container still running without its monitor stays
    /// running (it is); one that is gone is recorded as exited and what it
    /// left (runtime state, cgroup, rootfs mount) is removed.
    pub fn reconcile(&mut self, container: Container) -> Result<Container> {
        self.reconcile_with(container, None)
    }

    pub(super) fn reconcile_with(
        &mut self,
        container: Container,
        exit_code: Option<i32>,
    ) -> Result<Container> {
        if container.state.status == Status::Running {
            self.undo_abandoned_commit_pause(&container.id);
        }
        let state = &container.state;
        let monitor_alive = state.monitor_pid > 0
            && keel_runtime::util::process_alive(state.monitor_pid, state.monitor_start);
        if monitor_alive || !(state.status.is_active() || state.monitor_pid > 0) {
            return Ok(container);
        }
        let init_alive =
            state.pid > 0 && keel_runtime::util::process_alive(state.pid, state.pid_start);
        if init_alive && state.status.is_active() {
            return Ok(container);
        }
        // The monitor is gone, and with it the container: clean up after both.
        let runtime_root = self.runtime_root();
        let cgroup_oom = oom_kill_count(&runtime_root, &container.id);
        let _ = keel_runtime::container::delete(&runtime_root, &container.id, true);
        let _ = crate::rootfs::unmount(&self.layout.rootfs(&container.id));
        if let Err(e) = crate::network::sandbox::cleanup(&self.layout, &mut self.db, &container) {
            tracing::warn!("clean up the network of {}: {e}", container.name);
        }
        let was_running = state.status.is_active();
        self.db.update_state(&container.id, |c| {
            if c.state.monitor_pid != state.monitor_pid {
                // Another start took over meanwhile.
                return Ok(());
            }
            if was_running {
                c.state.status = Status::Exited;
                c.state.exit_code = exit_code.unwrap_or(if cgroup_oom > 0 { 137 } else { 255 });
                c.state.oom_killed |= cgroup_oom > 0;
                c.state.finished_at = Some(crate::logs::now_nanos());
                if exit_code.is_none() {
                    c.state.error = "the container's monitor exited before the container".into();
                }
            } else {
                c.state.error =
                    "the container's monitor exited before the container started".into();
            }
            c.state.pid = 0;
            c.state.monitor_pid = 0;
            Ok(())
        })?;
        self.db.find(&container.id)
    }

    /// A commit pauses a running container and records who did; if that
    /// process died before resuming it (killed mid-commit), the container
    /// is resumed here so that the runtime agrees with `Paused: false`.
    pub(super) fn undo_abandoned_commit_pause(&mut self, id: &str) {
        let record = self.layout.commit_pause(id);
        let Ok(text) = std::fs::read_to_string(&record) else {
            return;
        };
        let mut words = text.split_whitespace().map(str::parse::<u64>);
        if let (Some(Ok(pid)), Some(Ok(start))) = (words.next(), words.next())
            && keel_runtime::util::process_alive(pid as i32, start)
        {
            return;
        }
        tracing::info!("resuming {id}: the commit that paused it is gone");
        if let Err(e) = keel_runtime::container::resume(&self.runtime_root(), id) {
            tracing::debug!("resume {id}: {e}");
        }
        let _ = std::fs::remove_file(&record);
    }

    /// Blocks until the container is not running; its exit code.
    pub fn wait(&mut self, name: &str) -> Result<i32> {
        let container = self.find(name)?;
        if !container.state.status.is_active() {
            return Ok(container.state.exit_code);
        }
        if let Ok((_, mut stream)) = self.attach(name, Hello::default()) {
            loop {
                match attach::read_frame(&mut stream) {
                    Ok(Some(Frame::Exit(info))) => return Ok(info.exit_code),
                    Ok(Some(_)) => continue,
                    _ => break,
                }
            }
        }
        // The monitor went away without saying: what does the state say?
        let container = self.reconcile_id(&container.id, None)?;
        Ok(container.state.exit_code)
    }

    pub fn rename(&mut self, name: &str, new_name: &str) -> Result<()> {
        let container = self.find(name)?;
        let new_name = crate::spec::validate_container_name(new_name)?;
        if container.name == new_name {
            return Err(Error::invalid(
                "Renaming a container with the same name as its current name",
            ));
        }
        self.db.rename(&container.id, &new_name)?;
        crate::network::rename(&mut self.db, &container.id, &new_name)?;
        if !crate::network::endpoints_of(&mut self.db, &container)?.is_empty() {
            crate::network::sync(&self.layout, &mut self.db)?;
        }
        let renamed = Container {
            name: new_name,
            ..container.clone()
        };
        self.event(
            &renamed,
            "rename",
            &[("oldName", &format!("/{}", container.name))],
        );
        Ok(())
    }

    pub fn pause(&mut self, name: &str) -> Result<Container> {
        let container = self.find(name)?;
        if container.state.status != Status::Running {
            return Err(Error::Conflict(format!(
                "Container {} is not running",
                container.id
            )));
        }
        keel_runtime::container::pause(&self.runtime_root(), &container.id)
            .map_err(|e| Error::runtime(format!("pause {}", container.name), e))?;
        self.event(&container, "pause", &[]);
        self.db.update_state(&container.id, |c| {
            c.state.status = Status::Paused;
            Ok(())
        })?;
        self.db.find(&container.id)
    }

    pub fn unpause(&mut self, name: &str) -> Result<Container> {
        let container = self.find(name)?;
        if container.state.status != Status::Paused {
            return Err(Error::Conflict(format!(
                "Container {} is not paused",
                container.id
            )));
        }
        keel_runtime::container::resume(&self.runtime_root(), &container.id)
            .map_err(|e| Error::runtime(format!("unpause {}", container.name), e))?;
        self.event(&container, "unpause", &[]);
        self.db.update_state(&container.id, |c| {
            c.state.status = Status::Running;
            Ok(())
        })?;
        self.db.find(&container.id)
    }

    /// The host pids of the container's processes.
    pub fn pids(&mut self, name: &str) -> Result<Vec<i32>> {
        let container = self.find(name)?;
        if !container.state.status.is_active() {
            return Err(Error::Conflict(format!(
                "Container {} is not running",
                container.id
            )));
        }
        keel_runtime::container::pids(&self.runtime_root(), &container.id)
            .map_err(|e| Error::runtime(format!("list the processes of {}", container.name), e))
    }

    /// The container's cgroup statistics (memory, CPU, pids, block I/O).
    pub fn stats(
        &mut self,
        name: &str,
    ) -> Result<(Container, keel_runtime::cgroups::stats::Stats)> {
        let container = self.find(name)?;
        if !container.state.status.is_active() {
            return Ok((container, Default::default()));
        }
        let dir = keel_runtime::state::ContainerDir::new(&self.runtime_root(), &container.id)
            .map_err(|e| Error::runtime("read the runtime's state", e))?;
        let state = dir
            .load()
            .map_err(|e| Error::runtime(format!("read the state of {}", container.name), e))?;
        let stats = state
            .cgroup
            .stats()
            .map_err(|e| Error::runtime(format!("read the cgroup of {}", container.name), e))?;
        Ok((container, stats))
    }

    /// `update`: new limits for a container (applied now if it runs, and
    /// kept for its next start), and a new restart policy.
    pub fn update(&mut self, name: &str, update: &Update) -> Result<Container> {
        let container = self.find(name)?;
        let mut spec = container.spec.clone();
        let r = &mut spec.resources;
        if update.memory.is_some() {
            r.memory = update.memory;
        }
        if update.memory_swap.is_some() {
            r.memory_swap = update.memory_swap;
        }
        if update.memory_reservation.is_some() {
            r.memory_reservation = update.memory_reservation;
        }
        if update.nano_cpus.is_some() {
            r.nano_cpus = update.nano_cpus;
        }
        if update.cpu_shares.is_some() {
            r.cpu_shares = update.cpu_shares;
        }
        if update.cpuset_cpus.is_some() {
            r.cpuset_cpus = update.cpuset_cpus.clone();
        }
        if update.pids_limit.is_some() {
            r.pids_limit = update.pids_limit;
        }
        if let Some(restart) = &update.restart {
            if spec.auto_remove && *restart != crate::spec::RestartPolicy::No {
                return Err(Error::invalid(
                    "Restart policy cannot be updated because AutoRemove is enabled for the container",
                ));
            }
            spec.restart = restart.clone();
        }
        // The whole config is built again: a limit the kernel would refuse
        // (or that contradicts another) fails here, before anything changes.
        let run = self.run_config(&container.id)?;
        let user = users::ExecUser {
            uid: 0,
            gid: 0,
            additional_gids: Vec::new(),
            home: "/".into(),
        };
        let resolved: Vec<ResolvedMount> = container.mounts.iter().map(resolved_mount).collect();
        let config = build_config(
            &self.layout,
            &container.id,
            &spec,
            &run,
            &user,
            &resolved,
            &host_devices(&spec)?,
            None,
        )?;
        if container.state.status.is_active() {
            let mut resources = config.linux.and_then(|l| l.resources).unwrap_or_default();
            resources.devices.clear();
            keel_runtime::container::update(&self.runtime_root(), &container.id, &resources)
                .map_err(|e| Error::runtime(format!("update {}", container.name), e))?;
        }
        self.db.update_state(&container.id, |c| {
            c.spec = spec;
            Ok(())
        })?;
        self.db.find(&container.id)
    }

    pub fn run_config(&self, id: &str) -> Result<RunConfig> {
        let path = self.layout.file(id, "run.json");
        let data =
            std::fs::read(&path).map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        serde_json::from_slice(&data).map_err(|e| Error::msg(format!("{}: {e}", path.display())))
    }

    /// The process `exec` runs: the container's environment, user and
    /// working directory, with the request's changes.
    pub fn exec_process(
        &mut self,
        name: &str,
        request: &ExecRequest,
    ) -> Result<(Container, keel_runtime::spec::Process)> {
        let container = self.find(name)?;
        if container.state.status != Status::Running {
            return Err(Error::Conflict(format!(
                "Container {} is not running",
                container.id
            )));
        }
        let config = keel_runtime::spec::Spec::load(&self.layout.bundle(&container.id))
            .map_err(|e| Error::runtime("read the container's config", e))?;
        let mut process = config.process.clone().unwrap_or_default();
        process.args = request.args.clone();
        process.terminal = request.tty;
        process.console_size = None;
        // docker's exec: a terminal gets TERM=xterm unless the container's
        // environment has a TERM; the request's own -e comes last.
        if request.tty && !process.env.iter().any(|e| e.starts_with("TERM=")) {
            process.env.push("TERM=xterm".into());
        }
        oci::merge_env(&mut process.env, request.env.iter().cloned());
        if let Some(workdir) = &request.workdir {
            process.cwd = workdir.clone();
        }
        if let Some(user) = &request.user {
            let rootfs = self.layout.rootfs(&container.id);
            let passwd =
                crate::rootfs::read_in_root(&rootfs, "/etc/passwd", 1 << 20)?.unwrap_or_default();
            let group =
                crate::rootfs::read_in_root(&rootfs, "/etc/group", 1 << 20)?.unwrap_or_default();
            let resolved = users::resolve(
                user,
                &[],
                &users::parse_passwd(&String::from_utf8_lossy(&passwd)),
                &users::parse_group(&String::from_utf8_lossy(&group)),
            )?;
            process.user.uid = resolved.uid;
            process.user.gid = resolved.gid;
            process.user.additional_gids = resolved.additional_gids;
        }
        if request.privileged {
            let all = oci::bounding_capabilities();
            process.capabilities = Some(keel_runtime::spec::Capabilities {
                bounding: Some(all.clone()),
                effective: Some(all.clone()),
                inheritable: Some(Vec::new()),
                permitted: Some(all),
                ambient: None,
            });
        }
        Ok((container, process))
    }
}
