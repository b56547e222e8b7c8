//! The WebSocket fallback (PROTOCOL section 7): `GET /signal` on the
//! sidecar, one tagged unit per binary message, the same pool, limits,
//! admission rules and `Closing` as a WebTransport session, closed with
//! status `4000 + code`. Spoken to by a plain WebSocket client written from
//! the protocol, beside the crate's native WebTransport client.

mod common;

use common::websocket::{Unit, WsClient, WsOptions};
use common::*;
use quicmatch::protocol::{ClientMsg, Datagram, ErrorCode, Gender, MAX_SDP_LEN, ServerMsg};
use tokio_tungstenite::tungstenite::{Bytes, Message};

/// A WebSocket session on `server`'s next node, joined as `name`.
async fn ws_joined(server: &TestServer, name: &str, gender: Gender) -> (WsClient, ServerMsg) {
    let mut ws = WsClient::open(server.next_node().http_addr()).await;
    ws.send(&ClientMsg::Join(profile(name, gender))).await;
    let first = ws.next_msg().await;
    (ws, first)
}

protocol_test! {
    async fn a_websocket_and_a_webtransport_session_are_matched_and_relay_both_ways() {
        let server = start_server(&[]).await;
        let (mut ws, first) = ws_joined(&server, "Wes", Gender::Female).await;
        assert!(matches!(first, ServerMsg::Waiting { .. }), "{first:?}");
        let mut wt = connect(&server).await;
        let matched = join(&mut wt, "Tom", Gender::Male).await;
        let id = match_id(&matched);
        let ServerMsg::Matched { partner, initiator, .. } = ws.next_msg().await else {
            panic!("expected Matched");
        };
        assert_eq!((partner.name.as_str(), initiator), ("Tom", true));
        // Offer from the WebSocket, answer and ICE back from WebTransport.
        ws.send(&ClientMsg::Offer { match_id: id, sdp: "v=0 ws".into() }).await;
        assert_eq!(next_msg(&mut wt).await, ServerMsg::Offer { match_id: id, sdp: "v=0 ws".into() });
        send(&mut wt, ClientMsg::Answer { match_id: id, sdp: "v=0 wt".into() }).await;
        assert_eq!(ws.next_msg().await, ServerMsg::Answer { match_id: id, sdp: "v=0 wt".into() });
        // Chat both ways, each acknowledged as over datagrams.
        ws.send_datagram(&Datagram::Chat { match_id: id, seq: 7, text: "hi from ws".into() }).await;
        let (chat_id, seq, text) = next_chat(&mut wt).await;
        assert_eq!((chat_id, seq, text.as_str()), (id, 7, "hi from ws"));
        assert_eq!(ws.next().await, Unit::Datagram(Datagram::ChatAck { match_id: id, seq: 7 }));
        let sent = wt.chat(id, "hi from wt").expect("chat");
        assert_eq!(
            ws.next().await,
            Unit::Datagram(Datagram::Chat { match_id: id, seq: sent, text: "hi from wt".into() })
        );
        ws.send_datagram(&Datagram::ChatAck { match_id: id, seq: sent }).await;
        // Stop from the WebSocket: both wait again.
        ws.send(&ClientMsg::Stop).await;
        assert!(matches!(ws.next_msg().await, ServerMsg::Waiting { .. }));
        assert_eq!(next_msg(&mut wt).await, ServerMsg::PartnerDisconnected { match_id: id });
        ws.close().await;
        wait_stats(&server, |s| s.active_users == 1).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn two_websocket_sessions_are_matched_with_each_other() {
        let server = start_server(&[]).await;
        let (mut ann, _) = ws_joined(&server, "Ann", Gender::Female).await;
        let (mut bob, matched) = ws_joined(&server, "Bob", Gender::Male).await;
        let id = match_id(&matched);
        assert_eq!(match_id(&ann.next_msg().await), id);
        bob.send(&ClientMsg::Ice {
            match_id: id,
            candidate: quicmatch::protocol::IceCandidate {
                candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(0),
                username_fragment: None,
            },
        })
        .await;
        assert!(matches!(ann.next_msg().await, ServerMsg::Ice { match_id, .. } if match_id == id));
        // Offers of the largest SDP, several times the server's read
        // buffer, back to back with short ones: each arrives whole and in
        // order.
        let sdps = ["a".repeat(MAX_SDP_LEN), "v=0 short".into(), "b".repeat(MAX_SDP_LEN)];
        for sdp in &sdps {
            ann.send(&ClientMsg::Offer { match_id: id, sdp: sdp.clone() }).await;
        }
        for sdp in sdps {
            assert_eq!(bob.next_msg().await, ServerMsg::Offer { match_id: id, sdp });
        }
        server.shutdown().await;
    }
}

#[tokio::test]
async fn the_subprotocol_is_selected_when_offered_and_not_required() {
    let server = start_server(&[]).await;
    let http = server.http_addr();
    let offered = WsClient::connect(
        http,
        WsOptions {
            subprotocol: true,
            ..WsOptions::default()
        },
    )
    .await
    .expect("session");
    assert_eq!(offered.protocol.as_deref(), Some("quicmatch.v1"));
    let plain = WsClient::open(http).await;
    assert_eq!(plain.protocol, None);
    let mut plain = plain;
    plain.send(&ClientMsg::Ping { nonce: 5 }).await;
    assert_eq!(plain.next_msg().await, ServerMsg::Pong { nonce: 5 });
    server.shutdown().await;
}

#[tokio::test]
async fn bad_units_get_bad_frame_and_the_session_goes_on() {
    let server = start_server(&[]).await;
    let mut ws = WsClient::open(server.http_addr()).await;
    let bad: [Message; 6] = [
        Message::Text("hello".into()),
        Message::Binary(Bytes::new()),
        Message::Binary(Bytes::from_static(&[0x00])),
        Message::Binary(Bytes::from_static(&[0x01])),
        Message::Binary(Bytes::from_static(&[0x02, 1, 2, 3])),
        Message::Binary(Bytes::from_static(&[0x00, 0xff, 0xff, 0xff])),
    ];
    for message in bad {
        let shown = format!("{message:?}");
        ws.send_raw(message).await;
        match ws.next_msg().await {
            ServerMsg::Error {
                code: ErrorCode::BadFrame,
                ..
            } => {}
            other => panic!("{shown}: expected BadFrame, got {other:?}"),
        }
    }
    // An undecodable datagram unit too.
    ws.send_unit(0x01, &[0xff, 0xff]).await;
    assert!(matches!(
        ws.next_msg().await,
        ServerMsg::Error {
            code: ErrorCode::BadFrame,
            ..
        }
    ));
    ws.send(&ClientMsg::Ping { nonce: 9 }).await;
    assert_eq!(ws.next_msg().await, ServerMsg::Pong { nonce: 9 });
    server.shutdown().await;
}

#[tokio::test]
async fn a_unit_over_the_largest_frame_closes_the_session_with_code_1() {
    let server = start_server(&[]).await;
    let mut ws = WsClient::open(server.http_addr()).await;
    ws.send_unit(0x00, &vec![0u8; 65_537]).await;
    let (before, (status, _)) = ws.until_closed().await;
    assert_eq!(status, 4001);
    assert!(
        matches!(
            before.last(),
            Some(Unit::Msg(ServerMsg::Closing { code: 1, .. }))
        ),
        "{before:?}"
    );
    // A unit of the largest size is fine.
    let mut ws = WsClient::open(server.http_addr()).await;
    ws.send_unit(0x00, &vec![0u8; 65_536]).await;
    assert!(matches!(
        ws.next_msg().await,
        ServerMsg::Error {
            code: ErrorCode::BadFrame,
            ..
        }
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn a_flood_of_units_is_rate_limited_then_closed_with_code_2() {
    let server = start_server(&[]).await;
    let mut ws = WsClient::open(server.http_addr()).await;
    for nonce in 0..2_000 {
        ws.send(&ClientMsg::Ping { nonce }).await;
    }
    let (before, (status, _)) = ws.until_closed().await;
    assert_eq!(status, 4002);
    assert!(before.iter().any(|u| matches!(
        u,
        Unit::Msg(ServerMsg::Error {
            code: ErrorCode::RateLimited,
            ..
        })
    )));
    assert!(matches!(
        before.last(),
        Some(Unit::Msg(ServerMsg::Closing { code: 2, .. }))
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn at_capacity_a_websocket_session_is_told_code_4() {
    let server = start_server(&["--max-sessions", "1"]).await;
    let _first = WsClient::open(server.http_addr()).await;
    let mut second = WsClient::open(server.http_addr()).await;
    let (before, (status, reason)) = second.until_closed().await;
    assert_eq!((status, reason.as_str()), (4004, "server at capacity"));
    assert!(
        matches!(
            before.as_slice(),
            [Unit::Msg(ServerMsg::Closing { code: 4, .. })]
        ),
        "{before:?}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn shutdown_tells_websocket_sessions_code_3() {
    let server = start_server(&[]).await;
    let mut ws = WsClient::open(server.http_addr()).await;
    ws.send(&ClientMsg::Ping { nonce: 1 }).await;
    assert_eq!(ws.next_msg().await, ServerMsg::Pong { nonce: 1 });
    let closing = tokio::spawn(async move { ws.until_closed().await });
    server.shutdown().await;
    let (before, (status, _)) = closing.await.expect("closed");
    assert_eq!(status, 4003);
    assert!(matches!(
        before.last(),
        Some(Unit::Msg(ServerMsg::Closing { code: 3, .. }))
    ));
}

#[tokio::test]
async fn websocket_sessions_pass_the_same_front_door() {
    let secret = "a-join-token-secret-of-32-bytes!";
    let server = start_server(&["--jwt-secret", secret]).await;
    let http = server.http_addr();
    // No token, or a page of another origin: 403 before a session exists.
    assert_eq!(
        WsClient::connect(http, WsOptions::default()).await.err(),
        Some(403)
    );
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + 60;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &serde_json::json!({ "sub": "user-1", "exp": exp }),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("token");
    let query = format!("token={token}");
    let evil = WsOptions {
        origin: Some("https://evil.example"),
        query: Some(&query),
        ..WsOptions::default()
    };
    assert_eq!(WsClient::connect(http, evil).await.err(), Some(403));
    let page = WsOptions {
        origin: Some("http://localhost:8080"),
        query: Some(&query),
        ..WsOptions::default()
    };
    let mut ws = WsClient::connect(http, page).await.expect("admitted");
    ws.send(&ClientMsg::Ping { nonce: 2 }).await;
    assert_eq!(ws.next_msg().await, ServerMsg::Pong { nonce: 2 });
    server.shutdown().await;
}

#[tokio::test]
async fn api_webtransport_names_the_websocket_url() {
    let server = start_server(&[]).await;
    let http = server.http_addr();
    let host = format!("127.0.0.1:{}", http.port());
    let info = http_get(http, &host, "/api/webtransport").await.json();
    assert_eq!(info["websocket"], format!("ws://{host}/signal"));
    server.shutdown().await;
}
