//! runc-compatible logging: `--log FILE --log-format json|text`.
//!
//! containerd scans the log for the last `"level":"error"` line; podman
//! parses the whole file as ONE JSON object. So at the default level the
//! runtime writes nothing but, on failure, exactly one error line. With
//! `--debug`, tracing events are written too.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber, span};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Text,
    Json,
}

pub struct Logger {
    path: Option<PathBuf>,
    format: Format,
}

impl Logger {
    pub fn new(path: Option<&Path>, format: Format) -> Logger {
        Logger {
            path: path.map(Path::to_path_buf),
            format,
        }
    }

    fn open(&self) -> Option<File> {
        let path = self.path.as_ref()?;
        OpenOptions::new().create(true).append(true).open(path).ok()
    }

    /// Formats one line as runc does.
    pub fn line(&self, level: &str, msg: &str) -> String {
        let time = crate::util::now_rfc3339();
        match self.format {
            Format::Json => {
                serde_json::json!({"level": level, "msg": msg, "time": time}).to_string() + "\n"
            }
            Format::Text => format!("time=\"{time}\" level={level} msg={msg:?}\n"),
        }
    }

    /// The one error line of a failed command: to the log file if any, and
    /// to stderr (runc does both).
    pub fn error(&self, msg: &str) {
        if let Some(mut file) = self.open() {
            let _ = file.write_all(self.line("error", msg).as_bytes());
        }
        eprintln!("{}", self.line("error", msg).trim_end());
    }

    /// Installs a tracing subscriber writing debug lines (only with --debug).
    pub fn install_debug(&self) {
        let sink: Box<dyn Write + Send> = match self.open() {
            Some(file) => Box::new(file),
            None => Box::new(std::io::stderr()),
        };
        let subscriber = LineSubscriber {
            format: self.format,
            sink: Mutex::new(sink),
        };
        let _ = tracing::subscriber::set_global_default(subscriber);
    }
}

struct LineSubscriber {
    format: Format,
    sink: Mutex<Box<dyn Write + Send>>,
}

struct MessageVisitor(String);

impl Visit for MessageVisitor {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write as _;
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
}

impl Subscriber for LineSubscriber {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        *metadata.level() <= Level::DEBUG
    }
    fn new_span(&self, _: &span::Attributes<'_>) -> span::Id {
        span::Id::from_u64(1)
    }
    fn record(&self, _: &span::Id, _: &span::Record<'_>) {}
    fn record_follows_from(&self, _: &span::Id, _: &span::Id) {}
    fn event(&self, event: &Event<'_>) {
        let mut visitor = MessageVisitor(String::new());
        event.record(&mut visitor);
        let level = event.metadata().level().as_str().to_ascii_lowercase();
        let logger = Logger {
            path: None,
            format: self.format,
        };
        let line = logger.line(&level, &visitor.0);
        if let Ok(mut sink) = self.sink.lock() {
            let _ = sink.write_all(line.as_bytes());
        }
    }
    fn enter(&self, _: &span::Id) {}
    fn exit(&self, _: &span::Id) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_error_is_one_object_with_runc_fields() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("log.json");
        Logger::new(Some(&path), Format::Json).error("container does not exist");
        let text = std::fs::read_to_string(&path).unwrap();
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["level"], "error");
        assert_eq!(value["msg"], "container does not exist");
        assert!(value["time"].as_str().unwrap().ends_with('Z'));
    }
}
