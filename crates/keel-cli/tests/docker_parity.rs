//! Where keel must do what docker does, found by running real work on it:
//! what `inspect` shows of an image's settings, which files `diff` and
//! `commit` leave out, how a volume made beforehand is filled.

mod common;

use common::{Keel, stderr};

/// An image with labels, exposed ports and a health check, built from a
/// Dockerfile (no RUN: nothing but config).
fn build_configured_image(keel: &Keel) {
    let context = keel.temp.subdir("context");
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\n\
         LABEL tier=img shared=image\n\
         EXPOSE 80 53/udp\n\
         HEALTHCHECK --interval=5s --retries=4 CMD true\n",
    )
    .unwrap();
    keel.ok(&[
        "build",
        "-q",
        "-t",
        "keel-test/configured",
        context.to_str().unwrap(),
    ]);
}

#[test]
fn inspect_shows_the_image_settings_the_container_runs_with() {
    let keel = Keel::new();
    build_configured_image(&keel);
    let host = keel.temp.subdir("host");
    let bind = format!("{}:/mnt:ro", host.display());
    let id = keel
        .ok(&[
            "create",
            "--name",
            "web",
            "-l",
            "shared=container",
            "-p",
            "127.0.0.1:8080:81",
            "--health-timeout",
            "2s",
            "-v",
            "data:/data",
            "-v",
            &bind,
            "-v",
            "/anonymous",
            "--mount",
            "type=volume,source=other,target=/other",
            "keel-test/configured",
            "true",
        ])
        .trim()
        .to_string();

    // The image's labels, the container's over them; filters see both.
    assert_eq!(
        keel.inspect("web", "{{json .Config.Labels}}"),
        r#"{"shared":"container","tier":"img"}"#
    );
    assert_eq!(
        keel.ok(&["ps", "-aq", "--no-trunc", "--filter", "label=tier=img"])
            .trim(),
        id
    );
    assert_eq!(
        keel.ok(&["ps", "-aq", "--filter", "label=shared=image"])
            .trim(),
        ""
    );

    // EXPOSEd and published ports.
    let exposed: serde_json::Value =
        serde_json::from_str(&keel.inspect("web", "{{json .Config.ExposedPorts}}")).unwrap();
    let mut ports: Vec<&str> = exposed
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    ports.sort();
    assert_eq!(ports, ["53/udp", "80/tcp", "81/tcp"]);

    // The health check: the flag's timeout over the image's settings (ns).
    let health: serde_json::Value =
        serde_json::from_str(&keel.inspect("web", "{{json .Config.Healthcheck}}")).unwrap();
    assert_eq!(health["Test"], serde_json::json!(["CMD-SHELL", "true"]));
    assert_eq!(health["Interval"], 5_000_000_000i64);
    assert_eq!(health["Timeout"], 2_000_000_000i64);
    assert_eq!(health["Retries"], 4);

    // -v binds and named volumes as typed; --mount and anonymous ones not.
    let binds: serde_json::Value =
        serde_json::from_str(&keel.inspect("web", "{{json .HostConfig.Binds}}")).unwrap();
    assert_eq!(binds, serde_json::json!(["data:/data", bind]));
    keel.ok(&["create", "--name", "plain", "busybox", "true"]);
    assert_eq!(keel.inspect("plain", "{{json .HostConfig.Binds}}"), "null");
}

#[test]
fn a_volume_made_beforehand_gets_the_image_content_on_first_mount() {
    let keel = Keel::new();
    // An image whose /owned belongs to 1000:1001 with mode 750.
    keel.ok(&[
        "run",
        "--name",
        "maker",
        "busybox",
        "sh",
        "-c",
        "mkdir /owned && echo seeded > /owned/f && chown -R 1000:1001 /owned && chmod 750 /owned",
    ]);
    keel.ok(&["commit", "maker", "keel-test/owned"]);

    // docker copies into any empty volume, however it was made.
    keel.ok(&["volume", "create", "made"]);
    let seen = keel.ok(&[
        "run",
        "--rm",
        "-v",
        "made:/owned",
        "keel-test/owned",
        "sh",
        "-c",
        "stat -c '%u:%g %a' /owned /owned/f; cat /owned/f",
    ]);
    assert_eq!(seen, "1000:1001 750\n1000:1001 644\nseeded\n");
    let data = keel.root().join("volumes/made/_data");
    assert_eq!(std::fs::read_to_string(data.join("f")).unwrap(), "seeded\n");

    // A volume with content keeps it; nocopy keeps an empty one empty.
    keel.ok(&["volume", "create", "full"]);
    keel.ok(&[
        "run",
        "--rm",
        "-v",
        "full:/x",
        "busybox",
        "sh",
        "-c",
        "echo mine > /x/own",
    ]);
    assert_eq!(
        keel.ok(&[
            "run",
            "--rm",
            "-v",
            "full:/owned",
            "keel-test/owned",
            "ls",
            "/owned"
        ]),
        "own\n"
    );
    keel.ok(&["volume", "create", "bare"]);
    assert_eq!(
        keel.ok(&[
            "run",
            "--rm",
            "-v",
            "bare:/owned:nocopy",
            "keel-test/owned",
            "ls",
            "/owned"
        ]),
        ""
    );
}

#[test]
fn diff_and_commit_leave_out_the_mount_points_keel_makes() {
    let keel = Keel::new();
    // The offline busybox image has no /etc/hosts, /proc, /sys or /dev: the
    // runtime makes them in the writable layer as mount points.
    keel.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "300"]);
    assert_eq!(keel.ok(&["diff", "box"]), "", "nothing changed yet");
    keel.ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "echo x > /etc/new && mkdir /data && touch /data/f",
    ]);
    assert_eq!(
        keel.ok(&["diff", "box"]),
        "A /data\nA /data/f\nC /etc\nA /etc/new\n"
    );
    keel.ok(&["commit", "box", "keel-test/committed"]);
    // The committed layer has the changes and none of the mount points.
    let archive = keel.temp.path().join("committed.tar");
    keel.ok(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        "keel-test/committed",
    ]);
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::process::Command::new("tar")
            .args(["-xOf", archive.to_str().unwrap(), "manifest.json"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap();
    let top = layers.last().unwrap().as_str().unwrap();
    let listing = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!(
            "tar -xOf {} {top} | tar -tz 2>/dev/null || tar -xOf {} {top} | tar -t",
            archive.display(),
            archive.display()
        ))
        .output()
        .unwrap();
    let mut names: Vec<String> = String::from_utf8_lossy(&listing.stdout)
        .lines()
        .map(|l| l.trim_start_matches("./").trim_end_matches('/').to_string())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["data", "data/f", "etc", "etc/new"],
        "{}",
        stderr(&listing)
    );
}

#[test]
fn errors_read_and_exit_as_the_docker_cli_s() {
    let keel = Keel::new();
    // A flag keel does not know: docker's three parts, exit 125, any command.
    let out = keel.run(&["logs", "--badflag", "x"]);
    assert_eq!(out.status.code(), Some(125));
    assert_eq!(
        stderr(&out),
        "unknown flag: --badflag\n\nUsage:  keel logs [OPTIONS] <CONTAINER>\n\n\
         Run 'keel logs --help' for more information\n"
    );
    let out = keel.run(&["network", "create", "-Z", "n"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).starts_with("unknown shorthand flag: 'Z' in -Z\n"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).ends_with("Run 'keel network create --help' for more information\n"));
    let out = keel.run(&["run", "--memory"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).starts_with("flag needs an argument: --memory\n"));
    let out = keel.run(&["nosuchcommand"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        stderr(&out),
        "keel: 'nosuchcommand' is not a keel command.\nSee 'keel --help'\n"
    );
    assert_eq!(keel.run(&["ps", "--help"]).status.code(), Some(0));

    // A command's own failure exits 1; run and create exit 125.
    for args in [
        &["logs", "nosuch"][..],
        &["exec", "nosuch", "true"],
        &["cp", "nosuch:/etc/passwd", "/tmp"],
        &["top", "nosuch"],
        &["start", "nosuch"],
        &["rmi", "nosuch"],
    ] {
        let out = keel.run(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "keel {args:?}: {}",
            stderr(&out)
        );
        assert!(stderr(&out).contains("nosuch"), "{}", stderr(&out));
    }
    keel.ok(&["create", "--name", "stopped", "busybox", "true"]);
    let out = keel.run(&["exec", "stopped", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("is not running"), "{}", stderr(&out));
    for args in [&["run", "nosuch-image"][..], &["create", "nosuch-image"]] {
        assert_eq!(keel.run(args).status.code(), Some(125), "keel {args:?}");
    }
    // A broken Dockerfile: exit 1 with the line.
    let context = keel.temp.subdir("broken");
    std::fs::write(context.join("Dockerfile"), "FROM busybox\nFROBNICATE x\n").unwrap();
    let out = keel.run(&["build", context.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));

    // inspect looks for any kind of object; what it does not find is named.
    let out = keel.run(&["inspect", "nosuch"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out), "Error: No such object: nosuch\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[]\n");
    keel.ok(&["volume", "create", "vol"]);
    keel.ok(&["network", "create", "net"]);
    let out = keel.run(&[
        "inspect",
        "-f",
        "{{.Name}}",
        "stopped",
        "vol",
        "net",
        "nosuch",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&out.stdout), "/stopped\nvol\nnet\n");
    let out = keel.run(&["image", "inspect", "nosuch"]);
    assert_eq!(stderr(&out), "Error: No such image: nosuch\n");
}

#[test]
fn go_templates_as_scripts_written_for_docker_use_them() {
    let keel = Keel::new();
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "-l",
        "tier=front",
        "-l",
        "app=shop",
        "-v",
        "data:/data",
        "busybox",
        "sleep",
        "300",
    ]);
    let inspect = |format: &str| keel.inspect("web", format);
    // The daily one: the addresses of every network.
    let address = inspect("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}");
    assert!(address.starts_with("172.17."), "{address}");
    assert_eq!(
        inspect("{{if eq .State.Status \"running\"}}up{{else}}down{{end}}"),
        "up"
    );
    assert_eq!(inspect("{{with .State}}{{.Running}}{{end}}"), "true");
    assert_eq!(inspect("{{join .Args \",\"}}"), "300");
    assert_eq!(inspect("{{len .Mounts}}"), "1");
    assert_eq!(
        inspect("{{range .Mounts}}{{.Name}}:{{.Destination}}{{end}}"),
        "data:/data"
    );
    assert_eq!(
        inspect("{{range $k, $v := .Config.Labels}}{{$k}}={{$v}} {{end}}"),
        "app=shop tier=front"
    );
    assert_eq!(
        inspect("{{printf \"%s exited %d\" .Name .State.ExitCode}}"),
        "/web exited 0"
    );
    assert_eq!(
        inspect("{{.State.Status | upper}} {{lower \"ABC\"}}"),
        "RUNNING abc"
    );
    assert_eq!(inspect("{{index .Config.Labels \"tier\"}}"), "front");
    assert_eq!(
        inspect("{{json .Config.Labels}}"),
        r#"{"app":"shop","tier":"front"}"#
    );
    let out = keel.run(&["inspect", "-f", "{{nosuch .Name}}", "web"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("function \"nosuch\" not defined"),
        "{}",
        stderr(&out)
    );

    // --format on the listing commands, with `table` headers aligned.
    assert_eq!(
        keel.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
        "busybox:latest\n"
    );
    assert_eq!(
        keel.ok(&["ps", "--format", "table {{.Names}}\t{{.Image}}"]),
        "NAMES   IMAGE\nweb     busybox\n"
    );
    assert_eq!(
        keel.ok(&["ps", "--format", "{{.Names}} {{.Label \"tier\"}}"])
            .trim(),
        "web front"
    );
    assert_eq!(
        keel.ok(&["volume", "ls", "--format", "{{.Name}} {{.Driver}}"]),
        "data local\n"
    );
    let networks = keel.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(networks.lines().any(|l| l == "bridge"), "{networks}");
    let history = keel.ok(&["history", "--format", "{{.CreatedBy}}", "busybox"]);
    assert!(!history.is_empty());
    let json = keel.ok(&["images", "--format", "json"]);
    let row: serde_json::Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(row["Repository"], "busybox");
}

#[test]
fn import_changes_gzipped_loads_and_build_hosts() {
    let keel = Keel::new();
    let tarball = keel.temp.path().join("busybox-rootfs.tar");
    // import -c/-m: the config and the history comment docker import sets.
    keel.ok(&[
        "import",
        "-c",
        "CMD [\"sh\", \"-c\", \"echo from-cmd $GREETING\"]",
        "-c",
        "ENV GREETING=hello",
        "-m",
        "imported by a test",
        tarball.to_str().unwrap(),
        "keel-test/imported",
    ]);
    assert_eq!(
        keel.ok(&["run", "--rm", "keel-test/imported"]),
        "from-cmd hello\n"
    );
    assert_eq!(
        keel.ok(&["history", "--format", "{{.Comment}}", "keel-test/imported"]),
        "imported by a test\n"
    );
    let out = keel.run(&[
        "import",
        "-c",
        "RUN rm -rf /",
        tarball.to_str().unwrap(),
        "x",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("RUN is not a valid change command"),
        "{}",
        stderr(&out)
    );
    // Untagged, as docker import without a name.
    let id = keel.ok(&["import", tarball.to_str().unwrap()]);
    assert!(id.starts_with("sha256:"), "{id}");

    // load of a compressed archive (docker save | gzip), from a file and stdin.
    let saved = keel.temp.path().join("saved.tar");
    keel.ok(&["save", "-o", saved.to_str().unwrap(), "keel-test/imported"]);
    keel.ok(&["rmi", "keel-test/imported"]);
    let gzipped = std::process::Command::new("gzip")
        .arg("-k")
        .arg(&saved)
        .status()
        .unwrap();
    assert!(gzipped.success());
    let archive = format!("{}.gz", saved.display());
    let loaded = keel.ok(&["load", "-i", &archive]);
    assert_eq!(loaded, "Loaded image: keel-test/imported:latest\n");
    keel.ok(&["rmi", "keel-test/imported"]);
    let out = keel
        .command(&["load"])
        .stdin(std::fs::File::open(&archive).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));

    // build --add-host: RUN steps see the name.
    let context = keel.temp.subdir("context");
    std::fs::write(
        context.join("Dockerfile"),
        "FROM busybox\nRUN grep db.example /etc/hosts > /found\n",
    )
    .unwrap();
    keel.ok(&[
        "build",
        "-q",
        "--add-host",
        "db.example:10.1.2.3",
        "-t",
        "keel-test/hosts",
        context.to_str().unwrap(),
    ]);
    let found = keel.ok(&["run", "--rm", "keel-test/hosts", "cat", "/found"]);
    assert!(found.starts_with("10.1.2.3"), "{found}");
}

#[test]
fn cp_says_how_much_it_copied() {
    let keel = Keel::new();
    keel.ok(&["run", "-d", "--name", "box", "busybox", "sleep", "300"]);
    let host = keel.temp.subdir("host");
    std::fs::write(host.join("small"), b"ab\n").unwrap();
    // docker counts the tar stream: a header, a block of data, two end blocks.
    let out = keel.run(&["cp", host.join("small").to_str().unwrap(), "box:/tmp/"]);
    assert!(out.status.success());
    assert_eq!(stderr(&out), "Successfully copied 2.05kB to box:/tmp/\n");
    let back = host.join("back");
    let out = keel.run(&["cp", "box:/tmp/small", back.to_str().unwrap()]);
    assert_eq!(
        stderr(&out),
        format!("Successfully copied 2.05kB to {}\n", back.display())
    );
    assert_eq!(std::fs::read(&back).unwrap(), b"ab\n");
}

#[test]
fn top_runs_the_host_ps_with_the_options_given() {
    let keel = Keel::new();
    keel.ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "busybox",
        "sh",
        "-c",
        "sleep 301 & exec sleep 302",
    ]);
    keel.eventually("both sleeps run", || {
        keel.ok(&["top", "box"]).matches("sleep 30").count() == 2
    });
    // ps -ef's columns: a user name, a start time, the command line.
    let top = keel.ok(&["top", "box"]);
    let mut lines = top.lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    for line in lines {
        let cells: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(cells[0], "root", "{top}");
        assert!(cells[4].contains(':'), "STIME is a time: {top}");
        assert!(
            line.ends_with("sleep 301") || line.ends_with("sleep 302"),
            "{top}"
        );
    }
    // The ps options are ps's: -o picks the columns, aux is BSD's.
    let picked = keel.ok(&["top", "box", "-o", "pid,user,args"]);
    let mut lines = picked.lines();
    assert_eq!(
        lines.next().unwrap().split_whitespace().collect::<Vec<_>>(),
        ["PID", "USER", "COMMAND"]
    );
    assert_eq!(lines.count(), 2, "{picked}");
    assert!(keel.ok(&["top", "box", "aux"]).starts_with("USER"));
    // Without a PID column nothing can be matched: docker's error.
    let out = keel.run(&["top", "box", "-o", "user"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Couldn't find PID field in ps output"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn an_image_becomes_a_vm_disk_as_overlayfs_shows_it() {
    let keel = Keel::new();
    // Two layers: the second deletes a file (a whiteout) and adds one.
    keel.ok(&[
        "run",
        "--name",
        "writer",
        "--network",
        "none",
        "busybox",
        "sh",
        "-c",
        "rm /etc/passwd && echo two > /second",
    ]);
    keel.ok(&["commit", "writer", "keel-test/layered"]);
    let disk = keel.temp.path().join("layered.ext4");
    let out = keel.ok(&[
        "vm",
        "disk",
        "from-image",
        "keel-test/layered",
        disk.to_str().unwrap(),
    ]);
    assert!(out.starts_with(&format!("{} (", disk.display())), "{out}");
    let debugfs = |request: &str| {
        let out = std::process::Command::new("debugfs")
            .args(["-R", request])
            .arg(&disk)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert_eq!(debugfs("cat /second"), "two\n");
    assert!(
        debugfs("stat /etc/passwd").is_empty(),
        "the whiteout hides it"
    );
    assert!(debugfs("ls -l /bin").contains("busybox"));
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fn"])
        .arg(&disk)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    // Nothing mounted is left, and an existing file is not overwritten.
    assert!(
        !keel.mounts().iter().any(|m| m.contains("making")),
        "{:?}",
        keel.mounts()
    );
    let out = keel.run(&[
        "vm",
        "disk",
        "from-image",
        "keel-test/layered",
        disk.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("exists"), "{}", stderr(&out));
    let out = keel.run(&["vm", "disk", "from-image", "keel-test/none", "/tmp/x.ext4"]);
    assert_eq!(stderr(&out), "Error: No such image: keel-test/none\n");
    // A sparse raw disk.
    let raw = keel.temp.path().join("raw.img");
    keel.ok(&[
        "vm",
        "disk",
        "create",
        raw.to_str().unwrap(),
        "--size",
        "1g",
    ]);
    let meta = std::fs::metadata(&raw).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((meta.len(), meta.blocks()), (1 << 30, 0));
}
