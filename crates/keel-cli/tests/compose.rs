//! `keel compose` as people use docker compose: files found, merged and
//! interpolated as docker compose does (with its errors), applications of
//! several services brought up, changed, scaled and taken down, one-off
//! runs, exec, builds, secrets, and the foreground with its prefixed logs.
//!
//! Every keel here has its own root, runroot and cgroup parent and runs in
//! a network namespace of its own (common::Keel); the images are made
//! offline (busybox imported, others built from it).

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::{Keel, stderr, stdout};

/// `keel compose ARGS` run in `dir`.
fn compose(keel: &Keel, dir: &Path, args: &[&str]) -> Output {
    let mut all = vec!["compose"];
    all.extend_from_slice(args);
    let mut command = keel.command(&all);
    command.current_dir(dir);
    keel_testutil::output_via_files(&mut command, Duration::from_secs(180))
        .expect("run keel compose")
}

fn compose_ok(keel: &Keel, dir: &Path, args: &[&str]) -> String {
    let out = compose(keel, dir, args);
    assert!(
        out.status.success(),
        "keel compose {args:?} exited {:?}:\n{}{}",
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    stdout(&out)
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

/// The running containers' names, sorted.
fn running(keel: &Keel) -> Vec<String> {
    let mut names: Vec<String> = keel
        .ok(&["ps", "--format", "{{.Names}}"])
        .lines()
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

fn id_of(keel: &Keel, name: &str) -> String {
    keel.inspect(name, "{{.Id}}")
}

#[test]
fn files_are_found_merged_and_interpolated_as_docker_compose_does() {
    let keel = Keel::new();
    let project = keel.temp.subdir("My Shop");
    let deep = project.join("a/b");
    std::fs::create_dir_all(&deep).unwrap();
    write(
        &project,
        "compose.yaml",
        r#"
x-common: &common
  restart: unless-stopped
  labels:
    tier: back
services:
  web:
    <<: *common
    image: busybox:${TAG:-latest}
    command: httpd -f -p ${PORT}
    ports:
      - "${PORT}:${PORT}"
    environment:
      - MODE=${MODE:?set MODE in .env}
      - FROM_SHELL
      - LITERAL=$$HOME
    volumes:
      - ./site:/www:ro
      - data:/data
  debug:
    image: busybox
    profiles: [debug]
  base-worker:
    extends:
      file: common.yaml
      service: worker
    environment:
      LEVEL: extended
volumes:
  data: {}
"#,
    );
    write(
        &project,
        ".env",
        "PORT=8080\nMODE=production # the real one\n",
    );
    write(
        &project,
        "common.yaml",
        "services:\n  worker:\n    image: busybox\n    command: [\"sleep\", \"60\"]\n    environment:\n      LEVEL: base\n      KEEP: yes\n    volumes:\n      - ./cache:/cache\n",
    );
    write(
        &project,
        "compose.override.yaml",
        "services:\n  web:\n    command: [\"httpd\", \"-f\", \"-p\", \"9090\"]\n    ports:\n      - \"9090:9090\"\n    environment:\n      MODE: overridden\n",
    );

    // Found from a directory below; the name comes from the directory.
    let json = compose_ok(&keel, &deep, &["config", "--format", "json"]);
    let config: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(config["name"], "myshop");
    let web = &config["services"]["web"];
    assert_eq!(web["image"], "busybox:latest");
    assert_eq!(
        web["command"],
        serde_json::json!(["httpd", "-f", "-p", "8080"])
    );
    assert_eq!(web["environment"]["MODE"], "production");
    assert_eq!(web["environment"]["LITERAL"], "$HOME");
    // Unset in the shell: no value (the container will not have it).
    assert!(web["environment"]["FROM_SHELL"].is_null());
    assert_eq!(web["restart"], "unless-stopped");
    assert_eq!(web["labels"]["tier"], "back");
    let binds: Vec<&serde_json::Value> = web["volumes"].as_array().unwrap().iter().collect();
    assert_eq!(binds[0]["type"], "bind");
    assert_eq!(
        binds[0]["source"],
        project.join("site").display().to_string()
    );
    assert_eq!(binds[0]["read_only"], true);
    assert_eq!(binds[1]["type"], "volume");
    assert_eq!(config["volumes"]["data"]["name"], "myshop_data");
    // extends: the base's settings under the service's own; the base's
    // relative paths are its own file's.
    let worker = &config["services"]["base-worker"];
    assert_eq!(worker["command"], serde_json::json!(["sleep", "60"]));
    assert_eq!(worker["environment"]["LEVEL"], "extended");
    assert_eq!(worker["environment"]["KEEP"], "yes");
    assert_eq!(
        worker["volumes"][0]["source"],
        project.join("cache").display().to_string()
    );
    // Profiles: off unless asked for.
    assert!(config["services"].get("debug").is_none());

    // Several files, docker's merge: ports added, environment merged by key,
    // command replaced.
    let json = compose_ok(
        &keel,
        &project,
        &[
            "-f",
            "compose.yaml",
            "-f",
            "compose.override.yaml",
            "--profile",
            "debug",
            "config",
            "--format",
            "json",
        ],
    );
    let config: serde_json::Value = serde_json::from_str(&json).unwrap();
    let web = &config["services"]["web"];
    assert_eq!(
        web["command"],
        serde_json::json!(["httpd", "-f", "-p", "9090"])
    );
    assert_eq!(web["environment"]["MODE"], "overridden");
    assert_eq!(web["environment"]["LITERAL"], "$HOME");
    let ports: Vec<String> = web["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["published"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ports, vec!["8080", "9090"]);
    assert!(config["services"].get("debug").is_some());
    // -p, and the listings.
    let services = compose_ok(
        &keel,
        &project,
        &["-p", "other", "--profile", "debug", "config", "--services"],
    );
    assert_eq!(services, "base-worker\ndebug\nweb\n");
    let yaml = compose_ok(&keel, &project, &["-p", "other", "config"]);
    assert!(yaml.contains("name: other"), "{yaml}");
    assert!(yaml.contains("other_data"), "{yaml}");

    // A required variable that is missing: docker compose's message.
    std::fs::write(project.join(".env"), "PORT=8080\n").unwrap();
    let out = compose(&keel, &project, &["config"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("required variable MODE is missing a value: set MODE in .env"),
        "{}",
        stderr(&out)
    );
    // --env-file instead of .env.
    write(&project, "prod.env", "PORT=1\nMODE=prod\n");
    let json = compose_ok(
        &keel,
        &project,
        &["--env-file", "prod.env", "config", "--format", "json"],
    );
    assert!(
        json.contains("\"1:1/tcp\"") || json.contains("\"published\": \"1\""),
        "{json}"
    );
}

#[test]
fn bad_files_are_refused_with_the_file_line_and_key() {
    let keel = Keel::new();
    let dir = keel.temp.subdir("bad");
    let cases: &[(&str, &str)] = &[
        (
            "services:\n  web:\n    image: busybox\n    imagee: typo\n",
            "compose.yaml:4: services.web: additional property 'imagee' is not allowed",
        ),
        (
            "services:\n  web:\n    image: busybox\n    ports: 80\n",
            "compose.yaml:4: services.web.ports: must be a list",
        ),
        (
            "services:\n  web:\n    image: busybox\n    tty: maybe\n",
            "compose.yaml:4: services.web.tty: must be a boolean",
        ),
        (
            "services:\n  web:\n    image: [busybox\n",
            "compose.yaml:3:",
        ),
        (
            "services:\n  web:\n    command: true\n",
            "services.web: has neither an image nor a build context specified",
        ),
        (
            "services:\n  a:\n    image: busybox\n    depends_on: [b]\n  b:\n    image: busybox\n    depends_on: [a]\n",
            "dependency cycle detected: a -> b -> a",
        ),
        (
            "services:\n  a:\n    image: busybox\n    depends_on: [nothere]\n",
            "depends on undefined service \"nothere\"",
        ),
        (
            "services:\n  a:\n    image: busybox\n    networks: [back]\n",
            "refers to undefined network back",
        ),
        (
            "services:\n  a:\n    image: busybox\n    volumes: [\"data:/data\"]\n",
            "refers to undefined volume data",
        ),
    ];
    for (text, expected) in cases {
        write(&dir, "compose.yaml", text);
        let out = compose(&keel, &dir, &["config"]);
        assert_eq!(out.status.code(), Some(1), "{text}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(expected),
            "{text}\nexpected {expected:?} in:\n{}",
            stderr(&out)
        );
    }
    // No file at all.
    std::fs::remove_file(dir.join("compose.yaml")).unwrap();
    let empty = keel.temp.subdir("empty");
    let out = compose(&keel, &empty, &["ps"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no configuration file provided"),
        "{}",
        stderr(&out)
    );
}

/// Every service has keel's init (`init: true`), which passes SIGTERM on:
/// `sleep` or `httpd` as PID 1 would ignore it, and every stop, scale-down
/// and recreate would wait the full stop timeout.
const APP: &str = r#"
name: shop
services:
  web:
    image: busybox
    command: ["sh", "-c", "echo page > /www/index.html && exec httpd -f -v -p 80 -h /www"]
    init: true
    volumes:
      - site:/www
    ports:
      - "127.0.0.1:8088:80"
  db:
    image: busybox
    command: ["sh", "-c", "sleep 0.3 && touch /data/ready && exec sleep 600"]
    init: true
    volumes:
      - data:/data
    healthcheck:
      test: ["CMD", "test", "-f", "/data/ready"]
      interval: 200ms
      retries: 50
  app:
    image: busybox
    command: ["sleep", "600"]
    init: true
    environment:
      DB: db
    depends_on:
      db:
        condition: service_healthy
      web:
        condition: service_started
  worker:
    image: busybox
    command: ["sleep", "600"]
    init: true
    deploy:
      replicas: 2
volumes:
  site: {}
  data: {}
"#;

#[test]
fn an_application_comes_up_changes_scales_and_goes_down() {
    let keel = Keel::new();
    let dir = keel.temp.subdir("shop");
    write(&dir, "compose.yaml", APP);

    let out = compose(&keel, &dir, &["up", "-d"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let progress = stderr(&out);
    assert!(
        progress.contains("Network shop_default  Created"),
        "{progress}"
    );
    assert!(progress.contains("Volume shop_data  Created"), "{progress}");
    assert!(
        progress.contains("Container shop-db-1  Healthy"),
        "{progress}"
    );
    assert_eq!(
        running(&keel),
        vec![
            "shop-app-1",
            "shop-db-1",
            "shop-web-1",
            "shop-worker-1",
            "shop-worker-2"
        ]
    );
    // app started after db was healthy.
    let db_health = keel.inspect("shop-db-1", "{{.State.Health.Status}}");
    assert_eq!(db_health, "healthy");
    // docker compose's labels, so either tool can take the project over.
    let labels = keel.inspect("shop-app-1", "{{json .Config.Labels}}");
    let labels: serde_json::Value = serde_json::from_str(&labels).unwrap();
    assert_eq!(labels["com.docker.compose.project"], "shop");
    assert_eq!(labels["com.docker.compose.service"], "app");
    assert_eq!(labels["com.docker.compose.container-number"], "1");
    assert_eq!(labels["com.docker.compose.oneoff"], "False");
    assert_eq!(
        labels["com.docker.compose.depends_on"],
        "db:service_healthy:false,web:service_started:false"
    );
    assert_eq!(
        labels["com.docker.compose.project.config_files"],
        dir.join("compose.yaml").display().to_string()
    );
    assert!(
        labels["com.docker.compose.config-hash"]
            .as_str()
            .unwrap()
            .len()
            == 64
    );
    // The network and the services on it by name (and the service name
    // reaches every replica).
    let page = keel.ok(&[
        "exec",
        "shop-app-1",
        "wget",
        "-qO-",
        "http://web/index.html",
    ]);
    assert_eq!(page, "page\n");
    let workers = keel.ok(&["exec", "shop-app-1", "nslookup", "worker"]);
    assert!(workers.matches("Address").count() >= 3, "{workers}");
    // Published on the host side.
    let host = keel
        .netns
        .run("wget", &["-qO-", "http://127.0.0.1:8088/index.html"]);
    assert_eq!(stdout(&host), "page\n", "{}", stderr(&host));
    // ps as docker compose shows it.
    let ps = compose_ok(&keel, &dir, &["ps"]);
    let header = ps.lines().next().unwrap();
    assert!(header.starts_with("NAME"), "{ps}");
    assert!(header.contains("SERVICE"), "{ps}");
    assert!(ps.contains("127.0.0.1:8088->80/tcp"), "{ps}");
    assert_eq!(ps.lines().count(), 6, "{ps}");
    let ls = compose_ok(&keel, &dir, &["ls"]);
    assert!(ls.contains("shop") && ls.contains("running(5)"), "{ls}");

    // An unchanged up touches nothing.
    let before: Vec<String> = running(&keel).iter().map(|n| id_of(&keel, n)).collect();
    let out = compose(&keel, &dir, &["up", "-d"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("Recreate"), "{}", stderr(&out));
    let after: Vec<String> = running(&keel).iter().map(|n| id_of(&keel, n)).collect();
    assert_eq!(before, after);

    // A change to web recreates web and what depends on it (app), nothing else.
    let db_id = id_of(&keel, "shop-db-1");
    let web_id = id_of(&keel, "shop-web-1");
    let app_id = id_of(&keel, "shop-app-1");
    write(&dir, "compose.yaml", &APP.replace("-v -p 80", "-p 80"));
    let out = compose(&keel, &dir, &["up", "-d"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(id_of(&keel, "shop-db-1"), db_id);
    assert_ne!(id_of(&keel, "shop-web-1"), web_id);
    assert_ne!(id_of(&keel, "shop-app-1"), app_id);
    // The named volume kept its data through the recreate.
    let page = keel.ok(&[
        "exec",
        "shop-app-1",
        "wget",
        "-qO-",
        "http://web/index.html",
    ]);
    assert_eq!(page, "page\n");

    // Scale up and down.
    compose_ok(&keel, &dir, &["up", "-d", "--scale", "worker=3", "worker"]);
    assert_eq!(
        running(&keel)
            .iter()
            .filter(|n| n.starts_with("shop-worker-"))
            .count(),
        3
    );
    compose_ok(&keel, &dir, &["up", "-d", "--scale", "worker=1", "worker"]);
    assert_eq!(
        running(&keel)
            .iter()
            .filter(|n| n.starts_with("shop-worker-"))
            .collect::<Vec<_>>(),
        vec!["shop-worker-1"]
    );

    // stop / start / restart by service.
    compose_ok(&keel, &dir, &["stop", "worker"]);
    assert!(!running(&keel).contains(&"shop-worker-1".to_string()));
    let ps_all = compose_ok(&keel, &dir, &["ps", "-a", "--format", "json"]);
    assert!(ps_all.contains("\"Service\":\"worker\""), "{ps_all}");
    compose_ok(&keel, &dir, &["start", "worker"]);
    assert!(running(&keel).contains(&"shop-worker-1".to_string()));

    // Orphans: a service taken out of the file.
    write(&dir, "compose.yaml", &APP.replace("  worker:\n    image: busybox\n    command: [\"sleep\", \"600\"]\n    init: true\n    deploy:\n      replicas: 2\n", ""));
    let out = compose(&keel, &dir, &["up", "-d"]);
    assert!(
        stderr(&out).contains("orphan containers (shop-worker-1)"),
        "{}",
        stderr(&out)
    );
    let out = compose(&keel, &dir, &["up", "-d", "--remove-orphans"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!running(&keel).iter().any(|n| n.starts_with("shop-worker")));

    // down -v: nothing of the project is left.
    let out = compose(&keel, &dir, &["down", "-v"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(keel.ok(&["ps", "-aq"]), "");
    let networks = keel.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!networks.contains("shop_default"), "{networks}");
    let volumes = keel.ok(&["volume", "ls", "-q"]);
    assert!(!volumes.contains("shop_"), "{volumes}");
}

#[test]
fn the_foreground_prefixes_logs_and_returns_the_exit_code_asked_for() {
    let keel = Keel::new();
    let dir = keel.temp.subdir("fg");
    write(
        &dir,
        "compose.yaml",
        "services:\n  job:\n    image: busybox\n    command: [\"sh\", \"-c\", \"sleep 0.5; echo job says hello; exit 3\"]\n  server:\n    image: busybox\n    command: [\"sh\", \"-c\", \"echo server up; exec sleep 600\"]\n",
    );
    let out = compose(&keel, &dir, &["up", "--exit-code-from", "job", "-t", "1"]);
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("fg-job-1    | job says hello"), "{text}");
    assert!(text.contains("fg-server-1 | server up"), "{text}");
    assert!(text.contains("fg-job-1 exited with code 3"), "{text}");
    // Every container stopped with it.
    assert_eq!(running(&keel), Vec::<String>::new());
    // Logs afterwards, per service, prefixed.
    let logs = compose_ok(&keel, &dir, &["logs", "--no-color", "job"]);
    assert_eq!(logs, "fg-job-1 | job says hello\n");
    let logs = compose_ok(&keel, &dir, &["logs", "--no-log-prefix", "server"]);
    assert_eq!(logs, "server up\n");
    compose_ok(&keel, &dir, &["down"]);
    assert_eq!(keel.ok(&["ps", "-aq"]), "");
}

#[test]
fn run_exec_builds_and_secrets() {
    let keel = Keel::new();
    let dir = keel.temp.subdir("tools");
    write(
        &dir,
        "app/Dockerfile",
        "FROM busybox\nARG GREETING=none\nRUN echo \"$GREETING\" > /greeting\nCMD [\"sleep\", \"600\"]\n",
    );
    write(&dir, "token.txt", "s3cret\n");
    write(
        &dir,
        "compose.yaml",
        r#"
services:
  app:
    build:
      context: ./app
      args:
        GREETING: built-by-compose
    secrets:
      - token
      - source: inline
        target: /etc/inline.conf
    environment:
      ROLE: app
secrets:
  token:
    file: ./token.txt
  inline:
    content: "inline content"
"#,
    );
    let out = compose(&keel, &dir, &["up", "-d"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Service app  Built"),
        "{}",
        stderr(&out)
    );
    // The image is named as docker compose names it.
    let images = keel.ok(&["images", "--format", "{{.Repository}}"]);
    assert!(images.lines().any(|l| l == "tools-app"), "{images}");
    // exec without a terminal (-T), with env and workdir.
    let out = compose_ok(
        &keel,
        &dir,
        &[
            "exec",
            "-T",
            "-e",
            "EXTRA=1",
            "-w",
            "/run/secrets",
            "app",
            "sh",
            "-c",
            "cat /greeting token; echo $ROLE $EXTRA; pwd; cat /etc/inline.conf",
        ],
    );
    assert_eq!(
        out,
        "built-by-compose\ns3cret\napp 1\n/run/secrets\ninline content"
    );
    // A one-off: its output and exit code, and nothing left with --rm.
    let out = compose(
        &keel,
        &dir,
        &[
            "run",
            "--rm",
            "-T",
            "app",
            "sh",
            "-c",
            "echo one-off $ROLE; exit 4",
        ],
    );
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out), "one-off app\n");
    let all = keel.ok(&["ps", "-a", "--format", "{{.Names}}"]);
    assert_eq!(all.trim(), "tools-app-1", "{all}");
    // exec in a service that is not running.
    compose_ok(&keel, &dir, &["stop", "-t", "1"]);
    let out = compose(&keel, &dir, &["exec", "-T", "app", "true"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("service \"app\" is not running"),
        "{}",
        stderr(&out)
    );
    // down --rmi local removes the built image.
    compose_ok(&keel, &dir, &["down", "--rmi", "local"]);
    let images = keel.ok(&["images", "--format", "{{.Repository}}"]);
    assert!(!images.lines().any(|l| l == "tools-app"), "{images}");
}

#[test]
fn failures_say_what_and_leave_nothing_after_down() {
    let keel = Keel::new();
    let dir = keel.temp.subdir("fail");
    // A healthcheck that never passes, with --wait: the last probe's output.
    write(
        &dir,
        "compose.yaml",
        "services:\n  sick:\n    image: busybox\n    command: [\"sleep\", \"600\"]\n    healthcheck:\n      test: [\"CMD-SHELL\", \"echo still warming up; exit 1\"]\n      interval: 100ms\n      retries: 1000\n",
    );
    let out = compose(&keel, &dir, &["up", "-d", "--wait", "--wait-timeout", "2"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("timeout waiting for service \"sick\" to be healthy: its last health check said: still warming up"),
        "{}",
        stderr(&out)
    );
    compose_ok(&keel, &dir, &["down", "-t", "1"]);
    assert_eq!(keel.ok(&["ps", "-aq"]), "");
    // An image that is not there and cannot be pulled or built.
    write(
        &dir,
        "compose.yaml",
        "services:\n  ghost:\n    image: localhost:1/nothere:1\n    pull_policy: never\n",
    );
    let out = compose(&keel, &dir, &["up", "-d"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("localhost:1/nothere:1 is not present and pull_policy is never"),
        "{}",
        stderr(&out)
    );
    // A dependency that fails: the dependent is not started.
    write(
        &dir,
        "compose.yaml",
        "services:\n  migrate:\n    image: busybox\n    command: [\"sh\", \"-c\", \"exit 2\"]\n  app:\n    image: busybox\n    command: [\"sleep\", \"600\"]\n    depends_on:\n      migrate:\n        condition: service_completed_successfully\n",
    );
    let out = compose(&keel, &dir, &["up", "-d"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("service \"migrate\" didn't complete successfully: exit 2"),
        "{}",
        stderr(&out)
    );
    assert!(!running(&keel).contains(&"fail-app-1".to_string()));
    compose_ok(&keel, &dir, &["down"]);
    assert_eq!(keel.ok(&["ps", "-aq"]), "");
    let networks = keel.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!networks.contains("fail_default"), "{networks}");

    // A port another project holds: the second project says so.
    let first = keel.temp.subdir("first");
    let second = keel.temp.subdir("second");
    let ported = "services:\n  web:\n    image: busybox\n    command: [\"sleep\", \"600\"]\n    ports: [\"127.0.0.1:8099:80\"]\n";
    write(&first, "compose.yaml", ported);
    write(&second, "compose.yaml", ported);
    compose_ok(&keel, &first, &["up", "-d"]);
    let out = compose(&keel, &second, &["up", "-d"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("Bind for 127.0.0.1:8099 failed: port is already allocated"),
        "{}",
        stderr(&out)
    );
    compose_ok(&keel, &second, &["down"]);
    compose_ok(&keel, &first, &["down", "-t", "1"]);
    assert_eq!(keel.ok(&["ps", "-aq"]), "");

    // --abort-on-container-exit: the first exit's code, and all stopped.
    write(
        &dir,
        "compose.yaml",
        "services:\n  broken:\n    image: busybox\n    command: [\"sh\", \"-c\", \"echo cannot start; exit 1\"]\n  steady:\n    image: busybox\n    command: [\"sleep\", \"600\"]\n    init: true\n",
    );
    let out = compose(&keel, &dir, &["up", "--abort-on-container-exit"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("fail-broken-1 exited with code 1"),
        "{}",
        stdout(&out)
    );
    assert_eq!(running(&keel), Vec::<String>::new());
    compose_ok(&keel, &dir, &["down"]);
    assert_eq!(keel.ok(&["ps", "-aq"]), "");
}

#[test]
fn service_settings_reach_the_container() {
    let keel = Keel::new();
    let dir = keel.temp.subdir("conf");
    write(
        &dir,
        "extra.yaml",
        "services:\n  included:\n    image: busybox\n    command: [\"sleep\", \"600\"]\n    networks: [back]\nnetworks:\n  back:\n    ipam:\n      config:\n        - subnet: 10.123.7.0/24\n",
    );
    write(
        &dir,
        "compose.yaml",
        r#"
include:
  - extra.yaml
services:
  box:
    image: busybox
    command: ["sleep", "600"]
    user: "1000:1000"
    working_dir: /tmp
    hostname: box
    tty: true
    read_only: true
    tmpfs:
      - /scratch:size=1m
    cap_drop: [NET_RAW]
    ulimits:
      nofile:
        soft: 1000
        hard: 2000
    deploy:
      resources:
        limits:
          memory: 64m
          cpus: "0.5"
          pids: 100
    shm_size: 32m
    extra_hosts:
      - "db.local:10.1.2.3"
    stop_signal: SIGUSR1
    stop_grace_period: 2s
    restart: on-failure:3
    init: true
    labels:
      team: blue
    logging:
      driver: json-file
      options:
        max-size: 1m
    networks:
      back:
        ipv4_address: 10.123.7.50
        aliases: [boxy]
  sidecar:
    image: busybox
    command: ["sleep", "600"]
    network_mode: "service:box"
"#,
    );
    compose_ok(&keel, &dir, &["up", "-d"]);
    let host: serde_json::Value =
        serde_json::from_str(&keel.inspect("conf-box-1", "{{json .HostConfig}}")).unwrap();
    assert_eq!(host["Memory"], 64 << 20);
    assert_eq!(host["NanoCpus"], 500_000_000);
    assert_eq!(host["PidsLimit"], 100);
    assert_eq!(host["ShmSize"], 32 << 20);
    assert_eq!(host["ReadonlyRootfs"], true);
    assert_eq!(host["Init"], true);
    assert_eq!(host["CapDrop"], serde_json::json!(["NET_RAW"]));
    assert_eq!(host["RestartPolicy"]["Name"], "on-failure");
    assert_eq!(host["RestartPolicy"]["MaximumRetryCount"], 3);
    assert_eq!(host["LogConfig"]["Config"]["max-size"], "1m");
    let config: serde_json::Value =
        serde_json::from_str(&keel.inspect("conf-box-1", "{{json .Config}}")).unwrap();
    assert_eq!(config["User"], "1000:1000");
    assert_eq!(config["WorkingDir"], "/tmp");
    assert_eq!(config["Hostname"], "box");
    assert_eq!(config["StopSignal"], "SIGUSR1");
    assert_eq!(config["StopTimeout"], 2);
    assert_eq!(config["Tty"], true);
    assert_eq!(config["Labels"]["team"], "blue");
    // What the process sees.
    let seen = keel.ok(&[
        "exec", "conf-box-1", "sh", "-c",
        "id -u; pwd; hostname; ulimit -n; grep db.local /etc/hosts; touch /x 2>/dev/null || echo read-only; grep /scratch /proc/mounts | cut -d' ' -f3",
    ]);
    assert_eq!(
        seen.replace("\r\n", "\n"),
        "1000\n/tmp\nbox\n1000\n10.1.2.3\tdb.local\nread-only\ntmpfs\n"
    );
    // The fixed address on the included file's network, and the alias.
    let ip = keel.inspect(
        "conf-box-1",
        "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}",
    );
    assert_eq!(ip, "10.123.7.50");
    let found = keel.ok(&["exec", "conf-included-1", "nslookup", "boxy"]);
    assert!(found.contains("10.123.7.50"), "{found}");
    // The sidecar shares box's network namespace.
    let mode = keel.inspect("conf-sidecar-1", "{{.HostConfig.NetworkMode}}");
    assert_eq!(mode, format!("container:{}", id_of(&keel, "conf-box-1")));
    let sidecar_ip = keel.ok(&[
        "exec",
        "conf-sidecar-1",
        "ip",
        "-4",
        "-o",
        "addr",
        "show",
        "eth0",
    ]);
    assert!(sidecar_ip.contains("10.123.7.50"), "{sidecar_ip}");

    // cp both ways through the service's name.
    write(&dir, "note.txt", "copied in\n");
    compose_ok(&keel, &dir, &["cp", "note.txt", "included:/tmp/note.txt"]);
    let back = keel.temp.path().join("back.txt");
    compose_ok(
        &keel,
        &dir,
        &["cp", "included:/tmp/note.txt", back.to_str().unwrap()],
    );
    assert_eq!(std::fs::read_to_string(&back).unwrap(), "copied in\n");

    // Events carry the compose labels (docker's container events do).
    let until = (std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 1)
    .to_string();
    let events = keel.ok(&[
        "events",
        "--since",
        "0",
        "--until",
        &until,
        "--filter",
        "label=com.docker.compose.project=conf",
        "--filter",
        "event=start",
        "--format",
        "{{.Actor.Attributes.name}}",
    ]);
    let mut started: Vec<&str> = events.lines().collect();
    started.sort();
    assert_eq!(
        started,
        vec!["conf-box-1", "conf-included-1", "conf-sidecar-1"]
    );

    // -p NAME with no file: enough to see and take the project down.
    let elsewhere = keel.temp.subdir("elsewhere");
    let ps = compose_ok(&keel, &elsewhere, &["-p", "conf", "ps", "--services"]);
    assert_eq!(ps, "box\nincluded\nsidecar\n");
    compose_ok(&keel, &elsewhere, &["-p", "conf", "down", "-t", "1"]);
    assert_eq!(keel.ok(&["ps", "-aq"]), "");
    let networks = keel.ok(&["network", "ls", "--format", "{{.Name}}"]);
    assert!(!networks.contains("conf_"), "{networks}");
}

#[test]
fn ctrl_c_stops_the_foreground_project() {
    let keel = Keel::new();
    let dir = keel.temp.subdir("live");
    write(
        &dir,
        "compose.yaml",
        "services:\n  a:\n    image: busybox\n    command: [\"sh\", \"-c\", \"trap 'echo a stops; exit 0' TERM; echo a ready; while true; do sleep 0.1; done\"]\n    init: true\n  b:\n    image: busybox\n    command: [\"sleep\", \"600\"]\n    stop_grace_period: 1s\n",
    );
    let log = keel.temp.path().join("up.log");
    let mut command = keel.command(&["compose", "up"]);
    command
        .current_dir(&dir)
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::process::Stdio::null());
    let mut child = command.spawn().unwrap();
    keel.eventually("a's first line", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .contains("a ready")
    });
    // SAFETY: signalling the keel this test started, by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("live-a-1 | a stops"), "{text}");
    assert!(text.contains("live-a-1 exited with code 0"), "{text}");
    assert_eq!(running(&keel), Vec::<String>::new());
    compose_ok(&keel, &dir, &["down"]);
}

#[test]
fn build_push_pull_and_the_recreate_flags() {
    let keel = Keel::new();
    let registry =
        keel_testutil::peers::Registry::start_in(&keel.temp, "registry", None, Some(&keel.netns));
    let image = format!("{}/keel/app:1", registry.host());
    let dir = keel.temp.subdir("flags");
    write(
        &dir,
        "app/Dockerfile",
        "FROM busybox\nRUN echo v1 > /version\nCMD [\"sleep\", \"600\"]\n",
    );
    let file = format!(
        "services:\n  app:\n    build: ./app\n    image: {image}\n    init: true\n    depends_on: [other]\n  other:\n    image: busybox\n    command: [\"sleep\", \"600\"]\n    init: true\n"
    );
    write(&dir, "compose.yaml", &file);
    // build tags the service's image; push sends it; pull brings it back.
    compose_ok(&keel, &dir, &["build"]);
    keel.ok(&["image", "inspect", &image]);
    compose_ok(&keel, &dir, &["push"]);
    keel.ok(&["rmi", &image]);
    compose_ok(&keel, &dir, &["pull", "app"]);
    let version = keel.ok(&["run", "--rm", &image, "cat", "/version"]);
    assert_eq!(version, "v1\n");

    compose_ok(&keel, &dir, &["up", "-d"]);
    let app = id_of(&keel, "flags-app-1");
    let other = id_of(&keel, "flags-other-1");
    // --force-recreate of one service: that one only.
    compose_ok(
        &keel,
        &dir,
        &["up", "-d", "--force-recreate", "--no-deps", "other"],
    );
    assert_ne!(id_of(&keel, "flags-other-1"), other);
    assert_eq!(id_of(&keel, "flags-app-1"), app);
    let other = id_of(&keel, "flags-other-1");
    // --no-recreate: a changed service is left as it is.
    write(
        &dir,
        "compose.yaml",
        &file.replace("[\"sleep\", \"600\"]", "[\"sleep\", \"601\"]"),
    );
    compose_ok(&keel, &dir, &["up", "-d", "--no-recreate"]);
    assert_eq!(id_of(&keel, "flags-other-1"), other);
    // --no-deps: only the service named starts.
    compose_ok(&keel, &dir, &["stop", "-t", "1"]);
    compose_ok(
        &keel,
        &dir,
        &["up", "-d", "--no-deps", "--no-recreate", "app"],
    );
    assert_eq!(running(&keel), vec!["flags-app-1"]);
    // --build rebuilds; the changed image recreates the service.
    write(
        &dir,
        "app/Dockerfile",
        "FROM busybox\nRUN echo v2 > /version\nCMD [\"sleep\", \"600\"]\n",
    );
    compose_ok(&keel, &dir, &["up", "-d", "--build", "--no-deps", "app"]);
    assert_ne!(id_of(&keel, "flags-app-1"), app);
    assert_eq!(keel.ok(&["exec", "flags-app-1", "cat", "/version"]), "v2\n");
    compose_ok(&keel, &dir, &["down", "-t", "1"]);
    assert_eq!(keel.ok(&["ps", "-aq"]), "");
}

#[test]
fn a_restart_carries_to_what_depends_with_restart_true() {
    let keel = Keel::new();
    let dir = keel.temp.subdir("chain");
    write(
        &dir,
        "compose.yaml",
        "services:\n  db:\n    image: busybox\n    command: [\"sleep\", \"600\"]\n    init: true\n  api:\n    image: busybox\n    command: [\"sleep\", \"600\"]\n    init: true\n    depends_on:\n      db:\n        condition: service_started\n        restart: true\n  batch:\n    image: busybox\n    command: [\"sleep\", \"600\"]\n    init: true\n    depends_on: [db]\n",
    );
    compose_ok(&keel, &dir, &["up", "-d"]);
    let started = |name: &str| keel.inspect(name, "{{.State.StartedAt}}");
    let (api, batch) = (started("chain-api-1"), started("chain-batch-1"));
    let out = compose(&keel, &dir, &["restart", "db"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Container chain-api-1  Restarting"),
        "{}",
        stderr(&out)
    );
    assert_ne!(started("chain-api-1"), api);
    assert_eq!(started("chain-batch-1"), batch);
    // rm takes stopped containers only; with -s it stops them first.
    compose_ok(&keel, &dir, &["stop", "batch"]);
    compose_ok(&keel, &dir, &["rm", "-f"]);
    assert_eq!(running(&keel), vec!["chain-api-1", "chain-db-1"]);
    assert_eq!(keel.ok(&["ps", "-aq"]).lines().count(), 2);
    compose_ok(&keel, &dir, &["rm", "-f", "-s", "api"]);
    assert_eq!(running(&keel), vec!["chain-db-1"]);
    assert_eq!(keel.ok(&["ps", "-aq"]).lines().count(), 1);
    compose_ok(&keel, &dir, &["down", "-t", "1"]);
}

#[test]
fn wait_honours_the_image_s_own_healthcheck() {
    let keel = Keel::new();
    let dir = keel.temp.subdir("imghc");
    write(
        &dir,
        "img/Dockerfile",
        "FROM busybox\nHEALTHCHECK --interval=100ms --retries=50 CMD test -f /tmp/ready\nCMD [\"sh\", \"-c\", \"sleep 0.3; touch /tmp/ready; exec sleep 600\"]\n",
    );
    write(
        &dir,
        "compose.yaml",
        "services:\n  svc:\n    build: ./img\n    init: true\n  after:\n    image: busybox\n    command: [\"sleep\", \"600\"]\n    init: true\n    depends_on:\n      svc:\n        condition: service_healthy\n",
    );
    let out = compose(&keel, &dir, &["up", "-d", "--wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Container imghc-svc-1  Healthy"),
        "{}",
        stderr(&out)
    );
    assert_eq!(
        keel.inspect("imghc-svc-1", "{{.State.Health.Status}}"),
        "healthy"
    );
    assert_eq!(running(&keel), vec!["imghc-after-1", "imghc-svc-1"]);
    compose_ok(&keel, &dir, &["down", "-t", "1", "--rmi", "local"]);
}
