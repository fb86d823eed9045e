//! The real `lockstep run` binary and its webhook credentials (issue 13, defects 11 and 13): the password
//! it generates into the chart's Secret (`--webhook-password-secret`), shared by replicas that start
//! together, never logged even at `RUST_LOG=trace`, and a rotation of the mounted file picked up without a
//! restart and without a moment where neither password works.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::{lockstep_command, Harness};
use serde_json::Value;
use tokio::process::Child;

const PAT: &str = "cred-pat-1234567890";
const NAMESPACE: &str = "lockstep-system";
const SECRET: &str = "lockstep-webhook-auth";
const USERNAME: &str = "azure-devops";

struct Replica {
    child: Child,
    log: PathBuf,
    webhook: String,
}

impl Replica {
    async fn start(h: &Harness, name: &str, password_file: &Path) -> Replica {
        Self::start_with(
            h,
            name,
            password_file,
            &["--webhook-password-secret", SECRET],
        )
        .await
    }

    async fn start_with(h: &Harness, name: &str, password_file: &Path, extra: &[&str]) -> Replica {
        let log = h.dir.path().join(format!("{name}.log"));
        let child = lockstep_command(&h.kubeconfig)
            .args([
                "--log-format",
                "json",
                "--webhook-password-file",
                password_file.to_str().unwrap(),
            ])
            .args(extra)
            // What the chart passes: the username from the Secret as an environment variable, the
            // namespace from the downward API.
            .env("LOCKSTEP_WEBHOOK_USERNAME", USERNAME)
            .env("POD_NAMESPACE", NAMESPACE)
            .env("RUST_LOG", "trace")
            .env_remove("POD_NAME")
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("lockstep starts");
        let mut me = Replica {
            child,
            log,
            webhook: String::new(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let found = me.log_lines().iter().find_map(|l| {
                (l["message"] == "webhook receiver listening")
                    .then(|| l["local_addr"].as_str().map(str::to_string))?
            });
            if let Some(addr) = found {
                me.webhook = addr;
                return me;
            }
            if let Ok(Some(status)) = me.child.try_wait() {
                panic!("{name} exited ({status}):\n{}", me.log_text());
            }
            assert!(
                Instant::now() < deadline,
                "{name} never listened:\n{}",
                me.log_text()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn log_lines(&self) -> Vec<Value> {
        self.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The status a delivery with these Basic credentials gets (an event type lockstep ignores, so only
    /// authentication decides between 200 and 401).
    async fn deliver(&self, password: &str) -> u16 {
        reqwest::Client::new()
            .post(format!("http://{}/hooks/azure-devops", self.webhook))
            .basic_auth(USERNAME, Some(password))
            .header("content-type", "application/json")
            .body(r#"{"eventType":"workitem.updated","id":"w-1","resource":{}}"#)
            .send()
            .await
            .expect("the receiver answers")
            .status()
            .as_u16()
    }
}

async fn stored_password(h: &Harness) -> String {
    let out = h
        .kubectl(&["-n", NAMESPACE, "get", "secret", SECRET, "-o", "json"])
        .await;
    let secret: Value = serde_json::from_str(&out).unwrap();
    let encoded = secret["data"]["password"]
        .as_str()
        .expect("lockstep stored a password");
    String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap(),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_password_rotation_and_no_leak_at_trace() {
    let h = Harness::start(PAT, &[]).await;
    let username_b64 = base64::engine::general_purpose::STANDARD.encode(USERNAME);
    // The Secret as the chart renders it: the username, no password.
    h.apply(&format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NAMESPACE}}}\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {SECRET}, namespace: {NAMESPACE}}}\ndata: {{username: {username_b64}}}\n"
    ))
    .await;
    // The mount is optional in the chart: the file does not exist until the kubelet syncs the Secret.
    let mount = h.dir.path().join("webhook-auth");
    std::fs::create_dir(&mount).unwrap();
    let password_file = mount.join("password");

    // Two replicas starting together race to generate the password.
    let (mut a, mut b) = tokio::join!(
        Replica::start(&h, "a", &password_file),
        Replica::start(&h, "b", &password_file)
    );
    let generated = stored_password(&h).await;
    assert!(generated.len() >= 32, "{} characters", generated.len());
    for replica in [&a, &b] {
        assert_eq!(
            replica.deliver(&generated).await,
            200,
            "the generated password works at once"
        );
        assert_eq!(replica.deliver("wrong-password").await, 401);
    }

    // The kubelet syncs the Secret, then someone rotates it: the file changes atomically, and each
    // replica moves to the new password without a restart; at every moment one of the two works.
    std::fs::write(mount.join(".tmp"), format!("{generated}\n")).unwrap();
    std::fs::rename(mount.join(".tmp"), &password_file).unwrap();
    let rotated = "rotated-password-0123456789abcdef";
    std::fs::write(mount.join(".tmp"), rotated).unwrap();
    std::fs::rename(mount.join(".tmp"), &password_file).unwrap();
    let changed = Instant::now();
    for replica in [&a, &b] {
        loop {
            let (old, new) = (
                replica.deliver(&generated).await,
                replica.deliver(rotated).await,
            );
            assert!(
                old == 200 || new == 200,
                "neither password works: old {old}, new {new}"
            );
            if new == 200 {
                // The grace: the previous password still works right after the switch.
                assert_eq!(
                    old, 200,
                    "the previous password is accepted during the grace"
                );
                break;
            }
            assert!(
                changed.elapsed() < Duration::from_secs(30),
                "the rotation was never picked up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "both replicas accepted the rotated password {:?} after the file changed",
        changed.elapsed()
    );

    a.child.kill().await.unwrap();
    b.child.kill().await.unwrap();
    let encoded = base64::engine::general_purpose::STANDARD.encode(&generated);
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("{USERNAME}:{generated}"));
    for replica in [&a, &b] {
        let log = replica.log_text();
        assert!(
            log.len() > 10_000,
            "trace logging was on ({} bytes)",
            log.len()
        );
        for (what, needle) in [
            ("password", generated.as_str()),
            ("base64 password", encoded.as_str()),
            ("Basic credentials", basic.as_str()),
            ("rotated password", rotated),
        ] {
            assert!(!log.contains(needle), "the {what} is in the log");
        }
    }
}

/// A password file laid out as the kubelet mounts a Secret (`password -> ..data/password`, `..data ->
/// ..<version>`) and rotated the way it updates one: a new version directory, then an atomic rename of a
/// new `..data` symlink. The running process accepts the new password without a restart, and at every
/// moment the old or the new one works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_mounted_secret_is_picked_up_without_a_restart() {
    let h = Harness::start(PAT, &[]).await;
    let mount = h.dir.path().join("mounted");
    std::fs::create_dir(&mount).unwrap();
    let version = |n: u32, password: &str| {
        let dir = mount.join(format!("..2026_11_30_{n}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("password"), password).unwrap();
        let tmp = mount.join("..data_tmp");
        std::os::unix::fs::symlink(dir.file_name().unwrap(), &tmp).unwrap();
        std::fs::rename(&tmp, mount.join("..data")).unwrap();
    };
    version(1, "first-password-abcdef\n");
    std::os::unix::fs::symlink("..data/password", mount.join("password")).unwrap();
    let mut replica = Replica::start_with(
        &h,
        "r",
        &mount.join("password"),
        &["--webhook-username", USERNAME],
    )
    .await;
    assert_eq!(replica.deliver("first-password-abcdef").await, 200);
    version(2, "second-password-123456\n");
    let changed = Instant::now();
    loop {
        let old = replica.deliver("first-password-abcdef").await;
        let new = replica.deliver("second-password-123456").await;
        assert!(
            old == 200 || new == 200,
            "neither password works: old {old}, new {new}"
        );
        if new == 200 {
            break;
        }
        assert!(
            changed.elapsed() < Duration::from_secs(30),
            "the rotated password was not accepted within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "rotated password accepted {:?} after the swap",
        changed.elapsed()
    );
    replica.child.kill().await.unwrap();
}
