//! The order services start and stop in: what a service depends on
//! (`depends_on`, `network_mode: service:X`) before it.

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::model::{Project, Service};

/// The services a service needs started first.
pub fn needs(service: &Service) -> Vec<String> {
    let mut out: Vec<String> = service.depends_on.keys().cloned().collect();
    if let Some(mode) = &service.network_mode
        && let Some(other) = mode.strip_prefix("service:")
        && !out.iter().any(|o| o == other)
    {
        out.push(other.to_string());
    }
    out
}

/// `wanted` and what they need, dependencies first; a cycle is an error
/// that names it.
pub fn dependency_order(project: &Project, wanted: &[String]) -> Result<Vec<String>> {
    let mut done: Vec<String> = Vec::new();
    let mut seen = BTreeSet::new();
    for name in wanted {
        visit(project, name, &mut Vec::new(), &mut seen, &mut done)?;
    }
    Ok(done)
}

fn visit(
    project: &Project,
    name: &str,
    path: &mut Vec<String>,
    seen: &mut BTreeSet<String>,
    done: &mut Vec<String>,
) -> Result<()> {
    if let Some(at) = path.iter().position(|p| p == name) {
        let mut cycle: Vec<String> = path[at..].to_vec();
        cycle.push(name.to_string());
        return Err(Error::project(format!(
            "dependency cycle detected: {}",
            cycle.join(" -> ")
        )));
    }
    if !seen.insert(name.to_string()) {
        return Ok(());
    }
    let Some(service) = project.services.get(name) else {
        // Left out by a profile, not required: nothing to start.
        return Ok(());
    };
    path.push(name.to_string());
    for dep in needs(service) {
        visit(project, &dep, path, seen, done)?;
    }
    path.pop();
    done.push(name.to_string());
    Ok(())
}

/// `services` in levels: each service after every level holding what it
/// needs (so a level's services can start together, and stop together in
/// the reverse order). Dependencies outside `services` do not count.
pub fn levels(project: &Project, services: &[String]) -> Result<Vec<Vec<String>>> {
    let ordered = dependency_order(project, services)?;
    let mut level: std::collections::BTreeMap<String, usize> = Default::default();
    for name in &ordered {
        if !services.contains(name) {
            continue;
        }
        let depth = project
            .services
            .get(name)
            .map(|s| {
                needs(s)
                    .iter()
                    .filter_map(|d| level.get(d))
                    .map(|l| l + 1)
                    .max()
                    .unwrap_or(0)
            })
            .unwrap_or(0);
        level.insert(name.clone(), depth);
    }
    let count = level.values().max().map_or(0, |m| m + 1);
    let mut out = vec![Vec::new(); count];
    for name in &ordered {
        if let Some(l) = level.get(name) {
            out[*l].push(name.clone());
        }
    }
    Ok(out)
}
