//! PROTOCOL.md sections 2 and 5, bad frames: every kind of frame whose bytes
//! do not decode to exactly one message (unknown variant, invalid UTF-8,
//! invalid Option tag or enum index, trailing bytes, a length that claims more
//! than the frame holds, an invalid varint) gets `Error BadFrame` and is
//! otherwise ignored: the session goes on in whatever state it was, and
//! another matched pair on the same server notices nothing.
//!
//! `bool` occurs only in server messages (`Matched.initiator`), so a client
//! cannot send an invalid bool; the codec's unit tests cover its decoding.

mod common;

use common::*;
use quicmatch::client::Client;
use quicmatch::protocol::{ClientMsg, ErrorCode, Gender, ServerMsg};

/// Every kind of undecodable frame payload, each with what it breaks.
fn bad_payloads() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("unknown variant 7", vec![7]),
        ("unknown variant 250", vec![250]),
        (
            "unknown variant in the long varint form",
            vec![0xFB, 0x00, 0x01],
        ),
        (
            "variant index in a u64 varint form",
            vec![0xFD, 6, 0, 0, 0, 0, 0, 0, 0, 1],
        ),
        ("reserved varint tag", vec![0xFF]),
        ("invalid UTF-8 in a name", vec![0, 2, 0xC3, 0x28, 25, 0]),
        ("overlong UTF-8", vec![0, 2, 0xC0, 0x80, 25, 0]),
        (
            "UTF-16 surrogate in UTF-8",
            vec![0, 3, 0xED, 0xA0, 0x80, 25, 0],
        ),
        ("invalid UTF-8 in an sdp", vec![1, 1, 1, 0xFF]),
        ("unknown gender", vec![0, 2, b'J', b'o', 25, 2]),
        ("Option tag 2 in an ICE candidate", vec![3, 1, 0, 2]),
        ("Option tag 7 for the m-line index", vec![3, 1, 0, 0, 7, 0]),
        (
            "u16 in a u32 varint form",
            vec![3, 1, 0, 0, 1, 0xFC, 1, 0, 0, 0, 0],
        ),
        ("trailing byte after Stop", vec![4, 0]),
        ("trailing bytes after Ping", vec![6, 9, 1, 2, 3]),
        ("two messages in one frame", vec![6, 1, 6, 2]),
        ("string length past the end", vec![1, 1, 10, b'v', b'=']),
        ("huge string length", vec![1, 1, 0xFC, 0, 0, 0, 1]),
        (
            "u64::MAX string length",
            vec![1, 1, 0xFD, 255, 255, 255, 255, 255, 255, 255, 255],
        ),
        ("truncated Ping", vec![6]),
        ("truncated u64 varint", vec![6, 0xFD, 1, 2, 3]),
        ("truncated Join", vec![0, 2, b'J', b'o', 25]),
        ("truncated Ice", vec![3, 1, 0, 1]),
    ]
}

/// Sends each bad frame and expects `BadFrame` for each, in order, then a
/// Pong: the session survived.
async fn send_every_bad_frame(client: &mut Client, nonce: u64) {
    let payloads = bad_payloads();
    for (what, payload) in &payloads {
        client.send_raw(&frame(payload)).await.unwrap();
        match next_msg(client).await {
            ServerMsg::Error {
                code: ErrorCode::BadFrame,
                ..
            } => {}
            other => panic!("{what}: expected BadFrame, got {other:?}"),
        }
    }
    // All at once, in one write, too: each is answered on its own.
    let all: Vec<u8> = payloads.iter().flat_map(|(_, p)| frame(p)).collect();
    client.send_raw(&all).await.unwrap();
    send(client, ClientMsg::Ping { nonce }).await;
    let before = until_pong(client, nonce).await;
    assert_eq!(before.len(), payloads.len(), "{before:?}");
    for msg in before {
        assert!(
            matches!(
                msg,
                ServerMsg::Error {
                    code: ErrorCode::BadFrame,
                    ..
                }
            ),
            "{msg:?}"
        );
    }
}

protocol_test! {
    async fn bad_frames_while_matched_leave_the_match_and_other_pairs_alone() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        let (mut cat, mut dan, other) = matched_pair(&server).await;
        send_every_bad_frame(&mut ann, 1).await;

        // Ann's match goes on, both ways.
        send(
            &mut ann,
            ClientMsg::Offer {
                match_id: id,
                sdp: "offer".into(),
            },
        )
        .await;
        assert_eq!(
            next_msg(&mut bob).await,
            ServerMsg::Offer {
                match_id: id,
                sdp: "offer".into()
            }
        );
        send(
            &mut bob,
            ClientMsg::Answer {
                match_id: id,
                sdp: "answer".into(),
            },
        )
        .await;
        assert_eq!(
            next_msg(&mut ann).await,
            ServerMsg::Answer {
                match_id: id,
                sdp: "answer".into()
            }
        );
        // Nothing reached anyone else, and the other pair relays as before.
        assert_quiet(&mut bob, 2).await;
        assert_quiet(&mut cat, 3).await;
        assert_quiet(&mut dan, 4).await;
        send(
            &mut dan,
            ClientMsg::Offer {
                match_id: other,
                sdp: "x".into(),
            },
        )
        .await;
        assert_eq!(
            next_msg(&mut cat).await,
            ServerMsg::Offer {
                match_id: other,
                sdp: "x".into()
            }
        );
        assert_counts(&server, (4, 2, 0, 0)).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn bad_frames_while_idle_leave_the_session_idle() {
        let server = start_server(&[]).await;
        let mut ann = connect(&server).await;
        send_every_bad_frame(&mut ann, 1).await;
        send(&mut ann, ClientMsg::Stop).await;
        expect_error(&mut ann, ErrorCode::NotJoined).await;
        assert_eq!(
            join(&mut ann, "Ann", Gender::Female).await,
            ServerMsg::Waiting { queue_position: 1 }
        );
        server.shutdown().await;
    }
}

protocol_test! {
    async fn bad_frames_while_waiting_keep_the_place_in_the_queue() {
        let server = start_server(&[]).await;
        let mut ann = connect(&server).await;
        let mut bea = connect(&server).await;
        join(&mut ann, "Ann", Gender::Female).await;
        join(&mut bea, "Bea", Gender::Female).await;
        send_every_bad_frame(&mut ann, 1).await;
        send(&mut ann, ClientMsg::Stop).await;
        assert_eq!(
            next_msg(&mut ann).await,
            ServerMsg::Waiting { queue_position: 1 }
        );
        let mut bob = connect(&server).await;
        match join(&mut bob, "Bob", Gender::Male).await {
            ServerMsg::Matched { partner, .. } => assert_eq!(partner.name, "Ann"),
            other => panic!("expected Matched, got {other:?}"),
        }
        assert_quiet(&mut bea, 2).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn a_frame_split_across_writes_is_one_frame() {
        // Framing, not a bad frame: a message may arrive a byte at a time.
        let server = start_server(&[]).await;
        let mut ann = connect(&server).await;
        let bytes = frame(&[6, 0xFB, 0x39, 0x05]);
        for byte in &bytes {
            ann.send_raw(std::slice::from_ref(byte)).await.unwrap();
        }
        assert_eq!(next_msg(&mut ann).await, ServerMsg::Pong { nonce: 0x0539 });
        server.shutdown().await;
    }
}
