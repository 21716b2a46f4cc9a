//! TCP-specific behaviour beyond the shared suite.

#![allow(clippy::unwrap_used)] // tests may unwrap

use bytes::Bytes;
use cassio_core::{Transport, TransportError};
use cassio_transport_tcp::{TcpConfig, TcpTransport};
use conformance::transport::{recv_within, run, send_ok};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

fn local() -> std::net::SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

/// A peer that stops reading makes `send` report `QueueFull` instead of
/// buffering without bound; once it reads again, sending resumes.
#[test]
fn a_peer_that_stops_reading_fills_the_queue_and_send_says_so() {
    run(async {
        let mut slow = TcpConfig::plaintext("c");
        slow.inbound_buffer_bytes = 1 << 20;
        let b = TcpTransport::bind(local(), slow).await.unwrap();
        let mut fast = TcpConfig::plaintext("c");
        fast.peer.queue_frames = 64;
        let a = TcpTransport::bind(local(), fast).await.unwrap();
        let frame = Bytes::from(vec![1u8; 64 * 1024]);
        let mut sent = 0usize;
        let full = loop {
            match timeout(
                Duration::from_secs(5),
                a.send(b.local_addr(), frame.clone()),
            )
            .await
            .expect("send hung")
            {
                Ok(()) => sent += 1,
                Err(e) => break e,
            }
            // 256 MiB would mean the queue is not bounded at all.
            assert!(sent < 4096, "queue never filled");
            if sent % 16 == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        assert!(
            matches!(full, TransportError::QueueFull { addr } if addr == b.local_addr()),
            "{full:?}"
        );
        for _ in 0..sent {
            recv_within(&b, "draining").await;
        }
        send_ok(&a, b.local_addr(), Bytes::from_static(b"resumed")).await;
        assert_eq!(recv_within(&b, "resumed").await.payload, &b"resumed"[..]);
        a.close().await;
        b.close().await;
    });
}

/// TCP keeps one stream per peer, so order holds across frame sizes too.
#[test]
fn order_holds_across_frame_sizes() {
    run(async {
        let a = TcpTransport::bind(local(), TcpConfig::plaintext("c"))
            .await
            .unwrap();
        let b = TcpTransport::bind(local(), TcpConfig::plaintext("c"))
            .await
            .unwrap();
        let sizes = [10usize, 3 << 20, 1, 200_000, 0, 70_000, 5];
        for (i, &len) in sizes.iter().enumerate() {
            send_ok(&a, b.local_addr(), Bytes::from(vec![i as u8; len])).await;
        }
        for (i, &len) in sizes.iter().enumerate() {
            let got = recv_within(&b, "mixed sizes").await.payload;
            assert_eq!(got.len(), len, "frame {i}");
            assert!(got.iter().all(|&x| x == i as u8), "frame {i} damaged");
        }
        a.close().await;
        b.close().await;
    });
}

/// A hostile length prefix after a valid handshake closes the connection
/// without the receiver allocating the announced size.
#[test]
fn hostile_length_prefix_closes_the_raw_connection() {
    run(async {
        let b = TcpTransport::bind(local(), TcpConfig::plaintext("c"))
            .await
            .unwrap();
        let mut s = tokio::net::TcpStream::connect(b.local_addr())
            .await
            .unwrap();
        let mut hello = b"CSIO\x01\x01".to_vec();
        hello.push(cassio_core::wire::WIRE_VERSION);
        hello.push(1);
        hello.push(b'c');
        s.write_all(&hello).await.unwrap();
        let mut reply = [0u8; 10];
        s.read_exact(&mut reply).await.unwrap();
        assert_eq!(&reply[..4], b"CSIO");
        assert_eq!(reply[9], 0, "handshake accepted");
        s.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
        let mut buf = [0u8; 16];
        let r = timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("not closed");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        assert_eq!(b.stats().inbound_bad_frames, 1);
        b.close().await;
    });
}

/// The node keeps serving while a raw socket connects and says nothing:
/// the silent connection is dropped after the handshake timeout.
#[test]
fn silent_connection_is_dropped_after_the_handshake_timeout() {
    run(async {
        let mut config = TcpConfig::plaintext("c");
        config.handshake_timeout = Duration::from_millis(200);
        let b = TcpTransport::bind(local(), config).await.unwrap();
        let a = TcpTransport::bind(local(), TcpConfig::plaintext("c"))
            .await
            .unwrap();
        let mut silent = tokio::net::TcpStream::connect(b.local_addr())
            .await
            .unwrap();
        send_ok(&a, b.local_addr(), Bytes::from_static(b"served")).await;
        assert_eq!(recv_within(&b, "served").await.payload, &b"served"[..]);
        let mut buf = [0u8; 1];
        let r = timeout(Duration::from_secs(5), silent.read(&mut buf))
            .await
            .expect("kept open");
        assert!(matches!(r, Ok(0) | Err(_)), "{r:?}");
        assert_eq!(b.stats().inbound_refused, 1);
        a.close().await;
        b.close().await;
    });
}
