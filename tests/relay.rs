//! PROTOCOL.md sections 4.2 and 4.3: the `Matched` message (fields,
//! initiator, fresh match ids, nothing but the profile, STUN/TURN servers with
//! TURN REST credentials) and the relay of `Offer`, `Answer` and `Ice`
//! (content and order, stale match ids, `NotMatched`, size limits).

mod common;

use std::collections::HashSet;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use quicmatch::client::Client;
use quicmatch::codec::encode_frame;
use quicmatch::ice::turn_credential;
use quicmatch::protocol::{
    ClientMsg, ErrorCode, Gender, IceCandidate, IceServer, Profile, ServerMsg,
};

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn candidate(text: &str) -> IceCandidate {
    IceCandidate {
        candidate: text.into(),
        sdp_mid: Some("0".into()),
        sdp_m_line_index: Some(0),
        username_fragment: Some("abcd".into()),
    }
}

/// The ServerMsg a partner receives for a relayed ClientMsg.
fn relayed(msg: &ClientMsg) -> ServerMsg {
    msg.clone().into_relayed().expect("a relay message")
}

/// The three relay messages of a match, with the given payload.
fn relays(match_id: u64, text: &str) -> [ClientMsg; 3] {
    [
        ClientMsg::Offer {
            match_id,
            sdp: text.into(),
        },
        ClientMsg::Answer {
            match_id,
            sdp: text.into(),
        },
        ClientMsg::Ice {
            match_id,
            candidate: candidate(text),
        },
    ]
}

/// Splits a Matched message into (match_id, partner, initiator, ice_servers).
fn matched(msg: ServerMsg) -> (u64, Profile, bool, Vec<IceServer>) {
    match msg {
        ServerMsg::Matched {
            match_id,
            partner,
            initiator,
            ice_servers,
        } => (match_id, partner, initiator, ice_servers),
        other => panic!("expected Matched, got {other:?}"),
    }
}

protocol_test! {
    async fn matched_carries_the_partner_profile_and_exactly_one_initiator() {
        let server = start_server(&[]).await;
        let mut ann = connect(&server).await;
        let mut bob = connect(&server).await;
        let ann_profile = Profile {
            name: "Ann".into(),
            age: 30,
            gender: Gender::Female,
        };
        let bob_profile = Profile {
            name: "Bob".into(),
            age: 41,
            gender: Gender::Male,
        };
        send(&mut ann, ClientMsg::Join(ann_profile.clone())).await;
        assert_eq!(
            next_msg(&mut ann).await,
            ServerMsg::Waiting { queue_position: 1 }
        );
        send(
            &mut bob,
            ClientMsg::Join(Profile {
                name: " Bob ".into(),
                ..bob_profile.clone()
            }),
        )
        .await;
        let (bob_id, bob_sees, bob_init, bob_ice) = matched(next_msg(&mut bob).await);
        let (ann_id, ann_sees, ann_init, ann_ice) = matched(next_msg(&mut ann).await);
        assert_eq!(ann_id, bob_id);
        // Each sees the other's profile as given (trimmed), and nothing else: the
        // message holds no other field, so no address and no session id.
        assert_eq!(ann_sees, bob_profile);
        assert_eq!(bob_sees, ann_profile);
        assert_ne!(ann_init, bob_init, "exactly one initiator");
        // No STUN/TURN configured: none handed out.
        assert!(ann_ice.is_empty() && bob_ice.is_empty());
        server.shutdown().await;
    }
}

protocol_test! {
    async fn match_ids_are_fresh_for_every_match() {
        let server = start_server(&[]).await;
        let mut ids = HashSet::new();
        let (mut ann, mut bob, first) = matched_pair(&server).await;
        ids.insert(first);
        // Ann stops: both wait; two newcomers take them.
        send(&mut ann, ClientMsg::Stop).await;
        assert_eq!(
            next_msg(&mut ann).await,
            ServerMsg::Waiting { queue_position: 1 }
        );
        expect_left_to_wait(&mut bob, first).await;
        let mut cy = connect(&server).await;
        let ann_cy = match_id(&join(&mut cy, "Cy", Gender::Male).await);
        assert_eq!(match_id(&next_msg(&mut ann).await), ann_cy);
        let mut dee = connect(&server).await;
        let bob_dee = match_id(&join(&mut dee, "Dee", Gender::Female).await);
        assert_eq!(match_id(&next_msg(&mut bob).await), bob_dee);
        // Cy stops (both wait), then Bob stops: those left behind and those who
        // stopped pair up anew, Ann and Bob again, each match under a new id.
        stop_and_both_wait(&mut cy, &mut ann, ann_cy).await;
        send(&mut bob, ClientMsg::Stop).await;
        assert_eq!(
            next_msg(&mut dee).await,
            ServerMsg::PartnerDisconnected { match_id: bob_dee }
        );
        let dee_cy = match_id(&next_msg(&mut dee).await);
        assert_eq!(match_id(&next_msg(&mut cy).await), dee_cy);
        let bob_ann = match_id(&next_msg(&mut bob).await);
        assert_eq!(match_id(&next_msg(&mut ann).await), bob_ann);
        for id in [ann_cy, bob_dee, dee_cy, bob_ann] {
            assert!(ids.insert(id), "match id {id} reused");
        }
        server.shutdown().await;
    }
}

protocol_test! {
    async fn stun_and_turn_servers_with_rest_credentials() {
        let server = start_server(&[
            "--stun",
            "stun:stun.example.org:3478,stun:[::1]:3478",
            "--turn",
            "turn:turn.example.org:3478?transport=udp",
            "--turn-secret",
            "s3cret",
            "--turn-ttl-secs",
            "600",
            "--turn-label",
            "qm",
        ])
        .await;
        let before = unix_now();
        let mut ann = connect(&server).await;
        let mut bob = connect(&server).await;
        join(&mut ann, "Ann", Gender::Female).await;
        let (_, _, _, bob_ice) = matched(join(&mut bob, "Bob", Gender::Male).await);
        let (_, _, _, ann_ice) = matched(next_msg(&mut ann).await);
        let after = unix_now();
        // Both sides get the same servers, minted once for the match.
        assert_eq!(ann_ice, bob_ice);
        let [stun, turn] = &ann_ice[..] else {
            panic!("expected one STUN and one TURN entry, got {ann_ice:?}");
        };
        assert_eq!(
            stun,
            &IceServer {
                urls: vec![
                    "stun:stun.example.org:3478".into(),
                    "stun:[::1]:3478".into()
                ],
                username: None,
                credential: None,
            }
        );
        assert_eq!(
            turn.urls,
            vec!["turn:turn.example.org:3478?transport=udp".to_owned()]
        );
        let username = turn.username.as_deref().expect("TURN username");
        let (expiry, label) = username.split_once(':').expect("expiry:label");
        assert_eq!(label, "qm");
        let expiry: u64 = expiry.parse().expect("numeric expiry");
        assert!(
            (before + 600..=after + 600).contains(&expiry),
            "expiry {expiry}, now {before}..{after}"
        );
        assert_eq!(
            turn.credential.as_deref(),
            Some(turn_credential("s3cret", username).as_str())
        );
        server.shutdown().await;
    }
}

protocol_test! {
    async fn relays_arrive_in_order_with_their_content_in_both_directions() {
        // A high frame rate so that a few hundred messages at once are not limited.
        let server = start_server(&["--frame-rate", "2000"]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        let batch = |who: &str| -> Vec<ClientMsg> {
            (0..300)
                .map(|i| {
                    let text = format!("{who} {i} {}", "é".repeat(i % 50));
                    match i % 4 {
                        0 => ClientMsg::Offer {
                            match_id: id,
                            sdp: text,
                        },
                        1 => ClientMsg::Answer {
                            match_id: id,
                            sdp: text,
                        },
                        2 => ClientMsg::Ice {
                            match_id: id,
                            candidate: candidate(&text),
                        },
                        // End-of-candidates, with every optional field absent.
                        _ => ClientMsg::Ice {
                            match_id: id,
                            candidate: IceCandidate {
                                candidate: String::new(),
                                sdp_mid: None,
                                sdp_m_line_index: if i % 8 == 3 { None } else { Some(u16::MAX) },
                                username_fragment: None,
                            },
                        },
                    }
                })
                .collect()
        };
        let (from_ann, from_bob) = (batch("ann"), batch("bob"));
        let bytes = |msgs: &[ClientMsg]| -> Vec<u8> {
            msgs.iter().flat_map(|m| encode_frame(m).to_vec()).collect()
        };
        ann.send_raw(&bytes(&from_ann)).await.unwrap();
        bob.send_raw(&bytes(&from_bob)).await.unwrap();
        for (receiver, sent) in [(&mut bob, &from_ann), (&mut ann, &from_bob)] {
            for msg in sent {
                assert_eq!(next_msg(receiver).await, relayed(msg));
            }
            assert_quiet(receiver, 1).await;
        }
        server.shutdown().await;
    }
}

protocol_test! {
    async fn relay_with_a_stale_match_id_is_dropped_silently() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, old) = matched_pair(&server).await;
        stop_and_both_wait(&mut bob, &mut ann, old).await;

        // Late messages of the ended match, from a waiting session: no error, and
        // nothing reaches the old partner.
        for msg in relays(old, "late") {
            send(&mut ann, msg).await;
        }
        assert_quiet(&mut ann, 1).await;
        assert_quiet(&mut bob, 2).await;

        // Matched anew: the old id (or any other) is still dropped silently, and
        // the new partner receives only the current match's messages.
        let mut cy = connect(&server).await;
        let new = match_id(&join(&mut cy, "Cy", Gender::Male).await);
        assert_eq!(match_id(&next_msg(&mut ann).await), new);
        for wrong in [old, new + 1000, u64::MAX] {
            for msg in relays(wrong, "wrong") {
                send(&mut ann, msg).await;
            }
        }
        send(
            &mut ann,
            ClientMsg::Offer {
                match_id: new,
                sdp: "current".into(),
            },
        )
        .await;
        assert_quiet(&mut ann, 3).await;
        assert_eq!(
            next_msg(&mut cy).await,
            ServerMsg::Offer {
                match_id: new,
                sdp: "current".into()
            }
        );
        assert_quiet(&mut cy, 4).await;
        assert_quiet(&mut bob, 5).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn relay_from_an_idle_or_waiting_session_is_not_matched() {
        let server = start_server(&[]).await;
        let mut ann = connect(&server).await;
        for id in [0, 1, u64::MAX] {
            for msg in relays(id, "x") {
                send(&mut ann, msg).await;
                expect_error(&mut ann, ErrorCode::NotMatched).await;
            }
        }
        join(&mut ann, "Ann", Gender::Female).await;
        for msg in relays(1, "x") {
            send(&mut ann, msg).await;
            expect_error(&mut ann, ErrorCode::NotMatched).await;
        }
        // Still waiting, untouched.
        assert_counts(&server, (1, 0, 0, 1)).await;
        server.shutdown().await;
    }
}

/// Sends `msg` from `from`, expects `TooLarge`, and checks that `to`
/// received nothing.
async fn expect_too_large(from: &mut Client, to: &mut Client, msg: ClientMsg, nonce: u64) {
    send(from, msg).await;
    expect_error(from, ErrorCode::TooLarge).await;
    assert_quiet(to, nonce).await;
}

protocol_test! {
    async fn oversized_fields_are_too_large_and_nothing_is_delivered() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        let long_sdp = [
            "a".repeat(32_769),
            format!("{}a", "é".repeat(16_384)),
            "z".repeat(60_000),
        ];
        for sdp in long_sdp {
            let offer = ClientMsg::Offer {
                match_id: id,
                sdp: sdp.clone(),
            };
            expect_too_large(&mut ann, &mut bob, offer, 1).await;
            expect_too_large(
                &mut ann,
                &mut bob,
                ClientMsg::Answer { match_id: id, sdp },
                2,
            )
            .await;
        }
        let over = "c".repeat(1_025);
        let over_multibyte = format!("{}c", "é".repeat(512));
        for field in [over, over_multibyte] {
            let candidates = [
                IceCandidate {
                    candidate: field.clone(),
                    ..candidate("")
                },
                IceCandidate {
                    sdp_mid: Some(field.clone()),
                    ..candidate("")
                },
                IceCandidate {
                    username_fragment: Some(field.clone()),
                    ..candidate("")
                },
            ];
            for candidate in candidates {
                expect_too_large(
                    &mut ann,
                    &mut bob,
                    ClientMsg::Ice {
                        match_id: id,
                        candidate,
                    },
                    3,
                )
                .await;
            }
        }
        // The match survived.
        send(
            &mut ann,
            ClientMsg::Offer {
                match_id: id,
                sdp: "ok".into(),
            },
        )
        .await;
        assert_eq!(
            next_msg(&mut bob).await,
            ServerMsg::Offer {
                match_id: id,
                sdp: "ok".into()
            }
        );
        server.shutdown().await;
    }
}

protocol_test! {
    async fn values_at_exactly_the_limits_are_delivered() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        let exact = [
            ClientMsg::Offer {
                match_id: id,
                sdp: "a".repeat(32_768),
            },
            ClientMsg::Answer {
                match_id: id,
                sdp: "é".repeat(16_384),
            },
            ClientMsg::Ice {
                match_id: id,
                candidate: IceCandidate {
                    candidate: "c".repeat(1_024),
                    sdp_mid: Some("é".repeat(512)),
                    sdp_m_line_index: Some(u16::MAX),
                    username_fragment: Some("u".repeat(1_024)),
                },
            },
        ];
        for msg in exact {
            send(&mut ann, msg.clone()).await;
            assert_eq!(next_msg(&mut bob).await, relayed(&msg));
        }
        assert_quiet(&mut ann, 1).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn relay_in_a_non_minimal_encoding_reaches_the_partner_intact() {
        // bincode accepts varints longer than needed, so these frames are valid
        // messages: an Offer whose variant index is written as 0xFB + u16, and an
        // Answer whose match id is written as 0xFD + u64.
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        assert!(id < 251);
        let offer = [&[0xFB, 0x01, 0x00, id as u8, 2][..], b"hi"].concat();
        let mut answer = vec![2, 0xFD];
        answer.extend_from_slice(&id.to_le_bytes());
        answer.extend_from_slice(&[2, b'o', b'k']);
        let ice = vec![
            0xFC, 3, 0, 0, 0, id as u8, 1, b'c', 1, 1, b'0', 1, 0xFB, 7, 0, 0,
        ];
        for payload in [offer, answer, ice] {
            bob.send_raw(&frame(&payload)).await.unwrap();
        }
        assert_eq!(
            next_msg(&mut ann).await,
            ServerMsg::Offer {
                match_id: id,
                sdp: "hi".into()
            }
        );
        assert_eq!(
            next_msg(&mut ann).await,
            ServerMsg::Answer {
                match_id: id,
                sdp: "ok".into()
            }
        );
        let ice = IceCandidate {
            candidate: "c".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: Some(7),
            username_fragment: None,
        };
        assert_eq!(
            next_msg(&mut ann).await,
            ServerMsg::Ice {
                match_id: id,
                candidate: ice
            }
        );
        assert_quiet(&mut bob, 1).await;
        assert_quiet(&mut ann, 2).await;
        server.shutdown().await;
    }
}
