//! Holding a peer to the node id its certificate names.
//!
//! Under mutual TLS the transport tells, with every frame, which node the
//! sending peer's certificate names (`InboundFrame::peer_id`). A frame whose
//! envelope claims another sender is refused here, before the core sees it,
//! with a warning and the metric `cassio_peer_frames_refused_total{reason =
//! "sender_mismatch"}`: a peer speaks only for itself first-hand. Without
//! TLS (`peer_id` is `None`) nothing can be checked and every decodable
//! frame goes through.

use cassio_core::{Envelope, InboundFrame, Node, NodeId, Now, WireCodec};

/// What to do with one inbound frame.
#[derive(Debug)]
pub enum Admission {
    /// Decoded, and its sender is the authenticated peer (or the transport
    /// authenticates no one): hand it to the core.
    Accept(Box<Envelope>),
    /// Not decodable: the core reports it as a bad frame.
    Undecodable,
    /// The envelope names another sender than the peer's certificate.
    Refused {
        /// The sender the envelope claims.
        claimed: NodeId,
        /// The node the peer's certificate names.
        authenticated: NodeId,
    },
}

/// Decodes `frame` and checks its sender against the authenticated peer;
/// a refusal is logged and counted here.
pub fn admit(codec: &WireCodec, frame: &InboundFrame) -> Admission {
    let env = match codec.decode(&frame.payload) {
        Ok(env) => env,
        Err(_) => return Admission::Undecodable,
    };
    match frame.peer_id {
        Some(authenticated) if authenticated != env.from => {
            metrics::counter!("cassio_peer_frames_refused_total", "reason" => "sender_mismatch")
                .increment(1);
            tracing::warn!(
                peer = %frame.from,
                %authenticated,
                claimed = %env.from,
                "frame refused: it claims a sender other than the node the peer's certificate names"
            );
            Admission::Refused {
                claimed: env.from,
                authenticated,
            }
        }
        _ => Admission::Accept(Box::new(env)),
    }
}

/// Hands `frame` to `node` if [`admit`] accepts it (the driver's one call
/// per inbound frame).
pub fn deliver(node: &mut Node, now: impl Into<Now>, frame: &InboundFrame) {
    match admit(node.codec(), frame) {
        Admission::Accept(env) => node.handle_envelope(now, *env),
        // Decoded again by the core, which reports why it is bad; bad
        // frames are rare, so the second decode costs nothing that matters.
        Admission::Undecodable => node.handle_frame(now, &frame.payload),
        Admission::Refused { .. } => {}
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap
mod tests {
    use super::*;
    use bytes::Bytes;
    use cassio_core::PeerMsg;

    fn frame(codec: &WireCodec, from: u64, peer_id: Option<u64>) -> InboundFrame {
        let msg = PeerMsg::WriteAck {
            tag: Default::default(),
            outcome: cassio_core::WriteOutcome::Applied,
        };
        InboundFrame {
            from: "127.0.0.1:7000".parse().unwrap(),
            payload: Bytes::from(codec.encode(NodeId(from), &msg).unwrap()),
            peer_id: peer_id.map(NodeId),
        }
    }

    #[test]
    fn a_peer_speaks_only_for_the_node_its_certificate_names() {
        let codec = WireCodec::new("c");
        match admit(&codec, &frame(&codec, 2, Some(2))) {
            Admission::Accept(env) => assert_eq!(env.from, NodeId(2)),
            other => panic!("expected acceptance, got {other:?}"),
        }
        match admit(&codec, &frame(&codec, 3, Some(2))) {
            Admission::Refused {
                claimed,
                authenticated,
            } => assert_eq!((claimed, authenticated), (NodeId(3), NodeId(2))),
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn unauthenticated_and_undecodable_frames_go_to_the_core() {
        let codec = WireCodec::new("c");
        assert!(matches!(
            admit(&codec, &frame(&codec, 3, None)),
            Admission::Accept(env) if env.from == NodeId(3)
        ));
        let mut junk = frame(&codec, 2, Some(2));
        junk.payload = Bytes::from_static(b"\xffjunk");
        assert!(matches!(admit(&codec, &junk), Admission::Undecodable));
        // Another cluster's frame does not decode either.
        let other = WireCodec::new("other");
        assert!(matches!(
            admit(&codec, &frame(&other, 2, Some(2))),
            Admission::Undecodable
        ));
    }
}
