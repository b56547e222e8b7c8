//! Join, match, relay, chat, stop and leave against a real server.

mod common;

use common::*;
use quicmatch::client::Event;
use quicmatch::protocol::{ClientMsg, Gender, ServerMsg};

protocol_test! {
    async fn join_match_relay_and_chat() {
        let server = start_server(&[]).await;
        let (mut a, mut b, id) = matched_pair(&server).await;
        send(
            &mut b,
            ClientMsg::Offer {
                match_id: id,
                sdp: "v=0 offer".into(),
            },
        )
        .await;
        assert_eq!(
            next_msg(&mut a).await,
            ServerMsg::Offer {
                match_id: id,
                sdp: "v=0 offer".into()
            }
        );
        send(
            &mut a,
            ClientMsg::Answer {
                match_id: id,
                sdp: "v=0 answer".into(),
            },
        )
        .await;
        assert_eq!(
            next_msg(&mut b).await,
            ServerMsg::Answer {
                match_id: id,
                sdp: "v=0 answer".into()
            }
        );

        let seq = a.chat(id, "hello").unwrap();
        assert_eq!(
            next_event(&mut b).await,
            Event::Chat {
                match_id: id,
                seq,
                text: "hello".into()
            }
        );
        assert_eq!(
            next_event(&mut a).await,
            Event::ChatAcked { match_id: id, seq }
        );
        wait_stats(&server, |s| s.active_matches == 1).await;
        drop(a);
        drop(b);
        server.shutdown().await;
    }
}

protocol_test! {
    async fn stop_requeues_both() {
        let server = start_server(&[]).await;
        let (mut a, mut b, id) = matched_pair(&server).await;
        stop_and_both_wait(&mut b, &mut a, id).await;
        let mut c = connect(&server).await;
        let m = join(&mut c, "Cy", Gender::Male).await;
        assert!(matches!(m, ServerMsg::Matched { .. }), "{m:?}");
        server.shutdown().await;
    }
}
