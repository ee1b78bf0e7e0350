//! RUN: the step's container through the Worker, with its mounts.

use super::*;

impl Shared<'_, '_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run(
        &self,
        store: &mut ImageStore,
        worker: &mut dyn Worker,
        state: &mut State,
        instruction: &Instruction,
        run: &ast::Run,
        name: &str,
        done: &HashMap<usize, State>,
        stage: usize,
    ) -> Result<()> {
        let line = instruction.line;
        let args = self.run_args(state, run);
        let network = run
            .network
            .clone()
            .or_else(|| self.request.network.clone())
            .unwrap_or_else(|| "default".into());
        if !matches!(network.as_str(), "default" | "none" | "host") {
            return Err(self.step_error(
                line,
                format!("RUN --network={network}: use default, none or host"),
            ));
        }
        // The ARGs in scope are the step's environment too (under ENV).
        let mut env = state.env();
        for (k, v) in &state.args {
            if !env
                .iter()
                .any(|e| e.split_once('=').is_some_and(|(ek, _)| ek == k))
            {
                env.push(format!("{k}={v}"));
            }
        }
        let mut key_parts: Vec<String> = vec![
            format!("RUN {}", json(&args)),
            format!("network={network}"),
            format!(
                "args={}",
                json(
                    &state
                        .args
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                )
            ),
        ];
        let mut mounts = Vec::new();
        let mut scratches = Vec::new();
        for spec in &run.mounts {
            let (mount, key) = self
                .run_mount(store, state, spec, line, done, stage, &mut scratches)
                .map_err(|e| match e {
                    Error::Msg(m) => self.step_error(line, format!("--mount={spec}: {m}")),
                    other => other,
                })?;
            mounts.push(mount);
            key_parts.push(key);
        }
        let text = format!("RUN {} # buildkit", shown_command(&args));
        let parts: Vec<&str> = key_parts.iter().map(String::as_str).collect();
        let mut all = vec![state.key.as_str()];
        all.extend(parts);
        let key = key_of(&all);
        let (id, started) = self.begin(name);
        if let Some(hit) = self.cached(store, &key) {
            self.event(Event::Cached { id });
            self.take_cached(state, &hit, &text);
            state.key = key;
            return Ok(());
        }
        if state.chain_ids.is_empty() {
            let e = self.step_error(
                line,
                "RUN needs a shell or a program, and a stage FROM scratch has no files yet",
            );
            self.fail(id, &e);
            return Err(e);
        }
        let mut config = state.config.clone();
        config
            .config
            .get_or_insert_with(ContainerConfig::default)
            .env = Some(env);
        let layers = self.lowers(store, state)?;
        let stubs = self.mount_stubs(&layers, &mounts)?;
        let request = RunRequest {
            layers,
            config,
            args: args.clone(),
            network,
            mounts,
        };
        let mut layer_result: Option<Result<()>> = None;
        let exit = {
            let mut output = |data: &[u8]| self.event(Event::Output { id, data });
            let mut diff = |upper: &Path| -> Result<()> {
                remove_stubs(upper, &stubs);
                let result = self.commit_layer(store, state, &key, &text, upper);
                let ok = result.is_ok();
                layer_result = Some(result);
                if ok {
                    Ok(())
                } else {
                    Err(Error::msg("the step's layer could not be made"))
                }
            };
            worker.run(&request, &mut output, &mut diff)
        };
        drop(scratches);
        let outcome = match exit {
            Ok(0) => match layer_result {
                Some(result) => result,
                None => Err(Error::msg(
                    "the worker did not hand over the step's changes",
                )),
            },
            Ok(code) => Err(Error::RunFailed {
                file: self.file().to_string(),
                line,
                command: shown_command(&args),
                code,
            }),
            Err(e) => Err(match layer_result {
                Some(Err(layer)) => layer,
                _ => e,
            }),
        };
        match outcome {
            Ok(()) => {
                state.key = key;
                self.event(Event::Done {
                    id,
                    seconds: started.elapsed().as_secs_f64(),
                });
                Ok(())
            }
            Err(e) => {
                self.fail(id, &e);
                Err(e)
            }
        }
    }

    /// The mount targets of a RUN (its `--mount`s and the container's own:
    /// /proc, /dev, /etc/hosts, ...) that the stage does not have, with
    /// their missing parents: the runtime makes them as mount points, and
    /// they are taken out of the step's layer again, as BuildKit does.
    pub(super) fn mount_stubs(
        &self,
        layers: &[PathBuf],
        mounts: &[RunMount],
    ) -> Result<Vec<String>> {
        let mut targets: Vec<String> = [
            "/proc",
            "/dev",
            "/dev/pts",
            "/dev/shm",
            "/dev/mqueue",
            "/sys",
            "/sys/fs/cgroup",
            "/etc/hosts",
            "/etc/hostname",
            "/etc/resolv.conf",
        ]
        .iter()
        .map(|t| t.to_string())
        .collect();
        for mount in mounts {
            let target = match mount {
                RunMount::Bind { target, .. } | RunMount::Tmpfs { target, .. } => target,
            };
            targets.push(fsops::clean_path(target));
        }
        let scratch = Scratch::new(&self.root)?;
        let root = scratch.mount_read_only(layers)?;
        let mut stubs = Vec::new();
        for target in targets {
            let mut path = target.clone();
            // The target and each parent that is not there either.
            while path != "/" && root.kind(&path)?.is_none() {
                if !stubs.contains(&path) {
                    stubs.push(path.clone());
                }
                path = match path.rsplit_once('/') {
                    Some(("", _)) | None => "/".to_string(),
                    Some((parent, _)) => parent.to_string(),
                };
            }
        }
        // Deepest first, so a parent is empty when its turn comes.
        stubs.sort_by_key(|s| std::cmp::Reverse(s.matches('/').count()));
        Ok(stubs)
    }

    /// RUN's argv: the exec form as is; the shell form through SHELL; a
    /// heredoc as the script (or, after a command, the command's input).
    pub(super) fn run_args(&self, state: &State, run: &ast::Run) -> Vec<String> {
        let mut shell = state.shell();
        match &run.command {
            Some(Command::Exec(args)) => args.clone(),
            Some(Command::Shell(text)) if run.heredocs.is_empty() => {
                shell.push(text.clone());
                shell
            }
            command => {
                let text = match command {
                    Some(Command::Shell(text)) => text.clone(),
                    _ => String::new(),
                };
                let only_heredoc = run.heredocs.len() == 1 && is_bare_heredoc(&text);
                if only_heredoc {
                    let body = &run.heredocs[0].content;
                    if let Some(first) = body.lines().next()
                        && let Some(interpreter) = first.strip_prefix("#!")
                    {
                        // A script with its own interpreter.
                        let mut args: Vec<String> =
                            interpreter.split_whitespace().map(str::to_string).collect();
                        args.push("-c".into());
                        args.push(body.clone());
                        return args;
                    }
                    shell.push(body.clone());
                    return shell;
                }
                let mut script = text;
                for heredoc in &run.heredocs {
                    script.push('\n');
                    script.push_str(&heredoc_body(heredoc));
                    script.push_str(&heredoc.name);
                }
                shell.push(script);
                shell
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn run_mount(
        &self,
        store: &mut ImageStore,
        state: &State,
        spec: &str,
        line: usize,
        done: &HashMap<usize, State>,
        stage: usize,
        scratches: &mut Vec<Scratch>,
    ) -> Result<(RunMount, String)> {
        let options = mount_options(spec);
        let kind = options.get("type").map(String::as_str).unwrap_or("bind");
        let target = options
            .get("target")
            .or_else(|| options.get("dst"))
            .or_else(|| options.get("destination"))
            .cloned();
        let expand = |w: &str| self.expand(state, w, line);
        match kind {
            "tmpfs" => {
                let target = target.ok_or_else(|| Error::msg("a tmpfs mount needs target="))?;
                let size = options
                    .get("size")
                    .map(|s| {
                        s.parse::<u64>()
                            .map_err(|_| Error::msg(format!("bad size {s:?}")))
                    })
                    .transpose()?;
                Ok((
                    RunMount::Tmpfs {
                        target: expand(&target)?,
                        size,
                    },
                    format!("tmpfs {spec}"),
                ))
            }
            "cache" => {
                let target =
                    expand(&target.ok_or_else(|| Error::msg("a cache mount needs target="))?)?;
                let id = options.get("id").cloned().unwrap_or_else(|| target.clone());
                let dir = self
                    .root
                    .join("build")
                    .join("cache-mounts")
                    .join(key_of(&[&id]));
                if !dir.exists() {
                    std::fs::create_dir_all(&dir).map_err(|e| Error::path("create", &dir, e))?;
                    let mode = options
                        .get("mode")
                        .and_then(|m| u32::from_str_radix(m.trim_start_matches("0o"), 8).ok())
                        .unwrap_or(0o755);
                    let uid = options.get("uid").and_then(|u| u.parse().ok()).unwrap_or(0);
                    let gid = options.get("gid").and_then(|g| g.parse().ok()).unwrap_or(0);
                    std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
                        .map_err(|e| Error::path("chown", &dir, e))?;
                    std::fs::set_permissions(
                        &dir,
                        std::os::unix::fs::PermissionsExt::from_mode(mode),
                    )
                    .map_err(|e| Error::path("chmod", &dir, e))?;
                }
                Ok((
                    RunMount::Bind {
                        source: dir,
                        target,
                        read_only: false,
                    },
                    format!("cache {spec}"),
                ))
            }
            "secret" => {
                let id = options
                    .get("id")
                    .cloned()
                    .or_else(|| {
                        target
                            .as_ref()
                            .and_then(|t| t.rsplit('/').next().map(str::to_string))
                    })
                    .ok_or_else(|| Error::msg("a secret mount needs id="))?;
                let target = target.unwrap_or_else(|| format!("/run/secrets/{id}"));
                let Some(source) = self.request.secrets.get(&id) else {
                    if options.get("required").is_some_and(|r| r != "false") {
                        return Err(Error::msg(format!(
                            "secret {id} is required but was not given (--secret id={id},src=FILE)"
                        )));
                    }
                    return Ok((
                        RunMount::Tmpfs {
                            target: "/dev/shm/.keel-no-secret".into(),
                            size: Some(4096),
                        },
                        format!("secret {spec} absent"),
                    ));
                };
                Ok((
                    RunMount::Bind {
                        source: source.clone(),
                        target: expand(&target)?,
                        read_only: true,
                    },
                    format!("secret {spec}"),
                ))
            }
            "bind" => {
                let target =
                    expand(&target.ok_or_else(|| Error::msg("a bind mount needs target="))?)?;
                let source_word = options
                    .get("source")
                    .or_else(|| options.get("src"))
                    .cloned()
                    .unwrap_or_else(|| ".".into());
                let source_word = expand(&source_word)?;
                let read_only = !options.contains_key("rw") && !options.contains_key("readwrite");
                let (path, key) = match options.get("from") {
                    None => {
                        let sources = self.context.select(&source_word)?;
                        let source = sources
                            .into_iter()
                            .next()
                            .ok_or_else(|| Error::msg("the bind source is not there"))?;
                        let digest = self.context.digest(&source, None)?;
                        (source.path, format!("bind {spec} {digest}"))
                    }
                    Some(from) => {
                        let from = self.source_stage(store, &expand(from)?, line, done, stage)?;
                        let From::Layers { key, chain, .. } = from else {
                            return Err(Error::msg("no such stage or image"));
                        };
                        let lowers = store.snapshots.lower_dirs(&chain)?;
                        let scratch = Scratch::new(&self.root)?;
                        let root = scratch.mount_read_only(&lowers)?;
                        let path =
                            fsops::resolve_under(root.path(), &source_word)?.ok_or_else(|| {
                                Error::msg(format!("{source_word} is not in the stage"))
                            })?;
                        drop(root);
                        scratches.push(scratch);
                        (path, format!("bind {spec} {key}"))
                    }
                };
                if read_only {
                    Ok((
                        RunMount::Bind {
                            source: path,
                            target,
                            read_only: true,
                        },
                        key,
                    ))
                } else {
                    // Writes to a rw bind mount are thrown away, as docker does.
                    let scratch = Scratch::new(&self.root)?;
                    let root = scratch.mount(&[path])?;
                    let merged = root.path().to_path_buf();
                    drop(root);
                    scratches.push(scratch);
                    Ok((
                        RunMount::Bind {
                            source: merged,
                            target,
                            read_only: false,
                        },
                        key,
                    ))
                }
            }
            other => Err(Error::msg(format!(
                "unknown mount type {other:?}: use bind, cache, tmpfs or secret"
            ))),
        }
    }
}
