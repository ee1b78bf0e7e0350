//! COPY and ADD: sources from the context, a stage or a URL.

use super::*;

impl Shared<'_, '_> {
    /// `--from=NAME`: an earlier stage (its state) or an image.
    pub(super) fn source_stage(
        &self,
        store: &mut ImageStore,
        name: &str,
        line: usize,
        done: &HashMap<usize, State>,
        stage: usize,
    ) -> Result<From> {
        if let Some(i) = self.find_stage(name, stage) {
            let state = done
                .get(&i)
                .ok_or_else(|| self.step_error(line, format!("stage {name} was not built")))?;
            self.lowers(store, state)?;
            return Ok(From::Layers {
                key: state.key.clone(),
                chain: state.chain_ids.clone(),
            });
        }
        Err(self.step_error(
            line,
            format!("--from={name}: no stage of that name before this one"),
        ))
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn copy(
        &self,
        store: &mut ImageStore,
        worker: &mut dyn Worker,
        state: &mut State,
        instruction: &Instruction,
        copy: &ast::Copy,
        add: bool,
        name: &str,
        done: &HashMap<usize, State>,
        stage: usize,
    ) -> Result<()> {
        let line = instruction.line;
        let verb = if add { "ADD" } else { "COPY" };
        let fail_early = |e: Error| match e {
            Error::Msg(m) => self.step_error(line, format!("{verb}: {m}")),
            other => other,
        };
        // Where the sources come from.
        let mut from = From::Context;
        let mut image_chain: Option<(Vec<Digest>, Vec<Digest>)> = None;
        if let Some(word) = &copy.from {
            let name = self.expand_global(word, line)?;
            match self.find_stage(&name, stage) {
                Some(_) => from = self.source_stage(store, &name, line, done, stage)?,
                None => {
                    let record = worker
                        .image(store, &name, false)
                        .map_err(|e| self.step_error(line, format!("{verb} --from={name}: {e}")))?;
                    let diff_ids = store.config(&record)?.rootfs.diff_ids;
                    image_chain = Some((record.chain_ids.clone(), diff_ids));
                    from = From::Layers {
                        key: key_of(&["image", &record.id.to_string()]),
                        chain: record.chain_ids.clone(),
                    };
                }
            }
        }
        if let Some((chain, diff_ids)) = &image_chain {
            for (i, chain_id) in chain.iter().enumerate() {
                if let Some(diff_id) = diff_ids.get(i) {
                    store.ensure_snapshot(chain_id, diff_id, &chain[..i])?;
                }
            }
        }
        let dest_word = self.expand(state, &copy.dest, line)?;
        let owner_ids = match &copy.chown {
            Some(chown) => {
                let chown = self.expand(state, chown, line)?;
                self.resolve_owner(store, state, &chown)
                    .map_err(fail_early)?
            }
            None => (0, 0),
        };
        let mode = match &copy.chmod {
            Some(chmod) => {
                let chmod = self.expand(state, chmod, line)?;
                Some(u32::from_str_radix(&chmod, 8).map_err(|_| {
                    self.step_error(
                        line,
                        format!("{verb} --chmod={chmod}: give the mode in octal (e.g. 755)"),
                    )
                })?)
            }
            None => None,
        };
        let owner = Owner {
            ids: owner_ids,
            mode,
        };
        let excludes = if copy.excludes.is_empty() {
            None
        } else {
            let patterns: Vec<String> = copy
                .excludes
                .iter()
                .map(|p| self.expand(state, p, line))
                .collect::<Result<_>>()?;
            Some(
                Matcher::new(&patterns)
                    .map_err(|e| self.step_error(line, format!("--exclude: {e}")))?,
            )
        };
        // The destination: relative to WORKDIR; a directory when it ends
        // with `/` (or is one already).
        let dest_is_dir_word =
            dest_word.ends_with('/') || dest_word == "." || dest_word.ends_with("/.");
        let dest = if dest_word.starts_with('/') {
            fsops::clean_path(&dest_word)
        } else {
            fsops::clean_path(&format!("{}/{dest_word}", state.workdir()))
        };

        // Sources: heredocs, URLs (ADD), paths and globs.
        let mut key_parts = vec![format!(
            "{verb} dest={dest_word} dir={dest_is_dir_word} workdir={}",
            state.workdir()
        )];
        key_parts.push(format!(
            "owner={owner_ids:?} mode={mode:?} parents={} excludes={:?}",
            copy.parents, copy.excludes
        ));
        let mut plans: Vec<Plan> = Vec::new();
        // Scratch space only to view another stage or image.
        let stage_root_scratch = match &from {
            From::Context => None,
            From::Layers { .. } => Some(Scratch::new(&self.root)?),
        };
        let stage_root = match (&from, &stage_root_scratch) {
            (From::Layers { chain, .. }, Some(scratch)) => {
                let lowers = store.snapshots.lower_dirs(chain)?;
                Some(scratch.mount_read_only(&lowers)?)
            }
            _ => None,
        };
        let source_count = copy.sources.len();
        for word in &copy.sources {
            if let Some(heredoc) = copy
                .heredocs
                .iter()
                .find(|h| is_heredoc_word(word, &h.name))
            {
                let body = if heredoc.expand {
                    self.expand_heredoc(state, heredoc, line)?
                } else {
                    heredoc.content.clone()
                };
                key_parts.push(format!("heredoc {} {}", heredoc.name, key_of(&[&body])));
                plans.push(Plan::Data {
                    name: heredoc.name.clone(),
                    data: body.into_bytes(),
                });
                continue;
            }
            let word = self.expand(state, word, line)?;
            if add && (word.starts_with("http://") || word.starts_with("https://")) {
                plans.push(Plan::Url(word.clone()));
                key_parts.push(format!("url {word} {:?}", copy.checksum));
                continue;
            }
            if add && word.starts_with("git@") {
                return Err(
                    self.step_error(line, "ADD of a git repository is not supported by keel yet")
                );
            }
            let sources = match (&from, &stage_root) {
                (From::Context, _) => self.context.select(&word).map_err(fail_early)?,
                (_, Some(root)) => {
                    crate::context::select_under(root.path(), &word, &|_| false, "the stage")
                        .map_err(fail_early)?
                }
                _ => unreachable!("a stage source has a root"),
            };
            for source in sources {
                let digest = match &from {
                    From::Context => self.context.digest(&source, excludes.as_ref())?,
                    From::Layers { key, .. } => format!("{key}:{}", source.relative),
                };
                key_parts.push(format!("source {} {digest}", source.relative));
                plans.push(Plan::Path(source));
            }
        }
        let many = plans.len() > 1
            || source_count > 1
            || copy.sources.iter().any(|s| crate::context::has_glob(s));
        if many && !dest_is_dir_word {
            return Err(self.step_error(
                line,
                format!("When using {verb} with more than one source file, the destination must be a directory and end with a /"),
            ));
        }
        let text = format!("{} # buildkit", instruction.original.trim());
        let parts: Vec<&str> = key_parts.iter().map(String::as_str).collect();
        let step_key_text = key_of(&parts);
        // For URLs without --checksum the content decides: fetched first.
        let mut fetched: Vec<(String, tempfile_path::TempFile)> = Vec::new();
        let mut url_digests = Vec::new();
        for plan in &plans {
            if let Plan::Url(url) = plan {
                let file = tempfile_path::TempFile::new(&self.root)?;
                let modified = worker
                    .fetch(url, file.path())
                    .map_err(|e| self.step_error(line, format!("ADD {url}: {e}")))?;
                let digest = crate::context::sha256_file(file.path())?;
                if let Some(expected) = &copy.checksum
                    && expected.trim_start_matches("sha256:") != digest
                {
                    return Err(self.step_error(
                        line,
                        format!(
                            "ADD {url}: digest mismatch: expected {expected}, got sha256:{digest}"
                        ),
                    ));
                }
                if let Some(modified) = modified {
                    file.set_mtime(modified);
                }
                url_digests.push(digest);
                fetched.push((url.clone(), file));
            }
        }
        let step_text = format!("{step_key_text} {}", url_digests.join(" "));
        let stage_root_path = stage_root.as_ref().map(|r| r.path().to_path_buf());
        drop(stage_root);
        let result = self.layer_step(
            store,
            state,
            name,
            line,
            &format!("{text}\n{step_text}"),
            |root| {
                for plan in &plans {
                    match plan {
                        Plan::Data { name, data } => {
                            let target = if dest_is_dir_word
                                || matches!(root.kind(&dest)?, Some(fsops::Kind::Dir))
                            {
                                format!("{}/{name}", dest.trim_end_matches('/'))
                            } else {
                                dest.clone()
                            };
                            root.write_file(&target, data, &owner, 0o644)?;
                        }
                        Plan::Url(url) => {
                            let file = &fetched
                                .iter()
                                .find(|(u, _)| u == url)
                                .expect("every URL was fetched")
                                .1;
                            let base = url_file_name(url);
                            let target = if dest_is_dir_word
                                || matches!(root.kind(&dest)?, Some(fsops::Kind::Dir))
                            {
                                format!("{}/{base}", dest.trim_end_matches('/'))
                            } else {
                                dest.clone()
                            };
                            let owner = Owner {
                                ids: owner.ids,
                                mode: Some(owner.mode.unwrap_or(0o600)),
                            };
                            root.copy_in(file.path(), &target, &owner, &|_, _| Pick::Take)?;
                        }
                        Plan::Path(source) => {
                            let meta = std::fs::symlink_metadata(&source.path)
                                .map_err(|e| Error::path("stat", &source.path, e))?;
                            let in_context = stage_root_path.is_none();
                            let filter = |rel: &str, is_dir: bool| {
                                if in_context {
                                    self.context.pick(
                                        &source.relative,
                                        excludes.as_ref(),
                                        rel,
                                        is_dir,
                                    )
                                } else {
                                    match &excludes {
                                        Some(m) if m.matches(rel) => {
                                            if is_dir && m.dir_may_contain_included(rel) {
                                                Pick::Descend
                                            } else {
                                                Pick::Skip
                                            }
                                        }
                                        _ => Pick::Take,
                                    }
                                }
                            };
                            let base_dest = if copy.parents {
                                let parent = Path::new(&source.relative)
                                    .parent()
                                    .map(|p| p.to_string_lossy().into_owned())
                                    .unwrap_or_default();
                                format!("{}/{parent}", dest.trim_end_matches('/'))
                            } else {
                                dest.clone()
                            };
                            if meta.is_dir() {
                                let target = if copy.parents {
                                    format!("{}/{}", dest.trim_end_matches('/'), source.relative)
                                } else {
                                    base_dest.clone()
                                };
                                root.copy_in(&source.path, &target, &owner, &filter)?;
                            } else if add && is_archive(&source.path) {
                                let dir = root.mkdir_all(&base_dest, Some(&owner))?;
                                drop(dir);
                                extract_archive(&source.path, root, &base_dest)?;
                            } else {
                                let file_name = Path::new(&source.relative)
                                    .file_name()
                                    .map(|n| n.to_string_lossy().into_owned())
                                    .unwrap_or_else(|| "file".into());
                                let target = if dest_is_dir_word
                                    || copy.parents
                                    || matches!(root.kind(&base_dest)?, Some(fsops::Kind::Dir))
                                {
                                    format!("{}/{file_name}", base_dest.trim_end_matches('/'))
                                } else {
                                    base_dest.clone()
                                };
                                // A symlink named on the command line is copied
                                // as what it points to (docker follows it).
                                let followed = std::fs::metadata(&source.path).ok();
                                let path = if meta.file_type().is_symlink() && followed.is_some() {
                                    match &stage_root_path {
                                        Some(r) => fsops::resolve_under(r, &source.relative)?
                                            .unwrap_or(source.path.clone()),
                                        None => fsops::resolve_under(
                                            &self.context.root,
                                            &source.relative,
                                        )?
                                        .unwrap_or(source.path.clone()),
                                    }
                                } else {
                                    source.path.clone()
                                };
                                root.copy_in(&path, &target, &owner, &filter)?;
                            }
                        }
                    }
                }
                Ok(())
            },
        );
        drop(stage_root_scratch);
        result.map(|_| {
            // The history shows the instruction, not the key's inputs.
            if let Some(last) = state.config.history.last_mut() {
                last.created_by = Some(text.clone());
            }
        })
    }

    pub(super) fn expand_heredoc(
        &self,
        state: &State,
        heredoc: &Heredoc,
        line: usize,
    ) -> Result<String> {
        // Expansion applies to the body; quotes in it are kept.
        crate::shell::expand_raw(&heredoc.content, &|n| state.lookup(n))
            .map_err(|e| self.step_error(line, e.to_string()))
    }

    /// `--chown=USER[:GROUP]`: numbers, or names in the stage's
    /// /etc/passwd and /etc/group.
    pub(super) fn resolve_owner(
        &self,
        store: &mut ImageStore,
        state: &State,
        chown: &str,
    ) -> Result<(u32, u32)> {
        let (user, group) = match chown.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (chown, None),
        };
        let lowers = self.lowers(store, state)?;
        let read = |path: &str| -> String {
            for layer in &lowers {
                let file = layer.join(path.trim_start_matches('/'));
                if let Ok(text) = std::fs::read_to_string(&file) {
                    return text;
                }
            }
            String::new()
        };
        use keel_image::users::{parse_group, parse_passwd};
        let (uid, user_gid) = match user.parse::<u32>() {
            Ok(uid) => (uid, None),
            Err(_) => {
                let entry = parse_passwd(&read("/etc/passwd"))
                    .into_iter()
                    .find(|e| e.name == user)
                    .ok_or_else(|| {
                        Error::msg(format!(
                            "--chown={chown}: no user {user} in the image's /etc/passwd"
                        ))
                    })?;
                (entry.uid, Some(entry.gid))
            }
        };
        let gid = match group {
            None => user_gid.unwrap_or(uid),
            Some(group) => match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => {
                    parse_group(&read("/etc/group"))
                        .into_iter()
                        .find(|e| e.name == group)
                        .ok_or_else(|| {
                            Error::msg(format!(
                                "--chown={chown}: no group {group} in the image's /etc/group"
                            ))
                        })?
                        .gid
                }
            },
        };
        Ok((uid, gid))
    }
}
