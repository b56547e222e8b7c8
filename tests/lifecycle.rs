//! PROTOCOL.md sections 4.5 and 4.6 (Stop, Leave, the end of a session for
//! any reason, Ping) and the transport rules of section 1 (the session path,
//! extra streams, IPv4 and IPv6, certificate renewal).
//!
//! The close codes, rate limits and capacity of section 5 are in
//! `tests/closing.rs`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use quicmatch::client::{Client, ClientError};
use quicmatch::protocol::{ClientMsg, ErrorCode, Gender, ServerMsg};
use tokio::net::UdpSocket;
use wtransport::error::{ConnectingError, StreamReadError, StreamWriteError};

/// The partner profile's name of a `Matched` message.
fn partner_name(msg: &ServerMsg) -> &str {
    match msg {
        ServerMsg::Matched { partner, .. } => &partner.name,
        other => panic!("expected Matched, got {other:?}"),
    }
}

protocol_test! {
    async fn stop_while_matched_tells_the_partner_and_requeues_both() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        let mut cat = connect(&server).await;
        assert_eq!(
            join(&mut cat, "Cat", Gender::Female).await,
            ServerMsg::Waiting { queue_position: 1 }
        );
        send(&mut bob, ClientMsg::Stop).await;
        // Ann, left behind, queues again (behind Cat); Bob gets Cat at once.
        assert_eq!(
            next_msg(&mut ann).await,
            ServerMsg::PartnerDisconnected { match_id: id }
        );
        assert_eq!(
            next_msg(&mut ann).await,
            ServerMsg::Waiting { queue_position: 2 }
        );
        let bob_got = next_msg(&mut bob).await;
        assert_eq!(partner_name(&bob_got), "Cat");
        let cat_got = next_msg(&mut cat).await;
        assert_eq!(partner_name(&cat_got), "Bob");
        assert_eq!(match_id(&bob_got), match_id(&cat_got));
        assert_ne!(match_id(&bob_got), id);
        // Bob, the one who stopped, was not told of his own match's end.
        assert_quiet(&mut bob, 1).await;
        assert_counts(&server, (3, 1, 0, 1)).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn stop_while_waiting_answers_waiting_again_and_keeps_the_place() {
        let server = start_server(&[]).await;
        let mut al = connect(&server).await;
        let mut bo = connect(&server).await;
        join(&mut al, "Al", Gender::Male).await;
        join(&mut bo, "Bo", Gender::Male).await;
        for _ in 0..2 {
            send(&mut bo, ClientMsg::Stop).await;
            assert_eq!(
                next_msg(&mut bo).await,
                ServerMsg::Waiting { queue_position: 2 }
            );
            send(&mut al, ClientMsg::Stop).await;
            assert_eq!(
                next_msg(&mut al).await,
                ServerMsg::Waiting { queue_position: 1 }
            );
        }
        // Al is still first in line.
        let mut cat = connect(&server).await;
        assert_eq!(
            partner_name(&join(&mut cat, "Cat", Gender::Female).await),
            "Al"
        );
        server.shutdown().await;
    }
}

protocol_test! {
    async fn stop_while_idle_is_not_joined() {
        let server = start_server(&[]).await;
        let mut ann = connect(&server).await;
        send(&mut ann, ClientMsg::Stop).await;
        expect_error(&mut ann, ErrorCode::NotJoined).await;
        // Also idle again after a Leave.
        join(&mut ann, "Ann", Gender::Female).await;
        send(&mut ann, ClientMsg::Leave).await;
        send(&mut ann, ClientMsg::Stop).await;
        expect_error(&mut ann, ErrorCode::NotJoined).await;
        assert_counts(&server, (1, 0, 0, 0)).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn leave_while_matched_tells_the_partner_who_is_requeued() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        let mut cat = connect(&server).await;
        join(&mut cat, "Cat", Gender::Female).await;
        send(&mut ann, ClientMsg::Leave).await;
        assert_eq!(
            next_msg(&mut bob).await,
            ServerMsg::PartnerDisconnected { match_id: id }
        );
        assert_eq!(partner_name(&next_msg(&mut bob).await), "Cat");
        assert_eq!(partner_name(&next_msg(&mut cat).await), "Bob");
        // Ann is idle, told nothing, and her old match's messages are dropped.
        send(
            &mut ann,
            ClientMsg::Offer {
                match_id: id,
                sdp: "late".into(),
            },
        )
        .await;
        assert_quiet(&mut ann, 1).await;
        assert_quiet(&mut bob, 2).await;
        assert_counts(&server, (3, 1, 0, 0)).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn leave_while_waiting_leaves_the_queue_and_while_idle_does_nothing() {
        let server = start_server(&[]).await;
        let mut ann = connect(&server).await;
        // Idle: no answer at all.
        send(&mut ann, ClientMsg::Leave).await;
        assert_quiet(&mut ann, 1).await;
        join(&mut ann, "Ann", Gender::Female).await;
        assert_counts(&server, (1, 0, 0, 1)).await;
        send(&mut ann, ClientMsg::Leave).await;
        assert_quiet(&mut ann, 2).await;
        assert_counts(&server, (1, 0, 0, 0)).await;
        // A man arriving now waits: Ann is no longer offered.
        let mut bob = connect(&server).await;
        assert_eq!(
            join(&mut bob, "Bob", Gender::Male).await,
            ServerMsg::Waiting { queue_position: 1 }
        );
        assert_quiet(&mut ann, 3).await;
        server.shutdown().await;
    }
}

/// How a client goes away in the disconnect tests.
#[derive(Debug, Clone, Copy)]
enum Exit {
    /// Dropped without closing (quinn closes the connection implicitly).
    Drop,
    /// Closed properly with code 0.
    Close,
}

async fn go_away(client: Client, exit: Exit) {
    match exit {
        Exit::Drop => drop(client),
        Exit::Close => client.close().await,
    }
}

/// A matched client and a waiting client go away; the partner is told and
/// requeued, nobody ever meets a ghost, and every count returns to zero.
async fn disconnects_leave_no_ghost(exit: Exit) {
    let server = start_server(&[]).await;
    let (ann, mut bob, id) = matched_pair(&server).await;
    let mut cy = connect(&server).await;
    assert_eq!(
        join(&mut cy, "Cy", Gender::Male).await,
        ServerMsg::Waiting { queue_position: 1 }
    );
    assert_counts(&server, (3, 1, 1, 0)).await;

    go_away(ann, exit).await;
    assert_eq!(
        next_msg(&mut bob).await,
        ServerMsg::PartnerDisconnected { match_id: id }
    );
    assert_eq!(
        next_msg(&mut bob).await,
        ServerMsg::Waiting { queue_position: 2 }
    );
    wait_counts(&server, (2, 0, 2, 0)).await;

    // The waiting Cy goes away too; a woman arriving now gets Bob, never Cy.
    go_away(cy, exit).await;
    wait_counts(&server, (1, 0, 1, 0)).await;
    let mut dee = connect(&server).await;
    assert_eq!(
        partner_name(&join(&mut dee, "Dee", Gender::Female).await),
        "Bob"
    );
    assert_eq!(partner_name(&next_msg(&mut bob).await), "Dee");

    // Both go away while matched: nothing is left.
    go_away(dee, exit).await;
    assert!(matches!(
        next_msg(&mut bob).await,
        ServerMsg::PartnerDisconnected { .. }
    ));
    go_away(bob, exit).await;
    wait_counts(&server, (0, 0, 0, 0)).await;
    server.shutdown().await;
}

protocol_test! {
    async fn dropped_clients_leave_no_ghost() {
        disconnects_leave_no_ghost(Exit::Drop).await;
    }
}

protocol_test! {
    async fn closed_clients_leave_no_ghost() {
        disconnects_leave_no_ghost(Exit::Close).await;
    }
}

/// A UDP relay between one client and the server, which can be cut to lose
/// the client without any close: only the idle timeout can notice.
struct CuttableRelay {
    addr: SocketAddr,
    cut: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl CuttableRelay {
    async fn start(server: SocketAddr) -> CuttableRelay {
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = socket.local_addr().unwrap();
        let cut = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn({
            let cut = cut.clone();
            async move {
                let mut client = None;
                let mut buf = vec![0u8; 65_536];
                while let Ok((n, from)) = socket.recv_from(&mut buf).await {
                    if cut.load(Ordering::Relaxed) {
                        continue;
                    }
                    let to = if from == server {
                        match client {
                            Some(client) => client,
                            None => continue,
                        }
                    } else {
                        client = Some(from);
                        server
                    };
                    let _ = socket.send_to(&buf[..n], to).await;
                }
            }
        });
        CuttableRelay { addr, cut, task }
    }
}

protocol_test! {
    async fn a_lost_client_times_out_and_its_partner_is_requeued() {
        // Keep-alives every second keep the healthy client alive past the
        // 2-second idle timeout.
        let server = start_server(&["--idle-timeout-secs", "2", "--keep-alive-secs", "1"]).await;
        let relay = CuttableRelay::start(server.quic_addr()).await;
        let hash = server.certificate_hash().unwrap();
        let url = format!("https://127.0.0.1:{}/signal", relay.addr.port());
        let mut ann = try_connect(&url, hash)
            .await
            .expect("connect through the relay");
        join(&mut ann, "Ann", Gender::Female).await;
        let mut bob = connect(&server).await;
        let id = match_id(&join(&mut bob, "Bob", Gender::Male).await);
        assert_eq!(match_id(&next_msg(&mut ann).await), id);

        relay.cut.store(true, Ordering::Relaxed);
        expect_left_to_wait(&mut bob, id).await;
        wait_counts(&server, (1, 0, 1, 0)).await;
        ping(&mut bob, 1).await;
        relay.task.abort();
        server.shutdown().await;
    }
}

protocol_test! {
    async fn ping_is_answered_in_every_state() {
        let server = start_server(&[]).await;
        let nonces = [0, 1, 250, 251, 65_535, 65_536, 1 << 32, u64::MAX];
        let mut ann = connect(&server).await;
        // Idle.
        for nonce in nonces {
            ping(&mut ann, nonce).await;
        }
        // Waiting.
        join(&mut ann, "Ann", Gender::Female).await;
        for nonce in nonces {
            ping(&mut ann, nonce).await;
        }
        // Matched, on both sides.
        let mut bob = connect(&server).await;
        join(&mut bob, "Bob", Gender::Male).await;
        next_msg(&mut ann).await;
        for nonce in nonces {
            ping(&mut ann, nonce).await;
            ping(&mut bob, nonce).await;
        }
        // Idle again after Leave; and pings pipelined are answered in order.
        send(&mut ann, ClientMsg::Leave).await;
        for nonce in nonces {
            send(&mut ann, ClientMsg::Ping { nonce }).await;
        }
        for nonce in nonces {
            assert_eq!(next_msg(&mut ann).await, ServerMsg::Pong { nonce });
        }
        server.shutdown().await;
    }
}

protocol_test! {
    async fn connect_to_another_path_makes_no_session() {
        let server = start_server(&[]).await;
        let hash = server.certificate_hash().unwrap();
        let port = server.quic_addr().port();
        for path in ["/other", "/", "/signal/x", "/Signal"] {
            let url = format!("https://127.0.0.1:{port}{path}");
            // The server answered the CONNECT with an error status.
            let result = try_connect(&url, hash).await;
            assert!(
                matches!(
                    result,
                    Err(ClientError::Connect(ConnectingError::SessionRejected))
                ),
                "{path} must be refused"
            );
        }
        assert_counts(&server, (0, 0, 0, 0)).await;
        // The right path works.
        let mut ann = connect(&server).await;
        ping(&mut ann, 1).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn extra_streams_are_refused_and_the_session_goes_on() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        // More streams than the session's concurrent-stream allowance, one after
        // the other: each refusal must give its credit back.
        for i in 0..6u8 {
            let (mut send, mut recv) = tokio::time::timeout(STEP, async {
                ann.connection().open_bi().await.unwrap().await.unwrap()
            })
            .await
            .expect("bidirectional stream opens");
            let _ = send.write_all(&[i; 100]).await;
            let stopped = tokio::time::timeout(STEP, send.stopped())
                .await
                .expect("stopped in time");
            assert!(
                matches!(stopped, StreamWriteError::Stopped(_)),
                "{stopped:?}"
            );
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(STEP, recv.read(&mut buf))
                .await
                .expect("reset in time");
            assert!(matches!(read, Err(StreamReadError::Reset(_))), "{read:?}");

            let mut uni = tokio::time::timeout(STEP, async {
                ann.connection().open_uni().await.unwrap().await.unwrap()
            })
            .await
            .expect("unidirectional stream opens");
            let _ = uni.write_all(&[i; 100]).await;
            let stopped = tokio::time::timeout(STEP, uni.stopped())
                .await
                .expect("stopped in time");
            assert!(
                matches!(stopped, StreamWriteError::Stopped(_)),
                "{stopped:?}"
            );
        }
        // The signaling stream and the match are untouched.
        send(
            &mut ann,
            ClientMsg::Offer {
                match_id: id,
                sdp: "still here".into(),
            },
        )
        .await;
        assert_eq!(
            next_msg(&mut bob).await,
            ServerMsg::Offer {
                match_id: id,
                sdp: "still here".into()
            }
        );
        assert_quiet(&mut ann, 1).await;
        assert_counts(&server, (2, 1, 0, 0)).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn sessions_work_over_ipv4_and_ipv6() {
        let server = start_server(&[]).await;
        let hash = server.certificate_hash().unwrap();
        let mut v4 = try_connect(&url(&server), hash).await.expect("IPv4");
        let mut v6 = try_connect(&url_v6(&server), hash).await.expect("IPv6");
        // One pool: a v4 and a v6 session are matched and relay to each other.
        join(&mut v4, "Ann", Gender::Female).await;
        let id = match_id(&join(&mut v6, "Bob", Gender::Male).await);
        assert_eq!(match_id(&next_msg(&mut v4).await), id);
        send(
            &mut v6,
            ClientMsg::Answer {
                match_id: id,
                sdp: "v6".into(),
            },
        )
        .await;
        assert_eq!(
            next_msg(&mut v4).await,
            ServerMsg::Answer {
                match_id: id,
                sdp: "v6".into()
            }
        );
        let seq = v4.chat(id, "v4").unwrap();
        assert_eq!(next_chat(&mut v6).await, (id, seq, "v4".into()));
        server.shutdown().await;
    }
}

protocol_test! {
    async fn certificate_renewal_serves_new_sessions_and_keeps_old_ones() {
        let server = start_server(&[]).await;
        let old = server.certificate_hash().unwrap();
        let mut ann = connect(&server).await;
        join(&mut ann, "Ann", Gender::Female).await;

        server.renew_certificate().await.expect("renewal");
        let new = server.certificate_hash().unwrap();
        assert_ne!(old, new);
        // New clients pinned to the new hash connect, on both addresses; the old
        // hash no longer works.
        let mut bob = try_connect(&url(&server), new)
            .await
            .expect("new hash, IPv4");
        let mut v6 = try_connect(&url_v6(&server), new)
            .await
            .expect("new hash, IPv6");
        assert!(
            try_connect(&url(&server), old).await.is_err(),
            "old hash must fail"
        );
        ping(&mut v6, 1).await;
        // The session opened before the renewal goes on, and meets a new one.
        ping(&mut ann, 2).await;
        let id = match_id(&join(&mut bob, "Bob", Gender::Male).await);
        assert_eq!(match_id(&next_msg(&mut ann).await), id);
        send(
            &mut ann,
            ClientMsg::Offer {
                match_id: id,
                sdp: "hi".into(),
            },
        )
        .await;
        assert_eq!(
            next_msg(&mut bob).await,
            ServerMsg::Offer {
                match_id: id,
                sdp: "hi".into()
            }
        );
        server.shutdown().await;
    }
}

/// A wtransport client configuration for `server`, pinning its certificate,
/// bound to 127.0.0.1; its transport settings are still to be chosen.
fn pinning(
    server: &TestServer,
) -> wtransport::config::ClientConfigBuilder<wtransport::config::states::WantsTransportConfigClient>
{
    use wtransport::tls::Sha256Digest;
    wtransport::ClientConfig::builder()
        .with_bind_address(SocketAddr::from(([127, 0, 0, 1], 0)))
        .with_server_certificate_hashes(server.hashes().into_iter().map(Sha256Digest::new))
}

/// A WebTransport session to `server` with `config`, and the endpoint it
/// lives on (bounded by [`STEP`]).
async fn wtransport_session(
    server: &TestServer,
    config: wtransport::ClientConfig,
) -> (
    wtransport::Endpoint<wtransport::endpoint::endpoint_side::Client>,
    wtransport::Connection,
) {
    let endpoint = wtransport::Endpoint::client(config).expect("client endpoint");
    let connection = tokio::time::timeout(STEP, endpoint.connect(url(server)))
        .await
        .expect("connect in time")
        .expect("connect");
    (endpoint, connection)
}

/// Polls `done` every 50 ms until it holds, for at most 2 s (the caller
/// asserts what it then finds).
async fn until_within_2s(done: impl Fn() -> bool) {
    for _ in 0..40 {
        if done() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// This crate's clients (the native client, the load generator) do not
/// probe for a larger path MTU: the server keeps its packets at 1,200
/// bytes, so probes would only cost both ends. quinn's default client, on
/// the same server and in the same time, does probe.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_send_no_path_mtu_probes() {
    let server = start_server(&[]).await;
    let (_ours_endpoint, ours) = wtransport_session(
        &server,
        quicmatch::transport::client_config(pinning(&server)),
    )
    .await;
    let (_default_endpoint, default) = wtransport_session(&server, pinning(&server).build()).await;
    let probes = |connection: &wtransport::Connection| {
        connection
            .quic_connection()
            .stats()
            .path
            .sent_plpmtud_probes
    };
    // quinn probes as soon as the handshake is confirmed; give it 2 s.
    until_within_2s(|| probes(&default) > 0).await;
    assert!(probes(&default) > 0, "quinn's default client probes");
    assert_eq!(probes(&ours), 0, "this crate's clients do not");
    server.shutdown().await;
}

/// A session needs few connection IDs (the server accepts no migration):
/// the server advertises an `active_connection_id_limit` of 2, the least
/// allowed, and issues one spare ID, which a client sees as a single
/// NEW_CONNECTION_ID; a client issues one (plus the replacement for the ID
/// the server retires after the handshake).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_exchange_one_spare_connection_id() {
    let server = start_server(&[]).await;
    let (_endpoint, connection) = wtransport_session(
        &server,
        quicmatch::transport::client_config(pinning(&server)),
    )
    .await;
    let stats = || {
        connection
            .quic_connection()
            .stats()
            .frame_rx
            .new_connection_id
    };
    // The spare ID comes with the end of the handshake; give it 2 s, then a
    // moment more for any further one to arrive.
    until_within_2s(|| stats() > 0).await;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    assert_eq!(stats(), 1, "the server issues one spare connection ID");
    let sent = connection
        .quic_connection()
        .stats()
        .frame_tx
        .new_connection_id;
    assert!(
        (1..=2).contains(&sent),
        "the client issued {sent} connection IDs for a limit of 2"
    );
    server.shutdown().await;
}
