//! One instruction applied to a stage's state (ENV, WORKDIR, USER, ...;
//! the steps that make layers go to their own files).

use super::*;

impl Shared<'_, '_> {
    pub(super) fn expand(&self, state: &State, word: &str, line: usize) -> Result<String> {
        let lookup = |name: &str| {
            let v = state.lookup(name);
            if state.unset_args.contains(name)
                && !state
                    .env()
                    .iter()
                    .any(|e| e.starts_with(&format!("{name}=")))
            {
                self.unset_used
                    .lock()
                    .expect("not poisoned")
                    .insert(format!("{name} (line {line})"));
            }
            if v.is_some() {
                self.used_args
                    .lock()
                    .expect("not poisoned")
                    .insert(name.to_string());
            }
            v
        };
        crate::shell::expand(word, &lookup, self.escape())
            .map_err(|e| self.step_error(line, e.to_string()))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn apply(
        &self,
        store: &mut ImageStore,
        worker: &mut dyn Worker,
        state: &mut State,
        instruction: &Instruction,
        name: &str,
        done: &HashMap<usize, State>,
        stage: usize,
    ) -> Result<()> {
        let line = instruction.line;
        // A config-only instruction: part of the key, an empty-layer history entry.
        let record = |state: &mut State, created_by: String| {
            state.extend_key(&[&created_by]);
            state.config.history.push(History {
                created: Some(self.started.clone()),
                created_by: Some(created_by),
                comment: Some("buildkit.dockerfile.v0".into()),
                empty_layer: true,
                ..History::default()
            });
        };
        match &instruction.kind {
            Kind::Env(pairs) => {
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand(state, k, line)?;
                    let v = self.expand(state, v, line)?;
                    let mut env = state.env();
                    crate_merge_env(&mut env, &k, &v);
                    state.container_config().env = Some(env);
                    shown.push(format!("{k}={v}"));
                }
                let text = format!("ENV {}", shown.join(" "));
                record(state, text);
            }
            Kind::Arg(decls) => {
                let mut shown = Vec::new();
                for decl in decls {
                    let value = match self.request.build_args.get(&decl.name) {
                        Some(v) => {
                            self.used_args
                                .lock()
                                .expect("not poisoned")
                                .insert(decl.name.clone());
                            v.clone()
                        }
                        None => match &decl.default {
                            Some(d) => self.expand(state, d, line)?,
                            None => match lookup_in(&self.globals, &decl.name) {
                                Some(v) => v,
                                None => {
                                    state.unset_args.insert(decl.name.clone());
                                    String::new()
                                }
                            },
                        },
                    };
                    shown.push(format!("{}={value}", decl.name));
                    state.args.push((decl.name.clone(), value));
                }
                let text = format!("ARG {}", shown.join(" "));
                record(state, text);
            }
            Kind::Label(pairs) => {
                let mut shown = Vec::new();
                for (k, v) in pairs {
                    let k = self.expand(state, k, line)?;
                    let v = self.expand(state, v, line)?;
                    shown.push(format!("{k}={v}"));
                    state
                        .container_config()
                        .labels
                        .get_or_insert_with(BTreeMap::new)
                        .insert(k, v);
                }
                let text = format!("LABEL {}", shown.join(" "));
                record(state, text);
            }
            Kind::User(user) => {
                let user = self.expand(state, user, line)?;
                state.container_config().user = Some(user.clone());
                let text = format!("USER {user}");
                record(state, text);
            }
            Kind::Cmd(command) => {
                let args = self.command_args(state, command);
                state.container_config().cmd = Some(args.clone());
                let text = format!("CMD {}", json(&args));
                record(state, text);
            }
            Kind::Entrypoint(command) => {
                let args = self.command_args(state, command);
                let c = state.container_config();
                c.entrypoint = Some(args.clone());
                // An ENTRYPOINT resets the CMD inherited from the base.
                c.cmd = None;
                let text = format!("ENTRYPOINT {}", json(&args));
                record(state, text);
            }
            Kind::Expose(ports) => {
                let mut shown = Vec::new();
                for port in ports {
                    let port = self.expand(state, port, line)?;
                    for port in expand_ports(&port).map_err(|e| self.step_error(line, e))? {
                        shown.push(port.clone());
                        state
                            .container_config()
                            .exposed_ports
                            .get_or_insert_with(BTreeMap::new)
                            .insert(port, serde_json::json!({}));
                    }
                }
                let text = format!("EXPOSE map[{}]", shown.join(" "));
                record(state, text);
            }
            Kind::Volume(paths) => {
                let mut shown = Vec::new();
                for path in paths {
                    let path = self.expand(state, path, line)?;
                    if path.trim().is_empty() {
                        return Err(
                            self.step_error(line, "VOLUME specified can not be an empty string")
                        );
                    }
                    shown.push(path.clone());
                    state
                        .container_config()
                        .volumes
                        .get_or_insert_with(BTreeMap::new)
                        .insert(path, serde_json::json!({}));
                }
                let text = format!("VOLUME {}", json(&shown));
                record(state, text);
            }
            Kind::Shell(shell) => {
                state.container_config().shell = Some(shell.clone());
                let text = format!("SHELL {}", json(shell));
                record(state, text);
            }
            Kind::StopSignal(signal) => {
                let signal = self.expand(state, signal, line)?;
                state.container_config().stop_signal = Some(signal.clone());
                let text = format!("STOPSIGNAL {signal}");
                record(state, text);
            }
            Kind::Maintainer(who) => {
                state.config.author = Some(who.clone());
                let text = format!("MAINTAINER {who}");
                record(state, text);
            }
            Kind::Onbuild(trigger) => {
                state
                    .container_config()
                    .on_build
                    .get_or_insert_with(Vec::new)
                    .push(trigger.original.clone());
                let text = format!("ONBUILD {}", trigger.original);
                record(state, text);
            }
            Kind::Healthcheck(check) => {
                let health = match check {
                    ast::Healthcheck::None => keel_image::manifest::Healthcheck {
                        test: Some(vec!["NONE".into()]),
                        ..Default::default()
                    },
                    ast::Healthcheck::Check {
                        test,
                        interval,
                        timeout,
                        start_period,
                        start_interval,
                        retries,
                    } => {
                        let duration = |d: &Option<String>, what: &str| -> Result<Option<i64>> {
                            d.as_deref()
                                .map(|d| {
                                    crate::parser::parse_go_duration(d).map_err(|_| {
                                        self.step_error(
                                            line,
                                            format!("HEALTHCHECK --{what}: bad duration {d:?}"),
                                        )
                                    })
                                })
                                .transpose()
                        };
                        let test = match test {
                            Command::Exec(args) => {
                                let mut t = vec!["CMD".to_string()];
                                t.extend(args.iter().cloned());
                                t
                            }
                            Command::Shell(text) => vec!["CMD-SHELL".into(), text.clone()],
                        };
                        keel_image::manifest::Healthcheck {
                            test: Some(test),
                            interval: duration(interval, "interval")?,
                            timeout: duration(timeout, "timeout")?,
                            start_period: duration(start_period, "start-period")?,
                            start_interval: duration(start_interval, "start-interval")?,
                            retries: retries.map(i64::from),
                            ..Default::default()
                        }
                    }
                };
                let text = format!(
                    "HEALTHCHECK {}",
                    serde_json::to_string(&health).unwrap_or_default()
                );
                state.container_config().healthcheck = Some(health);
                record(state, text);
            }
            Kind::Workdir(dir) => {
                let dir = self.expand(state, dir, line)?;
                let path = if dir.starts_with('/') {
                    fsops::clean_path(&dir)
                } else {
                    fsops::clean_path(&format!("{}/{dir}", state.workdir()))
                };
                state.container_config().working_dir = Some(path.clone());
                let text = format!("WORKDIR {path}");
                self.layer_step(store, state, name, line, &text, |root| {
                    root.mkdir_all(&path, None).map(|_| ())
                })?;
            }
            Kind::Run(run) => {
                self.run(store, worker, state, instruction, run, name, done, stage)?
            }
            Kind::Copy(copy) => self.copy(
                store,
                worker,
                state,
                instruction,
                copy,
                false,
                name,
                done,
                stage,
            )?,
            Kind::Add(copy) => self.copy(
                store,
                worker,
                state,
                instruction,
                copy,
                true,
                name,
                done,
                stage,
            )?,
        }
        Ok(())
    }

    pub(super) fn command_args(&self, state: &State, command: &Command) -> Vec<String> {
        match command {
            Command::Exec(args) => args.clone(),
            Command::Shell(text) => {
                let mut args = state.shell();
                args.push(text.clone());
                args
            }
        }
    }
}
