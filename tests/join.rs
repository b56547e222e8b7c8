//! PROTOCOL.md section 4.1, Join: queue positions, FIFO matching with the
//! opposite gender, every profile rule (name length in characters after
//! trimming, control characters, age bounds with a configurable minimum),
//! `AlreadyJoined`, and joining again with a new profile after `Leave`.

mod common;

use common::*;
use quicmatch::client::Client;
use quicmatch::protocol::{ClientMsg, ErrorCode, Gender, Profile, ServerMsg};

/// Sends a Join with `profile` and returns the answer.
async fn join_with(client: &mut Client, profile: Profile) -> ServerMsg {
    send(client, ClientMsg::Join(profile)).await;
    next_msg(client).await
}

/// The partner profile of a `Matched` message.
fn partner(msg: &ServerMsg) -> &Profile {
    match msg {
        ServerMsg::Matched { partner, .. } => partner,
        other => panic!("expected Matched, got {other:?}"),
    }
}

/// Asserts `Error InvalidProfile` whose message mentions `rule`, and that the
/// session is still idle (a Stop gets `NotJoined`).
async fn expect_invalid(client: &mut Client, profile: Profile, rule: &str) {
    let shown = format!("{profile:?}");
    match join_with(client, profile).await {
        ServerMsg::Error { code, message } => {
            assert_eq!(code, ErrorCode::InvalidProfile, "{shown}");
            assert!(
                message.contains(rule),
                "message {message:?} should name the {rule} rule ({shown})"
            );
        }
        other => panic!("expected InvalidProfile for {shown}, got {other:?}"),
    }
    send(client, ClientMsg::Stop).await;
    expect_error(client, ErrorCode::NotJoined).await;
}

fn with_name(name: &str) -> Profile {
    profile(name, Gender::Female)
}

fn with_age(age: u8) -> Profile {
    Profile {
        age,
        ..profile("Ann", Gender::Female)
    }
}

protocol_test! {
    async fn waiting_positions_count_up_per_gender_queue() {
        let server = start_server(&[]).await;
        let mut women = Vec::new();
        for (i, name) in ["Ann", "Bea", "Cat"].into_iter().enumerate() {
            let mut c = connect(&server).await;
            let queue_position = i as u32 + 1;
            assert_eq!(
                join(&mut c, name, Gender::Female).await,
                ServerMsg::Waiting { queue_position }
            );
            women.push(c);
        }
        // The male queue counts on its own; on a fresh server, as a man would be
        // matched at once here.
        assert_counts(&server, (3, 0, 0, 3)).await;
        let other = start_server(&[]).await;
        let mut m1 = connect(&other).await;
        let mut m2 = connect(&other).await;
        assert_eq!(
            join(&mut m1, "Al", Gender::Male).await,
            ServerMsg::Waiting { queue_position: 1 }
        );
        assert_eq!(
            join(&mut m2, "Bo", Gender::Male).await,
            ServerMsg::Waiting { queue_position: 2 }
        );
        // Same gender is never matched.
        assert_counts(&other, (2, 0, 2, 0)).await;
        other.shutdown().await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn matching_takes_the_longest_waiting_of_the_opposite_gender() {
        let server = start_server(&[]).await;
        let mut waiting = Vec::new();
        for name in ["Ann", "Bea", "Cat"] {
            let mut c = connect(&server).await;
            join(&mut c, name, Gender::Female).await;
            waiting.push(c);
        }
        // Each man gets the woman who has waited longest, and she is told too.
        let mut men = Vec::new();
        for (i, name) in ["Ann", "Bea"].into_iter().enumerate() {
            let mut man = connect(&server).await;
            let got = join(&mut man, &format!("Man{i}"), Gender::Male).await;
            assert_eq!(partner(&got).name, name);
            let theirs = next_msg(&mut waiting[i]).await;
            assert_eq!(partner(&theirs).name, format!("Man{i}"));
            assert_eq!(match_id(&theirs), match_id(&got));
            men.push(man);
        }
        // Cat moved up to the front: a Stop while waiting reports position 1.
        send(&mut waiting[2], ClientMsg::Stop).await;
        assert_eq!(
            next_msg(&mut waiting[2]).await,
            ServerMsg::Waiting { queue_position: 1 }
        );
        assert_counts(&server, (5, 2, 0, 1)).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn previous_partner_is_skipped_in_favour_of_someone_new() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, first) = matched_pair(&server).await;
        // Both wait again, each not offered to the other.
        stop_and_both_wait(&mut bob, &mut ann, first).await;
        let mut cy = connect(&server).await;
        let got = join(&mut cy, "Cy", Gender::Male).await;
        assert_eq!(partner(&got).name, "Ann");
        assert_eq!(partner(&next_msg(&mut ann).await).name, "Cy");
        let mut dee = connect(&server).await;
        let got = join(&mut dee, "Dee", Gender::Female).await;
        assert_eq!(partner(&got).name, "Bob");
        assert_eq!(partner(&next_msg(&mut bob).await).name, "Dee");
        server.shutdown().await;
    }
}

protocol_test! {
    async fn invalid_names_are_refused_and_the_session_stays_idle() {
        let server = start_server(&[]).await;
        let mut c = connect(&server).await;
        let long = "x".repeat(33);
        let cases: &[(&str, &str)] = &[
            ("", "empty"),
            ("   ", "empty"),
            ("\t\n \u{3000}", "empty"),
            (&long, "32"),
            ("a\u{0}b", "control"),
            ("a\u{7}b", "control"),
            ("a\nb", "control"),
            ("a\tb", "control"),
            ("a\u{7f}b", "control"),
            ("a\u{85}b", "control"),
            ("a\u{9b}b", "control"),
        ];
        for (name, rule) in cases {
            expect_invalid(&mut c, with_name(name), rule).await;
        }
        // Nobody was ever queued.
        assert_counts(&server, (1, 0, 0, 0)).await;
        // And the session can still join.
        assert_eq!(
            join(&mut c, "Ann", Gender::Female).await,
            ServerMsg::Waiting { queue_position: 1 }
        );
        server.shutdown().await;
    }
}

protocol_test! {
    async fn names_are_trimmed_and_counted_in_characters() {
        let server = start_server(&[]).await;
        let mut c = connect(&server).await;
        // 33 two-byte characters: too long, though 32 ASCII bytes would not be.
        expect_invalid(&mut c, with_name(&"é".repeat(33)), "32").await;
        // 33 characters once trimmed, whatever the padding.
        expect_invalid(&mut c, with_name(&format!("  {}  ", "z".repeat(33))), "32").await;

        // Accepted names, each seen by the partner exactly as trimmed.
        let accepted = [
            (format!("  {}  ", "é".repeat(32)), "é".repeat(32)),
            ("😀".repeat(32), "😀".repeat(32)),
            (format!("\t{}\n", "z".repeat(32)), "z".repeat(32)),
            ("  Ann Lee \u{3000}".into(), "Ann Lee".into()),
            ("x".into(), "x".into()),
        ];
        for (given, shown) in accepted {
            let mut woman = connect(&server).await;
            assert!(matches!(
                join_with(&mut woman, with_name(&given)).await,
                ServerMsg::Waiting { .. }
            ));
            let mut man = connect(&server).await;
            let got = join(&mut man, "Bob", Gender::Male).await;
            assert_eq!(
                partner(&got),
                &Profile {
                    name: shown,
                    age: 25,
                    gender: Gender::Female
                }
            );
        }
        server.shutdown().await;
    }
}

protocol_test! {
    async fn age_bounds_default_to_18_through_120() {
        let server = start_server(&[]).await;
        let mut c = connect(&server).await;
        for age in [0, 17, 121, 255] {
            expect_invalid(&mut c, with_age(age), "age").await;
        }
        for age in [18, 120] {
            let mut ok = connect(&server).await;
            assert!(matches!(
                join_with(&mut ok, with_age(age)).await,
                ServerMsg::Waiting { .. }
            ));
        }
        server.shutdown().await;
    }
}

protocol_test! {
    async fn minimum_age_is_configurable() {
        let server = start_server(&["--min-age", "21"]).await;
        let mut c = connect(&server).await;
        for age in [18, 20] {
            expect_invalid(&mut c, with_age(age), "age").await;
        }
        assert!(matches!(
            join_with(&mut c, with_age(21)).await,
            ServerMsg::Waiting { .. }
        ));
        server.shutdown().await;

        let server = start_server(&["--min-age", "13"]).await;
        let mut c = connect(&server).await;
        expect_invalid(&mut c, with_age(12), "age").await;
        assert!(matches!(
            join_with(&mut c, with_age(13)).await,
            ServerMsg::Waiting { .. }
        ));
        server.shutdown().await;
    }
}

protocol_test! {
    async fn join_while_waiting_or_matched_is_already_joined_and_changes_nothing() {
        let server = start_server(&[]).await;
        let mut ann = connect(&server).await;
        join(&mut ann, "Ann", Gender::Female).await;
        // Waiting: refused, even with another gender; still first in her queue.
        send(&mut ann, ClientMsg::Join(profile("Ann", Gender::Male))).await;
        expect_error(&mut ann, ErrorCode::AlreadyJoined).await;
        assert_counts(&server, (1, 0, 0, 1)).await;
        send(&mut ann, ClientMsg::Stop).await;
        assert_eq!(
            next_msg(&mut ann).await,
            ServerMsg::Waiting { queue_position: 1 }
        );

        // Matched: refused (an invalid profile too), and the match goes on.
        let mut bob = connect(&server).await;
        let id = match_id(&join(&mut bob, "Bob", Gender::Male).await);
        assert_eq!(match_id(&next_msg(&mut ann).await), id);
        send(&mut bob, ClientMsg::Join(profile("Bob", Gender::Male))).await;
        expect_error(&mut bob, ErrorCode::AlreadyJoined).await;
        send(&mut bob, ClientMsg::Join(with_age(3))).await;
        expect_error(&mut bob, ErrorCode::AlreadyJoined).await;
        send(
            &mut bob,
            ClientMsg::Offer {
                match_id: id,
                sdp: "v=0".into(),
            },
        )
        .await;
        assert_eq!(
            next_msg(&mut ann).await,
            ServerMsg::Offer {
                match_id: id,
                sdp: "v=0".into()
            }
        );
        assert_counts(&server, (2, 1, 0, 0)).await;
        server.shutdown().await;
    }
}

protocol_test! {
    async fn leave_then_join_again_with_a_new_profile() {
        let server = start_server(&[]).await;
        let (mut ann, mut bob, id) = matched_pair(&server).await;
        send(&mut ann, ClientMsg::Leave).await;
        expect_left_to_wait(&mut bob, id).await;
        // Ann is idle now.
        send(&mut ann, ClientMsg::Stop).await;
        expect_error(&mut ann, ErrorCode::NotJoined).await;

        // She comes back as someone else: a man, so she queues behind Bob.
        let zed = Profile {
            name: "Zed".into(),
            age: 40,
            gender: Gender::Male,
        };
        assert_eq!(
            join_with(&mut ann, zed.clone()).await,
            ServerMsg::Waiting { queue_position: 2 }
        );
        let mut cat = connect(&server).await;
        assert_eq!(
            partner(&join(&mut cat, "Cat", Gender::Female).await).name,
            "Bob"
        );
        let mut dee = connect(&server).await;
        let got = join(&mut dee, "Dee", Gender::Female).await;
        assert_eq!(partner(&got), &zed);
        match next_msg(&mut ann).await {
            ServerMsg::Matched { partner, .. } => assert_eq!(partner, profile("Dee", Gender::Female)),
            other => panic!("expected Matched, got {other:?}"),
        }
        server.shutdown().await;
    }
}
