//! PROTOCOL.md section 4.4, chat in datagrams: `Chat` and `ChatAck` are
//! forwarded to the partner byte for byte, a repeated `seq` is shown once,
//! stale match ids are dropped silently, `NotMatched` comes on the signaling
//! stream, and text size and undecodable datagrams are refused.
//!
//! Datagrams are unordered with the signaling stream, so "nothing was
//! delivered" is proven by a marker chat sent afterwards being the next chat
//! the partner sees (datagrams of one connection keep their order on
//! loopback), and "no error" by a ping whose Pong comes first.

mod common;

use common::*;
use quicmatch::client::{Client, Event};
use quicmatch::codec::encode;
use quicmatch::protocol::{ClientMsg, Datagram, ErrorCode, Gender, ServerMsg};

fn chat(match_id: u64, seq: u32, text: &str) -> Datagram {
    Datagram::Chat {
        match_id,
        seq,
        text: text.into(),
    }
}

/// Sends a marker chat from `from` and asserts it is the next chat `to` sees.
async fn marker_is_next(from: &Client, to: &mut Client, match_id: u64, seq: u32) {
    send_datagram(from, &chat(match_id, seq, "marker"));
    assert_eq!(next_chat(to).await, (match_id, seq, "marker".into()));
}

protocol_test! {
    async fn chat_and_acks_are_forwarded_byte_for_byte() {
        let server = start_server(&[]).await;
        let mut raw = RawSession::connect(&server, None).await;
        raw.send_msg(&ClientMsg::Join(profile("Ann", Gender::Female)))
            .await;
        assert_eq!(
            raw.next_msg().await,
            ServerMsg::Waiting { queue_position: 1 }
        );
        let mut bob = connect(&server).await;
        let id = match_id(&join(&mut bob, "Bob", Gender::Male).await);
        assert_eq!(match_id(&raw.next_msg().await), id);

        // A chat, and one whose seq is a (valid) 5-byte varint: the same bytes
        // arrive, so the server forwards rather than re-encodes.
        let plain = encode(&chat(id, 7, "héllo 👋")).to_vec();
        let mut long_varint = vec![0, id as u8, 0xFC, 9, 0, 0, 0, 2];
        long_varint.extend_from_slice(b"yo");
        for bytes in [plain, long_varint] {
            bob.send_datagram_raw(&bytes).unwrap();
            assert_eq!(raw.next_datagram().await.as_ref(), &bytes[..]);
        }

        // The raw side chats; Bob's client shows it and its ack comes back intact.
        let from_raw = encode(&chat(id, 3, "hi Bob"));
        raw.connection.send_datagram(from_raw).unwrap();
        assert_eq!(next_chat(&mut bob).await, (id, 3, "hi Bob".into()));
        assert_eq!(
            raw.next_datagram().await,
            encode(&Datagram::ChatAck {
                match_id: id,
                seq: 3
            })
        );

        // Bob chats with the client API; the raw side's ack reaches him.
        let seq = bob.chat(id, "hi Ann").unwrap();
        assert_eq!(raw.next_datagram().await, encode(&chat(id, seq, "hi Ann")));
        let ack = encode(&Datagram::ChatAck { match_id: id, seq });
        raw.connection.send_datagram(ack).unwrap();
        assert_eq!(
            next_event(&mut bob).await,
            Event::ChatAcked { match_id: id, seq }
        );
        server.shutdown().await;
    }
}

protocol_test! {
    async fn chat_between_native_clients_is_acknowledged() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        for text in ["one", "two", &"x".repeat(1_000)] {
            let seq = ann.chat(id, text).unwrap();
            assert_eq!(next_chat(&mut bob).await, (id, seq, text.to_owned()));
            assert_eq!(
                next_event(&mut ann).await,
                Event::ChatAcked { match_id: id, seq }
            );
        }
        let seq = bob.chat(id, "back").unwrap();
        assert_eq!(next_chat(&mut ann).await, (id, seq, "back".into()));
        assert_eq!(
            next_event(&mut bob).await,
            Event::ChatAcked { match_id: id, seq }
        );
        server.shutdown().await;
    }
}

protocol_test! {
    async fn a_repeated_seq_is_shown_once() {
        let server = start_server(&[]).await;
        let (ann, mut bob, id) = matched_pair(&server).await;
        for _ in 0..3 {
            send_datagram(&ann, &chat(id, 5, "again"));
        }
        send_datagram(&ann, &chat(id, 6, "next"));
        assert_eq!(next_chat(&mut bob).await, (id, 5, "again".into()));
        assert_eq!(next_chat(&mut bob).await, (id, 6, "next".into()));
        marker_is_next(&ann, &mut bob, id, 7).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn chat_with_a_stale_match_id_is_dropped_silently() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, old) = matched_pair(&server).await;
        stop_and_both_wait(&mut bob, &mut ann, old).await;

        // Waiting: the ended match's chat and ack are dropped without a word,
        // while an id that never was hers gets NotMatched (exactly once).
        send_datagram(&ann, &chat(old, 1, "late"));
        send_datagram(
            &ann,
            &Datagram::ChatAck {
                match_id: old,
                seq: 1,
            },
        );
        send_datagram(&ann, &chat(old + 1000, 2, "bogus"));
        expect_error(&mut ann, ErrorCode::NotMatched).await;
        assert_quiet(&mut ann, 1).await;

        // Matched anew: old ids are dropped, the current one goes through.
        let mut cy = connect(&server).await;
        let new = match_id(&join(&mut cy, "Cy", Gender::Male).await);
        assert_eq!(match_id(&next_msg(&mut ann).await), new);
        send_datagram(&ann, &chat(old, 3, "late"));
        send_datagram(&ann, &chat(new + 1000, 4, "wrong"));
        marker_is_next(&ann, &mut cy, new, 5).await;
        assert_quiet(&mut ann, 2).await;
        assert_quiet(&mut bob, 3).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn chat_while_not_matched_gets_not_matched_on_the_stream() {
        let server = start_server(&[]).await;
        let mut ann = connect(&server).await;
        let datagrams = [
            chat(1, 0, "hello?"),
            Datagram::ChatAck {
                match_id: 1,
                seq: 0,
            },
        ];
        // Idle.
        for datagram in &datagrams {
            send_datagram(&ann, datagram);
            expect_error(&mut ann, ErrorCode::NotMatched).await;
        }
        // Waiting.
        join(&mut ann, "Ann", Gender::Female).await;
        for datagram in &datagrams {
            send_datagram(&ann, datagram);
            expect_error(&mut ann, ErrorCode::NotMatched).await;
        }
        assert_quiet(&mut ann, 1).await;
        assert_counts(&server, (1, 0, 0, 1)).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn chat_text_must_be_1_to_1000_bytes() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        assert!(
            ann.max_datagram_size().unwrap_or(0) > 1_100,
            "path carries a 1,001-byte chat"
        );

        send_datagram(&ann, &chat(id, 1, ""));
        expect_error(&mut ann, ErrorCode::BadFrame).await;
        for text in ["a".repeat(1_001), format!("{}a", "é".repeat(500))] {
            send_datagram(&ann, &chat(id, 2, &text));
            expect_error(&mut ann, ErrorCode::TooLarge).await;
        }
        marker_is_next(&ann, &mut bob, id, 3).await;

        // Exactly 1,000 bytes, in ASCII or not, and a single byte: delivered.
        for (seq, text) in [
            (4, "a".repeat(1_000)),
            (5, "é".repeat(500)),
            (6, "!".into()),
        ] {
            send_datagram(&ann, &chat(id, seq, &text));
            assert_eq!(next_chat(&mut bob).await, (id, seq, text));
        }
        assert_quiet(&mut ann, 1).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn undecodable_datagrams_get_bad_frame_and_change_nothing() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        let id8 = id as u8;
        let bad: &[&[u8]] = &[
            &[],                                  // empty
            &[2, id8, 0],                         // unknown variant
            &[0xFB, 0x05, 0x00],                  // unknown variant, long form
            &[0xFD, 0, 0, 0, 0, 0, 0, 0, 0],      // variant index too wide for u32
            &[0, id8, 1, 2, 0xC3, 0x28],          // invalid UTF-8
            &[0, id8, 1, 2, 0xC0, 0x80],          // overlong UTF-8
            &[0, id8, 1, 3, 0xED, 0xA0, 0x80],    // UTF-16 surrogate in UTF-8
            &[0, id8, 1, 0xFC, 0, 0, 0, 1, b'a'], // text length past the end
            &[0, id8, 1],                         // truncated
            &[1, id8],                            // truncated ack
            &[1, id8, 1, 0],                      // trailing byte
            &[0, id8, 1, 1, b'a', b'b'],          // trailing byte after a chat
            &[1, id8, 0xFF],                      // invalid varint tag
        ];
        for bytes in bad {
            ann.send_datagram_raw(bytes).unwrap();
            expect_error(&mut ann, ErrorCode::BadFrame).await;
        }
        // Nothing reached Bob, and the match carries on both ways.
        marker_is_next(&ann, &mut bob, id, 100).await;
        marker_is_next(&bob, &mut ann, id, 200).await;
        ping(&mut ann, 1).await;
        assert_counts(&server, (2, 1, 0, 0)).await;
        server.shutdown().await;
    }
}
