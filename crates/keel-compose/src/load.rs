//! From the files on disk to a [`Project`]: finding the compose file,
//! `.env` and `--env-file`, interpolation, `include`, `extends`, merging
//! several `-f` files with docker compose's rules, relative paths made
//! absolute, `env_file`, profiles, the project's name.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::interpolate::{self, Vars};
use crate::model::{self, Project};
use crate::read::At;
use crate::yaml::{self, Loc, Node, Value};

/// The names docker compose looks for, in its order.
pub const FILE_NAMES: &[&str] = &[
    "compose.yaml",
    "compose.yml",
    "docker-compose.yaml",
    "docker-compose.yml",
];

/// What the command line says about the project.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `-f` (in order; `-` is not supported).
    pub files: Vec<PathBuf>,
    /// `-p`.
    pub project_name: Option<String>,
    /// `--project-directory`.
    pub project_directory: Option<PathBuf>,
    /// `--env-file` (replaces the project directory's `.env`).
    pub env_files: Vec<PathBuf>,
    /// `--profile`.
    pub profiles: Vec<String>,
    /// Services named on the command line: enabled whatever their profiles.
    pub services: Vec<String>,
    /// The process's environment (tests pass their own).
    pub environment: BTreeMap<String, String>,
    /// Where the search for a compose file starts.
    pub cwd: PathBuf,
}

/// A loaded project and the variables it was read with.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub project: Project,
    pub vars: Vars,
}

impl Loaded {
    /// A project known only by its name (`-p NAME` where there is no
    /// file): enough to list, stop or take down what it has running.
    pub fn named(name: &str) -> Loaded {
        Loaded {
            project: Project {
                name: name.to_string(),
                ..Default::default()
            },
            vars: Vars::default(),
        }
    }
}

struct Loader {
    /// Every file read, for messages (a node's `loc.file` indexes it).
    files: Vec<String>,
}

/// A project's variables: `over` (the environment, or the including
/// project's variables) over its env files (`.env` in `dir` when none are
/// named).
fn variables(dir: &Path, env_files: &[PathBuf], over: &Vars) -> Result<Vars> {
    let default = dir.join(".env");
    let files: Vec<PathBuf> = if env_files.is_empty() {
        if default.is_file() {
            vec![default]
        } else {
            Vec::new()
        }
    } else {
        env_files.to_vec()
    };
    let mut vars = Vars::default();
    for file in &files {
        let text = std::fs::read_to_string(file)
            .map_err(|e| Error::io(format!("read env file {}", file.display()), e))?;
        for (k, v) in interpolate::parse_env_file(&text, over)
            .map_err(|e| Error::project(format!("{}: {e}", file.display())))?
        {
            vars.values.insert(k, v);
        }
    }
    vars.values
        .extend(over.values.iter().map(|(k, v)| (k.clone(), v.clone())));
    Ok(vars)
}

impl Loader {
    /// The files of one project as one tree: each read and interpolated,
    /// its `extends` resolved, merged in order; relative paths made
    /// absolute against `dir`; its `include`s added.
    fn project_tree(&mut self, files: &[PathBuf], dir: &Path, vars: &Vars) -> Result<Node> {
        let mut merged: Option<Node> = None;
        for file in files {
            let mut root = self.read(file, vars)?;
            let base = file.parent().unwrap_or(dir).to_path_buf();
            resolve_extends(self, &mut root, &base, vars, &mut Vec::new())?;
            normalize(&mut root);
            merged = Some(match merged {
                None => root,
                Some(mut base) => {
                    merge_top(&mut base, root);
                    base
                }
            });
        }
        let mut root = merged.unwrap_or_else(|| Node::map(Vec::new()));
        resolve_paths(&mut root, dir);
        include(self, &mut root, dir, vars)?;
        Ok(root)
    }

    fn read(&mut self, path: &Path, vars: &Vars) -> Result<Node> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("read {}", path.display()), e))?;
        let index = self.files.len() as u16;
        self.files.push(path.display().to_string());
        let mut root = yaml::parse(&text, &path.display().to_string(), index)?;
        if !matches!(root.value, Value::Map(_)) {
            return Err(At::new(&root, "", &self.files).err("a compose file must be a mapping"));
        }
        self.interpolate(&mut root, "", vars)?;
        Ok(root)
    }

    fn interpolate(&self, node: &mut Node, path: &str, vars: &Vars) -> Result<()> {
        match &mut node.value {
            Value::Str(text) => {
                let replaced = interpolate::substitute(text, vars)
                    .map_err(|e| At::new(node, path, &self.files).err(e))?;
                node.value = Value::Str(replaced);
            }
            Value::Seq(items) => {
                for (i, item) in items.iter_mut().enumerate() {
                    self.interpolate(item, &format!("{path}[{i}]"), vars)?;
                }
            }
            Value::Map(entries) => {
                for (key, value) in entries.iter_mut() {
                    let sub = if path.is_empty() {
                        key.clone()
                    } else {
                        format!("{path}.{key}")
                    };
                    self.interpolate(value, &sub, vars)?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

/// Finds the compose file: in `dir` or the nearest directory above it.
pub fn find_file(dir: &Path) -> Result<PathBuf> {
    let mut at = Some(dir);
    while let Some(d) = at {
        for name in FILE_NAMES {
            let candidate = d.join(name);
            if candidate.is_file() {
                return Ok(candidate);
            }
        }
        at = d.parent();
    }
    Err(Error::NoFile(format!(
        "no configuration file provided: not found (looked for {} in {} and the directories above it)",
        FILE_NAMES.join(", "),
        dir.display()
    )))
}

/// Reads the project the options point at.
pub fn load(options: &Options) -> Result<Loaded> {
    let files: Vec<PathBuf> = if options.files.is_empty() {
        match options
            .environment
            .get("COMPOSE_FILE")
            .filter(|f| !f.is_empty())
        {
            Some(list) => {
                let sep = options
                    .environment
                    .get("COMPOSE_PATH_SEPARATOR")
                    .cloned()
                    .unwrap_or_else(|| ":".into());
                list.split(sep.as_str())
                    .map(|f| absolute(&options.cwd, Path::new(f)))
                    .collect()
            }
            None => vec![find_file(&options.cwd)?],
        }
    } else {
        options
            .files
            .iter()
            .map(|f| absolute(&options.cwd, f))
            .collect()
    };
    for file in &files {
        if file.as_os_str() == "-" {
            return Err(Error::project(
                "reading a compose file from stdin is not supported by keel: write it to a file",
            ));
        }
        if !file.is_file() {
            return Err(Error::project(format!(
                "open {}: no such file or directory",
                file.display()
            )));
        }
    }
    let dir = match &options.project_directory {
        Some(d) => absolute(&options.cwd, d),
        None => files[0]
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| options.cwd.clone()),
    };
    let environment = Vars {
        values: options.environment.clone(),
    };
    let env_files: Vec<PathBuf> = options
        .env_files
        .iter()
        .map(|f| absolute(&options.cwd, f))
        .collect();
    let mut vars = variables(&dir, &env_files, &environment)?;
    let mut loader = Loader { files: Vec::new() };
    let mut root = loader.project_tree(&files, &dir, &vars)?;

    // The name: -p, COMPOSE_PROJECT_NAME, name:, the directory's name.
    let name = if let Some(name) = &options.project_name {
        checked_name(name)?
    } else if let Some(name) = vars.get("COMPOSE_PROJECT_NAME").filter(|n| !n.is_empty()) {
        checked_name(name)?
    } else if let Some(node) = root.get("name") {
        let name = At::new(node, "name", &loader.files).string()?;
        if !model::valid_name(&name) {
            return Err(At::new(node, "name", &loader.files).err(format!(
                "{name:?} is not a valid project name: lower case letters, digits, '-' and '_', starting with a letter or a digit"
            )));
        }
        name
    } else {
        let base = dir
            .file_name()
            .map(|n| n.to_string_lossy().to_string())
            .unwrap_or_default();
        let name = model::normalize_name(&base);
        if name.is_empty() {
            return Err(Error::project(format!(
                "the directory {} gives no project name: name one with -p or name:",
                dir.display()
            )));
        }
        name
    };
    vars.values
        .entry("COMPOSE_PROJECT_NAME".into())
        .or_insert_with(|| name.clone());

    env_files_into_environment(&loader, &mut root, &vars)?;
    let mut project = model::project(&root, &name, &loader.files)?;
    project.working_dir = dir;
    project.config_files = files;
    apply_profiles(&mut project, options, &vars)?;
    check(&project)?;
    Ok(Loaded { project, vars })
}

fn checked_name(name: &str) -> Result<String> {
    if model::valid_name(name) {
        Ok(name.to_string())
    } else {
        Err(Error::project(format!(
            "{name:?} is not a valid project name: lower case letters, digits, '-' and '_', starting with a letter or a digit"
        )))
    }
}

fn absolute(cwd: &Path, path: &Path) -> PathBuf {
    if path.as_os_str() == "-" {
        return path.to_path_buf();
    }
    let joined = if path.is_absolute() {
        path.to_path_buf()
    } else {
        cwd.join(path)
    };
    PathBuf::from(keel_engine::spec::clean_path(&joined.to_string_lossy()))
}

// ---------------------------------------------------------------------------
// Normal forms, so that files merge key by key

/// Lists that are mappings in disguise become mappings (`environment`,
/// `labels`, `build.args`, `sysctls`, `networks`, `depends_on`).
fn normalize(root: &mut Node) {
    let Some(Node {
        value: Value::Map(services),
        ..
    }) = root.get_mut("services")
    else {
        return;
    };
    for (_, service) in services.iter_mut() {
        for key in ["environment", "labels", "sysctls"] {
            if let Some(node) = service.get_mut(key) {
                dict_node(node);
            }
        }
        if let Some(Node {
            value: Value::Map(_),
            ..
        }) = service.get("build")
            && let Some(args) = service.get_mut("build").and_then(|b| b.get_mut("args"))
        {
            dict_node(args);
        }
        for key in ["networks", "depends_on"] {
            if let Some(node) = service.get_mut(key)
                && let Value::Seq(items) = &node.value
            {
                let entries = items
                    .iter()
                    .filter_map(|item| {
                        item.scalar_text()
                            .map(|name| (name, Node::new(Value::Null, item.loc)))
                    })
                    .collect();
                node.value = Value::Map(entries);
            }
        }
    }
}

fn dict_node(node: &mut Node) {
    if let Value::Seq(items) = &node.value {
        let mut entries: Vec<(String, Node)> = Vec::new();
        for item in items {
            let Some(text) = item.scalar_text() else {
                return;
            };
            let (key, value) = match text.split_once('=') {
                Some((k, v)) => (k.to_string(), Value::Str(v.to_string())),
                None => (text, Value::Null),
            };
            entries.retain(|(k, _)| *k != key);
            entries.push((key, Node::new(value, item.loc)));
        }
        node.value = Value::Map(entries);
    }
}

/// Merges a later file into the earlier: services, networks, volumes,
/// secrets and configs by name; the rest replaced.
fn merge_top(base: &mut Node, over: Node) {
    let Value::Map(entries) = over.value else {
        return;
    };
    for (key, value) in entries {
        match key.as_str() {
            "services" => {
                let Value::Map(services) = value.value else {
                    continue;
                };
                if base.get("services").is_none() {
                    base.set("services", Node::map(Vec::new()));
                }
                let target = base.get_mut("services").expect("services");
                for (name, service) in services {
                    match target.get_mut(&name) {
                        Some(existing) => merge_service(existing, service),
                        None => target.set(&name, service),
                    }
                }
            }
            "networks" | "volumes" | "secrets" | "configs" => {
                let Value::Map(objects) = value.value else {
                    continue;
                };
                if base.get(&key).is_none() {
                    base.set(&key, Node::new(Value::Map(Vec::new()), value.loc));
                }
                let target = base.get_mut(&key).expect("set");
                if !matches!(target.value, Value::Map(_)) {
                    target.value = Value::Map(Vec::new());
                }
                for (name, object) in objects {
                    match target.get_mut(&name) {
                        Some(existing) => merge_maps(existing, object),
                        None => target.set(&name, object),
                    }
                }
            }
            _ => base.set(&key, value),
        }
    }
}

/// Mappings merge key by key (the later wins); other values are replaced.
fn merge_maps(base: &mut Node, over: Node) {
    match (&mut base.value, over.value) {
        (Value::Map(_), Value::Map(entries)) => {
            for (key, value) in entries {
                match base.get_mut(&key) {
                    Some(existing) => merge_maps(existing, value),
                    None => base.set(&key, value),
                }
            }
        }
        (_, value) => {
            base.value = value;
            base.loc = over.loc;
        }
    }
}

/// A service over another, as docker compose merges them: mappings key by
/// key; `ports`, `expose`, `dns`, `cap_add` and the like appended (each
/// once); `volumes` by target, `secrets` and `configs` by source; the rest
/// (`command`, `entrypoint`, `healthcheck.test`, scalars) replaced.
fn merge_service(base: &mut Node, over: Node) {
    let Value::Map(entries) = over.value else {
        return;
    };
    for (key, value) in entries {
        let Some(existing) = base.get_mut(&key) else {
            base.set(&key, value);
            continue;
        };
        match key.as_str() {
            "ports" | "expose" | "dns" | "dns_search" | "cap_add" | "cap_drop" | "security_opt"
            | "devices" | "tmpfs" | "env_file" | "extra_hosts" | "group_add" | "profiles" => {
                append_unique(existing, value)
            }
            "volumes" => merge_list_by(existing, value, volume_target),
            "secrets" | "configs" => merge_list_by(existing, value, |n| {
                n.get("source")
                    .and_then(Node::scalar_text)
                    .or_else(|| n.scalar_text())
            }),
            "command" | "entrypoint" => *existing = value,
            _ => merge_maps(existing, value),
        }
    }
}

fn as_list(node: Node) -> Vec<Node> {
    match node.value {
        Value::Seq(items) => items,
        Value::Null => Vec::new(),
        _ => vec![node],
    }
}

fn append_unique(base: &mut Node, over: Node) {
    let mut items = as_list(std::mem::replace(
        base,
        Node::new(Value::Null, Loc::default()),
    ));
    for item in as_list(over) {
        if !items.iter().any(|i| i.value == item.value) {
            items.push(item);
        }
    }
    base.value = Value::Seq(items);
}

fn merge_list_by(base: &mut Node, over: Node, key: impl Fn(&Node) -> Option<String>) {
    let mut items = as_list(std::mem::replace(
        base,
        Node::new(Value::Null, Loc::default()),
    ));
    for item in as_list(over) {
        let k = key(&item);
        match items.iter_mut().find(|i| k.is_some() && key(i) == k) {
            Some(slot) => *slot = item,
            None => items.push(item),
        }
    }
    base.value = Value::Seq(items);
}

fn volume_target(node: &Node) -> Option<String> {
    if let Some(target) = node.get("target") {
        return target.scalar_text();
    }
    let text = node.scalar_text()?;
    let parts: Vec<&str> = text.split(':').collect();
    Some(match parts.len() {
        1 => parts[0].to_string(),
        _ => parts[1].to_string(),
    })
}

// ---------------------------------------------------------------------------
// extends and include

fn resolve_extends(
    loader: &mut Loader,
    root: &mut Node,
    dir: &Path,
    vars: &Vars,
    stack: &mut Vec<String>,
) -> Result<()> {
    let names: Vec<String> = match root.get("services").map(|s| &s.value) {
        Some(Value::Map(entries)) => entries.iter().map(|(k, _)| k.clone()).collect(),
        _ => return Ok(()),
    };
    let snapshot = root.clone();
    for name in names {
        let Some(service) = root.get("services").and_then(|s| s.get(&name)) else {
            continue;
        };
        if service.get("extends").is_none() {
            continue;
        }
        let resolved = extended(loader, &snapshot, &name, dir, vars, stack)?;
        root.get_mut("services")
            .expect("services")
            .set(&name, resolved);
    }
    Ok(())
}

/// The service `name` of `root` with what it extends merged under it.
fn extended(
    loader: &mut Loader,
    root: &Node,
    name: &str,
    dir: &Path,
    vars: &Vars,
    stack: &mut Vec<String>,
) -> Result<Node> {
    let path = format!("services.{name}");
    let service = root
        .get("services")
        .and_then(|s| s.get(name))
        .ok_or_else(|| {
            Error::project(format!("cannot extend service {name:?}: no such service"))
        })?;
    let mut service = service.clone();
    let Some(extends) = service.remove("extends") else {
        return Ok(service);
    };
    let key = format!("{}#{name}", dir.display());
    if stack.contains(&key) {
        return Err(At::new(&extends, &path, &loader.files).err(format!(
            "extends makes a cycle: {} -> {name}",
            stack.join(" -> ")
        )));
    }
    let at_files = loader.files.clone();
    let extends_path = format!("{path}.extends");
    let at = At::new(&extends, &extends_path, &at_files);
    let (base_name, file) = match &extends.value {
        Value::Map(_) => {
            let mut base = None;
            let mut file = None;
            for (k, node) in at.fields(&["service", "file"])? {
                let p = format!("{path}.extends.{k}");
                let text = At::new(node, &p, &at_files).string()?;
                if k == "service" {
                    base = Some(text);
                } else {
                    file = Some(text);
                }
            }
            (base.ok_or_else(|| at.err("extends needs a service"))?, file)
        }
        _ => (at.string()?, None),
    };
    stack.push(key);
    let mut base = match file {
        Some(file) => {
            let file = absolute(dir, Path::new(&file));
            let mut other = loader.read(&file, vars)?;
            let other_dir = file.parent().unwrap_or(dir).to_path_buf();
            // Paths in the other file are its own directory's.
            resolve_paths(&mut other, &other_dir);
            extended(loader, &other, &base_name, &other_dir, vars, stack)?
        }
        None => extended(loader, root, &base_name, dir, vars, stack)?,
    };
    stack.pop();
    let mut wrapper = Node::map(vec![(
        "services".into(),
        Node::map(vec![(name.into(), service)]),
    )]);
    normalize(&mut wrapper);
    let mut base_wrapper = Node::map(vec![(
        "services".into(),
        Node::map(vec![(
            name.into(),
            std::mem::replace(&mut base, Node::map(Vec::new())),
        )]),
    )]);
    normalize(&mut base_wrapper);
    merge_top(&mut base_wrapper, wrapper);
    Ok(base_wrapper
        .get("services")
        .and_then(|s| s.get(name))
        .cloned()
        .unwrap_or_else(|| Node::map(Vec::new())))
}

fn include(loader: &mut Loader, root: &mut Node, dir: &Path, vars: &Vars) -> Result<()> {
    let Some(list) = root.remove("include") else {
        return Ok(());
    };
    let files = loader.files.clone();
    for (path, item) in At::new(&list, "include", &files).items()? {
        let at = At::new(item, &path, &files);
        let (paths, project_dir, env_files) = match &item.value {
            Value::Map(_) => {
                let mut paths = Vec::new();
                let mut project_dir = None;
                let mut env_files = Vec::new();
                for (k, node) in at.fields(&["path", "project_directory", "env_file"])? {
                    let p = format!("{path}.{k}");
                    let f = At::new(node, &p, &files);
                    match k {
                        "path" => paths = f.string_or_strings()?,
                        "project_directory" => project_dir = Some(f.string()?),
                        _ => env_files = f.string_or_strings()?,
                    }
                }
                (paths, project_dir, env_files)
            }
            _ => (vec![at.string()?], None, Vec::new()),
        };
        if paths.is_empty() {
            return Err(at.err("include needs a path"));
        }
        let sub_files: Vec<PathBuf> = paths.iter().map(|p| absolute(dir, Path::new(p))).collect();
        let sub_dir = match project_dir {
            Some(d) => absolute(dir, Path::new(&d)),
            None => sub_files[0].parent().unwrap_or(dir).to_path_buf(),
        };
        // The included project's own variables: its .env (or env_file),
        // under the including project's.
        let env_paths: Vec<PathBuf> = env_files
            .iter()
            .map(|f| absolute(dir, Path::new(f)))
            .collect();
        let sub_vars = variables(&sub_dir, &env_paths, vars)?;
        let mut sub = loader.project_tree(&sub_files, &sub_dir, &sub_vars)?;
        // What it brings must not clash with what the project has.
        for section in ["services", "networks", "volumes", "secrets", "configs"] {
            let Some(Node {
                value: Value::Map(entries),
                ..
            }) = sub.remove(section)
            else {
                continue;
            };
            if root.get(section).is_none() {
                root.set(section, Node::map(Vec::new()));
            }
            let target = root.get_mut(section).expect("set");
            for (name, node) in entries {
                if let Some(existing) = target.get(&name) {
                    if existing.value == node.value {
                        continue;
                    }
                    return Err(
                        At::new(existing, &format!("{section}.{name}"), &loader.files).err(
                            format!(
                                "conflicts with the {section} of the same name that {} includes",
                                sub_files[0].display()
                            ),
                        ),
                    );
                }
                target.set(&name, node);
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Paths, env_file, profiles

fn is_path(source: &str) -> bool {
    source.starts_with('.') || source.starts_with('/') || source.starts_with('~')
}

fn expand(dir: &Path, text: &str) -> String {
    let home = std::env::var("HOME").unwrap_or_else(|_| "/root".into());
    let path = if let Some(rest) = text.strip_prefix("~/") {
        PathBuf::from(home).join(rest)
    } else if text == "~" {
        PathBuf::from(home)
    } else {
        dir.join(text)
    };
    keel_engine::spec::clean_path(&path.to_string_lossy())
}

/// Relative paths (bind sources, build contexts, env files, secret and
/// config files) made absolute against `dir`.
fn resolve_paths(root: &mut Node, dir: &Path) {
    if let Some(Node {
        value: Value::Map(services),
        ..
    }) = root.get_mut("services")
    {
        for (_, service) in services.iter_mut() {
            match service.get_mut("build") {
                Some(Node {
                    value: Value::Str(context),
                    ..
                }) if !context.contains("://") => {
                    *context = expand(dir, context);
                }
                Some(
                    build @ Node {
                        value: Value::Map(_),
                        ..
                    },
                ) => {
                    match build.get_mut("context") {
                        Some(Node {
                            value: Value::Str(context),
                            ..
                        }) => {
                            if !context.contains("://") {
                                *context = expand(dir, context);
                            }
                        }
                        _ => build.set("context", Node::str(expand(dir, "."))),
                    }
                    if let Some(Node {
                        value: Value::Map(extra),
                        ..
                    }) = build.get_mut("additional_contexts")
                    {
                        for (_, v) in extra.iter_mut() {
                            if let Value::Str(s) = &mut v.value
                                && is_path(s)
                            {
                                *s = expand(dir, s);
                            }
                        }
                    }
                }
                _ => {}
            }
            if let Some(env_file) = service.get_mut("env_file") {
                let items: Vec<&mut Node> = match &mut env_file.value {
                    Value::Seq(items) => items.iter_mut().collect(),
                    _ => vec![env_file],
                };
                for item in items {
                    match &mut item.value {
                        Value::Str(s) => *s = expand(dir, s),
                        Value::Map(_) => {
                            if let Some(Node {
                                value: Value::Str(s),
                                ..
                            }) = item.get_mut("path")
                            {
                                *s = expand(dir, s);
                            }
                        }
                        _ => {}
                    }
                }
            }
            if let Some(Node {
                value: Value::Seq(volumes),
                ..
            }) = service.get_mut("volumes")
            {
                for volume in volumes.iter_mut() {
                    match &mut volume.value {
                        Value::Str(text) => {
                            if let Some((source, rest)) = text.split_once(':')
                                && is_path(source)
                            {
                                *text = format!("{}:{rest}", expand(dir, source));
                            }
                        }
                        Value::Map(_) => {
                            let bind = volume
                                .get("type")
                                .and_then(Node::scalar_text)
                                .is_some_and(|t| t == "bind");
                            if let Some(Node {
                                value: Value::Str(source),
                                ..
                            }) = volume.get_mut("source")
                                && (bind || is_path(source))
                            {
                                *source = expand(dir, source);
                            }
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    for section in ["secrets", "configs"] {
        if let Some(Node {
            value: Value::Map(objects),
            ..
        }) = root.get_mut(section)
        {
            for (_, object) in objects.iter_mut() {
                if let Some(Node {
                    value: Value::Str(file),
                    ..
                }) = object.get_mut("file")
                {
                    *file = expand(dir, file);
                }
            }
        }
    }
}

/// Each service's `env_file`s read under its `environment`; a variable
/// named without a value takes the project's value (or stays unset).
fn env_files_into_environment(loader: &Loader, root: &mut Node, vars: &Vars) -> Result<()> {
    let Some(Node {
        value: Value::Map(services),
        ..
    }) = root.get_mut("services")
    else {
        return Ok(());
    };
    for (name, service) in services.iter_mut() {
        let mut env: Vec<(String, Node)> = Vec::new();
        if let Some(files) = service.remove("env_file") {
            let path = format!("services.{name}.env_file");
            let items = match &files.value {
                Value::Seq(items) => items.clone(),
                _ => vec![files.clone()],
            };
            for item in items {
                let at = At::new(&item, &path, &loader.files);
                let (file, required) = match &item.value {
                    Value::Map(_) => {
                        let mut file = String::new();
                        let mut required = true;
                        for (k, node) in at.fields(&["path", "required", "format"])? {
                            let f = At::new(node, &path, &loader.files);
                            match k {
                                "path" => file = f.string()?,
                                "required" => required = f.bool()?,
                                _ => {}
                            }
                        }
                        (file, required)
                    }
                    _ => (at.string()?, true),
                };
                let text = match std::fs::read_to_string(&file) {
                    Ok(text) => text,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => continue,
                    Err(e) => {
                        return Err(at.err(format!("env file {file} not found: {e}")));
                    }
                };
                let parsed = interpolate::parse_env_file(&text, vars)
                    .map_err(|e| at.err(format!("{file}: {e}")))?;
                for (k, v) in parsed {
                    env.retain(|(n, _)| *n != k);
                    env.push((k, Node::new(Value::Str(v), item.loc)));
                }
            }
        }
        if let Some(node) = service.get_mut("environment") {
            dict_node(node);
            if let Value::Map(entries) = &node.value {
                for (k, v) in entries {
                    env.retain(|(n, _)| n != k);
                    let value = match &v.value {
                        Value::Null => match vars.get(k) {
                            Some(found) => Node::new(Value::Str(found.to_string()), v.loc),
                            None => v.clone(),
                        },
                        _ => v.clone(),
                    };
                    env.push((k.clone(), value));
                }
            }
        }
        if !env.is_empty() {
            service.set("environment", Node::map(env));
        }
    }
    Ok(())
}

fn apply_profiles(project: &mut Project, options: &Options, vars: &Vars) -> Result<()> {
    let mut active: BTreeSet<String> = options.profiles.iter().cloned().collect();
    if let Some(list) = vars.get("COMPOSE_PROFILES") {
        active.extend(
            list.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_string),
        );
    }
    let all = active.contains("*");
    let names: Vec<String> = project.services.keys().cloned().collect();
    for name in names {
        let service = &project.services[&name];
        let enabled = service.profiles.is_empty()
            || all
            || service.profiles.iter().any(|p| active.contains(p))
            || options.services.contains(&name);
        if !enabled {
            let service = project.services.remove(&name).expect("present");
            project.disabled.insert(name, service);
        }
    }
    // What an enabled service depends on comes along when its profiles
    // allow it, or when it is named; a required dependency left out is an
    // error.
    for (name, service) in &project.services {
        for (dep, d) in &service.depends_on {
            if project.services.contains_key(dep) {
                continue;
            }
            if project.disabled.contains_key(dep) {
                if d.required {
                    return Err(Error::project(format!(
                        "service {name:?} depends on {dep:?}, which is not enabled by the active profiles"
                    )));
                }
            } else if d.required {
                return Err(Error::project(format!(
                    "service {name:?} depends on undefined service {dep:?}: invalid compose project"
                )));
            }
        }
    }
    Ok(())
}

/// What holds across services: the networks, volumes, secrets and configs
/// they use exist; depends_on has no cycle.
fn check(project: &Project) -> Result<()> {
    for (name, service) in &project.services {
        for network in service.networks.keys() {
            if network != "default" && !project.networks.contains_key(network) {
                return Err(Error::project(format!(
                    "service {name:?} refers to undefined network {network}: invalid compose project"
                )));
            }
        }
        for volume in &service.volumes {
            if volume.kind == "volume"
                && !volume.source.is_empty()
                && !project.volumes.contains_key(&volume.source)
            {
                return Err(Error::project(format!(
                    "service {name:?} refers to undefined volume {}: invalid compose project",
                    volume.source
                )));
            }
        }
        for secret in &service.secrets {
            if !project.secrets.contains_key(&secret.source) {
                return Err(Error::project(format!(
                    "service {name:?} refers to undefined secret {}: invalid compose project",
                    secret.source
                )));
            }
        }
        for config in &service.configs {
            if !project.configs.contains_key(&config.source) {
                return Err(Error::project(format!(
                    "service {name:?} refers to undefined config {}: invalid compose project",
                    config.source
                )));
            }
        }
        if let Some(mode) = &service.network_mode
            && let Some(other) = mode.strip_prefix("service:")
            && !project.services.contains_key(other)
        {
            return Err(Error::project(format!(
                "service {name:?} uses the network of undefined service {other:?}"
            )));
        }
    }
    crate::order::dependency_order(
        project,
        &project.services.keys().cloned().collect::<Vec<_>>(),
    )?;
    Ok(())
}
