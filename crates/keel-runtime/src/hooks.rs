//! OCI hooks: each runs with the container state JSON on stdin, its own
//! args and env, and an optional timeout after which it is killed.

use std::io::Write;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::spec::Hook;

/// Runs `hooks` in order; the first failure stops the rest.
pub fn run(stage: &str, hooks: &[Hook], state_json: &str) -> Result<()> {
    for hook in hooks {
        run_one(stage, hook, state_json)?;
    }
    Ok(())
}

fn run_one(stage: &str, hook: &Hook, state_json: &str) -> Result<()> {
    tracing::debug!("running {stage} hook {}", hook.path);
    let mut command = Command::new(&hook.path);
    if let Some((arg0, rest)) = hook.args.split_first() {
        command.arg0(arg0).args(rest);
    }
    command
        .env_clear()
        .envs(hook.env.iter().filter_map(|e| e.split_once('=')))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command
        .spawn()
        .map_err(|e| Error::msg(format!("{stage} hook {}: {e}", hook.path)))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(state_json.as_bytes());
    }
    let deadline = hook
        .timeout
        .filter(|t| *t > 0)
        .map(|t| Instant::now() + Duration::from_secs(t as u64));
    let mut pause = Duration::from_micros(200);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => return Err(Error::msg(format!("{stage} hook {}: wait: {e}", hook.path))),
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(Error::msg(format!(
                "{stage} hook {} timed out after {}s",
                hook.path,
                hook.timeout.unwrap_or(0)
            )));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    };
    if status.success() {
        return Ok(());
    }
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        use std::io::Read;
        let _ = pipe.read_to_string(&mut stderr);
    }
    let how = match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit status {code}"),
        (None, Some(sig)) => format!("signal {sig}"),
        _ => "unknown status".to_string(),
    };
    let stderr = stderr.trim();
    Err(Error::msg(if stderr.is_empty() {
        format!("{stage} hook {} failed: {how}", hook.path)
    } else {
        format!("{stage} hook {} failed: {how}: {stderr}", hook.path)
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook(script: &str, timeout: Option<i64>) -> Hook {
        Hook {
            path: "/bin/sh".into(),
            args: vec!["sh".into(), "-c".into(), script.into()],
            env: vec!["FOO=bar".into()],
            timeout,
        }
    }

    #[test]
    fn hook_gets_state_on_stdin_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("cat > {0}; echo \" $FOO\" >> {0}", out.display());
        run("prestart", &[hook(&script, None)], "{\"id\":\"x\"}").unwrap();
        assert_eq!(
            std::fs::read_to_string(out).unwrap(),
            "{\"id\":\"x\"} bar\n"
        );
    }

    #[test]
    fn failing_and_hanging_hooks_are_errors_naming_the_hook() {
        let err = run("poststart", &[hook("echo nope >&2; exit 3", None)], "{}")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("poststart hook /bin/sh failed: exit status 3: nope"),
            "{err}"
        );
        let err = run("createRuntime", &[hook("sleep 30", Some(1))], "{}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("timed out after 1s"), "{err}");
    }
}
