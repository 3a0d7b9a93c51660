//! The edge router in front of a real control plane and real tenant processes.

use std::time::Duration;

use molecule_router::host::BaseDomain;
use molecule_router::{Router, RouterConfig};
use reqwest::StatusCode;
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::support::TestCp;

/// How many times the CP answered `GET /cp/orgs/{slug}/instance`, from its own `/metrics`.
async fn cp_lookups(cp: &TestCp) -> u64 {
    let text = cp
        .http
        .get(format!("{}/metrics", cp.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| l.starts_with("http_requests_total{route=\"/cp/orgs/{slug}/instance\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread")]
async fn routes_slug_hosts_to_real_tenants_with_one_lookup_per_burst() {
    let cp = TestCp::start().await;
    cp.create_running_org("acme").await;
    cp.create_running_org("bravo").await;
    let stop = CancellationToken::new();
    let router = Router::build(
        RouterConfig::new(
            "127.0.0.1:0".parse().unwrap(),
            BaseDomain::parse("localhost").unwrap(),
            cp.url(),
        ),
        stop.clone(),
    )
    .await
    .unwrap();
    let addr = router.addr();
    tokio::spawn(router.run_until_stopped());
    let http = reqwest::Client::new();
    let get = |host: &'static str| {
        http.get(format!("http://{addr}/health"))
            .header("host", host)
            .send()
    };

    let before = cp_lookups(&cp).await;
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..100 {
        burst.spawn(get("acme.localhost:8080"));
    }
    for resp in burst.join_all().await {
        let resp = resp.unwrap();
        assert_eq!(resp.status(), StatusCode::OK);
        assert_eq!(resp.json::<Value>().await.unwrap()["status"], "ok");
    }
    assert_eq!(
        cp_lookups(&cp).await - before,
        1,
        "100 first requests, 1 lookup"
    );

    let resp = get("bravo.localhost").await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    for host in [
        "nosuchorg.localhost",
        "x.acme.localhost",
        "acme.example.com",
    ] {
        assert_eq!(
            get(host).await.unwrap().status(),
            StatusCode::NOT_FOUND,
            "{host}"
        );
    }

    // With the CP stopped, the orgs the router knows keep answering.
    let mut cp = cp;
    cp.stop_cp().await;
    tokio::time::sleep(Duration::from_millis(5100)).await;
    for host in ["acme.localhost", "bravo.localhost"] {
        assert_eq!(get(host).await.unwrap().status(), StatusCode::OK, "{host}");
    }
    stop.cancel();
    cp.stop().await;
}
