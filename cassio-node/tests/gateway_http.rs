//! The HTTP gateway against a fake node: every route and error code.

// Helpers outside #[test] fns unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod gateway_common;

use bytes::Bytes;
use cassio_core::{ClientOp, Consistency};
use gateway_common::{dead_handle, serve_http, spawn_fake, status};
use reqwest::{Client, StatusCode};
use serde_json::Value;
use std::time::Duration;

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn json_error(resp: reqwest::Response, status: StatusCode, code: &str) -> Value {
    assert_eq!(resp.status(), status);
    assert!(resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/json")));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_routes_store_read_and_delete_bytes() {
    let fake = spawn_fake();
    let srv = serve_http(fake.handle.clone()).await;
    let base = format!("http://{}", srv.addr);
    let c = client();

    // The README's example: the body bytes become the value.
    let r = c
        .post(format!("{base}/kv/user1"))
        .body(r#"{"name": "Jack"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["ok"], true);
    assert!(body["timestamp"]["micros"].as_u64().is_some(), "{body}");

    let r = c.get(format!("{base}/kv/user1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.headers()["content-type"], "application/octet-stream");
    assert_eq!(r.bytes().await.unwrap(), r#"{"name": "Jack"}"#);

    // PUT overwrites; binary bodies and percent-encoded keys with slashes
    // (a key's slash travels as %2F: an unencoded one starts a column).
    let bin: Vec<u8> = (0..=255u8).collect();
    let r = c
        .put(format!("{base}/kv/dir%2Fa%20b%00"))
        .body(bin.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(
        fake.data
            .lock()
            .unwrap()
            .get(&Bytes::from_static(b"dir/a b\0")),
        Some(&Bytes::from(bin.clone()))
    );
    let r = c
        .get(format!("{base}/kv/dir%2Fa%20b%00"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), bin);

    let r = c.delete(format!("{base}/kv/user1")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c.get(format!("{base}/kv/user1")).send().await.unwrap();
    json_error(r, StatusCode::NOT_FOUND, "not_found").await;
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consistency_query_parameter() {
    let fake = spawn_fake();
    let srv = serve_http(fake.handle.clone()).await;
    let base = format!("http://{}", srv.addr);
    let c = client();
    let r = c
        .put(format!("{base}/kv/k?consistency=one"))
        .body("v")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(format!("{base}/kv/k?consistency=QUORUM"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let r = c
        .get(format!("{base}/kv/k?other=ignored"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // The fake answers ALL with Unavailable, as one live node of three would.
    let r = c
        .delete(format!("{base}/kv/k?consistency=all"))
        .send()
        .await
        .unwrap();
    let body = json_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("3 replicas needed"),
        "{body}"
    );
    let r = c
        .get(format!("{base}/kv/k?consistency=most"))
        .send()
        .await
        .unwrap();
    let body = json_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    assert!(
        body["message"].as_str().unwrap().contains("\"most\""),
        "{body}"
    );

    let levels: Vec<(&'static str, Option<Consistency>)> = fake
        .seen
        .lock()
        .unwrap()
        .requests
        .iter()
        .map(|r| {
            let op = match r.op {
                ClientOp::Get { .. } | ClientOp::GetEntry { .. } => "get",
                ClientOp::Put { .. } | ClientOp::PutExpiring { .. } => "put",
                ClientOp::Delete { .. } => "delete",
                ClientOp::Scan { .. } => "scan",
                _ => "cell",
            };
            (op, r.consistency)
        })
        .collect();
    assert_eq!(
        levels,
        vec![
            ("put", Some(Consistency::One)),
            ("get", Some(Consistency::Quorum)),
            ("get", None),
            ("delete", Some(Consistency::All)),
        ]
    );
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_error_code() {
    let fake = spawn_fake();
    let srv = serve_http(fake.handle.clone()).await;
    let base = format!("http://{}", srv.addr);
    let c = client();
    let r = c
        .get(format!("{base}/kv/unavailable"))
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::SERVICE_UNAVAILABLE, "unavailable").await;
    let r = c
        .put(format!("{base}/kv/timeout"))
        .body("x")
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::GATEWAY_TIMEOUT, "timeout").await;
    let r = c
        .put(format!("{base}/kv/replicafail"))
        .body("x")
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::INTERNAL_SERVER_ERROR, "replica_failure").await;
    let r = c
        .put(format!("{base}/kv/badrequest"))
        .body("x")
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    let r = c.get(format!("{base}/kv/missing")).send().await.unwrap();
    json_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = c.get(format!("{base}/nope")).send().await.unwrap();
    json_error(r, StatusCode::NOT_FOUND, "not_found").await;
    let r = c
        .patch(format!("{base}/kv/k"))
        .body("x")
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;

    let too_big = vec![7u8; cassio_node::gateway::MAX_VALUE_BYTES + 1];
    let r = c
        .put(format!("{base}/kv/big"))
        .body(too_big)
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::PAYLOAD_TOO_LARGE, "too_large").await;
    let just_fits = vec![7u8; cassio_node::gateway::MAX_VALUE_BYTES];
    let r = c
        .put(format!("{base}/kv/big"))
        .body(just_fits)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    srv.shutdown().await;

    // A node whose driver has stopped.
    let srv = serve_http(dead_handle()).await;
    let base = format!("http://{}", srv.addr);
    let r = c.get(format!("{base}/kv/k")).send().await.unwrap();
    json_error(r, StatusCode::SERVICE_UNAVAILABLE, "not_running").await;
    let r = c.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "down");
    let r = c.get(format!("{base}/status")).send().await.unwrap();
    json_error(r, StatusCode::SERVICE_UNAVAILABLE, "not_running").await;
    let r = c.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["error"], "not_running");
    srv.shutdown().await;
}

/// `/ready` is what a Kubernetes readiness probe or a load balancer asks:
/// 200 only for a node that coordinates requests and is `Normal`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_only_when_coordinating_and_normal() {
    let fake = spawn_fake();
    let srv = serve_http(fake.handle.clone()).await;
    let base = format!("http://{}", srv.addr);
    let c = client();
    let r = c.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["state"], "Normal");
    for (state, ready) in [
        ("Syncing", true),
        ("Joining", true),
        ("Leaving", true),
        ("Left", true),
        // Normal but still waiting (a restart not yet heard from a
        // majority, or a view that has not settled): answers `joining`.
        ("Normal", false),
    ] {
        {
            let mut st = fake.status.lock().unwrap();
            st.state = state.into();
            st.ready = ready;
        }
        let r = c.get(format!("{base}/ready")).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{state} {ready}"
        );
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["status"], "not_ready");
        assert_eq!(body["state"], state);
        assert_eq!(body["ready"], ready);
        // Liveness is another question: the node runs.
        let r = c.get(format!("{base}/health")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    }
    fake.status.lock().unwrap().state = "Normal".into();
    fake.status.lock().unwrap().ready = true;
    let r = c.get(format!("{base}/ready")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_status() {
    let fake = spawn_fake();
    let srv = serve_http(fake.handle.clone()).await;
    let base = format!("http://{}", srv.addr);
    let c = client();
    let r = c.get(format!("{base}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "ok");

    let r = c.get(format!("{base}/status")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let got: cassio_node::ClusterStatus = r.json().await.unwrap();
    assert_eq!(got, status());

    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_stops_accepting() {
    let fake = spawn_fake();
    let srv = serve_http(fake.handle.clone()).await;
    let addr = srv.addr;
    let c = client();
    let r = c.get(format!("http://{addr}/health")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    drop(c);
    srv.shutdown().await;
    let c = client();
    assert!(c.get(format!("http://{addr}/health")).send().await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_reports_the_nodes_state_repair_and_hints() {
    let fake = spawn_fake();
    {
        let mut st = fake.status.lock().unwrap();
        st.state = "Syncing".into();
        st.members[0].state = "Syncing".into();
        st.members[0].repaired_through = 1_700_000_000_000_000;
        st.repair.rounds_completed = 3;
        st.repair.last_round_completed = 1_700_000_100_000_000;
        st.repair.round = Some(cassio_node::handle::RoundProgress {
            pairs_done: 1,
            pairs_total: 4,
        });
        st.hints.stored = 9;
        st.hints.pending = vec![cassio_node::handle::PendingHints {
            node_id: 2,
            bytes: 4096,
        }];
    }
    let srv = serve_http(fake.handle.clone()).await;
    let base = format!("http://{}", srv.addr);
    let body: Value = client()
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["state"], "Syncing", "{body}");
    assert_eq!(body["members"][0]["state"], "Syncing", "{body}");
    assert_eq!(
        body["members"][0]["repaired_through"], 1_700_000_000_000_000u64,
        "{body}"
    );
    assert_eq!(body["repair"]["rounds_completed"], 3, "{body}");
    assert_eq!(
        body["repair"]["last_round_completed"], 1_700_000_100_000_000u64,
        "{body}"
    );
    assert_eq!(body["repair"]["round"]["pairs_done"], 1, "{body}");
    assert_eq!(body["repair"]["round"]["pairs_total"], 4, "{body}");
    assert_eq!(body["hints"]["stored"], 9, "{body}");
    assert_eq!(body["hints"]["pending"][0]["node_id"], 2, "{body}");
    assert_eq!(body["hints"]["pending"][0]["bytes"], 4096, "{body}");
    // The node caught up: the next answer says so.
    fake.status.lock().unwrap().state = "Normal".into();
    let body: Value = client()
        .get(format!("{base}/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["state"], "Normal", "{body}");
    srv.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_repair_starts_a_round_and_refuses_unknown_targets() {
    let fake = spawn_fake();
    fake.status.lock().unwrap().repair.rounds_ended = 4;
    let srv = serve_http(fake.handle.clone()).await;
    let base = format!("http://{}", srv.addr);
    let c = client();

    // Everything: 202 with the round to wait for and the repair figures.
    let r = c.post(format!("{base}/admin/repair")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["round"], 5, "{body}");
    assert_eq!(body["repair"]["rounds_ended"], 4, "{body}");
    assert!(
        body["keyspace"].is_null() && body["node"].is_null(),
        "{body}"
    );

    // One keyspace with one peer, named by its listen address.
    let r = c
        .post(format!(
            "{base}/admin/repair?keyspace=default&node=127.0.0.1:7000"
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["keyspace"], "default", "{body}");
    assert_eq!(body["node"], "127.0.0.1:7000", "{body}");
    assert_eq!(body["node_id"], 1, "{body}");

    // Refusals: the node's (unknown keyspace or member), and the gateway's
    // own (an address that does not parse, an empty keyspace).
    for (query, what) in [
        ("keyspace=nope", "unknown keyspace"),
        ("node=127.0.0.1:9", "no member"),
        ("node=somewhere", "IP:PORT"),
        ("keyspace=", "must not be empty"),
    ] {
        let r = c
            .post(format!("{base}/admin/repair?{query}"))
            .send()
            .await
            .unwrap();
        let body = json_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
        assert!(
            body["message"].as_str().unwrap().contains(what),
            "{query}: {body}"
        );
    }
    let r = c.get(format!("{base}/admin/repair")).send().await.unwrap();
    json_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;

    // The node saw exactly the requests the gateway let through.
    let seen: Vec<_> = fake.seen.lock().unwrap().repairs.clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    assert_eq!(seen[0], cassio_node::RepairRequest::default());
    assert_eq!(seen[1].keyspace.as_deref(), Some("default"));
    assert_eq!(seen[1].node, Some("127.0.0.1:7000".parse().unwrap()));
    srv.shutdown().await;

    let srv = serve_http(dead_handle()).await;
    let r = c
        .post(format!("http://{}/admin/repair", srv.addr))
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::SERVICE_UNAVAILABLE, "not_running").await;
    srv.shutdown().await;
}

/// The ring admin routes map the node's refusals onto 400/409 with the
/// refusal's text, and pass a node id (as `cassio status` or the logs
/// print it) through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_ring_routes_answer_202_400_and_409() {
    let fake = spawn_fake();
    let srv = serve_http(fake.handle.clone()).await;
    let base = format!("http://{}", srv.addr);
    let c = client();
    for id in ["2", "n2"] {
        let r = c
            .post(format!("{base}/admin/remove?node={id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::ACCEPTED);
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["node_id"], 2, "{body}");
        assert_eq!(body["requested_by"], 1, "{body}");
    }
    let r = c
        .post(format!("{base}/admin/remove?node=1"))
        .send()
        .await
        .unwrap();
    let body = json_error(r, StatusCode::CONFLICT, "alive").await;
    assert!(
        body["message"].as_str().unwrap().contains("n1 is alive"),
        "{body}"
    );
    let r = c
        .post(format!("{base}/admin/remove?node=9"))
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::BAD_REQUEST, "unknown_node").await;
    for query in ["", "?node=", "?node=abc", "?node=0"] {
        let r = c
            .post(format!("{base}/admin/remove{query}"))
            .send()
            .await
            .unwrap();
        json_error(r, StatusCode::BAD_REQUEST, "bad_request").await;
    }
    let r = c
        .post(format!("{base}/admin/decommission"))
        .send()
        .await
        .unwrap();
    let body = json_error(r, StatusCode::CONFLICT, "too_few_nodes").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("fewer than replication factor 3"),
        "{body}"
    );
    let r = c
        .get(format!("{base}/admin/decommission"))
        .send()
        .await
        .unwrap();
    json_error(r, StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed").await;
    srv.shutdown().await;
}

/// `GET /` serves the web console: one self-contained HTML page, with a
/// policy that lets the browser load nothing but the page itself and
/// `/status`, and that only reads (`fetch` of `/status`, no other method).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_serves_the_self_contained_console() {
    let fake = spawn_fake();
    let srv = serve_http(fake.handle.clone()).await;
    let base = format!("http://{}", srv.addr);
    let r = client().get(format!("{base}/")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let header = |name: &str| {
        r.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let csp = header("content-security-policy");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert!(csp.contains("connect-src 'self'"), "{csp}");
    let page = r.text().await.unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"), "{}", &page[..80]);
    assert!(page.contains("fetch(\"/status\""), "the page polls /status");
    assert!(page.contains("\"data-node\""), "rows carry data-node");
    // No external asset: no script, style sheet or image from anywhere, and
    // no URL but the SVG namespace (which is a name, never fetched).
    for banned in ["<script src", "<link", "<img", "@import", "url("] {
        assert!(!page.contains(banned), "the page references {banned:?}");
    }
    let urls: Vec<&str> = page
        .match_indices("http")
        .map(|(i, _)| &page[i..(i + 40).min(page.len())])
        .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
        .filter(|u| !u.starts_with("http://www.w3.org/2000/svg"))
        .collect();
    assert!(urls.is_empty(), "external URLs: {urls:?}");
    // Read-only: no request but the GET of /status.
    for write in ["method:", "POST", "PUT", "DELETE", "/kv/", "/admin"] {
        assert!(!page.contains(write), "the page contains {write:?}");
    }
    // The fake node saw no request at all.
    assert!(fake.seen.lock().unwrap().requests.is_empty());
    srv.shutdown().await;
}
