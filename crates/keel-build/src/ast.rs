//! A parsed Dockerfile, as the parser leaves it: instructions in order,
//! grouped by stage, their words still unexpanded (variables are expanded
//! at build time, in the scope of the step, by [`crate::shell`]).

/// Parser directives from the top of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directives {
    /// `# syntax=...` (recorded; keel has one frontend).
    pub syntax: Option<String>,
    /// `# escape=` character: `\` (default) or `` ` ``.
    pub escape: char,
    /// `# check=...` (recorded).
    pub check: Option<String>,
}

impl Default for Directives {
    fn default() -> Self {
        Directives {
            syntax: None,
            escape: '\\',
            check: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Dockerfile {
    pub directives: Directives,
    /// `ARG`s before the first `FROM` (usable in `FROM` lines only, unless
    /// redeclared inside a stage).
    pub meta_args: Vec<ArgDecl>,
    pub stages: Vec<Stage>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stage {
    /// The image reference as written (unexpanded), `scratch`, or the name
    /// of an earlier stage.
    pub base: String,
    /// `AS name`, lowercased as docker does.
    pub name: Option<String>,
    /// `FROM --platform=...` (unexpanded).
    pub platform: Option<String>,
    /// 1-based line of the `FROM`.
    pub line: usize,
    pub instructions: Vec<Instruction>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line where the instruction starts.
    pub line: usize,
    /// The instruction as written, continuation lines joined (what
    /// `docker history` shows, and the base of the cache key).
    pub original: String,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Run(Run),
    Copy(Copy),
    Add(Copy),
    /// `ENV k=v ...` or the old `ENV k v`; raw (quoted) words.
    Env(Vec<(String, String)>),
    Arg(Vec<ArgDecl>),
    Label(Vec<(String, String)>),
    Workdir(String),
    User(String),
    Cmd(Command),
    Entrypoint(Command),
    /// Raw words (`80`, `53/udp`, `$PORT`).
    Expose(Vec<String>),
    /// Raw words, from the JSON or the plain form.
    Volume(Vec<String>),
    /// JSON form only.
    Shell(Vec<String>),
    StopSignal(String),
    Healthcheck(Healthcheck),
    /// The trigger, parsed as its own instruction (never FROM, ONBUILD or
    /// MAINTAINER).
    Onbuild(Box<Instruction>),
    Maintainer(String),
}

/// CMD, ENTRYPOINT, RUN and HEALTHCHECK CMD: the JSON (exec) form or the
/// shell form (run by the stage's SHELL).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Exec(Vec<String>),
    Shell(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    /// The delimiter word (`EOF`), quotes removed.
    pub name: String,
    /// The body, with its lines' trailing newlines; leading tabs already
    /// stripped for `<<-`.
    pub content: String,
    /// False when the delimiter was quoted (`<<"EOF"`, `<<'EOF'`): then
    /// nothing in the body is expanded.
    pub expand: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Run {
    /// The command as written (shell form: the text after the flags, not
    /// expanded by the builder; for a heredoc, the first line, e.g. `<<EOF`
    /// or `python3 <<EOF`).
    pub command: Option<Command>,
    pub heredocs: Vec<Heredoc>,
    /// `--mount=...` values, raw (`type=cache,target=/root/.cache`).
    pub mounts: Vec<String>,
    /// `--network=default|none|host`.
    pub network: Option<String>,
    /// `--security=insecure|sandbox`.
    pub security: Option<String>,
}

/// COPY and ADD.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Copy {
    /// Raw source words (for a heredoc: its name); at least one.
    pub sources: Vec<String>,
    /// Raw destination word.
    pub dest: String,
    /// `COPY <<EOF /dest`: files made from here-documents.
    pub heredocs: Vec<Heredoc>,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    /// `--exclude=PATTERN`, repeatable.
    pub excludes: Vec<String>,
    /// ADD only: `--checksum=sha256:...`.
    pub checksum: Option<String>,
    /// ADD only: `--keep-git-dir`.
    pub keep_git_dir: bool,
    /// ADD only: `--unpack=true|false`.
    pub unpack: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    /// Raw default (unexpanded), if given.
    pub default: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Healthcheck {
    /// `HEALTHCHECK NONE`.
    None,
    Check {
        test: Command,
        /// Durations as written (`30s`, `1m30s`).
        interval: Option<String>,
        timeout: Option<String>,
        start_period: Option<String>,
        start_interval: Option<String>,
        retries: Option<u32>,
    },
}
