//! `cargo run --example demo` (the README's first command) runs to completion and shows every transition.
//!
//! Runs the example through cargo, as a user would, with the controller's logs at `info` so the check that
//! no secret reaches the output covers the logs too. The deadline is generous: the first run may have to
//! build the example.

use std::io::Read;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// Build (when the example is not built yet) plus the scenario, on a loaded two-core machine.
const DEADLINE: Duration = Duration::from_secs(900);
/// The demo's PAT and webhook password (examples/demo.rs); neither may appear in its output.
const SECRETS: [&str; 2] = ["demo-pat-3c9f2a71", "demo-hook-password-81d4"];

fn read_all(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    })
}

#[test]
fn demo_shows_every_transition_and_exits_zero() {
    let mut child = Command::new(env!("CARGO"))
        .args(["run", "--example", "demo", "--offline", "-q"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("cargo runs");
    let stdout = read_all(child.stdout.take().expect("piped stdout"));
    let stderr = read_all(child.stderr.take().expect("piped stderr"));

    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the demo") {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the demo did not finish within {}s\nstdout:\n{}\nstderr:\n{}",
                DEADLINE.as_secs(),
                stdout.join().unwrap_or_default(),
                stderr.join().unwrap_or_default()
            );
        }
        thread::sleep(Duration::from_millis(200));
    };
    let stdout = stdout.join().expect("stdout reader");
    let stderr = stderr.join().expect("stderr reader");
    assert!(
        status.success(),
        "the demo failed ({status})\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );

    // The table: the gate's rows in the order `kubectl get -w` printed them (the first one, before the
    // first reconcile, has no reason yet).
    let reasons: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("orders-base "))
        .filter_map(|line| line.split_whitespace().nth(2))
        .filter(|cell| cell.starts_with("Run") || *cell == "Succeeded")
        .collect();
    assert_eq!(
        reasons,
        [
            "RunQueued",
            "RunInProgress",
            "RunFailed",
            "RunQueued",
            "RunInProgress",
            "Succeeded"
        ],
        "the gate's transitions, in order\nstdout:\n{stdout}"
    );
    let last_row = stdout
        .lines()
        .rfind(|line| line.starts_with("orders-base "))
        .unwrap_or_default();
    assert_eq!(
        last_row.split_whitespace().nth(1),
        Some("True"),
        "the gate ends Ready\nstdout:\n{stdout}"
    );
    assert!(
        stdout.contains("^ by webhook:"),
        "the re-run reached the gate by webhook\nstdout:\n{stdout}"
    );
    for reason in ["GateWaiting", "GateBlocked", "GateOpened"] {
        assert!(
            stdout.contains(reason),
            "Event {reason} is listed\nstdout:\n{stdout}"
        );
    }
    // The ServiceTrace act: `kubectl get strace -w` rows ending in both environments, then the history.
    let progress: Vec<&str> = stdout
        .lines()
        .filter(|line| line.starts_with("orders "))
        .collect();
    assert!(
        progress.iter().any(|l| l.contains("dev ✓ prod …")),
        "dev before prod\nstdout:\n{stdout}"
    );
    let last = progress.last().copied().unwrap_or_default();
    assert!(
        last.contains("dev ✓ prod ✓") && last.contains("True") && last.contains("InSync"),
        "the trace ends in both environments, Ready\nstdout:\n{stdout}"
    );
    let history = stdout
        .split("History (status.history, newest first):")
        .nth(1)
        .unwrap_or_default();
    assert!(
        history.contains("Jamal Hartnett")
            && history.contains("#42")
            && history.contains("4d4d4d4")
            && history.contains("a1b2c3d"),
        "the history row names the author, PR, HLD and manifest commits\nstdout:\n{stdout}"
    );
    assert!(
        history.contains("linked by commitMessage"),
        "the path says how each step was tied to the build\nstdout:\n{stdout}"
    );
    assert!(stdout.contains("kubeconfig"), "prints the kubeconfig path");
    for secret in SECRETS {
        assert!(
            !stdout.contains(secret) && !stderr.contains(secret),
            "a secret leaked into the demo's output or the controller's logs"
        );
    }
}
