//! `/metrics`: the Prometheus recorder and what the gateways record. Alone
//! in its own test binary because the recorder (and so every count) is
//! per process.

// Helpers outside #[test] fns unwrap too: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod gateway_common;

use gateway_common::{serve_http, serve_resp, spawn_fake};
use reqwest::{Client, StatusCode};
use std::io::{Read, Write};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_requests_by_protocol_op_and_result() {
    let fake = spawn_fake();
    let srv = serve_http(fake.handle.clone()).await;
    let resp = serve_resp(fake.handle.clone()).await;
    let base = format!("http://{}", srv.addr);
    let c = Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // HTTP traffic to count: two good writes, one read, one unavailable read.
    for _ in 0..2 {
        c.put(format!("{base}/kv/m"))
            .body("v")
            .send()
            .await
            .unwrap();
    }
    c.get(format!("{base}/kv/m")).send().await.unwrap();
    c.get(format!("{base}/kv/unavailable"))
        .send()
        .await
        .unwrap();

    let r = c.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    let text = r.text().await.unwrap();
    let has = |needle: &str| text.lines().any(|l| l.starts_with(needle));
    assert!(
        has(r#"cassio_gateway_requests_total{protocol="http",op="put",result="ok"} 2"#),
        "{text}"
    );
    assert!(
        has(r#"cassio_gateway_requests_total{protocol="http",op="get",result="unavailable"} 1"#),
        "{text}"
    );
    assert!(
        has(
            r#"cassio_gateway_request_duration_seconds_bucket{protocol="http",op="get",le="+Inf"} 2"#
        ),
        "{text}"
    );
    // The recorder is per process: installing again gives the same one.
    let a = cassio_node::gateway::install_metrics().unwrap();
    let b = cassio_node::gateway::install_metrics().unwrap();
    assert!(a.render().contains("cassio_gateway_requests_total"));
    assert!(b.render().contains("cassio_gateway_requests_total"));
    // RESP traffic: a pipelined SET, GET and a timed-out GET, over a raw socket.
    let addr = resp.addr;
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.write_all(b"SET r 1\r\nGET r\r\nGET timeout-x\r\nQUIT\r\n")
            .unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).unwrap();
        assert!(out.starts_with(b"+OK\r\n$1\r\n1\r\n-TIMEOUT"), "{out:?}");
    })
    .await
    .unwrap();
    let text = c
        .get(format!("{base}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for needle in [
        r#"cassio_gateway_requests_total{protocol="resp",op="put",result="ok"} 1"#,
        r#"cassio_gateway_requests_total{protocol="resp",op="get",result="ok"} 1"#,
        r#"cassio_gateway_requests_total{protocol="resp",op="get",result="timeout"} 1"#,
        r#"cassio_gateway_request_duration_seconds_count{protocol="resp",op="get"} 2"#,
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(needle)),
            "missing {needle} in\n{text}"
        );
    }
    resp.shutdown().await;
    srv.shutdown().await;
}
