//! `keel pull`'s progress, as docker shows it: on a terminal one line per
//! layer (`<id>: Downloading [=====>   ]  12.3MB/72.1MB  4.1MB/s`) redrawn
//! in place with ANSI escapes at most ~10 times a second; elsewhere plain
//! lines, one per state change (what scripts and tests read).

use std::collections::HashMap;
use std::io::{IsTerminal as _, Write as _};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use keel_image::manifest::Descriptor;
use keel_registry::pull::{BlobKind, ProgressEvent, ProgressState};

use keel_engine::views::human_size;

/// Time between two redraws of the terminal display.
const REDRAW_EVERY: Duration = Duration::from_millis(100);
/// Width of docker's bar, between the brackets.
const BAR_WIDTH: usize = 50;

/// The progress of one pull: hand [`Progress::callback`] to the registry
/// client, then call [`Progress::complete`] once the image is committed.
pub struct Progress {
    inner: Arc<Mutex<Display>>,
}

/// What a layer's line says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Waiting,
    Downloading,
    Verifying,
    Downloaded,
    AlreadyExists,
    PullComplete,
    /// The connection failed: trying again in this many seconds.
    Retrying(u64),
}

impl Status {
    fn words(self) -> std::borrow::Cow<'static, str> {
        match self {
            Status::Waiting => "Pulling fs layer".into(),
            Status::Downloading => "Downloading".into(),
            Status::Verifying => "Verifying Checksum".into(),
            Status::Downloaded => "Download complete".into(),
            Status::AlreadyExists => "Already exists".into(),
            Status::PullComplete => "Pull complete".into(),
            Status::Retrying(1) => "Retrying in 1 second".into(),
            Status::Retrying(seconds) => format!("Retrying in {seconds} seconds").into(),
        }
    }
}

impl From<ProgressState> for Status {
    fn from(state: ProgressState) -> Status {
        match state {
            ProgressState::Waiting => Status::Waiting,
            ProgressState::Downloading => Status::Downloading,
            ProgressState::Verifying => Status::Verifying,
            ProgressState::Done => Status::Downloaded,
            ProgressState::AlreadyExists => Status::AlreadyExists,
            ProgressState::Retrying(seconds) => Status::Retrying(seconds),
        }
    }
}

struct Layer {
    id: String,
    status: Status,
    current: u64,
    total: u64,
    /// When the download started, for the speed.
    started: Option<Instant>,
}

struct Display {
    terminal: bool,
    layers: Vec<Layer>,
    index: HashMap<String, usize>,
    /// Lines drawn last time (the cursor sits below them).
    drawn: usize,
    last_draw: Option<Instant>,
}

impl Progress {
    /// Draws on stdout: the terminal display if stdout is one, plain lines
    /// otherwise.
    pub fn new() -> Progress {
        Progress::with_terminal(std::io::stdout().is_terminal())
    }

    pub fn with_terminal(terminal: bool) -> Progress {
        Progress {
            inner: Arc::new(Mutex::new(Display {
                terminal,
                layers: Vec::new(),
                index: HashMap::new(),
                drawn: 0,
                last_draw: None,
            })),
        }
    }

    /// The function the registry client calls with each event.
    pub fn callback(&self) -> Arc<dyn Fn(ProgressEvent) + Send + Sync> {
        let inner = Arc::clone(&self.inner);
        Arc::new(move |event: ProgressEvent| {
            if event.kind != BlobKind::Layer {
                return;
            }
            let Ok(mut display) = inner.lock() else {
                return;
            };
            display.update(&event);
        })
    }

    /// Draws the latest state now (the terminal display is throttled):
    /// once the downloads are over, before the layers are unpacked.
    pub fn flush(&self) {
        if let Ok(mut display) = self.inner.lock()
            && display.terminal
            && !display.layers.is_empty()
        {
            display.draw();
        }
    }

    /// After the commit: every layer's line ends as docker's "Pull
    /// complete" (plain: one line each, in manifest order, as before).
    pub fn complete(&self, layers: &[Descriptor]) {
        let Ok(mut display) = self.inner.lock() else {
            return;
        };
        if !display.terminal {
            let mut out = std::io::stdout().lock();
            for layer in layers {
                let _ = writeln!(out, "{}: Pull complete", layer.digest.short());
            }
            return;
        }
        for layer in layers {
            let id = layer.digest.short().to_string();
            let index = display.slot(&id);
            let line = &mut display.layers[index];
            if line.status != Status::AlreadyExists {
                line.status = Status::PullComplete;
            }
        }
        display.draw();
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

impl Display {
    fn slot(&mut self, id: &str) -> usize {
        if let Some(&index) = self.index.get(id) {
            return index;
        }
        self.layers.push(Layer {
            id: id.to_string(),
            status: Status::Waiting,
            current: 0,
            total: 0,
            started: None,
        });
        self.index.insert(id.to_string(), self.layers.len() - 1);
        self.layers.len() - 1
    }

    fn update(&mut self, event: &ProgressEvent) {
        let id = event.digest.short().to_string();
        let known = self.index.contains_key(&id);
        let index = self.slot(&id);
        let status = Status::from(event.state);
        let layer = &mut self.layers[index];
        let changed = !known || layer.status != status;
        layer.status = status;
        layer.current = event.current;
        layer.total = event.total;
        if status == Status::Downloading && layer.started.is_none() {
            layer.started = Some(Instant::now());
        }
        if !self.terminal {
            // Plain: one line per state change, exactly as docker's
            // non-terminal output.
            if changed {
                println!("{id}: {}", status.words());
            }
            return;
        }
        let due = self
            .last_draw
            .is_none_or(|last| last.elapsed() >= REDRAW_EVERY);
        if due {
            self.draw();
        }
    }

    /// Redraws every line in place: up to the first line drawn last time,
    /// then each line cleared and rewritten.
    fn draw(&mut self) {
        let width = terminal_width();
        let mut text = String::new();
        if self.drawn > 0 {
            text.push_str(&format!("\x1b[{}A", self.drawn));
        }
        for layer in &self.layers {
            let speed = match (layer.status, layer.started) {
                (Status::Downloading, Some(started)) => {
                    let secs = started.elapsed().as_secs_f64();
                    (secs >= 0.5).then(|| (layer.current as f64 / secs) as u64)
                }
                _ => None,
            };
            let line = render_line(
                &layer.id,
                layer.status,
                layer.current,
                layer.total,
                speed,
                width,
            );
            text.push_str("\r\x1b[2K");
            text.push_str(&line);
            text.push('\n');
        }
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        let _ = out.flush();
        self.drawn = self.layers.len();
        self.last_draw = Some(Instant::now());
    }
}

/// One layer's line: `<id>: <status>`, and while downloading docker's bar
/// (`[====>    ] ` when it fits in `width`), `current/total` and the speed.
/// Never longer than `width - 1` characters, so a line never wraps (the
/// redraw counts lines).
pub fn render_line(
    id: &str,
    status: Status,
    current: u64,
    total: u64,
    speed: Option<u64>,
    width: usize,
) -> String {
    let head = format!("{id}: {}", status.words());
    if !matches!(status, Status::Downloading | Status::Verifying) || total == 0 {
        return fit(head, width);
    }
    let numbers = if current > total {
        String::new()
    } else {
        format!("{:>8}/{}", human_size(current), human_size(total))
    };
    let speed = speed
        .map(|s| format!("  {}/s", human_size(s)))
        .unwrap_or_default();
    // Docker's bar: one '=' per 2 %, then '>', padded to 50.
    let filled = ((current.min(total) as f64 / total as f64 * 100.0) as usize / 2).min(BAR_WIDTH);
    let bar = format!(
        "[{}>{}] ",
        "=".repeat(filled),
        " ".repeat(BAR_WIDTH - filled)
    );
    let with_bar = format!("{head} {bar}{numbers}{speed}");
    if with_bar.chars().count() < width {
        return with_bar;
    }
    fit(format!("{head} {numbers}{speed}"), width)
}

fn fit(line: String, width: usize) -> String {
    let max = width.saturating_sub(1).max(1);
    if line.chars().count() <= max {
        line
    } else {
        line.chars().take(max).collect()
    }
}

/// Columns of the terminal on stdout (80 when it does not say).
fn terminal_width() -> usize {
    // SAFETY: winsize is plain data.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ fills the winsize struct we own.
    let ok = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        size.ws_col as usize
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_docker_lines() {
        assert_eq!(
            render_line("a3ed95caeb02", Status::Waiting, 0, 0, None, 120),
            "a3ed95caeb02: Pulling fs layer"
        );
        assert_eq!(
            render_line("a3ed95caeb02", Status::AlreadyExists, 5, 5, None, 120),
            "a3ed95caeb02: Already exists"
        );
        assert_eq!(
            render_line("a3ed95caeb02", Status::PullComplete, 5, 5, None, 120),
            "a3ed95caeb02: Pull complete"
        );
        // 17 % → 8 '=' then '>' and 42 spaces; numbers right-aligned to 8.
        assert_eq!(
            render_line(
                "a3ed95caeb02",
                Status::Downloading,
                12_300_000,
                72_100_000,
                None,
                120
            ),
            format!(
                "a3ed95caeb02: Downloading [{}>{}]   12.3MB/72.1MB",
                "=".repeat(8),
                " ".repeat(42)
            )
        );
        assert_eq!(
            render_line(
                "a3ed95caeb02",
                Status::Downloading,
                72_100_000,
                72_100_000,
                Some(4_100_000),
                200
            ),
            format!(
                "a3ed95caeb02: Downloading [{}>]   72.1MB/72.1MB  4.1MB/s",
                "=".repeat(50)
            )
        );
        // Too narrow for the bar: numbers only; narrower still: cut.
        assert_eq!(
            render_line("a3ed95caeb02", Status::Downloading, 1_000, 2_000, None, 80),
            "a3ed95caeb02: Downloading      1kB/2kB"
        );
        assert_eq!(
            render_line("a3ed95caeb02", Status::Downloading, 1_000, 2_000, None, 20),
            "a3ed95caeb02: Downl"
        );
        // Unknown total: the words alone.
        assert_eq!(
            render_line("a3ed95caeb02", Status::Downloading, 1_000, 0, None, 120),
            "a3ed95caeb02: Downloading"
        );
    }
}
