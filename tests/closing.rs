//! PROTOCOL.md section 5, limits and closes: unskippable frame lengths (code
//! 1), rate limits and floods (code 2), a client that does not read its
//! stream (code 2), graceful shutdown (code 3) and capacity (code 4). Every
//! close must come as a `Closing` frame first, then the QUIC close with the
//! same application code; no other session may notice.

mod common;

use std::time::Duration;

use common::*;
use quicmatch::client::{Client, Event};
use quicmatch::codec::encode_frame;
use quicmatch::protocol::{ClientMsg, Datagram, ErrorCode, Gender, ServerMsg};
use tokio::time::Instant;
use wtransport::error::ConnectionError;

fn is_rate_limited(msg: &ServerMsg) -> bool {
    matches!(
        msg,
        ServerMsg::Error {
            code: ErrorCode::RateLimited,
            ..
        }
    )
}

/// `count` pings (nonces from `first`) as one write.
fn pings(first: u64, count: u64) -> Vec<u8> {
    (first..first + count)
        .flat_map(|nonce| encode_frame(&ClientMsg::Ping { nonce }).to_vec())
        .collect()
}

/// Splits the messages of a burst of pings into (pongs, RateLimited errors),
/// failing on anything else.
fn tally(msgs: &[ServerMsg]) -> (usize, usize) {
    let pongs = msgs
        .iter()
        .filter(|m| matches!(m, ServerMsg::Pong { .. }))
        .count();
    let limited = msgs.iter().filter(|m| is_rate_limited(m)).count();
    assert_eq!(pongs + limited, msgs.len(), "unexpected messages: {msgs:?}");
    (pongs, limited)
}

protocol_test! {
    async fn an_unskippable_frame_length_closes_with_code_1() {
        let server = start_server(&[]).await;
        for length in [0u32, 65_537, 1 << 20, u32::MAX] {
            let (mut ann, mut bob, id) = matched_pair(&server).await;
            // The header alone is enough: the server does not wait for a body.
            ann.send_raw(&length.to_be_bytes()).await.unwrap();
            expect_closed_with(&mut ann, 1, |_| false).await;
            // The partner is merely told, and queues again.
            expect_left_to_wait(&mut bob, id).await;
            ping(&mut bob, 1).await;
            drop(bob);
            wait_counts(&server, (0, 0, 0, 0)).await;
        }
        server.shutdown().await;
    }
}

protocol_test! {
    async fn a_frame_of_exactly_65536_bytes_is_not_a_violation() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        // A valid Offer filling the largest frame: its sdp is over 32,768 bytes.
        let sdp_len = 65_536 - 1 - 1 - 3;
        let offer = encode_frame(&ClientMsg::Offer {
            match_id: id,
            sdp: "s".repeat(sdp_len),
        });
        assert_eq!(offer.len(), 4 + 65_536);
        ann.send_raw(&offer).await.unwrap();
        expect_error(&mut ann, ErrorCode::TooLarge).await;
        // Garbage of the largest length: a bad frame, skipped.
        ann.send_raw(&frame(&[0xFF; 65_536])).await.unwrap();
        expect_error(&mut ann, ErrorCode::BadFrame).await;
        ping(&mut ann, 1).await;
        assert_quiet(&mut bob, 2).await;
        assert_counts(&server, (2, 1, 0, 0)).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn a_burst_over_the_frame_rate_is_limited_and_told_at_most_once_a_second() {
        let server = start_server(&["--frame-rate", "50"]).await;
        let mut ann = connect(&server).await;
        let start = Instant::now();

        // 160 frames at once: the 100 of the burst allowance (two seconds'
        // worth) are answered, the rest dropped with a single notice. A ping a
        // little later (the bucket refills at 50 a second) marks the end of the
        // burst's answers.
        ann.send_raw(&pings(0, 160)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        send(&mut ann, ClientMsg::Ping { nonce: 1_000 }).await;
        let (pongs, limited) = tally(&until_pong(&mut ann, 1_000).await);
        assert!((100..160).contains(&pongs), "{pongs} pongs");
        assert_eq!(limited, 1, "one notice for the burst");

        // Another burst within the same second: dropped again, but not told.
        ann.send_raw(&pings(200, 80)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        send(&mut ann, ClientMsg::Ping { nonce: 2_000 }).await;
        let (pongs, limited) = tally(&until_pong(&mut ann, 2_000).await);
        let second_done = Instant::now();
        assert!(
            pongs < 80,
            "the second burst was limited too ({pongs} pongs)"
        );
        // (On a machine so slow that this took over a second, a notice is due.)
        if second_done - start < Duration::from_millis(900) {
            assert_eq!(limited, 0, "a second notice within a second");
        }

        // More than a second after any notice: told again, once.
        tokio::time::sleep_until(second_done + Duration::from_millis(1_100)).await;
        ann.send_raw(&pings(300, 160)).await.unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        send(&mut ann, ClientMsg::Ping { nonce: 3_000 }).await;
        let (pongs, limited) = tally(&until_pong(&mut ann, 3_000).await);
        assert!((50..160).contains(&pongs), "{pongs} pongs");
        assert_eq!(limited, 1);
        assert_counts(&server, (1, 0, 0, 0)).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn a_burst_over_the_datagram_rate_is_limited() {
        let server = start_server(&["--datagram-rate", "20"]).await;
        // The receiver is a raw session, which does not acknowledge chats (acks
        // would count against its own datagram rate).
        let mut ann = RawSession::connect(&server, None).await;
        ann.send_msg(&ClientMsg::Join(profile("Ann", Gender::Female)))
            .await;
        assert_eq!(
            ann.next_msg().await,
            ServerMsg::Waiting { queue_position: 1 }
        );
        let mut bob = connect(&server).await;
        let id = match_id(&join(&mut bob, "Bob", Gender::Male).await);
        assert_eq!(match_id(&ann.next_msg().await), id);

        for seq in 0..60 {
            send_datagram(
                &bob,
                &Datagram::Chat {
                    match_id: id,
                    seq,
                    text: "x".into(),
                },
            );
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        // A marker after the burst: once Ann has it, the burst was handled.
        send_datagram(
            &bob,
            &Datagram::Chat {
                match_id: id,
                seq: 1_000,
                text: "end".into(),
            },
        );
        let mut delivered = 0;
        loop {
            let datagram = quicmatch::codec::decode::<Datagram>(&ann.next_datagram().await).unwrap();
            match datagram {
                Datagram::Chat { seq: 1_000, .. } => break,
                Datagram::Chat { .. } => delivered += 1,
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!((20..60).contains(&delivered), "{delivered} of 60 delivered");
        send(&mut bob, ClientMsg::Ping { nonce: 1 }).await;
        let (_, limited) = tally(&until_pong(&mut bob, 1).await);
        assert_eq!(limited, 1, "one notice for the burst");
        server.shutdown().await;
    }
}

protocol_test! {
    async fn a_flood_is_closed_with_code_2_and_the_partner_carries_on() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        let start = Instant::now();
        let _ = ann.send_raw(&pings(0, 3_000)).await;
        let mut notices = 0;
        expect_closed_with(&mut ann, 2, |event| match event {
            Event::Message(ServerMsg::Pong { .. }) => true,
            Event::Message(msg) if is_rate_limited(msg) => {
                notices += 1;
                true
            }
            _ => false,
        })
        .await;
        // Not echoed: at most one notice a second.
        assert!(
            notices <= 1 + start.elapsed().as_secs() as usize,
            "{notices} notices"
        );
        expect_left_to_wait(&mut bob, id).await;
        ping(&mut bob, 1).await;
        wait_counts(&server, (1, 0, 1, 0)).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn the_promised_rates_are_never_limited() {
        // The lowest rates the server may be configured with: exactly the
        // promise of 50 frames and 20 datagrams in any one second.
        let server = start_server(&["--frame-rate", "50", "--datagram-rate", "20"]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        for round in 0..3u32 {
            // Each second's allowance at once, as the harshest pattern, a full
            // second after the previous round (or the Join) was answered.
            tokio::time::sleep(Duration::from_millis(1_050)).await;
            for i in 0..20 {
                let seq = round * 100 + i;
                send_datagram(
                    &ann,
                    &Datagram::Chat {
                        match_id: id,
                        seq,
                        text: "hi".into(),
                    },
                );
            }
            ann.send_raw(&pings(u64::from(round) * 100, 50))
                .await
                .unwrap();
            for i in 0..50 {
                let nonce = u64::from(round) * 100 + i;
                assert_eq!(next_msg(&mut ann).await, ServerMsg::Pong { nonce });
            }
            let mut seqs: Vec<u32> = Vec::new();
            while seqs.len() < 20 {
                seqs.push(next_chat(&mut bob).await.1);
            }
            seqs.sort_unstable();
            assert_eq!(seqs, (round * 100..round * 100 + 20).collect::<Vec<_>>());
        }
        // All datagrams were handled before Bob saw them: no notice is pending
        // (checked a second later, as this ping is a frame too).
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        assert_quiet(&mut ann, 9_999).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn a_client_that_does_not_read_is_dropped_and_its_partner_is_not() {
        let server = start_server(&["--outbound-queue-bytes", "131080"]).await;
        // A client with a small stream window that never reads its stream: the
        // server's writes to it stall, and its outbound queue fills up.
        let mut transport = wtransport::config::QuicTransportConfig::default();
        transport.stream_receive_window(wtransport::quinn::VarInt::from_u32(16 * 1024));
        let mut stalled = RawSession::connect(&server, Some(transport)).await;
        stalled
            .send_msg(&ClientMsg::Join(profile("Ann", Gender::Female)))
            .await;
        let mut bob = connect(&server).await;
        let id = match_id(&join(&mut bob, "Bob", Gender::Male).await);

        for _ in 0..10 {
            send(
                &mut bob,
                ClientMsg::Offer {
                    match_id: id,
                    sdp: "o".repeat(32_000),
                },
            )
            .await;
        }
        let closed = tokio::time::timeout(STEP, stalled.connection.closed())
            .await
            .expect("closed in time");
        match closed {
            ConnectionError::ApplicationClosed(close) => assert_eq!(close.code().into_inner(), 2),
            other => panic!("expected an application close with code 2, got {other:?}"),
        }
        // Bob is told, queues again, and his late offers are dropped silently.
        expect_left_to_wait(&mut bob, id).await;
        send(
            &mut bob,
            ClientMsg::Offer {
                match_id: id,
                sdp: "late".into(),
            },
        )
        .await;
        assert_quiet(&mut bob, 1).await;
        wait_counts(&server, (1, 0, 1, 0)).await;
        server.shutdown().await;
    }
}

// One process: `--max-sessions` caps each node on its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_capacity_a_session_is_closed_with_code_4() {
    let server = start_server(&["--max-sessions", "2"]).await;
    let mut ann = connect(&server).await;
    let bob = connect(&server).await;
    wait_counts(&server, (2, 0, 0, 0)).await;
    let mut third = connect(&server).await;
    expect_closed_with(&mut third, 4, |_| false).await;
    ping(&mut ann, 1).await;
    assert_counts(&server, (2, 0, 0, 0)).await;
    // Room again once someone leaves.
    drop(bob);
    wait_counts(&server, (1, 0, 0, 0)).await;
    let mut fourth = connect(&server).await;
    ping(&mut fourth, 2).await;
    assert_counts(&server, (2, 0, 0, 0)).await;
    server.shutdown().await;
}

// One process: shutdown closes the sessions of the node shut down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_closes_every_session_with_code_3() {
    let server = start_server(&[]).await;
    let (ann, bob, _) = matched_pair(&server).await;
    let idle = connect(&server).await;
    let mut waiting = connect(&server).await;
    join(&mut waiting, "Cy", Gender::Male).await;
    let v6 = try_connect(&url_v6(&server), server.certificate_hash().unwrap())
        .await
        .unwrap();
    wait_counts(&server, (5, 1, 1, 0)).await;

    let shutdown = tokio::spawn(server.shutdown());
    let clients: Vec<Client> = vec![idle, waiting, ann, bob, v6];
    let checks = clients.into_iter().map(|mut client| {
        tokio::spawn(async move {
            // A partner closed a moment earlier may be reported first.
            expect_closed_with(&mut client, 3, |event| {
                matches!(
                    event,
                    Event::Message(
                        ServerMsg::PartnerDisconnected { .. } | ServerMsg::Waiting { .. }
                    )
                )
            })
            .await
        })
    });
    for check in checks.collect::<Vec<_>>() {
        check.await.expect("every session sees Closing 3");
    }
    tokio::time::timeout(Duration::from_secs(15), shutdown)
        .await
        .expect("shutdown returns within a few seconds")
        .unwrap();
}

protocol_test! {
    async fn bad_input_from_one_session_affects_no_other() {
        // Two pairs; one pair's sessions flood, break the framing and stall,
        // while the other pair relays and chats throughout.
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        let (mut cat, mut dan, other) = matched_pair(&server).await;
        let _ = cat.send_raw(&pings(0, 3_000)).await;
        dan.send_raw(&[0, 0, 0, 0]).await.unwrap();
        for i in 0..20 {
            let sdp = format!("offer {i}");
            send(
                &mut ann,
                ClientMsg::Offer {
                    match_id: id,
                    sdp: sdp.clone(),
                },
            )
            .await;
            assert_eq!(
                next_msg(&mut bob).await,
                ServerMsg::Offer { match_id: id, sdp }
            );
        }
        let seq = bob.chat(id, "fine").unwrap();
        assert_eq!(next_chat(&mut ann).await, (id, seq, "fine".into()));
        expect_closed_with(&mut dan, 1, |event| {
            matches!(event, Event::Message(ServerMsg::PartnerDisconnected { match_id, .. }) if *match_id == other)
                || matches!(event, Event::Message(ServerMsg::Waiting { .. }))
        })
        .await;
        let (_, closing, _) = until_closed(&mut cat).await;
        assert!(matches!(closing, Some((2, _))), "{closing:?}");
        assert_quiet(&mut ann, 1).await;
        wait_counts(&server, (2, 1, 0, 0)).await;
        server.shutdown().await;
    }
}

protocol_test! {
    /// A partner that floods a reading session with large offers is slowed down
    /// (it waits for room), not anyone closed, and every offer arrives in order.
    async fn a_partner_flooding_large_offers_closes_no_one() {
        let server = start_server(&["--outbound-queue-bytes", "131080"]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        for n in 0..40u32 {
            let sdp = format!("{n:05}{}", "o".repeat(32_000));
            send(&mut bob, ClientMsg::Offer { match_id: id, sdp }).await;
        }
        for n in 0..40u32 {
            match next_msg(&mut ann).await {
                ServerMsg::Offer { match_id, sdp } => {
                    assert_eq!(match_id, id);
                    assert_eq!(&sdp[..5], format!("{n:05}"), "offers out of order");
                }
                other => panic!("expected offer {n}, got {other:?}"),
            }
        }
        ping(&mut bob, 7).await;
        ping(&mut ann, 8).await;
        assert_counts(&server, (2, 1, 0, 0)).await;
        server.shutdown().await;
    }
}

/// Ann on a raw session whose client window is small (16 KiB on the
/// stream), matched with Bob, a native client: the match id.
async fn small_window_victim(server: &TestServer) -> (RawSession, Client, u64) {
    let mut transport = wtransport::config::QuicTransportConfig::default();
    transport.stream_receive_window(wtransport::quinn::VarInt::from_u32(16 * 1024));
    transport.receive_window(wtransport::quinn::VarInt::from_u32(64 * 1024));
    let mut ann = RawSession::connect(server, Some(transport)).await;
    ann.send_msg(&ClientMsg::Join(profile("Ann", Gender::Female)))
        .await;
    assert!(matches!(ann.next_msg().await, ServerMsg::Waiting { .. }));
    let mut bob = connect(server).await;
    let id = match_id(&join(&mut bob, "Bob", Gender::Male).await);
    assert_eq!(match_id(&ann.next_msg().await), id);
    (ann, bob, id)
}

/// `from` sends `count` offers of 32 KB in match `id`, numbered in their
/// first five characters, in a task of its own; it hands `from` back.
fn flood_offers(mut from: Client, id: u64, count: u32) -> tokio::task::JoinHandle<Client> {
    tokio::spawn(async move {
        for n in 0..count {
            let sdp = format!("{n:05}{}", "o".repeat(32_000));
            send(&mut from, ClientMsg::Offer { match_id: id, sdp }).await;
        }
        from
    })
}

protocol_test! {
    /// A partner flooding large offers at a victim that reads, but slowly
    /// (its client's window keeps the server's writer blocked for longer
    /// than the stall timeout), slows only the flooder: the victim is not
    /// closed and loses nothing.
    async fn a_flooded_victim_that_reads_slowly_is_not_closed() {
        let server = start_server(&["--outbound-queue-bytes", "131080"]).await;
        let (mut ann, bob, id) = small_window_victim(&server).await;

        const OFFERS: u32 = 12;
        let flood = flood_offers(bob, id, OFFERS);
        // 4 KB every 200 ms (20 KB/s) for 5 s: the flooder waits for room
        // well over the 2 s stall timeout at a time.
        for _ in 0..25 {
            ann.read_some(4096).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Then at full speed: every offer, in order, and no Closing.
        for n in 0..OFFERS {
            match ann.next_msg().await {
                ServerMsg::Offer { match_id, sdp } => {
                    assert_eq!(match_id, id);
                    assert_eq!(&sdp[..5], format!("{n:05}"), "offers out of order");
                }
                other => panic!("expected offer {n}, got {other:?}"),
            }
        }
        let mut bob = flood.await.expect("flooder");
        ping(&mut bob, 1).await;
        ann.send_msg(&ClientMsg::Ping { nonce: 2 }).await;
        assert_eq!(ann.next_msg().await, ServerMsg::Pong { nonce: 2 });
        server.shutdown().await;
    }
}

protocol_test! {
    /// A sender waiting for room in a partner's full queue stops waiting as
    /// soon as the match ends: the partner, who left, is not then closed as
    /// not reading, and the sender is told at once.
    async fn a_waiting_sender_is_released_when_the_match_ends() {
        let server = start_server(&["--outbound-queue-bytes", "131080"]).await;
        let (mut ann, bob, id) = small_window_victim(&server).await;

        // Ann stops reading; Bob floods until he waits for room.
        let flood = flood_offers(bob, id, 10);
        tokio::time::sleep(Duration::from_millis(500)).await;
        // Ann leaves the match: Bob is told, and waits again.
        ann.send_msg(&ClientMsg::Leave).await;
        let mut bob = flood.await.expect("flooder");
        expect_left_to_wait(&mut bob, id).await;
        // Ann was never closed: she reads what is left of her stream (relays
        // of the match up to her Leave) and is answered.
        tokio::time::sleep(Duration::from_millis(2_500)).await;
        ann.send_msg(&ClientMsg::Ping { nonce: 9 }).await;
        loop {
            match ann.next_msg().await {
                ServerMsg::Pong { nonce: 9 } => break,
                ServerMsg::Offer { .. } => {}
                other => panic!("Ann got {other:?}"),
            }
        }
        server.shutdown().await;
    }
}
