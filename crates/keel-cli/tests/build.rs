//! `keel build` as a user drives it, offline, on the busybox image the
//! harness imports: multi-stage builds with `--from` and `--target`, the
//! cache (hits, misses, `--no-cache`, `builder prune`), `.dockerignore`,
//! `--chown`/`--chmod`, USER and WORKDIR, ONBUILD, heredocs, a context on
//! stdin, and bad input that must fail clearly and tag nothing.

mod common;

use std::path::{Path, PathBuf};

use common::{Keel, stderr, stdout};

fn context(keel: &Keel, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = keel.temp.subdir(name);
    for (path, text) in files {
        let file = dir.join(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        std::fs::write(&file, text).unwrap();
    }
    dir
}

fn build(keel: &Keel, dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["build", "--progress", "plain"];
    args.extend_from_slice(extra);
    args.push(dir.to_str().unwrap());
    keel.run(&args)
}

fn build_ok(keel: &Keel, dir: &Path, extra: &[&str]) -> String {
    let out = build(keel, dir, extra);
    assert!(
        out.status.success(),
        "keel build {extra:?} failed:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
    stderr(&out)
}

fn image_id(keel: &Keel, name: &str) -> String {
    keel.ok(&["image", "inspect", "-f", "{{.Id}}", name])
        .trim()
        .to_string()
}

fn config(keel: &Keel, name: &str) -> serde_json::Value {
    let text = keel.ok(&["image", "inspect", name]);
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    value[0]["Config"].clone()
}

fn no_build_leftovers(keel: &Keel) {
    assert_eq!(
        keel.ok(&["ps", "-aq"]).trim(),
        "",
        "build containers are removed"
    );
    let mounts: Vec<String> = keel
        .mounts()
        .into_iter()
        .filter(|m| m.contains("/build/"))
        .collect();
    assert!(mounts.is_empty(), "no build mounts left: {mounts:?}");
    let tmp = keel.root().join("build").join("tmp");
    let left: Vec<_> = std::fs::read_dir(&tmp)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "no scratch dirs left: {left:?}");
}

#[test]
fn multi_stage_with_from_and_target() {
    let keel = Keel::new();
    let dir = context(
        &keel,
        "ctx",
        &[(
            "Dockerfile",
            r#"# syntax=docker/dockerfile:1
ARG BASE=busybox
FROM $BASE AS builder
WORKDIR /src
RUN echo built > artifact && mkdir -p out && echo two > out/b

FROM busybox AS never
RUN echo this stage is not needed && exit 1

FROM busybox
LABEL org.example.kind=test
ENV GREETING="hello world" \
    OTHER=/x
COPY --from=builder /src/artifact /app/
COPY --from=0 /src/out /app/out
EXPOSE 8080 53/udp
USER 1000:1000
WORKDIR /app
ENTRYPOINT ["cat"]
CMD ["artifact"]
"#,
        )],
    );
    let log = build_ok(&keel, &dir, &["-t", "multi:1", "--label", "extra=yes"]);
    assert!(
        !log.contains("this stage is not needed"),
        "the unneeded stage is not built:\n{log}"
    );
    // The image runs as its config says.
    assert_eq!(
        keel.ok(&["run", "--rm", "--network", "none", "multi:1"]),
        "built\n"
    );
    assert_eq!(
        keel.ok(&["run", "--rm", "--network", "none", "multi:1", "out/b"]),
        "two\n"
    );
    assert_eq!(
        keel.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "sh",
            "multi:1",
            "-c",
            "id -u; id -g"
        ]),
        "1000\n1000\n"
    );
    let config = config(&keel, "multi:1");
    let env: Vec<String> = serde_json::from_value(config["Env"].clone()).unwrap();
    assert!(env.contains(&"GREETING=hello world".to_string()), "{env:?}");
    assert!(env.contains(&"OTHER=/x".to_string()), "{env:?}");
    assert!(env.iter().any(|e| e.starts_with("PATH=")), "{env:?}");
    assert_eq!(config["User"], "1000:1000");
    assert_eq!(config["WorkingDir"], "/app");
    assert_eq!(config["Entrypoint"], serde_json::json!(["cat"]));
    assert_eq!(config["Cmd"], serde_json::json!(["artifact"]));
    assert_eq!(config["Labels"]["org.example.kind"], "test");
    assert_eq!(config["Labels"]["extra"], "yes");
    assert!(config["ExposedPorts"]["8080/tcp"].is_object());
    assert!(config["ExposedPorts"]["53/udp"].is_object());
    // History: one entry per instruction, the layer-making ones with layers.
    let history = keel.ok(&["image", "history", "--no-trunc", "multi:1"]);
    assert!(
        history.contains("COPY --from=builder /src/artifact /app/"),
        "{history}"
    );
    assert!(
        history.contains("ENV GREETING=hello world OTHER=/x"),
        "{history}"
    );

    // --target builds that stage only.
    let log = build_ok(&keel, &dir, &["-t", "multi:builder", "--target", "builder"]);
    assert!(
        log.contains("CACHED"),
        "the builder stage comes from the cache:\n{log}"
    );
    assert_eq!(
        keel.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "multi:builder",
            "cat",
            "/src/artifact"
        ]),
        "built\n"
    );
    no_build_leftovers(&keel);
}

#[test]
fn cache_hits_misses_no_cache_and_prune() {
    let keel = Keel::new();
    let dir = context(
        &keel,
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM busybox\nCOPY a.txt /a.txt\nRUN cat /a.txt > /copy && date +%s%N > /stamp\nCOPY b.txt /b.txt\nRUN cat /b.txt > /b-copy\n",
            ),
            ("a.txt", "first\n"),
            ("b.txt", "second\n"),
        ],
    );
    let first = build_ok(&keel, &dir, &["-t", "cached"]);
    assert!(
        !first.contains("CACHED"),
        "a first build has no cache:\n{first}"
    );
    let id = image_id(&keel, "cached");
    let stamp = keel.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "cached",
        "cat",
        "/stamp",
    ]);

    // Nothing changed: every step from the cache, the same image.
    let again = build_ok(&keel, &dir, &["-t", "cached"]);
    assert_eq!(
        again.matches("CACHED").count(),
        4,
        "all four steps cached:\n{again}"
    );
    assert_eq!(
        image_id(&keel, "cached"),
        id,
        "an unchanged rebuild gives the same image"
    );

    // One file changed: steps before its COPY stay cached, the rest rerun.
    std::fs::write(dir.join("b.txt"), "changed\n").unwrap();
    let changed = build_ok(&keel, &dir, &["-t", "cached"]);
    assert_eq!(
        changed.matches("CACHED").count(),
        2,
        "COPY a.txt and the first RUN cached:\n{changed}"
    );
    assert_ne!(image_id(&keel, "cached"), id);
    assert_eq!(
        keel.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "cached",
            "cat",
            "/stamp",
            "/b-copy"
        ]),
        format!("{stamp}changed\n"),
        "the first RUN was not run again; the second saw the new file"
    );

    // A file's mode is content too.
    let changed_id = image_id(&keel, "cached");
    std::fs::set_permissions(
        dir.join("a.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap();
    let mode = build_ok(&keel, &dir, &["-t", "cached"]);
    assert_eq!(
        mode.matches("CACHED").count(),
        0,
        "a chmod invalidates from its COPY:\n{mode}"
    );
    assert_ne!(image_id(&keel, "cached"), changed_id);

    let no_cache = build_ok(&keel, &dir, &["-t", "cached", "--no-cache"]);
    assert!(
        !no_cache.contains("CACHED"),
        "--no-cache uses nothing cached:\n{no_cache}"
    );

    let df = keel.ok(&["system", "df"]);
    let cache_line = df
        .lines()
        .find(|l| l.starts_with("Build Cache"))
        .unwrap_or_default()
        .to_string();
    assert!(
        cache_line
            .split_whitespace()
            .nth(2)
            .is_some_and(|n| n != "0"),
        "system df counts the cache: {df}"
    );
    let pruned = keel.ok(&["builder", "prune", "-f"]);
    let df = keel.ok(&["system", "df"]);
    let cache_line = df
        .lines()
        .find(|l| l.starts_with("Build Cache"))
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        cache_line.split_whitespace().nth(2),
        Some("0"),
        "pruned: {df}"
    );
    assert!(pruned.contains("Total reclaimed space"), "{pruned}");
    // The tagged image survives the prune and still runs.
    assert_eq!(
        keel.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "cached",
            "cat",
            "/b-copy"
        ]),
        "changed\n"
    );
    let after = build_ok(&keel, &dir, &["-t", "cached"]);
    assert!(
        !after.contains("CACHED"),
        "the pruned cache is gone:\n{after}"
    );
    no_build_leftovers(&keel);
}

#[test]
fn dockerignore_chown_chmod_user_workdir() {
    let keel = Keel::new();
    let dir = context(
        &keel,
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM busybox\n\
                 RUN echo 'app:x:1234:1234::/home/app:/bin/sh' >> /etc/passwd && echo 'app:x:1234:' >> /etc/group\n\
                 COPY . /ctx/\n\
                 COPY --chown=1000:2000 --chmod=640 f.txt /owned/f.txt\n\
                 COPY --chown=app:app dir /named/\n\
                 WORKDIR rel\n\
                 USER app\n\
                 RUN id -u > /tmp/uid && pwd > /tmp/pwd\n",
            ),
            (".dockerignore", "# comment\n*.log\n!keep.log\nsecret/\n"),
            ("f.txt", "f\n"),
            ("drop.log", "no\n"),
            ("keep.log", "yes\n"),
            ("secret/key", "hidden\n"),
            ("dir/sub/file", "in dir\n"),
        ],
    );
    build_ok(&keel, &dir, &["-t", "files"]);
    let run = |cmd: &str| {
        keel.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-u",
            "0",
            "files",
            "sh",
            "-c",
            cmd,
        ])
    };
    assert_eq!(
        run("ls -A /ctx | sort | tr '\\n' ' '"),
        ".dockerignore Dockerfile dir f.txt keep.log "
    );
    assert_eq!(run("stat -c '%u:%g %a' /owned/f.txt"), "1000:2000 640\n");
    assert_eq!(
        run("stat -c '%u:%g' /named/sub/file /named/sub"),
        "1234:1234\n1234:1234\n"
    );
    assert_eq!(run("cat /named/sub/file"), "in dir\n");
    // WORKDIR relative to the previous one (/), USER for RUN.
    assert_eq!(run("cat /tmp/uid /tmp/pwd"), "1234\n/rel\n");
    no_build_leftovers(&keel);
}

#[test]
fn onbuild_triggers_run_in_the_child() {
    let keel = Keel::new();
    let parent = context(
        &keel,
        "parent",
        &[(
            "Dockerfile",
            "FROM busybox\nONBUILD COPY hello.txt /hello.txt\nONBUILD RUN echo triggered > /onbuild\n",
        )],
    );
    build_ok(&keel, &parent, &["-t", "parent"]);
    let onbuild = config(&keel, "parent")["OnBuild"].clone();
    assert_eq!(
        onbuild,
        serde_json::json!(["COPY hello.txt /hello.txt", "RUN echo triggered > /onbuild"])
    );
    let child = context(
        &keel,
        "child",
        &[
            (
                "Dockerfile",
                "FROM parent\nRUN cat /hello.txt /onbuild > /both\n",
            ),
            ("hello.txt", "hi\n"),
        ],
    );
    build_ok(&keel, &child, &["-t", "child"]);
    assert_eq!(
        keel.ok(&["run", "--rm", "--network", "none", "child", "cat", "/both"]),
        "hi\ntriggered\n"
    );
    assert!(
        config(&keel, "child")["OnBuild"].is_null(),
        "triggers are not passed on"
    );
}

#[test]
fn heredocs_args_and_a_context_on_stdin() {
    let keel = Keel::new();
    let dir = context(
        &keel,
        "ctx",
        &[(
            "Dockerfile",
            "FROM busybox\n\
             ARG WHO=world\n\
             ENV PLACE=here\n\
             RUN <<EOF\n\
             echo \"hello $WHO\" > /greeting\n\
             echo line two >> /greeting\n\
             EOF\n\
             COPY <<EOT /etc/note\n\
             at $PLACE for ${WHO}\n\
             EOT\n\
             COPY <<'RAW' /etc/raw\n\
             kept $PLACE\n\
             RAW\n",
        )],
    );
    build_ok(&keel, &dir, &["-t", "heredoc", "--build-arg", "WHO=keel"]);
    assert_eq!(
        keel.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "heredoc",
            "cat",
            "/greeting",
            "/etc/note",
            "/etc/raw"
        ]),
        "hello keel\nline two\nat here for keel\nkept $PLACE\n"
    );
    // ARG values are not in the image's environment.
    let env = config(&keel, "heredoc")["Env"].to_string();
    assert!(!env.contains("WHO"), "{env}");

    // The same context as a tar on stdin.
    let tarball = keel.temp.path().join("ctx.tar");
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(&dir)
        .arg("-cf")
        .arg(&tarball)
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    let out = keel
        .command(&["build", "-q", "-t", "fromstdin", "-"])
        .stdin(std::fs::File::open(&tarball).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let printed = stdout(&out);
    assert!(
        printed.trim().starts_with("sha256:"),
        "-q prints the id: {printed}"
    );
    assert_eq!(printed.trim(), image_id(&keel, "fromstdin"));
    assert_eq!(
        keel.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "fromstdin",
            "cat",
            "/greeting"
        ]),
        "hello world\nline two\n"
    );
}

#[test]
fn bad_input_fails_clearly_and_tags_nothing() {
    let keel = Keel::new();
    let cases: &[(&str, &str, &[&str])] = &[
        (
            "FROM busybox\nRUN true\nFRM busybox\n",
            "Dockerfile:3",
            &["unknown instruction", "FRM"],
        ),
        (
            "FROM busybox\nCOPY missing.txt /x\n",
            "Dockerfile:2",
            &["missing.txt", "not found"],
        ),
        (
            "FROM busybox\nCOPY ../outside /x\n",
            "Dockerfile:2",
            &["outside"],
        ),
        (
            "FROM busybox\nRUN echo some output; exit 3\n",
            "Dockerfile:2",
            &["exit code: 3"],
        ),
        (
            "FROM busybox\nCOPY --from=nosuchstage /a /b\n",
            "",
            &["nosuchstage"],
        ),
        ("FROM $UNSET\n", "", &["base name", "should not be blank"]),
        (
            "FROM busybox\nCOPY a.txt b.txt /dest\n",
            "Dockerfile:2",
            &["destination must be a directory"],
        ),
    ];
    for (i, (dockerfile, place, words)) in cases.iter().enumerate() {
        let dir = context(
            &keel,
            &format!("bad{i}"),
            &[("Dockerfile", dockerfile), ("a.txt", "a"), ("b.txt", "b")],
        );
        let tag = format!("bad:{i}");
        let out = build(&keel, &dir, &["-t", &tag]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{dockerfile:?} must fail:\n{err}");
        assert!(
            err.contains(place),
            "{dockerfile:?}: the error names {place}:\n{err}"
        );
        for word in *words {
            assert!(
                err.contains(word),
                "{dockerfile:?}: the error says {word:?}:\n{err}"
            );
        }
        let listed = keel.run(&["image", "inspect", &tag]);
        assert!(
            !listed.status.success(),
            "{dockerfile:?}: nothing is tagged {tag}"
        );
    }
    // The failing RUN's output is shown.
    let dir = keel.temp.path().join("bad3");
    let out = build(&keel, &dir, &[]);
    assert!(stderr(&out).contains("some output"), "{}", stderr(&out));
    // An unknown --target.
    let out = build(&keel, &dir, &["--target", "nope"]);
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    no_build_leftovers(&keel);
}

#[test]
fn independent_stages_build_at_once() {
    let keel = Keel::new();
    // Each stage waits (up to 30 s) for the other's mark in a shared cache
    // mount: built one after the other, the first would give up.
    let wait = |me: &str, other: &str| {
        format!(
            "RUN --mount=type=cache,target=/meet,id=meet touch /meet/{me} && \
             i=0; while [ ! -e /meet/{other} ]; do i=$((i+1)); [ $i -gt 600 ] && exit 7; sleep 0.05; done; \
             echo {me} > /{me}"
        )
    };
    let dockerfile = format!(
        "FROM busybox AS a\n{}\nFROM busybox AS b\n{}\nFROM busybox\nCOPY --from=a /a /a\nCOPY --from=b /b /b\n",
        wait("a", "b"),
        wait("b", "a")
    );
    let dir = context(&keel, "ctx", &[("Dockerfile", &dockerfile)]);
    build_ok(&keel, &dir, &["-t", "both", "--network", "none"]);
    assert_eq!(
        keel.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "both",
            "cat",
            "/a",
            "/b"
        ]),
        "a\nb\n"
    );
}

#[test]
fn add_unpacks_local_archives_and_fetches_urls() {
    let keel = Keel::new();
    let dir = context(
        &keel,
        "ctx",
        &[("payload/inner/file.txt", "from the archive\n")],
    );
    let tar = std::process::Command::new("tar")
        .arg("-C")
        .arg(dir.join("payload"))
        .arg("-czf")
        .arg(dir.join("bundle.tar.gz"))
        .arg(".")
        .status()
        .unwrap();
    assert!(tar.success());
    std::fs::remove_dir_all(dir.join("payload")).unwrap();
    // A tiny HTTP server inside keel's network namespace.
    let listener = keel
        .netns
        .within(|| std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let port = listener.local_addr().unwrap().port();
    let body = "downloaded\n";
    let server = std::thread::spawn(move || {
        use std::io::{Read, Write};
        for stream in listener.incoming().take(2) {
            let mut stream = stream.unwrap();
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    let sha = {
        use sha2::Digest as _;
        hex::encode(sha2::Sha256::digest(body.as_bytes()))
    };
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM busybox\nADD bundle.tar.gz /unpacked/\nCOPY bundle.tar.gz /copied/\n\
             ADD --checksum=sha256:{sha} http://127.0.0.1:{port}/files/remote.txt /fetched/\n"
        ),
    )
    .unwrap();
    build_ok(&keel, &dir, &["-t", "added"]);
    let run = |cmd: &str| keel.ok(&["run", "--rm", "--network", "none", "added", "sh", "-c", cmd]);
    assert_eq!(run("cat /unpacked/inner/file.txt"), "from the archive\n");
    assert_eq!(run("ls /copied"), "bundle.tar.gz\n", "COPY does not unpack");
    assert_eq!(run("cat /fetched/remote.txt"), "downloaded\n");
    assert_eq!(run("stat -c %a /fetched/remote.txt"), "600\n");

    // A wrong checksum fails the build and tags nothing.
    std::fs::write(
        dir.join("Dockerfile"),
        format!(
            "FROM busybox\nADD --checksum=sha256:{} http://127.0.0.1:{port}/files/remote.txt /x\n",
            "0".repeat(64)
        ),
    )
    .unwrap();
    let out = build(&keel, &dir, &["-t", "badsum"]);
    server.join().unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("digest mismatch"), "{}", stderr(&out));
    assert!(!keel.run(&["image", "inspect", "badsum"]).status.success());
}

/// buildah with its own storage in the test's temp dir; its container is
/// unmounted and removed on drop.
struct Buildah<'a> {
    keel: &'a Keel,
    root: PathBuf,
}

impl Buildah<'_> {
    fn run(&self, args: &[&str]) -> String {
        let mut command = std::process::Command::new("buildah");
        command
            .arg("--root")
            .arg(self.root.join("root"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", "vfs"])
            .args(args)
            .env("BUILDAH_ISOLATION", "chroot")
            .stdin(std::process::Stdio::null());
        self.keel.netns.enter(&mut command);
        let out = command
            .output()
            .expect("run buildah (scripts/setup installs it)");
        assert!(out.status.success(), "buildah {args:?}: {}", stderr(&out));
        stdout(&out)
    }
}

impl Drop for Buildah<'_> {
    fn drop(&mut self) {
        let mut command = std::process::Command::new("buildah");
        command
            .arg("--root")
            .arg(self.root.join("root"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", "vfs", "rm", "--all"]);
        let _ = command.output();
    }
}

#[test]
fn the_same_image_as_buildah() {
    let keel = Keel::new();
    let dir = context(
        &keel,
        "ctx",
        &[
            (
                "Dockerfile",
                r#"FROM busybox
ENV A=1 B="two words"
LABEL x=y
WORKDIR /app
COPY --chown=10:20 --chmod=640 f.txt ./
COPY dir/ /app/dir/
RUN mkdir -p /data && echo made > /data/made && ln -s /data/made /app/link
ARG V=3
RUN echo $V > /app/v
EXPOSE 80/tcp 53/udp
VOLUME /vol
USER 10:20
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s CMD true
ONBUILD RUN true
SHELL ["/bin/sh", "-ec"]
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo hi"]
"#,
            ),
            ("f.txt", "f\n"),
            ("dir/sub/g", "g\n"),
        ],
    );
    std::fs::set_permissions(
        dir.join("dir/sub/g"),
        std::os::unix::fs::PermissionsExt::from_mode(0o751),
    )
    .unwrap();
    build_ok(&keel, &dir, &["-t", "same", "--network", "none"]);
    let archive = keel.temp.path().join("busybox.tar");
    keel.ok(&["save", "-o", archive.to_str().unwrap(), "busybox"]);
    let buildah = Buildah {
        keel: &keel,
        root: keel.temp.subdir("buildah"),
    };
    buildah.run(&[
        "pull",
        "-q",
        &format!("docker-archive:{}", archive.display()),
    ]);
    buildah.run(&[
        "bud",
        "-q",
        "--format",
        "docker",
        "-t",
        "same",
        dir.to_str().unwrap(),
    ]);

    // The image config: every field docker's config has, the same.
    let theirs: serde_json::Value =
        serde_json::from_str(&buildah.run(&["inspect", "--type", "image", "same"])).unwrap();
    let mut theirs = theirs["Docker"]["config"].clone();
    theirs["Labels"]
        .as_object_mut()
        .unwrap()
        .remove("io.buildah.version");
    let ours = config(&keel, "same");
    for field in [
        "User",
        "ExposedPorts",
        "Env",
        "Cmd",
        "Healthcheck",
        "Volumes",
        "WorkingDir",
        "Entrypoint",
        "OnBuild",
        "Labels",
        "StopSignal",
        "Shell",
    ] {
        assert_eq!(ours[field], theirs[field], "config field {field}");
    }

    // The files: type, owner, mode, size and content.
    let paths =
        "/app /app/f.txt /app/dir /app/dir/sub /app/dir/sub/g /app/link /data /data/made /app/v";
    let script = format!(
        "stat -c '%n %F %u:%g %a %s' {paths}; cat /app/f.txt /app/dir/sub/g /data/made /app/v; readlink /app/link"
    );
    let container = buildah.run(&["from", "same"]).trim().to_string();
    let mount = buildah.run(&["mount", &container]).trim().to_string();
    let listing = std::process::Command::new("chroot")
        .arg(&mount)
        .args(["/bin/sh", "-c", &script])
        .output()
        .unwrap();
    buildah.run(&["umount", &container]);
    assert!(listing.status.success(), "{}", stderr(&listing));
    let mine = keel.ok(&[
        "run",
        "--rm",
        "--network",
        "none",
        "-u",
        "0",
        "--entrypoint",
        "/bin/sh",
        "same",
        "-c",
        &script,
    ]);
    assert_eq!(mine, stdout(&listing), "the same files as buildah's");
}

#[test]
fn a_killed_build_leaves_nothing_the_next_cannot_clean() {
    use std::io::{BufRead, BufReader};
    let keel = Keel::new();
    let dir = context(
        &keel,
        "ctx",
        &[
            (
                "Dockerfile",
                "FROM busybox\nCOPY . /ctx\nRUN echo started; sleep 60\n",
            ),
            ("f", "x"),
        ],
    );
    let mut child = keel
        .command(&[
            "build",
            "--progress",
            "plain",
            "--network",
            "none",
            "-t",
            "killed",
            dir.to_str().unwrap(),
        ])
        .stderr(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    // Killed once its RUN step runs.
    loop {
        let line = lines
            .next()
            .expect("the build ended before its RUN step")
            .unwrap();
        if line.ends_with(" started") {
            break;
        }
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert_ne!(
        keel.ok(&["ps", "-aq"]).trim(),
        "",
        "the step's container outlives the build"
    );

    // The next build cleans up after it, and nothing is tagged.
    std::fs::write(dir.join("Dockerfile"), "FROM busybox\nRUN true\n").unwrap();
    build_ok(&keel, &dir, &["-t", "next", "--network", "none"]);
    assert!(!keel.run(&["image", "inspect", "killed"]).status.success());
    no_build_leftovers(&keel);
}

#[test]
fn run_mounts_networks_and_build_flags() {
    let keel = Keel::new();
    let dir = context(
        &keel,
        "ctx",
        &[
            (
                "custom.Dockerfile",
                "FROM busybox\n\
                 ARG TARGETARCH\n\
                 RUN echo $TARGETARCH > /arch\n\
                 RUN --mount=type=bind,source=f.txt,target=/mnt/f cat /mnt/f > /bound\n\
                 RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /secret-size\n\
                 RUN --mount=type=tmpfs,target=/scratch touch /scratch/x && ls /scratch > /scratch-seen\n\
                 RUN ls /sys/class/net | sort | tr '\\n' ' ' > /nets\n\
                 RUN --network=none ls /sys/class/net > /nets-none\n\
                 COPY --exclude=*.log --exclude=skip . /ex/\n\
                 COPY --parents dir/sub/g /p/\n",
            ),
            ("custom.Dockerfile.dockerignore", "ignored.txt\n"),
            (".dockerignore", "f.txt\n"),
            ("f.txt", "bound file\n"),
            ("a.log", "log\n"),
            ("ignored.txt", "no\n"),
            ("skip/x", "no\n"),
            ("dir/sub/g", "g\n"),
        ],
    );
    let secret = keel.temp.path().join("token");
    std::fs::write(&secret, "s3cret").unwrap();
    let iid = keel.temp.path().join("iid");
    let file = dir.join("custom.Dockerfile");
    let log = build_ok(
        &keel,
        &dir,
        &[
            "-t",
            "mounts",
            "-f",
            file.to_str().unwrap(),
            "--secret",
            &format!("id=token,src={}", secret.display()),
            "--iidfile",
            iid.to_str().unwrap(),
            "--build-arg",
            "UNUSED=1",
        ],
    );
    assert!(log.contains("[UNUSED] were not consumed"), "{log}");
    assert_eq!(
        std::fs::read_to_string(&iid).unwrap(),
        image_id(&keel, "mounts")
    );
    let run = |cmd: &str| {
        keel.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "mounts",
            "sh",
            "-c",
            cmd,
        ])
    };
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    assert_eq!(run("cat /arch"), format!("{arch}\n"));
    // custom.Dockerfile.dockerignore wins over .dockerignore: f.txt is there.
    assert_eq!(run("cat /bound"), "bound file\n");
    assert_eq!(run("cat /secret-size"), "6\n");
    assert_eq!(
        run("ls -A /run/secrets 2>/dev/null | wc -l"),
        "0\n",
        "the secret is not in the image"
    );
    assert_eq!(
        run("cat /scratch-seen; ls -A /scratch | wc -l"),
        "x\n0\n",
        "tmpfs content stays out"
    );
    assert_eq!(
        run("cat /nets"),
        "eth0 lo ",
        "RUN has keel run's default network"
    );
    assert_eq!(run("cat /nets-none"), "lo\n");
    assert_eq!(
        run("ls -A /ex | sort | tr '\\n' ' '"),
        ".dockerignore custom.Dockerfile custom.Dockerfile.dockerignore dir f.txt "
    );
    assert_eq!(run("cat /p/dir/sub/g"), "g\n");

    // A Dockerfile on stdin, no context.
    let out = keel
        .command(&["build", "-q", "-t", "stdin-only", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"FROM busybox\nRUN echo from stdin > /s\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        keel.ok(&[
            "run",
            "--rm",
            "--network",
            "none",
            "stdin-only",
            "cat",
            "/s"
        ]),
        "from stdin\n"
    );
    no_build_leftovers(&keel);
}

#[test]
fn args_without_values_warn_and_foreign_platforms_are_refused() {
    let keel = Keel::new();
    let dir = context(
        &keel,
        "ctx",
        &[("Dockerfile", "FROM busybox\nARG NOVAL\nENV X=$NOVAL\n")],
    );
    let log = build_ok(&keel, &dir, &["-t", "noval"]);
    assert!(log.contains("ARG without a value used"), "{log}");
    assert!(log.contains("NOVAL (line 3)"), "{log}");
    let env = config(&keel, "noval")["Env"].to_string();
    assert!(
        env.contains("\"X=\""),
        "docker expands it to nothing: {env}"
    );

    std::fs::write(
        dir.join("Dockerfile"),
        "ARG P=linux/s390x\nFROM --platform=$P busybox\n",
    )
    .unwrap();
    let out = build(&keel, &dir, &["-t", "foreign"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("this machine's platform only"),
        "{}",
        stderr(&out)
    );
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM --platform=$BUILDPLATFORM busybox\nRUN true\n",
    )
    .unwrap();
    build_ok(&keel, &dir, &["-t", "native"]);
}
