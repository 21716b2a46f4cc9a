//! `GET /openapi.json` over loopback (a fake node): the document the HTTP
//! port serves is the OpenAPI 3 description of its routes, and every
//! documented path without parameters answers something other than 404
//! from the real router. (That the document and the router's routes match
//! is checked from the source in `src/gateway/http/openapi.rs`.)

#![allow(clippy::unwrap_used)]

mod gateway_common;

use gateway_common::{serve_http, spawn_fake};
use serde_json::Value;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_json_is_served_and_its_paths_are_routes() {
    let fake = spawn_fake();
    let srv = serve_http(fake.handle.clone()).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let base = format!("http://{}", srv.addr);
    let resp = http
        .get(format!("{base}/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()[reqwest::header::CONTENT_TYPE],
        "application/json"
    );
    let doc: Value = resp.json().await.unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let paths = doc["paths"].as_object().unwrap();
    assert!(paths.contains_key("/kv/{key}") && paths.contains_key("/openapi.json"));
    // Paths without parameters, with GET documented: the router has them.
    // (POSTs are admin actions; they are left to the source check.)
    let mut checked = 0;
    for (path, item) in paths {
        if path.contains('{') || item.get("get").is_none() {
            continue;
        }
        let status = http
            .get(format!("{base}{path}"))
            .send()
            .await
            .unwrap()
            .status();
        assert_ne!(status, 404, "GET {path} is documented but not routed");
        assert_ne!(status, 405, "GET {path} is documented but not allowed");
        checked += 1;
    }
    assert!(checked >= 6, "only {checked} paths checked");
    // And an undocumented path is the router's 404.
    let status = http
        .get(format!("{base}/nosuch"))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 404);
    srv.shutdown().await;
}
