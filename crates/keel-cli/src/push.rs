//! `keel push`: an image from the store to a registry (keel-registry's
//! `push`), with docker's lines.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use clap::Args;
use keel_image::reference::Reference;
use keel_registry::push::{BlobKind, PushEvent, PushState};

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
    let client = crate::pull::client(root)?;
    let runtime = crate::netio::runtime(Some(2))?;
    if !args.quiet {
        println!("The push refers to repository [{}]", reference.name());
    }
    let (digest, manifest_size) = crate::netio::block_on(
        &runtime,
        keel_registry::push::push_image(
            &client,
            &store,
            &reference,
            (!args.quiet).then(progress_printer),
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
