//! `keel login` and `keel logout`: credentials in docker's config.json
//! (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`), so logins made
//! by `docker login` work for keel and the other way round.

use std::io::{BufRead as _, IsTerminal as _, Read as _, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow, bail};
use clap::Args;
use keel_registry::auth::{
    Credentials, DockerConfig, default_docker_config_path, normalize_registry_key,
};

/// The key docker writes for Docker Hub.
pub const DOCKER_HUB_KEY: &str = "https://index.docker.io/v1/";

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// Username
    #[arg(short, long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin: the command line is visible to others)
    #[arg(short, long)]
    pub password: Option<String>,
    /// Take the password from stdin
    #[arg(long = "password-stdin")]
    pub password_stdin: bool,
    /// The registry (default: Docker Hub)
    pub server: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// The registry (default: Docker Hub)
    pub server: Option<String>,
}

/// A registry as the user names it: the key docker writes in config.json
/// (`https://index.docker.io/v1/` for Docker Hub, else `host[:port]`) and
/// the registry host the client talks to.
#[derive(Debug, PartialEq, Eq)]
pub struct Server {
    pub key: String,
    pub registry: String,
}

pub fn server(name: Option<&str>) -> Server {
    let registry = name
        .map(normalize_registry_key)
        .filter(|host| !host.is_empty())
        .unwrap_or_else(|| "docker.io".to_string());
    if registry == "docker.io" {
        Server {
            key: DOCKER_HUB_KEY.to_string(),
            registry,
        }
    } else {
        Server {
            key: registry.clone(),
            registry,
        }
    }
}

fn config_path() -> Result<PathBuf> {
    default_docker_config_path()
        .ok_or_else(|| anyhow!("neither DOCKER_CONFIG nor HOME is set: no place for config.json"))
}

/// `keel login`: exit 0 on success, 1 (with docker-like words) otherwise.
pub fn login(root: &Path, args: &LoginArgs) -> Result<i32> {
    match try_login(root, args) {
        Ok(()) => {
            println!("Login Succeeded");
            Ok(0)
        }
        Err(e) => {
            eprintln!("Error: {e:#}");
            Ok(1)
        }
    }
}

fn try_login(root: &Path, args: &LoginArgs) -> Result<()> {
    let server = server(args.server.as_deref());
    let path = config_path()?;
    if args.password.is_some() && args.password_stdin {
        bail!("--password and --password-stdin are mutually exclusive");
    }
    if args.password_stdin && args.username.is_none() {
        bail!("Must provide --username with --password-stdin");
    }
    if args.password.is_some() {
        eprintln!("WARNING! Using --password via the CLI is insecure. Use --password-stdin.");
    }
    let mut password = args.password.clone();
    if args.password_stdin {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("read the password from stdin")?;
        password = Some(text.trim_end_matches(['\n', '\r']).to_string());
    }
    let stored = DockerConfig::load(&path)
        .with_context(|| format!("read {}", path.display()))?
        .credentials(&server.registry)
        .cloned();

    // Nothing given: docker first tries what config.json already holds.
    if args.username.is_none()
        && password.is_none()
        && let Some(Credentials::Basic { username, password }) = &stored
    {
        println!("Authenticating with existing credentials...");
        match verify(root, &server, username, password) {
            Ok(()) => return Ok(()),
            Err(e) if !std::io::stdin().is_terminal() => {
                return Err(e.context(format!("login to {} failed", server.registry)));
            }
            Err(e) => eprintln!("Login did not succeed, error: {e:#}"),
        }
    }

    let interactive = args.username.is_none() || password.is_none();
    if interactive && !std::io::stdin().is_terminal() {
        bail!("Cannot perform an interactive login from a non TTY device");
    }
    let username = match &args.username {
        Some(username) => username.clone(),
        None => {
            let previous = match &stored {
                Some(Credentials::Basic { username, .. }) => Some(username.as_str()),
                _ => None,
            };
            let prompt = match previous {
                Some(name) => format!("Username ({name}): "),
                None => "Username: ".to_string(),
            };
            let typed = prompt_line(&prompt)?;
            match (typed.is_empty(), previous) {
                (true, Some(name)) => name.to_string(),
                (true, None) => bail!("Username is required"),
                (false, _) => typed,
            }
        }
    };
    let password = match password {
        Some(password) => password,
        None => read_password("Password: ")?,
    };
    if username.is_empty() {
        bail!("Username is required");
    }
    if password.is_empty() {
        bail!("Password is required");
    }
    verify(root, &server, &username, &password)
        .with_context(|| format!("login to {} failed", server.registry))?;
    DockerConfig::save_login(&path, &server.key, &username, &password)
        .with_context(|| format!("store the credentials in {}", path.display()))?;
    warn_about_helpers(&path);
    eprintln!(
        "WARNING! Your password will be stored unencrypted in {}.",
        path.display()
    );
    Ok(())
}

/// The registry must accept these credentials (`GET /v2/` through its
/// auth challenge), as `docker login` checks them.
fn verify(root: &Path, server: &Server, username: &str, password: &str) -> Result<()> {
    let options = crate::pull::client_options(root)?;
    let runtime = crate::netio::runtime(None)?;
    crate::netio::block_on(
        &runtime,
        keel_registry::client::verify_login(options, &server.registry, username, password),
    )?;
    Ok(())
}

/// keel writes config.json itself; docker would hand the secret to a
/// credential helper when the file names one.
fn warn_about_helpers(path: &Path) {
    let Ok(text) = std::fs::read(path) else {
        return;
    };
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&text) else {
        return;
    };
    if value.get("credsStore").is_some() || value.get("credHelpers").is_some() {
        eprintln!(
            "WARNING! {} names a credential helper; keel does not use credential helpers and stored the login in the file itself.",
            path.display()
        );
    }
}

pub fn logout(args: &LogoutArgs) -> Result<i32> {
    let server = server(args.server.as_deref());
    let path = config_path()?;
    let shown = if server.registry == "docker.io" {
        server.key.as_str()
    } else {
        server.registry.as_str()
    };
    if DockerConfig::remove_login(&path, &server.registry)
        .with_context(|| format!("update {}", path.display()))?
    {
        println!("Removing login credentials for {shown}");
    } else {
        println!("Not logged in to {shown}");
    }
    Ok(0)
}

fn prompt_line(prompt: &str) -> Result<String> {
    let mut out = std::io::stdout().lock();
    out.write_all(prompt.as_bytes())?;
    out.flush()?;
    drop(out);
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("read from stdin")?;
    Ok(line.trim().to_string())
}

/// Reads a line from the terminal on stdin with echo off.
fn read_password(prompt: &str) -> Result<String> {
    struct Restore(libc::termios);
    impl Drop for Restore {
        fn drop(&mut self) {
            // SAFETY: puts back the attributes read from fd 0 below.
            unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &self.0) };
        }
    }
    {
        let mut out = std::io::stdout().lock();
        out.write_all(prompt.as_bytes())?;
        out.flush()?;
    }
    // SAFETY: termios is plain data that tcgetattr fills.
    let mut attributes: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd 0 and a termios struct we own for the kernel to fill.
    if unsafe { libc::tcgetattr(libc::STDIN_FILENO, &mut attributes) } != 0 {
        return Err(std::io::Error::last_os_error()).context("read the terminal's settings");
    }
    let restore = Restore(attributes);
    let mut quiet = attributes;
    quiet.c_lflag &= !libc::ECHO;
    quiet.c_lflag |= libc::ECHONL;
    // SAFETY: sets attributes on fd 0 from a struct we own.
    if unsafe { libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) } != 0 {
        return Err(std::io::Error::last_os_error()).context("turn off the terminal's echo");
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    drop(restore);
    read.context("read the password")?;
    Ok(line.trim_end_matches(['\n', '\r']).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_servers_as_docker_does() {
        for name in [
            None,
            Some("docker.io"),
            Some("index.docker.io"),
            Some("https://index.docker.io/v1/"),
        ] {
            assert_eq!(
                server(name),
                Server {
                    key: DOCKER_HUB_KEY.into(),
                    registry: "docker.io".into()
                },
                "{name:?}"
            );
        }
        assert_eq!(
            server(Some("http://LocalHost:5000/v2/")),
            Server {
                key: "localhost:5000".into(),
                registry: "localhost:5000".into()
            }
        );
        assert_eq!(server(Some("quay.io")).key, "quay.io");
    }
}
