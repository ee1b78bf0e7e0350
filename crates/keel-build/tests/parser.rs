//! The Dockerfile parser against real-world Dockerfiles (`tests/corpus`,
//! see its SOURCES.md) and against the errors docker reports.

use std::path::PathBuf;

use keel_build::ast::{
    ArgDecl, Command, Copy, Dockerfile, Healthcheck, Instruction, Kind, Run, Stage,
};
use keel_build::parser::{ParseError, parse, parse_instruction};
use keel_build::{ignore, shell};

fn corpus_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/corpus")
        .join(name)
}

fn corpus_text(name: &str) -> String {
    let path = corpus_path(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

fn corpus(name: &str) -> Dockerfile {
    parse(&corpus_text(name), name).unwrap_or_else(|e| panic!("{e}"))
}

fn ok(text: &str) -> Dockerfile {
    parse(text, "Dockerfile").unwrap_or_else(|e| panic!("{e}"))
}

fn err(text: &str) -> ParseError {
    match parse(text, "Dockerfile") {
        Ok(d) => panic!("expected an error, parsed {d:?}"),
        Err(e) => e,
    }
}

fn stage<'a>(d: &'a Dockerfile, name: &str) -> &'a Stage {
    d.stages
        .iter()
        .find(|s| s.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no stage {name}"))
}

fn names(d: &Dockerfile) -> Vec<Option<&str>> {
    d.stages.iter().map(|s| s.name.as_deref()).collect()
}

fn kind_names(stage: &Stage) -> Vec<&'static str> {
    stage
        .instructions
        .iter()
        .map(|i| kind_name(&i.kind))
        .collect()
}

fn kind_name(kind: &Kind) -> &'static str {
    match kind {
        Kind::Run(_) => "RUN",
        Kind::Copy(_) => "COPY",
        Kind::Add(_) => "ADD",
        Kind::Env(_) => "ENV",
        Kind::Arg(_) => "ARG",
        Kind::Label(_) => "LABEL",
        Kind::Workdir(_) => "WORKDIR",
        Kind::User(_) => "USER",
        Kind::Cmd(_) => "CMD",
        Kind::Entrypoint(_) => "ENTRYPOINT",
        Kind::Expose(_) => "EXPOSE",
        Kind::Volume(_) => "VOLUME",
        Kind::Shell(_) => "SHELL",
        Kind::StopSignal(_) => "STOPSIGNAL",
        Kind::Healthcheck(_) => "HEALTHCHECK",
        Kind::Onbuild(_) => "ONBUILD",
        Kind::Maintainer(_) => "MAINTAINER",
    }
}

fn run(instruction: &Instruction) -> &Run {
    match &instruction.kind {
        Kind::Run(run) => run,
        other => panic!("line {}: not RUN: {other:?}", instruction.line),
    }
}

fn copy(instruction: &Instruction) -> &Copy {
    match &instruction.kind {
        Kind::Copy(copy) | Kind::Add(copy) => copy,
        other => panic!("line {}: not COPY/ADD: {other:?}", instruction.line),
    }
}

fn shell_text(run: &Run) -> &str {
    match &run.command {
        Some(Command::Shell(text)) => text,
        other => panic!("not a shell-form command: {other:?}"),
    }
}

fn env(instruction: &Instruction) -> Vec<(&str, &str)> {
    match &instruction.kind {
        Kind::Env(pairs) | Kind::Label(pairs) => pairs
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect(),
        other => panic!("not ENV/LABEL: {other:?}"),
    }
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

fn arg(name: &str, default: Option<&str>) -> ArgDecl {
    ArgDecl {
        name: name.to_string(),
        default: default.map(str::to_string),
    }
}

fn unset(_: &str) -> Option<String> {
    None
}

// ---------------------------------------------------------------------------
// The corpus.

#[test]
fn golang_bookworm_two_stages_and_copy_link() {
    let d = corpus("golang-1.23-bookworm.Dockerfile");
    assert_eq!(d.directives.escape, '\\');
    assert!(d.meta_args.is_empty());
    assert_eq!(names(&d), [Some("build"), None]);
    let build = &d.stages[0];
    assert_eq!(build.base, "buildpack-deps:bookworm-scm");
    assert_eq!(build.line, 7);
    assert_eq!(kind_names(build), ["ENV", "ENV", "RUN"]);
    assert_eq!(
        env(&build.instructions[0]),
        [("PATH", "/usr/local/go/bin:$PATH")]
    );
    let install = shell_text(run(&build.instructions[2]));
    assert!(install.starts_with("set -eux; \tnow=\"$(date '+%s')\";"));
    assert!(install.contains("echo \"$sha256 *go.tgz\" | sha256sum -c -;"));
    // The comment lines between the continued lines are not part of it.
    assert!(!install.contains("issues/14739"));
    assert!(install.ends_with("-exec sh -c 'ls -ld \"$@\" && exit \"$#\"' -- '{}' +"));

    let last = &d.stages[1];
    assert_eq!(last.line, 105);
    assert_eq!(
        kind_names(last),
        ["RUN", "ENV", "ENV", "ENV", "ENV", "COPY", "RUN", "WORKDIR"]
    );
    assert_eq!(env(&last.instructions[2]), [("GOTOOLCHAIN", "local")]);
    assert_eq!(
        env(&last.instructions[4]),
        [("PATH", "$GOPATH/bin:/usr/local/go/bin:$PATH")]
    );
    let c = copy(&last.instructions[5]);
    assert_eq!(c.from.as_deref(), Some("build"));
    assert!(c.link);
    assert_eq!(
        (c.sources.clone(), c.dest.as_str()),
        (strings(&["/target/"]), "/")
    );
    assert_eq!(
        last.instructions[5].original,
        "COPY --from=build --link /target/ /"
    );
    assert_eq!(last.instructions[7].kind, Kind::Workdir("$GOPATH".into()));
}

#[test]
fn golang_windows_shell_json_and_backslashes() {
    let d = corpus("golang-1.23-windowsservercore-ltsc2022.Dockerfile");
    assert_eq!(d.stages.len(), 1);
    let s = &d.stages[0];
    assert_eq!(s.base, "mcr.microsoft.com/windows/servercore:ltsc2022");
    assert_eq!(
        kind_names(s),
        [
            "SHELL", "ENV", "ENV", "ENV", "ENV", "RUN", "ENV", "RUN", "ENV", "RUN", "WORKDIR"
        ]
    );
    assert_eq!(
        s.instructions[0].kind,
        Kind::Shell(strings(&[
            "powershell",
            "-Command",
            "$ErrorActionPreference = 'Stop'; $ProgressPreference = 'SilentlyContinue';"
        ]))
    );
    assert_eq!(
        env(&s.instructions[2]),
        [("GIT_TAG", "v${GIT_VERSION}.windows.1")]
    );
    // Raw here; the escape is applied when it is expanded.
    assert_eq!(env(&s.instructions[6]), [("GOPATH", "C:\\\\go")]);
    assert_eq!(shell::expand("C:\\\\go", &unset, '\\').unwrap(), "C:\\go");
    let git = shell_text(run(&s.instructions[5]));
    assert!(git.contains("Expand-Archive -Path git.zip -DestinationPath C:\\git\\.;"));
    assert_eq!(s.instructions[5].line, 21);
}

#[test]
fn golang_onbuild_triggers() {
    let d = corpus("golang-1.8-onbuild.Dockerfile");
    let s = &d.stages[0];
    assert_eq!(s.base, "golang:1.8");
    assert_eq!(
        kind_names(s),
        ["RUN", "WORKDIR", "CMD", "ONBUILD", "ONBUILD", "ONBUILD"]
    );
    assert_eq!(
        s.instructions[2].kind,
        Kind::Cmd(Command::Exec(strings(&["go-wrapper", "run"])))
    );
    let triggers: Vec<&Instruction> = s
        .instructions
        .iter()
        .filter_map(|i| match &i.kind {
            Kind::Onbuild(trigger) => Some(trigger.as_ref()),
            _ => None,
        })
        .collect();
    assert_eq!(triggers[0].original, "COPY . /go/src/app");
    let c = copy(triggers[0]);
    assert_eq!(
        (c.sources.clone(), c.dest.as_str()),
        (strings(&["."]), "/go/src/app")
    );
    assert_eq!(shell_text(run(triggers[2])), "go-wrapper install");
    assert_eq!(s.instructions[5].original, "ONBUILD RUN go-wrapper install");
    // What an image stores parses back to the same trigger.
    for trigger in triggers {
        let again = parse_instruction(&trigger.original, '\\').unwrap();
        assert_eq!(again.kind, trigger.kind);
    }
}

#[test]
fn python_slim_long_run() {
    let d = corpus("python-3.12-slim-bookworm.Dockerfile");
    let s = &d.stages[0];
    assert_eq!(s.base, "debian:bookworm-slim");
    assert_eq!(
        kind_names(s),
        [
            "ENV", "ENV", "RUN", "ENV", "ENV", "ENV", "RUN", "RUN", "CMD"
        ]
    );
    assert_eq!(env(&s.instructions[1]), [("LANG", "C.UTF-8")]);
    assert_eq!(env(&s.instructions[4]), [("PYTHON_VERSION", "3.12.10")]);
    let build = shell_text(run(&s.instructions[6]));
    assert!(build.contains("${PYTHON_VERSION%%[a-z]*}/Python-$PYTHON_VERSION.tar.xz"));
    assert!(build.contains("-mno-omit-leaf-frame-pointer"));
    // Tab-indented `# ...` lines inside the continuation are comments.
    assert!(!build.contains("only add"));
    assert!(!build.contains("manpages.debian.org"));
    assert!(build.ends_with("pip3 --version"));
    assert_eq!(
        s.instructions[8].kind,
        Kind::Cmd(Command::Exec(strings(&["python3"])))
    );
    assert_eq!(s.instructions[8].line, 156);
}

#[test]
fn nginx_debian_label_env_stopsignal() {
    let d = corpus("nginx-mainline-debian.Dockerfile");
    let s = &d.stages[0];
    assert_eq!(s.base, "debian:buster-slim");
    assert_eq!(
        kind_names(s),
        [
            "LABEL",
            "ENV",
            "ENV",
            "ENV",
            "RUN",
            "COPY",
            "COPY",
            "COPY",
            "COPY",
            "ENTRYPOINT",
            "EXPOSE",
            "STOPSIGNAL",
            "CMD"
        ]
    );
    assert_eq!(
        env(&s.instructions[0]),
        [(
            "maintainer",
            "\"NGINX Docker Maintainers <docker-maint@nginx.com>\""
        )]
    );
    // `ENV NGINX_VERSION   1.21.2`: the old form, runs of spaces dropped.
    assert_eq!(env(&s.instructions[1]), [("NGINX_VERSION", "1.21.2")]);
    assert_eq!(env(&s.instructions[3]), [("PKG_RELEASE", "1~buster")]);
    assert_eq!(s.instructions[11].kind, Kind::StopSignal("SIGQUIT".into()));
    assert_eq!(s.instructions[10].kind, Kind::Expose(strings(&["80"])));
    let install = shell_text(run(&s.instructions[4]));
    assert!(install.starts_with("set -x     && addgroup --system --gid 101 nginx"));
    assert!(install.ends_with("&& mkdir /docker-entrypoint.d"));
    assert!(!install.contains("arches officialy built by upstream"));
    assert_eq!(copy(&s.instructions[6]).dest, "/docker-entrypoint.d");
}

#[test]
fn nginx_jessie_maintainer() {
    let d = corpus("nginx-mainline-jessie.Dockerfile");
    let s = &d.stages[0];
    assert_eq!(
        kind_names(s),
        ["MAINTAINER", "ENV", "RUN", "RUN", "RUN", "EXPOSE", "CMD"]
    );
    assert_eq!(
        s.instructions[0].kind,
        Kind::Maintainer("NGINX Docker Maintainers \"docker-maint@nginx.com\"".into())
    );
    assert_eq!(
        env(&s.instructions[1]),
        [("NGINX_VERSION", "1.11.11-1~jessie")]
    );
    assert_eq!(
        s.instructions[5].kind,
        Kind::Expose(strings(&["80", "443"]))
    );
    assert_eq!(
        s.instructions[6].kind,
        Kind::Cmd(Command::Exec(strings(&["nginx", "-g", "daemon off;"])))
    );
}

#[test]
fn memcached_user_expose_and_hash_in_command() {
    let d = corpus("memcached-1-debian.Dockerfile");
    let s = &d.stages[0];
    assert_eq!(
        kind_names(s),
        [
            "RUN",
            "RUN",
            "ENV",
            "ENV",
            "ENV",
            "RUN",
            "COPY",
            "RUN",
            "ENTRYPOINT",
            "USER",
            "EXPOSE",
            "CMD"
        ]
    );
    assert_eq!(
        env(&s.instructions[4]),
        [("MEMCACHED_SHA1", "8825b31936100c90439d2447182ca2d49ecca9a0")]
    );
    // A `#` after the start of a line is not a comment.
    assert_eq!(
        shell_text(run(&s.instructions[7])),
        "ln -s usr/local/bin/docker-entrypoint.sh /entrypoint.sh # backwards compat"
    );
    assert_eq!(s.instructions[9].kind, Kind::User("memcache".into()));
    assert_eq!(s.instructions[10].kind, Kind::Expose(strings(&["11211"])));
    assert_eq!(s.instructions[11].line, 94);
}

#[test]
fn redis_healthcheck_with_flags() {
    let d = corpus("redis-3.2-alpine.Dockerfile");
    let s = &d.stages[0];
    assert_eq!(s.base, "alpine:3.7");
    assert_eq!(s.instructions.len(), 14);
    let health = s
        .instructions
        .iter()
        .find(|i| matches!(i.kind, Kind::Healthcheck(_)))
        .unwrap();
    assert_eq!(health.line, 64);
    assert_eq!(
        health.kind,
        Kind::Healthcheck(Healthcheck::Check {
            test: Command::Shell("/usr/local/bin/redis-cli PING || exit 1".into()),
            interval: Some("30s".into()),
            timeout: Some("5s".into()),
            start_period: None,
            start_interval: None,
            retries: Some(3),
        })
    );
    assert!(
        s.instructions
            .iter()
            .any(|i| i.kind == Kind::Volume(strings(&["/data"])))
    );
    assert_eq!(
        shell_text(run(&s.instructions[1])),
        "apk add --no-cache 'su-exec>=0.2'"
    );
}

#[test]
fn hello_world_many_runs() {
    let d = corpus("hello-world-build.Dockerfile");
    let s = &d.stages[0];
    assert_eq!(s.base, "debian:buster-slim");
    assert_eq!(s.instructions.len(), 16);
    let runs: Vec<&Run> = s
        .instructions
        .iter()
        .filter_map(|i| match &i.kind {
            Kind::Run(run) => Some(run),
            _ => None,
        })
        .collect();
    assert_eq!(runs.len(), 12);
    assert!(shell_text(runs[8]).contains("CFLAGS+='-mlong-double-64'"));
    assert_eq!(
        shell_text(runs[11]),
        "find \\( -name 'hello' -or -name 'hello.txt' \\) -exec file '{}' + -exec ls -lh '{}' +"
    );
    assert_eq!(
        s.instructions[15].kind,
        Kind::Cmd(Command::Exec(strings(&["./amd64/hello-world/hello"])))
    );
}

#[test]
fn dotnet_framework_backtick_escape() {
    let d = corpus("dotnet-framework-sdk-4.8.1-ltsc2022.Dockerfile");
    assert_eq!(d.directives.escape, '`');
    assert_eq!(
        d.meta_args,
        [arg(
            "REPO",
            Some("mcr.microsoft.com/dotnet/framework/runtime")
        )]
    );
    let s = &d.stages[0];
    assert_eq!(s.base, "$REPO:4.8.1-20250114-windowsservercore-ltsc2022");
    assert_eq!(kind_names(s), ["ENV", "RUN", "RUN", "RUN", "RUN"]);
    // Comment lines inside the continued ENV are dropped.
    let pairs = env(&s.instructions[0]);
    assert_eq!(pairs.len(), 4);
    assert_eq!(pairs[0], ("DOTNET_GENERATE_ASPNET_CERTIFICATE", "false"));
    assert_eq!(pairs[2], ("NUGET_VERSION", "6.12.2"));
    let roslyn = pairs[3].1;
    assert_eq!(
        shell::expand(roslyn, &unset, '`').unwrap(),
        "C:\\Program Files (x86)\\Microsoft Visual Studio\\2022\\BuildTools\\MSBuild\\Current\\Bin\\Roslyn"
    );
    let nuget = shell_text(run(&s.instructions[1]));
    assert!(nuget.starts_with("mkdir \"%ProgramFiles%\\NuGet\\latest\"     && curl -fSLo"));
    let vs = shell_text(run(&s.instructions[2]));
    assert!(vs.starts_with("curl -fSLo vs_TestAgent.exe"));
    assert!(!vs.contains("# Install VS Build Tools"));
    assert!(vs.ends_with("&& rmdir /S /Q \"%ProgramData%\\Package Cache\""));
    assert_eq!(s.instructions[4].line, 71);
}

#[test]
fn buildx_platforms_and_mounts() {
    let d = corpus("buildx.Dockerfile");
    assert_eq!(
        d.directives.syntax.as_deref(),
        Some("docker/dockerfile:1.3")
    );
    assert_eq!(
        d.meta_args,
        [
            arg("GO_VERSION", Some("1.17.0")),
            arg("DOCKERD_VERSION", Some("20.10.8"))
        ]
    );
    assert_eq!(d.stages.len(), 18);
    assert_eq!(d.stages[0].base, "docker:$DOCKERD_VERSION");
    let xx = stage(&d, "xx");
    assert_eq!(xx.platform.as_deref(), Some("$BUILDPLATFORM"));
    assert_eq!(
        xx.base,
        "tonistiigi/xx@sha256:21a61be4744f6531cb5f33b0e6f40ede41fa3a1b8c82d5946178f80cc84bfc04"
    );
    let build = stage(&d, "buildx-build");
    assert_eq!(kind_names(build), ["ENV", "ARG", "RUN"]);
    let r = run(&build.instructions[2]);
    assert_eq!(
        r.mounts,
        strings(&[
            "type=bind,target=.",
            "type=cache,target=/root/.cache",
            "type=cache,target=/go/pkg/mod",
            "type=bind,source=/tmp/.ldflags,target=/tmp/.ldflags,from=buildx-version",
        ])
    );
    assert!(shell_text(r).starts_with("set -x; xx-go build -ldflags \"$(cat /tmp/.ldflags)\""));
    let last = d.stages.last().unwrap();
    assert_eq!(
        (last.base.as_str(), last.name.as_deref()),
        ("binaries", None)
    );
    assert!(last.instructions.is_empty());
    let shell_stage = stage(&d, "shell");
    assert_eq!(shell_stage.instructions.len(), 10);
    assert_eq!(
        shell_stage.instructions[9].kind,
        Kind::Entrypoint(Command::Exec(strings(&["entrypoint.sh"])))
    );
    assert_eq!(stage(&d, "binaries").base, "binaries-$TARGETOS");
}

#[test]
fn buildkit_heredocs_and_many_stages() {
    let d = corpus("buildkit.Dockerfile");
    assert_eq!(
        d.directives.syntax.as_deref(),
        Some("docker/dockerfile-upstream:master")
    );
    assert_eq!(d.meta_args.len(), 19);
    assert_eq!(d.meta_args[0], arg("RUNC_VERSION", Some("v1.1.10")));
    assert_eq!(d.meta_args[18], arg("BUILDKIT_DEBUG", None));
    assert_eq!(d.stages.len(), 52);

    // `RUN --mount ... <<EOT` with the script as a here-document.
    let runc = stage(&d, "runc");
    assert_eq!(kind_names(runc), ["WORKDIR", "ARG", "RUN", "RUN"]);
    let r = run(&runc.instructions[3]);
    assert_eq!(r.command, Some(Command::Shell("<<EOT".into())));
    assert_eq!(
        r.mounts,
        strings(&[
            "from=runc-src,src=/usr/src/runc,target=.",
            "target=/root/.cache,type=cache"
        ])
    );
    assert_eq!(r.heredocs.len(), 1);
    let script = &r.heredocs[0];
    assert_eq!(script.name, "EOT");
    assert!(script.expand);
    assert!(
        script
            .content
            .starts_with("  set -ex\n  CGO_ENABLED=1 xx-go build")
    );
    assert!(
        script
            .content
            .ends_with("then /usr/bin/runc --version; fi\n")
    );

    let buildkitd = stage(&d, "buildkitd");
    assert_eq!(
        buildkitd.instructions[6].kind,
        Kind::Arg(vec![arg(
            "GOGCFLAGS",
            Some("${BUILDKIT_DEBUG:+\"all=-N -l\"}")
        )])
    );
    let gcflags = "${BUILDKIT_DEBUG:+\"all=-N -l\"}";
    assert_eq!(shell::expand(gcflags, &unset, '\\').unwrap(), "");
    let debug = |name: &str| (name == "BUILDKIT_DEBUG").then(|| "1".to_string());
    assert_eq!(shell::expand(gcflags, &debug, '\\').unwrap(), "all=-N -l");
    let body = &run(&buildkitd.instructions[7]).heredocs[0].content;
    assert!(body.contains("/usr/bin/buildkitd\n\n  # buildkitd --version can be flaky"));
    assert!(body.ends_with("    done\n  fi\n"));

    // `COPY --chmod=755 <<EOF /docker-entrypoint.sh`, then more instructions.
    let debug_stage = stage(&d, "buildkit-linux-debug");
    assert_eq!(
        kind_names(debug_stage),
        ["COPY", "COPY", "ENV", "ENTRYPOINT"]
    );
    let c = copy(&debug_stage.instructions[1]);
    assert_eq!(c.sources, strings(&["EOF"]));
    assert_eq!(c.dest, "/docker-entrypoint.sh");
    assert_eq!(c.chmod.as_deref(), Some("755"));
    assert!(c.link);
    assert_eq!(c.heredocs.len(), 1);
    assert_eq!(
        c.heredocs[0].content,
        "#!/bin/sh\nexec dlv exec /usr/bin/buildkitd \\\\\n  --api-version=2 \\\\\n  -l 0.0.0.0:\\${DELVE_PORT:-5000} \\\\\n  --headless=true \\\\\n  --accept-multiclient \\\\\n  --continue \\\\\n  -- \"\\$@\"\n"
    );
    assert_eq!(debug_stage.instructions[2].line, 316);
    assert_eq!(env(&debug_stage.instructions[2]), [("DELVE_PORT", "5000")]);

    // `FROM ... as name` in lower case, and an ARG between stages.
    let alt = stage(&d, "containerd-alt-16");
    assert_eq!(alt.base, "containerd-base");
    assert_eq!(kind_names(alt), ["ARG", "RUN", "ARG"]);
    assert_eq!(
        alt.instructions[2].kind,
        Kind::Arg(vec![arg("REGISTRY_VERSION", None)])
    );
    assert_eq!(stage(&d, "registry").base, "registry:$REGISTRY_VERSION");
    assert_eq!(
        stage(&d, "nydus").instructions[3].kind,
        Kind::Shell(strings(&["/bin/bash", "-c"]))
    );
    assert_eq!(
        stage(&d, "rootless").instructions[5].kind,
        Kind::User("1000:1000".into())
    );
    let last = d.stages.last().unwrap();
    assert_eq!(last.base, "buildkit-$TARGETOS${BUILDKIT_DEBUG:+-debug}");
    assert_eq!(last.name.as_deref(), Some("buildkit"));
    assert_eq!(last.line, 397);
}

#[test]
fn compose_meta_args_and_copy_from() {
    let d = corpus("compose.Dockerfile");
    assert_eq!(d.meta_args.len(), 7);
    assert_eq!(d.meta_args[6], arg("BUILD_PLATFORM", Some("alpine")));
    assert_eq!(
        names(&d),
        [
            Some("docker-cli"),
            Some("build-alpine"),
            Some("build-debian"),
            Some("build"),
            Some("runtime-alpine"),
            Some("runtime-debian"),
            Some("runtime")
        ]
    );
    let build = stage(&d, "build");
    assert_eq!(build.base, "build-${BUILD_PLATFORM}");
    assert_eq!(build.instructions.len(), 18);
    assert_eq!(
        build.instructions[16].kind,
        Kind::Env(vec![("DOCKER_COMPOSE_GITSHA".into(), "$GIT_COMMIT".into())])
    );
    let runtime = stage(&d, "runtime");
    let c = copy(&runtime.instructions[3]);
    assert_eq!(c.from.as_deref(), Some("build"));
    assert_eq!(c.sources, strings(&["/usr/local/bin/docker-compose"]));
    assert_eq!(c.dest, "/usr/local/bin/docker-compose");
    let apk = shell_text(run(&stage(&d, "build-alpine").instructions[0]));
    assert!(apk.starts_with("apk add --no-cache     bash     build-base"));
    assert!(apk.ends_with("python2-dev     zlib-dev"));
}

#[test]
fn docs_archive_copy_from_image_and_shell_cmd() {
    let d = corpus("docs-archive.Dockerfile");
    assert_eq!(names(&d), [Some("builder"), None]);
    let builder = &d.stages[0];
    assert_eq!(
        kind_names(builder),
        ["ENV", "COPY", "RUN", "COPY", "RUN", "RUN"]
    );
    let c = copy(&builder.instructions[3]);
    assert_eq!(c.from.as_deref(), Some("docs/docker.github.io:docs-config"));
    assert_eq!(c.sources, strings(&["/scripts/*"]));
    let last = &d.stages[1];
    assert_eq!(last.base, "nginx:alpine");
    assert_eq!(
        last.instructions.last().unwrap().kind,
        Kind::Cmd(Command::Shell(
            "echo -e \"Docker docs are viewable at:\\nhttp://0.0.0.0:4000\"; exec nginx -g 'daemon off;'"
                .into()
        ))
    );
}

#[test]
fn uptime_kuma_healthcheck_volume_json_args() {
    let d = corpus("uptime-kuma.Dockerfile");
    assert_eq!(
        names(&d),
        [
            Some("build"),
            Some("release"),
            Some("nightly"),
            Some("upload-artifact")
        ]
    );
    let release = stage(&d, "release");
    assert_eq!(
        kind_names(release),
        [
            "WORKDIR",
            "COPY",
            "EXPOSE",
            "VOLUME",
            "HEALTHCHECK",
            "ENTRYPOINT",
            "CMD"
        ]
    );
    assert_eq!(
        release.instructions[3].kind,
        Kind::Volume(strings(&["/app/data"]))
    );
    assert_eq!(
        release.instructions[4].kind,
        Kind::Healthcheck(Healthcheck::Check {
            test: Command::Shell("node extra/healthcheck.js".into()),
            interval: Some("60s".into()),
            timeout: Some("30s".into()),
            start_period: Some("180s".into()),
            start_interval: None,
            retries: Some(5),
        })
    );
    assert_eq!(
        release.instructions[5].kind,
        Kind::Entrypoint(Command::Exec(strings(&[
            "/usr/bin/dumb-init",
            "--",
            "extra/entrypoint.sh"
        ])))
    );
    let upload = stage(&d, "upload-artifact");
    assert_eq!(upload.instructions.len(), 12);
    assert_eq!(
        upload.instructions[7].kind,
        Kind::Arg(vec![arg(
            "FILE",
            Some("$PLATFORM-$TARGETARCH-$VERSION.tar.gz")
        )])
    );
    // The commented-out RUNs are comments.
    assert_eq!(
        kind_names(upload).iter().filter(|k| **k == "RUN").count(),
        4
    );
}

#[test]
fn every_corpus_file_is_listed_in_sources() {
    let sources = corpus_text("SOURCES.md");
    let mut count = 0;
    for entry in std::fs::read_dir(corpus_path("")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".Dockerfile") {
            count += 1;
            assert!(
                sources.contains(&format!("`{name}`")),
                "{name} missing from SOURCES.md"
            );
            parse(&corpus_text(&name), &name).unwrap_or_else(|e| panic!("{e}"));
        }
    }
    assert!(count >= 15, "only {count} corpus files");
}

// ---------------------------------------------------------------------------
// Language features.

#[test]
fn directives_only_at_the_top() {
    let d = ok(
        "#  Syntax = docker/dockerfile:1\n# ESCAPE=`\n# check=skip=all;error=true\nFROM a\nRUN dir `\n  c:\\\n",
    );
    assert_eq!(d.directives.syntax.as_deref(), Some("docker/dockerfile:1"));
    assert_eq!(d.directives.escape, '`');
    assert_eq!(d.directives.check.as_deref(), Some("skip=all;error=true"));
    assert_eq!(shell_text(run(&d.stages[0].instructions[0])), "dir   c:\\");

    // After a comment or a blank line they are plain comments.
    let d = ok("# hello\n# escape=`\nFROM a\n");
    assert_eq!(d.directives.escape, '\\');
    let d = ok("\n# syntax=x\nFROM a\n");
    assert_eq!(d.directives.syntax, None);
    // An unknown one ends them too.
    let d = ok("# foo=bar\n# escape=`\nFROM a\n");
    assert_eq!(d.directives.escape, '\\');
}

#[test]
fn continuations_comments_and_blank_lines() {
    let d = ok(
        "FROM a\n\nRUN echo a \\\n# a comment inside\n    b \\\n\n    c\n  # indented comment\nrun echo done\n",
    );
    let s = &d.stages[0];
    assert_eq!(s.instructions.len(), 2);
    assert_eq!(shell_text(run(&s.instructions[0])), "echo a     b     c");
    assert_eq!(s.instructions[0].original, "RUN echo a     b     c");
    assert_eq!(s.instructions[0].line, 3);
    assert_eq!(s.instructions[1].line, 9);
    // An escaped escape at the end is not a continuation.
    let d = ok("FROM a\nRUN echo a\\\\\nUSER root\n");
    assert_eq!(kind_names(&d.stages[0]), ["RUN", "USER"]);
    // CRLF line endings and a byte-order mark.
    let d = ok("\u{feff}FROM a\r\nRUN echo \\\r\n  hi\r\n");
    assert_eq!(shell_text(run(&d.stages[0].instructions[0])), "echo   hi");
}

#[test]
fn heredocs() {
    let text = "FROM alpine\n\
RUN <<-EOF\n\techo \"$HOME\"\n\t\tdone\n\tEOF\n\
RUN <<'EOT' bash\necho $X\nEOT\n\
RUN python3 <<EOF\nprint(\"hi\")\nEOF\n\
COPY <<A <<B /dir/\na\nA\nb\nB\n\
COPY --chmod=755 <<\"X\" /x.sh\n#!/bin/sh\nX\n\
RUN <<A cat - && <<B cat\none\nA\ntwo\nB\n\
RUN [\"sh\", \"-c\", \"cat <<EOF\"]\n\
ADD <<EOF /etc/motd\nhello\nEOF\n";
    let d = ok(text);
    let s = &d.stages[0];
    assert_eq!(
        kind_names(s),
        ["RUN", "RUN", "RUN", "COPY", "COPY", "RUN", "RUN", "ADD"]
    );
    let chomped = run(&s.instructions[0]);
    assert_eq!(chomped.command, Some(Command::Shell("<<-EOF".into())));
    assert_eq!(chomped.heredocs[0].content, "echo \"$HOME\"\ndone\n");
    assert!(chomped.heredocs[0].expand);
    let quoted = run(&s.instructions[1]);
    assert_eq!(quoted.command, Some(Command::Shell("<<'EOT' bash".into())));
    assert_eq!(quoted.heredocs[0].name, "EOT");
    assert!(!quoted.heredocs[0].expand);
    assert_eq!(shell_text(run(&s.instructions[2])), "python3 <<EOF");
    assert_eq!(
        run(&s.instructions[2]).heredocs[0].content,
        "print(\"hi\")\n"
    );
    let two = copy(&s.instructions[3]);
    assert_eq!(two.sources, strings(&["A", "B"]));
    assert_eq!(two.dest, "/dir/");
    let contents: Vec<&str> = two.heredocs.iter().map(|h| h.content.as_str()).collect();
    assert_eq!(contents, ["a\n", "b\n"]);
    let script = copy(&s.instructions[4]);
    assert_eq!(script.chmod.as_deref(), Some("755"));
    assert_eq!(script.heredocs[0].name, "X");
    assert!(!script.heredocs[0].expand);
    assert_eq!(script.heredocs[0].content, "#!/bin/sh\n");
    let both = run(&s.instructions[5]);
    let names: Vec<&str> = both.heredocs.iter().map(|h| h.name.as_str()).collect();
    assert_eq!(names, ["A", "B"]);
    assert_eq!(both.heredocs[1].content, "two\n");
    // JSON form: no here-documents.
    let json = run(&s.instructions[6]);
    assert!(json.heredocs.is_empty());
    assert_eq!(
        json.command,
        Some(Command::Exec(strings(&["sh", "-c", "cat <<EOF"])))
    );
    assert_eq!(copy(&s.instructions[7]).heredocs[0].content, "hello\n");
    assert_eq!(s.instructions[7].line, 26);
}

#[test]
fn env_label_arg_forms() {
    let d = ok("FROM a\n\
ENV A=1 B=\"two words\" C='x y' D=\n\
ENV OLD some value  here\n\
LABEL \"com.example.vendor\"=\"ACME Inc\" version=1.0\n\
ARG NAME\n\
ARG X=1 Y Z=\"a b\"\n");
    let s = &d.stages[0];
    assert_eq!(
        env(&s.instructions[0]),
        [
            ("A", "1"),
            ("B", "\"two words\""),
            ("C", "'x y'"),
            ("D", "")
        ]
    );
    assert_eq!(env(&s.instructions[1]), [("OLD", "some value  here")]);
    assert_eq!(
        env(&s.instructions[2]),
        [
            ("\"com.example.vendor\"", "\"ACME Inc\""),
            ("version", "1.0")
        ]
    );
    assert_eq!(s.instructions[3].kind, Kind::Arg(vec![arg("NAME", None)]));
    assert_eq!(
        s.instructions[4].kind,
        Kind::Arg(vec![
            arg("X", Some("1")),
            arg("Y", None),
            arg("Z", Some("\"a b\""))
        ])
    );
    assert_eq!(
        shell::expand("\"two words\"", &unset, '\\').unwrap(),
        "two words"
    );
}

#[test]
fn from_names_platforms_and_meta_args() {
    let d = ok(
        "ARG BASE=alpine\nARG TAG\nFROM --platform=linux/arm64 Golang:1.21 AS Builder\nfrom ${BASE}:${TAG:-latest}\n",
    );
    assert_eq!(d.meta_args, [arg("BASE", Some("alpine")), arg("TAG", None)]);
    let builder = &d.stages[0];
    assert_eq!(builder.base, "Golang:1.21");
    assert_eq!(builder.name.as_deref(), Some("builder"));
    assert_eq!(builder.platform.as_deref(), Some("linux/arm64"));
    assert_eq!(builder.line, 3);
    assert_eq!(d.stages[1].base, "${BASE}:${TAG:-latest}");
    assert_eq!(d.stages[1].line, 4);
}

#[test]
fn run_copy_add_flags() {
    let d = ok("FROM a\n\
RUN --mount=type=cache,target=/root/.cache --mount=type=secret,id=npmrc --network=none --security=insecure make\n\
COPY --from=builder --chown=1000:1000 --chmod=0644 --link --parents --exclude=*.md --exclude=tests/ src/ lib/ /app/\n\
COPY --link=false a b\n\
ADD --checksum=sha256:abc --keep-git-dir=true --unpack=false https://example.com/x.tar.gz /z\n\
ADD --unpack x.tar.gz /z\n\
COPY [\"a b.txt\", \"/dest dir/\"]\n\
RUN -- --not-a-flag\n");
    let s = &d.stages[0];
    let r = run(&s.instructions[0]);
    assert_eq!(
        r.mounts,
        strings(&["type=cache,target=/root/.cache", "type=secret,id=npmrc"])
    );
    assert_eq!(r.network.as_deref(), Some("none"));
    assert_eq!(r.security.as_deref(), Some("insecure"));
    assert_eq!(shell_text(r), "make");
    let c = copy(&s.instructions[1]);
    assert_eq!(c.from.as_deref(), Some("builder"));
    assert_eq!(c.chown.as_deref(), Some("1000:1000"));
    assert_eq!(c.chmod.as_deref(), Some("0644"));
    assert!(c.link && c.parents);
    assert_eq!(c.excludes, strings(&["*.md", "tests/"]));
    assert_eq!(c.sources, strings(&["src/", "lib/"]));
    assert_eq!(c.dest, "/app/");
    assert!(!copy(&s.instructions[2]).link);
    let a = copy(&s.instructions[3]);
    assert!(matches!(s.instructions[3].kind, Kind::Add(_)));
    assert_eq!(a.checksum.as_deref(), Some("sha256:abc"));
    assert!(a.keep_git_dir);
    assert_eq!(a.unpack, Some(false));
    assert_eq!(copy(&s.instructions[4]).unpack, Some(true));
    let json = copy(&s.instructions[5]);
    assert_eq!(json.sources, strings(&["a b.txt"]));
    assert_eq!(json.dest, "/dest dir/");
    assert_eq!(shell_text(run(&s.instructions[6])), "--not-a-flag");
}

#[test]
fn other_instructions() {
    let d = ok("FROM a\n\
HEALTHCHECK --interval=1m30s --timeout=10s --start-period=5s --start-interval=2s --retries=4 CMD [\"curl\", \"-f\", \"http://localhost\"]\n\
HEALTHCHECK NONE\n\
VOLUME /a /b\n\
VOLUME [\"/c\", \"/d\"]\n\
EXPOSE 80/tcp 53/udp $PORT\n\
STOPSIGNAL SIGTERM\n\
USER app:app\n\
WORKDIR /srv/my app\n\
MAINTAINER Jane <jane@example.com>\n\
ENTRYPOINT exec top -b\n\
CMD\n\
ONBUILD ADD . /src\n");
    let s = &d.stages[0];
    assert_eq!(
        s.instructions[0].kind,
        Kind::Healthcheck(Healthcheck::Check {
            test: Command::Exec(strings(&["curl", "-f", "http://localhost"])),
            interval: Some("1m30s".into()),
            timeout: Some("10s".into()),
            start_period: Some("5s".into()),
            start_interval: Some("2s".into()),
            retries: Some(4),
        })
    );
    assert_eq!(s.instructions[1].kind, Kind::Healthcheck(Healthcheck::None));
    assert_eq!(s.instructions[2].kind, Kind::Volume(strings(&["/a", "/b"])));
    assert_eq!(s.instructions[3].kind, Kind::Volume(strings(&["/c", "/d"])));
    assert_eq!(
        s.instructions[4].kind,
        Kind::Expose(strings(&["80/tcp", "53/udp", "$PORT"]))
    );
    assert_eq!(s.instructions[5].kind, Kind::StopSignal("SIGTERM".into()));
    assert_eq!(s.instructions[6].kind, Kind::User("app:app".into()));
    assert_eq!(s.instructions[7].kind, Kind::Workdir("/srv/my app".into()));
    assert_eq!(
        s.instructions[8].kind,
        Kind::Maintainer("Jane <jane@example.com>".into())
    );
    assert_eq!(
        s.instructions[9].kind,
        Kind::Entrypoint(Command::Shell("exec top -b".into()))
    );
    assert_eq!(
        s.instructions[10].kind,
        Kind::Cmd(Command::Shell(String::new()))
    );
    let Kind::Onbuild(trigger) = &s.instructions[11].kind else {
        panic!("not ONBUILD");
    };
    assert!(matches!(trigger.kind, Kind::Add(_)));
    assert_eq!(trigger.original, "ADD . /src");
}

#[test]
fn single_instructions_for_onbuild_triggers() {
    let i = parse_instruction("COPY <<EOF /etc/motd\nhello\nEOF", '\\').unwrap();
    let c = copy(&i);
    assert_eq!(c.heredocs[0].content, "hello\n");
    assert_eq!(c.dest, "/etc/motd");
    let i = parse_instruction("RUN dir `\n  c:\\", '`').unwrap();
    assert_eq!(shell_text(run(&i)), "dir   c:\\");
    let e = parse_instruction("FROM x", '\\').unwrap_err();
    assert_eq!(e.message, "FROM isn't allowed as an ONBUILD trigger");
    let e = parse_instruction("RUN a\nRUN b", '\\').unwrap_err();
    assert!(e.message.contains("single instruction"), "{e}");
    let e = parse_instruction("FOO bar", '\\').unwrap_err();
    assert_eq!(e.message, "unknown instruction: FOO (did you mean FROM?)");
}

// ---------------------------------------------------------------------------
// Errors: line, column, message.

fn assert_error(text: &str, line: usize, column: usize, message: &str) {
    let e = err(text);
    assert_eq!(
        (e.line, e.column, e.message.as_str()),
        (line, column, message),
        "for {text:?}"
    );
    assert_eq!(e.file, "Dockerfile");
    let shown = text
        .split('\n')
        .nth(line - 1)
        .unwrap_or("")
        .trim_end_matches('\r');
    assert_eq!(e.source_line, shown);
}

#[test]
fn unknown_instruction_with_suggestion() {
    let e = err("FROM alpine\nRUN true\nFOO bar\n");
    assert_eq!(
        e.to_string(),
        "Dockerfile:3:1: unknown instruction: FOO (did you mean FROM?)\n   3 | FOO bar"
    );
    assert_error(
        "FROM a\n  COPPY a b\n",
        2,
        3,
        "unknown instruction: COPPY (did you mean COPY?)",
    );
    assert_error(
        "FROM a\nrunn x\n",
        2,
        1,
        "unknown instruction: runn (did you mean run?)",
    );
    assert_error("FROM a\nXYZZY x\n", 2, 1, "unknown instruction: XYZZY");
    // A parse error later in the file is reported before it, as BuildKit does.
    assert_error(
        "FOO\nFROM a\nENV lonely\n",
        3,
        1,
        "ENV must have two arguments",
    );
}

#[test]
fn instruction_before_from() {
    assert_error(
        "RUN echo hi\nFROM a\n",
        1,
        1,
        "no build stage in current context",
    );
    assert_error(
        "ARG V=1\n\nENV A=b\nFROM a\n",
        3,
        1,
        "no build stage in current context",
    );
}

#[test]
fn missing_arguments() {
    assert_error("FROM a\nRUN\n", 2, 1, "RUN requires at least one argument");
    assert_error(
        "FROM a\nRUN --mount=type=cache,target=/x\n",
        2,
        1,
        "RUN requires at least one argument",
    );
    assert_error(
        "FROM a\nCOPY onlyone\n",
        2,
        1,
        "COPY requires at least two arguments, but only one was provided. Destination could not be determined",
    );
    assert_error(
        "FROM a\nADD x\n",
        2,
        1,
        "ADD requires at least two arguments, but only one was provided. Destination could not be determined",
    );
    assert_error(
        "FROM a\nWORKDIR\n",
        2,
        1,
        "WORKDIR requires exactly one argument",
    );
    assert_error("FROM a\nUSER\n", 2, 1, "USER requires exactly one argument");
    assert_error(
        "FROM a\nEXPOSE\n",
        2,
        1,
        "EXPOSE requires at least one argument",
    );
    assert_error("FROM a\nENV\n", 2, 1, "ENV requires at least one argument");
    assert_error("FROM a\nARG\n", 2, 1, "ARG requires at least one argument");
    assert_error(
        "FROM a\nVOLUME []\n",
        2,
        1,
        "VOLUME requires at least one argument",
    );
    assert_error(
        "FROM a\nONBUILD\n",
        2,
        1,
        "ONBUILD requires at least one argument",
    );
    assert_error(
        "FROM a\nHEALTHCHECK\n",
        2,
        1,
        "HEALTHCHECK requires at least one argument",
    );
    assert_error(
        "FROM a\nHEALTHCHECK CMD\n",
        2,
        1,
        "Missing command after HEALTHCHECK CMD",
    );
    assert_error(
        "FROM\n",
        1,
        1,
        "FROM requires either one or three arguments",
    );
    assert_error(
        "FROM a b\n",
        1,
        1,
        "FROM requires either one or three arguments",
    );
    assert_error("FROM a\nENV =x\n", 2, 1, "ENV names can not be blank");
    assert_error("FROM a\nARG =x\n", 2, 1, "ARG names can not be blank");
}

#[test]
fn unterminated_heredoc() {
    assert_error(
        "FROM a\nRUN <<EOF\necho hi\n",
        2,
        5,
        "unterminated heredoc (no line \"EOF\" ends it)",
    );
    assert_error(
        "FROM a\nCOPY <<A <<B /x\na\nA\n",
        2,
        6,
        "unterminated heredoc (no line \"B\" ends it)",
    );
    assert_error(
        "FROM a\nCOPY a <<EOF\nx\nEOF\n",
        2,
        1,
        "COPY cannot accept a heredoc as a destination",
    );
}

#[test]
fn bad_flags() {
    assert_error(
        "FROM a\nCOPY --chwon=1:1 a b\n",
        2,
        6,
        "unknown flag: --chwon (did you mean chown?)",
    );
    assert_error(
        "FROM a\nRUN --frobnicate=1 x\n",
        2,
        5,
        "unknown flag: --frobnicate",
    );
    assert_error(
        "FROM --platfrom=x a\n",
        1,
        6,
        "unknown flag: --platfrom (did you mean platform?)",
    );
    assert_error("FROM --plat=x a\n", 1, 6, "unknown flag: --plat");
    assert_error(
        "FROM a\nCOPY --from a b\n",
        2,
        6,
        "missing a value on flag: --from",
    );
    assert_error(
        "FROM a\nCOPY --link=maybe a b\n",
        2,
        6,
        "expecting boolean value for flag --link, not: maybe",
    );
    // Points at the second one.
    assert_error(
        "FROM a\nCOPY --from=x --from=y a b\n",
        2,
        15,
        "duplicate flag specified: --from",
    );
    assert_error(
        "FROM a\nRUN --network=bogus x\n",
        2,
        5,
        "invalid network mode \"bogus\"",
    );
    assert_error(
        "FROM a\nRUN --security=root x\n",
        2,
        5,
        "security \"root\" is not valid",
    );
    assert_error("FROM a\nENV --x=1 A=b\n", 2, 5, "unknown flag: --x");
    assert_error(
        "FROM a\nCOPY --checksum=sha256:x a b\n",
        2,
        6,
        "unknown flag: --checksum",
    );
    assert_error(
        "FROM a\nHEALTHCHECK --interval=1us CMD true\n",
        2,
        13,
        "Interval \"interval\" cannot be less than 1ms",
    );
    assert_error(
        "FROM a\nHEALTHCHECK --timeout=soon CMD true\n",
        2,
        13,
        "time: invalid duration \"soon\"",
    );
    assert_error(
        "FROM a\nHEALTHCHECK --retries=-1 CMD true\n",
        2,
        13,
        "--retries cannot be negative (-1)",
    );
    assert_error(
        "FROM a\nHEALTHCHECK FOO x\n",
        2,
        1,
        "Unknown type \"FOO\" in HEALTHCHECK (try CMD)",
    );
    assert_error(
        "FROM a\nHEALTHCHECK NONE x\n",
        2,
        1,
        "HEALTHCHECK NONE takes no arguments",
    );
}

#[test]
fn shell_must_be_json() {
    assert_error(
        "FROM a\nSHELL /bin/bash -c\n",
        2,
        1,
        "SHELL requires the arguments to be in JSON form",
    );
    let e = err("FROM a\nSHELL [\"c:\\windows\\cmd.exe\", \"/S\"]\n");
    assert!(
        e.message
            .starts_with("SHELL requires the arguments to be in JSON form. It looks like"),
        "{e}"
    );
    assert_error(
        "FROM a\nSHELL []\n",
        2,
        1,
        "SHELL requires at least one argument",
    );
    assert_error(
        "FROM a\nCMD [\"a\", 1]\n",
        2,
        1,
        "when using JSON array syntax, arrays must be comprised of strings only",
    );
}

#[test]
fn empty_files_and_no_stage() {
    assert_error("", 1, 1, "file with no instructions");
    assert_error("# just a comment\n\n", 2, 1, "file with no instructions");
    assert_error(
        "ARG A=1\nARG B\n",
        1,
        1,
        "dockerfile contains no stages to build",
    );
}

#[test]
fn directive_errors() {
    assert_error(
        "# escape=x\nFROM a\n",
        1,
        1,
        "invalid escape token 'x' does not match ` or \\",
    );
    assert_error(
        "# syntax=a\n# syntax=b\nFROM a\n",
        2,
        1,
        "only one syntax parser directive can be used",
    );
}

#[test]
fn stage_names_and_onbuild_rules() {
    assert_error(
        "FROM a AS 1st\n",
        1,
        11,
        "invalid name for build stage: \"1st\", name can't start with a number or contain symbols",
    );
    assert_error(
        "FROM a AS x!\n",
        1,
        11,
        "invalid name for build stage: \"x!\", name can't start with a number or contain symbols",
    );
    assert_error(
        "FROM a\nONBUILD FROM b\n",
        2,
        1,
        "FROM isn't allowed as an ONBUILD trigger",
    );
    assert_error(
        "FROM a\nONBUILD MAINTAINER me\n",
        2,
        1,
        "MAINTAINER isn't allowed as an ONBUILD trigger",
    );
    assert_error(
        "FROM a\nonbuild onbuild RUN x\n",
        2,
        1,
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed",
    );
}

#[test]
fn errors_are_std_errors() {
    fn takes(_: &dyn std::error::Error) {}
    takes(&err("FOO\n"));
}

// ---------------------------------------------------------------------------
// No panics, whatever the input.

struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Exercises everything that takes user text; a panic fails the test.
fn poke(text: &str) {
    let _ = parse(text, "fuzz");
    let _ = parse_instruction(text, '\\');
    let _ = parse_instruction(text, '`');
    let _ = shell::expand(text, &|_| Some("v a l".to_string()), '\\');
    let _ = shell::expand_words(text, &unset, '`');
    let _ = shell::expand_raw(text, &unset);
    if let Ok(m) = ignore::Matcher::parse(text) {
        let _ = m.matches(text);
        let _ = m.matches("a/b/c.txt");
        let _ = m.dir_may_contain_included("a");
    }
    let _ = ignore::path_match(text, "abc/def");
}

#[test]
fn random_bytes_never_panic() {
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for _ in 0..3000 {
        let len = rng.below(200);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        poke(&String::from_utf8_lossy(&bytes));
    }
}

#[test]
fn garbled_dockerfiles_never_panic() {
    const PIECES: &[&str] = &[
        "FROM ",
        "RUN ",
        "COPY ",
        "ADD ",
        "ENV ",
        "ARG ",
        "ONBUILD ",
        "HEALTHCHECK ",
        "SHELL ",
        "CMD ",
        "LABEL ",
        "EXPOSE ",
        "# escape=`\n",
        "# syntax=x\n",
        "\n",
        "\r\n",
        " ",
        "\t",
        "\\",
        "`",
        "\\\n",
        "`\n",
        "<<",
        "<<-",
        "EOF",
        "\nEOF\n",
        "'",
        "\"",
        "$",
        "${",
        "}",
        ":-",
        "#",
        "##",
        "%",
        "/",
        "//",
        "[",
        "]",
        "[\"a\", ",
        "--",
        "--mount=",
        "--from=",
        "=",
        "AS ",
        "x",
        "é",
        "\u{0}",
        "*",
        "**",
        "?",
        "!",
        ",",
        "{",
        "é\\",
    ];
    let mut rng = XorShift(42);
    for _ in 0..4000 {
        let count = 1 + rng.below(30);
        let text: String = (0..count)
            .map(|_| PIECES[rng.below(PIECES.len())])
            .collect();
        poke(&text);
    }
}

#[test]
fn deep_nesting_never_overflows() {
    let chained = format!("FROM a\n{}RUN x\n", "ONBUILD ".repeat(100_000));
    let e = err(&chained);
    assert_eq!(
        e.message,
        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"
    );
    let nested = format!("FROM a\nRUN {}\n", "${a:-".repeat(100_000));
    assert!(parse(&nested, "Dockerfile").is_ok());
    let expanded = shell::expand(&"${a:-".repeat(100_000), &unset, '\\');
    assert!(expanded.is_err());
}

#[test]
fn truncated_corpus_files_never_panic() {
    for entry in std::fs::read_dir(corpus_path("")).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.ends_with(".Dockerfile") {
            continue;
        }
        let text = corpus_text(&name);
        let mut cut = 0;
        while cut < text.len() {
            if text.is_char_boundary(cut) {
                let _ = parse(&text[..cut], &name);
                let _ = parse(&text[cut..], &name);
            }
            cut += 37;
        }
    }
}
