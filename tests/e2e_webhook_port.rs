//! The real `lockstep run` binary's listening ports under hostile connections (issue 13, defects 5 and 6):
//! connections that never finish their headers do not delay SIGTERM, and a body declared over the limit is
//! refused at once.

mod common;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::Harness;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Child;

const PAT: &str = "port-pat-1234567890";
const HOOK_TOKEN: &str = "hook-token-5e1d0a";

struct Running {
    child: Child,
    log: PathBuf,
}

impl Running {
    fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The address logged with `message`, under `field`.
    async fn logged_addr(&self, message: &str, field: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let found = self.log_lines().iter().find_map(|l| {
                (l["message"] == message).then(|| l[field].as_str().map(str::to_string))?
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(Instant::now() < deadline, "never logged {message:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn start(h: &Harness) -> (Running, String, String) {
    let token_file = h.dir.path().join("hook-token");
    std::fs::write(&token_file, format!("{HOOK_TOKEN}\n")).unwrap();
    let log = h.dir.path().join("lockstep.log");
    let child = h.spawn_lockstep(
        &log,
        &["--webhook-token-file", token_file.to_str().unwrap()],
    );
    let running = Running { child, log };
    let webhook = running
        .logged_addr("webhook receiver listening", "local_addr")
        .await;
    let metrics = running
        .logged_addr("metrics server listening", "addr")
        .await;
    (running, webhook, metrics)
}

/// Reads until the peer closes or `limit` passes.
async fn read_answer(stream: &mut TcpStream, limit: Duration) -> String {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    while let Ok(Ok(n)) = tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declared_oversized_body_is_refused_at_once() {
    let h = Harness::start(PAT, &[]).await;
    let (mut running, webhook, _) = start(&h).await;
    let mut stream = TcpStream::connect(&webhook).await.unwrap();
    let head = format!(
        "POST /hooks/azure-devops HTTP/1.1\r\nHost: lockstep\r\nX-Lockstep-Token: {HOOK_TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 10737418240\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b' '; 100]).await.unwrap();
    let started = Instant::now();
    let answer = read_answer(&mut stream, Duration::from_secs(15)).await;
    let took = started.elapsed();
    eprintln!(
        "declared 10 GiB body answered in {took:?}: {:?}",
        answer.lines().next()
    );
    assert!(
        answer.starts_with("HTTP/1.1 413"),
        "{answer:?} after {took:?}"
    );
    assert!(took < Duration::from_secs(5), "answered after {took:?}");
    running.child.kill().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_half_open_connections_exits_promptly() {
    let h = Harness::start(PAT, &[]).await;
    let (mut running, webhook, metrics) = start(&h).await;
    let mut open = Vec::new();
    for addr in [&webhook, &metrics] {
        for i in 0..10 {
            let mut stream = TcpStream::connect(addr).await.unwrap();
            if i % 2 == 0 {
                // Headers started and never finished.
                stream
                    .write_all(b"POST /hooks/azure-devops HTTP/1.1\r\nHost: lockstep\r\nX-Slow: ")
                    .await
                    .unwrap();
            }
            open.push(stream);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = running.child.id().expect("running").to_string();
    let started = Instant::now();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(Duration::from_secs(40), running.child.wait())
        .await
        .expect("lockstep exits after SIGTERM")
        .unwrap();
    let took = started.elapsed();
    eprintln!("lockstep exited {took:?} after SIGTERM with 20 idle/half-open connections open");
    assert!(status.success(), "{status:?}");
    // The shutdown grace is 20 s; nothing is in flight, so exiting takes well under that.
    assert!(took < Duration::from_secs(5), "SIGTERM took {took:?}");
    drop(open);
}
