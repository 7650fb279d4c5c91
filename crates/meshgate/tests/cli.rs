//! The `meshgate` binary end to end: `validate` exit codes and golden error messages, and `run`
//! with SIGHUP reload, file-watch reload and SIGTERM drain, against real upstream servers.
//!
//! Golden files: `crates/meshgate-e2e/tests/fixtures/bad/NAME.yaml` is validated from inside that
//! directory and its stderr compared with `NAME.expected`. Run with `UPDATE_GOLDEN=1` to rewrite
//! the expected files after an intended change of wording (then review the diff).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

mod support;

use support::{BIN, Gateway, config, get, tiny};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../meshgate-e2e/tests/fixtures")
}

fn meshgate(dir: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let out = Command::new(BIN)
        .args(args)
        .current_dir(dir)
        .env("RUST_LOG", "off")
        .env_remove("MESHGATE_CONFIG")
        .output()
        .expect("run meshgate");
    (out.status, String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

// ---------------------------------------------------------------------------------------------
// validate

#[test]
fn validate_golden_errors() {
    let dir = fixtures().join("bad");
    let update = std::env::var_os("UPDATE_GOLDEN").is_some_and(|v| v == "1");
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).expect("fixtures/bad").filter_map(|e| e.ok()?.file_name().into_string().ok()).collect();
    names.sort();
    let yamls: Vec<&String> = names.iter().filter(|n| n.ends_with(".yaml")).collect();
    assert!(yamls.len() >= 10, "expected the bad-config fixtures in {}", dir.display());
    let mut problems = Vec::new();
    for yaml in &yamls {
        let expected_path = dir.join(yaml.replace(".yaml", ".expected"));
        let (status, stdout, stderr) = meshgate(&dir, &["validate", yaml]);
        if status.code() != Some(2) {
            problems
                .push(format!("{yaml}: exit code {:?}, expected 2\nstdout: {stdout}\nstderr: {stderr}", status.code()));
            continue;
        }
        if !stdout.is_empty() {
            problems.push(format!("{yaml}: nothing should go to stdout, got: {stdout}"));
        }
        if update {
            std::fs::write(&expected_path, &stderr).expect("write expected");
            continue;
        }
        match std::fs::read_to_string(&expected_path) {
            Ok(expected) if expected == stderr => {}
            Ok(expected) => problems.push(format!(
                "{yaml}: stderr differs from {}:\n{}",
                expected_path.display(),
                diff(&expected, &stderr)
            )),
            Err(_) => problems.push(format!(
                "{yaml}: missing {} (run with UPDATE_GOLDEN=1); stderr was:\n{stderr}",
                expected_path.display()
            )),
        }
    }
    for n in names.iter().filter(|n| n.ends_with(".expected")) {
        if !names.contains(&n.replace(".expected", ".yaml")) {
            problems.push(format!("{n}: no matching .yaml fixture"));
        }
    }
    assert!(problems.is_empty(), "{}\n\n(run with UPDATE_GOLDEN=1 to accept the new output)", problems.join("\n\n"));
}

/// A line diff (longest common subsequence): `-` expected only, `+` actual only.
fn diff(expected: &str, actual: &str) -> String {
    let header = "  (- expected, + actual)\n";
    let (a, b): (Vec<&str>, Vec<&str>) = (expected.lines().collect(), actual.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, header.to_owned());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("   {}\n", a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            out.push_str(&format!("  -{}\n", a[i]));
            i += 1;
        } else {
            out.push_str(&format!("  +{}\n", b[j]));
            j += 1;
        }
    }
    out
}

#[test]
fn validate_accepts_good_configs() {
    let dir = fixtures().join("good");
    for name in ["minimal.yaml", "full.yaml", "shadowed.yaml"] {
        let (status, stdout, stderr) = meshgate(&dir, &["validate", name]);
        assert_eq!(status.code(), Some(0), "{name}: stdout {stdout} stderr {stderr}");
        assert!(stdout.contains(&format!("{name}: valid (")), "{name}: {stdout}");
        assert!(stderr.is_empty(), "{name}: {stderr}");
    }
    let (_, stdout, _) = meshgate(&dir, &["validate", "shadowed.yaml"]);
    assert!(
        stdout.contains("warning: shadowed.yaml: route \"users-again\" can never match"),
        "shadowed routes are warned about: {stdout}"
    );
    // The example shipped with the project is valid too.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let (status, stdout, stderr) = meshgate(&root, &["validate", "examples/gateway.yaml"]);
    assert_eq!(status.code(), Some(0), "examples/gateway.yaml: {stdout} {stderr}");
}

#[test]
fn validate_usage_errors() {
    let dir = fixtures();
    let (status, _, stderr) = meshgate(&dir, &["validate", "no-such-file.yaml"]);
    assert_eq!(status.code(), Some(2));
    assert!(stderr.starts_with("error: no-such-file.yaml: cannot read config file:"), "{stderr}");
    let (status, _, _) = meshgate(&dir, &["validate"]);
    assert_eq!(status.code(), Some(2), "missing argument is a usage error");
    let (status, _, _) = meshgate(&dir, &["frobnicate"]);
    assert_eq!(status.code(), Some(2), "unknown subcommand is a usage error");
}

#[test]
fn hash_password_makes_a_hash_the_config_accepts() {
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run meshgate");
    child.stdin.take().unwrap().write_all(b"correct horse\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let hash = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{hash}");
    assert!(!hash.contains("correct horse"));

    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        "listeners: [{{name: l, address: '127.0.0.1:0'}}]\nconsumers:\n  - username: alice\n    credentials:\n      basic-auth: [{{password_hash: '{hash}'}}]\n"
    );
    std::fs::write(dir.path().join("c.yaml"), yaml).unwrap();
    let (status, stdout, stderr) = meshgate(dir.path(), &["validate", "c.yaml"]);
    assert_eq!(status.code(), Some(0), "{stdout} {stderr}");

    let (status, _, stderr) = meshgate(dir.path(), &["hash-password"]);
    assert_eq!(status.code(), Some(2), "an empty password is refused: {stderr}");
}

// ---------------------------------------------------------------------------------------------
// run

#[test]
fn run_reloads_on_sighup_and_drains_on_sigterm() {
    let (a, b) = (tiny("a"), tiny("b"));
    let mut gw = Gateway::start(|port| config(port, a.addr, false));
    assert_eq!(get(gw.addr, "/").unwrap(), (200, "a".to_owned()));
    let port = gw.addr.port();

    // SIGHUP applies the changed file.
    std::fs::write(&gw.config, config(port, b.addr, false)).unwrap();
    gw.signal("-HUP");
    gw.wait_for_body("b", "after SIGHUP");

    // A bad file is refused with its location, and the running config keeps serving.
    let mark = gw.log().len();
    std::fs::write(&gw.config, config(port, a.addr, false).replace("paths:", "pathz:")).unwrap();
    gw.signal("-HUP");
    let log = gw.wait_for_log("config rejected", mark);
    assert!(log.contains(&format!("{}:4:", gw.config.display())) && log.contains("pathz"), "{log}");
    assert_eq!(get(gw.addr, "/").unwrap(), (200, "b".to_owned()));

    // SIGTERM lets the request in flight finish, then the process exits 0.
    let before = b.started.load(Ordering::SeqCst);
    let addr = gw.addr;
    let slow = std::thread::spawn(move || get(addr, "/slow"));
    let deadline = Instant::now() + Duration::from_secs(5);
    while b.started.load(Ordering::SeqCst) == before {
        assert!(Instant::now() < deadline, "slow request never reached the upstream");
        std::thread::sleep(Duration::from_millis(10));
    }
    gw.signal("-TERM");
    let status = gw.wait_exit(Duration::from_secs(10));
    assert_eq!(slow.join().unwrap().unwrap(), (200, "b".to_owned()), "request in flight during SIGTERM");
    assert_eq!(status.code(), Some(0), "exit status after SIGTERM:\n{}", gw.log());
    assert!(TcpStream::connect_timeout(&gw.addr, Duration::from_millis(500)).is_err(), "still listening after exit");
}

#[test]
fn run_survives_a_sighup_right_after_start() {
    // A deploy script may reload as soon as the port answers; that must not kill the process
    // (SIGHUP's default action) because the handler was not installed yet.
    let a = tiny("a");
    for round in 0..8 {
        let mut gw = Gateway::start(|port| config(port, a.addr, true));
        gw.signal("-HUP");
        std::thread::sleep(Duration::from_millis(100));
        if let Some(status) = gw.child.try_wait().unwrap() {
            panic!("round {round}: meshgate died of an early SIGHUP ({status})");
        }
        assert_eq!(get(gw.addr, "/").unwrap(), (200, "a".to_owned()));
        gw.signal("-TERM");
        assert_eq!(gw.wait_exit(Duration::from_secs(10)).code(), Some(0));
    }
}

#[test]
fn run_reloads_when_the_file_changes() {
    let (a, b) = (tiny("a"), tiny("b"));
    let mut gw = Gateway::start(|port| config(port, a.addr, true));
    assert_eq!(get(gw.addr, "/").unwrap(), (200, "a".to_owned()));
    let port = gw.addr.port();

    // Editors often write a new file and rename it over the old one. The watcher is registered
    // a moment after the port opens, and a change before that is not seen (a known race at
    // startup), so this first change is repeated until it is picked up; the edits after it must
    // each work the first time.
    let tmp = gw.config.with_extension("yaml.tmp");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        std::fs::write(&tmp, config(port, b.addr, true)).unwrap();
        std::fs::rename(&tmp, &gw.config).unwrap();
        let until = Instant::now() + Duration::from_millis(1000);
        while Instant::now() < until && get(gw.addr, "/").ok() != Some((200, "b".to_owned())) {
            std::thread::sleep(Duration::from_millis(25));
        }
        if get(gw.addr, "/").ok() == Some((200, "b".to_owned())) {
            break;
        }
        assert!(Instant::now() < deadline, "replacing the file never reloaded it:\n{}", gw.log());
    }

    // Replaced again: applied at once.
    std::fs::write(&tmp, config(port, a.addr, true)).unwrap();
    std::fs::rename(&tmp, &gw.config).unwrap();
    gw.wait_for_body("a", "after replacing the file again");

    // An in-place edit.
    std::fs::write(&gw.config, config(port, b.addr, true)).unwrap();
    gw.wait_for_body("b", "after editing the file in place");

    // A broken edit is refused.
    let mark = gw.log().len();
    std::fs::write(&gw.config, "listeners: [\n").unwrap();
    gw.wait_for_log("config rejected", mark);
    assert_eq!(get(gw.addr, "/").unwrap(), (200, "b".to_owned()));

    gw.signal("-TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(10)).code(), Some(0));
}

#[test]
fn run_exit_codes() {
    // 2: bad config.
    let dir = fixtures().join("bad");
    let (status, _, stderr) = meshgate(&dir, &["run", "--config", "unknown-service.yaml"]);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("unknown-service.yaml:12:14: routes[1].service"), "{stderr}");

    // 1: the port is taken by another process's socket.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let a = tiny("a");
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("gateway.yaml");
    std::fs::write(&path, config(port, a.addr, false)).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&path)
        .env("RUST_LOG", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("meshgate kept running although its port is taken");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    child.stderr.take().unwrap().read_to_string(&mut stderr).unwrap();
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&port.to_string()), "the error names the address: {stderr}");
    drop(taken);
}
