//! `keel compose logs` and the foreground of `up`: every container's lines
//! prefixed with its name (padded, in a colour of its own on a terminal).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result};
use clap::Args;
use keel_compose::apply::{self, Compose};
use keel_engine::db::Container;
use keel_engine::logs::{Entry, ReadOptions};

use super::{Printer, UpArgs};

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short, long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs for each container ("all" for all)
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show timestamps
    #[arg(short, long)]
    pub timestamps: bool,
    /// Produce monochrome output
    #[arg(long = "no-color")]
    pub no_color: bool,
    /// Don't print prefix in logs
    #[arg(long = "no-log-prefix")]
    pub no_log_prefix: bool,
    /// index of the container if service has multiple replicas
    #[arg(long)]
    pub index: Option<u64>,
    pub services: Vec<String>,
}

/// docker compose's colours, in its order.
const COLOURS: &[&str] = &["36", "33", "32", "35", "34", "96", "93", "92", "95", "94"];

/// How each container's lines are prefixed.
#[derive(Clone)]
struct Prefixer {
    width: usize,
    colour: bool,
    prefix: bool,
    timestamps: bool,
}

impl Prefixer {
    fn new(containers: &[Container], colour: bool, prefix: bool, timestamps: bool) -> Prefixer {
        Prefixer {
            width: containers.iter().map(|c| c.name.len()).max().unwrap_or(0),
            colour,
            prefix,
            timestamps,
        }
    }

    fn line(&self, index: usize, name: &str, entry: &Entry) -> Vec<u8> {
        let mut out = Vec::new();
        if self.prefix {
            let padded = format!("{name:<width$} | ", width = self.width);
            if self.colour {
                let c = COLOURS[index % COLOURS.len()];
                out.extend(format!("\x1b[{c}m{padded}\x1b[0m").as_bytes());
            } else {
                out.extend(padded.as_bytes());
            }
        }
        if self.timestamps {
            out.extend(entry.time.as_bytes());
            out.push(b' ');
        }
        out.extend(entry.log.as_bytes());
        if !entry.log.ends_with('\n') {
            out.push(b'\n');
        }
        out
    }
}

fn tail_option(tail: &str) -> Result<Option<usize>> {
    Ok(match tail {
        "all" | "-1" => None,
        n => Some(
            n.parse()
                .with_context(|| format!("invalid value for --tail: {n}"))?,
        ),
    })
}

pub fn logs(compose: &mut Compose, args: &LogsArgs) -> Result<i32> {
    let services = compose.selected(&args.services)?;
    let containers: Vec<Container> =
        apply::project_containers(&mut compose.engine, &compose.project.name)?
            .into_iter()
            .filter(|c| services.iter().any(|s| s == apply::service_of(c)))
            .filter(|c| args.index.is_none_or(|i| apply::number(c) == i))
            .collect();
    let colour = !args.no_color && nix::unistd::isatty(std::io::stdout()).unwrap_or(false);
    let prefixer = Prefixer::new(&containers, colour, !args.no_log_prefix, args.timestamps);
    let options = ReadOptions {
        tail: tail_option(&args.tail)?,
        since: None,
        until: None,
    };
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (index, c) in containers.into_iter().enumerate() {
        let path = compose.engine.layout.log(&c.id);
        let (entries, end) = keel_engine::logs::read_to(&path, &options)?;
        {
            let mut out = out.lock().expect("stdout");
            for entry in &entries {
                if out
                    .write_all(&prefixer.line(index, &c.name, entry))
                    .is_err()
                {
                    return Ok(0);
                }
            }
            let _ = out.flush();
        }
        if args.follow {
            threads.push(follow(
                &compose.engine,
                c,
                index,
                end,
                prefixer.clone(),
                out.clone(),
                stop.clone(),
            ));
        }
    }
    for t in threads {
        let _ = t.join();
    }
    Ok(0)
}

/// Follows one container's log in a thread until it stops (or `stop`).
fn follow(
    engine: &keel_engine::Engine,
    c: Container,
    index: usize,
    end: Option<keel_engine::logs::Position>,
    prefixer: Prefixer,
    out: Arc<Mutex<std::io::Stdout>>,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<()> {
    let path = engine.layout.log(&c.id);
    let layout = engine.layout.clone();
    let options = engine.options.clone();
    std::thread::spawn(move || {
        let Ok(mut engine) = keel_engine::Engine::open(layout, options) else {
            return;
        };
        let name = c.name.clone();
        let id = c.id.clone();
        let emit = |entry: &Entry| -> std::io::Result<()> {
            let mut out = out.lock().expect("stdout");
            out.write_all(&prefixer.line(index, &name, entry))?;
            out.flush()
        };
        let mut last_check = std::time::Instant::now();
        let _ = keel_engine::logs::follow(&path, end, &ReadOptions::default(), emit, || {
            if stop.load(Ordering::Relaxed) {
                return true;
            }
            if last_check.elapsed() < Duration::from_millis(200) {
                return false;
            }
            last_check = std::time::Instant::now();
            engine
                .find(&id)
                .map(|c| !c.state.status.is_active())
                .unwrap_or(true)
        });
    })
}

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_: libc::c_int) {
    if INTERRUPTED.swap(true, Ordering::SeqCst) {
        // A second ctrl-c: out at once, as docker compose's force.
        // SAFETY: _exit is async-signal-safe.
        unsafe { libc::_exit(130) };
    }
}

/// The foreground of `up`: the containers' logs until they all stop; a
/// ctrl-c stops them (a second one leaves at once); with
/// `--abort-on-container-exit` the first to stop stops them all.
pub fn attach_all(
    compose: &mut Compose,
    printer: &mut Printer,
    containers: &[Container],
    args: &UpArgs,
) -> Result<i32> {
    // SAFETY: a handler that only sets an atomic (or _exits).
    unsafe {
        libc::signal(
            libc::SIGINT,
            on_interrupt as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            on_interrupt as *const () as libc::sighandler_t,
        );
    }
    let colour = !args.no_color && nix::unistd::isatty(std::io::stdout()).unwrap_or(false);
    let prefixer = Prefixer::new(containers, colour, !args.no_log_prefix, args.timestamps);
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut threads = Vec::new();
    for (index, c) in containers.iter().enumerate() {
        let path = compose.engine.layout.log(&c.id);
        // From the start: the container may have written already.
        let (entries, end) = keel_engine::logs::read_to(&path, &ReadOptions::default())?;
        {
            let mut out = out.lock().expect("stdout");
            for entry in &entries {
                let _ = out.write_all(&prefixer.line(index, &c.name, entry));
            }
            let _ = out.flush();
        }
        threads.push(follow(
            &compose.engine,
            c.clone(),
            index,
            end,
            prefixer.clone(),
            out.clone(),
            stop.clone(),
        ));
    }
    let abort = args.abort_on_container_exit || args.exit_code_from.is_some();
    let mut reported = std::collections::BTreeSet::new();
    let mut code = 0;
    let mut stopping = false;
    loop {
        if INTERRUPTED.load(Ordering::SeqCst) && !stopping {
            eprintln!("Gracefully stopping... (press Ctrl+C again to force)");
            stopping = true;
            let services: Vec<String> = Vec::new();
            compose.stop(printer, &services, args.timeout)?;
        }
        let mut running = 0;
        let mut exited_now = None;
        for c in containers {
            let Ok(now) = compose.engine.find(&c.id) else {
                continue;
            };
            let restarting = now.state.status == keel_engine::db::Status::Restarting;
            if now.state.status.is_active() || restarting {
                running += 1;
            } else if reported.insert(c.id.clone()) {
                // Let its last lines out first.
                std::thread::sleep(Duration::from_millis(50));
                let line = format!("{} exited with code {}\n", c.name, now.state.exit_code);
                let _ = out.lock().expect("stdout").write_all(line.as_bytes());
                if args.exit_code_from.as_deref() == Some(apply::service_of(&now)) {
                    code = now.state.exit_code;
                }
                exited_now.get_or_insert(now);
            }
        }
        if abort
            && let Some(first) = exited_now
            && !stopping
        {
            stopping = true;
            if args.exit_code_from.is_none() {
                code = first.state.exit_code;
            }
            eprintln!("Aborting on container exit...");
            compose.stop(printer, &[], args.timeout)?;
            if let Some(from) = &args.exit_code_from {
                for c in containers.iter().filter(|c| apply::service_of(c) == from) {
                    if let Ok(now) = compose.engine.find(&c.id) {
                        code = now.state.exit_code;
                    }
                }
            }
            continue;
        }
        if running == 0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }
    if INTERRUPTED.load(Ordering::SeqCst) && !abort {
        return Ok(130);
    }
    Ok(code)
}
