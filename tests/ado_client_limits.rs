//! The Azure DevOps client's bounds against the test kit's simulator: every form of rate-limit timing it
//! serves (issue 13, defect 4) and answers too large to hold (defect 7).

use std::time::{Duration, Instant};

use lockstep::ado::{AdoClient, AdoError, ClientConfig, RATE_LIMIT_MAX_HOLD};
use lockstep::secret::SecretString;
use lockstep_testkit::ado::{AdoSimulator, RetryAfter, RunResult};

const PAT: &str = "limits-pat-0123456789";

async fn simulator() -> (AdoSimulator, String) {
    let sim = AdoSimulator::start().await.unwrap();
    sim.add_token("contoso", PAT);
    sim.add_project("contoso", "Shop");
    sim.add_definition("contoso", "Shop", 42, "base-ci");
    let sha = "1111111111111111111111111111111111111111";
    let id = sim.queue_run("contoso", "Shop", 42, "main", sha);
    sim.start_run(id);
    sim.complete_run(id, RunResult::Succeeded);
    let org = sim.org_url("contoso");
    (sim, org)
}

fn client() -> AdoClient {
    AdoClient::new(ClientConfig {
        max_retries: 0,
        ..ClientConfig::default()
    })
    .unwrap()
}

async fn list(c: &AdoClient, org: &str) -> Result<usize, AdoError> {
    c.list_builds(org, "Shop", 42, "main", 10, &SecretString::new(PAT))
        .await
        .map(|b| b.len())
}

fn hold_of(err: &AdoError) -> Duration {
    match err {
        AdoError::RateLimited { retry_after, .. } => *retry_after,
        other => panic!("expected RateLimited, got {other:?}"),
    }
}

/// The hold a 429 sets follows the server's timing in every form, not lockstep's own 10 s backoff.
#[tokio::test]
async fn retry_after_in_every_form_sets_the_hold() {
    for (what, form, low, high) in [
        ("seconds", RetryAfter::seconds(45), 44.0, 45.0),
        // IMF-fixdate has whole seconds, so the wait computed from it may be up to 1 s shorter.
        ("HTTP date", RetryAfter::http_date(45), 43.0, 45.0),
        (
            "X-RateLimit-Reset only",
            RetryAfter::reset_only(45),
            43.0,
            45.0,
        ),
    ] {
        let (sim, org) = simulator().await;
        let c = client();
        sim.rate_limit_next_with(1, form);
        let hold = hold_of(&list(&c, &org).await.unwrap_err()).as_secs_f64();
        assert!(
            (low..=high).contains(&hold),
            "{what}: hold {hold:.1}s, expected {low}..={high}"
        );
        // The hold is honoured: the next call is answered without a request.
        let before = sim.count_endpoint("builds.list");
        let again = hold_of(&list(&c, &org).await.unwrap_err()).as_secs_f64();
        assert!(again <= hold && again > low - 2.0, "{what}: {again}");
        assert_eq!(sim.count_endpoint("builds.list"), before, "{what}");
    }
}

/// A date (or reset) far in the future is capped at RATE_LIMIT_MAX_HOLD (5 minutes), as documented.
#[tokio::test]
async fn a_far_future_date_is_capped() {
    for form in [
        RetryAfter::http_date(30 * 24 * 3600),
        RetryAfter::reset_only(30 * 24 * 3600),
        RetryAfter::seconds(30 * 24 * 3600),
    ] {
        let (sim, org) = simulator().await;
        sim.rate_limit_next_with(1, form);
        let hold = hold_of(&list(&client(), &org).await.unwrap_err());
        assert!(
            hold <= RATE_LIMIT_MAX_HOLD && hold >= RATE_LIMIT_MAX_HOLD - Duration::from_secs(2),
            "{form:?}: {hold:?}"
        );
    }
}

/// A date already past holds nothing beyond the answer itself.
#[tokio::test]
async fn a_past_http_date_is_no_hold() {
    let (sim, org) = simulator().await;
    sim.rate_limit_next_with(1, RetryAfter::http_date(0));
    let c = client();
    let hold = hold_of(&list(&c, &org).await.unwrap_err());
    assert!(hold <= Duration::from_secs(1), "{hold:?}");
    tokio::time::sleep(hold + Duration::from_millis(50)).await;
    assert_eq!(list(&c, &org).await.unwrap(), 1);
}

/// An answer over the cap is a transient error, in both transfer forms, and the client reads no more than
/// the cap: the next call (the simulator answers normally again) succeeds.
#[tokio::test]
async fn an_oversized_answer_is_transient_and_bounded() {
    let (sim, org) = simulator().await;
    let c = AdoClient::new(ClientConfig {
        max_retries: 0,
        max_response_bytes: 1024 * 1024,
        ..ClientConfig::default()
    })
    .unwrap();
    for declare_length in [true, false] {
        sim.oversize_next(1, 8, declare_length);
        let started = Instant::now();
        let err = list(&c, &org).await.unwrap_err();
        assert!(
            matches!(&err, AdoError::InvalidResponse { detail, .. } if detail.contains("larger than 1 MiB")),
            "declared length {declare_length}: {err:?}"
        );
        assert!(err.is_transient(), "the last verdict must stand");
        assert!(!err.to_string().contains(PAT));
        eprintln!(
            "oversized answer (Content-Length: {declare_length}) refused in {:?}",
            started.elapsed()
        );
        assert_eq!(list(&c, &org).await.unwrap(), 1);
    }
    // Below the cap an answer padded by the simulator is read as usual.
    sim.oversize_next(1, 0, false);
    assert_eq!(list(&c, &org).await.unwrap(), 1);
}

/// The default cap is far above a real answer: a 2 MiB answer (about 80 times the largest recorded Builds
/// List) is read.
#[tokio::test]
async fn the_default_cap_reads_large_real_answers() {
    let (sim, org) = simulator().await;
    sim.oversize_next(1, 2, false);
    assert_eq!(list(&client(), &org).await.unwrap(), 1);
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// Measures how much a 50 MiB answer raises the process's peak memory (VmHWM). Run alone, so no other
/// test's allocations count: `cargo test --test ado_client_limits -- --ignored --exact
/// peak_memory_of_a_50_mib_answer --nocapture`.
#[tokio::test(flavor = "current_thread")]
#[ignore = "a measurement; run alone"]
async fn peak_memory_of_a_50_mib_answer() {
    let (sim, org) = simulator().await;
    let c = client();
    assert_eq!(list(&c, &org).await.unwrap(), 1);
    let before = peak_rss_kib();
    sim.oversize_next(1, 50, false);
    let outcome = list(&c, &org).await;
    let after = peak_rss_kib();
    eprintln!(
        "50 MiB answer: {outcome:?}; peak RSS {before} KiB -> {after} KiB (+{} KiB)",
        after - before
    );
}
