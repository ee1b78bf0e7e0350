//! `keel push`: an image from the store to a registry (keel-registry's
//! `push`), with docker's lines.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, bail};
use clap::Args;
use keel_image::reference::Reference;
use keel_registry::push::{BlobKind, PushEvent, PushOptions, PushState};

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Print only the image's name
    #[arg(short, long)]
    pub quiet: bool,
    /// NAME[:TAG]
    pub name: String,
}

/// docker's per-layer lines, once per state change.
fn progress_printer() -> Arc<dyn Fn(PushEvent) + Send + Sync> {
    let seen: Mutex<HashMap<String, PushState>> = Mutex::new(HashMap::new());
    Arc::new(move |event: PushEvent| {
        if event.kind != BlobKind::Layer {
            return;
        }
        let Ok(mut seen) = seen.lock() else { return };
        let key = event.digest.to_string();
        if seen.get(&key) == Some(&event.state) {
            return;
        }
        seen.insert(key, event.state.clone());
        let words = match &event.state {
            PushState::Preparing => "Preparing".to_string(),
            PushState::Waiting => "Waiting".to_string(),
            PushState::Pushing => "Pushing".to_string(),
            PushState::Pushed => "Pushed".to_string(),
            PushState::AlreadyExists => "Layer already exists".to_string(),
            PushState::Mounted(from) => format!("Mounted from {from}"),
        };
        println!("{}: {words}", event.digest.short());
    })
}

pub fn push(root: &Path, args: &PushArgs) -> Result<()> {
    let mut reference = Reference::parse(&args.name)?;
    if reference.tag().is_none() && reference.digest().is_none() {
        reference = reference.with_tag("latest")?;
    }
    let store = crate::images::open(root)?;
    let record = match reference.digest() {
        Some(_) => store.resolve(&reference.full()).ok(),
        None => store.metadata.resolve_tag(&reference.full())?,
    };
    let Some(record) = record else {
        bail!(
            "An image does not exist locally with the tag: {}",
            reference.name()
        );
    };
    // The image's names in other repositories of the same registry: the
    // registry can mount their blobs instead of taking them again.
    let other_repositories = |tags: &[String]| -> Vec<String> {
        tags.iter()
            .filter_map(|t| Reference::parse(t).ok())
            .filter(|t| {
                t.registry() == reference.registry() && t.repository() != reference.repository()
            })
            .map(|t| t.repository().to_string())
            .collect()
    };
    let mount_from = other_repositories(&store.metadata.tags_of(&record.id)?);
    // Other images' names in other repositories of the registry: a layer
    // this image shares with one of them (a common base) is mounted from
    // there, as docker remembers where it pushed or pulled each layer.
    let mut blob_sources: std::collections::HashMap<keel_image::digest::Digest, Vec<String>> =
        Default::default();
    let wanted: std::collections::HashSet<keel_image::digest::Digest> = store
        .layers(&record)
        .map(|layers| layers.into_iter().map(|l| l.digest).collect())
        .unwrap_or_default();
    for (other, tags) in store.metadata.images()? {
        if other.id == record.id {
            continue;
        }
        let repositories = other_repositories(&tags);
        if repositories.is_empty() {
            continue;
        }
        for layer in store.layers(&other).unwrap_or_default() {
            if wanted.contains(&layer.digest) {
                let sources = blob_sources.entry(layer.digest).or_default();
                for repository in &repositories {
                    if !sources.contains(repository) {
                        sources.push(repository.clone());
                    }
                }
            }
        }
    }
    let manifest_size = std::fs::metadata(store.content.path(&record.manifest))
        .map(|m| m.len())
        .with_context(|| format!("manifest {} of the image", record.manifest))?;
    let client = crate::pull::client(root)?;
    let runtime = crate::netio::runtime(Some(2))?;
    if !args.quiet {
        println!("The push refers to repository [{}]", reference.name());
    }
    let options = PushOptions {
        progress: (!args.quiet).then(progress_printer),
        mount_from,
        blob_sources,
        ..PushOptions::default()
    };
    let digest = crate::netio::block_on(
        &runtime,
        keel_registry::push(
            &client,
            &store.content,
            &reference,
            &record.manifest,
            &record.manifest_media_type,
            &options,
        ),
    )
    .with_context(|| format!("push {}", reference.full()))?;
    if args.quiet {
        println!("{}", reference.full());
    } else {
        let tag = reference
            .tag()
            .map(str::to_string)
            .unwrap_or_else(|| digest.to_string());
        println!("{tag}: digest: {digest} size: {manifest_size}");
    }
    Ok(())
}
