//! `keel pull`: the registry client fetches and verifies the blobs, the
//! image store unpacks and records the image; progress in docker's words.

use std::path::Path;

use anyhow::{Context, Result, bail};
use clap::Args;
use keel_image::manifest::Platform;
use keel_image::reference::Reference;
use keel_registry::auth::DockerConfig;
use keel_registry::{Client, ClientOptions, PullOptions};

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Pull this platform's image from a multi-platform index (os/arch[/variant])
    #[arg(long)]
    pub platform: Option<String>,
    /// Print only the image's name
    #[arg(short, long)]
    pub quiet: bool,
    /// Pull every tag of the repository
    #[arg(short = 'a', long = "all-tags")]
    pub all_tags: bool,
    /// NAME[:TAG|@DIGEST]
    pub name: String,
}

/// Registry settings: mirrors and insecure registries, from
/// `$KEEL_REGISTRIES_CONFIG` or `<root>/registries.json`; credentials from
/// docker's config.json (`keel login` and `docker login` write the same).
pub fn client(root: &Path) -> Result<Client> {
    let mut options = client_options(root)?;
    options.docker_config =
        Some(DockerConfig::load_default().context("read docker's config.json")?);
    Ok(Client::new(options)?)
}

/// Mirrors and insecure registries (no credentials): `$KEEL_REGISTRIES_CONFIG`
/// or `<root>/registries.json`.
pub fn client_options(root: &Path) -> Result<ClientOptions> {
    let path = std::env::var_os("KEEL_REGISTRIES_CONFIG")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| root.join("registries.json"));
    ClientOptions::from_file(&path)
        .with_context(|| format!("read registry settings {}", path.display()))
}

pub fn pull(root: &Path, args: &PullArgs) -> Result<()> {
    let reference = Reference::parse(&args.name)?;
    let platform = match &args.platform {
        Some(text) => Platform::parse(text)?,
        None => Platform::current(),
    };
    let client = client(root)?;
    let runtime = crate::netio::runtime(Some(2))?;
    // What the user typed (references are normalized with `latest`).
    let name_only = !args.name.contains('@')
        && !args
            .name
            .rsplit('/')
            .next()
            .is_some_and(|last| last.contains(':'));
    let references = if args.all_tags {
        if !name_only {
            bail!("tag can't be used with --all-tags/-a");
        }
        let tags = crate::netio::block_on(
            &runtime,
            client.list_tags(reference.registry(), reference.repository()),
        )?;
        tags.iter()
            .map(|tag| reference.with_tag(tag))
            .collect::<std::result::Result<Vec<_>, _>>()?
    } else {
        if name_only && !args.quiet {
            println!("Using default tag: latest");
        }
        vec![reference]
    };
    let mut store = crate::images::open(root)?;
    for reference in references {
        let familiar = match (reference.tag(), reference.digest()) {
            (_, Some(digest)) => format!("{}@{digest}", reference.familiar_name()),
            (Some(tag), None) => format!("{}:{tag}", reference.familiar_name()),
            (None, None) => reference.familiar_name(),
        };
        if !args.quiet {
            println!(
                "{}: Pulling from {}",
                reference
                    .tag()
                    .map(str::to_string)
                    .unwrap_or_else(|| reference.api_reference()),
                reference.repository()
            );
        }
        let progress = crate::progress::Progress::new();
        let options = PullOptions {
            platform: platform.clone(),
            progress: (!args.quiet).then(|| progress.callback()),
            ..PullOptions::default()
        };
        let pulled = crate::netio::block_on(
            &runtime,
            keel_registry::pull_image(&client, &mut store, &reference, &options),
        )
        .with_context(|| format!("pull {familiar}"))?;
        progress.flush();
        if args.quiet {
            println!("{}", reference.full());
            continue;
        }
        progress.complete(&pulled.manifest.layers);
        println!("Digest: {}", pulled.result.repo_digest());
        if !pulled.updated {
            println!("Status: Image is up to date for {familiar}");
        } else {
            println!("Status: Downloaded newer image for {familiar}");
            keel_engine::events::record(
                root,
                "image",
                "pull",
                &reference.full(),
                &[("name", &reference.full())],
            );
        }
        println!("{}", reference.full());
    }
    Ok(())
}
