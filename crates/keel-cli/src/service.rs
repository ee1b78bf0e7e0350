//! `keel system service`: the Docker Engine API on a socket, for docker's
//! CLI, docker-py, docker-compose and the other SDKs (keel-api does the
//! work; this is its flags).

use anyhow::{Result, bail};
use clap::Args;

use crate::containers::Context;

#[derive(Args, Debug)]
pub struct ServiceArgs {
    /// Where to listen: unix:///PATH, or tcp://ADDR:PORT (only with --tlscert, --tlskey and --tlscacert)
    #[arg(
        long,
        short = 'H',
        value_name = "URI",
        default_value = "unix:///run/keel/docker.sock"
    )]
    pub listen: String,
    /// Exit after this many seconds with no client (0: never; an attached session counts as a client)
    #[arg(long, short = 't', value_name = "SECONDS", default_value_t = 5)]
    pub time: u64,
    /// The server's TLS certificate (PEM), for tcp://
    #[arg(long = "tlscert", value_name = "FILE")]
    pub tls_cert: Option<std::path::PathBuf>,
    /// The server's TLS key (PEM)
    #[arg(long = "tlskey", value_name = "FILE")]
    pub tls_key: Option<std::path::PathBuf>,
    /// Clients must show a certificate this CA signed (PEM)
    #[arg(long = "tlscacert", value_name = "FILE")]
    pub tls_ca: Option<std::path::PathBuf>,
}

pub fn run(ctx: &Context, args: &ServiceArgs) -> Result<i32> {
    let listen = if keel_api::server::activated() {
        keel_api::server::Listen::Activated
    } else {
        keel_api::server::Listen::parse(&args.listen).map_err(anyhow::Error::msg)?
    };
    let tls = match (&args.tls_cert, &args.tls_key, &args.tls_ca) {
        (None, None, None) => None,
        (Some(cert), Some(key), Some(ca)) => Some(keel_api::server::Tls {
            cert: cert.clone(),
            key: key.clone(),
            ca: ca.clone(),
        }),
        _ => bail!("TLS needs all three of --tlscert, --tlskey and --tlscacert"),
    };
    let state = keel_api::State::new(ctx.root.clone(), ctx.runroot.clone(), ctx.engine_options());
    let idle = (args.time > 0).then(|| std::time::Duration::from_secs(args.time));
    keel_api::server::serve(state, keel_api::server::Config { listen, tls, idle })
        .map_err(anyhow::Error::msg)?;
    Ok(0)
}
