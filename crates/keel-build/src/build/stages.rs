//! Which stages a build needs, and each stage run step by step.

use super::*;

impl Shared<'_, '_> {
    pub(super) fn file(&self) -> &str {
        &self.request.dockerfile_name
    }

    pub(super) fn step_error(&self, line: usize, message: impl Into<String>) -> Error {
        Error::Step {
            file: self.file().to_string(),
            line,
            message: message.into(),
        }
    }

    pub(super) fn event(&self, event: Event<'_>) {
        if let Ok(mut progress) = self.progress.lock() {
            progress.event(event);
        }
    }

    pub(super) fn begin(&self, name: &str) -> (usize, Instant) {
        let id = {
            let mut next = self.next_id.lock().expect("not poisoned");
            *next += 1;
            *next
        };
        self.event(Event::Step { id, name });
        (id, Instant::now())
    }

    pub(super) fn escape(&self) -> char {
        self.dockerfile.directives.escape
    }

    pub(super) fn expand_global(&self, word: &str, line: usize) -> Result<String> {
        let lookup = |name: &str| {
            let v = lookup_in(&self.globals, name);
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

    pub(super) fn stage_name(&self, index: usize) -> String {
        self.dockerfile.stages[index]
            .name
            .clone()
            .unwrap_or_else(|| format!("stage-{index}"))
    }

    /// A stage named by `name` (its `AS` name or its index) before `before`.
    pub(super) fn find_stage(&self, name: &str, before: usize) -> Option<usize> {
        let lower = name.to_ascii_lowercase();
        if let Some(i) = self.dockerfile.stages[..before]
            .iter()
            .position(|s| s.name.as_deref() == Some(lower.as_str()))
        {
            return Some(i);
        }
        name.parse::<usize>().ok().filter(|i| *i < before)
    }

    pub(super) fn target_index(&self) -> Result<usize> {
        match &self.request.target {
            None => Ok(self.dockerfile.stages.len() - 1),
            Some(target) => {
                let lower = target.to_ascii_lowercase();
                self.dockerfile
                    .stages
                    .iter()
                    .position(|s| s.name.as_deref() == Some(lower.as_str()))
                    .ok_or_else(|| {
                        Error::msg(format!(
                            "failed to reach build target {target} in Dockerfile: no stage is named so"
                        ))
                    })
            }
        }
    }

    /// The stages stage `index` reads: its base, `COPY --from` and
    /// `RUN --mount=from=`.
    pub(super) fn dependencies(&self, index: usize) -> Result<Vec<usize>> {
        let stage = &self.dockerfile.stages[index];
        let mut deps = Vec::new();
        let base = self.expand_global(&stage.base, stage.line)?;
        if let Some(i) = self.find_stage(&base, index) {
            deps.push(i);
        }
        let mut refer = |word: &str, line: usize| -> Result<()> {
            let name = self.expand_global(word, line)?;
            if let Some(i) = self.find_stage(&name, index) {
                deps.push(i);
            } else if name.parse::<usize>().is_ok() {
                return Err(self.step_error(
                    line,
                    format!("invalid stage reference {name}: no earlier stage has that index"),
                ));
            }
            Ok(())
        };
        for instruction in &stage.instructions {
            match &instruction.kind {
                Kind::Copy(copy) | Kind::Add(copy) => {
                    if let Some(from) = &copy.from {
                        refer(from, instruction.line)?;
                    }
                }
                Kind::Run(run) => {
                    for mount in &run.mounts {
                        if let Some(from) = mount_options(mount).get("from") {
                            refer(from, instruction.line)?;
                        }
                    }
                }
                _ => {}
            }
        }
        deps.sort_unstable();
        deps.dedup();
        Ok(deps)
    }

    /// The target and the stages it needs, in an order that puts each
    /// after what it needs.
    pub(super) fn needed_stages(&self, target: usize) -> Result<Vec<usize>> {
        let mut needed = BTreeSet::new();
        let mut pending = vec![target];
        while let Some(i) = pending.pop() {
            if needed.insert(i) {
                pending.extend(self.dependencies(i)?);
            }
        }
        Ok(needed.into_iter().collect())
    }

    pub(super) fn build_stage(
        &self,
        index: usize,
        done: &HashMap<usize, State>,
        open: &(dyn Fn() -> Result<(ImageStore, Box<dyn Worker>)> + Sync),
    ) -> Result<State> {
        let (mut store, mut worker) = open()?;
        let stage = &self.dockerfile.stages[index];
        let steps = 1 + stage
            .instructions
            .iter()
            .filter(|i| is_layer_step(&i.kind))
            .count();
        let label = |n: usize| {
            if self.dockerfile.stages.len() == 1 {
                format!("[{n}/{steps}]")
            } else {
                format!("[{} {n}/{steps}]", self.stage_name(index))
            }
        };
        let base = self.expand_global(&stage.base, stage.line)?;
        if base.trim().is_empty() {
            return Err(self.step_error(
                stage.line,
                format!("base name ({}) should not be blank", stage.base),
            ));
        }
        if let Some(platform) = &stage.platform {
            let platform = self.expand_global(platform, stage.line)?;
            let wanted = Platform::parse(&platform).map_err(|e| {
                self.step_error(stage.line, format!("FROM --platform={platform}: {e}"))
            })?;
            let current = Platform::current();
            if wanted.os != current.os || wanted.architecture != current.architecture {
                return Err(self.step_error(
                    stage.line,
                    format!(
                        "FROM --platform={platform}: keel builds for this machine's platform only ({}/{})",
                        current.os, current.architecture
                    ),
                ));
            }
        }
        let (id, started) = self.begin(&format!("{} FROM {base}", label(1)));
        let mut state = match self.find_stage(&base, index) {
            Some(i) => {
                let mut state = done
                    .get(&i)
                    .cloned()
                    .ok_or_else(|| Error::msg(format!("stage {i} was not built")))?;
                state.args.clear();
                state.unset_args.clear();
                state
            }
            None if base.eq_ignore_ascii_case("scratch") => {
                let platform = Platform::current();
                State {
                    config: ImageConfig {
                        architecture: platform.architecture.clone(),
                        os: platform.os.clone(),
                        variant: platform.variant.clone(),
                        config: Some(ContainerConfig {
                            env: Some(vec![DEFAULT_PATH.to_string()]),
                            ..ContainerConfig::default()
                        }),
                        ..ImageConfig::default()
                    },
                    layers: Vec::new(),
                    chain_ids: Vec::new(),
                    key: key_of(&["scratch"]),
                    args: Vec::new(),
                    unset_args: BTreeSet::new(),
                }
            }
            None => {
                let record = worker
                    .image(&mut store, &base, self.request.pull)
                    .map_err(|e| {
                        self.fail(id, &e);
                        self.step_error(stage.line, format!("FROM {base}: {e}"))
                    })?;
                let mut config = store.config(&record)?;
                let layers = store.layers(&record)?;
                let c = config.config.get_or_insert_with(ContainerConfig::default);
                if c.env.as_ref().is_none_or(|e| e.is_empty()) {
                    c.env = Some(vec![DEFAULT_PATH.to_string()]);
                }
                State {
                    config,
                    layers,
                    chain_ids: record.chain_ids.clone(),
                    key: key_of(&["image", &record.id.to_string()]),
                    args: Vec::new(),
                    unset_args: BTreeSet::new(),
                }
            }
        };
        self.event(Event::Done {
            id,
            seconds: started.elapsed().as_secs_f64(),
        });
        // The base's ONBUILD triggers run first, and are not passed on.
        let triggers = state
            .config
            .config
            .as_mut()
            .and_then(|c| c.on_build.take())
            .unwrap_or_default();
        let mut step = 1;
        for trigger in triggers {
            let instruction =
                crate::parser::parse_instruction(&trigger, self.escape()).map_err(|e| {
                    self.step_error(
                        stage.line,
                        format!("ONBUILD trigger {trigger:?} of {base}: {e}"),
                    )
                })?;
            let instruction = Instruction {
                line: stage.line,
                ..instruction
            };
            let name = format!("{} ONBUILD {}", label(1), instruction.original);
            self.apply(
                &mut store,
                worker.as_mut(),
                &mut state,
                &instruction,
                &name,
                done,
                index,
            )?;
        }
        for instruction in &stage.instructions {
            let name = if is_layer_step(&instruction.kind) {
                step += 1;
                format!("{} {}", label(step), instruction.original)
            } else {
                String::new()
            };
            self.apply(
                &mut store,
                worker.as_mut(),
                &mut state,
                instruction,
                &name,
                done,
                index,
            )?;
        }
        Ok(state)
    }

    pub(super) fn fail(&self, id: usize, error: &Error) {
        self.event(Event::Failed {
            id,
            message: &error.to_string(),
        });
    }
}
